"""run_train end to end on a tiny model: run directory, checkpoints both loaders read,
--init-from, --resume auto in an empty directory, bf16 precision."""

import dataclasses

import pytest
import torch

from pytc_core.errors import UserError
from pytc_core.models import load_model_from_checkpoint
from pytc_train.module import AffinityModule
from pytc_train.train import run_train


@pytest.fixture(scope="module")
def trained(em_h5, tmp_path_factory, tiny_config):
    tmp = tmp_path_factory.mktemp("trained")
    config = tiny_config(em_h5, tmp, resume="auto")  # --resume auto in an empty run dir: fresh
    return config, run_train(config)


def test_run_directory_layout_and_result(trained):
    config, result = trained
    run = result.run_dir
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/hparams.yaml",
        "logs/metrics.csv", "pytc_config.toml"]
    assert result.steps == 4
    assert result.best_checkpoint == run / "checkpoints" / "best.ckpt"
    assert set(result.val_scores) == {"loss", "precision", "recall", "f1", "boundary_f1"}
    assert 0 <= result.val_scores["f1"] <= 1
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/f1", "val/precision", "val/recall", "lr-AdamW"} <= set(header)


def test_checkpoints_load_in_core_and_in_lightning(trained):
    config, result = trained
    model, stored = load_model_from_checkpoint(result.best_checkpoint)
    assert stored["model"]["mednext_base_channels"] == 4
    assert stored["data"]["patch_size"] == [16, 16, 16]
    assert stored["data"]["normalize"] == "auto"
    assert stored["data"]["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    assert stored["data"]["batch_size"] == 2
    module = AffinityModule.load_from_checkpoint(result.last_checkpoint)
    last = torch.load(result.last_checkpoint, weights_only=True)
    assert last["global_step"] == 4
    x = torch.rand(2, 1, 16, 16, 16)  # batch 2: GroupNorm of a 1x1x1 bottleneck needs 2 values
    reference = module.model.eval()(x)
    again, _ = load_model_from_checkpoint(result.last_checkpoint)
    assert torch.equal(again(x), reference)


def test_init_from_a_checkpoint_loads_its_weights(trained, tmp_path):
    config, result = trained
    other = dataclasses.replace(config, train=dataclasses.replace(
        config.train, init_from=str(result.last_checkpoint), max_steps=1, resume=None,
        run_dir=str(tmp_path / "b")))
    from pytc_train.train import _load_init_weights

    module = AffinityModule(dataclasses.asdict(other))
    _load_init_weights(module, other)
    reference, _ = load_model_from_checkpoint(result.last_checkpoint)
    for (name, a), (_, b) in zip(module.model.state_dict().items(),
                                 reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    bigger = dataclasses.replace(other, model=dataclasses.replace(other.model,
                                                                  mednext_base_channels=8))
    with pytest.raises(UserError, match="does not fit the model .*shape of"):
        _load_init_weights(AffinityModule(dataclasses.asdict(bigger)), bigger)


def test_bf16_mixed_precision_trains_on_cpu(em_h5, tmp_path, tiny_config):
    config = tiny_config(em_h5, tmp_path, precision="bf16-mixed", max_steps=2, val_every=2)
    result = run_train(config)
    assert result.steps == 2
    assert torch.load(result.last_checkpoint, weights_only=True)["global_step"] == 2


@pytest.mark.parametrize("layout", ["pytc-v2", "banis"])
def test_init_from_pytc_v2_and_banis_checkpoints(trained, tmp_path, layout):
    """A PyTC v2 (with EMA weights) or BANIS checkpoint of the same MedNeXt initialises the
    model: PyTC v2's EMA tensors, BANIS's (torch.compile) tensors, each one to one."""
    from pytc_core.models.dkfz_weights import pytc_to_dkfz_name

    config, result = trained
    module = AffinityModule(dataclasses.asdict(config))
    torch.manual_seed(1)
    own = {k: torch.randn_like(v) for k, v in module.model.state_dict().items()}
    dkfz = {pytc_to_dkfz_name(k): v for k, v in own.items()}
    if layout == "pytc-v2":
        ckpt = {"state_dict": {"model.model." + k: torch.zeros_like(v) for k, v in dkfz.items()},
                "pytc_metadata": {"format_version": 1, "model_arch": "mednext_custom"},
                "callbacks": {"EMAWeightsCallback": {"ema_state": {
                    "model." + k: v for k, v in dkfz.items()}}}}
    else:
        ckpt = {"state_dict": {"model._orig_mod." + k: v for k, v in dkfz.items()},
                "hyper_parameters": {"num_input_channels": 1}, "best_thr_so_far": {}}
    path = tmp_path / f"{layout}.ckpt"
    torch.save(ckpt, path)
    other = dataclasses.replace(config, train=dataclasses.replace(
        config.train, init_from=str(path), max_steps=1, resume=None))
    from pytc_train.train import _load_init_weights

    _load_init_weights(module, other)
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(tensor, own[name]), name
