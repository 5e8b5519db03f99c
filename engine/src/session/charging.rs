//! Charging data (CH-x): the records a session produces (start at the 2xx, interim on demand,
//! stop at the end). Plain data: the actor adds the media counters and writes them to its sink.

use std::time::Instant;

use bytes::Bytes;

use super::{EndReason, SessionInfo};

/// Which charging event a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChargingKind {
    /// The session was answered.
    Start,
    /// A periodic record while the session is up.
    Interim,
    /// The session ended (also for a session that was never answered).
    Stop,
}

/// Packet counters of one direction of a media leg (RFC 3550 A.3 loss, A.8 jitter).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowCounters {
    /// Packets relayed.
    pub packets: u64,
    /// Bytes relayed (RTP payload and headers).
    pub bytes: u64,
    /// Packets lost, from sequence numbers.
    pub lost: u64,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
}

/// MSRP counters of one message stream (RFC 4975), `[from A, from B]` each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsrpUsage {
    /// Complete messages relayed (chunks ending in `$`).
    pub messages: [u64; 2],
    /// SEND chunks relayed.
    pub chunks: [u64; 2],
    /// Body bytes relayed.
    pub bytes: [u64; 2],
    /// Failure REPORTs the relay generated (RFC 4975 §7.1.2).
    pub reports_generated: u64,
}

/// Usage of one media leg (one `m=` line relayed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegUsage {
    /// The index of the stream's `m=` line.
    pub stream: usize,
    /// The media type (`audio`, `video`, ...).
    pub media: String,
    /// The codec in use, if known.
    pub codec: Option<String>,
    /// What A sent (relayed toward B).
    pub from_a: FlowCounters,
    /// What B sent (relayed toward A).
    pub from_b: FlowCounters,
    /// An MSRP leg's figures (`m=message`; its flows then count chunks and body bytes).
    pub msrp: Option<MsrpUsage>,
}

/// One charging record.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargingRecord {
    /// Start, interim or stop.
    pub kind: ChargingKind,
    /// When the event happened.
    pub at: Instant,
    /// The Call-ID of A's INVITE.
    pub call_id: Bytes,
    /// The calling party (A's From value).
    pub from: Bytes,
    /// The called party (A's To value).
    pub to: Bytes,
    /// When A's INVITE arrived.
    pub invited: Instant,
    /// When the session was answered.
    pub answered: Option<Instant>,
    /// When it ended (stop records).
    pub ended: Option<Instant>,
    /// The final status sent to A, once known.
    pub final_status: Option<u16>,
    /// Why it ended (stop records).
    pub end_reason: Option<EndReason>,
    /// Per-leg counters: empty from the session, filled in by the actor from its relay legs.
    pub legs: Vec<LegUsage>,
}

impl ChargingRecord {
    /// A record of `kind` at `at` for the session described by `info`.
    pub fn new(
        kind: ChargingKind,
        at: Instant,
        info: &SessionInfo,
        reason: Option<EndReason>,
    ) -> ChargingRecord {
        ChargingRecord {
            kind,
            at,
            call_id: info.call_id.clone(),
            from: info.from.clone(),
            to: info.to.clone(),
            invited: info.invited,
            answered: info.answered,
            ended: info.ended,
            final_status: info.final_status,
            end_reason: reason,
            legs: Vec::new(),
        }
    }
}
