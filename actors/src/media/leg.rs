//! One relay leg as the media loop holds it: its sockets, the latching state of each side,
//! and the per-direction RTP receiver statistics; and what it does with a received batch.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::rtp::{self, rtcp, ReceiverStats};
use cpm_netio::{BatchSocket, BytesBatch, SocketConfig, MAX_BATCH};

use super::stats::{DropReason, LegShared, Published, Tally};
use super::{LegId, Side};

/// How long a leg's counts may wait in the loop before they are added to its shared counters:
/// the shared line is a cache miss per write (touched once per packet interval), so writing it
/// once per a few packets instead of per packet saves most of that (about 60 ns per packet).
/// Snapshots, the once-a-second publish and the close add them at once.
pub(crate) const COUNT_FLUSH: Duration = Duration::from_millis(100);

/// Index of a leg's socket: A RTP, A RTCP, B RTP, B RTCP.
pub(crate) fn socket_index(side: Side, rtcp: bool) -> usize {
    side.index() * 2 + usize::from(rtcp)
}

/// Receiving sockets of a leg: the four of [`socket_index`], then the catch-alls of A's and
/// B's RTP sockets ([`CATCH_ALL`] + side).
pub(crate) const RECEIVERS: usize = 6;

/// The receiver index of the catch-all of `side`'s RTP socket is `CATCH_ALL + side.index()`.
pub(crate) const CATCH_ALL: usize = 4;

/// The side a receiver index faces.
pub(crate) fn receiver_side(k: usize) -> Side {
    Side::from_index(if k >= CATCH_ALL { k - CATCH_ALL } else { k / 2 })
}

/// The socket whose traffic receiver `k` carries: itself, or for a catch-all its RTP socket.
fn flow_socket(k: usize) -> usize {
    if k >= CATCH_ALL {
        socket_index(receiver_side(k), false)
    } else {
        k
    }
}

/// Where one flow (RTP or RTCP) of one side goes: the address from SDP until a packet from
/// that side latched its real source.
#[derive(Debug, Default, Clone, Copy)]
struct Flow {
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
}

impl Flow {
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.sdp)
    }
}

/// The far end of one side.
#[derive(Debug, Default)]
struct Peer {
    rtp: Flow,
    /// Unused when the side multiplexes RTCP on its RTP port.
    rtcp: Flow,
    relatches: u64,
}

/// Datagrams to send after a received batch, per outgoing socket of the other side (0: its
/// RTP socket, 1: its RTCP socket), each marked RTCP or not for the counters.
#[derive(Debug)]
pub(crate) struct Outbox {
    queues: [Vec<(SocketAddr, Bytes)>; 2],
    is_rtcp: [Vec<bool>; 2],
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queues: std::array::from_fn(|_| Vec::with_capacity(MAX_BATCH)),
            is_rtcp: std::array::from_fn(|_| Vec::with_capacity(MAX_BATCH)),
        }
    }
}

/// A datagram [accepted](Leg::accept) for the other side.
pub(crate) struct Forward {
    /// Sent from the other side's RTCP socket (else its RTP socket; see [`Leg::sender`]).
    pub rtcp_socket: bool,
    pub dest: SocketAddr,
    pub bytes: Bytes,
    /// RTCP (counted apart).
    pub is_rtcp: bool,
}

/// A relay leg inside the media loop.
pub(crate) struct Leg {
    pub id: LegId,
    /// A RTP, A RTCP, B RTP, B RTCP (see [`socket_index`]); no RTCP socket on a muxed side.
    pub sockets: [Option<BatchSocket>; 4],
    /// Per side, the catch-all of its RTP socket ([`BatchSocket::open_catch_all`]), opened
    /// when that socket is first connected to the source it latched.
    pub catch_all: [Option<BatchSocket>; 2],
    peers: [Peer; 2],
    /// RTP reception, per sending side.
    rtp: [ReceiverStats; 2],
    pub shared: Arc<LegShared>,
    /// Counts per sending side not yet added to `shared` (see [`COUNT_FLUSH`]).
    counts: [Tally; 2],
    /// When `counts` go to `shared` at the latest (on the next batch after it).
    flush_at: Instant,
    /// Something arrived since the last publish.
    pub dirty: bool,
    /// Connect RTP sockets to the source they latched, with catch-alls of these settings
    /// (`None`: never connect).
    connect: Option<SocketConfig>,
    /// Sides whose RTP socket latched a new source since the last [`Leg::connect_latched`]
    /// (bit `side.index()`).
    relatched: u8,
}

impl Leg {
    pub fn new(
        id: LegId,
        sockets: [Option<BatchSocket>; 4],
        shared: Arc<LegShared>,
        clock_rate: u32,
        connect: Option<SocketConfig>,
    ) -> Leg {
        Leg {
            id,
            sockets,
            catch_all: [None, None],
            peers: Default::default(),
            rtp: [
                ReceiverStats::new(clock_rate),
                ReceiverStats::new(clock_rate),
            ],
            shared,
            counts: Default::default(),
            flush_at: Instant::now(),
            dirty: false,
            connect,
            relatched: 0,
        }
    }

    fn muxed(&self, side: Side) -> bool {
        self.sockets[socket_index(side, true)].is_none()
    }

    /// How many ports the leg holds (a connected port's catch-all shares its port).
    pub fn port_count(&self) -> usize {
        self.sockets.iter().flatten().count()
    }

    /// Prefetches what relaying a datagram from receiver `k` reads first: the receiving
    /// socket, both sides' peers, the sender's RTP statistics and counts, and the sending
    /// socket (each a cache miss otherwise: a leg is touched once per packet interval).
    pub fn prefetch(&self, k: usize) {
        let s = receiver_side(k);
        let other = s.other();
        cpm_netio::prefetch(&self.sockets[flow_socket(k)]);
        cpm_netio::prefetch(&self.peers[s.index()]);
        cpm_netio::prefetch(&self.peers[other.index()]);
        cpm_netio::prefetch(&self.rtp[s.index()]);
        cpm_netio::prefetch(&self.counts[s.index()]);
        cpm_netio::prefetch(&self.sockets[socket_index(other, false)]);
    }

    /// Receiver `k` (see [`RECEIVERS`]), if the leg has it.
    pub fn receiver(&self, k: usize) -> Option<&BatchSocket> {
        match k.checked_sub(CATCH_ALL) {
            Some(s) => self.catch_all.get(s)?.as_ref(),
            None => self.sockets.get(k)?.as_ref(),
        }
    }

    /// Every receiving socket of the leg, catch-alls included.
    pub fn receivers(&self) -> impl Iterator<Item = &BatchSocket> {
        self.sockets.iter().chain(&self.catch_all).flatten()
    }

    /// The SDP address of one side (RTP; RTCP at `rtcp`, or the next port when `None`, RFC
    /// 3550 §11, unless the side is muxed). A changed address forgets what was latched there,
    /// so the side's new source can latch (a re-INVITE moved the media). A connected socket
    /// stays connected to the old source until then: the new one's packets reach its catch-all,
    /// and the first valid one latches and reconnects it.
    pub fn set_peer(&mut self, side: Side, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        let rtcp = match rtcp {
            Some(a) => a,
            None => {
                let mut a = rtp;
                a.set_port(rtp.port().wrapping_add(1));
                a
            }
        };
        let p = &mut self.peers[side.index()];
        for (flow, addr) in [(&mut p.rtp, rtp), (&mut p.rtcp, rtcp)] {
            if flow.sdp != Some(addr) {
                *flow = Flow {
                    sdp: Some(addr),
                    latched: None,
                };
            }
        }
        self.dirty = true;
    }

    /// Receives up to `window` datagrams waiting on receiver `k` into `batch`, relays them,
    /// and returns how many arrived, with the direction's tally. `now` stands for their arrival
    /// time (the loop reads the clock once per wake-up).
    #[allow(clippy::too_many_arguments)]
    pub fn relay(
        &mut self,
        k: usize,
        batch: &mut BytesBatch,
        window: usize,
        now: Instant,
        strict: bool,
        out: &mut Outbox,
        tally: &mut Tally,
    ) -> io::Result<usize> {
        let Some(socket) = self.receiver(k) else {
            return Ok(0);
        };
        let n = socket.recv_bytes_upto(batch, window)?;
        for i in 0..n {
            let (Some(meta), Some(bytes)) = (batch.meta(i), batch.take(i)) else {
                continue;
            };
            if let Some(f) = self.accept(k, meta.source, meta.truncated, bytes, now, strict, tally)
            {
                out.queues[f.rtcp_socket as usize].push((f.dest, f.bytes));
                out.is_rtcp[f.rtcp_socket as usize].push(f.is_rtcp);
            }
        }
        self.flush(receiver_side(k).other(), out, tally);
        Ok(n)
    }

    /// Checks a datagram from `source` received on receiver `k` (`truncated`: longer than the
    /// buffer), latches its source, and returns where it goes on the other side, or counts
    /// why it does not go.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &mut self,
        k: usize,
        source: SocketAddr,
        truncated: bool,
        bytes: Bytes,
        now: Instant,
        strict: bool,
        tally: &mut Tally,
    ) -> Option<Forward> {
        let index = flow_socket(k);
        let (side, on_rtcp_port) = (Side::from_index(index / 2), index % 2 == 1);
        let s = side.index();
        let muxed_in = self.muxed(side);
        let is_rtcp = on_rtcp_port || (muxed_in && rtp::is_rtcp(&bytes));
        let flow = if is_rtcp && !muxed_in {
            &mut self.peers[s].rtcp
        } else {
            &mut self.peers[s].rtp
        };
        if strict && flow.latched.is_some_and(|l| l != source) {
            tally.drop(DropReason::WrongSource);
            return None;
        }
        if truncated || (is_rtcp && !rtcp_header_ok(&bytes)) {
            tally.drop(DropReason::NotRtp);
            return None;
        }
        let bytes = if is_rtcp {
            bytes
        } else {
            match rtp::parse(bytes) {
                Ok(packet) => {
                    self.rtp[s].on_rtp(&packet, now);
                    packet.into_bytes()
                }
                Err(_) => {
                    tally.drop(DropReason::NotRtp);
                    return None;
                }
            }
        };
        if flow.latched != Some(source) {
            let relatch = flow.latched.is_some();
            flow.latched = Some(source);
            if relatch {
                self.peers[s].relatches += 1;
            }
            if !on_rtcp_port {
                self.relatched |= 1 << s;
            }
        }
        tally.last = Some(now);
        let other = side.other();
        let rtcp_socket = is_rtcp && !self.muxed(other);
        let peer = &self.peers[other.index()];
        let dest = if rtcp_socket {
            peer.rtcp.dest()
        } else {
            peer.rtp.dest()
        };
        let Some(dest) = dest else {
            tally.drop(DropReason::NoPeer);
            return None;
        };
        Some(Forward {
            rtcp_socket,
            dest,
            bytes,
            is_rtcp,
        })
    }

    /// The socket datagrams to `to` leave from: its RTCP socket for RTCP when it has one
    /// (`rtcp_socket`), else its RTP socket; and that socket's index ([`socket_index`]).
    pub fn sender(&self, to: Side, rtcp_socket: bool) -> Option<(usize, &BatchSocket)> {
        [socket_index(to, rtcp_socket), socket_index(to, false)]
            .into_iter()
            .find_map(|i| Some((i, self.sockets[i].as_ref()?)))
    }

    /// Sends the queued datagrams from the sockets of `to` (one `sendmmsg` per socket, or one
    /// send for a single datagram) and counts them; what the kernel refuses is dropped.
    fn flush(&mut self, to: Side, out: &mut Outbox, tally: &mut Tally) {
        for q in 0..2 {
            let (queue, kinds) = (&mut out.queues[q], &mut out.is_rtcp[q]);
            if queue.is_empty() {
                continue;
            }
            let sent = match self
                .sender(to, q == 1)
                .map(|(_, s)| s.send_datagrams(queue))
            {
                Some(Ok(k)) => k,
                Some(Err(e)) => {
                    tracing::debug!(leg = %self.id, error = %e, "relay send failed");
                    0
                }
                None => 0,
            };
            for ((_, b), &rtcp) in queue.iter().zip(kinds.iter()).take(sent) {
                tally.packets += 1;
                tally.bytes += b.len() as u64;
                tally.rtcp_packets += u64::from(rtcp);
            }
            tally.drops[DropReason::SendFailed as usize] += (queue.len() - sent) as u64;
            queue.clear();
            kinds.clear();
        }
    }

    /// The sides whose RTP socket latched a new source since the last call and is to be
    /// connected to it ([`Self::connect_rtp`]); none when connecting is off.
    pub fn take_relatched(&mut self) -> [Option<Side>; 2] {
        let bits = std::mem::take(&mut self.relatched);
        let on = self.connect.is_some();
        [Side::A, Side::B].map(|s| (on && bits & (1 << s.index()) != 0).then_some(s))
    }

    /// A source latched since the last [`Self::take_relatched`].
    pub fn has_relatched(&self) -> bool {
        self.relatched != 0
    }

    /// Opens the catch-all of `side`'s RTP socket unless it has one
    /// ([`BatchSocket::open_catch_all`]), handing it to `register` with its receiver index to
    /// be polled; true when it was opened now. Must precede [`Self::connect_rtp`], so that no
    /// other source's datagram is lost.
    pub fn open_catch_all(
        &mut self,
        side: Side,
        register: impl FnOnce(usize, &BatchSocket) -> io::Result<()>,
    ) -> io::Result<bool> {
        let s = side.index();
        let (Some(config), None) = (self.connect, &self.catch_all[s]) else {
            return Ok(false);
        };
        let Some(socket) = self.sockets[socket_index(side, false)].as_ref() else {
            return Ok(false);
        };
        let c = socket.open_catch_all(config)?;
        register(CATCH_ALL + s, &c)?;
        self.catch_all[s] = Some(c);
        Ok(true)
    }

    /// Connects `side`'s RTP socket to the source it latched, if it has a catch-all: the
    /// kernel then delivers that source's datagrams to it by their 4-tuple (and sends to it
    /// without a route lookup), and every other source's to the catch-all, where they are
    /// counted as [`DropReason::WrongSource`] or latch again. Without a catch-all the socket
    /// stays unconnected and strangers are filtered here.
    pub fn connect_rtp(&mut self, side: Side) {
        let s = side.index();
        let (Some(source), Some(_), Some(socket)) = (
            self.peers[s].rtp.latched,
            &self.catch_all[s],
            self.sockets[socket_index(side, false)].as_mut(),
        ) else {
            return;
        };
        if socket.peer() != Some(source) {
            if let Err(e) = socket.connect(source) {
                tracing::debug!(leg = %self.id, error = %e, "connect to the latched source failed");
            }
        }
    }

    /// Adds a batch's tally from `side` to the leg's counts, and these to the shared counters
    /// when [`COUNT_FLUSH`] has passed since they were last.
    pub fn count(&mut self, side: Side, tally: &Tally, now: Instant) {
        if tally.is_empty() {
            return;
        }
        self.dirty = true;
        self.counts[side.index()].add(tally);
        if now >= self.flush_at {
            self.flush_counts();
            self.flush_at = now + COUNT_FLUSH;
        }
    }

    /// Adds the counts waiting in the loop to the shared counters.
    pub fn flush_counts(&mut self) {
        for side in [Side::A, Side::B] {
            let t = std::mem::take(&mut self.counts[side.index()]);
            if !t.is_empty() {
                self.shared.apply(side, &t);
            }
        }
    }

    /// The loop-side figures to publish.
    pub fn published(&self) -> [Published; 2] {
        std::array::from_fn(|s| Published {
            rtp: super::RtpStats::of(&self.rtp[s]),
            latched: self.peers[s].rtp.latched,
            relatches: self.peers[s].relatches,
        })
    }
}

/// RTCP as far as a relay checks it (RFC 3550 §6.4.1, RFC 5761 §4): version 2, a packet type
/// in 192..=223, and a first packet whose length fits the datagram. The rest of a compound
/// packet is not walked, so SRTCP (encrypted after the first header) and reduced-size RTCP
/// (RFC 5506) pass.
fn rtcp_header_ok(data: &[u8]) -> bool {
    rtp::is_rtcp(data) && rtcp::packets(data).next().is_some_and(|p| p.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtcp_check_takes_the_first_header_only() {
        // An RR with no report blocks: V=2, RC=0, PT=201, length 1 (8 bytes).
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 42];
        assert!(rtcp_header_ok(&rr));
        // Followed by bytes that are no RTCP packet (as in SRTCP): still passes.
        let mut srtcp = rr.to_vec();
        srtcp.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
        assert!(rtcp_header_ok(&srtcp));
        // Length past the end, wrong version, RTP payload type, too short: refused.
        assert!(!rtcp_header_ok(&[0x80, 201, 0, 9, 0, 0, 0, 42]));
        assert!(!rtcp_header_ok(&[0x40, 201, 0, 1, 0, 0, 0, 42]));
        assert!(!rtcp_header_ok(&[0x80, 0, 0, 1, 0, 0, 0, 42]));
        assert!(!rtcp_header_ok(&[0x80]));
    }

    #[test]
    fn sockets_are_indexed_by_side_and_kind() {
        assert_eq!(socket_index(Side::A, false), 0);
        assert_eq!(socket_index(Side::A, true), 1);
        assert_eq!(socket_index(Side::B, false), 2);
        assert_eq!(socket_index(Side::B, true), 3);
        assert_eq!(receiver_side(CATCH_ALL), Side::A);
        assert_eq!(receiver_side(CATCH_ALL + 1), Side::B);
        assert_eq!(receiver_side(3), Side::B);
        assert_eq!(flow_socket(CATCH_ALL + 1), 2);
        assert_eq!(flow_socket(1), 1);
    }
}
