"""Readable sbatch scripts: the ``#SBATCH`` header from typed options, the requeue wrapper body.

A script is plain bash a person can read, edit and resubmit by hand (``sbatch run.sbatch``).
Every job is submitted with ``--requeue --open-mode=append --signal=B:USR1@<grace>`` and runs
its work through :func:`pytc_launch.requeue.requeue_wrapper` (``cmd & wait``, USR1 forwarded,
``scontrol requeue``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytc_core.errors import UserError
from pytc_launch.requeue import requeue_wrapper, shell_quote

__all__ = ["SlurmOptions", "render_script", "validate_time"]

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources of a job (the ``[launch]`` table of a config; flags override it).

    ``time`` is Slurm's wall-clock limit (``minutes``, ``HH:MM:SS`` or ``D-HH:MM:SS``);
    ``grace`` is how many seconds before that limit the job gets USR1 to checkpoint and
    requeue; ``max_restarts`` bounds the requeue loop; ``gpus`` are per node; ``mem`` is
    per node (``16G``); ``max_parallel`` limits running array tasks (``%N``).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus: int = 0
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    grace: int = 300
    max_restarts: int = 3
    max_parallel: int | None = None
    job_name: str | None = None
    extra: list[str] = field(default_factory=list)
    """Further ``#SBATCH`` lines, verbatim (``["--mail-type=END"]``)."""
    setup: list[str] = field(default_factory=list)
    """bash lines every script runs before its command, in the launch folder
    (``["module load cuda/12.1", "source .venv/bin/activate", "export TMPDIR=/scratch/$USER"]``).
    """

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise UserError(f"nodes must be >= 1, got {self.nodes}", "use --nodes 1 or more")
        if self.gpus < 0:
            raise UserError(f"gpus must be >= 0, got {self.gpus}", "use --gpus 0 or more")
        if self.grace < 0:
            raise UserError(f"grace must be >= 0 seconds, got {self.grace}", "e.g. --grace 300")
        if self.max_restarts < 0:
            raise UserError(f"max_restarts must be >= 0, got {self.max_restarts}",
                            "e.g. --max-restarts 3")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UserError(f"max_parallel must be >= 1, got {self.max_parallel}",
                            "e.g. --max-parallel 4")
        if self.time is not None:
            validate_time(self.time)

    @property
    def tasks_per_node(self) -> int:
        """One task per GPU (Lightning's SLURMEnvironment expects that), else one."""
        return max(self.gpus, 1)


def validate_time(text: str) -> str:
    """Check a Slurm time limit (``30``, ``2:00``, ``24:00:00``, ``1-12:00:00``)."""
    if not _TIME.match(text.strip()):
        raise UserError(f"bad time limit '{text}'",
                        "use Slurm's forms: minutes, HH:MM:SS or D-HH:MM:SS, e.g. --time 24:00:00")
    return text.strip()


def _header(opts: SlurmOptions, *, job_name: str, output: str,
            array: str | None, requeue: bool) -> list[str]:
    lines = [f"--job-name={opts.job_name or job_name}", f"--output={output}",
             "--open-mode=append"]
    if requeue:
        lines += ["--requeue", f"--signal=B:USR1@{opts.grace}"]
    else:
        lines += ["--no-requeue"]
    if array is not None:
        lines.append(f"--array={array}")
    for flag, value in (("partition", opts.partition), ("account", opts.account),
                        ("qos", opts.qos), ("constraint", opts.constraint),
                        ("time", opts.time), ("mem", opts.mem),
                        ("cpus-per-task", opts.cpus_per_task)):
        if value is not None:
            lines.append(f"--{flag}={value}")
    lines.append(f"--nodes={opts.nodes}")
    lines.append(f"--ntasks-per-node={opts.tasks_per_node}")
    if opts.gpus:
        lines.append(f"--gpus-per-node={opts.gpus}")
    lines += list(opts.extra)
    return ["#SBATCH " + line for line in lines]


def render_script(opts: SlurmOptions, command: Sequence[str], *, job_name: str, output: str,
                  description: str, array: str | None = None, requeue: bool = True,
                  setup: Sequence[str] = (), attempts_log: str | None = None) -> str:
    """The text of an sbatch script that runs ``command`` under the requeue wrapper.

    ``command``: argv of the work; words are shell-quoted except ``"$VAR..."`` expressions
    (written with their double quotes, e.g. ``'"$SLURM_ARRAY_TASK_ID/4"'``), which expand;
    ``setup``: bash lines run before it (e.g. ``RUN_DIR=...``), followed by the options' own
    ``setup`` lines (``module load``, ``source .venv/bin/activate``); ``output``: Slurm's
    ``--output`` pattern (``%j``, ``%A``, ``%a``); ``attempts_log``: a file where each start
    and end of the work is recorded (job id, restart count, exit code) for ``status``.
    """
    header = _header(opts, job_name=job_name, output=output, array=array, requeue=requeue)
    body = requeue_wrapper(_shell_words(command), max_restarts=opts.max_restarts,
                           attempts_log=attempts_log, requeue=requeue,
                           grace_note=f"{opts.grace} s before the time limit")
    lines = ["#!/bin/bash", *header, "",
             f"# {description}",
             "# Written by pytc-launch; resubmit by hand with `sbatch <this file>`.",
             "set -u", *setup, *opts.setup, "", body]
    return "\n".join(lines) + "\n"


def _shell_words(command: Sequence[str]) -> str:
    return " ".join(shell_quote(word) for word in command)
