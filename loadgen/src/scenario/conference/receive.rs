//! What one participant measures of the mixer's stream to it: packets, loss and duplicates
//! (RFC 3550 §6.4.1 sequence accounting), the mixer's tick as the receiver sees it (arrival
//! against the 20 ms grid of the RTP timestamps, and inter-arrival deviation from 20 ms), the
//! delay from a talker's burst onset to the receiver's first frame holding that tone, and at
//! the end of each burst whether it hears every other talker and not itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cpm_engine::rtp::{ReceiverStats, RtpPacket, SeqVerdict};

use super::tones::{Heard, TonePlan, RATE};
use crate::driver::Ctx;
use crate::metrics::{Counter, Quantity};

/// Arrival of each mixer packet behind the 20 ms grid anchored at the earliest-arriving one.
pub const TICK_LATENESS: Quantity = Quantity::Custom("mixer_tick_lateness");
/// `|inter-arrival − 20 ms|` of consecutive mixer packets.
pub const INTERARRIVAL: Quantity = Quantity::Custom("mixer_interarrival_dev");
/// A talker's burst onset (its first tone packet sent) → a receiver's first frame with it.
pub const DELAY: Quantity = Quantity::Custom("mixer_delay");

/// The frames a burst-end check looks at (the last 100 ms heard).
pub const CHECK_FRAMES: usize = 5;
/// Of those, how many must hold another talker's tone.
pub const CHECK_PRESENT: usize = 3;

/// The burst a conference is in, as its receivers need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    /// Its number in the run (from 0).
    pub index: usize,
    /// When its talkers sent their first tone packet.
    pub onset: Instant,
}

/// The outcome of one receiver's burst-end check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Tones as they should be (another talker's present, one's own absent).
    pub ok: u64,
    /// Tones not as they should be.
    pub wrong: u64,
}

/// One participant's view of the mix it receives.
#[derive(Debug)]
pub struct MixerMeter {
    stats: ReceiverStats,
    /// Arrival minus the RTP time of the packet: the smallest seen is the grid's anchor.
    anchor: Option<(Instant, u32)>,
    last: Option<(Instant, u16)>,
    recent: VecDeque<Heard>,
    /// The burst of which each talker's onset was heard (`None`: not yet).
    onset_heard: Vec<Option<usize>>,
    /// The current burst's number and whether our own tone was audible during it.
    own_heard: (Option<usize>, bool),
    pcm: Vec<i16>,
    payload_type: u8,
    closed: bool,
    totals: Verdict,
}

impl MixerMeter {
    /// A meter for a stream of `payload_type` judged against `plan`.
    pub fn new(plan: &TonePlan) -> MixerMeter {
        MixerMeter {
            stats: ReceiverStats::new(RATE).with_min_sequential(1),
            anchor: None,
            last: None,
            recent: VecDeque::with_capacity(CHECK_FRAMES),
            onset_heard: vec![None; plan.talkers()],
            own_heard: (None, false),
            pcm: Vec::with_capacity(super::tones::FRAME),
            payload_type: plan.law().payload_type(),
            closed: false,
            totals: Verdict::default(),
        }
    }

    /// One packet of the mix, received at `ctx.now()`. `me` is our own talker number (if we
    /// talk) and `burst` the burst the conference is in (if any).
    pub fn on_packet(
        &mut self,
        ctx: &mut Ctx<'_>,
        pkt: &RtpPacket,
        plan: &TonePlan,
        me: Option<usize>,
        burst: Option<Burst>,
    ) {
        let now = ctx.now();
        let verdict = self.stats.on_rtp(pkt, now);
        if verdict == SeqVerdict::Duplicate {
            ctx.recorder().add(Counter::RtpDuplicates, 1, now);
            return;
        }
        ctx.recorder().add(Counter::RtpReceived, 1, now);
        if verdict == SeqVerdict::Late {
            ctx.recorder().add(Counter::RtpReordered, 1, now);
        } else {
            self.timing(ctx, pkt);
        }
        if pkt.payload_type() != self.payload_type {
            // Comfort noise, telephone-event: not audio of our codec.
            ctx.recorder().note("mixer_other_payload_types", 1);
            return;
        }
        let heard = plan.hear(pkt.payload_bytes(), &mut self.pcm);
        if self.recent.len() == CHECK_FRAMES {
            self.recent.pop_front();
        }
        self.recent.push_back(heard);
        let Some(burst) = burst.filter(|b| now >= b.onset) else {
            return;
        };
        if self.own_heard.0 != Some(burst.index) {
            self.own_heard = (Some(burst.index), false);
        }
        if let Some(k) = me {
            if heard.hears(k) {
                self.own_heard.1 = true;
            }
        }
        for k in 0..plan.talkers() {
            if Some(k) == me || !heard.has(k) || self.onset_heard[k] == Some(burst.index) {
                continue;
            }
            self.onset_heard[k] = Some(burst.index);
            ctx.record(DELAY, now - burst.onset);
        }
    }

    /// Lateness against the grid of the RTP timestamps, and inter-arrival deviation.
    fn timing(&mut self, ctx: &mut Ctx<'_>, pkt: &RtpPacket) {
        let now = ctx.now();
        let ts = pkt.timestamp();
        match self.anchor {
            None => self.anchor = Some((now, ts)),
            Some((at, ts0)) => {
                let due = at + ticks(ts.wrapping_sub(ts0));
                if now >= due {
                    ctx.record(TICK_LATENESS, now - due);
                } else {
                    // Earlier than the grid: the first packet was late; re-anchor here.
                    self.anchor = Some((now, ts));
                    ctx.record(TICK_LATENESS, Duration::ZERO);
                }
            }
        }
        let seq = pkt.seq().0;
        if let Some((prev, prev_seq)) = self.last {
            if seq == prev_seq.wrapping_add(1) {
                let gap = now.saturating_duration_since(prev);
                let frame = Duration::from_millis(20);
                let dev = gap.abs_diff(frame);
                ctx.record(INTERARRIVAL, dev);
            }
        }
        self.last = Some((now, seq));
    }

    /// The check at the end of burst `index`: over the last [`CHECK_FRAMES`] frames heard,
    /// every other talker's tone is present in at least [`CHECK_PRESENT`]; our own (if we
    /// talk) was never audible since the burst's onset. One verdict per talker.
    pub fn check(&mut self, plan: &TonePlan, me: Option<usize>, index: usize) -> Verdict {
        let mut v = Verdict::default();
        let enough = self.recent.len() == CHECK_FRAMES;
        for k in 0..plan.talkers() {
            let good = if Some(k) == me {
                enough && self.own_heard != (Some(index), true)
            } else {
                enough && self.recent.iter().filter(|h| h.has(k)).count() >= CHECK_PRESENT
            };
            if good {
                v.ok += 1;
            } else {
                v.wrong += 1;
            }
        }
        self.totals.ok += v.ok;
        self.totals.wrong += v.wrong;
        v
    }

    /// Every check's verdicts so far.
    pub fn totals(&self) -> Verdict {
        self.totals
    }

    /// Packets received (duplicates excluded).
    pub fn received(&self) -> u64 {
        self.stats.received()
    }

    /// Ends the stream: its loss (expected − received) is counted once.
    pub fn close(&mut self, ctx: &mut Ctx<'_>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let lost = self.stats.lost().max(0) as u64;
        if lost > 0 {
            let now = ctx.now();
            ctx.recorder().add(Counter::RtpLost, lost, now);
        }
    }
}

/// The duration of `samples` RTP clock ticks at 8 kHz.
fn ticks(samples: u32) -> Duration {
    Duration::from_micros(u64::from(samples) * 1_000_000 / u64::from(RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_time_to_duration() {
        assert_eq!(ticks(160), Duration::from_millis(20));
        assert_eq!(ticks(8000), Duration::from_secs(1));
    }
}
