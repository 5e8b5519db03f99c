//! Conference audio mixing cost (issue 6 "Criterion: mixing cost per participant per 20 ms
//! frame"; goal: under 200 ns per participant-frame for G.711 at 100 participants).
//!
//! `cargo bench -p cpm-perf --bench mixer`. Groups:
//! - `mixer/tick/<n>`: one 20 ms frame of a conference of n G.711 µ-law participants, 3 of them
//!   talking (tones at -20 dBov), the others sending low noise (-65 dBov): every participant's
//!   packet pushed into its jitter buffer, then `Mixer::tick` (pop, decode, talker detection,
//!   mix, encode once per codec and per talker, build all n RTP packets). Throughput is in
//!   participants, so criterion's time divided by n is the cost per participant-frame.
//! - `mixer/g711_encode`: one 160-sample frame to µ-law by the 16 KiB table and by the segment
//!   search; `mixer/g711_decode`: one frame from µ-law.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cpm_engine::conference::audio::tone::Sine;
use cpm_engine::conference::audio::{
    g711, Codec, Mixer, MixerConfig, ParticipantId, FRAME_SAMPLES,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TALKERS: usize = 3;
/// Distinct pre-encoded frames per source (the stream repeats them).
const FRAMES: usize = 50;

/// A conference of `n` participants and their pre-encoded packets.
struct Conference {
    mixer: Mixer,
    payloads: Vec<Vec<[u8; FRAME_SAMPLES]>>,
    now: Instant,
    k: u32,
}

impl Conference {
    fn new(n: usize) -> Self {
        let mut mixer = Mixer::new(MixerConfig::default());
        let mut payloads = Vec::with_capacity(n);
        for i in 0..n {
            let id = ParticipantId(i as u32);
            mixer.add(id, Codec::Pcmu, 0, 0x1000 + i as u32).unwrap();
            let (freq, level) = if i < TALKERS {
                (300.0 + 100.0 * i as f64, -20.0)
            } else {
                (2_000.0 + i as f64, -65.0)
            };
            let mut sine = Sine::new(freq, level);
            let frames = (0..FRAMES)
                .map(|_| {
                    let mut p = [0u8; FRAME_SAMPLES];
                    g711::ulaw_encode(&sine.frame(), &mut p);
                    p
                })
                .collect();
            payloads.push(frames);
        }
        let mut c = Conference {
            mixer,
            payloads,
            now: Instant::now(),
            k: 0,
        };
        // Warm up: buffers primed, talkers detected, arena and vectors at their sizes.
        for _ in 0..20 {
            c.frame();
        }
        c
    }

    /// One 20 ms frame: every participant's packet in, one tick out.
    fn frame(&mut self) -> usize {
        let k = self.k;
        self.k += 1;
        let arrival = self.now + Duration::from_millis(20) * k;
        for (i, frames) in self.payloads.iter().enumerate() {
            let payload = &frames[k as usize % FRAMES];
            let _ = self.mixer.push_rtp(
                ParticipantId(i as u32),
                k as u16,
                k.wrapping_mul(FRAME_SAMPLES as u32),
                false,
                payload,
                arrival,
            );
        }
        let out = self.mixer.tick(arrival + Duration::from_millis(5));
        out.packets.len() + out.talkers.len()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixer/tick");
    for n in [3usize, 10, 100, 1000] {
        let mut conf = Conference::new(n);
        assert_eq!(conf.frame(), n + TALKERS, "every packet built, 3 talkers");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(conf.frame()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("mixer");
    let mut sine = Sine::new(440.0, -10.0);
    let frame = sine.frame();
    let mut out = [0u8; FRAME_SAMPLES];
    g.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    g.bench_function("g711_encode/table", |b| {
        b.iter(|| g711::ulaw_encode(black_box(&frame), &mut out))
    });
    g.bench_function("g711_encode/search", |b| {
        b.iter(|| g711::ulaw_encode_search(black_box(&frame), &mut out))
    });
    let mut pcm = [0i16; FRAME_SAMPLES];
    g.bench_function("g711_decode", |b| {
        b.iter(|| g711::ulaw_decode(black_box(&out), &mut pcm))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
