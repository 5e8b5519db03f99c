#!/usr/bin/env bash
# Starts and stops the Kamailio + rtpengine reference setup on loopback (see ../README.md).
#
#   ctl.sh start        start both in the background; returns once both answer
#   ctl.sh run          start both, Kamailio in the foreground; Ctrl-C stops both
#   ctl.sh stop         stop both (SIGTERM, then SIGKILL after 5 s)
#   ctl.sh status       exit 0 when both are running
#   ctl.sh pids         print the pids of every server process (Kamailio's workers included)
#   ctl.sh stats        print rtpengine's totals (ng `statistics`), one "key value" a line
#
# Settings (environment, defaults in brackets):
#   REF_DIR [${TMPDIR:-/tmp}/cpm-ref-kamailio-rtpengine]  pid files, logs, runtime files
#   SIP_PORT [5070]          Kamailio's UDP port on 127.0.0.1
#   NG_PORT [22222]          rtpengine's ng control port on 127.0.0.1
#   RTP_MIN [30000] RTP_MAX [39999]   rtpengine's media port range
#   KAMAILIO_WORKERS [4]     Kamailio UDP worker processes
#   RTPENGINE_THREADS [2]    rtpengine worker threads
#   LOG_LEVEL [0]            Kamailio debug level (-3..3, 0 = warnings); rtpengine gets LOG_LEVEL+4
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REF_DIR="${REF_DIR:-${TMPDIR:-/tmp}/cpm-ref-kamailio-rtpengine}"
SIP_PORT="${SIP_PORT:-5070}"
NG_PORT="${NG_PORT:-22222}"
RTP_MIN="${RTP_MIN:-30000}"
RTP_MAX="${RTP_MAX:-39999}"
KAMAILIO_WORKERS="${KAMAILIO_WORKERS:-4}"
RTPENGINE_THREADS="${RTPENGINE_THREADS:-2}"
LOG_LEVEL="${LOG_LEVEL:-0}"

KAM_PID="$REF_DIR/kamailio.pid"
RTPE_PID="$REF_DIR/rtpengine.pid"

die() {
    echo "ctl.sh: $*" >&2
    exit 1
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# One ng request (bencode over UDP, "cookie dict") and its answer on stdout; empty on timeout.
ng() {
    exec 3<>"/dev/udp/127.0.0.1/$NG_PORT" || return 1
    printf 'cpm%s %s' "$$" "$1" >&3
    # One read of the whole datagram (bash's `read` would take one byte of it and drop the rest).
    timeout 1 dd bs=65536 count=1 status=none <&3 2>/dev/null || true
    exec 3>&-
}

udp_bound() { ss -Hlun "sport = :$1" | grep -q .; }

# Waits until the UDP port is bound on 127.0.0.1, for up to 10 s.
wait_udp() {
    local port=$1 i
    for i in $(seq 100); do
        if udp_bound "$port"; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_rtpengine() {
    # Userspace only (--table=-1: no kernel forwarding), loopback only, no config file.
    rtpengine --config-file=none --foreground --log-stderr \
        --table=-1 --interface=127.0.0.1 \
        --listen-ng="127.0.0.1:$NG_PORT" \
        --port-min="$RTP_MIN" --port-max="$RTP_MAX" \
        --num-threads="$RTPENGINE_THREADS" --media-num-threads=0 \
        --delete-delay=0 --log-level=$((LOG_LEVEL + 4)) \
        >"$REF_DIR/rtpengine.log" 2>&1 &
    echo $! >"$RTPE_PID"
    local i
    for i in $(seq 100); do
        [[ "$(ng 'd7:command4:pinge')" == *pong* ]] && return 0
        alive "$RTPE_PID" || break
        sleep 0.1
    done
    tail -20 "$REF_DIR/rtpengine.log" >&2
    stop_one "$RTPE_PID"
    die "rtpengine did not answer on 127.0.0.1:$NG_PORT"
}

# -DD: the main process stays in the foreground (its workers are its children); -E: log to
# stderr; -l: the only SIP socket.
KAMAILIO_ARGS=(-f "$HERE/kamailio.cfg" -DD -E -Y "$REF_DIR/run" -m 256 -M 16
    -l "udp:127.0.0.1:$SIP_PORT" -A "RTPENGINE_SOCK=\"udp:127.0.0.1:$NG_PORT\""
    -A "WORKERS=$KAMAILIO_WORKERS" -A "LOG_LEVEL=$LOG_LEVEL")

start_kamailio() {
    kamailio "${KAMAILIO_ARGS[@]}" >"$REF_DIR/kamailio.log" 2>&1 &
    echo $! >"$KAM_PID"
    if ! wait_udp "$SIP_PORT" || ! alive "$KAM_PID"; then
        tail -20 "$REF_DIR/kamailio.log" >&2
        stop_one "$KAM_PID"
        stop_one "$RTPE_PID"
        die "kamailio did not bind 127.0.0.1:$SIP_PORT"
    fi
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
            # Kamailio's workers as well as its main process.
            kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# Pids of every descendant of $1.
descendants() {
    local parent=$1 child
    for child in $(ps -o pid= --ppid "$parent" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

cmd_pids() {
    alive "$KAM_PID" && { cat "$KAM_PID"; descendants "$(cat "$KAM_PID")"; }
    alive "$RTPE_PID" && cat "$RTPE_PID"
    return 0
}

# rtpengine's ng `statistics` answer, flattened to "key value" lines (integers only).
cmd_stats() {
    ng 'd7:command10:statisticse' | grep -oE '[0-9]+:[a-z_]+i-?[0-9]+e' |
        sed -E 's/^[0-9]+:([a-z_]+)i(-?[0-9]+)e$/\1 \2/'
}

# Checks before starting anything: the programs exist, nothing runs, the ports are free.
preflight() {
    local c p
    for c in kamailio rtpengine ss; do
        command -v "$c" >/dev/null || die "$c not found (apt-get install kamailio rtpengine-daemon iproute2)"
    done
    alive "$KAM_PID" && die "kamailio already running (pid $(cat "$KAM_PID"))"
    alive "$RTPE_PID" && die "rtpengine already running (pid $(cat "$RTPE_PID"))"
    # UDP sockets may share a port (SO_REUSEADDR), so a busy port must be caught here.
    for p in "$SIP_PORT" "$NG_PORT"; do
        udp_bound "$p" && die "UDP port $p is in use"
    done
    mkdir -p "$REF_DIR/run"
}

case "${1:-}" in
start)
    preflight
    start_rtpengine
    start_kamailio
    echo "kamailio on udp:127.0.0.1:$SIP_PORT (pid $(cat "$KAM_PID")), rtpengine ng on" \
        "127.0.0.1:$NG_PORT, RTP $RTP_MIN-$RTP_MAX (pid $(cat "$RTPE_PID")); logs in $REF_DIR"
    ;;
run)
    preflight
    start_rtpengine
    trap 'stop_one "$KAM_PID"; stop_one "$RTPE_PID"' EXIT
    trap 'exit 130' INT TERM
    echo "rtpengine: pid $(cat "$RTPE_PID"), log $REF_DIR/rtpengine.log; kamailio logs below"
    kamailio "${KAMAILIO_ARGS[@]}" &
    echo $! >"$KAM_PID"
    wait "$!"
    ;;
stop)
    stop_one "$KAM_PID"
    stop_one "$RTPE_PID"
    ;;
status)
    alive "$KAM_PID" && alive "$RTPE_PID"
    ;;
pids) cmd_pids ;;
stats) cmd_stats ;;
*)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
    exit 2
    ;;
esac
