//! The [`Session`] state machine: its state, inputs, timers and end. The setup (forking) is in
//! `setup`, the relaying inside the dialogs in `dialogs`, message building and the output
//! queue in `output`.

mod dialogs;
mod output;
mod setup;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::headers::{copy_body, copy_end_to_end, has_sdp, join, set_reason, unsupported_requires};
use super::timer::{self, TimerOffer, TimerRefusal};
use super::{
    Action, Admission, ChargingKind, ChargingRecord, EndReason, MediaReject, NoPolicy, Peer, ReqId,
    SdpRelay, SessionConfig, SessionInfo, SessionPolicy, SessionStart, SessionState, Side,
};
use crate::record::{RecordChange, Recording};
use crate::sip::builder::{response_to_with_tag, tag_of, BranchGen};
use crate::sip::dialog::{is_target_refresh, via_value, Dialog, DialogId};
use crate::sip::hdr::NameAddr;
use crate::sip::retransmit::{Due, Retransmit2xx};
use crate::sip::transaction::ServerTxId;
use crate::sip::{HeaderName, Headers, Message, Method, StartLine};

use output::{first_contact, reply, uri_of};

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
    cseq: u32,
    /// The 2xx and its retransmission timing (shared with the large-message sessions).
    rtx: Retransmit2xx,
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
    /// One per contact (reserved exactly: a push into an empty `Vec` of these would reserve
    /// four, 2.7 KiB).
    branches: Vec<Branch>,
    winner: Option<usize>,
    /// Boxed, as the other parts an idle session does not need: its memory is the goal.
    best: Option<Box<Message>>,
    offer: Offer,
    early_media: Option<usize>,
    setup_timer: Option<TimerOffer>,
    /// Emptied when the last one is answered.
    relays: Vec<Relayed>,
    awaiting_ack: [Option<Box<AwaitAck>>; 2],
    sent_acks: [Option<Box<SentAck>>; 2],
    bye_deferred: [bool; 2],
    timers: [Option<Instant>; TIMERS],
    armed: Option<Instant>,
    next_req: u64,
    /// Freed whenever drained (an idle session holds none).
    actions: VecDeque<Action>,
    /// Recording into network storage (REFER to the storage controller, fig. 12).
    recording: Recording,
    /// Recording changes for the runtime ([`Session::poll_record`]).
    record_changes: VecDeque<RecordChange>,
    /// A's INVITE is handed back unanswered when every branch is unavailable
    /// ([`Session::hand_back_when_unavailable`]).
    hand_back: bool,
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
            recording: Recording::default(),
            record_changes: VecDeque::new(),
            hand_back: false,
        };
        s.begin(start.contacts, now);
        s.rearm();
        s
    }

    // ---- accessors ---------------------------------------------------------------------

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() && self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        next
    }

    /// When `on_timer` wants to run next (also announced by [`Action::Timer`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.armed
    }

    /// The next change of the session's recording (REFER to the storage controller, CPM.md
    /// §5 fig. 12): the runtime starts or stops taping the session's MSRP traffic.
    pub fn poll_record(&mut self) -> Option<RecordChange> {
        self.record_changes.pop_front()
    }

    /// Turns recording on as if `by` had REFERred the storage (a user setting that records
    /// every session, CPM.md §5); announced by [`Session::poll_record`], stopped by a REFER
    /// `method=BYE` like any other.
    pub fn start_recording(&mut self, by: Side) {
        if let Some(change) = self
            .recording
            .apply(crate::record::RecordCommand::Start, by)
        {
            self.record_changes.push_back(change);
        }
    }

    /// When every branch fails with 408, 480 or 5xx (B's devices are unavailable, not
    /// refusing), A's INVITE gets no answer from the session: it ends with
    /// [`EndReason::HandedBack`] and the runtime answers the INVITE's transaction itself
    /// (large message mode: cpmd takes the message for the offline user). Call before the
    /// branches answer.
    pub fn hand_back_when_unavailable(&mut self) {
        self.hand_back = true;
    }

    /// Whether the session is being recorded (REFER `method=INVITE` or a user setting).
    pub fn is_recording(&self) -> bool {
        self.recording.is_on()
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
        self.dialogs[side.index()].as_ref()
    }

    /// The Call-IDs of the A and B sides: the actor's routing keys for this session.
    pub fn call_ids(&self) -> [&Bytes; 2] {
        [&self.a_id.call_id, &self.info.b_call_id]
    }

    /// Which side a request arriving with one of [`Session::call_ids`] comes from: A's
    /// Call-ID, A's From tag, and our tag or none in To (a CANCEL); or B's Call-ID with our tag
    /// in To. `None`: not this session's (answer [`crate::session::no_dialog`] if no session claims it).
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

    /// The server is shutting down: a connected session is ended with a BYE to both sides
    /// (deferred while a 2xx waits for its ACK, as any BYE); one still being set up answers A
    /// 503 and cancels its branches (RFC 3261 §21.5.4).
    pub fn shutdown(&mut self, now: Instant) {
        match self.phase {
            Phase::Setup => self.abort_setup(
                EndReason::Shutdown,
                503,
                "Service Unavailable (Shutting Down)",
                now,
            ),
            Phase::Connected => self.terminate(EndReason::Shutdown, &[Side::A, Side::B], now),
            Phase::Ending | Phase::Ended => {}
        }
        self.rearm();
    }

    /// Produces an interim charging record now (the actor's configurable interval).
    pub fn interim(&mut self, now: Instant) {
        if self.phase == Phase::Connected {
            self.charging(ChargingKind::Interim, now);
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
            if self.awaiting_ack[side.index()].is_some() {
                self.bye_deferred[side.index()] = true;
            } else {
                self.send_bye(side);
            }
        }
        self.maybe_finish(now);
    }

    fn send_bye(&mut self, side: Side) {
        let Some(peer) = self.peer(side) else { return };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[side.index()].as_mut() else {
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
            if std::mem::take(&mut self.bye_deferred[side.index()]) {
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
        let Some(w) = self.awaiting_ack[side.index()].as_mut() else {
            return;
        };
        let due = w.rtx.handle_timeout(now);
        if due == Some(Due::GiveUp) {
            if let Some(late) = self.awaiting_ack[side.index()].take().and_then(|w| w.late) {
                // The other side's 2xx still needs its ACK before the BYE (§13.2.2.4); there
                // is no answer to put in it.
                self.send_ack(side.other(), late.id, late.invite_seq, None);
            }
            if std::mem::take(&mut self.bye_deferred[side.index()]) {
                self.send_bye(side);
                return self.maybe_finish(now);
            }
            return self.terminate(EndReason::NoAck, &[Side::A, Side::B], now);
        }
        if due == Some(Due::Resend) {
            let (tx, r) = (w.tx, w.rtx.response().clone());
            self.respond(tx, r);
        }
        self.arm_ack_timer(side);
    }

    fn arm_ack_timer(&mut self, side: Side) {
        let at = self.awaiting_ack[side.index()]
            .as_ref()
            .map(|w| w.rtx.poll_timeout());
        self.set_timer(ack_timer(side), at);
    }

    fn set_timer(&mut self, t: Timer, at: Option<Instant>) {
        self.timers[t as usize] = at;
    }

    fn set_expiry(&mut self, interval: Option<u32>, now: Instant) {
        // A peer's huge Session-Expires must not overflow the clock: no expiry then.
        let at = interval.and_then(|s| now.checked_add(Duration::from_secs(u64::from(s))));
        self.set_timer(Timer::Expiry, at);
    }

    /// Announces the next deadline when it changed.
    /// Tells the runtime the next deadline when it changed; an ended session disarms its timer
    /// (its timers were cleared when it finished).
    fn rearm(&mut self) {
        let next = if self.phase == Phase::Ended {
            None
        } else {
            self.timers.iter().flatten().min().copied()
        };
        if next != self.armed {
            self.armed = next;
            self.actions.push_back(Action::Timer(next));
        }
    }
}
