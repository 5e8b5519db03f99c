//! The message controller (CPM.md §4-5, fig. 5): pager-mode MESSAGE (RFC 3428) delivered to
//! every registered contact of its target as a stateful forking proxy (RFC 3261 §16): one
//! client transaction per contact, the first 2xx relayed at once, otherwise the best final
//! response once every branch has answered (§16.7).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use cpm_engine::sip::{builder, HeaderName, Message, StartLine};

use crate::routing;
use crate::shared::Shared;

/// One MESSAGE being delivered to every contact of its target (RFC 3261 §16.6-16.7).
struct Fork {
    /// Branches still without a final response.
    pending: usize,
    /// Whether a final response was relayed already (a 2xx).
    answered: bool,
    /// The best final response so far.
    best: Option<Message>,
}

/// The pager-mode deliveries of one worker.
#[derive(Default)]
pub struct MessageController {
    forks: HashMap<ServerTxId, Fork>,
    branches: HashMap<ClientTxId, ServerTxId>,
}

impl MessageController {
    /// Deliveries in progress.
    pub fn in_flight(&self) -> usize {
        self.forks.len()
    }

    /// Forgets every delivery (after a supervisor restart).
    pub fn reset(&mut self) {
        self.forks.clear();
        self.branches.clear();
    }

    /// A MESSAGE for a local user (server transaction `id`): forked to every contact, or the
    /// response to send at once (400/404 for no such user, 480 when none is reachable).
    pub fn on_message(
        &mut self,
        shared: &Shared,
        id: ServerTxId,
        req: &Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<(), Box<Message>> {
        // Max-Forwards was checked for every forwarded service by the caller (400, 483).
        let aor = routing::local_user(shared, req)?;
        if req.body.len() > shared.config.message_max_size {
            return Err(Box::new(too_large(req, shared.config.message_max_size)));
        }
        let targets = routing::contacts(shared, &aor, now);
        if targets.is_empty() {
            return Err(Box::new(builder::local_response(
                req,
                480,
                "Temporarily Unavailable",
            )));
        }
        let mut started = 0;
        for (b, dest, reliable) in targets {
            let fwd = routing::forward_copy(shared, req, &b, reliable, txn);
            match txn.send_request(fwd, dest, reliable, now) {
                Ok(cid) => {
                    self.branches.insert(cid, id);
                    started += 1;
                }
                Err(e) => tracing::debug!(error = %e.reason(), "branch not started"),
            }
        }
        if started == 0 {
            return Err(Box::new(builder::local_response(
                req,
                480,
                "Temporarily Unavailable",
            )));
        }
        self.forks.insert(
            id,
            Fork {
                pending: started,
                answered: false,
                best: None,
            },
        );
        Ok(())
    }

    /// A response on client transaction `id`: `Err(resp)` when it is none of ours, else the
    /// response to relay on the MESSAGE's server transaction, if one is due now.
    #[allow(clippy::result_large_err)]
    pub fn on_response(
        &mut self,
        id: ClientTxId,
        mut resp: Message,
    ) -> Result<Option<(ServerTxId, Message)>, Message> {
        let code = resp.status().unwrap_or(0);
        if !self.branches.contains_key(&id) {
            return Err(resp);
        }
        if code < 200 {
            return Ok(None); // provisional responses to MESSAGE are not relayed
        }
        let Some(server) = self.branches.remove(&id) else {
            return Ok(None);
        };
        let Some(fork) = self.forks.get_mut(&server) else {
            return Ok(None);
        };
        fork.pending = fork.pending.saturating_sub(1);
        // Our own Via is on top; the response continues with the rest (§16.7 step 9).
        resp.headers.remove_first_value(&HeaderName::Via);
        // §16.7 step 6: a 503 (here: a contact we could not reach, or a device that is
        // overloaded) is not forwarded upstream, where it would mean "this server is down".
        // The user cannot be reached just now: 480.
        if code == 503 {
            if let StartLine::Response { code, reason, .. } = &mut resp.start {
                *code = 480;
                *reason = Bytes::from_static(b"Temporarily Unavailable");
            }
        }
        let mut relay = None;
        if !fork.answered {
            if (200..300).contains(&code) {
                fork.answered = true;
                relay = Some(resp);
            } else if better(&resp, fork.best.as_ref()) {
                fork.best = Some(resp);
            }
        }
        if fork.pending == 0 {
            if let Some(done) = self.forks.remove(&server) {
                if !done.answered {
                    relay = done.best;
                }
            }
        }
        Ok(relay.map(|r| (server, r)))
    }
}

/// Large message mode (RFC 3428 §7; OMA CPM / GSMA RCS "large message mode"): a pager-mode
/// body over `max` bytes is refused with 413 (RFC 3261 §21.4.11), and a Warning (§20.43, 399
/// miscellaneous) tells the sender to send it in an MSRP session instead.
fn too_large(req: &Message, max: usize) -> Message {
    let mut r = builder::local_response(req, 413, "Request Entity Too Large");
    r.headers.push(
        HeaderName::Warning,
        format!(
            "399 cpmd \"Pager-mode body over {max} bytes: send it as a large message in an MSRP session (RFC 4975)\""
        ),
    );
    r
}

/// RFC 3261 §16.7 step 6: a 6xx beats everything; otherwise the lowest class wins, and within
/// a class the first response stays.
fn better(new: &Message, old: Option<&Message>) -> bool {
    let Some(old) = old else { return true };
    let (n, o) = (new.status().unwrap_or(500), old.status().unwrap_or(500));
    let rank = |c: u16| if c >= 600 { 0 } else { c / 100 };
    rank(n) < rank(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_response_ranking() {
        let r =
            |c: u16| cpm_engine::sip::parse(Bytes::from(format!("SIP/2.0 {c} X\r\n\r\n"))).unwrap();
        assert!(better(&r(404), Some(&r(503))));
        assert!(!better(&r(503), Some(&r(404))));
        assert!(better(&r(603), Some(&r(404))));
        assert!(!better(&r(486), Some(&r(404))));
    }
}
