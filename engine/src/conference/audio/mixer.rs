//! The mix-minus audio mixer of one conference (issue 6, "Media in conferences").
//!
//! At each 20 ms [`Mixer::tick`]:
//! 1. every participant's jitter buffer plays one frame, whose energy feeds its talker detector
//!    (G.711 energy is read from the codes through a table: a frame is decoded only if mixed);
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
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
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
    index: HashMap<ParticipantId, usize, BuildHasherDefault<IdHasher>>,
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
            index: HashMap::default(),
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
            // Non-talkers' frames are only measured, never decoded.
            let played = p.jb.pop_encoded(now);
            let energy = match played {
                Playout::Silence => 0,
                Playout::Audio(payload) => p.codec.mean_square(payload),
                Playout::Concealed(frame) => mean_square(&frame.samples),
            };
            let talking = p.talk.update(energy);
            p.level = p.level - p.level / 4 + energy / 4;
            let wanted = talking && !p.muted && !p.leaving;
            p.contribution = None;
            if wanted || p.mixed {
                let mut samples = [0; FRAME_SAMPLES];
                match played {
                    Playout::Audio(payload) => {
                        p.codec.decode(payload, &mut samples);
                    }
                    Playout::Concealed(frame) => samples = frame.samples,
                    Playout::Silence => {}
                }
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

/// A multiplicative hash for participant ids, which the conference picks (not the network), so
/// SipHash's flooding resistance is not needed on this per-packet lookup.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 << 8 | u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::super::tone::{goertzel_dbov, Sine};
    use super::*;
    use crate::rtp;

    const TICK: Duration = Duration::from_millis(20);

    /// One participant's media source: a tone or silence, in its codec.
    struct Source {
        codec: Codec,
        sine: Option<Sine>,
        seq: u16,
        ts: u32,
    }

    /// A conference on virtual time: sources push one packet per tick (5 ms before it), the
    /// mixer ticks, and what each participant receives is decoded and kept.
    struct Conf {
        mixer: Mixer,
        t0: Instant,
        ticks: u32,
        sources: HashMap<ParticipantId, Source>,
        heard: HashMap<ParticipantId, Vec<i16>>,
        last: HashMap<ParticipantId, (u16, u32)>,
        outputs: Vec<TickSummary>,
    }

    struct TickSummary {
        talkers: Vec<ParticipantId>,
        speaker: Option<ParticipantId>,
        encodes: usize,
        packets: Vec<OutPacket>,
    }

    const SSRC_BASE: u32 = 0x5500_0000;

    impl Conf {
        fn new() -> Self {
            Conf {
                mixer: Mixer::new(MixerConfig::default()),
                t0: Instant::now(),
                ticks: 0,
                sources: HashMap::new(),
                heard: HashMap::new(),
                last: HashMap::new(),
                outputs: Vec::new(),
            }
        }

        fn join(&mut self, id: u32, codec: Codec, tone: Option<(f64, f64)>) {
            let id = ParticipantId(id);
            let pt = codec.default_pt().unwrap_or(96);
            self.mixer.add(id, codec, pt, SSRC_BASE + id.0).unwrap();
            let sine = tone.map(|(f, level)| Sine::new(f, level));
            let source = Source {
                codec,
                sine,
                seq: 1000,
                ts: 0,
            };
            self.sources.insert(id, source);
        }

        fn leave(&mut self, id: u32) {
            self.mixer.remove(ParticipantId(id)).unwrap();
            self.sources.remove(&ParticipantId(id));
        }

        fn run(&mut self, ticks: u32) {
            for _ in 0..ticks {
                self.ticks += 1;
                let now = self.t0 + TICK * self.ticks;
                for (id, s) in &mut self.sources {
                    let frame = s.sine.as_mut().map_or([0; FRAME_SAMPLES], Sine::frame);
                    let mut payload = vec![0; s.codec.frame_bytes()];
                    s.codec.encode(&frame, &mut payload);
                    let at = now - Duration::from_millis(5);
                    self.mixer
                        .push_rtp(*id, s.seq, s.ts, false, &payload, at)
                        .unwrap();
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(FRAME_TS);
                }
                let out = self.mixer.tick(now);
                for p in &out.packets {
                    let codec = self.sources.get(&p.id).map(|s| s.codec);
                    let parsed = rtp::parse(p.packet.clone()).unwrap();
                    assert_eq!(parsed.ssrc().0, SSRC_BASE + p.id.0);
                    let seq_ts = (parsed.seq().0, parsed.timestamp());
                    match self.last.insert(p.id, seq_ts) {
                        Some((seq, ts)) => {
                            assert_eq!(seq_ts, (seq.wrapping_add(1), ts.wrapping_add(FRAME_TS)));
                            assert!(!parsed.marker());
                        }
                        None => assert!(parsed.marker(), "first packet marked"),
                    }
                    let mut pcm = [0i16; FRAME_SAMPLES];
                    let codec = codec.unwrap_or(Codec::Pcmu);
                    assert_eq!(parsed.payload_type(), codec.default_pt().unwrap_or(96));
                    assert_eq!(codec.decode(p.payload(), &mut pcm), FRAME_SAMPLES);
                    self.heard.entry(p.id).or_default().extend_from_slice(&pcm);
                }
                self.outputs.push(TickSummary {
                    talkers: out.talkers.clone(),
                    speaker: out.active_speaker,
                    encodes: out.encodes,
                    packets: out.packets.clone(),
                });
            }
        }

        /// The level of `freq` in the last `frames` frames `id` heard.
        fn level(&self, id: u32, freq: f64, frames: usize) -> f64 {
            let h = &self.heard[&ParticipantId(id)];
            goertzel_dbov(&h[h.len() - frames * FRAME_SAMPLES..], freq)
        }
    }

    fn freq(i: u32) -> f64 {
        300.0 + 100.0 * f64::from(i)
    }

    /// Every participant hears every other one's tone at `level` and its own below `absent`
    /// (G.711 distortion of the mix puts intermodulation products on the 100 Hz grid).
    fn check_mix_minus(c: &Conf, n: u32, level: f64, absent: f64) {
        for me in 0..n {
            for other in 0..n {
                let got = c.level(me, freq(other), 25);
                if me == other {
                    assert!(got < absent, "{me} hears itself at {got} dBov");
                } else {
                    assert!(
                        (got - level).abs() < 1.0,
                        "{me} hears {other} at {got} dBov"
                    );
                }
            }
        }
    }

    #[test]
    fn three_participants_hear_each_other_and_not_themselves() {
        let mut c = Conf::new();
        for i in 0..3 {
            c.join(i, Codec::Pcmu, Some((freq(i), -20.0)));
        }
        c.run(40);
        check_mix_minus(&c, 3, -20.0, -70.0);
        let last = c.outputs.last().unwrap();
        assert_eq!(last.talkers.len(), 3);
        assert!(last.packets.iter().all(|p| p.minus_own));
        assert_eq!(last.encodes, 3);
    }

    #[test]
    fn twenty_participants_with_mixed_codecs() {
        let mut c = Conf::new();
        for i in 0..20 {
            let codec = Codec::ALL[i as usize % 3];
            c.join(i, codec, Some((freq(i), -35.0)));
        }
        c.run(40);
        check_mix_minus(&c, 20, -35.0, -65.0);
        assert_eq!(c.outputs.last().unwrap().talkers.len(), 20);
    }

    #[test]
    fn a_muted_participant_is_unheard_but_hears() {
        let mut c = Conf::new();
        for i in 0..3 {
            c.join(i, Codec::Pcma, Some((freq(i), -20.0)));
        }
        c.run(10);
        c.mixer.set_muted(ParticipantId(1), true).unwrap();
        c.run(30);
        assert!(c.level(0, freq(1), 25) < -70.0);
        assert!(c.level(2, freq(1), 25) < -70.0);
        assert!((c.level(1, freq(0), 25) + 20.0).abs() < 1.0);
        assert!((c.level(1, freq(2), 25) + 20.0).abs() < 1.0);
        assert!((c.level(0, freq(2), 25) + 20.0).abs() < 1.0);
        let last = c.outputs.last().unwrap();
        assert_eq!(last.talkers, {
            let mut t = last.talkers.clone();
            t.retain(|id| id.0 != 1);
            t
        });
        assert_eq!(last.talkers.len(), 2);
        let stats = c.mixer.stats(ParticipantId(1)).unwrap();
        assert!(stats.muted && stats.talking);
        assert!(c.mixer.set_muted(ParticipantId(9), true).is_err());
        // Unmuted, it is heard again.
        c.mixer.set_muted(ParticipantId(1), false).unwrap();
        c.run(30);
        assert!((c.level(0, freq(1), 25) + 20.0).abs() < 1.0);
    }

    #[test]
    fn two_full_scale_tones_clip_without_wrapping() {
        let mut c = Conf::new();
        for (i, f) in [(0, 400.0), (1, 500.0)] {
            let id = ParticipantId(i);
            c.mixer.add(id, Codec::L16, 96, SSRC_BASE + i).unwrap();
            let sine = Some(Sine::with_amplitude(f, 32767.0));
            let source = Source {
                codec: Codec::L16,
                sine,
                seq: 0,
                ts: 0,
            };
            c.sources.insert(id, source);
        }
        c.join(2, Codec::L16, None);
        c.run(30);
        let heard = &c.heard[&ParticipantId(2)][20 * FRAME_SAMPLES..];
        assert_eq!(*heard.iter().max().unwrap(), i16::MAX, "the sum is clipped");
        assert_eq!(*heard.iter().min().unwrap(), i16::MIN);
        // A wrapped sum would jump by ~65536; the clipped one moves no faster than the tones.
        let step = heard
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(step < 30_000, "step {step}");
        // Each talker hears the other one unclipped, at full scale.
        let a = &c.heard[&ParticipantId(0)][20 * FRAME_SAMPLES..];
        assert!(a.iter().map(|s| i32::from(*s).abs()).max().unwrap() >= 32_700);
        assert!(goertzel_dbov(&a[..1600], 400.0) < -70.0);
        assert!(goertzel_dbov(&a[..1600], 500.0) > -4.0);
    }

    #[test]
    fn non_talkers_of_a_codec_share_one_encoding() {
        let mut c = Conf::new();
        for i in 0..20 {
            let codec = Codec::ALL[i as usize % 3];
            let tone = (i < 3).then(|| (freq(i), -20.0));
            c.join(i, codec, tone);
        }
        c.run(20);
        let last = c.outputs.last().unwrap();
        assert_eq!(last.talkers.len(), 3);
        // 3 talkers encoded alone, then one encode per codec for the 17 others.
        assert_eq!(last.encodes, 3 + 3);
        let mut shared: HashMap<Codec, &[u8]> = HashMap::new();
        for p in &last.packets {
            let i = p.id.0;
            assert_eq!(p.minus_own, i < 3);
            if i >= 3 {
                let codec = Codec::ALL[i as usize % 3];
                let payload = shared.entry(codec).or_insert(p.payload());
                assert_eq!(*payload, p.payload(), "{i} has its codec's shared payload");
            }
        }
        assert_eq!(shared.len(), 3);
        // The active speaker is one of the talkers.
        assert!(last.speaker.is_some_and(|s| s.0 < 3));
    }

    #[test]
    fn active_speaker_is_the_loudest_talker_and_sticks() {
        let mut c = Conf::new();
        c.join(0, Codec::Pcmu, Some((300.0, -30.0)));
        c.join(1, Codec::Pcmu, Some((400.0, -20.0)));
        c.join(2, Codec::Pcmu, Some((500.0, -28.0)));
        c.join(3, Codec::Pcmu, None);
        c.run(20);
        assert_eq!(c.outputs.last().unwrap().speaker, Some(ParticipantId(1)));
        // The loudest falls silent: the next loudest takes over once it stops talking.
        c.sources.get_mut(&ParticipantId(1)).unwrap().sine = None;
        c.run(30);
        assert_eq!(c.outputs.last().unwrap().speaker, Some(ParticipantId(2)));
        // 0 rises to within 6 dB of 2's level: 2 keeps the floor.
        c.sources.get_mut(&ParticipantId(0)).unwrap().sine = Some(Sine::new(300.0, -25.0));
        c.run(20);
        assert_eq!(c.outputs.last().unwrap().speaker, Some(ParticipantId(2)));
        // Everyone silent: no speaker.
        for s in c.sources.values_mut() {
            s.sine = None;
        }
        c.run(30);
        assert_eq!(c.outputs.last().unwrap().speaker, None);
        assert!(c.outputs.last().unwrap().talkers.is_empty());
    }

    /// The largest sample-to-sample step in what `id` heard from frame `from` on.
    fn max_step(c: &Conf, id: u32, from: usize) -> i32 {
        c.heard[&ParticipantId(id)][from * FRAME_SAMPLES..]
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap()
    }

    #[test]
    fn joining_and_leaving_cause_no_click() {
        // 115 and 165 Hz at -20 dBov (peak 4634) change by at most ~420 and ~600 per sample;
        // a source cut in or out at once would step by up to 4634 (the tones do not start each
        // frame at phase 0: 2.3 and 3.3 periods per frame).
        let mut c = Conf::new();
        c.join(0, Codec::L16, Some((115.0, -20.0)));
        c.join(9, Codec::L16, None);
        c.run(20);
        c.join(1, Codec::L16, Some((165.0, -20.0)));
        c.run(20);
        assert!(
            (c.level(9, 165.0, 10) + 20.0).abs() < 1.0,
            "1 is heard after joining"
        );
        assert!(
            c.heard.contains_key(&ParticipantId(1)),
            "1 hears from its first tick"
        );
        c.leave(0);
        let before = c.heard[&ParticipantId(9)].len() / FRAME_SAMPLES;
        c.run(1);
        // The leaver's last frame is still heard, fading out, and it gets no packet.
        let fading = &c.heard[&ParticipantId(9)][before * FRAME_SAMPLES..];
        assert!(goertzel_dbov(fading, 115.0) > -40.0);
        assert!(c
            .outputs
            .last()
            .unwrap()
            .packets
            .iter()
            .all(|p| p.id.0 != 0));
        c.run(20);
        assert!(c.level(9, 115.0, 10) < -70.0, "0 is gone");
        assert!(!c.mixer.contains(ParticipantId(0)));
        assert!(max_step(&c, 9, 0) < 1_200, "step {}", max_step(&c, 9, 0));
        // Mute and unmute fade too.
        c.mixer.set_muted(ParticipantId(1), true).unwrap();
        c.run(5);
        c.mixer.set_muted(ParticipantId(1), false).unwrap();
        c.run(5);
        assert!(max_step(&c, 9, 0) < 1_200);
        assert_eq!(c.mixer.len(), 2);
    }

    #[test]
    fn api_misuse_is_an_error() {
        let mut m = Mixer::new(MixerConfig::default());
        let id = ParticipantId(1);
        m.add(id, Codec::Pcmu, 0, 1).unwrap();
        assert_eq!(
            m.add(id, Codec::Pcmu, 0, 1),
            Err(MixerError::AlreadyPresent)
        );
        assert_eq!(
            m.add(ParticipantId(2), Codec::Pcmu, 128, 1),
            Err(MixerError::BadPayloadType)
        );
        let t = Instant::now();
        assert_eq!(
            m.push_rtp(ParticipantId(2), 0, 0, false, &[0; 160], t),
            Err(MixerError::UnknownParticipant)
        );
        assert_eq!(
            m.push_rtp(id, 0, 0, false, &[0; 12], t),
            Ok(PushOutcome::Malformed)
        );
        m.remove(id).unwrap();
        assert!(m.is_empty(), "a participant not in the mix leaves at once");
        assert_eq!(m.remove(id), Err(MixerError::UnknownParticipant));
        assert!(m.tick(t).packets.is_empty());
    }
}
