//! `uas`: the answering side. Users `0..users` each get their own socket (ports `listen`,
//! `listen+1`, ...; all ephemeral with port 0) and, with `--register-to`, are registered there
//! as `user0000`.. (paced, refreshed at half the granted expiry, unregistered at the end).
//! Every user is also directly reachable at its socket.
//!
//! Every OPTIONS or MESSAGE is a counted session answered `200 OK`; a MESSAGE body stamped by
//! the sender ([`crate::stamp`]) gives the delivery latency ([`Quantity::MessageDelivery`]),
//! measured here, at the receiving side. An INVITE is answered 200 with SDP and its media
//! handled per [`RtpMode`] ([`Uas::on_invite`]); the call is a session that a BYE ends.
//! An INVITE offering `m=message TCP/MSRP` is a chat ([`Uas::on_chat_invite`]): answered
//! `a=setup:active`, the MSRP connection to the offered path runs on a [`Plane`] that answers
//! and checks every message (`msrp_delivery`, `msrp_messages_*` notes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sdp::{self, Codec, SessionDescription};
use cpm_engine::sip::builder;
use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{HeaderName, Message, Method};

use super::media::{self, MediaProfile, RtpMeter, RtpSender, SocketPool};
use super::register::{RegFlow, Secrets};
use super::{Incoming, Outcome, Pattern, Scenario, SessionId, SocketId, SocketKind, NO_SESSION};
use crate::driver::Ctx;
use crate::metrics::{Counter, Quantity};
use crate::msrp::{self as plane, Open, Plane, Role};
use crate::stamp;

/// What the answering side does with the media of a call (`--rtp`), for the `call` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtpMode {
    /// Send every received packet back to its source.
    Echo,
    /// Count and measure what arrives, send nothing.
    Sink,
    /// Send its own stream as a real endpoint would, and measure what arrives.
    #[default]
    Generate,
}

impl RtpMode {
    /// Parses `echo`, `sink` or `generate`.
    pub fn parse(s: &str) -> Option<RtpMode> {
        match s {
            "echo" => Some(RtpMode::Echo),
            "sink" => Some(RtpMode::Sink),
            "generate" => Some(RtpMode::Generate),
            _ => None,
        }
    }
}

/// Settings of the answering side.
#[derive(Debug, Clone)]
pub struct UasConfig {
    /// The first user's socket; user `i` binds port `listen.port() + i` (or 0).
    pub listen: SocketAddr,
    /// The IP put in Via and Contact when `listen` is a wildcard address.
    pub contact_ip: IpAddr,
    /// Users (sockets).
    pub users: u64,
    /// User names (`user%04d`).
    pub pattern: Pattern,
    /// The registrar to register every user at, if any.
    pub register_to: Option<SocketAddr>,
    /// The AOR domain at the registrar.
    pub domain: String,
    /// Digest passwords.
    pub secrets: Secrets,
    /// Registration expiry asked for, seconds.
    pub expires: u32,
    /// Registrations (and unregistrations) per second.
    pub register_rate: f64,
    /// The media behaviour of calls.
    pub rtp: RtpMode,
    /// The codecs accepted in an offer, in our order of preference.
    pub codecs: Vec<Codec>,
    /// The payload size of a generated stream (default: the codec's for the offered ptime).
    pub payload_len: Option<usize>,
    /// RTP sockets on even ports of this range (default: any free port).
    pub rtp_ports: Option<(u16, u16)>,
    /// Registrations start after this delay (`--register-after`: what a store-and-forward
    /// server holds meanwhile is delivered on REGISTER); the side is ready at once.
    pub register_after: Duration,
    /// The RFC 4976 relay chats authenticate at (`--msrp-relay`).
    pub msrp_relay: Option<SocketAddr>,
}

/// Timer tokens: `user << 2 | kind`, or for a call [`CALL_TIMER`]` | kind` with the call's
/// session.
const REGISTER: u64 = 0;
const UNREGISTER: u64 = 1;
const CALL_TIMER: u64 = 1 << 63;
const RETRANSMIT_2XX: u64 = CALL_TIMER;
const RTP_TICK: u64 = CALL_TIMER | 1;
const MSRP_POLL: u64 = CALL_TIMER | 2;
const MSRP_CLOSE: u64 = CALL_TIMER | 3;

/// How soon an unregistration waiting for a registration in flight looks again.
const UNREGISTER_RETRY: Duration = Duration::from_millis(20);

/// How long a chat's MSRP connection is read after the BYE, unless the peer closes it first.
const CHAT_LINGER: Duration = Duration::from_secs(5);

/// RFC 3261 §17.1.1.1 T1 and T2: the 2xx is sent again at T1, 2·T1, .. capped at T2 until the
/// ACK arrives, for 64·T1 at most (§13.3.1.4).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// A call this side answered (a dialog, keyed by Call-ID).
#[derive(Debug)]
struct Answered {
    session: SessionId,
    sip_socket: SocketId,
    peer: SocketAddr,
    ok: Message,
    acked: bool,
    answered_at: Instant,
    retransmit: Duration,
    rtp: (SocketId, SocketAddr),
    remote: Option<SocketAddr>,
    sender: RtpSender,
    meter: RtpMeter,
    next_tick: Instant,
}

/// The answering side.
#[derive(Debug)]
pub struct Uas {
    cfg: UasConfig,
    sockets: Vec<(SocketId, SocketAddr)>,
    /// Per user: its registration flow (kept for refreshes: same Call-ID, next CSeq).
    flows: Vec<Option<RegFlow>>,
    /// Per user: registered now.
    registered: Vec<bool>,
    /// Registration sessions in flight → (user, expiry asked).
    active: HashMap<SessionId, (usize, u32)>,
    /// Per user: the first registration has ended (either way).
    first_done: Vec<bool>,
    reg_ok: u64,
    reg_failed: u64,
    stopping: bool,
    unregister_pending: usize,
    received: BTreeMap<&'static str, u64>,
    calls: HashMap<Bytes, Answered>,
    call_of_session: HashMap<SessionId, Bytes>,
    call_of_rtp: HashMap<SocketId, Bytes>,
    rtp_pool: SocketPool,
    calls_ended: u64,
    /// Duplicates and reordering of stamped MESSAGEs.
    delivery: DeliveryCheck,
    /// The MSRP connections of chats (started at the first chat offer).
    plane: Option<Plane>,
    /// Chats (MSRP sessions) answered, by Call-ID: their session and 200.
    chats: HashMap<Bytes, (SessionId, Message)>,
    msrp_polling: bool,
    /// MSRP connections open (by chat session), read until the peer closes them.
    msrp_open: HashSet<u64>,
    /// Chat offers waiting for our AUTH at the relay, by session.
    pending_chats: HashMap<u64, PendingChat>,
    chats_ended: u64,
    msrp: MsrpTotals,
}

/// A chat offer being answered.
#[derive(Debug)]
struct PendingChat {
    inc: Incoming,
    call_id: Bytes,
    /// The offered path (our To-Path).
    to_path: Bytes,
    /// Where our connection goes (the path's first hop, or the relay).
    connect: SocketAddr,
}

/// What the chats received.
#[derive(Debug, Default, Clone, Copy)]
struct MsrpTotals {
    messages: u64,
    chunks: u64,
    bytes: u64,
    duplicates: u64,
    corrupted: u64,
    window: Option<(Instant, Instant)>,
}

/// What a store-and-forward server owes each recipient: every message once and, per recipient,
/// in the order sent (one sender numbers its messages in ascending order).
#[derive(Debug, Default)]
struct DeliveryCheck {
    /// (user socket, sequence number) of every stamped MESSAGE seen.
    seen: HashSet<(SocketId, u64)>,
    /// Per user socket: the highest sequence number delivered so far.
    last: HashMap<SocketId, u64>,
}

impl DeliveryCheck {
    /// Notes message `seq` delivered to `user`: `(duplicate, out of order)`.
    fn on_delivery(&mut self, user: SocketId, seq: u64) -> (bool, bool) {
        let duplicate = !self.seen.insert((user, seq));
        let last = self.last.entry(user).or_insert(seq);
        let out_of_order = seq < *last;
        *last = (*last).max(seq);
        (duplicate, out_of_order)
    }
}

impl Uas {
    /// An answering side with `cfg`.
    pub fn new(cfg: UasConfig) -> Uas {
        let n = cfg.users.max(1) as usize;
        let rtp_pool = SocketPool::in_range(cfg.rtp_ports);
        Uas {
            cfg,
            sockets: Vec::new(),
            flows: vec![None; n],
            registered: vec![false; n],
            active: HashMap::new(),
            first_done: vec![false; n],
            reg_ok: 0,
            reg_failed: 0,
            stopping: false,
            unregister_pending: 0,
            received: BTreeMap::new(),
            calls: HashMap::new(),
            call_of_session: HashMap::new(),
            call_of_rtp: HashMap::new(),
            rtp_pool,
            calls_ended: 0,
            delivery: DeliveryCheck::default(),
            plane: None,
            chats: HashMap::new(),
            msrp_polling: false,
            msrp_open: HashSet::new(),
            pending_chats: HashMap::new(),
            chats_ended: 0,
            msrp: MsrpTotals::default(),
        }
    }

    /// The address of user `i`'s socket.
    pub fn user_addr(&self, i: usize) -> Option<SocketAddr> {
        self.sockets.get(i).map(|(_, a)| *a)
    }

    /// The address named in Via and Contact for user `i`.
    fn contact_addr(&self, i: usize) -> Option<SocketAddr> {
        let a = self.user_addr(i)?;
        Some(if a.ip().is_unspecified() {
            SocketAddr::new(self.cfg.contact_ip, a.port())
        } else {
            a
        })
    }

    /// Starts (or refreshes, or with `expires` 0 ends) the registration of user `i`.
    fn register(&mut self, ctx: &mut Ctx<'_>, i: usize, expires: u32) {
        let (Some(registrar), Some(&(socket, _)), Some(local)) = (
            self.cfg.register_to,
            self.sockets.get(i),
            self.contact_addr(i),
        ) else {
            return;
        };
        if self.is_busy(i) {
            return;
        }
        let session = ctx.new_session(false);
        let flow = self.flows[i].get_or_insert_with(|| {
            RegFlow::new(
                ctx,
                self.cfg.pattern.expand(i as u64),
                socket,
                local,
                registrar,
                self.cfg.domain.clone(),
                expires,
            )
        });
        flow.set_expires(expires);
        match flow.send(ctx, session) {
            Ok(()) => {
                self.active.insert(session, (i, expires));
            }
            Err(e) => {
                ctx.finish(session, Outcome::Failure(e.clone()));
                self.registration_done(ctx, i, expires, Err(e));
            }
        }
    }

    fn registration_done(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        expires: u32,
        result: Result<u32, String>,
    ) {
        if expires == 0 {
            self.unregister_pending = self.unregister_pending.saturating_sub(1);
            self.registered[i] = false;
            if let Err(e) = result {
                ctx.recorder()
                    .note(&format!("unregistration failed: {e}"), 1);
            }
            return;
        }
        let first = !std::mem::replace(&mut self.first_done[i], true);
        match result {
            Ok(granted) => {
                if first {
                    self.reg_ok += 1;
                }
                self.registered[i] = true;
                if granted > 0 && !self.stopping {
                    let refresh = Duration::from_secs(u64::from(granted.max(2) / 2));
                    ctx.set_timer(ctx.now() + refresh, NO_SESSION, token(i, REGISTER));
                }
            }
            Err(e) => {
                if first {
                    self.reg_failed += 1;
                }
                self.registered[i] = false;
                ctx.recorder().note(&format!("registration failed: {e}"), 1);
            }
        }
    }

    /// OPTIONS: 200 with Allow.
    fn on_options(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        let session = ctx.new_session(true);
        let mut r = builder::local_response(&inc.request, 200, "OK");
        r.headers.push(
            HeaderName::Allow,
            "OPTIONS, MESSAGE, INVITE, ACK, BYE, CANCEL",
        );
        ctx.respond(inc.tx, &r);
        ctx.finish(session, Outcome::Success);
    }

    /// MESSAGE: delivery latency from the body's stamp, then 200.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        let session = ctx.new_session(true);
        match stamp::read(&inc.request.body) {
            Some((sent_us, seq)) => {
                let (duplicate, out_of_order) = self.delivery.on_delivery(inc.socket, seq);
                if duplicate {
                    ctx.recorder().note("messages_duplicate", 1);
                }
                if out_of_order {
                    ctx.recorder().note("messages_out_of_order", 1);
                }
                let now_us = ctx.unix_us();
                if now_us < sent_us {
                    ctx.recorder().note("delivery_clock_skew", 1);
                }
                let d = Duration::from_micros(now_us.saturating_sub(sent_us));
                ctx.record(Quantity::MessageDelivery, d);
            }
            None => ctx.recorder().note("messages_without_stamp", 1),
        }
        let r = builder::local_response(&inc.request, 200, "OK");
        ctx.respond(inc.tx, &r);
        ctx.finish(session, Outcome::Success);
    }

    /// INVITE (RFC 3261 §13.3): `200 OK` at once with an SDP answer (RFC 3264 §6: the first
    /// offered codec we accept, the offer's ptime) naming an RTP socket of the call's own, sent
    /// again until the ACK (§13.3.1.4); the media follow [`RtpMode`] (a generated stream
    /// starts at the ACK). A request within an existing dialog gets the same 200 again; an
    /// offer without a usable audio stream gets 488.
    pub fn on_invite(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        let Some(call_id) = inc.request.call_id().cloned() else {
            let r = builder::local_response(&inc.request, 400, "Missing Call-ID");
            return ctx.respond(inc.tx, &r);
        };
        if let Some(call) = self.calls.get(&call_id) {
            return ctx.respond(inc.tx, &call.ok);
        }
        if let Some((_, ok)) = self.chats.get(&call_id) {
            return ctx.respond(inc.tx, ok);
        }
        if super::msrp::chat_media(&inc.request.body).is_some() {
            return self.on_chat_invite(ctx, inc, call_id);
        }
        let session = ctx.new_session(true);
        let user = self
            .sockets
            .iter()
            .position(|(id, _)| *id == inc.socket)
            .unwrap_or(0);
        let Some(contact) = self.contact_addr(user) else {
            return self.refuse(ctx, session, &inc, 500, "Server Internal Error");
        };
        let Ok(offer) = SessionDescription::parse(&inc.request.body) else {
            return self.refuse(ctx, session, &inc, 488, "Not Acceptable Here");
        };
        let rtp = match self.rtp_pool.take(ctx, contact.ip()) {
            Ok(s) => s,
            Err(e) => {
                ctx.recorder().note(&e, 1);
                return self.refuse(ctx, session, &inc, 500, "Server Internal Error");
            }
        };
        let answered = sdp::answer(&offer, contact.ip(), |_, _| rtp.1.port(), &self.cfg.codecs)
            .ok()
            .and_then(|answer| {
                let section = answer.media().iter().find(|m| m.port() != 0)?;
                let profile = MediaProfile::negotiated(section, self.cfg.payload_len)?;
                Some((answer, profile))
            });
        let Some((answer, profile)) = answered else {
            self.rtp_pool.give_back(rtp);
            return self.refuse(ctx, session, &inc, 488, "Not Acceptable Here");
        };
        let mut ok = builder::local_response(&inc.request, 200, "OK");
        // The 2xx that sets up the dialog carries the request's Record-Route (RFC 3261
        // §12.1.1), so the caller's ACK and BYE follow the proxies that asked to stay.
        for rr in inc.request.headers.get_all(&HeaderName::RecordRoute) {
            ok.headers.push(HeaderName::RecordRoute, rr.clone());
        }
        ok.headers.push(
            HeaderName::Contact,
            format!(
                "<sip:{}@{}>",
                self.cfg.pattern.expand(user as u64),
                super::hostport(contact)
            ),
        );
        ok.set_body(answer.to_bytes(), Some("application/sdp"));
        ctx.respond(inc.tx, &ok);
        let now = ctx.now();
        ctx.set_timer(now + T1, session, RETRANSMIT_2XX);
        let call = Answered {
            session,
            sip_socket: inc.socket,
            peer: inc.source,
            ok,
            acked: false,
            answered_at: now,
            retransmit: T1,
            rtp,
            remote: media::remote_media(&offer),
            meter: RtpMeter::new(profile.codec().clock_rate()),
            sender: RtpSender::new(ctx, profile),
            next_tick: now,
        };
        self.call_of_session.insert(session, call_id.clone());
        self.call_of_rtp.insert(rtp.0, call_id.clone());
        self.calls.insert(call_id, call);
    }

    /// An INVITE offering a chat (RFC 4975 §8): 200 with our path and `a=setup:active` when
    /// the offer lets us connect (`passive`/`actpass`, RFC 6135), and a receiving MSRP
    /// connection to the first URI of the offered path; 488 otherwise (we never listen). With
    /// `--msrp-relay` the 200 waits for our AUTH at the relay (RFC 4976 §5.1), whose Use-Path
    /// heads our path, and the connection to the relay carries the chat.
    pub fn on_chat_invite(&mut self, ctx: &mut Ctx<'_>, inc: Incoming, call_id: Bytes) {
        let session = ctx.new_session(true);
        let Some((to_path, setup)) = super::msrp::chat_media(&inc.request.body) else {
            return self.refuse(ctx, session, &inc, 488, "Not Acceptable Here");
        };
        let connect = match self.cfg.msrp_relay {
            Some(relay) => relay,
            None => match super::msrp::first_hop(&to_path)
                .filter(|_| super::msrp::we_may_connect(setup.as_ref()))
            {
                Some(a) => a,
                None => return self.refuse(ctx, session, &inc, 488, "Not Acceptable Here"),
            },
        };
        if self.plane.is_none() {
            match Plane::spawn(ctx.random_u64()) {
                Ok(p) => self.plane = Some(p),
                Err(e) => {
                    ctx.recorder().note(&format!("msrp: {e}"), 1);
                    return self.refuse(ctx, session, &inc, 500, "Server Internal Error");
                }
            }
        }
        self.msrp_open.insert(session.0);
        self.ensure_msrp_polling(ctx);
        let chat = PendingChat {
            inc,
            call_id,
            to_path,
            connect,
        };
        if self.cfg.msrp_relay.is_some() {
            if let Some(p) = &self.plane {
                p.auth(session.0, connect);
            }
            self.pending_chats.insert(session.0, chat);
            return;
        }
        let Some(contact) = self.contact_addr(self.user_of(chat.inc.socket)) else {
            return self.refuse(ctx, session, &chat.inc, 500, "Server Internal Error");
        };
        let host = match contact.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let local = format!("msrp://{host}:9/uas{:x};tcp", session.0);
        self.answer_chat(ctx, session, chat, Ok(Bytes::from(local)));
    }

    fn user_of(&self, socket: SocketId) -> usize {
        self.sockets
            .iter()
            .position(|(id, _)| *id == socket)
            .unwrap_or(0)
    }

    /// Answers a chat offer with our `path` (or 500 when there is none) and starts receiving.
    fn answer_chat(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        chat: PendingChat,
        path: Result<Bytes, String>,
    ) {
        let user = self.user_of(chat.inc.socket);
        let (Some(contact), Ok(path)) = (self.contact_addr(user), path) else {
            self.msrp_open.remove(&session.0);
            if let Some(p) = &self.plane {
                p.close(session.0);
            }
            return self.refuse(ctx, session, &chat.inc, 500, "Server Internal Error");
        };
        let inc = chat.inc;
        let mut ok = builder::local_response(&inc.request, 200, "OK");
        for rr in inc.request.headers.get_all(&HeaderName::RecordRoute) {
            ok.headers.push(HeaderName::RecordRoute, rr.clone());
        }
        ok.headers.push(
            HeaderName::Contact,
            format!(
                "<sip:{}@{}>",
                self.cfg.pattern.expand(user as u64),
                super::hostport(contact)
            ),
        );
        ok.set_body(
            super::msrp::chat_sdp(contact.ip(), &String::from_utf8_lossy(&path), "active"),
            Some("application/sdp"),
        );
        ctx.respond(inc.tx, &ok);
        if let Some(p) = &self.plane {
            if self.cfg.msrp_relay.is_some() {
                p.start(session.0, chat.to_path, Role::Receive);
            } else {
                p.open(Open {
                    key: session.0,
                    connect: chat.connect,
                    local: path,
                    to_path: chat.to_path,
                    role: Role::Receive,
                });
            }
        }
        self.chats.insert(chat.call_id, (session, ok));
    }

    fn ensure_msrp_polling(&mut self, ctx: &mut Ctx<'_>) {
        if !self.msrp_polling {
            self.msrp_polling = true;
            ctx.set_timer(ctx.now() + super::msrp::POLL, NO_SESSION, MSRP_POLL);
        }
    }

    /// Reads the chats' MSRP events.
    fn poll_msrp(&mut self, ctx: &mut Ctx<'_>) {
        let events = match &self.plane {
            Some(p) => p.poll_events(10_000),
            None => Vec::new(),
        };
        let now = ctx.now();
        for ev in events {
            let (latency_us, bytes, duplicate, corrupted, chunks) = match ev {
                plane::Event::Delivered {
                    latency_us,
                    bytes,
                    duplicate,
                    corrupted,
                    chunks,
                    ..
                } => (latency_us, bytes, duplicate, corrupted, chunks),
                plane::Event::Authed { key, path } => {
                    if let Some(chat) = self.pending_chats.remove(&key) {
                        if let Err(e) = &path {
                            ctx.recorder().note(&format!("msrp: {e}"), 1);
                        }
                        self.answer_chat(ctx, SessionId(key), chat, path);
                    }
                    continue;
                }
                plane::Event::Closed { key, error } => {
                    self.msrp_open.remove(&key);
                    if let Some(e) = error.filter(|e| e != "closed by the peer") {
                        ctx.recorder().note(&format!("msrp: {e}"), 1);
                    }
                    continue;
                }
                // A receiving role that could not be given (`start` found no connection).
                plane::Event::Done { error: Some(e), .. } => {
                    ctx.recorder().note(&format!("msrp: {e}"), 1);
                    continue;
                }
                _ => continue,
            };
            let t = &mut self.msrp;
            t.messages += 1;
            t.chunks += chunks;
            t.bytes += bytes;
            t.duplicates += u64::from(duplicate);
            t.corrupted += u64::from(corrupted);
            t.window = Some(t.window.map_or((now, now), |(a, _)| (a, now)));
            let rec = ctx.recorder();
            rec.note("msrp_messages_received", 1);
            if duplicate {
                rec.note("msrp_messages_duplicate", 1);
            }
            if corrupted {
                rec.note("msrp_messages_corrupted", 1);
            }
            match latency_us {
                Some(us) => ctx.record(super::msrp::DELIVERY, Duration::from_micros(us)),
                None => ctx.recorder().note("msrp_messages_without_stamp", 1),
            }
        }
        if self.chats.is_empty() && self.msrp_open.is_empty() && self.pending_chats.is_empty() {
            self.msrp_polling = false;
        } else {
            ctx.set_timer(now + super::msrp::POLL, NO_SESSION, MSRP_POLL);
        }
    }

    fn refuse(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        inc: &Incoming,
        code: u16,
        why: &str,
    ) {
        let r = builder::local_response(&inc.request, code, why);
        ctx.respond(inc.tx, &r);
        ctx.finish(session, Outcome::Failure(format!("{code} {why}")));
    }

    /// BYE (RFC 3261 §15.1.2): 200 and the call's end (a success); 481 for no such call.
    fn on_bye(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        if let Some((session, _)) = inc.request.call_id().and_then(|id| self.chats.remove(id)) {
            // The connection stays: what is still in flight on it is read until the relay
            // closes it (cpmd does when the session ends), or for CHAT_LINGER at most.
            ctx.set_timer(ctx.now() + CHAT_LINGER, session, MSRP_CLOSE);
            let r = builder::local_response(&inc.request, 200, "OK");
            ctx.respond(inc.tx, &r);
            self.chats_ended += 1;
            return ctx.finish(session, Outcome::Success);
        }
        let call = inc.request.call_id().and_then(|id| self.calls.remove(id));
        let Some(mut call) = call else {
            let r = builder::local_response(&inc.request, 481, "Call/Transaction Does Not Exist");
            return ctx.respond(inc.tx, &r);
        };
        let r = builder::local_response(&inc.request, 200, "OK");
        ctx.respond(inc.tx, &r);
        call.meter.close(ctx);
        self.call_of_session.remove(&call.session);
        self.call_of_rtp.remove(&call.rtp.0);
        self.rtp_pool.give_back(call.rtp);
        self.calls_ended += 1;
        ctx.finish(call.session, Outcome::Success);
    }

    /// A call's timer: the 2xx retransmission until the ACK, or the next packet it generates.
    fn on_call_timer(&mut self, ctx: &mut Ctx<'_>, session: SessionId, token: u64) {
        let Some(call) = self
            .call_of_session
            .get(&session)
            .and_then(|id| self.calls.get_mut(id))
        else {
            return;
        };
        let now = ctx.now();
        match token {
            RETRANSMIT_2XX if !call.acked => {
                if now.duration_since(call.answered_at) >= T1 * 64 {
                    ctx.recorder().note("2xx_never_acked", 1);
                    return;
                }
                ctx.send_stateless(call.sip_socket, &call.ok, call.peer);
                call.retransmit = (call.retransmit * 2).min(T2);
                ctx.set_timer(now + call.retransmit, session, RETRANSMIT_2XX);
            }
            RTP_TICK => {
                if let Some(remote) = call.remote {
                    call.sender.send(ctx, call.rtp.0, remote);
                    call.next_tick += call.sender.ptime();
                    ctx.set_timer(call.next_tick, session, RTP_TICK);
                }
            }
            _ => {}
        }
    }
}

impl Uas {
    /// Whether a registration of user `i` is in flight.
    fn is_busy(&self, i: usize) -> bool {
        self.active.values().any(|&(u, _)| u == i)
    }
}

fn token(user: usize, kind: u64) -> u64 {
    ((user as u64) << 2) | kind
}

impl Scenario for Uas {
    fn name(&self) -> &'static str {
        "uas"
    }

    fn primary(&self) -> Quantity {
        Quantity::MessageDelivery
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        crate::sys::raise_nofile_limit();
        let users = self.cfg.users.max(1);
        for i in 0..users {
            let port = match self.cfg.listen.port() {
                0 => 0,
                p => u16::try_from(u64::from(p) + i)
                    .map_err(|_| format!("--users {users} from port {p} exceeds port 65535"))?,
            };
            let addr = SocketAddr::new(self.cfg.listen.ip(), port);
            let s = ctx
                .bind_udp(addr, SocketKind::Sip)
                .map_err(|e| format!("bind {addr}: {e}"))?;
            self.sockets.push(s);
        }
        if self.cfg.register_to.is_some() {
            let rate = self.cfg.register_rate.max(0.001);
            let t0 = ctx.now() + self.cfg.register_after;
            for i in 0..users as usize {
                let at = t0 + Duration::from_secs_f64(i as f64 / rate);
                ctx.set_timer(at, NO_SESSION, token(i, REGISTER));
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, session: SessionId, token: u64) {
        if token == MSRP_POLL {
            return self.poll_msrp(ctx);
        }
        if token == MSRP_CLOSE {
            if let Some(p) = &self.plane {
                p.close(session.0);
            }
            return;
        }
        if token & CALL_TIMER != 0 {
            return self.on_call_timer(ctx, session, token);
        }
        let i = (token >> 2) as usize;
        if i >= self.sockets.len() {
            return;
        }
        match token & 3 {
            REGISTER if !self.stopping => self.register(ctx, i, self.cfg.expires),
            UNREGISTER => {
                if self.is_busy(i) {
                    // A registration (a refresh, often: the stop can fall on its time) is in
                    // flight: its binding would outlive us, so unregister after it.
                    ctx.set_timer(
                        ctx.now() + UNREGISTER_RETRY,
                        NO_SESSION,
                        self::token(i, UNREGISTER),
                    );
                } else if self.registered[i] {
                    // Its end (or immediate failure) counts the pending unregistration down.
                    self.register(ctx, i, 0);
                } else {
                    self.unregister_pending = self.unregister_pending.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        if response.status().is_none_or(|c| c < 200) {
            return;
        }
        let Some(&(i, expires)) = self.active.get(&session) else {
            return;
        };
        let Some(flow) = self.flows[i].as_mut() else {
            return;
        };
        let Some(result) = flow.on_final(ctx, session, response, &self.cfg.secrets) else {
            return;
        };
        let started = flow.started();
        self.active.remove(&session);
        ctx.finish(session, Outcome::Success);
        if result.is_ok() && expires > 0 {
            ctx.record(Quantity::Registration, ctx.now() - started);
        }
        self.registration_done(ctx, i, expires, result);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, inc: Incoming) {
        let method = inc.request.method().cloned();
        match method {
            Some(Method::Options) => {
                *self.received.entry("OPTIONS").or_default() += 1;
                self.on_options(ctx, inc)
            }
            Some(Method::Message) => {
                *self.received.entry("MESSAGE").or_default() += 1;
                self.on_message(ctx, inc)
            }
            Some(Method::Invite) => {
                *self.received.entry("INVITE").or_default() += 1;
                self.on_invite(ctx, inc)
            }
            Some(Method::Bye) => {
                *self.received.entry("BYE").or_default() += 1;
                self.on_bye(ctx, inc)
            }
            _ => {
                let mut r = builder::local_response(&inc.request, 405, "Method Not Allowed");
                r.headers.push(
                    HeaderName::Allow,
                    "OPTIONS, MESSAGE, INVITE, ACK, BYE, CANCEL",
                );
                ctx.respond(inc.tx, &r);
            }
        }
    }

    /// The ACK of a 200: retransmissions stop, and a generating side starts its stream (so that
    /// the caller, which has the answer by now, counts every packet).
    fn on_ack(&mut self, ctx: &mut Ctx<'_>, ack: Message, _socket: SocketId, _src: SocketAddr) {
        let Some(call) = ack.call_id().and_then(|id| self.calls.get_mut(id)) else {
            return;
        };
        if std::mem::replace(&mut call.acked, true) || self.cfg.rtp != RtpMode::Generate {
            return;
        }
        let now = ctx.now();
        call.next_tick = now;
        ctx.set_timer(now, call.session, RTP_TICK);
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        source: SocketAddr,
        payload: Bytes,
    ) {
        let Some(call) = self
            .call_of_rtp
            .get(&socket)
            .and_then(|id| self.calls.get_mut(id))
        else {
            ctx.recorder().note("rtp_after_call", 1);
            return;
        };
        // Every mode measures what arrives (an echo's one-way delay is the caller's stamp
        // read here); the echo also sends it back as it came, counted as sent.
        if self.cfg.rtp == RtpMode::Echo {
            ctx.send_raw(socket, source, &payload);
            let now = ctx.now();
            ctx.recorder().add(Counter::RtpSent, 1, now);
        }
        call.meter.on_datagram(ctx, payload);
    }

    fn is_ready(&self) -> bool {
        self.cfg.register_to.is_none()
            || !self.cfg.register_after.is_zero()
            || self.first_done.iter().all(|&d| d)
    }

    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        self.stopping = true;
        if self.cfg.register_to.is_none() {
            return;
        }
        let rate = self.cfg.register_rate.max(0.001);
        let now = ctx.now();
        let users: Vec<usize> = (0..self.registered.len())
            .filter(|&i| self.registered[i] || self.is_busy(i))
            .collect();
        for (k, i) in users.into_iter().enumerate() {
            let at = now + Duration::from_secs_f64(k as f64 / rate);
            ctx.set_timer(at, NO_SESSION, token(i, UNREGISTER));
            self.unregister_pending += 1;
        }
    }

    fn is_idle(&self) -> bool {
        self.unregister_pending == 0 && self.active.is_empty() && self.msrp_open.is_empty()
    }

    fn summary_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let first = self.user_addr(0);
        let last = self.user_addr(self.sockets.len().saturating_sub(1));
        if let (Some(a), Some(b)) = (first, last) {
            out.push(format!("users: {} on UDP {a} .. {b}", self.sockets.len()));
        }
        if let Some(r) = self.cfg.register_to {
            let pending = self.first_done.iter().filter(|d| !**d).count();
            let mut line = format!(
                "registered at {r}: {} ok, {} failed",
                self.reg_ok, self.reg_failed
            );
            if pending > 0 {
                line.push_str(&format!(", {pending} never answered"));
            }
            out.push(line);
        }
        if self.calls_ended > 0 || !self.calls.is_empty() {
            out.push(format!(
                "calls: {} ended by BYE, {} still up (rtp {:?})",
                self.calls_ended,
                self.calls.len(),
                self.cfg.rtp
            ));
        }
        if self.chats_ended > 0 || !self.chats.is_empty() {
            let t = &self.msrp;
            out.push(format!(
                "chats: {} ended by BYE, {} still up; msrp received {} messages ({} chunks, \
                 {:.3} MB), {} duplicated, {} corrupted",
                self.chats_ended,
                self.chats.len(),
                t.messages,
                t.chunks,
                t.bytes as f64 / 1e6,
                t.duplicates,
                t.corrupted
            ));
            if let Some((a, b)) = t.window.filter(|(a, b)| b > a) {
                let secs = (b - a).as_secs_f64();
                out.push(format!(
                    "msrp received over {secs:.3} s: {:.0} messages/s, {:.0} chunks/s, {:.2} MB/s",
                    t.messages as f64 / secs,
                    t.chunks as f64 / secs,
                    t.bytes as f64 / 1e6 / secs
                ));
            }
        }
        if !self.received.is_empty() {
            let parts: Vec<String> = self
                .received
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            out.push(format!("received: {}", parts.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_reordering_are_told_per_recipient() {
        let mut c = DeliveryCheck::default();
        let (bob, carol) = (SocketId(1), SocketId(2));
        assert_eq!(c.on_delivery(bob, 1), (false, false));
        assert_eq!(c.on_delivery(bob, 3), (false, false));
        // Another recipient has its own order.
        assert_eq!(c.on_delivery(carol, 2), (false, false));
        // 2 after 3 for bob: reordered; 3 again: a duplicate (and not newer).
        assert_eq!(c.on_delivery(bob, 2), (false, true));
        assert_eq!(c.on_delivery(bob, 3), (true, false));
        assert_eq!(c.on_delivery(bob, 1), (true, true));
        assert_eq!(c.on_delivery(bob, 4), (false, false));
    }
}
