//! The mix-minus audio mixer of one conference (issue 6, "Media in conferences").
//!
//! At each 20 ms [`Mixer::tick`]:
//! 1. every participant's jitter buffer plays one frame, whose energy feeds its talker detector;
//! 2. the frames of the talkers (talking and not muted) are summed in `i32`, then clamped to
//!    `i16` once: only talkers are summed, so a conference of 1,000 with 3 talkers costs 3
//!    frame sums;
//! 3. every participant that is not a talker hears the whole mix, encoded **once per codec**
//!    and copied into each of their packets (Asterisk's approach); each talker hears the mix
//!    minus its own frame, encoded for it alone;
//! 4. all packets of the tick are written into one arena buffer and split from it: one
//!    allocation per tick at most (none once the previous tick's packets are dropped), none
//!    per packet.
//!
//! **No clicks**: a source entering the mix (talk start, unmute, join: new participants start
//! from silence) is faded in over one frame, a source leaving it (talk end, mute, [`Mixer::remove`])
//! is faded out over one frame: the leaver's next frame is played with a falling gain in the
//! tick after `remove`, then it is gone (it gets no packet in that tick).
//!
//! The packet copy of the shared payload (160 bytes) is a decision: one `memcpy` per listener
//! is cheaper than a second buffer per datagram in the sender's batched I/O.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::jitter::{FrameKind, JitterBuffer, JitterConfig, JitterStats, PushOutcome};
use super::talker::{dbov, mean_square, TalkerConfig, TalkerDetector};
use super::{Codec, ParticipantId, FRAME_SAMPLES};
use crate::rtp::FIXED_HEADER_LEN;

/// RTP timestamp units per frame.
const FRAME_TS: u32 = FRAME_SAMPLES as u32;

/// Settings of a [`Mixer`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MixerConfig {
    /// Every participant's jitter buffer.
    pub jitter: JitterConfig,
    /// Every participant's talker detection.
    pub talker: TalkerConfig,
}

/// A mistake of the caller (the conference actor), never of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MixerError {
    /// No participant with this id.
    UnknownParticipant,
    /// A participant with this id is already in the mix.
    AlreadyPresent,
    /// An RTP payload type is 0..=127.
    BadPayloadType,
}

impl MixerError {
    /// A reason phrase for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            MixerError::UnknownParticipant => "no such participant in the mixer",
            MixerError::AlreadyPresent => "participant already in the mixer",
            MixerError::BadPayloadType => "payload type out of range",
        }
    }
}

impl std::fmt::Display for MixerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for MixerError {}

/// One RTP packet to send to a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPacket {
    /// The participant to send it to.
    pub id: ParticipantId,
    /// The whole datagram: 12-byte header (the participant's SSRC, sequence and timestamp,
    /// continuing across ticks) and payload.
    pub packet: Bytes,
    /// True when the payload is the mix minus the participant's own audio, encoded for it
    /// alone; false when it is the mix shared by all non-talkers of its codec.
    pub minus_own: bool,
}

impl OutPacket {
    /// The payload part of [`Self::packet`].
    pub fn payload(&self) -> &[u8] {
        self.packet.get(FIXED_HEADER_LEN..).unwrap_or_default()
    }
}

/// What a [`Mixer::tick`] produced.
#[derive(Debug, Default)]
pub struct TickOutput {
    /// One packet per participant (leavers excepted), in no particular order.
    pub packets: Vec<OutPacket>,
    /// The participants talking and not muted (those summed into the mix).
    pub talkers: Vec<ParticipantId>,
    /// The active speaker, for video switching: the loudest talker, kept while it stays
    /// within 6 dB of the loudest.
    pub active_speaker: Option<ParticipantId>,
    /// Encodes run in this tick: one per codec the non-talkers use plus one per talker.
    pub encodes: usize,
}

/// A participant's state as reported by [`Mixer::stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParticipantStats {
    /// Its jitter buffer's counters and estimates.
    pub jitter: JitterStats,
    /// Taken as talking (muted or not).
    pub talking: bool,
    /// Muted (API mute, or no floor in a half-duplex conference).
    pub muted: bool,
    /// The smoothed level of its audio in dBov.
    pub level_dbov: f64,
}

#[derive(Debug)]
struct Participant {
    id: ParticipantId,
    codec: Codec,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
    muted: bool,
    leaving: bool,
    /// In the mix in the previous tick (possibly fading).
    mixed: bool,
    /// Its position in the tick's contributions, if it contributes.
    contribution: Option<usize>,
    /// Smoothed frame energy, for the active speaker.
    level: u32,
    jb: JitterBuffer,
    talk: TalkerDetector,
}

/// The mix-minus mixer of one conference (see the module docs). Sans-IO: arrival times and
/// tick times are inputs.
#[derive(Debug)]
pub struct Mixer {
    config: MixerConfig,
    parts: Vec<Participant>,
    index: HashMap<ParticipantId, usize>,
    /// The samples each contributor put into the mix this tick (after any fade).
    contributions: Vec<[i16; FRAME_SAMPLES]>,
    total: [i32; FRAME_SAMPLES],
    mix: [i16; FRAME_SAMPLES],
    scratch: [i16; FRAME_SAMPLES],
    /// The shared encoded mix per codec, and whether it is current this tick.
    shared: [([u8; 2 * FRAME_SAMPLES], bool); 3],
    arena: BytesMut,
    out: TickOutput,
}

impl Mixer {
    /// An empty mixer.
    pub fn new(config: MixerConfig) -> Self {
        Mixer {
            config,
            parts: Vec::new(),
            index: HashMap::new(),
            contributions: Vec::new(),
            total: [0; FRAME_SAMPLES],
            mix: [0; FRAME_SAMPLES],
            scratch: [0; FRAME_SAMPLES],
            shared: [([0; 2 * FRAME_SAMPLES], false); 3],
            arena: BytesMut::new(),
            out: TickOutput::default(),
        }
    }

    /// Participants in the mix (leavers fading out included).
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True without participants.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// True when `id` is in the mix and not leaving.
    pub fn contains(&self, id: ParticipantId) -> bool {
        self.part(id).is_some()
    }

    fn part(&self, id: ParticipantId) -> Option<&Participant> {
        self.index
            .get(&id)
            .map(|&i| &self.parts[i])
            .filter(|p| !p.leaving)
    }

    fn part_mut(&mut self, id: ParticipantId) -> Option<&mut Participant> {
        let i = *self.index.get(&id)?;
        Some(&mut self.parts[i]).filter(|p| !p.leaving)
    }

    /// Adds a participant who receives the mix encoded with `codec` on payload type `pt`, in
    /// packets with our `ssrc` (picked at random by the caller, RFC 3550 §8.1). The first
    /// sequence number and timestamp are derived from the SSRC. It hears the mix from the next
    /// tick and is heard once it talks, faded in.
    pub fn add(
        &mut self,
        id: ParticipantId,
        codec: Codec,
        pt: u8,
        ssrc: u32,
    ) -> Result<(), MixerError> {
        if pt > 0x7f {
            return Err(MixerError::BadPayloadType);
        }
        if let Some(&i) = self.index.get(&id) {
            if !self.parts[i].leaving {
                return Err(MixerError::AlreadyPresent);
            }
            self.remove_at(i);
        }
        self.index.insert(id, self.parts.len());
        self.parts.push(Participant {
            id,
            codec,
            pt,
            ssrc,
            seq: (ssrc ^ ssrc >> 16) as u16,
            ts: ssrc.wrapping_mul(0x9E37_79B9),
            first: true,
            muted: false,
            leaving: false,
            mixed: false,
            contribution: None,
            level: 0,
            jb: JitterBuffer::new(codec, &self.config.jitter),
            talk: TalkerDetector::new(&self.config.talker),
        });
        Ok(())
    }

    /// Removes a participant. If it was in the mix, its next frame fades out in the next tick
    /// (it gets no packet any more); otherwise it is gone at once.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let i = *self.index.get(&id).ok_or(MixerError::UnknownParticipant)?;
        let p = &mut self.parts[i];
        if p.leaving {
            return Err(MixerError::UnknownParticipant);
        }
        if p.mixed {
            p.leaving = true;
        } else {
            self.remove_at(i);
        }
        Ok(())
    }

    fn remove_at(&mut self, i: usize) {
        let gone = self.parts.swap_remove(i);
        self.index.remove(&gone.id);
        if let Some(moved) = self.parts.get(i) {
            self.index.insert(moved.id, i);
        }
    }

    /// Mutes or unmutes a participant: a muted one is heard by nobody (faded out) but still
    /// hears the mix. Used for API mute and for the half-duplex floor.
    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), MixerError> {
        self.part_mut(id)
            .ok_or(MixerError::UnknownParticipant)?
            .muted = muted;
        Ok(())
    }

    /// Network input: an RTP packet of participant `id` (its sequence number, timestamp,
    /// marker bit and payload), received at `arrival`. The payload is copied.
    pub fn push_rtp(
        &mut self,
        id: ParticipantId,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        arrival: Instant,
    ) -> Result<PushOutcome, MixerError> {
        let p = self.part_mut(id).ok_or(MixerError::UnknownParticipant)?;
        Ok(p.jb.push(seq, ts, marker, payload, arrival))
    }

    /// A participant's counters, talk state and level.
    pub fn stats(&self, id: ParticipantId) -> Option<ParticipantStats> {
        self.part(id).map(|p| ParticipantStats {
            jitter: p.jb.stats(),
            talking: p.talk.is_talking(),
            muted: p.muted,
            level_dbov: dbov(p.level),
        })
    }

    /// Every participant's id and stats.
    pub fn all_stats(&self) -> impl Iterator<Item = (ParticipantId, ParticipantStats)> + '_ {
        self.parts
            .iter()
            .filter(|p| !p.leaving)
            .filter_map(|p| Some((p.id, self.stats(p.id)?)))
    }

    /// Mixes one 20 ms frame at `now` (call every 20 ms) and returns the packets to send.
    pub fn tick(&mut self, now: Instant) -> &TickOutput {
        self.out.packets.clear();
        self.out.talkers.clear();
        self.out.encodes = 0;
        self.contributions.clear();
        self.total = [0; FRAME_SAMPLES];
        let mut loudest: Option<(ParticipantId, u32)> = None;
        for p in &mut self.parts {
            let frame = p.jb.pop(now);
            let energy = match frame.kind {
                FrameKind::Silence => 0,
                FrameKind::Audio | FrameKind::Concealed => mean_square(&frame.samples),
            };
            let talking = p.talk.update(energy);
            p.level = p.level - p.level / 4 + energy / 4;
            let wanted = talking && !p.muted && !p.leaving;
            p.contribution = None;
            if wanted || p.mixed {
                let mut samples = frame.samples;
                if wanted != p.mixed {
                    fade(&mut samples, wanted);
                }
                for (t, &s) in self.total.iter_mut().zip(&samples) {
                    *t += i32::from(s);
                }
                p.contribution = Some(self.contributions.len());
                self.contributions.push(samples);
            }
            p.mixed = wanted;
            if wanted {
                self.out.talkers.push(p.id);
                if loudest.is_none_or(|(_, l)| p.level > l) {
                    loudest = Some((p.id, p.level));
                }
            }
        }
        for (m, &t) in self.mix.iter_mut().zip(&self.total) {
            *m = clamp(t);
        }
        self.choose_speaker(loudest);
        self.build_packets();
        let mut i = 0;
        while i < self.parts.len() {
            if self.parts[i].leaving {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        &self.out
    }

    /// Keeps the active speaker while it talks within 6 dB of the loudest talker.
    fn choose_speaker(&mut self, loudest: Option<(ParticipantId, u32)>) {
        let Some((id, level)) = loudest else {
            self.out.active_speaker = None;
            return;
        };
        let keep = self.out.active_speaker.and_then(|cur| {
            let p = self.part(cur)?;
            (p.mixed && u64::from(p.level) * 4 >= u64::from(level)).then_some(cur)
        });
        self.out.active_speaker = Some(keep.unwrap_or(id));
    }

    /// One packet per remaining participant, all in one arena.
    fn build_packets(&mut self) {
        let size: usize = self
            .parts
            .iter()
            .filter(|p| !p.leaving)
            .map(|p| FIXED_HEADER_LEN + p.codec.frame_bytes())
            .sum();
        self.arena.reserve(size);
        for s in &mut self.shared {
            s.1 = false;
        }
        for p in self.parts.iter_mut().filter(|p| !p.leaving) {
            let a = &mut self.arena;
            a.put_u8(0x80);
            a.put_u8(u8::from(p.first) << 7 | p.pt);
            a.put_u16(p.seq);
            a.put_u32(p.ts);
            a.put_u32(p.ssrc);
            p.first = false;
            p.seq = p.seq.wrapping_add(1);
            p.ts = p.ts.wrapping_add(FRAME_TS);
            let bytes = p.codec.frame_bytes();
            let minus_own = match p.contribution.and_then(|c| self.contributions.get(c)) {
                Some(own) => {
                    for ((s, &t), &o) in self.scratch.iter_mut().zip(&self.total).zip(own) {
                        *s = clamp(t - i32::from(o));
                    }
                    let start = a.len();
                    a.put_bytes(0, bytes);
                    p.codec.encode(&self.scratch, &mut a[start..]);
                    self.out.encodes += 1;
                    true
                }
                None => {
                    let (buf, current) = &mut self.shared[p.codec.index()];
                    if !*current {
                        p.codec.encode(&self.mix, &mut buf[..bytes]);
                        *current = true;
                        self.out.encodes += 1;
                    }
                    a.put_slice(&buf[..bytes]);
                    false
                }
            };
            self.out.packets.push(OutPacket {
                id: p.id,
                packet: a.split().freeze(),
                minus_own,
            });
        }
    }
}

fn clamp(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// Applies a one-frame linear fade in (`rising`) or out.
fn fade(samples: &mut [i16; FRAME_SAMPLES], rising: bool) {
    let n = FRAME_SAMPLES as i32;
    for (i, s) in samples.iter_mut().enumerate() {
        let g = if rising {
            i as i32 + 1
        } else {
            n - 1 - i as i32
        };
        *s = (i32::from(*s) * g / n) as i16;
    }
}
