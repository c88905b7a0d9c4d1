#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (munge + slurmctld + slurmd), for trying tools/slurm_*.sh and for CI.
#
#   sudo apt-get install -y slurm-wlm munge      # Debian/Ubuntu packages (slurmctld, slurmd, srun, munged)
#   eval "$(tools/slurm/start_local_slurm.sh)"    # starts what is not running, prints `export SLURM_CONF=...`
#   GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 GRES= tools/slurm_train.sh local job CONFIG WORK_DIR
#   tools/slurm/start_local_slurm.sh stop        # stops the daemons this script started
#
# Idempotent: a second call finds the daemons running and only prints the export line. Everything lives in
# $SLURM_LOCAL_DIR (default /tmp/dgmn_mm_slurm): slurm.conf, state, spool, logs, pid files; /etc is not
# touched except that munge's key is created if the package did not create one. The node is this host with
# all its CPUs, in partition `local`; no cgroups, no accounting (task/none, proctrack/linuxproc). Run as root
# (the daemons run as root; munged as the munge user when it exists).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/dgmn_mm_slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"
log() { echo "[start_local_slurm] $*" >&2; }

for tool in slurmctld slurmd munged srun sinfo scontrol; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        log "$tool not found: install Slurm and munge first (apt-get install -y slurm-wlm munge)"
        exit 2
    fi
done
export PATH="$PATH:/usr/sbin"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-start}" = "stop" ]; then
    for pid in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
        if running "$pid"; then kill "$(cat "$pid")" && log "stopped $(basename "$pid" .pid)"; fi
    done
    exit 0
fi

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"

# --- munge ---------------------------------------------------------------------------------------------
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
if ! running "$DIR/munged.pid"; then
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        (command -v mungekey >/dev/null && mungekey --create --force) || \
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    MUNGE_USER=root
    if id munge >/dev/null 2>&1; then
        MUNGE_USER=munge
        chown -R munge:munge "$DIR/munge" /etc/munge
        chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
    fi
    log "starting munged ($MUNGE_USER)"
    if [ "$MUNGE_USER" = munge ]; then
        su -s /bin/sh munge -c "munged --socket='$MUNGE_SOCKET' --pid-file='$DIR/munge/munged.pid' \
            --log-file='$DIR/munge/munged.log' --seed-file='$DIR/munge/munge.seed' --force"
    else
        munged --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
            --seed-file="$DIR/munge/munge.seed" --force
    fi
    for _ in $(seq 50); do [ -s "$DIR/munge/munged.pid" ] && break; sleep 0.1; done
    cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
fi

# --- slurm.conf ----------------------------------------------------------------------------------------
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
cat > "$CONF.new" <<CONF
# written by tools/slurm/start_local_slurm.sh: a one-node cluster on $HOST
ClusterName=dgmnlocal
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
if [ ! -f "$CONF" ] || ! cmp -s "$CONF" "$CONF.new"; then mv "$CONF.new" "$CONF"; else rm "$CONF.new"; fi
export SLURM_CONF="$CONF"

# --- daemons -------------------------------------------------------------------------------------------
if ! running "$DIR/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld -f "$CONF" -i
fi
if ! running "$DIR/slurmd.pid"; then
    log "starting slurmd"
    slurmd -f "$CONF"
fi
for _ in $(seq 100); do
    state="$(sinfo -h -o %t 2>/dev/null | head -n1 || true)"
    case "$state" in idle|mix|alloc) break ;; esac
    sleep 0.3
done
if ! sinfo -h -o %t 2>/dev/null | grep -Eq 'idle|mix|alloc'; then
    log "the node did not come up; logs: $DIR/log/slurmctld.log $DIR/log/slurmd.log"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
fi
log "node $HOST is $(sinfo -h -o %t | head -n1) in partition local"
echo "export SLURM_CONF='$CONF'"
