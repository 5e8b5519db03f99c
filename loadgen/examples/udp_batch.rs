//! How many UDP packets one thread sends and receives per second over loopback: batched system
//! calls (`sendmmsg`/`recvmmsg`, 32 or 64 datagrams per call) against one call per datagram.
//!
//! Each round sends a batch of 172-byte G.711 RTP packets from one socket to another and reads
//! them back on the same thread, so every packet costs one send and one receive on one core
//! (the loopback delivery runs in the sender's system call too). The "rtp" rows add what the
//! load generator does per packet: rewrite sequence number and timestamp in place, copy into
//! `Bytes`, parse, and account in `ReceiverStats`. The "+connect" rows send on a connected
//! socket (no per-packet route lookup).
//!
//! ```text
//! cargo run --release -p cpm-loadgen --example udp_batch [-- SECONDS_PER_ROW]
//! ```
//! Pin it to a core for steadier figures: `taskset -c 1 target/release/examples/udp_batch`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::rtp::{self, ReceiverStats, RtpHeader, SeqNo, Ssrc};
use cpm_loadgen::net::{BatchSocket, Batching, RecvBatch, SocketConfig};

const PAYLOAD: usize = 160;

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`), if readable.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

struct Row {
    sent: u64,
    received: u64,
    lost: i64,
    wall: Duration,
    cpu: Option<Duration>,
}

fn run(
    batching: Batching,
    batch: usize,
    connected: bool,
    rtp_work: bool,
    dur: Duration,
) -> io::Result<Row> {
    let config = SocketConfig {
        batching,
        ..SocketConfig::default()
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut a = BatchSocket::bind_with(any, config)?;
    let b = BatchSocket::bind_with(any, config)?;
    let to = b.local_addr()?;
    if connected {
        a.connect(to)?;
    }
    let ssrc = Ssrc(0x1234_5678);

    let mut bufs: Vec<Vec<u8>> = (0..batch)
        .map(|_| {
            let mut m = BytesMut::new();
            RtpHeader::new(0, SeqNo(0), 0, ssrc)
                .write_to(&mut m)
                .unwrap();
            m.extend_from_slice(&[0xd5; PAYLOAD]);
            m.to_vec()
        })
        .collect();
    let mut rb = RecvBatch::new(batch, 2048);
    let mut stats = ReceiverStats::new(8000);
    let (mut seq, mut ts) = (SeqNo(0), 0u32);
    let (mut sent, mut received) = (0u64, 0u64);

    let recv_all = |rb: &mut RecvBatch, stats: &mut ReceiverStats| -> io::Result<u64> {
        let mut got = 0;
        loop {
            match b.recv_batch(rb) {
                Ok(k) => {
                    got += k as u64;
                    if rtp_work {
                        let now = Instant::now();
                        for (d, _) in rb.iter() {
                            if let Ok(p) = rtp::parse(Bytes::copy_from_slice(d)) {
                                stats.on_rtp(&p, now);
                            }
                        }
                    }
                    // A short batch emptied the queue: skip the call that would say WouldBlock.
                    if k < rb.capacity() {
                        return Ok(got);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    };

    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    while t0.elapsed() < dur {
        // Check the clock once per 16 rounds.
        for _ in 0..16 {
            if rtp_work {
                for buf in &mut bufs {
                    rtp::rewrite_seq_ts_ssrc(buf, seq, ts, ssrc).unwrap();
                    seq = seq.next();
                    ts = ts.wrapping_add(PAYLOAD as u32);
                }
            }
            let packets: Vec<(SocketAddr, &[u8])> = bufs.iter().map(|d| (to, &d[..])).collect();
            match a.send_batch(&packets) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            received += recv_all(&mut rb, &mut stats)?;
        }
    }
    let wall = t0.elapsed();
    let cpu = thread_cpu_ns()
        .zip(cpu0)
        .map(|(c1, c0)| Duration::from_nanos(c1.saturating_sub(c0)));
    // Anything still queued (loopback delivers inside the send call, so normally nothing).
    std::thread::sleep(Duration::from_millis(20));
    received += recv_all(&mut rb, &mut stats)?;
    let lost = if rtp_work {
        stats.lost()
    } else {
        sent as i64 - received as i64
    };
    Ok(Row {
        sent,
        received,
        lost,
        wall,
        cpu,
    })
}

fn main() -> io::Result<()> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dur = Duration::from_secs_f64(secs);
    println!(
        "{:<12} {:>5} {:<4} {:>10} {:>10} {:>5} {:>11} {:>13}",
        "mode", "batch", "work", "sent", "received", "lost", "pkts/s", "pkts/cpu-s"
    );
    let rows = [
        (Batching::Loop, 32, false, "one-by-one"),
        (Batching::Mmsg, 32, false, "mmsg"),
        (Batching::Mmsg, 64, false, "mmsg"),
        (Batching::Loop, 32, true, "one+connect"),
        (Batching::Mmsg, 32, true, "mmsg+connect"),
    ];
    for rtp_work in [false, true] {
        for (batching, batch, connected, name) in rows {
            let r = run(batching, batch, connected, rtp_work, dur)?;
            let pps = r.received as f64 / r.wall.as_secs_f64();
            let per_cpu = r
                .cpu
                .map(|c| format!("{:.0}", r.received as f64 / c.as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<12} {:>5} {:<4} {:>10} {:>10} {:>5} {:>11.0} {:>13}",
                name,
                batch,
                if rtp_work { "rtp" } else { "io" },
                r.sent,
                r.received,
                r.lost,
                pps,
                per_cpu
            );
        }
    }
    Ok(())
}
