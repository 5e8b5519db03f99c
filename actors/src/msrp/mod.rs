//! The MSRP plane (CPM.md §5 fig. 6; RFC 4975, RFC 4976 §7): MSRP sessions anchored in the
//! media plane like RTP, on one shared TCP listener (`--msrp-listen`) in the manner of an
//! RFC 4976 relay. Decision 0012.
//!
//! ```text
//!   session actor ── open_leg / set_peer / drop ──► MsrpPlane (threads cpm-msrp-K, each a
//!                                                     tokio current-thread runtime: a shard)
//!   A ══TCP══► listener (shard 0) ─ matched by the session-id of the first To-Path URI,
//!              handed to the leg's shard ─┐
//!                                         leg (on its shard): A side ⇄ B side
//!   B ◄══TCP══ we connect to B's path when B's a=setup makes us active (from the leg's shard)
//! ```
//!
//! Each leg and sink lives on one shard (its `home`, given round robin when it opens), with
//! both of its connections, their readers and writers and its timeouts: a leg's work is never
//! split between threads, and legs spread over `--msrp-threads` cores. A connection accepted
//! by shard 0 is moved to its leg's shard once its first request has named the leg (the
//! socket with the parser that read that request); one we open starts there.
//!
//! A leg is two connections, one per side. For each SEND or REPORT from one side, a
//! connection's reader rewrites To-Path (the other side's path) and From-Path (our URI facing
//! it), forwards the head with the first body bytes and the body slices as they arrive (no
//! whole-message buffering; chunks longer than [`MsrpSettings::rechunk`] are cut into several
//! with `+` and their Byte-Range), and answers the sender's transaction hop by hop (RFC 4975
//! §7.1.2). A failure downstream (the other side's connection gone, an error response, no
//! response in [`MsrpSettings::tx_timeout`]) becomes a REPORT to the sender when its
//! Failure-Report asks for one (§7.1.1). All of these rules are `cpm_engine::msrp::relay`'s;
//! this module only moves bytes. Each connection's writer is fed through bounded queues, so a
//! side that stops reading stops the reading of the other side: memory per leg stays bounded
//! whatever the peers do. A response or REPORT of ours never waits behind a chunk the other
//! side is slow to send: that chunk is interrupted with `+` (§7.1.1) and goes on in a new one.

mod conn;
mod endpoint;
mod leg;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use cpm_engine::media::{MsrpConfig, Side};
use cpm_engine::msrp::{ByteRange, Flag, Limits};
use parking_lot::Mutex;

pub use endpoint::{ChatMessage, MsrpSink, OnMessage, Outgoing, Reply};
pub use leg::{MsrpLeg, MsrpLegStats};

use crate::metrics::MsrpMetrics;
use endpoint::SinkState;
use leg::LegState;

/// The MSRP plane's settings.
#[derive(Debug, Clone)]
pub struct MsrpSettings {
    /// The listening address (`--msrp-listen`).
    pub listen: SocketAddr,
    /// Chunks with a longer body are forwarded as several chunks of at most this many bytes.
    pub rechunk: u64,
    /// Parser bounds: the header section (413 above) and one chunk's body (413, then cut).
    pub limits: Limits,
    /// How long a request waits for the other side's first connection.
    pub peer_wait: Duration,
    /// How long a forwarded request waits for its response before a 408 REPORT (§7.1.2).
    pub tx_timeout: Duration,
    /// Requests forwarded toward one side and not answered yet, at most: at this many the
    /// other side's connection is not read until responses, failures or timeouts bring the
    /// count down, so a peer that reads but never answers cannot grow our memory (RFC 4975
    /// leaves how many chunks are in flight to the sender).
    pub max_unanswered: usize,
    /// Frames queued toward one connection (each about 64 KiB at most: a body slice of one
    /// read, or heads, end lines and short bodies staged together): the backpressure
    /// bound.
    pub queue: usize,
    /// A connection that names none of our sessions in this long is closed
    /// (`--msrp-bind-timeout`).
    pub bind_timeout: Duration,
    /// The plane's threads (`--msrp-threads`, at least one): legs and sinks are spread over
    /// them.
    pub threads: usize,
}

impl MsrpSettings {
    /// The defaults on `listen`: 64 KiB re-chunking, 16 KiB heads, 16 MiB chunks, 10 s wait
    /// for a peer's connection, 30 s transaction timeout, 1,024 unanswered requests toward a
    /// side, 16 queued frames per connection, 30 s for a new connection to name a session, one
    /// thread.
    pub fn new(listen: SocketAddr) -> MsrpSettings {
        MsrpSettings {
            listen,
            rechunk: 64 * 1024,
            limits: Limits {
                max_head: 16 * 1024,
                max_chunk: 16 * 1024 * 1024,
            },
            peer_wait: Duration::from_secs(10),
            tx_timeout: Duration::from_secs(30),
            max_unanswered: 1024,
            queue: 16,
            bind_timeout: Duration::from_secs(30),
            threads: 1,
        }
    }
}

/// One relayed SEND chunk, handed to a leg's [`Tap`] once its end line was forwarded.
#[derive(Debug, Clone)]
pub struct TapEvent {
    /// The side that sent it.
    pub from: Side,
    /// Its Message-ID.
    pub message_id: Option<Bytes>,
    /// Its Content-Type (absent on a bodyless SEND and on later chunks of some senders).
    pub content_type: Option<Bytes>,
    /// Its Byte-Range as received.
    pub byte_range: ByteRange,
    /// `$` the message is complete, `+` more chunks follow, `#` aborted.
    pub flag: Flag,
    /// The body, as the slices it arrived in.
    pub body: Vec<Bytes>,
}

/// A recorder of what a leg relays (the storage controller, CPM.md §5 fig. 12). Called on the
/// MSRP plane's thread: it must not block.
pub trait Tap: Send + Sync {
    /// A SEND chunk was relayed.
    fn on_send(&self, event: TapEvent);
}

/// The MSRP plane: its threads, the legs by session-id. Cheap to clone.
#[derive(Clone)]
pub struct MsrpPlane {
    inner: Arc<Plane>,
}

pub(crate) struct Plane {
    settings: MsrpSettings,
    local: SocketAddr,
    /// Each thread's runtime, by shard number.
    shards: Vec<tokio::runtime::Handle>,
    /// The next leg's or sink's shard (round robin).
    next_home: AtomicUsize,
    /// Our URIs' session-ids → the leg and the side that URI faces, or a sink.
    routes: Mutex<HashMap<Bytes, Route>>,
    metrics: Arc<MsrpMetrics>,
    sdp: MsrpConfig,
    seeds: AtomicU64,
    /// Messages being received by sinks, by owner (see [`MsrpPlane::receiving`]).
    receiving: Mutex<HashMap<Bytes, usize>>,
}

impl MsrpPlane {
    /// Binds the listener and starts the plane's threads (`settings.threads`, the listener on
    /// the first). `key` makes the session-ids unguessable, `seed` the transaction ids; both
    /// from the OS random source.
    pub fn start(
        settings: MsrpSettings,
        key: [u8; 32],
        seed: u64,
        metrics: Arc<MsrpMetrics>,
    ) -> std::io::Result<MsrpPlane> {
        let listener = std::net::TcpListener::bind(settings.listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let runtimes = (0..settings.threads.max(1))
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let inner = Arc::new(Plane {
            sdp: MsrpConfig::new(local.port(), key),
            settings,
            local,
            shards: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
            next_home: AtomicUsize::new(0),
            routes: Mutex::new(HashMap::new()),
            metrics,
            seeds: AtomicU64::new(seed),
            receiving: Mutex::new(HashMap::new()),
        });
        let mut listener = Some(listener);
        for (k, rt) in runtimes.into_iter().enumerate() {
            let plane = inner.clone();
            let listener = listener.take();
            std::thread::Builder::new()
                .name(format!("cpm-msrp-{k}"))
                .spawn(move || {
                    SHARD.set(k);
                    rt.block_on(async move {
                        let Some(l) = listener else {
                            // The runtime runs the tasks spawned on it while it waits here.
                            return std::future::pending().await;
                        };
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => conn::accept_loop(l, plane).await,
                            Err(e) => tracing::error!(error = %e, "MSRP listener"),
                        }
                    })
                })?;
        }
        tracing::info!(%local, threads = inner.shards.len(), "MSRP relay listening");
        Ok(MsrpPlane { inner })
    }

    /// The engine's MSRP configuration for this plane: its port and session-id sequence.
    pub fn sdp_config(&self) -> MsrpConfig {
        self.inner.sdp.clone()
    }

    /// The bound listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Opens a leg between our URIs `a_facing` and `b_facing` (from
    /// `LegChange::OpenMsrp`): connections to them are routed to it until it is dropped.
    pub fn open_leg(&self, a_facing: &Bytes, b_facing: &Bytes) -> Result<MsrpLeg, String> {
        leg::open(&self.inner, a_facing, b_facing)
    }

    /// Legs open now.
    pub fn leg_count(&self) -> usize {
        let routes = self.inner.routes.lock();
        routes
            .values()
            .filter(|r| matches!(r, Route::Leg(..)))
            .count()
            / 2
    }

    /// Opens a large-message sink (cpmd is the MSRP endpoint of the session; passive unless
    /// [`MsrpSink::connect`] is called) at our URI `local` for the sender at `peer_path`:
    /// each complete message of at most `max` bytes goes to `on_message`, and its last chunk
    /// is answered with what comes back on the [`Reply`]. Its messages are counted for
    /// `owner` while they are received. The sink closes when the handle is dropped.
    pub fn open_sink(
        &self,
        local: &Bytes,
        peer_path: &Bytes,
        max: u64,
        owner: Bytes,
        on_message: OnMessage,
    ) -> Result<MsrpSink, String> {
        endpoint::open_sink(&self.inner, local, peer_path, max, owner, on_message)
    }

    /// Opens a chat sink (a conference participant's chat session, the focus its MSRP
    /// endpoint): a sink as [`MsrpPlane::open_sink`] that also sends what
    /// [`MsrpSink::send`] queues, `queue` messages at most (more are dropped and counted).
    pub fn open_chat(
        &self,
        local: &Bytes,
        peer_path: &Bytes,
        max: u64,
        queue: usize,
        on_message: OnMessage,
    ) -> Result<MsrpSink, String> {
        endpoint::open_chat(&self.inner, local, peer_path, max, queue, on_message)
    }

    /// Sinks (large-message and chat) open now.
    pub fn sink_count(&self) -> usize {
        let routes = self.inner.routes.lock();
        routes
            .values()
            .filter(|r| matches!(r, Route::Sink(..)))
            .count()
    }

    /// Whether a sink is receiving a message for `owner` now: from its first chunk until its
    /// storage answer came, before the sender is told (or until it was aborted, refused or its
    /// connection lost).
    pub fn receiving(&self, owner: &[u8]) -> bool {
        self.inner.receiving.lock().contains_key(owner)
    }

    /// A fresh URI of ours on `host` (a new session-id on this plane's port).
    pub fn fresh_uri(&self, host: &str) -> Bytes {
        let sid = self.inner.sdp.fresh_session_id();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut s = format!("msrp://{host}:{}/", self.inner.local.port()).into_bytes();
        s.extend_from_slice(&sid);
        s.extend_from_slice(b";tcp");
        Bytes::from(s)
    }

    /// Sends `msg` to a device as its MSRP endpoint (see [`Outgoing`]); `done` gets the result
    /// on the plane's thread: `Ok` after the 200 to the last chunk, else the status that ended
    /// it (480: unreachable, 408: no answer).
    pub fn deliver(&self, msg: Outgoing, done: impl FnOnce(Result<(), u16>) + Send + 'static) {
        let plane = self.inner.clone();
        self.inner.spawn_on(self.inner.next_home(), async move {
            done(endpoint::deliver(plane, msg).await)
        });
    }
}

/// What one of our session-ids routes to.
pub(crate) enum Route {
    /// A relay leg, and the side the URI faces.
    Leg(Weak<LegState>, Side),
    /// A large-message sink.
    Sink(Weak<SinkState>),
}

thread_local! {
    /// The shard of the plane's thread running this code (0 elsewhere).
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard of the current thread of the plane.
fn current_shard() -> usize {
    SHARD.get()
}

impl Plane {
    /// The shard of a new leg or sink: the next one round robin.
    fn next_home(&self) -> usize {
        self.next_home.fetch_add(1, Relaxed) % self.shards.len()
    }

    /// Runs `task` on shard `home`.
    fn spawn_on<F>(&self, home: usize, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.shards[home].spawn(task);
    }

    fn next_seed(&self) -> u64 {
        self.seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .rotate_left(17)
    }
}

#[cfg(test)]
mod tests;
