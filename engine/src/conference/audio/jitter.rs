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
//!   default). The playout delay (mean time a packet waits, smoothed) follows the target one
//!   frame at a time: a frame is inserted (concealed) when a packet came late or the delay is
//!   more than a frame below the target; a frame is dropped when the delay stays at or above the
//!   target without it and every packet of the last second (50 packets) waited at least
//!   25 ms. No time-scale modification: the steps are whole frames.
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
/// Packets over which the least wait is measured before the delay may shrink (1 s).
const WAIT_WINDOW: u32 = 50;

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

/// A played frame before decoding (see [`JitterBuffer::pop_encoded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The encoded payload of a received packet.
    Audio(&'a [u8]),
    /// A concealment frame, decoded.
    Concealed(&'a Frame),
    /// Silence.
    Silence,
}

/// What [`JitterBuffer::play`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The payload at `last_played`.
    Audio,
    /// Concealment in `out`.
    Concealed,
    Silence,
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
    /// The least wait of the last complete window of packets, and of the current one.
    least_wait: i64,
    window_least_wait: i64,
    window_packets: u32,
    /// (seq, ts) of the last far-away packet, which the next in sequence confirms.
    candidate: Option<(SeqNo, u32)>,
    concealed_run: u8,
    /// The slot holding the payload of the last frame played (the concealment source); slot
    /// `capacity` is a spare that keeps it when a new packet takes its slot.
    last_played: Option<usize>,
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
            payloads: vec![0; (capacity + 1) * codec.frame_bytes()],
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
            least_wait: i64::MAX,
            window_least_wait: i64::MAX,
            window_packets: 0,
            candidate: None,
            concealed_run: u8::MAX,
            last_played: None,
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
        match self.state {
            State::Idle => return self.resync(ts, payload, now),
            State::Underrun => {
                self.stats.resyncs += 1;
                return self.resync(ts, payload, now);
            }
            State::Buffering { .. } | State::Playing => {}
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
        self.least_wait = i64::MAX;
        self.window_least_wait = i64::MAX;
        self.window_packets = 0;
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
        if self.last_played == Some(index) {
            let spare = self.slots.len();
            self.payloads
                .copy_within(index * size..(index + 1) * size, spare * size);
            self.last_played = Some(spare);
        }
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
        self.window_least_wait = self.window_least_wait.min(wait);
        self.window_packets += 1;
        if self.window_packets >= WAIT_WINDOW {
            self.least_wait = self.window_least_wait;
            self.window_least_wait = i64::MAX;
            self.window_packets = 0;
        }
        PushOutcome::Stored
    }

    /// Playout: the next 20 ms at time `now` (call once per mixer tick), decoded.
    pub fn pop(&mut self, now: Instant) -> &Frame {
        match self.play(now) {
            Step::Audio => {
                let payload = self.last_payload();
                let mut samples = [0; FRAME_SAMPLES];
                self.codec.decode(payload, &mut samples);
                self.out.samples = samples;
                self.out.kind = FrameKind::Audio;
            }
            Step::Concealed => {}
            Step::Silence => {
                if self.out.kind != FrameKind::Silence {
                    self.out = Frame::SILENCE;
                }
            }
        }
        &self.out
    }

    /// Like [`Self::pop`], but an audio frame comes out still encoded, so that a caller that
    /// only needs its energy (e.g. with [`Codec::mean_square`]) need not decode it.
    pub fn pop_encoded(&mut self, now: Instant) -> Playout<'_> {
        match self.play(now) {
            Step::Audio => Playout::Audio(self.last_payload()),
            Step::Concealed => Playout::Concealed(&self.out),
            Step::Silence => Playout::Silence,
        }
    }

    fn last_payload(&self) -> &[u8] {
        let size = self.codec.frame_bytes();
        let i = self.last_played.unwrap_or(0);
        &self.payloads[i * size..(i + 1) * size]
    }

    fn play(&mut self, now: Instant) -> Step {
        let now = self.units(now);
        match self.state {
            State::Idle | State::Underrun => return Step::Silence,
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
        // Shrink only when the mean stays at or above the target without this frame and
        // no recent packet would have been late with 20 ms less (plus a 5 ms margin).
        let least_wait = self.least_wait.min(self.window_least_wait) as f64;
        if self.delay - frame >= target && least_wait - frame >= frame / 4.0 && self.stored > 1 {
            self.stats.skipped += 1;
            self.delay -= frame;
            self.least_wait -= i64::from(FRAME_TS);
            self.window_least_wait -= i64::from(FRAME_TS);
            self.advance();
        }
        let slot = self.slots[self.head];
        if slot.filled && slot.ts == self.next_ts {
            self.last_played = Some(self.head);
            self.concealed_run = 0;
            self.advance();
            self.played |= 1;
            return Step::Audio;
        }
        self.advance();
        if self.stored == 0 && self.concealed_run >= self.plc_frames {
            self.state = State::Underrun;
            return Step::Silence;
        }
        self.stats.concealed += 1;
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

    /// The last audio frame repeated with a falling gain into `out`, or silence once it has
    /// faded out.
    fn conceal(&mut self) -> Step {
        let plc = u32::from(self.plc_frames);
        let run = u32::from(self.concealed_run);
        if run >= plc || self.last_played.is_none() {
            return Step::Silence;
        }
        let mut last = [0; FRAME_SAMPLES];
        self.codec.decode(self.last_payload(), &mut last);
        // Gain from (plc - run)/plc to (plc - run - 1)/plc across the frame, in 1/2^15.
        let total = (plc * FRAME_TS) as i32;
        let start = ((plc - run) * FRAME_TS) as i32;
        for (i, (o, &s)) in self.out.samples.iter_mut().zip(&last).enumerate() {
            let gain = ((start - i as i32) << 15) / total;
            *o = ((i32::from(s) * gain) >> 15) as i16;
        }
        self.out.kind = FrameKind::Concealed;
        self.concealed_run = self.concealed_run.saturating_add(1);
        Step::Concealed
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

#[cfg(test)]
mod tests {
    use super::super::g711::ulaw_decode_sample;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A packet: seq, ts, marker, payload code, arrival in ms after t0.
    type Pkt = (u16, u32, bool, u8, u64);

    /// The µ-law code that frame `i` carries (all 160 bytes), 1..=100.
    fn code(i: u32) -> u8 {
        (i % 100 + 1) as u8
    }

    /// Packets `i` in `range` sent every 20 ms from seq0/ts0, arriving 5 ms + `delay(i)` later.
    fn stream(
        range: std::ops::Range<u32>,
        seq0: u16,
        ts0: u32,
        delay: impl Fn(u32) -> u64,
    ) -> Vec<Pkt> {
        range
            .map(|i| {
                let seq = seq0.wrapping_add(i as u16);
                let ts = ts0.wrapping_add(i * FRAME_TS);
                (seq, ts, false, code(i), u64::from(i) * 20 + 5 + delay(i))
            })
            .collect()
    }

    /// What a pop played: the code of an audio frame, or its kind.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Played {
        Code(u8),
        Concealed,
        Silence,
    }

    struct Run {
        jb: JitterBuffer,
        t0: Instant,
        played: Vec<Played>,
        outcomes: Vec<PushOutcome>,
    }

    impl Run {
        fn new() -> Self {
            Run {
                jb: JitterBuffer::new(Codec::Pcmu, &JitterConfig::default()),
                t0: Instant::now(),
                played: Vec::new(),
                outcomes: Vec::new(),
            }
        }

        /// Ticks every 20 ms from t0 for `ticks` ticks, pushing the packets that arrived before
        /// each tick (in arrival order), then popping.
        fn run(&mut self, mut pkts: Vec<Pkt>, first_tick: u64, ticks: u64) {
            pkts.sort_by_key(|p| p.4);
            let mut next = pkts.iter().peekable();
            for k in first_tick..first_tick + ticks {
                let tick = k * 20;
                while let Some(&&(seq, ts, m, c, at)) = next.peek() {
                    if at > tick {
                        break;
                    }
                    let o = self
                        .jb
                        .push(seq, ts, m, &[c; 160], self.t0 + MS * at as u32);
                    self.outcomes.push(o);
                    next.next();
                }
                let f = self.jb.pop(self.t0 + MS * tick as u32);
                self.played.push(match f.kind {
                    FrameKind::Silence => Played::Silence,
                    FrameKind::Concealed => Played::Concealed,
                    FrameKind::Audio => {
                        assert!(f.samples.iter().all(|&s| s == f.samples[0]));
                        let c = (1..=100u8)
                            .find(|&c| ulaw_decode_sample(c) == f.samples[0])
                            .unwrap();
                        Played::Code(c)
                    }
                });
            }
        }

        fn codes(&self) -> Vec<u8> {
            self.played
                .iter()
                .filter_map(|p| match p {
                    Played::Code(c) => Some(*c),
                    _ => None,
                })
                .collect()
        }
    }

    fn expected(range: std::ops::Range<u32>) -> Vec<u8> {
        range.map(code).collect()
    }

    #[test]
    fn in_order_packets_play_in_order_after_the_initial_delay() {
        let mut r = Run::new();
        r.run(stream(0..50, 1000, 5000, |_| 0), 0, 60);
        // Packet 0 arrives at 5 ms, waits 20 ms: first played at the 40 ms tick.
        assert_eq!(r.played[..2], [Played::Silence, Played::Silence]);
        assert_eq!(r.played[2], Played::Code(code(0)));
        assert_eq!(r.codes(), expected(0..50));
        let s = r.jb.stats();
        assert_eq!((s.received, s.late, s.duplicate, s.overflow), (50, 0, 0, 0));
        assert_eq!(s.concealed, 3, "3 frames of fade-out after the stream ends");
        assert_eq!(s.target, Duration::from_millis(20));
        assert!(!r.jb.is_playing(), "underrun once the stream stopped");
        assert!(r.played[56..].iter().all(|p| *p == Played::Silence));
    }

    #[test]
    fn reordered_packets_within_the_depth_play_in_order() {
        let mut r = Run::new();
        // Odd packets overtake even ones: each pair arrives swapped, 10 ms apart.
        r.run(
            stream(0..40, 7, 0, |i| if i % 2 == 0 { 12 } else { 0 }),
            0,
            50,
        );
        assert_eq!(r.codes(), expected(0..40));
        let s = r.jb.stats();
        assert_eq!((s.received, s.late, s.resyncs), (40, 0, 0));
    }

    #[test]
    fn a_lost_packet_is_concealed_then_a_long_loss_fades_to_silence() {
        let mut r = Run::new();
        let pkts: Vec<Pkt> = stream(0..60, 0, 0, |_| 0)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != 10 && !(20..32).contains(i))
            .map(|(_, p)| p)
            .collect();
        r.run(pkts, 0, 70);
        let at = |i: usize| r.played[i + 2];
        assert_eq!(at(9), Played::Code(code(9)));
        assert_eq!(at(10), Played::Concealed);
        assert_eq!(at(11), Played::Code(code(11)));
        // The long loss: 3 concealed frames, then silence until packet 32 resyncs.
        assert_eq!(&r.played[22..25], &[Played::Concealed; 3]);
        assert!(r.played[25..34].iter().all(|p| *p == Played::Silence));
        assert!(r.codes().ends_with(&expected(32..60)));
        let s = r.jb.stats();
        assert_eq!(s.resyncs, 1);
        assert_eq!(s.received, 60 - 13);
    }

    #[test]
    fn concealment_fades_the_last_frame_out_over_three_frames() {
        let mut jb = JitterBuffer::new(Codec::L16, &JitterConfig::default());
        let t0 = Instant::now();
        let frame: Vec<u8> = [10_000i16; 160]
            .iter()
            .flat_map(|s| s.to_be_bytes())
            .collect();
        jb.push(0, 0, false, &frame, t0);
        assert_eq!(jb.pop(t0 + 20 * MS).kind, FrameKind::Audio);
        let mut gains = Vec::new();
        for k in 2..6 {
            let f = jb.pop(t0 + 20 * MS * k);
            gains.push((f.kind, f.samples[0], f.samples[159]));
        }
        assert_eq!(gains[0].0, FrameKind::Concealed);
        assert!(gains[0].1 >= 9_900 && (6_600..6_700).contains(&gains[0].2));
        assert!((6_600..6_700).contains(&gains[1].1) && (3_300..3_400).contains(&gains[1].2));
        assert!((3_300..3_400).contains(&gains[2].1) && gains[2].2 < 100);
        assert_eq!(gains[3], (FrameKind::Silence, 0, 0));
        assert_eq!(jb.stats().concealed, 3);
    }

    #[test]
    fn the_concealment_source_survives_its_slot_being_reused() {
        let mut jb = JitterBuffer::new(Codec::L16, &JitterConfig::default());
        let t0 = Instant::now();
        let l16 = |v: i16| -> Vec<u8> { [v; 160].iter().flat_map(|s| s.to_be_bytes()).collect() };
        jb.push(0, 0, false, &l16(10_000), t0);
        assert_eq!(jb.pop(t0 + 20 * MS).samples[0], 10_000);
        // Frame 16 lands in the slot frame 0 was played from; frame 1 is missing.
        let outcome = jb.push(16, 16 * FRAME_TS, false, &l16(-5), t0 + 21 * MS);
        assert_eq!(outcome, PushOutcome::Stored);
        let f = jb.pop(t0 + 40 * MS);
        assert_eq!((f.kind, f.samples[0]), (FrameKind::Concealed, 10_000));
    }

    #[test]
    fn duplicates_are_dropped_before_and_after_playout() {
        let mut r = Run::new();
        let mut pkts = stream(0..30, 0, 0, |_| 0);
        pkts.extend(stream(0..30, 0, 0, |_| 1));
        // A copy of packet 5 long after it was played.
        pkts.push((5, 5 * FRAME_TS, false, code(5), 400));
        r.run(pkts, 0, 35);
        assert_eq!(r.codes(), expected(0..30));
        let s = r.jb.stats();
        assert_eq!((s.received, s.duplicate, s.late), (30, 31, 0));
    }

    #[test]
    fn late_packets_are_dropped_and_grow_the_delay() {
        let mut r = Run::new();
        r.run(stream(0..40, 0, 0, |i| if i == 20 { 60 } else { 0 }), 0, 45);
        let s = r.jb.stats();
        assert_eq!(s.late, 1);
        assert!(s.inserted >= 1);
        assert!(r.outcomes.contains(&PushOutcome::Late));
        assert!(!r.codes().contains(&code(20)));
        let mut want = expected(0..40);
        want.retain(|&c| c != code(20));
        assert_eq!(r.codes(), want);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let mut r = Run::new();
        r.run(
            stream(0..40, 65_520, u32::MAX - 10 * FRAME_TS + 1, |_| 0),
            0,
            45,
        );
        assert_eq!(r.codes(), expected(0..40));
        assert_eq!(r.jb.stats().late + r.jb.stats().resyncs, 0);
    }

    #[test]
    fn a_timestamp_jump_resynchronises() {
        let mut r = Run::new();
        let mut pkts = stream(0..20, 0, 0, |_| 0);
        // A new talkspurt: the timestamp jumps by 10 s, marked.
        let mut spurt = stream(20..40, 0, 80_000, |_| 0);
        spurt[0].2 = true;
        pkts.extend(spurt);
        // Then an SSRC change: sequence and timestamp restart elsewhere, unmarked.
        pkts.extend(stream(40..60, 30_000, 1_234_567, |_| 0));
        r.run(pkts, 0, 70);
        let s = r.jb.stats();
        assert_eq!(s.resyncs, 2);
        assert_eq!(
            s.discarded, 1,
            "the first packet after the SSRC change waits for a second"
        );
        // The marked jump drops the one frame still buffered from before it (19); the
        // unconfirmed first packet after the SSRC change (40) is discarded.
        let mut want = expected(0..19);
        want.extend(expected(20..40));
        want.extend(expected(41..60));
        assert_eq!(r.codes(), want);
    }

    #[test]
    fn the_delay_follows_the_jitter_up_and_back_down() {
        let mut r = Run::new();
        r.run(stream(0..100, 0, 0, |_| 0), 0, 100);
        let calm = r.jb.stats();
        assert_eq!(calm.target, Duration::from_millis(20));
        assert!(calm.delay <= Duration::from_millis(40), "{calm:?}");
        // Jitter: each packet delayed by 0-80 ms (a fixed pseudo-random sequence).
        let mut x = 12345u32;
        let jitter: Vec<u64> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                u64::from(x >> 16) % 80
            })
            .collect();
        r.run(stream(100..600, 0, 0, |i| jitter[i as usize]), 100, 500);
        let jittery = r.jb.stats();
        assert!(jittery.jitter >= Duration::from_millis(15), "{jittery:?}");
        assert!(jittery.target >= Duration::from_millis(60), "{jittery:?}");
        assert!(jittery.delay >= Duration::from_millis(45), "{jittery:?}");
        // Few late packets: under 2 % of the jittery ones.
        assert!(jittery.late < 10, "{jittery:?}");
        assert!(jittery.inserted > 0);
        assert!(jittery.target <= Duration::from_millis(200));
        r.run(stream(600..1100, 0, 0, |_| 0), 600, 500);
        let calm_again = r.jb.stats();
        assert_eq!(
            calm_again.target,
            Duration::from_millis(20),
            "{calm_again:?}"
        );
        assert!(
            calm_again.delay <= Duration::from_millis(45),
            "{calm_again:?}"
        );
        assert!(calm_again.skipped > 0);
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let mut jb = JitterBuffer::new(Codec::Pcmu, &JitterConfig::default());
        let t0 = Instant::now();
        let heap = jb.payloads.capacity();
        let mut overflow = 0;
        for i in 0..10_000u32 {
            let o = jb.push(i as u16, i * FRAME_TS, false, &[0x55; 160], t0);
            overflow += u32::from(o == PushOutcome::Overflow);
            assert!(jb.len() <= jb.capacity());
        }
        assert!(overflow > 0);
        assert_eq!(jb.payloads.capacity(), heap);
        assert_eq!(jb.slots.len(), 16);
        assert_eq!(
            jb.push(1, 0, false, &[0; 100], t0),
            PushOutcome::Malformed,
            "not a 20 ms frame"
        );
    }
}
