#!/usr/bin/env bash
# Memory per idle cpmd session with two legs (issue 4: under 16 KiB), measured from outside.
#
#   perf/session-memory.sh [--calls 400] [--rate 50] [--batches 2] [--massif] [--bin-dir DIR]
#
# Starts cpmd (under valgrind's massif with --massif), a `cpm-loadgen uas` registered there
# (100 users, RTP echo), and `cpm-loadgen call` batches of CALLS calls at RATE/s, held until the
# end, with one 160-byte RTP packet a second each way (both legs latched). Before the first
# batch, and after each batch once every session is up and no SIP transaction is left (RFC
# 3261 Timer J/K and RFC 6026 keep them 32 s), it reads cpmd's VmRSS and, with --massif, the
# heap (useful + malloc overhead, `vgdb --pid=PID snapshot`). Prints one line per batch: the
# growth per session over that batch. The second batch's RSS figure is the truer one: the
# first leaves the memory of its expired transactions with malloc, which the second reuses.
#
# Ports (env): CPMD_PORT [45075] CPMD_HTTP [45080] UAS_PORT [45100] (100 users: +0..99)
# CPMD_MEDIA_PORTS [40000-44999], the RTP of the caller CALL_RTP [46000-47999] and of the uas
# UAS_RTP [48000-49999] (one even port per call each: 1,000 calls in all). Needs curl; valgrind for --massif. Files stay in OUT (a new
# /tmp/cpm-mem.* unless set).
set -euo pipefail

CALLS=400 RATE=50 BATCHES=2 MASSIF=0 BIN="${BIN:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --massif) MASSIF=1; shift ;;
    --bin-dir) BIN=$2; shift 2 ;;
    *) sed -n '2,18p' "$0" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
CPMD_PORT="${CPMD_PORT:-45075}" CPMD_HTTP="${CPMD_HTTP:-45080}" UAS_PORT="${UAS_PORT:-45100}"
CPMD_MEDIA_PORTS="${CPMD_MEDIA_PORTS:-40000-44999}"
CALL_RTP="${CALL_RTP:-46000-47999}" UAS_RTP="${UAS_RTP:-48000-49999}"
OUT="${OUT:-$(mktemp -d /tmp/cpm-mem.XXXXXX)}"
mkdir -p "$OUT"
PIDS=()
# SIGKILL: a loadgen told to stop would first end its calls (BYEs to a cpmd going away).
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

metrics() { curl -sf --max-time 5 "http://127.0.0.1:$CPMD_HTTP/metrics"; }
gauge() { metrics | awk -v k="$1" '$1 == k { print $2 }'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$CPMD/status"; }
heap_bytes() { # useful + extra heap bytes of a massif snapshot taken now
    [[ $MASSIF == 1 ]] || { echo 0; return; }
    local f="$OUT/snap.$1"
    vgdb --pid="$CPMD" snapshot "$f" >/dev/null 2>&1
    awk -F= '/^mem_heap_B/ { h = $2 } /^mem_heap_extra_B/ { x = $2 } END { print h + x }' "$f"
}

run=()
[[ $MASSIF == 1 ]] && run=(valgrind --tool=massif --vgdb=yes --massif-out-file="$OUT/massif.out")
"${run[@]}" "$BIN/cpmd" --sip-listen "127.0.0.1:$CPMD_PORT" --http-listen "127.0.0.1:$CPMD_HTTP" \
    --data-dir "$OUT/cpmd-data" --media-ports "$CPMD_MEDIA_PORTS" ${CPMD_ARGS:-} \
    >"$OUT/cpmd.log" 2>&1 &
CPMD=$!
PIDS+=("$CPMD")
for _ in $(seq 600); do metrics >/dev/null 2>&1 && break; sleep 0.1; done
metrics >/dev/null || { tail "$OUT/cpmd.log" >&2; exit 1; }
"$BIN/cpm-loadgen" uas --listen "127.0.0.1:$UAS_PORT" --register-to "127.0.0.1:$CPMD_PORT" \
    --users 100 --rtp echo --rtp-ports "$UAS_RTP" --quiet >"$OUT/uas.out" 2>"$OUT/uas.log" &
PIDS+=($!)
for _ in $(seq 600); do grep -q 'uas ready' "$OUT/uas.out" && break; sleep 0.1; done
grep -q 'uas ready' "$OUT/uas.out" || { tail "$OUT/uas.log" >&2; exit 1; }

# Sessions up and transactions gone (the uas's REGISTERs' too), at most 120 s after $1 s.
settle() {
    local want=$1 deadline=$((SECONDS + $2 + 120))
    while ((SECONDS < deadline)); do
        [[ "$(gauge cpm_sessions)" == "$want" && "$(gauge cpm_sip_transactions_in_flight)" == 0 ]] &&
            return 0
        sleep 1
    done
    echo "not settled: sessions $(gauge cpm_sessions), transactions $(gauge cpm_sip_transactions_in_flight)" >&2
    return 1
}
settle 0 0
echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): cpmd $(git -C "$ROOT" rev-parse --short HEAD), $CALLS calls per batch at $RATE/s" |
    tee "$OUT/result.txt"
rss0=$(rss_kib) heap0=$(heap_bytes 0)
secs=$(((CALLS + RATE - 1) / RATE))
for b in $(seq "$BATCHES"); do
    "$BIN/cpm-loadgen" call --target "127.0.0.1:$CPMD_PORT" --users 100 --rate "$RATE" \
        --count "$CALLS" --hold 100000 --ptime 1000 --payload-size 160 --rtp-ports "$CALL_RTP" --quiet \
        >"$OUT/call.$b.log" 2>&1 &
    PIDS+=($!)
    settle $((b * CALLS)) $((secs + 35))
    rss=$(rss_kib) heap=$(heap_bytes "$b")
    awk -v b="$b" -v n="$CALLS" -v r0="$rss0" -v r="$rss" -v h0="$heap0" -v h="$heap" 'BEGIN {
        printf "batch %d: %d sessions more, VmRSS %d -> %d KiB: %.1f KiB per session", b, n, r0, r, (r - r0) / n
        if (h > 0) printf "; heap %d -> %d B: %.1f KiB per session", h0, h, (h - h0) / n / 1024
        printf "\n" }' | tee -a "$OUT/result.txt"
    rss0=$rss heap0=$heap
done
[[ $MASSIF == 1 ]] && vgdb --pid="$CPMD" detailed_snapshot "$OUT/snap.detailed" >/dev/null 2>&1
echo "files in $OUT"
