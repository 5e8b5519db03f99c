//! The media side of a call, shared by the `call` client and the `uas`: an audio stream as a
//! real endpoint sends it (RFC 3550 §5.1: random SSRC and initial sequence number, timestamp
//! advancing by the samples of a packet) in the codec, packetization time and payload size of
//! a [`MediaProfile`] (`--codec`, `--ptime`, `--payload-size`; G.711 µ-law 20 ms by default),
//! with a send-time stamp ([`crate::stamp`]) at the start of each payload, and the receiving
//! meter (loss, duplicates, reordering, RFC 3550 jitter, one-way delay from the stamp). A pool
//! lends RTP sockets to calls and takes them back when a call ends (the driver cannot close
//! sockets).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cpm_engine::rtp::{self, ReceiverStats, RtpHeader, SeqNo, SeqVerdict, Ssrc};
use cpm_engine::sdp::{Codec, MediaSection, SessionDescription};

use super::{SocketId, SocketKind};
use crate::driver::Ctx;
use crate::metrics::{Counter, Quantity};
use crate::stamp;

/// The payload type a codec without a static one gets (the first dynamic, RFC 3551 §3).
pub const DYNAMIC_PT: u8 = cpm_engine::sdp::FIRST_DYNAMIC_PT;

/// The largest payload: what fits a UDP datagram after the 12-byte RTP header.
pub const MAX_PAYLOAD: usize = 65_507 - 12;

/// How much payload a static audio format (RFC 3551 §6, table 4) produces: `bytes` per
/// `ms` milliseconds, sample by sample, or in whole frames of that duration.
struct Rate {
    pt: u8,
    bytes: usize,
    ms: usize,
    framed: bool,
}

/// The static formats whose payload size per packet follows from the packetization time, so
/// a stream of any ptime can be generated without `--payload-size`.
const FIXED_RATE: [Rate; 7] = [
    Rate {
        pt: 0,
        bytes: 8,
        ms: 1,
        framed: false,
    }, // PCMU, 64 kbit/s (§4.5.14)
    Rate {
        pt: 8,
        bytes: 8,
        ms: 1,
        framed: false,
    }, // PCMA
    Rate {
        pt: 9,
        bytes: 8,
        ms: 1,
        framed: false,
    }, // G722, 64 kbit/s (§4.5.2)
    Rate {
        pt: 10,
        bytes: 1764,
        ms: 10,
        framed: false,
    }, // L16 stereo, 44.1 kHz (§4.5.11)
    Rate {
        pt: 11,
        bytes: 882,
        ms: 10,
        framed: false,
    }, // L16 mono
    Rate {
        pt: 3,
        bytes: 33,
        ms: 20,
        framed: true,
    }, // GSM, 33-byte frames (§4.5.8)
    Rate {
        pt: 18,
        bytes: 10,
        ms: 10,
        framed: true,
    }, // G729, 10-byte frames (§4.5.6)
];

/// What a stream sends: codec, packetization time and payload size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaProfile {
    codec: Codec,
    ptime_ms: u32,
    payload_len: usize,
}

impl Default for MediaProfile {
    /// G.711 µ-law (PCMU), 20 ms, 160 bytes: 50 packets a second.
    fn default() -> Self {
        MediaProfile {
            codec: Codec::PCMU,
            ptime_ms: 20,
            payload_len: 160,
        }
    }
}

impl MediaProfile {
    /// A profile of `codec` at `ptime_ms` (1..=1000 ms). The payload is `payload_len` bytes,
    /// or by default what the codec produces in `ptime_ms` (a static format of
    /// [`natural_len`]; others need the size given).
    pub fn new(codec: Codec, ptime_ms: u32, payload_len: Option<usize>) -> Result<Self, String> {
        if !(1..=1000).contains(&ptime_ms) {
            return Err(format!("ptime {ptime_ms} ms: 1..1000 ms"));
        }
        let name = codec_name(&codec);
        if u64::from(codec.clock_rate()) * u64::from(ptime_ms) < 1000 {
            return Err(format!(
                "{name} at {ptime_ms} ms: less than one sample a packet"
            ));
        }
        let payload_len = match payload_len.or_else(|| natural_len(&codec, ptime_ms)) {
            Some(n) if (1..=MAX_PAYLOAD).contains(&n) => n,
            Some(n) => return Err(format!("payload size {n}: 1..{MAX_PAYLOAD} bytes")),
            None => return Err(format!("{name}: give the payload size (--payload-size)")),
        };
        Ok(MediaProfile {
            codec,
            ptime_ms,
            payload_len,
        })
    }

    /// The profile a negotiated stream uses: the first media codec of `section` (not DTMF
    /// nor comfort noise), at the section's `a=ptime` or 20 ms, with `payload_len` or the
    /// codec's natural size, else 160 bytes. `None` when the section has no media codec.
    pub fn negotiated(section: &MediaSection, payload_len: Option<usize>) -> Option<Self> {
        let codec = section.codecs().into_iter().find(|c| !c.is_auxiliary())?;
        let ptime_ms = section
            .ptime()
            .filter(|p| (1..=1000).contains(p))
            .unwrap_or(20);
        let len = payload_len
            .or_else(|| natural_len(&codec, ptime_ms))
            .unwrap_or(160);
        MediaProfile::new(codec, ptime_ms, Some(len)).ok()
    }

    /// The codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The packetization time: one packet every this long.
    pub fn ptime(&self) -> Duration {
        Duration::from_millis(u64::from(self.ptime_ms))
    }

    /// Payload bytes of each packet.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// How far the RTP timestamp advances per packet: the samples of one packetization
    /// interval at the codec's RTP clock rate (RFC 3550 §5.1; G.722's clock is 8 kHz, §4.5.2).
    pub fn timestamp_step(&self) -> u32 {
        (u64::from(self.codec.clock_rate()) * u64::from(self.ptime_ms) / 1000) as u32
    }

    /// The offer of a call's RTP socket `local`: this codec with its `rtpmap`, `a=ptime`
    /// (RFC 3264 §5).
    pub fn offer(&self, local: SocketAddr) -> SessionDescription {
        SessionDescription::audio_offer(
            local.ip(),
            local.port(),
            std::slice::from_ref(&self.codec),
            Some(self.ptime_ms),
        )
    }

    /// `PCMU/8000, 20 ms, 160-byte payload`.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} ms, {}-byte payload",
            codec_name(&self.codec),
            self.ptime_ms,
            self.payload_len
        )
    }
}

/// `NAME/RATE` or `NAME/RATE/CHANNELS`.
fn codec_name(c: &Codec) -> String {
    let name = String::from_utf8_lossy(c.name());
    match c.channels() {
        1 => format!("{name}/{}", c.clock_rate()),
        n => format!("{name}/{}/{n}", c.clock_rate()),
    }
}

/// The payload bytes `codec` produces in `ptime_ms`, for the static formats of
/// [`FIXED_RATE`] (framed codecs send whole frames).
pub fn natural_len(codec: &Codec, ptime_ms: u32) -> Option<usize> {
    let r = FIXED_RATE
        .iter()
        .find(|r| Codec::from_static(r.pt).is_some_and(|s| s.same_format(codec)))?;
    let ms = ptime_ms as usize;
    Some(if r.framed {
        ms.div_ceil(r.ms) * r.bytes
    } else {
        (ms * r.bytes).div_ceil(r.ms)
    })
}

/// Parses a codec as the command line names it (`NAME[/RATE[/CHANNELS]]`,
/// [`Codec::from_spec`]): a static payload type when there is one, else [`DYNAMIC_PT`].
pub fn parse_codec(spec: &str) -> Result<Codec, String> {
    Codec::from_spec(spec).map_err(|e| format!("codec {spec:?}: {}", e.reason()))
}

/// The codecs a `uas` accepts unless told otherwise: every static format of [`FIXED_RATE`].
pub fn fixed_rate_codecs() -> Vec<Codec> {
    FIXED_RATE
        .iter()
        .filter_map(|r| Codec::from_static(r.pt))
        .collect()
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
    profile: MediaProfile,
    ssrc: Ssrc,
    seq: SeqNo,
    timestamp: u32,
    n: u64,
}

impl RtpSender {
    /// A stream of `profile` with random SSRC, initial sequence number and timestamp
    /// (RFC 3550 §5.1).
    pub fn new(ctx: &mut Ctx<'_>, profile: MediaProfile) -> RtpSender {
        let r = ctx.random_u64();
        RtpSender {
            ssrc: Ssrc(r as u32),
            seq: SeqNo((r >> 32) as u16),
            timestamp: ((r >> 48) as u32).wrapping_mul(profile.timestamp_step()),
            n: 0,
            profile,
        }
    }

    /// The interval between packets.
    pub fn ptime(&self) -> Duration {
        self.profile.ptime()
    }

    /// Sends the next packet from `socket` to `dest` and counts it ([`Counter::RtpSent`]).
    pub fn send(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, dest: SocketAddr) {
        let len = self.profile.payload_len;
        let mut buf = BytesMut::with_capacity(12 + len);
        let pt = self.profile.codec.payload_type();
        let header = RtpHeader::new(pt, self.seq, self.timestamp, self.ssrc);
        if header.write_to(&mut buf).is_err() {
            return;
        }
        let body = stamp::body(ctx.send_stamp_us(), self.n, len);
        buf.extend_from_slice(&body[..len.min(body.len())]);
        ctx.send_raw(socket, dest, &buf);
        let now = ctx.now();
        ctx.recorder().add(Counter::RtpSent, 1, now);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.profile.timestamp_step());
        self.n += 1;
    }
}

/// The receiving half: what arrived from the peer's media address.
#[derive(Debug)]
pub struct RtpMeter {
    stats: ReceiverStats,
    closed: bool,
}

impl RtpMeter {
    /// A meter for a stream whose RTP clock runs at `clock_rate` Hz (jitter is measured in
    /// its units, RFC 3550 §6.4.1).
    pub fn new(clock_rate: u32) -> RtpMeter {
        RtpMeter {
            stats: ReceiverStats::new(clock_rate).with_min_sequential(1),
            closed: false,
        }
    }

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
            let owd = ctx.arrival_us().saturating_sub(sent_us);
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

/// RTP sockets lent to calls and returned when they end. New sockets get any free port, or
/// with [`SocketPool::in_range`] the next free even port of a range (RTP on even ports, RFC 3550
/// §11), so that a run's media ports can be kept apart from other programs'.
#[derive(Debug, Default)]
pub struct SocketPool {
    /// Returned sockets, reused oldest first: the last packets of a call that just ended
    /// are less likely to reach the next one.
    free: std::collections::VecDeque<(SocketId, SocketAddr)>,
    range: Option<(u16, u16)>,
    next: u16,
    /// Every port of the range was found taken; set until a socket comes back, so that a run
    /// over its range fails each call at once instead of trying the whole range again.
    exhausted: bool,
}

impl SocketPool {
    /// A pool binding new sockets on even ports of `min..=max` (`--rtp-ports`).
    pub fn in_range(range: Option<(u16, u16)>) -> SocketPool {
        SocketPool {
            free: std::collections::VecDeque::new(),
            range,
            next: range.map_or(0, |(min, _)| min + min % 2),
            exhausted: false,
        }
    }

    /// A free socket, or a new one bound on `ip`.
    pub fn take(
        &mut self,
        ctx: &mut Ctx<'_>,
        ip: std::net::IpAddr,
    ) -> Result<(SocketId, SocketAddr), String> {
        if let Some(s) = self.free.pop_front() {
            return Ok(s);
        }
        let Some((min, max)) = self.range else {
            let bind = SocketAddr::new(ip, 0);
            return ctx
                .bind_udp(bind, SocketKind::Raw)
                .map_err(|e| format!("bind RTP {bind}: {e}"));
        };
        if self.exhausted {
            return Err(format!("no free RTP port in {min}-{max}"));
        }
        let first = min + min % 2;
        for _ in 0..=(max.saturating_sub(first) / 2) {
            let port = self.next;
            self.next = match port.checked_add(2) {
                Some(p) if p <= max => p,
                _ => first,
            };
            let bind = SocketAddr::new(ip, port);
            match ctx.bind_udp(bind, SocketKind::Raw) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(format!("bind RTP {bind}: {e}")),
            }
        }
        self.exhausted = true;
        Err(format!("no free RTP port in {min}-{max}"))
    }

    /// Returns a socket for the next call.
    pub fn give_back(&mut self, socket: (SocketId, SocketAddr)) {
        self.free.push_back(socket);
        self.exhausted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_offer_names_the_socket_and_pcmu_20ms() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let profile = MediaProfile::default();
        let sdp = profile.offer(local);
        assert_eq!(remote_media(&sdp), Some(local));
        let back = SessionDescription::parse(&sdp.to_bytes()).unwrap();
        let m = &back.media()[0];
        assert_eq!(m.ptime(), Some(20));
        assert!(m.codec(0).is_some());
        let ans =
            cpm_engine::sdp::answer(&back, local.ip(), |_, _| 40002, &fixed_rate_codecs()).unwrap();
        assert_eq!(remote_media(&ans), Some("127.0.0.1:40002".parse().unwrap()));
        let got = MediaProfile::negotiated(&ans.media()[0], None).unwrap();
        assert_eq!(got, profile);
        assert_eq!(profile.timestamp_step(), 160);
        assert_eq!(profile.ptime(), Duration::from_millis(20));
        assert_eq!(profile.describe(), "PCMU/8000, 20 ms, 160-byte payload");
    }

    #[test]
    fn codecs_by_name() {
        assert_eq!(parse_codec("pcma").unwrap(), Codec::PCMA);
        assert_eq!(parse_codec("PCMU/8000").unwrap(), Codec::PCMU);
        assert_eq!(parse_codec("G722").unwrap().payload_type(), 9);
        assert_eq!(parse_codec("L16").unwrap().payload_type(), 11);
        assert_eq!(parse_codec("L16/44100/2").unwrap().payload_type(), 10);
        let opus = parse_codec("opus/48000/2").unwrap();
        assert_eq!(
            (opus.payload_type(), opus.clock_rate(), opus.channels()),
            (DYNAMIC_PT, 48000, 2)
        );
        // A static name at another rate is a dynamic format of that rate.
        assert_eq!(
            parse_codec("PCMU/16000").unwrap().payload_type(),
            DYNAMIC_PT
        );
        for bad in ["opus", "", "PCMU/x", "PCMU/8000/1/1", "PCMU/0", "a b/8000"] {
            assert!(parse_codec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn payload_sizes_follow_the_codec_and_ptime() {
        let p = |c: &str, ms, len| MediaProfile::new(parse_codec(c).unwrap(), ms, len);
        assert_eq!(p("PCMA", 30, None).unwrap().payload_len(), 240);
        assert_eq!(p("PCMA", 30, None).unwrap().timestamp_step(), 240);
        // G.722: 16 kHz sampling, but an 8 kHz RTP clock (RFC 3551 §4.5.2).
        let g722 = p("G722", 20, None).unwrap();
        assert_eq!((g722.payload_len(), g722.timestamp_step()), (160, 160));
        let l16 = p("L16", 20, None).unwrap();
        assert_eq!((l16.payload_len(), l16.timestamp_step()), (1764, 882));
        assert_eq!(p("L16/44100/2", 10, None).unwrap().payload_len(), 1764);
        assert_eq!(p("GSM", 20, None).unwrap().payload_len(), 33);
        assert_eq!(p("GSM", 30, None).unwrap().payload_len(), 66);
        assert_eq!(p("G729", 20, None).unwrap().payload_len(), 20);
        assert_eq!(p("PCMU", 20, Some(1200)).unwrap().payload_len(), 1200);
        let opus = p("opus/48000/2", 20, Some(120)).unwrap();
        assert_eq!((opus.payload_len(), opus.timestamp_step()), (120, 960));
        assert!(
            p("opus/48000/2", 20, None).is_err(),
            "a dynamic codec needs a size"
        );
        assert!(p("PCMU", 0, None).is_err());
        assert!(p("PCMU", 20, Some(0)).is_err());
        assert!(p("PCMU", 20, Some(MAX_PAYLOAD + 1)).is_err());
        assert!(MediaProfile::new(Codec::dynamic(96, "x", 100).unwrap(), 5, Some(10)).is_err());
    }

    #[test]
    fn negotiated_uses_the_answer_codec_and_ptime() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let offer = MediaProfile::new(Codec::PCMA, 30, None)
            .unwrap()
            .offer(local);
        let got = MediaProfile::negotiated(&offer.media()[0], None).unwrap();
        assert_eq!(got.describe(), "PCMA/8000, 30 ms, 240-byte payload");
        let sized = MediaProfile::negotiated(&offer.media()[0], Some(50)).unwrap();
        assert_eq!(sized.payload_len(), 50);
    }
}
