//! Test signals for mixer tests in this crate, the actors and the load generator: a sine
//! generator at a frequency and level, and the Goertzel algorithm to measure the level of one
//! frequency in a block of samples ("this output holds 440 Hz at about -20 dBov and no 620 Hz").
//!
//! Levels are dBov as in [`super::talker`] (0 dBov = full-scale square wave, so a sine at
//! `level` dBov has a peak of `32767 · √2 · 10^(level/20)`).

use std::f64::consts::{PI, SQRT_2};

use super::talker::FULL_SCALE;
use super::{FRAME_SAMPLES, SAMPLE_RATE};

/// The peak amplitude of a sine whose level is `level` dBov.
pub fn sine_amplitude(level: f64) -> f64 {
    FULL_SCALE * SQRT_2 * 10f64.powf(level / 20.0)
}

/// A continuous sine wave at 8 kHz, generated frame after frame without phase jumps.
#[derive(Debug, Clone)]
pub struct Sine {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl Sine {
    /// A sine at `freq_hz` and `level` dBov; above about -3 dBov its peaks clip to the 16-bit
    /// range.
    pub fn new(freq_hz: f64, level: f64) -> Self {
        Sine {
            step: 2.0 * PI * freq_hz / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: sine_amplitude(level),
        }
    }

    /// A sine with the given peak amplitude (e.g. 32767 for full scale).
    pub fn with_amplitude(freq_hz: f64, amplitude: f64) -> Self {
        Sine {
            amplitude,
            ..Sine::new(freq_hz, 0.0)
        }
    }

    /// Writes the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for o in out {
            let v = (self.amplitude * self.phase.sin()).round();
            *o = v.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
            self.phase += self.step;
            if self.phase > 2.0 * PI {
                self.phase -= 2.0 * PI;
            }
        }
    }

    /// The next 20 ms frame.
    pub fn frame(&mut self) -> [i16; FRAME_SAMPLES] {
        let mut f = [0; FRAME_SAMPLES];
        self.fill(&mut f);
        f
    }
}

/// The squared magnitude `|X(f)|²` of the DFT of `samples` at `freq_hz` (Goertzel).
pub fn goertzel_power(samples: &[i16], freq_hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq_hz / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The level in dBov of the sine component at `freq_hz` in `samples` (-127 if absent). Exact
/// when `freq_hz · samples.len() / 8000` is a whole number (the tone falls on a DFT bin);
/// otherwise leakage lowers it.
pub fn goertzel_dbov(samples: &[i16], freq_hz: f64) -> f64 {
    if samples.is_empty() {
        return -127.0;
    }
    let n = samples.len() as f64;
    // A sine of peak A gives |X| = A·N/2; its mean square is A²/2 = 2|X|²/N².
    let mean_square = 2.0 * goertzel_power(samples, freq_hz) / (n * n);
    if mean_square <= 0.0 {
        return -127.0;
    }
    (10.0 * (mean_square / (FULL_SCALE * FULL_SCALE)).log10()).max(-127.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_tone_at_its_level_and_nothing_else() {
        let mut s = Sine::new(440.0, -20.0);
        let mut buf = vec![0i16; 800];
        for chunk in buf.chunks_mut(FRAME_SAMPLES) {
            chunk.copy_from_slice(&s.frame());
        }
        let at = goertzel_dbov(&buf, 440.0);
        assert!((at + 20.0).abs() < 0.1, "440 Hz at {at}");
        assert!(goertzel_dbov(&buf, 620.0) < -80.0);
        assert!(
            (super::super::talker::dbov(super::super::talker::mean_square(&buf)) + 20.0).abs()
                < 0.1
        );
        assert_eq!(goertzel_dbov(&[0; 800], 440.0), -127.0);
    }

    #[test]
    fn amplitude_and_clipping() {
        assert!((sine_amplitude(-20.0) - 4633.8).abs() < 0.5);
        let mut s = Sine::with_amplitude(1000.0, 40000.0);
        let f = s.frame();
        assert_eq!(*f.iter().max().unwrap(), i16::MAX);
        assert_eq!(*f.iter().min().unwrap(), i16::MIN);
    }
}
