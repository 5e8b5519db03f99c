//! The INVITE client transaction (RFC 3261 §17.1.1, as updated by RFC 6026 §8.4).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{Timer, TimerConfig, TimerTable};
use super::{Actions, Failure};
use crate::sip::builder::ack_for_non_2xx;
use crate::sip::Message;

/// The states of [`InviteClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// The INVITE is sent; no response yet.
    Calling,
    /// A provisional response came; waiting for the final one (no timer: the TU cancels).
    Proceeding,
    /// A 300-699 came and was acknowledged; absorbing its retransmissions (Timer D).
    Completed,
    /// A 2xx came; passing further 2xx (retransmissions, forks) to the TU (Timer M, RFC 6026).
    Accepted,
    /// Done; the layer removes it.
    Terminated,
}

/// The INVITE client transaction: RFC 3261 Figure 5, with the "Accepted" state of RFC 6026
/// (Figure 5 as replaced by RFC 6026 §8.4).
///
/// ```text
///                                |INVITE from TU
///              Timer A fires     |INVITE sent
///              Reset A,          V                            Timer B fires
///              INVITE sent +-----------+                      or Transport Err.
///                +---------|           |---------------------+ inform TU
///                |         |  Calling  |                     |
///                +-------->|           |--------+            |
///                          +-----------+  2xx   |            |
///             300-699         |  |   2xx to TU  |            |
///             ACK sent        |  |1xx           |            |
///             resp. to TU     |  |1xx to TU     |            |
///          +------------------+  |              |            |
///          |        1xx          V              |            |
///          |        1xx to TU +-----------+     |            | Transport Err.
///          |        +---------|           |-----|----------->| inform TU
///          |        |         |Proceeding |     |            |
///          |        +-------->|           |--+  |            |
///          |                  +-----------+  |  |            |
///          |   300-699          |   2xx      |  |            |
///          |   ACK sent,        |   2xx to TU|  |            |
///          |   resp. to TU      |            V  V            |
///          |                    |       +-----------+        |
///          |                    |       |           |---+    |
///          |                    |       | Accepted  |   | 2xx|
///          V                    V       |           |<--+ 2xx to TU
///      +-----------+<-----------+       +-----------+        |
///      |           |---+ 300-699              |              |
///      | Completed |   | ACK sent             | Timer M      |
///      |           |<--+                      | fires        |
///      +-----------+                          | -            |
///            | Timer D fires                  |              |
///            | -                              |              |
///            V                                V              |
///      +------------------------------------------+          |
///      |                Terminated                |<---------+
///      +------------------------------------------+
/// ```
///
/// Timer A is not used on reliable transports and doubles without a cap (§17.1.1.2); Timer D is
/// zero on reliable transports, so a non-2xx final response terminates at once.
#[derive(Debug, Clone)]
pub struct InviteClient {
    state: InviteClientState,
    timers: TimerTable,
    config: TimerConfig,
    reliable: bool,
    a_interval: Duration,
    request: Message,
    wire: Bytes,
    ack: Option<Bytes>,
}

impl InviteClient {
    /// Starts the transaction: the returned actions send the INVITE; Timers A and B are armed.
    pub fn start(
        request: Message,
        reliable: bool,
        config: TimerConfig,
        now: Instant,
    ) -> (InviteClient, Actions) {
        let wire = request.to_bytes();
        let mut timers = TimerTable::default();
        if !reliable {
            timers.set(Timer::A, now + config.t1);
        }
        timers.set(Timer::B, now + config.transaction_timeout());
        let tx = InviteClient {
            state: InviteClientState::Calling,
            timers,
            config,
            reliable,
            a_interval: config.t1,
            request,
            wire: wire.clone(),
            ack: None,
        };
        (tx, Actions::send(wire))
    }

    /// A response matched to this transaction (§17.1.3).
    pub fn handle_response(&mut self, resp: &Message, now: Instant) -> Actions {
        use InviteClientState::*;
        let Some(code) = resp.status() else {
            return Actions::default();
        };
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                Actions::to_tu()
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.timers.stop_all();
                self.timers
                    .set(Timer::M, now + self.config.transaction_timeout());
                Actions::to_tu()
            }
            (Calling | Proceeding, _) => {
                let ack = ack_for_non_2xx(&self.request, resp).to_bytes();
                self.ack = Some(ack.clone());
                self.timers.stop_all();
                if self.reliable {
                    self.state = Terminated;
                } else {
                    self.state = Completed;
                    self.timers.set(Timer::D, now + self.config.d);
                }
                Actions {
                    send: Some(ack),
                    to_tu: true,
                    ..Actions::default()
                }
            }
            (Accepted, 200..=299) => Actions::to_tu(),
            (Completed, 300..) => Actions::resend(self.ack.clone()),
            _ => Actions::default(),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        use InviteClientState::*;
        let mut out = Actions::default();
        for timer in self.timers.take_expired(now) {
            match (timer, self.state) {
                (Timer::A, Calling) => {
                    self.a_interval *= 2;
                    self.timers.set(Timer::A, now + self.a_interval);
                    out.send = Some(self.wire.clone());
                    out.retransmission = true;
                }
                (Timer::B, Calling) => {
                    self.terminate();
                    return Actions::failed(Failure::Timeout);
                }
                (Timer::D, Completed) | (Timer::M, Accepted) => {
                    self.terminate();
                    return out;
                }
                _ => {}
            }
        }
        out
    }

    /// The transport could not send the INVITE: inform the TU (Calling/Proceeding only).
    pub fn handle_transport_error(&mut self) -> Actions {
        match self.state {
            InviteClientState::Calling | InviteClientState::Proceeding => {
                self.terminate();
                Actions::failed(Failure::Transport)
            }
            _ => Actions::default(),
        }
    }

    fn terminate(&mut self) {
        self.state = InviteClientState::Terminated;
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
    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }
}
