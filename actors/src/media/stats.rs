//! What a relay leg counts, and how the media loop shares it with the control side.
//!
//! The media loop is the only writer. Packet, byte and drop counters and the last-packet time
//! are atomics (a relaxed load and store: a single writer needs no read-modify-write
//! instruction) that it updates from its own per-leg counts at most every 100 ms while packets
//! arrive (`leg::COUNT_FLUSH`: the shared line is a cache miss per write), at the once-a-second
//! publish and on snapshot and close. The RTP
//! receiver figures (RFC 3550 A.3 loss, A.8 jitter) and the latched addresses live in the
//! loop's own state and are published under a per-leg mutex once per second for legs that
//! received anything, and on demand ([`super::LegHandle::snapshot`], close).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cpm_engine::rtp::{ReceiverStats, Ssrc};
use parking_lot::Mutex;

use super::{LegId, Side};

/// Why the relay dropped a received datagram (the discriminant is its counter slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From another address than the one latched (strict source mode).
    WrongSource,
    /// Not a valid RTP packet (RFC 3550 §5.1) on an RTP port, not RTCP (§6.4) on an RTCP port,
    /// or longer than a receive buffer.
    NotRtp,
    /// The other side's address is not known yet: no SDP address and nothing latched.
    NoPeer,
    /// The kernel refused to send it on (full send buffer, unreachable destination).
    SendFailed,
}

impl DropReason {
    /// Every reason, in counter-slot order.
    pub const ALL: [DropReason; 4] = [
        DropReason::WrongSource,
        DropReason::NotRtp,
        DropReason::NoPeer,
        DropReason::SendFailed,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::WrongSource => "wrong_source",
            DropReason::NotRtp => "not_rtp",
            DropReason::NoPeer => "no_peer",
            DropReason::SendFailed => "send_failed",
        }
    }
}

/// Reception figures of one direction's RTP stream (RFC 3550 A.1, A.3, A.8), from
/// [`ReceiverStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtpStats {
    /// Packets expected from the sequence numbers (A.3).
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Cumulative packets lost, `expected - received` (negative with duplicates upstream).
    pub lost: i64,
    /// Packets whose sequence number was already received.
    pub duplicates: u64,
    /// Packets received after a higher-numbered one.
    pub late: u64,
    /// Interarrival jitter (A.8), in microseconds.
    pub jitter_us: f64,
    /// The current sender, once a packet arrived.
    pub ssrc: Option<Ssrc>,
}

impl RtpStats {
    /// The figures of a receiver's state.
    pub fn of(r: &ReceiverStats) -> RtpStats {
        RtpStats {
            expected: r.expected(),
            received: r.received(),
            lost: r.lost(),
            duplicates: r.duplicates(),
            late: r.late(),
            jitter_us: r.jitter_us(),
            ssrc: r.ssrc(),
        }
    }
}

/// One direction of a leg: what arrived from one side and was relayed to the other.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirStats {
    /// Datagrams relayed (RTP and RTCP).
    pub packets: u64,
    /// Bytes relayed (UDP payload).
    pub bytes: u64,
    /// Of the relayed datagrams, how many were RTCP.
    pub rtcp_packets: u64,
    /// Datagrams dropped, by [`DropReason`] slot; see [`DirStats::dropped`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Times the source changed after latching (only without strict source).
    pub relatches: u64,
    /// The RTP source address latched (symmetric RTP), once a packet arrived.
    pub latched: Option<SocketAddr>,
    /// When the last packet from this side was accepted.
    pub last_packet: Option<Instant>,
    /// RTP reception figures.
    pub rtp: RtpStats,
}

impl DirStats {
    /// Datagrams dropped for one reason.
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why as usize]
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Both directions of a leg.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegStats {
    /// The leg.
    pub id: LegId,
    /// When the leg was opened.
    pub opened: Instant,
    /// Sent by A, relayed to B.
    pub from_a: DirStats,
    /// Sent by B, relayed to A.
    pub from_b: DirStats,
}

impl LegStats {
    /// The direction whose packets come from `side`.
    pub fn from(&self, side: Side) -> &DirStats {
        match side {
            Side::A => &self.from_a,
            Side::B => &self.from_b,
        }
    }

    /// The last packet from either side, or the opening time when none came.
    pub fn last_activity(&self) -> Instant {
        [self.from_a.last_packet, self.from_b.last_packet]
            .into_iter()
            .flatten()
            .fold(self.opened, Instant::max)
    }
}

/// One batch's worth of counts for one direction, applied to the shared counters at once.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    pub drops: [u64; DropReason::ALL.len()],
    pub last: Option<Instant>,
}

impl Tally {
    pub fn drop(&mut self, why: DropReason) {
        self.drops[why as usize] += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.packets == 0 && self.last.is_none() && self.drops.iter().all(|&d| d == 0)
    }

    /// Adds a later tally of the same direction.
    pub fn add(&mut self, t: &Tally) {
        self.packets += t.packets;
        self.bytes += t.bytes;
        self.rtcp_packets += t.rtcp_packets;
        for (d, n) in self.drops.iter_mut().zip(&t.drops) {
            *d += n;
        }
        self.last = t.last.or(self.last);
    }
}

/// Adds to a counter that only the calling thread writes.
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    if by > 0 {
        counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
    }
}

/// The shared counters of one direction: one cache line, the one the loop writes per
/// batch.
#[derive(Debug, Default)]
#[repr(align(64))]
struct DirCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    rtcp_packets: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Nanoseconds from the leg's opening to its last packet, plus one (0: none yet).
    last_ns: AtomicU64,
}

/// What the loop publishes from its own state (per direction).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Published {
    pub rtp: RtpStats,
    pub latched: Option<SocketAddr>,
    pub relatches: u64,
}

/// The state of one leg shared by the media loop (writer) and its handle (reader).
#[derive(Debug)]
pub(crate) struct LegShared {
    id: LegId,
    opened: Instant,
    dirs: [DirCounters; 2],
    published: Mutex<[Published; 2]>,
}

impl LegShared {
    pub fn new(id: LegId, opened: Instant) -> LegShared {
        LegShared {
            id,
            opened,
            dirs: Default::default(),
            published: Mutex::new(Default::default()),
        }
    }

    /// Adds a batch's tally to the direction of packets from `side` (media loop only).
    pub fn apply(&self, side: Side, t: &Tally) {
        let d = &self.dirs[side.index()];
        bump(&d.packets, t.packets);
        bump(&d.bytes, t.bytes);
        bump(&d.rtcp_packets, t.rtcp_packets);
        for (c, &n) in d.drops.iter().zip(&t.drops) {
            bump(c, n);
        }
        if let Some(at) = t.last {
            let ns = at.saturating_duration_since(self.opened).as_nanos();
            d.last_ns
                .store(u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1, Relaxed);
        }
    }

    /// Publishes the loop's per-direction state (media loop only).
    pub fn publish(&self, p: [Published; 2]) {
        *self.published.lock() = p;
    }

    /// When the last packet from either side arrived, or the opening time.
    pub fn last_activity(&self) -> Instant {
        self.dirs
            .iter()
            .filter_map(|d| self.instant(d.last_ns.load(Relaxed)))
            .fold(self.opened, Instant::max)
    }

    fn instant(&self, ns: u64) -> Option<Instant> {
        (ns > 0).then(|| self.opened + Duration::from_nanos(ns - 1))
    }

    /// The counters as they are now, with the RTP figures as last published.
    pub fn stats(&self) -> LegStats {
        let published = *self.published.lock();
        let dir = |i: usize| {
            let d = &self.dirs[i];
            let p = published[i];
            DirStats {
                packets: d.packets.load(Relaxed),
                bytes: d.bytes.load(Relaxed),
                rtcp_packets: d.rtcp_packets.load(Relaxed),
                drops: std::array::from_fn(|k| d.drops[k].load(Relaxed)),
                relatches: p.relatches,
                latched: p.latched,
                last_packet: self.instant(d.last_ns.load(Relaxed)),
                rtp: p.rtp,
            }
        };
        LegStats {
            id: self.id,
            opened: self.opened,
            from_a: dir(0),
            from_b: dir(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up_and_activity_is_the_latest_packet() {
        let t0 = Instant::now();
        let s = LegShared::new(LegId(7), t0);
        assert_eq!(s.last_activity(), t0);
        let mut t = Tally {
            packets: 3,
            bytes: 516,
            rtcp_packets: 1,
            last: Some(t0 + Duration::from_millis(40)),
            ..Tally::default()
        };
        t.drop(DropReason::WrongSource);
        s.apply(Side::A, &t);
        s.apply(Side::A, &t);
        let mut u = Tally {
            last: Some(t0 + Duration::from_millis(90)),
            ..Tally::default()
        };
        u.drop(DropReason::NotRtp);
        s.apply(Side::B, &u);
        let st = s.stats();
        assert_eq!(st.id, LegId(7));
        assert_eq!((st.from_a.packets, st.from_a.bytes), (6, 1032));
        assert_eq!(st.from_a.rtcp_packets, 2);
        assert_eq!(st.from_a.dropped(DropReason::WrongSource), 2);
        assert_eq!(st.from_b.dropped(DropReason::NotRtp), 1);
        assert_eq!(st.from_b.dropped_total(), 1);
        assert_eq!(st.from(Side::B).packets, 0);
        assert_eq!(st.last_activity(), t0 + Duration::from_millis(90));
        assert_eq!(s.last_activity(), t0 + Duration::from_millis(90));
        assert_eq!(st.from_a.last_packet, Some(t0 + Duration::from_millis(40)));
        assert!(Tally::default().is_empty());
        assert!(!u.is_empty());
        // Tallies add up in the loop before they reach the shared counters.
        let mut sum = Tally::default();
        sum.add(&t);
        sum.add(&u);
        assert_eq!((sum.packets, sum.bytes, sum.rtcp_packets), (3, 516, 1));
        assert_eq!(sum.drops[DropReason::WrongSource as usize], 1);
        assert_eq!(sum.drops[DropReason::NotRtp as usize], 1);
        assert_eq!(sum.last, u.last, "the later packet");
        sum.add(&Tally::default());
        assert_eq!(sum.last, u.last);
    }
}
