#!/usr/bin/env bash
# Starts and stops the Kamailio MSRP relay reference (msrp module, RFC 4976) on loopback (see
# ../README.md, "MSRP").
#
#   ctl.sh start        start Kamailio in the background; returns once it listens
#   ctl.sh stop         stop it (SIGTERM, then SIGKILL after 5 s)
#   ctl.sh status       exit 0 when it is running
#   ctl.sh pids         print the pids of every Kamailio process (workers included)
#
# Settings (environment, defaults in brackets):
#   REF_DIR [${TMPDIR:-/tmp}/cpm-ref-kamailio-msrp]  pid file, log, runtime files
#   MSRP_PORT [2855]         Kamailio's TCP port on 127.0.0.1 (MSRP only; SIP is refused)
#   KAMAILIO_WORKERS [2]     Kamailio TCP worker processes
#   KAMAILIO_SHM [256]       Kamailio's shared memory in MB (-m): each MSRP connection takes
#                            some until it is closed and reclaimed
#   LOG_LEVEL [0]            Kamailio debug level (-3..3, 0 = warnings)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REF_DIR="${REF_DIR:-${TMPDIR:-/tmp}/cpm-ref-kamailio-msrp}"
MSRP_PORT="${MSRP_PORT:-2855}"
KAMAILIO_WORKERS="${KAMAILIO_WORKERS:-2}"
KAMAILIO_SHM="${KAMAILIO_SHM:-256}"
LOG_LEVEL="${LOG_LEVEL:-0}"

KAM_PID="$REF_DIR/kamailio.pid"

die() {
    echo "ctl.sh: $*" >&2
    exit 1
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

tcp_listening() { ss -Hltn "sport = :$1" | grep -q .; }

# Pids of every descendant of $1.
descendants() {
    local parent=$1 child
    for child in $(ps -o pid= --ppid "$parent" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

stop_one() {
    local pidfile=$1 pid i
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
start)
    command -v kamailio >/dev/null || die "kamailio not found (apt-get install kamailio)"
    alive "$KAM_PID" && die "kamailio already running (pid $(cat "$KAM_PID"))"
    tcp_listening "$MSRP_PORT" && die "TCP port $MSRP_PORT is in use"
    mkdir -p "$REF_DIR/run"
    # -DD: the main process stays in the foreground (its workers are its children); -E: log
    # to stderr; -l: the only socket.
    kamailio -f "$HERE/kamailio.cfg" -DD -E -Y "$REF_DIR/run" -m "$KAMAILIO_SHM" -M 16 \
        -l "tcp:127.0.0.1:$MSRP_PORT" \
        -A "MSRP_USE_PATH=\"127.0.0.1:$MSRP_PORT\"" \
        -A "WORKERS=$KAMAILIO_WORKERS" -A "LOG_LEVEL=$LOG_LEVEL" \
        >"$REF_DIR/kamailio.log" 2>&1 &
    echo $! >"$KAM_PID"
    for i in $(seq 100); do
        tcp_listening "$MSRP_PORT" && alive "$KAM_PID" && break
        sleep 0.1
    done
    if ! tcp_listening "$MSRP_PORT" || ! alive "$KAM_PID"; then
        tail -20 "$REF_DIR/kamailio.log" >&2
        stop_one "$KAM_PID"
        die "kamailio did not listen on 127.0.0.1:$MSRP_PORT"
    fi
    echo "kamailio msrp relay on tcp:127.0.0.1:$MSRP_PORT (pid $(cat "$KAM_PID")); log in $REF_DIR"
    ;;
stop) stop_one "$KAM_PID" ;;
status) alive "$KAM_PID" ;;
pids)
    alive "$KAM_PID" && { cat "$KAM_PID"; descendants "$(cat "$KAM_PID")"; }
    exit 0
    ;;
*)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
    exit 2
    ;;
esac
