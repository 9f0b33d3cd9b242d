#!/usr/bin/env bash
# A one-node Slurm cluster on this computer, for the tests marked `slurm` and for trying the cluster
# preset before a real cluster: one partition (`debug`) with every CPU of the machine, munge for
# authentication. Run as root, with Debian's packages installed:
#   apt-get install slurm-wlm munge             # the cluster
#   apt-get install slurmdbd mariadb-server     # optional: job accounting, so that sacct answers
#   scripts/slurm/local-cluster.sh up       # start the daemons; wait until the node is idle
#   scripts/slurm/local-cluster.sh status   # sinfo
#   scripts/slurm/local-cluster.sh down     # cancel every job and stop the daemons
# It writes /etc/slurm/slurm.conf (and slurmdbd.conf) only when there is none or when it wrote the one
# there, never over a real cluster's, and keeps its state and logs under /var/spool/slurm-local and
# /var/log/slurm-local. Without accounting, sacct (which submitit asks for its jobs' states) prints
# "Slurm accounting storage is disabled" at each poll, and submitit follows its jobs by their files.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# Written by brain-mri's scripts/slurm/local-cluster.sh (a one-node cluster)"
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local
PARTITION=debug
DB_PASSWORD=slurm-local  # of a database user that only this machine's MariaDB knows

fail() { echo "slurm-local: $*" >&2; exit 1; }

need_root_and_packages() {
    [ "$(id -u)" = 0 ] || fail "run it as root: the daemons run as root and munge."
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" > /dev/null || fail "$tool is missing: apt-get install slurm-wlm munge"
    done
}

with_accounting() { command -v slurmdbd > /dev/null && command -v mariadbd > /dev/null; }

ours() {  # a configuration file this script may write
    [ ! -f "$1" ] || head -n 1 "$1" | grep -qF "$MARK" || fail "$1 is another cluster's: this script leaves it."
}

write_config() {
    ours "$CONF"
    local accounting=none node
    with_accounting && accounting=slurmdbd
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=..., as slurmd sees the machine
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/d" "$LOGS"
    cat > "$CONF" << EOF
$MARK
ClusterName=local
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# A job that asks for more than a node or the partition has is refused when submitted, not queued for ever.
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/$accounting
JobAcctGatherType=jobacct_gather/none
# A cancelled or preempted job has 10 s between SIGTERM and SIGKILL to save its state, and a requeued
# job may start again after 10 s (the credential lifetime; 120 s by default).
KillWait=10
AuthInfo=cred_expire=10
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if munge --no-input > /dev/null 2>&1; then return; fi  # it answers
    if [ ! -f /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    for _ in $(seq 20); do munge --no-input > /dev/null 2>&1 && return; sleep 0.5; done
    fail "munged did not start: see /var/log/munge/munged.log"
}

# Job accounting: slurmdbd, storing into a MariaDB database on this machine.
start_accounting() {
    with_accounting || return 0
    if ! mariadb -e "select 1" > /dev/null 2>&1; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        mariadbd --user=mysql > "$LOGS/mariadb.log" 2>&1 &
        for _ in $(seq 60); do mariadb -e "select 1" > /dev/null 2>&1 && break; sleep 0.5; done
    fi
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" \
        || fail "MariaDB did not start: see $LOGS/mariadb.log"
    ours "$DBD_CONF"
    cat > "$DBD_CONF" << EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
    chmod 600 "$DBD_CONF"
    pgrep -x slurmdbd > /dev/null || slurmdbd
    for _ in $(seq 60); do sacctmgr --noheader list cluster > /dev/null 2>&1 && break; sleep 0.5; done
    sacctmgr --noheader list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local > /dev/null
}

wait_for_idle() {
    for _ in $(seq 60); do
        state=$(sinfo --noheader --partition="$PARTITION" --format=%T 2> /dev/null || true)
        case "$state" in
            idle* | mixed* | allocated*) echo "slurm-local: partition $PARTITION is up ($state)."; return ;;
        esac
        sleep 1
    done
    fail "the node did not come up in 60 s; see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

up() {
    need_root_and_packages
    write_config
    start_munge
    start_accounting
    pgrep -x slurmctld > /dev/null || slurmctld
    pgrep -x slurmd > /dev/null || slurmd
    wait_for_idle
}

down() {
    need_root_and_packages
    squeue --noheader --format=%i 2> /dev/null | xargs -r scancel 2> /dev/null || true  # every job left
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x slurmdbd || true
    for _ in $(seq 20); do
        pgrep -x slurmd > /dev/null || pgrep -x slurmctld > /dev/null || pgrep -x slurmdbd > /dev/null || break
        sleep 0.5
    done
    pkill -x munged || true
    pkill -x mariadbd || true
    # the controller's state stays, so that job IDs go on counting after the next `up`
    echo "slurm-local: stopped."
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) sinfo ;;
    *) fail "usage: $0 up|down|status" ;;
esac
