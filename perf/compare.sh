#!/usr/bin/env bash
# perf/compare.sh SCENARIO [options]: the same workload against each target, one table.
#
# SCENARIO: call | options | register | message
# Targets (--targets, space-separated; default: every target that serves the scenario):
#   kamailio-rtpengine  perf/reference/kamailio-rtpengine (signaling + media)
#   bare-forwarder      perf/reference/bare-forwarder, RTP only (call: the call scenario's RTP,
#                       driven by rtp-pairs: rate x hold streams for count/rate seconds)
#   cpmd                target/release/cpmd (options, register, message)
# Options:
#   --rate N (default 20)  --count N (200)  --hold SECS (5)  --users N (100)
#   --load auto|loadgen|sipp   load source (auto: cpm-loadgen if it runs the scenario, else SIPp;
#                              SIPp serves call, options, register; its call holds 8.5 s: the pcap);
#                              LOADGEN=PATH (environment) names the cpm-loadgen binary
#   --out DIR                  where each run's files go (default: a new temp dir, kept)
#   --no-build                 use the binaries already in target/release
#
# For every target: start it, run the load, read the CPU time (utime + stime from /proc/PID/stat)
# of every server process before and after, stop it. The table: achieved rate, CPU seconds per
# 1,000 calls (all server processes) and per million RTP packets (the media process: rtpengine,
# bare-forwarder, cpmd), latency p50/p99 (call setup, or the request's response time), loss, and
# each target's ratio to the first one.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REF="$ROOT/perf/reference"
BIN="$ROOT/target/release"
LOADGEN="${LOADGEN:-$BIN/cpm-loadgen}" # another build of cpm-loadgen may be named here
TICK=$(getconf CLK_TCK)

SCENARIO="${1:-}"
[[ -n "$SCENARIO" && "$SCENARIO" != -* ]] || { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2; }
shift
RATE=20 COUNT=200 HOLD=5 USERS=100 LOAD=auto OUT="" BUILD=1 TARGETS=""
while (($#)); do
    case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --count) COUNT=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --load) LOAD=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in
call) : "${TARGETS:=kamailio-rtpengine bare-forwarder}" ;;
options | register | message) : "${TARGETS:=kamailio-rtpengine cpmd}" ;;
*) echo "compare.sh: unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/cpm-compare.XXXXXX")}"
mkdir -p "$OUT"

# Ports, all on 127.0.0.1.
KAM_PORT=5070 NG_PORT=22222 UAS_PORT=16000 CPMD_PORT=5075 CPMD_HTTP=18075
FWD_LO=40000 FWD_HI=41999

log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- build and load source
if ((BUILD)); then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p cpm-bare-forwarder -p cpm-loadgen -p cpm-actors)
fi
if [[ "$LOAD" == auto ]]; then
    # cpm-loadgen is used once it runs the scenario: a one-request probe towards the discard
    # port ends with 0 or 1 (thresholds), while exit status 2 is a usage or setup error
    # ("not implemented yet").
    rc=0
    timeout 10 "$LOADGEN" "$SCENARIO" --target 127.0.0.1:9 --rate 1 --count 1 --drain 1 \
        --quiet >/dev/null 2>&1 || rc=$?
    if [[ -x "$LOADGEN" && $rc != 2 && $rc != 127 ]]; then
        LOAD=loadgen
    else
        LOAD=sipp
        log "cpm-loadgen does not run '$SCENARIO' yet: SIPp is the load source"
    fi
fi
if [[ "$LOAD" == sipp && "$SCENARIO" == message ]]; then
    echo "compare.sh: the message scenario needs cpm-loadgen" >&2
    exit 1
fi
if [[ "$LOAD" == sipp && "$SCENARIO" == call ]]; then
    HOLD=8.5 # uac_media.xml plays its pcap for 8.5 s; the forwarder's streams last as long
fi

# ---------------------------------------------------------------- CPU accounting
# Sum of utime + stime (clock ticks) of the given pids; the fields after "(comm)" are read so
# that a command name with spaces cannot shift them.
cpu_ticks() {
    local total=0 p
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}
# The server CPU counted from here (called again by a load once its set-up, e.g. registering
# the answering users, is done).
mark_cpu() {
    sig0=$(cpu_ticks $SIG_PIDS) media0=$(cpu_ticks $MEDIA_PIDS)
}
secs() { awk -v t="$1" -v hz="$TICK" 'BEGIN { printf "%.2f", t / hz }'; }

# ---------------------------------------------------------------- targets
# start_X / stop_X; start sets SIG_PIDS (signaling processes), MEDIA_PIDS (media processes) and
# TARGET_ADDR (where the load goes).
SIG_PIDS="" MEDIA_PIDS="" TARGET_ADDR=""

start_kamailio-rtpengine() {
    REF_DIR="$OUT/kamailio-rtpengine" SIP_PORT=$KAM_PORT NG_PORT=$NG_PORT \
        "$REF/kamailio-rtpengine/ctl.sh" start >&2
    local all rtpe
    all=$(REF_DIR="$OUT/kamailio-rtpengine" "$REF/kamailio-rtpengine/ctl.sh" pids)
    rtpe=$(cat "$OUT/kamailio-rtpengine/rtpengine.pid")
    SIG_PIDS=$(grep -vx "$rtpe" <<<"$all" | tr '\n' ' ')
    MEDIA_PIDS=$rtpe
    TARGET_ADDR=127.0.0.1:$KAM_PORT
}
stop_kamailio-rtpengine() {
    RTP_RELAYED=$(REF_DIR="$OUT/kamailio-rtpengine" "$REF/kamailio-rtpengine/ctl.sh" stats |
        awk '$1 == "relayedpackets" { print $2 }')
    REF_DIR="$OUT/kamailio-rtpengine" "$REF/kamailio-rtpengine/ctl.sh" stop
}

start_bare-forwarder() {
    "$BIN/bare-forwarder" --listen "127.0.0.1:$FWD_LO-$FWD_HI" --pidfile "$OUT/bare-forwarder.pid" \
        >"$OUT/bare-forwarder.out" 2>&1 &
    local i
    for i in $(seq 50); do [[ -s "$OUT/bare-forwarder.pid" ]] && break; sleep 0.1; done
    SIG_PIDS="" MEDIA_PIDS=$(cat "$OUT/bare-forwarder.pid")
    TARGET_ADDR="127.0.0.1:$FWD_LO-$FWD_HI"
}
stop_bare-forwarder() {
    local pid=$MEDIA_PIDS i
    kill -INT "$pid"
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    RTP_RELAYED=$(grep -o 'tx_packets=[0-9]*' "$OUT/bare-forwarder.out" | tail -1 | cut -d= -f2)
}

start_cpmd() {
    "$BIN/cpmd" --sip-listen "127.0.0.1:$CPMD_PORT" --http-listen "127.0.0.1:$CPMD_HTTP" \
        >"$OUT/cpmd.log" 2>&1 &
    local pid=$! i
    for i in $(seq 100); do ss -Hlun "sport = :$CPMD_PORT" | grep -q . && break; sleep 0.1; done
    SIG_PIDS="" MEDIA_PIDS=$pid
    TARGET_ADDR=127.0.0.1:$CPMD_PORT
}
stop_cpmd() {
    kill -TERM "$MEDIA_PIDS" 2>/dev/null || true
    wait "$MEDIA_PIDS" 2>/dev/null || true
    RTP_RELAYED=""
}

# ---------------------------------------------------------------- load
# Each load_* writes "key value" lines to $1: attempted succeeded failed rate p50_us p99_us
# rtp_sent rtp_received loss_pct (missing keys print as "-").

# cpm-loadgen's JSON → the keys above. The latency is the call setup time for calls, else the
# first quantity reported; RTP figures come from the "rtp" object when there is one.
json_keys() {
    python3 - "$1" "$SCENARIO" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
scenario = sys.argv[2]
out = {k: d.get(k) for k in ("attempted", "succeeded", "failed")}
out["rate"] = d.get("rate_achieved")
# The scenario's main latency (cpm-loadgen's quantity names).
main = {"call": ["call_setup"], "options": ["request_options"], "register": ["registration", "request_register"],
        "message": ["message_delivery", "request_message"]}.get(scenario, [])
q = d.get("quantities") or {}
lat = next((q[n] for n in main if isinstance(q.get(n), dict)), None)
if lat is None:  # another shape: the first percentile object that is not RTP's
    lat = next((v for k, v in q.items() if isinstance(v, dict) and "p99_us" in v and "rtp" not in k), {})
out["p50_us"], out["p99_us"] = lat.get("p50_us"), lat.get("p99_us")
rtp = d.get("rtp") if isinstance(d.get("rtp"), dict) else {}
out["rtp_sent"] = rtp.get("sent")
out["rtp_received"] = rtp.get("received")
out["loss_pct"] = rtp.get("loss_pct")
owd = q.get("rtp_owd") if isinstance(q.get("rtp_owd"), dict) else {}
out["owd_p50_us"], out["owd_p99_us"] = owd.get("p50_us"), owd.get("p99_us")
for k, v in out.items():
    print(k, "-" if v is None else v)
EOF
}

load_loadgen() {
    local res=$1 json="$OUT/$TARGET.json" uas=""
    if [[ "$SCENARIO" != register ]]; then
        # The answering side: users user0000.. on ports UAS_PORT+i, registered at the target.
        # (cpm-loadgen's requests, OPTIONS included, go to sip:user%04d@target.)
        "$LOADGEN" uas --listen "127.0.0.1:$UAS_PORT" --register-to "$TARGET_ADDR" \
            --users "$USERS" --rtp echo --quiet >"$OUT/$TARGET.uas.log" 2>&1 &
        uas=$!
        sleep "$(awk -v n="$USERS" 'BEGIN { print 1 + n / 500 }')" # --register-rate 500
        mark_cpu
    fi
    local extra=()
    [[ "$SCENARIO" == call ]] && extra=(--hold "$HOLD")
    "$LOADGEN" "$SCENARIO" --target "$TARGET_ADDR" --users "$USERS" --rate "$RATE" \
        --count "$COUNT" "${extra[@]}" --quiet --json "$json" >"$OUT/$TARGET.load.log" 2>&1 || true
    if [[ -n "$uas" ]]; then
        kill -INT "$uas" 2>/dev/null || true
        wait "$uas" 2>/dev/null || true
    fi
    if [[ -s "$json" ]]; then json_keys "$json" >"$res"; else : >"$res"; fi
}

# The call scenario's RTP for the bare forwarder: rate x hold concurrent streams (each both
# ways, 50 packets/s) for count / rate seconds.
load_rtp_pairs() {
    local res=$1 streams duration
    streams=$(awk -v r="$RATE" -v h="$HOLD" 'BEGIN { s = int(r * h + 0.5); print (s < 1 ? 1 : s) }')
    duration=$(awk -v c="$COUNT" -v r="$RATE" 'BEGIN { print c / r }')
    "$BIN/rtp-pairs" --target "$TARGET_ADDR" --streams "$streams" --duration "$duration" \
        --json "$OUT/$TARGET.json" >"$OUT/$TARGET.load.log" 2>&1 || true
    # The streams stand in for calls: no call rate nor setup time; the one-way delay is shown.
    json_keys "$OUT/$TARGET.json" | sed -E 's/^(attempted|succeeded|failed|rate|p50_us|p99_us) .*/\1 -/' >"$res"
}

load_sipp() {
    local res=$1 dir="$OUT/$TARGET.sipp" uas_pid=""
    mkdir -p "$dir"
    local host=${TARGET_ADDR%:*} port=${TARGET_ADDR##*:}
    local common=(-i 127.0.0.1 -nostdin -trace_stat -stf "$dir/stat.csv" -trace_rtt -rtt_freq 1
        -r "$RATE" -m "$COUNT" -timeout $((COUNT / RATE + 60)) -timeout_error)
    case "$SCENARIO" in
    call)
        uas_pid=$(cd "$dir" && sipp -sf "$REF/sipp/uas_rr.xml" -i 127.0.0.1 -p 5090 -mi 127.0.0.1 \
            -mp 6000 -rtp_echo -bg 2>&1 | sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' || true)
        (cd "$dir" && sipp -sf "$REF/sipp/register.xml" "$host:$port" -i 127.0.0.1 -p 5091 \
            -s service -key contact 127.0.0.1:5090 -m 1 -nostdin >/dev/null 2>&1)
        mark_cpu
        (cd "$dir" && sipp -sf "$REF/sipp/uac_media.xml" "$host:$port" -p 5092 -mi 127.0.0.1 \
            -s service "${common[@]}" >"$dir/uac.log" 2>&1) || true
        ;;
    options)
        (cd "$dir" && sipp -sf "$REF/sipp/options.xml" "$host:$port" -p 5092 "${common[@]}" \
            >"$dir/uac.log" 2>&1) || true
        ;;
    register)
        (cd "$dir" && sipp -sf "$REF/sipp/register.xml" "$host:$port" -p 5092 -s service \
            -key contact 127.0.0.1:5090 "${common[@]}" >"$dir/uac.log" 2>&1) || true
        ;;
    esac
    [[ -n "$uas_pid" ]] && kill "$uas_pid" 2>/dev/null || true
    # Final line of the statistics file: counts by column name; response times from the rtt file.
    awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
               END { a = $col["OutgoingCall(C)"]; s = $col["SuccessfulCall(C)"]; f = $col["FailedCall(C)"]
                     # h:m:s[:us]; the calls were started over the elapsed time less one hold.
                     split($col["ElapsedTime(C)"], t, ":"); secs = t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1e6 - hold
                     print "attempted", a; print "succeeded", s; print "failed", f
                     print "rate", (secs > 0 ? sprintf("%.1f", a / secs) : "-") }' \
        hold="$([[ $SCENARIO == call ]] && echo "$HOLD" || echo 0)" "$dir/stat.csv" >"$res"
    sort -t';' -k2 -g "$dir"/*_rtt.csv 2>/dev/null | awk -F';' '$2 ~ /^[0-9.]+$/ { v[n++] = $2 }
        END { if (n) { printf "p50_us %d\np99_us %d\n", v[int(n * 0.5)] * 1000, v[int(n * 0.99)] * 1000 } }' >>"$res"
    if [[ "$SCENARIO" == call ]]; then
        # Each successful call: the pcap's 236 packets to the callee and 236 echoed back.
        awk '$1 == "succeeded" { print "rtp_sent", $2 * 472 }' "$res" >>"$res"
    fi
}

# ---------------------------------------------------------------- runs
cleanup() {
    [[ -n "${TARGET:-}" ]] && "stop_$TARGET" >/dev/null 2>&1 || true
}
trap cleanup EXIT

for TARGET in $TARGETS; do
    case "$TARGET:$SCENARIO" in
    kamailio-rtpengine:* | bare-forwarder:call | cpmd:options | cpmd:register | cpmd:message) ;;
    *) log "$TARGET does not serve $SCENARIO: skipped"; continue ;;
    esac
    log "$TARGET: $SCENARIO, rate $RATE, count $COUNT, hold $HOLD, load $([[ $TARGET == bare-forwarder ]] && echo rtp-pairs || echo "$LOAD")"
    RTP_RELAYED=""
    "start_$TARGET"
    mark_cpu
    if [[ "$TARGET" == bare-forwarder ]]; then
        load_rtp_pairs "$OUT/$TARGET.res" # no signaling: rtp-pairs whatever the load source
    else
        "load_$LOAD" "$OUT/$TARGET.res"
    fi
    sig1=$(cpu_ticks $SIG_PIDS) media1=$(cpu_ticks $MEDIA_PIDS)
    "stop_$TARGET"
    {
        echo "cpu_sig_s $(secs $((sig1 - sig0)))"
        echo "cpu_media_s $(secs $((media1 - media0)))"
        echo "rtp_relayed ${RTP_RELAYED:--}"
    } >>"$OUT/$TARGET.res"
    TARGET=""
done

# ---------------------------------------------------------------- table
log "results in $OUT"
python3 - "$OUT" "$SCENARIO" $TARGETS <<'EOF'
import os, sys
out, scenario, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
rows = []
for t in targets:
    p = os.path.join(out, t + ".res")
    if not os.path.exists(p):
        continue
    r = {}
    for line in open(p):
        k, _, v = line.strip().partition(" ")
        r[k] = v
    cpu_sig, cpu_media = num(r.get("cpu_sig_s")) or 0.0, num(r.get("cpu_media_s")) or 0.0
    cpu = cpu_sig + cpu_media
    ok = num(r.get("succeeded"))
    # RTP packets: what the server says it relayed, else what the load source received.
    rtp = num(r.get("rtp_relayed")) or num(r.get("rtp_received"))
    sent, recv = num(r.get("rtp_sent")), num(r.get("rtp_received"))
    loss = num(r.get("loss_pct"))
    if loss is None and sent and rtp is not None and scenario == "call":
        loss = max(0.0, 100.0 * (sent - rtp) / sent)
    p50, p99, kind = num(r.get("p50_us")), num(r.get("p99_us")), "setup"
    if p50 is None and num(r.get("owd_p50_us")) is not None:
        p50, p99, kind = num(r.get("owd_p50_us")), num(r.get("owd_p99_us")), "owd"
        t = t + " (owd)"
    rows.append({
        "target": t, "kind": kind, "ok": ok, "attempted": num(r.get("attempted")), "rate": num(r.get("rate")),
        "cpu": cpu, "cpu_sig": cpu_sig, "cpu_media": cpu_media,
        "per_k": 1000.0 * cpu / ok if ok else None,
        "per_m": 1e6 * cpu_media / rtp if rtp else None,
        "rtp": rtp, "p50": p50 / 1000.0 if p50 is not None else None,
        "p99": p99 / 1000.0 if p99 is not None else None, "loss": loss,
    })
def f(v, fmt):
    return "-" if v is None else fmt.format(v)
cols = [("target", 26, "{}"), ("ok/attempted", 13, None), ("rate/s", 8, "{:.1f}"),
        ("cpu s (sig+media)", 18, None), ("cpu s/1k ok", 14, "{:.3f}"),
        ("cpu s/M rtp", 11, "{:.2f}"), ("rtp pkts", 9, "{:.0f}"), ("p50 ms", 8, "{:.2f}"),
        ("p99 ms", 8, "{:.2f}"), ("loss %", 7, "{:.3f}")]
print(f"scenario: {scenario}")
print("  ".join(name.rjust(w) if i else name.ljust(w) for i, (name, w, _) in enumerate(cols)))
for r in rows:
    cells = [r["target"].ljust(26),
             (f(r["ok"], "{:.0f}") + "/" + f(r["attempted"], "{:.0f}")).rjust(13),
             f(r["rate"], "{:.1f}").rjust(8),
             ("{:.2f}+{:.2f}".format(r["cpu_sig"], r["cpu_media"])).rjust(18),
             f(r["per_k"], "{:.3f}").rjust(14), f(r["per_m"], "{:.2f}").rjust(11),
             f(r["rtp"], "{:.0f}").rjust(9), f(r["p50"], "{:.2f}").rjust(8),
             f(r["p99"], "{:.2f}").rjust(8), f(r["loss"], "{:.3f}").rjust(7)]
    print("  ".join(cells))
if len(rows) > 1:
    base = rows[0]
    print(f"ratios to {base['target']} (lower is better for cpu and latency):")
    for r in rows[1:]:
        def ratio(k):
            if k in ("p50", "p99") and r["kind"] != base["kind"]:
                return "-"  # a one-way delay is not a setup time
            return "-" if not r[k] or not base[k] else "{:.2f}x".format(r[k] / base[k])
        print(f"  {r['target']}: cpu/1k ok {ratio('per_k')}, cpu/M rtp {ratio('per_m')}, "
              f"p50 {ratio('p50')}, p99 {ratio('p99')}")
EOF
