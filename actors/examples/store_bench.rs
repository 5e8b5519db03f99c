//! Durable stores per second through the [`Storage`] handle: `--ops` Defer ops of ~300 bytes
//! from `--threads` submitting threads, each acknowledged by its callback after the commit.
//! Prints stores/s, the latency from submit to acknowledgement (p50/p99/max: queueing included,
//! so at full speed it measures the queue depth) and the mean transaction time. `--rate` paces
//! the submitters (ops/s in total) to see the latency below saturation. A full queue is
//! backpressure: the submitter sleeps 100 µs and retries.
//!
//! ```text
//! cargo run --release -p cpm-actors --example store_bench -- --sync full
//! cargo run --release -p cpm-actors --example store_bench -- --sync normal --ops 100000
//! cargo run --release -p cpm-actors --example store_bench -- --rate 10000 --ops 50000
//! ```
//! The database goes to `--dir` (default `target/store_bench`, a real disk: /tmp may be tmpfs,
//! where fsync is free) and is removed first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_actors::storage::{Durability, Storage, StorageOptions};
use cpm_engine::store::{DeferredMessage, StoreError, WriteOp};

const USAGE: &str =
    "usage: store_bench [--sync full|normal] [--ops N] [--threads N] [--batch N] [--rate OPS_PER_S] [--dir PATH]";

fn main() -> ExitCode {
    let mut sync = Durability::Full;
    let mut ops: usize = 100_000;
    let mut threads: usize = 2;
    let mut rate: u64 = 0;
    let mut options = StorageOptions::default();
    let mut dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/store_bench"
    ));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        let ok = match (a.as_str(), v.as_deref()) {
            ("--sync", Some("full")) => {
                sync = Durability::Full;
                true
            }
            ("--sync", Some("normal")) => {
                sync = Durability::Normal;
                true
            }
            ("--ops", Some(n)) => n.parse().map(|n| ops = n).is_ok(),
            ("--threads", Some(n)) => n.parse().map(|n: usize| threads = n.max(1)).is_ok(),
            ("--rate", Some(n)) => n.parse().map(|n| rate = n).is_ok(),
            ("--batch", Some(n)) => n.parse().map(|n| options.batch = n).is_ok(),
            ("--dir", Some(p)) => {
                dir = PathBuf::from(p);
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    options.durability = sync;
    let _ = std::fs::remove_dir_all(&dir);
    let storage = match Storage::open(&dir, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("store_bench: {e}");
            return ExitCode::FAILURE;
        }
    };

    let (tx, rx) = mpsc::channel::<Duration>();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (storage, tx) = (storage.clone(), tx.clone());
            s.spawn(move || {
                // Paced: op number k of this thread is due at k * threads / rate.
                let pace =
                    (rate > 0).then(|| Duration::from_secs_f64(threads as f64 / rate as f64));
                for (k, i) in (t..ops).step_by(threads).enumerate() {
                    if let Some(due) = pace.map(|p| start + p * k as u32) {
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let op = WriteOp::Defer(message(i));
                    loop {
                        let submitted = Instant::now();
                        let tx = tx.clone();
                        let done = move |r: Result<_, StoreError>| {
                            if r.is_ok() {
                                let _ = tx.send(submitted.elapsed());
                            }
                        };
                        match storage.write(op.clone(), done) {
                            Ok(()) => break,
                            Err(StoreError::QueueFull) => {
                                std::thread::sleep(Duration::from_micros(100))
                            }
                            Err(e) => panic!("write: {e}"),
                        }
                    }
                }
            });
        }
    });
    drop(tx);
    let mut lat: Vec<Duration> = rx.iter().collect();
    let elapsed = start.elapsed();
    let m = storage.metrics();
    let (batches, errors) = (m.batches.load(Relaxed), m.errors.load(Relaxed));
    let batch_ms = m.batch_us_total.load(Relaxed) as f64 / 1e3 / batches.max(1) as f64;
    storage.shutdown();
    lat.sort();
    let pct = |p: f64| {
        let k = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        lat.get(k).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "sync={} ops={} acked={} errors={} threads={threads} batches={batches} ({:.0} ops/batch, \
         {batch_ms:.2} ms/batch) elapsed={:.2}s durable_stores_per_s={:.0} ack_latency_ms p50={:.2} p99={:.2} max={:.2}",
        if sync == Durability::Full {
            "full"
        } else {
            "normal"
        },
        ops,
        lat.len(),
        errors,
        lat.len() as f64 / batches.max(1) as f64,
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    let _ = std::fs::remove_dir_all(&dir);
    if lat.len() == ops {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A deferred MESSAGE of ~300 bytes.
fn message(i: usize) -> DeferredMessage {
    let mut req = format!(
        "MESSAGE sip:user{}@example.com SIP/2.0\r\nCall-ID: bench-{i}\r\nContent-Type: text/plain\r\n\r\n",
        i % 1000
    )
    .into_bytes();
    req.resize(300, b'.');
    DeferredMessage {
        recipient: format!("sip:user{}@example.com", i % 1000),
        sender: "sip:bench@example.com".into(),
        received_at: 1_700_000_000_000,
        expires_at: 1_700_000_000_000 + 72 * 3_600_000,
        size: req.len() as u64,
        request: Bytes::from(req),
        imdn_message_id: Some(format!("bench-{i}")),
        dispositions: None,
    }
}
