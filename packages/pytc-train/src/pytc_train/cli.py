"""The ``pytc-train`` command: flags → :class:`~pytc_train.config.TrainConfig` →
:func:`~pytc_train.train.run_train` → the best checkpoint's path on stdout.

Nothing heavy is imported at module level: ``--help`` never loads torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import CommonFlags, emit, run_entry_point
from pytc_core.errors import UserError
from pytc_train import __version__

log = logging.getLogger("pytc.train")

app = cyclopts.App(name="pytc-train", version=__version__)


@app.default
def train(
    *,
    arch: Annotated[str | None, Parameter(name="--arch")] = None,
    size: Annotated[str | None, Parameter(name="--size")] = None,
    kernel_size: Annotated[int | None, Parameter(name="--kernel-size")] = None,
    raw: Annotated[str | None, Parameter(name="--raw")] = None,
    labels: Annotated[str | None, Parameter(name="--labels")] = None,
    bbox: Annotated[str | None, Parameter(name="--bbox")] = None,
    val_bbox: Annotated[str | None, Parameter(name="--val-bbox")] = None,
    patch: Annotated[str | None, Parameter(name="--patch")] = None,
    batch_size: Annotated[int | None, Parameter(name="--batch-size")] = None,
    max_steps: Annotated[int | None, Parameter(name="--max-steps")] = None,
    lr: Annotated[float | None, Parameter(name="--lr")] = None,
    precision: Annotated[str | None, Parameter(name="--precision")] = None,
    devices: Annotated[int | None, Parameter(name="--devices")] = None,
    run_dir: Annotated[str | None, Parameter(name="--run-dir")] = None,
    resume: Annotated[str | None, Parameter(name="--resume")] = None,
    resume_changed: Annotated[bool, Parameter(name="--resume-changed", negative="")] = False,
    init_from: Annotated[str | None, Parameter(name="--init-from")] = None,
    upkern: Annotated[bool, Parameter(name="--upkern", negative="")] = False,
    seed: Annotated[int | None, Parameter(name="--seed")] = None,
    threads: Annotated[int | None, Parameter(name="--threads")] = None,
    aug: Annotated[str | None, Parameter(name="--aug")] = None,
    preview_aug: Annotated[int | None, Parameter(name="--preview-aug")] = None,
    list_archs: Annotated[bool, Parameter(name="--list-archs", negative="")] = False,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Train an affinity model on EM volumes; prints the best checkpoint's path.

    Every flag is a key of the train config (TOML tables ``[model]``, ``[data]``, ``[optim]``,
    ``[train]``; ``--set table.key=value`` reaches any of them). Several sources go in TOML as
    ``[[data.train]]`` / ``[[data.val]]`` tables (raw, labels, bbox, weight). A run directory
    holds ``pytc_config.toml``, ``checkpoints/last.ckpt``, ``checkpoints/best.ckpt`` (best
    validation F1) and ``logs/``. SIGUSR1/SIGTERM save ``last.ckpt`` and exit with code 75;
    ``--resume auto`` continues. Settings left unset (batch size, workers, precision,
    devices) are chosen for the machine and printed.

    Examples::

        pytc-train --raw em.h5:raw --labels em.h5:labels --bbox 0,0,0,175,250,250 \\
            --val-bbox 175,0,0,250,250,250 --arch mednext --size S --max-steps 2000
        ck=$(pytc-train --config train.toml --run-dir runs/a)   # stdout: best.ckpt path
        pytc-train --config train.toml --run-dir runs/a --resume auto
        pytc-train --config train.toml --init-from runs/a/checkpoints/best.ckpt --upkern \\
            --kernel-size 5
        pytc-train --list-archs
        pytc-train --preview-aug 8 --aug heavy --raw em.h5:raw --labels em.h5:labels \\
            --patch 32,64,64                       # stdout: aug_preview.h5:image (+ .png)

    Parameters
    ----------
    arch
        Architecture (model.architecture), e.g. mednext, mednext_custom, monai_unet.
    size
        MedNeXt size S, B, M or L (model.mednext_size).
    kernel_size
        MedNeXt kernel size 3 or 5 (model.mednext_kernel_size).
    raw
        Raw EM volume URI (data.raw), e.g. file.h5:raw or a precomputed layer.
    labels
        Instance labels URI (data.labels), same voxels as the raw.
    bbox
        Training region z0,y0,x0,z1,y1,x1 in voxels (data.bbox; default: all).
    val_bbox
        Held-out validation region of the same volume (data.val_bbox).
    patch
        Patch size z,y,x in voxels (data.patch_size; default 32,64,64).
    batch_size
        Patches per step and process (data.batch_size; default: auto).
    max_steps
        Optimiser steps (train.max_steps).
    lr
        AdamW learning rate (optim.lr; default 1e-3).
    precision
        32, 16-mixed, bf16-mixed or auto (train.precision): auto is bf16-mixed on Ampere or
        newer GPUs and on CPUs with native bfloat16 (avx512_bf16/amx_bf16), else 16-mixed
        (older GPUs) or 32.
    devices
        Processes (GPUs, or CPU processes with DDP/gloo) on this node (train.devices).
    run_dir
        Run directory (train.run_dir; default runs/<timestamp>).
    resume
        ``auto`` (the run directory's last.ckpt if any; needs --run-dir) or a .ckpt path
        (train.resume). Options that change the result (lr, batch, patch, data, loss, model,
        ...) must equal the run's saved config; the machine's own choices made at the first
        start (precision, batch from the memory trial, workers, threads) are reused.
    resume_changed
        Resume although result-changing options differ; the differences are recorded in the
        run directory's ``resume_changes.txt`` (train.resume_changed).
    init_from
        Initial weights: a pytc .ckpt (strict) or DKFZ nnunet_mednext .pth (train.init_from).
    upkern
        With --init-from a .ckpt of a smaller kernel: UpKern the weights (train.upkern).
    seed
        Seed of weights and patch sampling (train.seed).
    threads
        CPU threads of torch per process (train.threads; default: the cores per process,
        whatever the load, so the same command gives the same figures on this machine).
    aug
        Augmentation preset (aug.preset): light, realistic (default), heavy, superres,
        instance or none; any transform's field via ``--set aug.misalignment.prob=0.3``.
    preview_aug
        Train nothing: augment one patch N times and write the patches (``aug_preview.h5``,
        in --run-dir when given; its image URI on stdout) and a PNG grid of their middle
        sections beside the unaugmented patch (``aug_preview.png``).
    list_archs
        Print the architectures with parameter counts (for the [model] of --config) and exit.
    """
    common.setup_logging()
    overrides: dict[str, object] = {
        "model.architecture": arch, "model.mednext_size": size,
        "model.mednext_kernel_size": kernel_size,
        "data.raw": raw, "data.labels": labels, "data.batch_size": batch_size,
        "optim.lr": lr, "train.max_steps": max_steps, "train.precision": precision,
        "train.devices": devices, "train.run_dir": run_dir, "train.resume": resume,
        "train.resume_changed": resume_changed or None,
        "train.init_from": init_from, "train.upkern": upkern or None, "train.seed": seed,
        "train.threads": threads,
        "aug.preset": aug,
    }
    from pytc_core.bbox import parse_bbox
    from pytc_train.config import parse_zyx

    if bbox is not None:
        box = parse_bbox(bbox, "--bbox")
        overrides["data.bbox"] = box.start + box.stop
    if val_bbox is not None:
        box = parse_bbox(val_bbox, "--val-bbox")
        overrides["data.val_bbox"] = box.start + box.stop
    if patch is not None:
        overrides["data.patch_size"] = parse_zyx(patch, "patch")
    if upkern and not init_from:
        raise UserError("--upkern needs --init-from", "pass the checkpoint to UpKern from")

    from pytc_core.config import resolve_config
    from pytc_train.config import TrainConfig

    config = resolve_config(TrainConfig, common.config, overrides=overrides,
                            text_overrides=common.text_overrides())
    if list_archs:
        from pytc_core.models import describe_architectures

        rows = describe_architectures(config.model.in_channels, config.model.out_channels)
        width = max(len(name) for name, _, _ in rows)
        emit("\n".join(f"{name:<{width}}  {params:>11,}  {summary}" for name, params, summary in rows))
        return 0

    if preview_aug is not None:
        from pytc_train.preview import preview_from_train_config

        preview = preview_from_train_config(config, preview_aug, overwrite=common.overwrite)
        emit(preview.image_uri)
        return 0

    from pytc_train.train import EXIT_PREEMPTED, Preempted, process_rank, run_train

    try:
        result = run_train(config, overwrite=common.overwrite, verbose=common.verbose)
    except Preempted as exc:
        sys.stderr.write(f"pytc-train: {exc}; continue with --resume auto\n")
        return EXIT_PREEMPTED
    if process_rank() == 0:
        scores = result.val_scores
        steps = (f"{result.steps} steps" if result.attempt_steps in (None, result.steps) else
                 f"{result.attempt_steps} steps in this attempt ({result.steps} in total)")
        log.info("trained %s in %.0f s%s; run directory %s", steps, result.seconds,
                 f"; validation F1 {scores['f1']:.4f} (boundary F1 {scores['boundary_f1']:.4f})"
                 if scores else "", result.run_dir)
        emit(str(result.best_checkpoint))
    return 0


def main() -> None:
    from pytc_train.preempt import catch_early_signals

    catch_early_signals()  # a Slurm signal during start-up must not kill the run unsaved
    sys.exit(run_entry_point("pytc-train", app))


if __name__ == "__main__":
    main()
