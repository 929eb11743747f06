"""``launch.json``: what a launch directory holds and which Slurm jobs ran it.

Written at submission (atomically) and updated by ``resubmit``; ``status``, ``cancel`` and
``resubmit`` read it. Paths inside are relative to the launch directory.

Layouts (``DIR`` is ``--dir``)::

    train   DIR/launch.json, DIR/launch/{train.sbatch, config.toml, slurm.out, attempts.log},
            and pytc-train's run directory DIR itself (checkpoints/, logs/, pytc_config.toml)
    sweep   DIR/launch.json, DIR/sweep.sbatch, DIR/sweep.toml (the input),
            DIR/runs/NNN (run NNN: pytc-train's run dir, with launch/{config.toml, slurm.out,
            attempts.log})
    blocks  DIR/launch.json, DIR/<step>.sbatch, DIR/logs/<step>-<task>.{out,attempts}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytc_core.errors import UserError
from pytc_core.files import write_atomic

__all__ = ["JobRecord", "LaunchRecord", "TaskRef", "read_record", "write_record"]

RECORD = "launch.json"


@dataclass
class JobRecord:
    """One sbatch script of a launch (the train job, the sweep array, a blocks step)."""

    step: str
    script: str
    tasks: int | None  # array size, or None for a plain job
    submissions: list[dict[str, Any]] = field(default_factory=list)  # {"job_id", "tasks"}

    def job_for_task(self, task: int | None) -> str | None:
        """The Slurm id that last ran ``task`` (``"12_3"`` for arrays, ``"12"`` otherwise)."""
        for sub in reversed(self.submissions):
            if task is None:
                return str(sub["job_id"])
            if task in sub.get("tasks", []):
                return f"{sub['job_id']}_{task}"
        return None


@dataclass(frozen=True)
class TaskRef:
    """One row of a launch: where its log, attempts log and run directory are."""

    name: str
    step: str
    task: int | None
    slurm_id: str | None
    log: Path | None
    attempts_log: Path
    run_dir: Path | None
    params: dict[str, Any]


@dataclass
class LaunchRecord:
    """The content of ``launch.json``."""

    kind: str  # "train" | "sweep" | "blocks"
    directory: Path
    jobs: list[JobRecord]
    runs: list[dict[str, Any]] = field(default_factory=list)  # sweep: {"name", "params"}
    meta: dict[str, Any] = field(default_factory=dict)

    def job(self, step: str) -> JobRecord:
        for job in self.jobs:
            if job.step == step:
                return job
        raise KeyError(step)

    def tasks(self) -> list[TaskRef]:
        """Every run (train, sweep) or task (blocks) of this launch, in order."""
        d = self.directory
        if self.kind == "train":
            job = self.jobs[0]
            return [TaskRef(d.name, job.step, None, job.job_for_task(None),
                            d / "launch" / "slurm.out", d / "launch" / "attempts.log", d, {})]
        if self.kind == "sweep":
            job = self.jobs[0]
            out = []
            for i, run in enumerate(self.runs):
                run_dir = d / "runs" / run["name"]
                out.append(TaskRef(run["name"], job.step, i, job.job_for_task(i),
                                   run_dir / "launch" / "slurm.out",
                                   run_dir / "launch" / "attempts.log", run_dir,
                                   dict(run.get("params", {}))))
            return out
        out = []
        for job in self.jobs:
            indices: list[int | None] = list(range(job.tasks)) if job.tasks else [None]
            for task in indices:
                suffix = f"-{task}" if task is not None else ""
                name = f"{job.step}/{task}" if task is not None else job.step
                out.append(TaskRef(name, job.step, task, job.job_for_task(task),
                                   d / "logs" / f"{job.step}{suffix}.out",
                                   d / "logs" / f"{job.step}{suffix}.attempts", None, {}))
        return out

    def to_json(self) -> str:
        return json.dumps({
            "kind": self.kind, "format": 1, "meta": self.meta, "runs": self.runs,
            "jobs": [{"step": j.step, "script": j.script, "tasks": j.tasks,
                      "submissions": j.submissions} for j in self.jobs]}, indent=1)


def write_record(record: LaunchRecord) -> Path:
    """Write ``launch.json`` into the record's directory (atomically)."""
    return write_atomic(record.directory / RECORD, record.to_json().encode())


def add_submission(job: JobRecord, job_id: str, tasks: list[int] | None) -> None:
    """Note that ``job_id`` ran ``tasks`` of ``job`` (all of a plain job: ``None``)."""
    job.submissions.append({"job_id": job_id, "tasks": tasks or [],
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def read_record(directory: str | Path) -> LaunchRecord:
    """Read ``DIR/launch.json``; a UserError when DIR is not a launch directory."""
    d = Path(directory)
    path = d / RECORD
    if not path.is_file():
        raise UserError(f"{d} is not a pytc-launch run or sweep directory (no {RECORD})",
                        "pass the --dir of a `pytc-launch train|sweep|blocks` submission")
    try:
        data = json.loads(path.read_text())
        jobs = [JobRecord(j["step"], j["script"], j.get("tasks"), list(j.get("submissions", [])))
                for j in data["jobs"]]
        return LaunchRecord(data["kind"], d, jobs, list(data.get("runs", [])),
                            dict(data.get("meta", {})))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is damaged ({exc})", "resubmit into a new --dir") from None
