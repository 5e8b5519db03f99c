//! Calls through a real `cpmd`: a `uas` registered there, its charging records, and the check
//! that nothing is left once the load stopped.

use std::time::Duration;

use cpm_tests::Cpmd;
use serde_json::Value;

use super::Uas;

/// The charging records cpmd wrote, one JSON object per line.
pub fn cdrs(cpmd: &Cpmd) -> Vec<Value> {
    let path = cpmd.dir().join("data").join("cdr.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a CDR line is JSON"))
        .collect()
}

/// Waits until cpmd holds no session, leg or relay port, and says what it holds otherwise.
pub fn assert_released(cpmd: &Cpmd) {
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
pub fn registered_uas(cpmd: &Cpmd, users: &str, rtp: &str, json: &str) -> Uas {
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
