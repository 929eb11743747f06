"""pytc-infer with PyTC v2 and BANIS checkpoints written from our own network: the same
affinities as the pytc checkpoint of that network; settings the file lacks come from --set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytc_core.cli import run_entry_point
from pytc_core.models import build_model, save_checkpoint
from pytc_core.models.dkfz_weights import pytc_to_dkfz_name
from pytc_core.volume import open_volume
from pytc_infer.cli import app

TABLE = {"architecture": "mednext_custom", "in_channels": 1, "out_channels": 3,
         "mednext_base_channels": 4, "mednext_exp_r": 2, "mednext_block_counts": [1] * 9,
         "mednext_kernel_size": 3, "mednext_norm": "layer"}


def run(args, capsys):
    code = run_entry_point("pytc-infer", app, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def raw_uri(tmp_path_factory, helpers) -> str:
    return helpers.write_layer(str(tmp_path_factory.mktemp("raw") / "raw"),
                               helpers.make_raw((32, 32, 40)))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    net = build_model(TABLE).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    pytc = save_checkpoint(tmp / "pytc.ckpt", net, {"model": TABLE,
                                                    "data": {"patch_size": [32, 32, 32]}})
    dkfz = {pytc_to_dkfz_name(k): v for k, v in net.state_dict().items()}
    v2 = tmp / "v2.ckpt"
    torch.save({"state_dict": {"model.model." + k: torch.zeros_like(v) for k, v in dkfz.items()},
                "pytc_metadata": {"format_version": 1, "model_arch": "mednext_custom"},
                "callbacks": {"EMAWeightsCallback": {"ema_state": {
                    "model." + k: v for k, v in dkfz.items()}}}}, v2)
    return str(pytc), str(v2)


def test_pytc_v2_checkpoint_predicts_what_its_pytc_twin_predicts(tmp_path, checkpoints, raw_uri,
                                                                 capsys):
    pytc, v2 = checkpoints
    common = ["-i", raw_uri, "--patch", "32", "--device", "cpu"]
    code, out, err = run(["-c", pytc, *common, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    # the file stores no norm type: LayerNorm given by --set (the EMA tensors, by default)
    code, out, err = run(["-c", v2, *common, "-o", tmp_path / "b", "--set",
                          "model.mednext_norm=layer", "-v"], capsys)
    assert code == 0, err
    assert "a pytc-v2 checkpoint, ema weights" in err
    a, b = open_volume(str(tmp_path / "a")).read(), open_volume(str(tmp_path / "b")).read()
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
    # its raw weights are zeros: every affinity is sigmoid(0)
    code, out, err = run(["-c", v2, *common, "-o", tmp_path / "c", "--weights", "raw",
                          "--set", "infer.model.mednext_norm=layer"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(open_volume(str(tmp_path / "c")).read(), 0.5, atol=1e-6)


def test_foreign_checkpoint_errors_are_one_line(tmp_path, checkpoints, raw_uri, capsys):
    pytc, v2 = checkpoints
    code, out, err = run(["-c", pytc, "-i", raw_uri, "-o", tmp_path / "x", "--weights",
                          "ema"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "holds no EMA weights" in err
    code, out, err = run(["-c", v2, "-i", raw_uri, "-o", tmp_path / "y", "--set",
                          "model.mednext_base_channels=8"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "shape" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
