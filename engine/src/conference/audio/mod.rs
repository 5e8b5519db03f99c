//! The conference audio engine (issue 6, "Media in conferences"): codecs, per-participant
//! adaptive jitter buffers with loss concealment, talker detection and the mix-minus
//! [`Mixer`], sans-IO.
//!
//! Everything runs at 8 kHz mono in 20 ms frames of 160 samples. The media plane feeds each
//! participant's RTP packets in as they arrive ([`Mixer::push_rtp`], with their arrival time)
//! and calls [`Mixer::tick`] every 20 ms; the tick returns one ready RTP packet per participant
//! to send, the talkers and the active speaker.
//!
//! ```text
//!   RTP in ─► push_rtp ─► JitterBuffer (per participant, encoded payloads)
//!   tick(now) ─► pop + decode + talker detection ─► Σ talkers (i32) ─► per codec: encode once
//!                                                  └► per talker: Σ − own, encoded alone
//!             ─► one arena of RTP packets (header + payload) ─► TickOutput
//! ```
//!
//! - [`g711`], [`l16`], [`Codec`]: the codecs (ITU-T G.711, RFC 3551 §4.5.11/§4.5.14).
//! - [`jitter`]: the adaptive jitter buffer and concealment.
//! - [`talker`]: frame energy in dBov and talker detection with hysteresis.
//! - [`mixer`]: the mix-minus mixer.
//! - [`tone`]: sine generator and Goertzel detector for tests here and in other crates.

mod codec;
pub mod g711;
pub mod jitter;
pub mod l16;
pub mod mixer;
pub mod talker;
pub mod tone;

use std::time::Duration;

pub use codec::{Codec, CodecError};
pub use jitter::{Frame, FrameKind, JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
pub use mixer::{Mixer, MixerConfig, MixerError, OutPacket, ParticipantStats, TickOutput};
pub use talker::{TalkerConfig, TalkerDetector};

/// The sampling rate of the mixer in Hz.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per frame: 20 ms at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The mixing period and frame duration.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// The participant id shared with the roster, floor control and video switching.
pub use super::roster::ParticipantId;
