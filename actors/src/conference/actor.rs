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
use cpm_engine::conference::roster::{
    ChangeSet, EndpointStatus, JoiningMethod, Media, MediaKind, MediaStatus, ParticipantId, Roster,
    SubscriberView, CONFERENCE_INFO_CONTENT_TYPE,
};
use cpm_engine::media::{LocalPorts, PortPool};
use cpm_engine::session::ReqId;
use cpm_engine::sip::builder::{self, BranchGen};
use cpm_engine::sip::dialog::{via_value, Dialog, DialogId};
use cpm_engine::sip::transaction::ServerTxId;
use cpm_engine::sip::{HeaderName, Headers, Message, Method, StartLine};
use parking_lot::Mutex;

use super::chat::{self, GroupChat};
use super::floor::{Floor, FloorSettings};
use super::predefined::{Join, Predefined};
use super::registry::{ParticipantSummary, Summary};
use super::sdp::{self, Local, Negotiated, VideoFormat, VideoNegotiated};
use super::{ConfAction, ConfKey, EndConference, FromConference, MuteParticipant, ToConference};
use crate::bfcp::FromBfcp;
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

/// A participant's video port (forwarded video, see `media::room`).
struct VideoPort {
    /// Held only to return them to the pool when dropped.
    _ports: Ports,
    /// Our video RTP port, as the SDP shows it.
    port: u16,
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

/// A participant's SIP and media state; who it is (AOR, display name, status, mute) is in
/// the conference's [`Roster`] under the same id.
struct Participant {
    dialog: Option<Dialog>,
    dest: SocketAddr,
    reliable: bool,
    state: State,
    media: Option<Negotiated>,
    ports: Option<Ports>,
    /// Its video port, when its video is forwarded.
    video: Option<VideoPort>,
    sdp_version: u64,
    /// The ACK we sent for its 2xx (dial-out), re-sent on retransmissions.
    ack: Option<Message>,
    referral: Option<Referral>,
    /// The dial-out's target (as configured or referred; empty for a dial-in).
    target: String,
    /// The target's contacts not tried yet (dial-out), in order.
    next_contacts: Vec<(Bytes, SocketAddr, bool)>,
}

/// An RFC 4575 subscription.
struct Subscription {
    dialog: Dialog,
    dest: SocketAddr,
    reliable: bool,
    expires: Instant,
    /// The version of the last conference-info document it got (RFC 4575 §4.6).
    view: SubscriberView,
}

/// What a request we sent was for.
enum Pending {
    Invite(u32),
    /// The BYE of a removal by REFER: its final response goes to the referrer as sipfrag.
    Removal(Referral),
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
    /// Who is in the conference, rendered into conference-info (RFC 4575 §5).
    roster: Roster,
    subs: Vec<Subscription>,
    pending: std::collections::HashMap<ReqId, Pending>,
    room: Option<RoomHandle>,
    summary: Arc<Mutex<Summary>>,
    session: u64,
    out: Vec<ConfAction>,
    ended: bool,
    /// The AOR of who created an ad-hoc conference (its first INVITE, to the factory).
    creator: Option<String>,
    /// The conference's video format, fixed by its first video participant (forwarded video
    /// must be one codec for everyone).
    video_format: Option<VideoFormat>,
    /// Whether anyone was ever in it (an ad-hoc conference ends when the last one leaves).
    joined: bool,
    /// Where the room's events go (this actor; set when it starts).
    events: Option<Recipient<RoomEvent>>,
    /// Half duplex: the floor (decision 0015), and where BFCP connections' messages go.
    floor: Option<Floor>,
    bfcp_to: Option<Recipient<FromBfcp>>,
    /// Group chat: the participants' MSRP sessions with the focus (opened with the first).
    chat: Option<GroupChat>,
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
        let roster = Roster::new(focus.clone());
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
            roster,
            subs: Vec::new(),
            pending: Default::default(),
            room: None,
            summary,
            session: seed >> 16,
            out: Vec::new(),
            ended: false,
            joined: false,
            creator: None,
            video_format: None,
            events: None,
            floor: None,
            bfcp_to: None,
            chat: None,
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

    /// Updates the API summary and sends a partial NOTIFY of `changes` to every subscriber
    /// (RFC 4575 §4.6.2).
    fn roster_changed(&mut self, changes: ChangeSet) {
        {
            let mut s = self.summary.lock();
            s.participants = self
                .roster
                .iter()
                .map(|p| ParticipantSummary {
                    id: p.id.0,
                    uri: p.uri.clone(),
                    muted: p.muted,
                    status: p.shown_status().as_str(),
                })
                .collect();
        }
        if changes.is_empty() {
            return;
        }
        for i in 0..self.subs.len() {
            let doc = self.roster.render_partial(&mut self.subs[i].view, &changes);
            self.notify_sub(i, Some(doc), false);
        }
    }

    /// A participant's status changed (dialing out, connected).
    fn set_status(&mut self, pid: u32, status: EndpointStatus) {
        if let Ok(c) = self.roster.set_status(ParticipantId(pid), status) {
            self.roster_changed(c);
        }
    }

    /// A participant's audio stream as conference-info shows it (RFC 4575 §5.7.7): `recvonly`
    /// while the focus mutes it (it hears the mix, nothing of it goes in).
    fn audio_media(muted: bool) -> Media {
        Media {
            id: 1,
            kind: MediaKind::Audio,
            label: None,
            src_id: None,
            status: if muted {
                MediaStatus::RecvOnly
            } else {
                MediaStatus::SendRecv
            },
        }
    }

    /// Adds someone to the roster: its id (the participant id everywhere) and the change.
    /// The endpoint is its Contact URI (made unique if it is taken).
    fn roster_join(
        &mut self,
        entity: String,
        endpoint: Option<String>,
        display: Option<String>,
        joining: JoiningMethod,
        status: EndpointStatus,
    ) -> Option<(u32, ChangeSet)> {
        let mut endpoint = endpoint.unwrap_or_else(|| entity.clone());
        if self.roster.by_endpoint(&endpoint).is_some() {
            endpoint = format!("{endpoint};cpm-join={}", self.next_pid + 1);
        }
        let (id, mut c) = self
            .roster
            .join(entity, Some(endpoint), display, joining, status)
            .ok()?;
        self.next_pid = self.next_pid.max(id.0);
        if let Ok(m) = self.roster.set_media(id, Self::audio_media(false)) {
            c.merge(m);
        }
        Some((id.0, c))
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
            n.set_body(Bytes::from(doc), Some(CONFERENCE_INFO_CONTENT_TYPE));
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
        if matches!(self.origin, Origin::AdHoc) && !self.joined {
            let settings = req
                .request_uri()
                .and_then(|u| FloorSettings::of_factory_uri(u));
            self.start_floor(settings);
        }
        // A chat-only participant (no audio at all) is fine: it needs no room.
        let chat_offer = chat::offered(&req.body);
        let chosen = match sdp::choose(&req.body) {
            Ok(c) => Some(c),
            Err(sdp::NoAudio::NoCodec) if chat_offer.is_some() => None,
            Err(e) => return self.refuse(tx, &req, 488, e.reason()),
        };
        let display = from.as_ref().and_then(|f| f.display_name());
        let endpoint = req
            .contacts()
            .ok()
            .and_then(|c| c.first().and_then(|c| c.uri()).map(|u| u.to_string()));
        // The creator's INVITE to the factory is the first request an ad-hoc conference sees.
        let joining = if matches!(self.origin, Origin::AdHoc) && !self.joined {
            JoiningMethod::FocusOwner
        } else {
            JoiningMethod::DialedIn
        };
        let Some((pid, changes)) = self.roster_join(
            entity.clone(),
            endpoint,
            display,
            joining,
            EndpointStatus::Connected,
        ) else {
            return self.refuse(tx, &req, 503, "Conference Full");
        };
        let (ports, local) = match &chosen {
            Some(c) => match self.open_media(pid, c) {
                Some((ports, local)) => (Some(ports), local),
                None => {
                    let _ = self.roster.leave(ParticipantId(pid));
                    return self.refuse(tx, &req, 503, "Media Ports Exhausted");
                }
            },
            None => (None, self.chat_local()),
        };
        let video = match chosen {
            Some(_) => self.video_for(pid, &req.body, None),
            None => None,
        };
        let mut changes = changes;
        let chat_section = match &chat_offer {
            Some(o) => match self.chat_join(pid, &entity, o, chosen.is_none()) {
                Ok((section, c)) => {
                    changes.merge(c);
                    Some((o.index, section))
                }
                Err(e) if chosen.is_none() => {
                    tracing::warn!(conference = %self.name, error = %e, "chat session not opened");
                    let _ = self.roster.leave(ParticipantId(pid));
                    return self.refuse(tx, &req, 488, "Chat Session Not Available");
                }
                Err(e) => {
                    tracing::warn!(conference = %self.name, error = %e, "chat declined");
                    None
                }
            },
            None => None,
        };
        let tag = self.new_tag();
        let mut r = self.ok(&req, Some(&tag));
        r.headers.push(HeaderName::Allow, ALLOW);
        r.set_body(
            sdp::answer(
                &req.body,
                chosen.as_ref(),
                video.as_ref().map(|(v, p)| (v, p.port)),
                chat_section.as_ref().map(|(i, s)| (*i, s.as_str())),
                &local,
            ),
            Some("application/sdp"),
        );
        let dialog = match Dialog::uas(&req, &r, self.contact.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.close_media(pid);
                let _ = self.roster.leave(ParticipantId(pid));
                return self.refuse(tx, &req, e.status(), &e.reason());
            }
        };
        if joining == JoiningMethod::FocusOwner {
            self.creator = Some(entity);
        }
        if let Some(c) = &chosen {
            self.floor_answer(pid, &req.body, c.index, &local, &mut r);
        }
        let now = Instant::now();
        self.participants.insert(
            pid,
            Participant {
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
                media: chosen,
                ports,
                video: None,
                sdp_version: local.version,
                ack: None,
                referral: None,
                target: String::new(),
                next_contacts: Vec::new(),
            },
        );
        self.joined = true;
        tracing::info!(conference = %self.name, participant = pid, "joined (dial-in)");
        if let Some(p) = self.participants.get_mut(&pid) {
            p.video = video.map(|(_, v)| v);
        }
        changes.merge(self.show_video(pid));
        self.respond(tx, r);
        self.roster_changed(changes);
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
                if self.floor.is_some() {
                    room.mute(pid, true);
                }
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

    /// The video of `offer` for participant `pid`, which has the video port `had` (if any):
    /// opened, kept with the offer's addresses, or closed when the offer has no video in the
    /// conference's format. The first accepted video fixes that format.
    fn video_for(
        &mut self,
        pid: u32,
        offer: &Bytes,
        had: Option<VideoPort>,
    ) -> Option<(VideoNegotiated, VideoPort)> {
        let room = self.room.as_ref()?;
        let Some(v) = sdp::choose_video(offer, self.video_format.as_ref()) else {
            if had.is_some() {
                room.remove_video(pid);
            }
            return None;
        };
        if let Some(had) = had {
            room.update_video(pid, v.rtp, v.rtcp);
            return Some((v, had));
        }
        let ports = {
            let mut pool = self.env.pool.borrow_mut();
            if v.mux {
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
        match room.add_video(pid, side, v.rtp, v.rtcp) {
            Ok(addr) => {
                if self.video_format.is_none() {
                    tracing::info!(conference = %self.name, format = %v.format.rtpmap, "video format fixed");
                    self.video_format = Some(v.format.clone());
                }
                Some((
                    v,
                    VideoPort {
                        _ports: ports,
                        port: addr.port(),
                    },
                ))
            }
            Err(e) => {
                tracing::warn!(conference = %self.name, error = %e, "video stream not opened");
                if let crate::media::OpenError::Bind { port, .. } = &e {
                    self.env.pool.borrow_mut().mark_unusable(*port);
                }
                None
            }
        }
    }

    /// The roster's video stream of `pid` (media id 2) as it now is: `sendrecv` while its
    /// video is forwarded, `inactive` after it stopped (the roster keeps streams listed).
    fn show_video(&mut self, pid: u32) -> ChangeSet {
        let id = ParticipantId(pid);
        let has = self
            .participants
            .get(&pid)
            .is_some_and(|p| p.video.is_some());
        let shown = self
            .roster
            .get(id)
            .is_some_and(|p| p.media.iter().any(|m| m.kind == MediaKind::Video));
        if !has && !shown {
            return ChangeSet::default();
        }
        let m = Media {
            id: 2,
            kind: MediaKind::Video,
            label: None,
            src_id: None,
            status: if has {
                MediaStatus::SendRecv
            } else {
                MediaStatus::Inactive
            },
        };
        self.roster.set_media(id, m).unwrap_or_default()
    }

    fn close_media(&mut self, pid: u32) {
        if let Some(room) = &self.room {
            room.remove(pid);
        }
        if let Some(chat) = &self.chat {
            chat.leave(pid);
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
                if !self.refer_storage(pid, tx, &req) {
                    self.refer(tx, req, Some(pid), dest, reliable)
                }
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
        let has_audio = self
            .participants
            .get(&pid)
            .is_some_and(|p| p.ports.is_some());
        if !has_audio {
            return self.reinvite_chat_only(pid, tx, req);
        }
        let chosen = match sdp::choose(&req.body) {
            Ok(c) => c,
            Err(e) => return self.refuse(tx, &req, 488, e.reason()),
        };
        let chat_section = self.chat_reoffer(pid, &req.body);
        let session = self.session;
        let had = self.participants.get_mut(&pid).and_then(|p| p.video.take());
        let video = self.video_for(pid, &req.body, had);
        let answer_video = video.as_ref().map(|(v, p)| (v.clone(), p.port));
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        p.video = video.map(|(_, v)| v);
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
        let c = self.show_video(pid);
        self.roster_changed(c);
        let mut r = self.ok(&req, None);
        r.set_body(
            sdp::answer(
                &req.body,
                Some(&chosen),
                answer_video.as_ref().map(|(v, p)| (v, *p)),
                chat_section.as_ref().map(|(i, s)| (*i, s.as_str())),
                &local,
            ),
            Some("application/sdp"),
        );
        self.floor_answer(pid, &req.body, chosen.index, &local, &mut r);
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
        if let Ok(c) = self.roster.leave(ParticipantId(pid)) {
            self.roster_changed(c);
        }
        if let Some(f) = self.floor.as_mut() {
            f.leave(Instant::now(), pid);
            self.floor_changed(None);
        }
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
            view: SubscriberView::default(),
        });
        let i = self.subs.len() - 1;
        let doc = self.roster.render_full(&mut self.subs[i].view);
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
        let doc = self.roster.render_full(&mut self.subs[i].view);
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
        if target.method() == Some(Method::Bye) {
            return self.refer_bye(tx, req, pid, &target);
        }
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

    /// REFER with `Refer-To: <participant;method=BYE>` (RFC 4579 §5.7, removing a
    /// participant): the focus BYEs every endpoint of that user, answers 202 and reports the
    /// BYE's outcome as sipfrag (RFC 3515). Only a participant may ask, inside its own dialog
    /// with the focus (INVITE is not authenticated, so the dialog is the proof of who asks):
    /// the creator of an ad-hoc conference, any listed participant of a predefined one; others
    /// get 403, a user not in the conference 404.
    fn refer_bye(
        &mut self,
        tx: ServerTxId,
        req: Message,
        referrer: Option<u32>,
        target: &cpm_engine::sip::hdr::ReferTo,
    ) {
        let by = referrer.and_then(|pid| {
            self.roster
                .get(ParticipantId(pid))
                .map(|p| (pid, p.uri.clone()))
        });
        let allowed = by.as_ref().is_some_and(|(_, aor)| match &self.origin {
            Origin::AdHoc => self.creator.as_deref() == Some(aor.as_str()),
            Origin::Predefined(p) => p.invites(aor),
        });
        let Some((by, _)) = by.filter(|_| allowed) else {
            return self.refuse(
                tx,
                &req,
                403,
                "Only The Conference Owner May Remove Participants",
            );
        };
        let aor = target.addr.uri.aor();
        let victims: Vec<u32> = self
            .roster
            .iter()
            .filter(|p| aor.as_deref() == Some(p.uri.as_str()))
            .map(|p| p.id.0)
            .filter(|pid| {
                self.participants
                    .get(pid)
                    .is_some_and(|p| p.dialog.is_some())
            })
            .collect();
        if victims.is_empty() {
            return self.refuse(tx, &req, 404, "Not A Participant Of This Conference");
        }
        let mut r = builder::response_to(&req, 202, "Accepted");
        r.headers.push(HeaderName::Contact, self.contact.clone());
        self.respond(tx, r);
        let mut referral = Referral {
            via: NotifyVia::Participant(by),
        };
        self.sipfrag(&mut referral, 100, "Trying", false);
        let mut referral = Some(referral);
        for pid in victims {
            tracing::info!(conference = %self.name, participant = pid, by, "removed by REFER");
            let what = referral.take().map_or(Pending::Other, Pending::Removal);
            self.bye_as(pid, what);
            self.remove(pid);
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
        let mut contacts = self.resolve(target);
        if contacts.is_empty() {
            return fail(self, referral, 480, "Temporarily Unavailable");
        }
        let (ruri, dest, reliable) = contacts.remove(0);
        let Some((pid, changes)) = self.roster_join(
            sdp_aor(target),
            Some(String::from_utf8_lossy(&ruri).into_owned()),
            None,
            JoiningMethod::DialedOut,
            EndpointStatus::DialingOut,
        ) else {
            return fail(self, referral, 503, "Conference Full");
        };
        let placeholder = Negotiated {
            index: 0,
            codec: sdp::AudioCodec::Pcmu,
            pt: 0,
            rtp: None,
            rtcp: None,
            mux: false,
        };
        let Some((ports, local)) = self.open_media(pid, &placeholder) else {
            let _ = self.roster.leave(ParticipantId(pid));
            return fail(self, referral, 503, "Media Ports Exhausted");
        };
        let invite = self.invite(pid, target, ruri, reliable, &local);
        self.next_req += 1;
        let req = ReqId(self.next_req);
        self.pending.insert(req, Pending::Invite(pid));
        self.participants.insert(
            pid,
            Participant {
                dialog: None,
                dest,
                reliable,
                state: State::Calling {
                    req,
                    invite: invite.clone(),
                },
                media: None,
                ports: Some(ports),
                video: None,
                sdp_version: 1,
                ack: None,
                referral,
                target: target.to_string(),
                next_contacts: contacts,
            },
        );
        self.out.push(ConfAction::SendRequest {
            id: req,
            dest,
            reliable,
            request: invite,
        });
        tracing::info!(conference = %self.name, participant = pid, %target, "dialing out");
        self.roster_changed(changes);
        Ok(pid)
    }

    /// A dial-out INVITE to `ruri` (the Request-URI: a contact of `target`) with our offer
    /// (RFC 4579 §5.5: from the focus, our Contact with `isfocus`), in a new Call-ID this
    /// worker owns. In a half-duplex conference the offer carries our BFCP stream (the
    /// participant's floor user id).
    fn invite(
        &mut self,
        pid: u32,
        target: &str,
        ruri: Bytes,
        reliable: bool,
        local: &Local,
    ) -> Message {
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
        let offer = sdp::offer(local);
        let offer = match self.floor.as_mut().and_then(|f| Some((f.join(pid)?, f))) {
            Some((uid, f)) => super::floor::splice(&offer, 0, 1, &f.section(local.ip, uid)),
            None => offer,
        };
        invite.set_body(offer, Some("application/sdp"));
        invite
    }

    /// A dial-out refused with `code` by one contact: the next contact of the user is tried
    /// when there is one and the refusal is about that device (408 no answer, 480, 5xx; not
    /// 486 busy or 603 decline, which are the user's answer). True when it was.
    fn try_next_contact(&mut self, pid: u32, code: u16) -> bool {
        if !(code == 408 || code == 480 || (500..600).contains(&code)) {
            return false;
        }
        let Some(p) = self.participants.get_mut(&pid) else {
            return false;
        };
        if p.next_contacts.is_empty() {
            return false;
        }
        let (ruri, dest, reliable) = p.next_contacts.remove(0);
        let (Some(port), target) = (p.ports.as_ref().map(|x| x.ports.rtp), p.target.clone()) else {
            return false;
        };
        p.sdp_version += 1;
        let local = Local {
            ip: self.env.plane.config().ip,
            port,
            session: self.session,
            version: p.sdp_version,
        };
        let invite = self.invite(pid, &target, ruri, reliable, &local);
        self.next_req += 1;
        let req = ReqId(self.next_req);
        self.pending.insert(req, Pending::Invite(pid));
        if let Some(p) = self.participants.get_mut(&pid) {
            p.dest = dest;
            p.reliable = reliable;
            p.state = State::Calling {
                req,
                invite: invite.clone(),
            };
        }
        tracing::info!(conference = %self.name, participant = pid, code, %dest, "dial-out: next contact");
        self.out.push(ConfAction::SendRequest {
            id: req,
            dest,
            reliable,
            request: invite,
        });
        true
    }

    /// Where a dial-out goes, in the order to try: a local user's registered contacts (as
    /// the registrar orders them), or a URI naming an address.
    fn resolve(&self, target: &str) -> Vec<(Bytes, SocketAddr, bool)> {
        let Some(aor) = super::predefined::canonical(target) else {
            return Vec::new();
        };
        let shared = &self.env.shared;
        if crate::routing::is_local_aor(shared, &aor) {
            let aor = cpm_engine::registrar::Aor::new(aor);
            return crate::routing::contacts(shared, &aor, Instant::now())
                .into_iter()
                .map(|(b, dest, reliable)| (b.contact, dest, reliable))
                .collect();
        }
        let Ok(uri) = cpm_engine::sip::uri::Uri::parse(&Bytes::copy_from_slice(target.as_bytes()))
        else {
            return Vec::new();
        };
        let Some((sip, ip)) = uri.as_sip().and_then(|s| Some((s, s.host.ip()?))) else {
            return Vec::new();
        };
        let reliable = sip
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"tcp"));
        vec![(
            Bytes::copy_from_slice(target.as_bytes()),
            SocketAddr::new(ip, sip.port.unwrap_or(5060)),
            reliable,
        )]
    }

    // ---- responses -----------------------------------------------------------------------

    fn on_response(&mut self, id: ReqId, resp: Message) {
        let code = resp.status().unwrap_or(0);
        let Some(what) = self.pending.get(&id) else {
            return;
        };
        if code >= 200 {
            match self.pending.remove(&id) {
                Some(Pending::Invite(pid)) => self.invite_answered(pid, resp),
                Some(Pending::Removal(mut r)) => self.sipfrag(&mut r, code, reason(&resp), true),
                _ => {}
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
        if !(200..300).contains(&code) && self.try_next_contact(pid, code) {
            return;
        }
        let referral = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.referral.take());
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
                if let Some(f) = self.floor.as_mut() {
                    if !super::floor::accepted(&resp.body) {
                        f.leave(Instant::now(), pid);
                    }
                }
                if let Some(room) = &self.room {
                    room.update(pid, chosen.codec, chosen.pt, chosen.rtp, chosen.rtcp);
                }
                self.joined = true;
                tracing::info!(conference = %self.name, participant = pid, "joined (dial-out)");
                self.set_status(pid, EndpointStatus::Connected);
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
        self.bye_as(pid, Pending::Other)
    }

    /// A BYE to a participant whose response is for `what`.
    fn bye_as(&mut self, pid: u32, what: Pending) {
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
                self.send(dest, reliable, bye, what);
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
        let mut gone = ChangeSet::default();
        for pid in pids {
            self.bye(pid);
            if let Some(p) = self.participants.remove(&pid) {
                self.close_media(pid);
                drop(p);
            }
            if let Ok(c) = self.roster.leave(ParticipantId(pid)) {
                gone.merge(c);
            }
        }
        // The last document says everyone left (user-count 0, inactive), then the
        // subscriptions end (RFC 6665 §4.2.2).
        for i in 0..self.subs.len() {
            let doc = self.roster.render_partial(&mut self.subs[i].view, &gone);
            self.notify_sub(i, Some(doc), true);
        }
        self.subs.clear();
        self.room = None;
        self.floor = None;
        self.chat = None;
        self.out.push(ConfAction::Ended);
        self.env.shared.conferences.remove(&self.name);
    }

    fn after(&mut self, ctx: &mut Context<Self>) {
        self.floor_changed(Some(ctx));
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
        self.bfcp_to = Some(ctx.address().recipient());
        ctx.run_interval(HOUSEKEEPING, |act, ctx| {
            act.housekeeping(Instant::now());
            act.after(ctx);
        });
        if let Origin::Predefined(p) = &self.origin {
            if let Some(end) = p.end {
                match end.duration_since(std::time::SystemTime::now()) {
                    Ok(left) => {
                        ctx.run_later(left, |act, ctx| {
                            act.end("its end time came");
                            act.after(ctx);
                        });
                    }
                    Err(_) => {
                        tracing::info!(conference = %self.name, "end time already past: ignored")
                    }
                }
            }
            let settings = (p.floor == super::floor::FloorMode::HalfDuplex)
                .then(|| FloorSettings::from_secs(p.max_talk_time));
            let targets = p.participants.clone();
            if p.record {
                self.record_listed(&targets);
            }
            self.start_floor(settings);
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
        // A panic (a bug, or the test hook) ends this conference alone: everyone gets a BYE,
        // its resources go, the worker's other conferences and sessions go on. Should ending
        // it panic as well, the actor still stops and `Drop` releases what it holds.
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.on_message(msg, ctx)));
        if run.is_err() {
            tracing::error!(conference = %self.name, "conference actor panicked: conference ended");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.end("its actor panicked");
                self.flush();
            }));
            ctx.stop();
        }
    }
}

impl ConferenceActor {
    fn on_message(&mut self, msg: ToConference, ctx: &mut Context<Self>) {
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
        let id = ParticipantId(msg.id);
        let Ok(mut changes) = self.roster.set_muted(id, msg.muted) else {
            return false;
        };
        if !changes.is_empty() {
            if let Some(room) = &self.room {
                let f = self.floor.as_ref();
                room.mute(msg.id, f.map_or(msg.muted, |f| f.muted(msg.id, msg.muted)));
            }
            if let Ok(c) = self.roster.set_media(id, Self::audio_media(msg.muted)) {
                changes.merge(c);
            }
            self.roster_changed(changes);
        }
        self.after(ctx);
        true
    }
}

// ---- half duplex (decision 0015; the floor itself is in `super::floor`) ---------------------

impl ConferenceActor {
    /// Makes the conference half duplex (before anyone joins).
    fn start_floor(&mut self, settings: Option<FloorSettings>) {
        if let (Some(settings), Some(to), None) = (settings, self.bfcp_to.clone(), &self.floor) {
            let f = Floor::new(&self.env.shared.bfcp, to, settings);
            tracing::info!(conference = %self.name, bfcp_conference = f.conference_id(), "half duplex");
            self.summary.lock().floor = Some(f.summary());
            self.floor = Some(f);
        }
    }

    /// Our answer to an offer with BFCP gets our BFCP stream (the participant may request the
    /// floor); without, the participant is listen-only.
    fn floor_answer(
        &mut self,
        pid: u32,
        offer: &Bytes,
        audio: usize,
        local: &Local,
        r: &mut Message,
    ) {
        let Some(f) = self.floor.as_mut() else {
            return;
        };
        match super::floor::offered(offer).and_then(|i| Some((i, f.join(pid)?))) {
            Some((i, uid)) => {
                let body = super::floor::splice(&r.body, audio, i, &f.section(local.ip, uid));
                r.set_body(body, Some("application/sdp"));
            }
            None => f.leave(Instant::now(), pid),
        }
    }

    /// After the floor changed: the mixer's mutes, the API summary, the talk-time timer.
    fn floor_changed(&mut self, ctx: Option<&mut Context<Self>>) {
        let Some(f) = self.floor.as_mut() else {
            return;
        };
        for pid in f.flush() {
            let api_muted = self.roster.get(ParticipantId(pid)).map(|p| p.muted);
            if let (Some(api_muted), Some(room)) = (api_muted, &self.room) {
                room.mute(pid, f.muted(pid, api_muted));
            }
        }
        self.summary.lock().floor = Some(f.summary());
        if let Some(ctx) = ctx {
            f.rearm(ctx, Instant::now(), |act: &mut Self, ctx| {
                if let Some(f) = act.floor.as_mut() {
                    f.on_timeout(Instant::now());
                }
                act.floor_changed(Some(ctx));
            });
        }
    }
}

impl Handler<FromBfcp> for ConferenceActor {
    type Result = ();

    fn handle(&mut self, msg: FromBfcp, ctx: &mut Context<Self>) {
        if let Some(f) = self.floor.as_mut() {
            f.on_bfcp(Instant::now(), msg);
        }
        self.after(ctx);
    }
}

// ---- group chat (decision 0014 "Group chat"; the fan-out itself is in `super::chat`) --------

impl ConferenceActor {
    /// The conference's chat, opened with its first chat session (or its recording).
    fn chat(&mut self) -> &GroupChat {
        self.chat.get_or_insert_with(|| {
            let shared = &self.env.shared;
            GroupChat::new(
                shared.msrp.clone(),
                shared.config.media_ip.to_string(),
                self.focus.clone(),
                self.name.clone(),
                shared.storage.clone(),
                self.gen.next_u64(),
            )
        })
    }

    /// Our SDP origin for a participant without audio (no room, no RTP port).
    fn chat_local(&mut self) -> Local {
        self.session = self.session.wrapping_add(1);
        Local {
            ip: self.env.shared.config.media_ip,
            port: 0,
            session: self.session,
            version: 1,
        }
    }

    /// Opens `pid`'s chat session: our `m=message` section and the roster's change (a chat
    /// stream; a chat-only participant's audio shown `inactive`).
    fn chat_join(
        &mut self,
        pid: u32,
        aor: &str,
        offer: &chat::ChatOffer,
        chat_only: bool,
    ) -> Result<(String, ChangeSet), String> {
        let section = self.chat().join(pid, aor.to_string(), offer)?;
        let id = ParticipantId(pid);
        let mut changes = ChangeSet::default();
        if chat_only {
            let mut m = Self::audio_media(false);
            m.status = MediaStatus::Inactive;
            changes.merge(self.roster.set_media(id, m).unwrap_or_default());
        }
        let m = Media {
            id: 3,
            kind: MediaKind::Chat,
            label: None,
            src_id: None,
            status: MediaStatus::SendRecv,
        };
        changes.merge(self.roster.set_media(id, m).unwrap_or_default());
        tracing::info!(conference = %self.name, participant = pid, "chat session opened");
        Ok((section, changes))
    }

    /// The chat stream of a re-offer: kept (same URI) when `pid` has one, opened when new,
    /// closed when the re-offer has none; the index and our section to answer with.
    fn chat_reoffer(&mut self, pid: u32, offer: &Bytes) -> Option<(usize, String)> {
        let Some(o) = chat::offered(offer) else {
            if let Some(chat) = &self.chat {
                chat.leave(pid);
            }
            return None;
        };
        if let Some(s) = self.chat.as_ref().and_then(|c| c.section_of(pid, &o)) {
            return Some((o.index, s));
        }
        let aor = self.roster.get(ParticipantId(pid))?.uri.clone();
        match self.chat_join(pid, &aor, &o, false) {
            Ok((s, c)) => {
                self.roster_changed(c);
                Some((o.index, s))
            }
            Err(e) => {
                tracing::warn!(conference = %self.name, error = %e, "chat declined");
                None
            }
        }
    }

    /// A re-INVITE of a participant without audio: its chat only (adding audio later is not
    /// served: 488).
    fn reinvite_chat_only(&mut self, pid: u32, tx: ServerTxId, req: Message) {
        if sdp::choose(&req.body).is_ok() {
            return self.refuse(
                tx,
                &req,
                488,
                "Audio Cannot Be Added To A Chat-Only Participant",
            );
        }
        let Some((index, section)) = self.chat_reoffer(pid, &req.body) else {
            return self.refuse(tx, &req, 488, "No Chat Stream");
        };
        let session = self.session;
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        p.sdp_version += 1;
        let local = Local {
            ip: self.env.shared.config.media_ip,
            port: 0,
            session,
            version: p.sdp_version,
        };
        if let Some(d) = p.dialog.as_mut() {
            d.refresh_target(&req);
        }
        let mut r = self.ok(&req, None);
        r.set_body(
            sdp::answer(&req.body, None, None, Some((index, &section)), &local),
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

    /// A REFER in `pid`'s dialog naming the storage controller (decision 0013, as for 1-to-1
    /// sessions: `Refer-To: <sip:storage@domain;method=INVITE|BYE>`): the conference chat is
    /// recorded into (no longer recorded into) that participant's network storage; 202, then
    /// the final sipfrag NOTIFY (RFC 3515 §2.4.4). `false`: not a storage REFER.
    fn refer_storage(&mut self, pid: u32, tx: ServerTxId, req: &Message) -> bool {
        let shared = self.env.shared.clone();
        let domains: Vec<&str> = shared.domains.iter().map(String::as_str).collect();
        let cmd = match cpm_engine::record::classify_refer(req, &domains) {
            None => return false,
            Some(Ok(cmd)) => cmd,
            Some(Err(e)) => {
                self.refuse(tx, req, e.status(), e.reason());
                return true;
            }
        };
        let Some(aor) = self.roster.get(ParticipantId(pid)).map(|p| p.uri.clone()) else {
            return false;
        };
        let on = cmd == cpm_engine::record::RecordCommand::Start;
        tracing::info!(conference = %self.name, participant = pid, on, "chat recording");
        self.chat().record(aor, on);
        let mut r = builder::response_to(req, 202, "Accepted");
        r.headers.push(HeaderName::Contact, self.contact.clone());
        self.respond(tx, r);
        let Some(p) = self.participants.get(&pid) else {
            return true;
        };
        let (dest, reliable) = (p.dest, p.reliable);
        let via = self.via(reliable);
        let seq = req.cseq().map_or(0, |c| c.seq);
        let Some(dialog) = self
            .participants
            .get_mut(&pid)
            .and_then(|p| p.dialog.as_mut())
        else {
            return true;
        };
        let n = cpm_engine::record::refer_notify(dialog, via, seq, 200, "OK");
        self.send(dest, reliable, n, Pending::Other);
        true
    }

    /// A predefined conference with `record = true`: its listed participants who are users
    /// of ours own the recording from the start.
    fn record_listed(&mut self, listed: &[String]) {
        let shared = self.env.shared.clone();
        for t in listed {
            let aor = sdp_aor(t);
            if crate::routing::is_local_aor(&shared, &aor) {
                self.chat().record(aor, true);
            }
        }
    }
}
