//! MSRP chunk parse and forward (issue 5 "Criterion: MSRP chunk parse and forward").
//!
//! `cargo bench -p cpm-perf --bench msrp`. Groups:
//! - `parse/send_1k`: a 1 KiB SEND chunk fed in one buffer, every event drained;
//! - `parse/send_64k_in_4k`: a 64 KiB chunk fed in 4 KiB pieces (as TCP reads deliver it);
//! - `relay/send_1k`, `relay/send_64k_in_4k`: what an anchor does per chunk: parse, check the
//!   To-Path, rewrite the paths for the other side and serialise head + body slices + end line.
//!
//! Throughput is in input bytes.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cpm_engine::msrp::relay::{forward, Side};
use cpm_engine::msrp::{write, Event, Limits, Parser, Uri};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn chunk(body_len: usize) -> Vec<u8> {
    let mut v = format!(
        "MSRP a786hjs2 SEND\r\nTo-Path: msrp://anchor.example.net:2855/aside77;tcp\r\n\
From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\nMessage-ID: 87652491\r\n\
Byte-Range: 1-{body_len}/{body_len}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    v.extend((0..body_len).map(|i| (i * 31 % 251) as u8));
    v.extend_from_slice(b"\r\n-------a786hjs2$\r\n");
    v
}

/// The input split like received reads, each a shared reference-counted buffer.
fn pieces(raw: &[u8], size: usize) -> Vec<Bytes> {
    raw.chunks(size)
        .map(|c| {
            let b = Bytes::from(c.to_vec());
            drop(b.clone());
            b
        })
        .collect()
}

fn uri(s: &'static str) -> Uri {
    Uri::parse(&Bytes::from_static(s.as_bytes())).unwrap()
}

fn parse_all(p: &mut Parser, input: &[Bytes]) -> usize {
    let mut n = 0;
    for b in input {
        p.feed(b.clone());
        while let Some(e) = p.poll() {
            if let Ok(Event::Body(b)) = e {
                n += b.len();
            }
        }
    }
    n
}

/// Parse, accept, rewrite, serialise: the buffers a relay leg would write (vectored).
fn relay_all(p: &mut Parser, input: &[Bytes], a: &Side, b: &Side, out: &mut Vec<Bytes>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut tid = Bytes::new();
    for piece in input {
        p.feed(piece.clone());
        while let Some(e) = p.poll() {
            match e.unwrap() {
                Event::Head(h) => {
                    a.accept(&h).unwrap();
                    let mut fwd = forward(&h, b, Bytes::from_static(b"fw8d93kz"));
                    fwd.has_body = h.has_body;
                    write::head(&fwd, &mut buf);
                    out.push(buf.split().freeze());
                    tid = fwd.tid;
                }
                Event::Body(body) => out.push(body),
                Event::End(f) => {
                    write::end_line(&tid, f, true, &mut buf);
                    out.push(buf.split().freeze());
                }
                Event::Reject(r) => panic!("{r:?}"),
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let a = Side::new(
        uri("msrp://anchor.example.net:2855/aside77;tcp"),
        &[uri("msrp://atlanta.example.com:7654/jshA7weztas;tcp")],
    );
    let b = Side::new(
        uri("msrp://anchor.example.net:2856/bside88;tcp"),
        &[uri("msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp")],
    );
    for (name, body, piece) in [
        ("send_1k", 1024, usize::MAX),
        ("send_64k_in_4k", 65536, 4096),
    ] {
        let raw = chunk(body);
        let input = pieces(&raw, piece.min(raw.len()));
        let mut g = c.benchmark_group("parse");
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let mut p = Parser::new(Limits::default());
                assert_eq!(parse_all(&mut p, black_box(&input)), body);
            })
        });
        g.finish();
        let mut g = c.benchmark_group("relay");
        g.throughput(Throughput::Bytes(raw.len() as u64));
        let mut out = Vec::with_capacity(64);
        g.bench_function(name, |bch| {
            bch.iter(|| {
                out.clear();
                let mut p = Parser::new(Limits::default());
                relay_all(&mut p, black_box(&input), &a, &b, &mut out);
                black_box(&out);
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

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
