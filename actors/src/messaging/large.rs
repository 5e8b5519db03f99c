//! Large message mode (issue 5; OMA CPM / RCS "large message": one message in an MSRP session
//! of its own, RFC 4975) for users who are offline: the SIP half of it. The MSRP half is
//! [`crate::msrp::MsrpSink`] and [`crate::msrp::MsrpPlane::deliver`].
//!
//! ```text
//!  receiving (recipient offline)            delivering (recipient registered)
//!  INVITE m=message only ─► 200 (our a=path,  held message > --message-max-size ─► INVITE to
//!   a=setup:passive) ◄─ ACK                    the device (our a=path, a=setup:active) ─► 2xx
//!  SEND chunks ─► sink ─► DeferCapped ─► 200   ─► ACK, connect, SEND chunks ─► 200 to the last
//!  (per message, after the commit)            ─► BYE; the held row is deleted as in pager mode
//!  BYE (or our BYE after LARGE_IDLE) ─► done   4xx/6xx or an MSRP error: failed (IMDN); 408,
//!                                              480, 5xx, unreachable: the run ends
//! ```
//!
//! A message taken this way is held as the pager MESSAGE it would have been (the INVITE's
//! From, To and Request-URI, the MSRP Content-Type and body), in the same queue and through
//! the same capped write; on delivery its size alone decides the mode (decision: no kind
//! column, so no migration; a small message that came over MSRP is delivered as a MESSAGE).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cpm_engine::msrp::assemble::Complete;
use cpm_engine::registrar::Aor;
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::dialog::{via_value, Dialog, DialogId};
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
}

/// A held message being delivered over a session cpmd originates.
struct Delivery {
    aor: String,
    row: Box<Row<DeferredId, DeferredMessage>>,
    /// The held request (what its outcome is reported against).
    held: Message,
    invite: Message,
    local_uri: Bytes,
    dest: SocketAddr,
    reliable: bool,
    dialog: Option<Dialog>,
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
    next: u64,
    next_idle_check: Option<Instant>,
}

/// The offer of a large-message session: its only active stream is `m=message ... TCP/MSRP`
/// with an `a=path`, and it does not ask us to connect (`a=setup:passive`). Returns the path.
fn msrp_only_offer(req: &Message) -> Option<Bytes> {
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
    (!passive && !path.is_empty()).then(|| Bytes::from(path))
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
        shared.config.store_and_forward
            && msrp_only_offer(req).is_some()
            && routing::local_user(shared, req)
                .is_ok_and(|aor| routing::contacts(shared, &aor, now).is_empty())
    }

    /// Answers a large-message INVITE as the recipient's stand-in: a sink on our MSRP plane,
    /// 200 with its path (`a=setup:passive`). `Err` is the response to send instead.
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
        let path = msrp_only_offer(req).ok_or_else(|| refuse(488, "Not Acceptable Here"))?;
        let done = done.ok_or_else(|| refuse(503, "Service Unavailable"))?;
        let uri = shared.msrp.fresh_uri(&shared.config.media_ip.to_string());
        let on_message = store_each(shared, req, aor.clone(), done);
        let sink = shared
            .msrp
            .open_sink(&uri, &path, shared.config.large_message_max, on_message)
            .map_err(|e| {
                tracing::debug!(error = %e, "large-message sink not opened");
                refuse(488, "Not Acceptable Here")
            })?;
        let tag = String::from_utf8_lossy(&txn.new_tag()).into_owned();
        let mut resp = builder::response_to_with_tag(req, 200, "OK", Some(&tag));
        resp.headers.push(HeaderName::Contact, contact(shared));
        let answer = sdp(shared, &uri, "passive", "*", "recvonly");
        resp.set_body(answer, Some("application/sdp"));
        let dialog =
            Dialog::uas(req, &resp, contact(shared)).map_err(|_| refuse(400, "Bad Request"))?;
        if let Err(e) = txn.respond(id, &resp, now) {
            tracing::debug!(error = %e.reason(), "large-message 200 not sent");
            return Ok(());
        }
        tracing::info!(to = %aor, "large-message session taken for an offline user");
        self.inbound.insert(
            dialog.id().clone(),
            Inbound {
                sink,
                dialog,
                dest: source,
                reliable,
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

    /// Ends the sessions idle for [`LARGE_IDLE`] with our BYE.
    pub(super) fn handle_timeout(
        &mut self,
        shared: &Shared,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if self.next_idle_check.is_none_or(|t| t > now) {
            return;
        }
        let idle: Vec<DialogId> = self
            .inbound
            .iter()
            .filter(|(_, s)| s.sink.idle_for(now) >= LARGE_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            if let Some(mut s) = self.inbound.remove(&k) {
                tracing::debug!("large-message session idle: BYE");
                let bye = s
                    .dialog
                    .request(Method::Bye, self.via(shared, s.reliable, txn));
                if let Ok(cid) = txn.send_request(bye, s.dest, s.reliable, now) {
                    self.byes.insert(cid);
                }
            }
        }
        self.next_idle_check = (!self.inbound.is_empty()).then(|| now + IDLE_CHECK);
    }

    /// When [`LargeMessages::handle_timeout`] wants to run.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_idle_check
    }

    fn via(&self, shared: &Shared, reliable: bool, txn: &mut TransactionLayer) -> Bytes {
        via_value(
            reliable,
            &shared.config.sip_listen.to_string(),
            &txn.new_branch(),
        )
    }

    // ---- delivering -----------------------------------------------------------------------

    /// Delivers held request `held` (already rewritten for redelivery) over a session cpmd
    /// originates to `aor`'s first reachable contact. `Err` gives the row back when no contact
    /// can be reached (the run ends).
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
        let Some((b, dest, reliable)) = routing::contacts(shared, &Aor::new(aor.to_owned()), now)
            .into_iter()
            .next()
        else {
            return Err(row);
        };
        let local_uri = shared.msrp.fresh_uri(&shared.config.media_ip.to_string());
        let accept = held
            .headers
            .get(&HeaderName::ContentType)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| "text/plain".into());
        let mut invite = held.clone();
        if let StartLine::Request { method, .. } = &mut invite.start {
            *method = Method::Invite;
        }
        invite.headers.set(HeaderName::CSeq, "1 INVITE");
        invite.headers.set(HeaderName::Contact, contact(shared));
        let offer = sdp(shared, &local_uri, "active", &accept, "sendonly");
        invite.set_body(offer, Some("application/sdp"));
        let invite = routing::forward_copy(shared, &invite, &b, reliable, txn);
        let cid = match txn.send_request(invite.clone(), dest, reliable, now) {
            Ok(cid) => cid,
            Err(e) => {
                tracing::debug!(error = %e.reason(), "large-message INVITE not sent");
                return Err(row);
            }
        };
        let key = self.next;
        self.next += 1;
        self.invites.insert(cid, key);
        self.deliveries.insert(
            key,
            Delivery {
                aor: aor.to_owned(),
                row: Box::new(row),
                held,
                invite,
                local_uri,
                dest,
                reliable,
                dialog: None,
            },
        );
        Ok(())
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
        txn: &mut TransactionLayer,
    ) -> Result<Option<Finished>, Message> {
        let code = resp.status().unwrap_or(0);
        if self.byes.contains(&id) {
            if code >= 200 {
                self.byes.remove(&id);
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
        let path = answered_path(&resp);
        let Some(d) = self.deliveries.get_mut(&key) else {
            return Ok(None);
        };
        let (Some(path), Some(done)) = (path, done.cloned()) else {
            // No MSRP stream in the answer: nothing can be sent; the device refused it.
            d.dialog = Some(dialog);
            return Ok(self.end_delivery(shared, key, Err(488), txn));
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

    /// The MSRP transfer of delivery `key` ended: our BYE, and the outcome.
    pub(super) fn end_delivery(
        &mut self,
        shared: &Shared,
        key: u64,
        result: Result<(), u16>,
        txn: &mut TransactionLayer,
    ) -> Option<Finished> {
        let mut d = self.deliveries.remove(&key)?;
        if let Some(dialog) = d.dialog.as_mut() {
            let bye = dialog.request(Method::Bye, self_via(shared, d.reliable, txn));
            if let Ok(cid) = txn.send_request(bye, d.dest, d.reliable, Instant::now()) {
                self.byes.insert(cid);
            }
        }
        let outcome = match result {
            Ok(()) => builder::local_response(&d.held, 200, "OK"),
            Err(code) => {
                tracing::debug!(code, "large message not delivered over MSRP");
                builder::local_response(&d.held, code, cpm_engine::msrp::write::reason(code))
            }
        };
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
        assert_eq!(
            msrp_only_offer(&ok).as_deref(),
            Some(&b"msrp://127.0.0.1:9/s;tcp"[..])
        );
        let audio = invite(&format!("{HEAD}{msrp}m=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(msrp_only_offer(&audio), None, "a chat with audio");
        let held_audio = invite(&format!("{HEAD}{msrp}m=audio 0 RTP/AVP 0\r\n"));
        assert!(msrp_only_offer(&held_audio).is_some(), "a refused stream");
        let passive = invite(&format!("{HEAD}{msrp}a=setup:passive\r\n"));
        assert_eq!(msrp_only_offer(&passive), None, "we would have to connect");
        let tls = invite(&format!(
            "{HEAD}m=message 9 TCP/TLS/MSRP *\r\na=path:msrps://h:9/s;tcp\r\n"
        ));
        assert_eq!(msrp_only_offer(&tls), None);
        let no_path = invite(&format!("{HEAD}m=message 9 TCP/MSRP *\r\n"));
        assert_eq!(msrp_only_offer(&no_path), None);
    }
}
