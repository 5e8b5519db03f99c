#!/usr/bin/env bash
# perf/compare.sh SCENARIO [options]: the same cpm-loadgen workload against each target, one table.
#
# SCENARIO: call | options | register | message | msrp
# Targets (--targets "A B", in that order; default: every target that serves the scenario):
#   kamailio-rtpengine  perf/reference/kamailio-rtpengine (every scenario)
#   bare-forwarder      perf/reference/bare-forwarder (call only): the call scenario's RTP without
#                       signaling, from rtp-pairs: rate x hold streams, 50 packets/s each way,
#                       for count / rate seconds (as many packets as the calls relay)
#   cpmd                BIN/cpmd (every scenario; call: cpmd relays the calls as a B2BUA and
#                       anchors their RTP on --media-ports CPMD_MEDIA_PORTS)
#   direct              no server (call, message): cpm-loadgen straight to the uas, the floor of
#                       the load's own delays and CPU at the same load
#   kamailio-msrp       perf/reference/kamailio-msrp (msrp only): Kamailio's msrp module as an
#                       RFC 4976 relay; the SIP goes straight to the uas, both ends AUTH at the
#                       relay and put it in their paths (cpm-loadgen msrp --relay, uas --msrp-relay)
# msrp runs two loads per target, each COUNT sessions at RATE: "file" (one --file BYTES message
# per session in --chunk BYTES chunks) and "chat" (--messages M of --size BYTES each); it prints
# MB/s and chunks/s (sender: first chunk to last 200), the receiver's delivery p50/p99, server
# CPU per MB, and the ratios to the first target (cpmd: the whole process, SIP B2BUA included,
# and its cpm-msrp-K relay threads apart, summed).
# options pings the server itself (cpm-loadgen --to '': OPTIONS sip:target, RFC 3261 §11);
# message goes to users of a cpm-loadgen uas registered at the target.
# Options:
#   --rate N [call 20, else 500]  --count N [call 200, else 5000]  --hold SECS [5]
#   --users N [100]  --targets "..."
#   --file BYTES [1048576] --chunk BYTES [8192] --messages M [200] --size BYTES [100]   msrp
#   --ptime MS [20]    call: one RTP packet every MS each way (cpm-loadgen --ptime, rtp-pairs --pps)
#   --load-args "..."  more arguments of the load client (cpm-loadgen SCENARIO; split on spaces)
#   --pairs-args "..." more arguments of rtp-pairs, the bare forwarder's load (--load-args
#                      are cpm-loadgen's and do not reach it)
#   --uas-args "..."   more arguments of the answering cpm-loadgen uas
#   --taskset CPUS     run the load (uas and client, or rtp-pairs) under taskset -c CPUS
#   --out DIR          where each run's files go [a new temp dir, kept]
#   --bin-dir DIR      take the binaries from DIR and build nothing [target/release, built first]
#   --no-build         use the binaries already in the binaries directory
# Environment: BIN (as --bin-dir), LOADGEN (the cpm-loadgen binary [BIN/cpm-loadgen]),
#   SIP_PORT [5070] NG_PORT [22222] RTP_MIN [33000] RTP_MAX [39999] (Kamailio and rtpengine),
#   CPMD_MEDIA_PORTS [6000-15999] (cpmd's relay ports), CPMD_ARGS (more cpmd arguments),
#   UAS_PORT [16000] CPMD_PORT [5075] CPMD_HTTP [18075] FWD_LO [24000] FWD_MAX [30999],
#   MSRP_PORT [2855] (Kamailio's MSRP relay), CPMD_MSRP [2856] (cpmd's --msrp-listen).
#
# call: besides the whole run, the media CPU per packet in the steady window, while all
# rate x hold calls are up (from hold + 2 s after the load starts to count / rate - 1 s; the
# bare forwarder's streams all run from the start: 2 s to its end - 1 s), read from the
# target's own relayed-packet counter at both ends (cpmd's /metrics, rtpengine's statistics,
# the bare forwarder's report every 0.1 s); none when the window is under 5 s.
#
# For each target: start it; start `cpm-loadgen uas --rtp echo` registered there as user0000..
# (not for register); read the CPU time (/proc/PID/task/*/schedstat) of every server
# process and their memory (Pss, VmRSS); run `cpm-loadgen SCENARIO`, sampling the memory; read
# the CPU time again; stop everything (cpmd: after checking in /metrics that no session, leg
# or port is left). Then one table and each target's ratios to the first one. Exit 0 when
# every target gave a result and every load run met its thresholds (cpm-loadgen: all sessions
# succeeded; rtp-pairs: no packet lost) and cpmd released everything, 1 otherwise (reasons on
# stderr), 2 on a usage error.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REF="$ROOT/perf/reference"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2; }
SCENARIO="${1:-}"
[[ -n "$SCENARIO" && "$SCENARIO" != -* ]] || usage
shift
RATE="" COUNT="" HOLD=5 USERS=100 OUT="" BUILD=1 TARGETS="" BIN="${BIN:-}" PTIME=20 LOAD_ARGS="" PAIRS_ARGS="" UAS_ARGS=""
TASKSET="" MSRP_FILE=1048576 MSRP_CHUNK=8192 MSRP_MESSAGES=200 MSRP_SIZE=100
while (($#)); do
    case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --ptime) PTIME=$2; shift 2 ;;
    --load-args) LOAD_ARGS=$2; shift 2 ;;
    --pairs-args) PAIRS_ARGS=$2; shift 2 ;;
    --uas-args) UAS_ARGS=$2; shift 2 ;;
    --taskset) TASKSET=$2; shift 2 ;;
    --file) MSRP_FILE=$2; shift 2 ;;
    --chunk) MSRP_CHUNK=$2; shift 2 ;;
    --messages) MSRP_MESSAGES=$2; shift 2 ;;
    --size) MSRP_SIZE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bin-dir) BIN=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in
call) : "${TARGETS:=kamailio-rtpengine bare-forwarder cpmd}" "${RATE:=20}" "${COUNT:=200}" ;;
options) : "${TARGETS:=kamailio-rtpengine cpmd}" "${RATE:=500}" "${COUNT:=5000}" ;;
register | message) : "${TARGETS:=kamailio-rtpengine cpmd}" "${RATE:=500}" "${COUNT:=5000}" ;;
msrp) : "${TARGETS:=kamailio-msrp cpmd}" "${RATE:=50}" "${COUNT:=50}" ;;
*) echo "compare.sh: unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
if [[ -n "$BIN" ]]; then
    BUILD=0 BIN="$(cd "$BIN" && pwd)"
else
    BIN="$ROOT/target/release"
fi
LOADGEN="${LOADGEN:-$BIN/cpm-loadgen}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/cpm-compare.XXXXXX")}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# Ports, all on 127.0.0.1, apart from perf/reference/smoke.sh's (5170, 22322, 31000-31999) and
# below the ephemeral range (32768-60999) where a whole range is bound at once.
SIP_PORT="${SIP_PORT:-5070}" NG_PORT="${NG_PORT:-22222}"
RTP_MIN="${RTP_MIN:-33000}" RTP_MAX="${RTP_MAX:-39999}"
UAS_PORT="${UAS_PORT:-16000}" CPMD_PORT="${CPMD_PORT:-5075}" CPMD_HTTP="${CPMD_HTTP:-18075}"
FWD_LO="${FWD_LO:-24000}" FWD_MAX="${FWD_MAX:-30999}"
CPMD_MEDIA_PORTS="${CPMD_MEDIA_PORTS:-6000-15999}"
MSRP_PORT="${MSRP_PORT:-2855}" CPMD_MSRP="${CPMD_MSRP:-2856}"
# The load processes, pinned with --taskset.
PIN=()
[[ -n "$TASKSET" ]] && PIN=(taskset -c "$TASKSET")

log() { echo "== $*" >&2; }
FAILURES=()
fail() {
    FAILURES+=("$*")
    echo "compare.sh: $*" >&2
}

# awk arithmetic on the options (they may be fractions).
calc() { awk "BEGIN { $1 }"; }
STREAMS=$(calc "s = int($RATE * $HOLD + 0.5); print (s < 1 ? 1 : s)")
FWD_HI=$((FWD_LO + 2 * STREAMS - 1))
if [[ "$SCENARIO" == call && " $TARGETS " == *" bare-forwarder "* ]] && ((FWD_HI > FWD_MAX)); then
    echo "compare.sh: $STREAMS streams need ports $FWD_LO-$FWD_HI, beyond $FWD_MAX" >&2
    exit 2
fi

# ---------------------------------------------------------------- binaries
if ((BUILD)); then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p cpm-bare-forwarder -p cpm-loadgen -p cpm-actors)
fi
need=("$LOADGEN")
[[ " $TARGETS " == *" bare-forwarder "* ]] && need+=("$BIN/bare-forwarder" "$BIN/rtp-pairs")
[[ " $TARGETS " == *" cpmd "* ]] && need+=("$BIN/cpmd")
for b in "${need[@]}"; do
    [[ -x "$b" ]] || { echo "compare.sh: $b not found (build it, or see --bin-dir)" >&2; exit 2; }
done

# ---------------------------------------------------------------- CPU accounting
# CPU time of the given pids in nanoseconds: the sum over their threads of the time on a CPU
# (first field of /proc/PID/task/TID/schedstat; clock ticks of /proc/PID/stat, utime + stime,
# are 10 ms apart, too coarse for runs of a few seconds over eight Kamailio processes). A thread
# that ends during the run takes its time with it: the servers' threads live as long as they.
# An argument PID@NAME counts only PID's threads whose name (/proc/PID/task/TID/comm) starts
# with NAME, PID@!NAME only the others (cpmd's media loops are the threads cpm-media-<k>).
cpu_ns() {
    local spec p name t comm
    for spec in "$@"; do
        p=${spec%%@*} name=""
        [[ "$spec" == *@* ]] && name=${spec#*@}
        for t in "/proc/$p/task/"*; do
            if [[ -n "$name" ]]; then
                comm=$(cat "$t/comm" 2>/dev/null) || continue
                if [[ "$name" == !* ]]; then
                    [[ "$comm" == "${name#!}"* ]] && continue
                else
                    [[ "$comm" == "$name"* ]] || continue
                fi
            fi
            cat "$t/schedstat" 2>/dev/null || true
        done
    done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}
# Memory of the server processes (the pids of SIG_PIDS and MEDIA_PIDS) in KiB: "PSS RSS", the
# sums of Pss (/proc/PID/smaps_rollup: shared pages split between the processes mapping them,
# so Kamailio's shared memory counts once) and of VmRSS (/proc/PID/status).
server_pids() { for s in $SIG_PIDS $MEDIA_PIDS; do echo "${s%%@*}"; done | sort -u; }
mem_kib() {
    local p
    for p in $(server_pids); do
        awk '$1 == "Pss:" { print "pss", $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true
        awk '$1 == "VmRSS:" { print "rss", $2 }' "/proc/$p/status" 2>/dev/null || true
    done | awk '{ s[$1] += $2 } END { printf "%d %d\n", s["pss"], s["rss"] }'
}
# The memory every 0.5 s into $1, "PSS RSS" per line (cpmd: "PSS RSS SESSIONS TRANSACTIONS",
# its cpm_sessions and cpm_sip_transactions_in_flight), until killed.
mem_sampler() {
    while :; do
        if [[ "$TARGET" == cpmd ]]; then
            echo "$(mem_kib) $(cpmd_metrics | awk '$1 == "cpm_sessions" { s = $2 }
                $1 == "cpm_sip_transactions_in_flight" { t = $2 } END { print s, t }')"
        else
            mem_kib
        fi
        sleep 0.5
    done >"$1"
}
# The server CPU counted from here (after the answering users are registered) to cpu_end (the
# pid lists are split on purpose: SC2086); the memory read at both ends, sampled in between.
MEM_PID=""
# shellcheck disable=SC2086
cpu_begin() {
    read -r rcvbuf0 sndbuf0 < <(udp_errors)
    read -r pss0 rss0 < <(mem_kib)
    mem_sampler "$OUT/$TARGET.mem" &
    MEM_PID=$!
    sig0=$(cpu_ns $SIG_PIDS) media0=$(cpu_ns $MEDIA_PIDS)
}
# shellcheck disable=SC2086
cpu_end() {
    sig1=$(cpu_ns $SIG_PIDS) media1=$(cpu_ns $MEDIA_PIDS)
    kill "$MEM_PID" 2>/dev/null || true
    wait "$MEM_PID" 2>/dev/null || true
    MEM_PID=""
    read -r pss1 rss1 < <(mem_kib)
    read -r rcvbuf1 sndbuf1 < <(udp_errors)
}
# The kernel's UDP drops, machine-wide (/proc/net/snmp): "RcvbufErrors SndbufErrors".
udp_errors() {
    awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
         $1 == "Udp:" { print $c["RcvbufErrors"], $c["SndbufErrors"] }' /proc/net/snmp
}
secs() { calc "printf \"%.3f\", $1 / 1e9"; }

# The packets $TARGET has relayed so far, from its own counter (empty if it has none).
relayed_now() {
    case "$TARGET" in
    kamailio-rtpengine) ctl stats | awk '$1 == "relayedpackets" { print $2 }' ;;
    cpmd) cpmd_metrics | awk '$1 == "cpm_media_packets_relayed_total" { print $2 }' ;;
    bare-forwarder) grep -o 'tx_packets=[0-9]*' "$OUT/bare-forwarder.out" | tail -1 | cut -d= -f2 ;;
    esac
}
# window_sampler FILE FROM TO, as a call load starts: in the background, at FROM and at TO
# seconds from now, reads $TARGET's media CPU and relayed-packet counter, then writes
# "window_at FROM TO", "window_s S", "window_media_s S" and "window_relayed N" (last) into
# FILE. Nothing for a window under 5 s or a target without a counter; window_end stops it
# (a load that ended before TO leaves no window).
WINDOW_PID=""
window_sampler() {
    local file=$1 from=$2 to=$3 t0 t1 c0 c1 r0 r1
    [[ "$SCENARIO" == call ]] && calc "exit !($to - $from >= 5)" || return 0
    (
        sleep "$from"
        r0=$(relayed_now) c0=$(cpu_ns $MEDIA_PIDS) t0=$(date +%s.%N)
        sleep "$(calc "print $to - $from")"
        r1=$(relayed_now) c1=$(cpu_ns $MEDIA_PIDS) t1=$(date +%s.%N)
        [[ -n "$r0" && -n "$r1" ]] || exit 0
        echo "window_at $from $to"
        echo "window_s $(calc "printf \"%.3f\", $t1 - $t0")"
        echo "window_media_s $(secs $((c1 - c0)))"
        echo "window_relayed $((r1 - r0))"
    ) >"$file" &
    WINDOW_PID=$!
}
window_end() {
    if [[ -n "$WINDOW_PID" ]]; then
        kill "$WINDOW_PID" 2>/dev/null || true
        wait "$WINDOW_PID" 2>/dev/null || true
        WINDOW_PID=""
    fi
}

# ---------------------------------------------------------------- targets
# start_X sets SIG_PIDS (signaling processes), MEDIA_PIDS (media processes) and TARGET_ADDR
# (where the load goes) and returns non-zero if X did not start; stop_X sets RTP_RELAYED
# (packets the server says it relayed) and stops X.
SIG_PIDS="" MEDIA_PIDS="" TARGET_ADDR="" RTP_RELAYED=""

ctl() {
    REF_DIR="$OUT/kamailio-rtpengine" SIP_PORT=$SIP_PORT NG_PORT=$NG_PORT RTP_MIN=$RTP_MIN \
        RTP_MAX=$RTP_MAX "$REF/kamailio-rtpengine/ctl.sh" "$@"
}
start_kamailio-rtpengine() {
    ctl start >&2 || return 1
    local rtpe
    rtpe=$(cat "$OUT/kamailio-rtpengine/rtpengine.pid")
    SIG_PIDS=$(ctl pids | grep -vx "$rtpe" | tr '\n' ' ')
    MEDIA_PIDS=$rtpe
    TARGET_ADDR=127.0.0.1:$SIP_PORT
}
stop_kamailio-rtpengine() {
    RTP_RELAYED=$(relayed_now)
    ctl stop
}

FWD_PID=""
start_bare-forwarder() {
    "$BIN/bare-forwarder" --listen "127.0.0.1:$FWD_LO-$FWD_HI" --report 0.1 >"$OUT/bare-forwarder.out" \
        2>"$OUT/bare-forwarder.log" &
    FWD_PID=$!
    for _ in $(seq 50); do
        ss -Hlun "sport = :$FWD_HI" | grep -q . && break
        kill -0 "$FWD_PID" 2>/dev/null || { cat "$OUT/bare-forwarder.log" >&2; return 1; }
        sleep 0.1
    done
    SIG_PIDS="" MEDIA_PIDS=$FWD_PID
    TARGET_ADDR="127.0.0.1:$FWD_LO-$FWD_HI"
}
stop_bare-forwarder() {
    [[ -n "$FWD_PID" ]] || return 0
    kill -INT "$FWD_PID" 2>/dev/null || true
    wait "$FWD_PID" 2>/dev/null || true
    FWD_PID=""
    RTP_RELAYED=$(relayed_now) # the last report, written as it stopped
}

# No server: the load goes straight to the uas (user0000's socket answers every user).
start_direct() { SIG_PIDS="" MEDIA_PIDS="" TARGET_ADDR=127.0.0.1:$UAS_PORT; }
stop_direct() { :; }

CPMD_PID=""
# cpmd's /metrics.
cpmd_metrics() { curl -sf --max-time 2 "http://127.0.0.1:$CPMD_HTTP/metrics"; }
start_cpmd() {
    # shellcheck disable=SC2086 # CPMD_ARGS is split on purpose
    "$BIN/cpmd" --sip-listen "127.0.0.1:$CPMD_PORT" --http-listen "127.0.0.1:$CPMD_HTTP" \
        --msrp-listen "127.0.0.1:$CPMD_MSRP" --data-dir "$OUT/cpmd-data" --media-ports "$CPMD_MEDIA_PORTS" ${CPMD_ARGS:-} \
        >"$OUT/cpmd.log" 2>&1 &
    CPMD_PID=$!
    for _ in $(seq 100); do
        ss -Hlun "sport = :$CPMD_PORT" | grep -q . && cpmd_metrics >/dev/null && break
        kill -0 "$CPMD_PID" 2>/dev/null || { tail "$OUT/cpmd.log" >&2; return 1; }
        sleep 0.1
    done
    # One process: its media loop threads (cpm-media-<k>) are "media", the rest "sig".
    if ! grep -qs '^cpm-media-' "/proc/$CPMD_PID/task/"*/comm; then
        fail "cpmd: no cpm-media-* thread: its media CPU cannot be told apart"
    fi
    SIG_PIDS="$CPMD_PID@!cpm-media-" MEDIA_PIDS="$CPMD_PID@cpm-media-"
    TARGET_ADDR=127.0.0.1:$CPMD_PORT
}
# After a run cpmd must hold no session, leg nor port (the legs close a moment after the BYE):
# wait up to 5 s for the gauges to read 0, keep the last /metrics in cpmd.metrics.
CPMD_GAUGES="cpm_sessions cpm_media_legs cpm_media_pool_ports_in_use cpm_media_ports_in_use"
stop_cpmd() {
    [[ -n "$CPMD_PID" ]] || return 0
    local left="" g v
    for _ in $(seq 25); do
        cpmd_metrics >"$OUT/cpmd.metrics" || true
        left=""
        for g in $CPMD_GAUGES; do
            v=$(awk -v k="$g" '$1 == k { print $2 }' "$OUT/cpmd.metrics")
            [[ "$v" == 0 ]] || left+=" $g=${v:-?}"
        done
        [[ -z "$left" ]] && break
        sleep 0.2
    done
    RTP_RELAYED=$(awk '$1 == "cpm_media_packets_relayed_total" { print $2 }' "$OUT/cpmd.metrics")
    grep -E '^cpm_media_dropped_total.* [1-9]' "$OUT/cpmd.metrics" | sed 's/^/cpmd: /' >&2 || true
    [[ -z "$left" ]] || fail "cpmd: still held 5 s after the run:$left ($OUT/cpmd.metrics)"
    kill -TERM "$CPMD_PID" 2>/dev/null || true
    wait "$CPMD_PID" 2>/dev/null || true
    CPMD_PID=""
}

# ---------------------------------------------------------------- load
# load_X RES runs the load, calls cpu_begin/cpu_end around it, writes "key value" lines to RES
# (see json_keys) and returns the load source's exit status.

# cpm-loadgen's (or rtp-pairs') JSON report $1, and the answering uas's $2 (may be absent) →
# "key value" lines: attempted succeeded failed rate lat p50_us p99_us rtp_sent rtp_received
# loss_pct owd_p50_us owd_p99_us owd_kind rtt_p50_us rtt_p99_us through gen_cpu_s ("-" when
# missing).
json_keys() {
    python3 - "$SCENARIO" "$1" "${2:-}" <<'EOF'
import json, os, sys
scenario, client, uas = sys.argv[1], sys.argv[2], sys.argv[3]
def load(p):
    try:
        return json.load(open(p)) if p and os.path.getsize(p) else {}
    except (OSError, ValueError):
        return {}
d, u = load(client), load(uas)
q = d.get("quantities") or {}
rtp = d.get("rtp") or {}
out = {k: d.get(k) for k in ("attempted", "succeeded", "failed")}
out["rate"] = d.get("rate_achieved")
# The scenario's latency: call setup (INVITE → 200), else the request's transaction time
# (first send → final response); message_delivery exists only with `message --receiver`.
name = {"call": "call_setup", "options": "request_options", "register": "registration",
        "message": "request_message"}[scenario]
lat = q.get(name) or {}
out["lat"] = name if lat else None
out["p50_us"], out["p99_us"] = lat.get("p50_us"), lat.get("p99_us")
out["rtp_sent"], out["rtp_received"] = rtp.get("sent"), rtp.get("received")
out["loss_pct"] = rtp.get("loss_pct")
# What never came back, from the counts: the loss above counts the gaps in sequence numbers,
# not the end of a stream that stopped arriving.
if rtp.get("sent"):
    out["miss_pct"] = round(100.0 * (rtp["sent"] - rtp.get("received", 0)) / rtp["sent"], 4)
# The RTP delay. rtp-pairs: one way through the relay. cpm-loadgen: the echoing uas reads the
# caller's send stamp on arrival, one way (caller -> relay -> uas, same clock); the caller reads
# its own stamp on the echoed packet's return, a round trip through the relay twice and the uas.
owd = q.get("rtp_owd") or {}
uas_owd = (u.get("quantities") or {}).get("rtp_owd") or {}
if d.get("scenario") == "rtp-pairs":
    out["owd_kind"] = "1-way"
elif uas_owd:
    out["owd_kind"] = "1-way"
    out["rtt_p50_us"], out["rtt_p99_us"] = owd.get("p50_us"), owd.get("p99_us")
    owd = uas_owd
elif owd:
    out["owd_kind"] = "rtt"
out["owd_p50_us"], out["owd_p99_us"] = owd.get("p50_us"), owd.get("p99_us")
# The packets that crossed the relay, as the load source counts them: rtp-pairs' each crossed
# once; cpm-loadgen's went to the echoing uas and came back, crossing twice (the uas counts
# nothing in echo mode: a packet lost on the way out shows as one not received).
if rtp and d.get("scenario") == "rtp-pairs":
    out["through"] = rtp.get("received")
elif rtp:
    out["through"] = rtp.get("sent", 0) + rtp.get("received", 0)
cpu = [x.get("loadgen_cpu") for x in (d, u) if x.get("loadgen_cpu")]
if cpu:
    out["gen_cpu_s"] = round(sum(c.get("user_s", 0) + c.get("system_s", 0) for c in cpu), 2)
for k, v in out.items():
    print(k, "-" if v is None else v)
EOF
}

load_loadgen() {
    local res=$1 json="$OUT/$TARGET.json" uas="" uas_json="" rc=0
    if [[ "$SCENARIO" != register && "$SCENARIO" != options ]]; then
        # The answering side: users user0000.. on ports UAS_PORT+i, registered at the target;
        # the client's requests go to sip:user%04d@target.
        uas_json="$OUT/$TARGET.uas.json"
        local reg=(--register-to "$TARGET_ADDR")
        [[ "$TARGET" == direct ]] && reg=()
        # shellcheck disable=SC2206 # split on purpose
        reg+=($UAS_ARGS)
        "${PIN[@]}" "$LOADGEN" uas --listen "127.0.0.1:$UAS_PORT" "${reg[@]}" \
            --users "$USERS" --rtp echo --quiet --json "$uas_json" \
            >"$OUT/$TARGET.uas.out" 2>"$OUT/$TARGET.uas.log" &
        uas=$!
        for _ in $(seq $((100 + USERS / 10))); do
            grep -q 'uas ready' "$OUT/$TARGET.uas.out" && break
            kill -0 "$uas" 2>/dev/null || break
            sleep 0.1
        done
        if ! grep -q 'uas ready' "$OUT/$TARGET.uas.out"; then
            kill -INT "$uas" 2>/dev/null || true
            wait "$uas" 2>/dev/null || true
            fail "$TARGET: the answering uas did not get ready ($OUT/$TARGET.uas.log)"
            tail -5 "$OUT/$TARGET.uas.log" >&2
            : >"$res"
            return 1
        fi
    fi
    local extra=()
    [[ "$SCENARIO" == call ]] && extra=(--hold "$HOLD" --ptime "$PTIME")
    [[ "$SCENARIO" == options ]] && extra=(--to '')
    # shellcheck disable=SC2206 # split on purpose
    extra+=($LOAD_ARGS)
    cpu_begin
    window_sampler "$OUT/$TARGET.window" "$(calc "print $HOLD + 2")" "$(calc "print $COUNT / $RATE - 1")"
    timeout "$(calc "print int($COUNT / $RATE + $HOLD + 120)")" \
        "${PIN[@]}" "$LOADGEN" "$SCENARIO" --target "$TARGET_ADDR" --users "$USERS" \
        --rate "$RATE" --count "$COUNT" "${extra[@]}" --quiet --json "$json" \
        >"$OUT/$TARGET.load.log" 2>&1 || rc=$?
    cpu_end
    window_end
    if [[ -n "$uas" ]]; then
        kill -INT "$uas" 2>/dev/null || true # it unregisters its users, then reports
        wait "$uas" 2>/dev/null || true
    fi
    json_keys "$json" "$uas_json" >"$res"
    cat "$OUT/$TARGET.window" >>"$res" 2>/dev/null || true
    return "$rc"
}

# The call scenario's RTP for the bare forwarder: rate x hold streams (each both ways, 50
# packets/s) for count / rate seconds: the packets of count calls held hold seconds.
load_rtp_pairs() {
    local res=$1 rc=0 duration
    duration=$(calc "print $COUNT / $RATE")
    # shellcheck disable=SC2206 # split on purpose
    local extra=($PAIRS_ARGS)
    cpu_begin
    window_sampler "$OUT/$TARGET.window" 2 "$(calc "print $duration - 1")"
    # rtp-pairs does not report its CPU time: python's getrusage of its child does.
    python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("gen_cpu_s %.2f\n" % (r.ru_utime + r.ru_stime))
sys.exit(rc)' "$OUT/$TARGET.gen" timeout "$(calc "print int($duration + 60)")" \
        "${PIN[@]}" "$BIN/rtp-pairs" --target "$TARGET_ADDR" --streams "$STREAMS" \
        --duration "$duration" --pps "$(calc "print int(1000 / $PTIME + 0.5)")" "${extra[@]}" \
        --json "$OUT/$TARGET.json" >"$OUT/$TARGET.load.log" 2>&1 || rc=$?
    cpu_end
    window_end
    # Streams are not calls: no call counts, rate nor setup time.
    {
        json_keys "$OUT/$TARGET.json" |
            sed -E 's/^(attempted|succeeded|failed|rate|lat|p50_us|p99_us) .*/\1 -/'
        cat "$OUT/$TARGET.gen"
        cat "$OUT/$TARGET.window" 2>/dev/null || true
    } >"$res"
    return "$rc"
}

# ---------------------------------------------------------------- msrp
kctl() { REF_DIR="$OUT/kamailio-msrp" MSRP_PORT=$MSRP_PORT "$REF/kamailio-msrp/ctl.sh" "$@"; }
start_kamailio-msrp() {
    kctl start >&2 || return 1
    SIG_PIDS="" MEDIA_PIDS=$(kctl pids | tr '\n' ' ')
    TARGET_ADDR=127.0.0.1:$UAS_PORT
}
stop_kamailio-msrp() { kctl stop; }

# One msrp load ($2: file | chat) against $TARGET, "key value" lines into $1: the sender's and
# the receiver's figures (JSON), the server's CPU (all, and cpmd's cpm-msrp-K threads).
load_msrp() {
    local res=$1 kind=$2 rc=0 uas json="$OUT/$TARGET.$2.json" uas_json="$OUT/$TARGET.$2.uas.json"
    local reg=(--register-to "$TARGET_ADDR") relay=()
    if [[ "$TARGET" == kamailio-msrp ]]; then
        reg=(--msrp-relay "127.0.0.1:$MSRP_PORT") relay=(--relay "127.0.0.1:$MSRP_PORT")
    fi
    "${PIN[@]}" "$LOADGEN" uas --listen "127.0.0.1:$UAS_PORT" "${reg[@]}" --users "$USERS" \
        --quiet --json "$uas_json" >"$OUT/$TARGET.$kind.uas.out" 2>"$OUT/$TARGET.$kind.uas.log" &
    uas=$!
    for _ in $(seq 100); do
        grep -q 'uas ready' "$OUT/$TARGET.$kind.uas.out" && break
        kill -0 "$uas" 2>/dev/null || break
        sleep 0.1
    done
    local what=(--file "$MSRP_FILE" --chunk "$MSRP_CHUNK")
    [[ "$kind" == chat ]] && what=(--messages "$MSRP_MESSAGES" --size "$MSRP_SIZE")
    local all0 msrp0 all1 msrp1
    # shellcheck disable=SC2086 # split on purpose
    all0=$(cpu_ns $MEDIA_PIDS) msrp0=$(cpu_ns ${MSRP_THREAD:-})
    # shellcheck disable=SC2206 # split on purpose
    local extra=($LOAD_ARGS)
    timeout "$(calc "print int($COUNT / $RATE + 120)")" "${PIN[@]}" "$LOADGEN" msrp \
        --target "$TARGET_ADDR" "${relay[@]}" --users "$USERS" --rate "$RATE" --count "$COUNT" \
        "${what[@]}" "${extra[@]}" --drain 60 --quiet --json "$json" \
        >"$OUT/$TARGET.$kind.load.log" 2>&1 || rc=$?
    # shellcheck disable=SC2086 # split on purpose
    all1=$(cpu_ns $MEDIA_PIDS) msrp1=$(cpu_ns ${MSRP_THREAD:-})
    kill -INT "$uas" 2>/dev/null || true
    wait "$uas" 2>/dev/null || true
    python3 - "$json" "$uas_json" "$(secs $((all1 - all0)))" "$(secs $((msrp1 - msrp0)))" \
        >"$res" <<'EOF'
import json, sys
def load(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return {}
d, u = load(sys.argv[1]), load(sys.argv[2])
c, uc = d.get("counters") or {}, u.get("counters") or {}
q = (u.get("quantities") or {}).get("msrp_delivery") or {}
secs = c.get("msrp_window_us", 0) / 1e6
mb = c.get("msrp_bytes_ok", 0) / 1e6
print("sessions", d.get("succeeded", 0), d.get("attempted", 0))
print("mb", mb)
print("mbps", mb / secs if secs else 0)
print("chunks_ps", c.get("msrp_chunks_ok", 0) / secs if secs else 0)
print("msgs_ps", c.get("msrp_messages_ok", 0) / secs if secs else 0)
print("received", uc.get("msrp_messages_received", 0), c.get("msrp_messages_ok", 0))
print("bad", uc.get("msrp_messages_duplicate", 0), uc.get("msrp_messages_corrupted", 0))
print("deliv_ms", q.get("p50_us", 0) / 1000, q.get("p99_us", 0) / 1000)
print("cpu_s", sys.argv[3], sys.argv[4])
EOF
    return "$rc"
}

run_msrp() {
    local ran=() kind
    for TARGET in $TARGETS; do
        case "$TARGET" in
        kamailio-msrp | cpmd) ;;
        *) fail "$TARGET does not serve msrp"; continue ;;
        esac
        log "$TARGET: msrp, rate $RATE, count $COUNT, users $USERS"
        rm -rf "${OUT:?}/$TARGET" "$OUT/$TARGET".*
        "start_$TARGET" || { fail "$TARGET did not start"; continue; }
        MSRP_THREAD=""
        [[ "$TARGET" == cpmd ]] && MEDIA_PIDS=$CPMD_PID MSRP_THREAD="$CPMD_PID@cpm-msrp"
        for kind in file chat; do
            load_msrp "$OUT/$TARGET.$kind.res" "$kind" ||
                fail "$TARGET $kind: the load run failed ($OUT/$TARGET.$kind.load.log)"
        done
        "stop_$TARGET" >&2 || true
        ran+=("$TARGET")
    done
    TARGET=""
    log "results in $OUT"
    {
        echo "scenario msrp: $COUNT sessions at $RATE/s, users $USERS; file $MSRP_FILE B in $MSRP_CHUNK B chunks; chat $MSRP_MESSAGES x $MSRP_SIZE B; $(nproc) cores, $(date -u +%Y-%m-%d)"
        python3 - "$OUT" "${ran[@]}" <<'EOF'
import os, sys
out, targets = sys.argv[1], sys.argv[2:]
def res(t, k):
    r = {}
    try:
        for line in open(os.path.join(out, f"{t}.{k}.res")):
            key, _, v = line.strip().partition(" ")
            r[key] = v.split()
    except OSError:
        pass
    return r
print(f"{'target':14} {'load':4} {'ok/att':>7} {'MB':>7} {'MB/s':>7} {'chunks/s':>8} {'msgs/s':>7} "
      f"{'recv/sent':>11} {'dup/bad':>7} {'deliv p50/p99 ms':>17} {'srv cpu s (msrp thr)':>20} {'cpu s/MB':>8}")
rows = {}
for t in targets:
    for k in ("file", "chat"):
        r = res(t, k)
        if not r:
            continue
        g = lambda key, i=0: float(r.get(key, ["0"] * 2)[i])
        cpu, cpu_msrp, mb = g("cpu_s"), g("cpu_s", 1), g("mb")
        rows[(t, k)] = {"mbps": g("mbps"), "cps": g("chunks_ps"), "cpu_mb": cpu / mb if mb else 0}
        thr = f"{cpu:.3f} ({cpu_msrp:.3f})" if t == "cpmd" else f"{cpu:.3f}"
        deliv = f"{g('deliv_ms'):.2f}/{g('deliv_ms', 1):.2f}"
        print(f"{t:14} {k:4} {'/'.join(r['sessions']):>7} {mb:7.2f} {g('mbps'):7.2f} "
              f"{g('chunks_ps'):8.0f} {g('msgs_ps'):7.0f} {'/'.join(r['received']):>11} "
              f"{'/'.join(r['bad']):>7} {deliv:>17} {thr:>20} {cpu / mb if mb else 0:8.4f}")
if len(targets) > 1:
    base = targets[0]
    for t in targets[1:]:
        for k in ("file", "chat"):
            a, b = rows.get((base, k)), rows.get((t, k))
            if not a or not b:
                continue
            q = lambda x, y: f"{x / y:.2f}x" if y else "-"
            print(f"{t} / {base}, {k}: MB/s {q(b['mbps'], a['mbps'])}, chunks/s "
                  f"{q(b['cps'], a['cps'])}, cpu/MB {q(b['cpu_mb'], a['cpu_mb'])}")
EOF
    } | tee "$OUT/table.txt"
    for TARGET in "${ran[@]}"; do
        for kind in file chat; do
            grep -Eq '^sessions ([1-9][0-9]*) \1$' "$OUT/$TARGET.$kind.res" 2>/dev/null ||
                fail "$TARGET $kind: not every session succeeded"
            grep -Eq '^bad 0 0$' "$OUT/$TARGET.$kind.res" 2>/dev/null ||
                fail "$TARGET $kind: duplicated or corrupted messages"
        done
    done
    TARGET=""
    if ((${#FAILURES[@]})); then
        printf 'compare.sh: FAILED: %s\n' "${FAILURES[@]}" >&2
        exit 1
    fi
    exit 0
}

# ---------------------------------------------------------------- runs
TARGET=""
cleanup() {
    if [[ -n "$MEM_PID" ]]; then kill "$MEM_PID" 2>/dev/null || true; fi
    window_end
    if [[ -n "$TARGET" ]]; then "stop_$TARGET" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
[[ "$SCENARIO" == msrp ]] && run_msrp

RAN=()
for TARGET in $TARGETS; do
    case "$TARGET:$SCENARIO" in
    kamailio-rtpengine:* | bare-forwarder:call | cpmd:* | direct:call | direct:message) ;;
    *) fail "$TARGET does not serve $SCENARIO"; TARGET=""; continue ;;
    esac
    source=cpm-loadgen
    [[ "$TARGET" == bare-forwarder ]] && source=rtp-pairs
    log "$TARGET: $SCENARIO, rate $RATE, count $COUNT, hold $HOLD, users $USERS, load $source"
    RTP_RELAYED="" sig0=0 sig1=0 media0=0 media1=0 pss0="" pss1="" rss0="" rss1=""
    rcvbuf0=0 rcvbuf1=0 sndbuf0=0 sndbuf1=0
    res="$OUT/$TARGET.res"
    rm -rf "${OUT:?}/$TARGET" "$OUT/$TARGET".* # an earlier run's files in the same --out
    if ! "start_$TARGET"; then
        fail "$TARGET did not start"
        TARGET=""
        continue
    fi
    rc=0
    if [[ "$TARGET" == bare-forwarder ]]; then
        load_rtp_pairs "$res" || rc=$?
    else
        load_loadgen "$res" || rc=$?
    fi
    "stop_$TARGET" >&2 || true
    if ((rc)); then
        fail "$TARGET: the load run failed (exit $rc; logs: $OUT/$TARGET.*)"
        if [[ -s "$OUT/$TARGET.load.log" ]]; then tail -4 "$OUT/$TARGET.load.log" >&2; fi
    fi
    {
        echo "cpu_sig_s $(secs $((sig1 - sig0)))"
        echo "cpu_media_s $(secs $((media1 - media0)))"
        echo "rtp_relayed ${RTP_RELAYED:--}"
        echo "pss_kib ${pss0:--} ${pss1:--}"
        echo "rss_kib ${rss0:--} ${rss1:--}"
        echo "udp_drops $((rcvbuf1 - rcvbuf0)) $((sndbuf1 - sndbuf0))"
        # The peak sample (by Pss) during the load: "PSS RSS [cpmd's sessions, transactions]".
        [[ -s "$OUT/$TARGET.mem" ]] && echo "mem_peak $(sort -n "$OUT/$TARGET.mem" | tail -1)"
    } >>"$res"
    RAN+=("$TARGET")
    TARGET=""
done

# ---------------------------------------------------------------- table
log "results in $OUT"
{
    echo "scenario $SCENARIO: rate $RATE/s, count $COUNT$([[ $SCENARIO == call ]] && echo ", hold $HOLD s"), users $USERS; $(nproc) cores, $(date -u +%Y-%m-%d)"
    python3 - "$OUT" "$SCENARIO" "$(calc "s = $RATE * $HOLD; print int(s < $COUNT ? s : $COUNT)")" \
        "${RAN[@]}" <<'EOF'
import os, sys
out, scenario, calls, targets = sys.argv[1], sys.argv[2], max(1, int(sys.argv[3])), sys.argv[4:]
call = scenario == "call"
def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
rows = []
for t in targets:
    r = {}
    for line in open(os.path.join(out, t + ".res")):
        k, _, v = line.strip().partition(" ")
        r[k] = v
    sig, media = num(r.get("cpu_sig_s")) or 0.0, num(r.get("cpu_media_s")) or 0.0
    ok = num(r.get("succeeded"))
    relayed = num(r.get("rtp_relayed"))
    delay_kind = r.get("owd_kind", "-")
    pss = [num(x) for x in r.get("pss_kib", "").split()]
    peak = [num(x) for x in r.get("mem_peak", "").split()]
    base_kib = pss[0] if pss else None
    peak_kib = max(x for x in [peak[0] if peak else None] + pss[1:] + [base_kib] if x is not None) \
        if base_kib is not None else None
    rows.append({
        "target": t, "ok": ok, "attempted": num(r.get("attempted")), "rate": num(r.get("rate")),
        "sig": sig, "media": media,
        "per_k": 1000.0 * (sig + media) / ok if ok else None,
        "per_m": 1e6 * media / relayed if relayed else None,
        "relayed": relayed, "through": num(r.get("through")),
        # The steady window (all calls up): media CPU per packet and the packet rate in it.
        "per_m_steady": 1e6 * num(r["window_media_s"]) / num(r["window_relayed"])
        if num(r.get("window_relayed")) else None,
        "pps_steady": num(r["window_relayed"]) / num(r["window_s"])
        if num(r.get("window_relayed")) and num(r.get("window_s")) else None,
        "window": r.get("window_at"),
        "loss": num(r.get("loss_pct")), "miss": num(r.get("miss_pct")),
        "udp": r.get("udp_drops", "0 0"),
        "p50": num(r.get("p50_us")), "p99": num(r.get("p99_us")),
        "d50": num(r.get("owd_p50_us")), "d99": num(r.get("owd_p99_us")), "dkind": delay_kind,
        "rtt99": num(r.get("rtt_p99_us")),
        "gen": num(r.get("gen_cpu_s")),
        "mem0": base_kib, "memp": peak_kib,
        # Calls in progress at the peak, rate x hold (at most count): the memory each one takes.
        "per_call": (peak_kib - base_kib) / calls if base_kib is not None and call else None,
    })
def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)
def ms(us):
    return None if us is None else us / 1000.0
lat = {"call": "setup", "options": "OPTIONS", "register": "REGISTER", "message": "MESSAGE"}[scenario]
cols = [("target", lambda r: r["target"], 18),
        ("ok/attempted", lambda r: f(r["ok"], "{:.0f}") + "/" + f(r["attempted"], "{:.0f}"), 12),
        ("rate/s", lambda r: f(r["rate"], "{:.1f}"), 7),
        ("cpu s sig+media", lambda r: "{:.3f}+{:.3f}".format(r["sig"], r["media"]), 15),
        ("cpu s/1k ok", lambda r: f(r["per_k"], "{:.3f}"), 11)]
if call:
    cols += [("cpu s/M rtp", lambda r: f(r["per_m"]), 11),
             ("steady s/M", lambda r: f(r["per_m_steady"]), 10),
             ("rtp relayed", lambda r: f(r["relayed"], "{:.0f}"), 11),
             ("load count", lambda r: f(r["through"], "{:.0f}"), 10),
             ("loss %", lambda r: f(r["loss"], "{:.3f}"), 6),
             ("miss %", lambda r: f(r["miss"], "{:.3f}"), 6)]
cols += [(lat + " p50/p99 ms", lambda r: f(ms(r["p50"])) + "/" + f(ms(r["p99"])), 17)]
if call:
    cols += [("rtp delay p50/p99 ms", lambda r: (f(ms(r["d50"])) + "/" + f(ms(r["d99"])) + " "
              + r["dkind"]) if r["d50"] is not None else "-", 20),
             ("rtt p99 ms", lambda r: f(ms(r["rtt99"])), 10)]
cols += [("pss MiB base/peak", lambda r: f(None if r["mem0"] is None else r["mem0"] / 1024, "{:.1f}")
          + "/" + f(None if r["memp"] is None else r["memp"] / 1024, "{:.1f}"), 16)]
if call:
    cols += [("KiB/call", lambda r: f(r["per_call"], "{:.1f}"), 8)]
cols += [("gen cpu s", lambda r: f(r["gen"]), 9)]
print("  ".join(n.ljust(w) if i == 0 else n.rjust(w) for i, (n, _, w) in enumerate(cols)))
for r in rows:
    print("  ".join(g(r).ljust(w) if i == 0 else g(r).rjust(w) for i, (_, g, w) in enumerate(cols)))
if call:
    diffs = [f"{r['target']} {r['relayed'] - r['through']:+.0f}" for r in rows
             if r["relayed"] is not None and r["through"] is not None]
    if diffs:
        print("rtp relayed minus load count: " + ", ".join(diffs))
    steady = [f"{r['target']} {r['window'].replace(' ', '-')} s, {r['pps_steady']:.0f} packets/s"
              for r in rows if r["pps_steady"] is not None and r["window"]]
    if steady:
        print("steady window (every call up; seconds of the load): " + ", ".join(steady))
    drops = [f"{r['target']} {r['udp'].replace(' ', '/')}" for r in rows if r["udp"] != "0 0"]
    if drops:
        print("kernel UDP drops during the run, machine-wide (rcvbuf/sndbuf): " + ", ".join(drops))
if len(rows) > 1:
    base = rows[0]
    print(f"ratios to {base['target']} (cpu and latency: lower is better):")
    for r in rows[1:]:
        def ratio(k, same=True):
            if not same or not r[k] or not base[k]:
                return "-"
            return "{:.2f}x".format(r[k] / base[k])
        parts = [f"rate {ratio('rate')}", f"cpu/1k ok {ratio('per_k')}"]
        if call:
            parts.append(f"cpu/M rtp {ratio('per_m')} (steady {ratio('per_m_steady')})")
        parts += [f"{lat} p50 {ratio('p50')}", f"p99 {ratio('p99')}"]
        if call:
            same = r["dkind"] == base["dkind"]
            parts += [f"rtp delay p50 {ratio('d50', same)}", f"p99 {ratio('d99', same)}"]
        print(f"  {r['target']}: " + ", ".join(parts))
EOF
} | tee "$OUT/table.txt"

# A target without a result row fails the run.
for TARGET in "${RAN[@]}"; do
    res="$OUT/$TARGET.res"
    if [[ "$TARGET" == bare-forwarder ]]; then
        grep -Eq '^through [1-9]' "$res" || fail "$TARGET: no RTP packet came through"
    else
        grep -Eq '^succeeded [1-9]' "$res" || fail "$TARGET: no session succeeded"
    fi
done
TARGET=""
if ((${#FAILURES[@]})); then
    printf 'compare.sh: FAILED: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
