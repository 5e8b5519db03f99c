//! Setup: A's INVITE checked and forked to every contact of B (RFC 3261 §16.6 style
//! parallel forking as a UAC), provisional and final responses of the branches, CANCEL, Timer C.

use std::time::Instant;

use bytes::Bytes;

use super::output::*;
use super::*;

impl<R: SdpRelay, P: SessionPolicy> Session<R, P> {
    pub(super) fn begin(&mut self, contacts: Vec<Peer>, now: Instant) {
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
        if inv.max_forwards().ok().flatten() == Some(0) {
            // RFC 3261 §16.3 step 2: it would go on with Max-Forwards 0.
            return self.reject_setup(483, "Too Many Hops", Headers::new(), now);
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
        self.branches.reserve_exact(contacts.len());
        for peer in contacts {
            self.fork(peer, body.as_ref());
        }
        self.set_timer(Timer::Setup, Some(now + self.cfg.setup_limit));
    }

    /// The INVITE toward one contact of B: a new request of our B-side UAC (decision 0008).
    pub(super) fn fork(&mut self, peer: Peer, body: Option<&Bytes>) {
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

    pub(super) fn branch_response(&mut self, i: usize, resp: Message, now: Instant) {
        match resp.status().unwrap_or(500) {
            0..=100 => {}
            101..=199 => self.branch_provisional(i, resp),
            200..=299 => self.branch_answered(i, resp, now),
            _ => self.branch_failed(i, resp, now),
        }
    }

    /// 180/183 from a branch: its early dialog, relayed to A with our tag (one A dialog).
    pub(super) fn branch_provisional(&mut self, i: usize, resp: Message) {
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
    pub(super) fn branch_answered(&mut self, i: usize, resp: Message, now: Instant) {
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
        // The winner's INVITE is not read again (its dialog and ACK are made): its header
        // list goes, as an idle session's memory is a goal (issue 4).
        self.branches[i].invite.headers = Headers::new();
        self.peers[Side::B.index()] = Some(peer.clone());
        self.dialogs[Side::B.index()] = Some(dialog);
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
    pub(super) fn drop_branch(&mut self, i: usize, resp: &Message, now: Instant) {
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

    pub(super) fn branch_failed(&mut self, i: usize, resp: Message, now: Instant) {
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
    pub(super) fn record_failure(&mut self, mut resp: Message) {
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
        if better(&resp, self.best.as_deref()) {
            self.best = Some(Box::new(resp));
        }
    }

    pub(super) fn check_setup_done(&mut self, now: Instant) {
        let decided = self.best.as_ref().is_some_and(|b| b.status() >= Some(600))
            || !self
                .branches
                .iter()
                .any(|b| b.state == BranchState::Pending);
        if self.phase != Phase::Setup || self.winner.is_some() || !decided {
            return;
        }
        let best = self.best.take().map_or_else(
            || response_to_with_tag(&self.a_invite, 480, "Temporarily Unavailable", None),
            |b| *b,
        );
        let best_code = best.status().unwrap_or(480);
        if self.hand_back && (matches!(best_code, 408 | 480) || (500..600).contains(&best_code)) {
            // Unanswered: the runtime takes A's INVITE (see `hand_back_when_unavailable`).
            self.rollback_setup_offer();
            self.set_timer(Timer::Setup, None);
            self.enter_ending(EndReason::HandedBack(best_code), now);
            return self.maybe_finish(now);
        }
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
    pub(super) fn abort_setup(&mut self, reason: EndReason, code: u16, text: &str, now: Instant) {
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
    pub(super) fn reject_setup(&mut self, code: u16, reason: &str, extra: Headers, now: Instant) {
        let mut r = self.a_final(code, reason);
        for h in extra.iter() {
            r.headers.push(h.name.clone(), h.value.clone());
        }
        self.respond(self.a_tx, r);
        self.info.final_status = Some(code);
        self.enter_ending(EndReason::Rejected(code), now);
        self.maybe_finish(now);
    }

    pub(super) fn cancel_branches(&mut self) {
        for b in &mut self.branches {
            if b.state == BranchState::Pending {
                b.state = BranchState::Cancelled;
                self.actions.push_back(Action::Cancel { id: b.id });
            }
        }
    }

    pub(super) fn rollback_setup_offer(&mut self) {
        if self.offer == Offer::InRequest {
            self.relay.rollback();
        }
    }
}
