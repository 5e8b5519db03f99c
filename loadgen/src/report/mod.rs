//! Reports of a finished run: the text summary ([`text`]), the JSON file ([`json`]), the
//! self-contained HTML page with inline SVG plots ([`html`]), the live progress line, and the
//! thresholds that set the exit code.

pub mod html;
pub mod json;
pub mod text;

use std::time::Duration;

use crate::driver::{Progress, RunData};
use crate::metrics::{Counter, Quantity, Stats};

/// Limits a run must meet for exit code 0 (`--max-loss`, `--max-p99-ms`, `--min-success`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// RTP loss at most this percentage (runs without RTP meet it).
    pub max_loss_pct: Option<f64>,
    /// p99 of the scenario's primary quantity at most this many milliseconds.
    pub max_p99_ms: Option<f64>,
    /// At least this percentage of attempted sessions succeeded.
    pub min_success_pct: Option<f64>,
}

/// RTP totals of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtpSummary {
    /// Packets sent.
    pub sent: u64,
    /// Packets received (duplicates excluded).
    pub received: u64,
    /// Packets lost.
    pub lost: u64,
    /// `lost / (received + lost)` in percent.
    pub loss_pct: f64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets received out of order.
    pub reordered: u64,
    /// p99 of the interarrival jitter, µs.
    pub jitter_p99_us: Option<u64>,
    /// p99 of the one-way delay, µs.
    pub owd_p99_us: Option<u64>,
}

/// The figures of a `conference` run, from its named counters and quantities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConferenceSummary {
    /// Conferences asked for.
    pub conferences: u64,
    /// Conferences created (the factory's 2xx named a focus).
    pub created: u64,
    /// Participants asked for.
    pub participants: u64,
    /// Participants that joined.
    pub joined: u64,
    /// INVITE → 200 of the participants.
    pub join: Option<Stats>,
    /// RTP packets received from the mixer.
    pub mixer_packets: u64,
    /// Of the mixer's packets, the lost percentage.
    pub loss_pct: f64,
    /// Arrival behind the mixer's 20 ms grid (its tick jitter as the receivers see it).
    pub tick_lateness: Option<Stats>,
    /// `|inter-arrival − 20 ms|`.
    pub interarrival: Option<Stats>,
    /// A talker's burst onset → a receiver's first frame with its tone.
    pub delay: Option<Stats>,
    /// Burst-end tone checks right.
    pub tones_ok: u64,
    /// Burst-end tone checks wrong.
    pub tones_wrong: u64,
    /// Receivers whose every check was right.
    pub receivers_ok: u64,
    /// Receivers checked.
    pub receivers_checked: u64,
}

impl ConferenceSummary {
    /// The summary of a `conference` run, `None` for other scenarios.
    pub fn of(r: &Report) -> Option<ConferenceSummary> {
        use crate::scenario::conference::{notes, receive, JOIN};
        if r.scenario() != "conference" {
            return None;
        }
        let rec = &r.data.recorder;
        let rtp = r.rtp();
        Some(ConferenceSummary {
            conferences: rec.noted(notes::CONFERENCES),
            created: rec.noted(notes::CREATED),
            participants: rec.noted(notes::PARTICIPANTS),
            joined: rec.noted(notes::JOINED),
            join: rec.stats(JOIN),
            mixer_packets: rec.total(Counter::RtpReceived),
            loss_pct: rtp.map_or(0.0, |x| x.loss_pct),
            tick_lateness: rec.stats(receive::TICK_LATENESS),
            interarrival: rec.stats(receive::INTERARRIVAL),
            delay: rec.stats(receive::DELAY),
            tones_ok: rec.noted(notes::TONES_OK),
            tones_wrong: rec.noted(notes::TONES_WRONG),
            receivers_ok: rec.noted(notes::RECEIVERS_OK),
            receivers_checked: rec.noted(notes::RECEIVERS_CHECKED),
        })
    }

    /// The summary as text lines (also the HTML page's).
    pub fn lines(&self) -> Vec<String> {
        let pct = |s: Option<Stats>, p99_only: bool| match s {
            None => "-".to_string(),
            Some(s) if p99_only => format!("p50 {} p99 {}", fmt_ms(s.p50_us), fmt_ms(s.p99_us)),
            Some(s) => format!(
                "p50 {} p99 {} max {}",
                fmt_ms(s.p50_us),
                fmt_ms(s.p99_us),
                fmt_ms(s.max_us)
            ),
        };
        vec![
            format!(
                "conferences: {} of {} created; participants: {} of {} joined, join {}",
                self.created,
                self.conferences,
                self.joined,
                self.participants,
                pct(self.join, true)
            ),
            format!(
                "mixer: {} packets received, loss {:.3} %; tick lateness {}; inter-arrival deviation {}; delay through the mixer {}",
                self.mixer_packets,
                self.loss_pct,
                pct(self.tick_lateness, false),
                pct(self.interarrival, false),
                pct(self.delay, true)
            ),
            format!(
                "tones: {} ok, {} wrong; receivers all right: {} of {}",
                self.tones_ok, self.tones_wrong, self.receivers_ok, self.receivers_checked
            ),
        ]
    }

    /// The summary as a JSON object (times in µs).
    pub fn to_json(&self) -> serde_json::Value {
        let st = |s: Option<Stats>| {
            s.map_or(serde_json::Value::Null, |s| {
                serde_json::json!({"count": s.count, "p50_us": s.p50_us, "p99_us": s.p99_us, "max_us": s.max_us})
            })
        };
        serde_json::json!({
            "conferences": self.conferences,
            "created": self.created,
            "participants": self.participants,
            "joined": self.joined,
            "join": st(self.join),
            "mixer_packets": self.mixer_packets,
            "loss_pct": self.loss_pct,
            "tick_lateness": st(self.tick_lateness),
            "interarrival_dev": st(self.interarrival),
            "delay": st(self.delay),
            "tones_ok": self.tones_ok,
            "tones_wrong": self.tones_wrong,
            "receivers_ok": self.receivers_ok,
            "receivers_checked": self.receivers_checked,
        })
    }
}

/// A finished run with what is needed to print it.
#[derive(Debug, Clone)]
pub struct Report {
    /// `"client"` or `"uas"`.
    pub role: &'static str,
    /// Where the client sent, or where the uas listened.
    pub target: String,
    /// The requested rate (sessions per second), for client roles.
    pub rate_requested: Option<f64>,
    /// The run's figures.
    pub data: RunData,
    /// The limits checked.
    pub thresholds: Thresholds,
    /// The CPU time the generator's process used in the run, if the platform reports it.
    pub cpu: Option<CpuUse>,
}

/// CPU time a process used (getrusage(2)), to show whether the generator was near its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// User time.
    pub user: Duration,
    /// System (kernel) time: for UDP load mostly the network stack.
    pub system: Duration,
}

impl CpuUse {
    /// The time between `before` and `self`.
    pub fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    /// User plus system time as a percentage of one core over `wall`.
    pub fn core_pct(&self, wall: Duration) -> f64 {
        let wall = wall.as_secs_f64();
        if wall > 0.0 {
            100.0 * (self.user + self.system).as_secs_f64() / wall
        } else {
            0.0
        }
    }
}

impl Report {
    /// The scenario's name.
    pub fn scenario(&self) -> &'static str {
        self.data.scenario
    }

    /// Sessions started.
    pub fn attempted(&self) -> u64 {
        self.data.recorder.total(Counter::Started)
    }

    /// Sessions that succeeded.
    pub fn succeeded(&self) -> u64 {
        self.data.recorder.total(Counter::Succeeded)
    }

    /// Sessions that failed.
    pub fn failed(&self) -> u64 {
        self.data.recorder.total(Counter::Failed)
    }

    /// `succeeded / attempted` in percent (100 when nothing was attempted).
    pub fn success_pct(&self) -> f64 {
        match self.attempted() {
            0 => 100.0,
            a => self.succeeded() as f64 * 100.0 / a as f64,
        }
    }

    /// Statistics of a quantity.
    pub fn stats(&self, q: Quantity) -> Option<Stats> {
        self.data.recorder.stats(q)
    }

    /// The RTP totals, if any packet was sent or received.
    pub fn rtp(&self) -> Option<RtpSummary> {
        let r = &self.data.recorder;
        let sent = r.total(Counter::RtpSent);
        let received = r.total(Counter::RtpReceived);
        let lost = r.total(Counter::RtpLost);
        if sent + received + lost == 0 {
            return None;
        }
        let expected = received + lost;
        Some(RtpSummary {
            sent,
            received,
            lost,
            loss_pct: if expected == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / expected as f64
            },
            duplicates: r.total(Counter::RtpDuplicates),
            reordered: r.total(Counter::RtpReordered),
            jitter_p99_us: r.stats(Quantity::RtpJitter).map(|s| s.p99_us),
            owd_p99_us: r.stats(Quantity::RtpOwd).map(|s| s.p99_us),
        })
    }

    /// The thresholds not met, each with its reason; empty when the run passes.
    pub fn violations(&self) -> Vec<String> {
        let t = &self.thresholds;
        let mut out = Vec::new();
        if let Some(min) = t.min_success_pct {
            if self.role == "client" && self.attempted() == 0 {
                out.push("no session was attempted".to_string());
            } else if self.success_pct() < min {
                out.push(format!(
                    "success {:.2} % < --min-success {min} % ({} of {} failed)",
                    self.success_pct(),
                    self.failed(),
                    self.attempted()
                ));
            }
        }
        if let Some(max_ms) = t.max_p99_ms {
            let q = self.data.primary;
            match self.stats(q) {
                None => out.push(format!("no {} sample for --max-p99-ms", q.name())),
                Some(s) if s.p99_us as f64 > max_ms * 1000.0 => out.push(format!(
                    "{} p99 {:.3} ms > --max-p99-ms {max_ms}",
                    q.name(),
                    s.p99_us as f64 / 1000.0
                )),
                Some(_) => {}
            }
        }
        if let (Some(max), Some(rtp)) = (t.max_loss_pct, self.rtp()) {
            if rtp.loss_pct > max {
                out.push(format!(
                    "RTP loss {:.3} % > --max-loss {max} % ({} of {} lost)",
                    rtp.loss_pct,
                    rtp.lost,
                    rtp.received + rtp.lost
                ));
            }
        }
        out
    }
}

/// `1.234 ms` style.
pub fn fmt_ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// The live progress line (no newline): elapsed, rate, in flight, results, p99.
pub fn progress_line(scenario: &str, p: &Progress) -> String {
    let p99 = p.p99_last_second_us.map_or_else(|| "-".to_string(), fmt_ms);
    format!(
        "[{:>5}s] {scenario}: {}/s  in flight {}  ok {}  failed {}  p99 {p99}",
        p.elapsed.as_secs(),
        p.rate_last_second,
        p.in_flight,
        p.succeeded,
        p.failed,
    )
}

/// Seconds with three decimals.
pub fn fmt_secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::Recorder;
    use std::time::Instant;

    /// A report of 10 sessions (9 ok, 1 failed), OPTIONS latencies 1..=9 ms, and RTP figures.
    pub(crate) fn sample(rtp: bool) -> Report {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        for i in 0..10u64 {
            let at = t0 + Duration::from_millis(i * 150);
            r.add(Counter::Started, 1, at);
            if i < 9 {
                r.add(Counter::Succeeded, 1, at);
                r.record_us(Quantity::Request("OPTIONS"), (i + 1) * 1000, at);
            } else {
                r.fail("408 Request Timeout", at);
            }
        }
        if rtp {
            r.add(Counter::RtpSent, 1000, t0);
            r.add(Counter::RtpReceived, 990, t0);
            r.add(Counter::RtpLost, 10, t0 + Duration::from_secs(1));
            r.record_us(Quantity::RtpJitter, 300, t0);
            r.record_us(Quantity::RtpOwd, 800, t0);
        }
        r.note("retransmissions", 3);
        r.finish(t0 + Duration::from_millis(1_600));
        Report {
            role: "client",
            target: "127.0.0.1:5060".into(),
            rate_requested: Some(10.0),
            data: RunData {
                scenario: "options",
                primary: Quantity::Request("OPTIONS"),
                recorder: r,
                start_window: Duration::from_secs(1),
                elapsed: Duration::from_millis(1_600),
                summary_lines: vec!["extra line".into()],
            },
            thresholds: Thresholds::default(),
            cpu: Some(CpuUse {
                user: Duration::from_millis(250),
                system: Duration::from_millis(150),
            }),
        }
    }

    #[test]
    fn thresholds_set_violations() {
        let mut r = sample(true);
        assert!(r.violations().is_empty());
        r.thresholds.min_success_pct = Some(90.0);
        assert!(r.violations().is_empty(), "exactly 90 % is met");
        r.thresholds.min_success_pct = Some(95.0);
        let v = r.violations();
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("90.00 %"), "{v:?}");
        r.thresholds = Thresholds {
            max_p99_ms: Some(5.0),
            ..Thresholds::default()
        };
        assert!(r.violations()[0].contains("request_options p99"));
        r.thresholds = Thresholds {
            max_loss_pct: Some(0.5),
            ..Thresholds::default()
        };
        assert!(r.violations()[0].contains("RTP loss 1.000 %"));
        r.thresholds.max_loss_pct = Some(1.0);
        assert!(r.violations().is_empty());
        // No RTP at all: the loss limit is met.
        let mut r = sample(false);
        r.thresholds.max_loss_pct = Some(0.0);
        assert!(r.violations().is_empty());
        assert!(r.rtp().is_none());
    }

    #[test]
    fn rtp_summary() {
        let r = sample(true).rtp().unwrap();
        assert_eq!((r.sent, r.received, r.lost), (1000, 990, 10));
        assert!((r.loss_pct - 1.0).abs() < 1e-9);
        assert_eq!(r.jitter_p99_us, Some(300));
        assert_eq!(r.owd_p99_us, Some(800));
    }

    #[test]
    fn progress_line_shape() {
        let p = Progress {
            elapsed: Duration::from_secs(12),
            attempted: 100,
            succeeded: 95,
            failed: 1,
            in_flight: 4,
            rate_last_second: 10,
            p99_last_second_us: Some(1_500),
        };
        let l = progress_line("options", &p);
        assert_eq!(
            l,
            "[   12s] options: 10/s  in flight 4  ok 95  failed 1  p99 1.500 ms"
        );
    }
}
