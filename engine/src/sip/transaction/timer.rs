//! The timers of RFC 3261 §17 (Table 4) and the per-transaction timer table: one optional
//! deadline per timer, indexed by the enum; the next deadline is the minimum (the pattern of
//! quinn-proto's `connection/timer.rs`).

use std::time::{Duration, Instant};

/// The transaction timers of RFC 3261 Table 4, and Timers L and M of RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmission (client, unreliable): T1, doubled each time.
    A,
    /// INVITE transaction timeout (client, Calling): 64*T1.
    B,
    /// Wait for response retransmissions (client INVITE, Completed): 32 s, 0 on reliable.
    D,
    /// Non-INVITE request retransmission (client, unreliable): T1 doubling up to T2.
    E,
    /// Non-INVITE transaction timeout (client): 64*T1.
    F,
    /// INVITE final response retransmission (server, unreliable): T1 doubling up to T2.
    G,
    /// Wait for ACK (server INVITE, Completed): 64*T1.
    H,
    /// Wait for ACK retransmissions (server INVITE, Confirmed): T4, 0 on reliable.
    I,
    /// Wait for request retransmissions (server non-INVITE, Completed): 64*T1, 0 on reliable.
    J,
    /// Wait for response retransmissions (client non-INVITE, Completed): T4, 0 on reliable.
    K,
    /// Wait for INVITE retransmissions after a 2xx (server, Accepted, RFC 6026 §8.7): 64*T1.
    L,
    /// Wait for 2xx retransmissions (client INVITE, Accepted, RFC 6026 §8.4): 64*T1.
    M,
}

impl Timer {
    const COUNT: usize = 12;
    const ALL: [Timer; Timer::COUNT] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];
}

/// The timer values (RFC 3261 §17.1.1.1, Table 4). Zero durations are not meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the RTT estimate: 500 ms.
    pub t1: Duration,
    /// T2, the longest retransmit interval of non-INVITE requests and INVITE responses: 4 s.
    pub t2: Duration,
    /// T4, the longest time a message stays in the network: 5 s.
    pub t4: Duration,
    /// Timer D on unreliable transports: 32 s ("at least 32 seconds", §17.1.1.2).
    pub d: Duration,
}

impl Default for TimerConfig {
    fn default() -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J, L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// One deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [None; Timer::COUNT];
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// The earliest deadline.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Removes every timer due at `now` and returns them, earliest first. Timers set while the
    /// returned ones are handled wait for the next call, even if already due.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Expired {
        let mut out = Expired {
            items: [None; Timer::COUNT],
            len: 0,
            pos: 0,
        };
        for t in Timer::ALL {
            if let Some(at) = self.at[t as usize].filter(|&at| at <= now) {
                out.items[out.len] = Some((at, t));
                out.len += 1;
                self.at[t as usize] = None;
            }
        }
        out.items[..out.len].sort_by_key(|i| i.map(|(at, _)| at));
        out
    }
}

/// The timers that fired, earliest first.
pub(crate) struct Expired {
    items: [Option<(Instant, Timer)>; Timer::COUNT],
    len: usize,
    pos: usize,
}

impl Iterator for Expired {
    type Item = Timer;
    fn next(&mut self) -> Option<Timer> {
        if self.pos >= self.len {
            return None;
        }
        self.pos += 1;
        self.items[self.pos - 1].map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_orders_and_takes_expired() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut tt = TimerTable::default();
        assert_eq!(tt.next_timeout(), None);
        tt.set(Timer::M, t0 + ms(30));
        tt.set(Timer::A, t0 + ms(20));
        tt.set(Timer::B, t0 + ms(10));
        assert_eq!(tt.next_timeout(), Some(t0 + ms(10)));
        assert_eq!(tt.take_expired(t0 + ms(5)).count(), 0);
        let fired: Vec<_> = tt.take_expired(t0 + ms(20)).collect();
        assert_eq!(fired, vec![Timer::B, Timer::A]);
        assert_eq!(tt.get(Timer::A), None);
        assert_eq!(tt.next_timeout(), Some(t0 + ms(30)));
        tt.stop_all();
        assert_eq!(tt.next_timeout(), None);
        for (i, t) in Timer::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
        }
    }
}
