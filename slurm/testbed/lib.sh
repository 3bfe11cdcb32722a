# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
# Shared paths and helpers of slurm/testbed/{up,down,status}. Sourced, never run.
#
# Everything the testbed owns lives in a few fixed places (documented in docs/testbed.md):
#   /var/lib/hpcml-testbed     state: apt side-lists, fake GPUs, sshd keys, mode, testbed.json
#   /var/log/hpcml-testbed     logs of every daemon and of each `up`
#   /var/cache/hpcml-testbed   caches (tiny base SIFs built by the test fixtures)
#   /opt/hpcml-testbed-glibc   Debian sid's glibc, private to apptainer (Debian 12 only)
#   /etc/slurm, /etc/apptainer system config of the programs themselves

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATES=$(dirname "$TESTBED_DIR")
STATE=/var/lib/hpcml-testbed
LOGS=/var/log/hpcml-testbed
SLURM_LOGS=$LOGS/slurm
CACHE=/var/cache/hpcml-testbed
GLIBC_DIR=/opt/hpcml-testbed-glibc
GPU_DIR=$STATE/gpus
SSHD_DIR=$STATE/sshd
SSHD_PORT=2222
SSHD_PIDFILE=/run/hpcml-testbed-sshd.pid
MODE_FILE=$STATE/mode
INFO_JSON=$STATE/testbed.json
ETC_SLURM=/etc/slurm
COMPONENTS=(apptainer slurm sshd)
# The extra nodes of the `multi` partition (slurm/slurm.conf.in): one more slurmd
# each, started with `-N NODE` on this same machine.
EXTRA_NODES=(hpcml-n1 hpcml-n2)
MULTI_PARTITION=multi
EXTRA_NODE_MEM=4096

# Flags that work for apptainer here: root lacks CAP_SYS_RESOURCE, so the setuid/privileged
# path fails; user namespaces (exec) and --fakeroot (build) work. hpcml takes these from
# its config; the fixtures read them from testbed.json.
APPTAINER_EXEC_FLAGS=(--userns)
APPTAINER_BUILD_FLAGS=(--fakeroot)

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }

# Only root on Debian can provision; say so plainly anywhere else.
require_root_debian() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
    [[ -r /etc/debian_version ]] || die "needs Debian (12 or later); /etc/debian_version not found"
    # shellcheck disable=SC1091
    local id; id=$(. /etc/os-release && echo "${ID:-}")
    [[ $id == debian ]] || die "needs Debian (12 or later); this is '$id'"
}

# pid_alive PIDFILE NAME: the pid in PIDFILE runs a program whose name starts with NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid comm
    # The daemon may remove its pid file between any two of these reads.
    pid=$(tr -dc '0-9' 2>/dev/null <"$pidfile") || return 1
    [[ -n $pid ]] || return 1
    comm=$(cat /proc/"$pid"/comm 2>/dev/null) || return 1
    [[ $comm == "$name"* ]]
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "timed out after ${secs}s waiting for $what"; return 1; }
        sleep 0.2
    done
}

# wait_gone PIDFILE NAME SECONDS: wait for a daemon to exit (scontrol shutdown returns early).
wait_gone() {
    local pidfile=$1 name=$2 secs=$3
    local deadline=$((SECONDS + secs))
    while pid_alive "$pidfile" "$name"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mariadb_ok() { mariadb-admin --no-defaults --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; }
slurmdbd_ok() { pid_alive /run/slurm/slurmdbd.pid slurmdbd; }
slurmctld_ok() { pid_alive /run/slurm/slurmctld.pid slurmctld && scontrol ping 2>/dev/null | grep -q UP; }
# /run/slurm/slurmd.pid links to the main node's /run/slurm/slurmd-<host>.pid (`up` makes it).
slurmd_ok() { pid_alive /run/slurm/slurmd.pid slurmd; }
extra_slurmd_ok() { pid_alive "/run/slurm/slurmd-$1.pid" slurmd; }
# state_ok STATE: a node in this state accepts work (not DOWN/DRAIN/NOT_RESPONDING/UNKNOWN).
state_ok() { [[ -n $1 && $1 != *down* && $1 != *drain* && $1 != *'*'* && $1 != unknown* ]]; }
# node_named_ok NODE: that node accepts work.
node_named_ok() { state_ok "$(sinfo -a -h -N -n "$1" -o '%T' 2>/dev/null | head -n1)"; }
# The main node (named after this machine) accepts work.
node_ok() { node_named_ok "$(hostname -s)"; }
extra_node_ok() { extra_slurmd_ok "$1" && node_named_ok "$1"; }
sshd_ok() { pid_alive "$SSHD_PIDFILE" sshd; }
apptainer_ok() { command -v apptainer >/dev/null 2>&1 && apptainer --version >/dev/null 2>&1; }

current_mode() { [[ -r $MODE_FILE ]] && cat "$MODE_FILE" || echo none; }

# json_str STRING: a JSON string literal (for the few values we write).
json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
