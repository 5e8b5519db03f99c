//! Measures of one run: an hdrhistogram per [`Quantity`] (whole run), a per-second time series
//! of each (count, p50, p99, max), counters per second ([`Counter`]), and failures by reason.
//!
//! All values are microseconds. Time is an input: every call takes `now`, and the second a
//! sample belongs to is counted from the recorder's `start`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpm_engine::sip::Method;
use hdrhistogram::Histogram;

/// Largest value a histogram holds exactly (60 s); larger samples are clamped to it.
pub const MAX_TRACKED_US: u64 = 60_000_000;

/// Significant decimal digits of every histogram (0.1 % resolution).
const SIGFIG: u8 = 3;

/// A measured quantity; each has its own histogram and time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// First send of a request → its final response, per method (`"OPTIONS"`, ...).
    Request(&'static str),
    /// INVITE sent → 200 received.
    CallSetup,
    /// First REGISTER sent → 200, including the digest round trip.
    Registration,
    /// MESSAGE send time (stamped in the body) → reception at the receiving side.
    MessageDelivery,
    /// RTP one-way delay (send stamp in the payload → reception).
    RtpOwd,
    /// RTP interarrival jitter (RFC 3550 §6.4.1), sampled per received packet.
    RtpJitter,
    /// A quantity of a later scenario (e.g. `"msrp_delivery"`, `"conference_join"`).
    Custom(&'static str),
}

impl Quantity {
    /// The request latency quantity of `method`.
    pub fn request(method: &Method) -> Quantity {
        Quantity::Request(method.known_str().unwrap_or("OTHER"))
    }

    /// The name used in reports (`request_options`, `call_setup`, ...).
    pub fn name(&self) -> String {
        match self {
            Quantity::Request(m) => format!("request_{}", m.to_ascii_lowercase()),
            Quantity::CallSetup => "call_setup".into(),
            Quantity::Registration => "registration".into(),
            Quantity::MessageDelivery => "message_delivery".into(),
            Quantity::RtpOwd => "rtp_owd".into(),
            Quantity::RtpJitter => "rtp_jitter".into(),
            Quantity::Custom(n) => (*n).into(),
        }
    }
}

/// Per-second counters (also kept as run totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Sessions started.
    Started,
    /// Sessions that succeeded.
    Succeeded,
    /// Sessions that failed.
    Failed,
    /// RTP packets sent.
    RtpSent,
    /// RTP packets received (duplicates excluded).
    RtpReceived,
    /// RTP packets lost (expected − received, RFC 3550 §6.4.1).
    RtpLost,
    /// RTP packets received more than once.
    RtpDuplicates,
    /// RTP packets received after a later sequence number.
    RtpReordered,
}

impl Counter {
    /// Every counter, in the order of [`CounterRow`].
    pub const ALL: [Counter; 8] = [
        Counter::Started,
        Counter::Succeeded,
        Counter::Failed,
        Counter::RtpSent,
        Counter::RtpReceived,
        Counter::RtpLost,
        Counter::RtpDuplicates,
        Counter::RtpReordered,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Started => "started",
            Counter::Succeeded => "succeeded",
            Counter::Failed => "failed",
            Counter::RtpSent => "rtp_sent",
            Counter::RtpReceived => "rtp_received",
            Counter::RtpLost => "rtp_lost",
            Counter::RtpDuplicates => "rtp_duplicates",
            Counter::RtpReordered => "rtp_reordered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One value per [`Counter`], indexed by `Counter as usize`.
pub type CounterRow = [u64; Counter::ALL.len()];

/// One second of one quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    /// Samples in this second.
    pub count: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest sample, µs.
    pub max_us: u64,
}

/// Whole-run statistics of one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Samples.
    pub count: u64,
    /// Smallest, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGFIG).expect("valid histogram bounds")
}

/// One quantity: the whole-run histogram, the histogram of the current second, closed seconds.
#[derive(Debug, Clone)]
struct Track {
    total: Histogram<u64>,
    second: Histogram<u64>,
    /// The second `second` collects.
    current: u64,
    /// Closed seconds, index = second of the run.
    series: Vec<Point>,
}

impl Track {
    fn new(current: u64) -> Track {
        Track {
            total: new_histogram(),
            second: new_histogram(),
            current,
            series: Vec::new(),
        }
    }

    /// Closes the current second if `s` is later, so that `s` can be recorded.
    fn roll_to(&mut self, s: u64) {
        if s <= self.current {
            return;
        }
        self.close_current();
        self.current = s;
    }

    fn close_current(&mut self) {
        let at = self.current as usize;
        self.series.resize(at, Point::default());
        let h = &self.second;
        self.series.push(if h.is_empty() {
            Point::default()
        } else {
            Point {
                count: h.len(),
                p50_us: h.value_at_quantile(0.50),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            }
        });
        self.second.reset();
    }
}

/// All measures of one run (or of one thread of it; see [`Recorder::merge`]).
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    tracks: Vec<(Quantity, Track)>,
    totals: CounterRow,
    counter_series: Vec<CounterRow>,
    failures: BTreeMap<String, u64>,
    notes: BTreeMap<String, u64>,
    finished: bool,
}

impl Recorder {
    /// A recorder whose second 0 starts at `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            tracks: Vec::new(),
            totals: [0; Counter::ALL.len()],
            counter_series: Vec::new(),
            failures: BTreeMap::new(),
            notes: BTreeMap::new(),
            finished: false,
        }
    }

    /// The instant second 0 starts.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The second of the run `now` falls in.
    pub fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// Records one sample of `q`.
    pub fn record(&mut self, q: Quantity, value: Duration, now: Instant) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.record_us(q, us, now);
    }

    /// Records one sample of `q`, in microseconds (clamped to 1 µs ..= [`MAX_TRACKED_US`]).
    pub fn record_us(&mut self, q: Quantity, us: u64, now: Instant) {
        let s = self.second_of(now);
        let track = self.track_mut(q, s);
        track.roll_to(s);
        let v = us.clamp(1, MAX_TRACKED_US);
        track.total.saturating_record(v);
        track.second.saturating_record(v);
    }

    fn track_mut(&mut self, q: Quantity, s: u64) -> &mut Track {
        let pos = match self.tracks.iter().position(|(k, _)| *k == q) {
            Some(p) => p,
            None => {
                self.tracks.push((q, Track::new(s)));
                self.tracks.len() - 1
            }
        };
        &mut self.tracks[pos].1
    }

    /// Adds `n` to a counter, in the second of `now`.
    pub fn add(&mut self, c: Counter, n: u64, now: Instant) {
        let s = self.second_of(now) as usize;
        if self.counter_series.len() <= s {
            self.counter_series.resize(s + 1, [0; Counter::ALL.len()]);
        }
        self.counter_series[s][c.index()] += n;
        self.totals[c.index()] += n;
    }

    /// A failed session, with its reason (`"408 Request Timeout"`, `"unfinished"`, ...).
    pub fn fail(&mut self, reason: &str, now: Instant) {
        self.add(Counter::Failed, 1, now);
        *self.failures.entry(reason.to_string()).or_default() += 1;
    }

    /// Adds `n` to a named counter that has no time series (retransmissions, parse errors, ...).
    pub fn note(&mut self, name: &str, n: u64) {
        *self.notes.entry(name.to_string()).or_default() += n;
    }

    /// Closes every second before the one `now` falls in (call at least once a second).
    pub fn tick(&mut self, now: Instant) {
        let s = self.second_of(now);
        for (_, t) in &mut self.tracks {
            t.roll_to(s);
        }
        if self.counter_series.len() < s as usize {
            self.counter_series
                .resize(s as usize, [0; Counter::ALL.len()]);
        }
    }

    /// Closes the current second of every quantity; the recorder is final afterwards.
    pub fn finish(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.tick(now);
        for (_, t) in &mut self.tracks {
            t.close_current();
        }
        self.finished = true;
    }

    /// Whole-run statistics of `q`, if it has samples.
    pub fn stats(&self, q: Quantity) -> Option<Stats> {
        let (_, t) = self.tracks.iter().find(|(k, _)| *k == q)?;
        stats_of(&t.total)
    }

    /// The quantities with samples, in order of first sample.
    pub fn quantities(&self) -> impl Iterator<Item = Quantity> + '_ {
        self.tracks
            .iter()
            .filter(|(_, t)| !t.total.is_empty())
            .map(|(q, _)| *q)
    }

    /// The closed seconds of `q` (index = second of the run).
    pub fn series(&self, q: Quantity) -> &[Point] {
        self.tracks
            .iter()
            .find(|(k, _)| *k == q)
            .map_or(&[], |(_, t)| &t.series[..])
    }

    /// The last closed second of `q` that has samples, if it is the previous second of `now`.
    pub fn last_second(&self, q: Quantity, now: Instant) -> Option<Point> {
        let s = self.second_of(now);
        let (_, t) = self.tracks.iter().find(|(k, _)| *k == q)?;
        let prev = s.checked_sub(1)?;
        t.series.get(prev as usize).copied().filter(|p| p.count > 0)
    }

    /// The run total of a counter.
    pub fn total(&self, c: Counter) -> u64 {
        self.totals[c.index()]
    }

    /// A counter in the second `s` of the run.
    pub fn counter_at(&self, c: Counter, s: u64) -> u64 {
        self.counter_series
            .get(s as usize)
            .map_or(0, |row| row[c.index()])
    }

    /// Every counter per second (index = second of the run).
    pub fn counter_series(&self) -> &[CounterRow] {
        &self.counter_series
    }

    /// Failed sessions by reason.
    pub fn failures(&self) -> &BTreeMap<String, u64> {
        &self.failures
    }

    /// Named counters without time series.
    pub fn notes(&self) -> &BTreeMap<String, u64> {
        &self.notes
    }

    /// One named counter (0 when never noted).
    pub fn noted(&self, name: &str) -> u64 {
        self.notes.get(name).copied().unwrap_or(0)
    }

    /// Adds another recorder of the same run (same `start`), e.g. the in-process receiver's or
    /// a media thread's. Totals, counters and their series add up exactly; the per-second
    /// points of a quantity both measured are combined approximately (counts add, p50 is the
    /// count-weighted mean, p99 and max the larger), so record each quantity in one place.
    pub fn merge(&mut self, other: &Recorder) {
        self.merge_tracks(other);
        for (a, b) in self.totals.iter_mut().zip(other.totals) {
            *a += b;
        }
        if self.counter_series.len() < other.counter_series.len() {
            self.counter_series
                .resize(other.counter_series.len(), [0; Counter::ALL.len()]);
        }
        for (row, theirs) in self.counter_series.iter_mut().zip(&other.counter_series) {
            for (a, b) in row.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.notes {
            *self.notes.entry(k.clone()).or_default() += v;
        }
    }

    /// Adds another recorder's quantities, and its named counters under `prefix`, but not its
    /// sessions: e.g. the in-process receiver's delivery latency into the sender's report.
    pub fn merge_measures(&mut self, other: &Recorder, prefix: &str) {
        self.merge_tracks(other);
        for (k, v) in &other.notes {
            *self.notes.entry(format!("{prefix}{k}")).or_default() += v;
        }
    }

    fn merge_tracks(&mut self, other: &Recorder) {
        for (q, theirs) in &other.tracks {
            match self.tracks.iter_mut().find(|(k, _)| k == q) {
                None => self.tracks.push((*q, theirs.clone())),
                Some((_, ours)) => {
                    // Same bounds on both sides: `add` cannot fail.
                    let _ = ours.total.add(&theirs.total);
                    let _ = ours.second.add(&theirs.second);
                    if ours.series.len() < theirs.series.len() {
                        ours.series.resize(theirs.series.len(), Point::default());
                    }
                    for (a, b) in ours.series.iter_mut().zip(&theirs.series) {
                        *a = combine(*a, *b);
                    }
                }
            }
        }
    }
}

fn combine(a: Point, b: Point) -> Point {
    if a.count == 0 {
        return b;
    }
    if b.count == 0 {
        return a;
    }
    let n = a.count + b.count;
    Point {
        count: n,
        p50_us: (a.p50_us * a.count + b.p50_us * b.count) / n,
        p99_us: a.p99_us.max(b.p99_us),
        max_us: a.max_us.max(b.max_us),
    }
}

fn stats_of(h: &Histogram<u64>) -> Option<Stats> {
    if h.is_empty() {
        return None;
    }
    Some(Stats {
        count: h.len(),
        min_us: h.min(),
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn percentiles_of_the_whole_run() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        for v in 1..=1000u64 {
            r.record_us(Quantity::Request("OPTIONS"), v, at(t0, v));
        }
        let s = r.stats(Quantity::Request("OPTIONS")).unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.max_us, 1000);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert!(r.stats(Quantity::CallSetup).is_none());
    }

    #[test]
    fn per_second_series_with_gaps() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        let q = Quantity::MessageDelivery;
        r.record_us(q, 100, at(t0, 100));
        r.record_us(q, 300, at(t0, 900));
        // Nothing in second 1; second 2 has one sample.
        r.record_us(q, 50, at(t0, 2_500));
        r.finish(at(t0, 2_600));
        let s = r.series(q);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].count, 2);
        assert_eq!(s[0].max_us, 300);
        assert_eq!(s[1], Point::default());
        assert_eq!(s[2].count, 1);
        assert_eq!(s[2].p99_us, 50);
    }

    #[test]
    fn tick_closes_seconds_for_the_progress_line() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        let q = Quantity::Request("MESSAGE");
        r.record_us(q, 700, at(t0, 10));
        assert!(r.last_second(q, at(t0, 500)).is_none());
        r.tick(at(t0, 1_001));
        assert_eq!(r.last_second(q, at(t0, 1_001)).unwrap().p99_us, 700);
        // Two seconds later the point is stale.
        r.tick(at(t0, 2_001));
        assert!(r.last_second(q, at(t0, 2_001)).is_none());
    }

    #[test]
    fn counters_failures_and_notes() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        r.add(Counter::Started, 3, at(t0, 0));
        r.add(Counter::Started, 2, at(t0, 1_500));
        r.fail("408 Request Timeout", at(t0, 1_600));
        r.fail("408 Request Timeout", at(t0, 1_700));
        r.note("retransmissions", 4);
        assert_eq!(r.total(Counter::Started), 5);
        assert_eq!(r.counter_at(Counter::Started, 0), 3);
        assert_eq!(r.counter_at(Counter::Started, 1), 2);
        assert_eq!(r.counter_at(Counter::Failed, 1), 2);
        assert_eq!(r.failures()["408 Request Timeout"], 2);
        assert_eq!(r.noted("retransmissions"), 4);
        assert_eq!(r.noted("nothing"), 0);
    }

    #[test]
    fn merge_adds_totals_and_series() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0);
        let mut b = Recorder::new(t0);
        a.record_us(Quantity::Request("MESSAGE"), 100, at(t0, 10));
        a.add(Counter::Succeeded, 1, at(t0, 10));
        b.record_us(Quantity::MessageDelivery, 40, at(t0, 20));
        b.record_us(Quantity::MessageDelivery, 60, at(t0, 1_020));
        b.add(Counter::Succeeded, 2, at(t0, 1_020));
        b.note("delivered", 2);
        a.finish(at(t0, 1_100));
        b.finish(at(t0, 1_100));
        a.merge(&b);
        assert_eq!(a.total(Counter::Succeeded), 3);
        assert_eq!(a.counter_at(Counter::Succeeded, 1), 2);
        assert_eq!(a.stats(Quantity::MessageDelivery).unwrap().count, 2);
        assert_eq!(a.series(Quantity::MessageDelivery).len(), 2);
        assert_eq!(a.noted("delivered"), 2);
        // The same quantity on both sides: counts add.
        let mut c = Recorder::new(t0);
        c.record_us(Quantity::Request("MESSAGE"), 300, at(t0, 30));
        c.finish(at(t0, 100));
        a.merge(&c);
        let p = a.series(Quantity::Request("MESSAGE"))[0];
        assert_eq!((p.count, p.p50_us, p.max_us), (2, 200, 300));
    }

    #[test]
    fn merge_measures_leaves_sessions_alone() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0);
        let mut b = Recorder::new(t0);
        a.add(Counter::Started, 5, t0);
        b.add(Counter::Started, 5, t0);
        b.record_us(Quantity::MessageDelivery, 40, t0);
        b.note("messages_without_stamp", 1);
        b.finish(t0);
        a.merge_measures(&b, "receiver.");
        assert_eq!(a.total(Counter::Started), 5);
        assert_eq!(a.stats(Quantity::MessageDelivery).unwrap().count, 1);
        assert_eq!(a.noted("receiver.messages_without_stamp"), 1);
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        r.record_us(Quantity::RtpOwd, 0, t0);
        r.record(Quantity::RtpOwd, Duration::from_secs(3600), t0);
        let s = r.stats(Quantity::RtpOwd).unwrap();
        assert_eq!(s.min_us, 1);
        assert!(s.max_us >= MAX_TRACKED_US);
    }

    #[test]
    fn names() {
        assert_eq!(
            Quantity::request(&Method::Options).name(),
            "request_options"
        );
        assert_eq!(Quantity::CallSetup.name(), "call_setup");
        assert_eq!(Quantity::Custom("msrp_delivery").name(), "msrp_delivery");
        assert_eq!(Counter::RtpLost.name(), "rtp_lost");
    }
}
