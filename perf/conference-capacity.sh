#!/usr/bin/env bash
# How many conference participants one core mixes in real time (issue 6): for each total in
# TOTALS, a release cpmd with one worker (its media loop thread is the one that mixes) and a
# `cpm-loadgen conference` of CONF conferences sharing that total, 3 talkers each (G.711 µ-law,
# 20 ms), held DURATION s. Per step it prints: participants, the mixing thread's CPU (from
# /proc/PID/task/*/stat, thread `cpm-media-0`, over the held time), CPU per participant, the
# tick lateness p99 bucket from cpmd's `cpm_conference_tick_lateness_seconds` (start minus
# deadline of each 20 ms tick), and the loadgen's loss and tone checks.
#
#   perf/conference-capacity.sh [--totals "100 200 400 800"] [--conferences 10]
#                               [--duration 20] [--bin-dir DIR]
#
# Ports (env): CPMD_PORT [15060] CPMD_HTTP [15080] MSRP [15090] BFCP [15091]
# CPMD_MEDIA_PORTS [16000-19999] RTP of the participants LG_RTP [10000-14999].
set -euo pipefail
TOTALS="100 200 400 800" CONF=10 DURATION=20 BIN=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --totals) TOTALS=$2; shift 2 ;;
    --conferences) CONF=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --bin-dir) BIN=$2; shift 2 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
CPMD_PORT="${CPMD_PORT:-15060}" CPMD_HTTP="${CPMD_HTTP:-15080}"
MSRP="${MSRP:-15090}" BFCP="${BFCP:-15091}"
CPMD_MEDIA_PORTS="${CPMD_MEDIA_PORTS:-16000-19999}" LG_RTP="${LG_RTP:-10000-14999}"
OUT="${OUT:-$(mktemp -d /tmp/cpm-conf.XXXXXX)}"
HZ=$(getconf CLK_TCK)

# CPU ticks (user + system) of the thread named $2 of process $1.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        if [[ "$(cat "$t/comm" 2>/dev/null)" == "$2" ]]; then
            awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "$t/stat"
            return
        fi
    done
    echo 0
}

# The smallest bucket bound holding 99% of the ticks.
p99_bucket() {
    curl -s "http://127.0.0.1:$CPMD_HTTP/metrics" | awk '
        /^cpm_conference_tick_lateness_seconds_bucket/ {
            match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n++; bound[n] = le; cum[n] = $NF }
        END { total = cum[n]; for (i = 1; i <= n; i++) if (cum[i] >= 0.99 * total) { print bound[i] " s (" total " ticks)"; exit } }'
}

printf "%-6s %-10s %-12s %-14s %-26s %s\n" total "mix CPU" "µs/part/s" "ns/part-frame" "tick lateness p99 <=" "loadgen"
for N in $TOTALS; do
    P=$(( N / CONF ))
    "$BIN/cpmd" --sip-listen "127.0.0.1:$CPMD_PORT" --http-listen "127.0.0.1:$CPMD_HTTP" \
        --msrp-listen "127.0.0.1:$MSRP" --bfcp-listen "127.0.0.1:$BFCP" --workers 1 \
        --media-ports "$CPMD_MEDIA_PORTS" --data-dir "$OUT/data-$N" --log warn \
        >"$OUT/cpmd-$N.log" 2>&1 &
    CPMD=$!
    trap 'kill $CPMD 2>/dev/null || true' EXIT
    sleep 1
    "$BIN/cpm-loadgen" conference --target "127.0.0.1:$CPMD_PORT" --conferences "$CONF" \
        --participants "$P" --talkers 3 --duration "$DURATION" --register --rate 200 \
        --rtp-ports "$LG_RTP" --json "$OUT/conf-$N.json" --quiet >"$OUT/conf-$N.out" 2>&1 &
    LG=$!
    # Joining takes N/200 s; measure the middle of the held time.
    sleep $(( N / 200 + 3 ))
    t0=$(thread_ticks "$CPMD" cpm-media-0)
    sleep $(( DURATION - 6 ))
    t1=$(thread_ticks "$CPMD" cpm-media-0)
    lateness=$(p99_bucket)
    wait "$LG" || true
    kill "$CPMD" 2>/dev/null || true
    wait "$CPMD" 2>/dev/null || true
    secs=$(( DURATION - 6 ))
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$secs" 'BEGIN { printf "%.1f%%", 100 * (b - a) / hz / s }')
    per=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$secs" -v n="$N" 'BEGIN { printf "%.1f", 1e6 * (b - a) / hz / s / n }')
    frame=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$secs" -v n="$N" 'BEGIN { printf "%.0f", 1e9 * (b - a) / hz / s / n / 50 }')
    lg=$(grep -E 'rtp:|tones' "$OUT/conf-$N.out" | tr '\n' ' ' | cut -c1-160)
    printf "%-6s %-10s %-12s %-14s %-26s %s\n" "$N" "$cpu" "$per" "$frame" "$lateness" "$lg"
done
echo "files in $OUT"
