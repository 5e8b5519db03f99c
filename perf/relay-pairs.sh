#!/usr/bin/env bash
# CPU per relayed packet of the bare forwarder and of cpmd's media loop, side by side, under the
# same `rtp-pairs` load (no signaling): the user-plane half of perf/compare.sh's call scenario.
#
#   perf/relay-pairs.sh [--streams 1000] [--duration 10] [--pps 50] [--runs 3]
#                       [--targets "bare-forwarder cpmd cpmd-epoll cpmd-unpaced"] [--bin-dir DIR]
#
# Targets, each run in turn (the order alternates every run, the machine being shared):
#   bare-forwarder     BIN/bare-forwarder (one thread, epoll, recvmmsg/sendmmsg, no parsing)
#   cpmd               BIN/examples/media_relay: one worker's media loop (cpm-actors
#                      MediaPlane), one rtcp-mux leg per port pair, its defaults (io_uring,
#                      connected fast path, 500 us pace)
#   cpmd-paceN         the same with --pace N (microseconds)
#   cpmd-unpaced       the same with --pace 0 (the loop wakes up for every datagram)
#   cpmd-unconnected   --connect false --pace 0 (every datagram filtered in user space: the
#                      media loop as it was before the connected fast path and the pace)
#   cpmd-epoll         the defaults but --io epoll (the media loop before its io_uring path)
# The relay is pinned to core RELAY_CORE [1], rtp-pairs to LOAD_CORE [0]. The relay's CPU is
# the sum over its threads of /proc/PID/task/*/schedstat (ns on a CPU) from just before the load
# to its end, divided by the packets it relayed (its own tx_packets count; the forwarder's
# includes one latch packet per port). Prints one line per target and run with the load average, then the medians
# of the runs without loss (a run where rtp-pairs fell behind, exit 1, is left out).
#
# Ports (env): RELAY_PORTS [42000-43999] (2 per stream). Needs the release builds:
#   cargo build --release -p cpm-bare-forwarder -p cpm-actors --example media_relay
set -euo pipefail

STREAMS=1000 DURATION=10 PPS=50 RUNS=3 TARGETS="bare-forwarder cpmd cpmd-epoll cpmd-unpaced" BIN="${BIN:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --streams) STREAMS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --bin-dir) BIN=$2; shift 2 ;;
    *) sed -n '2,18p' "$0" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
RELAY_PORTS="${RELAY_PORTS:-42000-43999}" RELAY_CORE="${RELAY_CORE:-1}" LOAD_CORE="${LOAD_CORE:-0}"
LO=${RELAY_PORTS%-*}
HI=$((LO + 2 * STREAMS - 1))
((HI <= ${RELAY_PORTS#*-})) || { echo "RELAY_PORTS too small for $STREAMS streams" >&2; exit 2; }
OUT="${OUT:-$(mktemp -d /tmp/cpm-pairs.XXXXXX)}"
mkdir -p "$OUT"
RELAY=""
trap '[[ -n "$RELAY" ]] && kill "$RELAY" 2>/dev/null || true' EXIT

cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

one() { # target run: up to 3 tries (a port of the range may be held by another process)
    local try
    for try in 1 2 3; do
        start_relay "$@" && { measure "$@"; return 0; }
        echo "run $2 $1: the relay did not start (try $try): $(grep -m1 -i 'error\|panicked' "$OUT/$1.$2.relay")" >&2
        sleep 2
    done
}

start_relay() {
    local t=$1 log="$OUT/$1.$2"
    case "$t" in
    bare-forwarder)
        taskset -c "$RELAY_CORE" "$BIN/bare-forwarder" --listen "127.0.0.1:$LO-$HI" >"$log.relay" 2>&1 & ;;
    cpmd)
        "$BIN/examples/media_relay" --listen "127.0.0.1:$LO-$HI" --pin "$RELAY_CORE" --idle 2 \
            >"$log.relay" 2>&1 & ;;
    cpmd-pace*) # cpmd-paceMICROS: the defaults with another pace
        "$BIN/examples/media_relay" --listen "127.0.0.1:$LO-$HI" --pin "$RELAY_CORE" --idle 2 \
            --pace "${t#cpmd-pace}" >"$log.relay" 2>&1 & ;;
    cpmd-unpaced)
        "$BIN/examples/media_relay" --listen "127.0.0.1:$LO-$HI" --pin "$RELAY_CORE" --idle 2 \
            --connect true --pace 0 >"$log.relay" 2>&1 & ;;
    cpmd-unconnected)
        "$BIN/examples/media_relay" --listen "127.0.0.1:$LO-$HI" --pin "$RELAY_CORE" --idle 2 \
            --connect false --pace 0 --io epoll >"$log.relay" 2>&1 & ;;
    cpmd-epoll)
        "$BIN/examples/media_relay" --listen "127.0.0.1:$LO-$HI" --pin "$RELAY_CORE" --idle 2 \
            --io epoll >"$log.relay" 2>&1 & ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    RELAY=$!
    # Bound (every port) once the last port of the range is in use.
    for _ in $(seq 100); do ss -Hlun "sport = :$HI" | grep -q . && break; sleep 0.1; done
    sleep 0.5
    kill -0 "$RELAY" 2>/dev/null || { wait "$RELAY" 2>/dev/null || true; RELAY=""; return 1; }
}

measure() {
    local t=$1 log="$OUT/$1.$2" load c0 c1 rc=0
    load=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_ns "$RELAY")
    timeout $((DURATION + 60)) taskset -c "$LOAD_CORE" "$BIN/rtp-pairs" \
        --target "127.0.0.1:$LO-$HI" --streams "$STREAMS" --duration "$DURATION" --pps "$PPS" \
        >"$log.load" 2>&1 || rc=$?
    c1=$(cpu_ns "$RELAY")
    # The forwarder prints its counters on SIGINT; media_relay once idle for 2 s.
    [[ $t == bare-forwarder ]] && kill -INT "$RELAY" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$RELAY" 2>/dev/null || break; sleep 0.1; done
    kill -INT "$RELAY" 2>/dev/null || true
    wait "$RELAY" 2>/dev/null || true
    RELAY=""
    awk -v t="$t" -v r="$2" -v c0="$c0" -v c1="$c1" -v load="$load" -v rc="$rc" '
        /^(rtp-pairs|bare-forwarder|media_relay):/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { n = v["tx_packets"] > 0 ? v["tx_packets"] : v["received"]
              printf "run %d %-17s us/pkt %5.2f  relayed %8d  received %8d  lost %d  owd p50/p99 us %5d/%6d  load %s%s\n",
              r, t, (c1 - c0) / 1000 / (n > 0 ? n : 1), n, v["received"], v["lost"],
              v["owd_p50_us"], v["owd_p99_us"], load, rc ? "  (rtp-pairs exit " rc ")" : "" }' \
        "$log.load" "$log.relay" | tee -a "$OUT/result.txt"
}

read -r -a order <<<"$TARGETS"
echo "$(date -u '+%F %H:%M') $STREAMS streams x $PPS pkt/s each way, ${DURATION}s, cpm $(git -C "$ROOT" rev-parse --short HEAD)" |
    tee "$OUT/result.txt"
for r in $(seq "$RUNS"); do
    for t in "${order[@]}"; do one "$t" "$r"; done
    # Alternate: the first target of this run goes last next run.
    order=("${order[@]:1}" "${order[0]}")
done
echo "medians:" | tee -a "$OUT/result.txt"
for t in $TARGETS; do
    awk -v t="$t" '$3 == t && !/exit/ { print $5 }' "$OUT/result.txt" | sort -n |
        awk -v t="$t" '{ a[NR] = $1 } END { if (NR) printf "  %-17s %.2f us/pkt (%d runs)\n", t, NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, NR }'
done | tee -a "$OUT/result.txt"
echo "files in $OUT"
