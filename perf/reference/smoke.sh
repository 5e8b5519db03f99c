#!/usr/bin/env bash
# Smoke test of the Kamailio + rtpengine reference (for CI): start both, OPTIONS to the proxy,
# register a SIPp UAS, one call through the proxy with G.711 both ways (the UAS echoes it), then
# check that SIPp saw every transaction succeed, that rtpengine anchored the call (offer, answer,
# delete) and relayed every packet (236 each way), and stop everything. About 15 s; each step is
# bounded with `timeout`. Exit 0 on success. Needs root (SIPp plays the pcap), kamailio,
# rtpengine-daemon, sip-tester, iproute2.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
S="$HERE/sipp"
CTL="$HERE/kamailio-rtpengine/ctl.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cpm-ref-smoke.XXXXXX")"
# Ports apart from ctl.sh's defaults, so that a running reference does not collide.
export REF_DIR="$WORK/servers" SIP_PORT=5170 NG_PORT=22322 RTP_MIN=31000 RTP_MAX=31999
PCAP_PACKETS=236

UAS_PID=""
cleanup() {
    if [[ -n "$UAS_PID" ]]; then kill "$UAS_PID" 2>/dev/null || true; fi
    "$CTL" stop || true
}
trap cleanup EXIT

fail() {
    echo "smoke: FAILED: $*" >&2
    for f in "$REF_DIR"/kamailio.log "$REF_DIR"/rtpengine.log "$WORK"/*.log; do
        [[ -s "$f" ]] && { echo "--- $f" >&2; tail -15 "$f" >&2; }
    done
    exit 1
}

stat() { "$CTL" stats | awk -v k="$1" '$1 == k { print $2 }'; }

cd "$WORK"
timeout 30 "$CTL" start || fail "servers did not start"

timeout 10 sipp -sf "$S/options.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p 5192 -m 1 -nostdin \
    -timeout 8 -timeout_error >options.log 2>&1 || fail "OPTIONS"

UAS_PID=$(timeout 10 sipp -sf "$S/uas_rr.xml" -i 127.0.0.1 -p 5190 -mi 127.0.0.1 -mp 6100 \
    -rtp_echo -nostdin -bg 2>&1 | sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' || true)
[[ -n "$UAS_PID" ]] || fail "the SIPp UAS did not start"

timeout 10 sipp -sf "$S/register.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p 5191 -s service \
    -key contact 127.0.0.1:5190 -m 1 -nostdin -timeout 8 -timeout_error >register.log 2>&1 ||
    fail "REGISTER"

timeout 40 sipp -sf "$S/uac_media.xml" "127.0.0.1:$SIP_PORT" -i 127.0.0.1 -p 5193 -mi 127.0.0.1 \
    -s service -m 1 -nostdin -timeout 30 -timeout_error -trace_msg -message_file uac_msg.log \
    >uac.log 2>&1 || fail "the call"

# rtpengine's answer in the 200: its own port, not the UAS's 6100.
awk '/^SIP\/2.0 200 OK/ { in200 = 1 } in200 && /^m=audio/ { print $2; exit }' uac_msg.log >answer_port
port=$(cat answer_port)
((port >= RTP_MIN && port <= RTP_MAX)) || fail "the 200's SDP has m=audio ${port:-?}, not an rtpengine port"

# The BYE's delete may reach rtpengine a moment after SIPp's last 200.
for _ in $(seq 20); do [[ "$(stat deletecount)" == 1 ]] && break; sleep 0.1; done
offer=$(stat offercount) answer=$(stat answercount) delete=$(stat deletecount)
relayed=$(stat relayedpackets)
[[ "$offer/$answer/$delete" == 1/1/1 ]] || fail "rtpengine offer/answer/delete = $offer/$answer/$delete"
[[ "$relayed" == $((2 * PCAP_PACKETS)) ]] ||
    fail "rtpengine relayed $relayed packets, expected $((2 * PCAP_PACKETS))"

cleanup
trap - EXIT
echo "smoke: ok: OPTIONS 200, REGISTER 200, call through Kamailio with rtpengine port $port," \
    "$relayed RTP packets relayed (offer/answer/delete 1/1/1)"
rm -rf "$WORK"
