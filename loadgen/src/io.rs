//! Real I/O: non-blocking UDP sockets on one `mio` poll, a `timerfd` for the driver's next
//! deadline, and the event loop that drives one [`Driver`] on one thread
//! (decision 0005).
//!
//! The loop: read the clock, fire what is due ([`Driver::handle_timeout`]), arm the timer for
//! [`Driver::poll_timeout`], wait, and hand every received datagram to
//! [`Driver::handle_datagram`] with the time it was read. Sockets are read with one
//! `recvmmsg` of up to [`READ_BATCH`] datagrams ([`BatchSocket`]), round-robin, so one busy
//! socket cannot starve timers or others. A batch that comes back short means the socket is
//! drained (the poll is edge-triggered and reports the next arrival), so a socket with one
//! datagram waiting — an RTP socket, every 20 ms — costs one system call, not a read and a
//! second one that says "would block".

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::driver::{Driver, Net, Progress};
use crate::net::{BatchSocket, RecvBatch, SocketConfig};
use crate::scenario::SocketId;
use crate::sys::TimerFd;

/// Datagrams read from one socket (one `recvmmsg`) before the loop looks at the others and
/// at the timers.
pub const READ_BATCH: usize = 32;

/// Each datagram is copied from the receive batch into a chunk of this size and handed on as
/// a `Bytes` slice of it (one allocation per chunk, not per datagram).
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
    sockets: Vec<BatchSocket>,
    timer: TimerFd,
    batch: RecvBatch,
    chunk: BytesMut,
    /// The datagrams of the batch being handled, with the kernel's arrival stamps (kept to
    /// reuse its allocation).
    received: Vec<(Bytes, SocketAddr, Option<Duration>)>,
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
            batch: RecvBatch::new(READ_BATCH, MAX_DATAGRAM),
            chunk: BytesMut::with_capacity(CHUNK),
            received: Vec::with_capacity(READ_BATCH),
            ready: VecDeque::new(),
            queued: Vec::new(),
        })
    }

    /// The datagrams waiting on `socket`, up to [`READ_BATCH`], given to `each` as `Bytes`
    /// with their source and the kernel's arrival time; returns how many (0: none was
    /// waiting).
    fn recv(
        &mut self,
        socket: usize,
        mut each: impl FnMut(Bytes, SocketAddr, Option<Duration>),
    ) -> io::Result<usize> {
        let Some(s) = self.sockets.get(socket) else {
            return Ok(0);
        };
        let n = match s.recv_batch(&mut self.batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        for (data, meta) in (0..n).filter_map(|i| self.batch.get(i)) {
            if self.chunk.capacity() - self.chunk.len() < data.len() {
                self.chunk = BytesMut::with_capacity(CHUNK.max(data.len()));
            }
            self.chunk.extend_from_slice(data);
            each(self.chunk.split().freeze(), meta.source, meta.stamp);
        }
        Ok(n)
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
        // 4 MiB buffers, best effort: a smaller one only means loss under bursts, which SIP
        // retransmits and RTP counts.
        let mut socket = BatchSocket::bind_with(addr, SocketConfig::default())?;
        // Arrival stamps from the kernel, best effort: one-way delays then leave out how long
        // a datagram waited for this loop.
        let _ = socket.enable_timestamps();
        let local = socket.local_addr()?;
        let id = self.sockets.len();
        self.poll.registry().register(
            &mut SourceFd(&socket.socket().as_raw_fd()),
            Token(id),
            Interest::READABLE,
        )?;
        self.sockets.push(socket);
        self.queued.push(false);
        Ok((SocketId(id), local))
    }

    fn send_to(&mut self, socket: SocketId, dest: SocketAddr, payload: &[u8]) -> io::Result<()> {
        let s = self
            .sockets
            .get(socket.0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        s.socket().send_to(payload, dest).map(|_| ())
    }

    fn clock_us(&self) -> Option<u64> {
        Some(unix_us())
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

/// Reads one batch from each ready socket; a socket whose batch came back full stays queued
/// for the next turn.
fn read_ready(driver: &mut Driver, net: &mut UdpNet) {
    for _ in 0..net.ready.len() {
        let Some(i) = net.ready.pop_front() else {
            break;
        };
        // The batch's datagrams are taken out first: handling them sends through `net`.
        let mut received = std::mem::take(&mut net.received);
        let drained = match net.recv(i, |buf, from, at| received.push((buf, from, at))) {
            Ok(n) => n < READ_BATCH,
            Err(e) => {
                // E.g. ECONNREFUSED queued by an ICMP error: noted, and the socket read again.
                tracing::debug!(error = %e, socket = i, "recv error");
                false
            }
        };
        for (buf, from, at) in received.drain(..) {
            let at = at.map(|d| d.as_micros() as u64);
            driver.handle_datagram(net, SocketId(i), from, buf, Instant::now(), at);
        }
        net.received = received;
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

    /// Receives on `socket` until `want` datagrams came (at most 2 s).
    fn recv_all(
        net: &mut UdpNet,
        socket: SocketId,
        want: usize,
    ) -> Vec<(Bytes, SocketAddr, Option<Duration>)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < want {
            assert!(
                Instant::now() < deadline,
                "{} of {want} received",
                got.len()
            );
            if net.recv(socket.0, |b, a, t| got.push((b, a, t))).unwrap() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn binds_sends_and_receives() {
        let mut net = UdpNet::new().unwrap();
        let (a, a_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (b, b_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(a, b);
        assert_ne!(a_addr.port(), 0);
        // The kernel's arrival time: after the send, before the read, and well before it once
        // the kernel's stamping is on (it is switched on a moment after the first socket asks:
        // until then a datagram is stamped when read).
        let mut arrival = false;
        for _ in 0..50 {
            let sent_us = net.clock_us().unwrap();
            net.send_to(a, b_addr, b"hello").unwrap();
            std::thread::sleep(Duration::from_millis(30));
            let got = recv_all(&mut net, b, 1);
            let read_us = unix_us();
            assert_eq!(&got[0].0[..], b"hello");
            assert_eq!(got[0].1, a_addr);
            let at = got[0].2.expect("stamped").as_micros() as u64;
            assert!(sent_us <= at && at <= read_us, "{sent_us} {at} {read_us}");
            if at + 20_000 < read_us {
                arrival = true;
                break;
            }
        }
        assert!(arrival, "the stamps never told the arrival from the read");
        assert_eq!(net.recv(b.0, |_, _, _| panic!("nothing more")).unwrap(), 0);
    }

    #[test]
    fn batches_are_read_whole_and_in_order_across_chunks() {
        let mut net = UdpNet::new().unwrap();
        let (a, _) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (b, b_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        // More than one batch, and more bytes than one chunk (each datagram must stay whole
        // when a chunk runs out).
        let n = 3 * READ_BATCH + 5;
        let size = 2 * CHUNK / n + 1;
        for i in 0..n {
            let mut d = vec![b'x'; size];
            d[..8].copy_from_slice(&(i as u64).to_be_bytes());
            net.send_to(a, b_addr, &d).unwrap();
        }
        let got = recv_all(&mut net, b, n);
        for (i, (d, _, _)) in got.iter().enumerate() {
            assert_eq!(d.len(), size);
            assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), i as u64);
        }
    }

    #[test]
    fn a_datagram_of_the_largest_size_arrives_whole() {
        let mut net = UdpNet::new().unwrap();
        let (a, _) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let (b, b_addr) = net.bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let big = vec![7u8; 65_507];
        net.send_to(a, b_addr, &big).unwrap();
        let got = recv_all(&mut net, b, 1);
        assert_eq!(got[0].0.len(), 65_507);
    }
}
