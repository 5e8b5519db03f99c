//! One conference: the focus of RFC 4579 as an actix actor on the worker owning its name.
//!
//! It holds a dialog per participant (UAS for a dial-in INVITE, UAC for a dial-out INVITE sent
//! on a REFER or at a predefined conference's start), the RFC 4575 subscriptions, and the
//! conference's room in the worker's media loop. It answers every request itself (200 with
//! `Contact: <focus>;isfocus`, RFC 4579 §4.1) and repeats its 2xx until the ACK (RFC 3261
//! §13.3.1.4). When the last participant leaves an ad-hoc conference, or a predefined one is
//! ended through the API, subscriptions are terminated, everyone left gets a BYE and the
//! actor stops; its ports, sockets and routes are released however it stops (a panic too).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::media::{LocalPorts, PortPool};
use cpm_engine::session::ReqId;
use cpm_engine::sip::builder::{self, BranchGen};
use cpm_engine::sip::dialog::{via_value, Dialog, DialogId};
use cpm_engine::sip::transaction::ServerTxId;
use cpm_engine::sip::{HeaderName, Headers, Message, Method, StartLine};
use parking_lot::Mutex;

use super::events::{self, Change, UserInfo};
use super::predefined::{Join, Predefined};
use super::registry::{ParticipantSummary, Summary};
use super::sdp::{self, Local, Negotiated};
use super::{ConfAction, ConfKey, EndConference, FromConference, MuteParticipant, ToConference};
use crate::media::{MediaPlane, RoomEvent, RoomHandle, SidePorts};
use crate::shared::Shared;

/// RFC 3261 timer T1 and T2 (2xx retransmission) and the ACK wait (64·T1).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const ACK_WAIT: Duration = Duration::from_secs(32);
/// How often timers are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Subscription duration granted when the SUBSCRIBE names none, and the most granted.
const SUB_DEFAULT: u32 = 3600;
/// The methods the focus serves (Allow, RFC 3261 §20.5).
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, SUBSCRIBE, NOTIFY, REFER";

/// What a worker's conferences share.
pub struct ConfEnv {
    /// This worker's index and the number of workers.
    pub worker: usize,
    /// The number of workers.
    pub workers: usize,
    /// The shared state (registrar, registry, config).
    pub shared: Arc<Shared>,
    /// This worker's port pool (shared with its sessions).
    pub pool: Rc<RefCell<PortPool>>,
    /// This worker's media loop.
    pub plane: MediaPlane,
    /// The worker, which carries out SIP actions.
    pub out: Recipient<FromConference>,
}

/// How the conference came to be.
pub enum Origin {
    /// An INVITE to the factory: its creator's INVITE is the first request.
    AdHoc,
    /// A predefined conference started through the API: the focus calls everyone.
    Predefined(Predefined),
}

/// A participant's ports, returned to the pool however it goes.
struct Ports {
    ports: LocalPorts,
    pool: Rc<RefCell<PortPool>>,
}

impl Drop for Ports {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.try_borrow_mut() {
            pool.release(self.ports);
        }
    }
}

/// Where a participant's dialog stands.
enum State {
    /// We sent the INVITE (dial-out) and wait for its final response.
    Calling { req: ReqId, invite: Message },
    /// We sent a 2xx and repeat it until the ACK.
    AwaitingAck {
        tx: ServerTxId,
        response: Message,
        next: Instant,
        interval: Duration,
        give_up: Instant,
    },
    /// In the conference.
    Connected,
}

/// The referrer of a dial-out, told of its progress by NOTIFY (RFC 3515 §2.4.4).
struct Referral {
    /// The implicit subscription's dialog: the referrer's participant dialog, or one the
    /// out-of-dialog REFER created.
    via: NotifyVia,
}

enum NotifyVia {
    Participant(u32),
    Own {
        dialog: Box<Dialog>,
        dest: SocketAddr,
        reliable: bool,
    },
}

struct Participant {
    entity: String,
    display: Option<String>,
    dialog: Option<Dialog>,
    dest: SocketAddr,
    reliable: bool,
    state: State,
    media: Option<Negotiated>,
    ports: Option<Ports>,
    muted: bool,
    sdp_version: u64,
    /// The ACK we sent for its 2xx (dial-out), re-sent on retransmissions.
    ack: Option<Message>,
    referral: Option<Referral>,
}

impl Participant {
    fn info(&self, id: u32) -> UserInfo {
        UserInfo {
            entity: self.entity.clone(),
            display: self.display.clone(),
            status: match self.state {
                State::Calling { .. } => "dialing-out",
                _ => "connected",
            },
            muted: self.muted,
            id,
        }
    }
}

/// An RFC 4575 subscription.
struct Subscription {
    dialog: Dialog,
    dest: SocketAddr,
    reliable: bool,
    expires: Instant,
    version: u32,
}

/// What a request we sent was for.
enum Pending {
    Invite(u32),
    Other,
}

/// See the module documentation.
pub struct ConferenceActor {
    key: ConfKey,
    name: String,
    focus: String,
    contact: Bytes,
    env: Rc<ConfEnv>,
    origin: Origin,
    gen: BranchGen,
    next_req: u64,
    next_pid: u32,
    participants: BTreeMap<u32, Participant>,
    subs: Vec<Subscription>,
    pending: std::collections::HashMap<ReqId, Pending>,
    room: Option<RoomHandle>,
    summary: Arc<Mutex<Summary>>,
    session: u64,
    out: Vec<ConfAction>,
    ended: bool,
    /// Whether anyone was ever in it (an ad-hoc conference ends when the last one leaves).
    joined: bool,
    /// Where the room's events go (this actor; set when it starts).
    events: Option<Recipient<RoomEvent>>,
}

impl ConferenceActor {
    /// A conference named `name` on this worker (not started).
    pub fn new(
        key: ConfKey,
        name: String,
        env: Rc<ConfEnv>,
        origin: Origin,
        summary: Arc<Mutex<Summary>>,
        seed: u64,
    ) -> ConferenceActor {
        let domain = env.shared.domains.first().cloned().unwrap_or_default();
        let focus = format!("sip:{name}@{domain}");
        let contact = Bytes::from(format!(
            "<sip:{name}@{}>;isfocus",
            env.shared.config.sip_listen
        ));
        {
            let mut s = summary.lock();
            s.id = name.clone();
            s.focus = focus.clone();
            s.predefined = matches!(origin, Origin::Predefined(_));
        }
        ConferenceActor {
            key,
            name,
            focus,
            contact,
            env,
            origin,
            gen: BranchGen::new(seed),
            next_req: 0,
            next_pid: 0,
            participants: BTreeMap::new(),
            subs: Vec::new(),
            pending: Default::default(),
            room: None,
            summary,
            session: seed >> 16,
            out: Vec::new(),
            ended: false,
            joined: false,
            events: None,
        }
    }

    /// The focus URI.
    pub fn focus(&self) -> &str {
        &self.focus
    }

    // ---- output --------------------------------------------------------------------------

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let actions = std::mem::take(&mut self.out);
        if let Err(e) = self.env.out.try_send(FromConference {
            key: self.key,
            actions,
        }) {
            tracing::error!(conference = %self.name, error = %e, "worker refused conference actions");
        }
    }

    fn respond(&mut self, tx: ServerTxId, response: Message) {
        self.out.push(ConfAction::Respond { tx, response });
    }

    fn refuse(&mut self, tx: ServerTxId, req: &Message, code: u16, reason: &str) {
        tracing::debug!(conference = %self.name, code, reason, "request refused");
        let r = builder::local_response(req, code, reason);
        self.respond(tx, r);
    }

    fn via(&mut self, reliable: bool) -> Bytes {
        let branch = super::focus::branch(self.env.worker, self.gen.next_u64());
        via_value(
            reliable,
            &self.env.shared.config.sip_listen.to_string(),
            branch.as_bytes(),
        )
    }

    fn send(&mut self, dest: SocketAddr, reliable: bool, request: Message, what: Pending) {
        self.next_req += 1;
        let id = ReqId(self.next_req);
        self.pending.insert(id, what);
        self.out.push(ConfAction::SendRequest {
            id,
            dest,
            reliable,
            request,
        });
    }

    fn ok(&mut self, req: &Message, tag: Option<&str>) -> Message {
        let mut r = match tag {
            Some(t) => builder::response_to_with_tag(req, 200, "OK", Some(t)),
            None => builder::response_to(req, 200, "OK"),
        };
        r.headers.push(HeaderName::Contact, self.contact.clone());
        r
    }

    fn new_tag(&mut self) -> String {
        String::from_utf8_lossy(&self.gen.next_tag()).into_owned()
    }

    // ---- roster and events ---------------------------------------------------------------

    fn users(&self) -> Vec<UserInfo> {
        self.participants
            .iter()
            .map(|(id, p)| p.info(*id))
            .collect()
    }

    /// Updates the API summary and sends a partial NOTIFY of `changes` to every subscriber.
    fn roster_changed(&mut self, changes: &[(UserInfo, Change)]) {
        {
            let mut s = self.summary.lock();
            s.participants = self
                .participants
                .iter()
                .map(|(id, p)| ParticipantSummary {
                    id: *id,
                    uri: p.entity.clone(),
                    muted: p.muted,
                    status: p.info(*id).status,
                })
                .collect();
        }
        if changes.is_empty() {
            return;
        }
        let users = self.users();
        for i in 0..self.subs.len() {
            self.subs[i].version += 1;
            let doc = events::render(&self.focus, self.subs[i].version, &users, Some(changes));
            self.notify_sub(i, Some(doc), false);
        }
    }

    /// A NOTIFY in subscription `i` with `doc` (conference-info) or no body; `terminated`
    /// ends the subscription (RFC 6665 §4.2.2).
    fn notify_sub(&mut self, i: usize, doc: Option<String>, terminated: bool) {
        let now = Instant::now();
        let sub = &self.subs[i];
        let (dest, reliable) = (sub.dest, sub.reliable);
        let left = sub.expires.saturating_duration_since(now).as_secs();
        let via = self.via(reliable);
        let sub = &mut self.subs[i];
        let mut n = sub.dialog.request(Method::Notify, via);
        n.headers.push(HeaderName::Event, "conference");
        n.headers.push(
            HeaderName::SubscriptionState,
            if terminated {
                "terminated;reason=noresource".to_string()
            } else {
                format!("active;expires={left}")
            },
        );
        if let Some(doc) = doc {
            n.set_body(Bytes::from(doc), Some("application/conference-info+xml"));
        }
        self.send(dest, reliable, n, Pending::Other);
    }

    // ---- requests ------------------------------------------------------------------------

    fn on_request(&mut self, tx: ServerTxId, req: Message, source: SocketAddr, reliable: bool) {
        let method = req.method().cloned().unwrap_or(Method::Other(Bytes::new()));
        let in_dialog = DialogId::of_request(&req);
        if let Some(id) = &in_dialog {
            if let Some(pid) = self.participant_of(id) {
                return self.participant_request(pid, tx, req);
            }
            if let Some(i) = self.subs.iter().position(|s| s.dialog.id() == id) {
                return self.subscription_request(i, tx, req);
            }
            if method != Method::Ack {
                self.refuse(tx, &req, 481, "Call/Transaction Does Not Exist");
            }
            return;
        }
        match method {
            Method::Invite => self.dial_in(tx, req, source, reliable),
            Method::Subscribe => self.subscribe(tx, req, source, reliable),
            Method::Refer => self.refer(tx, req, None, source, reliable),
            Method::Options => {
                let mut r = self.ok(&req, None);
                r.headers.push(HeaderName::Allow, ALLOW);
                self.respond(tx, r)
            }
            _ => self.refuse(tx, &req, 405, "Method Not Allowed"),
        }
    }

    fn participant_of(&self, id: &DialogId) -> Option<u32> {
        self.participants
            .iter()
            .find(|(_, p)| p.dialog.as_ref().is_some_and(|d| d.id() == id))
            .map(|(k, _)| *k)
    }

    /// An INVITE to the focus from someone not in it yet (RFC 4579 §5.2).
    fn dial_in(&mut self, tx: ServerTxId, req: Message, source: SocketAddr, reliable: bool) {
        if self.ended {
            return self.refuse(tx, &req, 480, "Conference Ended");
        }
        let from = req.from().ok();
        let entity = from
            .as_ref()
            .and_then(|f| f.uri.aor())
            .unwrap_or_else(|| "sip:anonymous@anonymous.invalid".into());
        if let Origin::Predefined(p) = &self.origin {
            if p.join == Join::Invited && !p.invites(&entity) {
                return self.refuse(tx, &req, 403, "Not Invited To This Conference");
            }
        }
        if self.participants.len() >= self.env.shared.config.conference_max_participants {
            return self.refuse(tx, &req, 503, "Conference Full");
        }
        let chosen = match sdp::choose(&req.body) {
            Ok(c) => c,
            Err(e) => return self.refuse(tx, &req, 488, e.reason()),
        };
        let pid = self.next_pid + 1;
        let Some((ports, local)) = self.open_media(pid, &chosen) else {
            return self.refuse(tx, &req, 503, "Media Ports Exhausted");
        };
        self.next_pid = pid;
        let tag = self.new_tag();
        let mut r = self.ok(&req, Some(&tag));
        r.headers.push(HeaderName::Allow, ALLOW);
        r.set_body(
            sdp::answer(&req.body, &chosen, &local),
            Some("application/sdp"),
        );
        let dialog = match Dialog::uas(&req, &r, self.contact.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.close_media(pid);
                return self.refuse(tx, &req, e.status(), &e.reason());
            }
        };
        let display = from
            .and_then(|f| f.display)
            .map(|d| String::from_utf8_lossy(&d).trim_matches('"').to_string());
        let now = Instant::now();
        self.participants.insert(
            pid,
            Participant {
                entity,
                display,
                dialog: Some(dialog),
                dest: source,
                reliable,
                state: State::AwaitingAck {
                    tx,
                    response: r.clone(),
                    next: now + T1,
                    interval: T1,
                    give_up: now + ACK_WAIT,
                },
                media: Some(chosen),
                ports: Some(ports),
                muted: false,
                sdp_version: local.version,
                ack: None,
                referral: None,
            },
        );
        self.joined = true;
        tracing::info!(conference = %self.name, participant = pid, "joined (dial-in)");
        self.respond(tx, r);
        let info = self.participants[&pid].info(pid);
        self.roster_changed(&[(info, Change::Full)]);
    }

    /// Allocates a participant's ports and opens its stream in the room; `chosen` may be a
    /// placeholder (dial-out, before the answer).
    fn open_media(&mut self, pid: u32, chosen: &Negotiated) -> Option<(Ports, Local)> {
        if self.room.is_none() {
            self.room = self.env.plane.open_room(self.events.clone()).ok();
        }
        let room = self.room.as_ref()?;
        let ports = {
            let mut pool = self.env.pool.borrow_mut();
            if chosen.mux {
                pool.allocate_single()
            } else {
                pool.allocate_pair()
            }
        }?;
        let ports = Ports {
            ports,
            pool: self.env.pool.clone(),
        };
        let side = SidePorts {
            rtp: ports.ports.rtp,
            rtcp: ports.ports.rtcp,
        };
        match room.add(pid, side, chosen.codec, chosen.pt, chosen.rtp, chosen.rtcp) {
            Ok(addr) => {
                self.session = self.session.wrapping_add(1);
                let local = Local {
                    ip: addr.ip(),
                    port: addr.port(),
                    session: self.session,
                    version: 1,
                };
                Some((ports, local))
            }
            Err(e) => {
                tracing::warn!(conference = %self.name, error = %e, "participant stream not opened");
                if let crate::media::OpenError::Bind { port, .. } = &e {
                    self.env.pool.borrow_mut().mark_unusable(*port);
                }
                None
            }
        }
    }

    fn close_media(&mut self, pid: u32) {
        if let Some(room) = &self.room {
            room.remove(pid);
        }
    }

    /// A request in a participant's dialog.
    fn participant_request(&mut self, pid: u32, tx: ServerTxId, req: Message) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if let Some(d) = p.dialog.as_mut() {
            if let Err(e) = d.check_request(&req) {
                return self.refuse(tx, &req, e.status(), &e.reason());
            }
        }
        match req.method() {
            Some(Method::Bye) => {
                let r = builder::response_to(&req, 200, "OK");
                self.respond(tx, r);
                tracing::info!(conference = %self.name, participant = pid, "left (BYE)");
                self.remove(pid);
            }
            Some(Method::Invite) => self.reinvite(pid, tx, req),
            Some(Method::Refer) => {
                let (dest, reliable) = (p.dest, p.reliable);
                self.refer(tx, req, Some(pid), dest, reliable)
            }
            Some(Method::Info) | Some(Method::Options) | Some(Method::Update) => {
                let r = self.ok(&req, None);
                self.respond(tx, r)
            }
            _ => self.refuse(tx, &req, 405, "Method Not Allowed"),
        }
    }

    /// A re-INVITE: the same port, the codec and peer address of the new offer.
    fn reinvite(&mut self, pid: u32, tx: ServerTxId, req: Message) {
        let chosen = match sdp::choose(&req.body) {
            Ok(c) => c,
            Err(e) => return self.refuse(tx, &req, 488, e.reason()),
        };
        let session = self.session;
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let Some(port) = p.ports.as_ref().map(|p| p.ports.rtp) else {
            return self.refuse(tx, &req, 488, "No Media");
        };
        p.sdp_version += 1;
        let local = Local {
            ip: self.env.plane.config().ip,
            port,
            session,
            version: p.sdp_version,
        };
        p.media = Some(chosen);
        if let Some(d) = p.dialog.as_mut() {
            d.refresh_target(&req);
        }
        if let Some(room) = &self.room {
            room.update(pid, chosen.codec, chosen.pt, chosen.rtp, chosen.rtcp);
        }
        let mut r = self.ok(&req, None);
        r.set_body(
            sdp::answer(&req.body, &chosen, &local),
            Some("application/sdp"),
        );
        let now = Instant::now();
        if let Some(p) = self.participants.get_mut(&pid) {
            p.state = State::AwaitingAck {
                tx,
                response: r.clone(),
                next: now + T1,
                interval: T1,
                give_up: now + ACK_WAIT,
            };
        }
        self.respond(tx, r);
    }

    /// A participant leaves (its BYE, a failed dial-out, no ACK): media closed, ports back,
    /// subscribers told; an ad-hoc conference left empty ends.
    fn remove(&mut self, pid: u32) {
        let Some(p) = self.participants.remove(&pid) else {
            return;
        };
        self.close_media(pid);
        drop(p.ports);
        let info = UserInfo {
            entity: p.entity.clone(),
            display: p.display.clone(),
            status: "disconnected",
            muted: p.muted,
            id: pid,
        };
        self.roster_changed(&[(info, Change::Deleted)]);
        if self.participants.is_empty() && matches!(self.origin, Origin::AdHoc) {
            self.end("the last participant left");
        }
    }

    /// SUBSCRIBE to the conference event package (RFC 4575 §3, RFC 6665 §4.2).
    fn subscribe(&mut self, tx: ServerTxId, req: Message, source: SocketAddr, reliable: bool) {
        let is_conference = req
            .event()
            .ok()
            .flatten()
            .is_some_and(|e| e.is("conference"));
        if !is_conference {
            let mut r = builder::local_response(&req, 489, "Bad Event");
            r.headers.push(HeaderName::AllowEvents, "conference");
            return self.respond(tx, r);
        }
        let expires = req
            .expires()
            .ok()
            .flatten()
            .unwrap_or(SUB_DEFAULT)
            .min(SUB_DEFAULT);
        let tag = self.new_tag();
        let mut r = self.ok(&req, Some(&tag));
        r.headers.push(HeaderName::Expires, expires.to_string());
        let dialog = match Dialog::uas(&req, &r, self.contact.clone()) {
            Ok(d) => d,
            Err(e) => return self.refuse(tx, &req, e.status(), &e.reason()),
        };
        self.respond(tx, r);
        self.subs.push(Subscription {
            dialog,
            dest: source,
            reliable,
            expires: Instant::now() + Duration::from_secs(expires.into()),
            version: 1,
        });
        let i = self.subs.len() - 1;
        let doc = events::render(&self.focus, 1, &self.users(), None);
        // Expires 0 is a fetch: one NOTIFY, and the subscription is over (RFC 6665 §4.2.1.4).
        self.notify_sub(i, Some(doc), expires == 0);
        if expires == 0 {
            self.subs.remove(i);
        }
    }

    /// A refresh or an unsubscribe (Expires: 0) in subscription `i`.
    fn subscription_request(&mut self, i: usize, tx: ServerTxId, req: Message) {
        if let Err(e) = self.subs[i].dialog.check_request(&req) {
            return self.refuse(tx, &req, e.status(), &e.reason());
        }
        if req.method() != Some(&Method::Subscribe) {
            let r = builder::response_to(&req, 200, "OK");
            return self.respond(tx, r);
        }
        let expires = req
            .expires()
            .ok()
            .flatten()
            .unwrap_or(SUB_DEFAULT)
            .min(SUB_DEFAULT);
        let mut r = self.ok(&req, None);
        r.headers.push(HeaderName::Expires, expires.to_string());
        self.respond(tx, r);
        self.subs[i].expires = Instant::now() + Duration::from_secs(expires.into());
        self.subs[i].version += 1;
        let doc = events::render(&self.focus, self.subs[i].version, &self.users(), None);
        self.notify_sub(i, Some(doc), expires == 0);
        if expires == 0 {
            self.subs.remove(i);
        }
    }

    /// REFER to the focus (RFC 4579 §5.5): 202, then the focus dials the Refer-To target
    /// and reports its progress to the referrer in `message/sipfrag` NOTIFYs (RFC 3515).
    fn refer(
        &mut self,
        tx: ServerTxId,
        req: Message,
        pid: Option<u32>,
        source: SocketAddr,
        reliable: bool,
    ) {
        let target = match req.refer_to() {
            Ok(Some(t)) => t,
            _ => return self.refuse(tx, &req, 400, "Missing Or Malformed Refer-To"),
        };
        let target_uri = target.addr.uri.to_string();
        let via = match pid {
            Some(p) => NotifyVia::Participant(p),
            None => {
                let tag = self.new_tag();
                let r = builder::response_to_with_tag(&req, 202, "Accepted", Some(&tag));
                match Dialog::uas(&req, &r, self.contact.clone()) {
                    Ok(dialog) => NotifyVia::Own {
                        dialog: Box::new(dialog),
                        dest: source,
                        reliable,
                    },
                    Err(e) => return self.refuse(tx, &req, e.status(), &e.reason()),
                }
            }
        };
        let mut r = match &via {
            NotifyVia::Own { dialog, .. } => {
                let tag = String::from_utf8_lossy(&dialog.id().local_tag).into_owned();
                builder::response_to_with_tag(&req, 202, "Accepted", Some(&tag))
            }
            NotifyVia::Participant(_) => builder::response_to(&req, 202, "Accepted"),
        };
        r.headers.push(HeaderName::Contact, self.contact.clone());
        self.respond(tx, r);
        let mut referral = Referral { via };
        self.sipfrag(&mut referral, 100, "Trying", false);
        if let Err((code, reason)) = self.dial_out(&target_uri, Some(referral)) {
            tracing::debug!(conference = %self.name, target = %target_uri, code, reason, "REFER target not called");
        }
    }

    /// A NOTIFY of a REFER's implicit subscription with the sipfrag `SIP/2.0 code reason`.
    fn sipfrag(&mut self, r: &mut Referral, code: u16, reason: &str, last: bool) {
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let (dest, reliable) = match &r.via {
            NotifyVia::Participant(pid) => match self.participants.get(pid) {
                Some(p) if p.dialog.is_some() => (p.dest, p.reliable),
                _ => return,
            },
            NotifyVia::Own { dest, reliable, .. } => (*dest, *reliable),
        };
        let via = self.via(reliable);
        let dialog: &mut Dialog = match &mut r.via {
            NotifyVia::Participant(pid) => {
                match self
                    .participants
                    .get_mut(pid)
                    .and_then(|p| p.dialog.as_mut())
                {
                    Some(d) => d,
                    None => return,
                }
            }
            NotifyVia::Own { dialog, .. } => dialog,
        };
        let mut n = dialog.request(Method::Notify, via);
        n.headers.push(HeaderName::Event, "refer");
        n.headers.push(HeaderName::SubscriptionState, state);
        n.set_body(
            Bytes::from(format!("SIP/2.0 {code} {reason}\r\n")),
            Some("message/sipfrag;version=2.0"),
        );
        self.send(dest, reliable, n, Pending::Other);
    }

    /// Calls `target` into the conference (dial-out, RFC 4579 §5.5): an INVITE with our offer
    /// from the focus. Errors: the target cannot be reached.
    fn dial_out(
        &mut self,
        target: &str,
        referral: Option<Referral>,
    ) -> Result<u32, (u16, &'static str)> {
        let fail = |me: &mut Self, referral: Option<Referral>, code: u16, reason: &'static str| {
            if let Some(mut r) = referral {
                me.sipfrag(&mut r, code, reason, true);
            }
            Err((code, reason))
        };
        if self.participants.len() >= self.env.shared.config.conference_max_participants {
            return fail(self, referral, 503, "Conference Full");
        }
        let Some((ruri, dest, reliable)) = self.resolve(target) else {
            return fail(self, referral, 480, "Temporarily Unavailable");
        };
        let pid = self.next_pid + 1;
        let placeholder = Negotiated {
            index: 0,
            codec: sdp::AudioCodec::Pcmu,
            pt: 0,
            rtp: None,
            rtcp: None,
            mux: false,
        };
        let Some((ports, local)) = self.open_media(pid, &placeholder) else {
            return fail(self, referral, 503, "Media Ports Exhausted");
        };
        self.next_pid = pid;
        let tag = self.new_tag();
        let mut salt = self.gen.next_u64();
        let call_id = crate::routing::owned_call_id(
            &self.env.shared,
            self.env.worker,
            self.env.workers,
            &mut salt,
        );
        let via = self.via(reliable);
        let mut headers = Headers::new();
        headers.push(HeaderName::Via, via);
        headers.push(HeaderName::MaxForwards, "70");
        headers.push(HeaderName::From, format!("<{}>;tag={tag}", self.focus));
        headers.push(HeaderName::To, format!("<{target}>"));
        headers.push(HeaderName::CallId, call_id);
        headers.push(HeaderName::CSeq, "1 INVITE");
        headers.push(HeaderName::Contact, self.contact.clone());
        headers.push(HeaderName::Allow, ALLOW);
        headers.push(HeaderName::ContentLength, "0");
        let mut invite = Message {
            start: StartLine::Request {
                method: Method::Invite,
                uri: ruri,
                version: Bytes::from_static(b"SIP/2.0"),
            },
            headers,
            body: Bytes::new(),
        };
        invite.set_body(sdp::offer(&local), Some("application/sdp"));
        self.next_req += 1;
        let req = ReqId(self.next_req);
        self.pending.insert(req, Pending::Invite(pid));
        self.participants.insert(
            pid,
            Participant {
                entity: sdp_aor(target),
                display: None,
                dialog: None,
                dest,
                reliable,
                state: State::Calling {
                    req,
                    invite: invite.clone(),
                },
                media: None,
                ports: Some(ports),
                muted: false,
                sdp_version: 1,
                ack: None,
                referral,
            },
        );
        self.out.push(ConfAction::SendRequest {
            id: req,
            dest,
            reliable,
            request: invite,
        });
        tracing::info!(conference = %self.name, participant = pid, %target, "dialing out");
        let info = self.participants[&pid].info(pid);
        self.roster_changed(&[(info, Change::Full)]);
        Ok(pid)
    }

    /// Where a dial-out goes: a local user's first registered contact, or a URI naming an
    /// address.
    fn resolve(&self, target: &str) -> Option<(Bytes, SocketAddr, bool)> {
        let aor = super::predefined::canonical(target)?;
        let shared = &self.env.shared;
        if crate::routing::is_local_aor(shared, &aor) {
            let aor = cpm_engine::registrar::Aor::new(aor);
            let (b, dest, reliable) = crate::routing::contacts(shared, &aor, Instant::now())
                .into_iter()
                .next()?;
            return Some((b.contact, dest, reliable));
        }
        let uri =
            cpm_engine::sip::uri::Uri::parse(&Bytes::copy_from_slice(target.as_bytes())).ok()?;
        let sip = uri.as_sip()?;
        let ip = sip.host.ip()?;
        let reliable = sip
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"tcp"));
        Some((
            Bytes::copy_from_slice(target.as_bytes()),
            SocketAddr::new(ip, sip.port.unwrap_or(5060)),
            reliable,
        ))
    }

    // ---- responses -----------------------------------------------------------------------

    fn on_response(&mut self, id: ReqId, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let Some(what) = self.pending.get(&id) else {
            return;
        };
        if code >= 200 {
            let what = self.pending.remove(&id);
            if let Some(Pending::Invite(pid)) = what {
                return self.invite_answered(pid, resp);
            }
            return;
        }
        if let Pending::Invite(pid) = what {
            let pid = *pid;
            if code > 100 {
                if let Some(mut r) = self
                    .participants
                    .get_mut(&pid)
                    .and_then(|p| p.referral.take())
                {
                    self.sipfrag(&mut r, code, reason(&resp), false);
                    if let Some(p) = self.participants.get_mut(&pid) {
                        p.referral = Some(r);
                    }
                }
            }
        }
    }

    /// The final response to a dial-out INVITE.
    fn invite_answered(&mut self, pid: u32, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let State::Calling { invite, .. } = &p.state else {
            return;
        };
        let invite = invite.clone();
        let referral = p.referral.take();
        if let Some(mut r) = referral {
            self.sipfrag(&mut r, code, reason(&resp), true);
        }
        if !(200..300).contains(&code) {
            tracing::info!(conference = %self.name, participant = pid, code, "dial-out refused");
            return self.remove(pid);
        }
        let mut dialog = match Dialog::uac(&invite, &resp) {
            Ok(d) => d,
            Err(_) => return self.remove(pid),
        };
        dialog.confirm(&resp);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        let via = {
            let branch = super::focus::branch(self.env.worker, self.gen.next_u64());
            via_value(
                p.reliable,
                &self.env.shared.config.sip_listen.to_string(),
                branch.as_bytes(),
            )
        };
        let ack = dialog.ack(1, via);
        self.out.push(ConfAction::SendAck {
            dest: p.dest,
            reliable: p.reliable,
            ack: ack.clone(),
        });
        p.ack = Some(ack);
        p.dialog = Some(dialog);
        p.state = State::Connected;
        match sdp::choose(&resp.body) {
            Ok(chosen) => {
                p.media = Some(chosen);
                if let Some(room) = &self.room {
                    room.update(pid, chosen.codec, chosen.pt, chosen.rtp, chosen.rtcp);
                }
                self.joined = true;
                tracing::info!(conference = %self.name, participant = pid, "joined (dial-out)");
                let info = self.participants[&pid].info(pid);
                self.roster_changed(&[(info, Change::Full)]);
            }
            Err(e) => {
                tracing::info!(conference = %self.name, participant = pid, reason = e.reason(), "dial-out answer unusable");
                self.bye(pid);
                self.remove(pid);
            }
        }
    }

    /// A BYE to a participant (the conference ends, or its answer was unusable).
    fn bye(&mut self, pid: u32) {
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        let (dest, reliable) = (p.dest, p.reliable);
        let via = self.via(reliable);
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        match (&p.state, p.dialog.as_mut()) {
            (State::Calling { req, .. }, _) => {
                let _ = req;
                // Not answered yet: nothing to BYE (its INVITE times out or is answered into
                // an ended conference, and then refused with a BYE of the 2xx's dialog).
            }
            (_, Some(d)) => {
                let bye = d.request(Method::Bye, via);
                self.send(dest, reliable, bye, Pending::Other);
            }
            _ => {}
        }
    }

    fn on_ack(&mut self, ack: Message) {
        let Some(id) = DialogId::of_request(&ack) else {
            return;
        };
        if let Some(pid) = self.participant_of(&id) {
            if let Some(p) = self.participants.get_mut(&pid) {
                if matches!(p.state, State::AwaitingAck { .. }) {
                    p.state = State::Connected;
                }
            }
        }
    }

    // ---- timers, end ---------------------------------------------------------------------

    fn housekeeping(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut no_ack = Vec::new();
        for (pid, p) in self.participants.iter_mut() {
            if let State::AwaitingAck {
                tx,
                response,
                next,
                interval,
                give_up,
            } = &mut p.state
            {
                if now >= *give_up {
                    no_ack.push(*pid);
                } else if now >= *next && !p.reliable {
                    *interval = (*interval * 2).min(T2);
                    *next = now + *interval;
                    resend.push((*tx, response.clone()));
                }
            }
        }
        for (tx, r) in resend {
            self.respond(tx, r);
        }
        for pid in no_ack {
            tracing::info!(conference = %self.name, participant = pid, "no ACK: dropped");
            self.bye(pid);
            self.remove(pid);
        }
        let mut i = 0;
        while i < self.subs.len() {
            if self.subs[i].expires <= now {
                self.notify_sub(i, None, true);
                self.subs.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Ends the conference: subscriptions terminated, BYE to everyone still in it, media
    /// closed; the actor stops.
    fn end(&mut self, why: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        tracing::info!(conference = %self.name, why, "conference ended");
        let pids: Vec<u32> = self.participants.keys().copied().collect();
        for pid in pids {
            self.bye(pid);
            if let Some(p) = self.participants.remove(&pid) {
                self.close_media(pid);
                drop(p);
            }
        }
        for i in 0..self.subs.len() {
            self.subs[i].version += 1;
            let doc = events::render(&self.focus, self.subs[i].version, &[], None);
            self.notify_sub(i, Some(doc), true);
        }
        self.subs.clear();
        self.room = None;
        self.out.push(ConfAction::Ended);
        self.env.shared.conferences.remove(&self.name);
    }

    fn after(&mut self, ctx: &mut Context<Self>) {
        self.flush();
        if self.ended {
            ctx.stop();
        }
    }
}

/// The reason phrase of a response.
fn reason(resp: &Message) -> &str {
    match &resp.start {
        StartLine::Response { reason, .. } => std::str::from_utf8(reason).unwrap_or(""),
        _ => "",
    }
}

/// The AOR of a target URI (as the roster shows it).
fn sdp_aor(target: &str) -> String {
    super::predefined::canonical(target).unwrap_or_else(|| target.to_string())
}

/// Whether a request asks for the injected conference panic (`--test-hooks` only).
fn is_panic_hook(req: &Message) -> bool {
    req.headers.iter().any(|h| {
        matches!(&h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(b"X-Cpm-Test"))
            && &h.value[..] == b"panic-conference"
    })
}

impl Actor for ConferenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.events = Some(ctx.address().recipient());
        ctx.run_interval(HOUSEKEEPING, |act, ctx| {
            act.housekeeping(Instant::now());
            act.after(ctx);
        });
        if let Origin::Predefined(p) = &self.origin {
            let targets = p.participants.clone();
            for t in targets {
                if let Err((code, reason)) = self.dial_out(&t, None) {
                    tracing::info!(conference = %self.name, target = %t, code, reason, "participant not called");
                }
            }
        }
        self.after(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.end("stopped");
        self.flush();
    }
}

/// A conference actor that unwinds from a panic is dropped without `stopped()`: its ports
/// return with its participants, its room closes with its handle, and here its routes and
/// registry entry are dropped.
impl Drop for ConferenceActor {
    fn drop(&mut self) {
        if !self.ended {
            self.ended = true;
            self.env.shared.conferences.remove(&self.name);
            let _ = self.env.out.try_send(FromConference {
                key: self.key,
                actions: vec![ConfAction::Ended],
            });
        }
    }
}

impl Handler<ToConference> for ConferenceActor {
    type Result = ();

    fn handle(&mut self, msg: ToConference, ctx: &mut Context<Self>) {
        match msg {
            ToConference::Request {
                tx,
                request,
                source,
                reliable,
            } => {
                if self.env.shared.config.test_hooks && is_panic_hook(&request) {
                    panic!("fault injected by X-Cpm-Test: panic-conference");
                }
                self.on_request(tx, request, source, reliable)
            }
            ToConference::Ack(ack) => self.on_ack(ack),
            ToConference::Response { id, response } => {
                // A retransmitted 2xx of a dial-out INVITE we ACKed: the same ACK again.
                if !self.pending.contains_key(&id)
                    && response.status().is_some_and(|c| (200..300).contains(&c))
                {
                    if let Some(p) = self.participants.values().find(|p| {
                        p.dialog
                            .as_ref()
                            .is_some_and(|d| d.matches_response(&response))
                    }) {
                        if let Some(ack) = &p.ack {
                            self.out.push(ConfAction::SendAck {
                                dest: p.dest,
                                reliable: p.reliable,
                                ack: ack.clone(),
                            });
                        }
                    }
                }
                self.on_response(id, response)
            }
        }
        self.after(ctx);
    }
}

impl Handler<RoomEvent> for ConferenceActor {
    type Result = ();

    fn handle(&mut self, msg: RoomEvent, _: &mut Context<Self>) {
        match msg {
            RoomEvent::ActiveSpeaker(who) => {
                self.summary.lock().active_speaker = who;
                tracing::debug!(conference = %self.name, speaker = ?who, "active speaker");
            }
        }
    }
}

impl Handler<EndConference> for ConferenceActor {
    type Result = ();

    fn handle(&mut self, _: EndConference, ctx: &mut Context<Self>) {
        self.end("ended through the API");
        self.after(ctx);
    }
}

impl Handler<MuteParticipant> for ConferenceActor {
    type Result = bool;

    fn handle(&mut self, msg: MuteParticipant, ctx: &mut Context<Self>) -> bool {
        let Some(p) = self.participants.get_mut(&msg.id) else {
            return false;
        };
        if p.muted != msg.muted {
            p.muted = msg.muted;
            if let Some(room) = &self.room {
                room.mute(msg.id, msg.muted);
            }
            let info = p.info(msg.id);
            self.roster_changed(&[(info, Change::Full)]);
        }
        self.after(ctx);
        true
    }
}
