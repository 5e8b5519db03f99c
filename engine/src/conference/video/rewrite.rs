//! Per-receiver RTP rewriting for switched video (RFC 3550 §7.3 translator behaviour, RFC 7667
//! §3.7 "Media-Switching Mixer"): one output SSRC per receiver stream whose sequence numbers
//! and timestamps continue across source switches.

use std::time::{Duration, Instant};

use crate::rtp::{self, BuildError, RtpPacket, SeqNo, Ssrc, FIXED_HEADER_LEN};

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: SeqNo,
    ts: u32,
    at: Instant,
}

/// Rewrites the packets of whichever source a receiver is shown into one continuous stream.
///
/// Within a source, `out = in + offset` (wrapping), so reordering and loss pass through
/// unchanged. When the source changes, the offsets are chosen so the first packet of the new
/// source follows the last one sent: sequence number + 1, and timestamp + the wall-clock time
/// since then in clock ticks (at least one frame gap), so the receiver's jitter buffer sees
/// neither a jump nor a discontinuity.
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    out_ssrc: Ssrc,
    clock_rate: u32,
    frame_gap: u32,
    source: Option<Ssrc>,
    seq_offset: u16,
    ts_offset: u32,
    last: Option<Sent>,
}

impl RtpRewriter {
    /// A rewriter whose output SSRC is `out_ssrc`, for a `clock_rate` Hz stream with frames
    /// `frame_gap` ticks apart (3000 for 30 fps at 90 kHz).
    pub fn new(out_ssrc: Ssrc, clock_rate: u32, frame_gap: u32) -> RtpRewriter {
        RtpRewriter {
            out_ssrc,
            clock_rate,
            frame_gap: frame_gap.max(1),
            source: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
        }
    }

    /// The SSRC every rewritten packet carries.
    pub fn out_ssrc(&self) -> Ssrc {
        self.out_ssrc
    }

    /// The source SSRC being rewritten, once a packet was.
    pub fn source(&self) -> Option<Ssrc> {
        self.source
    }

    /// The output sequence number and timestamp of a packet of `ssrc` sent at `now`; a new
    /// `ssrc` starts a new source.
    pub fn map(&mut self, now: Instant, ssrc: Ssrc, seq: SeqNo, ts: u32) -> (SeqNo, u32) {
        if self.source != Some(ssrc) {
            self.source = Some(ssrc);
            match self.last {
                Some(last) => {
                    let next_seq = last.seq.next();
                    let gap = ticks(now.saturating_duration_since(last.at), self.clock_rate)
                        .max(self.frame_gap);
                    self.seq_offset = next_seq.0.wrapping_sub(seq.0);
                    self.ts_offset = last.ts.wrapping_add(gap).wrapping_sub(ts);
                }
                None => {
                    self.seq_offset = 0;
                    self.ts_offset = 0;
                }
            }
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        match self.last {
            Some(last) if !out_seq.is_after(last.seq) => {}
            _ => {
                self.last = Some(Sent {
                    seq: out_seq,
                    ts: out_ts,
                    at: now,
                })
            }
        }
        (out_seq, out_ts)
    }

    /// The 12-byte fixed header to send instead of `packet`'s: the sender puts it before
    /// `packet.as_bytes()[12..]` (CSRCs, extension and payload, shared by every receiver) in
    /// one vectored write. This is the cheap path of a fan-out: no payload copy per receiver.
    pub fn rewrite_header(&mut self, now: Instant, packet: &RtpPacket) -> [u8; FIXED_HEADER_LEN] {
        let (seq, ts) = self.map(now, packet.ssrc(), packet.seq(), packet.timestamp());
        let mut h = [0u8; FIXED_HEADER_LEN];
        if let Some(orig) = packet.as_bytes().get(..FIXED_HEADER_LEN) {
            h.copy_from_slice(orig);
        }
        h[2..4].copy_from_slice(&seq.0.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.out_ssrc.0.to_be_bytes());
        h
    }

    /// Rewrites a packet the caller owns (e.g. the last receiver's copy) in place.
    pub fn rewrite_in_place(&mut self, now: Instant, packet: &mut [u8]) -> Result<(), BuildError> {
        let h: [u8; FIXED_HEADER_LEN] = packet
            .get(..FIXED_HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .filter(|h: &[u8; FIXED_HEADER_LEN]| h[0] >> 6 == rtp::RTP_VERSION)
            .ok_or(BuildError::NotRtp)?;
        let [_, _, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3] = h;
        let (seq, ts) = self.map(
            now,
            Ssrc(u32::from_be_bytes([c0, c1, c2, c3])),
            SeqNo(u16::from_be_bytes([s0, s1])),
            u32::from_be_bytes([t0, t1, t2, t3]),
        );
        rtp::rewrite_seq_ts_ssrc(packet, seq, ts, self.out_ssrc)
    }
}

/// `d` in ticks of a `rate` Hz clock, saturating.
fn ticks(d: Duration, rate: u32) -> u32 {
    let t = d.as_micros().saturating_mul(u128::from(rate)) / 1_000_000;
    u32::try_from(t).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpHeader;
    use bytes::BytesMut;

    fn packet(ssrc: u32, seq: u16, ts: u32, marker: bool) -> RtpPacket {
        let mut b = BytesMut::new();
        RtpHeader {
            marker,
            ..RtpHeader::new(96, SeqNo(seq), ts, Ssrc(ssrc))
        }
        .write_to(&mut b)
        .unwrap();
        b.extend_from_slice(b"frame");
        rtp::parse(b.freeze()).unwrap()
    }

    #[test]
    fn continuous_across_a_switch_and_reordering() {
        let t0 = Instant::now();
        let mut rw = RtpRewriter::new(Ssrc(0xabc), 90_000, 3000);
        assert_eq!(rw.map(t0, Ssrc(1), SeqNo(100), 5000), (SeqNo(100), 5000));
        assert_eq!(rw.map(t0, Ssrc(1), SeqNo(101), 8000), (SeqNo(101), 8000));
        // A late packet of the same source keeps its place.
        assert_eq!(rw.map(t0, Ssrc(1), SeqNo(99), 2000), (SeqNo(99), 2000));
        // Switch 100 ms later to a source with unrelated numbering.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            rw.map(t1, Ssrc(2), SeqNo(40_000), 1_000_000),
            (SeqNo(102), 8000 + 9000)
        );
        assert_eq!(
            rw.map(t1, Ssrc(2), SeqNo(40_001), 1_003_000),
            (SeqNo(103), 20_000)
        );
        // Switch back at once: the gap is at least one frame.
        assert_eq!(
            rw.map(t1, Ssrc(1), SeqNo(102), 11_000),
            (SeqNo(104), 23_000)
        );
        assert_eq!(rw.source(), Some(Ssrc(1)));
    }

    #[test]
    fn wraps_around_sequence_and_timestamp() {
        let t0 = Instant::now();
        let mut rw = RtpRewriter::new(Ssrc(7), 90_000, 3000);
        rw.map(t0, Ssrc(1), SeqNo(65_534), u32::MAX - 1000);
        let (s, t) = rw.map(t0, Ssrc(2), SeqNo(10), 0);
        assert_eq!(
            (s, t),
            (SeqNo(65_535), (u32::MAX - 1000).wrapping_add(3000))
        );
        let (s, t) = rw.map(t0, Ssrc(2), SeqNo(11), 3000);
        assert_eq!((s, t), (SeqNo(0), 4999));
        assert!(s.is_after(SeqNo(65_535)));
    }

    #[test]
    fn header_and_in_place_rewrites_agree() {
        let t0 = Instant::now();
        let p = packet(5, 1234, 90_000, true);
        let mut a = RtpRewriter::new(Ssrc(0x1111_2222), 90_000, 3000);
        let mut b = a.clone();
        let h = a.rewrite_header(t0, &p);
        let mut copy = p.as_bytes().to_vec();
        b.rewrite_in_place(t0, &mut copy).unwrap();
        assert_eq!(&copy[..12], &h[..]);
        assert_eq!(&copy[12..], b"frame");
        let out = rtp::parse(bytes::Bytes::from(copy)).unwrap();
        assert_eq!(out.ssrc(), Ssrc(0x1111_2222));
        assert!(out.marker(), "marker and payload type pass through");
        assert_eq!(out.payload_type(), 96);
        assert!(b.rewrite_in_place(t0, &mut [0u8; 4]).is_err());
    }
}
