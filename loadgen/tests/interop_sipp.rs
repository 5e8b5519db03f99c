//! cpm-loadgen's clients against SIPp (Debian `sip-tester`) as the answering side, so that
//! what the loadgen sends is checked by another implementation:
//!
//! - `call` → SIPp UAS (`sipp/uas_call.xml`: 200 with a PCMU answer, ACK required before the
//!   BYE, `-rtp_echo` sending every RTP packet back): every call succeeds on both sides, and
//!   the `--json` report counts RTP exactly (received == sent, lost 0, duplicates 0);
//! - `options` and `message` → SIPp UAS answering 200: every request succeeds on both sides.
//!
//! Ignored in the plain run; CI installs SIPp and runs them with `--include-ignored`. Without
//! `sipp` they fail. SIPp runs as a child with `-m N` and `-timeout`, killed on drop.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use cpm_tests::sipp::{self, Sipp, SippResult};
use support::{assert_all_succeeded, free_udp_ports, json, quantity, run, wait_udp_bound, TempDir};

const T: Duration = Duration::from_secs(60);

/// A scenario of `loadgen/tests/sipp/`.
fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A SIPp UAS running `scenario` for `calls` calls on a free port of 127.0.0.1 (with `media`,
/// echoing RTP on a free media port), and its SIP address.
fn sipp_uas(name: &str, calls: u64, media: bool) -> (Sipp, String) {
    assert!(
        sipp::available(),
        "sipp not found (apt-get install sip-tester)"
    );
    // -mp P: -rtp_echo binds P (audio) and P + 2 (video).
    let base = free_udp_ports(3);
    let (sip_port, media_port) = (base.to_string(), (base + 1).to_string());
    let sf = scenario(name);
    let m = calls.to_string();
    let mut args = vec![
        "-sf",
        sf.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &sip_port,
        "-m",
        &m,
        "-nostdin",
        "-timeout",
        "30",
        "-timeout_error",
    ];
    if media {
        args.extend(["-mi", "127.0.0.1", "-mp", &media_port, "-rtp_echo"]);
    }
    let uas = Sipp::spawn(name, &args);
    assert!(wait_udp_bound(base), "sipp did not bind:\n{}", uas.output());
    (uas, format!("127.0.0.1:{sip_port}"))
}

/// SIPp ended with every one of its `n` calls successful.
fn assert_sipp_ok(r: &SippResult, n: u64) {
    assert!(r.status.success(), "{}", r.output);
    assert_eq!((r.successful, r.failed), (n, 0), "{}", r.output);
}

#[test]
#[ignore = "needs sipp"]
fn calls_to_a_sipp_uas_get_every_rtp_packet_echoed() {
    let dir = TempDir::new();
    let report = dir.path().join("call.json");
    let (uas, target) = sipp_uas("uas_call.xml", 10, true);
    let out = run(
        &[
            "call",
            "--target",
            &target,
            "--rate",
            "5",
            "--count",
            "10",
            "--hold",
            "1",
            "--json",
            report.to_str().unwrap(),
            "--max-loss",
            "0",
        ],
        T,
    );
    let sipp = uas.wait(T);
    assert_eq!(out.code, 0, "{out:?}\n{}", sipp.output);
    assert_sipp_ok(&sipp, 10);
    let v = json(&report);
    assert_all_succeeded(&v, "call", 10);
    assert_eq!(quantity(&v, "call_setup"), 10);
    assert_eq!(quantity(&v, "request_bye"), 10);
    let rtp = &v["rtp"];
    let sent = rtp["sent"].as_u64().expect("rtp.sent");
    // 1 s of 20 ms packets per call, give or take the tick that meets the hangup.
    assert!((10 * 49..=10 * 52).contains(&sent), "sent {sent}: {v:#}");
    assert_eq!(rtp["received"], sent, "{v:#}");
    assert_eq!(rtp["lost"], 0, "{v:#}");
    assert_eq!(rtp["duplicates"], 0, "{v:#}");
    assert_eq!(quantity(&v, "rtp_owd"), sent);
    // Every packet came from the address of SIPp's answer.
    assert!(v["counters"]["rtp_from_elsewhere"].is_null(), "{v:#}");
}

#[test]
#[ignore = "needs sipp"]
fn options_to_a_sipp_uas() {
    let dir = TempDir::new();
    let report = dir.path().join("options.json");
    let (uas, target) = sipp_uas("uas_options.xml", 20, false);
    let out = run(
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "20",
            "--count",
            "20",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    let sipp = uas.wait(T);
    assert_eq!(out.code, 0, "{out:?}\n{}", sipp.output);
    assert_sipp_ok(&sipp, 20);
    let v = json(&report);
    assert_all_succeeded(&v, "options", 20);
    assert_eq!(quantity(&v, "request_options"), 20);
}

#[test]
#[ignore = "needs sipp"]
fn messages_to_a_sipp_uas() {
    let dir = TempDir::new();
    let report = dir.path().join("message.json");
    let (uas, target) = sipp_uas("uas_message.xml", 20, false);
    let out = run(
        &[
            "message",
            "--target",
            &target,
            "--rate",
            "20",
            "--count",
            "20",
            "--body-size",
            "300",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    let sipp = uas.wait(T);
    assert_eq!(out.code, 0, "{out:?}\n{}", sipp.output);
    assert_sipp_ok(&sipp, 20);
    let v = json(&report);
    assert_all_succeeded(&v, "message", 20);
    assert_eq!(quantity(&v, "request_message"), 20);
}
