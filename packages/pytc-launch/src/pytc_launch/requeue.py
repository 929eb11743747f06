"""Automatic requeue: the bash that runs a job's work so a time limit becomes a resume.

Slurm sends USR1 to the batch shell ``grace`` seconds before the limit
(``--signal=B:USR1@grace``). bash runs a trap only after its foreground command ends, so
the work runs in the background (``cmd & wait``); the trap forwards USR1 to it (pytc-train
saves ``checkpoints/last.ckpt`` and exits), the script waits for it to finish, then calls
``scontrol requeue $SLURM_JOB_ID`` (which ends the job at once, so the checkpoint comes
first). The requeued job runs the same command again (``pytc-train --resume auto``).
``SLURM_RESTART_COUNT`` bounds the loop at ``max_restarts``. A non-zero exit without the
signal is an ordinary failure: the job ends FAILED and is not requeued.
"""

from __future__ import annotations

import shlex

__all__ = ["requeue_wrapper", "shell_quote"]

_TEMPLATE = """\
# --- requeue wrapper (pytc-launch) -----------------------------------------------------
# USR1 (sent {grace_note}) is forwarded to the work, which checkpoints and
# exits; then the job is requeued and the same command resumes. At most MAX_RESTARTS
# requeues; a failure without the signal is not requeued.
MAX_RESTARTS={max_restarts}
RESTARTS=${{SLURM_RESTART_COUNT:-0}}
ATTEMPTS_LOG={attempts_log}
record() {{ if [ -n "$ATTEMPTS_LOG" ]; then echo "$* time=$(date +%s)" >> "$ATTEMPTS_LOG"; fi; }}
signalled=0
interrupted=0
child=
on_usr1() {{
    signalled=1
    interrupted=1
    echo "pytc-launch: USR1 (time limit near): forwarding it to the work (pid $child)" >&2
    if [ -n "$child" ]; then kill -USR1 "$child" 2>/dev/null; fi
}}
trap on_usr1 USR1
record "start job=${{SLURM_JOB_ID:-none}} array_job=${{SLURM_ARRAY_JOB_ID:-none}} task=${{SLURM_ARRAY_TASK_ID:-none}} restart=$RESTARTS"
echo "pytc-launch: job ${{SLURM_JOB_ID:-none}} starts (restart $RESTARTS) on $(hostname)" >&2

{command} &
child=$!
while :; do
    wait "$child"
    rc=$?
    if [ "$interrupted" = 1 ] && [ "$rc" -gt 128 ]; then
        interrupted=0   # wait was interrupted by the trap: wait again for the work itself
        continue
    fi
    break
done
record "end job=${{SLURM_JOB_ID:-none}} task=${{SLURM_ARRAY_TASK_ID:-none}} rc=$rc signalled=$signalled"
{requeue_block}
exit "$rc"
"""

_REQUEUE = """\
if [ "$signalled" = 1 ] && [ "$rc" != 0 ]; then   # rc 0: the work finished anyway
    if [ "$RESTARTS" -lt "$MAX_RESTARTS" ]; then
        echo "pytc-launch: requeueing job $SLURM_JOB_ID (restart $((RESTARTS + 1)) of at most $MAX_RESTARTS)" >&2
        record "requeue job=$SLURM_JOB_ID task=${SLURM_ARRAY_TASK_ID:-none} restart=$((RESTARTS + 1))"
        if scontrol requeue "$SLURM_JOB_ID"; then
            sleep 30   # scontrol requeue ends this job; do not exit first
            exit 0
        fi
        echo "pytc-launch: scontrol requeue failed; the job ends here" >&2
    else
        echo "pytc-launch: not requeued: $RESTARTS restarts reached --max-restarts $MAX_RESTARTS" >&2
        record "gave-up job=$SLURM_JOB_ID task=${SLURM_ARRAY_TASK_ID:-none} restarts=$RESTARTS"
    fi
fi"""


def shell_quote(word: str) -> str:
    """Shell-quote ``word`` unless it is a ``"$VAR/..."`` expression the script expands."""
    if word.startswith('"$') and word.endswith('"'):
        return word
    return shlex.quote(word)


def requeue_wrapper(command: str, *, max_restarts: int, attempts_log: str | None = None,
                    requeue: bool = True, grace_note: str = "before the time limit") -> str:
    """The bash lines that run ``command`` (already shell-quoted) with USR1 → checkpoint →
    ``scontrol requeue``; ``attempts_log`` records every start/end (``status`` reads it)."""
    return _TEMPLATE.format(
        max_restarts=int(max_restarts),
        attempts_log=shell_quote(attempts_log) if attempts_log else '""',
        command=command,
        grace_note=grace_note,
        requeue_block=_REQUEUE if requeue else "# (submitted without --requeue)",
    )
