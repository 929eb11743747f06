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


def test_a_loss_that_goes_non_finite_stops_the_run_and_names_step_and_term(em_h5, tmp_path,
                                                                            tiny_config):
    """From the 4th training step the model's output is +inf: BCE is inf (Dice stays finite).
    Steps 4 and 5 are skipped, the 3rd in a row stops the run naming the step and the term;
    no checkpoint holds non-finite weights."""
    from torch import nn

    from pytc_core.models import registry as registry_module
    from pytc_core.models.registry import register_architecture

    class InfFromStep4(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv3d(cin, cout, 1)
            self.calls = 0

        def forward(self, x):
            y = self.conv(x)
            if self.training:
                self.calls += 1
                if self.calls >= 4:
                    y = y + float("inf")
            return y

    register_architecture("test_inf_from_step_4")(
        lambda config: InfFromStep4(config.in_channels, config.out_channels))
    try:
        config = tiny_config(em_h5, tmp_path, max_steps=10, val_every=100, checkpoint_every=1)
        config = dataclasses.replace(config, model=dataclasses.replace(
            config.model, architecture="test_inf_from_step_4"))
        with pytest.raises(UserError) as exc:
            run_train(config)
    finally:
        registry_module._REGISTRY.pop("test_inf_from_step_4")
    assert exc.value.what.startswith("the loss was not finite for 3 steps in a row, the last at "
                                     "step 6: nan (bce of output, the model's output (24576 "
                                     "non-finite values)); the run stopped")
    assert "optim.max_nonfinite_steps" in exc.value.fix
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5  # skipped steps count, without an update
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


def test_non_finite_weights_are_never_saved(trained):
    config, _ = trained
    module = AffinityModule(dataclasses.asdict(config))
    state = module.state_dict()
    module.on_save_checkpoint({"state_dict": state})  # finite: saved
    name = next(iter(state))
    state[name] = state[name].clone().fill_(float("nan"))
    with pytest.raises(UserError, match=f"weights at step -1 are not finite .*e.g. {name}\\); "
                                        "not saved"):
        module.on_save_checkpoint({"state_dict": state})


def _best_score(path):
    state = torch.load(path, weights_only=False)["callbacks"]
    (score,) = [s["best_model_score"] for k, s in state.items() if k.startswith("ModelCheckpoint")]
    return None if score is None else float(score)


def test_a_signal_at_a_validation_keeps_the_best_and_the_history(em_h5, tmp_path, tiny_config):
    """SIGUSR1 during step 2, whose validation runs after last.ckpt was saved: last.ckpt is
    saved again after best.ckpt (same best score, so the resumed run never replaces a better
    best.ckpt), and the resumed run appends to logs/metrics.csv."""
    import csv
    import os
    import signal

    import pytorch_lightning as pl

    from pytc_train.train import Preempted

    class SignalDuringStep2(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGUSR1)

    config = tiny_config(em_h5, tmp_path, max_steps=4, val_every=2, checkpoint_every=100,
                         resume="auto")
    with pytest.raises(Preempted) as stopped:
        run_train(config, callbacks=[SignalDuringStep2()])
    assert stopped.value.step == 2
    ckpts = tmp_path / "run" / "checkpoints"
    best_after_1 = _best_score(ckpts / "best.ckpt")
    assert best_after_1 is not None
    assert _best_score(ckpts / "last.ckpt") == best_after_1
    result = run_train(config)
    assert result.steps == 4 and result.attempt_steps == 2
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    val = {int(r["step"]): float(r["val/boundary_f1"]) for r in rows if r.get("val/boundary_f1")}
    assert sorted(val) == [1, 3]  # Lightning logs a validation at the step before its count
    # one history: each training step once, with the step the weights were at (a resumed
    # run's logging step is the checkpoint's global step, not one behind it)
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [0, 1, 2, 3]
    assert _best_score(ckpts / "best.ckpt") == pytest.approx(max(val.values()))
    assert _best_score(ckpts / "best.ckpt") >= best_after_1
    # an attempt that finds the run's steps (or max_time) already spent trains none, and says
    # so (the Slurm requeue test's last attempt said "trained 77 steps")
    again = run_train(config)
    assert again.steps == 4 and again.attempt_steps == 0


def test_a_signal_between_validations_keeps_one_history(em_h5, tmp_path, tiny_config):
    """SIGUSR1 during step 3, with no validation after it: the resumed run logs steps 3..5
    and validates after steps 4 and 6, as an uninterrupted run (the Slurm requeue test found
    the step before each resume logged twice and validations shifted by one per requeue:
    Lightning's batch counters were saved before their increment)."""
    import csv
    import os
    import signal

    import pytorch_lightning as pl

    from pytc_train.train import Preempted

    class SignalDuringStep2(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    config = tiny_config(em_h5, tmp_path, max_steps=6, val_every=2, checkpoint_every=100,
                         resume="auto")
    with pytest.raises(Preempted) as stopped:
        run_train(config, callbacks=[SignalDuringStep2()])
    assert stopped.value.step == 3
    result = run_train(config)
    assert result.steps == 6 and result.attempt_steps == 3
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [0, 1, 2, 3, 4, 5]
    assert [int(r["step"]) for r in rows if r.get("val/boundary_f1")] == [1, 3, 5]
