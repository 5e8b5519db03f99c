//! Frame energy and talker detection with hysteresis.
//!
//! Levels are in dBov: decibels relative to the overload point, where 0 dBov is the RMS of a
//! full-scale square wave (RFC 6464 §3's convention), so a full-scale sine is about -3 dBov.
//! Per frame the detector compares the mean square with two thresholds kept as linear energies
//! (no logarithm per frame).

use super::FRAME_SAMPLES;

/// The RMS of a full-scale square wave: 0 dBov.
pub const FULL_SCALE: f64 = 32767.0;

/// The mean square of `samples` (0 for an empty slice), at most 2^30.
pub fn mean_square(samples: &[i16]) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    let sum: u64 = samples
        .iter()
        .map(|&s| {
            let s = i32::from(s);
            (s * s) as u32 as u64
        })
        .sum();
    (sum / samples.len() as u64) as u32
}

/// The level in dBov of a mean square energy (-inf dBov reported as -127, RFC 6464's floor).
pub fn dbov(mean_square: u32) -> f64 {
    if mean_square == 0 {
        return -127.0;
    }
    (10.0 * (f64::from(mean_square) / (FULL_SCALE * FULL_SCALE)).log10()).max(-127.0)
}

/// The mean square energy of a level in dBov (the inverse of [`dbov`]).
pub fn energy_of_dbov(level: f64) -> u32 {
    let e = FULL_SCALE * FULL_SCALE * 10f64.powf(level / 10.0);
    e.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Thresholds of a [`TalkerDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TalkerConfig {
    /// Talk starts after `start_frames` consecutive frames above this level (default -40 dBov).
    pub start_dbov: f64,
    /// Consecutive loud frames to start (default 2, i.e. 40 ms).
    pub start_frames: u16,
    /// Talk stops after `stop_frames` consecutive frames below this lower level (default -48
    /// dBov); frames between the two levels keep the current state.
    pub stop_dbov: f64,
    /// Consecutive quiet frames to stop (default 15, i.e. a 300 ms hangover that bridges the
    /// pauses between words).
    pub stop_frames: u16,
}

impl Default for TalkerConfig {
    fn default() -> Self {
        TalkerConfig {
            start_dbov: -40.0,
            start_frames: 2,
            stop_dbov: -48.0,
            stop_frames: 15,
        }
    }
}

/// Energy-based talker detection with hysteresis: two thresholds and two frame counts.
#[derive(Debug, Clone)]
pub struct TalkerDetector {
    start_energy: u32,
    stop_energy: u32,
    start_frames: u16,
    stop_frames: u16,
    talking: bool,
    run: u16,
    last_energy: u32,
}

impl TalkerDetector {
    /// A detector that is not talking.
    pub fn new(config: &TalkerConfig) -> Self {
        TalkerDetector {
            start_energy: energy_of_dbov(config.start_dbov),
            stop_energy: energy_of_dbov(config.stop_dbov).min(energy_of_dbov(config.start_dbov)),
            start_frames: config.start_frames.max(1),
            stop_frames: config.stop_frames.max(1),
            talking: false,
            run: 0,
            last_energy: 0,
        }
    }

    /// Feeds one frame's mean square energy; returns [`Self::is_talking`] after it.
    pub fn update(&mut self, energy: u32) -> bool {
        self.last_energy = energy;
        let toward_change = if self.talking {
            energy < self.stop_energy
        } else {
            energy > self.start_energy
        };
        if toward_change {
            self.run += 1;
            let needed = if self.talking {
                self.stop_frames
            } else {
                self.start_frames
            };
            if self.run >= needed {
                self.talking = !self.talking;
                self.run = 0;
            }
        } else {
            self.run = 0;
        }
        self.talking
    }

    /// Feeds one frame of samples (see [`Self::update`]).
    pub fn update_frame(&mut self, frame: &[i16; FRAME_SAMPLES]) -> bool {
        self.update(mean_square(frame))
    }

    /// True while the source is taken as talking.
    pub fn is_talking(&self) -> bool {
        self.talking
    }

    /// The mean square energy of the last frame fed.
    pub fn last_energy(&self) -> u32 {
        self.last_energy
    }

    /// Forgets the state (e.g. when the source is replaced).
    pub fn reset(&mut self) {
        self.talking = false;
        self.run = 0;
        self.last_energy = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_dbov() {
        assert_eq!(dbov(0), -127.0);
        // A full-scale square wave is 0 dBov; a full-scale sine about -3 dBov.
        assert!(dbov(mean_square(&[32767, -32767, 32767, -32767])).abs() < 0.01);
        let sine: Vec<i16> = (0..160)
            .map(|i| (32767.0 * (f64::from(i) * 0.3).sin()) as i16)
            .collect();
        assert!((dbov(mean_square(&sine)) + 3.0).abs() < 0.3);
        assert!((dbov(energy_of_dbov(-40.0)) + 40.0).abs() < 0.01);
        assert_eq!(mean_square(&[]), 0);
        assert_eq!(mean_square(&[i16::MIN]), 1 << 30);
    }

    #[test]
    fn hysteresis_needs_runs_and_keeps_state_between_thresholds() {
        let cfg = TalkerConfig::default();
        let mut d = TalkerDetector::new(&cfg);
        let loud = energy_of_dbov(-20.0);
        let between = energy_of_dbov(-44.0);
        let quiet = energy_of_dbov(-60.0);
        assert!(!d.update(loud), "one loud frame is not enough");
        assert!(!d.update(quiet));
        assert!(!d.update(loud));
        assert!(d.update(loud), "two consecutive loud frames start");
        // Between the thresholds: still talking, however long.
        for _ in 0..100 {
            assert!(d.update(between));
        }
        for _ in 0..14 {
            assert!(d.update(quiet));
        }
        assert!(d.update(loud), "a loud frame resets the quiet run");
        for _ in 0..14 {
            assert!(d.update(quiet));
        }
        assert!(!d.update(quiet), "15 quiet frames stop");
        // Between the thresholds: still silent.
        for _ in 0..10 {
            assert!(!d.update(between));
        }
        assert!(!d.is_talking());
        assert_eq!(d.last_energy(), between);
    }
}
