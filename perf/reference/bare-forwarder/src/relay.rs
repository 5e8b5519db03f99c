//! The forwarder: pairs of UDP sockets, each side latching its peer from its first datagram.
//!
//! Socket `2k` and socket `2k + 1` form pair `k`. A datagram received on one socket is sent,
//! unchanged and from the other socket of its pair, to the address latched on that other
//! socket: the first source address that socket ever received from (symmetric RTP latching,
//! without parsing anything). Datagrams arriving before the other side has latched are dropped,
//! as are those the kernel will not take (full socket buffer): a relay does not queue.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{Batch, RawAddr};

/// Token of the stop pipe; sockets use their index.
const STOP: Token = Token(usize::MAX);

/// What the forwarder did, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received (UDP payload).
    pub rx_bytes: u64,
    /// Datagrams forwarded.
    pub tx_packets: u64,
    /// Bytes forwarded.
    pub tx_bytes: u64,
    /// Datagrams dropped because the other side of the pair had not latched yet.
    pub dropped_unlatched: u64,
    /// Datagrams dropped because the sending socket's buffer was full.
    pub dropped_full: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub rx_calls: u64,
    /// `sendmmsg` calls.
    pub tx_calls: u64,
}

/// Counters with the time they cover, for a report line.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The counters.
    pub counters: Counters,
    /// From the start of [`Forwarder::run`] to the report.
    pub elapsed: Duration,
    /// From the first to the last datagram received (zero when fewer than two).
    pub active: Duration,
}

impl fmt::Display for Report {
    /// One line of `key=value` pairs; rates are per second of the active period.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let secs = self.active.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let per_call = |n: u64, calls: u64| {
            if calls > 0 {
                n as f64 / calls as f64
            } else {
                0.0
            }
        };
        write!(
            f,
            "elapsed_s={:.3} active_s={:.3} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} \
             dropped_unlatched={} dropped_full={} rx_pps={:.0} tx_pps={:.0} tx_bps={:.0} \
             rx_per_call={:.2} tx_per_call={:.2}",
            self.elapsed.as_secs_f64(),
            secs,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.dropped_unlatched,
            c.dropped_full,
            rate(c.rx_packets),
            rate(c.tx_packets),
            rate(c.tx_bytes * 8),
            per_call(c.rx_packets, c.rx_calls),
            per_call(c.tx_packets, c.tx_calls),
        )
    }
}

/// Stops a running [`Forwarder`] from another thread or a signal handler (see
/// [`StopHandle::stream`]).
pub struct StopHandle(UnixStream);

impl StopHandle {
    /// Asks the forwarder to return from [`Forwarder::run`].
    pub fn stop(&self) -> io::Result<()> {
        use std::io::Write;
        (&self.0).write_all(&[1])
    }

    /// The write end of the stop pipe, e.g. for `signal_hook::low_level::pipe::register`.
    pub fn stream(&self) -> io::Result<UnixStream> {
        self.0.try_clone()
    }
}

/// One side of a pair.
struct Side {
    sock: mio::net::UdpSocket,
    peer: Option<RawAddr>,
}

/// The relay: an even number of sockets forwarding to each other in pairs.
pub struct Forwarder {
    poll: Poll,
    sides: Vec<Side>,
    // Registered in `poll` under STOP; kept open for the life of the forwarder.
    _stop_rx: mio::net::UnixStream,
    stop_tx: UnixStream,
    batch: usize,
    counters: Counters,
}

impl Forwarder {
    /// A forwarder over `sockets` (an even, non-zero number), paired as 0↔1, 2↔3, ...;
    /// `batch` datagrams per system call.
    pub fn new(sockets: Vec<UdpSocket>, batch: usize) -> io::Result<Forwarder> {
        if sockets.is_empty() || sockets.len() & 1 == 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "need an even number of sockets",
            ));
        }
        let poll = Poll::new()?;
        let mut sides = Vec::with_capacity(sockets.len());
        for (i, s) in sockets.into_iter().enumerate() {
            s.set_nonblocking(true)?;
            let mut sock = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE)?;
            sides.push(Side { sock, peer: None });
        }
        let (stop_tx, rx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        let mut stop_rx = mio::net::UnixStream::from_std(rx);
        poll.registry()
            .register(&mut stop_rx, STOP, Interest::READABLE)?;
        Ok(Forwarder {
            poll,
            sides,
            _stop_rx: stop_rx,
            stop_tx,
            batch: batch.max(1),
            counters: Counters::default(),
        })
    }

    /// Binds `ip:port` for every port of `ports` (an even count), with `buf` bytes of socket
    /// receive and send buffer each.
    pub fn bind(
        ip: IpAddr,
        ports: RangeInclusive<u16>,
        buf: usize,
        batch: usize,
    ) -> io::Result<Forwarder> {
        let sockets = ports
            .map(|port| {
                let addr = SocketAddr::new(ip, port);
                let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
                s.set_recv_buffer_size(buf)?;
                s.set_send_buffer_size(buf)?;
                s.bind(&addr.into())
                    .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
                Ok(UdpSocket::from(s))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Forwarder::new(sockets, batch)
    }

    /// The local address of every socket, in pair order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.sides.iter().map(|s| s.sock.local_addr()).collect()
    }

    /// A handle that makes [`Forwarder::run`] return.
    pub fn stop_handle(&self) -> io::Result<StopHandle> {
        Ok(StopHandle(self.stop_tx.try_clone()?))
    }

    /// Forwards until stopped; calls `report` every `interval` (if any) and returns the final
    /// report. Single-threaded: one epoll set, batched receive and send.
    pub fn run(
        &mut self,
        interval: Option<Duration>,
        mut report: impl FnMut(&Report),
    ) -> io::Result<Report> {
        let start = Instant::now();
        let mut first: Option<Instant> = None;
        let mut last = start;
        let mut next_report = interval.map(|i| start + i);
        let mut events = Events::with_capacity(1024);
        let mut batch = Batch::new(self.batch);
        let snapshot = |c: Counters, first: Option<Instant>, last: Instant, now: Instant| Report {
            counters: c,
            elapsed: now - start,
            active: first.map(|f| last - f).unwrap_or_default(),
        };
        loop {
            let timeout = next_report.map(|t| t.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == STOP {
                    return Ok(snapshot(self.counters, first, last, Instant::now()));
                }
                if self.drain(ev.token().0, &mut batch)? {
                    last = Instant::now();
                    first.get_or_insert(last);
                }
            }
            if let (Some(t), Some(i)) = (next_report, interval) {
                let now = Instant::now();
                if now >= t {
                    report(&snapshot(self.counters, first, last, now));
                    next_report = Some(t + i);
                }
            }
        }
    }

    /// Receives everything waiting on side `i` and forwards it; true if anything arrived.
    fn drain(&mut self, i: usize, batch: &mut Batch) -> io::Result<bool> {
        let mut any = false;
        loop {
            let n = match batch.recv(self.sides[i].sock.as_raw_fd()) {
                Ok(n) => n,
                // An ICMP error queued on the socket (e.g. the peer went away): not ours to stop.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(any);
            }
            any = true;
            let c = &mut self.counters;
            c.rx_calls += 1;
            c.rx_packets += n as u64;
            let bytes: u64 = (0..n).map(|k| batch.payload(k).len() as u64).sum();
            c.rx_bytes += bytes;
            if self.sides[i].peer.is_none() {
                self.sides[i].peer = Some(*batch.source(0));
            }
            let other = &self.sides[i ^ 1];
            if let Some(dest) = other.peer {
                let sent = match batch.send(other.sock.as_raw_fd(), 0..n, Some(&dest)) {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 0,
                    Err(e) => return Err(e),
                };
                c.tx_calls += 1;
                c.tx_packets += sent as u64;
                c.tx_bytes += (0..sent)
                    .map(|k| batch.payload(k).len() as u64)
                    .sum::<u64>();
                c.dropped_full += (n - sent) as u64;
            } else {
                c.dropped_unlatched += n as u64;
            }
            // A short batch emptied the queue. Edge-triggered epoll reports every datagram that
            // arrives from now on (each one wakes the socket's wait queue), so the extra
            // `recvmmsg` that would only return EAGAIN is saved: one system call per datagram
            // when RTP trickles in at 50 packets/s per port.
            if n < batch.capacity() {
                return Ok(true);
            }
        }
    }
}

/// Parses `IP:LO-HI` (or `IP:PORT` for a single port) into the address and port range.
pub fn parse_listen(s: &str) -> Result<(IpAddr, RangeInclusive<u16>), String> {
    let (ip, ports) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s}: expected IP:LO-HI"))?;
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e| format!("{ip}: {e}"))?;
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    let port = |p: &str| p.parse::<u16>().map_err(|e| format!("{p}: {e}"));
    let (lo, hi) = (port(lo)?, port(hi)?);
    if hi < lo || (u32::from(hi) - u32::from(lo) + 1) & 1 == 1 {
        return Err(format!(
            "{s}: the range must hold an even number of ports (pairs LO↔LO+1, ...)"
        ));
    }
    Ok((ip, lo..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_ranges() {
        assert_eq!(
            parse_listen("127.0.0.1:40000-40999"),
            Ok(("127.0.0.1".parse().unwrap(), 40000..=40999))
        );
        assert_eq!(
            parse_listen("[::1]:5000-5001"),
            Ok(("::1".parse().unwrap(), 5000..=5001))
        );
        assert!(
            parse_listen("127.0.0.1:40000-40002").is_err(),
            "odd number of ports"
        );
        assert!(
            parse_listen("127.0.0.1:40000").is_err(),
            "a single port has no partner"
        );
        assert!(parse_listen("127.0.0.1:5-4").is_err());
        assert!(parse_listen("localhost:1-2").is_err());
    }

    #[test]
    fn odd_socket_count_is_refused() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(Forwarder::new(vec![s], 8).is_err());
    }
}
