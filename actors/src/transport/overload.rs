//! Overload control: when a worker falls behind, new work for it is refused early and cheaply,
//! so what it already carries (established sessions, their in-dialog requests, registrations)
//! keeps being served, and it recovers by itself once the load drops.
//!
//! **The signal** is each worker's queueing delay: the time from a message's receipt (stamped
//! by the receiving task) to the worker handling it. It grows when the worker's mailbox fills
//! or its core is saturated, whatever the cause (signaling, media, storage). The worker keeps
//! the largest delay of each 100 ms window ([`LoadMeter`]); a window whose largest delay
//! passed `--overload-delay` marks the worker overloaded for the next second, and each later
//! window still above a quarter of it extends that (hysteresis: the state ends a second after
//! the queue drained, not at the first quick message).
//!
//! **The gate** ([`Overload::refuses`]) runs in the receiving task, before the message is
//! queued for its owner: while the owner is overloaded, a new INVITE or MESSAGE (outside any
//! dialog: no To tag) is answered `503 Service Unavailable` with `Retry-After` statelessly, at
//! the cost of one response (RFC 3261 §21.5.4; RFC 7339 overload control proper needs the
//! clients' support). Everything else goes through: in-dialog requests (BYE, re-INVITE, ACK),
//! responses, and REGISTER, OPTIONS and SUBSCRIBE, so registrations keep being refreshed
//! (they are prioritised in that they are never shed here).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cpm_engine::sip::{HeaderName, Message, Method};

/// Length of a measurement window.
const WINDOW: Duration = Duration::from_millis(100);
/// How long a worker stays overloaded after the last window over the threshold.
const HOLD: Duration = Duration::from_secs(1);

/// The overload state of every worker, shared by the receiving tasks and the workers.
#[derive(Debug)]
pub struct Overload {
    /// The queueing delay that marks a worker overloaded (`None`: overload control is off).
    threshold: Option<Duration>,
    /// What Retry-After the refusals carry, in seconds.
    retry_after: u32,
    /// The base of the `until` instants.
    epoch: Instant,
    /// Per worker: overloaded until this many nanoseconds after `epoch` (0: not).
    until: Box<[AtomicU64]>,
    /// Per worker: requests refused by the gate.
    refused: Box<[AtomicU64]>,
}

impl Overload {
    /// The state of `workers` workers; `threshold` `None` turns the gate off.
    pub fn new(workers: usize, threshold: Option<Duration>, retry_after: u32) -> Overload {
        Overload {
            threshold,
            retry_after,
            epoch: Instant::now(),
            until: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            refused: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The queueing delay that marks a worker overloaded.
    pub fn threshold(&self) -> Option<Duration> {
        self.threshold
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether worker `w` is overloaded at `now`.
    pub fn is_overloaded(&self, w: usize, now: Instant) -> bool {
        self.until
            .get(w)
            .is_some_and(|u| self.nanos(now) < u.load(Relaxed))
    }

    /// Marks worker `w` overloaded until `until`.
    fn hold(&self, w: usize, until: Instant) {
        if let Some(u) = self.until.get(w) {
            u.fetch_max(self.nanos(until), Relaxed);
        }
    }

    /// The gate: the 503 to answer `msg` with instead of queueing it for worker `owner`, when
    /// that worker is overloaded and `msg` is new work (an INVITE or MESSAGE outside a dialog).
    pub fn refuses(&self, owner: usize, msg: &Message) -> Option<Message> {
        self.threshold?;
        if !is_new_work(msg) || !self.is_overloaded(owner, Instant::now()) {
            return None;
        }
        if let Some(r) = self.refused.get(owner) {
            r.fetch_add(1, Relaxed);
        }
        let mut r =
            cpm_engine::sip::builder::local_response(msg, 503, "Service Unavailable (Overload)");
        r.headers
            .push(HeaderName::RetryAfter, self.retry_after.to_string());
        Some(r)
    }

    /// Requests the gate refused, all workers.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|r| r.load(Relaxed)).sum()
    }

    /// Workers overloaded now.
    pub fn overloaded_workers(&self) -> usize {
        let now = Instant::now();
        (0..self.until.len())
            .filter(|&w| self.is_overloaded(w, now))
            .count()
    }
}

/// Whether a request starts new work the gate may shed: an INVITE or MESSAGE without a To tag.
fn is_new_work(msg: &Message) -> bool {
    matches!(msg.method(), Some(Method::Invite | Method::Message))
        && msg
            .headers
            .get(&HeaderName::To)
            .and_then(cpm_engine::sip::builder::tag_of)
            .is_none()
}

/// One worker's measurement of its queueing delay (single writer: the worker).
#[derive(Debug)]
pub struct LoadMeter {
    worker: usize,
    window_end: Option<Instant>,
    window_max: Duration,
}

impl LoadMeter {
    /// The meter of worker `worker`.
    pub fn new(worker: usize) -> LoadMeter {
        LoadMeter {
            worker,
            window_end: None,
            window_max: Duration::ZERO,
        }
    }

    /// A message received at `received` is handled at `now`.
    pub fn observe(&mut self, overload: &Overload, received: Instant, now: Instant) {
        let Some(threshold) = overload.threshold else {
            return;
        };
        let lag = now.saturating_duration_since(received);
        self.window_max = self.window_max.max(lag);
        let end = *self.window_end.get_or_insert(now + WINDOW);
        if now < end && lag <= threshold {
            return;
        }
        let max = std::mem::take(&mut self.window_max);
        self.window_end = Some(now + WINDOW);
        let overloaded = overload.is_overloaded(self.worker, now);
        if max > threshold || (overloaded && max > threshold / 4) {
            if !overloaded {
                tracing::warn!(
                    worker = self.worker,
                    delay_ms = max.as_millis() as u64,
                    "worker overloaded: new INVITEs and MESSAGEs get 503"
                );
            }
            overload.hold(self.worker, now + HOLD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(method: &str, to_tag: bool) -> Message {
        let tag = if to_tag { ";tag=t1" } else { "" };
        cpm_engine::sip::parse(Bytes::from(format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKov1\r\n\
             From: <sip:alice@example.com>;tag=f1\r\n\
             To: <sip:bob@example.com>{tag}\r\n\
             Call-ID: ov@example.com\r\n\
             CSeq: 1 {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )))
        .unwrap()
    }

    #[test]
    fn a_slow_window_overloads_the_worker_for_a_second() {
        let ov = Overload::new(2, Some(Duration::from_millis(50)), 3);
        let mut meter = LoadMeter::new(1);
        let t0 = Instant::now();
        // Quick messages: nothing happens.
        for i in 0..10 {
            let t = t0 + Duration::from_millis(i * 20);
            meter.observe(&ov, t - Duration::from_millis(5), t);
        }
        assert!(!ov.is_overloaded(1, t0 + Duration::from_millis(200)));
        // One message waited 80 ms: overloaded at once, only this worker.
        let t = t0 + Duration::from_millis(220);
        meter.observe(&ov, t - Duration::from_millis(80), t);
        assert!(ov.is_overloaded(1, t));
        assert!(!ov.is_overloaded(0, t));
        // The gate: new INVITE/MESSAGE refused with 503 + Retry-After, the rest passes.
        let r = ov.refuses(1, &req("INVITE", false)).expect("refused");
        assert_eq!(r.status(), Some(503));
        assert_eq!(
            r.headers.get(&HeaderName::RetryAfter).map(|v| &v[..]),
            Some(&b"3"[..])
        );
        assert!(ov.refuses(1, &req("MESSAGE", false)).is_some());
        assert!(ov.refuses(1, &req("INVITE", true)).is_none(), "re-INVITE");
        assert!(ov.refuses(1, &req("BYE", true)).is_none());
        assert!(ov.refuses(1, &req("REGISTER", false)).is_none());
        assert!(
            ov.refuses(0, &req("INVITE", false)).is_none(),
            "worker 0 is fine"
        );
        assert_eq!(ov.refused_total(), 2);
        // Still lagging a bit (over a quarter of the threshold): the state is extended.
        let t = t0 + Duration::from_millis(1100);
        meter.observe(&ov, t - Duration::from_millis(20), t);
        assert!(ov.is_overloaded(1, t + Duration::from_millis(900)));
        // Quick again: it ends a second after the last slow window.
        for i in 0..20 {
            let t = t0 + Duration::from_millis(1200 + i * 50);
            meter.observe(&ov, t - Duration::from_millis(1), t);
        }
        assert!(!ov.is_overloaded(1, t0 + Duration::from_millis(2200)));
    }

    #[test]
    fn off_means_never() {
        let ov = Overload::new(1, None, 3);
        let mut meter = LoadMeter::new(0);
        let t = Instant::now() + Duration::from_secs(1);
        meter.observe(&ov, t - Duration::from_secs(1), t);
        assert!(ov.refuses(0, &req("INVITE", false)).is_none());
    }
}
