//! The media loop's io_uring path (`--media-io io_uring`; docs/decisions/0009-media-plane.md,
//! "io_uring").
//!
//! The same legs, checks and counts as the `epoll` path ([`super::leg::Leg::accept`]); what
//! changes is how datagrams come in and go out:
//!
//! - every receiving socket has one **multishot `recvmsg`** armed (`IORING_RECV_MULTISHOT`,
//!   Linux 6.0) that lasts as long as the socket: each datagram arrives as a completion, in a
//!   buffer the loop lent the kernel through a **provided buffer ring** ([`BUFFERS`] slots of
//!   [`SLOT_SIZE`] bytes), with its source address in front of it;
//! - the datagram is relayed as a `send` (or `sendmsg` with the address, on a socket that is
//!   not connected to it) queued on the ring, from that same buffer (no copy): the buffer goes
//!   back to the kernel when the send completes;
//! - sockets are **registered files** (no descriptor lookup and reference count per
//!   operation), and the ring is **single issuer with deferred task work**: the kernel does a
//!   datagram's receive work when the loop asks for completions, not by interrupting it.
//!
//! So one `io_uring_enter` per busy turn (submit the sends and sleep out the pace; the kernel
//! does the receive work that came meanwhile when the wait ends), and a second only when the
//! kernel flags deferred work left (`IORING_SQ_TASKRUN`), replace, per datagram, the
//! `recvmmsg`, the send and the `epoll` bookkeeping of the other path. The loop's `epoll` set
//! (command waker, conference rooms) is watched by a multishot poll on its descriptor.
//!
//! A leg's sockets are taken off the ring before they are closed: a synchronous cancel of
//! each receive, found by its user data, then their registered-file slot is cleared, so the
//! port is free when the close is answered, as on the other path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cpm_netio::{BatchSocket, RawSockAddr};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use parking_lot::Mutex;

use super::leg::Forward;
use super::relay_loop::SLOT_SIZE;

/// Receive buffers lent to the kernel (a power of two): 4 MiB per loop. At 100,000 datagrams
/// a second and a 500 µs pace about 50 are in use at a time.
pub(crate) const BUFFERS: u16 = 2048;

/// The provided buffer group of the receive buffers.
const GROUP: u16 = 0;

/// Submission queue entries; the completion queue has four times as many.
const SQ_ENTRIES: u32 = 4096;

/// Completions asked for in a paced wait: the kernel wakes the loop before the pace is out
/// only when this many are ready, and when the wait ends runs deferred receive work for up
/// to this many requests (`max(20, asked)` per enter, IO_LOCAL_TW_DEFAULT_MAX), so that one
/// enter takes a whole turn's datagrams.
const GATHER: usize = 4096;

/// Registered-file slots at most (also bounded by `RLIMIT_NOFILE`); a socket beyond them is
/// used by descriptor.
const MAX_FILES: u64 = 1 << 16;

/// What a completion is: the top two bits of its user data.
const KIND: u64 = 3 << 62;
/// A receive: `RECV | generation << 32 | token` (token: `slot << 3 | receiver`).
pub(crate) const RECV: u64 = 1 << 62;
/// A send: `SEND | index into the send table`.
pub(crate) const SEND: u64 = 2 << 62;
/// The poll on the `epoll` descriptor.
pub(crate) const EPOLL: u64 = 3 << 62;

/// The kind of a completion's user data.
pub(crate) fn kind(user_data: u64) -> u64 {
    user_data & KIND
}

/// The generation and token of a receive's user data.
pub(crate) fn recv_id(user_data: u64) -> (u32, u32) {
    (((user_data >> 32) & 0x3fff_ffff) as u32, user_data as u32)
}

/// The user data of receiver `token` of a leg slot in generation `generation`.
fn recv_user_data(generation: u32, token: u32) -> u64 {
    RECV | u64::from(generation & 0x3fff_ffff) << 32 | u64::from(token)
}

/// The memory of the receive buffers. The kernel writes into the slots it holds; a slot it
/// filled is read through a [`Lent`] until that is dropped, which hands the slot back.
struct Region {
    base: *mut u8,
    /// Slots whose [`Lent`] was dropped, to be given back to the kernel.
    returned: Mutex<Vec<u16>>,
}

// SAFETY: `base` is a heap allocation owned by the region; slot memory is only read through
// `Lent`s (one per slot at a time) and written by the kernel while the slot is its own.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(usize::from(BUFFERS) * SLOT_SIZE, 4096)
            .expect("buffer region layout")
    }

    fn new() -> io::Result<Region> {
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(Region::layout()) };
        if base.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(Region {
            base,
            returned: Mutex::new(Vec::with_capacity(usize::from(BUFFERS))),
        })
    }

    fn slot(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < BUFFERS (checked by callers), so the offset is inside the allocation.
        unsafe { self.base.add(usize::from(bid) * SLOT_SIZE) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that wrote into it is gone
        // (it is dropped first) and no `Lent` is alive (each holds the region).
        unsafe { std::alloc::dealloc(self.base, Region::layout()) }
    }
}

/// A received datagram in a slot of the region, owned until dropped (as a [`Bytes`] owner).
struct Lent {
    region: Arc<Region>,
    bid: u16,
    start: u16,
    len: u16,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slot is not the kernel's while this `Lent` lives, and `start + len`
        // lies within it (checked when the `Lent` was made).
        unsafe {
            std::slice::from_raw_parts(
                self.region.slot(self.bid).add(usize::from(self.start)),
                usize::from(self.len),
            )
        }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.region.returned.lock().push(self.bid);
    }
}

/// The ring the kernel takes receive buffers from (`IORING_REGISTER_PBUF_RING`).
struct BufRing {
    entries: *mut types::BufRingEntry,
    tail: u16,
}

impl BufRing {
    const BYTES: usize = BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>();

    fn new() -> io::Result<BufRing> {
        // SAFETY: an anonymous private mapping (page aligned, as the kernel requires).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BufRing::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BufRing {
            entries: p.cast(),
            tail: 0,
        })
    }

    /// Queues slot `bid` for the kernel (visible after [`Self::publish`]).
    fn provide(&mut self, region: &Region, bid: u16) {
        // SAFETY: the index is masked into the mapping; the entry past the tail is ours.
        let e = unsafe { &mut *self.entries.add(usize::from(self.tail & (BUFFERS - 1))) };
        e.set_addr(region.slot(bid) as u64);
        e.set_len(SLOT_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of the ring's first entry, shared with the kernel (u16).
        let tail = unsafe { &*types::BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this size; the ring using it is gone (dropped first).
        unsafe { libc::munmap(self.entries.cast(), BufRing::BYTES) };
    }
}

/// A send in flight: what it sends and whose it is, at a stable address (the kernel reads
/// `hdr`, `iov` and `name` until it completes).
struct Outgoing {
    bytes: Option<Bytes>,
    name: RawSockAddr,
    iov: libc::iovec,
    hdr: libc::msghdr,
    /// The receiving leg slot's generation and token, and whether it is RTCP (for counting).
    generation: u32,
    token: u32,
    is_rtcp: bool,
}

/// What a completed send was.
pub(crate) struct Sent {
    pub generation: u32,
    pub token: u32,
    pub len: usize,
    pub is_rtcp: bool,
    pub ok: bool,
}

/// How the ring names a socket: its registered-file slot, or its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum File {
    Fixed(u32),
    Fd(RawFd),
}

/// The ring, its buffers and sends, for one media loop thread.
pub(crate) struct Uring {
    // Dropped first: the kernel lets go of the buffers and descriptors before they go.
    ring: IoUring,
    bufs: BufRing,
    region: Arc<Region>,
    /// The receive header: names up to an IPv6 address, no control data.
    recv_hdr: Box<libc::msghdr>,
    sends: Box<[Outgoing]>,
    free_sends: Vec<u32>,
    free_files: Vec<u32>,
    /// Completions of the last [`Self::wait`]: user data, result, flags.
    pub cqes: Vec<(u64, i32, u32)>,
    /// Receives whose multishot ended (buffers ran out, an error): armed again after the turn.
    rearm: Vec<(File, u64)>,
    /// The kernel takes absolute wait deadlines (until it refuses one).
    abs_timer: bool,
    /// The loop's `epoll` set, polled on the ring; its multishot poll ended (re-armed at the
    /// turn's end).
    epoll_fd: RawFd,
    epoll_ended: bool,
}

impl Uring {
    /// A ring watching `epoll_fd` (the loop's other descriptors) besides the relay sockets.
    pub fn new(epoll_fd: RawFd) -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(SQ_ENTRIES * 4)
            .build(SQ_ENTRIES)?;
        // The registered-file table may not be larger than the soft RLIMIT_NOFILE.
        let files = cpm_netio::fd_limit().unwrap_or(1024).clamp(64, MAX_FILES) as u32;
        ring.submitter().register_files_sparse(files)?;
        let region = Arc::new(Region::new()?);
        let mut bufs = BufRing::new()?;
        // SAFETY: the ring memory stays mapped until after the ring is dropped.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                BUFFERS,
                GROUP,
                0,
            )?;
        }
        for bid in 0..BUFFERS {
            bufs.provide(&region, bid);
        }
        bufs.publish();
        // SAFETY: a zeroed msghdr is a valid empty one.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        let sends = (0..BUFFERS)
            .map(|_| Outgoing {
                bytes: None,
                name: RawSockAddr::new(&SocketAddr::from(([0, 0, 0, 0], 0))),
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                // SAFETY: a plain C structure; all-zero is an empty msghdr.
                hdr: unsafe { std::mem::zeroed() },
                generation: 0,
                token: 0,
                is_rtcp: false,
            })
            .collect();
        let mut u = Uring {
            ring,
            bufs,
            region,
            recv_hdr,
            sends,
            free_sends: (0..u32::from(BUFFERS)).rev().collect(),
            free_files: (0..files).rev().collect(),
            cqes: Vec::with_capacity(GATHER),
            rearm: Vec::new(),
            abs_timer: true,
            epoll_fd,
            epoll_ended: false,
        };
        u.arm_epoll()?;
        u.ring.submit()?;
        Ok(u)
    }

    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every pointer in the entries (headers, buffers) outlives the request.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
    }

    fn arm_epoll(&mut self) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(self.epoll_fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(EPOLL);
        self.push(&e)
    }

    /// Starts receiving on `socket` as receiver `token` of generation `generation`; returns
    /// how the ring names it (to send from it, and for [`Self::remove`]).
    pub fn add(&mut self, socket: &BatchSocket, generation: u32, token: u32) -> io::Result<File> {
        let fd = socket.socket().as_raw_fd();
        let file = match self.free_files.pop() {
            Some(i) => match self.ring.submitter().register_files_update(i, &[fd]) {
                Ok(_) => File::Fixed(i),
                Err(e) => {
                    self.free_files.push(i);
                    tracing::debug!(error = %e, "registered file update failed; by descriptor");
                    File::Fd(fd)
                }
            },
            None => File::Fd(fd),
        };
        self.arm(file, recv_user_data(generation, token))?;
        Ok(file)
    }

    fn arm(&mut self, file: File, user_data: u64) -> io::Result<()> {
        let e = match file {
            File::Fixed(i) => opcode::RecvMsgMulti::new(types::Fixed(i), &*self.recv_hdr, GROUP),
            File::Fd(fd) => opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_hdr, GROUP),
        }
        .build()
        .user_data(user_data);
        self.push(&e)
    }

    /// Stops the receive on `file` (receiver `token` of generation `generation`)
    /// synchronously, frees its registered slot, and forgets a re-arm it was waiting for: the
    /// kernel then holds no reference to the socket but for a send still in flight from it
    /// (those complete at once on a UDP socket, unless its send buffer is full), and the
    /// socket can be closed.
    ///
    /// The receive is found by its user data, a lookup in the kernel's cancel hash: a cancel
    /// by descriptor walks every armed request of the ring (one per socket of every leg), which
    /// at a thousand calls a second cost most of the loop's time (`io_poll_file_find`).
    pub fn remove(&mut self, file: File, generation: u32, token: u32) {
        // Queued requests must be submitted to be found by the cancel.
        let _ = self.submit();
        let builder = types::CancelBuilder::user_data(recv_user_data(generation, token));
        match self.ring.submitter().register_sync_cancel(None, builder) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => tracing::debug!(error = %e, "media ring: cancel failed"),
        }
        self.rearm.retain(|(f, _)| *f != file);
        if let File::Fixed(i) = file {
            match self.ring.submitter().register_files_update(i, &[-1]) {
                Ok(_) => self.free_files.push(i),
                Err(e) => tracing::warn!(error = %e, "media ring: cannot free a file slot"),
            }
        }
    }

    /// Submits what is queued and collects completions into [`Self::cqes`]: with `gather`,
    /// all that are ready after `timeout` (the kernel wakes the loop earlier only for
    /// [`GATHER`] of them); else waits up to `timeout` for the first. A zero `timeout` never
    /// sleeps.
    pub fn wait(&mut self, gather: bool, timeout: Duration) -> io::Result<()> {
        if timeout.is_zero() {
            self.collect()?;
        } else if gather {
            // The sleep, ending at a time fixed before the queued sends go out in the same
            // call (they take a while in a busy turn); then what deferred work is left.
            self.sleep(timeout)?;
            self.collect()?;
        } else {
            self.enter(1, timeout)?;
        }
        self.cqes.clear();
        let mut cq = self.ring.completion();
        cq.sync();
        self.cqes
            .extend(cq.map(|c| (c.user_data(), c.result(), c.flags())));
        Ok(())
    }

    /// Submits what is queued and sleeps until `timeout` from now (an absolute deadline,
    /// `IORING_ENTER_ABS_TIMER`, Linux 6.12; before it, a duration counted after the submit).
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        if self.abs_timer {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the struct; CLOCK_MONOTONIC is the ring's clock.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
            let deadline = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + timeout;
            let ts = types::Timespec::from(deadline);
            let args = types::SubmitArgs::new().timespec(&ts);
            let flags = io_uring::EnterFlags::ABS_TIMER;
            match self
                .ring
                .submitter()
                .submit_with_args_and_flags(GATHER, &args, flags)
            {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.abs_timer = false,
                Err(e)
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) =>
                {
                    return Err(e)
                }
                _ => return Ok(()),
            }
        }
        self.enter(GATHER, timeout)
    }

    /// Submits what is queued and runs the receive work the kernel deferred to this thread
    /// (`IORING_SETUP_DEFER_TASKRUN`), without waiting: one enter at most, none when there
    /// is neither.
    ///
    /// The kernel says it has deferred work in the submission ring's flags
    /// (`IORING_SQ_TASKRUN`, with `IORING_SETUP_TASKRUN_FLAG`), and an enter without a wait
    /// runs a bounded part of it (20 items in Linux 6.13 and later; the rest, and what comes
    /// meanwhile, waits for the next turn: looping until the flag stays clear chased each
    /// arriving datagram, two enters a packet). An enter that asks for more completions than
    /// are ready with a zero timeout would run all of it, but sleeps on an expired timer: a
    /// timer interrupt and two context switches per call, on a virtual machine most of what
    /// a quiet loop costs.
    fn collect(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() && !self.ring.submission().taskrun() {
            return Ok(());
        }
        match self.ring.submit() {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Err(e),
            _ => Ok(()),
        }
    }

    /// One `io_uring_enter`: submits what is queued, waits up to `timeout` for `want`
    /// completions.
    fn enter(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// The datagram of a receive completion (`result`, `flags`): its source, whether it was
    /// cut, and its bytes; `None` for an error or a datagram without a readable source.
    /// A multishot that ended (no `IORING_CQE_F_MORE`) is armed again after the turn.
    pub fn datagram(
        &mut self,
        file: Option<File>,
        user_data: u64,
        result: i32,
        flags: u32,
    ) -> Option<(SocketAddr, bool, Bytes)> {
        if !cqueue::more(flags) {
            if let Some(file) = file {
                self.rearm.push((file, user_data));
            }
        }
        let bid = cqueue::buffer_select(flags)?;
        let parsed = (result >= 0 && bid < BUFFERS)
            .then(|| {
                // SAFETY: the kernel filled `result` bytes of the slot, which is ours now.
                let buf =
                    unsafe { std::slice::from_raw_parts(self.region.slot(bid), result as usize) };
                let out = types::RecvMsgOut::parse(buf, &self.recv_hdr).ok()?;
                let source = RawSockAddr::parse(out.name_data())?;
                let payload = out.payload_data();
                let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
                Some((source, out.is_payload_truncated(), start, payload.len()))
            })
            .flatten();
        let Some((source, truncated, start, len)) = parsed else {
            if bid < BUFFERS {
                self.region.returned.lock().push(bid);
            }
            return None;
        };
        let bytes = Bytes::from_owner(Lent {
            region: self.region.clone(),
            bid,
            start: start as u16,
            len: len as u16,
        });
        Some((source, truncated, bytes))
    }

    /// Queues the send of `f` from `socket` (named `file` by the ring); false when it could
    /// not be queued (dropped, counted by the caller as a failed send).
    pub fn send(
        &mut self,
        file: File,
        socket: &BatchSocket,
        f: Forward,
        generation: u32,
        token: u32,
    ) -> bool {
        let Some(i) = self.free_sends.pop() else {
            return false;
        };
        let s = &mut self.sends[i as usize];
        let (ptr, len) = (f.bytes.as_ptr(), f.bytes.len());
        s.is_rtcp = f.is_rtcp;
        s.generation = generation;
        s.token = token;
        s.bytes = Some(f.bytes);
        let connected = socket.peer() == Some(f.dest);
        let entry = if connected {
            match file {
                File::Fixed(x) => opcode::Send::new(types::Fixed(x), ptr, len as u32).build(),
                File::Fd(fd) => opcode::Send::new(types::Fd(fd), ptr, len as u32).build(),
            }
        } else {
            s.iov = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            s.name = RawSockAddr::new(&f.dest);
            s.hdr.msg_name = s.name.as_mut_ptr();
            s.hdr.msg_namelen = s.name.len();
            s.hdr.msg_iov = &mut s.iov;
            s.hdr.msg_iovlen = 1;
            match file {
                File::Fixed(x) => opcode::SendMsg::new(types::Fixed(x), &s.hdr).build(),
                File::Fd(fd) => opcode::SendMsg::new(types::Fd(fd), &s.hdr).build(),
            }
        };
        let entry = entry.user_data(SEND | u64::from(i));
        if self.push(&entry).is_err() {
            self.sends[i as usize].bytes = None;
            self.free_sends.push(i);
            return false;
        }
        true
    }

    /// Completes send `user_data` with `result`: frees its entry (and buffer).
    pub fn sent(&mut self, user_data: u64, result: i32) -> Option<Sent> {
        let i = (user_data & !KIND) as u32;
        let s = self.sends.get_mut(i as usize)?;
        let bytes = s.bytes.take()?;
        self.free_sends.push(i);
        Some(Sent {
            generation: s.generation,
            token: s.token,
            len: bytes.len(),
            is_rtcp: s.is_rtcp,
            ok: result >= 0,
        })
    }

    /// The end of a turn: returned buffers back to the kernel, ended receives armed again
    /// (`is_live`: the receiver still exists). What is queued goes with the next wait.
    pub fn end_turn(&mut self, is_live: impl Fn(u64) -> bool) -> io::Result<()> {
        {
            let mut returned = self.region.returned.lock();
            for &bid in returned.iter() {
                self.bufs.provide(&self.region, bid);
            }
            returned.clear();
        }
        self.bufs.publish();
        if std::mem::take(&mut self.epoll_ended) {
            self.arm_epoll()?;
        }
        for (file, user_data) in std::mem::take(&mut self.rearm) {
            if is_live(user_data) {
                self.arm(file, user_data)?;
            }
        }
        Ok(())
    }

    /// Hands what is queued to the kernel now, and nothing else: the deferred receive work
    /// is not run (no `IORING_ENTER_GETEVENTS`, which the crate's `submit` adds when the
    /// kernel flags such work), so no datagram is taken off a socket by this call. The
    /// connect of a latched socket relies on it: what its receive has not taken yet is read
    /// directly after the ring's sends, in order.
    pub fn submit(&mut self) -> io::Result<()> {
        let queued = self.ring.submission().len();
        if queued > 0 {
            // SAFETY: the entries queued point at memory the ring owns (headers, send
            // buffers) until their completions; no argument is passed.
            unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(queued as u32, 0, 0, None)?;
            }
        }
        Ok(())
    }

    /// The `epoll` poll ended (no more completions from it): armed again at the turn's end.
    pub fn rearm_epoll(&mut self) {
        self.epoll_ended = true;
    }
}

impl Drop for Uring {
    /// Cancels whatever is still on the ring (the loop closes its legs first; this covers a
    /// loop that ended otherwise) before the buffers it may write into are freed.
    fn drop(&mut self) {
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_keeps_kind_generation_and_token() {
        let u = recv_user_data(0x3fff_ffff, 0xdead_beef);
        assert_eq!(kind(u), RECV);
        assert_eq!(recv_id(u), (0x3fff_ffff, 0xdead_beef));
        assert_eq!(kind(SEND | 7), SEND);
        assert_eq!(kind(EPOLL), EPOLL);
    }
}
