//! RTP data packets (RFC 3550 §5.1): a validated zero-copy view over received bytes, a header
//! writer for generators, and in-place header rewriting for relays.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::seq::{SeqNo, Ssrc};

/// The only RTP version in use (RFC 3550 §5.1 `V`).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header, before CSRCs and the extension (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// Most contributing sources a header can list (the 4-bit CC field, RFC 3550 §5.1).
pub const MAX_CSRCS: usize = 15;

/// Why received bytes are not a valid RTP packet (RFC 3550 §5.1, A.1 validity checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// The CSRC list runs past the end of the datagram.
    TruncatedCsrcs,
    /// The header extension (or its length word) runs past the end of the datagram.
    TruncatedExtension,
    /// The P bit is set but the last octet is 0 or counts more than the payload holds.
    BadPadding,
}

impl RtpError {
    /// A reason phrase naming the problem, for a log line or a garbage counter's label.
    pub fn reason(&self) -> &'static str {
        match self {
            RtpError::TooShort => "Shorter Than RTP Header",
            RtpError::BadVersion => "RTP Version Not 2",
            RtpError::TruncatedCsrcs => "Truncated CSRC List",
            RtpError::TruncatedExtension => "Truncated Header Extension",
            RtpError::BadPadding => "Bad Padding Count",
        }
    }
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RtpError {}

/// Why a header could not be written: a caller's mistake, not a peer's (RFC 3550 §5.1 field
/// widths, §5.3.1 extension length in 32-bit words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The payload type does not fit in 7 bits.
    PayloadTypeTooLarge,
    /// More than 15 CSRCs.
    TooManyCsrcs,
    /// Header extension data whose length is not a multiple of 4 or exceeds 65535 words.
    BadExtensionLength,
    /// The buffer to rewrite is not an RTP packet (too short or not version 2).
    NotRtp,
}

impl BuildError {
    /// A reason phrase naming the mistake.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::PayloadTypeTooLarge => "Payload Type Above 127",
            BuildError::TooManyCsrcs => "More Than 15 CSRCs",
            BuildError::BadExtensionLength => "Extension Not Whole 32-bit Words",
            BuildError::NotRtp => "Not An RTP Packet",
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BuildError {}

/// A header extension (RFC 3550 §5.3.1): the profile-defined 16 bits and the data words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderExtension {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte elements).
    pub profile: u16,
    /// The extension data, a slice of the packet (a multiple of 4 bytes).
    pub data: Bytes,
}

/// A validated RTP packet (RFC 3550 §5.1): fixed header fields decoded, CSRCs, extension and
/// payload kept as slices of the received buffer. Padding is excluded from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    buf: Bytes,
    first: u8,
    second: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    /// Offset of the extension header (4 bytes before its data), when X is set.
    extension_at: Option<usize>,
    /// Offset of the first payload byte.
    payload_start: usize,
    /// Offset one past the last payload byte (padding starts there).
    payload_end: usize,
}

/// Big-endian u16 at `at`, or `None` past the end.
fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Big-endian u32 at `at`, or `None` past the end.
fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses and validates an RTP packet without copying (RFC 3550 §5.1; A.1 header checks:
/// version, CSRC count, extension length and padding consistent with the datagram length).
/// The payload type is not checked against RTCP's range: demultiplex first with
/// [`super::is_rtcp`].
pub fn parse(buf: Bytes) -> Result<RtpPacket, RtpError> {
    let (first, second) = match buf.get(..2) {
        Some(&[a, b]) if buf.len() >= FIXED_HEADER_LEN => (a, b),
        _ => return Err(RtpError::TooShort),
    };
    if first >> 6 != RTP_VERSION {
        return Err(RtpError::BadVersion);
    }
    let seq = be16(&buf, 2).ok_or(RtpError::TooShort)?;
    let timestamp = be32(&buf, 4).ok_or(RtpError::TooShort)?;
    let ssrc = be32(&buf, 8).ok_or(RtpError::TooShort)?;
    let csrc_count = usize::from(first & 0x0f);
    let mut at = FIXED_HEADER_LEN + 4 * csrc_count;
    if at > buf.len() {
        return Err(RtpError::TruncatedCsrcs);
    }
    let extension_at = if first & 0x10 != 0 {
        let words = be16(&buf, at + 2).ok_or(RtpError::TruncatedExtension)?;
        let ext_at = at;
        at += 4 + 4 * usize::from(words);
        if at > buf.len() {
            return Err(RtpError::TruncatedExtension);
        }
        Some(ext_at)
    } else {
        None
    };
    let mut payload_end = buf.len();
    if first & 0x20 != 0 {
        let count = usize::from(*buf.last().ok_or(RtpError::BadPadding)?);
        if count == 0 || count > buf.len() - at {
            return Err(RtpError::BadPadding);
        }
        payload_end -= count;
    }
    Ok(RtpPacket {
        buf,
        first,
        second,
        seq,
        timestamp,
        ssrc,
        extension_at,
        payload_start: at,
        payload_end,
    })
}

impl RtpPacket {
    /// The version field (always 2 after [`parse`]).
    pub fn version(&self) -> u8 {
        self.first >> 6
    }

    /// The P bit: the packet ends with padding (already removed from [`Self::payload`]).
    pub fn has_padding(&self) -> bool {
        self.first & 0x20 != 0
    }

    /// The number of padding octets at the end, including the count octet itself.
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    /// The X bit: a header extension follows the CSRCs.
    pub fn has_extension(&self) -> bool {
        self.first & 0x10 != 0
    }

    /// The CC field: how many CSRCs follow the fixed header.
    pub fn csrc_count(&self) -> u8 {
        self.first & 0x0f
    }

    /// The M bit (profile-defined; e.g. the start of a talkspurt for audio).
    pub fn marker(&self) -> bool {
        self.second & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.second & 0x7f
    }

    /// The sequence number.
    pub fn seq(&self) -> SeqNo {
        SeqNo(self.seq)
    }

    /// The RTP timestamp, in the payload format's clock units.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The synchronization source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(self.ssrc)
    }

    /// The contributing sources, in header order.
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + '_ {
        (0..usize::from(self.csrc_count()))
            .filter_map(move |i| be32(&self.buf, FIXED_HEADER_LEN + 4 * i).map(Ssrc))
    }

    /// The header extension, sharing the packet's buffer.
    pub fn extension(&self) -> Option<HeaderExtension> {
        let at = self.extension_at?;
        let profile = be16(&self.buf, at)?;
        Some(HeaderExtension {
            profile,
            data: self.buf.slice(at + 4..self.payload_start),
        })
    }

    /// Length of the header: fixed part, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// The payload without padding, sharing the packet's buffer.
    pub fn payload(&self) -> Bytes {
        self.buf.slice(self.payload_start..self.payload_end)
    }

    /// The payload as a borrowed slice.
    pub fn payload_bytes(&self) -> &[u8] {
        self.buf
            .get(self.payload_start..self.payload_end)
            .unwrap_or_default()
    }

    /// The whole datagram as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    /// Gives back the datagram (e.g. to forward it unchanged).
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }
}

/// The fields of an RTP header to write (RFC 3550 §5.1). Padding is not written: generators
/// that want it append it themselves and set the P bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    /// The M bit.
    pub marker: bool,
    /// The payload type, 0..=127.
    pub payload_type: u8,
    /// The sequence number.
    pub seq: SeqNo,
    /// The RTP timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources, at most 15.
    pub csrcs: &'a [Ssrc],
    /// An optional extension: profile field and data (a whole number of 32-bit words).
    pub extension: Option<(u16, &'a [u8])>,
}

impl<'a> RtpHeader<'a> {
    /// A header with no marker, CSRCs or extension.
    pub fn new(payload_type: u8, seq: SeqNo, timestamp: u32, ssrc: Ssrc) -> Self {
        RtpHeader {
            marker: false,
            payload_type,
            seq,
            timestamp,
            ssrc,
            csrcs: &[],
            extension: None,
        }
    }

    /// The number of bytes [`Self::write_to`] appends.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN
            + 4 * self.csrcs.len()
            + self.extension.map_or(0, |(_, data)| 4 + data.len())
    }

    /// Always false: a header has at least its 12 fixed bytes (for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the header to `buf`; the caller appends the payload next. Nothing is written
    /// when a field is out of range.
    pub fn write_to(&self, buf: &mut BytesMut) -> Result<(), BuildError> {
        if self.payload_type > 0x7f {
            return Err(BuildError::PayloadTypeTooLarge);
        }
        if self.csrcs.len() > MAX_CSRCS {
            return Err(BuildError::TooManyCsrcs);
        }
        let ext_words = match self.extension {
            Some((_, data)) if data.len() % 4 != 0 => return Err(BuildError::BadExtensionLength),
            Some((_, data)) => {
                Some(u16::try_from(data.len() / 4).map_err(|_| BuildError::BadExtensionLength)?)
            }
            None => None,
        };
        buf.reserve(self.len());
        let x = if ext_words.is_some() { 0x10 } else { 0 };
        // The cast is exact: at most 15 CSRCs was checked above.
        buf.put_u8(RTP_VERSION << 6 | x | self.csrcs.len() as u8);
        buf.put_u8(u8::from(self.marker) << 7 | self.payload_type);
        buf.put_u16(self.seq.0);
        buf.put_u32(self.timestamp);
        buf.put_u32(self.ssrc.0);
        for c in self.csrcs {
            buf.put_u32(c.0);
        }
        if let (Some((profile, data)), Some(words)) = (self.extension, ext_words) {
            buf.put_u16(profile);
            buf.put_u16(words);
            buf.put_slice(data);
        }
        Ok(())
    }
}

/// Rewrites the sequence number, timestamp and SSRC of a received RTP packet in place (what an
/// SSRC-translating relay does, RFC 3550 §7.3), leaving the rest of the datagram untouched.
pub fn rewrite_seq_ts_ssrc(
    packet: &mut [u8],
    seq: SeqNo,
    timestamp: u32,
    ssrc: Ssrc,
) -> Result<(), BuildError> {
    match packet.first() {
        Some(&b) if b >> 6 == RTP_VERSION => {}
        _ => return Err(BuildError::NotRtp),
    }
    let fields = packet
        .get_mut(2..FIXED_HEADER_LEN)
        .ok_or(BuildError::NotRtp)?;
    fields[..2].copy_from_slice(&seq.0.to_be_bytes());
    fields[2..6].copy_from_slice(&timestamp.to_be_bytes());
    fields[6..].copy_from_slice(&ssrc.0.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(h: &RtpHeader<'_>, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        h.write_to(&mut b).unwrap();
        b.put_slice(payload);
        b.freeze()
    }

    #[test]
    fn parses_the_fixed_header() {
        // V=2, no P/X/CC; M=1, PT=0; seq 0x1234; ts 0xdeadbeef; ssrc 0x01020304; payload "ab".
        let raw = Bytes::from_static(&[
            0x80, 0x80, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, b'a', b'b',
        ]);
        let p = parse(raw.clone()).unwrap();
        assert_eq!(p.version(), 2);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.seq(), SeqNo(0x1234));
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), Ssrc(0x0102_0304));
        assert_eq!(p.csrcs().count(), 0);
        assert!(p.extension().is_none());
        assert_eq!(&p.payload()[..], b"ab");
        assert_eq!(p.header_len(), 12);
        // Zero-copy: the payload points into the received buffer.
        assert_eq!(p.payload().as_ptr(), raw[12..].as_ptr());
    }

    #[test]
    fn header_writer_round_trips_csrcs_and_extension() {
        let csrcs = [Ssrc(7), Ssrc(8), Ssrc(9)];
        let ext = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let h = RtpHeader {
            marker: true,
            csrcs: &csrcs,
            extension: Some((0xbede, &ext)),
            ..RtpHeader::new(96, SeqNo(65535), 160, Ssrc(0xcafe))
        };
        let pkt = build(&h, b"payload");
        assert_eq!(pkt.len(), h.len() + 7);
        let p = parse(pkt.clone()).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.seq(), SeqNo(65535));
        assert_eq!(p.timestamp(), 160);
        assert_eq!(p.ssrc(), Ssrc(0xcafe));
        assert_eq!(p.csrcs().collect::<Vec<_>>(), csrcs);
        let e = p.extension().unwrap();
        assert_eq!(e.profile, 0xbede);
        assert_eq!(&e.data[..], &ext);
        assert_eq!(&p.payload()[..], b"payload");
        assert_eq!(p.header_len(), 12 + 12 + 4 + 8);
    }

    #[test]
    fn padding_is_removed_from_the_payload() {
        let mut b = BytesMut::new();
        RtpHeader::new(8, SeqNo(1), 0, Ssrc(1))
            .write_to(&mut b)
            .unwrap();
        b[0] |= 0x20;
        b.put_slice(b"xyz");
        b.put_slice(&[0, 0, 3]);
        let p = parse(b.freeze()).unwrap();
        assert!(p.has_padding());
        assert_eq!(p.padding_len(), 3);
        assert_eq!(&p.payload()[..], b"xyz");
        assert_eq!(p.payload_bytes(), b"xyz");
    }

    #[test]
    fn rejects_garbage() {
        let good = build(&RtpHeader::new(0, SeqNo(1), 2, Ssrc(3)), b"data");
        let with = |f: &dyn Fn(&mut BytesMut)| {
            let mut b = BytesMut::from(&good[..]);
            f(&mut b);
            parse(b.freeze())
        };
        assert_eq!(parse(Bytes::new()), Err(RtpError::TooShort));
        assert_eq!(parse(good.slice(..11)), Err(RtpError::TooShort));
        assert_eq!(with(&|b| b[0] = 0x40), Err(RtpError::BadVersion));
        assert_eq!(with(&|b| b[0] = 0x00), Err(RtpError::BadVersion));
        // CC = 2 needs 8 more bytes; the payload has 4.
        assert_eq!(with(&|b| b[0] |= 2), Err(RtpError::TruncatedCsrcs));
        // X set: the 4-byte "payload" is read as an extension header of length 1 word, missing.
        assert_eq!(
            with(&|b| {
                b[0] |= 0x10;
                b[14] = 0;
                b[15] = 1;
            }),
            Err(RtpError::TruncatedExtension)
        );
        // X set with not even the 4-byte extension header.
        let mut b = BytesMut::from(&good[..14]);
        b[0] |= 0x10;
        assert_eq!(parse(b.freeze()), Err(RtpError::TruncatedExtension));
        // P set: last octet 'a' = 97 > 4 payload bytes; and a zero count.
        assert_eq!(with(&|b| b[0] |= 0x20), Err(RtpError::BadPadding));
        assert_eq!(
            with(&|b| {
                b[0] |= 0x20;
                let n = b.len();
                b[n - 1] = 0;
            }),
            Err(RtpError::BadPadding)
        );
        // Padding may take the whole payload, but not the header.
        assert!(with(&|b| {
            b[0] |= 0x20;
            let n = b.len();
            b[n - 1] = 4;
        })
        .unwrap()
        .payload()
        .is_empty());
        assert_eq!(
            with(&|b| {
                b[0] |= 0x20;
                let n = b.len();
                b[n - 1] = 5;
            }),
            Err(RtpError::BadPadding)
        );
    }

    #[test]
    fn never_panics_on_short_prefixes() {
        let csrcs = [Ssrc(1)];
        let h = RtpHeader {
            csrcs: &csrcs,
            extension: Some((1, &[0; 4])),
            ..RtpHeader::new(0, SeqNo(1), 2, Ssrc(3))
        };
        let mut b = BytesMut::new();
        h.write_to(&mut b).unwrap();
        b[0] |= 0x20;
        b.put_slice(&[9, 1]);
        let full = b.freeze();
        assert!(parse(full.clone()).is_ok());
        for n in 0..full.len() {
            assert!(parse(full.slice(..n)).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn writer_rejects_out_of_range_fields() {
        let mut b = BytesMut::new();
        let h = RtpHeader::new(128, SeqNo(0), 0, Ssrc(0));
        assert_eq!(h.write_to(&mut b), Err(BuildError::PayloadTypeTooLarge));
        let many = [Ssrc(0); 16];
        let h = RtpHeader {
            csrcs: &many,
            ..RtpHeader::new(0, SeqNo(0), 0, Ssrc(0))
        };
        assert_eq!(h.write_to(&mut b), Err(BuildError::TooManyCsrcs));
        let h = RtpHeader {
            extension: Some((0, &[1, 2, 3])),
            ..RtpHeader::new(0, SeqNo(0), 0, Ssrc(0))
        };
        assert_eq!(h.write_to(&mut b), Err(BuildError::BadExtensionLength));
        assert!(b.is_empty());
    }

    #[test]
    fn rewrites_in_place() {
        let csrcs = [Ssrc(5)];
        let h = RtpHeader {
            marker: true,
            csrcs: &csrcs,
            ..RtpHeader::new(0, SeqNo(10), 1000, Ssrc(1))
        };
        let original = build(&h, b"voice");
        let mut buf = original.to_vec();
        rewrite_seq_ts_ssrc(&mut buf, SeqNo(77), 42, Ssrc(0xabcd)).unwrap();
        let p = parse(Bytes::from(buf.clone())).unwrap();
        assert_eq!(
            (p.seq(), p.timestamp(), p.ssrc()),
            (SeqNo(77), 42, Ssrc(0xabcd))
        );
        assert!(p.marker());
        assert_eq!(p.csrcs().collect::<Vec<_>>(), csrcs);
        assert_eq!(&p.payload()[..], b"voice");
        assert_eq!(buf[..2], original[..2]);
        assert_eq!(buf[12..], original[12..]);

        assert_eq!(
            rewrite_seq_ts_ssrc(&mut buf[..11], SeqNo(0), 0, Ssrc(0)),
            Err(BuildError::NotRtp)
        );
        buf[0] = 0x40;
        assert_eq!(
            rewrite_seq_ts_ssrc(&mut buf, SeqNo(0), 0, Ssrc(0)),
            Err(BuildError::NotRtp)
        );
    }
}
