//! The end-of-run text summary.

use std::fmt::Write;

use super::{fmt_secs, Report};

/// The summary, several lines, ending with a newline.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let d = &r.data;
    let _ = writeln!(
        s,
        "cpm-loadgen {} ({}, {}): {} attempted, {} succeeded, {} failed ({:.2} % success)",
        r.scenario(),
        r.role,
        r.target,
        r.attempted(),
        r.succeeded(),
        r.failed(),
        r.success_pct()
    );
    match r.rate_requested {
        Some(rate) => {
            let _ = writeln!(
                s,
                "rate: requested {rate}/s, achieved {:.1}/s over {}; run {}",
                d.rate_achieved(),
                fmt_secs(d.start_window),
                fmt_secs(d.elapsed)
            );
        }
        None => {
            let _ = writeln!(s, "run {}", fmt_secs(d.elapsed));
        }
    }
    let quantities: Vec<_> = d.recorder.quantities().collect();
    if !quantities.is_empty() {
        let _ = writeln!(
            s,
            "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}   (ms)",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for q in quantities {
            if let Some(st) = d.recorder.stats(q) {
                let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
                let _ = writeln!(
                    s,
                    "{:<20} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    q.name(),
                    st.count,
                    ms(st.p50_us),
                    ms(st.p90_us),
                    ms(st.p99_us),
                    ms(st.p999_us),
                    ms(st.max_us)
                );
            }
        }
    }
    if !d.recorder.failures().is_empty() {
        let parts: Vec<String> = d
            .recorder
            .failures()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(s, "failures: {}", parts.join(", "));
    }
    if let Some(rtp) = r.rtp() {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), super::fmt_ms);
        let _ = writeln!(
            s,
            "rtp: sent {} received {} lost {} ({:.3} %) duplicates {} reordered {}; jitter p99 {}, one-way delay p99 {}",
            rtp.sent,
            rtp.received,
            rtp.lost,
            rtp.loss_pct,
            rtp.duplicates,
            rtp.reordered,
            opt(rtp.jitter_p99_us),
            opt(rtp.owd_p99_us)
        );
    }
    if let Some(c) = super::ConferenceSummary::of(r) {
        for line in c.lines() {
            let _ = writeln!(s, "{line}");
        }
    }
    for line in &d.summary_lines {
        let _ = writeln!(s, "{line}");
    }
    if let Some(cpu) = r.cpu {
        let _ = writeln!(
            s,
            "loadgen cpu: {:.2} s user + {:.2} s system in {:.1} s ({:.0} % of one core)",
            cpu.user.as_secs_f64(),
            cpu.system.as_secs_f64(),
            d.elapsed.as_secs_f64(),
            cpu.core_pct(d.elapsed)
        );
    }
    let notes: Vec<String> = d
        .recorder
        .notes()
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "counters: {}", notes.join(", "));
    }
    let v = r.violations();
    if v.is_empty() {
        let _ = writeln!(s, "thresholds: met");
    } else {
        let _ = writeln!(s, "thresholds: NOT met: {}", v.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn summary_names_every_figure() {
        let s = summary(&sample(true));
        assert!(s.starts_with(
            "cpm-loadgen options (client, 127.0.0.1:5060): 10 attempted, 9 succeeded, 1 failed (90.00 % success)"
        ), "{s}");
        assert!(s.contains("achieved 10.0/s over 1.000 s"), "{s}");
        assert!(
            s.contains("loadgen cpu: 0.25 s user + 0.15 s system in 1.6 s (25 % of one core)"),
            "{s}"
        );
        assert!(s.contains("request_options"), "{s}");
        assert!(s.contains("failures: 408 Request Timeout: 1"), "{s}");
        assert!(
            s.contains("rtp: sent 1000 received 990 lost 10 (1.000 %)"),
            "{s}"
        );
        assert!(s.contains("extra line"), "{s}");
        assert!(s.contains("retransmissions 3"), "{s}");
        assert!(s.ends_with("thresholds: met\n"), "{s}");
    }
}
