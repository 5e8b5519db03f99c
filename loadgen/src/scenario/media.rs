//! The media side of a call, shared by the `call` client and the `uas`: a G.711 stream as a
//! real endpoint sends it (RFC 3550 §5.1: random SSRC and initial sequence number, timestamp
//! advancing by the samples of a packet) with a send-time stamp ([`crate::stamp`]) at the
//! start of each payload, and the receiving meter (loss, duplicates, reordering, RFC 3550
//! jitter, one-way delay from the stamp). A pool lends RTP sockets to calls and takes them
//! back when a call ends (the driver cannot close sockets).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cpm_engine::rtp::{self, ReceiverStats, RtpHeader, SeqNo, SeqVerdict, Ssrc};
use cpm_engine::sdp::{Codec, SessionDescription};

use super::{SocketId, SocketKind};
use crate::driver::Ctx;
use crate::metrics::{Counter, Quantity};
use crate::stamp;

/// Packetization time of the stream (G.711 20 ms, RFC 3551 §4.5).
pub const PTIME: Duration = Duration::from_millis(20);

/// PCMU, payload type 0 (RFC 3551 §6).
pub const PCMU: u8 = 0;

/// Payload bytes of one 20 ms G.711 packet (8000 Hz × 20 ms × 1 byte).
pub const PAYLOAD_LEN: usize = 160;

/// The codec offered and accepted: PCMU.
pub fn codecs() -> Vec<Codec> {
    Codec::from_static(PCMU).into_iter().collect()
}

/// The offer of a call's RTP socket `local` (PCMU, `a=ptime:20`; RFC 3264 §5).
pub fn offer(local: SocketAddr) -> SessionDescription {
    SessionDescription::audio_offer(local.ip(), local.port(), &codecs(), Some(20))
}

/// The address RTP goes to: the first audio stream of `sdp` with a non-zero port.
pub fn remote_media(sdp: &SessionDescription) -> Option<SocketAddr> {
    sdp.media()
        .iter()
        .filter(|m| m.port() != 0)
        .find_map(|m| sdp.media_address(m))
}

/// The sending half of a stream.
#[derive(Debug)]
pub struct RtpSender {
    ssrc: Ssrc,
    seq: SeqNo,
    timestamp: u32,
    n: u64,
}

impl RtpSender {
    /// A stream with random SSRC, initial sequence number and timestamp (RFC 3550 §5.1).
    pub fn new(ctx: &mut Ctx<'_>) -> RtpSender {
        let r = ctx.random_u64();
        RtpSender {
            ssrc: Ssrc(r as u32),
            seq: SeqNo((r >> 32) as u16),
            timestamp: (r >> 48) as u32 * 160,
            n: 0,
        }
    }

    /// Sends the next packet from `socket` to `dest` and counts it ([`Counter::RtpSent`]).
    pub fn send(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, dest: SocketAddr) {
        let mut buf = BytesMut::with_capacity(12 + PAYLOAD_LEN);
        let header = RtpHeader::new(PCMU, self.seq, self.timestamp, self.ssrc);
        if header.write_to(&mut buf).is_err() {
            return;
        }
        buf.extend_from_slice(&stamp::body(ctx.unix_us(), self.n, PAYLOAD_LEN));
        ctx.send_raw(socket, dest, &buf);
        let now = ctx.now();
        ctx.recorder().add(Counter::RtpSent, 1, now);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(PAYLOAD_LEN as u32);
        self.n += 1;
    }
}

/// The receiving half: what arrived from the peer's media address.
#[derive(Debug)]
pub struct RtpMeter {
    stats: ReceiverStats,
    closed: bool,
}

impl Default for RtpMeter {
    fn default() -> Self {
        RtpMeter {
            stats: ReceiverStats::new(8000).with_min_sequential(1),
            closed: false,
        }
    }
}

impl RtpMeter {
    /// Accounts one datagram: received, duplicate or reordered (counters), jitter (RFC 3550
    /// §6.4.1) and one-way delay from the payload's stamp (quantities). Not RTP: noted.
    pub fn on_datagram(&mut self, ctx: &mut Ctx<'_>, payload: Bytes) {
        let Ok(pkt) = rtp::parse(payload) else {
            ctx.recorder().note("rtp_unparsable", 1);
            return;
        };
        let now = ctx.now();
        let verdict = self.stats.on_rtp(&pkt, now);
        let counter = match verdict {
            SeqVerdict::Duplicate => Counter::RtpDuplicates,
            SeqVerdict::Late => {
                ctx.recorder().add(Counter::RtpReordered, 1, now);
                Counter::RtpReceived
            }
            _ => Counter::RtpReceived,
        };
        ctx.recorder().add(counter, 1, now);
        if verdict == SeqVerdict::Duplicate {
            return;
        }
        let jitter = Duration::from_micros(self.stats.jitter_us() as u64);
        ctx.record(Quantity::RtpJitter, jitter);
        if let Some((sent_us, _)) = stamp::read(pkt.payload_bytes()) {
            let owd = ctx.unix_us().saturating_sub(sent_us);
            ctx.record(Quantity::RtpOwd, Duration::from_micros(owd));
        }
    }

    /// Ends the stream: its loss (expected − received, RFC 3550 §6.4.1) is counted once.
    pub fn close(&mut self, ctx: &mut Ctx<'_>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let lost = self.stats.lost().max(0) as u64;
        if lost > 0 {
            let now = ctx.now();
            ctx.recorder().add(Counter::RtpLost, lost, now);
        }
    }

    /// Packets received (duplicates excluded).
    pub fn received(&self) -> u64 {
        self.stats.received()
    }
}

/// RTP sockets lent to calls and returned when they end.
#[derive(Debug, Default)]
pub struct SocketPool {
    free: Vec<(SocketId, SocketAddr)>,
}

impl SocketPool {
    /// A free socket, or a new one bound on `ip` (any port).
    pub fn take(
        &mut self,
        ctx: &mut Ctx<'_>,
        ip: std::net::IpAddr,
    ) -> Result<(SocketId, SocketAddr), String> {
        if let Some(s) = self.free.pop() {
            return Ok(s);
        }
        let bind = SocketAddr::new(ip, 0);
        ctx.bind_udp(bind, SocketKind::Raw)
            .map_err(|e| format!("bind RTP {bind}: {e}"))
    }

    /// Returns a socket for the next call.
    pub fn give_back(&mut self, socket: (SocketId, SocketAddr)) {
        self.free.push(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_names_the_socket_and_pcmu() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let sdp = offer(local);
        assert_eq!(remote_media(&sdp), Some(local));
        let back = SessionDescription::parse(&sdp.to_bytes()).unwrap();
        let m = &back.media()[0];
        assert_eq!(m.ptime(), Some(20));
        assert!(m.codec(PCMU).is_some());
        let ans = cpm_engine::sdp::answer(&back, local.ip(), |_, _| 40002, &codecs()).unwrap();
        assert_eq!(remote_media(&ans), Some("127.0.0.1:40002".parse().unwrap()));
    }
}
