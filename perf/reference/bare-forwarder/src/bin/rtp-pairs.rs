//! `rtp-pairs --target IP:LO-HI --streams N --duration SECS [--pps 50] [--payload 160] [--json FILE]`
//!
//! The load source for a relay without signaling (the bare forwarder): N RTP streams in each
//! direction, stream k entering at port LO+2k from side A and at LO+2k+1 from side B, each
//! received back on the other side and counted exactly, with its one-way delay (send time
//! stamped in the payload) and RFC 3550 interarrival jitter. Side A and side B are one socket
//! each; streams are told apart by SSRC.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cpm_bare_forwarder::parse_listen;
use cpm_bare_forwarder::sys::{Batch, RawAddr};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

const USAGE: &str = "usage: rtp-pairs --target IP:LO-HI --streams N --duration SECS [--pps 50] [--payload 160] [--json FILE]
  Sends N RTP streams each way through a pair relay (stream k: side A -> LO+2k, side B -> LO+2k+1)
  and counts what comes back. Exit 1 when a packet was lost.";

/// RTP header (RFC 3550 §5.1) plus the 8-byte send stamp at the start of the payload.
const HEADER: usize = 12;
/// SSRC bit marking side B's streams.
const SIDE_B: u32 = 1 << 31;
/// SSRC of the latch packets, which are not counted.
const LATCH_SSRC: u32 = u32::MAX;
/// Receive time allowed after the last send.
const DRAIN: Duration = Duration::from_secs(2);

struct Args {
    target: String,
    streams: usize,
    duration: Duration,
    pps: u32,
    payload: usize,
    json: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        target: String::new(),
        streams: 0,
        duration: Duration::ZERO,
        pps: 50,
        payload: 160,
        json: None,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--target" => out.target = value()?,
            "--streams" => out.streams = num(value()?)? as usize,
            "--duration" => {
                out.duration =
                    Duration::try_from_secs_f64(num(value()?)?).map_err(|e| e.to_string())?
            }
            "--pps" => out.pps = num(value()?)? as u32,
            "--payload" => out.payload = num(value()?)? as usize,
            "--json" => out.json = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if out.target.is_empty() || out.streams == 0 || out.duration.is_zero() || out.pps == 0 {
        return Err("--target, --streams and --duration are required".into());
    }
    if out.payload < 8 {
        return Err("--payload must hold the 8-byte send stamp".into());
    }
    Ok(out)
}

/// Receive-side state of one stream in one direction.
#[derive(Default, Clone, Copy)]
struct Flow {
    received: u64,
    /// Previous transit time (arrival − send), ns, for the jitter estimate.
    transit: Option<i64>,
    /// RFC 3550 §6.4.1 interarrival jitter estimate, ns.
    jitter: f64,
}

struct Totals {
    sent: u64,
    received: u64,
    stray: u64,
    owd: Histogram<u64>,
    jitter: Histogram<u64>,
    flows: Vec<Flow>,
}

impl Totals {
    fn new(streams: usize) -> Totals {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Totals {
            sent: 0,
            received: 0,
            stray: 0,
            owd: h(),
            jitter: h(),
            flows: vec![Flow::default(); 2 * streams],
        }
    }

    /// Accounts one received datagram, `now_ns` after the start.
    fn receive(&mut self, p: &[u8], now_ns: u64) {
        if p.len() < HEADER + 8 || p[0] >> 6 != 2 {
            self.stray += 1;
            return;
        }
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        if ssrc == LATCH_SSRC {
            return;
        }
        let stream = (ssrc & !SIDE_B) as usize;
        let flow_index = 2 * stream + usize::from(ssrc & SIDE_B != 0);
        let Some(flow) = self.flows.get_mut(flow_index) else {
            self.stray += 1;
            return;
        };
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&p[HEADER..HEADER + 8]);
        let sent_ns = u64::from_be_bytes(stamp);
        let transit = now_ns as i64 - sent_ns as i64;
        if let Some(prev) = flow.transit {
            let d = (transit - prev).unsigned_abs() as f64;
            flow.jitter += (d - flow.jitter) / 16.0;
            self.jitter
                .saturating_record(((flow.jitter / 1000.0) as u64).max(1));
        }
        flow.transit = Some(transit);
        flow.received += 1;
        self.received += 1;
        self.owd
            .saturating_record((transit.max(0) as u64 / 1000).max(1));
    }
}

/// One side: its socket and the batch its packets are built in.
struct Side {
    sock: mio::net::UdpSocket,
    out: Batch,
    queued: usize,
    ports: Vec<RawAddr>,
}

impl Side {
    /// Queues `data` for `dest`, sending the batch when it is full.
    fn push(&mut self, data: &[u8], dest: RawAddr, totals: &mut Totals) -> io::Result<()> {
        self.out.set(self.queued, data, &dest);
        self.queued += 1;
        if self.queued == self.out.capacity() {
            self.flush(totals)?;
        }
        Ok(())
    }

    /// Sends everything queued, waiting for room in the socket buffer if need be.
    fn flush(&mut self, totals: &mut Totals) -> io::Result<()> {
        let mut done = 0;
        while done < self.queued {
            let n = self
                .out
                .send(self.sock.as_raw_fd(), done..self.queued, None)?;
            if n == 0 {
                std::thread::yield_now();
            }
            totals.sent += n as u64;
            done += n;
        }
        self.queued = 0;
        Ok(())
    }
}

fn socket(ip: IpAddr) -> io::Result<mio::net::UdpSocket> {
    let addr = SocketAddr::new(ip, 0);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(4 << 20)?;
    s.set_send_buffer_size(4 << 20)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(s.into()))
}

fn run(args: &Args) -> io::Result<Totals> {
    let (ip, ports) =
        parse_listen(&args.target).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let pairs = ports.len() / 2;
    if args.streams > pairs {
        let msg = format!("{} streams but the target has {pairs} pairs", args.streams);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    let lo = *ports.start();
    let port = |k: usize| RawAddr::new(SocketAddr::new(ip, lo + k as u16));
    let batch = 64;
    let mut sides = Vec::new();
    for s in 0..2 {
        let ports = (0..args.streams).map(|k| port(2 * k + s)).collect();
        sides.push(Side {
            sock: socket(ip)?,
            out: Batch::new(batch),
            queued: 0,
            ports,
        });
    }
    let mut poll = Poll::new()?;
    for (i, s) in sides.iter_mut().enumerate() {
        poll.registry()
            .register(&mut s.sock, Token(i), Interest::READABLE)?;
    }

    let start = Instant::now();
    let mut totals = Totals::new(args.streams);
    let mut inb = Batch::new(batch);
    let mut events = Events::with_capacity(16);
    let mut packet = vec![0xd5u8; HEADER + args.payload];
    packet[0] = 0x80;
    packet[1] = 8; // PCMA

    // Latch every port: side A first (dropped by the relay: B unknown yet), then side B.
    packet[8..12].copy_from_slice(&LATCH_SSRC.to_be_bytes());
    for side in sides.iter_mut() {
        for k in 0..args.streams {
            side.push(&packet, side.ports[k], &mut totals)?;
        }
        side.flush(&mut totals)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    totals.sent = 0;

    let streams = args.streams as u64;
    let per_slot =
        Duration::from_secs(1).as_nanos() as f64 / (streams * u64::from(args.pps)) as f64;
    let total_slots = (args.duration.as_secs_f64() * 1e9 / per_slot) as u64;
    let samples_per_packet = 8000 / args.pps;
    let begin = Instant::now();
    let mut slot = 0u64;
    loop {
        let now = Instant::now();
        let since = now - begin;
        let due = ((since.as_nanos() as f64 / per_slot) as u64 + 1).min(total_slots);
        while slot < due {
            let k = (slot % streams) as usize;
            let seq = slot / streams;
            let stamp = (Instant::now() - start).as_nanos() as u64;
            packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
            packet[4..8]
                .copy_from_slice(&((seq as u32).wrapping_mul(samples_per_packet)).to_be_bytes());
            packet[HEADER..HEADER + 8].copy_from_slice(&stamp.to_be_bytes());
            for (s, side) in sides.iter_mut().enumerate() {
                let ssrc = k as u32 | if s == 1 { SIDE_B } else { 0 };
                packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                side.push(&packet, side.ports[k], &mut totals)?;
            }
            slot += 1;
        }
        for side in sides.iter_mut() {
            side.flush(&mut totals)?;
        }
        let sending = slot < total_slots;
        if !sending && (totals.received >= totals.sent || since > args.duration + DRAIN) {
            break;
        }
        let timeout = if sending {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let side = &sides[ev.token().0];
            loop {
                let n = match inb.recv(side.sock.as_raw_fd()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    break;
                }
                let now_ns = (Instant::now() - start).as_nanos() as u64;
                for i in 0..n {
                    totals.receive(inb.payload(i), now_ns);
                }
            }
        }
    }
    let elapsed = begin.elapsed();
    report(args, &totals, elapsed)?;
    Ok(totals)
}

fn quantiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "null".into();
    }
    format!(
        "{{\"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}}}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

fn report(args: &Args, t: &Totals, elapsed: Duration) -> io::Result<()> {
    let lost = t.sent.saturating_sub(t.received);
    let loss_pct = if t.sent > 0 {
        100.0 * lost as f64 / t.sent as f64
    } else {
        0.0
    };
    let complete = t
        .flows
        .chunks(2)
        .filter(|f| f.iter().all(|f| f.received > 0))
        .count();
    let rate = t.sent as f64 / args.duration.as_secs_f64();
    let p99 = |h: &Histogram<u64>| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(0.99)
        }
    };
    println!(
        "rtp-pairs: streams={} sent={} received={} lost={} loss_pct={:.4} stray={} rate_pps={:.0} \
         owd_p50_us={} owd_p99_us={} jitter_p99_us={} elapsed_s={:.3}",
        args.streams,
        t.sent,
        t.received,
        lost,
        loss_pct,
        t.stray,
        rate,
        if t.owd.is_empty() {
            0
        } else {
            t.owd.value_at_quantile(0.5)
        },
        p99(&t.owd),
        p99(&t.jitter),
        elapsed.as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = format!(
            "{{\n  \"scenario\": \"rtp-pairs\",\n  \"target\": \"{}\",\n  \"attempted\": {},\n  \
             \"succeeded\": {},\n  \"failed\": {},\n  \"rate_achieved\": {:.1},\n  \"rtp\": {{\"sent\": {}, \
             \"received\": {}, \"lost\": {}, \"loss_pct\": {:.4}, \"jitter_p99_us\": {}, \"owd_p99_us\": {}}},\n  \
             \"quantities\": {{\"rtp_owd\": {}, \"rtp_jitter\": {}}}\n}}\n",
            args.target,
            args.streams,
            complete,
            args.streams - complete,
            rate,
            t.sent,
            t.received,
            lost,
            loss_pct,
            p99(&t.jitter),
            p99(&t.owd),
            quantiles(&t.owd),
            quantiles(&t.jitter),
        );
        std::fs::write(path, json)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rtp-pairs: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(t) if t.received >= t.sent && t.sent > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("rtp-pairs: packets were lost");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rtp-pairs: {e}");
            ExitCode::FAILURE
        }
    }
}
