"""Training an affinity model: ``run_train(TrainConfig) -> TrainResult``.

Everything a user can get wrong is checked before the first step and before anything is
written (sources, patch vs. architecture, weights to initialise from, run directory). A run
directory holds ``pytc_config.toml``, ``checkpoints/{last,best}.ckpt`` and ``logs/``.
SIGUSR1 / SIGTERM save ``checkpoints/last.ckpt`` and raise :class:`Preempted` (the CLI exits
with :data:`EXIT_PREEMPTED`); ``train.resume = "auto"`` continues from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.config import config_to_dict
from pytc_core.errors import UserError
from pytc_core.output_run import open_input
from pytc_train.augment.config import AugConfig
from pytc_train.config import DataConfig, TrainConfig

__all__ = [
    "EXIT_PREEMPTED",
    "Preempted",
    "TrainResult",
    "check_patch_for_model",
    "process_rank",
    "run_train",
]

log = logging.getLogger("pytc.train")
#: progress lines: shown under -q too (pytc_core.cli.PROGRESS_LOGGER), so that a long quiet
#: run does not look like a hang
progress_log = logging.getLogger("pytc.progress.train")

#: exit code of a run stopped by SIGUSR1/SIGTERM after saving last.ckpt (EX_TEMPFAIL: retry)
EXIT_PREEMPTED = 75
RUN_DIR_ENV = "PYTC_TRAIN_RUN_DIR"


class Preempted(Exception):  # noqa: N818 - a state, not an error
    """The run was stopped by a signal after saving ``last.ckpt``; resume with ``--resume auto``."""

    def __init__(self, signum: int, last: Path, step: int) -> None:
        self.signum, self.last, self.step = signum, last, step
        super().__init__(f"stopped by signal {signal.Signals(signum).name} at step {step}; "
                         f"saved {last}")


@dataclass(frozen=True)
class TrainResult:
    """Where the run's files are, how far it got, and its last validation scores."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    steps: int
    seconds: float
    val_scores: dict[str, float] | None = None
    #: steps of this attempt (``steps`` counts every attempt of a resumed run)
    attempt_steps: int | None = None


def process_rank() -> int:
    """This process's rank before the trainer exists (DDP children, Slurm tasks), else 0."""
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        if int(os.environ.get(key, "0") or 0) > 0:
            return 1
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(os.environ.get("SLURM_PROCID", "0") or 0)
    return 0


def check_patch_for_model(model: Any, patch: Sequence[int]) -> None:
    """UserError if the architecture cannot take ``patch`` (voxels, z, y, x), naming the
    nearest sizes it can take (core's ``validate_input_size``)."""
    from pytc_core.models import validate_input_size

    validate_input_size(model, tuple(patch))


# --------------------------------------------------------------------------- checks


def _resolve_run_dir(config: TrainConfig) -> Path:
    if config.train.run_dir:
        return Path(config.train.run_dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return Path("runs") / f"slurm-{os.environ['SLURM_JOB_ID']}"
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_resume_names_a_run(config: TrainConfig) -> None:
    """``--resume auto`` continues a named run: without a run directory it would silently
    start a new timestamped one."""
    named = (config.train.run_dir or os.environ.get(RUN_DIR_ENV)
             or (os.environ.get("SLURM_JOB_ID")
                 and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1))
    if config.train.resume == "auto" and not named:
        raise UserError("--resume auto needs the run to continue, and no --run-dir names one",
                        "pass --run-dir runs/<name> (train.run_dir) of the run to resume")


#: options that do not change what a run computes: free to differ on resume
RESUME_FREE = frozenset({
    "train.resume", "train.resume_changed", "train.run_dir", "train.log_every",
    "train.progress_every",
    "train.checkpoint_every", "train.max_minutes", "train.threads", "train.init_from",
    "train.upkern", "data.num_workers"})
#: the machine's own choices (config value -> auto): made at the first start, reused on resume
FROZEN_CHOICES = {("data", "batch_size"): None, ("data", "num_workers"): None,
                  ("train", "precision"): "auto", ("train", "accelerator"): "auto",
                  ("train", "devices"): 0, ("train", "threads"): 0}


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for each result-changing option (not in :data:`RESUME_FREE`)
    that differs between two configs as TOML tables (a missing key reads "unset")."""
    a, b = _flat(saved), _flat(new)
    return [f"{k}: {a.get(k, 'unset')!r} -> {b.get(k, 'unset')!r}"
            for k in sorted(set(a) | set(b))
            if k not in RESUME_FREE and a.get(k) != b.get(k)]


def _frozen(config: TrainConfig, saved: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """``config`` with each machine choice left on auto taken from the saved first start, and
    the names of those choices."""
    tables: dict[str, dict[str, Any]] = {}
    for (table, key), auto in FROZEN_CHOICES.items():
        if getattr(getattr(config, table), key) == auto and key in saved.get(table, {}):
            tables.setdefault(table, {})[key] = saved[table][key]
    for table, values in tables.items():
        config = dataclasses.replace(config, **{
            table: dataclasses.replace(getattr(config, table), **values)})
    return config, [key for values in tables.values() for key in values]


def _resume_path(config: TrainConfig, ckpt_dir: Path, overwrite: bool) -> Path | None:
    resume = config.train.resume
    existing = sorted(p.name for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if resume is None:
        if existing and not overwrite:
            raise UserError(f"{ckpt_dir} already holds checkpoints of another run "
                            f"({', '.join(existing)})",
                            "continue it with --resume auto, start over with --overwrite, or "
                            "pick another --run-dir")
        return None
    if resume == "auto":
        last = ckpt_dir / "last.ckpt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"--resume checkpoint not found: {path}",
                        "pass an existing .ckpt, or --resume auto")
    return path


def _check_foreground(dataset) -> None:
    """UserError naming a training source whose sampled patches never hold labels."""
    rng = np.random.default_rng(dataset.seed)
    cfg = dataset.config
    for pair in dataset.pairs:
        labels = open_input(pair.labels)
        found = False
        for _ in range(max(1, cfg.max_resample)):
            start = [int(rng.integers(a, b - p + 1)) for a, b, p in
                     zip(pair.box.start, pair.box.stop, cfg.patch_size, strict=True)]
            if np.any(labels.read(BBox.from_shape(cfg.patch_size, start))):
                found = True
                break
        if not found:
            raise UserError(f"training source {pair.name} has no labelled (non-zero) voxel in "
                            f"{max(1, cfg.max_resample)} sampled patches",
                            "check the labels URI and bbox, or raise data.max_resample")


def _load_init_weights(module, config: TrainConfig) -> None:
    """``train.init_from``: a pytc .ckpt (strict, or UpKern), a PyTC v2 or BANIS MedNeXt
    checkpoint (EMA weights where it has them) or DKFZ nnunet_mednext weights."""
    from pytc_core.models.foreign import checkpoint_layout, torch_load

    path = Path(config.train.init_from)  # type: ignore[arg-type]
    if not path.is_file():
        raise UserError(f"--init-from file not found: {path}", "pass a .ckpt or a DKFZ .pth file")
    try:
        data = torch_load(path, "cpu", trusted=False)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise UserError(f"--init-from {path} is not a PyTorch checkpoint "
                        f"({str(exc).splitlines()[0][:120]})",
                        "pass a .ckpt written by pytc-train or DKFZ nnunet_mednext weights") from None
    if not isinstance(data, dict):
        raise UserError(f"--init-from {path} holds a {type(data).__name__}, not weights",
                        "pass a .ckpt written by pytc-train or a state dict")
    model = module.model
    layout = checkpoint_layout(data, f"--init-from {path}")
    if layout == "pytc":
        weights = {k[len("model."):]: v for k, v in data.get("state_dict", {}).items()
                   if k.startswith("model.")}
        if config.train.upkern:
            from pytc_core.models import upkern_load_weights

            upkern_load_weights(model, weights)
            log.info("initialised the model from %s by UpKern", path)
            return
        own = model.state_dict()
        missing = [k for k in own if k not in weights]
        extra = [k for k in weights if k not in own]
        shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
        if missing or extra or shapes:
            detail = (f"shape of {shapes[0]}: {tuple(weights[shapes[0]].shape)} in the file, "
                      f"{tuple(own[shapes[0]].shape)} in the model" if shapes else
                      f"missing {missing[:1]}, unexpected {extra[:1]}")
            raise UserError(f"--init-from {path} does not fit the model ({detail})",
                            "build the same [model] as the checkpoint's, or --upkern for a "
                            "larger kernel")
        model.load_state_dict(weights, strict=True)
        log.info("initialised the model from pytc checkpoint %s (all %d tensors)", path, len(own))
        return
    if config.train.upkern:
        raise UserError("--upkern needs a pytc .ckpt to --init-from",
                        f"drop --upkern for {layout} weights")
    from pytc_core.models import load_nnunet_mednext_weights
    from pytc_core.models.foreign import foreign_weights, read_foreign_checkpoint

    which, tensors = foreign_weights(read_foreign_checkpoint(data, path), "auto", path)
    load_nnunet_mednext_weights(model, tensors)
    log.info("initialised the model from %s %s weights %s", layout, which, path)


# --------------------------------------------------------------------------- callbacks


def _validate_on_schedule_only(trainer) -> None:
    """Keep Lightning from validating because the run stops (it validates on any
    ``should_stop``): a stop for a signal spends Slurm's grace time saving, and the resumed
    run validates at the steps an uninterrupted run would (a validation due at this very
    step still runs)."""
    loop = trainer.fit_loop.epoch_loop
    scheduled = loop._should_check_val_fx

    def should_check_val(data_fetcher) -> bool:
        trainer.should_stop = False
        try:
            return scheduled(data_fetcher)
        finally:
            trainer.should_stop = True

    loop._should_check_val_fx = should_check_val


def _callbacks_module():
    import pytorch_lightning as pl

    class RunCallbacks(pl.Callback):
        """last.ckpt every N steps / at the end / on SIGUSR1 or SIGTERM; progress lines
        (step, loss, the last validation's ``monitor`` score, time left); a validation at
        the last step when the run has none yet (``best_checkpoint``: the callback whose
        best it would be)."""

        def __init__(self, last: Path, every: int, log_every: int, max_steps: int,
                     log_progress: bool, monitor: str = "boundary_f1") -> None:
            self.last, self.every, self.log_every = last, every, log_every
            self.max_steps, self.log_progress = max_steps, log_progress
            self.monitor = monitor
            self.best_checkpoint: Any = None
            self.last_val: tuple[int, float] | None = None
            self.signum: int | None = None
            self.saved_step = -1
            self._t0 = time.perf_counter()
            self._step0 = 0
            self._prev_step = 0
            #: whether this attempt trained at all (Lightning skips on_train_start when a
            #: resumed run's max_steps or max_time is already spent)
            self.started = False

        def handle(self, signum: int, frame: Any) -> None:
            self.signum = signum

        def _save(self, trainer) -> None:
            trainer.save_checkpoint(self.last)
            self.saved_step = trainer.global_step

        def on_train_start(self, trainer, pl_module) -> None:
            self._t0, self._step0 = time.perf_counter(), trainer.global_step
            self._prev_step = trainer.global_step
            self.started = True
            writer = getattr(trainer.logger, "_experiment", None) if trainer.logger else None
            drop_after = getattr(writer, "drop_after", None)
            if trainer.is_global_zero and drop_after is not None:
                drop_after(trainer.global_step)  # the history continues from here
            # take SIGTERM back from Lightning (which stops without saving): ours saves first
            _install_handlers(self.handle)
            if self.best_checkpoint is not None:
                _validate_at_the_end_if_never(trainer, self.best_checkpoint)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            # Lightning counts logged steps apart from global_step and increments that count
            # after on_train_batch_end: a checkpoint saved there (ours, on a signal) holds it
            # one behind, and the resumed run would log every step one too low (the Slurm
            # requeue test found one step logged twice per requeue). A batch logs at the
            # number of optimizer steps done before it, as in a run never interrupted.
            epoch_loop = trainer.fit_loop.epoch_loop
            if getattr(epoch_loop, "_batches_that_stepped", None) not in (None,
                                                                          trainer.global_step):
                epoch_loop._batches_that_stepped = trainer.global_step

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            # with gradient accumulation, only a batch that ends a group steps the optimizer:
            # stop, save and log there, never between micro-batches (a resume would restart
            # the group with Lightning's batch counter out of step with the weights)
            group_done, self._prev_step = step != self._prev_step, step
            if not group_done:  # the same on every rank: global_step is
                return
            stop = self.signum is not None
            if trainer.world_size > 1:  # every rank saves (a collective) and stops together
                stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop:
                self.signum = self.signum or signal.SIGTERM
                if self.saved_step != step:
                    self._save(trainer)
                trainer.should_stop = True
                _validate_on_schedule_only(trainer)
                return
            if step % self.every == 0 and step != self.saved_step:
                self._save(trainer)
            if self.log_progress and step % self.log_every == 0 and trainer.is_global_zero:
                loss = trainer.callback_metrics.get("train/loss")
                progress_log.info("%s", progress_line(
                    step, self.max_steps, float(loss) if loss is not None else float("nan"),
                    time.perf_counter() - self._t0, step - self._step0,
                    self.monitor, self.last_val))

        def on_validation_end(self, trainer, pl_module) -> None:
            scores = getattr(pl_module, "last_val_scores", None)
            if scores and not trainer.sanity_checking and self.monitor in scores:
                self.last_val = (trainer.global_step, float(scores[self.monitor]))
            if scores and trainer.is_global_zero and not trainer.sanity_checking:
                log.info("step %d validation: loss %.4f  precision %.4f  recall %.4f  F1 %.4f  "
                         "boundary F1 %.4f", trainer.global_step, scores["loss"],
                         scores["precision"], scores["recall"], scores["f1"], scores["boundary_f1"])

        def on_train_end(self, trainer, pl_module) -> None:
            if self.saved_step != trainer.global_step:
                self._save(trainer)

    return RunCallbacks


def format_duration(seconds: float) -> str:
    """``1:02:03`` (hours unbounded), ``2:03`` under an hour, ``?`` when unknown."""
    if not np.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, m, sec = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def progress_line(step: int, max_steps: int, loss: float, elapsed: float, steps_done: int,
                  monitor: str, last_val: tuple[int, float] | None) -> str:
    """One progress line: ``step 25/500  loss 0.4123  val boundary_f1 0.4400 (step 20)
    1.38 s/step  9:46 left``; ``elapsed`` seconds for ``steps_done`` steps of this attempt
    (validations included) give the time left."""
    per_step = elapsed / steps_done if steps_done > 0 else float("nan")
    val = (f"val {monitor} {last_val[1]:.4f} (step {last_val[0]})" if last_val is not None
           else f"val {monitor} -")
    return (f"step {step}/{max_steps}  loss {loss:.4f}  {val}  {per_step:.2f} s/step  "
            f"{format_duration((max_steps - step) * per_step)} left")


def _validate_at_the_end_if_never(trainer, best_checkpoint) -> None:
    """Validate after the last step when the run (all its attempts) has not validated yet
    (``max_steps`` below ``val_every``), so best.ckpt is chosen by a score, never a copy of
    the final weights claimed as best."""
    loop = trainer.fit_loop.epoch_loop
    scheduled = loop._should_check_val_fx

    def should_check_val(data_fetcher) -> bool:
        if scheduled(data_fetcher):
            return True
        return (trainer.global_step >= trainer.max_steps and not loop._should_accumulate()
                and not best_checkpoint.best_model_path)

    loop._should_check_val_fx = should_check_val


def _best_checkpoint_class():
    from pytorch_lightning.callbacks import ModelCheckpoint

    class BestCheckpoint(ModelCheckpoint):
        """ModelCheckpoint that, after a validation, saves last.ckpt again when it was saved
        at this step before the validation ran (every ``checkpoint_every`` steps, or at a
        signal): best.ckpt and its score first, then last.ckpt holding that same score, so a
        resumed run never replaces a better best.ckpt."""

        def __init__(self, *args: Any, run_callbacks: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.run_callbacks = run_callbacks

        @property
        def state_key(self) -> str:  # Lightning's own key: checkpoints of older runs resume
            key = super().state_key
            return "ModelCheckpoint" + key[len(type(self).__qualname__):]

        def on_validation_end(self, trainer, pl_module) -> None:
            super().on_validation_end(trainer, pl_module)
            if (not trainer.sanity_checking
                    and self.run_callbacks.saved_step == trainer.global_step):
                self.run_callbacks._save(trainer)

    return BestCheckpoint


def _install_handlers(handler: Callable[[int, Any], None]) -> None:
    import threading

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals(handler: Callable[[int, Any], None]):
    """Route SIGUSR1 and SIGTERM to ``handler`` for the duration (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    _install_handlers(handler)
    from pytc_train.preempt import take_early_signal

    early = take_early_signal()
    if early is not None:  # arrived during start-up: stop after the first step, saved
        log.info("signal %s arrived before training started: stopping after the first step",
                 signal.Signals(early).name)
        handler(early, None)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _quiet_lightning(verbose: bool):
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.INFO if verbose else logging.WARNING)
    # Lightning's advertisements ("💡 Tip: ... litlogger / litmodels") are no log of a run:
    # dropped also under -v, where its other info lines (precision, devices) are shown
    tip_loggers = [logging.getLogger(f"{n}.utilities.rank_zero") for n in names]
    for logger in tip_loggers:
        logger.addFilter(_drop_tips)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*num_workers.*",
                        ".*resuming from a checkpoint that ended before the epoch ended.*",
                        ".*The number of training batches.*", ".*LightningModule.log.*",
                        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
                        ".*Checkpoint directory .* exists and is not empty.*",
                        ".*sync_dist=True.*", ".*to update it to be the same.*",
                        ".*The `srun` command is available.*",
                        ".*`training_step` returned `None`.*"):  # a skipped non-finite step
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)
            for logger in tip_loggers:
                logger.removeFilter(_drop_tips)


def _drop_tips(record: logging.LogRecord) -> bool:
    """False for Lightning's "💡 Tip:" records (a logging filter)."""
    return not str(record.msg).lstrip().startswith("\N{ELECTRIC LIGHT BULB} Tip")


# --------------------------------------------------------------------------- the stage


def _resolved_data(config: TrainConfig, stats: tuple[float, float] | None) -> DataConfig:
    if stats is None:
        return config.data
    return dataclasses.replace(config.data, mean=stats[0], std=stats[1])


def _resolved_aug(config: TrainConfig) -> AugConfig:
    from pytc_train.augment import resolve_for_patch

    return resolve_for_patch(config.aug, config.data.patch_size)


def _augmentation(config: TrainConfig, pairs: Sequence[Any]
                  ) -> tuple[Callable[[dict], dict] | None, tuple[int, int, int]]:
    """The ``[aug]`` pipeline and its read margin per side (None for preset ``none``)."""
    if not config.aug.enabled():
        return None, (0, 0, 0)
    from pytc_train.augment import build_augmentation

    sizes = {tuple(open_input(p.raw).voxel_size) for p in pairs}
    voxel = sizes.pop() if len(sizes) == 1 else None  # axis permutation needs one voxel size
    return build_augmentation(config.aug, config.data.patch_size, voxel)


def run_train(config: TrainConfig, *, overwrite: bool = False,
              transform: Callable[[dict], dict] | None = None,
              read_margin: Sequence[int] = (0, 0, 0), verbose: bool = False,
              progress_bar: bool | None = None, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train ``config.model`` on ``config.data`` as ``config.optim`` / ``config.train`` say.

    ``transform`` / ``read_margin``: the augmentation hook, applied to each training patch dict
    read ``read_margin`` voxels larger per side; by default built from ``config.aug``
    (``pytc_train.augment``, preset ``realistic``; ``none`` disables). ``callbacks``: extra
    Lightning callbacks (benchmarks, notebooks). Returns the run's
    paths and scores; raises UserError for bad input before anything is written, and
    :class:`Preempted` when SIGUSR1/SIGTERM stopped it (last.ckpt saved).
    """
    t0 = time.perf_counter()
    rank = process_rank()
    from pytc_core.models.registry import get_architecture_builder

    get_architecture_builder(config.model.architecture)  # unknown name: closest match
    check_patch_for_model(config.model, config.data.patch_size)
    if config.train.precision == "16-mixed" and config.train.accelerator == "cpu":
        raise UserError("precision 16-mixed needs a GPU", "use --precision bf16-mixed or 32 on CPU")

    from pytc_train.data import check_sources, data_contract_for, norm_stats_for

    train_pairs = check_sources(config.data.train_sources(), config.data.patch_size,
                                config.model.in_channels, "training")
    val_pairs = check_sources(config.data.val_sources(), config.data.patch_size,
                              config.model.in_channels, "validation")
    if config.output_channels() != config.model.out_channels:
        lsd = (f" and loss.lsd_weight adds {config.output_channels() - len(config.data.offsets)}"
               " LSD channels" if config.loss.lsd_weight > 0 else "")
        raise UserError(f"model.out_channels is {config.model.out_channels} but data.offsets "
                        f"lists {len(config.data.offsets)} affinities{lsd}",
                        f"set model.out_channels = {config.output_channels()}")
    config = dataclasses.replace(config, data=_resolved_data(
        config, norm_stats_for(config.data, train_pairs[0], seed=config.train.seed)))

    if transform is None:
        transform, read_margin = _augmentation(config, train_pairs)
    config = dataclasses.replace(config, aug=_resolved_aug(config))

    from pytc_train.data import TrainPatches

    _check_foreground(TrainPatches(train_pairs, config.data, config.train.seed, 1))
    # one real patch through reading, the transform and the targets
    TrainPatches(train_pairs, config.data, config.train.seed, 1, transform, read_margin,
                 config.loss.sigma_zyx() if config.loss.lsd_weight > 0 else None)[0]

    _check_resume_names_a_run(config)
    run_dir = _resolve_run_dir(config)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_path = _resume_path(config, ckpt_dir, overwrite or rank > 0)
    saved: dict[str, Any] | None = None
    frozen: list[str] = []
    if ckpt_path is not None and (run_dir / "pytc_config.toml").is_file():
        from pytc_core.config import load_toml

        saved = load_toml(run_dir / "pytc_config.toml")
        config, frozen = _frozen(config, saved)

    import pytorch_lightning as pl
    import torch

    from pytc_train.autoconfig import auto_configure, detect_machine
    from pytc_train.data import PatchDataModule
    from pytc_train.module import AffinityModule

    machine = detect_machine()
    if config.train.accelerator == "gpu" and not machine.gpus:
        raise UserError("train.accelerator is gpu but no CUDA device is visible",
                        "use --set train.accelerator=cpu or run on a GPU node")

    config_dict = config_to_dict(config)
    with _quiet_lightning(verbose):
        pl.seed_everything(config.train.seed, workers=True, verbose=False)
        try:
            module = AffinityModule(config_dict)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise UserError(f"cannot build model {config.model.architecture}: {exc}",
                            "fix the [model] table") from None
    if config.train.init_from:
        _load_init_weights(module, config)

    def gpu_trial() -> int:
        from pytc_train.autoconfig import rank_zero_choice

        # rank 0 alone tries batches on its own device; the others take its result
        return rank_zero_choice("batch_size", rank0_gpu_trial, rank=rank,
                                folder=_resolve_run_dir(config))

    def rank0_gpu_trial() -> int:
        from pytc_train.autoconfig import gpu_batch_trial

        net = module.model.cuda().train()

        def step(batch: int) -> None:
            x = torch.randn(batch, config.model.in_channels, *config.data.patch_size, device="cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = net(x)
                out = out["output"] if isinstance(out, dict) else out
            out.float().mean().backward()
            net.zero_grad(set_to_none=True)

        try:
            return gpu_batch_trial(step)
        finally:
            module.model.cpu()

    choices = auto_configure(accelerator=config.train.accelerator, devices=config.train.devices,
                             precision=config.train.precision, batch_size=config.data.batch_size,
                             num_workers=config.data.num_workers, patch=config.data.patch_size,
                             machine=machine, gpu_trial=gpu_trial, threads=config.train.threads)
    for name in frozen:  # a requeue onto another node continues the same run
        choices.reasons[name] = "frozen at the first start"
    torch.set_num_threads(choices.threads)
    if choices.precision == "16-mixed" and choices.accelerator == "cpu":
        raise UserError("precision 16-mixed needs a GPU", "use --precision bf16-mixed or 32 on CPU")
    resolved = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, batch_size=choices.batch_size,
                                 num_workers=choices.num_workers),
        train=dataclasses.replace(config.train, precision=choices.precision,
                                  accelerator=choices.accelerator, devices=choices.devices,
                                  threads=choices.threads))
    changes: list[str] = []
    if saved is not None:
        import tomllib

        from pytc_core.config import config_to_toml

        changes = config_differences(saved, tomllib.loads(config_to_toml(resolved)))
        if changes and not config.train.resume_changed:
            raise UserError(f"the run in {run_dir} was started with other options that change "
                            f"the result: {'; '.join(changes)}",
                            "resume with the run's own options (its pytc_config.toml), pass "
                            "--resume-changed to continue with the new ones (recorded), or "
                            "start a new --run-dir")
    if rank == 0:
        log.info("machine: %d CPU cores, %.1f GiB memory available (%s), %d GPU(s)%s",
                 machine.cpus, machine.memory_gib, machine.memory_source, len(machine.gpus),
                 "" if not machine.gpus else " (" + ", ".join(g[0] for g in machine.gpus) + ")")
        log.info("auto-config: %s", choices.summary())
        names = [name for name, _ in getattr(transform, "transforms", [])]
        log.info("augmentation: preset %s (%s); read margin %s voxels per side",
                 config.aug.preset, ", ".join(names) or "none", tuple(read_margin))
    module.config = config_to_dict(resolved)
    # what the model is trained on, for pytc-infer's checks (pytc_core.contract)
    module.config["data_contract"] = data_contract_for(resolved.data, train_pairs,
                                                       config.train.seed).to_dict()
    module.hparams["config"] = module.config

    dm = PatchDataModule(resolved.data, train_pairs, val_pairs, batch_size=choices.batch_size,
                         num_workers=choices.num_workers, steps=config.train.max_steps,
                         accumulate=config.optim.accumulate, seed=config.train.seed,
                         transform=transform, read_margin=read_margin,
                         pin_memory=choices.accelerator == "gpu",
                         lsd_sigma=(config.loss.sigma_zyx() if config.loss.lsd_weight > 0
                                    else None))

    # ---- nothing was written up to here; from now on the run directory is ours
    ckpt_dir = run_dir / "checkpoints"
    if rank == 0:
        if overwrite and config.train.resume is None:
            for name in ("checkpoints", "logs"):
                shutil.rmtree(run_dir / name, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        from pytc_core.config import config_to_toml
        from pytc_core.files import write_atomic

        if changes:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            with open(run_dir / "resume_changes.txt", "a") as fh:
                fh.writelines(f"{stamp} resumed from {ckpt_path} with {c}\n" for c in changes)
            log.warning("resuming with changed options (recorded in %s): %s",
                        run_dir / "resume_changes.txt", "; ".join(changes))
        header = f"# resolved config of `pytc-train`\n# command line: {' '.join(sys.argv)}\n"
        write_atomic(run_dir / "pytc_config.toml", (header + config_to_toml(resolved)).encode())
        log.info("run directory %s%s", run_dir, f" (resuming from {ckpt_path})" if ckpt_path else "")

    RunCallbacks = _callbacks_module()
    # progress lines on stderr, on a terminal too: Lightning's bar (an endless epoch, shown
    # as "Epoch 0/-2") only when asked for
    show_bar = bool(progress_bar)
    run_cb = RunCallbacks(ckpt_dir / "last.ckpt", config.train.checkpoint_every,
                          config.train.progress_every or config.train.log_every,
                          config.train.max_steps,
                          log_progress=not show_bar and progress_log.isEnabledFor(logging.INFO),
                          monitor=config.train.monitor)
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor

    monitor = f"val/{config.train.monitor}"
    mode = "min" if config.train.monitor == "loss" else "max"
    all_callbacks: list = [run_cb, *callbacks]
    if config.optim.ema > 0:  # first: last.ckpt saved at a step holds that step's average
        from pytc_train.ema import EMAWeightsCallback

        all_callbacks.insert(0, EMAWeightsCallback(config.optim.ema))
    best_cb = None
    if val_pairs:
        best_cb = _best_checkpoint_class()(
            dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
            auto_insert_metric_name=False, enable_version_counter=False,
            save_on_train_epoch_end=False, run_callbacks=run_cb)
        all_callbacks.append(best_cb)
        run_cb.best_checkpoint = best_cb
        if config.train.early_stop_patience > 0:
            all_callbacks.append(EarlyStopping(monitor=monitor, mode=mode,
                                           patience=config.train.early_stop_patience))
    logger = _make_logger(run_dir)
    if logger is not None:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))

    world = choices.devices * config.train.num_nodes
    strategy: Any = "auto"
    if world > 1:
        from pytorch_lightning.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo" if choices.accelerator == "cpu" else "nccl")
    plugins: list[Any] = []
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_NTASKS"):
        from lightning_fabric.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    if rank == 0 and world > 1:
        os.environ[RUN_DIR_ENV] = str(run_dir)

    with _quiet_lightning(verbose), _signals(run_cb.handle):
        trainer = pl.Trainer(
            accelerator=choices.accelerator, devices=choices.devices,
            num_nodes=config.train.num_nodes, strategy=strategy, precision=choices.precision,
            max_steps=config.train.max_steps, max_epochs=-1,
            max_time=(None if config.train.max_minutes is None
                      else timedelta(minutes=config.train.max_minutes)),
            val_check_interval=config.train.val_every * config.optim.accumulate if val_pairs else None,
            check_val_every_n_epoch=None, num_sanity_val_steps=0,
            limit_val_batches=1.0 if val_pairs else 0,
            accumulate_grad_batches=config.optim.accumulate,
            gradient_clip_val=config.optim.grad_clip or None,
            callbacks=all_callbacks, logger=logger if logger is not None else False,
            enable_checkpointing=best_cb is not None, enable_progress_bar=show_bar,
            enable_model_summary=False, default_root_dir=str(run_dir), plugins=plugins or None,
            deterministic=config.train.deterministic, log_every_n_steps=config.train.log_every,
            use_distributed_sampler=False)
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
        except SIGTERMException:
            run_cb.signum = run_cb.signum or signal.SIGTERM
        finally:
            if rank == 0 and world > 1:
                os.environ.pop(RUN_DIR_ENV, None)
    if run_cb.signum is not None:
        raise Preempted(run_cb.signum, run_cb.last, trainer.global_step)
    best = ckpt_dir / "best.ckpt"
    if not trainer.is_global_zero:
        return TrainResult(run_dir, best, run_cb.last, trainer.global_step,
                           time.perf_counter() - t0)
    if best_cb is None or not best.is_file():
        # no validation region: best.ckpt is the final weights, and says so
        log.info("no validation region: %s holds the final weights, not a validated best", best)
        shutil.copyfile(run_cb.last, best)
    scores = getattr(module, "last_val_scores", None)
    return TrainResult(run_dir, best, run_cb.last, trainer.global_step,
                       time.perf_counter() - t0, scores,
                       attempt_steps=trainer.global_step - run_cb._step0 if run_cb.started else 0)


def _make_logger(run_dir: Path):
    """TensorBoard under ``logs/`` when installed (each attempt adds an event file), else CSV:
    ``logs/metrics.csv``, one history that every attempt of a resumed run appends to."""
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger

        return TensorBoardLogger(str(run_dir), name="logs", version="")
    except ImportError:
        return _history_logger(run_dir)


def _history_logger(run_dir: Path):
    """Lightning's CSVLogger, except that a resumed run appends to ``logs/metrics.csv``
    (Lightning deletes it) after dropping the rows of steps past the resumed checkpoint."""
    import csv

    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    class HistoryWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if os.path.isfile(self.metrics_file_path):  # keep it, and its columns
                with open(self.metrics_file_path, newline="") as fh:
                    self.metrics_keys = sorted(next(csv.reader(fh), []))

        def drop_after(self, step: int) -> None:
            """Forget the rows of steps ``step`` and later: a checkpoint of ``step`` finished
            steps 0 .. step - 1, so those rows were logged by batches the resumed run redoes."""
            if not os.path.isfile(self.metrics_file_path):
                return
            with open(self.metrics_file_path, newline="") as fh:
                reader = csv.DictReader(fh)
                fields = list(reader.fieldnames or [])
                rows = list(reader)
            kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
            if len(kept) == len(rows):
                return
            from pytc_core.files import write_atomic

            def dump(fh) -> None:
                import io

                text = io.StringIO(newline="")
                writer = csv.DictWriter(text, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)
                fh.write(text.getvalue().encode())

            write_atomic(self.metrics_file_path, dump)

    from pytorch_lightning.loggers.logger import rank_zero_experiment

    class HistoryLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                os.makedirs(self.root_dir, exist_ok=True)
                self._experiment = HistoryWriter(log_dir=self.log_dir)
            return self._experiment

    return HistoryLogger(str(run_dir), name="logs", version="")
