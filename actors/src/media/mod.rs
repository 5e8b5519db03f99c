//! The user plane: RTP relay legs (CPM.md §5, "user plane"; ARCHITECTURE.md, "The path of a
//! call", step 4).
//!
//! ```text
//!  session actor ── owns ──► RelayLeg (actix actor: control handle, inactivity check)
//!        │                        │ LegHandle: commands (crossbeam) + waker
//!        ▼                        ▼
//!  engine::media (SDP, ports) ─► MediaPlane (one per worker) ──► media loop thread (mio Poll)
//!                                                                 owns every relay socket of
//!   A ──RTP──► [A-facing port] ─ latch, check, count ─ [B-facing port] ──RTP──► B
//!   A ◄─RTP─── [A-facing port] ─ latch, check, count ─ [B-facing port] ◄──RTP── B
//! ```
//!
//! **One media loop thread per worker**, pinned to the worker's core when workers are pinned,
//! owns every relay socket of that worker's sessions. It waits in one `epoll` set
//! (edge-triggered, through mio) and, for each readable socket, receives with `recvmmsg` into
//! pooled buffers ([`cpm_netio::BytesBatch`]), checks and counts each datagram, and sends it on
//! as the same [`bytes::Bytes`] (no copy, no allocation, no actor message per packet) with one
//! `sendmmsg` per batch (one plain send for a single datagram). A batch shorter than the buffer
//! count means the socket is drained (the next datagram raises a new edge); a socket still
//! full after [`MAX_BATCHES_PER_TURN`] batches waits for the next turn, so one flooded port
//! cannot starve the others. Control commands (open, set peer, close, snapshot) arrive on a
//! crossbeam channel with a [`mio::Waker`].
//!
//! **io_uring** ([`MediaConfig::io`], the default): the same loop, legs and checks, but every
//! receiving socket has one multishot `recvmsg` on the loop's io_uring, datagrams arrive as
//! completions in buffers lent to the kernel, and each is sent on from its buffer by a send
//! queued on the ring: one `io_uring_enter` per busy turn instead of a receive and a send per
//! datagram and the epoll bookkeeping (`uring.rs`; decision 0009). The epoll set above is
//! kept for the waker and conference rooms, watched through a poll on the ring.
//!
//! **Pace** ([`MediaConfig::pace`], 500 µs by default): once a turn relayed something, the
//! loop waits until a pace after its start before it looks at the sockets again, so that one
//! wake-up serves all the datagrams that arrived meanwhile instead of one each (a wake-up of
//! the thread costs more than relaying a datagram); an idle loop still wakes at the first one.
//!
//! **A leg** relays one RTP stream between an A-facing and a B-facing local socket pair: RTP
//! on an even port and RTCP on the next (RFC 3550 §11), or RTP and RTCP on one port when that
//! side uses rtcp-mux (RFC 5761; RTCP told apart by its packet type, §4). Latching is symmetric
//! RTP (as rtpengine does): packets go to the address from SDP ([`LegHandle::set_peer`]) until
//! the first valid packet from that side arrives, then to that packet's source. After
//! latching, packets from any other source are dropped and counted
//! ([`DropReason::WrongSource`]), or, with `--media-strict-source false`, latch again.
//! RTP is checked with `cpm_engine::rtp::parse` (RFC 3550 §5.1) and accounted per direction
//! in an [`cpm_engine::rtp::ReceiverStats`] (loss A.3, jitter A.8); RTCP is checked by its
//! first header only (version, packet type 192..=223, length within the datagram), so SRTCP
//! and reduced-size RTCP (RFC 5506) pass, and is relayed untouched.
//!
//! **Connected fast path** ([`MediaConfig::connect_latched`], on by default): once an RTP
//! socket latched its source it is `connect()`ed to it, after a second, never connected
//! "catch-all" socket was bound to the same address and port (both `SO_REUSEPORT`,
//! [`cpm_netio::BatchSocket::open_catch_all`]). The kernel then finds the connected socket by
//! the datagram's 4-tuple and delivers the latched source's datagrams to it, and sends to that
//! source without a route lookup; every other source's datagrams reach the catch-all, where
//! they are counted ([`DropReason::WrongSource`]) or, without strict source, latch again (the
//! RTP socket is then connected to the new source). The catch-all is read like its RTP socket;
//! when connecting, the RTP socket is drained, connected, then the catch-all drained, so the
//! source's datagrams keep their order across the switch. A changed SDP address leaves the
//! socket connected until the new source's first packet (on the catch-all) latches it. RTCP on
//! its own port (a packet every few seconds) is not connected. A connected port holds two
//! descriptors; the plane raises `RLIMIT_NOFILE` to its hard limit at start.
//!
//! **Counters** (see [`stats`]): packets, bytes and drops by reason are single-writer atomics,
//! at most 100 ms behind while packets flow (a second once they stop); RTP loss/jitter and latched addresses are published once per second and on
//! demand ([`LegHandle::snapshot`]). Every leg also feeds its worker's Prometheus counters
//! ([`crate::metrics::MediaMetrics`]).
//!
//! **Release**: a leg's sockets are closed by the loop when its handle is closed or dropped;
//! [`RelayLeg`] wraps the handle so that stopping the actor, dropping its last `Addr`, or the
//! owning session actor going away (a panic included) closes the leg.

mod actor;
mod leg;
mod plane;
mod relay_loop;
pub mod room;
pub mod stats;
mod uring;

use std::fmt;

pub use crate::config::MediaIo;
pub use actor::{Close, GetStats, MediaInactive, RelayLeg, SetPeer, Snapshot};
pub use plane::{
    BoundLeg, LegControl, LegHandle, LegStatsReader, MediaConfig, MediaPlane, OpenError, Reply,
    RoomHandle, Stopped,
};
pub use relay_loop::{relay_sockets, MAX_BATCHES_PER_TURN};
pub use room::{Mix, RoomEvent, TickStats};
pub use stats::{DirStats, DropReason, LegStats, RtpStats};

/// The two parties of a B2BUA session (the engine's, shared with the media controller and
/// the session).
pub use cpm_engine::media::Side;

/// Identifies a relay leg within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "leg-{}", self.0)
    }
}

/// The local ports of one side of a leg, on `--media-ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidePorts {
    /// The RTP port (even, RFC 3550 §11; 0 lets the OS choose, for tests).
    pub rtp: u16,
    /// The RTCP port (usually `rtp + 1`), or `None` when this side multiplexes RTCP on the RTP
    /// port (`a=rtcp-mux`, RFC 5761).
    pub rtcp: Option<u16>,
}

impl SidePorts {
    /// RTP on `rtp`, RTCP on `rtp + 1` (RFC 3550 §11).
    pub fn pair(rtp: u16) -> SidePorts {
        SidePorts {
            rtp,
            rtcp: Some(rtp.wrapping_add(1)),
        }
    }

    /// RTP and RTCP on one port (RFC 5761).
    pub fn mux(rtp: u16) -> SidePorts {
        SidePorts { rtp, rtcp: None }
    }
}

/// What to open: the ports of the A-facing and the B-facing socket pairs (chosen by the
/// caller from its port pool) and the RTP clock of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSpec {
    /// The A-facing ports: A sends to them (they appear in the SDP sent to A).
    pub a: SidePorts,
    /// The B-facing ports.
    pub b: SidePorts,
    /// The RTP clock rate in Hz of the negotiated codec (8000 for G.711), for jitter.
    pub clock_rate: u32,
}
