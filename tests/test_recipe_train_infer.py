"""pytc-train with the whole recipe on (EMA, per-channel BCE, erosion, LSDs) → pytc-infer:
the EMA weights are used by default and only the affinity channels are written."""

from __future__ import annotations

import numpy as np


def test_recipe_checkpoint_infers_with_ema_weights_and_affinity_channels_only(tmp_path):
    import h5py
    import torch
    from monai.inferers import sliding_window_inference

    from pytc_core.config import resolve_config
    from pytc_core.models import load_model_from_checkpoint
    from pytc_core.synthetic import synthetic_em_volume
    from pytc_core.volume import open_volume
    from pytc_infer import predict_volume
    from pytc_train.config import TrainConfig
    from pytc_train.train import run_train

    raw, labels = synthetic_em_volume((32, 32, 32), seed=4)
    h5 = tmp_path / "em.h5"
    with h5py.File(h5, "w") as f:
        f["raw"], f["labels"] = raw, labels
    config = resolve_config(TrainConfig, None, overrides={
        "model": {"architecture": "mednext_custom", "mednext_base_channels": 4,
                  "mednext_exp_r": 1, "mednext_block_counts": [1] * 9, "out_channels": 13},
        "data": {"raw": f"{h5}:raw", "labels": f"{h5}:labels", "bbox": [0, 0, 0, 16, 32, 32],
                 "val_bbox": [16, 0, 0, 32, 32, 32], "patch_size": [16, 32, 32],
                 "batch_size": 2, "num_workers": 0, "val_max_patches": 2, "erode": 1},
        "optim": {"ema": 0.9},
        "loss": {"reduction": "per_channel", "lsd_weight": 1.0, "lsd_sigma": [2.0]},
        "aug": {"preset": "none"},
        "train": {"max_steps": 3, "val_every": 3, "run_dir": str(tmp_path / "run"),
                  "accelerator": "cpu", "precision": "32"}})
    result = run_train(config)

    out = predict_volume(str(result.best_checkpoint), f"{h5}:raw", str(tmp_path / "aff"))
    aff = open_volume(out.output).read()
    assert aff.shape == (3, 32, 32, 32)  # the 3 affinities, not the 10 LSD channels

    def monai_pass(weights: str) -> np.ndarray:
        model, _ = load_model_from_checkpoint(result.best_checkpoint, weights=weights)
        x = torch.from_numpy(raw.astype(np.float32) / 255)[None, None]
        with torch.inference_mode():
            prob = sliding_window_inference(
                x, (16, 32, 32), 1, lambda t: torch.sigmoid(model(t)[:, :3]), overlap=0.25,
                mode="gaussian")
        return prob[0].numpy()

    ema, raw_weights = monai_pass("ema"), monai_pass("raw")
    np.testing.assert_allclose(aff, ema, rtol=0, atol=1e-5)
    assert np.abs(aff - raw_weights).max() > 1e-3  # and the raw weights would differ
