//! The control side of a worker's media loop: [`MediaPlane`] opens legs, [`LegHandle`] drives
//! and reads one.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cpm_netio::{BatchSocket, SocketConfig};
use crossbeam::channel::Sender;
use mio::Waker;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::relay_loop::{poll_and_waker, Command, OpenLeg, RelayLoop};
use super::room::{
    default_mix, NewMember, NewVideo, RoomCommand, RoomEvent, RoomId, Rooms, TickStats,
};
use super::stats::LegShared;
use super::MediaIo;
use super::{LegId, LegSpec, LegStats, Side};
use crate::conference::sdp::AudioCodec;
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use actix::Recipient;

/// Leg ids are unique in the process (several planes may report to one session).
static NEXT_LEG: AtomicU64 = AtomicU64::new(1);

/// How the media plane relays.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The address relay sockets are bound on (`--media-ip`).
    pub ip: IpAddr,
    /// Drop packets from other sources after latching (`--media-strict-source`).
    pub strict_source: bool,
    /// Inactivity timeout of [`super::RelayLeg`] (`--media-timeout`; `None`: off).
    pub timeout: Option<Duration>,
    /// SO_RCVBUF and SO_SNDBUF of each relay socket, in bytes.
    pub socket_buffer: usize,
    /// `connect()` an RTP socket to the source it latched, with a catch-all socket on the
    /// same port for every other source ([`cpm_netio::BatchSocket::open_catch_all`]): the
    /// kernel then finds the latched source's socket by its 4-tuple and sends without a route
    /// lookup; strangers are still counted ([`super::DropReason::WrongSource`]) or latch again.
    /// Costs a second descriptor per connected port, so it is not taken once relay sockets hold
    /// three quarters of the open-file limit (the last quarter is kept for new calls' sockets).
    /// On by default.
    pub connect_latched: bool,
    /// While the loop is busy, the least time between two looks at its sockets: datagrams
    /// that arrive meanwhile wait (at most this long) and are relayed in one turn, instead of
    /// a wake-up of the loop thread for each (on a busy relay most of a datagram's cost; see
    /// docs/decisions/0009-media-plane.md). An idle loop still wakes at the first datagram.
    /// Zero: no pacing. Default 500 µs (`--media-pace`), a quarter of issue 4's 2 ms budget
    /// for the one-way delay.
    pub pace: Duration,
    /// epoll or io_uring (`--media-io`; [`crate::config::MediaIo`]).
    pub io: MediaIo,
    /// Real-time priority of the loop thread (`SCHED_FIFO`); 0: the normal scheduler
    /// (`--media-priority`).
    pub priority: u8,
}

impl Default for MediaConfig {
    /// As [`Config::default`]: 127.0.0.1, strict, 60 s; 256 KiB socket buffers (about 1,500
    /// G.711 packets, 30 s of one stream).
    fn default() -> Self {
        MediaConfig::from_config(&Config::default())
    }
}

impl MediaConfig {
    /// The options of each relay socket.
    pub(crate) fn socket_config(&self) -> SocketConfig {
        SocketConfig {
            recv_buffer: self.socket_buffer,
            send_buffer: self.socket_buffer,
            ..SocketConfig::default()
        }
    }

    /// The media settings of the server configuration.
    pub fn from_config(c: &Config) -> MediaConfig {
        MediaConfig {
            ip: c.media_ip,
            strict_source: c.media_strict_source,
            timeout: c.media_timeout(),
            socket_buffer: 256 << 10,
            connect_latched: c.media_connect,
            pace: Duration::from_micros(c.media_pace),
            io: c.media_io,
            priority: c.media_priority.get(),
        }
    }
}

/// Why a leg could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// A port could not be bound (in use, not permitted, ...): the caller picks another.
    Bind {
        /// The port.
        port: u16,
        /// The OS error.
        error: io::Error,
    },
    /// The media loop has stopped.
    Stopped,
}

impl OpenError {
    /// The port, when the port itself is the trouble (another socket holds it, or it may not
    /// be bound here), so that another port may do. `None` otherwise: out of descriptors or
    /// memory, or the loop stopped, where no other port would do.
    pub fn unusable_port(&self) -> Option<u16> {
        match self {
            OpenError::Bind { port, error }
                if matches!(
                    error.kind(),
                    io::ErrorKind::AddrInUse
                        | io::ErrorKind::AddrNotAvailable
                        | io::ErrorKind::PermissionDenied
                ) =>
            {
                Some(*port)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Bind { port, error } => write!(f, "cannot bind media port {port}: {error}"),
            OpenError::Stopped => f.write_str("the media loop has stopped"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The media loop has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the media loop has stopped")
    }
}

impl std::error::Error for Stopped {}

/// An answer from the media loop: `.await` it in an actor, or [`Reply::wait`] for it in a
/// plain thread. `None` when the loop stopped (or the leg was gone) before answering.
#[derive(Debug)]
pub struct Reply<T>(oneshot::Receiver<T>);

impl<T> Reply<T> {
    /// Blocks until the answer comes. Must not be called inside an async runtime.
    pub fn wait(self) -> Option<T> {
        self.0.blocking_recv().ok()
    }
}

impl<T> Future for Reply<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

struct Inner {
    worker: usize,
    config: MediaConfig,
    ticks: Arc<TickStats>,
    commands: Sender<Command>,
    waker: Waker,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Inner {
    fn send(&self, c: Command) -> Result<(), Stopped> {
        self.commands.send(c).map_err(|_| Stopped)?;
        self.waker.wake().map_err(|_| Stopped)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: let the thread end (it closes whatever is still open).
        let _ = self.send(Command::Shutdown);
    }
}

/// One worker's media plane: a handle (cheap to clone) to its media loop thread.
#[derive(Clone)]
pub struct MediaPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MediaPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPlane")
            .field("worker", &self.inner.worker)
            .finish()
    }
}

impl MediaPlane {
    /// Starts worker `worker`'s media loop thread (`cpm-media-<worker>`), pinned to `core`
    /// when given; its counters go to `metrics.media`.
    pub fn start(
        worker: usize,
        config: MediaConfig,
        core: Option<usize>,
        metrics: Arc<WorkerMetrics>,
    ) -> io::Result<MediaPlane> {
        let (poll, waker) = poll_and_waker()?;
        // Unbounded: commands are control traffic (a few per call), and a close sent from a
        // Drop must never be refused.
        let (tx, rx) = crossbeam::channel::unbounded();
        let strict = config.strict_source;
        let ticks = Arc::new(TickStats::default());
        let rooms = Rooms::new(default_mix(), ticks.clone(), metrics.clone(), strict);
        if config.connect_latched {
            // A connected port holds two sockets: give the process all the descriptors it may.
            match cpm_netio::raise_fd_limit() {
                Ok(n) => tracing::debug!(worker, limit = n, "open file limit"),
                Err(e) => tracing::debug!(worker, error = %e, "cannot raise the open file limit"),
            }
        }
        let loop_config = config.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cpm-media-{worker}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !crate::sys::pin_current_thread(core) {
                        tracing::info!(worker, core, "could not pin media loop to core");
                    }
                }
                if loop_config.priority > 0 {
                    if let Err(e) = crate::sys::set_fifo_priority(loop_config.priority) {
                        tracing::warn!(
                            worker,
                            priority = loop_config.priority,
                            error = %e,
                            "media loop keeps the normal scheduler"
                        );
                    }
                }
                RelayLoop::new(poll, rx, &loop_config, metrics, rooms).run();
            })?;
        Ok(MediaPlane {
            inner: Arc::new(Inner {
                worker,
                config,
                ticks,
                commands: tx,
                waker,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// The conference rooms' tick lateness and counters of this loop.
    pub fn tick_stats(&self) -> Arc<TickStats> {
        self.inner.ticks.clone()
    }

    /// Opens a conference room in this loop; its events (active speaker changes) go to
    /// `events`. Dropping the handle closes the room and every participant's sockets.
    pub fn open_room(&self, events: Option<Recipient<RoomEvent>>) -> Result<RoomHandle, Stopped> {
        let id = RoomId(NEXT_LEG.fetch_add(1, Relaxed));
        self.inner
            .send(Command::Room(RoomCommand::Open { id, events }))?;
        Ok(RoomHandle {
            id,
            plane: self.clone(),
        })
    }

    /// The worker this plane belongs to.
    pub fn worker(&self) -> usize {
        self.inner.worker
    }

    /// Binds the leg's ports on the media address and hands the sockets to the loop, which
    /// starts relaying at once. On a bind failure the sockets already bound are closed and the
    /// port that failed is named, so the caller can pick another.
    pub fn open_leg(&self, spec: &LegSpec) -> Result<LegHandle, OpenError> {
        self.start_leg(self.bind_leg(spec)?)
    }

    /// Binds the leg's ports on the media address without starting it, so a caller can learn
    /// that a port is taken before it names the port in SDP. On a bind failure the sockets
    /// already bound are closed and the port that failed is named.
    pub fn bind_leg(&self, spec: &LegSpec) -> Result<BoundLeg, OpenError> {
        let socket_config = self.inner.config.socket_config();
        let ip = self.inner.config.ip;
        let bind = |port: u16| {
            let s = BatchSocket::bind_with(SocketAddr::new(ip, port), socket_config)
                .map_err(|error| OpenError::Bind { port, error })?;
            let addr = s
                .local_addr()
                .map_err(|error| OpenError::Bind { port, error })?;
            Ok::<_, OpenError>((s, addr))
        };
        let (a_rtp, b_rtp) = (bind(spec.a.rtp)?, bind(spec.b.rtp)?);
        let a_rtcp = spec.a.rtcp.map(bind).transpose()?;
        let b_rtcp = spec.b.rtcp.map(bind).transpose()?;
        Ok(BoundLeg {
            rtp: [a_rtp.1, b_rtp.1],
            rtcp: [a_rtcp.as_ref().map(|s| s.1), b_rtcp.as_ref().map(|s| s.1)],
            sockets: [
                Some(a_rtp.0),
                a_rtcp.map(|s| s.0),
                Some(b_rtp.0),
                b_rtcp.map(|s| s.0),
            ],
            clock_rate: spec.clock_rate,
        })
    }

    /// Hands a bound leg's sockets to the loop, which starts relaying at once.
    pub fn start_leg(&self, leg: BoundLeg) -> Result<LegHandle, OpenError> {
        let BoundLeg {
            rtp,
            rtcp,
            sockets,
            clock_rate,
        } = leg;
        let id = LegId(NEXT_LEG.fetch_add(1, Relaxed));
        let shared = Arc::new(LegShared::new(id, Instant::now()));
        self.inner
            .send(Command::Open(Box::new(OpenLeg {
                id,
                sockets,
                shared: shared.clone(),
                clock_rate,
            })))
            .map_err(|_| OpenError::Stopped)?;
        Ok(LegHandle {
            id,
            shared,
            plane: self.clone(),
            rtp,
            rtcp,
            open: true,
        })
    }

    /// Stops the loop, closing every leg's sockets, and waits for its thread to end.
    pub fn shutdown(&self) {
        let _ = self.inner.send(Command::Shutdown);
        if let Some(t) = self.inner.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// A leg whose ports are bound but not yet relayed ([`MediaPlane::bind_leg`]); dropping it
/// closes its sockets.
#[derive(Debug)]
pub struct BoundLeg {
    rtp: [SocketAddr; 2],
    rtcp: [Option<SocketAddr>; 2],
    sockets: [Option<BatchSocket>; 4],
    clock_rate: u32,
}

/// The control handle of one open leg. Dropping it closes the leg (without waiting).
#[derive(Debug)]
pub struct LegHandle {
    id: LegId,
    shared: Arc<LegShared>,
    plane: MediaPlane,
    /// Local addresses facing A and B.
    rtp: [SocketAddr; 2],
    rtcp: [Option<SocketAddr>; 2],
    open: bool,
}

impl LegHandle {
    /// The leg's id.
    pub fn id(&self) -> LegId {
        self.id
    }

    /// The plane (worker) the leg lives on.
    pub fn plane(&self) -> &MediaPlane {
        &self.plane
    }

    /// The local RTP address facing `side` (what that side sends to).
    pub fn local_rtp(&self, side: Side) -> SocketAddr {
        self.rtp[side.index()]
    }

    /// The local RTCP address facing `side`, `None` when that side multiplexes.
    pub fn local_rtcp(&self, side: Side) -> Option<SocketAddr> {
        self.rtcp[side.index()]
    }

    /// Sets where `side`'s media goes until its first packet latches the real source: `rtp`
    /// from its SDP `c=`/`m=` lines, `rtcp` from `a=rtcp` (RFC 3605) or `None` for the next
    /// port (RFC 3550 §11; ignored when the side multiplexes). A changed address unlatches.
    pub fn set_peer(
        &self,
        side: Side,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.control().set_peer(side, rtp, rtcp)
    }

    /// The figures now: packet, byte and drop counts at most 100 ms behind while packets flow
    /// (a second once they stop); RTP loss and jitter and the latched addresses as the loop
    /// last published them (at most a second old).
    pub fn stats(&self) -> LegStats {
        self.shared.stats()
    }

    /// Asks the loop for exact figures (all counts up to the last relayed batch).
    pub fn snapshot(&self) -> Reply<LegStats> {
        let (tx, rx) = oneshot::channel();
        let _ = self.plane.inner.send(Command::Snapshot {
            id: self.id,
            reply: tx,
        });
        Reply(rx)
    }

    /// A reader of the leg's figures that outlives the handle's move into a [`super::RelayLeg`]
    /// (for the session's charging records and inactivity check).
    pub fn stats_reader(&self) -> LegStatsReader {
        LegStatsReader(self.shared.clone())
    }

    /// A way to set the leg's peers that outlives the handle's move into a
    /// [`super::RelayLeg`]: the session sets them synchronously, before the SIP message that
    /// lets the peer start sending leaves (an actor message could be overtaken by it).
    pub fn control(&self) -> LegControl {
        LegControl {
            id: self.id,
            plane: self.plane.clone(),
        }
    }

    /// When the last packet from either side arrived (the opening time if none did).
    pub fn last_activity(&self) -> Instant {
        self.shared.last_activity()
    }

    /// Closes the leg; the reply (its final figures) comes once its sockets are closed, so its
    /// ports can be bound again.
    pub fn close(mut self) -> Reply<LegStats> {
        self.open = false;
        let (tx, rx) = oneshot::channel();
        let _ = self.plane.inner.send(Command::Close {
            id: self.id,
            reply: Some(tx),
        });
        Reply(rx)
    }
}

impl Drop for LegHandle {
    fn drop(&mut self) {
        if self.open {
            let _ = self.plane.inner.send(Command::Close {
                id: self.id,
                reply: None,
            });
        }
    }
}

/// Reads one leg's figures without owning it ([`LegHandle::stats_reader`]).
#[derive(Debug, Clone)]
pub struct LegStatsReader(Arc<LegShared>);

impl LegStatsReader {
    /// As [`LegHandle::stats`].
    pub fn stats(&self) -> LegStats {
        self.0.stats()
    }
}

/// Sets one leg's peers without owning it ([`LegHandle::control`]).
#[derive(Debug, Clone)]
pub struct LegControl {
    id: LegId,
    plane: MediaPlane,
}

impl LegControl {
    /// As [`LegHandle::set_peer`]; a leg already closed ignores it.
    pub fn set_peer(
        &self,
        side: Side,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.plane.inner.send(Command::SetPeer {
            id: self.id,
            side,
            rtp,
            rtcp,
        })
    }
}

/// A conference room in a media loop ([`MediaPlane::open_room`]). Dropping it closes the room.
#[derive(Debug)]
pub struct RoomHandle {
    id: RoomId,
    plane: MediaPlane,
}

impl RoomHandle {
    /// Binds a participant's port(s) (`ports.rtcp` `None`: RTP and RTCP on one port, RFC
    /// 5761) and adds it to the room with its codec and payload type; its mix goes to `peer`
    /// until its first packet latches the real source. Returns the local RTP address.
    pub fn add(
        &self,
        pid: u32,
        ports: super::SidePorts,
        codec: AudioCodec,
        pt: u8,
        peer: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    ) -> Result<SocketAddr, OpenError> {
        let _ = rtcp;
        let config = self.plane.inner.config.socket_config();
        let ip = self.plane.inner.config.ip;
        let bind = |port: u16| {
            BatchSocket::bind_with(SocketAddr::new(ip, port), config)
                .map_err(|error| OpenError::Bind { port, error })
        };
        let rtp = bind(ports.rtp)?;
        let rtcp = ports.rtcp.map(bind).transpose()?;
        let local = rtp.local_addr().map_err(|error| OpenError::Bind {
            port: ports.rtp,
            error,
        })?;
        self.plane
            .inner
            .send(Command::Room(RoomCommand::Add(Box::new(NewMember {
                id: self.id,
                pid,
                rtp,
                rtcp,
                codec,
                pt,
                peer,
            }))))
            .map_err(|_| OpenError::Stopped)?;
        Ok(local)
    }

    /// A participant's new codec, payload type and SDP address.
    pub fn update(
        &self,
        pid: u32,
        codec: AudioCodec,
        pt: u8,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    ) {
        let _ = self.plane.inner.send(Command::Room(RoomCommand::Update {
            id: self.id,
            pid,
            codec,
            pt,
            rtp,
            rtcp,
        }));
    }

    /// Binds a participant's video port(s) and adds them to the room: its video is forwarded
    /// to others when it speaks, others' to `peer` (until its first packet latches the real
    /// source). Returns the local video RTP address.
    pub fn add_video(
        &self,
        pid: u32,
        ports: super::SidePorts,
        peer: Option<SocketAddr>,
        peer_rtcp: Option<SocketAddr>,
    ) -> Result<SocketAddr, OpenError> {
        let config = self.plane.inner.config.socket_config();
        let ip = self.plane.inner.config.ip;
        let bind = |port: u16| {
            BatchSocket::bind_with(SocketAddr::new(ip, port), config)
                .map_err(|error| OpenError::Bind { port, error })
        };
        let rtp = bind(ports.rtp)?;
        let rtcp = ports.rtcp.map(bind).transpose()?;
        let local = rtp.local_addr().map_err(|error| OpenError::Bind {
            port: ports.rtp,
            error,
        })?;
        self.plane
            .inner
            .send(Command::Room(RoomCommand::AddVideo(Box::new(NewVideo {
                id: self.id,
                pid,
                rtp,
                rtcp,
                peer,
                peer_rtcp,
            }))))
            .map_err(|_| OpenError::Stopped)?;
        Ok(local)
    }

    /// A participant's new video SDP addresses.
    pub fn update_video(&self, pid: u32, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let _ = self
            .plane
            .inner
            .send(Command::Room(RoomCommand::UpdateVideo {
                id: self.id,
                pid,
                rtp,
                rtcp,
            }));
    }

    /// Stops a participant's video and closes its video sockets.
    pub fn remove_video(&self, pid: u32) {
        let _ = self
            .plane
            .inner
            .send(Command::Room(RoomCommand::RemoveVideo { id: self.id, pid }));
    }

    /// Removes a participant and closes its sockets.
    pub fn remove(&self, pid: u32) {
        let _ = self
            .plane
            .inner
            .send(Command::Room(RoomCommand::Remove { id: self.id, pid }));
    }

    /// Mutes or unmutes a participant.
    pub fn mute(&self, pid: u32, muted: bool) {
        let _ = self.plane.inner.send(Command::Room(RoomCommand::Mute {
            id: self.id,
            pid,
            muted,
        }));
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        let _ = self
            .plane
            .inner
            .send(Command::Room(RoomCommand::Close(self.id)));
    }
}
