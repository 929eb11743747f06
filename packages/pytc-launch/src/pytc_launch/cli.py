"""The ``pytc-launch`` command: Slurm jobs, sweeps as job arrays, blockwise arrays, status."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import CommonFlags, emit, run_entry_point
from pytc_launch import __version__

log = logging.getLogger("pytc.launch")

app = cyclopts.App(
    name="pytc-launch",
    help="""Launch pytc on Slurm: training jobs with automatic requeue and resume, sweeps as one
job array with a leaderboard, blockwise inference/decoding as job arrays.

Examples::

    pytc-launch train examples/train.toml --partition gpu --gpus 1 --time 24:00:00
    pytc-launch sweep examples/sweep.toml --dry-run   # runs + sbatch script
    pytc-launch status runs/sweep-20250101-120000     # leaderboard
    pytc-launch blocks decode --tasks 8 -- aff -o seg --block-size 128
""",
    version=__version__,
)
blocks_app = cyclopts.App(name="blocks", help="""Blockwise pytc-infer / pytc-decode / pytc-eval as
job arrays.

Examples::

    pytc-launch blocks infer --tasks 16 --gpus 1 -- -c run.ckpt -i raw -o aff
    pytc-launch blocks decode --tasks 8 -- aff -o seg --block-size 128
    pytc-launch blocks decode --tasks 8 --local -- aff -o seg --block-size 128
    pytc-launch blocks eval --tasks 8 -- seg --gt gt --block-size 256 --scratch s
""")
app.command(blocks_app)


@Parameter(name="*")
@dataclass(frozen=True)
class SlurmFlags:
    """Slurm resources; each overrides the config's ``[launch]`` table (same key names)."""

    partition: Annotated[str | None, Parameter(name="--partition")] = None
    """Slurm partition."""
    gpus: Annotated[int | None, Parameter(name="--gpus")] = None
    """GPUs per node (one task per GPU, DDP through Lightning's SLURMEnvironment)."""
    nodes: Annotated[int | None, Parameter(name="--nodes")] = None
    """Nodes per job."""
    time: Annotated[str | None, Parameter(name="--time")] = None
    """Wall-clock limit (``24:00:00``, ``1-00:00:00``, minutes)."""
    mem: Annotated[str | None, Parameter(name="--mem")] = None
    """Memory per node (``64G``)."""
    cpus_per_task: Annotated[int | None, Parameter(name="--cpus-per-task")] = None
    """CPU cores per task."""
    account: Annotated[str | None, Parameter(name="--account")] = None
    """Slurm account."""
    qos: Annotated[str | None, Parameter(name="--qos")] = None
    """Slurm QOS."""
    constraint: Annotated[str | None, Parameter(name="--constraint")] = None
    """Node features (``a100``)."""
    grace: Annotated[int | None, Parameter(name="--grace")] = None
    """Seconds before the time limit when the job checkpoints and requeues (default 300)."""
    max_restarts: Annotated[int | None, Parameter(name="--max-restarts")] = None
    """Requeues at most this often (default 3)."""
    max_parallel: Annotated[int | None, Parameter(name="--max-parallel")] = None
    """Array tasks running at once (``--array=...%N``)."""
    job_name: Annotated[str | None, Parameter(name="--job-name")] = None
    """Slurm job name."""
    setup: Annotated[list[str] | None, Parameter(name="--setup")] = None
    """A bash line every script runs before its command (repeatable), after the config's
    ``[launch] setup`` lines: ``--setup "module load cuda/12.1" --setup "source
    .venv/bin/activate"``."""

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _slurm_options(flags: SlurmFlags, common: CommonFlags, launch_table: dict[str, Any]):
    """SlurmOptions: defaults < --config's [launch] < the file's [launch] < flags < --set."""
    from pytc_core.config import resolve_config
    from pytc_launch.sbatch import SlurmOptions

    overrides = {**launch_table, **flags.overrides()}
    if flags.setup:  # --setup adds to the file's [launch] setup lines
        overrides["setup"] = [*launch_table.get("setup", []), *flags.setup]
    return resolve_config(SlurmOptions, common.config, overrides,
                          section="launch", text_overrides=common.text_overrides())


def _launch_table(path: str) -> dict[str, Any]:
    from pytc_core.config import load_toml
    from pytc_launch.sweep import split_launch_tables

    return split_launch_tables(load_toml(path))[2]


def _show_scripts(scripts: dict[str, str]) -> None:
    for path, text in scripts.items():
        sys.stdout.write(f"# ---- {path} ----\n{text}")
    sys.stdout.flush()


@app.command(name="train")
def train(
    config: Annotated[str, Parameter(name="CONFIG")],
    /,
    *,
    dir: Annotated[str | None, Parameter(name="--dir")] = None,
    dry_run: Annotated[bool, Parameter(name="--dry-run", negative="")] = False,
    slurm: SlurmFlags = SlurmFlags(),
    common: CommonFlags = CommonFlags(),
) -> int:
    """Submit one pytc-train run as a Slurm job that checkpoints and requeues itself.

    Writes ``DIR/launch/train.sbatch`` (readable; resubmit by hand with ``sbatch``) and
    ``DIR/launch/config.toml``, submits with ``sbatch --parsable`` and prints the job id on
    stdout. The job runs ``srun pytc-train --config ... --run-dir DIR --resume auto``; USR1
    ``--grace`` seconds before the time limit makes pytc-train save ``last.ckpt``, then the
    job is requeued and resumes (at most ``--max-restarts`` times). Slurm options come from
    the config's ``[launch]`` table, ``--config``'s ``[launch]`` table, these flags, ``--set``.

    Examples::

        pytc-launch train train.toml --partition gpu --gpus 4 --time 24:00:00
        pytc-launch train train.toml --dry-run          # print the script, submit nothing
        pytc-launch status runs/train-20250101-120000

    Parameters
    ----------
    config
        pytc-train config (TOML); an optional ``[launch]`` table holds Slurm options.
    dir
        Run directory (default ``runs/<config name>-<time>``).
    dry_run
        Print the sbatch script on stdout; write and submit nothing.
    """
    common.setup_logging()
    from pytc_launch.launch import launch_train

    opts = _slurm_options(slurm, common, _launch_table(config))
    result = launch_train(config, directory=dir, slurm=opts, dry_run=dry_run,
                          overwrite=common.overwrite)
    if dry_run:
        _show_scripts(result.scripts)
        return 0
    log.info("submitted job %s: run directory %s", result.job_ids[-1], result.directory)
    emit(result.job_ids[-1])
    return 0


@app.command(name="sweep")
def sweep(
    sweep_file: Annotated[str, Parameter(name="SWEEP")],
    /,
    *,
    dir: Annotated[str | None, Parameter(name="--dir")] = None,
    max_runs: Annotated[int | None, Parameter(name="--max-runs")] = None,
    seed: Annotated[int | None, Parameter(name="--seed")] = None,
    dry_run: Annotated[bool, Parameter(name="--dry-run", negative="")] = False,
    slurm: SlurmFlags = SlurmFlags(),
    common: CommonFlags = CommonFlags(),
) -> int:
    """Submit a sweep: N run configs and ONE job array whose task i trains run i.

    SWEEP is a full pytc-train config plus a ``[sweep]`` table of dotted config keys with
    lists of values; all combinations form the grid (``[sweep.zip]`` pairs lists instead;
    ``[sweep.random] max_runs/seed`` or ``--max-runs``/``--seed`` take a random subset).
    Keys are checked against pytc-train's config schema. Prints the array job id; the table
    of runs goes to stderr. Rank the runs with ``pytc-launch status DIR``.

    Examples::

        pytc-launch sweep sweep.toml --partition gpu --gpus 1 --time 12:00:00
        pytc-launch sweep sweep.toml --dry-run            # table of runs + the script
        pytc-launch sweep sweep.toml --max-runs 8 --seed 1 --max-parallel 4

    with ``sweep.toml``::

        [model]
        architecture = "mednext"
        [sweep]
        "model.mednext_kernel_size" = [3, 5]
        "model.mednext_size" = ["S", "B", "M"]

    Parameters
    ----------
    sweep_file
        Sweep TOML: a pytc-train config with a ``[sweep]`` table (and optional ``[launch]``).
    dir
        Sweep directory (default ``runs/<sweep name>-<time>``); run i trains in ``DIR/runs/NNN``.
    max_runs
        Keep a random subset of this many combinations (seeded by ``--seed``, default 0).
    seed
        Seed of the random subset.
    dry_run
        Print the table of runs (stderr) and the sbatch script (stdout); submit nothing.
    """
    common.setup_logging()
    from pytc_launch.launch import launch_sweep

    opts = _slurm_options(slurm, common, _launch_table(sweep_file))
    result = launch_sweep(sweep_file, directory=dir, slurm=opts, max_runs=max_runs, seed=seed,
                          dry_run=dry_run, overwrite=common.overwrite)
    assert result.plan is not None
    sys.stderr.write(_runs_table(result.plan) + "\n")
    if dry_run:
        _show_scripts(result.scripts)
        return 0
    log.info("submitted job array %s (%d runs): %s", result.job_ids[-1], len(result.plan.runs),
             result.directory)
    emit(result.job_ids[-1])
    return 0


def _runs_table(plan) -> str:
    keys = plan.keys
    rows = [["run", *keys]] + [[str(r.index), *[repr(r.params[k]) for k in keys]]
                               for r in plan.runs]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    sampled = f" (random subset of {plan.grid_size})" if len(plan.runs) < plan.grid_size else ""
    return f"{len(plan.runs)} runs{sampled}:\n" + "\n".join(lines)


def _blocks(stage: str, args: tuple[str, ...], tasks: int, dir: str | None, dry_run: bool,
            local: bool, slurm: SlurmFlags, common: CommonFlags) -> int:
    common.setup_logging()
    from pytc_launch.launch import blocks_commands, launch_blocks, run_blocks_locally

    if local:
        steps = blocks_commands(stage, args, tasks)
        emit(run_blocks_locally(steps, quiet=common.quiet))
        return 0
    opts = _slurm_options(slurm, common, {})
    result = launch_blocks(stage, list(args), tasks, directory=dir, slurm=opts, dry_run=dry_run,
                           overwrite=common.overwrite)
    if dry_run:
        _show_scripts(result.scripts)
        return 0
    log.info("submitted %s: %s", ", ".join(result.job_ids), result.directory)
    emit(result.job_ids[-1])
    return 0


_ARGS = Parameter(allow_leading_hyphen=True)


@blocks_app.command(name="infer")
def blocks_infer(
    *args: Annotated[str, _ARGS],
    tasks: Annotated[int, Parameter(name="--tasks")],
    dir: Annotated[str | None, Parameter(name="--dir")] = None,
    dry_run: Annotated[bool, Parameter(name="--dry-run", negative="")] = False,
    local: Annotated[bool, Parameter(name="--local", negative="")] = False,
    slurm: SlurmFlags = SlurmFlags(),
    common: CommonFlags = CommonFlags(),
) -> int:
    """pytc-infer as a job array: task i runs ``pytc-infer ARGS --blocks i/TASKS``.

    Prints the array job id (``--local``: runs the same commands here one after the other
    and prints the output URI). Logs in ``DIR/logs``; ``pytc-launch status DIR``.

    Examples::

        pytc-launch blocks infer --tasks 16 --gpus 1 -- --checkpoint run.ckpt --input raw -o aff
        pytc-launch blocks infer --tasks 16 --local -- --checkpoint run.ckpt --input raw -o aff

    Parameters
    ----------
    args
        pytc-infer's arguments, after ``--`` (without ``--blocks``).
    tasks
        Number of array tasks (shares of the blocks).
    dir
        Launch directory for scripts and logs (default ``runs/blocks-infer-<time>``).
    dry_run
        Print the sbatch script; submit nothing.
    local
        Run the same commands locally, one after the other (the in-process twin).
    """
    return _blocks("infer", args, tasks, dir, dry_run, local, slurm, common)


@blocks_app.command(name="decode")
def blocks_decode(
    *args: Annotated[str, _ARGS],
    tasks: Annotated[int, Parameter(name="--tasks")],
    dir: Annotated[str | None, Parameter(name="--dir")] = None,
    dry_run: Annotated[bool, Parameter(name="--dry-run", negative="")] = False,
    local: Annotated[bool, Parameter(name="--local", negative="")] = False,
    slurm: SlurmFlags = SlurmFlags(),
    common: CommonFlags = CommonFlags(),
) -> int:
    """pytc-decode as job arrays: label shares, one reduce job, relabel shares.

    Task i of the label array runs ``pytc-decode ARGS --step label --blocks i/TASKS``; the
    reduce job (``--dependency=afterok`` on the label array) runs ``--step reduce``; the
    relabel array (afterok on reduce) runs ``--step relabel --blocks i/TASKS``. The result
    equals one blockwise pytc-decode on one machine; with ``--method cc`` also the
    whole-volume decode (``ws``: close to it, not identical, it differs near block faces).
    Prints the relabel job id (``--local``: runs the same commands here and prints the
    segmentation URI).

    Examples::

        pytc-launch blocks decode --tasks 8 -- aff -o seg --block-size 128 --threshold 0.5
        pytc-launch blocks decode --tasks 8 --local -- aff -o seg --block-size 128

    Parameters
    ----------
    args
        pytc-decode's arguments, after ``--`` (with ``--block-size``; without ``--blocks``/``--step``).
    tasks
        Number of array tasks (shares of the blocks).
    dir
        Launch directory for scripts and logs (default ``runs/blocks-decode-<time>``).
    dry_run
        Print the sbatch scripts; submit nothing.
    local
        Run the same commands locally, one after the other (the in-process twin).
    """
    return _blocks("decode", args, tasks, dir, dry_run, local, slurm, common)


@blocks_app.command(name="eval")
def blocks_eval(
    *args: Annotated[str, _ARGS],
    tasks: Annotated[int, Parameter(name="--tasks")],
    dir: Annotated[str | None, Parameter(name="--dir")] = None,
    dry_run: Annotated[bool, Parameter(name="--dry-run", negative="")] = False,
    local: Annotated[bool, Parameter(name="--local", negative="")] = False,
    slurm: SlurmFlags = SlurmFlags(),
    common: CommonFlags = CommonFlags(),
) -> int:
    """pytc-eval as a job array: sample shares, then one reduce job writes the report.

    Task i runs ``pytc-eval ARGS --step sample --blocks i/TASKS`` (its blocks' contingency
    table and skeleton-node labels, into ``--scratch``); the reduce job (afterok on the
    array) runs ``--step reduce`` and prints the report, identical to one ``pytc-eval ARGS``
    (a fragments output: one line per threshold). Prints the reduce job id (``--local``:
    runs the same commands here and prints the report).

    Examples::

        pytc-launch blocks eval --tasks 8 -- seg --gt gt --skeletons skel.json \\
            --block-size 256 --scratch runs/eval-scratch
        pytc-launch blocks eval --tasks 4 --local -- frag --gt gt --block-size 128 --scratch s

    Parameters
    ----------
    args
        pytc-eval's arguments, after ``--`` (with ``--block-size`` and ``--scratch``; without
        ``--blocks``/``--step``; skeletons as a file, not ``kimimaro``).
    tasks
        Number of array tasks (shares of the blocks).
    dir
        Launch directory for scripts and logs (default ``runs/blocks-eval-<time>``).
    dry_run
        Print the sbatch scripts; submit nothing.
    local
        Run the same commands locally, one after the other (the in-process twin).
    """
    return _blocks("eval", args, tasks, dir, dry_run, local, slurm, common)


@app.command(name="status")
def status(
    directory: Annotated[str, Parameter(name="DIR")],
    /,
    *,
    json: Annotated[bool, Parameter(name="--json", negative="")] = False,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Show each run/task of a launch directory: Slurm state, restarts, last checkpoint
    step, best validation metric, log. A sweep is ranked by the metric (a leaderboard).

    The table goes to stderr; stdout gets the best checkpoint's path (train, sweep) or,
    with ``--json``, one JSON line with every row.

    Examples::

        pytc-launch status runs/sweep-20250101-120000
        pytc-launch status runs/sweep-20250101-120000 --json | jq .best.checkpoint

    Parameters
    ----------
    directory
        A ``--dir`` of ``pytc-launch train``, ``sweep`` or ``blocks``.
    json
        Print every row as JSON on stdout.
    """
    common.setup_logging()
    from pytc_launch.status import collect_status, format_table, leaderboard, status_json

    record, rows = collect_status(directory)
    if record.kind == "sweep":
        rows = leaderboard(rows)
    sys.stderr.write(format_table(record, rows) + "\n")
    if json:
        emit(status_json(record, rows))
    else:
        best = next((r for r in rows if r.metric is not None and r.checkpoint), None)
        if best is not None and best.checkpoint:
            emit(best.checkpoint)
    return 0


@app.command(name="cancel")
def cancel(
    directory: Annotated[str, Parameter(name="DIR")],
    /,
    *,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Cancel every pending or running job of a launch directory (``scancel``).

    Example::

        pytc-launch cancel runs/sweep-20250101-120000

    Parameters
    ----------
    directory
        A ``--dir`` of ``pytc-launch train``, ``sweep`` or ``blocks``.
    """
    common.setup_logging()
    from pytc_launch.launch import cancel as cancel_launch

    ids = cancel_launch(directory)
    log.info("cancelled %d job(s)%s", len(ids), f": {', '.join(ids)}" if ids else "")
    return 0


@app.command(name="resubmit")
def resubmit(
    directory: Annotated[str, Parameter(name="DIR")],
    /,
    *,
    failed: Annotated[bool, Parameter(name="--failed", negative="")] = False,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Resubmit the failed runs of a sweep (or a failed train run), and only those.

    The same sbatch script with ``--array`` set to the failed task ids; the runs resume from
    their last checkpoint (``--resume auto``). Prints the new job id (nothing if none failed).

    Example::

        pytc-launch resubmit runs/sweep-20250101-120000 --failed

    Parameters
    ----------
    directory
        A ``--dir`` of ``pytc-launch train`` or ``sweep``.
    failed
        Resubmit the failed tasks (required: the only mode).
    """
    common.setup_logging()
    from pytc_core.errors import UserError
    from pytc_launch.launch import resubmit_failed

    if not failed:
        raise UserError("resubmit needs --failed", "pytc-launch resubmit DIR --failed")
    ids = resubmit_failed(directory)
    if not ids:
        log.info("no failed runs in %s", directory)
        return 0
    log.info("resubmitted the failed runs as job %s", ids[-1])
    emit(ids[-1])
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-launch", app))
