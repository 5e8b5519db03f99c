//! The sample arithmetic of the `conference` scenario, all of it the engine's
//! ([`cpm_engine::conference::audio`]: its G.711 codec, sine generator and Goertzel filter),
//! so that the load generator judges the mixer with the same reference the mixer's own tests
//! use.

use cpm_engine::conference::audio::{tone, Codec};

use super::tones::{Law, FRAME};

/// The engine's codec of `law`.
fn codec(law: Law) -> Codec {
    match law {
        Law::Mu => Codec::Pcmu,
        Law::A => Codec::Pcma,
    }
}

/// One 20 ms frame of a sine at `freq_hz` with peak `amplitude`, starting at phase 0 (with a
/// frequency that is a multiple of 50 Hz, every frame is the same).
pub fn sine_frame(freq_hz: u32, amplitude: f64) -> Vec<i16> {
    let mut sine = tone::Sine::with_amplitude(f64::from(freq_hz), amplitude);
    let mut out = vec![0; FRAME];
    sine.fill(&mut out);
    out
}

/// `pcm` encoded in `law`, one byte a sample.
pub fn encode(law: Law, pcm: &[i16]) -> Vec<u8> {
    let mut out = vec![0; pcm.len()];
    codec(law).encode(pcm, &mut out);
    out
}

/// Appends the samples of a `law` payload to `pcm`.
pub fn decode(law: Law, payload: &[u8], pcm: &mut Vec<i16>) {
    let at = pcm.len();
    pcm.resize(at + payload.len(), 0);
    let n = codec(law).decode(payload, &mut pcm[at..]);
    pcm.truncate(at + n);
}

/// The peak amplitude of the sine at `freq_hz` in `pcm` (Goertzel: a sine of peak `A` over
/// `N` samples on a DFT bin gives `|X| = A·N/2`).
pub fn tone_amplitude(pcm: &[i16], freq_hz: u32) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let power = tone::goertzel_power(pcm, f64::from(freq_hz)).max(0.0);
    2.0 * power.sqrt() / pcm.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_measured_at_its_amplitude_through_g711() {
        for law in [Law::Mu, Law::A] {
            let pcm = sine_frame(1000, 3000.0);
            let mut back = Vec::new();
            decode(law, &encode(law, &pcm), &mut back);
            assert_eq!(back.len(), FRAME);
            let a = tone_amplitude(&back, 1000);
            assert!((a - 3000.0).abs() < 150.0, "{law:?}: {a}");
            assert!(tone_amplitude(&back, 1600) < 100.0);
        }
        assert_eq!(tone_amplitude(&[], 400), 0.0);
    }
}
