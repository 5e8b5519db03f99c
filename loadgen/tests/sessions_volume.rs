//! The volume test of calls through the real `cpmd` (issue 4): after 10,000 sequential and
//! 1,000 concurrent calls, no session, leg or relay port remains. A test binary of its own,
//! so that its load never runs beside another test's timing-sensitive counts.

mod support;

use std::time::Duration;

use cpm_tests::Cpmd;
use support::{assert_all_succeeded, json, run, TempDir};

use support::cpmd::{assert_released, cdrs, registered_uas};

const T: Duration = Duration::from_secs(180);

/// Issue 4: after 10,000 sequential and 1,000 concurrent calls, zero ports, legs and session
/// actors remain. RTP at one packet per 200 ms keeps the relay's load small (a debug build).
#[test]
fn ten_thousand_sequential_and_a_thousand_concurrent_calls_leave_nothing_behind() {
    // 1,000 calls hold 4,000 relay ports (two RTP/RTCP pairs a leg). This test is about
    // resources, not capacity: a debug build behind at 500 calls/s must not shed any (overload
    // control off; tests/tests/e2e_overload.rs tests it).
    // 5,000 ports, reserved like every test cpmd's range (no other test, in this process or
    // another, binds them meanwhile).
    let cpmd = Cpmd::builder()
        .media_ports(5000)
        .args(&["--cdr-interim", "0", "--overload-delay", "0"])
        .spawn();
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
