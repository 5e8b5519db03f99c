//! The audio codecs of the mixer: G.711 µ-law and A-law and L16 at 8 kHz mono, 20 ms frames.

use super::{g711, l16, FRAME_SAMPLES, SAMPLE_RATE};

/// A codec the mixer decodes and encodes (RFC 3551 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, `PCMU/8000`, static payload type 0 (RFC 3551 §4.5.14).
    Pcmu,
    /// G.711 A-law, `PCMA/8000`, static payload type 8 (RFC 3551 §4.5.14).
    Pcma,
    /// 16-bit linear big-endian, `L16/8000/1` on a dynamic payload type (RFC 3551 §4.5.11).
    L16,
}

/// Why an `rtpmap` cannot be mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoding name is not PCMU, PCMA or L16.
    UnsupportedEncoding,
    /// The clock rate is not 8000 Hz (the mixer runs at 8 kHz).
    UnsupportedRate(u32),
    /// More than one channel (the mixer is mono).
    UnsupportedChannels(u16),
}

impl CodecError {
    /// A reason phrase for logs and answers (488 Not Acceptable Here).
    pub fn reason(&self) -> &'static str {
        match self {
            CodecError::UnsupportedEncoding => "encoding not supported by the mixer",
            CodecError::UnsupportedRate(_) => "the mixer runs at 8000 Hz only",
            CodecError::UnsupportedChannels(_) => "the mixer is mono only",
        }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::UnsupportedRate(r) => write!(f, "{} (got {r} Hz)", self.reason()),
            CodecError::UnsupportedChannels(c) => write!(f, "{} (got {c})", self.reason()),
            CodecError::UnsupportedEncoding => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for CodecError {}

impl Codec {
    /// All codecs, in the order of [`Self::index`].
    pub const ALL: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::L16];

    /// The codec an SDP `a=rtpmap` line names (RFC 4566 §6; encoding names are
    /// case-insensitive), or `None` when the mixer cannot use it; see [`Self::try_from_rtpmap`].
    pub fn from_rtpmap(encoding_name: &str, clock_rate: u32, channels: u16) -> Option<Codec> {
        Codec::try_from_rtpmap(encoding_name, clock_rate, channels).ok()
    }

    /// Like [`Self::from_rtpmap`], saying why a format is refused.
    pub fn try_from_rtpmap(
        encoding_name: &str,
        clock_rate: u32,
        channels: u16,
    ) -> Result<Codec, CodecError> {
        let codec = if encoding_name.eq_ignore_ascii_case("PCMU") {
            Codec::Pcmu
        } else if encoding_name.eq_ignore_ascii_case("PCMA") {
            Codec::Pcma
        } else if encoding_name.eq_ignore_ascii_case("L16") {
            return Codec::l16(clock_rate).and_then(|c| c.check_channels(channels));
        } else {
            return Err(CodecError::UnsupportedEncoding);
        };
        if clock_rate != SAMPLE_RATE {
            return Err(CodecError::UnsupportedRate(clock_rate));
        }
        codec.check_channels(channels)
    }

    /// L16 at `rate` Hz: only 8000 is supported in this first cut (no resampling).
    pub fn l16(rate: u32) -> Result<Codec, CodecError> {
        if rate == SAMPLE_RATE {
            Ok(Codec::L16)
        } else {
            Err(CodecError::UnsupportedRate(rate))
        }
    }

    fn check_channels(self, channels: u16) -> Result<Codec, CodecError> {
        if channels == 1 {
            Ok(self)
        } else {
            Err(CodecError::UnsupportedChannels(channels))
        }
    }

    /// The static payload type (RFC 3551 §6): 0 and 8; `None` for L16 at 8 kHz, which needs a
    /// dynamic one (96-127) from the SDP.
    pub fn default_pt(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::L16 => None,
        }
    }

    /// The encoding name for an `rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::L16 => "L16",
        }
    }

    /// Position in [`Self::ALL`] (a small array index for per-codec state).
    pub fn index(self) -> usize {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
            Codec::L16 => 2,
        }
    }

    /// Bytes per sample (1 for G.711, 2 for L16).
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Codec::Pcmu | Codec::Pcma => 1,
            Codec::L16 => 2,
        }
    }

    /// The payload size of one 20 ms frame.
    pub fn frame_bytes(self) -> usize {
        FRAME_SAMPLES * self.bytes_per_sample()
    }

    /// The number of samples `payload` carries.
    pub fn samples_in(self, payload: &[u8]) -> usize {
        payload.len() / self.bytes_per_sample()
    }

    /// Decodes `payload` into `out`, returning the samples written (at most `out.len()`).
    pub fn decode(self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = self.samples_in(payload).min(out.len());
        match self {
            Codec::Pcmu => g711::ulaw_decode(&payload[..n], &mut out[..n]),
            Codec::Pcma => g711::alaw_decode(&payload[..n], &mut out[..n]),
            Codec::L16 => return l16::decode(payload, out),
        }
        n
    }

    /// The mean square of the samples `payload` carries (see [`super::talker::mean_square`]),
    /// without decoding G.711.
    pub fn mean_square(self, payload: &[u8]) -> u32 {
        match self {
            Codec::Pcmu => g711::ulaw_mean_square(payload),
            Codec::Pcma => g711::alaw_mean_square(payload),
            Codec::L16 => {
                let mut pcm = [0; FRAME_SAMPLES];
                let n = l16::decode(payload, &mut pcm);
                super::talker::mean_square(&pcm[..n])
            }
        }
    }

    /// Encodes `samples` into `out`, which must hold `samples.len() * bytes_per_sample()`.
    pub fn encode(self, samples: &[i16], out: &mut [u8]) {
        match self {
            Codec::Pcmu => g711::ulaw_encode(samples, out),
            Codec::Pcma => g711::alaw_encode(samples, out),
            Codec::L16 => l16::encode(samples, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_names_map_to_codecs() {
        assert_eq!(Codec::from_rtpmap("PCMU", 8000, 1), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("pcma", 8000, 1), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("L16", 8000, 1), Some(Codec::L16));
        assert_eq!(Codec::from_rtpmap("opus", 48000, 2), None);
        assert_eq!(
            Codec::try_from_rtpmap("L16", 44100, 1),
            Err(CodecError::UnsupportedRate(44100))
        );
        assert_eq!(
            Codec::try_from_rtpmap("L16", 8000, 2),
            Err(CodecError::UnsupportedChannels(2))
        );
        assert_eq!(
            Codec::try_from_rtpmap("PCMU", 16000, 1),
            Err(CodecError::UnsupportedRate(16000))
        );
        assert_eq!(
            Codec::l16(16000).unwrap_err().to_string(),
            "the mixer runs at 8000 Hz only (got 16000 Hz)"
        );
        assert_eq!(Codec::Pcmu.default_pt(), Some(0));
        assert_eq!(Codec::Pcma.default_pt(), Some(8));
        assert_eq!(Codec::L16.default_pt(), None);
        for (i, c) in Codec::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn frames_encode_and_decode_per_codec() {
        let samples: Vec<i16> = (0..FRAME_SAMPLES as i16).map(|i| i * 200 - 16000).collect();
        for codec in Codec::ALL {
            let mut bytes = vec![0u8; codec.frame_bytes()];
            codec.encode(&samples, &mut bytes);
            let mut back = [0i16; FRAME_SAMPLES];
            assert_eq!(codec.decode(&bytes, &mut back), FRAME_SAMPLES);
            for (a, b) in samples.iter().zip(&back) {
                assert!((a - b).abs() <= 8 + a.abs() / 32, "{codec:?}: {a} -> {b}");
            }
        }
        assert_eq!(Codec::L16.frame_bytes(), 320);
        let mut bytes = vec![0u8; 320];
        Codec::L16.encode(&[1000; 160], &mut bytes);
        assert_eq!(Codec::L16.mean_square(&bytes), 1_000_000);
        assert_eq!(Codec::Pcma.samples_in(&[0; 80]), 80);
    }
}
