//! RTCP, as much as a relay and a load generator need (RFC 3550 §6): demultiplexing from RTP on
//! one port (RFC 5761 §4), a view of each packet's common header, a walk over a compound packet
//! with the RFC 3550 A.2 validity checks, and the sender info and report blocks of SR/RR.

use std::fmt;

use super::packet::RTP_VERSION;
use super::seq::Ssrc;

/// Length of the RTCP common header (RFC 3550 §6.4.1: V, P, count, PT, length).
pub const RTCP_HEADER_LEN: usize = 4;

/// Length of one SR/RR report block (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;

/// True when a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4): version 2 and the
/// second octet, without its top (marker) bit, in 64..=95, the range RTP payload types must
/// avoid so that RTCP packet types 192..=223 never look like RTP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] => first >> 6 == RTP_VERSION && (64..=95).contains(&(second & 0x7f)),
        _ => false,
    }
}

/// Why bytes are not a valid (compound) RTCP packet (RFC 3550 §6.4.1, A.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpError {
    /// Fewer than 4 bytes left for a common header.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// The length field points past the end of the datagram.
    LengthOverrun,
    /// The P bit is set on a packet that is not the last of the compound.
    PaddingNotLast,
    /// The padding count is 0 or larger than the packet's body.
    BadPadding,
    /// An SR, RR or BYE too short for the sources its count field announces.
    TruncatedBody,
    /// A compound packet whose first packet is not an SR or RR.
    FirstNotReport,
}

impl RtcpError {
    /// A reason phrase naming the problem, for a log line or a garbage counter's label.
    pub fn reason(&self) -> &'static str {
        match self {
            RtcpError::TooShort => "Shorter Than RTCP Header",
            RtcpError::BadVersion => "RTCP Version Not 2",
            RtcpError::LengthOverrun => "RTCP Length Past Datagram End",
            RtcpError::PaddingNotLast => "Padding Before Last RTCP Packet",
            RtcpError::BadPadding => "Bad RTCP Padding Count",
            RtcpError::TruncatedBody => "RTCP Body Shorter Than Its Count",
            RtcpError::FirstNotReport => "Compound RTCP Not Starting With SR/RR",
        }
    }
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RtcpError {}

/// RTCP packet types (RFC 3550 §12.1; feedback RFC 4585, XR RFC 3611).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcpType {
    /// 200 SR: sender report.
    SenderReport,
    /// 201 RR: receiver report.
    ReceiverReport,
    /// 202 SDES: source description.
    SourceDescription,
    /// 203 BYE: goodbye.
    Bye,
    /// 204 APP: application-defined.
    App,
    /// 205 RTPFB: transport-layer feedback (RFC 4585).
    TransportFeedback,
    /// 206 PSFB: payload-specific feedback (RFC 4585).
    PayloadFeedback,
    /// 207 XR: extended report (RFC 3611).
    ExtendedReport,
    /// Any other packet type value.
    Other(u8),
}

impl From<u8> for RtcpType {
    fn from(pt: u8) -> Self {
        match pt {
            200 => RtcpType::SenderReport,
            201 => RtcpType::ReceiverReport,
            202 => RtcpType::SourceDescription,
            203 => RtcpType::Bye,
            204 => RtcpType::App,
            205 => RtcpType::TransportFeedback,
            206 => RtcpType::PayloadFeedback,
            207 => RtcpType::ExtendedReport,
            other => RtcpType::Other(other),
        }
    }
}

/// The sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point seconds since 1900.
    pub ntp: u64,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
}

/// One reception report block of an SR or RR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256 (A.3).
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value (negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | max seq).
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units (A.8).
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (LSR).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// One RTCP packet of a compound, borrowed from the datagram (RFC 3550 §6.4.1 common header).
/// Built only by [`packets`], which checked its length against its count field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    bytes: &'a [u8],
    /// Bytes of content, after the header and before the padding.
    body_end: usize,
}

impl<'a> RtcpPacket<'a> {
    /// The P bit.
    pub fn has_padding(&self) -> bool {
        self.first() & 0x20 != 0
    }

    /// The 5-bit count field (report blocks for SR/RR, chunks for SDES, sources for BYE,
    /// subtype for APP, FMT for feedback).
    pub fn count(&self) -> u8 {
        self.first() & 0x1f
    }

    /// The packet type byte.
    pub fn packet_type_raw(&self) -> u8 {
        self.bytes.get(1).copied().unwrap_or(0)
    }

    /// The packet type.
    pub fn packet_type(&self) -> RtcpType {
        RtcpType::from(self.packet_type_raw())
    }

    /// The packet's length in bytes, header and padding included (the length field + 1, in
    /// 32-bit words, times 4).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a packet has at least its 4-byte header (for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The whole packet, header and padding included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The content after the common header, without padding.
    pub fn body(&self) -> &'a [u8] {
        self.bytes
            .get(RTCP_HEADER_LEN..self.body_end)
            .unwrap_or_default()
    }

    /// The SSRC that follows the header in every standard type: the sender of an
    /// SR/RR/APP/feedback/XR, the first chunk's source in SDES, the first source in BYE.
    pub fn ssrc(&self) -> Option<Ssrc> {
        be32(self.body(), 0).map(Ssrc)
    }

    /// The sender info of an SR; `None` for other types.
    pub fn sender_info(&self) -> Option<SenderInfo> {
        if self.packet_type() != RtcpType::SenderReport {
            return None;
        }
        let b = self.body();
        Some(SenderInfo {
            ntp: u64::from(be32(b, 4)?) << 32 | u64::from(be32(b, 8)?),
            rtp_timestamp: be32(b, 12)?,
            packet_count: be32(b, 16)?,
            octet_count: be32(b, 20)?,
        })
    }

    /// The reception report blocks of an SR or RR (none for other types).
    pub fn report_blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        let start = match self.packet_type() {
            RtcpType::SenderReport => 4 + 20,
            RtcpType::ReceiverReport => 4,
            _ => self.body().len(),
        };
        let blocks = self.body().get(start..).unwrap_or_default();
        blocks
            .chunks_exact(REPORT_BLOCK_LEN)
            .take(usize::from(self.count()))
            .filter_map(|b| {
                let lost = be32(b, 4)?;
                Some(ReportBlock {
                    ssrc: Ssrc(be32(b, 0)?),
                    fraction_lost: (lost >> 24) as u8,
                    // Sign-extend the 24-bit cumulative count.
                    cumulative_lost: ((lost << 8) as i32) >> 8,
                    extended_highest_seq: be32(b, 8)?,
                    jitter: be32(b, 12)?,
                    last_sr: be32(b, 16)?,
                    delay_since_last_sr: be32(b, 20)?,
                })
            })
    }

    fn first(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }
}

/// Walks the packets of a (compound) RTCP datagram, checking each common header (RFC 3550 A.2:
/// version 2, length within the datagram, padding only on the last packet) and that SR, RR and
/// BYE hold what their count announces. Stops after the first error. Does not require the first
/// packet to be SR/RR (reduced-size RTCP, RFC 5506); [`check_compound`] does.
pub fn packets(datagram: &[u8]) -> RtcpPackets<'_> {
    RtcpPackets {
        rest: datagram,
        failed: false,
    }
}

/// Iterator over the packets of a compound RTCP datagram, see [`packets`].
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> RtcpPackets<'a> {
    fn next_packet(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let [first, pt, len_hi, len_lo, ..] = *self.rest else {
            return Err(RtcpError::TooShort);
        };
        if first >> 6 != RTP_VERSION {
            return Err(RtcpError::BadVersion);
        }
        let len = 4 * (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1);
        let (bytes, rest) = match (self.rest.get(..len), self.rest.get(len..)) {
            (Some(b), Some(r)) => (b, r),
            _ => return Err(RtcpError::LengthOverrun),
        };
        let mut body_end = len;
        if first & 0x20 != 0 {
            if !rest.is_empty() {
                return Err(RtcpError::PaddingNotLast);
            }
            let count = usize::from(bytes.last().copied().unwrap_or(0));
            if count == 0 || count > len - RTCP_HEADER_LEN {
                return Err(RtcpError::BadPadding);
            }
            body_end -= count;
        }
        let count = usize::from(first & 0x1f);
        let needed = match RtcpType::from(pt) {
            RtcpType::SenderReport => 4 + 20 + REPORT_BLOCK_LEN * count,
            RtcpType::ReceiverReport => 4 + REPORT_BLOCK_LEN * count,
            RtcpType::Bye => 4 * count,
            _ => 0,
        };
        if body_end - RTCP_HEADER_LEN < needed {
            return Err(RtcpError::TruncatedBody);
        }
        self.rest = rest;
        Ok(RtcpPacket { bytes, body_end })
    }
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.next_packet();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Validates a compound RTCP datagram as RFC 3550 A.2 does (every header valid, first packet SR
/// or RR, lengths adding up to the datagram) and returns how many packets it holds.
pub fn check_compound(datagram: &[u8]) -> Result<usize, RtcpError> {
    let mut n = 0;
    for p in packets(datagram) {
        let p = p?;
        if n == 0
            && !matches!(
                p.packet_type(),
                RtcpType::SenderReport | RtcpType::ReceiverReport
            )
        {
            return Err(RtcpError::FirstNotReport);
        }
        n += 1;
    }
    if n == 0 {
        return Err(RtcpError::TooShort);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(p: bool, count: u8, pt: u8, words_minus_one: u16) -> Vec<u8> {
        let mut v = vec![0x80 | (u8::from(p) << 5) | count, pt];
        v.extend_from_slice(&words_minus_one.to_be_bytes());
        v
    }

    /// RR from 0x11111111 with one report block about 0x22222222.
    fn rr() -> Vec<u8> {
        let mut v = header(false, 1, 201, 7);
        v.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        v.extend_from_slice(&0x2222_2222u32.to_be_bytes());
        // fraction 64/256, cumulative lost -3 (24-bit two's complement).
        v.extend_from_slice(&[64, 0xff, 0xff, 0xfd]);
        v.extend_from_slice(&0x0001_0005u32.to_be_bytes());
        v.extend_from_slice(&80u32.to_be_bytes());
        v.extend_from_slice(&0xaabb_ccddu32.to_be_bytes());
        v.extend_from_slice(&65536u32.to_be_bytes());
        v
    }

    /// SDES with one CNAME chunk "ab" for 0x11111111.
    fn sdes() -> Vec<u8> {
        let mut v = header(false, 1, 202, 3);
        v.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        v.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
        v
    }

    #[test]
    fn demux_by_second_octet() {
        // SR/RR/SDES/BYE/APP as RTCP.
        for pt in 200..=204u8 {
            assert!(is_rtcp(&[0x80, pt, 0, 1]), "{pt}");
        }
        // PCMU, PCMA, dynamic types, with and without marker: RTP.
        for second in [0u8, 8, 96, 127, 0x80, 0x88, 0xe0] {
            assert!(!is_rtcp(&[0x80, second, 0, 1]), "{second}");
        }
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[0x40, 200, 0, 1]));
    }

    #[test]
    fn walks_a_compound_rr_sdes_bye() {
        let mut d = rr();
        d.extend(sdes());
        let mut bye = header(false, 1, 203, 1);
        bye.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        d.extend(bye);
        assert_eq!(check_compound(&d), Ok(3));
        let ps: Vec<_> = packets(&d).map(Result::unwrap).collect();
        let types: Vec<_> = ps.iter().map(|p| p.packet_type()).collect();
        assert_eq!(
            types,
            [
                RtcpType::ReceiverReport,
                RtcpType::SourceDescription,
                RtcpType::Bye
            ]
        );
        assert_eq!(ps[0].len(), 32);
        assert_eq!(ps[0].ssrc(), Some(Ssrc(0x1111_1111)));
        assert!(ps[0].sender_info().is_none());
        let blocks: Vec<_> = ps[0].report_blocks().collect();
        assert_eq!(
            blocks,
            [ReportBlock {
                ssrc: Ssrc(0x2222_2222),
                fraction_lost: 64,
                cumulative_lost: -3,
                extended_highest_seq: 0x0001_0005,
                jitter: 80,
                last_sr: 0xaabb_ccdd,
                delay_since_last_sr: 65536,
            }]
        );
        assert_eq!(ps[1].body().len(), 12);
        assert_eq!(ps[2].ssrc(), Some(Ssrc(0x1111_1111)));
    }

    #[test]
    fn sender_report_info() {
        let mut sr = header(false, 0, 200, 6);
        sr.extend_from_slice(&7u32.to_be_bytes());
        sr.extend_from_slice(&[0, 0, 0, 1, 0x80, 0, 0, 0]); // NTP 1.5 s
        sr.extend_from_slice(&8000u32.to_be_bytes());
        sr.extend_from_slice(&50u32.to_be_bytes());
        sr.extend_from_slice(&8000u32.to_be_bytes());
        let p = packets(&sr).next().unwrap().unwrap();
        assert_eq!(
            p.sender_info(),
            Some(SenderInfo {
                ntp: 0x1_8000_0000,
                rtp_timestamp: 8000,
                packet_count: 50,
                octet_count: 8000
            })
        );
        assert_eq!(p.report_blocks().count(), 0);
        assert_eq!(check_compound(&sr), Ok(1));
    }

    #[test]
    fn padding_on_the_last_packet_only() {
        // RR without blocks + 4 bytes padding.
        let mut d = header(true, 0, 201, 2);
        d.extend_from_slice(&9u32.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 4]);
        let p = packets(&d).next().unwrap().unwrap();
        assert!(p.has_padding());
        assert_eq!(p.body().len(), 4);
        assert_eq!(check_compound(&d), Ok(1));

        let mut two = d.clone();
        two.extend(sdes());
        assert_eq!(check_compound(&two), Err(RtcpError::PaddingNotLast));

        let n = d.len();
        d[n - 1] = 0;
        assert_eq!(check_compound(&d), Err(RtcpError::BadPadding));
        d[n - 1] = 9;
        assert_eq!(check_compound(&d), Err(RtcpError::BadPadding));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(check_compound(&[]), Err(RtcpError::TooShort));
        assert_eq!(check_compound(&[0x80, 201, 0]), Err(RtcpError::TooShort));
        let mut d = rr();
        d[0] = 0x41;
        assert_eq!(check_compound(&d), Err(RtcpError::BadVersion));
        // Length one word too long.
        let mut d = rr();
        d[3] = 8;
        assert_eq!(check_compound(&d), Err(RtcpError::LengthOverrun));
        // Trailing bytes that are not a whole packet.
        let mut d = rr();
        d.extend_from_slice(&[0x80, 202]);
        assert_eq!(check_compound(&d), Err(RtcpError::TooShort));
        // RR announcing two report blocks but carrying one.
        let mut d = rr();
        d[0] = 0x82;
        assert_eq!(check_compound(&d), Err(RtcpError::TruncatedBody));
        // BYE announcing two sources in one word.
        let mut bye = header(false, 2, 203, 1);
        bye.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(packets(&bye).next(), Some(Err(RtcpError::TruncatedBody)));
        // SDES first.
        assert_eq!(check_compound(&sdes()), Err(RtcpError::FirstNotReport));
        // Reduced-size RTCP (RFC 5506) still walks.
        assert_eq!(packets(&sdes()).count(), 1);
        // The walk stops at the first error.
        let mut d = vec![0u8; 8];
        d.extend(rr());
        assert_eq!(packets(&d).count(), 1);
    }

    #[test]
    fn never_panics_on_prefixes() {
        let mut d = rr();
        d.extend(sdes());
        for n in 0..d.len() {
            // Only the prefix ending exactly after the RR is a valid compound.
            assert_eq!(check_compound(&d[..n]).is_ok(), n == 32, "{n}");
        }
        assert_eq!(check_compound(&d), Ok(2));
    }
}
