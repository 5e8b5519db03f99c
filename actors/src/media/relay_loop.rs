//! The media loop: one thread per worker, one `epoll` set (mio) over every relay socket of
//! that worker, commands from the control side on a crossbeam channel with a [`Waker`].
//!
//! Each turn: wait for readiness (at most until the next once-a-second publish), apply the
//! commands that arrived (so a peer set before a packet arrived applies to it), then relay
//! what the ready sockets hold. Sockets are registered
//! edge-triggered: a socket is read until a batch comes back short (drained) or
//! [`MAX_BATCHES_PER_TURN`] batches were relayed, in which case it is read again next turn
//! before waiting.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpm_netio::{BatchSocket, BytesBatch, SocketConfig, MAX_BATCH};
use crossbeam::channel::{Receiver, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;

use super::leg::{receiver_side, socket_index, Leg, Outbox, CATCH_ALL, RECEIVERS};
use super::room::{Rooms, ROOM_TOKEN_BASE};
use super::stats::{bump, DropReason, LegShared, Tally};
use super::uring::{self, File, Uring};
use super::{LegId, LegStats, MediaConfig, MediaIo, Side};
use crate::metrics::{MediaMetrics, WorkerMetrics};

/// Batches (of up to 64 datagrams) relayed from one socket before the others get a turn.
pub const MAX_BATCHES_PER_TURN: usize = 8;

/// Datagrams the first receive of a turn asks for: at RTP rates a port holds one or two, and
/// a smaller request costs less to prepare; a full one is followed by receives of 64.
pub(crate) const FIRST_WINDOW: usize = 4;

/// Receive buffer size: an Ethernet MTU's datagram fits; a longer one is cut and dropped.
pub(crate) const SLOT_SIZE: usize = 2048;

/// How often RTP figures and latched addresses are published for the control side.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The token of the command waker; sockets use `slot << 3 | receiver index` (see
/// [`RECEIVERS`]).
pub(crate) const WAKER: Token = Token(usize::MAX);

/// The poll token of receiver `k` of the leg in `slot`.
fn token(slot: usize, k: usize) -> Token {
    Token(slot << 3 | k)
}

/// What the control side asks of the loop.
pub(crate) enum Command {
    /// Start relaying on these (bound) sockets.
    Open(Box<OpenLeg>),
    /// The SDP address of one side.
    SetPeer {
        id: LegId,
        side: Side,
        rtp: std::net::SocketAddr,
        rtcp: Option<std::net::SocketAddr>,
    },
    /// Close the sockets; reply with the final figures once they are closed.
    Close {
        id: LegId,
        reply: Option<oneshot::Sender<LegStats>>,
    },
    /// Publish the leg's figures now and reply with them.
    Snapshot {
        id: LegId,
        reply: oneshot::Sender<LegStats>,
    },
    /// A conference room command.
    Room(super::room::RoomCommand),
    /// Close every leg and end the thread.
    Shutdown,
}

/// A leg to open.
pub(crate) struct OpenLeg {
    pub id: LegId,
    pub sockets: [Option<BatchSocket>; 4],
    pub shared: Arc<LegShared>,
    pub clock_rate: u32,
}

/// The loop's state.
pub(crate) struct RelayLoop {
    poll: Poll,
    commands: Receiver<Command>,
    /// Boxed: the table grows by doubling, and a free slot then costs a pointer, not a leg.
    legs: Vec<Option<Box<Leg>>>,
    free: Vec<usize>,
    index: HashMap<LegId, usize>,
    batch: BytesBatch,
    out: Outbox,
    strict: bool,
    /// Catch-all settings when latched RTP sockets are connected.
    connect: Option<SocketConfig>,
    /// A catch-all is opened only while fewer relay sockets are open ([`catch_all_budget`]).
    catch_all_budget: usize,
    /// The least time between two looks at the sockets while busy (`MediaConfig::pace`).
    pace: Duration,
    metrics: Arc<WorkerMetrics>,
    /// Sockets not drained in their turn, and the list being worked through.
    pending: Vec<Token>,
    retry: Vec<Token>,
    /// The conference rooms (a separate path: relay legs never look at them).
    rooms: Rooms,
    /// The io_uring path (`--media-io io_uring`), when it could be set up; `None`: epoll.
    uring: Option<Box<Uring>>,
    /// Per leg slot on the io_uring path: how the ring names each receiver, and the slot's
    /// generation (bumped at each close, so late completions of a closed leg are ignored).
    files: Vec<[Option<File>; RECEIVERS]>,
    generations: Vec<u32>,
    /// Slots that latched a new source in this turn (io_uring path), to be connected.
    relatched: Vec<usize>,
    /// The ring's poll of the `epoll` set fired in a look outside the turn (a close's or a
    /// snapshot's), so the set was not read: the next wait reads it.
    epoll_fired: bool,
    /// Closes and snapshots waiting for the channel to be empty ([`Self::apply_commands`]).
    deferred: VecDeque<Command>,
    /// Shutdown was asked for (or every sender is gone).
    stopping: bool,
}

impl RelayLoop {
    pub fn new(
        poll: Poll,
        commands: Receiver<Command>,
        config: &MediaConfig,
        metrics: Arc<WorkerMetrics>,
        rooms: Rooms,
    ) -> RelayLoop {
        let uring = match config.io {
            MediaIo::Epoll => None,
            MediaIo::IoUring => match Uring::new(poll.as_raw_fd()) {
                Ok(u) => Some(Box::new(u)),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable: the media loop uses epoll");
                    None
                }
            },
        };
        metrics.media.loop_io.store(
            if uring.is_some() {
                MediaMetrics::IO_URING
            } else {
                MediaMetrics::EPOLL
            },
            Relaxed,
        );
        RelayLoop {
            poll,
            commands,
            legs: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            batch: BytesBatch::new(MAX_BATCH, SLOT_SIZE),
            out: Outbox::default(),
            strict: config.strict_source,
            catch_all_budget: catch_all_budget(cpm_netio::fd_limit().ok()),
            connect: config.connect_latched.then(|| config.socket_config()),
            pace: config.pace,
            metrics,
            pending: Vec::new(),
            retry: Vec::new(),
            rooms,
            uring,
            files: Vec::new(),
            generations: Vec::new(),
            relatched: Vec::new(),
            epoll_fired: false,
            deferred: VecDeque::new(),
            stopping: false,
        }
    }

    /// Runs until [`Command::Shutdown`] or until every command sender is gone.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_publish = Instant::now() + PUBLISH_EVERY;
        // The start of the last turn that relayed something (see `MediaConfig::pace`).
        let mut busy_since: Option<Instant> = None;
        loop {
            // What is left of the pace: the io_uring path waits it out in the kernel, in the
            // same call that submits the turn's sends and collects completions.
            let mut pace = Duration::ZERO;
            if let Some(start) = busy_since.filter(|_| !self.pace.is_zero()) {
                // Busy: let datagrams gather for one pace before looking again, instead of
                // waking up for each (a wake-up costs more than relaying a datagram).
                // Never past a mixing tick.
                let wake = self
                    .rooms
                    .next_tick()
                    .map_or(start + self.pace, |t| t.min(start + self.pace));
                pace = wake.saturating_duration_since(Instant::now());
                if self.uring.is_none() && !pace.is_zero() {
                    std::thread::sleep(pace);
                }
            }
            let idle = self.pending.is_empty() && !self.rooms.has_pending();
            let timeout = if idle && busy_since.is_none() {
                let until = self
                    .rooms
                    .next_tick()
                    .map_or(next_publish, |t| t.min(next_publish));
                until.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.wait(&mut events, timeout, pace) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media loop: poll failed; closing every leg");
                break;
            }
            // Commands first: a peer set (or a leg opened) before a packet arrived applies to it.
            if !self.apply_commands() {
                break;
            }
            // One clock read per wake-up: the arrival time of everything read in this turn.
            let now = Instant::now();
            let relayed = !self.pending.is_empty()
                || self.rooms.has_pending()
                || events.iter().any(|e| e.token() != WAKER)
                || self.uring.as_ref().is_some_and(|u| !u.cqes.is_empty());
            busy_since = relayed.then_some(now);
            std::mem::swap(&mut self.pending, &mut self.retry);
            for k in 0..self.retry.len() {
                let token = self.retry[k];
                self.on_readable(token, now);
            }
            self.retry.clear();
            self.rooms.read_pending(&mut self.batch, now);
            let mut ready = events.iter().map(|ev| ev.token()).filter(|&t| t != WAKER);
            let mut next = ready.next();
            while let Some(token) = next {
                // The next leg's state is fetched while this one's system calls run.
                next = ready.next();
                if token.0 >= ROOM_TOKEN_BASE {
                    self.rooms.on_readable(token, &mut self.batch, now);
                    continue;
                }
                if let Some(t) = next {
                    self.prefetch(t);
                }
                self.on_readable(token, now);
            }
            self.complete_ring(now);
            if self.rooms.next_tick().is_some_and(|t| t <= now) {
                self.rooms.tick(now);
            }
            if now >= next_publish {
                self.publish_dirty();
                next_publish = now + PUBLISH_EVERY;
            }
        }
        let ids: Vec<LegId> = self.index.keys().copied().collect();
        for id in ids {
            self.close(id, None);
        }
        self.rooms.close_all(&self.poll);
        self.metrics
            .media
            .loop_io
            .store(MediaMetrics::NO_LOOP, Relaxed);
    }

    /// Waits for readiness (epoll) or completions (io_uring) for at most `timeout`; on the
    /// io_uring path, first submits what the last turn queued and lets completions gather for
    /// `pace`, and `events` holds the loop's `epoll` set's events when its poll fired.
    fn wait(&mut self, events: &mut Events, timeout: Duration, pace: Duration) -> io::Result<()> {
        let Some(u) = self.uring.as_mut() else {
            return self.poll.poll(events, Some(timeout));
        };
        if !pace.is_zero() {
            u.wait(true, pace)?;
        } else if timeout.is_zero() || self.epoll_fired {
            // Busy, or a fired poll not read yet (a look outside the turn took it).
            u.wait(true, Duration::ZERO)?;
        } else {
            u.wait(false, timeout)?;
        }
        let fired = u
            .cqes
            .iter()
            .any(|&(ud, ..)| uring::kind(ud) == uring::EPOLL);
        if std::mem::take(&mut self.epoll_fired) || fired {
            self.poll.poll(events, Some(Duration::ZERO))?;
            // A full list may leave events in the set, which then fires no more: read again.
            self.epoll_fired = events.iter().count() == events.capacity();
        } else {
            events.clear();
        }
        Ok(())
    }

    /// The io_uring path's turn: relays the datagrams that completed, counts the sends that
    /// did, connects the sockets that latched, and hands buffers and requests to the kernel.
    fn complete_ring(&mut self, now: Instant) {
        let Some(mut u) = self.uring.take() else {
            return;
        };
        let cqes = std::mem::take(&mut u.cqes);
        for &(user_data, result, flags) in &cqes {
            match uring::kind(user_data) {
                uring::RECV => self.on_datagram(&mut u, user_data, result, flags, now),
                uring::SEND => self.on_sent(&mut u, user_data, result, now),
                uring::EPOLL if !io_uring::cqueue::more(flags) => u.rearm_epoll(),
                _ => {}
            }
        }
        u.cqes = cqes;
        u.cqes.clear();
        self.uring = Some(u);
        for slot in std::mem::take(&mut self.relatched) {
            let sides = match self.legs.get_mut(slot) {
                Some(Some(leg)) => leg.take_relatched(),
                _ => continue,
            };
            for side in sides.into_iter().flatten() {
                self.connect_rtp(slot, side, now);
            }
        }
        let (legs, generations) = (&self.legs, &self.generations);
        let live = |user_data: u64| {
            let (generation, token) = uring::recv_id(user_data);
            let slot = (token >> 3) as usize;
            generations.get(slot) == Some(&generation)
                && legs.get(slot).is_some_and(Option::is_some)
        };
        if let Some(u) = self.uring.as_mut() {
            if let Err(e) = u.end_turn(live) {
                tracing::warn!(error = %e, "media ring: re-arming failed");
            }
        }
    }

    /// Collects the completions that are ready, without waiting, and handles them (io_uring
    /// path, outside the loop's turn: the turn's own completions first, as the look reuses
    /// their list).
    fn look(&mut self, now: Instant) {
        self.complete_ring(now);
        if let Some(u) = self.uring.as_mut() {
            if let Err(e) = u.wait(true, Duration::ZERO) {
                tracing::debug!(error = %e, "media ring: look failed");
            }
            // The loop's epoll set is read at the next wait.
            self.epoll_fired |= u
                .cqes
                .iter()
                .any(|&(ud, ..)| uring::kind(ud) == uring::EPOLL);
        }
        // Commands sent before these datagrams apply to them.
        self.drain_commands();
        self.complete_ring(now);
    }

    /// A receive completion: relays its datagram (io_uring path).
    fn on_datagram(
        &mut self,
        u: &mut Uring,
        user_data: u64,
        result: i32,
        flags: u32,
        now: Instant,
    ) {
        let (generation, token) = uring::recv_id(user_data);
        let (slot, k) = ((token >> 3) as usize, (token & 7) as usize);
        let live = self.generations.get(slot) == Some(&generation);
        let file = if live {
            self.files.get(slot).and_then(|f| f[k])
        } else {
            None
        };
        if result == -libc::ENOBUFS {
            // Every buffer was in use: the receive ended and is armed again at the turn's end
            // (`Uring::datagram`); what it did not take waits in the socket.
            bump(&self.metrics.media.ring_exhausted, 1);
        }
        let Some((source, truncated, bytes)) = u.datagram(file, user_data, result, flags) else {
            return;
        };
        let (true, Some(Some(leg))) = (live, self.legs.get_mut(slot)) else {
            return;
        };
        let side = receiver_side(k);
        let mut tally = Tally::default();
        if let Some(f) = leg.accept(k, source, truncated, bytes, now, self.strict, &mut tally) {
            let sent = leg
                .sender(side.other(), f.rtcp_socket)
                .and_then(|(j, socket)| Some((self.files[slot][j]?, socket)))
                .is_some_and(|(file, socket)| u.send(file, socket, f, generation, token));
            if !sent {
                tally.drop(DropReason::SendFailed);
            }
        }
        leg.count(side, &tally, now);
        if leg.has_relatched() {
            self.relatched.push(slot);
        }
        account(&self.metrics, &tally);
    }

    /// A send completion: counts it for its leg, if that is still open (io_uring path).
    fn on_sent(&mut self, u: &mut Uring, user_data: u64, result: i32, now: Instant) {
        let Some(s) = u.sent(user_data, result) else {
            return;
        };
        let mut tally = Tally::default();
        if s.ok {
            tally.packets = 1;
            tally.bytes = s.len as u64;
            tally.rtcp_packets = u64::from(s.is_rtcp);
        } else {
            tally.drop(DropReason::SendFailed);
        }
        account(&self.metrics, &tally);
        let slot = (s.token >> 3) as usize;
        if self.generations.get(slot) == Some(&s.generation) {
            if let Some(Some(leg)) = self.legs.get_mut(slot) {
                leg.count(receiver_side((s.token & 7) as usize), &tally, now);
            }
        }
    }

    /// Relays what socket `token` holds, up to [`MAX_BATCHES_PER_TURN`] batches: a first small
    /// one ([`FIRST_WINDOW`] datagrams, what an RTP port usually holds), then full ones; then
    /// connects the RTP sockets that latched a new source.
    fn on_readable(&mut self, token: Token, now: Instant) {
        let (slot, k) = (token.0 >> 3, token.0 & 7);
        let drained = self.relay_from(slot, k, now);
        let Some(Some(leg)) = self.legs.get_mut(slot) else {
            return;
        };
        for side in leg.take_relatched().into_iter().flatten() {
            self.connect_rtp(slot, side, now);
        }
        if !drained {
            self.pending.push(token);
        }
    }

    /// Connects `side`'s RTP socket of the leg in `slot` to the source it latched, opening its
    /// catch-all first, without reordering that source's datagrams. While the two sockets are
    /// both unconnected, the kernel puts each source's datagrams on one of them (a hash of the
    /// 4-tuple): so the RTP socket is drained (what came before the catch-all), connected, and
    /// then the catch-all is drained (what the source sent before the connect, if it went
    /// there), before anything newer is read from the RTP socket.
    fn connect_rtp(&mut self, slot: usize, side: Side, now: Instant) {
        // On the io_uring path the drains below send directly: the sends queued on the ring
        // (older datagrams) go first. The catch-all's multishot receive is only queued, and
        // takes what the drain leaves.
        if let Some(u) = self.uring.as_mut() {
            if let Err(e) = u.submit() {
                tracing::debug!(error = %e, "media ring: submit failed");
            }
        }
        let Some(Some(leg)) = self.legs.get_mut(slot) else {
            return;
        };
        if relay_sockets() >= self.catch_all_budget {
            // The last quarter of the open-file limit is for new calls' sockets.
            tracing::debug!(leg = %leg.id, "descriptors running low: no catch-all, not connected");
            return;
        }
        let opened = if let Some(u) = self.uring.as_mut() {
            let (files, generation) = (&mut self.files[slot], self.generations[slot]);
            leg.open_catch_all(side, |k, socket| {
                files[k] = Some(u.add(socket, generation, token(slot, k).0 as u32)?);
                Ok(())
            })
        } else {
            let registry = self.poll.registry();
            leg.open_catch_all(side, |k, socket| {
                let fd = socket.socket().as_raw_fd();
                registry.register(&mut SourceFd(&fd), token(slot, k), Interest::READABLE)
            })
        };
        match opened {
            Ok(true) => {
                relay_sockets_opened(1);
                let rtp = socket_index(side, false);
                if !self.relay_from(slot, rtp, now) {
                    self.pending.push(token(slot, rtp));
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(leg = %leg.id, error = %e, "no catch-all: not connected");
                return;
            }
        }
        if let Some(Some(leg)) = self.legs.get_mut(slot) {
            leg.connect_rtp(side);
        }
        let catch_all = CATCH_ALL + side.index();
        if !self.relay_from(slot, catch_all, now) {
            self.pending.push(token(slot, catch_all));
        }
    }

    /// Prefetches the leg state socket `token` will need.
    fn prefetch(&self, token: Token) {
        if let Some(Some(leg)) = self.legs.get(token.0 >> 3) {
            leg.prefetch(token.0 & 7);
        }
    }

    /// Relays from receiver `k` of the leg in `slot`; false when it was not drained.
    fn relay_from(&mut self, slot: usize, k: usize, now: Instant) -> bool {
        let Some(Some(leg)) = self.legs.get_mut(slot) else {
            return true;
        };
        let side = receiver_side(k);
        let mut window = FIRST_WINDOW;
        for _ in 0..MAX_BATCHES_PER_TURN {
            let mut tally = Tally::default();
            let r = leg.relay(
                k,
                &mut self.batch,
                window,
                now,
                self.strict,
                &mut self.out,
                &mut tally,
            );
            leg.count(side, &tally, now);
            account(&self.metrics, &tally);
            match r {
                Ok(n) if n == window => window = self.batch.capacity(),
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                // An ICMP error queued on the socket (a peer went away): not ours to stop.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(leg = %leg.id, error = %e, "relay receive failed");
                    return true;
                }
            }
        }
        false
    }

    /// Applies waiting commands; false when the loop must end. Closes and snapshots run
    /// once the channel is empty: on the io_uring path they look for completions, and a
    /// datagram seen then must find every command sent before it applied (a peer is set
    /// before the SIP message that lets that peer send leaves).
    fn apply_commands(&mut self) -> bool {
        self.drain_commands();
        while let Some(c) = self.deferred.pop_front() {
            match c {
                Command::Close { id, reply } => self.close(id, reply),
                Command::Snapshot { id, reply } => {
                    // Sends that completed count (on the ring, they are seen a turn later).
                    self.look(Instant::now());
                    if let Some(leg) = self.leg_mut(id) {
                        leg.flush_counts();
                        leg.shared.publish(leg.published());
                        let _ = reply.send(leg.shared.stats());
                    }
                }
                _ => {}
            }
        }
        !self.stopping
    }

    /// Applies the commands in the channel, keeping closes and snapshots for
    /// [`Self::apply_commands`].
    fn drain_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Open(o)) => self.open(*o),
                Ok(Command::SetPeer {
                    id,
                    side,
                    rtp,
                    rtcp,
                }) => {
                    if let Some(leg) = self.leg_mut(id) {
                        leg.set_peer(side, rtp, rtcp);
                    }
                }
                Ok(Command::Room(c)) => self.rooms.command(c, &self.poll, Instant::now()),
                Ok(c @ (Command::Close { .. } | Command::Snapshot { .. })) => {
                    self.deferred.push_back(c)
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn leg_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        let slot = *self.index.get(&id)?;
        self.legs.get_mut(slot)?.as_deref_mut()
    }

    fn open(&mut self, o: OpenLeg) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.legs.push(None);
            self.files.push([None; RECEIVERS]);
            self.generations.push(0);
            self.legs.len() - 1
        });
        let leg = Box::new(Leg::new(
            o.id,
            o.sockets,
            o.shared,
            o.clock_rate,
            self.connect,
        ));
        let registry = self.poll.registry();
        for (k, s) in leg.sockets.iter().enumerate() {
            let Some(s) = s else { continue };
            let added = match self.uring.as_mut() {
                Some(u) => u
                    .add(s, self.generations[slot], token(slot, k).0 as u32)
                    .map(|file| self.files[slot][k] = Some(file)),
                None => {
                    let fd = s.socket().as_raw_fd();
                    registry.register(&mut SourceFd(&fd), token(slot, k), Interest::READABLE)
                }
            };
            if let Err(e) = added {
                tracing::warn!(leg = %o.id, error = %e, "cannot poll a relay socket; leg closed");
                self.deregister(slot, &leg);
                self.free.push(slot);
                return;
            }
        }
        let m = &self.metrics.media;
        bump(&m.legs, 1);
        bump(&m.ports, leg.port_count() as u64);
        relay_sockets_opened(leg.port_count());
        self.index.insert(o.id, slot);
        self.legs[slot] = Some(leg);
    }

    fn close(&mut self, id: LegId, reply: Option<oneshot::Sender<LegStats>>) {
        let Some(&slot) = self.index.get(&id) else {
            return;
        };
        // What the peers sent before the session ended is still relayed (and counted): the
        // last packets before a BYE often sit in a socket when the close arrives.
        let now = Instant::now();
        if self.uring.is_some() {
            // What arrived, then the completions of the sends that queued.
            self.look(now);
            self.look(now);
        } else {
            for k in 0..RECEIVERS {
                self.relay_from(slot, k, now);
            }
        }
        self.index.remove(&id);
        let Some(mut leg) = self.legs.get_mut(slot).and_then(Option::take) else {
            return;
        };
        leg.flush_counts();
        self.free.push(slot);
        self.deregister(slot, &leg);
        if self.uring.is_some() {
            // The canceled receives are freed by the kernel's deferred work, run when the
            // loop asks for completions: only then does the ring let go of the sockets.
            self.look(now);
        }
        let m = &self.metrics.media;
        m.legs
            .store(m.legs.load(Relaxed).saturating_sub(1), Relaxed);
        m.ports.store(
            m.ports
                .load(Relaxed)
                .saturating_sub(leg.port_count() as u64),
            Relaxed,
        );
        leg.shared.publish(leg.published());
        let shared = leg.shared.clone();
        relay_sockets_closed(leg.receivers().count());
        // Closes the sockets: the ports can be bound again once the reply is received.
        drop(leg);
        if let Some(reply) = reply {
            let _ = reply.send(shared.stats());
        }
    }

    fn publish_dirty(&mut self) {
        for leg in self.legs.iter_mut().flatten() {
            if leg.dirty {
                leg.flush_counts();
                leg.shared.publish(leg.published());
                leg.dirty = false;
            }
        }
    }
}

impl RelayLoop {
    /// Takes the sockets of the leg in `slot` off the poll set (closing them would too; this
    /// keeps the set exact should a descriptor be duplicated) or off the ring (which would
    /// otherwise keep them open), and starts the slot's next generation.
    fn deregister(&mut self, slot: usize, leg: &Leg) {
        if let Some(u) = self.uring.as_mut() {
            let generation = self.generations[slot];
            for (k, file) in self.files[slot].iter_mut().enumerate() {
                if let Some(file) = file.take() {
                    u.remove(file, generation, token(slot, k).0 as u32);
                }
            }
            self.generations[slot] = self.generations[slot].wrapping_add(1);
            return;
        }
        for s in leg.receivers() {
            let fd = s.socket().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }
}

/// Relay sockets open in this process, in every loop (legs' ports and catch-alls, conference
/// participants' ports): what the connected fast path's budget is checked against
/// ([`catch_all_budget`]).
static RELAY_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// Relay sockets open in this process now (`cpm_media_relay_sockets`).
pub fn relay_sockets() -> usize {
    RELAY_SOCKETS.load(Relaxed)
}

/// Counts `n` relay sockets opened (legs', catch-alls, conference rooms' in [`super::room`]).
pub(super) fn relay_sockets_opened(n: usize) {
    RELAY_SOCKETS.fetch_add(n, Relaxed);
}

/// Counts `n` relay sockets closed.
pub(super) fn relay_sockets_closed(n: usize) {
    RELAY_SOCKETS.fetch_sub(n, Relaxed);
}

/// How many relay sockets may be open for a latched RTP socket to get a catch-all (and be
/// connected), for an open-file limit of `limit`: three quarters of it. The last quarter is
/// kept for the sockets of new calls: at 2,000-3,000 calls/s under a 20,000 limit the
/// catch-alls (a second descriptor per latched port) took what new calls needed and those
/// were refused (`503`), while the relay does without the fast path (strangers are then
/// filtered in user space). Counted, not read from descriptor numbers: with calls ending the
/// kernel hands out low free numbers however many are open.
fn catch_all_budget(limit: Option<u64>) -> usize {
    limit.map_or(usize::MAX, |n| {
        usize::try_from(n - n / 4).unwrap_or(usize::MAX)
    })
}

/// Adds a tally to the worker's media counters.
fn account(metrics: &WorkerMetrics, tally: &Tally) {
    let m = &metrics.media;
    bump(&m.packets, tally.packets);
    bump(&m.bytes, tally.bytes);
    for (c, &n) in m.drops.iter().zip(&tally.drops) {
        bump(c, n);
    }
}

/// Creates the poll set and its waker (in the caller's thread, so errors are reported there).
pub(crate) fn poll_and_waker() -> io::Result<(Poll, Waker)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    Ok((poll, waker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_descriptors_is_kept_for_new_calls() {
        assert_eq!(catch_all_budget(Some(20_000)), 15_000);
        assert_eq!(catch_all_budget(Some(160)), 120);
        assert_eq!(catch_all_budget(None), usize::MAX);
    }
}
