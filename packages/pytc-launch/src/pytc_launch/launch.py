"""The launch library: write sbatch scripts and configs into a launch directory, submit them.

``launch_train`` (one pytc-train run), ``launch_sweep`` (N runs as one job array),
``launch_blocks`` (pytc-infer / pytc-decode shares as arrays, decode's reduce and relabel
as dependent jobs, or the same commands run locally one after the other), ``cancel`` and
``resubmit_failed``. Everything is validated before anything is written or submitted.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pytc_core.config import load_toml
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.output import check_shareable
from pytc_launch.record import (
    RECORD,
    JobRecord,
    LaunchRecord,
    add_submission,
    read_record,
    write_record,
)
from pytc_launch.sbatch import SlurmOptions, render_script
from pytc_launch.slurm import (
    FAILED_STATES,
    FINAL_STATES,
    cancel_jobs,
    check_gpu_partition,
    job_states,
    require_sbatch,
    submit,
)
from pytc_launch.sweep import SweepPlan, expand_sweep, split_launch_tables, train_config_schema

__all__ = ["LaunchResult", "blocks_commands", "cancel", "launch_blocks", "launch_sweep",
           "launch_train", "resubmit_failed", "run_blocks_locally"]

log = logging.getLogger("pytc.launch")


@dataclass(frozen=True)
class LaunchResult:
    """What a launch wrote and submitted: the directory, scripts (path → text), job ids
    (last one: the job to wait for), and for sweeps the plan of runs."""

    directory: Path
    scripts: dict[str, str]
    job_ids: list[str] = field(default_factory=list)
    plan: SweepPlan | None = None


def _executable(name: str, dry_run: bool) -> str:
    path = shutil.which(name)
    if path is None:
        if dry_run:
            return name
        raise UserError(f"{name} not found on PATH",
                        f"install {name} in the environment the jobs run in (uv sync)")
    return path


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _check_new_dir(directory: Path, overwrite: bool) -> None:
    if (directory / RECORD).exists() and not overwrite:
        raise UserError(f"{directory} already holds a launch ({RECORD})",
                        "see it with `pytc-launch status`, rerun failed tasks with "
                        "`pytc-launch resubmit --failed`, or pass --overwrite / another --dir")


def _slurm_from_doc(launch_table: dict[str, Any], slurm: SlurmOptions | None,
                    overrides: dict[str, Any] | None) -> SlurmOptions:
    """SlurmOptions from the file's ``[launch]`` table under ``overrides`` (flags)."""
    from pytc_core.config import resolve_config

    if slurm is not None:
        return slurm
    merged = {**launch_table, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return resolve_config(SlurmOptions, overrides=merged)


def _train_command(config_path: str, run_dir: str, slurm: SlurmOptions, dry_run: bool
                   ) -> list[str]:
    cmd = [_executable("srun", dry_run), "--kill-on-bad-exit=1",
           _executable("pytc-train", dry_run), "--config", config_path, "--run-dir", run_dir,
           "--resume", "auto"]
    if slurm.gpus:
        cmd += ["--devices", str(slurm.gpus)]
    if slurm.nodes > 1:
        cmd += ["--set", f"train.num_nodes={slurm.nodes}"]
    return cmd


def _submit_or_cleanup(submitted: list[str], script: Path, *, remove: Path | None = None,
                       **kwargs: Any) -> str:
    """Submit ``script``; if Slurm refuses, cancel the jobs this launch already submitted
    and remove the directory it created (``remove``), so nothing is left behind."""
    try:
        job_id = submit(script, **kwargs)
    except UserError:
        if submitted:
            try:
                cancel_jobs(submitted)
            except UserError:
                pass
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
        raise
    submitted.append(job_id)
    return job_id


def launch_train(config_path: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None = None,
                 slurm: SlurmOptions | None = None, slurm_overrides: dict[str, Any] | None = None,
                 dry_run: bool = False, overwrite: bool = False) -> LaunchResult:
    """Write ``train.sbatch`` for one pytc-train run and submit it (unless ``dry_run``).

    The run directory (``directory``, default ``runs/<config name>-<time>``) is pytc-train's
    ``--run-dir``; the job runs ``srun pytc-train --config DIR/launch/config.toml --run-dir
    DIR --resume auto`` under the requeue wrapper.
    """
    if not dry_run:
        require_sbatch()
    doc = load_toml(config_path)
    config, sweep, launch_table = split_launch_tables(doc)
    if sweep:
        raise UserError(f"{config_path} has a [sweep] table", "launch it with `pytc-launch sweep`")
    check_train_config(config, str(config_path))
    slurm = _slurm_from_doc(launch_table, slurm, slurm_overrides)
    check_gpu_partition(slurm.gpus, slurm.partition)
    stem = Path(config_path).stem
    d = Path(directory or Path("runs") / f"{stem}-{_timestamp()}").absolute()
    _check_new_dir(d, overwrite)
    run_config = d / "launch" / "config.toml"
    script_path = d / "launch" / "train.sbatch"
    text = render_script(
        slurm, _train_command(str(run_config), str(d), slurm, dry_run),
        job_name=f"pytc-train-{_name(stem, d)}", output=str(d / "launch" / "slurm.out"),
        description=f"pytc-train run {d} (config {Path(config_path).absolute()})",
        setup=[f"cd {_q(os.getcwd())}"], attempts_log=str(d / "launch" / "attempts.log"))
    result = LaunchResult(d, {str(script_path): text})
    if dry_run:
        return result
    created = not d.exists()
    write_atomic(run_config, tomli_w.dumps(config).encode())
    write_atomic(script_path, text.encode())
    record = LaunchRecord("train", d, [JobRecord("train", "launch/train.sbatch", None)],
                          meta={"config": str(Path(config_path).absolute()), "cwd": os.getcwd()})
    job_id = _submit_or_cleanup([], script_path, remove=d if created else None)
    add_submission(record.jobs[0], job_id, None)
    write_record(record)
    return LaunchResult(d, result.scripts, [job_id])


def check_train_config(config: dict[str, Any], where: str) -> None:
    """Resolve a run config against pytc-train's schema (when installed): bad keys and types
    are UserErrors before anything is written or submitted."""
    from pytc_core.config import resolve_config

    schema = train_config_schema()
    if schema is None:
        log.warning("pytc-train is not installed here: %s is not checked against its config "
                    "schema", where)
        return
    try:
        resolve_config(schema, overrides=copy.deepcopy(config))
    except UserError as exc:
        raise UserError(f"{where}: {exc.what}", exc.fix) from None


#: generic file names that say nothing about the run: the job is named after its folder
_GENERIC_STEMS = {"sweep", "train", "config", "run"}


def _name(stem: str, directory: Path) -> str:
    """What a job name says runs: the TOML's name, or the launch folder's for a generic one
    (``examples/sweep.toml --dir runs/lr-study`` → ``lr-study``)."""
    return directory.name if stem.lower() in _GENERIC_STEMS else stem


#: train-config keys holding file paths (``[[data.train]]`` / ``[[data.val]]`` entries too)
_PATH_KEYS = {"data": ("raw", "labels"), "train": ("init_from",)}


def _resolve_path(value: Any, folder: Path) -> Any:
    """A relative local path (or ``file.h5:dataset``) as ``folder / value``; absolute paths
    and URLs (``gs://``, ``precomputed://``, ``file://``) unchanged."""
    if not isinstance(value, str) or not value or "://" in value or os.path.isabs(value):
        return value
    return str(folder / value)


def resolve_data_paths(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make the relative data paths of a train config (as TOML tables) relative to
    ``folder`` (the TOML's own folder), in place; returns ``config``."""
    for table, keys in _PATH_KEYS.items():
        section = config.get(table)
        if not isinstance(section, dict):
            continue
        for key in keys:
            if key in section:
                section[key] = _resolve_path(section[key], folder)
        for name in ("train", "val") if table == "data" else ():
            for source in section.get(name) or []:
                if isinstance(source, dict):
                    for key in ("raw", "labels"):
                        if key in source:
                            source[key] = _resolve_path(source[key], folder)
    return config


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def plan_sweep(sweep_path: str | os.PathLike[str], *, max_runs: int | None = None,
               seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any], SweepPlan]:
    """Read a sweep TOML → (base config, ``[launch]`` table, the expanded, validated plan)."""
    doc = load_toml(sweep_path)
    config, sweep, launch_table = split_launch_tables(doc)
    if not sweep:
        raise UserError(f"{sweep_path} has no [sweep] table",
                        'add one, e.g. [sweep] "model.mednext_kernel_size" = [3, 5]')
    schema = train_config_schema()
    plan = expand_sweep(config, sweep, schema, max_runs=max_runs, seed=seed)
    folder = Path(sweep_path).absolute().parent
    for run in plan.runs:  # data paths are relative to the sweep file, not to the cwd
        resolve_data_paths(run.config, folder)
    if schema is None:  # after expanding: a bad sweep stays a one-line error
        log.warning("pytc-train is not installed here: sweep keys are not checked against its "
                    "config schema")
    return config, launch_table, plan


def launch_sweep(sweep_path: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None = None,
                 slurm: SlurmOptions | None = None, slurm_overrides: dict[str, Any] | None = None,
                 max_runs: int | None = None, seed: int | None = None, dry_run: bool = False,
                 overwrite: bool = False) -> LaunchResult:
    """Expand a sweep into N run configs and ONE job array whose task i trains run i.

    ``directory`` (default ``runs/<sweep name>-<time>``) gets ``sweep.sbatch``,
    ``launch.json`` and ``runs/NNN/launch/config.toml``; task i runs pytc-train with
    ``--run-dir DIR/runs/NNN --resume auto``.
    """
    if not dry_run:
        require_sbatch()
    _, launch_table, plan = plan_sweep(sweep_path, max_runs=max_runs, seed=seed)
    slurm = _slurm_from_doc(launch_table, slurm, slurm_overrides)
    check_gpu_partition(slurm.gpus, slurm.partition)
    stem = Path(sweep_path).stem
    d = Path(directory or Path("runs") / f"{stem}-{_timestamp()}").absolute()
    _check_new_dir(d, overwrite)
    n = len(plan.runs)
    width = max(3, len(str(n - 1)))
    names = [f"{i:0{width}d}" for i in range(n)]
    array = f"0-{n - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
    setup = [f"cd {_q(os.getcwd())}",
             f'RUN_DIR={_q(str(d / "runs"))}/$(printf %0{width}d "$SLURM_ARRAY_TASK_ID")']
    text = render_script(
        slurm, _train_command('"$RUN_DIR/launch/config.toml"', '"$RUN_DIR"', slurm, dry_run),
        job_name=f"pytc-sweep-{_name(stem, d)}", output=str(d / "runs" / f"%{width}a" / "launch" / "slurm.out"),
        description=f"pytc-launch sweep {Path(sweep_path).absolute()}: {n} runs, task i trains "
                    f"run i ({d}/runs/NNN)", array=array, setup=setup,
        attempts_log='"$RUN_DIR/launch/attempts.log"')
    script_path = d / "sweep.sbatch"
    result = LaunchResult(d, {str(script_path): text}, plan=plan)
    if dry_run:
        return result
    created = not d.exists()
    for name, run in zip(names, plan.runs, strict=True):
        write_atomic(d / "runs" / name / "launch" / "config.toml", tomli_w.dumps(run.config).encode())
    write_atomic(d / "sweep.toml", Path(sweep_path).read_bytes())
    write_atomic(script_path, text.encode())
    record = LaunchRecord("sweep", d, [JobRecord("sweep", "sweep.sbatch", n)],
                          runs=[{"name": name, "params": run.params}
                                for name, run in zip(names, plan.runs, strict=True)],
                          meta={"sweep": str(Path(sweep_path).absolute()), "cwd": os.getcwd(),
                                "grid_size": plan.grid_size})
    job_id = _submit_or_cleanup([], script_path, remove=d if created else None)
    add_submission(record.jobs[0], job_id, list(range(n)))
    write_record(record)
    return LaunchResult(d, result.scripts, [job_id], plan)


# --- blocks -------------------------------------------------------------------------------

_STAGE_COMMANDS = {"infer": "pytc-infer", "decode": "pytc-decode", "eval": "pytc-eval"}


@dataclass(frozen=True)
class BlocksStep:
    """One job of a blocks launch: ``argv`` for task ``i`` of ``tasks`` (None: one job)."""

    name: str
    argv: list[str]
    tasks: int | None

    def task_argv(self, i: int | None, *, slurm: bool) -> list[str]:
        """The command of task ``i`` (locally) or with ``$SLURM_ARRAY_TASK_ID`` (Slurm)."""
        if self.tasks is None:
            return list(self.argv)
        share = f'"$SLURM_ARRAY_TASK_ID/{self.tasks}"' if slurm else f"{i}/{self.tasks}"
        return [*self.argv, "--blocks", share]


def _output_arg(args: Sequence[str]) -> str | None:
    """The value of ``-o`` / ``--output`` in a stage's arguments (the last one given)."""
    found = None
    for i, a in enumerate(args):
        if a in ("-o", "--output") and i + 1 < len(args):
            found = args[i + 1]
        elif a.startswith("--output="):
            found = a[len("--output="):]
    return found


def blocks_commands(stage: str, args: Sequence[str], tasks: int, *, dry_run: bool = False
                    ) -> list[BlocksStep]:
    """The jobs of ``pytc-launch blocks infer|decode|eval``: for infer one array of ``tasks``
    shares; for decode the label array, one reduce job and the relabel array; for eval the
    sample array and one reduce job (the report)."""
    if stage not in _STAGE_COMMANDS:
        raise UserError(f"unknown blocks stage '{stage}'", "use `blocks infer`, `blocks decode` or `blocks eval`")
    if tasks < 1:
        raise UserError(f"--tasks must be >= 1, got {tasks}", "e.g. --tasks 8")
    args = list(args)
    if not args:
        raise UserError(f"no {_STAGE_COMMANDS[stage]} arguments given",
                        f"pass them after --, e.g. pytc-launch blocks {stage} --tasks 4 -- "
                        + ("AFF -o SEG --block-size 128" if stage == "decode"
                           else "SEG --gt GT --block-size 128 --scratch DIR" if stage == "eval"
                           else "--checkpoint run.ckpt --input RAW -o AFF"))
    for flag in ("--blocks", "--step"):
        if any(a == flag or a.startswith(flag + "=") for a in args):
            raise UserError(f"{flag} is set by pytc-launch blocks",
                            f"remove {flag} from the {_STAGE_COMMANDS[stage]} arguments")
    if any(a == "-" for a in args):
        raise UserError("input '-' (stdin) cannot reach Slurm jobs", "pass the URI itself")
    output = _output_arg(args)
    if output is not None:  # array tasks never write one HDF5/TIFF/.npy file together
        check_shareable(output)
    exe = _executable(_STAGE_COMMANDS[stage], dry_run)
    if stage == "infer":
        return [BlocksStep("infer", [exe, *args], tasks)]
    if stage == "eval":
        for flag, example in (("--block-size", "--block-size 128"), ("--scratch", "--scratch "
                                                                     "runs/eval-scratch")):
            if not any(a == flag or a.startswith(flag + "=") for a in args):
                raise UserError(f"blocks eval needs {flag} (the same for every share)",
                                f"add {example} to the pytc-eval arguments")
        return [BlocksStep("sample", [exe, *args, "--step", "sample"], tasks),
                BlocksStep("reduce", [exe, *args, "--step", "reduce"], None)]
    has_block_size = any(a == "--block-size" or a.startswith("--block-size=") for a in args)
    has_config = any(a in ("--config", "--set") or a.startswith(("--config=", "--set="))
                     for a in args)
    if not has_block_size and not has_config:
        raise UserError("blocks decode needs a block size",
                        "add --block-size to the pytc-decode arguments, e.g. --block-size 128")
    return [BlocksStep("label", [exe, *args, "--step", "label"], tasks),
            BlocksStep("reduce", [exe, *args, "--step", "reduce"], None),
            BlocksStep("relabel", [exe, *args, "--step", "relabel"], tasks)]


def run_blocks_locally(steps: Sequence[BlocksStep], *, quiet: bool = False) -> str:
    """The in-process twin of a blocks launch: the same commands, run here one after the
    other (task 0..n-1 of each step). Returns the last command's stdout (the output URI, or
    the report lines of ``blocks eval``)."""
    last = ""
    for step in steps:
        indices: list[int | None] = list(range(step.tasks)) if step.tasks else [None]
        for i in indices:
            argv = step.task_argv(i, slurm=False)
            log.info("local %s%s: %s", step.name, f" {i}" if i is not None else "", " ".join(argv))
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sys.stderr if not quiet
                                  else subprocess.DEVNULL, text=True, check=False)
            if proc.returncode != 0:
                raise UserError(f"{step.name}{f' task {i}' if i is not None else ''} failed "
                                f"(exit {proc.returncode}): {' '.join(argv)}",
                                "see its error above; rerun to resume")
            last = proc.stdout.strip() if proc.stdout.strip() else last
    return last


def launch_blocks(stage: str, args: Sequence[str], tasks: int, *,
                  directory: str | os.PathLike[str] | None = None,
                  slurm: SlurmOptions | None = None, dry_run: bool = False,
                  overwrite: bool = False) -> LaunchResult:
    """Submit ``pytc-infer|pytc-decode ... --blocks i/n`` as a job array of ``tasks``; for
    decode also ``--step reduce`` (``--dependency=afterok`` on the label array) and the
    relabel array (afterok on reduce). The last job id is the one to wait for."""
    if not dry_run:
        require_sbatch()
    steps = blocks_commands(stage, args, tasks, dry_run=dry_run)
    slurm = slurm or SlurmOptions()
    check_gpu_partition(slurm.gpus, slurm.partition)
    d = Path(directory or Path("runs") / f"blocks-{stage}-{_timestamp()}").absolute()
    _check_new_dir(d, overwrite)
    scripts: dict[str, str] = {}
    for step in steps:
        array = None
        if step.tasks is not None:
            array = f"0-{step.tasks - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
        suffix = "-%a" if step.tasks is not None else ""
        attempts = (f'"$LOGS/{step.name}-$SLURM_ARRAY_TASK_ID.attempts"' if step.tasks is not None
                    else str(d / "logs" / f"{step.name}.attempts"))
        scripts[str(d / f"{step.name}.sbatch")] = render_script(
            slurm, step.task_argv(None, slurm=True), job_name=f"pytc-{stage}-{step.name}",
            output=str(d / "logs" / f"{step.name}{suffix}.out"), array=array,
            description=f"pytc-launch blocks {stage}: step {step.name}"
                        + (f", task i of {step.tasks} runs --blocks i/{step.tasks}"
                           if step.tasks else ""),
            setup=[f"cd {_q(os.getcwd())}", f"LOGS={_q(str(d / 'logs'))}"],
            attempts_log=attempts)
    result = LaunchResult(d, scripts)
    if dry_run:
        return result
    created = not d.exists()
    (d / "logs").mkdir(parents=True, exist_ok=True)
    for path, text in scripts.items():
        write_atomic(path, text.encode())
    record = LaunchRecord("blocks", d, [JobRecord(s.name, f"{s.name}.sbatch", s.tasks)
                                        for s in steps],
                          meta={"stage": stage, "args": list(args), "tasks": tasks,
                                "cwd": os.getcwd()})
    submitted: list[str] = []
    previous = None
    for step, job in zip(steps, record.jobs, strict=True):
        job_id = _submit_or_cleanup(submitted, d / job.script, remove=d if created else None,
                                    dependency=f"afterok:{previous}" if previous else None)
        add_submission(job, job_id, list(range(step.tasks)) if step.tasks else None)
        previous = job_id
    write_record(record)
    return LaunchResult(d, scripts, submitted)


# --- cancel / resubmit --------------------------------------------------------------------

def cancel(directory: str | Path) -> list[str]:
    """``scancel`` every job of a launch directory that is still pending or running."""
    record = read_record(directory)
    ids = [t.slurm_id for t in record.tasks() if t.slurm_id]
    states = job_states(ids)
    active = [i for i in ids if i in states and states[i].state not in FINAL_STATES]
    cancel_jobs(active)
    return active


def resubmit_failed(directory: str | Path) -> list[str]:
    """Resubmit only the failed runs of a sweep (or a failed train run): the same script,
    ``--array`` limited to the failed task ids. Returns the new job ids (empty: none failed)."""
    from pytc_launch.status import collect_status

    record, rows = collect_status(directory)
    if record.kind == "blocks":
        raise UserError("resubmit --failed is for train runs and sweeps",
                        "rerun the same `pytc-launch blocks` command: finished blocks are skipped")
    failed = [i for i, row in enumerate(rows) if row.state in FAILED_STATES
              or row.state == "FAILED"]
    if not failed:
        return []
    job = record.jobs[0]
    script = record.directory / job.script
    if record.kind == "sweep":
        job_id = submit(script, array=",".join(str(i) for i in failed))
        add_submission(job, job_id, failed)
    else:
        job_id = submit(script)
        add_submission(job, job_id, None)
    write_record(record)
    return [job_id]
