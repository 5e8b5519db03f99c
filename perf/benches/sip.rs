//! SIP parse and serialize: our parser next to `ezk-sip-types`, on a typical INVITE with SDP and a
//! typical MESSAGE (the consts of `cpm_perf`).
//!
//! `cargo bench -p cpm-perf --bench sip` (about a minute). Groups:
//! - `parse/<msg>`: bytes to a message (ours is structural; ezk also parses the Request-URI);
//! - `parse_keys/<msg>`: parse, then read what a proxy reads (top Via branch, Call-ID, CSeq,
//!   From tag, To tag) through each parser's typed accessors;
//! - `serialize/<msg>`: an already parsed message printed into a reused buffer.
//!
//! The input is a shared, reference-counted `Bytes`, as a received datagram is (not a
//! `from_static` one, whose slices skip the atomic reference count).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cpm_perf::{ezk, proxy_keys, MESSAGES};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A buffer like one split off a receive `BytesMut`: slicing and cloning it counts references.
fn received(raw: &[u8]) -> Bytes {
    let buf = Bytes::from(raw.to_vec());
    // The first clone turns the Vec-backed buffer into a shared one.
    drop(buf.clone());
    buf
}

fn parse(c: &mut Criterion) {
    for (name, raw) in MESSAGES {
        let buf = received(raw);
        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function("ours", |b| {
            b.iter(|| cpm_engine::sip::parse(black_box(buf.clone())).unwrap())
        });
        g.bench_function("ezk", |b| {
            b.iter(|| ezk::parse(black_box(buf.clone())).unwrap())
        });
        g.finish();
    }
}

fn parse_keys(c: &mut Criterion) {
    for (name, raw) in MESSAGES {
        let buf = received(raw);
        let mut g = c.benchmark_group(format!("parse_keys/{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function("ours", |b| {
            b.iter(|| proxy_keys(&cpm_engine::sip::parse(black_box(buf.clone())).unwrap()))
        });
        g.bench_function("ezk", |b| {
            b.iter(|| ezk::proxy_keys(&ezk::parse(black_box(buf.clone())).unwrap()))
        });
        g.finish();
    }
}

fn serialize(c: &mut Criterion) {
    for (name, raw) in MESSAGES {
        let ours = cpm_engine::sip::parse(received(raw)).unwrap();
        let theirs = ezk::parse(received(raw)).unwrap();
        let mut out = BytesMut::with_capacity(2048);
        let mut g = c.benchmark_group(format!("serialize/{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function("ours", |b| {
            b.iter(|| {
                out.clear();
                black_box(&ours).write_to(&mut out);
                black_box(out.len())
            })
        });
        g.bench_function("ezk", |b| {
            b.iter(|| {
                out.clear();
                black_box(&theirs).write_to(&mut out);
                black_box(out.len())
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = parse, parse_keys, serialize }
criterion_main!(benches);
