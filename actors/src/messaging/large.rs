//! Large message mode (issue 5; OMA CPM / RCS "large message": one message in an MSRP session
//! of its own, RFC 4975) for users who are offline: the SIP half of it. The MSRP half is
//! [`crate::msrp::MsrpSink`] and [`crate::msrp::MsrpPlane::deliver`].
//!
//! ```text
//!  receiving (recipient offline)            delivering (recipient registered)
//!  INVITE m=message only ─► 200 (our a=path,  held message > --message-max-size ─► INVITE to
//!   setup passive, or active: we connect)      contact 1 (our a=path, a=setup:active) ─► 2xx
//!   repeated until ◄─ ACK                     ─► ACK (again for each repeated 2xx), connect,
//!  SEND chunks ─► sink ─► DeferCapped ─► 200   SEND chunks ─► 200 to the last ─► BYE; the
//!  (per message, after the commit)            held row is deleted as in pager mode
//!  BYE (or our BYE after LARGE_IDLE, or       408/480/5xx, no MSRP connection: contact 2, ...
//!   64*T1 without ACK) ─► done                4xx/6xx or an MSRP error: failed (IMDN); none
//!                                              left: the run ends
//! ```
//!
//! **Who takes the INVITE.** With no reachable contact the message controller takes it at
//! once. With contacts, the B2BUA session forks it as any session; when every branch fails
//! with 408/480/5xx the session ends *handed back* (`Session::hand_back_when_unavailable`,
//! `EndReason::HandedBack`) without answering, and its actor gives the INVITE's transaction to
//! the controller (`StoreEvent::LargeHandBack`), which answers it here. Chosen over probing
//! the contacts first (pager mode's fork, with OPTIONS or the INVITE itself) because a probe
//! is either a second B2BUA (the INVITE answered 200 by a device must then be relayed) or a
//! guess (a device alive for OPTIONS may still answer the INVITE 480); the session's state
//! machine gains one flag and one end, and the forking, CANCEL, early dialogs and timers stay
//! in one place.
//!
//! **Order with pager mode.** A message's row is written when its last chunk arrives, so a
//! pager MESSAGE for the same user sent meanwhile would be held (or delivered) before it. The
//! MSRP plane counts the messages being received per user ([`crate::msrp::MsrpPlane::receiving`]:
//! from the first chunk until the storage answer); the controller parks such a MESSAGE and
//! holds it once the count drops (after the large message's commit, so its row comes later),
//! or after `PARK_MAX` (10 s: the order is then not kept, rather than the sender timing out).
//!
//! A message taken this way is held as the pager MESSAGE it would have been (the INVITE's
//! From, To and Request-URI, the MSRP Content-Type and body), in the same queue and through
//! the same capped write; on delivery its size alone decides the mode (decision: no kind
//! column, so no migration; a small message that came over MSRP is delivered as a MESSAGE).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cpm_engine::msrp::assemble::Complete;
use cpm_engine::registrar::{Aor, Binding};
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::dialog::{via_value, Dialog, DialogId};
use cpm_engine::sip::retransmit::{Due, Retransmit2xx};
use cpm_engine::sip::transaction::TimerConfig;
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use cpm_engine::sip::{builder, HeaderName, Message, Method, StartLine};
use cpm_engine::store::{DeferredId, DeferredMessage, Row, WriteOp, WriteResult};

use super::{deferred_record, StoreDone, StoreEvent};
use crate::msrp::{MsrpSink, Outgoing, Reply};
use crate::routing;
use crate::shared::Shared;

/// A large-message session with no traffic for this long is ended with our BYE.
pub const LARGE_IDLE: Duration = Duration::from_secs(60);
/// How often idle sessions are looked for.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// A large-message session cpmd answered for an offline user.
struct Inbound {
    sink: MsrpSink,
    dialog: Dialog,
    dest: SocketAddr,
    reliable: bool,
    /// Our 2xx, repeated until the ACK (RFC 3261 §13.3.1.4), on INVITE transaction `tx`.
    tx: ServerTxId,
    rtx: Option<Retransmit2xx>,
}

/// The ACK we sent for a device's 2xx, sent again for each retransmission of that 2xx
/// (RFC 3261 §13.2.2.4) until the INVITE transaction is surely over (64*T1).
struct SentAck {
    ack: Message,
    dest: SocketAddr,
    reliable: bool,
    until: Instant,
}

/// A held message being delivered over a session cpmd originates, to the user's contacts one
/// after the other (a sequential fork, RFC 3261 §16.6): the next is tried when one does not
/// answer, is unavailable (408, 480, 5xx) or cannot be reached over MSRP.
struct Delivery {
    aor: String,
    row: Box<Row<DeferredId, DeferredMessage>>,
    /// The held request (what its outcome is reported against).
    held: Message,
    /// Our INVITE before it is addressed to a contact.
    base: Message,
    /// The INVITE sent to the current contact.
    invite: Message,
    local_uri: Bytes,
    dest: SocketAddr,
    reliable: bool,
    dialog: Option<Dialog>,
    /// The contacts not tried yet, in the registrar's order.
    rest: VecDeque<(Binding, SocketAddr, bool)>,
}

/// What a delivery came to, for the message controller (see [`super::Origin::Held`]).
pub(super) struct Finished {
    pub(super) aor: String,
    pub(super) row: Box<Row<DeferredId, DeferredMessage>>,
    /// A response standing for the outcome: the device's, or one made from the MSRP status.
    pub(super) outcome: Message,
}

/// The large-message sessions of one worker.
#[derive(Default)]
pub(super) struct LargeMessages {
    inbound: HashMap<DialogId, Inbound>,
    invites: HashMap<ClientTxId, u64>,
    deliveries: HashMap<u64, Delivery>,
    /// Our BYEs: their responses are absorbed.
    byes: HashSet<ClientTxId>,
    /// The ACKs of the devices' 2xx, by INVITE transaction.
    acks: HashMap<ClientTxId, SentAck>,
    next: u64,
    next_idle_check: Option<Instant>,
}

/// The offer of a large-message session: its only active stream is `m=message ... TCP/MSRP`
/// with an `a=path`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MsrpOffer {
    /// The sender's `a=path`.
    path: Bytes,
    /// `a=setup:passive`: the sender waits for our connection (RFC 6135 §4), so cpmd connects.
    passive: bool,
}

/// The [`MsrpOffer`] of an INVITE, if that is all it offers.
pub(super) fn msrp_only_offer(req: &Message) -> Option<MsrpOffer> {
    let is_sdp = req
        .headers
        .get(&HeaderName::ContentType)
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"application/sdp"));
    if !is_sdp {
        return None;
    }
    let sdp = SessionDescription::parse(&req.body).ok()?;
    let active: Vec<_> = sdp.media().iter().filter(|m| m.port() != 0).collect();
    let [m] = active.as_slice() else { return None };
    let proto_ok = m
        .media_line()
        .proto
        .as_bytes()
        .eq_ignore_ascii_case(b"TCP/MSRP");
    if &m.kind()[..] != b"message" || !proto_ok {
        return None;
    }
    let passive = m
        .attribute("setup")
        .and_then(|a| a.value().cloned())
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"passive"));
    let path = m.attribute("path")?.value()?.trim_ascii().to_vec();
    (!path.is_empty()).then(|| MsrpOffer {
        path: Bytes::from(path),
        passive,
    })
}

/// Our SDP for a large-message session: the MSRP stream at `uri`, `setup` our role.
fn sdp(shared: &Shared, uri: &Bytes, setup: &str, accept: &str, direction: &str) -> Bytes {
    let ip = shared.config.media_ip;
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let port = shared.msrp.local_addr().port();
    Bytes::from(format!(
        "v=0\r\no=cpmd 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=message {port} TCP/MSRP *\r\na=accept-types:{accept}\r\na=path:{uri}\r\n\
         a=setup:{setup}\r\na={direction}\r\n",
        uri = String::from_utf8_lossy(uri),
    ))
}

/// The `a=path` of the message stream of an SDP answer.
fn answered_path(resp: &Message) -> Option<Bytes> {
    let sdp = SessionDescription::parse(&resp.body).ok()?;
    let m = sdp
        .media()
        .iter()
        .find(|m| m.port() != 0 && &m.kind()[..] == b"message")?;
    let path = m.attribute("path")?.value()?.trim_ascii().to_vec();
    (!path.is_empty()).then(|| Bytes::from(path))
}

/// Our Contact.
fn contact(shared: &Shared) -> Bytes {
    Bytes::from(format!("<sip:cpmd@{}>", shared.config.sip_listen))
}

impl LargeMessages {
    /// Forgets everything (a worker restart): sinks close, deliveries are retried at the next
    /// REGISTER (their rows were not deleted).
    pub(super) fn clear(&mut self) {
        *self = LargeMessages::default();
    }

    /// Whether an INVITE opens a large-message session cpmd takes itself: store-and-forward
    /// is on, the offer carries an MSRP stream only, and its target is a local user with no
    /// reachable contact.
    pub(super) fn wanted(shared: &Shared, req: &Message, now: Instant) -> bool {
        Self::may_take(shared, req)
            && routing::local_user(shared, req)
                .is_ok_and(|aor| routing::contacts(shared, &aor, now).is_empty())
    }

    /// Whether cpmd would take this INVITE if the user's devices cannot (store-and-forward
    /// on, an MSRP-only offer).
    pub(super) fn may_take(shared: &Shared, req: &Message) -> bool {
        shared.config.store_and_forward && msrp_only_offer(req).is_some()
    }

    /// Answers a large-message INVITE as the recipient's stand-in: a sink on our MSRP plane,
    /// 200 with its path: `a=setup:passive`, or `active` when the sender is passive (cpmd then
    /// connects to the sender's path, RFC 6135). The 200 is repeated until the ACK. `Err` is
    /// the response to send instead.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept(
        &mut self,
        shared: &Shared,
        done: Option<actix::Recipient<StoreDone>>,
        id: ServerTxId,
        req: &Message,
        source: SocketAddr,
        reliable: bool,
        txn: &mut TransactionLayer,
        now: Instant,
    ) -> Result<(), Box<Message>> {
        let aor = super::aor_string(&routing::local_user(shared, req)?);
        let refuse = |code, reason| Box::new(builder::local_response(req, code, reason));
        let offer = msrp_only_offer(req).ok_or_else(|| refuse(488, "Not Acceptable Here"))?;
        let done = done.ok_or_else(|| refuse(503, "Service Unavailable"))?;
        let uri = shared.msrp.fresh_uri(&shared.config.media_ip.to_string());
        let on_message = store_each(shared, req, aor.clone(), done);
        let sink = shared
            .msrp
            .open_sink(
                &uri,
                &offer.path,
                shared.config.large_message_max,
                Bytes::from(aor.clone()),
                on_message,
            )
            .map_err(|e| {
                tracing::debug!(error = %e, "large-message sink not opened");
                refuse(488, "Not Acceptable Here")
            })?;
        let tag = String::from_utf8_lossy(&txn.new_tag()).into_owned();
        let mut resp = builder::response_to_with_tag(req, 200, "OK", Some(&tag));
        resp.headers.push(HeaderName::Contact, contact(shared));
        let setup = if offer.passive { "active" } else { "passive" };
        let answer = sdp(shared, &uri, setup, "*", "recvonly");
        resp.set_body(answer, Some("application/sdp"));
        let dialog =
            Dialog::uas(req, &resp, contact(shared)).map_err(|_| refuse(400, "Bad Request"))?;
        if let Err(e) = txn.respond(id, &resp, now) {
            tracing::debug!(error = %e.reason(), "large-message 200 not sent");
            return Ok(());
        }
        if offer.passive {
            // The sender waits for us: connect to its path and bind with an empty SEND.
            sink.connect();
        }
        tracing::info!(to = %aor, "large-message session taken for an offline user");
        let t = TimerConfig::default();
        self.inbound.insert(
            dialog.id().clone(),
            Inbound {
                sink,
                dialog,
                dest: source,
                reliable,
                tx: id,
                rtx: Some(Retransmit2xx::new(resp, reliable, t.t1, t.t2, now)),
            },
        );
        self.next_idle_check.get_or_insert(now + IDLE_CHECK);
        Ok(())
    }

    /// A request in one of our large-message dialogs (`None`: not ours): the response. A BYE
    /// ends the session (an unfinished message is dropped with the sink).
    pub(super) fn on_request(&mut self, req: &Message) -> Option<Message> {
        let id = DialogId::of_request(req)?;
        if !self.inbound.contains_key(&id) {
            return None;
        }
        Some(match req.method() {
            Some(Method::Bye) => {
                self.inbound.remove(&id);
                builder::local_response(req, 200, "OK")
            }
            _ => builder::local_response(req, 488, "Not Acceptable Here"),
        })
    }

    /// The ACK of a 2xx (RFC 3261 §17, no transaction): ours stops being repeated. `false`
    /// when it belongs to none of our sessions.
    pub(super) fn on_ack(&mut self, ack: &Message) -> bool {
        let Some(s) = DialogId::of_request(ack).and_then(|id| self.inbound.get_mut(&id)) else {
            return false;
        };
        s.rtx = None;
        true
    }

    /// Periodic work: our 2xx repeated until the ACK (a session without one by 64*T1 ends
    /// with our BYE), the sessions idle for [`LARGE_IDLE`] ended with our BYE, the ACKs kept
    /// for the devices' 2xx forgotten.
    pub(super) fn handle_timeout(
        &mut self,
        shared: &Shared,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        let mut ended = Vec::new();
        for (k, s) in self.inbound.iter_mut() {
            let Some(rtx) = s.rtx.as_mut() else { continue };
            match rtx.handle_timeout(now) {
                Some(Due::Resend) => {
                    if let Err(e) = txn.respond(s.tx, rtx.response(), now) {
                        tracing::debug!(error = %e.reason(), "large-message 200 not repeated");
                    }
                }
                Some(Due::GiveUp) => {
                    tracing::debug!("large-message 200 never acknowledged: BYE");
                    ended.push(k.clone());
                }
                None => {}
            }
        }
        self.acks.retain(|_, a| a.until > now);
        if self.next_idle_check.is_some_and(|t| t <= now) {
            ended.extend(
                self.inbound
                    .iter()
                    .filter(|(_, s)| s.sink.idle_for(now) >= LARGE_IDLE)
                    .map(|(k, _)| k.clone()),
            );
            self.next_idle_check = (!self.inbound.is_empty()).then(|| now + IDLE_CHECK);
        }
        for k in ended {
            if let Some(mut s) = self.inbound.remove(&k) {
                tracing::debug!("large-message session ended by cpmd: BYE");
                let bye = s
                    .dialog
                    .request(Method::Bye, self_via(shared, s.reliable, txn));
                if let Ok(cid) = txn.send_request(bye, s.dest, s.reliable, now) {
                    self.byes.insert(cid);
                }
            }
        }
    }

    /// When [`LargeMessages::handle_timeout`] wants to run.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let rtx = self
            .inbound
            .values()
            .filter_map(|s| s.rtx.as_ref().map(Retransmit2xx::poll_timeout));
        let acks = self.acks.values().map(|a| a.until);
        rtx.chain(acks).chain(self.next_idle_check).min()
    }

    // ---- delivering -----------------------------------------------------------------------

    /// Delivers held request `held` (already rewritten for redelivery) over a session cpmd
    /// originates to `aor`'s contacts, one after the other. `Err` gives the row back when no
    /// contact can be reached (the run ends).
    #[allow(clippy::result_large_err)]
    pub(super) fn deliver(
        &mut self,
        shared: &Shared,
        aor: &str,
        row: Row<DeferredId, DeferredMessage>,
        held: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<(), Row<DeferredId, DeferredMessage>> {
        let rest: VecDeque<_> = routing::contacts(shared, &Aor::new(aor.to_owned()), now).into();
        if rest.is_empty() {
            return Err(row);
        }
        let local_uri = shared.msrp.fresh_uri(&shared.config.media_ip.to_string());
        let accept = held
            .headers
            .get(&HeaderName::ContentType)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| "text/plain".into());
        let mut base = held.clone();
        if let StartLine::Request { method, .. } = &mut base.start {
            *method = Method::Invite;
        }
        base.headers.set(HeaderName::CSeq, "1 INVITE");
        base.headers.set(HeaderName::Contact, contact(shared));
        let offer = sdp(shared, &local_uri, "active", &accept, "sendonly");
        base.set_body(offer, Some("application/sdp"));
        let key = self.next;
        self.next += 1;
        self.deliveries.insert(
            key,
            Delivery {
                aor: aor.to_owned(),
                row: Box::new(row),
                held,
                invite: base.clone(),
                base,
                local_uri,
                dest: SocketAddr::from(([0, 0, 0, 0], 0)),
                reliable: false,
                dialog: None,
                rest,
            },
        );
        match self.next_contact(shared, key, None, now, txn) {
            None => Ok(()),
            Some(f) => Err(*f.row),
        }
    }

    /// Sends the INVITE of delivery `key` to its next contact. When none is left (or none
    /// could be sent to), the delivery ends with `failure` (a 480 if there was none).
    fn next_contact(
        &mut self,
        shared: &Shared,
        key: u64,
        failure: Option<Message>,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Option<Finished> {
        let d = self.deliveries.get_mut(&key)?;
        d.dialog = None;
        while let Some((b, dest, reliable)) = d.rest.pop_front() {
            let invite = routing::forward_copy(shared, &d.base, &b, reliable, txn);
            match txn.send_request(invite.clone(), dest, reliable, now) {
                Ok(cid) => {
                    (d.invite, d.dest, d.reliable) = (invite, dest, reliable);
                    self.invites.insert(cid, key);
                    return None;
                }
                Err(e) => tracing::debug!(error = %e.reason(), "large-message INVITE not sent"),
            }
        }
        let d = self.deliveries.remove(&key)?;
        let outcome = failure
            .unwrap_or_else(|| builder::local_response(&d.held, 480, "Temporarily Unavailable"));
        Some(Finished {
            aor: d.aor,
            row: d.row,
            outcome,
        })
    }

    /// A response on one of our client transactions: `Err(resp)` when it is none of ours;
    /// `Ok(Some)` when a delivery ended with it.
    #[allow(clippy::result_large_err)]
    pub(super) fn on_response(
        &mut self,
        shared: &Shared,
        done: Option<&actix::Recipient<StoreDone>>,
        id: ClientTxId,
        resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<Option<Finished>, Message> {
        let code = resp.status().unwrap_or(0);
        if self.byes.contains(&id) {
            if code >= 200 {
                self.byes.remove(&id);
            }
            return Ok(None);
        }
        if let Some(a) = self.acks.get(&id) {
            // A retransmission of a 2xx we acknowledged (RFC 3261 §13.2.2.4): the same ACK.
            if (200..300).contains(&code) {
                txn.send_stateless(&a.ack, a.dest, a.reliable);
            }
            return Ok(None);
        }
        let Some(&key) = self.invites.get(&id) else {
            return Err(resp);
        };
        if code < 200 {
            return Ok(None);
        }
        self.invites.remove(&id);
        if code >= 300 {
            // The transaction layer ACKed it (RFC 3261 §17.1.1.3).
            if super::unreachable(code) {
                tracing::debug!(code, "large-message INVITE failed: next contact");
                return Ok(self.next_contact(shared, key, Some(resp), now, txn));
            }
            let d = self.deliveries.remove(&key);
            return Ok(d.map(|d| Finished {
                aor: d.aor,
                row: d.row,
                outcome: resp,
            }));
        }
        let Some(d) = self.deliveries.get_mut(&key) else {
            return Ok(None);
        };
        // RFC 3261 §13.2.2.4: the UAC acknowledges the 2xx itself.
        let Ok(dialog) = Dialog::uac(&d.invite, &resp) else {
            tracing::debug!("large-message 2xx without a usable dialog");
            let d = self.deliveries.remove(&key);
            return Ok(d.map(|d| Finished {
                outcome: builder::local_response(&d.held, 488, "Not Acceptable Here"),
                aor: d.aor,
                row: d.row,
            }));
        };
        let (dest, reliable) = (d.dest, d.reliable);
        let ack = dialog.ack(1, self_via(shared, reliable, txn));
        txn.send_stateless(&ack, dest, reliable);
        let until = now + TimerConfig::default().t1 * 64;
        self.acks.insert(
            id,
            SentAck {
                ack,
                dest,
                reliable,
                until,
            },
        );
        let path = answered_path(&resp);
        let Some(d) = self.deliveries.get_mut(&key) else {
            return Ok(None);
        };
        let (Some(path), Some(done)) = (path, done.cloned()) else {
            // No MSRP stream in the answer: nothing can be sent; the device refused it.
            d.dialog = Some(dialog);
            return Ok(self.end_delivery(shared, key, Err(488), now, txn));
        };
        d.dialog = Some(dialog);
        let held = &d.held;
        // An MSRP Message-ID is an `ident` of at most 32 characters (RFC 4975 §9): ours is
        // made from the message's id (an IMDN id or Call-ID/CSeq may hold other characters)
        // and the row's key, so a resend of the same message gets the same one.
        let id = super::message_id(held);
        let h = cpm_engine::hash::fnv1a_extend(
            cpm_engine::hash::fnv1a(id.as_bytes()),
            &d.row.id.0.to_be_bytes(),
        );
        let msg = Outgoing {
            local: d.local_uri.clone(),
            peer_path: path,
            message_id: Bytes::from(format!("{h:016x}")),
            content_type: held
                .headers
                .get(&HeaderName::ContentType)
                .cloned()
                .unwrap_or_else(|| Bytes::from_static(b"text/plain")),
            body: held.body.clone(),
        };
        shared.msrp.deliver(msg, move |result| {
            done.do_send(StoreDone(StoreEvent::LargeSent { key, result }))
        });
        Ok(None)
    }

    /// The MSRP transfer of delivery `key` ended: our BYE, and the outcome. A device that
    /// could not be reached over MSRP (480) or did not answer (408) is passed over for the
    /// next contact.
    pub(super) fn end_delivery(
        &mut self,
        shared: &Shared,
        key: u64,
        result: Result<(), u16>,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Option<Finished> {
        let d = self.deliveries.get_mut(&key)?;
        if let Some(mut dialog) = d.dialog.take() {
            let bye = dialog.request(Method::Bye, self_via(shared, d.reliable, txn));
            if let Ok(cid) = txn.send_request(bye, d.dest, d.reliable, now) {
                self.byes.insert(cid);
            }
        }
        let outcome = match result {
            Ok(()) => builder::local_response(&d.held, 200, "OK"),
            Err(code) => {
                tracing::debug!(code, "large message not delivered over MSRP");
                let r =
                    builder::local_response(&d.held, code, cpm_engine::msrp::write::reason(code));
                if matches!(code, 408 | 480) {
                    return self.next_contact(shared, key, Some(r), now, txn);
                }
                r
            }
        };
        let d = self.deliveries.remove(&key)?;
        Some(Finished {
            aor: d.aor,
            row: d.row,
            outcome,
        })
    }
}

fn self_via(shared: &Shared, reliable: bool, txn: &mut TransactionLayer) -> Bytes {
    via_value(
        reliable,
        &shared.config.sip_listen.to_string(),
        &txn.new_branch(),
    )
}

/// What a sink does with each complete message: held for `aor` as the MESSAGE it stands for,
/// through the capped write of pager mode; the MSRP status answers once the write committed
/// (200; 403 for a full queue; 500 for a storage failure), and the worker hears of it
/// ([`StoreEvent::LargeHeld`]).
fn store_each(
    shared: &Shared,
    invite: &Message,
    aor: String,
    done: actix::Recipient<StoreDone>,
) -> crate::msrp::OnMessage {
    let storage = shared.storage.clone();
    let expiry = Duration::from_secs(shared.config.message_expiry);
    let cap = shared.config.message_user_cap as u64;
    let header = |n: HeaderName| {
        invite
            .headers
            .get(&n)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let (from, to, call_id) = (
        header(HeaderName::From),
        header(HeaderName::To),
        header(HeaderName::CallId),
    );
    let ruri = invite
        .request_uri()
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    let seq = Arc::new(AtomicU32::new(0));
    Box::new(move |msg: Complete, reply: Reply| {
        let n = seq.fetch_add(1, Relaxed) + 1;
        let content_type = msg
            .content_type
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| "text/plain".into());
        let head = format!(
            "MESSAGE {ruri} SIP/2.0\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: {n} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            msg.body.len()
        );
        let mut raw = Vec::with_capacity(head.len() + msg.body.len());
        raw.extend_from_slice(head.as_bytes());
        raw.extend_from_slice(&msg.body);
        let Ok(req) = cpm_engine::sip::parse(Bytes::from(raw)) else {
            let _ = reply.send(400);
            return;
        };
        let op = WriteOp::DeferCapped {
            message: deferred_record(&req, &aor, expiry, SystemTime::now()),
            cap,
        };
        let (who, done) = (aor.clone(), done.clone());
        let req = Box::new(req);
        let queued = storage.write(op, move |result| {
            let code = match &result {
                Ok(WriteResult::Deferred(_)) => 200,
                Ok(WriteResult::CapReached { .. }) => 403,
                _ => 500,
            };
            let _ = reply.send(code);
            done.do_send(StoreDone(StoreEvent::LargeHeld {
                aor: who,
                req,
                result,
            }));
        });
        if let Err(e) = queued {
            // The reply went with the callback, which is dropped: the sender gets 500.
            tracing::warn!(error = %e, "large message not held: storage busy");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(body: &str) -> Message {
        let raw = format!(
            "INVITE sip:bob@localhost SIP/2.0\r\nFrom: <sip:alice@localhost>;tag=1\r\n\
             To: <sip:bob@localhost>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        cpm_engine::sip::parse(Bytes::from(raw)).unwrap()
    }

    const HEAD: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";

    #[test]
    fn only_an_msrp_only_offer_is_large_message_mode() {
        let msrp = "m=message 9 TCP/MSRP *\r\na=path:msrp://127.0.0.1:9/s;tcp\r\n";
        let ok = invite(&format!("{HEAD}{msrp}a=setup:actpass\r\n"));
        let path = Bytes::from_static(b"msrp://127.0.0.1:9/s;tcp");
        assert_eq!(
            msrp_only_offer(&ok),
            Some(MsrpOffer {
                path: path.clone(),
                passive: false
            })
        );
        let audio = invite(&format!("{HEAD}{msrp}m=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(msrp_only_offer(&audio), None, "a chat with audio");
        let held_audio = invite(&format!("{HEAD}{msrp}m=audio 0 RTP/AVP 0\r\n"));
        assert!(msrp_only_offer(&held_audio).is_some(), "a refused stream");
        let passive = invite(&format!("{HEAD}{msrp}a=setup:passive\r\n"));
        assert_eq!(
            msrp_only_offer(&passive),
            Some(MsrpOffer {
                path,
                passive: true
            }),
            "we connect"
        );
        let tls = invite(&format!(
            "{HEAD}m=message 9 TCP/TLS/MSRP *\r\na=path:msrps://h:9/s;tcp\r\n"
        ));
        assert_eq!(msrp_only_offer(&tls), None);
        let no_path = invite(&format!("{HEAD}m=message 9 TCP/MSRP *\r\n"));
        assert_eq!(msrp_only_offer(&no_path), None);
    }
}
