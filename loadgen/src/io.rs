//! Real I/O: non-blocking UDP sockets on one `mio` poll, a `timerfd` for the driver's next
//! deadline, and the event loop that drives one [`Driver`] on one thread
//! (decision 0005).
//!
//! The loop: read the clock, fire what is due ([`Driver::handle_timeout`]), arm the timer for
//! [`Driver::poll_timeout`], wait, and hand every received datagram to
//! [`Driver::handle_datagram`] with the time it was read. Sockets are drained in batches of
//! [`READ_BATCH`] datagrams, round-robin, so one busy socket cannot starve timers or others.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::driver::{Driver, Net, Progress};
use crate::scenario::SocketId;
use crate::sys::TimerFd;

/// Datagrams read from one socket before the loop looks at the others and at the timers.
pub const READ_BATCH: usize = 64;

/// Socket buffer size asked for (the kernel may clamp it to `net.core.[rw]mem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// Receive buffers are carved from chunks of this size, so each datagram is a `Bytes` slice
/// of a shared chunk (no copy, no allocation per datagram).
const CHUNK: usize = 1 << 20;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

const TIMER: Token = Token(usize::MAX);

/// The wall clock in µs since the Unix epoch.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// UDP sockets on one poll.
pub struct UdpNet {
    poll: Poll,
    sockets: Vec<UdpSocket>,
    timer: TimerFd,
    chunk: BytesMut,
    /// Sockets that may hold more datagrams (readable, batch not drained).
    ready: VecDeque<usize>,
    queued: Vec<bool>,
}

impl UdpNet {
    /// An empty set of sockets.
    pub fn new() -> io::Result<UdpNet> {
        let poll = Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(UdpNet {
            poll,
            sockets: Vec::new(),
            timer,
            chunk: BytesMut::zeroed(CHUNK),
            ready: VecDeque::new(),
            queued: Vec::new(),
        })
    }

    /// One datagram from `socket`, if one is waiting.
    fn recv(&mut self, socket: usize) -> io::Result<Option<(Bytes, SocketAddr)>> {
        if self.chunk.len() < MAX_DATAGRAM {
            self.chunk = BytesMut::zeroed(CHUNK);
        }
        let Some(s) = self.sockets.get(socket) else {
            return Ok(None);
        };
        match s.recv_from(&mut self.chunk[..]) {
            Ok((n, from)) => Ok(Some((self.chunk.split_to(n).freeze(), from))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn mark_ready(&mut self, socket: usize) {
        if let Some(q) = self.queued.get_mut(socket) {
            if !*q {
                *q = true;
                self.ready.push_back(socket);
            }
        }
    }
}

impl Net for UdpNet {
    fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<(SocketId, SocketAddr)> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_nonblocking(true)?;
        // Best effort: a smaller buffer only means loss under bursts, which SIP retransmits.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.bind(&addr.into())?;
        let std_socket: std::net::UdpSocket = s.into();
        let local = std_socket.local_addr()?;
        let mut socket = UdpSocket::from_std(std_socket);
        let id = self.sockets.len();
        self.poll
            .registry()
            .register(&mut socket, Token(id), Interest::READABLE)?;
        self.sockets.push(socket);
        self.queued.push(false);
        Ok((SocketId(id), local))
    }

    fn send_to(&mut self, socket: SocketId, dest: SocketAddr, payload: &[u8]) -> io::Result<()> {
        let s = self
            .sockets
            .get(socket.0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        s.send_to(payload, dest).map(|_| ())
    }
}

/// Called once when the driver first reports ready.
pub type OnReady<'a> = Box<dyn FnOnce(&Driver) + 'a>;

/// How [`run`] behaves.
pub struct LoopOptions<'a> {
    /// Set from outside to stop the run gracefully (drain, then report).
    pub stop: &'a AtomicBool,
    /// Also stop on SIGINT/SIGTERM (see [`crate::sys::install_stop_handler`]).
    pub signals: bool,
    /// Called about once a second with the progress figures (the live progress line).
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
    /// Called once when the driver first reports ready (e.g. to print a ready line).
    pub on_ready: Option<OnReady<'a>>,
}

/// Runs `driver` on `net` until it is done. The driver must have been set up.
pub fn run(driver: &mut Driver, net: &mut UdpNet, mut opts: LoopOptions<'_>) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut armed: Option<Instant> = None;
    let mut last_anchor = Instant::now();
    let mut last_progress_second = 0u64;
    loop {
        let now = Instant::now();
        if opts.stop.load(Ordering::Relaxed) || (opts.signals && crate::sys::stop_requested()) {
            driver.stop(net, now);
        }
        if opts.signals && crate::sys::abort_requested() {
            driver.abort("interrupted", now);
        }
        driver.handle_timeout(net, now);
        if now.duration_since(last_anchor) >= Duration::from_secs(1) {
            driver.anchor_wall_clock(now, unix_us());
            last_anchor = now;
        }
        if driver.is_ready() {
            if let Some(f) = opts.on_ready.take() {
                f(driver);
            }
        }
        if let Some(p) = opts.progress.as_mut() {
            let pr = driver.progress(now);
            let s = pr.elapsed.as_secs();
            if s > last_progress_second {
                last_progress_second = s;
                p(&pr);
            }
        }
        if driver.is_done() {
            return Ok(());
        }

        // Wait until the next deadline, a datagram, or at most 100 ms (to see the stop flag).
        let timeout = if !net.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            match driver.poll_timeout() {
                Some(at) if at <= Instant::now() => Some(Duration::ZERO),
                Some(at) => {
                    if armed != Some(at) {
                        net.timer.set(Some(at - Instant::now()))?;
                        armed = Some(at);
                    }
                    Some(Duration::from_millis(100))
                }
                None => Some(Duration::from_millis(100)),
            }
        };
        match net.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                TIMER => {
                    net.timer.drain();
                    armed = None;
                }
                Token(i) => net.mark_ready(i),
            }
        }
        read_ready(driver, net);
    }
}

/// Reads up to [`READ_BATCH`] datagrams from each ready socket once; sockets not drained stay
/// queued for the next turn.
fn read_ready(driver: &mut Driver, net: &mut UdpNet) {
    for _ in 0..net.ready.len() {
        let Some(i) = net.ready.pop_front() else {
            break;
        };
        let mut drained = false;
        for _ in 0..READ_BATCH {
            match net.recv(i) {
                Ok(Some((buf, from))) => {
                    driver.handle_datagram(net, SocketId(i), from, buf, Instant::now())
                }
                Ok(None) => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // E.g. ECONNREFUSED queued by an ICMP error: skip it and read on.
                    tracing::debug!(error = %e, socket = i, "recv error");
                }
            }
        }
        if drained {
            net.queued[i] = false;
        } else {
            net.ready.push_back(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_sends_and_receives() {
        let mut net = UdpNet::new().unwrap();
        let (a, a_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (b, b_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a_addr.port(), 0);
        net.send_to(a, b_addr, b"hello").unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some((buf, from)) = net.recv(b.0).unwrap() {
                assert_eq!(&buf[..], b"hello");
                assert_eq!(from, a_addr);
                break;
            }
            assert!(Instant::now() < deadline, "datagram not received");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(net.recv(b.0).unwrap().is_none());
    }
}
