//! The transaction layer at a steady load: a MESSAGE over UDP answered 200, with about 4,400
//! non-INVITE server transactions in flight (each lingers Timer J, 64·T1 = 32 s, RFC 3261
//! §17.2.2), as one cpmd worker holds in the soak.
//!
//! `cargo bench -p cpm-perf --bench transactions`. One iteration: a parsed request (cloned),
//! `handle_request`, the TU's `respond`, the transmit and event drained, virtual time advanced
//! by 32 s / 4,400 and the expired transactions removed.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::builder::response_to;
use cpm_engine::sip::transaction::{LayerConfig, RequestOutcome, TransactionLayer};
use cpm_engine::sip::{parse, Message};
use criterion::{criterion_group, criterion_main, Criterion};

/// Transactions in flight at the steady state.
const IN_FLIGHT: u32 = 4_400;
/// Distinct branches cycled through (more than are ever in flight at once).
const POOL: usize = 8_192;

fn requests() -> Vec<(Message, Message)> {
    let raw = std::str::from_utf8(cpm_perf::MESSAGE)
        .unwrap()
        .replace("SIP/2.0/TCP", "SIP/2.0/UDP");
    (0..POOL)
        .map(|i| {
            let text = raw.replace("z9hG4bK5a1c7e90d3", &format!("z9hG4bK{i:08x}"));
            let req = parse(Bytes::from(text)).unwrap();
            let resp = response_to(&req, 200, "OK");
            (req, resp)
        })
        .collect()
}

fn steady_state(c: &mut Criterion) {
    let pool = requests();
    let source: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let step = Duration::from_secs(32) / IN_FLIGHT;
    let mut layer = TransactionLayer::new(LayerConfig::default(), 7);
    let mut now = Instant::now();
    let mut i = 0usize;
    let mut one = |layer: &mut TransactionLayer, now: &mut Instant| {
        let (req, resp) = &pool[i % POOL];
        i += 1;
        *now += step;
        if let RequestOutcome::New { id, .. } =
            layer.handle_request(req.clone(), source, false, *now)
        {
            layer.respond(id, resp, *now).unwrap();
        }
        while let Some(t) = layer.poll_transmit() {
            black_box(t);
        }
        while let Some(e) = layer.poll_event() {
            black_box(e);
        }
        layer.handle_timeout(*now);
    };
    // Fill up to the steady state first.
    for _ in 0..2 * IN_FLIGHT {
        one(&mut layer, &mut now);
    }
    assert!(
        layer.len().abs_diff(IN_FLIGHT as usize) < 100,
        "{} in flight",
        layer.len()
    );
    c.bench_function("transactions/message_udp_4400_in_flight", |b| {
        b.iter(|| one(&mut layer, &mut now))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = steady_state
}
criterion_main!(benches);
