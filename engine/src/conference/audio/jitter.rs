//! The adaptive jitter buffer of one participant: encoded 20 ms packets in, one decoded 20 ms
//! [`Frame`] out per mixer tick.
//!
//! - **Storage**: a ring of `capacity` slots indexed by RTP timestamp (one slot per 160
//!   samples) holding a copy of the encoded payload (decoded only when played). The copy, 160
//!   bytes for G.711, frees the receive buffer at once instead of pinning it for up to 200 ms.
//!   Memory is fixed at creation: packets beyond the ring are dropped (`overflow`).
//! - **Playout**: after a (re)synchronisation the first packet waits the target delay, then one
//!   frame plays per [`JitterBuffer::pop`]. Frames behind the playout point are `late` (or
//!   `duplicate` when that frame was already played), a repeated packet is `duplicate`.
//! - **Adaptation**: the interarrival jitter `J` is estimated as in RFC 3550 §6.4.1 / A.8; the
//!   target delay is `10 ms + jitter_factor · J` within `[min_delay, max_delay]` (20-200 ms by
//!   default). The playout delay (mean time a packet waits, smoothed) is brought to the target
//!   one frame at a time: a frame is dropped when it is more than a frame above, a frame is
//!   inserted (concealed) when it is more than a frame below or when a packet came late. No
//!   time-scale modification: the steps are whole frames.
//! - **Resynchronisation**: a packet with the marker bit outside the ring, or two consecutive
//!   packets (seq+1, ts+160) far from the playout point (a timestamp jump, an SSRC change), or
//!   any packet after an underrun restarts buffering at that packet (RFC 3550 §5.1: playout may
//!   be adjusted at the start of a talkspurt).
//! - **Loss concealment**: a missing frame repeats the last played frame with a gain falling
//!   linearly (per sample) from 1 to 0 over `plc_frames` frames (60 ms by default), then
//!   silence: the idea of G.711 Appendix I (waveform substitution, attenuated, muted after
//!   60 ms) without its pitch search and overlap-add.

use std::time::{Duration, Instant};

use super::{Codec, FRAME_SAMPLES, SAMPLE_RATE};
use crate::rtp::SeqNo;

/// RTP timestamp units per frame.
const FRAME_TS: u32 = FRAME_SAMPLES as u32;
/// A packet this many frames ahead of the playout point (or more) is a jump, not an overflow.
const JUMP_AHEAD_FRAMES: i32 = 50;
/// How many played frames are remembered to tell a duplicate from a late packet.
const PLAYED_HISTORY: i32 = 64;

/// Settings of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Lowest target playout delay (default 20 ms).
    pub min_delay: Duration,
    /// Highest target playout delay (default 200 ms).
    pub max_delay: Duration,
    /// Target delay = 10 ms + `jitter_factor` × the RFC 3550 jitter estimate (default 3).
    pub jitter_factor: f64,
    /// Packets stored at most (default 16, i.e. 320 ms of 20 ms packets).
    pub capacity: usize,
    /// Frames of concealment before silence (default 3, i.e. 60 ms).
    pub plc_frames: u8,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            jitter_factor: 3.0,
            capacity: 16,
            plc_frames: 3,
        }
    }
}

/// What a played frame is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded from a received packet.
    Audio,
    /// Concealment of a lost packet: the last frame repeated, fading out.
    Concealed,
    /// Silence: not started, underrun, or concealment exhausted.
    Silence,
}

/// 20 ms of 8 kHz audio and what it is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the samples are made of.
    pub kind: FrameKind,
    /// The 160 samples.
    pub samples: [i16; FRAME_SAMPLES],
}

impl Frame {
    /// A silent frame.
    pub const SILENCE: Frame = Frame {
        kind: FrameKind::Silence,
        samples: [0; FRAME_SAMPLES],
    };
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Stored,
    /// Stored as the first packet of a new playout (start, timestamp jump, after underrun).
    Resynced,
    /// Dropped: its frame was already played or concealed.
    Late,
    /// Dropped: already stored or played.
    Duplicate,
    /// Dropped: beyond the ring's capacity.
    Overflow,
    /// Dropped: not one 20 ms frame of the codec.
    Malformed,
    /// Dropped: far from the playout point; a next packet in sequence confirms a resync.
    Discarded,
}

/// Counters and estimates of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JitterStats {
    /// Packets stored.
    pub received: u64,
    /// Packets dropped as behind the playout point.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicate: u64,
    /// Frames played without their packet (concealed or silent) while playing.
    pub concealed: u64,
    /// Packets dropped because the ring was full.
    pub overflow: u64,
    /// Packets dropped as not one frame of the codec.
    pub malformed: u64,
    /// Packets dropped far from the playout point (unconfirmed jumps).
    pub discarded: u64,
    /// Playout restarts (timestamp jumps, underruns), not counting the first start.
    pub resyncs: u64,
    /// Frames dropped to shrink the delay.
    pub skipped: u64,
    /// Frames inserted to grow the delay.
    pub inserted: u64,
    /// The RFC 3550 interarrival jitter estimate.
    pub jitter: Duration,
    /// The smoothed playout delay (time a packet waits before it is played).
    pub delay: Duration,
    /// The delay the buffer steers to.
    pub target: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No packet yet.
    Idle,
    /// Waiting for the first frame's playout time (in timestamp units since the epoch).
    Buffering { start_at: i64 },
    /// One frame per pop.
    Playing,
    /// Concealment ran out with nothing buffered: silent until the next packet resyncs.
    Underrun,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    ts: u32,
    filled: bool,
}

/// An adaptive jitter buffer with loss concealment for one RTP source of 20 ms frames (see the
/// module docs). Sans-IO: arrival and playout times are inputs.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    codec: Codec,
    min_delay: i64,
    max_delay: i64,
    jitter_factor: f64,
    plc_frames: u8,
    slots: Vec<Slot>,
    payloads: Vec<u8>,
    state: State,
    epoch: Option<Instant>,
    /// Timestamp of the next frame to play, and its slot.
    next_ts: u32,
    head: usize,
    stored: usize,
    /// Bit i: the frame `next_ts - 160·(i+1)` was played from a packet.
    played: u64,
    /// Time (timestamp units) at which `next_ts` is due.
    due: i64,
    /// Previous packet's (arrival, ts) for the jitter estimate.
    prev: Option<(i64, u32)>,
    /// Jitter and smoothed delay, in timestamp units.
    jitter: f64,
    delay: f64,
    late_since_pop: bool,
    /// (seq, ts) of the last far-away packet, which the next in sequence confirms.
    candidate: Option<(SeqNo, u32)>,
    concealed_run: u8,
    last_audio: [i16; FRAME_SAMPLES],
    out: Frame,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer for `codec`; its memory (capacity × frame size) is allocated here.
    pub fn new(codec: Codec, config: &JitterConfig) -> Self {
        let capacity = config.capacity.max(2);
        let units = |d: Duration| (d.as_micros() as i64 * i64::from(SAMPLE_RATE)) / 1_000_000;
        let min_delay = units(config.min_delay);
        JitterBuffer {
            codec,
            min_delay,
            max_delay: units(config.max_delay).max(min_delay),
            jitter_factor: config.jitter_factor,
            plc_frames: config.plc_frames,
            slots: vec![Slot::default(); capacity],
            payloads: vec![0; capacity * codec.frame_bytes()],
            state: State::Idle,
            epoch: None,
            next_ts: 0,
            head: 0,
            stored: 0,
            played: 0,
            due: 0,
            prev: None,
            jitter: 0.0,
            delay: 0.0,
            late_since_pop: false,
            candidate: None,
            concealed_run: u8::MAX,
            last_audio: [0; FRAME_SAMPLES],
            out: Frame::SILENCE,
            stats: JitterStats::default(),
        }
    }

    /// The codec payloads are decoded with.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Packets currently stored (at most the capacity).
    pub fn len(&self) -> usize {
        self.stored
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.stored == 0
    }

    /// The number of slots (the memory bound).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// True once a frame has been played and until an underrun.
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// Time in timestamp units (1/8000 s) since the first instant this buffer saw.
    fn units(&mut self, t: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(t);
        (t.saturating_duration_since(epoch).as_micros() as i64 * i64::from(SAMPLE_RATE)) / 1_000_000
    }

    fn duration(units: f64) -> Duration {
        Duration::from_secs_f64(units.max(0.0) / f64::from(SAMPLE_RATE))
    }

    /// The delay the buffer steers to, in timestamp units.
    fn target(&self) -> i64 {
        let t = f64::from(FRAME_TS / 2) + self.jitter_factor * self.jitter;
        (t as i64).clamp(self.min_delay, self.max_delay)
    }

    /// Network input: one RTP packet's sequence number, timestamp, marker bit and payload,
    /// received at `arrival` (the socket's receive time, not necessarily now).
    pub fn push(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        arrival: Instant,
    ) -> PushOutcome {
        let seq = SeqNo(seq);
        if payload.len() != self.codec.frame_bytes() {
            self.stats.malformed += 1;
            return PushOutcome::Malformed;
        }
        let now = self.units(arrival);
        if matches!(self.state, State::Idle | State::Underrun) {
            return self.resync(ts, payload, now);
        }
        let off = ts.wrapping_sub(self.next_ts) as i32;
        let frames = off / FRAME_TS as i32;
        let aligned = off % FRAME_TS as i32 == 0;
        let cap = self.slots.len() as i32;
        if aligned && (-PLAYED_HISTORY..0).contains(&frames) {
            if let State::Buffering { .. } = self.state {
                if self.stored_span() - frames <= cap {
                    // Reordered first packets: move the playout point back to this one.
                    self.rewind(-frames);
                    return self.store(ts, payload, now);
                }
            }
            if self.played >> (-frames - 1) & 1 == 1 {
                self.stats.duplicate += 1;
                return PushOutcome::Duplicate;
            }
            self.stats.late += 1;
            self.late_since_pop = true;
            return PushOutcome::Late;
        }
        if aligned && (0..cap).contains(&frames) {
            self.candidate = None;
            return self.store(ts, payload, now);
        }
        if aligned && (cap..JUMP_AHEAD_FRAMES).contains(&frames) && !marker {
            self.candidate = Some((seq, ts));
            self.stats.overflow += 1;
            return PushOutcome::Overflow;
        }
        // Far away or off the frame grid: a jump. Follow it on a marker or on confirmation.
        let confirmed = self
            .candidate
            .is_some_and(|(s, t)| seq.diff(s) == 1 && ts.wrapping_sub(t) == FRAME_TS);
        if marker || confirmed {
            self.stats.resyncs += 1;
            return self.resync(ts, payload, now);
        }
        self.candidate = Some((seq, ts));
        self.stats.discarded += 1;
        PushOutcome::Discarded
    }

    /// Frames from `next_ts` to the last stored one (0 when empty).
    fn stored_span(&self) -> i32 {
        let cap = self.slots.len();
        (0..cap)
            .rev()
            .find(|i| self.slots[(self.head + i) % cap].filled)
            .map_or(0, |i| i as i32 + 1)
    }

    /// Moves the playout point `frames` frames earlier (while buffering).
    fn rewind(&mut self, frames: i32) {
        let cap = self.slots.len();
        self.head = (self.head + cap - frames as usize % cap) % cap;
        self.next_ts = self
            .next_ts
            .wrapping_sub(FRAME_TS.wrapping_mul(frames as u32));
        if let State::Buffering { start_at } = self.state {
            self.due = start_at - i64::from(frames) * i64::from(FRAME_TS);
            self.state = State::Buffering { start_at: self.due };
        }
    }

    /// Restarts playout at this packet, which waits the target delay.
    fn resync(&mut self, ts: u32, payload: &[u8], now: i64) -> PushOutcome {
        for s in &mut self.slots {
            s.filled = false;
        }
        self.stored = 0;
        self.head = 0;
        self.next_ts = ts;
        self.played = 0;
        self.prev = None;
        self.candidate = None;
        self.late_since_pop = false;
        self.due = now + self.target();
        self.delay = self.target() as f64;
        self.state = State::Buffering { start_at: self.due };
        self.store(ts, payload, now);
        PushOutcome::Resynced
    }

    fn store(&mut self, ts: u32, payload: &[u8], now: i64) -> PushOutcome {
        let cap = self.slots.len();
        let frames = (ts.wrapping_sub(self.next_ts) / FRAME_TS) as usize;
        let index = (self.head + frames) % cap;
        let slot = &mut self.slots[index];
        if slot.filled && slot.ts == ts {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        *slot = Slot { ts, filled: true };
        let size = payload.len();
        self.payloads[index * size..(index + 1) * size].copy_from_slice(payload);
        self.stored += 1;
        self.stats.received += 1;
        // RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
        if let Some((prev_at, prev_ts)) = self.prev {
            let d = (now - prev_at) - i64::from(ts.wrapping_sub(prev_ts) as i32);
            self.jitter += (d.abs() as f64 - self.jitter) / 16.0;
        }
        self.prev = Some((now, ts));
        let wait = self.due + i64::from(frames as u32 * FRAME_TS) - now;
        self.delay += (wait as f64 - self.delay) / 16.0;
        PushOutcome::Stored
    }

    /// Playout: the next 20 ms at time `now` (call once per mixer tick).
    pub fn pop(&mut self, now: Instant) -> &Frame {
        let now = self.units(now);
        match self.state {
            State::Idle | State::Underrun => return self.silence(),
            State::Buffering { start_at } if now < start_at => return self.conceal(),
            State::Buffering { .. } => self.state = State::Playing,
            State::Playing => {}
        }
        self.due = now + i64::from(FRAME_TS);
        let target = self.target() as f64;
        let frame = f64::from(FRAME_TS);
        let grow = self.late_since_pop || self.delay < target - frame;
        self.late_since_pop = false;
        if grow && self.delay + frame <= self.max_delay as f64 {
            // Play a concealed frame and keep the next one: every packet waits 20 ms longer.
            self.stats.inserted += 1;
            self.delay += frame;
            return self.conceal();
        }
        if self.delay > target + frame && self.stored > 1 {
            self.stats.skipped += 1;
            self.delay -= frame;
            self.advance();
        }
        let slot = self.slots[self.head];
        if slot.filled && slot.ts == self.next_ts {
            let size = self.codec.frame_bytes();
            let payload = &self.payloads[self.head * size..(self.head + 1) * size];
            self.codec.decode(payload, &mut self.out.samples);
            self.out.kind = FrameKind::Audio;
            self.last_audio = self.out.samples;
            self.concealed_run = 0;
            self.advance();
            self.played |= 1;
            return &self.out;
        }
        self.stats.concealed += 1;
        self.advance();
        if self.stored == 0 && self.concealed_run >= self.plc_frames {
            self.state = State::Underrun;
        }
        self.conceal()
    }

    /// Moves the playout point one frame on, freeing its slot.
    fn advance(&mut self) {
        let slot = &mut self.slots[self.head];
        if slot.filled {
            slot.filled = false;
            self.stored -= 1;
        }
        self.head = (self.head + 1) % self.slots.len();
        self.next_ts = self.next_ts.wrapping_add(FRAME_TS);
        self.played <<= 1;
    }

    fn silence(&mut self) -> &Frame {
        self.out = Frame::SILENCE;
        &self.out
    }

    /// The last audio frame repeated with a falling gain, or silence once it has faded out.
    fn conceal(&mut self) -> &Frame {
        let plc = u32::from(self.plc_frames);
        let run = u32::from(self.concealed_run);
        if run >= plc {
            return self.silence();
        }
        // Gain from (plc - run)/plc to (plc - run - 1)/plc across the frame, in 1/2^15.
        let total = (plc * FRAME_TS) as i32;
        let start = ((plc - run) * FRAME_TS) as i32;
        for (i, (o, &s)) in self
            .out
            .samples
            .iter_mut()
            .zip(&self.last_audio)
            .enumerate()
        {
            let gain = ((start - i as i32) << 15) / total;
            *o = ((i32::from(s) * gain) >> 15) as i16;
        }
        self.out.kind = FrameKind::Concealed;
        self.concealed_run = self.concealed_run.saturating_add(1);
        &self.out
    }

    /// Counters and current estimates.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            jitter: Self::duration(self.jitter),
            delay: Self::duration(self.delay),
            target: Self::duration(self.target() as f64),
            ..self.stats
        }
    }
}
