//! The non-INVITE server transaction (RFC 3261 §17.2.2).

use std::time::Instant;

use bytes::Bytes;

use super::timer::{Timer, TimerConfig, TimerTable};
use super::{Actions, Failure, TxError};
use crate::sip::Message;

/// The states of [`NonInviteServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// The request is with the TU; retransmissions are dropped.
    Trying,
    /// A provisional response went out; retransmissions get it again.
    Proceeding,
    /// The final response went out; retransmissions get it again (Timer J).
    Completed,
    /// Done; the layer removes it.
    Terminated,
}

/// The non-INVITE server transaction: RFC 3261 Figure 8.
///
/// ```text
///                                   |Request received
///                                   |pass to TU
///                                   V
///                             +-----------+
///                             |           |
///                             | Trying    |-------------+
///                             |           |             |
///                             +-----------+             |200-699 from TU
///                                   |                   |send response
///                                   |1xx from TU        |
///                                   |send response      |
///                                   |                   |
///                Request            V      1xx from TU  |
///                send response+-----------+send response|
///                    +--------|           |--------+    |
///                    |        | Proceeding|        |    |
///                    +------->|           |<-------+    |
///             +<--------------|           |             |
///             |Trnsprt Err    +-----------+             |
///             |Inform TU            |                   |
///             |                     |                   |
///             |                     |200-699 from TU    |
///             |                     |send response      |
///             |  Request            V                   |
///             |  send response+-----------+             |
///             |      +--------|           |             |
///             |      |        | Completed |<------------+
///             |      +------->|           |
///             +<--------------|           |
///             |Trnsprt Err    +-----------+
///             |Inform TU            |
///             |                     |Timer J fires
///             |                     |-
///             |                     |
///             |                     V
///             |               +-----------+
///             |               |           |
///             +-------------->| Terminated|
///                             |           |
///                             +-----------+
/// ```
///
/// Timer J is zero on reliable transports: the final response terminates at once.
#[derive(Debug, Clone)]
pub struct NonInviteServer {
    state: NonInviteServerState,
    timers: TimerTable,
    config: TimerConfig,
    reliable: bool,
    last_response: Option<Bytes>,
}

impl NonInviteServer {
    /// Starts the transaction for a received request (nothing is sent until the TU responds).
    pub fn start(reliable: bool, config: TimerConfig, _now: Instant) -> NonInviteServer {
        NonInviteServer {
            state: NonInviteServerState::Trying,
            timers: TimerTable::default(),
            config,
            reliable,
            last_response: None,
        }
    }

    /// A retransmission of the request: dropped in Trying, else the last response is re-sent.
    pub fn handle_retransmission(&mut self, _now: Instant) -> Actions {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                Actions::resend(self.last_response.clone())
            }
            _ => Actions::default(),
        }
    }

    /// A response from the TU. Anything after the final response is refused.
    pub fn respond(&mut self, response: &Message, now: Instant) -> Result<Actions, TxError> {
        let code = response.status().ok_or(TxError::NotAResponse)?;
        match self.state {
            NonInviteServerState::Trying | NonInviteServerState::Proceeding => {}
            _ => return Err(TxError::FinalResponseSent),
        }
        let wire = response.to_bytes();
        self.last_response = Some(wire.clone());
        if code < 200 {
            self.state = NonInviteServerState::Proceeding;
        } else if self.reliable {
            self.terminate();
        } else {
            self.state = NonInviteServerState::Completed;
            self.timers
                .set(Timer::J, now + self.config.transaction_timeout());
        }
        Ok(Actions::send(wire))
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Actions {
        for timer in self.timers.take_expired(now) {
            if timer == Timer::J && self.state == NonInviteServerState::Completed {
                self.terminate();
            }
        }
        Actions::default()
    }

    /// The transport could not send a response: inform the TU and end.
    pub fn handle_transport_error(&mut self) -> Actions {
        match self.state {
            NonInviteServerState::Terminated => Actions::default(),
            _ => {
                self.terminate();
                Actions::failed(Failure::Transport)
            }
        }
    }

    fn terminate(&mut self) {
        self.state = NonInviteServerState::Terminated;
        self.timers.stop_all();
        self.last_response = None;
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
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }
}
