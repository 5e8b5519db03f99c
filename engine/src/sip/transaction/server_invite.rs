//! The INVITE server transaction (RFC 3261 §17.2.1, as updated by RFC 6026 §8.5-§8.7).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{Timer, TimerConfig, TimerTable};
use super::{Actions, Failure, TxError};
use crate::sip::builder::response_to;
use crate::sip::Message;

/// The states of [`InviteServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// The INVITE is with the TU; provisional responses may go out.
    Proceeding,
    /// A 300-699 went out; retransmitting it until the ACK (Timers G, H).
    Completed,
    /// The ACK came; absorbing its retransmissions (Timer I).
    Confirmed,
    /// A 2xx went out; absorbing INVITE retransmissions (Timer L, RFC 6026).
    Accepted,
    /// Done; the layer removes it.
    Terminated,
}

/// What became of an ACK matched to an [`InviteServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDisposition {
    /// The first ACK for the non-2xx final response: Completed → Confirmed.
    Confirmed,
    /// A repeated or early ACK, dropped.
    Absorbed,
    /// An ACK in Accepted: it belongs to the TU (RFC 6026 §8.7).
    PassToTu,
}

/// The INVITE server transaction: RFC 3261 Figure 7 as replaced by RFC 6026 §8.7.
///
/// ```text
///                                    |INVITE
///                                    |pass INV to TU
///                 INVITE             V send 100 if TU won't in 200 ms
///                 send response+------------+
///                     +--------|            |--------+ 101-199 from TU
///                     |        |            |        | send response
///                     +------->|            |<-------+
///                              | Proceeding |
///                              |            |--------+ Transport Err.
///                              |            |        | Inform TU
///                              |            |<-------+
///                              +------------+
///                 300-699 from TU |    |2xx from TU
///                 send response   |    |send response
///                  +--------------+    +------------+
///                  |                                |
/// INVITE           V          Timer G fires         |
/// send response +-----------+ send response         |
///      +--------|           |--------+              |
///      |        |           |        |              |
///      +------->| Completed |<-------+      INVITE  |  Transport Err.
///               |           |               -       |  Inform TU
///      +--------|           |----+          +-----+ |  +---+
///      |        +-----------+    | ACK      |     v v  |   v
///      |          ^   |          | -        +------------+
///      |          |   |          |          |            |---+ ACK
///      +----------+   |          |          |  Accepted  |   | to TU
///      Transport Err. |          |          |            |<--+
///      Inform TU      |          V          +------------+
///                     |      +-----------+     |  ^     |
///                     |      |           |     |  |     |
///                     |      | Confirmed |     |  +-----+
///                     |      |           |     |  2xx from TU
///       Timer H fires |      +-----------+     |  send response
///       Inform TU     |          |             |
///                     |          | Timer I     |
///                     |          | fires       |
///                     |          | -           | Timer L fires
///                     |          V             | -
///                     |        +------------+  |
///                     |        |            |<-+
///                     +------->| Terminated |
///                              |            |
///                              +------------+
/// ```
///
/// The `100 Trying` is sent at once when the INVITE arrives (§17.2.1; the layer's
/// `auto_trying` setting). Timer G is not used on reliable transports; Timer I is zero there.
#[derive(Debug, Clone)]
pub struct InviteServer {
    state: InviteServerState,
    timers: TimerTable,
    config: TimerConfig,
    reliable: bool,
    g_interval: Duration,
    last_response: Option<Bytes>,
}

impl InviteServer {
    /// Starts the transaction for a received INVITE; with `send_trying` the returned actions send
    /// a `100 Trying` built from it.
    pub fn start(
        invite: &Message,
        reliable: bool,
        config: TimerConfig,
        send_trying: bool,
        _now: Instant,
    ) -> (InviteServer, Actions) {
        let mut tx = InviteServer {
            state: InviteServerState::Proceeding,
            timers: TimerTable::default(),
            config,
            reliable,
            g_interval: config.t1,
            last_response: None,
        };
        let mut out = Actions::default();
        if send_trying {
            let trying = response_to(invite, 100, "Trying").to_bytes();
            tx.last_response = Some(trying.clone());
            out.send = Some(trying);
        }
        (tx, out)
    }

    /// A retransmission of the INVITE: re-send the last provisional or the final response.
    pub fn handle_retransmission(&mut self, _now: Instant) -> Actions {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                Actions::resend(self.last_response.clone())
            }
            _ => Actions::default(),
        }
    }

    /// An ACK matched to this transaction (§17.2.3).
    pub fn handle_ack(&mut self, now: Instant) -> AckDisposition {
        match self.state {
            InviteServerState::Completed => {
                self.timers.stop_all();
                if self.reliable {
                    self.state = InviteServerState::Terminated;
                } else {
                    self.state = InviteServerState::Confirmed;
                    self.timers.set(Timer::I, now + self.config.t4);
                }
                AckDisposition::Confirmed
            }
            InviteServerState::Accepted => AckDisposition::PassToTu,
            _ => AckDisposition::Absorbed,
        }
    }

    /// A response from the TU. A final response after a non-2xx final one is refused.
    pub fn respond(&mut self, response: &Message, now: Instant) -> Result<Actions, TxError> {
        let code = response.status().ok_or(TxError::NotAResponse)?;
        let wire = response.to_bytes();
        match (self.state, code) {
            (InviteServerState::Proceeding, 100..=199) => {
                self.last_response = Some(wire.clone());
            }
            (InviteServerState::Proceeding, 200..=299) => {
                self.state = InviteServerState::Accepted;
                self.last_response = None;
                self.timers
                    .set(Timer::L, now + self.config.transaction_timeout());
            }
            (InviteServerState::Proceeding, _) => {
                self.state = InviteServerState::Completed;
                self.last_response = Some(wire.clone());
                if !self.reliable {
                    self.timers.set(Timer::G, now + self.config.t1);
                }
                self.timers
                    .set(Timer::H, now + self.config.transaction_timeout());
            }
            // RFC 6026 §8.6: 2xx retransmissions from the TU go out while Accepted.
            (InviteServerState::Accepted, 200..=299) => {}
            _ => return Err(TxError::FinalResponseSent),
        }
        Ok(Actions::send(wire))
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        use InviteServerState::*;
        let mut out = Actions::default();
        for timer in self.timers.take_expired(now) {
            match (timer, self.state) {
                (Timer::G, Completed) => {
                    self.g_interval = (self.g_interval * 2).min(self.config.t2);
                    self.timers.set(Timer::G, now + self.g_interval);
                    out.send = self.last_response.clone();
                    out.retransmission = true;
                }
                (Timer::H, Completed) => {
                    self.terminate();
                    return Actions::failed(Failure::Timeout);
                }
                (Timer::I, Confirmed) | (Timer::L, Accepted) => {
                    self.terminate();
                    return out;
                }
                _ => {}
            }
        }
        out
    }

    /// The transport could not send a response: inform the TU. Proceeding and Completed end;
    /// Accepted stays (the TU owns 2xx delivery).
    pub fn handle_transport_error(&mut self) -> Actions {
        let failed = Actions::failed(Failure::Transport);
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                self.terminate();
                failed
            }
            InviteServerState::Accepted => failed,
            _ => Actions::default(),
        }
    }

    fn terminate(&mut self) {
        self.state = InviteServerState::Terminated;
        self.timers.stop_all();
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// The deadline of one timer, if armed.
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }
}
