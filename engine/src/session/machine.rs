//! The [`Session`] state machine: setup with parallel forking, in-dialog relaying with
//! offer/answer, glare, session timers, and the end of the call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::headers::{copy_body, copy_end_to_end, has_sdp, join, set_reason, unsupported_requires};
use super::timer::{self, TimerOffer, TimerRefusal};
use super::{
    Action, Admission, ChargingKind, ChargingRecord, EndReason, MediaReject, NoPolicy, Peer, ReqId,
    SdpRelay, SessionConfig, SessionInfo, SessionPolicy, SessionStart, SessionState, Side,
};
use crate::sip::builder::{response_to_with_tag, tag_of, BranchGen};
use crate::sip::dialog::{is_target_refresh, via_value, Dialog, DialogId};
use crate::sip::hdr::NameAddr;
use crate::sip::transaction::ServerTxId;
use crate::sip::{HeaderName, Headers, Message, Method, StartLine};

const SDP: &str = "application/sdp";

/// The phase of the call as a whole (see the module documentation's diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Connected,
    Ending,
    Ended,
}

/// The session's timers, one slot each (quinn's timer table): the deadline is the minimum.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Timer C style hard limit on setup.
    Setup,
    /// 2xx retransmission / ACK wait toward A.
    AckA,
    /// 2xx retransmission / ACK wait toward B.
    AckB,
    /// Session-Expires ran out.
    Expiry,
    /// Bound on the Ending phase.
    Linger,
}

const TIMERS: usize = 5;

fn ack_timer(side: Side) -> Timer {
    match side {
        Side::A => Timer::AckA,
        Side::B => Timer::AckB,
    }
}

/// Where a branch (one INVITE toward one contact of B) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    /// No final response yet.
    Pending,
    /// CANCEL asked for; no final response yet.
    Cancelled,
    /// Its 2xx won: it is the B side of the session.
    Answered,
    /// It ended with a final response of 300 or more.
    Failed,
    /// It answered 2xx when another had won (or after setup ended): ACKed and BYEd.
    Dropped,
}

#[derive(Debug)]
struct Branch {
    id: ReqId,
    peer: Peer,
    invite: Message,
    state: BranchState,
    /// Its early dialog.
    dialog: Option<Dialog>,
    /// The ACK of its 2xx when it was dropped, re-sent on retransmissions.
    ack: Option<Message>,
}

/// What an INVITE or UPDATE carries for offer/answer (RFC 3264, RFC 3261 §13.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    /// No SDP exchange (UPDATE refresh, OPTIONS, INFO, ...).
    None,
    /// The request carries the offer; the answer comes in the 2xx.
    InRequest,
    /// An INVITE without SDP: the offer comes in the 2xx, the answer in the ACK.
    Late,
}

/// An in-dialog request relayed from `from` to the other side, until its final response.
#[derive(Debug)]
struct Relayed {
    from: Side,
    tx: ServerTxId,
    request: Message,
    out: ReqId,
    out_seq: u32,
    method: Method,
    offer: Offer,
    timer: Option<TimerOffer>,
}

/// A 2xx to an INVITE we sent, repeated until its ACK (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct AwaitAck {
    tx: ServerTxId,
    response: Message,
    cseq: u32,
    interval: Duration,
    /// The next retransmission (none over reliable transports).
    next: Option<Instant>,
    give_up: Instant,
    /// Late offer: the other side's 2xx is ACKed once this ACK brings the answer.
    late: Option<LateAck>,
}

#[derive(Debug, Clone, Copy)]
struct LateAck {
    /// The CSeq number of our INVITE toward the other side.
    invite_seq: u32,
    /// Its id (its 2xx retransmissions get the ACK again).
    id: ReqId,
    /// A re-INVITE (not the initial INVITE): the ACK completes a media change.
    reinvite: bool,
}

/// The ACK we sent for the last 2xx from one side, re-sent on its retransmissions.
#[derive(Debug)]
struct SentAck {
    id: ReqId,
    ack: Message,
}

/// Who sent an in-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    A,
    /// A B branch's dialog (the winner's once connected).
    B(usize),
}

impl Origin {
    fn side(self) -> Side {
        match self {
            Origin::A => Side::A,
            Origin::B(_) => Side::B,
        }
    }
}

/// One 1-to-1 session (B2BUA): A's INVITE forked to B's contacts, then two dialogs relayed to
/// each other. See the [module documentation](super) for the inputs, outputs and states.
///
/// `R` rewrites the SDP bodies (the media plane), `P` is told of every step.
#[derive(Debug)]
pub struct Session<R: SdpRelay, P: SessionPolicy = NoPolicy> {
    cfg: SessionConfig,
    relay: R,
    policy: P,
    gen: BranchGen,
    phase: Phase,
    info: SessionInfo,
    end_reason: Option<EndReason>,
    a_tx: ServerTxId,
    a_invite: Message,
    /// The A dialog's id: A's Call-ID, our tag, A's tag.
    a_id: DialogId,
    b_tag: Bytes,
    peers: [Option<Peer>; 2],
    dialogs: [Option<Dialog>; 2],
    branches: Vec<Branch>,
    winner: Option<usize>,
    best: Option<Message>,
    offer: Offer,
    early_media: Option<usize>,
    setup_timer: Option<TimerOffer>,
    relays: Vec<Relayed>,
    awaiting_ack: [Option<AwaitAck>; 2],
    sent_acks: [Option<SentAck>; 2],
    bye_deferred: [bool; 2],
    timers: [Option<Instant>; TIMERS],
    armed: Option<Instant>,
    next_req: u64,
    actions: VecDeque<Action>,
}

impl<R: SdpRelay, P: SessionPolicy> Session<R, P> {
    /// A session for A's INVITE: checks it (policy, Require, Session-Expires, SDP offer) and
    /// forks it to every contact of B, or answers it at once when it cannot go on.
    pub fn new(
        cfg: SessionConfig,
        start: SessionStart,
        relay: R,
        policy: P,
        now: Instant,
    ) -> Session<R, P> {
        let mut gen = BranchGen::new(start.seed);
        let a_tag = gen.next_tag();
        let b_tag = gen.next_tag();
        let inv = &start.invite;
        let a_id = DialogId {
            call_id: inv.call_id().cloned().unwrap_or_default(),
            local_tag: a_tag,
            remote_tag: inv
                .headers
                .get(&HeaderName::From)
                .and_then(tag_of)
                .unwrap_or_default(),
        };
        let info = SessionInfo {
            call_id: a_id.call_id.clone(),
            b_call_id: start.b_call_id.clone(),
            from: uri_of(inv, HeaderName::From),
            to: uri_of(inv, HeaderName::To),
            state: SessionState::Calling,
            invited: now,
            answered: None,
            ended: None,
            final_status: None,
            store_history: false,
        };
        let a_peer = Peer {
            uri: first_contact(inv).unwrap_or_else(|| info.from.clone()),
            dest: start.source,
            reliable: start.reliable,
        };
        let mut s = Session {
            cfg,
            relay,
            policy,
            gen,
            phase: Phase::Setup,
            info,
            end_reason: None,
            a_tx: start.tx,
            a_invite: start.invite,
            a_id,
            b_tag,
            peers: [Some(a_peer), None],
            dialogs: [None, None],
            branches: Vec::new(),
            winner: None,
            best: None,
            offer: Offer::None,
            early_media: None,
            setup_timer: None,
            relays: Vec::new(),
            awaiting_ack: [None, None],
            sent_acks: [None, None],
            bye_deferred: [false, false],
            timers: [None; TIMERS],
            armed: None,
            next_req: 0,
            actions: VecDeque::new(),
        };
        s.begin(start.contacts, now);
        s.rearm();
        s
    }

    // ---- accessors ---------------------------------------------------------------------

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `on_timer` wants to run next (also announced by [`Action::Timer`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.armed
    }

    /// What the policy and the charging records know of the session.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Whether [`Action::Ended`] was produced.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The media relay.
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// The media relay, mutably (e.g. to release it).
    pub fn relay_mut(&mut self) -> &mut R {
        &mut self.relay
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The dialog of one side (A's once a tagged response went to A; B's once answered).
    pub fn dialog(&self, side: Side) -> Option<&Dialog> {
        self.dialogs[side.idx()].as_ref()
    }

    /// The Call-IDs of the A and B sides: the actor's routing keys for this session.
    pub fn call_ids(&self) -> [&Bytes; 2] {
        [&self.a_id.call_id, &self.info.b_call_id]
    }

    /// Which side a request arriving with one of [`Session::call_ids`] comes from: A's
    /// Call-ID, A's From tag, and our tag or none in To (a CANCEL); or B's Call-ID with our tag
    /// in To. `None`: not this session's (answer [`super::no_dialog`] if no session claims it).
    pub fn matches(&self, req: &Message) -> Option<Side> {
        let call_id = req.call_id()?;
        let from_tag = req
            .headers
            .get(&HeaderName::From)
            .and_then(tag_of)
            .unwrap_or_default();
        let to_tag = req.headers.get(&HeaderName::To).and_then(tag_of);
        if *call_id == self.a_id.call_id
            && from_tag == self.a_id.remote_tag
            && to_tag.as_ref().is_none_or(|t| *t == self.a_id.local_tag)
        {
            return Some(Side::A);
        }
        if *call_id == self.info.b_call_id && to_tag.as_ref() == Some(&self.b_tag) {
            return Some(Side::B);
        }
        None
    }

    // ---- inputs ------------------------------------------------------------------------

    /// A new request (its server transaction `tx`) routed to this session: an in-dialog
    /// request from either side (BYE, re-INVITE, UPDATE, OPTIONS, INFO, ...). A request of no
    /// dialog of this session is answered 481.
    pub fn on_request(&mut self, tx: ServerTxId, req: Message, now: Instant) {
        self.handle_request(tx, req, now);
        self.rearm();
    }

    /// A CANCEL (its own transaction `cancel_tx`) and the INVITE transaction it matched
    /// (RFC 3261 §9.2): A's INVITE before the answer, or a relayed re-INVITE.
    pub fn on_cancel(
        &mut self,
        cancel_tx: ServerTxId,
        invite_tx: Option<ServerTxId>,
        req: Message,
        now: Instant,
    ) {
        self.handle_cancel(cancel_tx, invite_tx, req, now);
        self.rearm();
    }

    /// The ACK of a 2xx we sent (the layer's `RequestOutcome::Ack2xx`).
    pub fn on_ack(&mut self, ack: Message, now: Instant) {
        self.handle_ack(ack, now);
        self.rearm();
    }

    /// A response to request `id` (or the 408/503 the layer synthesized for it).
    pub fn on_response(&mut self, id: ReqId, resp: Message, now: Instant) {
        self.handle_response(id, resp, now);
        self.rearm();
    }

    /// The time reached the deadline of [`Action::Timer`] (or later).
    pub fn on_timer(&mut self, now: Instant) {
        if self.phase != Phase::Ended {
            self.fire_timers(now);
        }
        self.rearm();
    }

    /// The media plane saw no RTP for its inactivity timeout: BYE to both sides.
    pub fn on_media_inactive(&mut self, now: Instant) {
        if self.phase == Phase::Connected {
            self.terminate(EndReason::MediaInactive, &[Side::A, Side::B], now);
        }
        self.rearm();
    }

    /// Produces an interim charging record now (the actor's configurable interval).
    pub fn interim(&mut self, now: Instant) {
        if self.phase == Phase::Connected {
            self.charging(ChargingKind::Interim, now);
        }
    }

    // ---- setup -------------------------------------------------------------------------

    fn begin(&mut self, contacts: Vec<Peer>, now: Instant) {
        let inv = self.a_invite.clone();
        if let Err(e) = inv.from().and(inv.to()).and(inv.cseq().map(|_| ())) {
            return self.reject_setup(400, &e.reason(), Headers::new(), now);
        }
        match self.policy.invite_received(&self.info, &inv) {
            Admission::Accept { store_history } => self.info.store_history = store_history,
            Admission::Reject { status, reason } => {
                return self.reject_setup(status, &reason, Headers::new(), now)
            }
        }
        let unsupported = unsupported_requires(&inv);
        if !unsupported.is_empty() {
            let mut h = Headers::new();
            h.push(HeaderName::Unsupported, join(&unsupported));
            return self.reject_setup(420, "Bad Extension", h, now);
        }
        match timer::check_request(&inv, self.cfg.min_se, self.cfg.session_expires) {
            Ok(t) => self.setup_timer = t,
            Err(refusal) => {
                let (code, reason, h) = self.timer_refusal(refusal);
                return self.reject_setup(code, &reason, h, now);
            }
        }
        let body = if has_sdp(&inv) {
            match self.relay.offer(Side::A, &inv.body) {
                Ok(b) => {
                    self.offer = Offer::InRequest;
                    Some(b)
                }
                Err(rej) => {
                    let (code, h) = reject_headers(&rej);
                    return self.reject_setup(code, &rej.reason, h, now);
                }
            }
        } else if !inv.body.is_empty() {
            let mut h = Headers::new();
            h.push(HeaderName::Accept, SDP);
            return self.reject_setup(415, "Unsupported Media Type", h, now);
        } else {
            self.offer = Offer::Late;
            None
        };
        if contacts.is_empty() {
            self.rollback_setup_offer();
            return self.reject_setup(480, "Temporarily Unavailable", Headers::new(), now);
        }
        for peer in contacts {
            self.fork(peer, body.as_ref());
        }
        self.set_timer(Timer::Setup, Some(now + self.cfg.setup_limit));
    }

    /// The INVITE toward one contact of B: a new request of our B-side UAC (decision 0008).
    fn fork(&mut self, peer: Peer, body: Option<&Bytes>) {
        let inv = &self.a_invite;
        let branch = self.gen.next_branch();
        let mut headers = Headers::new();
        headers.push(
            HeaderName::Via,
            via_value(peer.reliable, &self.cfg.local, &branch),
        );
        let mf = inv.max_forwards().ok().flatten().unwrap_or(70);
        headers.push(HeaderName::MaxForwards, mf.saturating_sub(1).to_string());
        headers.push(HeaderName::From, with_tag(inv, &self.b_tag));
        if let Some(to) = inv.headers.get(&HeaderName::To) {
            headers.push(HeaderName::To, to.clone());
        }
        headers.push(HeaderName::CallId, self.info.b_call_id.clone());
        headers.push(HeaderName::CSeq, "1 INVITE");
        headers.push(HeaderName::Contact, self.contact(peer.reliable));
        headers.push(HeaderName::ContentLength, "0");
        let mut req = Message {
            start: StartLine::Request {
                method: Method::Invite,
                uri: peer.uri.clone(),
                version: Bytes::from_static(b"SIP/2.0"),
            },
            headers,
            body: Bytes::new(),
        };
        copy_end_to_end(inv, &mut req);
        timer::apply_to_request(self.setup_timer, &mut req);
        if let Some(b) = body {
            req.set_body(b.clone(), Some(SDP));
        }
        let id = self.next_id();
        self.branches.push(Branch {
            id,
            peer: peer.clone(),
            invite: req.clone(),
            state: BranchState::Pending,
            dialog: None,
            ack: None,
        });
        self.send(id, Side::B, &peer, req);
    }

    fn branch_response(&mut self, i: usize, resp: Message, now: Instant) {
        match resp.status().unwrap_or(500) {
            0..=100 => {}
            101..=199 => self.branch_provisional(i, resp),
            200..=299 => self.branch_answered(i, resp, now),
            _ => self.branch_failed(i, resp, now),
        }
    }

    /// 180/183 from a branch: its early dialog, relayed to A with our tag (one A dialog).
    fn branch_provisional(&mut self, i: usize, resp: Message) {
        if self.phase != Phase::Setup || self.branches[i].state != BranchState::Pending {
            return;
        }
        let branch = &mut self.branches[i];
        match &mut branch.dialog {
            Some(d) if d.matches_response(&resp) => d.refresh_target(&resp),
            Some(_) => {} // another fork behind this contact: the first early dialog is kept
            None => branch.dialog = Dialog::uac(&branch.invite, &resp).ok(),
        }
        let mut r = self.to_a(&resp);
        let early_sdp = has_sdp(&resp)
            && self.offer == Offer::InRequest
            && self.early_media.is_none_or(|k| k == i);
        let mut first_early_media = false;
        if early_sdp {
            match self.relay.answer(Side::B, &resp.body) {
                Ok(b) => {
                    r.set_body(b, Some(SDP));
                    first_early_media = self.early_media.is_none();
                    self.early_media = Some(i);
                }
                Err(rej) => tracing::debug!(reason = %rej.reason, "early answer not relayed"),
            }
        }
        self.a_dialog_from(&r);
        self.info.state = SessionState::Early;
        if first_early_media {
            self.policy.early_media(&self.info);
        }
        self.respond(self.a_tx, r);
    }

    /// A 2xx from a branch: the first one wins and goes to A; any other is ACKed and BYEd.
    fn branch_answered(&mut self, i: usize, resp: Message, now: Instant) {
        if self.winner.is_some() || self.phase != Phase::Setup {
            if self.winner != Some(i) {
                self.drop_branch(i, &resp, now);
            }
            return;
        }
        if !matches!(
            self.branches[i].state,
            BranchState::Pending | BranchState::Cancelled
        ) {
            return;
        }
        let branch = &mut self.branches[i];
        let dialog = match branch.dialog.take() {
            Some(mut d) if d.matches_response(&resp) => {
                d.confirm(&resp);
                Ok(d)
            }
            _ => Dialog::uac(&branch.invite, &resp),
        };
        let Ok(dialog) = dialog else {
            // No To tag: no dialog to ACK or BYE in; count the branch as failed.
            branch.state = BranchState::Failed;
            let bad = response_to_with_tag(&branch.invite, 502, "Bad Gateway", None);
            self.record_failure(bad);
            return self.check_setup_done(now);
        };
        let media = match self.offer {
            Offer::InRequest => self.media_from(Side::B, &resp, false),
            _ => self.media_from(Side::B, &resp, true),
        };
        let body = match media {
            Ok(b) => b,
            Err(rej) => {
                self.branches[i].dialog = Some(dialog);
                self.drop_branch(i, &resp, now);
                let mut bad =
                    response_to_with_tag(&self.branches[i].invite, rej.status, &rej.reason, None);
                if let Some(s) = rej.retry_after {
                    bad.headers.push(HeaderName::RetryAfter, s.to_string());
                }
                self.record_failure(bad);
                return self.check_setup_done(now);
            }
        };
        self.winner = Some(i);
        self.branches[i].state = BranchState::Answered;
        self.cancel_branches();
        let peer = self.branches[i].peer.clone();
        let id = self.branches[i].id;
        let seq = self.branches[i].invite.cseq().map_or(1, |c| c.seq);
        self.peers[Side::B.idx()] = Some(peer.clone());
        self.dialogs[Side::B.idx()] = Some(dialog);
        let late = match self.offer {
            Offer::Late => Some(LateAck {
                invite_seq: seq,
                id,
                reinvite: false,
            }),
            _ => {
                self.send_ack(Side::B, id, seq, None);
                None
            }
        };
        let mut r = self.to_a(&resp);
        let interval = timer::on_2xx(self.setup_timer, &resp, &mut r);
        r.set_body(body, Some(SDP));
        self.a_dialog_from(&r);
        self.set_timer(Timer::Setup, None);
        self.set_expiry(interval, now);
        self.phase = Phase::Connected;
        self.info.state = SessionState::Connected;
        self.info.answered = Some(now);
        self.info.final_status = resp.status();
        let a_seq = self.a_invite.cseq().map_or(0, |c| c.seq);
        self.respond_2xx(Side::A, self.a_tx, r, a_seq, late, now);
        self.policy.answered(&self.info);
        self.charging(ChargingKind::Start, now);
    }

    /// ACK and BYE a 2xx nobody wants (another branch won, or setup is over).
    fn drop_branch(&mut self, i: usize, resp: &Message, now: Instant) {
        let branch = &mut self.branches[i];
        if branch.state == BranchState::Dropped {
            if let Some(ack) = branch.ack.clone() {
                let peer = branch.peer.clone();
                self.push_ack(Side::B, &peer, ack);
            }
            return;
        }
        let dialog = match branch.dialog.take() {
            Some(mut d) if d.matches_response(resp) => {
                d.confirm(resp);
                Ok(d)
            }
            _ => Dialog::uac(&branch.invite, resp),
        };
        branch.state = BranchState::Dropped;
        let Ok(mut dialog) = dialog else {
            return self.maybe_finish(now);
        };
        let peer = branch.peer.clone();
        let seq = branch.invite.cseq().map_or(1, |c| c.seq);
        let ack = dialog.ack(seq, self.via(&peer));
        self.branches[i].ack = Some(ack.clone());
        self.push_ack(Side::B, &peer, ack);
        let bye = dialog.request(Method::Bye, self.via(&peer));
        let id = self.next_id();
        self.send(id, Side::B, &peer, bye);
        self.maybe_finish(now);
    }

    fn branch_failed(&mut self, i: usize, resp: Message, now: Instant) {
        let branch = &mut self.branches[i];
        if !matches!(branch.state, BranchState::Pending | BranchState::Cancelled) {
            return;
        }
        branch.state = BranchState::Failed;
        branch.dialog = None;
        if self.phase != Phase::Setup {
            return self.maybe_finish(now);
        }
        self.record_failure(resp);
        self.check_setup_done(now);
    }

    /// Keeps the best final response of a failed branch (RFC 3261 §16.7 step 6); a 6xx stops
    /// the forking (§16.7 step 5).
    fn record_failure(&mut self, mut resp: Message) {
        let code = resp.status().unwrap_or(500);
        if code == 503 {
            // A callee's 503 is not ours: relayed upstream it would read "this server is down".
            if let StartLine::Response { code, .. } = &mut resp.start {
                *code = 480;
            }
            set_reason(&mut resp, Bytes::from_static(b"Temporarily Unavailable"));
        }
        if code >= 600 {
            self.cancel_branches();
        }
        if better(&resp, self.best.as_ref()) {
            self.best = Some(resp);
        }
    }

    fn check_setup_done(&mut self, now: Instant) {
        let decided = self.best.as_ref().is_some_and(|b| b.status() >= Some(600))
            || !self
                .branches
                .iter()
                .any(|b| b.state == BranchState::Pending);
        if self.phase != Phase::Setup || self.winner.is_some() || !decided {
            return;
        }
        let best = self.best.take().unwrap_or_else(|| {
            response_to_with_tag(&self.a_invite, 480, "Temporarily Unavailable", None)
        });
        let r = self.to_a(&best);
        let code = r.status().unwrap_or(480);
        self.rollback_setup_offer();
        self.respond(self.a_tx, r);
        self.info.final_status = Some(code);
        self.set_timer(Timer::Setup, None);
        self.enter_ending(EndReason::Rejected(code), now);
        self.maybe_finish(now);
    }

    /// Ends the setup: `code` to A's INVITE, CANCEL to every pending branch.
    fn abort_setup(&mut self, reason: EndReason, code: u16, text: &str, now: Instant) {
        let r = self.a_final(code, text);
        self.respond(self.a_tx, r);
        self.info.final_status = Some(code);
        self.cancel_branches();
        self.rollback_setup_offer();
        self.set_timer(Timer::Setup, None);
        self.enter_ending(reason, now);
        self.maybe_finish(now);
    }

    /// Refuses A's INVITE before anything was forwarded.
    fn reject_setup(&mut self, code: u16, reason: &str, extra: Headers, now: Instant) {
        let mut r = self.a_final(code, reason);
        for h in extra.iter() {
            r.headers.push(h.name.clone(), h.value.clone());
        }
        self.respond(self.a_tx, r);
        self.info.final_status = Some(code);
        self.enter_ending(EndReason::Rejected(code), now);
        self.maybe_finish(now);
    }

    fn cancel_branches(&mut self) {
        for b in &mut self.branches {
            if b.state == BranchState::Pending {
                b.state = BranchState::Cancelled;
                self.actions.push_back(Action::Cancel { id: b.id });
            }
        }
    }

    fn rollback_setup_offer(&mut self) {
        if self.offer == Offer::InRequest {
            self.relay.rollback();
        }
    }

    // ---- requests and responses in the dialogs ----------------------------------------

    fn handle_request(&mut self, tx: ServerTxId, req: Message, now: Instant) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        if method == Method::Ack {
            return self.handle_ack(req, now);
        }
        let Some(origin) = self.origin_of(&req) else {
            return self.respond(tx, super::no_dialog(&req));
        };
        let side = origin.side();
        match self.phase {
            Phase::Ending | Phase::Ended => {
                let r = if method == Method::Bye {
                    reply(&req, 200, "OK")
                } else {
                    super::no_dialog(&req)
                };
                self.respond(tx, r)
            }
            Phase::Setup => {
                if origin == Origin::A && method == Method::Bye {
                    // RFC 3261 §15: the caller may end an early dialog with BYE.
                    self.respond(tx, reply(&req, 200, "OK"));
                    self.abort_setup(EndReason::Cancelled, 487, "Request Terminated", now)
                } else {
                    // Forking makes the far end ambiguous, and without PRACK the initial
                    // offer/answer is not complete (RFC 3311 §5.2).
                    let r = self.retry_later(&req);
                    self.respond(tx, r)
                }
            }
            Phase::Connected => {
                if matches!(origin, Origin::B(i) if Some(i) != self.winner) {
                    return self.respond(tx, super::no_dialog(&req));
                }
                let Some(dialog) = self.dialogs[side.idx()].as_mut() else {
                    return self.respond(tx, super::no_dialog(&req));
                };
                if let Err(e) = dialog.check_request(&req) {
                    return self.respond(tx, reply(&req, e.status(), &e.reason()));
                }
                match method {
                    Method::Bye => {
                        self.respond(tx, reply(&req, 200, "OK"));
                        self.terminate(EndReason::Bye(side), &[side.other()], now)
                    }
                    Method::Invite | Method::Update => self.offer_request(side, tx, req),
                    _ => self.forward(side, tx, req, Offer::None, None, None),
                }
            }
        }
    }

    /// A re-INVITE or UPDATE from `from`: glare (RFC 3261 §14.2, RFC 3311 §5.2), session
    /// timer (RFC 4028), and its offer through the media plane.
    fn offer_request(&mut self, from: Side, tx: ServerTxId, req: Message) {
        let is_invite = req.method() == Some(&Method::Invite);
        if is_invite || has_sdp(&req) {
            let pending = |s: Side| {
                self.relays
                    .iter()
                    .any(|r| r.from == s && r.offer != Offer::None)
            };
            let (mine, theirs) = (pending(from), pending(from.other()));
            if mine {
                // Its own earlier offer is still with us (§14.2: 500 with Retry-After).
                let r = self.retry_later(&req);
                return self.respond(tx, r);
            }
            if theirs {
                // Our request toward `from` is pending: glare.
                return self.respond(tx, reply(&req, 491, "Request Pending"));
            }
        }
        let t = match timer::check_request(&req, self.cfg.min_se, self.cfg.session_expires) {
            Ok(t) => t,
            Err(refusal) => {
                let (code, reason, h) = self.timer_refusal(refusal);
                let mut r = reply(&req, code, &reason);
                for x in h.iter() {
                    r.headers.push(x.name.clone(), x.value.clone());
                }
                return self.respond(tx, r);
            }
        };
        let (offer, body) = if has_sdp(&req) {
            match self.relay.offer(from, &req.body) {
                Ok(b) => (Offer::InRequest, Some(b)),
                Err(rej) => {
                    let mut r = reply(&req, rej.status, &rej.reason);
                    if let Some(s) = rej.retry_after {
                        r.headers.push(HeaderName::RetryAfter, s.to_string());
                    }
                    return self.respond(tx, r);
                }
            }
        } else if !req.body.is_empty() {
            let mut r = reply(&req, 415, "Unsupported Media Type");
            r.headers.push(HeaderName::Accept, SDP);
            return self.respond(tx, r);
        } else if is_invite {
            (Offer::Late, None)
        } else {
            (Offer::None, None)
        };
        self.forward(from, tx, req, offer, body, t);
    }

    /// Relays an in-dialog request from `from` to the other side. `body` is the rewritten
    /// offer; without one the body crosses unchanged.
    fn forward(
        &mut self,
        from: Side,
        tx: ServerTxId,
        req: Message,
        offer: Offer,
        body: Option<Bytes>,
        timer_offer: Option<TimerOffer>,
    ) {
        let to = from.other();
        let (Some(peer), Some(_)) = (self.peer(to), self.dialogs[to.idx()].as_ref()) else {
            return self.respond(tx, super::no_dialog(&req));
        };
        let Some(method) = req.method().cloned() else {
            return;
        };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[to.idx()].as_mut() else {
            return;
        };
        let mut out = dialog.request(method.clone(), via);
        let out_seq = dialog.local_seq().unwrap_or(1);
        copy_end_to_end(&req, &mut out);
        timer::apply_to_request(timer_offer, &mut out);
        match body {
            Some(b) => out.set_body(b, Some(SDP)),
            None => copy_body(&req, &mut out),
        }
        let id = self.next_id();
        self.relays.push(Relayed {
            from,
            tx,
            request: req,
            out: id,
            out_seq,
            method,
            offer,
            timer: timer_offer,
        });
        self.send(id, to, &peer, out);
    }

    fn handle_response(&mut self, id: ReqId, resp: Message, now: Instant) {
        let code = resp.status().unwrap_or(0);
        if (200..300).contains(&code) {
            // A retransmitted 2xx we ACKed already (§13.2.2.4): the same ACK again.
            for side in [Side::A, Side::B] {
                if let Some(sent) = self.sent_acks[side.idx()].as_ref().filter(|s| s.id == id) {
                    let ack = sent.ack.clone();
                    if let Some(peer) = self.peer(side) {
                        self.push_ack(side, &peer, ack);
                    }
                    return;
                }
            }
        }
        if let Some(i) = self.branches.iter().position(|b| b.id == id) {
            return self.branch_response(i, resp, now);
        }
        let Some(p) = self.relays.iter().position(|r| r.out == id) else {
            return; // a BYE's response, or a request the session forgot
        };
        if code < 200 {
            let rel = &self.relays[p];
            if code > 100 && rel.method == Method::Invite {
                let r = self.reply_from(rel.from, &rel.request, &resp);
                let tx = rel.tx;
                self.respond(tx, r);
            }
            return;
        }
        let rel = self.relays.remove(p);
        if code < 300 {
            self.relayed_2xx(rel, resp, now);
        } else {
            self.relayed_failure(rel, resp, now);
        }
    }

    fn relayed_2xx(&mut self, rel: Relayed, resp: Message, now: Instant) {
        let (x, y) = (rel.from, rel.from.other());
        if is_target_refresh(&rel.method) {
            if let Some(d) = self.dialogs[y.idx()].as_mut() {
                d.refresh_target(&resp);
            }
        }
        let is_invite = rel.method == Method::Invite;
        let mut r = self.reply_from(x, &rel.request, &resp);
        let media = match rel.offer {
            Offer::InRequest => self.media_from(y, &resp, false).map(Some),
            Offer::Late => self.media_from(y, &resp, true).map(Some),
            Offer::None => {
                copy_body(&resp, &mut r);
                Ok(None)
            }
        };
        match media {
            Ok(Some(b)) => r.set_body(b, Some(SDP)),
            Ok(None) => {}
            Err(rej) => {
                // The far side accepted what we cannot relay: refuse to `x`, then end.
                if is_invite {
                    self.send_ack(y, rel.out, rel.out_seq, None);
                }
                if rel.offer == Offer::InRequest {
                    self.relay.rollback();
                }
                let mut fail = reply(&rel.request, rej.status, &rej.reason);
                if let Some(s) = rej.retry_after {
                    fail.headers.push(HeaderName::RetryAfter, s.to_string());
                }
                self.respond(rel.tx, fail);
                return self.terminate(EndReason::MediaFailure, &[Side::A, Side::B], now);
            }
        }
        if matches!(rel.method, Method::Invite | Method::Update) {
            let interval = timer::on_2xx(rel.timer, &resp, &mut r);
            self.set_expiry(interval, now);
        }
        if is_invite {
            let late = (rel.offer == Offer::Late).then_some(LateAck {
                invite_seq: rel.out_seq,
                id: rel.out,
                reinvite: true,
            });
            if late.is_none() {
                self.send_ack(y, rel.out, rel.out_seq, None);
            }
            let seq = rel.request.cseq().map_or(0, |c| c.seq);
            self.respond_2xx(x, rel.tx, r, seq, late, now);
        } else {
            self.respond(rel.tx, r);
        }
        if rel.offer == Offer::InRequest {
            self.policy.media_changed(&self.info, x);
        }
    }

    fn relayed_failure(&mut self, rel: Relayed, resp: Message, now: Instant) {
        if rel.offer == Offer::InRequest {
            self.relay.rollback();
        }
        let r = self.reply_from(rel.from, &rel.request, &resp);
        self.respond(rel.tx, r);
        if matches!(resp.status(), Some(481 | 408)) {
            // RFC 5057 §5.1: the far side's dialog is gone.
            let gone = rel.from.other();
            self.terminate(EndReason::PeerGone(gone), &[rel.from], now);
        }
    }

    fn handle_cancel(
        &mut self,
        cancel_tx: ServerTxId,
        invite_tx: Option<ServerTxId>,
        req: Message,
        now: Instant,
    ) {
        if invite_tx.is_some() && invite_tx == Some(self.a_tx) {
            // §9.2: the 200 to the CANCEL carries the To tag of the INVITE's responses.
            let ok = response_to_with_tag(&req, 200, "OK", Some(self.a_tag()));
            self.respond(cancel_tx, ok);
            if self.phase == Phase::Setup {
                self.abort_setup(EndReason::Cancelled, 487, "Request Terminated", now);
            }
            return;
        }
        if let Some(rel) = self
            .relays
            .iter()
            .find(|r| invite_tx == Some(r.tx) && r.method == Method::Invite)
        {
            let id = rel.out;
            self.respond(cancel_tx, reply(&req, 200, "OK"));
            // The far side's 487 is relayed as the re-INVITE's answer.
            self.actions.push_back(Action::Cancel { id });
            return;
        }
        self.respond(cancel_tx, super::no_dialog(&req));
    }

    fn handle_ack(&mut self, ack: Message, now: Instant) {
        let Some(origin) = self.origin_of(&ack) else {
            return;
        };
        let x = origin.side();
        let seq = ack.cseq().map(|c| c.seq).ok();
        let slot = &mut self.awaiting_ack[x.idx()];
        if slot.as_ref().is_none_or(|a| Some(a.cseq) != seq) {
            return;
        }
        let Some(waited) = slot.take() else { return };
        self.set_timer(ack_timer(x), None);
        if let Some(late) = waited.late {
            // The answer to the other side's offer (in its 2xx) is in this ACK.
            let y = x.other();
            let answer = if has_sdp(&ack) {
                self.relay.answer(x, &ack.body)
            } else {
                Err(missing("No Answer In ACK"))
            };
            match answer {
                Ok(b) => {
                    self.send_ack(y, late.id, late.invite_seq, Some(b));
                    if late.reinvite {
                        self.policy.media_changed(&self.info, x);
                    }
                }
                Err(_) => {
                    self.send_ack(y, late.id, late.invite_seq, None);
                    self.terminate(EndReason::MediaFailure, &[Side::A, Side::B], now);
                }
            }
        }
        if std::mem::take(&mut self.bye_deferred[x.idx()]) {
            self.send_bye(x);
            self.maybe_finish(now);
        }
    }

    // ---- the end -----------------------------------------------------------------------

    /// Ends a connected session: BYE to `bye` (deferred while our 2xx to that side waits for
    /// its ACK, RFC 3261 §15), 487 to every request still being relayed.
    fn terminate(&mut self, reason: EndReason, bye: &[Side], now: Instant) {
        if matches!(self.phase, Phase::Ending | Phase::Ended) {
            return;
        }
        self.enter_ending(reason, now);
        self.set_timer(Timer::Setup, None);
        self.set_timer(Timer::Expiry, None);
        for rel in std::mem::take(&mut self.relays) {
            self.respond(rel.tx, reply(&rel.request, 487, "Request Terminated"));
        }
        for &side in bye {
            if self.awaiting_ack[side.idx()].is_some() {
                self.bye_deferred[side.idx()] = true;
            } else {
                self.send_bye(side);
            }
        }
        self.maybe_finish(now);
    }

    fn send_bye(&mut self, side: Side) {
        let Some(peer) = self.peer(side) else { return };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[side.idx()].as_mut() else {
            return;
        };
        let bye = dialog.request(Method::Bye, via);
        let id = self.next_id();
        self.send(id, side, &peer, bye);
    }

    fn enter_ending(&mut self, reason: EndReason, now: Instant) {
        self.phase = Phase::Ending;
        self.end_reason = Some(reason);
        self.info.state = SessionState::Ending;
        self.info.ended = Some(now);
    }

    /// Ends for good once no branch owes a final response and no BYE waits for an ACK;
    /// otherwise at the latest 64*T1 from now.
    fn maybe_finish(&mut self, now: Instant) {
        if self.phase != Phase::Ending {
            return;
        }
        let waiting = self
            .branches
            .iter()
            .any(|b| matches!(b.state, BranchState::Pending | BranchState::Cancelled))
            || self.bye_deferred.iter().any(|d| *d);
        if !waiting {
            self.finish(now);
        } else if self.timers[Timer::Linger as usize].is_none() {
            self.set_timer(Timer::Linger, Some(now + self.cfg.t1 * 64));
        }
    }

    fn finish(&mut self, now: Instant) {
        for side in [Side::A, Side::B] {
            if std::mem::take(&mut self.bye_deferred[side.idx()]) {
                self.send_bye(side);
            }
        }
        self.phase = Phase::Ended;
        self.info.state = SessionState::Ended;
        self.timers = [None; TIMERS];
        self.awaiting_ack = [None, None];
        let reason = self.end_reason.unwrap_or(EndReason::Cancelled);
        self.charging(ChargingKind::Stop, now);
        self.policy.ended(&self.info, reason);
        self.actions.push_back(Action::Ended(reason));
    }

    // ---- timers ------------------------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        if self.due(Timer::Setup, now) && self.phase == Phase::Setup {
            self.abort_setup(EndReason::SetupTimeout, 408, "Request Timeout", now);
        }
        for side in [Side::A, Side::B] {
            if self.due(ack_timer(side), now) {
                self.retransmit_2xx(side, now);
            }
        }
        if self.due(Timer::Expiry, now) {
            self.terminate(EndReason::SessionExpired, &[Side::A, Side::B], now);
        }
        if self.due(Timer::Linger, now) && self.phase == Phase::Ending {
            self.finish(now);
        }
    }

    /// Whether timer `t` is due; a due timer is cleared.
    fn due(&mut self, t: Timer, now: Instant) -> bool {
        let slot = &mut self.timers[t as usize];
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            return true;
        }
        false
    }

    /// RFC 3261 §13.3.1.4: the 2xx again at T1, 2T1, ... capped at T2; no ACK within 64*T1
    /// ends the session with BYE.
    fn retransmit_2xx(&mut self, side: Side, now: Instant) {
        let t2 = self.cfg.t2;
        let Some(w) = self.awaiting_ack[side.idx()].as_mut() else {
            return;
        };
        if now >= w.give_up {
            self.awaiting_ack[side.idx()] = None;
            if std::mem::take(&mut self.bye_deferred[side.idx()]) {
                self.send_bye(side);
                return self.maybe_finish(now);
            }
            return self.terminate(EndReason::NoAck, &[Side::A, Side::B], now);
        }
        if w.next.is_some_and(|n| n <= now) {
            w.interval = (w.interval * 2).min(t2);
            w.next = Some(now + w.interval);
            let (tx, r) = (w.tx, w.response.clone());
            self.respond(tx, r);
        }
        self.arm_ack_timer(side);
    }

    fn arm_ack_timer(&mut self, side: Side) {
        let at = self.awaiting_ack[side.idx()]
            .as_ref()
            .map(|w| w.next.map_or(w.give_up, |n| n.min(w.give_up)));
        self.set_timer(ack_timer(side), at);
    }

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        self.timers[t as usize] = at;
    }

    fn set_expiry(&mut self, interval: Option<u32>, now: Instant) {
        let at = interval.map(|s| now + Duration::from_secs(u64::from(s)));
        self.set_timer(Timer::Expiry, at);
    }

    /// Announces the next deadline when it changed.
    fn rearm(&mut self) {
        if self.phase == Phase::Ended {
            return;
        }
        let next = self.timers.iter().flatten().min().copied();
        if next != self.armed {
            self.armed = next;
            self.actions.push_back(Action::Timer(next));
        }
    }

    // ---- building blocks ---------------------------------------------------------------

    /// The dialog (and branch) a request belongs to.
    fn origin_of(&self, req: &Message) -> Option<Origin> {
        let id = DialogId::of_request(req)?;
        if id == self.a_id {
            return Some(Origin::A);
        }
        if id.call_id != self.info.b_call_id || id.local_tag != self.b_tag {
            return None;
        }
        if let (Some(w), Some(d)) = (self.winner, self.dialogs[Side::B.idx()].as_ref()) {
            if d.id() == &id {
                return Some(Origin::B(w));
            }
        }
        self.branches
            .iter()
            .position(|b| b.dialog.as_ref().is_some_and(|d| d.id() == &id))
            .map(Origin::B)
    }

    /// The offer or answer in a response from `from`, rewritten for the other side.
    fn media_from(
        &mut self,
        from: Side,
        resp: &Message,
        is_offer: bool,
    ) -> Result<Bytes, MediaReject> {
        if !has_sdp(resp) {
            return Err(missing(if is_offer {
                "No Offer In 2xx"
            } else {
                "No Answer In 2xx"
            }));
        }
        if is_offer {
            self.relay.offer(from, &resp.body)
        } else {
            self.relay.answer(from, &resp.body)
        }
    }

    /// A response to A's INVITE from a B branch's response: status, reason and end-to-end
    /// fields relayed, our To tag, our Contact (below 300).
    fn to_a(&self, resp: &Message) -> Message {
        let code = resp.status().unwrap_or(500);
        let mut r = response_to_with_tag(&self.a_invite, code, "", Some(self.a_tag()));
        relay_reason(resp, &mut r);
        copy_end_to_end(resp, &mut r);
        if code < 300 {
            let reliable = self.peer(Side::A).is_some_and(|p| p.reliable);
            r.headers.push(HeaderName::Contact, self.contact(reliable));
        }
        r
    }

    /// A response to `req` (received from `to`) relaying `resp`.
    fn reply_from(&self, to: Side, req: &Message, resp: &Message) -> Message {
        let code = resp.status().unwrap_or(500);
        let mut r = response_to_with_tag(req, code, "", None);
        relay_reason(resp, &mut r);
        copy_end_to_end(resp, &mut r);
        let refresh = req.method().is_some_and(is_target_refresh);
        if code < 300 && refresh {
            if let Some(d) = self.dialogs[to.idx()].as_ref() {
                r.headers
                    .push(HeaderName::Contact, d.local_contact().clone());
            }
        }
        r
    }

    /// Our tag toward A (hex digits from [`BranchGen::next_tag`]).
    fn a_tag(&self) -> &str {
        std::str::from_utf8(&self.a_id.local_tag).unwrap_or_default()
    }

    /// Our final response to A's INVITE.
    fn a_final(&self, code: u16, reason: &str) -> Message {
        response_to_with_tag(&self.a_invite, code, reason, Some(self.a_tag()))
    }

    /// 500 with a Retry-After of 0-10 s (RFC 3261 §14.2).
    fn retry_later(&mut self, req: &Message) -> Message {
        let mut r = reply(req, 500, "Server Internal Error");
        r.headers.push(
            HeaderName::RetryAfter,
            (self.gen.next_u64() % 11).to_string(),
        );
        r
    }

    fn timer_refusal(&self, refusal: TimerRefusal) -> (u16, String, Headers) {
        let mut h = Headers::new();
        match refusal {
            TimerRefusal::Malformed(e) => (400, e.reason(), h),
            TimerRefusal::TooSmall { min } => {
                h.push(HeaderName::MinSe, min.to_string());
                (422, "Session Interval Too Small".into(), h)
            }
        }
    }

    /// The A dialog, from the first tagged response we send to A (§12.1.1); a 2xx confirms it.
    fn a_dialog_from(&mut self, r: &Message) {
        let reliable = self.peer(Side::A).is_some_and(|p| p.reliable);
        let contact = self.contact(reliable);
        match &mut self.dialogs[Side::A.idx()] {
            Some(d) => {
                if r.status().is_some_and(|c| (200..300).contains(&c)) {
                    d.confirm(r);
                }
            }
            slot @ None => *slot = Dialog::uas(&self.a_invite, r, contact).ok(),
        }
    }

    /// Sends a 2xx to an INVITE from `side` and repeats it until the ACK.
    fn respond_2xx(
        &mut self,
        side: Side,
        tx: ServerTxId,
        response: Message,
        cseq: u32,
        late: Option<LateAck>,
        now: Instant,
    ) {
        let reliable = self.peer(side).is_some_and(|p| p.reliable);
        let response = finish_headers(response);
        self.actions.push_back(Action::Respond {
            tx,
            response: response.clone(),
        });
        let t1 = self.cfg.t1;
        self.awaiting_ack[side.idx()] = Some(AwaitAck {
            tx,
            response,
            cseq,
            interval: t1,
            next: (!reliable).then_some(now + t1),
            give_up: now + t1 * 64,
            late,
        });
        self.arm_ack_timer(side);
    }

    /// The ACK for the 2xx to our INVITE `id` (CSeq `seq`) toward `side`, with an optional
    /// answer (late offer), remembered for the 2xx's retransmissions.
    fn send_ack(&mut self, side: Side, id: ReqId, seq: u32, body: Option<Bytes>) {
        let Some(peer) = self.peer(side) else { return };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[side.idx()].as_ref() else {
            return;
        };
        let mut ack = dialog.ack(seq, via);
        if let Some(b) = body {
            ack.set_body(b, Some(SDP));
        }
        self.sent_acks[side.idx()] = Some(SentAck {
            id,
            ack: ack.clone(),
        });
        self.push_ack(side, &peer, ack);
    }

    fn push_ack(&mut self, side: Side, peer: &Peer, ack: Message) {
        self.actions.push_back(Action::SendAck {
            side,
            dest: peer.dest,
            reliable: peer.reliable,
            ack: finish_headers(ack),
        });
    }

    fn send(&mut self, id: ReqId, side: Side, peer: &Peer, request: Message) {
        self.actions.push_back(Action::SendRequest {
            id,
            side,
            dest: peer.dest,
            reliable: peer.reliable,
            request: finish_headers(request),
        });
    }

    fn respond(&mut self, tx: ServerTxId, response: Message) {
        self.actions.push_back(Action::Respond {
            tx,
            response: finish_headers(response),
        });
    }

    fn charging(&mut self, kind: ChargingKind, now: Instant) {
        let reason = (kind == ChargingKind::Stop)
            .then_some(self.end_reason)
            .flatten();
        let record = ChargingRecord::new(kind, now, &self.info, reason);
        self.policy.charging(&record);
        self.actions.push_back(Action::Charging(Box::new(record)));
    }

    fn peer(&self, side: Side) -> Option<Peer> {
        self.peers[side.idx()].clone()
    }

    fn via(&mut self, peer: &Peer) -> Bytes {
        let branch = self.gen.next_branch();
        via_value(peer.reliable, &self.cfg.local, &branch)
    }

    /// Our Contact toward a peer.
    fn contact(&self, reliable: bool) -> Bytes {
        let transport = if reliable { ";transport=tcp" } else { "" };
        Bytes::from(format!("<sip:{}{transport}>", self.cfg.local))
    }

    fn next_id(&mut self) -> ReqId {
        self.next_req += 1;
        ReqId(self.next_req)
    }
}

/// RFC 3261 §16.7 step 6: a 6xx beats everything; otherwise the lowest class wins, and within
/// a class the first response stays (the same ranking as the pager proxy).
fn better(new: &Message, old: Option<&Message>) -> bool {
    let Some(old) = old else { return true };
    let rank = |m: &Message| {
        let c = m.status().unwrap_or(500);
        if c >= 600 {
            0
        } else {
            c / 100
        }
    };
    rank(new) < rank(old)
}

/// A response of ours to an in-dialog request (its To already carries our tag).
fn reply(req: &Message, code: u16, reason: &str) -> Message {
    response_to_with_tag(req, code, reason, None)
}

fn relay_reason(from: &Message, to: &mut Message) {
    if let StartLine::Response { reason, .. } = &from.start {
        set_reason(to, reason.clone());
    }
}

/// Content-Length last, as people read it (headers are appended after the builder's).
fn finish_headers(mut m: Message) -> Message {
    if let Some(cl) = m.headers.remove_first(&HeaderName::ContentLength) {
        m.headers.push(HeaderName::ContentLength, cl);
    }
    m
}

fn reject_headers(rej: &MediaReject) -> (u16, Headers) {
    let mut h = Headers::new();
    if let Some(s) = rej.retry_after {
        h.push(HeaderName::RetryAfter, s.to_string());
    }
    (rej.status, h)
}

fn missing(reason: &str) -> MediaReject {
    MediaReject {
        status: 488,
        reason: reason.into(),
        retry_after: None,
    }
}

/// A's From with our B-side tag instead of A's (the B leg is our own dialog).
fn with_tag(inv: &Message, tag: &Bytes) -> Bytes {
    match inv.from() {
        Ok(mut na) => {
            na.params.set("tag", Some(tag.clone()));
            Bytes::from(na.to_string())
        }
        Err(_) => Bytes::from(format!(
            "<sip:anonymous@anonymous.invalid>;tag={}",
            String::from_utf8_lossy(tag)
        )),
    }
}

/// The URI of a From/To header, as text.
fn uri_of(msg: &Message, name: HeaderName) -> Bytes {
    msg.headers
        .get(&name)
        .and_then(|v| NameAddr::parse(v, "From").ok())
        .map(|na| Bytes::from(na.uri.to_string()))
        .unwrap_or_default()
}

fn first_contact(msg: &Message) -> Option<Bytes> {
    let contacts = msg.contacts().ok()?;
    let addr = contacts.first()?.addr()?;
    Some(Bytes::from(addr.uri.to_string()))
}
