//! When each session starts: a deadline schedule computed from the session's ordinal, so that
//! pacing never drifts (a late wake-up starts the overdue sessions at once, and the next
//! deadline is where it always was).
//!
//! With rate `r` per second and a linear ramp-up over `R` seconds (the rate grows from 0 to
//! `r`), the number of sessions due by time `t` is `N(t) = r·t²/(2R)` during the ramp and
//! `r·(t − R/2)` after it. Session `k` (from 0) is due when `N(t) = k`:
//!
//! ```text
//! t_k = sqrt(2·R·k / r)   for k ≤ r·R/2
//! t_k = k/r + R/2         after
//! ```

use std::time::{Duration, Instant};

/// The due time of every session, relative to the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    ramp: f64,
}

impl Schedule {
    /// `rate` sessions per second (> 0) reached after a linear ramp of `ramp_up`.
    pub fn new(rate: f64, ramp_up: Duration) -> Schedule {
        Schedule {
            rate,
            ramp: ramp_up.as_secs_f64(),
        }
    }

    /// The offset from the start at which session `k` (0-based) is due.
    pub fn offset(&self, k: u64) -> Duration {
        let k = k as f64;
        let t = if self.ramp > 0.0 && k <= self.rate * self.ramp / 2.0 {
            (2.0 * self.ramp * k / self.rate).sqrt()
        } else {
            k / self.rate + self.ramp / 2.0
        };
        Duration::from_secs_f64(t)
    }
}

/// Hands out session ordinals at their due times, within a count and a duration.
#[derive(Debug, Clone)]
pub struct Pacer {
    schedule: Schedule,
    start: Instant,
    next: u64,
    count: Option<u64>,
    duration: Option<Duration>,
}

impl Pacer {
    /// A pacer from `start`, for at most `count` sessions and sessions due before `duration`
    /// (at least one of them should be set, or the run never ends).
    pub fn new(
        schedule: Schedule,
        start: Instant,
        count: Option<u64>,
        duration: Option<Duration>,
    ) -> Pacer {
        Pacer {
            schedule,
            start,
            next: 0,
            count,
            duration,
        }
    }

    /// Whether session `k` is within the run's bounds.
    fn allowed(&self, k: u64) -> bool {
        self.count.is_none_or(|c| k < c)
            && self.duration.is_none_or(|d| self.schedule.offset(k) < d)
    }

    /// When the next session is due; `None` once the bounds are reached.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.allowed(self.next)
            .then(|| self.start + self.schedule.offset(self.next))
    }

    /// The ordinal of the next session if it is due at `now`, consuming it.
    pub fn take_due(&mut self, now: Instant) -> Option<u64> {
        let due = self.next_deadline().is_some_and(|d| d <= now);
        due.then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Whether every session of the run has been handed out.
    pub fn is_exhausted(&self) -> bool {
        !self.allowed(self.next)
    }

    /// When session 0 is due.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Sessions handed out so far.
    pub fn taken(&self) -> u64 {
        self.next
    }

    /// Moves the start (before the first session is handed out), e.g. to after a long setup.
    pub fn restart(&mut self, start: Instant) {
        if self.next == 0 {
            self.start = start;
        }
    }

    /// Ends the schedule now (no more sessions).
    pub fn stop(&mut self) {
        self.count = Some(self.next);
    }

    /// The offset at which the run's schedule ends: the due time of the first session beyond
    /// its bounds (for a count, `t_count`; for a duration, the duration). The achieved rate is
    /// measured over this window.
    pub fn window(&self) -> Duration {
        let by_count = self.count.map(|c| self.schedule.offset(c));
        match (by_count, self.duration) {
            (Some(c), Some(d)) => c.min(d),
            (Some(c), None) => c,
            (None, Some(d)) => d,
            (None, None) => self.schedule.offset(self.next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_has_no_drift() {
        let s = Schedule::new(3.0, Duration::ZERO);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(3), Duration::from_secs(1));
        // Deadlines come from k, not from the previous deadline: no accumulated rounding.
        let k = 3_000_000;
        assert_eq!(s.offset(k), Duration::from_secs(1_000_000));
    }

    #[test]
    fn ramp_up_is_linear_and_continuous() {
        // 100/s after a 10 s ramp: 500 sessions during the ramp.
        let s = Schedule::new(100.0, Duration::from_secs(10));
        assert_eq!(s.offset(500), Duration::from_secs(10));
        assert_eq!(s.offset(600), Duration::from_secs(11));
        // Half-way through the ramp (t = 5 s) a quarter of the ramp's sessions are due.
        let t = s.offset(125).as_secs_f64();
        assert!((t - 5.0).abs() < 1e-9, "{t}");
        // Increasing everywhere.
        let mut prev = Duration::ZERO;
        for k in 1..1_000 {
            let o = s.offset(k);
            assert!(o > prev, "k={k}");
            prev = o;
        }
    }

    #[test]
    fn count_bound() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Schedule::new(10.0, Duration::ZERO), t0, Some(3), None);
        // A late wake-up gets every overdue session, in order, and no more than the count.
        let late = t0 + Duration::from_secs(5);
        assert_eq!(p.take_due(late), Some(0));
        assert_eq!(p.take_due(late), Some(1));
        assert_eq!(p.take_due(late), Some(2));
        assert_eq!(p.take_due(late), None);
        assert!(p.is_exhausted());
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.window(), Duration::from_millis(300));
    }

    #[test]
    fn duration_bound_and_due_times() {
        let t0 = Instant::now();
        let mut p = Pacer::new(
            Schedule::new(4.0, Duration::ZERO),
            t0,
            None,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(p.take_due(t0), Some(0));
        assert_eq!(p.take_due(t0), None);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_millis(250)));
        let mut n = 1;
        while p.take_due(t0 + Duration::from_secs(2)).is_some() {
            n += 1;
        }
        // Sessions due at 0, 0.25, 0.5, 0.75 s: the one due at 1 s is outside.
        assert_eq!(n, 4);
        assert!(p.is_exhausted());
        assert_eq!(p.window(), Duration::from_secs(1));
    }

    #[test]
    fn stop_ends_the_schedule() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Schedule::new(1.0, Duration::ZERO), t0, None, None);
        assert_eq!(p.take_due(t0), Some(0));
        p.stop();
        assert!(p.is_exhausted());
        assert_eq!(p.taken(), 1);
    }
}
