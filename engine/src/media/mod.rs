//! The media capability controller of the B2BUA (CPM.md §5, "media capability controller" and
//! "user plane"): per session, which streams are relayed, on which local ports, toward which
//! peer addresses, and the SDP each side is sent.
//!
//! Sans-IO like the rest of the crate: [`MediaSession`] turns SDP bodies into rewritten SDP
//! bodies and a queue of [`LegChange`]s; the actors drain the queue with
//! [`MediaSession::poll_change`] and open, point and close the relay sockets. Ports come from
//! the worker's [`PortPool`], passed in with each call, so nothing here is shared between
//! threads.
//!
//! ```text
//!   offer from A ──► MediaSession::offer ──► offer for B (c=/m=/a=rtcp → B-facing ports)
//!   answer from B ─► MediaSession::answer ─► answer for A (c=/m=/a=rtcp → A-facing ports)
//!                          │
//!                          └──► poll_change(): Open / SetPeer / Close ──► media loop (actors)
//! ```

mod msrp;
mod pool;
mod rewrite;
mod session;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::sdp::Codec;

pub use msrp::{MsrpConfig, MsrpPeer};
pub use pool::{LocalPorts, PortPool};
pub use session::{MediaSession, Relay};

/// One side of the B2BUA: A is the caller (we are its UAS), B the callee (we are its UAC).
/// Shared by the media plane and the session ([`crate::session`] re-exports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The caller's side.
    A,
    /// The callee's side.
    B,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// 0 for A, 1 for B: an index into per-side arrays.
    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    /// The side of an index given by [`Side::index`] (any index but 0 is B).
    pub fn from_index(i: usize) -> Side {
        if i == 0 {
            Side::A
        } else {
            Side::B
        }
    }
}

/// What the session needs from the media plane: every SDP body it relays passes through here.
pub trait SdpRelay {
    /// An offer arriving from `from` (in INVITE, re-INVITE, UPDATE, or a 2xx/ACK for late offer);
    /// returns the offer to send to the other side (rewritten to our addresses).
    fn offer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject>;
    /// The answer arriving from `from` to the last offer; returns the answer for the other side.
    /// It may come more than once for one offer (an early answer in a 183, then the 2xx's, or
    /// the 2xx of another fork): the last one wins.
    fn answer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject>;
    /// The offer was rejected or abandoned (CANCEL, 4xx to a re-INVITE): roll back to the last
    /// agreed state (RFC 3264 §8 / RFC 6337).
    fn rollback(&mut self);
}

/// Why an SDP body was refused, as the SIP response that says so (RFC 3261 §21).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReject {
    /// The status code: 400 (unparsable), 488 (no common codec), 503 (no free port), ...
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Seconds for the `Retry-After` header of a 503 (RFC 3261 §20.33).
    pub retry_after: Option<u32>,
}

impl fmt::Display for MediaReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for MediaReject {}

/// A stream of the session: the index of its `m=` line (RFC 3264 §8: m-lines are never
/// removed, only disabled with port 0, and new ones are appended, so the index is stable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub usize);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// The media type of a stream, from its `m=` line (RFC 8866 §5.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
    /// Any other type relayed as RTP (`text`, `application`, ...).
    Other,
}

impl MediaKind {
    /// The kind named by an `m=` line's media token (ASCII case-insensitively).
    pub fn from_token(token: &[u8]) -> MediaKind {
        if token.eq_ignore_ascii_case(b"audio") {
            MediaKind::Audio
        } else if token.eq_ignore_ascii_case(b"video") {
            MediaKind::Video
        } else {
            MediaKind::Other
        }
    }
}

/// What the user plane must do for a session's legs, in order (drained with
/// [`MediaSession::poll_change`]). A leg relays one RTP stream between its A-facing and its
/// B-facing local ports, all on the media IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegChange {
    /// Bind the ports of a new leg and start relaying. `rtcp_mux`: RTCP was offered (or,
    /// when reopened after a rollback, agreed) on the RTP port (RFC 5761), so RTCP may arrive
    /// there: tell it apart by RFC 5761 §4. Bind the RTCP ports anyway when given.
    Open {
        /// The stream.
        stream: StreamId,
        /// Audio, video or other.
        kind: MediaKind,
        /// The ports side A sends to.
        a_facing: LocalPorts,
        /// The ports side B sends to.
        b_facing: LocalPorts,
        /// Whether RTCP may be multiplexed on the RTP port.
        rtcp_mux: bool,
    },
    /// Where `side` receives media, from its SDP (before latching, symmetric RTP). `rtcp` is
    /// `None` when that side multiplexes RTCP on the RTP address (RFC 5761).
    SetPeer {
        /// The stream.
        stream: StreamId,
        /// Whose address this is.
        side: Side,
        /// Where to send its RTP.
        rtp: SocketAddr,
        /// Where to send its RTCP (`a=rtcp`, RFC 3605, else RTP port + 1).
        rtcp: Option<SocketAddr>,
    },
    /// Open an MSRP leg (RFC 4975, anchored like an RFC 4976 relay on the shared MSRP
    /// listener): our URI facing each side; the sides' paths follow in [`LegChange::MsrpPeer`].
    /// Connections arriving at the listener are matched by the session-id of these URIs.
    OpenMsrp {
        /// The stream.
        stream: StreamId,
        /// Our URI side A sends to (`msrp://<media-ip>:<port>/<session-id>;tcp`).
        a_facing: Bytes,
        /// Our URI side B sends to.
        b_facing: Bytes,
    },
    /// Where `side` of an MSRP leg is: its `a=path` and whether we connect to it (else it
    /// connects to us), per `a=setup` (RFC 6135).
    MsrpPeer {
        /// The stream.
        stream: StreamId,
        /// Whose path this is.
        side: Side,
        /// Its path and role.
        peer: MsrpPeer,
    },
    /// Stop relaying and close the leg's sockets (RTP) or connections (MSRP); RTP ports are
    /// back in the pool.
    Close {
        /// The stream.
        stream: StreamId,
    },
}

/// The controller's configuration: the media IP (`--media-ip`), the codec policy and the
/// `Retry-After` of a 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// The address of the relay sockets, written into every `c=` we send.
    pub ip: IpAddr,
    /// The codecs allowed through (RFC 3264 §6.1 format match); `None` allows every format.
    pub codecs: Option<Vec<Codec>>,
    /// Seconds in the `Retry-After` of a 503 when the pool is exhausted.
    pub retry_after: u32,
    /// Where MSRP streams are anchored; `None` passes them through unanchored, end to end.
    pub msrp: Option<MsrpConfig>,
}

impl MediaConfig {
    /// The default `Retry-After` of a 503 for an exhausted pool, in seconds.
    pub const DEFAULT_RETRY_AFTER: u32 = 5;

    /// Relay on `ip`, every codec allowed, MSRP not anchored.
    pub fn new(ip: IpAddr) -> MediaConfig {
        MediaConfig {
            ip,
            codecs: None,
            retry_after: MediaConfig::DEFAULT_RETRY_AFTER,
            msrp: None,
        }
    }
}
