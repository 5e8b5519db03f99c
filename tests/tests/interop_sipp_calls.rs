//! Calls between SIPp user agents with RTP: the caller (`call_uac_pcap.xml`) offers PCMA and
//! plays `/usr/share/sip-tester/g711a.pcap` (236 RTP packets, 7 s) after the ACK, then hangs
//! up; the callee (`call_uas.xml`) answers, and its media is either SIPp's own `-rtp_echo` or
//! an [`RtpSink`] of the test that records and echoes every packet, so the count is exact.
//! Directly, and through cpmd (its B2BUA relaying the signaling and anchoring the media).
//!
//! SIPp plays a pcap through a raw socket: these tests need root (or CAP_NET_RAW), as in CI.

use std::time::Duration;

use cpm_tests::ports;
use cpm_tests::rtp::{pcap_udp_payloads, rtp_payload, rtp_seq, RtpSink, G711A_PCAP};
use cpm_tests::sipp::{scenario, Sipp, SippResult};
use cpm_tests::Cpmd;

/// How long one SIPp run may take (its own `-timeout` is shorter; a call lasts ~9 s).
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// The ports of one test, from a block of [`ports::INTEROP`].
struct Ports {
    /// The callee's SIP port.
    uas: u16,
    /// The caller's SIP port.
    uac: u16,
    /// The port of the SIPp run registering the callee at cpmd.
    reg: u16,
    /// The callee's SIPp media port (SIPp binds it and +2 for video).
    uas_media: u16,
    /// The caller's SIPp media port (the source of its pcap play; SIPp binds it and +2).
    uac_media: u16,
    /// The test's RTP sink, when it answers the media.
    sink: u16,
}

impl Ports {
    fn take() -> Ports {
        let base = ports::block(16);
        Ports {
            uas: base,
            uac: base + 1,
            reg: base + 2,
            uas_media: base + 4,
            uac_media: base + 8,
            sink: base + 12,
        }
    }
}

fn require_root() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "SIPp's play_pcap_audio needs a raw socket: run as root (CI does)"
    );
}

/// Common SIPp arguments: loopback signalling and media, bounds, no stdin.
fn sipp(name: &str, sip_port: u16, media_port: u16, extra: &[&str]) -> Sipp {
    let (sip_port, media_port) = (sip_port.to_string(), media_port.to_string());
    let mut args = vec![
        "-i",
        "127.0.0.1",
        "-p",
        &sip_port,
        "-mi",
        "127.0.0.1",
        "-mp",
        &media_port,
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
        "-recv_timeout",
        "20000",
        "-nostdin",
    ];
    args.extend_from_slice(extra);
    Sipp::spawn(name, &args)
}

/// The callee: answers one call, its SDP naming `rtp_port`; `-rtp_echo` when `echo`.
fn callee(p: &Ports, rtp_port: u16, echo: bool) -> Sipp {
    let scen = scenario("call_uas.xml");
    let rtp_port = rtp_port.to_string();
    let mut extra = vec!["-sf", scen.to_str().unwrap(), "-key", "rtp_port", &rtp_port];
    if echo {
        extra.push("-rtp_echo");
    }
    sipp("callee", p.uas, p.uas_media, &extra)
}

/// The caller: calls `sip:bob@<domain>` through `target` and plays the pcap.
fn caller(p: &Ports, target: &str, domain: &str) -> Sipp {
    let scen = scenario("call_uac_pcap.xml");
    sipp(
        "caller",
        p.uac,
        p.uac_media,
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-s",
            "bob",
            "-key",
            "domain",
            domain,
            target,
        ],
    )
}

#[track_caller]
fn assert_one_call(r: &SippResult, extra: &str) {
    assert!(
        r.status.success() && r.successful == 1 && r.failed == 0,
        "sipp: {} ({} successful, {} failed); output:\n{}{extra}",
        r.status,
        r.successful,
        r.failed,
        r.output,
    );
}

/// The sink got exactly the capture's RTP packets, in order and unchanged after the RTP
/// header, and echoed each; returns the source they came from.
#[track_caller]
fn assert_got_the_capture(sink: &RtpSink) -> std::net::SocketAddr {
    let sent = pcap_udp_payloads(G711A_PCAP.as_ref()).expect("read g711a.pcap");
    assert_eq!(sent.len(), 236, "g711a.pcap changed");
    let got = sink.received();
    assert_eq!(got.len(), sent.len(), "RTP packets received by the callee");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(
            rtp_seq(&g.data),
            rtp_seq(s),
            "sequence number of packet {i}"
        );
        assert_eq!(
            rtp_payload(&g.data),
            rtp_payload(s),
            "payload of packet {i}"
        );
    }
    let from = got[0].from;
    assert!(got.iter().all(|g| g.from == from), "one source: {from}");
    assert_eq!(sink.echoed(), sent.len(), "RTP packets echoed");
    from
}

/// SIPp calls SIPp directly; the test's sink takes the callee's media: every one of the 236
/// packets arrives, from the caller's media port.
#[test]
#[ignore = "needs sipp"]
fn sipp_call_direct_rtp_counted() {
    require_root();
    let p = Ports::take();
    let sink = RtpSink::bind(p.sink, true);
    let uas = callee(&p, p.sink, false);
    let target = format!("127.0.0.1:{}", p.uas);
    let uac = caller(&p, &target, &target);
    assert_one_call(&uac.wait(RUN_LIMIT), "");
    assert_one_call(&uas.wait(RUN_LIMIT), "");
    let from = assert_got_the_capture(&sink);
    assert_eq!(from.port(), p.uac_media);
}

/// SIPp calls SIPp directly, the callee echoing the RTP itself (`-rtp_echo`).
#[test]
#[ignore = "needs sipp"]
fn sipp_call_direct_rtp_echo() {
    require_root();
    let p = Ports::take();
    let uas = callee(&p, p.uas_media, true);
    let target = format!("127.0.0.1:{}", p.uas);
    let uac = caller(&p, &target, &target);
    assert_one_call(&uac.wait(RUN_LIMIT), "");
    assert_one_call(&uas.wait(RUN_LIMIT), "");
}

/// The same call through cpmd: the callee registers as bob, the caller calls
/// `sip:bob@localhost` at cpmd; the sink gets all 236 packets, from cpmd's relay rather than
/// the caller.
#[test]
#[ignore = "needs sipp and root"]
fn sipp_call_through_cpmd_rtp_counted() {
    require_root();
    let cpmd = Cpmd::spawn(&[]);
    let target = cpmd.sip_addr().to_string();
    let p = Ports::take();
    let sink = RtpSink::bind(p.sink, true);
    let uas = callee(&p, p.sink, false);

    let reg = scenario("register.xml");
    let uas_port = p.uas.to_string();
    let r = sipp(
        "register",
        p.reg,
        p.reg + 1,
        &[
            "-sf",
            reg.to_str().unwrap(),
            "-key",
            "user",
            "bob",
            "-key",
            "contact_port",
            &uas_port,
            &target,
        ],
    )
    .wait(RUN_LIMIT);
    let log = || format!("\ncpmd log:\n{}", cpmd.log());
    assert_one_call(&r, &log());

    let uac = caller(&p, &target, "localhost");
    assert_one_call(&uac.wait(RUN_LIMIT), &log());
    assert_one_call(&uas.wait(RUN_LIMIT), &log());
    let from = assert_got_the_capture(&sink);
    assert_ne!(from.port(), p.uac_media, "media not anchored at cpmd");
}
