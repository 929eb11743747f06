"""PyTC v2, BANIS and DKFZ checkpoints, written here in exactly their layouts from our own
networks, load into pytc's MedNeXt and give the same outputs."""

from collections import defaultdict

import numpy as np
import pytest
import torch

from pytc_core.errors import UserError
from pytc_core.models import build_model, load_model_from_checkpoint, save_checkpoint
from pytc_core.models.dkfz_weights import pytc_to_dkfz_name
from pytc_core.models.foreign import (
    ForwardToBackwardAffinities,
    checkpoint_layout,
    mednext_config_from_weights,
)
from pytc_core.targets import NEAREST_OFFSETS, affinities_from_labels

SMALL = {"architecture": "mednext_custom", "in_channels": 1, "out_channels": 6,
         "mednext_base_channels": 8, "mednext_exp_r": [2, 3, 2, 2, 2, 2, 2, 3, 2],
         "mednext_block_counts": [1, 2, 1, 1, 1, 1, 1, 1, 1], "mednext_kernel_size": 3,
         "mednext_grn": True}


def _randomised(table, seed):
    torch.manual_seed(seed)
    net = build_model(table).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net


def _dkfz(net, prefix=""):
    return {prefix + pytc_to_dkfz_name(k): v.clone() for k, v in net.state_dict().items()}


def _out(net, x):
    with torch.no_grad():
        return net(x)


X = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))


def _pytc_v2(path, raw, ema=None, arch="mednext_custom"):
    ckpt = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.6.6",
            "state_dict": _dkfz(raw, "model.model."), "hyper_parameters": {},
            "pytc_metadata": {"format_version": 1, "config_embedded": False,
                              "config_hash": "0" * 64, "model_arch": arch},
            "optimizer_states": [], "lr_schedulers": []}
    if ema is not None:
        ckpt["callbacks"] = {"EMAWeightsCallback{'decay': 0.999}": {
            "ema_state": _dkfz(ema, "model.")}}
    torch.save(ckpt, path)
    return path


def test_pytc_v2_checkpoint_gives_our_outputs_raw_and_ema(tmp_path):
    raw, ema = _randomised(SMALL, 1), _randomised(SMALL, 2)
    path = _pytc_v2(tmp_path / "v2.ckpt", raw, ema)
    model, config = load_model_from_checkpoint(path)  # auto: EMA weights where present
    assert config["source"] == {"layout": "pytc-v2", "weights": "ema", "path": str(path)}
    assert config["model"]["architecture"] == "mednext_custom"
    assert config["model"]["mednext_block_counts"] == SMALL["mednext_block_counts"]
    torch.testing.assert_close(_out(model, X), _out(ema, X), atol=1e-6, rtol=0)
    model, config = load_model_from_checkpoint(path, weights="raw")
    assert config["source"]["weights"] == "raw"
    torch.testing.assert_close(_out(model, X), _out(raw, X), atol=1e-6, rtol=0)


def test_banis_checkpoint_compiled_and_plain_give_our_outputs(tmp_path):
    from pytorch_lightning.utilities.parsing import AttributeDict

    net = _randomised({"architecture": "mednext", "mednext_size": "S", "out_channels": 6}, 3)
    expected = _out(net, X)
    for prefix in ("model._orig_mod.", "model."):
        hp = AttributeDict(model_id="S", kernel_size=3, num_input_channels=1, long_range=10,
                           small_size=128, learning_rate=1e-3, eval_ranges=[0.5, 0.6])
        path = tmp_path / f"banis{len(prefix)}.ckpt"
        torch.save({"state_dict": {prefix + k: v for k, v in _dkfz(net).items()},
                    "hyper_parameters": hp, "epoch": 0, "global_step": 50,
                    "best_thr_so_far": defaultdict(float, {"val": 0.6}),
                    "best_nerl_so_far": defaultdict(float, {"val": 0.41})}, path)
        model, config = load_model_from_checkpoint(path)  # no trusted=True needed
        assert isinstance(model, ForwardToBackwardAffinities)
        assert config["model"] == {"architecture": "mednext", "in_channels": 1,
                                   "out_channels": 6, "deep_supervision": False,
                                   "mednext_size": "S", "mednext_kernel_size": 3}
        assert config["targets"]["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1],
                                                [10, 0, 0], [0, 10, 0], [0, 0, 10]]
        assert config["data"] == {"normalize": "auto", "patch_size": [128, 128, 128]}
        torch.testing.assert_close(_out(model.net, X), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(_out(model, X), ForwardToBackwardAffinities.shift(expected),
                                   atol=1e-6, rtol=0)


def test_bare_dkfz_weights_and_deep_supervision_are_read_from_shapes(tmp_path):
    table = {**SMALL, "deep_supervision": True, "mednext_dec_kernel_size": 5,
             "mednext_do_res_up_down": False}
    net = _randomised(table, 4)
    torch.save({"state_dict": _dkfz(net, "module.")}, tmp_path / "w.pth")
    model, config = load_model_from_checkpoint(tmp_path / "w.pth")
    assert config["source"]["layout"] == "nnunet-mednext"
    assert config["model"]["deep_supervision"] is True
    assert config["model"]["mednext_enc_kernel_size"] == 3
    assert config["model"]["mednext_dec_kernel_size"] == 5
    assert config["model"]["mednext_do_res_up_down"] is False
    torch.testing.assert_close(_out(model, X), _out(net, X), atol=1e-6, rtol=0)


def test_paper_sizes_are_recognised_from_shapes():
    for size in ("S", "B"):
        net = build_model({"architecture": "mednext", "mednext_size": size})
        state = {k: v for k, v in net.state_dict().items()}
        table = mednext_config_from_weights(state)
        assert table["architecture"] == "mednext" and table["mednext_size"] == size


def test_forward_affinities_become_pytc_backward_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint64)
    fwd = np.zeros((3, *labels.shape), np.float32)  # BANIS: edge v -- v + e_c at v
    same = labels[:-1] == labels[1:]
    fwd[0, :-1] = same & (labels[:-1] > 0)
    fwd[1, :, :-1] = (labels[:, :-1] == labels[:, 1:]) & (labels[:, :-1] > 0)
    fwd[2, :, :, :-1] = (labels[:, :, :-1] == labels[:, :, 1:]) & (labels[:, :, :-1] > 0)
    back = ForwardToBackwardAffinities.shift(torch.from_numpy(fwd)[None])[0].numpy()
    want = affinities_from_labels(labels, NEAREST_OFFSETS)
    want = want[0] if isinstance(want, tuple) else want
    np.testing.assert_array_equal(back[0, 1:], want[0, 1:])
    np.testing.assert_array_equal(back[1, :, 1:], want[1, :, 1:])
    np.testing.assert_array_equal(back[2, :, :, 1:], want[2, :, :, 1:])


def test_model_table_supplies_what_the_file_lacks_and_contradictions_fail(tmp_path):
    net = _randomised({**SMALL, "mednext_norm": "layer"}, 5)
    path = _pytc_v2(tmp_path / "v2.ckpt", net)
    model, config = load_model_from_checkpoint(path, model={"mednext_norm": "layer"})
    assert config["model"]["mednext_norm"] == "layer"
    torch.testing.assert_close(_out(model, X), _out(net, X), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="shape"):  # first differing tensor named
        load_model_from_checkpoint(path, model={"mednext_base_channels": 16})
    banis = tmp_path / "banis.ckpt"
    s = _randomised({"architecture": "mednext", "mednext_size": "S", "out_channels": 6}, 6)
    torch.save({"state_dict": {"model." + k: v for k, v in _dkfz(s).items()},
                "hyper_parameters": {"model_id": "S", "kernel_size": 3}}, banis)
    with pytest.raises(UserError, match="contradicts the checkpoint's own 'S'"):
        load_model_from_checkpoint(banis, model={"mednext_size": "M"})


def test_bad_checkpoints_are_one_line_user_errors(tmp_path):
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, tmp_path / "odd.ckpt")
    with pytest.raises(UserError, match="odd.ckpt is not a pytc checkpoint, nor a PyTC v2"):
        load_model_from_checkpoint(tmp_path / "odd.ckpt")
    net = _randomised(SMALL, 7)
    ckpt = {"state_dict": {**_dkfz(net, "model.model."), "model.model.head.weight":
                           torch.zeros(2)}, "pytc_metadata": {"model_arch": "mednext"}}
    torch.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(UserError, match="'head.weight' does not map"):
        load_model_from_checkpoint(tmp_path / "extra.ckpt")
    path = _pytc_v2(tmp_path / "v2.ckpt", net)
    with pytest.raises(UserError, match="no EMA weights"):
        load_model_from_checkpoint(path, weights="ema")
    _pytc_v2(tmp_path / "unet.ckpt", net, arch="monai_unet")
    with pytest.raises(UserError, match="MedNeXt checkpoints only"):
        load_model_from_checkpoint(tmp_path / "unet.ckpt")
    assert checkpoint_layout({"pytc_metadata": {}, "state_dict": {}}) == "pytc-v2"


def test_pytc_checkpoints_still_load_and_refuse_ema_and_contradictions(tmp_path):
    table = {**SMALL, "out_channels": 3}
    net = _randomised(table, 8)
    path = save_checkpoint(tmp_path / "m.ckpt", net, {"model": table})
    model, config = load_model_from_checkpoint(path, model={"out_channels": 3})
    torch.testing.assert_close(_out(model, X), _out(net, X), atol=0, rtol=0)
    with pytest.raises(UserError, match="contradicts"):
        load_model_from_checkpoint(path, model={"out_channels": 6})
    with pytest.raises(UserError, match="no EMA weights"):
        load_model_from_checkpoint(path, weights="ema")
