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

#[test]
fn a_generating_uas_streams_back_and_measures_what_it_receives() {
    let dir = TempDir::new();
    let client = dir.path().join("client.json");
    let server = dir.path().join("uas.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--rtp",
        "generate",
        "--duration",
        "60",
        "--json",
        server.to_str().unwrap(),
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
            "5",
            "--hold",
            "1",
            "--json",
            client.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    let c = json(&client);
    let s = json(&server);
    assert_all_succeeded(&c, "call", 5);
    assert_all_succeeded(&s, "uas", 5);
    // Each side received exactly what the other sent, in both directions.
    assert_eq!(c["rtp"]["sent"], s["rtp"]["received"], "{c:#} {s:#}");
    assert_eq!(s["rtp"]["sent"], c["rtp"]["received"], "{c:#} {s:#}");
    assert!(s["rtp"]["sent"].as_u64().unwrap() >= 5 * 49, "{s:#}");
    assert_eq!(c["rtp"]["lost"], 0);
    assert_eq!(s["rtp"]["lost"], 0);
}
