#!/usr/bin/env bash
# A single-node Slurm (with slurmdbd + MariaDB accounting) on localhost, for tests and CI,
# with Slurm's REST daemon (slurmrestd, JWT authentication) on 127.0.0.1.
#
#   scripts/local-slurm.sh start     install what is missing, configure, start; no-op when healthy
#   scripts/local-slurm.sh stop      stop every daemon this script starts
#   scripts/local-slurm.sh restart   stop the Slurm daemons and start again (after plugin changes)
#   scripts/local-slurm.sh status    exit 0 iff the cluster is healthy; prints one line
#
# start, stop and restart run as root, without systemd: the daemons are started directly.
#
# Environment:
#   LOCAL_SLURM_MAX_ARRAY_SIZE  MaxArraySize of the cluster (default 1001); a change restarts slurmctld
#   LOCAL_SLURM_CPUS            CPUs the node advertises (default: the machine's real count)
#   LOCAL_SLURM_CLUSTER         ClusterName (default maelstrom)
#   LOCAL_SLURM_USERS           more users (comma-separated) to associate with every account
#   LOCAL_SLURM_REST_PORT       port of slurmrestd on 127.0.0.1 (default 6820)
#
# status needs no root. Partitions: debug (default) and long. Accounts: maelstrom and other
# (root, the user behind sudo and LOCAL_SLURM_USERS belong to both;
# AccountingStorageEnforce=associations, so an unknown --account is rejected at submission).
#
# REST: slurmrestd serves openapi/v0.0.38 and openapi/dbv0.0.38 at http://127.0.0.1:PORT as the
# unprivileged user slurmrest (it refuses root and SlurmUser), with SLURM_JWT=daemon: every request
# carries a token from `scontrol token` (headers X-SLURM-USER-NAME, X-SLURM-USER-TOKEN). The HS256
# key that signs the tokens is $STATE_DIR/jwt_hs256.key, readable only by SlurmUser.
set -euo pipefail

CLUSTER="${LOCAL_SLURM_CLUSTER:-maelstrom}"
MAX_ARRAY_SIZE="${LOCAL_SLURM_MAX_ARRAY_SIZE:-1001}"
CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=maelstrom-local-slurm
ACCOUNTS=(maelstrom other)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server procps
    slurmrestd slurm-wlm-jwt-plugin curl)
REST_PORT="${LOCAL_SLURM_REST_PORT:-6820}"
REST_USER=slurmrest
REST_PLUGINS=(openapi/v0.0.38 openapi/dbv0.0.38)
JWT_KEY=$STATE_DIR/jwt_hs256.key

log() { printf 'local-slurm: %s\n' "$*" >&2; }
die() {
    printf 'local-slurm: error: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 must run as root (it installs packages and starts system daemons)"
}

# Users with an association to every account: root, the user behind sudo, LOCAL_SLURM_USERS.
slurm_users() {
    local users=(root)
    [[ -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]] && users+=("$SUDO_USER")
    # shellcheck disable=SC2206
    [[ -n "${LOCAL_SLURM_USERS:-}" ]] && users+=(${LOCAL_SLURM_USERS//,/ })
    printf '%s\n' "${users[@]}"
}

node_name() { hostname -s; }

# --- installation -----------------------------------------------------------------------------

install_missing() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep the packages' init scripts from starting daemons: this script starts them itself.
        local policy=/usr/sbin/policy-rc.d own_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            own_policy=1
        fi
        local rc=0
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null || rc=$?
        ((own_policy)) && rm -f "$policy"
        ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit $rc)"
    fi
}

# --- configuration ----------------------------------------------------------------------------

render_slurm_conf() {
    local node cpus mem hw
    node=$(node_name)
    hw=$(slurmd -C | head -n1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    local overrides=""
    if [[ -n "${LOCAL_SLURM_CPUS:-}" && "${LOCAL_SLURM_CPUS}" != "$cpus" ]]; then
        cpus=$LOCAL_SLURM_CPUS
        overrides="SlurmdParameters=config_overrides"
    fi
    cat <<EOF
# Written by scripts/local-slurm.sh: a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=50000
MinJobAge=86400
JobRequeue=1
KillWait=5
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
$overrides
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
# Written by scripts/local-slurm.sh.
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
DbdHost=localhost
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# The HS256 key slurmctld and slurmdbd sign and check tokens with (created once; 0600, SlurmUser).
ensure_jwt_key() {
    mkdir -p "$STATE_DIR"
    if [[ ! -s "$JWT_KEY" ]]; then
        (umask 077 && dd if=/dev/urandom of="$JWT_KEY.tmp" bs=32 count=1 status=none)
        mv "$JWT_KEY.tmp" "$JWT_KEY"
    fi
    chown root:root "$JWT_KEY"
    chmod 600 "$JWT_KEY"
}

# Writes $2 (content) to $1 when it differs; returns 0 if the file changed.
write_if_changed() {
    local path=$1 content=$2 mode=$3
    if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return 1
    fi
    printf '%s\n' "$content" >"$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
    return 0
}

# --- daemons ----------------------------------------------------------------------------------

# Pidfiles are not reliable here (slurmdbd rewrites its own even when it then fails to bind its
# port), so daemons are found by their executable name. Zombies do not count: where PID 1 does
# not reap (a container whose PID 1 is `sleep`), a dead daemon stays in the process table.
daemon_pids() { # names...: one pid a line; exit 0 even when none runs
    local name
    for name in "$@"; do
        pgrep -x -r D,R,S,T "$name" || true
    done
}
running() { [[ -n "$(daemon_pids "$1")" ]]; }

wait_for() { # seconds description command...
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within ${secs}s (logs: $LOG_DIR, /var/log/mysql)"
        sleep 0.2
    done
}

munge_ok() { munge -n | unmunge >/dev/null; }

start_munge() {
    munge_ok 2>/dev/null && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged munge_ok
}

mysql_ok() { mysqladmin --protocol=socket ping; }

start_mariadb() {
    mysql_ok >/dev/null 2>&1 && return 0
    mkdir -p /run/mysqld /var/log/mysql
    chown mysql:mysql /run/mysqld /var/log/mysql
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    setsid nohup mysqld_safe --skip-syslog --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1 &
    wait_for 60 MariaDB mysql_ok
    mysql --protocol=socket -u root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

dbd_ok() { sacctmgr -n -P show cluster format=cluster; }

start_slurmdbd() {
    if ! running slurmdbd; then
        /usr/sbin/slurmdbd
    fi
    wait_for 30 slurmdbd dbd_ok
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    local acct
    for acct in "${ACCOUNTS[@]}"; do
        if ! sacctmgr -n -P show account "$acct" format=account | grep -qx "$acct"; then
            sacctmgr -i add account "$acct" Cluster="$CLUSTER" Description="$acct" Organization=local >/dev/null
        fi
        local user
        for user in $(slurm_users); do
            if ! sacctmgr -n -P show assoc where user="$user" account="$acct" cluster="$CLUSTER" format=account |
                grep -qx "$acct"; then
                sacctmgr -i add user "$user" Account="$acct" Cluster="$CLUSTER" >/dev/null
            fi
        done
    done
}

ctld_ok() { scontrol ping | grep -q 'is UP'; }

node_ok() {
    local state
    state=$(sinfo -h -N -n "$(node_name)" -o '%t' | head -n1)
    [[ "$state" =~ ^(idle|mix|mixed|alloc|allocated|comp|completing)$ ]]
}

start_slurm() {
    mkdir -p "$RUN_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
    if ! running slurmctld; then
        /usr/sbin/slurmctld
    fi
    wait_for 30 slurmctld ctld_ok
    if ! running slurmd; then
        /usr/sbin/slurmd -N "$(node_name)"
    fi
    wait_for 30 "node $(node_name)" node_ok
}

stop_daemons() { # names...: SIGTERM to all at once, then wait (SIGKILL after 10 s)
    local pids i
    pids=$(daemon_pids "$@")
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pids=$(daemon_pids "$@")
        [[ -n "$pids" ]] || return 0
        sleep 0.1
    done
    log "$* did not stop in 10 s; sending SIGKILL"
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
}

# slurmrestd answers a request made with a token: the controller is reachable through it.
rest_ok() {
    local token
    token=$(scontrol token lifespan=60 2>/dev/null | sed -n 's/^SLURM_JWT=//p')
    [[ -n "$token" ]] || return 1
    curl -fsS --max-time 5 -H "X-SLURM-USER-NAME: $(id -un)" -H "X-SLURM-USER-TOKEN: $token" \
        "http://127.0.0.1:$REST_PORT/slurm/v0.0.38/ping" | grep -q '"ping": *"UP"'
}

start_slurmrestd() {
    rest_ok >/dev/null 2>&1 && return 0
    stop_daemons slurmrestd # one on another port, or one that no longer answers
    id -u "$REST_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$REST_USER"
    local available plugins=() plugin
    available=$(runuser -u "$REST_USER" -- slurmrestd -s list 2>&1 || true)
    for plugin in "${REST_PLUGINS[@]}"; do
        grep -qx "slurmrestd: $plugin" <<<"$available" && plugins+=("$plugin")
    done
    ((${#plugins[@]})) || die "slurmrestd offers none of ${REST_PLUGINS[*]} ($available)"
    # slurmrestd binds as root and then runs as $REST_USER; SLURM_JWT=daemon makes it pass each
    # client's token on to slurmctld and slurmdbd instead of using munge.
    local joined
    joined=$(IFS=, && echo "${plugins[*]}")
    SLURM_JWT=daemon setsid nohup /usr/sbin/slurmrestd -u "$REST_USER" -a rest_auth/jwt -s "$joined" \
        "127.0.0.1:$REST_PORT" </dev/null >>"$LOG_DIR/slurmrestd.log" 2>&1 &
    wait_for 30 "slurmrestd on 127.0.0.1:$REST_PORT" rest_ok
}

stop_slurm() {
    stop_daemons slurmrestd slurmd slurmctld slurmdbd
}

stop_all() {
    stop_slurm
    if mysql_ok >/dev/null 2>&1; then
        mysqladmin --protocol=socket -u root shutdown || true
    fi
    stop_daemons munged
}

# --- health -----------------------------------------------------------------------------------

healthy() {
    munge_ok &&
        running slurmdbd &&
        running slurmctld &&
        running slurmd &&
        ctld_ok && node_ok &&
        sacct -n -X -S now >/dev/null &&
        rest_ok &&
        [[ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" == "$(render_slurm_conf)" ]]
}

summary() {
    local parts
    parts=$(sinfo -h -o '%P' | tr '\n' ' ' | sed 's/ $//')
    printf 'local-slurm: cluster %s up: node %s (%s CPUs, %s MB), partitions %s, MaxArraySize=%s, ' \
        "$CLUSTER" "$(node_name)" "$(sinfo -h -N -o '%c' | head -n1)" "$(sinfo -h -N -o '%m' | head -n1)" \
        "$parts" "$(scontrol show config | sed -n 's/^MaxArraySize *= *//p')"
    printf 'accounts %s; REST http://127.0.0.1:%s (slurmrestd, JWT); stop with: scripts/local-slurm.sh stop\n' \
        "${ACCOUNTS[*]}" "$REST_PORT"
}

# --- commands ---------------------------------------------------------------------------------

cmd_start() {
    if healthy >/dev/null 2>&1; then
        summary
        return 0
    fi
    install_missing
    ensure_jwt_key
    mkdir -p "$CONF_DIR"
    local changed=0
    write_if_changed "$CONF_DIR/slurm.conf" "$(render_slurm_conf)" 644 && changed=1
    write_if_changed "$CONF_DIR/slurmdbd.conf" "$(render_slurmdbd_conf)" 600 && changed=1
    if ((changed)); then
        # Plugin and limit changes need a daemon restart, not `scontrol reconfigure`.
        stop_slurm
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    sacct -n -X -S now >/dev/null || die "sacct does not work (log: $LOG_DIR/slurmdbd.log)"
    start_slurmrestd
    summary
}

cmd_status() {
    if healthy >/dev/null 2>&1; then
        summary
    else
        echo "local-slurm: not running or unhealthy; start with: scripts/local-slurm.sh start"
        return 1
    fi
}

case "${1:-}" in
start)
    need_root start
    cmd_start
    ;;
stop)
    need_root stop
    stop_all
    echo "local-slurm: stopped; start again with: scripts/local-slurm.sh start"
    ;;
restart)
    need_root restart
    stop_slurm
    cmd_start
    ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac
