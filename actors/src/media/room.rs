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
//!
//! **Video** is forwarded, not mixed (RFC 7667 §3.7): a participant with video has a second
//! port; every video packet received goes through the room's engine `VideoSwitch`, which
//! picks the receivers (everyone but the speaker sees the speaker, the speaker sees the
//! previous one) and rewrites a 12-byte header per receiver (one continuous SSRC, sequence
//! and timestamp each). Each copy is one `sendmsg` with two iovecs, the rewritten header and
//! the received datagram after its fixed header: the payload is never copied. The mixer's
//! active-speaker changes switch the video in the same thread; a newly shown source gets a
//! PLI and a FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) on its RTCP; PLI, FIR or NACK from a
//! receiver become a key-frame request to the source it is shown (NACKs too: the focus keeps
//! no packets to resend), at most one per receiver per [`KEYFRAME_REQUEST_GAP`].
//!
//! ```text
//!  speaker s ──video──► [vport s] ─ VideoSwitch::forward ─► (receiver r, header r) ...
//!  receiver r ◄──────── [vport r] ◄─ sendmsg [header r | datagram s[12..]]
//!  receiver r ──PLI/FIR/NACK──► [vport r (RTCP)] ─► PLI+FIR ─► [vport s (RTCP)] ─► s
//! ```

use std::collections::HashMap;
use std::io::{self, IoSlice};
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
use cpm_engine::conference::video::{Forward, VideoConfig, VideoSwitch};
use cpm_engine::rtp::{Ssrc, FIXED_HEADER_LEN};

use super::stats::bump;
use crate::conference::sdp::AudioCodec;
use crate::metrics::WorkerMetrics;

/// Tokens of conference sockets start here (relay legs use `slot << 3 | k`, far below).
pub(crate) const ROOM_TOKEN_BASE: usize = 1 << (usize::BITS - 2);

/// The mixing tick (20 ms, 160 samples at 8 kHz).
pub const TICK: Duration = Duration::from_millis(20);

/// Batches read from one conference socket before the others get a turn.
const MAX_BATCHES: usize = 8;

/// The shortest time between two key-frame requests a receiver's RTCP causes.
pub const KEYFRAME_REQUEST_GAP: Duration = Duration::from_millis(500);

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
    /// Video packets received from participants.
    pub video_in: AtomicU64,
    /// Video packets forwarded to participants (one per receiver).
    pub video_out: AtomicU64,
    /// Key-frame requests (PLI+FIR) sent to video sources.
    pub keyframe_requests: AtomicU64,
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
    AddVideo(Box<NewVideo>),
    UpdateVideo {
        id: RoomId,
        pid: u32,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    },
    RemoveVideo {
        id: RoomId,
        pid: u32,
    },
}

/// A participant's bound video sockets on their way to the loop.
pub(crate) struct NewVideo {
    pub id: RoomId,
    pub pid: u32,
    pub rtp: BatchSocket,
    pub rtcp: Option<BatchSocket>,
    pub peer: Option<SocketAddr>,
    pub peer_rtcp: Option<SocketAddr>,
}

/// Which of a participant's sockets a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AudioRtp,
    AudioRtcp,
    VideoRtp,
    VideoRtcp,
}

/// A participant's video port(s) in the loop.
struct VideoLeg {
    rtp: BatchSocket,
    rtcp: Option<BatchSocket>,
    tokens: [Option<usize>; 2],
    sdp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// The SSRC it sends video as, once seen.
    ssrc: Option<Ssrc>,
    /// When its RTCP last caused a key-frame request.
    last_request: Option<Instant>,
}

impl VideoLeg {
    fn dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.sdp)
    }

    /// Where its RTCP goes: the RTCP source seen, else the SDP's (`a=rtcp`, the RTP port
    /// when multiplexed, else the next port, RFC 3550 §11).
    fn rtcp_dest(&self) -> Option<SocketAddr> {
        if self.rtcp.is_none() {
            return self.latched_rtcp.or(self.dest());
        }
        self.latched_rtcp.or(self.sdp_rtcp).or_else(|| {
            self.dest()
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }

    /// The socket its RTCP is sent from.
    fn rtcp_socket(&self) -> &BatchSocket {
        self.rtcp.as_ref().unwrap_or(&self.rtp)
    }
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
    video: Option<VideoLeg>,
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
    video: VideoSwitch,
    /// The output SSRCs of the video receivers are drawn from this.
    ssrcs: std::collections::hash_map::RandomState,
}

impl Room {
    /// Sends the key-frame requests the video switch has queued (PLI then FIR in one
    /// datagram, on the source's RTCP).
    fn send_keyframes(&mut self, stats: &TickStats) {
        while let Some(req) = self.video.poll_keyframe_request() {
            let Some(leg) = self
                .members
                .iter()
                .find(|m| m.pid == req.to.0)
                .and_then(|m| m.video.as_ref())
            else {
                continue;
            };
            let Some(dest) = leg.rtcp_dest() else {
                continue;
            };
            match leg.rtcp_socket().send_one(dest, &req.datagram()) {
                Ok(()) => bump(&stats.keyframe_requests, 1),
                Err(_) => bump(&stats.dropped, 1),
            }
        }
    }

    /// Forwards one video packet of `pid` to whoever is shown it: the rewritten header and
    /// the received bytes after the fixed header, in one `sendmsg` per receiver.
    fn forward_video(
        &mut self,
        pid: u32,
        packet: &rtp::RtpPacket,
        now: Instant,
        fwd: &mut Vec<Forward>,
        stats: &TickStats,
    ) {
        fwd.clear();
        self.video.forward(now, ParticipantId(pid), packet, fwd);
        let rest = packet
            .as_bytes()
            .get(FIXED_HEADER_LEN..)
            .unwrap_or_default();
        for f in fwd.drain(..) {
            let Some(leg) = self
                .members
                .iter()
                .find(|m| m.pid == f.to.0)
                .and_then(|m| m.video.as_ref())
            else {
                continue;
            };
            let Some(dest) = leg.dest() else { continue };
            match send_vectored(&leg.rtp, dest, &f.header, rest) {
                Ok(()) => bump(&stats.video_out, 1),
                Err(_) => bump(&stats.dropped, 1),
            }
        }
        self.send_keyframes(stats);
    }

    /// RTCP from `pid`'s video port: its PLI, FIR or NACK (RFC 4585 §6.2.1, §6.3.1, RFC 5104
    /// §4.3.1) asks the source it is shown for a key frame, at most once per
    /// [`KEYFRAME_REQUEST_GAP`].
    fn video_rtcp(&mut self, pid: u32, data: &[u8], now: Instant, stats: &TickStats) {
        let wants_keyframe = rtp::rtcp::packets(data).map_while(Result::ok).any(|p| {
            matches!(
                (p.packet_type_raw(), p.count()),
                (206, 1) | (206, 4) | (205, 1)
            )
        });
        if !wants_keyframe {
            return;
        }
        let Some(leg) = self
            .members
            .iter_mut()
            .find(|m| m.pid == pid)
            .and_then(|m| m.video.as_mut())
        else {
            return;
        };
        if leg
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_GAP)
        {
            return;
        }
        leg.last_request = Some(now);
        self.video.on_receiver_keyframe_request(ParticipantId(pid));
        self.send_keyframes(stats);
    }
}

/// Sends `head` then `rest` as one datagram (`sendmsg` with two iovecs): the fan-out of a
/// video packet copies no payload.
fn send_vectored(sock: &BatchSocket, dest: SocketAddr, head: &[u8], rest: &[u8]) -> io::Result<()> {
    let s = socket2::SockRef::from(sock.socket());
    s.send_to_vectored(&[IoSlice::new(head), IoSlice::new(rest)], &dest.into())
        .map(|_| ())
}

/// Every room of one media loop.
pub(crate) struct Rooms {
    rooms: HashMap<RoomId, Room>,
    /// Token index → (room, participant, which socket).
    sockets: Vec<Option<(RoomId, u32, Kind)>>,
    free: Vec<usize>,
    pending: Vec<usize>,
    out: Vec<(u32, Bytes)>,
    fwd: Vec<Forward>,
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
            fwd: Vec::new(),
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
                        video: VideoSwitch::new(VideoConfig::default()),
                        ssrcs: Default::default(),
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
                    room.video.remove_participant(ParticipantId(pid));
                    room.send_keyframes(&self.stats);
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
            RoomCommand::AddVideo(v) => self.add_video(*v, poll),
            RoomCommand::UpdateVideo { id, pid, rtp, rtcp } => {
                let leg = self
                    .rooms
                    .get_mut(&id)
                    .and_then(|r| r.members.iter_mut().find(|m| m.pid == pid))
                    .and_then(|m| m.video.as_mut());
                if let Some(leg) = leg {
                    if leg.sdp != rtp {
                        leg.sdp = rtp;
                        leg.latched = None;
                        leg.latched_rtcp = None;
                    }
                    leg.sdp_rtcp = rtcp;
                }
            }
            RoomCommand::RemoveVideo { id, pid } => {
                let Some(room) = self.rooms.get_mut(&id) else {
                    return;
                };
                room.video.remove_participant(ParticipantId(pid));
                room.send_keyframes(&self.stats);
                let leg = room
                    .members
                    .iter_mut()
                    .find(|m| m.pid == pid)
                    .and_then(|m| m.video.take());
                if let Some(leg) = leg {
                    self.release_video(poll, leg);
                }
            }
        }
    }

    /// Registers `sock` with the poll under a fresh token for (room, participant, kind).
    fn register(
        &mut self,
        poll: &Poll,
        sock: &BatchSocket,
        entry: (RoomId, u32, Kind),
    ) -> (usize, bool) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sockets.push(None);
            self.sockets.len() - 1
        });
        self.sockets[slot] = Some(entry);
        super::relay_loop::relay_sockets_opened(1);
        let fd = sock.socket().as_raw_fd();
        let ok = match poll.registry().register(
            &mut SourceFd(&fd),
            Token(ROOM_TOKEN_BASE + slot),
            Interest::READABLE,
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot poll a conference socket");
                false
            }
        };
        (slot, ok)
    }

    /// Deregisters a socket and frees its token.
    fn unregister(&mut self, poll: &Poll, slot: usize, sock: &BatchSocket) {
        let fd = sock.socket().as_raw_fd();
        let _ = poll.registry().deregister(&mut SourceFd(&fd));
        if let Some(s) = self.sockets.get_mut(slot) {
            *s = None;
        }
        super::relay_loop::relay_sockets_closed(1);
        self.free.push(slot);
        self.pending.retain(|p| *p != slot);
    }

    fn add_video(&mut self, n: NewVideo, poll: &Poll) {
        let exists = self.rooms.get(&n.id).is_some_and(|r| {
            r.members
                .iter()
                .any(|m| m.pid == n.pid && m.video.is_none())
        });
        if !exists {
            return;
        }
        let mut leg = VideoLeg {
            rtp: n.rtp,
            rtcp: n.rtcp,
            tokens: [None, None],
            sdp: n.peer,
            sdp_rtcp: n.peer_rtcp,
            latched: None,
            latched_rtcp: None,
            ssrc: None,
            last_request: None,
        };
        let mut ok = true;
        let (slot, k) = self.register(poll, &leg.rtp, (n.id, n.pid, Kind::VideoRtp));
        leg.tokens[0] = Some(slot);
        ok &= k;
        if let Some(rtcp) = leg.rtcp.take() {
            let (slot, k) = self.register(poll, &rtcp, (n.id, n.pid, Kind::VideoRtcp));
            leg.tokens[1] = Some(slot);
            leg.rtcp = Some(rtcp);
            ok &= k;
        }
        bump(&self.metrics.media.ports, 1 + u64::from(leg.rtcp.is_some()));
        if !ok {
            self.release_video(poll, leg);
            return;
        }
        let Some(room) = self.rooms.get_mut(&n.id) else {
            return;
        };
        use std::hash::BuildHasher;
        let out = Ssrc(room.ssrcs.hash_one(n.pid) as u32);
        room.video
            .add_participant(ParticipantId(n.pid), None, Some(out));
        if let Some(m) = room.members.iter_mut().find(|m| m.pid == n.pid) {
            m.video = Some(leg);
        }
    }

    fn release_video(&mut self, poll: &Poll, leg: VideoLeg) {
        for (slot, sock) in leg.tokens.iter().zip([Some(&leg.rtp), leg.rtcp.as_ref()]) {
            if let (Some(slot), Some(sock)) = (slot, sock) {
                self.unregister(poll, *slot, sock);
            }
        }
        let ports = 1 + u64::from(leg.rtcp.is_some());
        let p = &self.metrics.media.ports;
        p.store(p.load(Relaxed).saturating_sub(ports), Relaxed);
    }

    fn add(&mut self, n: NewMember, poll: &Poll) {
        if !self.rooms.contains_key(&n.id) {
            return;
        }
        let mut m = Member {
            pid: n.pid,
            rtp: n.rtp,
            rtcp: n.rtcp,
            tokens: [None, None],
            sdp: n.peer,
            latched: None,
            video: None,
        };
        let (slot, mut ok) = self.register(poll, &m.rtp, (n.id, n.pid, Kind::AudioRtp));
        m.tokens[0] = Some(slot);
        if let Some(rtcp) = m.rtcp.take() {
            let (slot, k) = self.register(poll, &rtcp, (n.id, n.pid, Kind::AudioRtcp));
            m.tokens[1] = Some(slot);
            m.rtcp = Some(rtcp);
            ok &= k;
        }
        let ports = 1 + u64::from(m.rtcp.is_some());
        bump(&self.metrics.media.ports, ports);
        if !ok {
            self.release(poll, m);
            return;
        }
        let Some(room) = self.rooms.get_mut(&n.id) else {
            return;
        };
        room.mix.add(n.pid, n.codec, n.pt);
        room.members.push(m);
    }

    fn release(&mut self, poll: &Poll, mut m: Member) {
        if let Some(leg) = m.video.take() {
            self.release_video(poll, leg);
        }
        for (slot, sock) in m.tokens.iter().zip([Some(&m.rtp), m.rtcp.as_ref()]) {
            if let (Some(slot), Some(sock)) = (slot, sock) {
                self.unregister(poll, *slot, sock);
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
        let Some(Some((id, pid, kind))) = self.sockets.get(slot).copied() else {
            return true;
        };
        for _ in 0..MAX_BATCHES {
            let received = {
                let Some(m) = self
                    .rooms
                    .get(&id)
                    .and_then(|r| r.members.iter().find(|m| m.pid == pid))
                else {
                    return true;
                };
                let sock = match kind {
                    Kind::AudioRtp => Some(&m.rtp),
                    Kind::AudioRtcp => m.rtcp.as_ref(),
                    Kind::VideoRtp => m.video.as_ref().map(|v| &v.rtp),
                    Kind::VideoRtcp => m.video.as_ref().and_then(|v| v.rtcp.as_ref()),
                };
                let Some(sock) = sock else { return true };
                sock.recv_bytes_upto(batch, batch.capacity())
            };
            let n = match received {
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
            let Some(room) = self.rooms.get_mut(&id) else {
                return true;
            };
            for i in 0..n {
                let (Some(meta), Some(data)) = (batch.meta(i), batch.take(i)) else {
                    continue;
                };
                if meta.truncated {
                    bump(&self.stats.dropped, 1);
                    continue;
                }
                match kind {
                    Kind::AudioRtp | Kind::AudioRtcp => audio_datagram(
                        room,
                        pid,
                        kind,
                        meta.source,
                        data,
                        now,
                        self.strict,
                        &self.stats,
                    ),
                    Kind::VideoRtp | Kind::VideoRtcp => video_datagram(
                        room,
                        pid,
                        kind,
                        meta.source,
                        data,
                        now,
                        self.strict,
                        &mut self.fwd,
                        &self.stats,
                    ),
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
                    // The speaker's video goes to everyone else (held back by the switch's
                    // hysteresis if it switched less than a second ago).
                    if let Some(p) = speaker {
                        room.video.set_speaker(now, ParticipantId(p));
                    }
                }
                room.video.handle_timeout(now);
                room.send_keyframes(&self.stats);
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

/// One datagram on a participant's audio port: RTP into the mixer (latching its source);
/// RTCP is counted and dropped (the mixer is the RTP source they hear).
#[allow(clippy::too_many_arguments)]
fn audio_datagram(
    room: &mut Room,
    pid: u32,
    kind: Kind,
    source: SocketAddr,
    data: Bytes,
    now: Instant,
    strict: bool,
    stats: &TickStats,
) {
    let Some(m) = room.members.iter_mut().find(|m| m.pid == pid) else {
        return;
    };
    if kind == Kind::AudioRtcp || rtp::is_rtcp(&data) {
        bump(&stats.dropped, 1);
        return;
    }
    if strict && m.latched.is_some_and(|l| l != source) {
        bump(&stats.dropped, 1);
        return;
    }
    match rtp::parse(data) {
        Ok(p) => {
            m.latched = Some(source);
            room.mix.push(pid, &p, now);
            bump(&stats.packets_in, 1);
        }
        Err(_) => bump(&stats.dropped, 1),
    }
}

/// One datagram on a participant's video port: RTP is forwarded through the video switch
/// (its SSRC learnt, its source latched), RTCP may ask for a key frame.
#[allow(clippy::too_many_arguments)]
fn video_datagram(
    room: &mut Room,
    pid: u32,
    kind: Kind,
    source: SocketAddr,
    data: Bytes,
    now: Instant,
    strict: bool,
    fwd: &mut Vec<Forward>,
    stats: &TickStats,
) {
    let Some(leg) = room
        .members
        .iter_mut()
        .find(|m| m.pid == pid)
        .and_then(|m| m.video.as_mut())
    else {
        return;
    };
    if kind == Kind::VideoRtcp || rtp::is_rtcp(&data) {
        leg.latched_rtcp = Some(source);
        return room.video_rtcp(pid, &data, now, stats);
    }
    if strict && leg.latched.is_some_and(|l| l != source) {
        bump(&stats.dropped, 1);
        return;
    }
    let Ok(p) = rtp::parse(data) else {
        bump(&stats.dropped, 1);
        return;
    };
    leg.latched = Some(source);
    bump(&stats.video_in, 1);
    if leg.ssrc != Some(p.ssrc()) {
        leg.ssrc = Some(p.ssrc());
        room.video.set_sends(ParticipantId(pid), Some(p.ssrc()));
    }
    room.forward_video(pid, &p, now, fwd, stats);
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
            "cpm_conference_video_in_total",
            "Video RTP packets from participants.",
            &|s: &TickStats| s.video_in.load(Relaxed),
        ),
        (
            "cpm_conference_video_out_total",
            "Video RTP packets forwarded to participants (one per receiver).",
            &|s: &TickStats| s.video_out.load(Relaxed),
        ),
        (
            "cpm_conference_keyframe_requests_total",
            "Key-frame requests (PLI+FIR) sent to video sources.",
            &|s: &TickStats| s.keyframe_requests.load(Relaxed),
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
