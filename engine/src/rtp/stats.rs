//! Reception statistics of one RTP source (RFC 3550 A.1 sequence tracking, A.3 loss, A.8
//! interarrival jitter), fed with packets and their arrival time.
//!
//! Departures from the RFC's reference code, each to keep counts exact for a load generator:
//! packets held during probation (and the first packet of a confirmed restart) are credited to
//! `received` and `expected` once the source is validated, instead of being dropped from both;
//! duplicates are detected (a 128-packet window) and counted apart, not as received, so `lost`
//! is never pushed below the truth; a restart or SSRC change keeps the counts of the earlier
//! run(s) instead of zeroing them.

use std::time::Instant;

use super::packet::RtpPacket;
use super::seq::{SeqNo, Ssrc, RTP_SEQ_MOD};

/// Largest forward jump still taken as the same stream with losses (RFC 3550 A.1).
pub const MAX_DROPOUT: u16 = 3000;
/// Largest backward step taken as a late packet rather than a restart (RFC 3550 A.1).
pub const MAX_MISORDER: u16 = 100;
/// Sequential packets needed before a new source is valid (RFC 3550 A.1).
pub const MIN_SEQUENTIAL: u16 = 2;

/// How many recent sequence numbers the duplicate detector remembers (>= MAX_MISORDER).
const WINDOW: u64 = 128;

/// What [`ReceiverStats::on_packet`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The source is on probation (A.1): the packet is held and credited once it is valid.
    Probation,
    /// The highest sequence number so far (after a gap if packets were lost).
    InOrder,
    /// Older than the highest received and not seen before: reordered, counted as received.
    Late,
    /// A sequence number already received: counted as a duplicate only.
    Duplicate,
    /// A very large jump (A.1): discarded, unless the next packet confirms a restart.
    Jump,
    /// Two sequential packets after a jump: the source restarted; counting resumes there.
    Restarted,
}

/// Loss over the interval since the previous [`ReceiverStats::take_interval`] (RFC 3550 A.3),
/// what an RR's report block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalReport {
    /// Packets expected in the interval.
    pub expected: u64,
    /// Packets received in the interval.
    pub received: u64,
    /// Expected minus received (negative if late packets of earlier intervals arrived).
    pub lost: i64,
    /// `lost / expected` in 1/256, 0 when nothing was lost.
    pub fraction_lost: u8,
}

/// Sequence, loss and jitter state for one RTP source (RFC 3550 A.1, A.3, A.8). Sans-IO: the
/// arrival time of each packet is an input.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    clock_rate: u32,
    min_sequential: u16,
    ssrc: Option<Ssrc>,
    /// False until the first packet of a run (or after an SSRC change).
    started: bool,
    probation: u16,
    /// Packets held while on probation.
    pending: u64,
    max_seq: u16,
    /// Sequence number wraps, times 2^16 (A.1 `cycles`).
    cycles: i64,
    /// Extended number of the first packet of the current run.
    base: i64,
    /// The sequence number that would confirm a restart after a jump (A.1 `bad_seq`).
    bad_seq: Option<u16>,
    /// Bit i set: extended sequence `max - i` was received.
    window: u128,
    expected_before: u64,
    received: u64,
    duplicates: u64,
    late: u64,
    discarded: u64,
    restarts: u64,
    ssrc_changes: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Arrival and RTP timestamp of the previous packet, the A.8 transit reference.
    last: Option<(Instant, u32)>,
    /// A.8 jitter estimate in timestamp units.
    jitter: f64,
}

impl ReceiverStats {
    /// Statistics for a source whose RTP clock runs at `clock_rate` Hz (8000 for G.711).
    pub fn new(clock_rate: u32) -> Self {
        ReceiverStats {
            clock_rate: clock_rate.max(1),
            min_sequential: MIN_SEQUENTIAL,
            ssrc: None,
            started: false,
            probation: 0,
            pending: 0,
            max_seq: 0,
            cycles: 0,
            base: 0,
            bad_seq: None,
            window: 0,
            expected_before: 0,
            received: 0,
            duplicates: 0,
            late: 0,
            discarded: 0,
            restarts: 0,
            ssrc_changes: 0,
            expected_prior: 0,
            received_prior: 0,
            last: None,
            jitter: 0.0,
        }
    }

    /// Sets how many sequential packets validate a new source (A.1 MIN_SEQUENTIAL; 1 accepts the
    /// first packet at once, 0 is taken as 1).
    pub fn with_min_sequential(mut self, n: u16) -> Self {
        self.min_sequential = n.max(1);
        self
    }

    /// Accounts one parsed packet: as [`Self::on_packet`], and a packet from another SSRC than
    /// before starts a new run on probation (the earlier run's counts are kept).
    pub fn on_rtp(&mut self, packet: &RtpPacket, arrival: Instant) -> SeqVerdict {
        let ssrc = packet.ssrc();
        match self.ssrc {
            Some(old) if old != ssrc => {
                self.ssrc_changes += 1;
                self.end_run();
                self.started = false;
                self.last = None;
            }
            _ => {}
        }
        self.ssrc = Some(ssrc);
        self.on_packet(packet.seq(), packet.timestamp(), arrival)
    }

    /// Accounts one packet of this source: sequence number, RTP timestamp and the time it was
    /// received (RFC 3550 A.1 `update_seq`, A.8 jitter).
    pub fn on_packet(&mut self, seq: SeqNo, rtp_ts: u32, arrival: Instant) -> SeqVerdict {
        let seq = seq.0;
        if !self.started {
            self.started = true;
            self.max_seq = seq.wrapping_sub(1);
            self.probation = self.min_sequential;
            self.pending = 0;
            self.last = None;
        }
        let verdict = if self.probation > 0 {
            self.on_probation(seq)
        } else {
            self.on_valid(seq)
        };
        match verdict {
            SeqVerdict::InOrder | SeqVerdict::Late | SeqVerdict::Probation => {
                self.update_jitter(rtp_ts, arrival)
            }
            SeqVerdict::Restarted => self.last = Some((arrival, rtp_ts)),
            SeqVerdict::Duplicate | SeqVerdict::Jump => {}
        }
        verdict
    }

    fn on_probation(&mut self, seq: u16) -> SeqVerdict {
        if seq != self.max_seq.wrapping_add(1) {
            // Out of sequence: this packet starts a new probation run.
            self.discarded += self.pending;
            self.pending = 1;
            self.probation = self.min_sequential - 1;
            self.max_seq = seq;
            self.last = None;
            return SeqVerdict::Probation;
        }
        self.probation -= 1;
        self.max_seq = seq;
        self.pending += 1;
        if self.probation > 0 {
            return SeqVerdict::Probation;
        }
        // Valid: credit every packet of the probation run (A.1 `init_seq` would drop them).
        self.start_run(seq, self.pending);
        self.pending = 0;
        SeqVerdict::InOrder
    }

    fn on_valid(&mut self, seq: u16) -> SeqVerdict {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            self.duplicates += 1;
            SeqVerdict::Duplicate
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD as i64;
            }
            self.max_seq = seq;
            self.window = if u64::from(udelta) >= WINDOW {
                1
            } else {
                self.window << udelta | 1
            };
            self.received += 1;
            SeqVerdict::InOrder
        } else if u64::from(udelta) <= RTP_SEQ_MOD - u64::from(MAX_MISORDER) {
            if self.bad_seq == Some(seq) {
                // Two sequential packets after a jump: the sender restarted (A.1). Credit the
                // jump packet that was discarded.
                self.discarded = self.discarded.saturating_sub(1);
                self.restarts += 1;
                self.end_run();
                self.start_run(seq, 2);
                SeqVerdict::Restarted
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                self.discarded += 1;
                SeqVerdict::Jump
            }
        } else {
            let back = u64::from(self.max_seq.wrapping_sub(seq));
            let bit = if back < WINDOW { 1u128 << back } else { 0 };
            if self.window & bit != 0 {
                self.duplicates += 1;
                return SeqVerdict::Duplicate;
            }
            self.window |= bit;
            let ext = self.extended_max() - back as i64;
            self.base = self.base.min(ext);
            self.received += 1;
            self.late += 1;
            SeqVerdict::Late
        }
    }

    /// Starts counting a run whose highest packet is `seq` and which already holds `held`
    /// sequential packets ending there.
    fn start_run(&mut self, seq: u16, held: u64) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base = i64::from(seq) - held as i64 + 1;
        self.bad_seq = None;
        self.window = if held >= WINDOW {
            u128::MAX
        } else {
            (1u128 << held) - 1
        };
        self.received += held;
    }

    /// Folds the current run's expected count into the total before a new run starts.
    fn end_run(&mut self) {
        self.expected_before += self.run_expected();
        self.discarded += self.pending;
        self.pending = 0;
        self.probation = 0;
    }

    fn extended_max(&self) -> i64 {
        self.cycles + i64::from(self.max_seq)
    }

    fn run_expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        u64::try_from(self.extended_max() - self.base + 1).unwrap_or(0)
    }

    /// A.8: `J += (|D(i-1,i)| - J) / 16`, with D the change in transit time (arrival in
    /// timestamp units minus RTP timestamp) between this packet and the previous one.
    fn update_jitter(&mut self, rtp_ts: u32, arrival: Instant) {
        if let Some((prev_arrival, prev_ts)) = self.last {
            // Arrival difference in nanoseconds (signed: callers may feed unordered times).
            let dt_ns = match arrival.checked_duration_since(prev_arrival) {
                Some(d) => d.as_nanos() as i128,
                None => -(prev_arrival.duration_since(arrival).as_nanos() as i128),
            };
            let ts_units = i128::from(rtp_ts.wrapping_sub(prev_ts) as i32);
            // D in timestamp units times 1e9, in integers so a perfectly paced stream gives 0.
            let d_scaled = dt_ns * i128::from(self.clock_rate) - ts_units * 1_000_000_000;
            let d = d_scaled.unsigned_abs() as f64 / 1e9;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last = Some((arrival, rtp_ts));
    }

    /// True once the source passed probation (A.1) and its packets are being counted.
    pub fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// The SSRC of the current run, when fed through [`Self::on_rtp`].
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.ssrc
    }

    /// The RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The extended highest sequence number of the current run (A.1 `cycles + max_seq`), as an
    /// RR carries it; `None` before the source is valid.
    pub fn extended_highest_seq(&self) -> Option<u32> {
        self.is_valid().then(|| self.extended_max() as u32)
    }

    /// How many times the sequence number wrapped past 65535 in the current run.
    pub fn wraps(&self) -> u64 {
        (self.cycles / RTP_SEQ_MOD as i64) as u64
    }

    /// Packets expected: highest minus first sequence number plus one, summed over runs (A.3).
    pub fn expected(&self) -> u64 {
        self.expected_before + self.run_expected()
    }

    /// Distinct packets received (in order or late), duplicates excluded.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative packets lost, `expected - received` (A.3).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Packets whose sequence number had already been received.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher-numbered one (reordered), counted in `received`.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Packets counted nowhere else: unconfirmed large jumps and abandoned probation runs.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Restarts detected from the sequence numbers alone (A.1 resync).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// SSRC changes seen by [`Self::on_rtp`].
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }

    /// The interarrival jitter estimate in timestamp units (A.8).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The jitter in an RR's integer timestamp units (A.8, truncated).
    pub fn jitter_rtcp(&self) -> u32 {
        self.jitter as u32
    }

    /// The jitter converted to microseconds with the clock rate.
    pub fn jitter_us(&self) -> f64 {
        self.jitter * 1e6 / f64::from(self.clock_rate)
    }

    /// Loss since the previous call, and starts the next interval (RFC 3550 A.3).
    pub fn take_interval(&mut self) -> IntervalReport {
        let expected_total = self.expected();
        let expected = expected_total.saturating_sub(self.expected_prior);
        let received = self.received - self.received_prior;
        self.expected_prior = expected_total;
        self.received_prior = self.received;
        let lost = expected as i64 - received as i64;
        let fraction_lost = if expected == 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / expected as i64).min(255) as u8
        };
        IntervalReport {
            expected,
            received,
            lost,
            fraction_lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;

    use super::*;
    use crate::rtp::{parse, RtpHeader};

    const PTIME: Duration = Duration::from_millis(20);

    /// Feeds `seqs` arriving every 20 ms, each stamped 160 ticks per sequence step from the
    /// first (so a stream in order is perfectly paced), returning the verdicts.
    fn feed(stats: &mut ReceiverStats, t0: Instant, seqs: &[u16]) -> Vec<SeqVerdict> {
        let first = seqs.first().copied().unwrap_or(0);
        seqs.iter()
            .enumerate()
            .map(|(i, &s)| {
                let steps = i32::from(SeqNo(s).diff(SeqNo(first)));
                let ts = 1_000_000u32.wrapping_add_signed(steps * 160);
                stats.on_packet(SeqNo(s), ts, t0 + PTIME * i as u32)
            })
            .collect()
    }

    fn range(start: u16, n: u16) -> Vec<u16> {
        (0..n).map(|i| start.wrapping_add(i)).collect()
    }

    #[test]
    fn in_order_stream_counts_every_packet() {
        let mut s = ReceiverStats::new(8000);
        let v = feed(&mut s, Instant::now(), &range(1000, 100));
        assert_eq!(v[0], SeqVerdict::Probation);
        assert!(v[1..].iter().all(|v| *v == SeqVerdict::InOrder));
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 100, 0));
        assert_eq!(s.extended_highest_seq(), Some(1099));
        assert_eq!((s.duplicates(), s.late(), s.discarded()), (0, 0, 0));
    }

    #[test]
    fn loss_is_counted_exactly() {
        let mut s = ReceiverStats::new(8000);
        let dropped = [1005, 1006, 1050, 1077, 1098];
        let seqs: Vec<u16> = range(1000, 100)
            .into_iter()
            .filter(|q| !dropped.contains(q))
            .collect();
        feed(&mut s, Instant::now(), &seqs);
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 95, 5));
        let r = s.take_interval();
        assert_eq!((r.expected, r.received, r.lost), (100, 95, 5));
        assert_eq!(r.fraction_lost, (5 * 256 / 100) as u8);
        // Next interval: 10 more, 2 lost.
        feed(
            &mut s,
            Instant::now(),
            &[1100, 1101, 1103, 1104, 1105, 1106, 1108, 1109],
        );
        let r = s.take_interval();
        assert_eq!((r.expected, r.received, r.lost), (10, 8, 2));
        assert_eq!(r.fraction_lost, 51);
        assert_eq!(s.lost(), 7);
    }

    #[test]
    fn duplicates_are_not_received() {
        let mut s = ReceiverStats::new(8000);
        let v = feed(
            &mut s,
            Instant::now(),
            &[10, 11, 12, 12, 13, 11, 14, 10, 15, 15],
        );
        assert_eq!(v[3], SeqVerdict::Duplicate);
        assert_eq!(v[5], SeqVerdict::Duplicate);
        assert_eq!(v[7], SeqVerdict::Duplicate);
        assert_eq!(s.duplicates(), 4);
        assert_eq!((s.expected(), s.received(), s.lost()), (6, 6, 0));
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn reordered_packets_are_late_not_lost() {
        let mut s = ReceiverStats::new(8000);
        let v = feed(&mut s, Instant::now(), &[0, 1, 3, 2, 5, 4, 6, 9, 8, 7, 10]);
        assert_eq!(v[3], SeqVerdict::Late);
        assert_eq!(s.late(), 4);
        assert_eq!((s.expected(), s.received(), s.lost()), (11, 11, 0));
        // Before the late packets arrived, the gap counted as loss.
        let mut s = ReceiverStats::new(8000);
        feed(&mut s, Instant::now(), &[0, 1, 3]);
        assert_eq!(s.lost(), 1);
        // A packet older than the first counted one extends the run backwards.
        let mut s = ReceiverStats::new(8000);
        feed(&mut s, Instant::now(), &[20, 21, 22, 19]);
        assert_eq!((s.expected(), s.received(), s.late()), (4, 4, 1));
    }

    #[test]
    fn sequence_wraps_at_65535() {
        let mut s = ReceiverStats::new(8000);
        feed(&mut s, Instant::now(), &range(65500, 100));
        assert_eq!(s.wraps(), 1);
        assert_eq!(s.extended_highest_seq(), Some(65536 + 63));
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 100, 0));
        // Probation straddling the wrap, and a late packet from before the wrap.
        let mut s = ReceiverStats::new(8000);
        let v = feed(&mut s, Instant::now(), &[65535, 0, 2, 1, 3, 4]);
        assert_eq!(v[1], SeqVerdict::InOrder);
        assert_eq!(v[3], SeqVerdict::Late);
        assert_eq!((s.expected(), s.received(), s.lost()), (6, 6, 0));
        let mut s = ReceiverStats::new(8000);
        feed(&mut s, Instant::now(), &[65533, 65534, 1, 65535, 0, 2]);
        assert_eq!((s.expected(), s.received(), s.late()), (6, 6, 2));
        assert_eq!(s.wraps(), 1);
    }

    #[test]
    fn restart_after_a_jump_resyncs_and_keeps_counts() {
        let mut s = ReceiverStats::new(8000);
        let mut seqs = range(100, 50);
        seqs.extend(range(40_000, 20));
        let v = feed(&mut s, Instant::now(), &seqs);
        assert_eq!(v[50], SeqVerdict::Jump);
        assert_eq!(v[51], SeqVerdict::Restarted);
        assert_eq!(s.restarts(), 1);
        assert_eq!((s.expected(), s.received(), s.lost()), (70, 70, 0));
        assert_eq!(s.discarded(), 0);
        assert_eq!(s.extended_highest_seq(), Some(40_019));
    }

    #[test]
    fn a_lone_jump_is_discarded() {
        let mut s = ReceiverStats::new(8000);
        let v = feed(&mut s, Instant::now(), &[100, 101, 102, 30_000, 103, 104]);
        assert_eq!(v[3], SeqVerdict::Jump);
        assert_eq!(v[4], SeqVerdict::InOrder);
        assert_eq!(s.discarded(), 1);
        assert_eq!(s.restarts(), 0);
        assert_eq!((s.expected(), s.received(), s.lost()), (5, 5, 0));
    }

    #[test]
    fn probation_restarts_on_a_gap() {
        let mut s = ReceiverStats::new(8000).with_min_sequential(3);
        let v = feed(&mut s, Instant::now(), &[5, 6, 9, 10, 11, 12]);
        assert_eq!(v[..4], [SeqVerdict::Probation; 4]);
        assert_eq!(v[4], SeqVerdict::InOrder);
        // 5 and 6 were abandoned with their probation run; 9..=12 counted.
        assert_eq!(s.discarded(), 2);
        assert_eq!((s.expected(), s.received(), s.lost()), (4, 4, 0));
        // MIN_SEQUENTIAL 1: the first packet is valid at once.
        let mut s = ReceiverStats::new(8000).with_min_sequential(1);
        assert_eq!(feed(&mut s, Instant::now(), &[7]), [SeqVerdict::InOrder]);
        assert_eq!(s.expected(), 1);
    }

    #[test]
    fn ssrc_change_starts_a_new_run() {
        let mut s = ReceiverStats::new(8000);
        let t0 = Instant::now();
        let mut at = t0;
        let mut send = |s: &mut ReceiverStats, ssrc: u32, seq: u16| {
            let mut b = BytesMut::new();
            RtpHeader::new(0, SeqNo(seq), u32::from(seq) * 160, Ssrc(ssrc))
                .write_to(&mut b)
                .unwrap();
            b.extend_from_slice(&[0xff; 160]);
            at += PTIME;
            s.on_rtp(&parse(b.freeze()).unwrap(), at)
        };
        for q in 10..20 {
            send(&mut s, 0xaaaa, q);
        }
        // A new sender close in sequence space is still a new source.
        assert_eq!(send(&mut s, 0xbbbb, 21), SeqVerdict::Probation);
        for q in 22..31 {
            send(&mut s, 0xbbbb, q);
        }
        assert_eq!(s.ssrc(), Some(Ssrc(0xbbbb)));
        assert_eq!(s.ssrc_changes(), 1);
        assert_eq!((s.expected(), s.received(), s.lost()), (20, 20, 0));
        assert_eq!(s.jitter(), 0.0);
    }

    #[test]
    fn jitter_of_a_perfectly_paced_stream_is_zero() {
        let mut s = ReceiverStats::new(8000);
        // A constant network delay does not matter, only its variation.
        let t0 = Instant::now() + Duration::from_millis(37);
        feed(&mut s, t0, &range(65000, 1000));
        assert_eq!(s.jitter(), 0.0);
        assert_eq!(s.jitter_us(), 0.0);
        // 90 kHz video at 30 fps: 3000 ticks per 33.333.. ms frame, still exactly 0.
        let mut s = ReceiverStats::new(90_000);
        for i in 0..300u32 {
            let at = t0 + Duration::from_nanos(u64::from(i) * 1_000_000_000 / 30);
            s.on_packet(SeqNo(i as u16), i * 3000, at);
        }
        assert!(s.jitter() < 1e-3, "{}", s.jitter());
    }

    #[test]
    fn jitter_of_alternating_delay_follows_a8() {
        // Packets every 20 ms (160 ticks at 8 kHz); transit delay alternates 0 and 10 ms, so
        // every |D| after the first packet is 10 ms = 80 ticks and J_n = J_(n-1) + (80 - J_(n-1))/16.
        let mut s = ReceiverStats::new(8000).with_min_sequential(1);
        let t0 = Instant::now();
        let mut js = Vec::new();
        for i in 0..50u32 {
            let delay = if i % 2 == 1 {
                Duration::from_millis(10)
            } else {
                Duration::ZERO
            };
            s.on_packet(SeqNo(i as u16), i * 160, t0 + PTIME * i + delay);
            js.push(s.jitter());
        }
        // By hand: J1 = 80/16 = 5; J2 = 5 + 75/16 = 9.6875; J3 = 9.6875 + 70.3125/16.
        assert_eq!(js[0], 0.0);
        assert_eq!(js[1], 5.0);
        assert_eq!(js[2], 9.6875);
        assert_eq!(js[3], 14.082_031_25);
        // Closed form: J_n = 80 (1 - (15/16)^n).
        let j49 = 80.0 * (1.0 - (15.0f64 / 16.0).powi(49));
        assert!((js[49] - j49).abs() < 1e-9);
        assert_eq!(s.jitter_rtcp(), j49 as u32);
        assert!((s.jitter_us() - j49 * 125.0).abs() < 1e-6);
    }

    #[test]
    fn jitter_ignores_duplicates_and_handles_timestamp_wrap() {
        let mut s = ReceiverStats::new(8000).with_min_sequential(1);
        let t0 = Instant::now();
        let ts0 = u32::MAX - 300;
        for i in 0..10u32 {
            s.on_packet(SeqNo(i as u16), ts0.wrapping_add(i * 160), t0 + PTIME * i);
        }
        // A duplicate arriving 100 ms off its pace would add jitter if it were counted.
        s.on_packet(SeqNo(5), ts0.wrapping_add(5 * 160), t0 + PTIME * 10);
        assert_eq!(s.duplicates(), 1);
        assert_eq!(s.jitter(), 0.0);
    }
}
