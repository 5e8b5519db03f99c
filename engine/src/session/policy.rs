//! The session policy hook (CPM.md §4, session controller [32]: update session state, decide
//! whether to store the session history, charging), called by the [`Session`](super::Session)
//! at each step so later features plug in without touching the state machine.

use std::time::Instant;

use bytes::Bytes;

use super::{ChargingRecord, EndReason, Side};
use crate::sip::Message;

/// Where a session stands, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The INVITE is being forwarded; no provisional response with a tag relayed yet.
    Calling,
    /// A provisional response was relayed to A (ringing, early media).
    Early,
    /// A 2xx was relayed: the session is up.
    Connected,
    /// Ending: waiting for the last transactions.
    Ending,
    /// Over.
    Ended,
}

/// What the policy (and the charging records) know of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The Call-ID of A's INVITE.
    pub call_id: Bytes,
    /// The Call-ID of the B side.
    pub b_call_id: Bytes,
    /// The From value of A's INVITE (the caller).
    pub from: Bytes,
    /// The To value of A's INVITE (the callee's address-of-record).
    pub to: Bytes,
    /// The state.
    pub state: SessionState,
    /// When A's INVITE arrived.
    pub invited: Instant,
    /// When the 2xx was relayed to A.
    pub answered: Option<Instant>,
    /// When the session started ending.
    pub ended: Option<Instant>,
    /// The final status sent to A for its INVITE.
    pub final_status: Option<u16>,
    /// Whether the session history is to be stored (the policy's decision).
    pub store_history: bool,
}

/// The policy's answer to a new INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go on; `store_history` is the storage decision for this session.
    Accept {
        /// Store the session history (CPM.md §5, network storage).
        store_history: bool,
    },
    /// Refuse the INVITE with this status.
    Reject {
        /// The status for A.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
}

/// Called at each step of a session; every method has a default that does nothing.
pub trait SessionPolicy {
    /// A's INVITE arrived, before anything is forwarded: admit it or not.
    fn invite_received(&mut self, _info: &SessionInfo, _invite: &Message) -> Admission {
        Admission::Accept {
            store_history: false,
        }
    }

    /// A provisional response with SDP (early media) was relayed to A.
    fn early_media(&mut self, _info: &SessionInfo) {}

    /// The session was answered (the 2xx went to A).
    fn answered(&mut self, _info: &SessionInfo) {}

    /// An offer/answer exchange started by `by` (re-INVITE, UPDATE) completed.
    fn media_changed(&mut self, _info: &SessionInfo, _by: Side) {}

    /// A charging record was produced (the actor writes it to the sink).
    fn charging(&mut self, _record: &ChargingRecord) {}

    /// The session ended.
    fn ended(&mut self, _info: &SessionInfo, _reason: EndReason) {}
}

/// The policy that admits everything and does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoPolicy;

impl SessionPolicy for NoPolicy {}
