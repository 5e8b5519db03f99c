//! Building blocks: responses and requests built for each side, the 2xx retransmission
//! state, and the output queue.

use std::time::Instant;

use bytes::Bytes;

use super::*;

impl<R: SdpRelay, P: SessionPolicy> Session<R, P> {
    /// The dialog (and branch) a request belongs to.
    pub(super) fn origin_of(&self, req: &Message) -> Option<Origin> {
        let id = DialogId::of_request(req)?;
        if id == self.a_id {
            return Some(Origin::A);
        }
        if id.call_id != self.info.b_call_id || id.local_tag != self.b_tag {
            return None;
        }
        if let (Some(w), Some(d)) = (self.winner, self.dialogs[Side::B.index()].as_ref()) {
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
    pub(super) fn media_from(
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
    pub(super) fn to_a(&self, resp: &Message) -> Message {
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
    pub(super) fn reply_from(&self, to: Side, req: &Message, resp: &Message) -> Message {
        let code = resp.status().unwrap_or(500);
        let mut r = response_to_with_tag(req, code, "", None);
        relay_reason(resp, &mut r);
        copy_end_to_end(resp, &mut r);
        let refresh = req.method().is_some_and(is_target_refresh);
        if code < 300 && refresh {
            if let Some(d) = self.dialogs[to.index()].as_ref() {
                r.headers
                    .push(HeaderName::Contact, d.local_contact().clone());
            }
        }
        r
    }

    /// Our tag toward A (hex digits from [`BranchGen::next_tag`]).
    pub(super) fn a_tag(&self) -> &str {
        std::str::from_utf8(&self.a_id.local_tag).unwrap_or_default()
    }

    /// Our final response to A's INVITE.
    pub(super) fn a_final(&self, code: u16, reason: &str) -> Message {
        response_to_with_tag(&self.a_invite, code, reason, Some(self.a_tag()))
    }

    /// 500 with a Retry-After of 0-10 s (RFC 3261 §14.2).
    pub(super) fn retry_later(&mut self, req: &Message) -> Message {
        let mut r = reply(req, 500, "Server Internal Error");
        r.headers.push(
            HeaderName::RetryAfter,
            (self.gen.next_u64() % 11).to_string(),
        );
        r
    }

    pub(super) fn timer_refusal(&self, refusal: TimerRefusal) -> (u16, String, Headers) {
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
    pub(super) fn a_dialog_from(&mut self, r: &Message) {
        let reliable = self.peer(Side::A).is_some_and(|p| p.reliable);
        let contact = self.contact(reliable);
        match &mut self.dialogs[Side::A.index()] {
            Some(d) => {
                if r.status().is_some_and(|c| (200..300).contains(&c)) {
                    d.confirm(r);
                }
            }
            slot @ None => *slot = Dialog::uas(&self.a_invite, r, contact).ok(),
        }
    }

    /// Sends a 2xx to an INVITE from `side` and repeats it until the ACK.
    pub(super) fn respond_2xx(
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
        let rtx = Retransmit2xx::new(response, reliable, self.cfg.t1, self.cfg.t2, now);
        self.awaiting_ack[side.index()] = Some(Box::new(AwaitAck {
            tx,
            cseq,
            rtx,
            late,
        }));
        self.arm_ack_timer(side);
    }

    /// The ACK for the 2xx to our INVITE `id` (CSeq `seq`) toward `side`, with an optional
    /// answer (late offer), remembered for the 2xx's retransmissions.
    pub(super) fn send_ack(&mut self, side: Side, id: ReqId, seq: u32, body: Option<Bytes>) {
        let Some(peer) = self.peer(side) else { return };
        let via = self.via(&peer);
        let Some(dialog) = self.dialogs[side.index()].as_ref() else {
            return;
        };
        let mut ack = dialog.ack(seq, via);
        if let Some(b) = body {
            ack.set_body(b, Some(SDP));
        }
        self.sent_acks[side.index()] = Some(Box::new(SentAck {
            id,
            ack: ack.clone(),
        }));
        self.push_ack(side, &peer, ack);
    }

    pub(super) fn push_ack(&mut self, side: Side, peer: &Peer, ack: Message) {
        self.actions.push_back(Action::SendAck {
            side,
            dest: peer.dest,
            reliable: peer.reliable,
            ack: finish_headers(ack),
        });
    }

    pub(super) fn send(&mut self, id: ReqId, side: Side, peer: &Peer, request: Message) {
        self.actions.push_back(Action::SendRequest {
            id,
            side,
            dest: peer.dest,
            reliable: peer.reliable,
            request: finish_headers(request),
        });
    }

    pub(super) fn respond(&mut self, tx: ServerTxId, response: Message) {
        self.actions.push_back(Action::Respond {
            tx,
            response: finish_headers(response),
        });
    }

    pub(super) fn charging(&mut self, kind: ChargingKind, now: Instant) {
        let reason = (kind == ChargingKind::Stop)
            .then_some(self.end_reason)
            .flatten();
        let record = ChargingRecord::new(kind, now, &self.info, reason);
        self.policy.charging(&record);
        self.actions.push_back(Action::Charging(Box::new(record)));
    }

    pub(super) fn peer(&self, side: Side) -> Option<Peer> {
        self.peers[side.index()].clone()
    }

    pub(super) fn via(&mut self, peer: &Peer) -> Bytes {
        let branch = self.gen.next_branch();
        via_value(peer.reliable, &self.cfg.local, &branch)
    }

    /// Our Contact toward a peer.
    pub(super) fn contact(&self, reliable: bool) -> Bytes {
        let transport = if reliable { ";transport=tcp" } else { "" };
        Bytes::from(format!("<sip:{}{transport}>", self.cfg.local))
    }

    pub(super) fn next_id(&mut self) -> ReqId {
        self.next_req += 1;
        ReqId(self.next_req)
    }
}

/// RFC 3261 §16.7 step 6: a 6xx beats everything; otherwise the lowest class wins, and within
/// a class the first response stays (the same ranking as the pager proxy).
pub(super) fn better(new: &Message, old: Option<&Message>) -> bool {
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
pub(super) fn reply(req: &Message, code: u16, reason: &str) -> Message {
    response_to_with_tag(req, code, reason, None)
}

pub(super) fn relay_reason(from: &Message, to: &mut Message) {
    if let StartLine::Response { reason, .. } = &from.start {
        set_reason(to, reason.clone());
    }
}

/// Content-Length last, as people read it (headers are appended after the builder's).
pub(super) fn finish_headers(mut m: Message) -> Message {
    if let Some(cl) = m.headers.remove_first(&HeaderName::ContentLength) {
        m.headers.push(HeaderName::ContentLength, cl);
    }
    m
}

pub(super) fn reject_headers(rej: &MediaReject) -> (u16, Headers) {
    let mut h = Headers::new();
    if let Some(s) = rej.retry_after {
        h.push(HeaderName::RetryAfter, s.to_string());
    }
    (rej.status, h)
}

pub(super) fn missing(reason: &str) -> MediaReject {
    MediaReject {
        status: 488,
        reason: reason.into(),
        retry_after: None,
    }
}

/// A's From with our B-side tag instead of A's (the B leg is our own dialog).
pub(super) fn with_tag(inv: &Message, tag: &Bytes) -> Bytes {
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
pub(super) fn uri_of(msg: &Message, name: HeaderName) -> Bytes {
    msg.headers
        .get(&name)
        .and_then(|v| NameAddr::parse(v, "From").ok())
        .map(|na| Bytes::from(na.uri.to_string()))
        .unwrap_or_default()
}

pub(super) fn first_contact(msg: &Message) -> Option<Bytes> {
    let contacts = msg.contacts().ok()?;
    let addr = contacts.first()?.addr()?;
    Some(Bytes::from(addr.uri.to_string()))
}
