//! The non-INVITE client transaction (RFC 3261 §17.1.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{Timer, TimerConfig, TimerTable};
use super::{Actions, Failure};
use crate::sip::Message;

/// The states of [`NonInviteClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    /// The request is sent; no response yet.
    Trying,
    /// A provisional response came.
    Proceeding,
    /// A final response came; absorbing its retransmissions (Timer K).
    Completed,
    /// Done; the layer removes it.
    Terminated,
}

/// The non-INVITE client transaction: RFC 3261 Figure 6.
///
/// ```text
///                                |Request from TU
///                                |send request
///            Timer E             V
///            send request  +-----------+
///                +---------|           |-------------------+
///                |         |  Trying   |  Timer F          |
///                +-------->|           |  or Transport Err.|
///                          +-----------+  inform TU        |
///             200-699         |  |                         |
///             resp. to TU     |  |1xx                      |
///             +---------------+  |resp. to TU              |
///             |                  |                         |
///             |   Timer E        V       Timer F           |
///             |   send req +-----------+ or Transport Err. |
///             |  +---------|           | inform TU         |
///             |  |         |Proceeding |------------------>|
///             |  +-------->|           |-----+             |
///             |            +-----------+     |1xx          |
///             |              |      ^        |resp to TU   |
///             | 200-699      |      +--------+             |
///             | resp. to TU  |                             |
///             |              |                             |
///             |              V                             |
///             |            +-----------+                   |
///             |            |           |                   |
///             |            | Completed |                   |
///             |            |           |                   |
///             |            +-----------+                   |
///             |              ^   |                         |
///             |              |   | Timer K                 |
///             +--------------+   | -                       |
///                                |                         |
///                                V                         |
///                          +-----------+                   |
///                          |           |                   |
///                          | Terminated|<------------------+
///                          |           |
///                          +-----------+
/// ```
///
/// Timer E is not used on reliable transports; it doubles up to T2 in Trying and is T2 in
/// Proceeding (§17.1.2.2). Timer K is zero on reliable transports.
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    state: NonInviteClientState,
    timers: TimerTable,
    config: TimerConfig,
    reliable: bool,
    e_interval: Duration,
    request: Message,
    wire: Bytes,
}

impl NonInviteClient {
    /// Starts the transaction: the returned actions send the request; Timers E and F are armed.
    pub fn start(
        request: Message,
        reliable: bool,
        config: TimerConfig,
        now: Instant,
    ) -> (NonInviteClient, Actions) {
        let wire = request.to_bytes();
        let mut timers = TimerTable::default();
        if !reliable {
            timers.set(Timer::E, now + config.t1);
        }
        timers.set(Timer::F, now + config.transaction_timeout());
        let tx = NonInviteClient {
            state: NonInviteClientState::Trying,
            timers,
            config,
            reliable,
            e_interval: config.t1,
            request,
            wire: wire.clone(),
        };
        (tx, Actions::send(wire))
    }

    /// A response matched to this transaction (§17.1.3).
    pub fn handle_response(&mut self, resp: &Message, now: Instant) -> Actions {
        use NonInviteClientState::*;
        let Some(code) = resp.status() else {
            return Actions::default();
        };
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                Actions::to_tu()
            }
            (Trying | Proceeding, _) => {
                self.timers.stop_all();
                if self.reliable {
                    self.state = Terminated;
                } else {
                    self.state = Completed;
                    self.timers.set(Timer::K, now + self.config.t4);
                }
                Actions::to_tu()
            }
            _ => Actions::default(),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        use NonInviteClientState::*;
        let mut out = Actions::default();
        for timer in self.timers.take_expired(now) {
            match (timer, self.state) {
                (Timer::E, Trying | Proceeding) => {
                    self.e_interval = if self.state == Trying {
                        (self.e_interval * 2).min(self.config.t2)
                    } else {
                        self.config.t2
                    };
                    self.timers.set(Timer::E, now + self.e_interval);
                    out.send = Some(self.wire.clone());
                    out.retransmission = true;
                }
                (Timer::F, Trying | Proceeding) => {
                    self.terminate();
                    return Actions::failed(Failure::Timeout);
                }
                (Timer::K, Completed) => {
                    self.terminate();
                    return out;
                }
                _ => {}
            }
        }
        out
    }

    /// The transport could not send the request: inform the TU (Trying/Proceeding only).
    pub fn handle_transport_error(&mut self) -> Actions {
        match self.state {
            NonInviteClientState::Trying | NonInviteClientState::Proceeding => {
                self.terminate();
                Actions::failed(Failure::Transport)
            }
            _ => Actions::default(),
        }
    }

    fn terminate(&mut self) {
        self.state = NonInviteClientState::Terminated;
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
    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Message {
        &self.request
    }
}
