//! The session controller (CPM.md §4 \[32\], §5 fig. 6-7): one [`SessionActor`] per 1-to-1
//! session, on the worker that owns its Call-IDs.
//!
//! ```text
//!  Worker j (transactions)                     SessionActor (this module)
//!   A's INVITE ── new ─────────────────────────► engine::session::Session (B2BUA, sans-IO)
//!   requests, ACK, CANCEL, responses ─ToSession─►   │ SdpRelay = engine::media::MediaSession
//!   ◄─ FromSession: send request / respond /        │   + the worker's PortPool
//!      ACK / cancel / ended ───────────────────────  │ LegChange ─► RelayLeg actors
//!                                                    ▼   (actors::media, the worker's media loop)
//!                                                 CDRs ─► ChargingWriter
//! ```
//!
//! The worker keeps the one transaction layer and the routing ([`SessionTable`]: Call-IDs of
//! both sides, client and server transactions → session); the session actor keeps the call's
//! state, its media legs and its timers. Both run on the worker's arbiter thread, so the
//! port pool is shared through an `Rc`. When the session ends (or its actor stops for any
//! reason, a panic included) its legs' actors stop with it, which closes their sockets, and
//! its ports go back to the pool.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::media::{
    LegChange, LocalPorts, MediaConfig as SdpConfig, MediaKind, MediaReject, MediaSession,
    PortPool, SdpRelay, Side, StreamId,
};
use cpm_engine::session::{
    Action, ChargingKind, ChargingRecord, EndReason, FlowCounters, LegUsage, MsrpUsage, NoPolicy,
    ReqId, Session, SessionConfig, SessionStart,
};
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId};
use cpm_engine::sip::Message;
use cpm_engine::store::SessionKind;
use futures_util::FutureExt;

use crate::charging::{Cdr, ChargingWriter};
use crate::media::{
    BoundLeg, LegHandle, LegSpec, LegStats, MediaInactive, MediaPlane, OpenError, RelayLeg,
    SidePorts,
};
use crate::record::{History, Parties, Recorder};

/// How long a session's media is still relayed after its end: packets a party sent before
/// the BYE reached it still get through (rtpengine keeps a deleted call for its
/// `delete-delay`, 30 s by default; a second is enough on the networks cpmd serves).
pub const MEDIA_LINGER: Duration = Duration::from_secs(1);

/// A worker-local name of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// What the worker hands a session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ToSession {
    /// A request of the session (a new server transaction: BYE, re-INVITE, UPDATE, ...).
    Request {
        /// Its server transaction.
        tx: ServerTxId,
        /// The request.
        request: Message,
    },
    /// A CANCEL of the session's pending INVITE from A.
    Cancel {
        /// The CANCEL's own transaction.
        cancel_tx: ServerTxId,
        /// The INVITE it cancels.
        invite_tx: ServerTxId,
        /// The CANCEL.
        request: Message,
    },
    /// The ACK of a 2xx (no transaction, RFC 3261 §17).
    Ack(Message),
    /// A response to a request the session sent (also the 408/503 the layer synthesizes).
    Response {
        /// The session's name for the request.
        id: ReqId,
        /// The response.
        response: Message,
    },
    /// The server is shutting down and its drain time passed: end the session (BYE to both
    /// parties, or 503 to a caller still being connected).
    Shutdown,
}

/// What a session asks its worker to do, in order: the session's [`Action`]s that touch the
/// transaction layer (send a request, cancel, respond, send an ACK) and its end (the worker
/// then forgets its routes). Timers and charging records stay with the actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromSession {
    /// Whose.
    pub key: SessionKey,
    /// What, in order.
    pub actions: Vec<Action>,
}

/// Everything a worker's sessions share: settings, the port pool, the media plane.
pub struct SessionEnv {
    /// The B2BUA settings (our SIP address, timers).
    pub config: SessionConfig,
    /// The SDP rewriting settings (media IP, allowed codecs).
    pub sdp: Arc<SdpConfig>,
    /// This worker's relay ports.
    pub pool: Rc<RefCell<PortPool>>,
    /// This worker's media loop.
    pub plane: MediaPlane,
    /// The MSRP relay, when it runs.
    pub msrp: Option<crate::msrp::MsrpPlane>,
    /// Where charging records go.
    pub charging: ChargingWriter,
    /// Interim charging records every this long (`None`: none).
    pub interim: Option<Duration>,
    /// The RTP inactivity limit (`None`: no check).
    pub media_timeout: Option<Duration>,
    /// The shared state, for network storage (session history, recording, CPM.md §5 fig.
    /// 12), the users' settings and our domains; `None`: no history, no recording.
    pub shared: Option<Arc<crate::shared::Shared>>,
    /// Test-only fault injection (`--test-hooks`): a request of the session carrying
    /// `X-Cpm-Test: panic-session` makes its actor panic.
    pub test_hooks: bool,
}

/// Whether a request asks for the injected session panic (`--test-hooks` only).
fn is_panic_hook(req: &Message) -> bool {
    req.headers.iter().any(|h| {
        matches!(&h.name, cpm_engine::sip::HeaderName::Other(n) if n.eq_ignore_ascii_case(b"X-Cpm-Test"))
            && &h.value[..] == b"panic-session"
    })
}

/// How many times an offer is planned again when a port it picked cannot be bound (another
/// process holds it): each failed port is kept out of the pool for a round, so the next plan
/// walks past a block another process holds.
const BIND_ATTEMPTS: usize = 32;

/// The media side of one session: the engine's SDP relay over the worker's pool. The ports of
/// every new leg are bound while the offer is made, before the SDP naming them is sent: a port
/// another process holds is marked unusable and the offer planned again on other ports.
struct MediaRelay {
    media: MediaSession,
    pool: Rc<RefCell<PortPool>>,
    plane: MediaPlane,
    /// The engine's leg changes, in order, taken out of `media` after each step.
    changes: VecDeque<LegChange>,
    /// Legs bound by an offer, started when their `Open` is applied.
    bound: Vec<(StreamId, BoundLeg)>,
}

impl MediaRelay {
    /// The next change for the user plane, with the sockets bound for it when it opens a leg.
    fn poll_change(&mut self) -> Option<(LegChange, Option<BoundLeg>)> {
        self.take_changes();
        let change = self.changes.pop_front()?;
        let bound = match &change {
            LegChange::Open { stream, .. } => self
                .bound
                .iter()
                .position(|(s, _)| s == stream)
                .map(|i| self.bound.swap_remove(i).1),
            _ => None,
        };
        Some((change, bound))
    }

    /// Ends the media: every port back to the pool, no change left to apply.
    fn release_all(&mut self) {
        self.media.release_all(&mut self.pool.borrow_mut());
        while self.media.poll_change().is_some() {}
        self.changes.clear();
        self.bound.clear();
    }

    fn take_changes(&mut self) {
        while let Some(c) = self.media.poll_change() {
            self.changes.push_back(c);
        }
    }

    /// Binds the legs the changes from `from` on open. On a bind failure, the port is marked
    /// unusable and the legs bound here are closed again.
    fn bind_new_legs(&mut self, from: usize) -> Result<(), OpenError> {
        let first_bound = self.bound.len();
        let opens = self.changes.range(from..).filter_map(|c| match c {
            LegChange::Open {
                stream,
                kind,
                a_facing,
                b_facing,
                ..
            } => Some((*stream, leg_spec(*kind, a_facing, b_facing))),
            _ => None,
        });
        let mut result = Ok(());
        let mut bound = Vec::new();
        for (stream, spec) in opens {
            match self.plane.bind_leg(&spec) {
                Ok(leg) => bound.push((stream, leg)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        match &result {
            Ok(()) => self.bound.extend(bound),
            Err(e) => {
                if let Some(port) = e.unusable_port() {
                    self.pool.borrow_mut().mark_unusable(port);
                }
                self.bound.truncate(first_bound);
            }
        }
        result
    }
}

/// The sockets a leg of `kind` needs on the given ports.
fn leg_spec(kind: MediaKind, a: &LocalPorts, b: &LocalPorts) -> LegSpec {
    LegSpec {
        a: SidePorts {
            rtp: a.rtp,
            rtcp: a.rtcp,
        },
        b: SidePorts {
            rtp: b.rtp,
            rtcp: b.rtcp,
        },
        clock_rate: match kind {
            MediaKind::Video => 90_000,
            _ => 8_000,
        },
    }
}

/// However the session ends (its actor stopping, or unwinding from a panic), its ports go back
/// to the worker's pool. `try_borrow_mut`: a panic while the pool was borrowed must not turn
/// into a second one.
impl Drop for MediaRelay {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.try_borrow_mut() {
            self.media.release_all(&mut pool);
        }
    }
}

impl SdpRelay for MediaRelay {
    fn offer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.take_changes();
        let mark = self.changes.len();
        let mut attempts = 0;
        loop {
            let r = self.media.offer(&mut self.pool.borrow_mut(), from, sdp);
            if let Err(e) = &r {
                if e.status == 503 {
                    let pool = self.pool.borrow();
                    tracing::warn!(
                        in_use = pool.in_use(),
                        capacity = pool.capacity(),
                        "media ports exhausted: session refused with 503"
                    );
                }
                return r;
            }
            self.take_changes();
            match self.bind_new_legs(mark) {
                Ok(()) => return r,
                Err(e) => {
                    // Back to the state before this offer: its changes never reach the user
                    // plane, nor do the rollback's.
                    self.changes.truncate(mark);
                    self.media.rollback(&mut self.pool.borrow_mut());
                    while self.media.poll_change().is_some() {}
                    attempts += 1;
                    if attempts == BIND_ATTEMPTS || e.unusable_port().is_none() {
                        // Out of descriptors (`RLIMIT_NOFILE`) or memory: no other port would
                        // do, so no other is tried.
                        tracing::warn!(
                            error = %e,
                            attempts,
                            "cannot open relay sockets: session refused with 503"
                        );
                        return Err(MediaReject {
                            status: 503,
                            reason: "Media Ports Unavailable".into(),
                            retry_after: Some(self.media.config().retry_after),
                        });
                    }
                    tracing::warn!(error = %e, attempts, "media port not bindable: offer planned again");
                }
            }
        }
    }

    fn answer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.media.answer(&mut self.pool.borrow_mut(), from, sdp)
    }

    fn rollback(&mut self) {
        self.media.rollback(&mut self.pool.borrow_mut());
    }
}

/// One relayed stream: its actor (which owns the sockets) and what the CDR needs.
struct Leg {
    actor: Addr<RelayLeg>,
    control: crate::media::LegControl,
    stats: crate::media::LegStatsReader,
    kind: MediaKind,
}

/// A session's relayed streams by id: one or two, so a short list (a hash map of one entry
/// reserves four).
#[derive(Default)]
struct Legs(Vec<(StreamId, Leg)>);

impl Legs {
    fn get(&self, stream: &StreamId) -> Option<&Leg> {
        self.0.iter().find(|(s, _)| s == stream).map(|(_, l)| l)
    }

    fn remove(&mut self, stream: &StreamId) -> Option<Leg> {
        let i = self.0.iter().position(|(s, _)| s == stream)?;
        Some(self.0.swap_remove(i).1)
    }

    /// Adds a stream's leg, replacing (and so stopping) one it had.
    fn insert(&mut self, stream: StreamId, leg: Leg) {
        self.remove(&stream);
        self.0.reserve_exact(1);
        self.0.push((stream, leg));
    }

    fn drain(&mut self) -> std::vec::IntoIter<(StreamId, Leg)> {
        std::mem::take(&mut self.0).into_iter()
    }

    fn iter(&self) -> impl Iterator<Item = (&StreamId, &Leg)> {
        self.0.iter().map(|(s, l)| (s, l))
    }

    fn values(&self) -> impl Iterator<Item = &Leg> {
        self.0.iter().map(|(_, l)| l)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One 1-to-1 session.
pub struct SessionActor {
    key: SessionKey,
    worker: Recipient<FromSession>,
    session: Session<MediaRelay, NoPolicy>,
    env: Rc<SessionEnv>,
    legs: Legs,
    /// The MSRP legs (dropping one closes its connections).
    msrp: HashMap<StreamId, crate::msrp::MsrpLeg>,
    timer: Option<(Instant, SpawnHandle)>,
    ended: bool,
    /// The stop record, written once the legs are closed and their last figures known.
    stop_record: Option<Box<ChargingRecord>>,
    /// The parties' AORs and which are ours (for history and recording).
    parties: Option<Parties>,
    /// The session's history entries.
    history: Option<History>,
    /// The MSRP tap while the session is recorded (fig. 12).
    recorder: Option<Arc<Recorder>>,
    /// Where A's INVITE goes back when B's devices are all unavailable (large message mode).
    hand_back: Option<Box<HandBack>>,
}

/// A's INVITE as the session got it, for the message controller when the session hands it
/// back ([`EndReason::HandedBack`]): an MSRP-only INVITE whose recipient's devices are all
/// unavailable is taken as a large message for an offline user.
struct HandBack {
    to: Recipient<crate::messaging::StoreDone>,
    tx: ServerTxId,
    invite: Message,
    source: std::net::SocketAddr,
    reliable: bool,
}

impl SessionActor {
    /// The session of A's INVITE `start`; `worker` carries out its SIP actions. With
    /// `hand_back`, A's INVITE goes back there unanswered when B's devices are all
    /// unavailable (`Session::hand_back_when_unavailable`).
    pub fn new(
        key: SessionKey,
        start: SessionStart,
        env: Rc<SessionEnv>,
        worker: Recipient<FromSession>,
        hand_back: Option<Recipient<crate::messaging::StoreDone>>,
        now: Instant,
    ) -> SessionActor {
        let hand_back = hand_back.map(|to| {
            Box::new(HandBack {
                to,
                tx: start.tx,
                invite: start.invite.clone(),
                source: start.source,
                reliable: start.reliable,
            })
        });
        let relay = MediaRelay {
            media: MediaSession::new(env.sdp.clone()),
            pool: env.pool.clone(),
            plane: env.plane.clone(),
            changes: VecDeque::new(),
            bound: Vec::new(),
        };
        let parties = env
            .shared
            .as_deref()
            .and_then(|sh| parties_of(&start.invite, sh));
        let history = env.shared.as_ref().zip(parties.as_ref()).map(|(sh, p)| {
            let kind = if offers_msrp(&start.invite) {
                SessionKind::Chat
            } else {
                SessionKind::Call
            };
            History::start(sh.storage.clone(), p, kind)
        });
        // A party whose settings say so has the session recorded from the start.
        let record_by = env
            .shared
            .as_ref()
            .zip(parties.as_ref())
            .and_then(|(sh, p)| {
                let settings = sh.settings.read();
                [Side::A, Side::B].into_iter().find(|s| {
                    p.local[s.index()]
                        && settings
                            .get(&p.aor[s.index()])
                            .is_some_and(|u| u.record_sessions)
                })
            });
        let mut session = Session::new(env.config.clone(), start, relay, NoPolicy, now);
        if let Some(by) = record_by {
            session.start_recording(by);
        }
        if hand_back.is_some() {
            session.hand_back_when_unavailable();
        }
        SessionActor {
            key,
            worker,
            session,
            env,
            legs: Legs::default(),
            msrp: HashMap::new(),
            timer: None,
            ended: false,
            stop_record: None,
            parties,
            history,
            recorder: None,
            hand_back,
        }
    }

    /// Starts or stops the recording the session asked for (a REFER to the storage).
    fn apply_record(&mut self) {
        while let Some(change) = self.session.poll_record() {
            let on = change.on;
            self.recorder = match (on, &self.env.shared, &self.parties) {
                (true, Some(sh), Some(p)) if self.recorder.is_none() => {
                    let id = String::from_utf8_lossy(self.session.call_ids()[0]).into_owned();
                    Some(Recorder::new(sh.storage.clone(), p.clone(), id))
                }
                (true, ..) => self.recorder.take(),
                (false, ..) => None,
            };
            tracing::info!(session = self.key.0, on, by = ?change.by, "session recording");
            self.set_taps();
        }
    }

    /// Every MSRP leg's tap: the recorder, or none.
    fn set_taps(&self) {
        for leg in self.msrp.values() {
            leg.set_tap(
                self.recorder
                    .clone()
                    .map(|r| r as Arc<dyn crate::msrp::Tap>),
            );
        }
    }

    /// Carries out what the session decided: media changes first (so the sockets are bound
    /// before the SDP naming them leaves), then the SIP actions in one batch to the worker.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        // Ended already: the media lingers, nothing more is carried out.
        let was_ended = self.ended;
        self.apply_media(ctx);
        self.apply_record();
        let mut out = Vec::new();
        let mut handed_back = false;
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::SendRequest { .. }
                | Action::Cancel { .. }
                | Action::Respond { .. }
                | Action::SendAck { .. } => out.push(action),
                Action::Timer(at) => self.arm(at, ctx),
                Action::Charging(record) if record.kind == ChargingKind::Stop => {
                    self.stop_record = Some(record)
                }
                Action::Charging(record) => self.charge(*record),
                Action::Ended(reason) => {
                    tracing::debug!(session = self.key.0, %reason, "session ended");
                    handed_back = matches!(reason, EndReason::HandedBack(_));
                    if let Some(h) = &self.history {
                        h.end(reason.as_str());
                    }
                    self.ended = true;
                    out.push(Action::Ended(reason));
                }
            }
        }
        if was_ended {
            return;
        }
        if !out.is_empty() {
            // The worker lives on this thread and outlives its sessions; a full mailbox is
            // worth a log line, not a panic.
            if let Err(e) = self.worker.try_send(FromSession {
                key: self.key,
                actions: out,
            }) {
                tracing::error!(session = self.key.0, error = %e, "worker mailbox refused session actions");
            }
        }
        // After the routes are gone (same mailbox, in order): the message controller answers
        // A's INVITE on its transaction.
        if let Some(h) = handed_back.then(|| self.hand_back.take()).flatten() {
            tracing::debug!(
                session = self.key.0,
                "INVITE handed back to the message controller"
            );
            let event = crate::messaging::StoreEvent::LargeHandBack {
                tx: h.tx,
                invite: Box::new(h.invite),
                source: h.source,
                reliable: h.reliable,
            };
            if let Err(e) = h.to.try_send(crate::messaging::StoreDone(event)) {
                tracing::error!(session = self.key.0, error = %e, "worker mailbox refused a handed-back INVITE");
            }
        }
        if self.ended {
            self.finish(ctx);
        }
    }

    /// The end: the legs relay on for [`MEDIA_LINGER`] (a BYE overtakes the media: the other
    /// side sends until the BYE reaches it), then they are closed (each relays what its
    /// sockets still hold first), then the stop record is written with their final figures,
    /// and the actor stops. The session's SIP routes are gone already.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.legs.is_empty() {
            return self.close_legs(ctx);
        }
        ctx.run_later(MEDIA_LINGER, |act, ctx| act.close_legs(ctx));
    }

    fn close_legs(&mut self, ctx: &mut Context<Self>) {
        self.session.relay_mut().release_all();
        let msrp_usage: Vec<LegUsage> = self.msrp_usage();
        self.msrp.clear();
        let closes = self.legs.drain().map(|(stream, leg)| {
            let kind = leg.kind;
            leg.actor
                .send(crate::media::Close)
                .map(move |r| (stream, kind, r.ok().flatten()))
        });
        let closes = futures_util::future::join_all(closes);
        ctx.wait(closes.into_actor(self).map(|closed, act, ctx| {
            if let Some(mut record) = act.stop_record.take() {
                record.legs = closed
                    .into_iter()
                    .filter_map(|(stream, kind, stats)| Some(usage(stream, kind, &stats?)))
                    .chain(msrp_usage)
                    .collect();
                record.legs.sort_by_key(|l| l.stream);
                act.write(&record);
            }
            ctx.stop();
        }));
    }

    /// Applies the media session's leg changes to the user plane.
    fn apply_media(&mut self, ctx: &mut Context<Self>) {
        while let Some((change, bound)) = self.session.relay_mut().poll_change() {
            match change {
                LegChange::Open {
                    stream,
                    kind,
                    a_facing,
                    b_facing,
                    ..
                } => {
                    let opened = match bound {
                        Some(leg) => self.env.plane.start_leg(leg),
                        None => self
                            .env
                            .plane
                            .open_leg(&leg_spec(kind, &a_facing, &b_facing)),
                    };
                    match opened {
                        Ok(handle) => self.add_leg(stream, kind, handle, ctx),
                        Err(e) => {
                            // The SDP naming these ports is being sent: the stream will carry
                            // no media. The port is kept out of the pool for a while.
                            if let Some(port) = e.unusable_port() {
                                self.env.pool.borrow_mut().mark_unusable(port);
                            }
                            tracing::warn!(session = self.key.0, %stream, error = %e, "relay leg not opened");
                        }
                    }
                }
                LegChange::SetPeer {
                    stream,
                    side,
                    rtp,
                    rtcp,
                } => {
                    if let Some(leg) = self.legs.get(&stream) {
                        // Synchronously: the peer is set before the SIP message that lets
                        // it send (e.g. the 200 to A) leaves through the worker.
                        if leg.control.set_peer(side, rtp, rtcp).is_err() {
                            tracing::warn!(session = self.key.0, %stream, "media loop stopped");
                        }
                    }
                }
                LegChange::OpenMsrp {
                    stream,
                    a_facing,
                    b_facing,
                } => {
                    let opened = self
                        .env
                        .msrp
                        .as_ref()
                        .map(|p| p.open_leg(&a_facing, &b_facing));
                    match opened {
                        Some(Ok(leg)) => {
                            if let Some(r) = &self.recorder {
                                leg.set_tap(Some(r.clone() as Arc<dyn crate::msrp::Tap>));
                            }
                            self.msrp.insert(stream, leg);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(session = self.key.0, %stream, error = %e, "MSRP leg not opened")
                        }
                        None => tracing::warn!(session = self.key.0, %stream, "no MSRP relay"),
                    }
                }
                LegChange::MsrpPeer { stream, side, peer } => {
                    if let Some(leg) = self.msrp.get(&stream) {
                        leg.set_peer(side, peer);
                    }
                }
                LegChange::Close { stream } => {
                    self.msrp.remove(&stream);
                    if let Some(leg) = self.legs.remove(&stream) {
                        leg.actor.do_send(crate::media::Close);
                    }
                }
            }
        }
    }

    fn add_leg(
        &mut self,
        stream: StreamId,
        kind: MediaKind,
        handle: LegHandle,
        ctx: &mut Context<Self>,
    ) {
        let stats = handle.stats_reader();
        let control = handle.control();
        let on_idle = ctx.address().recipient();
        let actor = RelayLeg::new(handle, Some(on_idle))
            .with_timeout(self.env.media_timeout)
            .start();
        self.legs.insert(
            stream,
            Leg {
                actor,
                control,
                stats,
                kind,
            },
        );
    }

    /// Returns every port and stops every leg (their sockets close).
    fn release_media(&mut self) {
        // The Close events of release_all are dropped: every leg left is stopped here.
        self.session.relay_mut().release_all();
        self.msrp.clear();
        for (_, leg) in self.legs.drain() {
            leg.actor.do_send(crate::media::Close);
        }
    }

    fn arm(&mut self, at: Option<Instant>, ctx: &mut Context<Self>) {
        if let Some((_, h)) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let Some(at) = at else { return };
        let h = ctx.run_later(at.saturating_duration_since(Instant::now()), |s, ctx| {
            s.timer = None;
            s.session.on_timer(Instant::now());
            s.pump(ctx);
        });
        self.timer = Some((at, h));
    }

    /// Writes a start or interim record with the legs' counters as they are now.
    fn charge(&mut self, mut record: ChargingRecord) {
        record.legs = self
            .legs
            .iter()
            .map(|(stream, leg)| usage(*stream, leg.kind, &leg.stats.stats()))
            .chain(self.msrp_usage())
            .collect();
        record.legs.sort_by_key(|l| l.stream);
        self.write(&record);
    }

    fn write(&self, record: &ChargingRecord) {
        self.env
            .charging
            .write(Cdr::from_record(record, Instant::now(), SystemTime::now()));
    }

    /// The MSRP legs' figures as charging records carry them.
    fn msrp_usage(&self) -> Vec<LegUsage> {
        self.msrp
            .iter()
            .map(|(stream, leg)| msrp_usage(*stream, &leg.stats()))
            .collect()
    }

    /// Whether every leg has been idle for the media timeout (one idle leg, e.g. video on
    /// hold, does not end a session whose audio flows).
    fn all_idle(&self, now: Instant) -> bool {
        let Some(timeout) = self.env.media_timeout else {
            return false;
        };
        self.legs
            .values()
            .all(|l| now.saturating_duration_since(l.stats.stats().last_activity()) >= timeout)
    }
}

/// An MSRP leg's counters as the charging record carries them: its flows count SEND chunks
/// and body bytes, `msrp` the messages and generated REPORTs too.
fn msrp_usage(stream: StreamId, s: &crate::msrp::MsrpLegStats) -> LegUsage {
    let flow = |i: usize| FlowCounters {
        packets: s.chunks[i],
        bytes: s.bytes[i],
        ..FlowCounters::default()
    };
    LegUsage {
        stream: stream.0,
        media: "message".into(),
        codec: None,
        from_a: flow(0),
        from_b: flow(1),
        msrp: Some(MsrpUsage {
            messages: s.messages,
            chunks: s.chunks,
            bytes: s.bytes,
            reports_generated: s.reports_generated,
        }),
    }
}

/// The canonical AOR of a From or To value.
fn aor_of(msg: &Message, name: cpm_engine::sip::HeaderName) -> Option<String> {
    let v = msg.headers.get(&name)?;
    cpm_engine::sip::hdr::NameAddr::parse(v, "From")
        .ok()?
        .uri
        .aor()
}

/// The session's parties from A's INVITE (From and To) and which are served here.
fn parties_of(invite: &Message, shared: &crate::shared::Shared) -> Option<Parties> {
    use cpm_engine::sip::HeaderName;
    let aor = [
        aor_of(invite, HeaderName::From)?,
        aor_of(invite, HeaderName::To)?,
    ];
    let mut local = aor.clone().map(|a| {
        let domain = a.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
        let domain = domain.split(':').next().unwrap_or("");
        shared.domains.iter().any(|d| d == domain)
    });
    // An INVITE's From is not authenticated (only REGISTER is): where users authenticate
    // (`--users-file`), the caller it names gets no history or recording written in their
    // name; the callee, reached through their registration, does.
    if shared.users.is_some() {
        local[0] = false;
    }
    Some(Parties { aor, local })
}

/// Whether an INVITE offers an MSRP stream (`m=message`, RFC 4975 §8.1).
fn offers_msrp(invite: &Message) -> bool {
    invite
        .body
        .split(|&b| b == b'\n')
        .any(|l| l.starts_with(b"m=message "))
}

/// A leg's counters as the charging record carries them.
fn usage(stream: StreamId, kind: MediaKind, s: &LegStats) -> LegUsage {
    let flow = |side: Side| {
        let d = s.from(side);
        FlowCounters {
            packets: d.packets,
            bytes: d.bytes,
            lost: d.rtp.lost.max(0) as u64,
            jitter_ms: d.rtp.jitter_us / 1000.0,
        }
    };
    LegUsage {
        stream: stream.0,
        media: match kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Other => "other",
        }
        .into(),
        codec: None,
        from_a: flow(Side::A),
        from_b: flow(Side::B),
        msrp: None,
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(every) = self.env.interim {
            ctx.run_interval(every, |s, ctx| {
                s.session.interim(Instant::now());
                s.pump(ctx);
            });
        }
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Whatever stopped the actor, its media goes back (legs stop, ports return), and a
        // stop record not written yet is written with the figures at hand.
        if let Some(record) = self.stop_record.take() {
            self.charge(*record);
        }
        if let Some(h) = &self.history {
            h.end(EndReason::Aborted.as_str());
        }
        self.release_media();
    }
}

/// A session actor that unwinds from a panic is dropped without `stopped()`: its legs stop
/// with their last `Addr` (dropped with it), its ports return with its [`MediaRelay`], and
/// here the worker is told to forget its routes.
impl Drop for SessionActor {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl SessionActor {
    /// Runs a handler body; a panic in it (a bug, or the test hook) ends this session alone:
    /// its parties get their BYE, the worker forgets it, the actor stops (its legs and ports
    /// go with it), and the worker's other sessions go on.
    fn guarded(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self, &mut Context<Self>)) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, ctx)));
        if run.is_err() {
            tracing::error!(
                session = self.key.0,
                "session actor panicked: session ended"
            );
            self.abandon();
            ctx.stop();
        }
    }

    /// Ends the session from outside its state machine, once: history closed, the parties
    /// told ([`SessionActor::last_words`]), the worker told to forget it.
    fn abandon(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(h) = &self.history {
            h.end(EndReason::Aborted.as_str());
        }
        let mut actions = self.last_words();
        actions.push(Action::Ended(EndReason::Aborted));
        let _ = self.worker.try_send(FromSession {
            key: self.key,
            actions,
        });
    }

    /// The SIP actions that end the session for its parties when it is abandoned: a BYE to
    /// each side of an established session, 503 and CANCELs during setup
    /// ([`Session::shutdown`]). Not while unwinding (an actor dropped by a panic elsewhere);
    /// should the session's state itself be broken, a panic here is caught and the parties get
    /// nothing.
    fn last_words(&mut self) -> Vec<Action> {
        if std::thread::panicking() {
            return Vec::new();
        }
        let session = &mut self.session;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.shutdown(Instant::now());
            std::iter::from_fn(|| session.poll_action())
                .filter(|a| {
                    matches!(
                        a,
                        Action::SendRequest { .. }
                            | Action::Respond { .. }
                            | Action::Cancel { .. }
                            | Action::SendAck { .. }
                    )
                })
                .collect()
        }))
        .unwrap_or_default()
    }
}

impl Handler<ToSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        self.guarded(ctx, |act, ctx| act.on_message(msg, ctx));
    }
}

impl SessionActor {
    fn on_message(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        let now = Instant::now();
        match msg {
            ToSession::Request { tx, request } => {
                if self.env.test_hooks && is_panic_hook(&request) {
                    panic!("fault injected by X-Cpm-Test: panic-session");
                }
                self.session.on_request(tx, request, now)
            }
            ToSession::Cancel {
                cancel_tx,
                invite_tx,
                request,
            } => self
                .session
                .on_cancel(cancel_tx, Some(invite_tx), request, now),
            ToSession::Ack(ack) => self.session.on_ack(ack, now),
            ToSession::Response { id, response } => self.session.on_response(id, response, now),
            ToSession::Shutdown => self.session.shutdown(now),
        }
        self.pump(ctx);
    }
}

impl Handler<MediaInactive> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: MediaInactive, ctx: &mut Context<Self>) {
        self.guarded(ctx, |act, ctx| {
            let now = Instant::now();
            if !act.all_idle(now) {
                return;
            }
            tracing::info!(session = act.key.0, leg = %msg.leg, idle = ?msg.idle, "media inactive: ending the session");
            act.session.on_media_inactive(now);
            act.pump(ctx);
        });
    }
}

/// How a request finds its session: A's side by Call-ID and A's From tag (another INVITE on
/// the same Call-ID with another From tag is another call, RFC 3261 §12.2 and §8.2.2.2), B's
/// side by the Call-ID cpmd chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Route {
    A { call_id: Bytes, from_tag: Bytes },
    B { call_id: Bytes },
}

/// The worker's routing of SIP traffic to its sessions.
#[derive(Default)]
pub struct SessionTable {
    next: u64,
    actors: HashMap<SessionKey, Addr<SessionActor>>,
    routes: HashMap<Route, SessionKey>,
    keys: HashMap<SessionKey, [Route; 2]>,
    client: HashMap<ClientTxId, (SessionKey, ReqId)>,
    client_of: HashMap<(SessionKey, ReqId), ClientTxId>,
    invite_tx: HashMap<ServerTxId, SessionKey>,
}

impl SessionTable {
    /// A fresh key.
    pub fn next_key(&mut self) -> SessionKey {
        self.next += 1;
        SessionKey(self.next)
    }

    /// Registers a started session: A's INVITE (its Call-ID and From tag, its server
    /// transaction) and the Call-ID of B's side.
    pub fn insert(
        &mut self,
        key: SessionKey,
        actor: Addr<SessionActor>,
        invite: (&Message, ServerTxId),
        b_call_id: Bytes,
    ) {
        let (invite, invite_tx) = invite;
        let a = Route::A {
            call_id: invite.call_id().cloned().unwrap_or_default(),
            from_tag: from_tag(invite),
        };
        let b = Route::B { call_id: b_call_id };
        self.routes.insert(a.clone(), key);
        self.routes.insert(b.clone(), key);
        self.keys.insert(key, [a, b]);
        self.invite_tx.insert(invite_tx, key);
        self.actors.insert(key, actor);
    }

    /// The session a request (or an ACK) belongs to: B's side by Call-ID, A's side by
    /// Call-ID and From tag.
    pub fn route(&self, req: &Message) -> Option<&Addr<SessionActor>> {
        let call_id = req.call_id()?;
        let b = Route::B {
            call_id: call_id.clone(),
        };
        let key = self.routes.get(&b).or_else(|| {
            self.routes.get(&Route::A {
                call_id: call_id.clone(),
                from_tag: from_tag(req),
            })
        })?;
        self.actors.get(key)
    }

    /// A session's actor.
    pub fn actor(&self, key: SessionKey) -> Option<&Addr<SessionActor>> {
        self.actors.get(&key)
    }

    /// The session whose INVITE server transaction is `tx` (for a CANCEL).
    pub fn by_invite(&self, tx: ServerTxId) -> Option<&Addr<SessionActor>> {
        self.actors.get(self.invite_tx.get(&tx)?)
    }

    /// The session and request name of a client transaction.
    pub fn by_client(&self, tx: ClientTxId) -> Option<(&Addr<SessionActor>, ReqId)> {
        let (key, id) = self.client.get(&tx)?;
        Some((self.actors.get(key)?, *id))
    }

    /// Records the client transaction started for a session's request.
    pub fn started(&mut self, key: SessionKey, id: ReqId, tx: ClientTxId) {
        self.client.insert(tx, (key, id));
        self.client_of.insert((key, id), tx);
    }

    /// The client transaction of a session's request.
    pub fn client_of(&self, key: SessionKey, id: ReqId) -> Option<ClientTxId> {
        self.client_of.get(&(key, id)).copied()
    }

    /// A client transaction is over: forget it.
    pub fn tx_ended(&mut self, tx: ClientTxId) {
        if let Some(k) = self.client.remove(&tx) {
            self.client_of.remove(&k);
        }
    }

    /// Forgets every route of a session that ended. Its client transactions run on (a BYE
    /// still retransmits); their responses then find no session and are dropped.
    pub fn remove(&mut self, key: SessionKey) {
        self.actors.remove(&key);
        for r in self.keys.remove(&key).into_iter().flatten() {
            if self.routes.get(&r) == Some(&key) {
                self.routes.remove(&r);
            }
        }
        self.client.retain(|_, (k, _)| *k != key);
        self.client_of.retain(|(k, _), _| *k != key);
        self.invite_tx.retain(|_, k| *k != key);
    }

    /// Sessions alive.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// Every session's actor.
    pub fn actors(&self) -> impl Iterator<Item = &Addr<SessionActor>> {
        self.actors.values()
    }

    /// No session is alive.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// Forgets everything (a worker restart; the sessions' actors stop on their own when
    /// their timers find no worker state).
    pub fn clear(&mut self) {
        *self = SessionTable {
            next: self.next,
            ..SessionTable::default()
        };
    }
}

/// The From tag of a message (empty without one).
fn from_tag(m: &Message) -> Bytes {
    m.headers
        .get(&cpm_engine::sip::HeaderName::From)
        .and_then(cpm_engine::sip::builder::tag_of)
        .unwrap_or_default()
}
