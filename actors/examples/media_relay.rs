//! CPU cost per relayed packet of one media loop, measured like the bare forwarder
//! (`perf/reference/README.md`) and driven by the same load source, `rtp-pairs`.
//!
//! Opens one leg per pair of ports of the range, like `bare-forwarder`: port LO+2k faces A,
//! LO+2k+1 faces B, both with rtcp-mux, no SDP address (every side latches on its first
//! packet). The relay runs until no packet was relayed for 2 s after the first one, then prints
//! one line: packets relayed and dropped, the media loop thread's CPU time
//! (`/proc/self/task/TID/schedstat`, nanoseconds) and CPU nanoseconds per relayed packet.
//!
//! ```text
//! cargo build --release -p cpm-actors --example media_relay -p cpm-bare-forwarder
//! target/release/examples/media_relay --listen 127.0.0.1:40000-41999 &
//! target/release/rtp-pairs --target 127.0.0.1:40000-41999 --streams 1000 --duration 10
//! ```

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpm_actors::media::{DropReason, LegSpec, MediaConfig, MediaPlane, SidePorts};
use cpm_actors::metrics::WorkerMetrics;

const USAGE: &str =
    "usage: media_relay --listen IP:LO-HI [--idle SECS] [--pin CORE] [--connect true|false] [--pace MICROS] [--io epoll|io_uring]";

/// Nanoseconds the thread named `name` of this process has run, from its schedstat.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let s = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            return s.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn parse_listen(s: &str) -> Result<(IpAddr, u16, u16), String> {
    let (ip, ports) = s.rsplit_once(':').ok_or("expected IP:LO-HI")?;
    let ip: IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let (lo, hi) = ports.split_once('-').ok_or("expected LO-HI")?;
    let (lo, hi): (u16, u16) = (
        lo.parse().map_err(|e| format!("{lo}: {e}"))?,
        hi.parse().map_err(|e| format!("{hi}: {e}"))?,
    );
    if hi <= lo || (hi - lo + 1) % 2 == 1 {
        return Err("the range must hold an even number of ports".into());
    }
    Ok((ip, lo, hi))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut idle, mut pin) = (None, Duration::from_secs(2), None);
    let mut connect = MediaConfig::default().connect_latched;
    let mut pace = MediaConfig::default().pace;
    let mut io = MediaConfig::default().io;
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--listen", Some(v)) => listen = Some(v),
            ("--idle", Some(v)) => idle = Duration::from_secs_f64(v.parse().unwrap_or(2.0)),
            ("--pin", Some(v)) => pin = v.parse().ok(),
            ("--connect", Some(v)) => connect = v == "true",
            ("--pace", Some(v)) => pace = Duration::from_micros(v.parse().unwrap_or(0)),
            ("--io", Some(v)) => match v.parse() {
                Ok(v) => io = v,
                Err(e) => {
                    eprintln!("--io: {e}");
                    std::process::exit(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(Ok((ip, lo, hi))) = listen.as_deref().map(parse_listen) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let metrics = Arc::new(WorkerMetrics::default());
    let config = MediaConfig {
        ip,
        timeout: None,
        socket_buffer: 1 << 20,
        connect_latched: connect,
        pace,
        io,
        ..MediaConfig::default()
    };
    let plane = MediaPlane::start(0, config, pin, metrics.clone()).expect("media loop");
    let legs: Vec<_> = (lo..hi)
        .step_by(2)
        .map(|p| {
            plane
                .open_leg(&LegSpec {
                    a: SidePorts::mux(p),
                    b: SidePorts::mux(p + 1),
                    clock_rate: 8000,
                })
                .expect("bind")
        })
        .collect();
    eprintln!("media_relay: {} legs on {ip}:{lo}-{hi}", legs.len());

    let m = &metrics.media;
    let (mut first, mut last, mut seen) = (None, Instant::now(), 0u64);
    let mut cpu_at_first = 0;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        let p = m.packets.load(Relaxed) + m.drops.iter().map(|d| d.load(Relaxed)).sum::<u64>();
        if p != seen {
            if first.is_none() {
                first = Some(now);
                cpu_at_first = thread_cpu_ns("cpm-media-0").unwrap_or(0);
            }
            seen = p;
            last = now;
        } else if first.is_some() && now - last >= idle {
            break;
        }
    }
    let cpu = thread_cpu_ns("cpm-media-0").unwrap_or(0) - cpu_at_first;
    let relayed = m.packets.load(Relaxed);
    let active = last - first.unwrap_or(last);
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .map(|d| format!("dropped_{}={}", d.label(), m.drops_for(*d)))
        .collect();
    println!(
        "media_relay: legs={} active_s={:.3} tx_packets={} tx_bytes={} {} media_cpu_s={:.3} \
         cpu_ns_per_packet={:.0} tx_pps={:.0}",
        legs.len(),
        active.as_secs_f64(),
        relayed,
        m.bytes.load(Relaxed),
        drops.join(" "),
        cpu as f64 / 1e9,
        cpu as f64 / relayed.max(1) as f64,
        relayed as f64 / active.as_secs_f64().max(1e-9),
    );
    drop(legs);
    plane.shutdown();
    ExitCode::SUCCESS
}
