//! Ad-hoc conferences through the real `cpmd` (issue 6): `cpm-loadgen conference` creates a
//! conference at cpmd's factory URI, the other participants join its focus URI, and talkers
//! send tones of their own in bursts. Every receiver must hear every other talker at the end
//! of each burst and never itself, with no RTP lost; afterwards cpmd holds no session, leg or
//! port.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use serde_json::Value;
use support::cpmd::assert_released;
use support::{assert_all_succeeded, json, run, TempDir};

const T: Duration = Duration::from_secs(120);

/// Runs one conference of `participants` (3 talkers, 4 s: two 1 s bursts) and returns the
/// JSON report after checking what every run must show.
fn conference(participants: u64) -> Value {
    let cpmd = Cpmd::builder()
        .media_ports(4 * participants as u16 + 8)
        .spawn();
    let dir = TempDir::new();
    let report = dir.path().join("conf.json");
    let target = cpmd.sip_addr().to_string();
    let n = participants.to_string();
    let out = run(
        &[
            "conference",
            "--target",
            &target,
            "--conferences",
            "1",
            "--participants",
            &n,
            "--talkers",
            "3",
            "--duration",
            "4",
            "--register",
            "--json",
            report.to_str().unwrap(),
            "--max-loss",
            "0",
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let r = json(&report);
    assert_all_succeeded(&r, "conference", participants);
    let c = &r["conference"];
    assert_eq!(c["created"], 1, "{c:#}");
    assert_eq!(c["joined"], participants, "{c:#}");
    assert_eq!(
        r["counters"]["focus_contacts_without_isfocus"],
        Value::Null,
        "the factory's 2xx names the focus with isfocus (RFC 4579 §4.1)"
    );
    // Two bursts; every receiver checks the 3 talkers (its own tone among them, if it talks).
    let checks = 2 * participants * 3;
    assert_eq!(c["tones_wrong"], 0, "{c:#}\n{}", r["counters"]);
    assert_eq!(c["tones_ok"], checks, "{c:#}");
    assert_eq!(c["receivers_ok"], participants, "{c:#}");
    assert_eq!(r["rtp"]["lost"], 0, "{}", r["rtp"]);
    assert_eq!(c["loss_pct"], 0.0);
    // Each receiver saw each other talker's onset in each burst.
    let onsets = 2 * (3 * 2 + (participants - 3) * 3);
    assert_eq!(c["delay"]["count"], onsets, "{c:#}");
    // 4 s of a 20 ms mix to everyone, less the settling of the joins.
    let packets = c["mixer_packets"].as_u64().unwrap();
    assert!(packets >= participants * 150, "{packets}: {c:#}");
    assert_released(&cpmd);
    r
}

#[test]
fn three_participants_hear_each_other_and_not_themselves() {
    let r = conference(3);
    eprintln!("{:#}", r["conference"]);
}

#[test]
fn twenty_participants_with_three_talkers() {
    let r = conference(20);
    eprintln!("{:#}", r["conference"]);
}
