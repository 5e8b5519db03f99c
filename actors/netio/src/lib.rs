//! # cpm-netio: batched UDP I/O
//!
//! One `recvmmsg`/`sendmmsg` system call moves up to [`MAX_BATCH`] datagrams on Linux, so a
//! single core can relay or generate hundreds of thousands of RTP packets per second. Elsewhere
//! (or when asked, to compare) the same API loops over `recv_from`/`send_to`. Shared by the
//! media plane of `cpmd` (`cpm-actors`) and the load generator (`cpm-loadgen`); see
//! `docs/decisions/0006-netio-crate.md`.
//!
//! - [`BatchSocket`]: a non-blocking UDP socket with batched send and receive.
//! - [`RecvBatch`]: preallocated slots, reused by every receive, read as `&[u8]`.
//! - [`BytesBatch`]: pooled [`bytes::BytesMut`] slots: each datagram can be taken as a
//!   [`bytes::Bytes`] without a copy, and its buffer is reused once that `Bytes` is dropped.
//!
//! All `unsafe` lives in the Linux-only `mmsg` submodule, each block with its `// SAFETY:`
//! argument, and in [`prefetch`]; the rest of the crate is safe code.
//!
//! Sockets are non-blocking: an empty receive queue or a full send buffer is
//! [`io::ErrorKind::WouldBlock`], to be waited on with the caller's poller (mio, epoll).
#![deny(missing_docs)]

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

#[cfg(target_os = "linux")]
mod mmsg;
mod pool;

#[cfg(target_os = "linux")]
pub use mmsg::RawSockAddr;
pub use pool::BytesBatch;

/// Most datagrams one system call moves; larger batches are split (and [`RecvBatch`] holds at
/// most this many slots). 64 keeps the per-call arrays on the stack small (about 6 KiB).
pub const MAX_BATCH: usize = 64;

/// How a [`BatchSocket`] moves a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One `recvmmsg`/`sendmmsg` call per batch (Linux only).
    Mmsg,
    /// One `recv_from`/`send_to` call per datagram: the portable fallback and the baseline.
    Loop,
}

impl Batching {
    /// The fastest mode this platform has.
    pub fn best() -> Self {
        if cfg!(target_os = "linux") {
            Batching::Mmsg
        } else {
            Batching::Loop
        }
    }
}

/// Socket options for [`BatchSocket::bind_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketConfig {
    /// Requested SO_RCVBUF in bytes (the kernel caps it at `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Requested SO_SNDBUF in bytes (the kernel caps it at `net.core.wmem_max`).
    pub send_buffer: usize,
    /// Batched system calls or a loop of single ones.
    pub batching: Batching,
}

impl Default for SocketConfig {
    /// 4 MiB buffers (about 24,000 RTP packets of 172 bytes) and the best batching available.
    fn default() -> Self {
        SocketConfig {
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            batching: Batching::best(),
        }
    }
}

/// This process's soft limit of open descriptors (`RLIMIT_NOFILE`). Linux only (elsewhere
/// [`io::ErrorKind::Unsupported`]).
pub fn fd_limit() -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    return mmsg::fd_limit();
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Raises this process's soft limit of open descriptors (`RLIMIT_NOFILE`) to its hard limit
/// and returns the limit now in force: a relay holds a socket per port, and a second one per
/// connected port ([`BatchSocket::open_catch_all`]). Linux only (elsewhere
/// [`io::ErrorKind::Unsupported`]).
pub fn raise_fd_limit() -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    return mmsg::raise_fd_limit();
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Asks the CPU to bring the cache line holding `value` closer (x86-64 `prefetcht0`; nothing
/// elsewhere): a relay touching per-stream state once per packet interval finds it cold, and
/// can ask for the next ready stream's while the kernel serves the current one.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetcht0 only hints the cache; it never faults and reads nothing visible, and
    // `value` is a valid reference anyway. SSE, which it needs, is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(value).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Where and how long the datagram in one [`RecvBatch`] slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes stored in the slot.
    pub len: usize,
    /// The sender.
    pub source: SocketAddr,
    /// The datagram was longer than the slot and was cut (reported by `recvmmsg` only).
    pub truncated: bool,
    /// When the kernel received it (`SO_TIMESTAMPNS`, wall clock since the Unix epoch), on a
    /// socket with [`BatchSocket::enable_timestamps`] and the `recvmmsg` path; else `None`.
    pub stamp: Option<std::time::Duration>,
}

/// Preallocated buffers for [`BatchSocket::recv_batch`]: `slots` buffers of `slot_size`
/// bytes, reused by every call, and the length and sender of what each received.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Vec<u8>,
    slot_size: usize,
    meta: Vec<RecvMeta>,
}

impl RecvBatch {
    /// `slots` buffers (clamped to 1..=[`MAX_BATCH`]) of `slot_size` bytes (at least 1).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot_size = slot_size.max(1);
        RecvBatch {
            buf: vec![0; slots * slot_size],
            slot_size,
            meta: Vec::with_capacity(slots),
        }
    }

    /// How many datagrams one call can receive.
    pub fn capacity(&self) -> usize {
        self.buf.len() / self.slot_size
    }

    /// The size of each buffer.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// How many datagrams the last call received.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The `i`-th received datagram and its metadata.
    pub fn get(&self, i: usize) -> Option<(&[u8], RecvMeta)> {
        let meta = *self.meta.get(i)?;
        let start = i * self.slot_size;
        Some((self.buf.get(start..start + meta.len)?, meta))
    }

    /// The received datagrams with their senders, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i).map(|(d, m)| (d, m.source)))
    }

    /// Empty slots to receive into, and the metadata list to fill (cleared).
    fn slots_mut(&mut self) -> (std::slice::ChunksExactMut<'_, u8>, &mut Vec<RecvMeta>) {
        self.meta.clear();
        (self.buf.chunks_exact_mut(self.slot_size), &mut self.meta)
    }
}

/// A non-blocking UDP socket that sends and receives datagrams in batches.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    batching: Batching,
    /// The peer set by [`BatchSocket::connect`].
    peer: Option<SocketAddr>,
    /// Receives report the kernel's arrival time ([`Self::enable_timestamps`]).
    stamps: bool,
}

impl BatchSocket {
    /// Binds a non-blocking socket with the default [`SocketConfig`].
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with(addr, SocketConfig::default())
    }

    /// Binds a non-blocking socket with the given buffer sizes and batching mode. Buffer sizes
    /// are best effort; [`Batching::Mmsg`] falls back to [`Batching::Loop`] off Linux.
    pub fn bind_with(addr: SocketAddr, config: SocketConfig) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: an unprivileged process gets at most rmem_max/wmem_max.
        let _ = socket.set_recv_buffer_size(config.recv_buffer);
        let _ = socket.set_send_buffer_size(config.send_buffer);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let batching = match config.batching {
            Batching::Mmsg if cfg!(target_os = "linux") => Batching::Mmsg,
            _ => Batching::Loop,
        };
        Ok(BatchSocket {
            socket: socket.into(),
            batching,
            peer: None,
            stamps: false,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The batching mode in use.
    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// The receive buffer size the kernel granted (Linux reports twice the requested value).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        SockRef::from(&self.socket).recv_buffer_size()
    }

    /// Connects the socket to `peer` (one media leg): datagrams to `peer` are then sent
    /// without an address, which spares the kernel a route lookup per packet (about 13% less
    /// CPU per packet on loopback here), and only datagrams from `peer` are received. Other
    /// destinations can still be sent to.
    pub fn connect(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.socket.connect(peer)?;
        self.peer = Some(peer);
        Ok(())
    }

    /// Undoes [`Self::connect`]: datagrams from any source are received again and every send
    /// names its destination. A socket bound to an explicit port keeps it; one bound to port 0
    /// loses the port the OS chose (Linux `udp_disconnect`). Linux only (elsewhere
    /// [`io::ErrorKind::Unsupported`]).
    pub fn disconnect(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            mmsg::disconnect(&self.socket)?;
            self.peer = None;
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Opens this socket's catch-all: a second socket bound to the same address and port, both
    /// with `SO_REUSEPORT`, that is never connected. Once `self` is [connected](Self::connect),
    /// the kernel delivers datagrams from its peer to `self` (a connected socket matches the
    /// full 4-tuple and wins) and every other source's to the catch-all, which a relay then
    /// counts or re-latches from instead of losing them. While both are unconnected the kernel
    /// spreads the sources over the two (by a hash of the source), so read both alike.
    ///
    /// Setting `SO_REUSEPORT` on `self` only now keeps its bind exclusive until then: a
    /// plain bind of the port still fails while `self` holds it alone. Linux only.
    pub fn open_catch_all(&self, config: SocketConfig) -> io::Result<BatchSocket> {
        let local = self.local_addr()?;
        SockRef::from(&self.socket).set_reuse_port(true)?;
        let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        let _ = socket.set_recv_buffer_size(config.recv_buffer);
        let _ = socket.set_send_buffer_size(config.send_buffer);
        socket.set_nonblocking(true)?;
        socket.bind(&local.into())?;
        Ok(BatchSocket {
            socket: socket.into(),
            batching: self.batching,
            peer: None,
            stamps: false,
        })
    }

    /// Has the kernel stamp each datagram with its arrival time (`SO_TIMESTAMPNS`, socket(7)),
    /// reported in [`RecvMeta::stamp`] by [`Self::recv_batch`]: a measurement of delay then
    /// does not include how long the datagram waited to be read. Linux and the `recvmmsg`
    /// path only (elsewhere [`io::ErrorKind::Unsupported`]).
    pub fn enable_timestamps(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.batching == Batching::Mmsg {
            mmsg::enable_timestamps(&self.socket)?;
            self.stamps = true;
            return Ok(());
        }
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// The peer set by [`Self::connect`].
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The underlying socket, e.g. to register it with a poller.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends each `(destination, datagram)` in order and returns how many were sent: all of them,
    /// or fewer when the send buffer filled up or a datagram was refused (the rest may be
    /// retried). An error is returned only when not even the first could be sent.
    pub fn send_batch(&self, packets: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        self.send_datagrams(packets)
    }

    /// As [`Self::send_batch`], for datagrams of any type that reads as bytes (`Bytes`,
    /// `Vec<u8>`, ...), so received `Bytes` can be sent on as they are.
    pub fn send_datagrams<B: AsRef<[u8]>>(&self, packets: &[(SocketAddr, B)]) -> io::Result<usize> {
        let mut sent = 0;
        for chunk in packets.chunks(MAX_BATCH) {
            let n = match self.send_chunk(chunk) {
                Ok(n) => n,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => return Ok(sent),
            };
            sent += n;
            if n < chunk.len() {
                break;
            }
        }
        Ok(sent)
    }

    fn send_chunk<B: AsRef<[u8]>>(&self, chunk: &[(SocketAddr, B)]) -> io::Result<usize> {
        // One datagram: a plain send is cheaper than building an mmsghdr array.
        #[cfg(target_os = "linux")]
        if self.batching == Batching::Mmsg {
            return match chunk {
                [(dest, data)] => {
                    mmsg::send_one(&self.socket, self.peer, dest, data.as_ref()).map(|_| 1)
                }
                _ => mmsg::send(&self.socket, self.peer, chunk),
            };
        }
        send_loop(&self.socket, self.peer, chunk)
    }

    /// Sends one datagram (without an address when `dest` is the connected peer).
    pub fn send_one(&self, dest: SocketAddr, data: &[u8]) -> io::Result<()> {
        send_loop(&self.socket, self.peer, &[(dest, data)]).map(|_| ())
    }

    /// Receives the datagrams waiting, up to the batch's capacity, into `batch` and returns how
    /// many; [`io::ErrorKind::WouldBlock`] when none is waiting.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let (slots, meta) = batch.slots_mut();
        #[cfg(target_os = "linux")]
        if self.batching == Batching::Mmsg {
            return mmsg::recv(&self.socket, slots, meta, self.stamps);
        }
        recv_loop(&self.socket, slots, meta)
    }

    /// As [`Self::recv_batch`], into the pooled buffers of a [`BytesBatch`]: each datagram can
    /// then be taken as [`bytes::Bytes`] without a copy.
    pub fn recv_bytes(&self, batch: &mut BytesBatch) -> io::Result<usize> {
        self.recv_bytes_upto(batch, MAX_BATCH)
    }

    /// As [`Self::recv_bytes`], offering the kernel at most `max` slots: a relay that mostly
    /// finds one datagram waiting spares itself preparing 64 (a full batch means "read again").
    pub fn recv_bytes_upto(&self, batch: &mut BytesBatch, max: usize) -> io::Result<usize> {
        let (slots, meta) = batch.prepare(max);
        #[cfg(target_os = "linux")]
        if self.batching == Batching::Mmsg {
            return mmsg::recv_bytes(&self.socket, slots, meta, self.stamps);
        }
        pool::recv_loop(&self.socket, slots, meta)
    }
}

/// The portable send path: one `send_to` (or `send` to the connected peer) per datagram,
/// stopping at the first failure.
fn send_loop<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    peer: Option<SocketAddr>,
    packets: &[(SocketAddr, B)],
) -> io::Result<usize> {
    let mut sent = 0;
    while let Some((dest, data)) = packets.get(sent) {
        let r = if Some(*dest) == peer {
            socket.send(data.as_ref())
        } else {
            socket.send_to(data.as_ref(), dest)
        };
        match r {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// The portable receive path: one `recv_from` per slot until the queue is empty.
fn recv_loop(
    socket: &UdpSocket,
    slots: std::slice::ChunksExactMut<'_, u8>,
    meta: &mut Vec<RecvMeta>,
) -> io::Result<usize> {
    for slot in slots {
        match socket.recv_from(slot) {
            Ok((len, source)) => meta.push(RecvMeta {
                len,
                source,
                truncated: false,
                stamp: None,
            }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if meta.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const MODES: [Batching; 2] = [Batching::Mmsg, Batching::Loop];

    fn bind(mode: Batching) -> BatchSocket {
        bind_at("127.0.0.1:0", mode)
    }

    fn bind_at(addr: &str, mode: Batching) -> BatchSocket {
        let config = SocketConfig {
            batching: mode,
            ..SocketConfig::default()
        };
        let s = BatchSocket::bind_with(addr.parse().unwrap(), config).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(s.batching(), mode);
        }
        s
    }

    /// Datagram `i`: its index, then filler up to a length that varies with `i`.
    fn datagram(i: usize) -> Vec<u8> {
        let mut d = (i as u32).to_be_bytes().to_vec();
        d.resize(20 + i % 150, i as u8);
        d
    }

    /// Receives until `n` datagrams arrived (or 2 s passed), returning them with their
    /// metadata, and the size of each batch.
    fn recv_meta(
        sock: &BatchSocket,
        batch: &mut RecvBatch,
        n: usize,
    ) -> (Vec<(Vec<u8>, RecvMeta)>, Vec<usize>) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let (mut got, mut sizes) = (Vec::new(), Vec::new());
        while got.len() < n && Instant::now() < deadline {
            match sock.recv_batch(batch) {
                Ok(k) => {
                    assert_eq!(k, batch.len());
                    sizes.push(k);
                    got.extend((0..k).map(|i| {
                        let (d, m) = batch.get(i).unwrap();
                        (d.to_vec(), m)
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        (got, sizes)
    }

    /// As [`recv_meta`], keeping only the data and the sender.
    fn recv_n(
        sock: &BatchSocket,
        batch: &mut RecvBatch,
        n: usize,
    ) -> (Vec<(Vec<u8>, SocketAddr)>, Vec<usize>) {
        let (got, sizes) = recv_meta(sock, batch, n);
        (got.into_iter().map(|(d, m)| (d, m.source)).collect(), sizes)
    }

    #[test]
    fn batches_of_64_round_trip_exactly() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            let data: Vec<_> = (0..64).map(datagram).collect();
            let packets: Vec<_> = data.iter().map(|d| (to, &d[..])).collect();
            assert_eq!(a.send_batch(&packets).unwrap(), 64, "{mode:?}");
            let mut batch = RecvBatch::new(64, 2048);
            let (got, _) = recv_n(&b, &mut batch, 64);
            let from = a.local_addr().unwrap();
            let expected: Vec<_> = data.into_iter().map(|d| (d, from)).collect();
            assert_eq!(got, expected, "{mode:?}");
        }
    }

    /// With timestamps on, each datagram carries the kernel's arrival time: after the send,
    /// before the read, and well before it when it is read a while later; without them, none.
    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_arrival_stamps() {
        let since_epoch = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        let (a, mut b) = (bind(Batching::Mmsg), bind(Batching::Mmsg));
        b.enable_timestamps().unwrap();
        let plain = bind(Batching::Mmsg);
        let mut batch = RecvBatch::new(8, 2048);
        // The kernel switches its receive stamping on a moment after a socket first asks
        // (net_enable_timestamp defers it to a work queue); until then a datagram gets its
        // stamp when it is read. So a few tries may see read times, never more.
        let mut arrival = false;
        for _ in 0..50 {
            let before = since_epoch();
            for to in [b.local_addr().unwrap(), plain.local_addr().unwrap()] {
                let data: Vec<_> = (0..3).map(datagram).collect();
                let packets: Vec<_> = data.iter().map(|d| (to, &d[..])).collect();
                assert_eq!(a.send_batch(&packets).unwrap(), 3);
            }
            std::thread::sleep(Duration::from_millis(30));
            let (got, _) = recv_meta(&b, &mut batch, 3);
            let read = since_epoch();
            assert_eq!(got.len(), 3);
            let stamps: Vec<_> = got.iter().map(|(_, m)| m.stamp.expect("stamped")).collect();
            assert!(
                stamps.iter().all(|&at| before <= at && at <= read),
                "{stamps:?}"
            );
            let (got, _) = recv_meta(&plain, &mut batch, 3);
            assert!(got.len() == 3 && got.iter().all(|(_, m)| m.stamp.is_none()));
            if stamps
                .iter()
                .all(|&at| at + Duration::from_millis(20) < read)
            {
                arrival = true;
                break;
            }
        }
        assert!(arrival, "the stamps never told the arrival from the read");
        // The portable path does not stamp: it says so.
        let mut looped = bind(Batching::Loop);
        assert_eq!(
            looped.enable_timestamps().unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
    }

    #[test]
    fn partial_batches() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            // Fewer datagrams than slots: one short batch.
            let data: Vec<_> = (0..10).map(datagram).collect();
            let packets: Vec<_> = data.iter().map(|d| (to, &d[..])).collect();
            assert_eq!(a.send_batch(&packets).unwrap(), 10);
            let mut batch = RecvBatch::new(64, 2048);
            let (got, sizes) = recv_n(&b, &mut batch, 10);
            assert_eq!(got.len(), 10, "{mode:?}");
            assert_eq!(sizes.iter().sum::<usize>(), 10);
            // More than MAX_BATCH sent in one call (split in chunks), read 32 at a time.
            let data: Vec<_> = (0..100).map(datagram).collect();
            let packets: Vec<_> = data.iter().map(|d| (to, &d[..])).collect();
            assert_eq!(a.send_batch(&packets).unwrap(), 100, "{mode:?}");
            let mut batch = RecvBatch::new(32, 2048);
            let (got, sizes) = recv_n(&b, &mut batch, 100);
            assert_eq!(sizes, [32, 32, 32, 4], "{mode:?}");
            assert_eq!(got.into_iter().map(|(d, _)| d).collect::<Vec<_>>(), data);
            // An empty batch sends nothing.
            assert_eq!(a.send_batch(&[]).unwrap(), 0);
        }
    }

    #[test]
    fn empty_socket_would_block() {
        for mode in MODES {
            let s = bind(mode);
            let mut batch = RecvBatch::new(8, 64);
            let e = s.recv_batch(&mut batch).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{mode:?}");
            assert!(batch.is_empty());
        }
    }

    #[test]
    fn one_batch_to_several_destinations() {
        for mode in MODES {
            let a = bind(mode);
            let (b, c) = (bind(mode), bind(mode));
            let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
            let data: Vec<_> = (0..20).map(datagram).collect();
            let packets: Vec<_> = data
                .iter()
                .enumerate()
                .map(|(i, d)| (if i % 2 == 0 { tb } else { tc }, &d[..]))
                .collect();
            assert_eq!(a.send_batch(&packets).unwrap(), 20);
            let mut batch = RecvBatch::new(64, 512);
            let (at_b, _) = recv_n(&b, &mut batch, 10);
            let (at_c, _) = recv_n(&c, &mut batch, 10);
            let even: Vec<_> = data.iter().step_by(2).cloned().collect();
            let odd: Vec<_> = data.iter().skip(1).step_by(2).cloned().collect();
            assert_eq!(at_b.into_iter().map(|(d, _)| d).collect::<Vec<_>>(), even);
            assert_eq!(at_c.into_iter().map(|(d, _)| d).collect::<Vec<_>>(), odd);
        }
    }

    #[test]
    fn connected_socket_sends_to_its_peer_and_others() {
        for mode in MODES {
            let mut a = bind(mode);
            let (b, c) = (bind(mode), bind(mode));
            let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
            a.connect(tb).unwrap();
            assert_eq!(a.peer(), Some(tb));
            let packets = [(tb, &b"peer 1"[..]), (tc, b"other"), (tb, b"peer 2")];
            assert_eq!(a.send_batch(&packets).unwrap(), 3, "{mode:?}");
            let mut batch = RecvBatch::new(8, 64);
            let (at_b, _) = recv_n(&b, &mut batch, 2);
            let (at_c, _) = recv_n(&c, &mut batch, 1);
            let from = a.local_addr().unwrap();
            let peer_data = [(b"peer 1".to_vec(), from), (b"peer 2".to_vec(), from)];
            assert_eq!(at_b, peer_data);
            assert_eq!(at_c, [(b"other".to_vec(), from)]);
            // A connected socket receives from its peer only.
            c.send_batch(&[(from, b"stranger")]).unwrap();
            b.send_batch(&[(from, b"reply")]).unwrap();
            let (at_a, _) = recv_n(&a, &mut batch, 1);
            assert_eq!(at_a, [(b"reply".to_vec(), tb)]);
            std::thread::sleep(Duration::from_millis(5));
            let e = a.recv_batch(&mut batch).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn a_disconnected_socket_receives_from_anyone_again() {
        // An explicit port (an OS-chosen one is given up by disconnect, as Linux does).
        let port = bind(Batching::Mmsg).local_addr().unwrap().port();
        let mut a = bind_at(&format!("127.0.0.1:{port}"), Batching::Mmsg);
        let (b, c) = (bind(Batching::Mmsg), bind(Batching::Mmsg));
        let from = a.local_addr().unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        a.disconnect().unwrap();
        assert_eq!(a.peer(), None);
        assert_eq!(a.local_addr().unwrap(), from, "still bound where it was");
        c.send_batch(&[(from, b"anyone")]).unwrap();
        let mut batch = RecvBatch::new(4, 64);
        let (got, _) = recv_n(&a, &mut batch, 1);
        assert_eq!(got, [(b"anyone".to_vec(), c.local_addr().unwrap())]);
        // Disconnecting an unconnected socket is harmless.
        a.disconnect().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_catch_all_receives_what_the_connected_socket_does_not() {
        let mut main = bind(Batching::Mmsg);
        let here = main.local_addr().unwrap();
        let catch_all = main.open_catch_all(SocketConfig::default()).unwrap();
        assert_eq!(catch_all.local_addr().unwrap(), here);
        let (peer, stranger, peer2) = (
            bind(Batching::Mmsg),
            bind(Batching::Mmsg),
            bind(Batching::Mmsg),
        );
        main.connect(peer.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(64, 64);
        // Many datagrams each, so a hash spreading them would show on both sockets.
        for i in 0..40u8 {
            peer.send_batch(&[(here, &[i][..])]).unwrap();
            stranger.send_batch(&[(here, &[100 + i][..])]).unwrap();
        }
        let (at_main, _) = recv_n(&main, &mut batch, 40);
        let (at_catch_all, _) = recv_n(&catch_all, &mut batch, 40);
        let from = |s: &BatchSocket| s.local_addr().unwrap();
        assert_eq!(at_main.len(), 40);
        assert!(at_main.iter().all(|(_, a)| *a == from(&peer)));
        assert_eq!(at_catch_all.len(), 40);
        assert!(at_catch_all.iter().all(|(_, a)| *a == from(&stranger)));
        // Connected again, elsewhere: the old peer is now a stranger.
        main.connect(from(&peer2)).unwrap();
        for i in 0..20u8 {
            peer2.send_batch(&[(here, &[i][..])]).unwrap();
            peer.send_batch(&[(here, &[i][..])]).unwrap();
        }
        let (at_main, _) = recv_n(&main, &mut batch, 20);
        let (at_catch_all, _) = recv_n(&catch_all, &mut batch, 20);
        assert!(at_main.len() == 20 && at_main.iter().all(|(_, a)| *a == from(&peer2)));
        assert!(at_catch_all.len() == 20 && at_catch_all.iter().all(|(_, a)| *a == from(&peer)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(main.recv_batch(&mut batch).is_err() && catch_all.recv_batch(&mut batch).is_err());
        // Another process's plain bind of the port still fails.
        assert!(UdpSocket::bind(here).is_err());
    }

    #[test]
    fn ipv6_loopback() {
        for mode in MODES {
            let (a, b) = (bind_at("[::1]:0", mode), bind_at("[::1]:0", mode));
            let to = b.local_addr().unwrap();
            assert_eq!(a.send_batch(&[(to, b"six"), (to, b"v6")]).unwrap(), 2);
            let mut batch = RecvBatch::new(4, 64);
            let (got, _) = recv_n(&b, &mut batch, 2);
            let from = a.local_addr().unwrap();
            assert_eq!(got, [(b"six".to_vec(), from), (b"v6".to_vec(), from)]);
        }
    }

    #[test]
    fn oversized_datagrams_are_cut_to_the_slot() {
        for mode in MODES {
            let (a, b) = (bind(mode), bind(mode));
            let to = b.local_addr().unwrap();
            let big = [7u8; 100];
            a.send_batch(&[(to, &big[..]), (to, &big[..10])]).unwrap();
            let mut batch = RecvBatch::new(4, 16);
            let (got, _) = recv_meta(&b, &mut batch, 2);
            assert_eq!(got[0].0, [7u8; 16]);
            assert_eq!(got[0].1.len, 16);
            assert_eq!(got[1].0, [7u8; 10]);
            assert!(!got[1].1.truncated);
            // Only recvmmsg reports the cut (MSG_TRUNC).
            assert_eq!(got[0].1.truncated, mode == Batching::Mmsg, "{mode:?}");
        }
    }

    #[test]
    fn recv_batch_slots_are_clamped() {
        assert_eq!(RecvBatch::new(0, 10).capacity(), 1);
        assert_eq!(RecvBatch::new(1000, 10).capacity(), MAX_BATCH);
        assert_eq!(RecvBatch::new(4, 0).slot_size(), 1);
        assert!(RecvBatch::new(4, 10).get(0).is_none());
    }
}
