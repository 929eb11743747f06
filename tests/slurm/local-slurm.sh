#!/usr/bin/env bash
# A single-node Slurm cluster on localhost for pytc-launch's `slurm` tests (and CI).
#
#   tests/slurm/local-slurm.sh start   # install slurm-wlm + munge if missing, start, wait for idle
#   tests/slurm/local-slurm.sh stop    # end exactly the daemons `start` started (by pid)
#   tests/slurm/local-slurm.sh env     # print `export SLURM_CONF=...` for client commands
#
# Everything lives in $PYTC_SLURM_DIR (default /tmp/pytc-local-slurm): slurm.conf, pid files,
# logs, state, spool, the munge socket and the job completion log. Nothing under /etc is
# written; client commands find the cluster through SLURM_CONF (the slurm tests set it).
# Needs root (apt-get, munged as the munge user, slurmd). Settings measured on Debian 12
# (slurm 22.05.8, munge 0.5.15): see issue 15.
set -euo pipefail

DIR=${PYTC_SLURM_DIR:-/tmp/pytc-local-slurm}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
SOCKET=$MUNGE_DIR/munge.socket

log() { echo "local-slurm: $*" >&2; }

install_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        log "error: slurm-wlm/munge are not installed and installing them needs root"; exit 2
    fi
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq slurm-wlm munge >&2
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local i
    for ((i = 0; i < limit * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "error: timed out after ${limit}s waiting for $what (logs in $DIR/log)"
    diagnose
    stop quiet
    exit 1
}

diagnose() {  # what CI needs to see when the cluster does not come up: states, reasons, logs
    local f
    log "getent hosts localhost: $(getent hosts localhost | tr '\n' ' ')"
    for f in "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$MUNGE_DIR/munged.pid"; do
        if alive "$f"; then log "$(basename "$f" .pid) is running"; else log "$(basename "$f" .pid) is not running"; fi
    done
    SLURM_CONF=$CONF sinfo -N -h -o '%N %T %E' 2>&1 | sed 's/^/local-slurm: sinfo: /' >&2 || true
    for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$MUNGE_DIR/munged.log"; do
        [ -f "$f" ] || continue
        log "last lines of $f:"
        tail -n 15 "$f" | sed 's/^/    /' >&2
    done
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$(( ${mem:-2000} * 9 / 10 ))
    cat > "$CONF" <<CONF
# single-node Slurm on localhost for pytc tests (written by tests/slurm/local-slurm.sh)
ClusterName=pytc-local
# explicit addresses: the daemons never depend on how (or whether) "localhost" resolves
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=10
SlurmctldPort=${PYTC_SLURM_PORT:-6817}
SlurmdPort=$(( ${PYTC_SLURM_PORT:-6817} + 1 ))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
ReturnToService=2
JobRequeue=1
KillWait=5
OverTimeLimit=0
MinJobAge=300
MpiDefault=none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    install_missing
    mkdir -p "$DIR"/{state,spool,log}
    chmod 755 "$DIR"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && alive "$MUNGE_DIR/munged.pid"; then
        log "already running (SLURM_CONF=$CONF)"; return
    fi
    stop quiet
    write_conf
    export SLURM_CONF=$CONF
    # munged as the munge user, with its socket, log, pid and seed in a folder it owns
    install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- munged --force --socket="$SOCKET" --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for 10 "munged" alive "$MUNGE_DIR/munged.pid"
    slurmctld -f "$CONF" -i
    wait_for 10 "slurmctld's pid file" alive "$DIR/slurmctld.pid"
    slurmd -f "$CONF" -N localhost
    wait_for 10 "slurmd's pid file" alive "$DIR/slurmd.pid"
    wait_for 120 "the node to be idle" node_idle
    log "running: SLURM_CONF=$CONF (stop with: $0 stop)"
}

node_idle() {  # idle, or down/drained for a reason that a resume clears (e.g. an early reboot)
    local state
    state=$(SLURM_CONF=$CONF sinfo -h -n localhost -o %T 2>/dev/null) || return 1
    case "$state" in
        idle) return 0 ;;
        down | drained | drain*) SLURM_CONF=$CONF scontrol update NodeName=localhost State=RESUME \
            >/dev/null 2>&1 || true ;;
    esac
    return 1
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait up to 10 s, then KILL; only that pid
    local file=$1 name=$2 pid i
    alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$file"
    [ "${3:-}" = quiet ] || log "stopped $name (pid $pid)"
}

stop() {
    stop_pid "$DIR/slurmd.pid" slurmd "${1:-}"
    stop_pid "$DIR/slurmctld.pid" slurmctld "${1:-}"
    stop_pid "$MUNGE_DIR/munged.pid" munged "${1:-}"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
