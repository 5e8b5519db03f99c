//! The UAS core's 2xx retransmission (RFC 3261 §13.3.1.4): a 2xx to an INVITE is sent again
//! at T1, 2*T1, ... capped at T2 until its ACK arrives; with no ACK by 64*T1 the dialog is
//! ended (BYE). Over a reliable transport the transport retransmits: only the 64*T1 wait is
//! kept. Used by the B2BUA session and by the message controller's large-message sessions.
//!
//! ```text
//!  2xx sent ──► Waiting ──T1, 2T1, 4T1 .. T2──► Resend (the same 2xx)
//!                  │ ACK (the caller matches it)      │ 64*T1 without ACK
//!                  ▼                                   ▼
//!               dropped                              GiveUp
//! ```

use std::time::{Duration, Instant};

use super::Message;

/// What a [`Retransmit2xx`] wants when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send [`Retransmit2xx::response`] again (on its server transaction).
    Resend,
    /// 64*T1 passed without the ACK: end the dialog (BYE, RFC 3261 §13.3.1.4).
    GiveUp,
}

/// A 2xx to an INVITE repeated until its ACK; the owner drops it when the ACK comes.
#[derive(Debug, Clone)]
pub struct Retransmit2xx {
    response: Message,
    interval: Duration,
    t2: Duration,
    /// The next retransmission (none over reliable transports).
    next: Option<Instant>,
    give_up: Instant,
}

impl Retransmit2xx {
    /// Starts waiting for the ACK of `response`, sent at `now`.
    pub fn new(
        response: Message,
        reliable: bool,
        t1: Duration,
        t2: Duration,
        now: Instant,
    ) -> Retransmit2xx {
        Retransmit2xx {
            response,
            interval: t1,
            t2,
            next: (!reliable).then_some(now + t1),
            give_up: now + t1 * 64,
        }
    }

    /// The 2xx being repeated.
    pub fn response(&self) -> &Message {
        &self.response
    }

    /// When [`Retransmit2xx::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Instant {
        self.next.map_or(self.give_up, |n| n.min(self.give_up))
    }

    /// The time is `now`: what is due, if anything (the interval doubles after each resend).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Due> {
        if now >= self.give_up {
            self.next = None;
            return Some(Due::GiveUp);
        }
        if self.next.is_some_and(|n| n <= now) {
            self.interval = (self.interval * 2).min(self.t2);
            self.next = Some(now + self.interval);
            return Some(Due::Resend);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Message {
        crate::sip::parse(bytes::Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")).unwrap()
    }

    const T1: Duration = Duration::from_millis(500);
    const T2: Duration = Duration::from_secs(4);

    #[test]
    fn resends_at_doubling_intervals_capped_at_t2_then_gives_up() {
        let t0 = Instant::now();
        let mut r = Retransmit2xx::new(ok(), false, T1, T2, t0);
        let mut sent = Vec::new();
        let end = loop {
            let now = r.poll_timeout();
            match r.handle_timeout(now) {
                Some(Due::Resend) => sent.push((now - t0).as_millis()),
                Some(Due::GiveUp) => break now,
                None => panic!("woken for nothing at {:?}", now - t0),
            }
        };
        assert_eq!(
            sent[..7],
            [500, 1500, 3500, 7500, 11500, 15500, 19500],
            "T1, then doubling up to T2"
        );
        assert_eq!(end - t0, T1 * 64, "gives up at 64*T1");
        assert_eq!(r.response().status(), Some(200));
    }

    #[test]
    fn reliable_transport_only_waits() {
        let t0 = Instant::now();
        let mut r = Retransmit2xx::new(ok(), true, T1, T2, t0);
        assert_eq!(r.poll_timeout(), t0 + T1 * 64);
        assert_eq!(r.handle_timeout(t0 + T1 * 63), None);
        assert_eq!(r.handle_timeout(t0 + T1 * 64), Some(Due::GiveUp));
    }

    #[test]
    fn early_wakeup_does_nothing() {
        let t0 = Instant::now();
        let mut r = Retransmit2xx::new(ok(), false, T1, T2, t0);
        assert_eq!(r.handle_timeout(t0 + T1 / 2), None);
        assert_eq!(r.poll_timeout(), t0 + T1);
    }
}
