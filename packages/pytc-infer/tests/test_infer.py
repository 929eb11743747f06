"""run_infer / predict_volume on real precomputed layers and a saved checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from pytc_core import open_volume
from pytc_core.errors import UserError
from pytc_core.models import load_model_from_checkpoint
from pytc_infer import InferConfig, predict, predict_volume, run_infer


@pytest.fixture(scope="module")
def raw(helpers) -> np.ndarray:
    return helpers.make_raw((40, 36, 44))


@pytest.fixture(scope="module")
def raw_uri(tmp_path_factory, raw, helpers) -> str:
    return helpers.write_layer(str(tmp_path_factory.mktemp("raw") / "raw"), raw, offset=(10, 0, 5))


def monai_pass(ckpt, image: np.ndarray, patch=(16, 16, 16), overlap=0.25) -> np.ndarray:
    """One whole-volume MONAI sliding_window_inference with the checkpoint's model."""
    model, _ = load_model_from_checkpoint(ckpt)
    x = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        out = sliding_window_inference(x, patch, 4, lambda t: torch.sigmoid(model(t)),
                                       overlap=overlap, mode="gaussian")
    return out[0].numpy()


def test_blockwise_volume_equals_one_monai_pass(tmp_path, tiny_ckpt, raw, raw_uri):
    out_uri = str(tmp_path / "aff")
    result = predict_volume(tiny_ckpt, raw_uri, out_uri, block_size=(16, 16, 16))
    assert result.planned == result.processed == 3 * 3 * 3 and result.complete
    expected = monai_pass(tiny_ckpt, raw)
    aff = open_volume(out_uri)
    assert aff.shape == (3, 40, 36, 44) and aff.dtype == np.float32
    assert aff.offset == (10, 0, 5) and aff.voxel_size == (40.0, 8.0, 8.0)
    assert aff.chunk_size == (16, 16, 16)
    np.testing.assert_allclose(aff.read(), expected, rtol=0, atol=1e-5)
    assert expected.std() > 0.05  # a prediction that varies, not a constant
    # MONAI's grid has 3*3*4 windows; small blocks recompute the ones they share
    assert result.grid_windows == 36 and result.windows > 36
    record = json.loads((tmp_path / "aff" / "pytc_infer.json").read_text())
    assert record["complete"] and len(record["key"]["checkpoint_sha256"]) == 64
    assert record["checkpoint_config"]["model"]["architecture"] == "monai_unet"
    assert record["command"].startswith("predict_volume(") and record["pytc_infer_version"]
    assert (tmp_path / "aff" / "pytc_config.toml").exists()
    # the Python API on the array gives the same numbers
    model, _ = load_model_from_checkpoint(tiny_ckpt)
    np.testing.assert_allclose(predict(model, raw, patch=(16, 16, 16), overlap=0.25), expected,
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_bbox_predicts_the_box_with_context_from_around_it(tmp_path, tiny_ckpt, raw, raw_uri):
    # global bbox z 20-36, y 8-30, x 10-40 (the layer starts at (10, 0, 5)); the domain is the
    # box grown by half a patch (8 voxels) within the volume
    out_uri = str(tmp_path / "aff_box")
    result = predict_volume(tiny_ckpt, raw_uri, out_uri, bbox=(20, 8, 10, 36, 30, 40),
                            block_size=(16, 16, 16))
    aff = open_volume(out_uri)
    assert aff.shape == (3, 16, 22, 30) and aff.offset == (20, 8, 10)
    domain = raw[2:34, 0:36, 0:43]  # local z 10-26 ±8, y 8-30 ±8 clipped, x 5-35 ±8 clipped
    expected = monai_pass(tiny_ckpt, domain)[:, 8:24, 8:30, 5:35]
    np.testing.assert_allclose(aff.read(), expected, rtol=0, atol=1e-5)
    assert result.complete


@pytest.mark.slow
def test_two_shares_equal_one_run_and_uint8_is_the_quantised_float(tmp_path, tiny_ckpt, raw_uri):
    full = predict_volume(tiny_ckpt, raw_uri, str(tmp_path / "full"), block_size=(16, 16, 16))
    cfg = InferConfig(checkpoint=str(tiny_ckpt), input=raw_uri, output=str(tmp_path / "shared"),
                      block_size=(16, 16, 16), dtype="uint8")
    first = run_infer(cfg, share=(0, 2), show_progress=False)
    assert (first.planned, first.processed, first.complete) == (14, 14, False)
    with pytest.raises(UserError, match="is not complete"):  # readers refuse a partial output
        open_volume(first.output)
    second = run_infer(cfg, share=(1, 2), show_progress=False)
    assert (second.planned, second.processed, second.complete) == (13, 13, True)
    quantised = np.rint(open_volume(full.output).read() * 255).astype(np.uint8)
    np.testing.assert_array_equal(open_volume(first.output).read(), quantised)
    # a whole-volume run after one share resumes: the share's blocks are not recomputed
    other = replace(cfg, output=str(tmp_path / "resumed"))
    assert run_infer(other, share=(1, 2), show_progress=False).processed == 13
    again = run_infer(other, show_progress=False)
    assert (again.planned, again.skipped, again.processed, again.complete) == (27, 13, 14, True)
    assert again.windows == full.windows - second.windows
    np.testing.assert_array_equal(open_volume(other.output).read(), quantised)
    # a finished output is not run again without --overwrite
    with pytest.raises(UserError, match="already exists"):
        run_infer(other, show_progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_cuda_moves_a_cpu_model_there_and_equals_the_cpu_result(tiny_ckpt):
    model, _ = load_model_from_checkpoint(tiny_ckpt)
    raw = np.random.default_rng(0).integers(0, 255, (24, 40, 40), dtype=np.uint8)
    cpu = predict(model, raw, (16, 16, 16))
    on_gpu = predict(model, raw, (16, 16, 16), device="cuda")  # the model is on the CPU
    assert next(model.parameters()).device.type == "cuda"
    np.testing.assert_allclose(on_gpu, cpu, atol=2e-3)  # TF32 convolutions on the GPU
