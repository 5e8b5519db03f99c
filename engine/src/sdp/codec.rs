//! RTP payload formats as offer/answer negotiates them: the static payload types of RFC 3551 §6
//! and dynamic ones named by `rtpmap` (RFC 8866 §6.6).

use bytes::Bytes;

use super::attr::RtpMap;
use super::line::valid_value;
use super::SdpError;
use crate::sip::message::is_token_char;

/// An RTP payload format: payload type, encoding name, clock rate, channels and `fmtp`
/// parameters. Two codecs are the same format when name (ASCII case-insensitively), clock rate
/// and channel count match (RFC 3264 §6.1); payload type and parameters do not take part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    payload_type: u8,
    name: Bytes,
    clock_rate: u32,
    channels: u16,
    fmtp: Option<Bytes>,
}

/// RFC 3551 §6 tables 4 and 5: the static payload types (type, name, clock rate, channels).
const STATIC: [(u8, &str, u32, u16); 24] = [
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

/// The first dynamic payload type (RFC 3551 §3): what [`Codec::from_spec`] gives a format
/// that has no static one.
pub const FIRST_DYNAMIC_PT: u8 = 96;

/// Why a codec named on a command line or in a configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecSpecError {
    /// Not `NAME[/RATE[/CHANNELS]]` with numbers where numbers go.
    Syntax,
    /// A format without a static payload type needs its clock rate.
    NeedsRate,
    /// The name is not a token (RFC 8866 §6.6).
    BadName,
}

impl CodecSpecError {
    /// A phrase naming the problem.
    pub fn reason(self) -> &'static str {
        match self {
            CodecSpecError::Syntax => "expected NAME[/RATE[/CHANNELS]]",
            CodecSpecError::NeedsRate => "not a static payload type: give NAME/RATE",
            CodecSpecError::BadName => "the name must be a token",
        }
    }
}

impl Codec {
    /// A codec as people name it: `NAME[/RATE[/CHANNELS]]`, the `rtpmap` form. A static
    /// payload type of that name (and rate and channels when given; one channel by default)
    /// when there is one (`PCMA`, `G722`, `L16/44100/2`), else the dynamic payload type
    /// [`FIRST_DYNAMIC_PT`], which needs the rate (`opus/48000/2`).
    pub fn from_spec(spec: &str) -> Result<Codec, CodecSpecError> {
        let mut parts = spec.split('/');
        let name = parts.next().unwrap_or_default();
        let num = |v: Option<&str>| -> Result<Option<u32>, CodecSpecError> {
            v.map(|v| v.parse().map_err(|_| CodecSpecError::Syntax))
                .transpose()
        };
        let rate = num(parts.next())?;
        let channels = num(parts.next())?.unwrap_or(1);
        if parts.next().is_some() || name.is_empty() || rate == Some(0) || channels == 0 {
            return Err(CodecSpecError::Syntax);
        }
        let channels = u16::try_from(channels).map_err(|_| CodecSpecError::Syntax)?;
        let fixed = STATIC.iter().find(|s| {
            s.1.eq_ignore_ascii_case(name) && rate.is_none_or(|r| r == s.2) && s.3 == channels
        });
        if let Some(&(pt, _, _, _)) = fixed {
            return Codec::from_static(pt).ok_or(CodecSpecError::Syntax);
        }
        let rate = rate.ok_or(CodecSpecError::NeedsRate)?;
        Codec::dynamic(FIRST_DYNAMIC_PT, name.to_string(), rate)
            .map(|c| c.with_channels(channels))
            .map_err(|_| CodecSpecError::BadName)
    }

    /// G.711 µ-law, static payload type 0 (RFC 3551 §4.5.14).
    pub const PCMU: Codec = Codec::fixed(0, "PCMU", 8000);
    /// G.711 A-law, static payload type 8 (RFC 3551 §4.5.14).
    pub const PCMA: Codec = Codec::fixed(8, "PCMA", 8000);

    const fn fixed(payload_type: u8, name: &'static str, clock_rate: u32) -> Codec {
        Codec {
            payload_type,
            name: Bytes::from_static(name.as_bytes()),
            clock_rate,
            channels: 1,
            fmtp: None,
        }
    }

    /// A static payload type of RFC 3551 §6 (`None` for unassigned and dynamic ones).
    pub fn from_static(pt: u8) -> Option<Codec> {
        STATIC
            .iter()
            .find(|s| s.0 == pt)
            .map(|&(pt, name, rate, ch)| Codec::fixed(pt, name, rate).with_channels(ch))
    }

    /// The static payload type called `name` (ASCII case-insensitively, the first at any
    /// clock rate), e.g. `PCMA` or `G722` from a command line.
    pub fn well_known(name: &str) -> Option<Codec> {
        let pt = STATIC.iter().find(|s| s.1.eq_ignore_ascii_case(name))?.0;
        Codec::from_static(pt)
    }

    /// A dynamic payload format (RFC 3551 §3): `pt` below 128 and `name` a token.
    pub fn dynamic(pt: u8, name: impl Into<Bytes>, clock_rate: u32) -> Result<Codec, SdpError> {
        let name = name.into();
        if pt >= 128 || name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
            return Err(SdpError::InvalidValue);
        }
        Ok(Codec {
            payload_type: pt,
            name,
            clock_rate,
            channels: 1,
            fmtp: None,
        })
    }

    /// DTMF events at 8 kHz on payload type `pt`, offering events 0-16 (RFC 4733 §7.1.1).
    pub fn telephone_event(pt: u8) -> Result<Codec, SdpError> {
        Ok(Codec::dynamic(pt, "telephone-event", 8000)?
            .with_fmtp_bytes(Bytes::from_static(b"0-16")))
    }

    /// The codec an `rtpmap` names.
    pub(crate) fn from_rtpmap(map: &RtpMap) -> Codec {
        Codec {
            payload_type: map.payload_type,
            name: map.encoding.clone(),
            clock_rate: map.clock_rate,
            channels: map.channels(),
            fmtp: None,
        }
    }

    /// This codec with `channels` channels (audio encoding parameters).
    pub fn with_channels(mut self, channels: u16) -> Codec {
        self.channels = channels;
        self
    }

    /// This codec with `fmtp` parameters (free of CR, LF and NUL).
    pub fn with_fmtp(self, params: impl Into<Bytes>) -> Result<Codec, SdpError> {
        let params = params.into();
        if !valid_value(&params) {
            return Err(SdpError::InvalidValue);
        }
        Ok(self.with_fmtp_bytes(params))
    }

    pub(crate) fn with_fmtp_bytes(mut self, params: Bytes) -> Codec {
        self.fmtp = Some(params);
        self
    }

    /// The RTP payload type.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// The encoding name as written.
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// The RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The channel count (1 unless the `rtpmap` says otherwise).
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The `fmtp` parameters.
    pub fn fmtp(&self) -> Option<&Bytes> {
        self.fmtp.as_ref()
    }

    /// Whether `other` is the same format: name, clock rate and channels (RFC 3264 §6.1).
    pub fn same_format(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// Whether the format only accompanies a media codec: DTMF events (RFC 4733) and comfort
    /// noise (RFC 3389). A stream where nothing else matches is rejected.
    pub fn is_auxiliary(&self) -> bool {
        self.name.eq_ignore_ascii_case(b"telephone-event") || self.name.eq_ignore_ascii_case(b"CN")
    }

    /// The `rtpmap` describing this codec (channels written only when not 1).
    pub fn rtpmap(&self) -> RtpMap {
        RtpMap {
            payload_type: self.payload_type,
            encoding: self.name.clone(),
            clock_rate: self.clock_rate,
            params: (self.channels != 1).then(|| Bytes::from(self.channels.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table() {
        assert_eq!(Codec::from_static(0), Some(Codec::PCMU));
        assert_eq!(Codec::from_static(8), Some(Codec::PCMA));
        assert_eq!(Codec::from_static(10).unwrap().channels(), 2);
        assert_eq!(Codec::from_static(96), None);
        assert_eq!(Codec::from_static(2), None);
        assert_eq!(Codec::well_known("g722").unwrap().payload_type(), 9);
        assert_eq!(Codec::well_known("opus"), None);
    }

    #[test]
    fn codecs_from_specs() {
        assert_eq!(Codec::from_spec("pcma"), Ok(Codec::PCMA));
        assert_eq!(Codec::from_spec("PCMU/8000"), Ok(Codec::PCMU));
        assert_eq!(Codec::from_spec("L16").unwrap().payload_type(), 11);
        assert_eq!(Codec::from_spec("L16/44100/2").unwrap().payload_type(), 10);
        let opus = Codec::from_spec("opus/48000/2").unwrap();
        assert_eq!(
            (opus.payload_type(), opus.clock_rate(), opus.channels()),
            (FIRST_DYNAMIC_PT, 48000, 2)
        );
        assert_eq!(Codec::from_spec("opus"), Err(CodecSpecError::NeedsRate));
        assert_eq!(Codec::from_spec("a b/8000"), Err(CodecSpecError::BadName));
        for bad in ["", "PCMU/x", "PCMU/8000/1/1", "PCMU/0", "PCMU/8000/0"] {
            assert_eq!(
                Codec::from_spec(bad),
                Err(CodecSpecError::Syntax),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dynamic_codecs_are_checked() {
        let opus = Codec::dynamic(111, "opus", 48000).unwrap().with_channels(2);
        assert_eq!(opus.rtpmap().to_bytes(), "111 opus/48000/2");
        assert!(opus.same_format(&Codec::dynamic(96, "OPUS", 48000).unwrap().with_channels(2)));
        assert!(!opus.same_format(&Codec::dynamic(111, "opus", 48000).unwrap()));
        assert_eq!(Codec::dynamic(128, "x", 8000), Err(SdpError::InvalidValue));
        assert_eq!(Codec::dynamic(96, "a/b", 8000), Err(SdpError::InvalidValue));
        assert_eq!(Codec::PCMU.with_fmtp("a\nb"), Err(SdpError::InvalidValue));
        let te = Codec::telephone_event(101).unwrap();
        assert_eq!(te.fmtp().unwrap(), "0-16");
        assert!(te.is_auxiliary() && !Codec::PCMA.is_auxiliary());
        assert_eq!(Codec::PCMA.rtpmap().to_bytes(), "8 PCMA/8000");
    }
}
