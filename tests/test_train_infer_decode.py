"""A real pytc-train checkpoint through pytc-infer | pytc-decode, as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_pytc_train_checkpoint_infers_and_pipes_into_decode(tmp_path):
    """train → infer | decode with real commands: pytc-infer reads what pytc-train saved
    (weights, architecture, patch, offsets, normalisation, activation)."""
    import h5py
    import torch
    from monai.inferers import sliding_window_inference

    from pytc_core.models import load_model_from_checkpoint
    from pytc_core.synthetic import synthetic_em_volume
    from pytc_core.volume import open_volume
    from pytc_decode import affinity_cc

    raw, labels = synthetic_em_volume((32, 48, 48), seed=3)
    h5 = tmp_path / "em.h5"
    with h5py.File(h5, "w") as f:
        f["raw"], f["labels"] = raw, labels
    train = subprocess.run(
        [str(BIN / "pytc-train"), "--raw", f"{h5}:raw", "--labels", f"{h5}:labels",
         "--bbox", "0,0,0,16,48,48", "--val-bbox", "16,0,0,32,48,48", "--patch", "16,32,32",
         "--batch-size", "2", "--max-steps", "3", "--seed", "0", "--aug", "none",
         "--arch", "mednext_custom", "--run-dir", str(tmp_path / "run"), "-q",
         "--set", "model.mednext_base_channels=4", "model.mednext_exp_r=1",
         "model.mednext_block_counts=[1,1,1,1,1,1,1,1,1]", "train.accelerator='cpu'",
         "train.val_every=3", "data.val_max_patches=2", "data.num_workers=0"],
        capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr
    ckpt = train.stdout.strip()
    assert Path(ckpt).is_file() and ckpt.endswith(".ckpt")

    infer = subprocess.Popen([str(BIN / "pytc-infer"), "-c", ckpt, "-i", f"{h5}:raw", "-o",
                              str(tmp_path / "aff"), "--dtype", "uint8", "-q"],
                             stdout=subprocess.PIPE)
    decode = subprocess.run([str(BIN / "pytc-decode"), "-", "-o", str(tmp_path / "seg"), "-q"],
                            stdin=infer.stdout, capture_output=True, text=True, timeout=900)
    assert infer.stdout is not None
    infer.stdout.close()
    assert infer.wait(timeout=900) == 0
    assert decode.returncode == 0, decode.stderr
    assert decode.stdout == f"{tmp_path / 'seg'}\n"

    # the prediction is one MONAI pass of the trained weights with the training's patch
    # (16x32x32 from the checkpoint's config), raw / 255 and a sigmoid, quantised to uint8
    model, config = load_model_from_checkpoint(ckpt)
    assert config["data"]["patch_size"] == [16, 32, 32]
    x = torch.from_numpy(raw.astype(np.float32) / 255)[None, None]
    with torch.inference_mode():
        prob = sliding_window_inference(x, (16, 32, 32), 1, lambda t: torch.sigmoid(model(t)),
                                        overlap=0.25, mode="gaussian")[0].numpy()
    aff = open_volume(str(tmp_path / "aff")).read()
    assert aff.shape == (3, 32, 48, 48) and aff.dtype == np.uint8
    expected = np.rint(prob * 255)
    assert np.abs(aff.astype(np.float64) - expected).max() <= 1  # float rounding at .5
    assert np.mean(aff == expected) > 0.999
    record = json.loads((tmp_path / "aff" / "pytc_infer.json").read_text())
    assert record["key"]["patch"] == [16, 32, 32] and record["complete"] is True
    assert record["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    # pytc-decode read the uint8 affinities as value / 255
    seg = open_volume(str(tmp_path / "seg")).read()
    np.testing.assert_array_equal(seg, affinity_cc(aff.astype(np.float32) / 255, 0.5, 0))
