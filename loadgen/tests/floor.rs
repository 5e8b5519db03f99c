//! Half-duplex (push-to-talk) conferences through the real `cpmd` (issue 6, decision 0015):
//! `cpm-loadgen conference --half-duplex` creates the conference at
//! `sip:conf-factory@...;floor=half-duplex`, every participant offers BFCP and connects to
//! cpmd's floor control server, talkers request the floor at each burst and release it after.
//! Every talker sends its tone in every burst: at each burst's end every receiver must hear the
//! floor holder only.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use support::cpmd::assert_released;
use support::{assert_all_succeeded, json, run, TempDir};

#[test]
fn one_half_duplex_conference_of_five_hears_only_the_floor_holder() {
    let cpmd = Cpmd::builder().media_ports(40).spawn();
    let dir = TempDir::new();
    let report = dir.path().join("floor.json");
    let target = cpmd.sip_addr().to_string();
    let out = run(
        &[
            "conference",
            "--target",
            &target,
            "--conferences",
            "1",
            "--participants",
            "5",
            "--talkers",
            "3",
            "--duration",
            "4",
            "--half-duplex",
            "--register",
            "--json",
            report.to_str().unwrap(),
            "--max-loss",
            "0",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{out:?}\ncpmd log:\n{}", cpmd.log());
    let r = json(&report);
    assert_all_succeeded(&r, "conference", 5);
    let (c, n) = (&r["conference"], &r["counters"]);
    // Two bursts, each held by one talker (the first granted at once, the second at the first
    // one's release), the third granted at the end of the second burst.
    assert_eq!(n["floor_grants"], 3, "{n}");
    assert!(n["floor_denials"].is_null(), "{n}");
    assert!(n["floor_free_bursts"].is_null(), "{n}");
    assert!(n["answers_without_bfcp"].is_null(), "{n}");
    // Every receiver checks the 3 talkers in both bursts: the holder present (unless it is
    // the receiver), the other two (sending all the same) never audible.
    assert_eq!(c["tones_wrong"], 0, "{c:#}\n{n}");
    assert_eq!(c["tones_ok"], 2 * 5 * 3, "{c:#}");
    assert_eq!(r["rtp"]["lost"], 0, "{}", r["rtp"]);
    assert_released(&cpmd);
}
