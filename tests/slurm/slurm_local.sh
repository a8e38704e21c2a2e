#!/usr/bin/env bash
# Run a real one-node SLURM cluster (Debian's Slurm 22.05 + munge) on this machine, for tests.
#
#   slurm_local.sh install   install slurmctld slurmd slurm-client munge (skips apt if present)
#   slurm_local.sh start     install if needed, configure and start munged/slurmctld/slurmd
#   slurm_local.sh stop      stop the daemons by pid and remove /etc/slurm/{slurm,gres}.conf
#   slurm_local.sh status    show sinfo/squeue/daemons; exit 0 if healthy, 1 otherwise
#   slurm_local.sh env       print export lines (eval "$(slurm_local.sh env)")
#
# Everything (state, spool, logs, pid files, fake GPU devices, jobcomp records) lives under
# SLURM_LOCAL_DIR (default /tmp/avsrobust-slurm). Must run as root. See tests/slurm/README.md.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/avsrobust-slurm}"
CLUSTER=avsrobust
PARTITION=debug
NODE="$(hostname -s)"
ETC=/etc/slurm
CONF="$ETC/slurm.conf"
GRES_CONF="$ETC/gres.conf"
BACKUP_SUFFIX=.avsrobust-backup
MARKER="# managed by avsrobust tests/slurm/slurm_local.sh"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_DIR="$DIR/munge"
LOGDIR="$DIR/log"
JOBCOMP="$DIR/jobcomp.txt"
CTLD_PID="$DIR/slurmctld.pid"
SLURMD_PID="$DIR/slurmd.pid"
MUNGED_PID="$MUNGE_DIR/munged.pid"
PACKAGES=(slurmctld slurmd slurm-client munge)
START_TIMEOUT="${SLURM_LOCAL_START_TIMEOUT:-30}"
STOP_TIMEOUT="${SLURM_LOCAL_STOP_TIMEOUT:-10}"

log() { printf 'slurm_local: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- install
missing_packages() {
    local p st
    for p in "${PACKAGES[@]}"; do
        st="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [[ "$st" == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

cmd_install() {
    local missing
    missing="$(missing_packages)"
    if [[ -z "$missing" ]]; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    need_root
    log "installing: ${missing//$'\n'/ }"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    missing="$(missing_packages)"
    [[ -z "$missing" ]] || die "still missing after apt-get install: $missing"
    log "installed: ${PACKAGES[*]}"
}

# ---------------------------------------------------------------- process helpers
# proc_alive PID NAME: true if PID is a live (not zombie) process whose command is NAME.
proc_alive() {
    local pid=$1 name=$2 comm stat
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

pid_of() { tr -dc '0-9' 2>/dev/null <"$1"; }

# pid_alive PIDFILE NAME: true if PIDFILE names a live process whose command is NAME.
pid_alive() {
    local pid
    pid="$(pid_of "$1")" || return 1
    [[ -n "$pid" ]] && proc_alive "$pid" "$2"
}

# stop_pid PIDFILE NAME: SIGTERM, wait STOP_TIMEOUT s, then SIGKILL. Always removes PIDFILE.
# Waits on the process itself: slurmd removes its pid file before it has exited.
stop_pid() {
    local pidfile=$1 name=$2 pid i
    pid="$(pid_of "$pidfile" || true)"
    if [[ -n "$pid" ]] && proc_alive "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            proc_alive "$pid" "$name" || break
            sleep 0.1
        done
        if proc_alive "$pid" "$name"; then
            log "$name (pid $pid) did not exit after ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                proc_alive "$pid" "$name" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$pidfile"
}

# Serialise start/stop of this cluster (fd 9, released when the script exits).
take_lock() {
    exec 9>"$DIR/.lock"
    flock -w 60 9 || die "another slurm_local.sh start/stop holds $DIR/.lock"
}

# ---------------------------------------------------------------- config
# slurm.conf node hardware fields from `slurmd -C`, RealMemory at ~90%.
node_hardware() {
    local line field out=() mem=0
    line="$(slurmd -C 2>/dev/null | head -n 1)"
    [[ "$line" == NodeName=* ]] || die "unexpected 'slurmd -C' output: $line"
    for field in $line; do
        case "$field" in
            NodeName=*) ;;
            RealMemory=*) mem=${field#RealMemory=} ;;
            *) out+=("$field") ;;
        esac
    done
    mem=$((mem * 9 / 10))
    ((mem > 0)) || die "could not read RealMemory from 'slurmd -C': $line"
    printf '%s RealMemory=%s' "${out[*]}" "$mem"
}

slurm_conf_text() {
    cat <<EOF
$MARKER
# One-node test cluster; state, logs and pids under $DIR.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
# Keep finished jobs visible to squeue (the Snakemake plugin's status command) and to the
# tests' scontrol for an hour: a loaded machine takes more than 10 min for the tiny workflow.
MinJobAge=3600
MailProg=/bin/true
GresTypes=gpu
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE NodeAddr=127.0.0.1 $(node_hardware) Gres=gpu:fake:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

gres_conf_text() {
    cat <<EOF
$MARKER
AutoDetect=off
NodeName=$NODE Name=gpu Type=fake File=$DIR/fakegpu[0-1]
EOF
}

is_ours() { [[ -f "$1" ]] && grep -qxF "$MARKER" "$1"; }

# install_conf PATH TEXT: write TEXT to PATH, backing up a foreign file once.
install_conf() {
    local path=$1 text=$2
    mkdir -p "$(dirname "$path")"
    if [[ -e "$path" ]] && ! is_ours "$path" && [[ ! -e "$path$BACKUP_SUFFIX" ]]; then
        log "backing up existing $path to $path$BACKUP_SUFFIX"
        mv "$path" "$path$BACKUP_SUFFIX"
    fi
    printf '%s\n' "$text" >"$path.tmp.$$"
    chmod 644 "$path.tmp.$$"
    mv -f "$path.tmp.$$" "$path"
}

# remove_conf PATH: remove our file, restore the backup if there is one.
remove_conf() {
    local path=$1
    if is_ours "$path"; then
        rm -f "$path"
        log "removed $path"
    elif [[ -e "$path" && -e "$path$BACKUP_SUFFIX" ]]; then
        log "WARNING: $path is not ours; leaving it (backup kept at $path$BACKUP_SUFFIX)"
        return 0
    fi
    if [[ -e "$path$BACKUP_SUFFIX" ]]; then
        mv "$path$BACKUP_SUFFIX" "$path"
        log "restored $path from backup"
    fi
}

conf_matches() { [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]; }

check_jobcomp_plugin() {
    local f
    for f in /usr/lib/*/slurm-wlm/jobcomp_filetxt.so /usr/lib/slurm-wlm/jobcomp_filetxt.so \
        /usr/lib/*/slurm/jobcomp_filetxt.so; do
        [[ -e "$f" ]] && return 0
    done
    die "jobcomp_filetxt.so not found (package slurm-wlm-basic-plugins?)"
}

# ---------------------------------------------------------------- munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    id munge >/dev/null 2>&1 || die "user 'munge' missing (is the munge package installed?)"
    mkdir -p /etc/munge
    local size
    size="$(stat -c %s "$MUNGE_KEY" 2>/dev/null || echo 0)"
    if [[ "$size" != 1024 ]]; then
        # A key from the package (or none) is replaced by 1024 random bytes; a munged still
        # using the old key must be restarted.
        log "creating $MUNGE_KEY (1024 random bytes)"
        stop_pid "$MUNGED_PID" munged
        (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY.tmp" bs=1024 count=1 status=none)
        mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 "$MUNGE_DIR"

    if pid_alive "$MUNGED_PID" munged && munge_ok; then
        return 0
    fi
    if ! pid_alive "$MUNGED_PID" munged && munge_ok; then
        log "a munged not started by this script is already answering; using it"
        return 0
    fi
    stop_pid "$MUNGED_PID" munged
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGED_PID" \
        --log-file="$MUNGE_DIR/munged.log" 9>&- \
        || die "munged failed to start: $(tail -n 20 "$MUNGE_DIR/munged.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && return 0
        sleep 0.1
    done
    die "'munge -n | unmunge' fails: $(tail -n 20 "$MUNGE_DIR/munged.log" 2>/dev/null)"
}

# ---------------------------------------------------------------- health
# Node state as sinfo reports it, e.g. idle, mixed, allocated, down*, drained.
node_state() { timeout 5 sinfo -h -o %T 2>/dev/null | head -n 1; }

daemons_alive() { pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd; }

healthy() {
    daemons_alive || return 1
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

dump_logs() {
    local f
    for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log"; do
        log "---- tail of $f"
        tail -n 25 "$f" >&2 2>/dev/null || log "(no log)"
    done
}

# ---------------------------------------------------------------- start / stop
# fail_start MESSAGE: show the daemon logs, undo the half-started cluster, exit 1.
fail_start() {
    sleep 0.5 # let a dying daemon finish its log
    log "$1"
    dump_logs
    log "cleaning up the failed start (logs kept in $LOGDIR)"
    stop_all
    die "SLURM did not come up: $1"
}

cmd_start() {
    need_root
    cmd_install
    command -v slurmctld >/dev/null || die "slurmctld not found after install"
    check_jobcomp_plugin
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    take_lock

    local conf_text gres_text
    conf_text="$(slurm_conf_text)"
    gres_text="$(gres_conf_text)"
    if healthy && conf_matches "$CONF" "$conf_text" && conf_matches "$GRES_CONF" "$gres_text" \
        && munge_ok; then
        log "already running and healthy (node $NODE: $(node_state)); nothing to do"
        return 0
    fi

    mkdir -p "$DIR/state" "$DIR/spool" "$LOGDIR"
    local i
    for i in 0 1; do
        local dev="$DIR/fakegpu$i"
        if [[ ! -c "$dev" ]]; then
            rm -f "$dev"
            mknod "$dev" c 195 "$i"
        fi
    done
    touch "$JOBCOMP"

    start_munge

    # Config changed or cluster unhealthy: (re)start both daemons with the new config.
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    install_conf "$CONF" "$conf_text"
    install_conf "$GRES_CONF" "$gres_text"

    log "starting slurmctld and slurmd (node $NODE)"
    # 9>&-: the daemons must not inherit (and so hold) the lock.
    slurmctld 9>&- || fail_start "slurmctld failed to start"
    slurmd 9>&- || fail_start "slurmd failed to start"
    sleep 0.2

    local state="" resumed=0 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! daemons_alive; then
            fail_start "a SLURM daemon exited during start"
        fi
        state="$(node_state || true)"
        [[ "$state" == idle ]] && break
        # A node kept DOWN/DRAINED in the saved state from an earlier run: resume it once.
        if ((resumed == 0)) && [[ "$state" =~ ^(down|drain) ]] && [[ "$state" != *'*' ]]; then
            timeout 5 scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 0.2
    done
    [[ "$state" == idle ]] \
        || fail_start "node $NODE not idle after ${START_TIMEOUT}s (state: '${state:-no answer}')"
    log "cluster $CLUSTER up: node $NODE idle, partition $PARTITION, jobcomp $JOBCOMP"
}

cmd_stop() {
    need_root
    if [[ -d "$DIR" ]]; then take_lock; fi
    stop_all
    if [[ -d "$LOGDIR" ]]; then log "stopped (logs kept in $LOGDIR)"; else log "stopped"; fi
}

# Stop daemons by pid, remove our config (restoring backups).
stop_all() {
    if pid_alive "$CTLD_PID" slurmctld && [[ -f "$CONF" ]]; then
        # Cancel leftover jobs so no job step outlives the cluster.
        local ids i
        ids="$(timeout 5 squeue -h -o %A 2>/dev/null || true)"
        if [[ -n "$ids" ]]; then
            log "cancelling jobs: ${ids//$'\n'/ }"
            # shellcheck disable=SC2086
            timeout 5 scancel $ids 2>/dev/null || true
            for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
                [[ -z "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    stop_pid "$MUNGED_PID" munged
    remove_conf "$CONF"
    remove_conf "$GRES_CONF"
}

cmd_status() {
    local ok=0 d pf
    for d in slurmctld:"$CTLD_PID" slurmd:"$SLURMD_PID" munged:"$MUNGED_PID"; do
        pf=${d#*:}
        if pid_alive "$pf" "${d%%:*}"; then
            echo "${d%%:*}: running (pid $(tr -dc '0-9' <"$pf"))"
        else
            echo "${d%%:*}: not running"
        fi
    done
    if [[ ! -f "$CONF" ]]; then
        echo "$CONF: absent (cluster not configured)"
        return 1
    fi
    echo "---- sinfo"
    timeout 5 sinfo 2>&1 || ok=1
    echo "---- squeue"
    timeout 5 squeue 2>&1 || ok=1
    healthy || ok=1
    if ((ok == 0)); then echo "status: healthy"; else echo "status: NOT healthy"; fi
    return "$ok"
}

cmd_env() {
    printf 'export SLURM_LOCAL_DIR=%q\n' "$DIR"
    printf 'export SLURM_LOCAL_JOBCOMP=%q\n' "$JOBCOMP"
    printf 'export SLURM_LOCAL_LOGDIR=%q\n' "$LOGDIR"
    printf 'export SLURM_LOCAL_NODE=%q\n' "$NODE"
    printf 'export SLURM_LOCAL_PARTITION=%q\n' "$PARTITION"
    printf 'export SLURM_LOCAL_CLUSTER=%q\n' "$CLUSTER"
}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
