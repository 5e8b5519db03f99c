//! 1-to-1 sessions: the signaling half of the B2BUA between a caller (side A) and the
//! registered contacts of a callee (side B), CPM.md §4 "Session controller", fig. 6-7.
//!
//! A [`Session`] is a sans-IO state machine. It owns no transaction and no socket: the actor
//! that drives it runs the worker's [`TransactionLayer`](crate::sip::transaction::TransactionLayer)
//! and feeds the session what the layer reports for it (`on_request`, `on_cancel`, `on_ack`,
//! `on_response`), the time (`on_timer`), and media events (`on_media_inactive`). What the
//! session wants done comes out of [`Session::poll_action`] as [`Action`]s: requests and
//! responses to send through the layer, ACKs sent outside any transaction, the one timer to
//! arm, charging records to write, and finally [`Action::Ended`]. Every SDP body it relays goes
//! through an [`SdpRelay`] (the media plane rewrites it to our relay addresses), and a
//! [`SessionPolicy`] is told of every step.
//!
//! ```text
//!  A                         Session (B2BUA)                          B contacts
//!  │ INVITE (offer) ───────► SdpRelay::offer(A) ──► INVITE ─────────► b1, b2 (parallel fork)
//!  │ ◄── 180/183 (our tag) ◄ SdpRelay::answer(B) ◄─ 180/183 (early dialog per branch)
//!  │ ◄── 200 (answer) ◄───── first 2xx wins ◄────── 200 from b1; ACK b1; CANCEL b2
//!  │ ACK ──────────────────► (stops our 2xx retransmissions)
//!  │ re-INVITE/UPDATE ─────► SdpRelay::offer/answer ─► re-INVITE/UPDATE ─► b1 (and back)
//!  │ BYE ──────────────────► 200 to A, BYE ─────────────────────────► b1; Ended
//! ```
//!
//! States (the phase of the call as a whole):
//!
//! ```text
//!   Setup ──first 2xx──► Connected ──BYE, expiry, inactivity, no ACK──► Ending ──► Ended
//!     │                                                                   ▲
//!     └──all branches fail, 6xx, CANCEL, early BYE, Timer C, rejection ──┘
//! ```
//! `Ending` lasts while INVITE branches still owe a final response (they were CANCELled) or a
//! BYE waits for the ACK of our 2xx (RFC 3261 §15), bounded by 64*T1; then `Ended`.
//!
//! Decisions are in `docs/decisions/0008-b2bua-session.md`.

mod charging;
mod headers;
mod machine;
mod policy;
pub mod timer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::transaction::ServerTxId;
use crate::sip::{builder, Message};

pub use crate::media::{MediaReject, SdpRelay, Side};
pub use charging::{ChargingKind, ChargingRecord, FlowCounters, LegUsage, MsrpUsage};
pub use machine::Session;
pub use policy::{Admission, NoPolicy, SessionInfo, SessionPolicy, SessionState};

/// A session-local name for a request the session sends; the actor reports its responses with
/// [`Session::on_response`] (it maps the client transaction it started to this id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

/// A place requests go: a contact URI (the Request-URI), and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The contact URI (Request-URI of the initial INVITE toward a B contact).
    pub uri: Bytes,
    /// The transport address (for A: where its INVITE came from; decision 0008).
    pub dest: SocketAddr,
    /// Over a reliable transport (TCP).
    pub reliable: bool,
}

/// Settings of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our SIP address (`host:port`) for the Via sent-by and the Contact of our messages.
    pub local: String,
    /// The hard limit on call setup (Timer C style, RFC 3261 §16.8): CANCEL and 408 after it.
    pub setup_limit: Duration,
    /// T1 (RFC 3261 §17.1.1.1): our 2xx retransmissions start at T1 and last 64*T1.
    pub t1: Duration,
    /// T2: the cap of the 2xx retransmission interval (§13.3.1.4).
    pub t2: Duration,
    /// The smallest Session-Expires we accept (RFC 4028 Min-SE; 422 below it).
    pub min_se: u32,
    /// The Session-Expires we insert when the caller supports timers but asks for none.
    pub session_expires: u32,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            local: "127.0.0.1:5060".into(),
            setup_limit: Duration::from_secs(180),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            min_se: 90,
            session_expires: 1800,
        }
    }
}

/// What starts a session: A's INVITE as the transaction layer handed it over, and B's contacts.
#[derive(Debug, Clone)]
pub struct SessionStart {
    /// A's INVITE server transaction.
    pub tx: ServerTxId,
    /// A's INVITE (its top Via stamped by the layer).
    pub invite: Message,
    /// Where A's INVITE came from (in-dialog requests to A go there).
    pub source: SocketAddr,
    /// Whether it came over a reliable transport.
    pub reliable: bool,
    /// Every registered contact of B (one INVITE each, in parallel).
    pub contacts: Vec<Peer>,
    /// The Call-ID of the B side (chosen by the actor, e.g. one owned by the same worker).
    pub b_call_id: Bytes,
    /// Seed of the session's branches and tags (take it from the OS RNG in the driver).
    pub seed: u64,
}

/// What the actor must do for the session, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a client transaction for `request` toward `side` (`TransactionLayer::send_request`)
    /// and report its responses (and a synthesized 408/503) with `on_response(id, ..)`.
    SendRequest {
        /// The session's name for it.
        id: ReqId,
        /// Toward which side.
        side: Side,
        /// Where to send it.
        dest: SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
        /// The request (top Via with a fresh branch).
        request: Message,
    },
    /// Cancel the INVITE client transaction started for `id` (`TransactionLayer::cancel`).
    Cancel {
        /// The INVITE's id.
        id: ReqId,
    },
    /// Send `response` on server transaction `tx` (`TransactionLayer::respond`); a 2xx to an
    /// INVITE is repeated by the session itself until the ACK (RFC 3261 §13.3.1.4).
    Respond {
        /// The server transaction.
        tx: ServerTxId,
        /// The response.
        response: Message,
    },
    /// Send the ACK of a 2xx outside any transaction (`TransactionLayer::send_stateless`).
    SendAck {
        /// Toward which side.
        side: Side,
        /// Where to send it.
        dest: SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
        /// The ACK.
        ack: Message,
    },
    /// Arm the session's one timer at this instant (`None`: disarm); call `on_timer` then.
    Timer(Option<Instant>),
    /// A charging event to write (start at the 2xx, interim on demand, stop at the end).
    Charging(Box<ChargingRecord>),
    /// The session is over: drop it, abandon its remaining client transactions, release media.
    Ended(EndReason),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Setup failed; this final status went to A (no branch answered, media or policy refusal).
    Rejected(u16),
    /// Every branch was unavailable (this best status: 408, 480, 5xx) and A's INVITE was left
    /// unanswered for the runtime (`Session::hand_back_when_unavailable`).
    HandedBack(u16),
    /// A cancelled before the answer (CANCEL, or BYE on the early dialog).
    Cancelled,
    /// The setup limit (Timer C) passed without an answer.
    SetupTimeout,
    /// This side hung up.
    Bye(Side),
    /// No session refresh came in time (RFC 4028).
    SessionExpired,
    /// The media plane saw no RTP for too long.
    MediaInactive,
    /// An offer or answer in a 2xx or ACK could not be relayed.
    MediaFailure,
    /// A 2xx we sent was never acknowledged (RFC 3261 §13.3.1.4).
    NoAck,
    /// This side answered 481 or 408 to an in-dialog request: its dialog is gone (RFC 5057).
    PeerGone(Side),
    /// The session's runtime stopped it from outside the state machine (its actor failed or
    /// the server stopped).
    Aborted,
    /// The server is shutting down: its drain time passed with the session still up, so it
    /// ended it (BYE to both parties, or 503 to a caller still being connected).
    Shutdown,
}

impl EndReason {
    /// A short name for logs and charging records.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Rejected(_) => "rejected",
            EndReason::HandedBack(_) => "handed-back",
            EndReason::Cancelled => "cancelled",
            EndReason::SetupTimeout => "setup-timeout",
            EndReason::Bye(Side::A) => "bye-caller",
            EndReason::Bye(Side::B) => "bye-callee",
            EndReason::SessionExpired => "session-expired",
            EndReason::MediaInactive => "media-inactive",
            EndReason::MediaFailure => "media-failure",
            EndReason::NoAck => "no-ack",
            EndReason::PeerGone(Side::A) => "caller-gone",
            EndReason::PeerGone(Side::B) => "callee-gone",
            EndReason::Aborted => "aborted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer for a request that matches no session's dialog (RFC 3261 §12.2.2): 481.
pub fn no_dialog(req: &Message) -> Message {
    builder::local_response(req, 481, "Call/Transaction Does Not Exist")
}
