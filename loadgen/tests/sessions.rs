//! Calls through the real `cpmd` (issue 4): `cpm-loadgen call` → cpmd (B2BUA, media anchored
//! on its relay) → `cpm-loadgen uas` users registered there. Every RTP packet is counted at
//! both ends and by cpmd's relay; after the load, no session, leg or relay port remains; each
//! call leaves a start and a stop charging record with its media counters.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use serde_json::Value;
use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(180);

/// The charging records cpmd wrote, one JSON object per line.
fn cdrs(cpmd: &Cpmd) -> Vec<Value> {
    let path = cpmd.dir().join("data").join("cdr.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a CDR line is JSON"))
        .collect()
}

/// Waits until cpmd holds no session, leg or relay port, and says what it holds otherwise.
fn assert_released(cpmd: &Cpmd) {
    for series in [
        "cpm_sessions",
        "cpm_media_legs",
        "cpm_media_pool_ports_in_use",
        "cpm_media_ports_in_use",
    ] {
        let v = cpmd.wait_metric(series, Duration::from_secs(10), |v| v == 0.0);
        assert_eq!(v, 0.0, "{series} after the load:\n{}", cpmd.metrics());
    }
}

/// A `uas` with `users` users registered at `cpmd`, answering calls with `rtp`.
fn registered_uas(cpmd: &Cpmd, users: &str, rtp: &str, json: &str) -> Uas {
    let target = cpmd.sip_addr().to_string();
    Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &target,
        "--users",
        users,
        "--rtp",
        rtp,
        "--duration",
        "170",
        "--json",
        json,
    ])
}

#[test]
fn calls_through_cpmd_relay_every_packet_both_ways() {
    // Relay ports apart from the other test's (they run in parallel).
    let cpmd = Cpmd::spawn(&["--media-ports", "25000-25199"]);
    let dir = TempDir::new();
    let (client, server) = (dir.path().join("c.json"), dir.path().join("s.json"));
    let uas = registered_uas(&cpmd, "5", "generate", server.to_str().unwrap());
    let target = cpmd.sip_addr().to_string();
    let out = run(
        &[
            "call",
            "--target",
            &target,
            "--users",
            "5",
            "--rate",
            "5",
            "--count",
            "10",
            "--hold",
            "1",
            "--json",
            client.to_str().unwrap(),
            "--max-loss",
            "0",
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    let (c, s) = (json(&client), json(&server));
    assert_all_succeeded(&c, "call", 10);
    assert_eq!(quantity(&c, "call_setup"), 10);
    // Each side received exactly what the other sent, through cpmd. The BYE and its 200 take
    // the signaling path, which may overtake the last packets on the media path: those
    // arrive after the call ended at the receiver and are counted apart (`rtp_after_call`,
    // or `rtp_from_elsewhere` when the receiving socket already serves the next call).
    let sent_a = c["rtp"]["sent"].as_u64().unwrap();
    let sent_b = s["rtp"]["sent"].as_u64().unwrap();
    assert!(sent_a >= 10 * 49, "{c:#}");
    for (sent, rx, who) in [(sent_a, &s, "callee"), (sent_b, &c, "caller")] {
        let late = ["rtp_after_call", "rtp_from_elsewhere"]
            .iter()
            .map(|k| rx["counters"][k].as_u64().unwrap_or(0))
            .sum::<u64>();
        let received = rx["rtp"]["received"].as_u64().unwrap();
        assert_eq!(received + late, sent, "{who}: {rx:#}");
        assert!(
            late <= 20,
            "{who}: at most a tick or two per call came late: {rx:#}"
        );
    }
    assert_eq!(c["rtp"]["lost"], 0);
    assert_eq!(s["rtp"]["lost"], 0);
    // cpmd's relay carried every one of them.
    let relayed = cpmd.metric("cpm_media_packets_relayed_total");
    assert_eq!(relayed, (sent_a + sent_b) as f64, "{}", cpmd.metrics());
    assert_released(&cpmd);
    // A start and a stop record per call; the stops carry the relay's counts.
    let records = cdrs(&cpmd);
    let stops: Vec<&Value> = records.iter().filter(|r| r["record"] == "stop").collect();
    assert_eq!(stops.len(), 10, "{records:#?}");
    assert_eq!(
        records.iter().filter(|r| r["record"] == "start").count(),
        10
    );
    let count = |dir: &str| -> u64 {
        stops
            .iter()
            .map(|r| r["legs"][0][dir]["packets"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("from_a"), sent_a);
    assert_eq!(count("from_b"), sent_b);
    for r in &stops {
        assert_eq!(r["final_status"], 200, "{r:#}");
        assert_eq!(r["end_reason"], "bye-caller", "{r:#}");
        assert_eq!(r["legs"][0]["media"], "audio", "{r:#}");
        assert!(r["duration_s"].as_f64().unwrap() >= 0.9, "{r:#}");
    }
}

/// Issue 4: after 10,000 sequential and 1,000 concurrent calls, zero ports, legs and session
/// actors remain. RTP at one packet per 200 ms keeps the relay's load small (a debug build).
#[test]
fn ten_thousand_sequential_and_a_thousand_concurrent_calls_leave_nothing_behind() {
    // 1,000 calls hold 4,000 relay ports (two RTP/RTCP pairs a leg).
    let cpmd = Cpmd::spawn(&["--cdr-interim", "0", "--media-ports", "20000-24999"]);
    let dir = TempDir::new();
    let uas = registered_uas(
        &cpmd,
        "20",
        "echo",
        dir.path().join("s.json").to_str().unwrap(),
    );
    let target = cpmd.sip_addr().to_string();
    let call = |json: &str, extra: &[&str]| {
        let mut args = vec!["call", "--target", &target, "--users", "20", "--quiet"];
        args.extend_from_slice(&["--ptime", "200", "--json", json]);
        args.extend_from_slice(extra);
        run(&args, T)
    };
    // One call at a time: each ends (BYE answered) before the next starts.
    let seq = dir.path().join("seq.json");
    let out = call(
        seq.to_str().unwrap(),
        &[
            "--rate",
            "2000",
            "--count",
            "10000",
            "--hold",
            "0",
            "--concurrency",
            "1",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    assert_all_succeeded(&json(&seq), "call", 10_000);
    assert_released(&cpmd);
    // A thousand at once: all started within 2 s, each held 4 s.
    let conc = dir.path().join("conc.json");
    let out = call(
        conc.to_str().unwrap(),
        &["--rate", "500", "--count", "1000", "--hold", "4"],
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let v = json(&conc);
    assert_all_succeeded(&v, "call", 1000);
    assert_eq!(v["rtp"]["lost"], 0, "{v:#}");
    assert_released(&cpmd);
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    let stops = cdrs(&cpmd).iter().filter(|r| r["record"] == "stop").count();
    assert_eq!(stops, 11_000);
}
