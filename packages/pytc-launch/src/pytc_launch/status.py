"""``pytc-launch status``: what each run or task of a launch directory is doing.

For every run/task: Slurm's state (squeue, then sacct, then the job completion log), how
often it was requeued, the step of its last checkpoint, its best validation metric, and its
log. A sweep's runs are ranked by that metric (a leaderboard naming the best checkpoint).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytc_launch.ckpt import read_checkpoint
from pytc_launch.record import LaunchRecord, read_record
from pytc_launch.slurm import FINAL_STATES, JobState, job_states

__all__ = ["CheckpointInfo", "TaskStatus", "checkpoint_info", "collect_status", "format_table",
           "leaderboard", "status_json", "wait_until_final"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a pytc-train run directory's ``checkpoints/last.ckpt`` says about training."""

    step: int | None = None
    monitor: str | None = None
    best_score: float | None = None
    mode: str = "max"
    best_path: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One row of ``status``: a sweep run, the train run, or one task of a blocks job."""

    name: str
    job_id: str | None
    state: str
    restarts: int
    exit_code: str | None
    step: int | None
    monitor: str | None
    metric: float | None
    mode: str
    checkpoint: str | None
    log: str | None
    params: dict[str, Any]
    run_dir: str | None


_MODE = re.compile(r"'mode':\s*'(min|max)'")


def checkpoint_info(run_dir: str | Path) -> CheckpointInfo:
    """Step from ``run_dir/checkpoints/last.ckpt`` (Lightning's ``global_step``) and the best
    validation metric from ``best.ckpt``'s own ModelCheckpoint state (the score it was saved
    with; ``last.ckpt``'s copy can lag one validation behind), read without torch; empty when
    there is none yet."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    step = None
    found_any = False
    for name in ("last.ckpt", "best.ckpt"):
        if step is None and (ckpt_dir / name).is_file():
            last = read_checkpoint(ckpt_dir / name)  # no torch needed, nothing from it runs
            if last is not None:
                found_any = True
                value = last.get("global_step")
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    step = int(value)
    ckpt = read_checkpoint(ckpt_dir / "best.ckpt") if (ckpt_dir / "best.ckpt").is_file() else None
    if ckpt is None and (ckpt_dir / "last.ckpt").is_file():
        ckpt = read_checkpoint(ckpt_dir / "last.ckpt")
    if ckpt is None:
        return CheckpointInfo(step) if found_any else CheckpointInfo()
    monitor = score = best_path = None
    mode = "max"
    for key, state in (ckpt.get("callbacks") or {}).items():
        if not isinstance(state, dict) or not state.get("monitor"):
            continue
        value = state.get("best_model_score")
        if value is None:
            continue
        monitor = str(state["monitor"])
        try:
            score = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
        best_path = state.get("best_model_path") or None
        found = _MODE.search(str(key))
        mode = found.group(1) if found else ("min" if "loss" in monitor else "max")
        break
    if best_path is None or not Path(best_path).is_file():
        best_path = str(ckpt_dir / "best.ckpt") if (ckpt_dir / "best.ckpt").is_file() else None
    if score is not None and math.isnan(score):
        score = None
    return CheckpointInfo(step, monitor, score, mode, best_path)


def _attempts(path: Path) -> tuple[int, dict[str, str]]:
    """(restarts seen, last start record) from a task's attempts log."""
    restarts = 0
    last: dict[str, str] = {}
    if not path.is_file():
        return 0, {}
    for line in path.read_text(errors="replace").splitlines():
        fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
        if line.startswith("start"):
            last = fields
            if fields.get("restart", "0").isdigit():
                restarts = max(restarts, int(fields["restart"]))
        elif line.startswith("end"):
            last = {**last, "rc": fields.get("rc", "")}
    return restarts, last


def collect_status(directory: str | Path) -> tuple[LaunchRecord, list[TaskStatus]]:
    """The status of every run/task of a launch directory (``train``, ``sweep``, ``blocks``)."""
    record = read_record(directory)
    tasks = record.tasks()
    ids = [t.slurm_id for t in tasks if t.slurm_id]
    plain: dict[str, str] = {}
    attempt_info = {}
    for t in tasks:
        restarts, last = _attempts(t.attempts_log)
        attempt_info[t.name] = (restarts, last)
        if t.slurm_id and last.get("job") and last.get("job") != "none":
            plain[t.slurm_id] = last["job"]
    states = job_states(ids, plain) if ids else {}
    rows = []
    for t in tasks:
        restarts, last = attempt_info[t.name]
        js = states.get(t.slurm_id or "", None)
        if js is None:
            state = "NOT_SUBMITTED" if not t.slurm_id else _state_from_attempts(last)
            js = JobState(state, None, None, "attempts log")
        if js.restarts is not None:
            restarts = max(restarts, js.restarts)
        exit_code = js.exit_code or (last.get("rc") if last.get("rc") else None)
        info = checkpoint_info(t.run_dir) if t.run_dir else CheckpointInfo()
        rows.append(TaskStatus(
            name=t.name, job_id=t.slurm_id, state=js.state, restarts=restarts,
            exit_code=exit_code, step=info.step, monitor=info.monitor, metric=info.best_score,
            mode=info.mode, checkpoint=info.best_path, log=str(t.log) if t.log else None,
            params=t.params, run_dir=str(t.run_dir) if t.run_dir else None))
    return record, rows


def wait_until_final(directory: str | Path, timeout: float, poll: float = 3.0
                     ) -> list[TaskStatus]:
    """Poll :func:`collect_status` every ``poll`` seconds until every row of the launch
    directory is in a final Slurm state; its rows. TimeoutError after ``timeout`` seconds
    (the exception's ``args[1]`` holds the last rows)."""
    deadline = time.monotonic() + timeout
    rows: list[TaskStatus] = []
    while time.monotonic() < deadline:
        rows = collect_status(directory)[1]
        if rows and all(r.state in FINAL_STATES for r in rows):
            return rows
        time.sleep(poll)
    raise TimeoutError(f"jobs of {directory} not finished after {timeout} s", rows)


def _state_from_attempts(last: dict[str, str]) -> str:
    if not last:
        return "UNKNOWN"
    if "rc" not in last:
        return "RUNNING?"
    return "COMPLETED" if last["rc"] == "0" else "FAILED"


def leaderboard(rows: list[TaskStatus]) -> list[TaskStatus]:
    """Runs ranked by their best validation metric (direction from the checkpoint callback's
    mode: max for F1, min for a loss); runs without a metric last, in name order."""
    scored = [r for r in rows if r.metric is not None]
    rest = [r for r in rows if r.metric is None]
    scored.sort(key=lambda r: -float(r.metric or 0) if r.mode == "max" else float(r.metric or 0))
    return scored + sorted(rest, key=lambda r: r.name)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(record: LaunchRecord, rows: list[TaskStatus]) -> str:
    """A plain-text table (the sweep's leaderboard first line names the best checkpoint)."""
    param_keys = list(dict.fromkeys(k for r in rows for k in r.params))
    header = ["rank" if record.kind == "sweep" else "#", "run", "job", "state", "restarts",
              "step", "metric", *param_keys, "log"]
    body = []
    for i, r in enumerate(rows, 1):
        metric = f"{r.monitor}={_fmt(r.metric)}" if r.metric is not None else "-"
        body.append([str(i), r.name, _fmt(r.job_id), r.state, str(r.restarts), _fmt(r.step),
                     metric, *[_fmt(r.params.get(k)) for k in param_keys], _fmt(r.log)])
    widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]
    best = next((r for r in rows if r.metric is not None), None)
    if record.kind in ("sweep", "train") and best is not None:
        lines.append(f"best: run {best.name} ({best.monitor}={_fmt(best.metric)}), "
                     f"checkpoint {best.checkpoint or '-'}")
    return "\n".join(lines)


def status_json(record: LaunchRecord, rows: list[TaskStatus]) -> str:
    """The status as one JSON line (``--json``)."""
    best = next((r for r in rows if r.metric is not None), None)
    return json.dumps({"kind": record.kind, "directory": str(record.directory),
                       "best": asdict(best) if best else None,
                       "runs": [asdict(r) for r in rows]})
