//! Inside the dialogs: requests relayed between A and B with their offer/answer (RFC 3264,
//! RFC 3311), glare (RFC 3261 §14), session timers (RFC 4028), CANCEL of a re-INVITE, ACKs.

use std::time::Instant;

use bytes::Bytes;

use super::output::*;
use super::*;

impl<R: SdpRelay, P: SessionPolicy> Session<R, P> {
    pub(super) fn handle_request(&mut self, tx: ServerTxId, req: Message, now: Instant) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        if method == Method::Ack {
            return self.handle_ack(req, now);
        }
        let Some(origin) = self.origin_of(&req) else {
            return self.respond(tx, crate::session::no_dialog(&req));
        };
        let side = origin.side();
        match self.phase {
            Phase::Ending | Phase::Ended => {
                let r = if method == Method::Bye {
                    reply(&req, 200, "OK")
                } else {
                    crate::session::no_dialog(&req)
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
                    return self.respond(tx, crate::session::no_dialog(&req));
                }
                let Some(dialog) = self.dialogs[side.index()].as_mut() else {
                    return self.respond(tx, crate::session::no_dialog(&req));
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
                    Method::Refer => self.refer(side, tx, req),
                    _ => self.forward(side, tx, req, Offer::None, None, None),
                }
            }
        }
    }

    /// A REFER from `from`: one naming the storage controller is answered here (202, then
    /// the final NOTIFY, RFC 3515 §2.4.4-§2.4.5) and starts or stops the recording
    /// (CPM.md §5 fig. 12); any other (a transfer) is relayed to the other side as before.
    pub(super) fn refer(&mut self, from: Side, tx: ServerTxId, req: Message) {
        let domains: Vec<String> = [&self.info.from, &self.info.to]
            .into_iter()
            .filter_map(crate::record::domain_of)
            .collect();
        let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
        let cmd = match crate::record::classify_refer(&req, &domains) {
            None => return self.forward(from, tx, req, Offer::None, None, None),
            Some(Err(e)) => return self.respond(tx, reply(&req, e.status(), e.reason())),
            Some(Ok(cmd)) => cmd,
        };
        let Some(peer) = self.peer(from) else {
            return self.respond(tx, crate::session::no_dialog(&req));
        };
        let mut accepted = reply(&req, 202, "Accepted");
        accepted
            .headers
            .push(HeaderName::Contact, self.contact(peer.reliable));
        self.respond(tx, accepted);
        if let Some(change) = self.recording.apply(cmd, from) {
            self.record_changes.push_back(change);
        }
        let refer_seq = req.cseq().map_or(0, |c| c.seq);
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[from.index()].as_mut() else {
            return;
        };
        let notify = crate::record::refer_notify(dialog, via, refer_seq, 200, "OK");
        let id = self.next_id();
        self.send(id, from, &peer, notify);
    }

    /// A re-INVITE or UPDATE from `from`: glare (RFC 3261 §14.2, RFC 3311 §5.2), session
    /// timer (RFC 4028), and its offer through the media plane.
    pub(super) fn offer_request(&mut self, from: Side, tx: ServerTxId, req: Message) {
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
    pub(super) fn forward(
        &mut self,
        from: Side,
        tx: ServerTxId,
        req: Message,
        offer: Offer,
        body: Option<Bytes>,
        timer_offer: Option<TimerOffer>,
    ) {
        let to = from.other();
        let (Some(method), Some(peer)) = (req.method().cloned(), self.peer(to)) else {
            return self.respond(tx, crate::session::no_dialog(&req));
        };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[to.index()].as_mut() else {
            return self.respond(tx, crate::session::no_dialog(&req));
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

    pub(super) fn handle_response(&mut self, id: ReqId, resp: Message, now: Instant) {
        let code = resp.status().unwrap_or(0);
        if (200..300).contains(&code) {
            // A retransmitted 2xx we ACKed already (§13.2.2.4): the same ACK again.
            for side in [Side::A, Side::B] {
                if let Some(sent) = self.sent_acks[side.index()].as_ref().filter(|s| s.id == id) {
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
        if self.relays.is_empty() {
            self.relays = Vec::new();
        }
        if code < 300 {
            self.relayed_2xx(rel, resp, now);
        } else {
            self.relayed_failure(rel, resp, now);
        }
    }

    pub(super) fn relayed_2xx(&mut self, rel: Relayed, resp: Message, now: Instant) {
        let (x, y) = (rel.from, rel.from.other());
        if is_target_refresh(&rel.method) {
            if let Some(d) = self.dialogs[y.index()].as_mut() {
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

    pub(super) fn relayed_failure(&mut self, rel: Relayed, resp: Message, now: Instant) {
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

    pub(super) fn handle_cancel(
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
        self.respond(cancel_tx, crate::session::no_dialog(&req));
    }

    pub(super) fn handle_ack(&mut self, ack: Message, now: Instant) {
        let Some(origin) = self.origin_of(&ack) else {
            return;
        };
        let x = origin.side();
        let seq = ack.cseq().map(|c| c.seq).ok();
        let slot = &mut self.awaiting_ack[x.index()];
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
        if std::mem::take(&mut self.bye_deferred[x.index()]) {
            self.send_bye(x);
            self.maybe_finish(now);
        }
    }
}
