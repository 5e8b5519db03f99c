//! The `--json FILE` report: the run's totals, every quantity's percentiles, RTP totals, the
//! per-second series and the threshold verdict.
//!
//! ```text
//! { "scenario", "role", "target", "rate_requested", "rate_achieved", "elapsed_s",
//!   "attempted", "succeeded", "failed", "success_pct", "failures": {reason: n},
//!   "quantities": { name: {count, min_us, mean_us, p50_us, p90_us, p99_us, p999_us, max_us} },
//!   "rtp": null | {sent, received, lost, loss_pct, duplicates, reordered, jitter_p99_us, owd_p99_us},
//!   "conference": null | {conferences, created, participants, joined, join, mixer_packets,
//!                         loss_pct, tick_lateness, interarrival_dev, delay, tones_ok,
//!                         tones_wrong, receivers_ok, receivers_checked}   (conference runs;
//!                         join, tick_lateness, ... are {count, p50_us, p99_us, max_us}),
//!   "counters": {name: n},
//!   "series": { "second": [..], "started": [..], "succeeded": [..], "failed": [..],
//!               "rtp_sent": [..], "rtp_received": [..], "rtp_lost": [..], ...,
//!               "quantities": { name: {count: [..], p50_us: [..], p99_us: [..], max_us: [..]} } },
//!   "thresholds": {max_loss_pct, max_p99_ms, min_success_pct, passed, violations: [..]} }
//! ```

use serde_json::{json, Map, Value};

use super::Report;
use crate::metrics::Counter;

/// The report as a JSON value.
pub fn to_json(r: &Report) -> Value {
    let d = &r.data;
    let rec = &d.recorder;
    let mut quantities = Map::new();
    let mut q_series = Map::new();
    for q in rec.quantities() {
        if let Some(s) = rec.stats(q) {
            quantities.insert(
                q.name(),
                json!({
                    "count": s.count,
                    "min_us": s.min_us,
                    "mean_us": (s.mean_us * 10.0).round() / 10.0,
                    "p50_us": s.p50_us,
                    "p90_us": s.p90_us,
                    "p99_us": s.p99_us,
                    "p999_us": s.p999_us,
                    "max_us": s.max_us,
                }),
            );
        }
        let pts = rec.series(q);
        q_series.insert(
            q.name(),
            json!({
                "count": pts.iter().map(|p| p.count).collect::<Vec<_>>(),
                "p50_us": pts.iter().map(|p| p.p50_us).collect::<Vec<_>>(),
                "p99_us": pts.iter().map(|p| p.p99_us).collect::<Vec<_>>(),
                "max_us": pts.iter().map(|p| p.max_us).collect::<Vec<_>>(),
            }),
        );
    }
    let mut series = Map::new();
    let rows = rec.counter_series();
    series.insert(
        "second".into(),
        json!((0..rows.len() as u64).collect::<Vec<_>>()),
    );
    for c in Counter::ALL {
        let col: Vec<u64> = rows.iter().map(|row| row[c as usize]).collect();
        series.insert(c.name().into(), json!(col));
    }
    series.insert("quantities".into(), Value::Object(q_series));
    let rtp = r.rtp().map_or(Value::Null, |x| {
        json!({
            "sent": x.sent,
            "received": x.received,
            "lost": x.lost,
            "loss_pct": x.loss_pct,
            "duplicates": x.duplicates,
            "reordered": x.reordered,
            "jitter_p99_us": x.jitter_p99_us,
            "owd_p99_us": x.owd_p99_us,
        })
    });
    let violations = r.violations();
    json!({
        "scenario": r.scenario(),
        "role": r.role,
        "target": r.target,
        "rate_requested": r.rate_requested,
        "rate_achieved": d.rate_achieved(),
        "start_window_s": d.start_window.as_secs_f64(),
        "elapsed_s": d.elapsed.as_secs_f64(),
        "attempted": r.attempted(),
        "succeeded": r.succeeded(),
        "failed": r.failed(),
        "success_pct": r.success_pct(),
        "failures": rec.failures(),
        "quantities": quantities,
        "rtp": rtp,
        "conference": super::ConferenceSummary::of(r).map(|c| c.to_json()),
        "counters": rec.notes(),
        "summary": d.summary_lines,
        "loadgen_cpu": r.cpu.map(|c| serde_json::json!({
            "user_s": c.user.as_secs_f64(),
            "system_s": c.system.as_secs_f64(),
            "core_pct": c.core_pct(d.elapsed),
        })),
        "series": series,
        "thresholds": {
            "max_loss_pct": r.thresholds.max_loss_pct,
            "max_p99_ms": r.thresholds.max_p99_ms,
            "min_success_pct": r.thresholds.min_success_pct,
            "passed": violations.is_empty(),
            "violations": violations,
        },
    })
}

/// Writes the JSON report to `path`.
pub fn write(r: &Report, path: &std::path::Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&to_json(r)).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn has_the_contract_fields() {
        let v = to_json(&sample(true));
        assert_eq!(v["scenario"], "options");
        assert_eq!(v["attempted"], 10);
        assert_eq!(v["succeeded"], 9);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["rate_achieved"], 10.0);
        let q = &v["quantities"]["request_options"];
        for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
            assert!(q[k].is_u64(), "{k} in {q}");
        }
        let max = q["max_us"].as_u64().unwrap();
        assert!((9000..=9009).contains(&max), "{max}");
        let rtp = &v["rtp"];
        for k in [
            "sent",
            "received",
            "lost",
            "loss_pct",
            "jitter_p99_us",
            "owd_p99_us",
        ] {
            assert!(!rtp[k].is_null(), "{k} in {rtp}");
        }
        assert_eq!(v["failures"]["408 Request Timeout"], 1);
        assert_eq!(v["series"]["started"], json!([7, 3]));
        assert_eq!(
            v["series"]["quantities"]["request_options"]["count"],
            json!([7, 2])
        );
        assert_eq!(v["thresholds"]["passed"], true);
        assert_eq!(v["counters"]["retransmissions"], 3);
        assert_eq!(v["loadgen_cpu"]["user_s"], 0.25);
        assert_eq!(v["loadgen_cpu"]["core_pct"], 25.0);
    }

    #[test]
    fn rtp_is_null_without_media() {
        let v = to_json(&sample(false));
        assert!(v["rtp"].is_null());
    }
}
