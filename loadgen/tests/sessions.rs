//! Calls through the real `cpmd` (issue 4): `cpm-loadgen call` → cpmd (B2BUA, media anchored
//! on its relay) → `cpm-loadgen uas` users registered there. Every RTP packet is counted at
//! both ends and by cpmd's relay; after the load, no session, leg or relay port remains; each
//! call leaves a start and a stop charging record with its media counters.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use serde_json::Value;
use support::cpmd::{assert_released, cdrs, registered_uas};
use support::{assert_all_succeeded, json, quantity, run, TempDir};

const T: Duration = Duration::from_secs(180);

#[test]
fn calls_through_cpmd_relay_every_packet_both_ways() {
    // A reserved relay port range (as every test cpmd's), apart from the other tests'.
    let cpmd = Cpmd::spawn(&[]);
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
    // The caller's run ends with the last BYE's 200; what the callee sent just before that BYE
    // reached it is relayed after the caller stopped reading: up to a tick of the last call
    // is seen by nobody (cpmd's count below still has it). The uas runs on, so the callee's
    // side is exact.
    for (sent, rx, who, unseen) in [(sent_a, &s, "callee", 0), (sent_b, &c, "caller", 2)] {
        let late = ["rtp_after_call", "rtp_from_elsewhere"]
            .iter()
            .map(|k| rx["counters"][k].as_u64().unwrap_or(0))
            .sum::<u64>();
        let seen = rx["rtp"]["received"].as_u64().unwrap() + late;
        assert!(
            seen <= sent && sent - seen <= unseen,
            "{who}: {seen} of {sent} seen: {}\n{}",
            rx["rtp"],
            rx["counters"]
        );
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
