//! The tones of a `conference` run: talker `k` sends a sine of its own frequency, and every
//! receiver tells, frame by frame, which talkers' tones the mixer's output holds.
//!
//! Frequencies are multiples of 50 Hz, so a 20 ms frame (160 samples at 8 kHz) holds whole
//! periods of every tone: one encoded frame per talker is computed once and sent again and
//! again with no phase jump, and the Goertzel filters of different tones do not leak into
//! each other over a frame. The sample arithmetic (G.711, sine, Goertzel) is the engine's
//! ([`cpm_engine::conference::audio`]); this module only plans and judges.

use bytes::Bytes;

use super::dsp;

/// Samples per second of the G.711 streams (RFC 3551 §4.5.14).
pub const RATE: u32 = 8000;

/// Samples of a 20 ms frame.
pub const FRAME: usize = 160;

/// The most talkers a run may have: each needs a frequency of its own, at least
/// [`MIN_SPACING_HZ`] from the next, between [`LOWEST_HZ`] and 3.3 kHz.
pub const MAX_TALKERS: usize = 28;

/// The first talker's frequency.
pub const LOWEST_HZ: u32 = 400;

/// The closest two tones may be (two Goertzel bins of a 20 ms frame).
pub const MIN_SPACING_HZ: u32 = 100;

/// The widest spacing used when there are few talkers.
const MAX_SPACING_HZ: u32 = 600;

/// The band the tones are spread over, above [`LOWEST_HZ`].
const SPREAD_HZ: u32 = 2800;

/// The peak amplitude of one talker's tone at most (-20 dBov).
const MAX_AMPLITUDE: f64 = 3277.0;

/// A tone counts as present at half its sent amplitude (-6 dB) or more.
pub const PRESENT: f64 = 0.5;

/// A tone counts as audible at a tenth of its sent amplitude (-20 dB) or more: a talker's own
/// tone must stay below it in what it hears.
pub const AUDIBLE: f64 = 0.1;

/// G.711 µ-law or A-law (ITU-T G.711; RFC 3551 §4.5.14): the codecs of a conference run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU, payload type 0.
    Mu,
    /// PCMA, payload type 8.
    A,
}

impl Law {
    /// From `--codec pcmu|pcma` (case-insensitive, `/8000` allowed).
    pub fn parse(s: &str) -> Option<Law> {
        let name = s.strip_suffix("/8000").unwrap_or(s);
        if name.eq_ignore_ascii_case("pcmu") {
            Some(Law::Mu)
        } else if name.eq_ignore_ascii_case("pcma") {
            Some(Law::A)
        } else {
            None
        }
    }

    /// The static payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// The SDP codec.
    pub fn sdp_codec(self) -> cpm_engine::sdp::Codec {
        match self {
            Law::Mu => cpm_engine::sdp::Codec::PCMU,
            Law::A => cpm_engine::sdp::Codec::PCMA,
        }
    }

    /// `PCMU` or `PCMA`.
    pub fn name(self) -> &'static str {
        match self {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }
}

/// Which talkers' tones one received frame holds, one bit per talker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heard {
    /// Tones at [`PRESENT`] of their level or more.
    pub present: u32,
    /// Tones at [`AUDIBLE`] of their level or more.
    pub audible: u32,
}

impl Heard {
    /// Whether talker `k`'s tone is present.
    pub fn has(&self, k: usize) -> bool {
        self.present & (1 << k) != 0
    }

    /// Whether talker `k`'s tone can be heard at all.
    pub fn hears(&self, k: usize) -> bool {
        self.audible & (1 << k) != 0
    }
}

/// The talkers' frequencies and level, their encoded frames, and the detector.
#[derive(Debug, Clone)]
pub struct TonePlan {
    law: Law,
    freqs: Vec<u32>,
    amplitude: f64,
    frames: Vec<Bytes>,
    silence: Bytes,
}

impl TonePlan {
    /// The plan of `talkers` talkers (at most [`MAX_TALKERS`]) sending `law`: frequencies
    /// `LOWEST_HZ + k * spacing`, the spacing 2.8 kHz / talkers rounded down to 50 Hz
    /// (100..=600 Hz); amplitudes such that every tone summed stays below full scale.
    pub fn new(talkers: usize, law: Law) -> Result<TonePlan, String> {
        if talkers > MAX_TALKERS {
            return Err(format!(
                "--talkers {talkers}: at most {MAX_TALKERS} (one tone each, {MIN_SPACING_HZ} Hz apart)"
            ));
        }
        let spacing = match talkers {
            0 | 1 => MAX_SPACING_HZ,
            t => (SPREAD_HZ / t as u32 / 50 * 50).clamp(MIN_SPACING_HZ, MAX_SPACING_HZ),
        };
        let freqs: Vec<u32> = (0..talkers as u32)
            .map(|k| LOWEST_HZ + k * spacing)
            .collect();
        let amplitude = MAX_AMPLITUDE.min(0.8 * f64::from(i16::MAX) / talkers.max(1) as f64);
        let frames = freqs
            .iter()
            .map(|&f| {
                let pcm = dsp::sine_frame(f, amplitude);
                Bytes::from(dsp::encode(law, &pcm))
            })
            .collect();
        let silence = Bytes::from(dsp::encode(law, &[0; FRAME]));
        Ok(TonePlan {
            law,
            freqs,
            amplitude,
            frames,
            silence,
        })
    }

    /// The codec.
    pub fn law(&self) -> Law {
        self.law
    }

    /// Talkers.
    pub fn talkers(&self) -> usize {
        self.freqs.len()
    }

    /// Talker `k`'s frequency in Hz.
    pub fn freq(&self, k: usize) -> Option<u32> {
        self.freqs.get(k).copied()
    }

    /// Every talker's frequency.
    pub fn freqs(&self) -> &[u32] {
        &self.freqs
    }

    /// The peak amplitude of each tone (linear, full scale 32767).
    pub fn amplitude(&self) -> f64 {
        self.amplitude
    }

    /// The encoded 20 ms frame of talker `k`'s tone (the same for every frame).
    pub fn tone(&self, k: usize) -> Option<&Bytes> {
        self.frames.get(k)
    }

    /// An encoded 20 ms frame of silence.
    pub fn silence(&self) -> &Bytes {
        &self.silence
    }

    /// Which tones an encoded frame holds; `pcm` is scratch space for the decoded samples.
    pub fn hear(&self, payload: &[u8], pcm: &mut Vec<i16>) -> Heard {
        pcm.clear();
        dsp::decode(self.law, payload, pcm);
        self.hear_pcm(pcm)
    }

    /// Which tones decoded samples hold.
    pub fn hear_pcm(&self, pcm: &[i16]) -> Heard {
        let mut heard = Heard::default();
        if pcm.is_empty() {
            return heard;
        }
        for (k, &f) in self.freqs.iter().enumerate() {
            let level = dsp::tone_amplitude(pcm, f) / self.amplitude;
            if level >= PRESENT {
                heard.present |= 1 << k;
            }
            if level >= AUDIBLE {
                heard.audible |= 1 << k;
            }
        }
        heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_are_spread_and_distinct() {
        let p = TonePlan::new(3, Law::Mu).unwrap();
        assert_eq!(p.freqs(), &[400, 1000, 1600]);
        let p = TonePlan::new(20, Law::A).unwrap();
        assert_eq!(p.freq(0), Some(400));
        assert_eq!(p.freq(19), Some(400 + 19 * 100));
        let p = TonePlan::new(MAX_TALKERS, Law::Mu).unwrap();
        assert!(p.freqs().iter().all(|f| f % 50 == 0 && *f <= 3300));
        assert!(TonePlan::new(MAX_TALKERS + 1, Law::Mu).is_err());
        // Every tone summed stays below full scale.
        assert!(p.amplitude() * MAX_TALKERS as f64 <= f64::from(i16::MAX));
    }

    #[test]
    fn a_mix_of_two_tones_is_heard_as_those_two() {
        for law in [Law::Mu, Law::A] {
            let p = TonePlan::new(3, law).unwrap();
            let mut pcm = Vec::new();
            let mut mix = vec![0i32; FRAME];
            for k in [0, 2] {
                pcm.clear();
                dsp::decode(law, p.tone(k).unwrap(), &mut pcm);
                assert_eq!(pcm.len(), FRAME);
                for (m, s) in mix.iter_mut().zip(&pcm) {
                    *m += i32::from(*s);
                }
            }
            let mix: Vec<i16> = mix.iter().map(|s| *s as i16).collect();
            let encoded = dsp::encode(law, &mix);
            let heard = p.hear(&encoded, &mut pcm);
            assert!(heard.has(0) && heard.has(2) && !heard.hears(1), "{heard:?}");
            let quiet = p.hear(p.silence(), &mut pcm);
            assert_eq!(quiet, Heard::default());
            // A tone at a twentieth of its level is below "audible".
            let faint: Vec<i16> = dsp::sine_frame(p.freq(1).unwrap(), p.amplitude() / 20.0);
            assert!(!p.hear_pcm(&faint).hears(1));
            // At a third it is audible, not present.
            let third: Vec<i16> = dsp::sine_frame(p.freq(1).unwrap(), p.amplitude() / 3.0);
            let h = p.hear_pcm(&third);
            assert!(h.hears(1) && !h.has(1), "{h:?}");
        }
    }

    #[test]
    fn codecs_by_name() {
        assert_eq!(Law::parse("pcmu"), Some(Law::Mu));
        assert_eq!(Law::parse("PCMA/8000"), Some(Law::A));
        assert_eq!(Law::parse("g722"), None);
        assert_eq!(Law::A.payload_type(), 8);
        assert_eq!(Law::Mu.sdp_codec().payload_type(), 0);
    }
}
