//! SIP transactions (RFC 3261 §17, with the RFC 6026 corrections): the four state machines and
//! the [`TransactionLayer`] that owns every transaction of one worker.
//!
//! Like quinn-proto's `Endpoint`, the layer is sans-IO: it has no socket and reads no clock.
//! Messages and the time go in (`handle_*`, each with `now`); what to send, what the TU must
//! know and when to wake up come out (`poll_transmit`, `poll_event`, `poll_timeout`).
//!
//! # The drive loop
//!
//! A per-worker driver feeds one input, drains the outputs, and re-arms its one timer:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use bytes::Bytes;
//! use cpm_engine::sip::{builder, parse};
//! use cpm_engine::sip::transaction::{LayerConfig, RequestOutcome, TransactionLayer, TxEvent};
//!
//! let mut layer = TransactionLayer::new(LayerConfig::default(), 0x5eed);
//! // The driver's clock: only the driver reads it.
//! let now = Instant::now();
//! let peer: SocketAddr = "192.0.2.10:5060".parse().unwrap();
//! let datagram = Bytes::from_static(
//!     b"OPTIONS sip:cpm.example SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9\r\n\
//!       From: <sip:alice@example.com>;tag=9fxced76sl\r\n\
//!       To: <sip:cpm.example>\r\n\
//!       Call-ID: 3848276298220188511@example.com\r\n\
//!       CSeq: 1 OPTIONS\r\n\
//!       Max-Forwards: 70\r\n\
//!       Content-Length: 0\r\n\r\n",
//! );
//!
//! // 1. One input.
//! match layer.handle_request(parse(datagram).unwrap(), peer, false, now) {
//!     RequestOutcome::New { id, request } => {
//!         // The TU answers (here at once).
//!         let ok = builder::response_to_with_tag(&request, 200, "OK", Some("a1b2"));
//!         layer.respond(id, &ok, now).unwrap();
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! // 2. Drain the outputs.
//! let mut sent = 0;
//! while let Some(t) = layer.poll_transmit() {
//!     assert_eq!(t.dest, peer); // socket.send_to(&t.payload, t.dest)
//!     sent += 1;
//! }
//! assert_eq!(sent, 1);
//! assert!(layer.poll_event().is_none());
//! // 3. Re-arm the one timer; when it fires, hand the layer the time and drain again.
//! let deadline = layer.poll_timeout().expect("Timer J absorbs retransmissions");
//! layer.handle_timeout(deadline);
//! assert!(matches!(layer.poll_event(), Some(TxEvent::Terminated(_))));
//! assert!(layer.is_empty() && layer.poll_timeout().is_none());
//! ```
//!
//! # What is implemented
//! - RFC 3261 figures 5-8 as four types ([`InviteClient`], [`NonInviteClient`],
//!   [`InviteServer`], [`NonInviteServer`]), with the "Accepted" states and Timers L and M of
//!   RFC 6026: a 2xx no longer ends an INVITE transaction at once, so INVITE retransmissions
//!   after a 2xx are absorbed and every 2xx (forks, retransmissions) reaches the TU.
//! - Reliable transports: Timers A, E, G unused; D, I, J, K zero (the transaction ends at once).
//! - Matching: §17.1.3 for responses; §17.2.3 for requests, with the RFC 2543 fallback; the
//!   CANCEL of §9.2 gets its own transaction and names the INVITE transaction it targets.
//! - A `100 Trying` goes out as soon as an INVITE creates a server transaction (§17.2.1).
//! - On a client timeout or transport error the TU gets a synthesized 408 or 503 (§8.1.3.1).
//!
//! Left to the TU (the dialog layer): retransmitting 2xx responses until the ACK and sending
//! the ACK for a 2xx (§13.3.1.4, §13.2.2.4; [`TransactionLayer::send_stateless`]).

mod client_invite;
mod client_non_invite;
mod key;
mod layer;
mod server_invite;
mod server_non_invite;
mod timer;

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::sip::hdr::HeaderError;
use crate::sip::Message;

pub use client_invite::{InviteClient, InviteClientState};
pub use client_non_invite::{NonInviteClient, NonInviteClientState};
pub use layer::{response_dest, TransactionLayer};
pub use server_invite::{AckDisposition, InviteServer, InviteServerState};
pub use server_non_invite::{NonInviteServer, NonInviteServerState};
pub use timer::{Timer, TimerConfig};

/// What a transaction asks for after one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Actions {
    /// Bytes to send to the transaction's peer (request, response or ACK).
    pub send: Option<Bytes>,
    /// Whether `send` repeats an earlier message.
    pub retransmission: bool,
    /// Whether the input (a response, or an ACK in Accepted) goes up to the TU.
    pub to_tu: bool,
    /// The transaction failed; the TU must be told.
    pub failed: Option<Failure>,
}

impl Actions {
    fn send(payload: Bytes) -> Actions {
        Actions {
            send: Some(payload),
            ..Actions::default()
        }
    }

    fn to_tu() -> Actions {
        Actions {
            to_tu: true,
            ..Actions::default()
        }
    }

    /// Re-sends an earlier message, if there is one.
    fn resend(payload: Option<Bytes>) -> Actions {
        Actions {
            retransmission: payload.is_some(),
            send: payload,
            ..Actions::default()
        }
    }

    /// The transaction failed; the TU is told.
    fn failed(failure: Failure) -> Actions {
        Actions {
            failed: Some(failure),
            ..Actions::default()
        }
    }
}

/// Why a transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Timer B, F (no final response) or H (no ACK) fired.
    Timeout,
    /// The transport reported that a message could not be sent.
    Transport,
}

impl Failure {
    /// The final response a client TU sees instead (RFC 3261 §8.1.3.1): 408 or 503.
    pub fn synthesized_status(self) -> (u16, &'static str) {
        match self {
            Failure::Timeout => (408, "Request Timeout"),
            Failure::Transport => (503, "Service Unavailable"),
        }
    }
}

/// A client transaction, as named by the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

/// A server transaction, as named by the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);

/// Either kind of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxId {
    /// A client transaction.
    Client(ClientTxId),
    /// A server transaction.
    Server(ServerTxId),
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: SocketAddr,
    /// Over a reliable transport (TCP/TLS/WS) rather than UDP.
    pub reliable: bool,
    /// The serialized message.
    pub payload: Bytes,
    /// The transaction that sent it; report a failed send with
    /// [`TransactionLayer::handle_transport_error`].
    pub tx: Option<TxId>,
}

/// What the layer did with a received request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new server transaction: the TU must answer it with [`TransactionLayer::respond`].
    New {
        /// The transaction.
        id: ServerTxId,
        /// The request, its top Via stamped with `received`/`rport` (§18.2.1, RFC 3581).
        request: Message,
    },
    /// Absorbed by an existing transaction (a retransmission, or a repeated ACK); the last
    /// response, if any, is re-sent through a transmit.
    Retransmission(ServerTxId),
    /// The ACK for a non-2xx final response, absorbed by its INVITE transaction.
    AckForInvite(ServerTxId),
    /// An ACK that belongs to the TU: the ACK for a 2xx (its own transaction, §17).
    Ack2xx(Message),
    /// A new CANCEL (§9.2): its own transaction, and the INVITE transaction it targets if that
    /// exists. The TU answers the CANCEL (200, or 481 without a target) and, if the INVITE is
    /// still unanswered, the INVITE with 487.
    Cancel {
        /// The CANCEL's own transaction.
        cancel_tx: ServerTxId,
        /// The INVITE transaction it matches.
        invite_tx: Option<ServerTxId>,
        /// The CANCEL request.
        request: Message,
    },
    /// No transaction can be formed (no usable Via, or no Call-ID/CSeq for RFC 2543 matching).
    Invalid {
        /// The request.
        request: Message,
        /// What is missing.
        error: TxError,
    },
}

/// What the layer did with a received response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Pass the response to the TU.
    Response {
        /// The client transaction it belongs to.
        id: ClientTxId,
        /// The response.
        response: Message,
    },
    /// Absorbed by its transaction (a retransmitted final response; the ACK may be re-sent).
    Absorbed(ClientTxId),
    /// It matches no transaction (counted). A stray 2xx to an INVITE may interest the dialog.
    Stray(Message),
}

/// The result of [`TransactionLayer::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The CANCEL went out as this client transaction.
    Sent(ClientTxId),
    /// No provisional response yet: the CANCEL goes out when one arrives (§9.1), announced by
    /// [`TxEvent::CancelSent`]; a final response first makes it moot.
    Deferred,
}

/// What the TU must learn apart from the responses it is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A client transaction ended without a final response; `response` is the 408 (timeout) or
    /// 503 (transport error) the TU treats as the answer (RFC 3261 §8.1.3.1).
    ClientFailed {
        /// The transaction.
        id: ClientTxId,
        /// Why.
        reason: Failure,
        /// The synthesized final response.
        response: Message,
    },
    /// A server transaction failed: no ACK came for a final response (Timer H), or a response
    /// could not be sent.
    ServerFailed {
        /// The transaction.
        id: ServerTxId,
        /// Why.
        reason: Failure,
    },
    /// A deferred CANCEL went out after the first provisional response.
    CancelSent {
        /// The INVITE transaction being cancelled.
        invite: ClientTxId,
        /// The CANCEL's transaction.
        cancel: ClientTxId,
    },
    /// A transaction reached Terminated and was removed.
    Terminated(TxId),
}

/// Layer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    /// T1, T2, T4 and Timer D.
    pub timers: TimerConfig,
    /// Send `100 Trying` as soon as an INVITE arrives (§17.2.1); default true.
    pub auto_trying: bool,
}

impl Default for LayerConfig {
    fn default() -> LayerConfig {
        LayerConfig {
            timers: TimerConfig::default(),
            auto_trying: true,
        }
    }
}

/// Counters of one layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Messages sent again: request, response and ACK retransmissions.
    pub retransmissions_sent: u64,
    /// Responses that matched no client transaction.
    pub stray_responses: u64,
    /// Transactions ended by Timer B, F or H.
    pub timeouts: u64,
    /// Transactions ended by a transport error.
    pub transport_errors: u64,
}

/// The transactions of one layer in flight, by kind ([`TransactionLayer::in_flight`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    /// INVITE client transactions.
    pub client_invite: usize,
    /// Non-INVITE client transactions.
    pub client_non_invite: usize,
    /// INVITE server transactions.
    pub server_invite: usize,
    /// Non-INVITE server transactions.
    pub server_non_invite: usize,
}

/// Why the layer refused an input (API misuse) or could not form a transaction (peer input).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxError {
    /// A response was given where a request is needed.
    NotARequest,
    /// A request was given where a response is needed.
    NotAResponse,
    /// A header needed for matching is missing or malformed.
    Header(HeaderError),
    /// A request to send has no RFC 3261 branch (`z9hG4bK...`) in its top Via.
    MissingBranch,
    /// An ACK is not a transaction: send the ACK for a 2xx with `send_stateless`.
    AckIsNotATransaction,
    /// A client transaction with this branch and method already exists.
    DuplicateTransaction,
    /// No such transaction (it may have terminated).
    UnknownTransaction,
    /// A final response was already sent; this response is not allowed any more.
    FinalResponseSent,
    /// Only an INVITE client transaction without a final response can be cancelled.
    NotCancellable,
}

impl TxError {
    /// A reason phrase naming the problem.
    pub fn reason(&self) -> String {
        match self {
            TxError::NotARequest => "Not A Request".into(),
            TxError::NotAResponse => "Not A Response".into(),
            TxError::Header(e) => e.reason(),
            TxError::MissingBranch => "Missing RFC 3261 Branch".into(),
            TxError::AckIsNotATransaction => "ACK Is Not A Transaction".into(),
            TxError::DuplicateTransaction => "Duplicate Transaction".into(),
            TxError::UnknownTransaction => "Unknown Transaction".into(),
            TxError::FinalResponseSent => "Final Response Already Sent".into(),
            TxError::NotCancellable => "Transaction Not Cancellable".into(),
        }
    }
}

impl From<HeaderError> for TxError {
    fn from(e: HeaderError) -> TxError {
        TxError::Header(e)
    }
}

impl fmt::Display for TxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for TxError {}

#[cfg(test)]
mod tests;
