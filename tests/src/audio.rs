//! Checking recorded audio: a small WAV reader (16-bit PCM, what baresip's `sndfile` module
//! writes), a Goertzel filter, and a tone detector that says whether a recording holds a given
//! sine tone rather than silence, noise or another tone.

use std::path::Path;

/// A decoded WAV file: 16-bit PCM samples, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Samples per second.
    pub rate: u32,
    /// Channel count.
    pub channels: u16,
    /// The samples, `channels` per frame.
    pub samples: Vec<i16>,
}

impl Wav {
    /// Reads and parses a WAV file.
    pub fn read(path: &Path) -> Result<Wav, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Wav::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a RIFF/WAVE file with a PCM (format 1) 16-bit `fmt ` chunk, skipping chunks it
    /// does not know. A `data` chunk longer than the file (a writer that never finished its
    /// header) is cut to what is there.
    pub fn parse(b: &[u8]) -> Result<Wav, String> {
        if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
            return Err("not a RIFF/WAVE file".into());
        }
        let mut fmt: Option<(u16, u32, u16)> = None;
        let mut pos = 12;
        while pos + 8 <= b.len() {
            let id = &b[pos..pos + 4];
            let len = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]);
            let body_start = pos + 8;
            let body_end = body_start.saturating_add(len as usize).min(b.len());
            let body = &b[body_start..body_end];
            match id {
                b"fmt " => {
                    if body.len() < 16 {
                        return Err("short fmt chunk".into());
                    }
                    let format = u16::from_le_bytes([body[0], body[1]]);
                    let channels = u16::from_le_bytes([body[2], body[3]]);
                    let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                    let bits = u16::from_le_bytes([body[14], body[15]]);
                    if format != 1 || bits != 16 {
                        return Err(format!("format {format} with {bits} bits, not 16-bit PCM"));
                    }
                    if channels == 0 || rate == 0 {
                        return Err("zero channels or sample rate".into());
                    }
                    fmt = Some((channels, rate, bits));
                }
                b"data" => {
                    let (channels, rate, _) = fmt.ok_or("data chunk before fmt chunk")?;
                    let samples = body
                        .chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]))
                        .collect();
                    return Ok(Wav {
                        rate,
                        channels,
                        samples,
                    });
                }
                _ => {}
            }
            // Chunks are padded to an even length (RIFF).
            pos = body_start.saturating_add(len as usize + (len as usize & 1));
        }
        Err("no data chunk".into())
    }

    /// The first channel, as `f64` samples.
    pub fn mono(&self) -> Vec<f64> {
        self.samples
            .iter()
            .step_by(usize::from(self.channels))
            .map(|&s| f64::from(s))
            .collect()
    }

    /// The duration of the recording.
    pub fn duration(&self) -> std::time::Duration {
        let frames = self.samples.len() / usize::from(self.channels);
        std::time::Duration::from_secs_f64(frames as f64 / f64::from(self.rate))
    }

    /// Encodes 16-bit PCM as a WAV file (for tests, and for `aufile` sources).
    pub fn to_bytes(&self) -> Vec<u8> {
        let data_len = (self.samples.len() * 2) as u32;
        let block = u32::from(self.channels) * 2;
        let mut b = Vec::with_capacity(44 + data_len as usize);
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&self.channels.to_le_bytes());
        b.extend_from_slice(&self.rate.to_le_bytes());
        b.extend_from_slice(&(self.rate * block).to_le_bytes());
        b.extend_from_slice(&(block as u16).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for s in &self.samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }
}

/// `amplitude · sin(2π·freq·t)` sampled at `rate` for `secs` seconds (mono).
pub fn sine(rate: u32, freq: f64, amplitude: f64, secs: f64) -> Vec<i16> {
    let n = (f64::from(rate) * secs) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// The squared amplitude of the `freq` component of `block` (Goertzel's algorithm: one DFT
/// term evaluated at exactly `freq`, which need not fall on a bin). A full-scale-`A` sine at
/// `freq` gives about `A²`.
pub fn goertzel(block: &[f64], rate: u32, freq: f64) -> f64 {
    if block.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = block.len() as f64;
    power * 4.0 / (n * n)
}

/// The root mean square of `block`.
pub fn rms(block: &[f64]) -> f64 {
    if block.is_empty() {
        return 0.0;
    }
    (block.iter().map(|x| x * x).sum::<f64>() / block.len() as f64).sqrt()
}

/// What [`detect_tone`] found, block by block (20 ms blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct ToneReport {
    /// The frequency looked for.
    pub tone: f64,
    /// Blocks analysed.
    pub blocks: usize,
    /// Blocks louder than the silence threshold.
    pub loud: usize,
    /// Loud blocks where the tone is at least [`DOMINANCE`] times stronger (in power) than
    /// every compared frequency.
    pub toned: usize,
    /// The RMS of the whole recording.
    pub rms: f64,
    /// The weakest tone-to-other power ratio seen in a toned block (∞ when none).
    pub min_ratio: f64,
}

impl ToneReport {
    /// Seconds of toned blocks.
    pub fn toned_secs(&self) -> f64 {
        self.toned as f64 * BLOCK_SECS
    }
}

/// Blocks quieter than this RMS count as silence (of 32767; a -40 dBFS floor).
pub const SILENCE_RMS: f64 = 330.0;

/// How much stronger (power ratio, 20 dB) the tone must be than every compared frequency.
pub const DOMINANCE: f64 = 100.0;

/// Block length of [`detect_tone`] in seconds (one 20 ms packet of audio).
pub const BLOCK_SECS: f64 = 0.020;

/// Looks for the sine `tone` (Hz) in `samples` (mono, `rate` Hz), 20 ms at a time, comparing
/// its power with that at each of `others` (Hz).
pub fn detect_tone(samples: &[f64], rate: u32, tone: f64, others: &[f64]) -> ToneReport {
    let block_len = ((f64::from(rate) * BLOCK_SECS) as usize).max(1);
    let mut report = ToneReport {
        tone,
        blocks: 0,
        loud: 0,
        toned: 0,
        rms: rms(samples),
        min_ratio: f64::INFINITY,
    };
    for block in samples.chunks_exact(block_len) {
        report.blocks += 1;
        if rms(block) < SILENCE_RMS {
            continue;
        }
        report.loud += 1;
        let p = goertzel(block, rate, tone);
        let worst = others
            .iter()
            .map(|&f| goertzel(block, rate, f))
            .fold(0.0f64, f64::max);
        let ratio = if worst > 0.0 {
            p / worst
        } else {
            f64::INFINITY
        };
        if ratio >= DOMINANCE {
            report.toned += 1;
            report.min_ratio = report.min_ratio.min(ratio);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[i16]) -> Vec<f64> {
        v.iter().map(|&s| f64::from(s)).collect()
    }

    #[test]
    fn goertzel_measures_the_amplitude_at_its_frequency() {
        let s = f(&sine(8000, 440.0, 10_000.0, 0.02));
        let at = goertzel(&s, 8000, 440.0);
        assert!(
            (at.sqrt() - 10_000.0).abs() < 200.0,
            "amplitude {}",
            at.sqrt()
        );
        assert!(goertzel(&s, 8000, 1000.0).sqrt() < 300.0);
        assert_eq!(goertzel(&[], 8000, 440.0), 0.0);
    }

    #[test]
    fn detects_a_tone_and_tells_two_apart() {
        let a = f(&sine(8000, 440.0, 8_000.0, 1.0));
        let r = detect_tone(&a, 8000, 440.0, &[1000.0, 880.0]);
        assert_eq!((r.blocks, r.loud, r.toned), (50, 50, 50), "{r:?}");
        assert!((r.toned_secs() - 1.0).abs() < 1e-9);
        let r = detect_tone(&a, 8000, 1000.0, &[440.0]);
        assert_eq!((r.loud, r.toned), (50, 0), "{r:?}");
    }

    #[test]
    fn silence_and_noise_are_not_a_tone() {
        let silence = vec![0.0; 8000];
        let r = detect_tone(&silence, 8000, 440.0, &[1000.0]);
        assert_eq!((r.blocks, r.loud, r.toned), (50, 0, 0));
        // A deterministic pseudo-random noise (xorshift) has no dominant frequency.
        let mut x: u32 = 0x1234_5678;
        let noise: Vec<f64> = (0..8000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                f64::from((x >> 16) as i16)
            })
            .collect();
        let r = detect_tone(&noise, 8000, 440.0, &[1000.0, 697.0, 1633.0]);
        assert_eq!(r.loud, 50);
        assert!(r.toned < 5, "{r:?}");
    }

    #[test]
    fn wav_round_trip_and_lenient_data_length() {
        let w = Wav {
            rate: 8000,
            channels: 1,
            samples: sine(8000, 1000.0, 5000.0, 0.1),
        };
        let mut bytes = w.to_bytes();
        assert_eq!(Wav::parse(&bytes).unwrap(), w);
        assert_eq!(w.duration(), std::time::Duration::from_millis(100));
        // An unfinished header (data length larger than the file) keeps what is there.
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Wav::parse(&bytes).unwrap(), w);
        assert!(Wav::parse(b"RIFF\0\0\0\0WAVE").is_err());
        assert!(Wav::parse(b"not a wav").is_err());
    }

    #[test]
    fn wav_skips_unknown_chunks_and_takes_the_first_channel() {
        let w = Wav {
            rate: 8000,
            channels: 2,
            samples: vec![1, -1, 2, -2, 3, -3],
        };
        let plain = w.to_bytes();
        // Insert an odd-length LIST chunk (padded) between fmt and data.
        let mut b = plain[..36].to_vec();
        b.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        b.extend_from_slice(&plain[36..]);
        let parsed = Wav::parse(&b).unwrap();
        assert_eq!(parsed, w);
        assert_eq!(parsed.mono(), vec![1.0, 2.0, 3.0]);
    }
}
