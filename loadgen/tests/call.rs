//! The `call` client against a `cpm-loadgen uas` (two processes on loopback): INVITE/ACK/BYE
//! complete, and with `--rtp echo` every RTP packet sent comes back, counted exactly.

mod support;

use std::time::Duration;

use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(60);

#[test]
fn calls_to_an_echoing_uas_get_every_packet_back() {
    let dir = TempDir::new();
    let report = dir.path().join("call.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--rtp",
        "echo",
        "--duration",
        "60",
    ]);
    let target = uas.addr.to_string();
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
    assert_eq!(out.code, 0, "{out:?}");
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
    assert_eq!(rtp["loss_pct"].as_f64(), Some(0.0), "{v:#}");
    assert_eq!(rtp["duplicates"], 0, "{v:#}");
    for k in ["jitter_p99_us", "owd_p99_us"] {
        assert!(rtp[k].is_u64(), "rtp.{k}: {v:#}");
    }
    assert_eq!(quantity(&v, "rtp_owd"), sent);
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    assert!(u.stdout.contains("received: BYE 10, INVITE 10"), "{u:?}");
    assert!(
        u.stdout.contains("calls: 10 ended by BYE, 0 still up"),
        "{u:?}"
    );
}

/// Calls to a `uas --rtp generate` (with `uas_args`) from `call` (with `call_args`): the
/// client's run, its JSON, the uas's JSON and its exit.
fn call_a_generating_uas(
    call_args: &[&str],
    uas_args: &[&str],
) -> (
    support::Output,
    serde_json::Value,
    serde_json::Value,
    support::Output,
) {
    let dir = TempDir::new();
    let client = dir.path().join("client.json");
    let server = dir.path().join("uas.json");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--rtp",
        "generate",
        "--duration",
        "60",
    ];
    args.extend_from_slice(&["--json", server.to_str().unwrap()]);
    args.extend_from_slice(uas_args);
    let uas = Uas::spawn(&args);
    let target = uas.addr.to_string();
    let mut args = vec!["call", "--target", &target, "--rate", "5", "--count", "5"];
    args.extend_from_slice(&["--hold", "1", "--json", client.to_str().unwrap()]);
    args.extend_from_slice(call_args);
    let out = run(&args, T);
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    (out, json(&client), json(&server), u)
}

#[test]
fn a_generating_uas_streams_back_and_measures_what_it_receives() {
    let (out, c, s, _) = call_a_generating_uas(&[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_all_succeeded(&c, "call", 5);
    assert_all_succeeded(&s, "uas", 5);
    // Each side received exactly what the other sent, in both directions.
    assert_eq!(c["rtp"]["sent"], s["rtp"]["received"], "{c:#} {s:#}");
    assert_eq!(s["rtp"]["sent"], c["rtp"]["received"], "{c:#} {s:#}");
    assert!(s["rtp"]["sent"].as_u64().unwrap() >= 5 * 49, "{s:#}");
    assert_eq!(c["rtp"]["lost"], 0);
    assert_eq!(s["rtp"]["lost"], 0);
    assert!(
        out.stdout
            .contains("media PCMU/8000, 20 ms, 160-byte payload"),
        "{out:?}"
    );
}

#[test]
fn codec_ptime_and_payload_size_are_used_by_both_sides() {
    let (out, c, s, _) = call_a_generating_uas(
        &["--codec", "PCMA", "--ptime", "40", "--payload-size", "300"],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("media PCMA/8000, 40 ms, 300-byte payload"),
        "{out:?}"
    );
    assert_all_succeeded(&c, "call", 5);
    // 1 s at 40 ms: 25 packets a call each way (give or take the tick meeting the hangup);
    // the uas answered PCMA and generates at the offered 40 ms.
    let sent = c["rtp"]["sent"].as_u64().unwrap();
    assert!((5 * 25..=5 * 26).contains(&sent), "{c:#}");
    let back = s["rtp"]["sent"].as_u64().unwrap();
    assert!((5 * 24..=5 * 26).contains(&back), "{s:#}");
    assert_eq!(c["rtp"]["sent"], s["rtp"]["received"], "{c:#} {s:#}");
    assert_eq!(s["rtp"]["sent"], c["rtp"]["received"], "{c:#} {s:#}");
}

#[test]
fn a_codec_the_uas_does_not_accept_fails_the_calls_with_488() {
    let (out, c, s, _) = call_a_generating_uas(&["--codec", "PCMA"], &["--codec", "PCMU"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("threshold not met"), "{out:?}");
    assert_eq!(c["succeeded"], 0, "{c:#}");
    assert_eq!(c["failed"], 5, "{c:#}");
    assert!(out.stdout.contains("488 Not Acceptable Here"), "{out:?}");
    assert_eq!(c["rtp"]["sent"].as_u64().unwrap_or(0), 0, "{c:#}");
    assert_eq!(s["failed"], 5, "{s:#}");
}
