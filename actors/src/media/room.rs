//! Conference rooms in the media loop (decision 0014): each participant of a conference has
//! one local port (RTP, and RTCP on the next unless it multiplexes) owned by the worker's
//! media loop; received RTP goes straight into the room's mixer (same thread: no lock, no
//! actor message, no copy before the jitter buffer), and every 20 ms the loop runs the room's
//! tick and sends each participant its mix-minus packet.
//!
//! ```text
//!  participant k ──RTP──► [port k] ─ latch, parse ─► Mix::push(k, ..)      (on readable)
//!  participant k ◄─RTP─── [port k] ◄─ Mix::tick(now) → (k, packet) ...      (every 20 ms)
//! ```
//! The loop's poll timeout is the earliest of the rooms' next ticks, so a tick runs at its
//! deadline (the lateness, actual minus scheduled, is kept in a histogram: [`TickStats`]).
//! Latching is as for relay legs (symmetric RTP): packets go to the SDP address until the
//! participant's first valid packet, then to its source; other sources are dropped. Latched
//! sockets are not `connect()`ed here (one socket per participant already). RTCP from
//! participants is counted and dropped (the mixer is the RTP source they hear).
//!
//! One send per participant per tick: each has its own socket (its SDP names that port, and
//! symmetric-RTP peers expect the mix from it), so `sendmmsg` cannot batch across them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::rtp;
use cpm_netio::{BatchSocket, BytesBatch};
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use cpm_engine::conference::audio::{Mixer, MixerConfig, ParticipantId};

use super::stats::bump;
use crate::conference::sdp::AudioCodec;
use crate::metrics::WorkerMetrics;

/// Tokens of conference sockets start here (relay legs use `slot << 3 | k`, far below).
pub(crate) const ROOM_TOKEN_BASE: usize = 1 << (usize::BITS - 2);

/// The mixing tick (20 ms, 160 samples at 8 kHz).
pub const TICK: Duration = Duration::from_millis(20);

/// Batches read from one conference socket before the others get a turn.
const MAX_BATCHES: usize = 8;

/// Identifies a room in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId(pub u64);

/// What a room tells its conference actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum RoomEvent {
    /// The active speaker changed (`None`: nobody talks).
    ActiveSpeaker(Option<u32>),
}

/// The mixing a room does, as the media loop drives it: the engine's mixer
/// (`cpm_engine::conference::audio`) behind a narrow interface, so the loop's plumbing is
/// tested on its own.
pub trait Mix: Send {
    /// A participant joins with its codec and payload type.
    fn add(&mut self, pid: u32, codec: AudioCodec, pt: u8);
    /// A participant's codec changed (re-INVITE, or the answer to a dial-out).
    fn update(&mut self, pid: u32, codec: AudioCodec, pt: u8);
    /// A participant leaves.
    fn remove(&mut self, pid: u32);
    /// Mutes or unmutes a participant (its audio is left out of every mix).
    fn set_muted(&mut self, pid: u32, muted: bool);
    /// One received RTP packet of a participant.
    fn push(&mut self, pid: u32, packet: &rtp::RtpPacket, arrival: Instant);
    /// Runs the tick due at `now`: the packets to send (participant, RTP datagram) go to
    /// `out`; returns the active speaker when it changed.
    fn tick(&mut self, now: Instant, out: &mut Vec<(u32, Bytes)>) -> Option<Option<u32>>;
}

/// Builds a room's mixer (the plane's choice, see [`super::MediaPlane::open_room`]).
pub type MixFactory = Arc<dyn Fn() -> Box<dyn Mix> + Send + Sync>;

/// Tick lateness of one media loop: a Prometheus histogram in microseconds, and counters.
#[derive(Debug, Default)]
pub struct TickStats {
    /// Counts per bucket of [`LATENESS_BUCKETS_US`] (cumulative when rendered), the last
    /// for larger values.
    pub buckets: [AtomicU64; LATENESS_BUCKETS_US.len() + 1],
    /// Sum of lateness, µs.
    pub sum_us: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// RTP packets from participants handed to mixers.
    pub packets_in: AtomicU64,
    /// Mixed packets sent to participants.
    pub packets_out: AtomicU64,
    /// Datagrams dropped (wrong source, not RTP, RTCP, send failures).
    pub dropped: AtomicU64,
}

/// Upper bounds (µs) of the tick lateness histogram's buckets.
pub const LATENESS_BUCKETS_US: [u64; 8] = [100, 250, 500, 1000, 2000, 5000, 10_000, 20_000];

impl TickStats {
    fn record(&self, late: Duration) {
        let us = late.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENESS_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENESS_BUCKETS_US.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_us, us);
        bump(&self.ticks, 1);
    }
}

/// Commands for rooms (sent through the plane's command channel).
pub(crate) enum RoomCommand {
    Open {
        id: RoomId,
        events: Option<Recipient<RoomEvent>>,
    },
    Close(RoomId),
    Add(Box<NewMember>),
    Update {
        id: RoomId,
        pid: u32,
        codec: AudioCodec,
        pt: u8,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    },
    Remove {
        id: RoomId,
        pid: u32,
    },
    Mute {
        id: RoomId,
        pid: u32,
        muted: bool,
    },
}

/// A participant's bound sockets on their way to the loop.
pub(crate) struct NewMember {
    pub id: RoomId,
    pub pid: u32,
    pub rtp: BatchSocket,
    pub rtcp: Option<BatchSocket>,
    pub codec: AudioCodec,
    pub pt: u8,
    pub peer: Option<SocketAddr>,
}

struct Member {
    pid: u32,
    rtp: BatchSocket,
    rtcp: Option<BatchSocket>,
    tokens: [Option<usize>; 2],
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
}

impl Member {
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.sdp)
    }
}

struct Room {
    mix: Box<dyn Mix>,
    members: Vec<Member>,
    next_tick: Instant,
    events: Option<Recipient<RoomEvent>>,
}

/// Every room of one media loop.
pub(crate) struct Rooms {
    rooms: HashMap<RoomId, Room>,
    /// Token index → (room, participant, is the RTCP socket).
    sockets: Vec<Option<(RoomId, u32, bool)>>,
    free: Vec<usize>,
    pending: Vec<usize>,
    out: Vec<(u32, Bytes)>,
    factory: MixFactory,
    stats: Arc<TickStats>,
    metrics: Arc<WorkerMetrics>,
    strict: bool,
}

impl Rooms {
    pub fn new(
        factory: MixFactory,
        stats: Arc<TickStats>,
        metrics: Arc<WorkerMetrics>,
        strict: bool,
    ) -> Rooms {
        Rooms {
            rooms: HashMap::new(),
            sockets: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            out: Vec::new(),
            factory,
            stats,
            metrics,
            strict,
        }
    }

    /// When the next tick is due, if any room is open.
    pub fn next_tick(&self) -> Option<Instant> {
        self.rooms.values().map(|r| r.next_tick).min()
    }

    /// Whether some socket was not drained last turn.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn command(&mut self, c: RoomCommand, poll: &Poll, now: Instant) {
        match c {
            RoomCommand::Open { id, events } => {
                self.rooms.insert(
                    id,
                    Room {
                        mix: (self.factory)(),
                        members: Vec::new(),
                        next_tick: now + TICK,
                        events,
                    },
                );
            }
            RoomCommand::Close(id) => {
                if let Some(room) = self.rooms.remove(&id) {
                    for m in room.members {
                        self.release(poll, m);
                    }
                }
            }
            RoomCommand::Add(n) => self.add(*n, poll),
            RoomCommand::Update {
                id,
                pid,
                codec,
                pt,
                rtp,
                rtcp,
            } => {
                let _ = rtcp;
                if let Some(room) = self.rooms.get_mut(&id) {
                    room.mix.update(pid, codec, pt);
                    if let Some(m) = room.members.iter_mut().find(|m| m.pid == pid) {
                        if m.sdp != rtp {
                            m.sdp = rtp;
                            m.latched = None;
                        }
                    }
                }
            }
            RoomCommand::Remove { id, pid } => {
                if let Some(room) = self.rooms.get_mut(&id) {
                    room.mix.remove(pid);
                    if let Some(i) = room.members.iter().position(|m| m.pid == pid) {
                        let m = room.members.swap_remove(i);
                        self.release(poll, m);
                    }
                }
            }
            RoomCommand::Mute { id, pid, muted } => {
                if let Some(room) = self.rooms.get_mut(&id) {
                    room.mix.set_muted(pid, muted);
                }
            }
        }
    }

    fn add(&mut self, n: NewMember, poll: &Poll) {
        let Some(room) = self.rooms.get_mut(&n.id) else {
            return;
        };
        let mut m = Member {
            pid: n.pid,
            rtp: n.rtp,
            rtcp: n.rtcp,
            tokens: [None, None],
            sdp: n.peer,
            latched: None,
        };
        let mut ok = true;
        for (k, sock) in [Some(&m.rtp), m.rtcp.as_ref()].into_iter().enumerate() {
            let Some(sock) = sock else { continue };
            let slot = self.free.pop().unwrap_or_else(|| {
                self.sockets.push(None);
                self.sockets.len() - 1
            });
            self.sockets[slot] = Some((n.id, n.pid, k == 1));
            let fd = sock.socket().as_raw_fd();
            if let Err(e) = poll.registry().register(
                &mut SourceFd(&fd),
                Token(ROOM_TOKEN_BASE + slot),
                Interest::READABLE,
            ) {
                tracing::warn!(error = %e, "cannot poll a conference socket");
                ok = false;
            }
            m.tokens[k] = Some(slot);
        }
        let ports = 1 + u64::from(m.rtcp.is_some());
        bump(&self.metrics.media.ports, ports);
        if !ok {
            self.release(poll, m);
            return;
        }
        room.mix.add(n.pid, n.codec, n.pt);
        room.members.push(m);
    }

    fn release(&mut self, poll: &Poll, m: Member) {
        for (slot, sock) in m.tokens.iter().zip([Some(&m.rtp), m.rtcp.as_ref()]) {
            if let (Some(slot), Some(sock)) = (slot, sock) {
                let fd = sock.socket().as_raw_fd();
                let _ = poll.registry().deregister(&mut SourceFd(&fd));
                self.sockets[*slot] = None;
                self.free.push(*slot);
                self.pending.retain(|p| p != slot);
            }
        }
        let ports = 1 + u64::from(m.rtcp.is_some());
        let p = &self.metrics.media.ports;
        p.store(p.load(Relaxed).saturating_sub(ports), Relaxed);
    }

    /// Reads what conference socket `token` holds into its room's mixer.
    pub fn on_readable(&mut self, token: Token, batch: &mut BytesBatch, now: Instant) {
        let slot = token.0 - ROOM_TOKEN_BASE;
        if !self.read(slot, batch, now) {
            self.pending.push(slot);
        }
    }

    /// Reads the sockets left undrained last turn.
    pub fn read_pending(&mut self, batch: &mut BytesBatch, now: Instant) {
        let pending = std::mem::take(&mut self.pending);
        for slot in pending {
            if !self.read(slot, batch, now) {
                self.pending.push(slot);
            }
        }
    }

    /// Reads socket `slot`; false when it was not drained.
    fn read(&mut self, slot: usize, batch: &mut BytesBatch, now: Instant) -> bool {
        let Some(Some((id, pid, is_rtcp_port))) = self.sockets.get(slot).copied() else {
            return true;
        };
        let Some(room) = self.rooms.get_mut(&id) else {
            return true;
        };
        let Some(Member {
            rtp: rtp_sock,
            rtcp,
            latched,
            ..
        }) = room.members.iter_mut().find(|m| m.pid == pid)
        else {
            return true;
        };
        let sock = if is_rtcp_port {
            rtcp.as_ref()
        } else {
            Some(&*rtp_sock)
        };
        let Some(sock) = sock else { return true };
        for _ in 0..MAX_BATCHES {
            let n = match sock.recv_bytes_upto(batch, batch.capacity()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::debug!(error = %e, "conference receive failed");
                    return true;
                }
            };
            for i in 0..n {
                let (Some(meta), Some(data)) = (batch.meta(i), batch.take(i)) else {
                    continue;
                };
                if is_rtcp_port || meta.truncated || rtp::is_rtcp(&data) {
                    bump(&self.stats.dropped, 1);
                    continue;
                }
                if self.strict && latched.is_some_and(|l| l != meta.source) {
                    bump(&self.stats.dropped, 1);
                    continue;
                }
                match rtp::parse(data) {
                    Ok(p) => {
                        *latched = Some(meta.source);
                        room.mix.push(pid, &p, now);
                        bump(&self.stats.packets_in, 1);
                    }
                    Err(_) => bump(&self.stats.dropped, 1),
                }
            }
            if n < batch.capacity() {
                return true;
            }
        }
        false
    }

    /// Runs every tick due at `now` and sends its packets.
    pub fn tick(&mut self, now: Instant) {
        for room in self.rooms.values_mut() {
            let mut runs = 0;
            while room.next_tick <= now {
                self.stats.record(now - room.next_tick);
                self.out.clear();
                if let Some(speaker) = room.mix.tick(room.next_tick, &mut self.out) {
                    if let Some(ev) = &room.events {
                        let _ = ev.try_send(RoomEvent::ActiveSpeaker(speaker));
                    }
                }
                for (pid, pkt) in self.out.drain(..) {
                    let Some(m) = room.members.iter().find(|m| m.pid == pid) else {
                        continue;
                    };
                    let Some(dest) = m.dest() else { continue };
                    match m.rtp.send_one(dest, &pkt) {
                        Ok(()) => bump(&self.stats.packets_out, 1),
                        Err(_) => bump(&self.stats.dropped, 1),
                    }
                }
                room.next_tick += TICK;
                runs += 1;
                // Far behind (the thread was descheduled): skip ahead rather than burst.
                if runs >= 3 && room.next_tick <= now {
                    room.next_tick = now + TICK;
                }
            }
        }
    }

    /// Closes every room (the loop ends).
    pub fn close_all(&mut self, poll: &Poll) {
        let ids: Vec<RoomId> = self.rooms.keys().copied().collect();
        for id in ids {
            self.command(RoomCommand::Close(id), poll, Instant::now());
        }
    }
}

/// The mixer rooms use: the engine's (`cpm_engine::conference::audio`).
pub(crate) fn default_mix() -> MixFactory {
    let rooms = AtomicU64::new(1);
    Arc::new(move || {
        let seed = rooms.fetch_add(1, Relaxed);
        Box::new(EngineMix::new(seed)) as Box<dyn Mix>
    })
}

/// The engine's mix-minus mixer behind [`Mix`].
pub struct EngineMix {
    mixer: Mixer,
    speaker: Option<u32>,
    ssrcs: std::collections::hash_map::RandomState,
    seed: u64,
}

impl EngineMix {
    /// A mixer with the default jitter and talker settings; `seed` varies the SSRCs.
    pub fn new(seed: u64) -> EngineMix {
        EngineMix {
            mixer: Mixer::new(MixerConfig::default()),
            speaker: None,
            ssrcs: Default::default(),
            seed,
        }
    }

    /// A random SSRC for the mix a participant receives (RFC 3550 §8.1).
    fn ssrc(&self, pid: u32) -> u32 {
        use std::hash::BuildHasher;
        self.ssrcs.hash_one((self.seed, pid)) as u32
    }
}

impl Mix for EngineMix {
    fn add(&mut self, pid: u32, codec: AudioCodec, pt: u8) {
        let ssrc = self.ssrc(pid);
        if let Err(e) = self.mixer.add(ParticipantId(pid), codec, pt, ssrc) {
            tracing::debug!(pid, error = e.reason(), "mixer refused a participant");
        }
    }

    fn update(&mut self, pid: u32, codec: AudioCodec, pt: u8) {
        // The mixer has no codec change: the participant is added again (a fresh stream).
        let _ = self.mixer.remove(ParticipantId(pid));
        self.add(pid, codec, pt);
    }

    fn remove(&mut self, pid: u32) {
        let _ = self.mixer.remove(ParticipantId(pid));
    }

    fn set_muted(&mut self, pid: u32, muted: bool) {
        let _ = self.mixer.set_muted(ParticipantId(pid), muted);
    }

    fn push(&mut self, pid: u32, p: &rtp::RtpPacket, arrival: Instant) {
        let _ = self.mixer.push_rtp(
            ParticipantId(pid),
            p.seq().0,
            p.timestamp(),
            p.marker(),
            p.payload_bytes(),
            arrival,
        );
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<(u32, Bytes)>) -> Option<Option<u32>> {
        let t = self.mixer.tick(now);
        out.extend(t.packets.iter().map(|p| (p.id.0, p.packet.clone())));
        let speaker = t.active_speaker.map(|p| p.0);
        (speaker != self.speaker).then(|| {
            self.speaker = speaker;
            speaker
        })
    }
}

/// A mixer that mixes nothing (rooms of a plane started without one, e.g. in unit tests).
pub struct NullMix;

impl Mix for NullMix {
    fn add(&mut self, _: u32, _: AudioCodec, _: u8) {}
    fn update(&mut self, _: u32, _: AudioCodec, _: u8) {}
    fn remove(&mut self, _: u32) {}
    fn set_muted(&mut self, _: u32, _: bool) {}
    fn push(&mut self, _: u32, _: &rtp::RtpPacket, _: Instant) {}
    fn tick(&mut self, _: Instant, _: &mut Vec<(u32, Bytes)>) -> Option<Option<u32>> {
        None
    }
}

/// Renders the conference series of `/metrics`: conferences and participants (from the
/// registry) and each media loop's tick lateness histogram and counters.
pub fn render_metrics(
    out: &mut String,
    conferences: usize,
    participants: usize,
    loops: &[Arc<TickStats>],
) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "# HELP cpm_conferences Conferences running.\n# TYPE cpm_conferences gauge\ncpm_conferences {conferences}\n\
         # HELP cpm_conference_participants Participants of running conferences.\n\
         # TYPE cpm_conference_participants gauge\ncpm_conference_participants {participants}\n"
    );
    let sum = |f: &dyn Fn(&TickStats) -> u64| loops.iter().map(|s| f(s)).sum::<u64>();
    let _ = write!(
        out,
        "# HELP cpm_conference_tick_lateness_seconds Mixer tick start minus its deadline.\n\
         # TYPE cpm_conference_tick_lateness_seconds histogram\n"
    );
    let mut cum = 0;
    for (i, b) in LATENESS_BUCKETS_US.iter().enumerate() {
        cum += sum(&|s| s.buckets[i].load(Relaxed));
        let _ = writeln!(
            out,
            "cpm_conference_tick_lateness_seconds_bucket{{le=\"{}\"}} {cum}",
            *b as f64 / 1e6
        );
    }
    cum += sum(&|s| s.buckets[LATENESS_BUCKETS_US.len()].load(Relaxed));
    let _ = write!(
        out,
        "cpm_conference_tick_lateness_seconds_bucket{{le=\"+Inf\"}} {cum}\n\
         cpm_conference_tick_lateness_seconds_sum {}\ncpm_conference_tick_lateness_seconds_count {cum}\n",
        sum(&|s| s.sum_us.load(Relaxed)) as f64 / 1e6
    );
    for (name, help, f) in [
        (
            "cpm_conference_rtp_in_total",
            "RTP packets from participants into mixers.",
            &(|s: &TickStats| s.packets_in.load(Relaxed)) as &dyn Fn(&TickStats) -> u64,
        ),
        (
            "cpm_conference_rtp_out_total",
            "Mixed RTP packets sent to participants.",
            &|s: &TickStats| s.packets_out.load(Relaxed),
        ),
        (
            "cpm_conference_dropped_total",
            "Conference datagrams dropped (wrong source, not RTP, RTCP, send failed).",
            &|s: &TickStats| s.dropped.load(Relaxed),
        ),
    ] {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            sum(f)
        );
    }
}
