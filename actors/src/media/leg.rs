//! One relay leg as the media loop holds it: its sockets, the latching state of each side,
//! and the per-direction RTP receiver statistics; and what it does with a received batch.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cpm_engine::rtp::{self, rtcp, ReceiverStats};
use cpm_netio::{BatchSocket, BytesBatch, MAX_BATCH};

use super::stats::{DropReason, LegShared, Published, Tally};
use super::{LegId, Side};

/// Index of a leg's socket: A RTP, A RTCP, B RTP, B RTCP.
pub(crate) fn socket_index(side: Side, rtcp: bool) -> usize {
    side.index() * 2 + usize::from(rtcp)
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

/// A relay leg inside the media loop.
pub(crate) struct Leg {
    pub id: LegId,
    /// A RTP, A RTCP, B RTP, B RTCP (see [`socket_index`]); no RTCP socket on a muxed side.
    pub sockets: [Option<BatchSocket>; 4],
    peers: [Peer; 2],
    /// RTP reception, per sending side.
    rtp: [ReceiverStats; 2],
    pub shared: Arc<LegShared>,
    /// Something arrived since the last publish.
    pub dirty: bool,
    /// Connect a socket to the source it latched (strict source only).
    connect: bool,
}

impl Leg {
    pub fn new(
        id: LegId,
        sockets: [Option<BatchSocket>; 4],
        shared: Arc<LegShared>,
        clock_rate: u32,
        connect: bool,
    ) -> Leg {
        Leg {
            id,
            sockets,
            peers: Default::default(),
            rtp: [
                ReceiverStats::new(clock_rate),
                ReceiverStats::new(clock_rate),
            ],
            shared,
            dirty: false,
            connect,
        }
    }

    fn muxed(&self, side: Side) -> bool {
        self.sockets[socket_index(side, true)].is_none()
    }

    /// How many sockets (ports) the leg holds.
    pub fn port_count(&self) -> usize {
        self.sockets.iter().flatten().count()
    }

    /// The SDP address of one side (RTP; RTCP at `rtcp`, or the next port when `None`, RFC
    /// 3550 §11, unless the side is muxed). A changed address forgets what was latched there,
    /// so the side's new source can latch (a re-INVITE moved the media).
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
        for (flow, addr, is_rtcp) in [(&mut p.rtp, rtp, false), (&mut p.rtcp, rtcp, true)] {
            if flow.sdp == Some(addr) {
                continue;
            }
            *flow = Flow {
                sdp: Some(addr),
                latched: None,
            };
            // A connected socket would only hear the old source.
            if let Some(s) = self.sockets[socket_index(side, is_rtcp)].as_mut() {
                if s.peer().is_some() {
                    if let Err(e) = s.disconnect() {
                        tracing::debug!(leg = %self.id, error = %e, "disconnect failed");
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// Receives up to `window` datagrams waiting on socket `index` into `batch`, relays them,
    /// and returns how many arrived, with the direction's tally. `now` stands for their arrival
    /// time (the loop reads the clock once per wake-up).
    #[allow(clippy::too_many_arguments)]
    pub fn relay(
        &mut self,
        index: usize,
        batch: &mut BytesBatch,
        window: usize,
        now: Instant,
        strict: bool,
        out: &mut Outbox,
        tally: &mut Tally,
    ) -> io::Result<usize> {
        let Some(socket) = self.sockets.get(index).and_then(Option::as_ref) else {
            return Ok(0);
        };
        let n = socket.recv_bytes_upto(batch, window)?;
        let side = Side::from_index(index / 2);
        for i in 0..n {
            self.accept(index, batch, i, now, strict, out, tally);
        }
        self.flush(side.other(), out, tally);
        if !tally.is_empty() {
            self.dirty = true;
        }
        Ok(n)
    }

    /// Checks datagram `i` of `batch`, received from `side`, latches its source, and queues it
    /// for the other side, or counts why not.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        index: usize,
        batch: &mut BytesBatch,
        i: usize,
        now: Instant,
        strict: bool,
        out: &mut Outbox,
        tally: &mut Tally,
    ) {
        let (Some(meta), Some(data)) = (batch.meta(i), batch.get(i)) else {
            return;
        };
        let (side, on_rtcp_port) = (Side::from_index(index / 2), index % 2 == 1);
        let s = side.index();
        let muxed_in = self.muxed(side);
        let is_rtcp = on_rtcp_port || (muxed_in && rtp::is_rtcp(data));
        let flow = if is_rtcp && !muxed_in {
            &mut self.peers[s].rtcp
        } else {
            &mut self.peers[s].rtp
        };
        if strict && flow.latched.is_some_and(|l| l != meta.source) {
            return tally.drop(DropReason::WrongSource);
        }
        if meta.truncated || (is_rtcp && !rtcp_header_ok(data)) {
            return tally.drop(DropReason::NotRtp);
        }
        let Some(bytes) = batch.take(i) else { return };
        let bytes = if is_rtcp {
            bytes
        } else {
            match rtp::parse(bytes) {
                Ok(packet) => {
                    self.rtp[s].on_rtp(&packet, now);
                    packet.into_bytes()
                }
                Err(_) => return tally.drop(DropReason::NotRtp),
            }
        };
        if flow.latched != Some(meta.source) {
            let relatch = flow.latched.is_some();
            flow.latched = Some(meta.source);
            if relatch {
                self.peers[s].relatches += 1;
            }
            if self.connect && strict {
                self.connect_to(index, meta.source);
            }
        }
        tally.last = Some(now);
        let other = side.other();
        let to_rtcp_socket = is_rtcp && !self.muxed(other);
        let peer = &self.peers[other.index()];
        let dest = if to_rtcp_socket {
            peer.rtcp.dest()
        } else {
            peer.rtp.dest()
        };
        let Some(dest) = dest else {
            return tally.drop(DropReason::NoPeer);
        };
        let q = usize::from(to_rtcp_socket);
        out.queues[q].push((dest, bytes));
        out.is_rtcp[q].push(is_rtcp);
    }

    /// Sends the queued datagrams from the sockets of `to` (one `sendmmsg` per socket, or one
    /// send for a single datagram) and counts them; what the kernel refuses is dropped.
    fn flush(&mut self, to: Side, out: &mut Outbox, tally: &mut Tally) {
        for q in 0..2 {
            let (queue, kinds) = (&mut out.queues[q], &mut out.is_rtcp[q]);
            if queue.is_empty() {
                continue;
            }
            let socket = self.sockets[socket_index(to, q == 1)]
                .as_ref()
                .or(self.sockets[socket_index(to, false)].as_ref());
            let sent = match socket.map(|s| s.send_datagrams(queue)) {
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

    /// Connects socket `index` to the source it latched: the kernel then delivers only that
    /// source's datagrams to it (strict source), and sends to it skip a route lookup.
    fn connect_to(&mut self, index: usize, source: SocketAddr) {
        if let Some(s) = self.sockets[index].as_mut() {
            if let Err(e) = s.connect(source) {
                tracing::debug!(leg = %self.id, error = %e, "connect to the latched source failed");
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
    }
}
