//! The loss cpm-loadgen reports is exact: `call` → a test relay (`support::relay`) → `uas`,
//! where the relay anchors each call's media and drops every 10th RTP packet of each call and
//! direction. Checked, counted exactly from the `--json` reports against what the relay did:
//!
//! - with `uas --rtp generate`, both views: the caller's `rtp.lost` equals the drops toward it,
//!   the callee's (the uas's own report) the drops toward it; each side received exactly what
//!   the relay forwarded to it and sent exactly what reached the relay;
//! - with `uas --rtp echo`, the caller's view of its own stream lost on the way out and back,
//!   and the `--max-loss` threshold turning that loss into exit code 1.
//!
//! A drop after the last packet a receiver gets cannot be seen (RFC 3550 §6.4.1: expected =
//! highest − base + 1), so the expected loss is `RelayLog::detectable_loss`: what was dropped
//! less at most one drop per stream and direction (never two drops in a row). A 2 s call sends
//! about 100 packets, so the 100th is often dropped and that case is exercised too.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::relay::{Dir, Relay, RelayLog};
use support::{assert_all_succeeded, json, run, Output, TempDir, Uas};

const T: Duration = Duration::from_secs(60);
const CALLS: u64 = 4;
const DROP_EVERY: u64 = 10;

/// `cpm-loadgen call` through `relay`: CALLS calls held 2 s (about 100 packets each way).
fn calls_through(relay: &Relay, report: &std::path::Path, extra: &[&str]) -> Output {
    let target = relay.addr().to_string();
    let count = CALLS.to_string();
    let mut args = vec![
        "call",
        "--target",
        &target,
        "--rate",
        "4",
        "--count",
        &count,
        "--hold",
        "2",
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, T)
}

fn rtp(v: &Value, k: &str) -> u64 {
    v["rtp"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("rtp.{k}: {v:#}"))
}

/// The relay saw every call's INVITE, ACK and BYE go to the callee, the ACK and BYE addressed
/// to the Contact it put in the 200 (RFC 3261 §12.2.1.1).
fn assert_relayed_calls(log: &RelayLog) {
    assert_eq!(log.calls as u64, CALLS, "{log:?}");
    for m in ["INVITE", "ACK", "BYE"] {
        let requests: Vec<_> = log
            .messages(Dir::ToCallee)
            .filter(|r| r.method().is_some_and(|x| x.as_str() == m))
            .collect();
        assert_eq!(requests.len() as u64, CALLS, "{m} through the relay");
        if m != "INVITE" {
            for r in requests {
                let uri = r.request_uri().unwrap();
                assert!(uri.starts_with(b"sip:relay@"), "{m} to {uri:?}");
            }
        }
    }
    assert_eq!(log.unroutable, 0, "{log:?}");
    assert_eq!(log.unparsable, 0, "{log:?}");
}

/// The loss a receiver at the end of `toward` reports: exactly what the relay dropped on the
/// way there before a later packet it forwarded, which is all of the `dropped` but at most
/// `hidden` per call (the drops after the last packet delivered).
fn assert_exact_loss(log: &RelayLog, toward: Dir, dropped: u64, hidden: u64, reported: &Value) {
    let expected = log.detectable_loss(toward);
    assert!(
        expected <= dropped && expected + hidden * CALLS >= dropped,
        "{toward:?}: {expected} detectable of {dropped} dropped"
    );
    assert!(expected > 0, "{toward:?}: nothing dropped");
    assert_eq!(rtp(reported, "lost"), expected, "{toward:?}: {reported:#}");
    assert_eq!(rtp(reported, "duplicates"), 0, "{reported:#}");
    let received = rtp(reported, "received");
    let pct = reported["rtp"]["loss_pct"].as_f64().unwrap();
    let want = expected as f64 * 100.0 / (received + expected) as f64;
    assert!((pct - want).abs() < 1e-6, "loss_pct {pct} != {want}");
}

#[test]
fn generated_streams_lose_exactly_what_the_relay_dropped_both_ways() {
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
    let relay = Relay::lossy(uas.addr, Some(DROP_EVERY));
    let out = calls_through(&relay, &client, &[]);
    let u = uas.stop();
    let log = relay.stop();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(u.code, 0, "{u:?}");
    let c = json(&client);
    let s = json(&server);
    assert_all_succeeded(&c, "call", CALLS);
    assert_all_succeeded(&s, "uas", CALLS);
    assert_relayed_calls(&log);
    let (to_callee, to_caller) = (Dir::ToCallee as usize, Dir::ToCaller as usize);
    // Everything each side sent reached the relay; it received exactly what was forwarded.
    assert_eq!(
        rtp(&c, "sent"),
        log.forwarded[to_callee] + log.dropped[to_callee],
        "{log:?}"
    );
    assert_eq!(rtp(&s, "received"), log.forwarded[to_callee], "{s:#}");
    assert_eq!(
        rtp(&s, "sent"),
        log.forwarded[to_caller] + log.dropped[to_caller],
        "{log:?}"
    );
    assert_eq!(rtp(&c, "received"), log.forwarded[to_caller], "{c:#}");
    assert!(rtp(&c, "sent") >= CALLS * 99, "{c:#}");
    // The callee's view (its own report) and the caller's.
    assert_exact_loss(&log, Dir::ToCallee, log.dropped[to_callee], 1, &s);
    assert_exact_loss(&log, Dir::ToCaller, log.dropped[to_caller], 1, &c);
}

#[test]
fn echoed_streams_lose_exactly_what_the_relay_dropped_out_and_back() {
    let dir = TempDir::new();
    let client = dir.path().join("client.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--rtp",
        "echo",
        "--duration",
        "60",
    ]);
    let relay = Relay::lossy(uas.addr, Some(DROP_EVERY));
    let out = calls_through(&relay, &client, &["--max-loss", "1"]);
    let u = uas.stop();
    let log = relay.stop();
    assert_eq!(u.code, 0, "{u:?}");
    assert!(
        u.stdout
            .contains(&format!("calls: {CALLS} ended by BYE, 0 still up")),
        "{u:?}"
    );
    let c = json(&client);
    assert_all_succeeded(&c, "call", CALLS);
    assert_relayed_calls(&log);
    let (to_callee, to_caller) = (Dir::ToCallee as usize, Dir::ToCaller as usize);
    assert_eq!(
        rtp(&c, "sent"),
        log.forwarded[to_callee] + log.dropped[to_callee]
    );
    // The uas echoed every packet it got, once.
    assert_eq!(
        log.forwarded[to_callee],
        log.forwarded[to_caller] + log.dropped[to_caller],
        "{log:?}"
    );
    assert_eq!(rtp(&c, "received"), log.forwarded[to_caller], "{c:#}");
    let dropped = log.dropped[to_callee] + log.dropped[to_caller];
    // At most one drop each way can follow the last packet that made the round trip.
    assert_exact_loss(&log, Dir::ToCaller, dropped, 2, &c);
    // About 2 packets in 7 lost: far above --max-loss 1.
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("cpm-loadgen: threshold not met: RTP loss"),
        "{out:?}"
    );
    assert_eq!(c["thresholds"]["passed"], false, "{c:#}");
}
