//! The message controller (CPM.md §4-5, fig. 5): pager-mode MESSAGE (RFC 3428) delivered to
//! every registered contact of its target as a stateful forking proxy (RFC 3261 §16): one
//! client transaction per contact, the first 2xx relayed at once, otherwise the best final
//! response once every branch has answered (§16.7).
//!
//! **Store and forward.** A MESSAGE for a user who is offline, or whose every device failed to
//! take it (408, 480, 5xx) or answered none in `--message-delivery-timeout`, is held: written
//! to storage (`WriteOp::Defer`) and answered `202 Accepted` only once the write committed
//! (RFC 3428 §7: accepted, delivered later). When the user registers, one worker delivers the
//! held messages in arrival order, one at a time, each as a new request from this server to
//! every contact, and deletes it after a device's 2xx. A device that refuses one for good (4xx,
//! 6xx) fails it; an unreachable or silent one ends the run, to be retried at the next
//! REGISTER. While a user's queue is being delivered, new messages for the
//! user are held behind it, so the order is kept. Worker 0 sweeps expired messages and sends
//! the failure IMDN their senders asked for (RFC 5438 §5.1, `engine::imdn`).
//!
//! ```text
//!  MESSAGE ─► user offline? ─ yes ─► DeferCapped (one write: count, cap? 480) ────► 202
//!               │ no                                                  │
//!               ▼                                                     ▼ user registers
//!        fork to contacts ─► 2xx: relay         Pending (read, in order) ─► fork ─► 2xx: delete
//!               └─► 408/480/5xx everywhere: hold as above                  └─► next ...
//! ```
//!
//! **Large message mode** ([`large`]): an MSRP-only INVITE for an offline user (or one whose
//! devices are all unavailable: the session hands it back) is answered by cpmd as the MSRP
//! endpoint; each message it carries is held in the same queue, and a held message over
//! `--message-max-size` is delivered over a session cpmd originates, contact after contact.
//! A pager MESSAGE for a user whose large message is being received waits and is held after
//! it.
//!
//! Storage runs on its own threads ([`crate::storage`]); its answers come back to the worker
//! as [`StoreDone`] messages, so no worker ever waits for a disk.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::cpim::{self, CpimMessage};
use cpm_engine::deferred::{DeferredPolicy, Refusal};
use cpm_engine::imdn::{self, ImdnRequest};
use cpm_engine::registrar::Aor;
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use cpm_engine::sip::{builder, HeaderName, Message, StartLine};
use cpm_engine::store::{
    DeferredId, DeferredMessage, DeliveryState, Direction, Flags, ReadQuery, ReadResult, Row,
    StoragePolicy, StoreError, StoredMessage, WriteOp, WriteResult,
};

mod large;

use crate::charging::MessageEvent;
use crate::routing;
use crate::shared::Shared;

/// How often parked pager messages look whether the large message they wait for is done.
const PARK_POLL: Duration = Duration::from_millis(20);
/// The longest a pager message waits behind a large message being received: then it is held
/// anyway (well within the sender's 32 s transaction timeout).
const PARK_MAX: Duration = Duration::from_secs(10);

/// A pager MESSAGE waiting behind a large message its recipient is being sent.
struct Parked {
    tx: ServerTxId,
    req: Box<Message>,
    aor: String,
    until: Instant,
}

/// Held messages read per storage round trip while delivering.
const DELIVERY_BATCH: u32 = 64;
/// Expired messages removed per sweep.
const EXPIRY_BATCH: u32 = 1000;

/// A storage answer, carried back to the worker that asked.
#[derive(Debug)]
pub enum StoreEvent {
    /// A held message is durable (or failed to be).
    Held {
        /// The sender's transaction, to answer 202.
        tx: Option<ServerTxId>,
        /// The recipient.
        aor: String,
        /// The request (the response is built from it).
        req: Box<Message>,
        /// The fork whose delivery timeout held it, if that is why (its devices may still
        /// answer: see [`HeldCopy`]).
        fork: Option<u64>,
        /// Its key, or the failure.
        result: Result<WriteResult, StoreError>,
    },
    /// The next held messages of a user whose delivery run is going.
    Pending {
        /// The recipient.
        aor: String,
        /// The messages in arrival order.
        result: Result<ReadResult, StoreError>,
    },
    /// A delivered or refused held message left the queue.
    Removed {
        /// The recipient.
        aor: String,
        /// The message.
        id: DeferredId,
        /// Whether the delete committed.
        result: Result<WriteResult, StoreError>,
    },
    /// The held copy of a message a device took after the delivery timeout left the queue
    /// (see [`HeldCopy`]).
    CopyRemoved {
        /// The recipient.
        aor: String,
        /// The held message.
        id: DeferredId,
        /// Whether the delete committed.
        result: Result<WriteResult, StoreError>,
    },
    /// Expired messages, removed from the queue.
    Expired(Result<WriteResult, StoreError>),
    /// A message received in large message mode was held (the sender's MSRP status was sent
    /// by the sink already).
    LargeHeld {
        /// The recipient.
        aor: String,
        /// The MESSAGE it is held as.
        req: Box<Message>,
        /// Its key, or the failure.
        result: Result<WriteResult, StoreError>,
    },
    /// An MSRP-only INVITE whose session found every device of the recipient unavailable
    /// (408, 480, 5xx): taken as a large message for an offline user. Not a storage answer:
    /// it comes from the session actor, through the same mailbox.
    LargeHandBack {
        /// The INVITE's server transaction (nothing was answered on it but 100 Trying).
        tx: ServerTxId,
        /// The INVITE.
        invite: Box<Message>,
        /// Where it came from.
        source: std::net::SocketAddr,
        /// Over a reliable transport.
        reliable: bool,
    },
    /// The MSRP transfer of a held message to a device ended (`Err`: the status that ended it).
    LargeSent {
        /// The delivery.
        key: u64,
        /// The outcome.
        result: Result<(), u16>,
    },
}

/// A [`StoreEvent`] as an actor message for the worker.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub struct StoreDone(pub StoreEvent);

/// Why a fork was started, i.e. what its outcome is for.
enum Origin {
    /// A sender's MESSAGE relayed on its server transaction; `req` is kept so it can be held
    /// if no device takes it.
    Relay {
        tx: ServerTxId,
        req: Box<Message>,
        aor: String,
    },
    /// A held message delivered to a user who registered.
    Held {
        aor: String,
        row: Box<Row<DeferredId, DeferredMessage>>,
    },
    /// A MESSAGE the server sends itself (a failure IMDN): nobody waits for its outcome.
    Own,
}

/// One MESSAGE being delivered to every contact of its target (RFC 3261 §16.6-16.7).
struct Fork {
    origin: Origin,
    /// Branches still without a final response.
    pending: usize,
    /// Whether the outcome was acted on: a 2xx arrived, or the delivery timeout held it (then
    /// a [`HeldCopy`] remembers it).
    answered: bool,
    /// The best final response so far.
    best: Option<Message>,
}

/// The held copy of a message whose fork the delivery timeout ended while its devices could
/// still answer (decision 0016): a 2xx that comes later means the message was delivered, and
/// its held copy goes, so that the device does not get it twice. Kept until the fork's last
/// branch ends (then no device can answer any more) or the copy is gone.
enum HeldCopy {
    /// The hold's write is out (a sender's MESSAGE, held at the timeout).
    Writing,
    /// A device took the message (with this 2xx) while the hold was being written: the row
    /// goes when it is known.
    Taken(u16),
    /// The held row, ready to go if a device answers 2xx.
    Row {
        aor: String,
        id: DeferredId,
        record: Box<DeferredMessage>,
    },
}

/// A user's held messages being looked for (a probe) or delivered by this worker.
#[derive(Default)]
struct Run {
    /// Whether this worker delivers them (it holds the user's entry in `Shared::delivering`):
    /// a run starts as a probe and owns the user's delivery only once it found messages, so
    /// that a user with nothing held sees no change (new messages are held behind a run).
    owned: bool,
    /// A probe was asked again while its read was out: read once more if it finds nothing.
    more: bool,
    queue: VecDeque<Row<DeferredId, DeferredMessage>>,
    /// The key of the last message taken from storage (the next read starts after it).
    last: Option<DeferredId>,
}

/// The pager-mode deliveries of one worker.
pub struct MessageController {
    worker: usize,
    workers: usize,
    forks: HashMap<u64, Fork>,
    branches: HashMap<ClientTxId, u64>,
    next_fork: u64,
    /// When forks give up on their devices (`--message-delivery-timeout`), in time order (one
    /// timeout for all).
    deadlines: VecDeque<(Instant, u64)>,
    /// The held copies of timed-out forks, by fork.
    held_copies: HashMap<u64, HeldCopy>,
    runs: HashMap<String, Run>,
    /// Where storage answers go (the worker; set when it starts).
    store_done: Option<Recipient<StoreDone>>,
    next_expiry_sweep: Option<Instant>,
    salt: u64,
    /// Large message mode's sessions.
    large: large::LargeMessages,
    /// Pager messages waiting for a large message to their recipient, in arrival order.
    parked: VecDeque<Parked>,
    next_park_check: Option<Instant>,
}

/// What the worker must send after an input: responses on server transactions.
pub type Responses = Vec<(ServerTxId, Message)>;

impl MessageController {
    /// The controller of worker `worker` of `workers`.
    pub fn new(worker: usize, workers: usize, seed: u64) -> MessageController {
        MessageController {
            worker,
            workers,
            forks: HashMap::new(),
            branches: HashMap::new(),
            next_fork: 0,
            deadlines: VecDeque::new(),
            held_copies: HashMap::new(),
            runs: HashMap::new(),
            store_done: None,
            next_expiry_sweep: None,
            salt: seed ^ 0x6d65_7373_6167_6573,
            large: large::LargeMessages::default(),
            parked: VecDeque::new(),
            next_park_check: None,
        }
    }

    /// The worker's address for storage answers.
    pub fn set_worker(&mut self, addr: Recipient<StoreDone>) {
        self.store_done = Some(addr);
    }

    /// Deliveries in progress.
    pub fn in_flight(&self) -> usize {
        self.forks.len()
    }

    /// Forgets every delivery (after a supervisor restart); users whose held messages this
    /// worker was delivering can be delivered again at their next REGISTER.
    pub fn reset(&mut self, shared: &Shared) {
        self.forks.clear();
        self.branches.clear();
        self.deadlines.clear();
        self.held_copies.clear();
        self.large.clear();
        // Unanswered: their senders retransmit, or time out and send again.
        self.parked.clear();
        self.next_park_check = None;
        let mut delivering = shared.delivering.lock();
        for (aor, _) in self.runs.iter().filter(|(_, r)| r.owned) {
            delivering.remove(aor);
        }
        self.runs.clear();
    }

    fn policy(shared: &Shared) -> DeferredPolicy {
        let c = &shared.config;
        DeferredPolicy {
            expiry: Duration::from_secs(c.message_expiry),
            per_user_cap: c.message_user_cap,
            max_size: c.message_max_size,
        }
    }

    // ---- a MESSAGE from a sender ----------------------------------------------------------

    /// A MESSAGE for a local user (server transaction `id`): forked to every contact, or held,
    /// or the response to send at once (400/404 for no such user, 413 for a body too large for
    /// pager mode, 480 when the user is offline and store-and-forward is off).
    pub fn on_message(
        &mut self,
        shared: &Shared,
        id: ServerTxId,
        req: &Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<(), Box<Message>> {
        // Max-Forwards was checked for every forwarded service by the caller (400, 483).
        if shared.config.test_hooks {
            fault_hook(shared, req);
        }
        let aor = routing::local_user(shared, req)?;
        if let Err(refusal) = Self::policy(shared).admit(0, req.body.len()) {
            return Err(Box::new(refused(req, refusal)));
        }
        note_imdn(shared, req);
        let aor = aor_string(&aor);
        let hold = shared.config.store_and_forward;
        // Behind a large message the user is being sent over MSRP right now (it is held once
        // complete): the order is kept (see `release_parked`).
        let behind_large =
            shared.msrp.receiving(aor.as_bytes()) || self.parked.iter().any(|p| p.aor == aor);
        if hold && behind_large {
            tracing::debug!(to = %aor, "pager message waits for a large message being received");
            self.parked.push_back(Parked {
                tx: id,
                req: Box::new(req.clone()),
                aor,
                until: now + PARK_MAX,
            });
            self.next_park_check.get_or_insert(now + PARK_POLL);
            return Ok(());
        }
        // Behind the held messages being delivered now: keeps the order.
        if hold && shared.delivering.lock().contains_key(&aor) {
            return self.hold(shared, Some(id), req.clone(), aor, None);
        }
        let origin = Origin::Relay {
            tx: id,
            req: Box::new(req.clone()),
            aor: aor.clone(),
        };
        if self.fork(shared, origin, req, &aor, now, txn) > 0 {
            return Ok(());
        }
        if hold {
            return self.hold(shared, Some(id), req.clone(), aor, None);
        }
        Err(Box::new(builder::local_response(
            req,
            480,
            "Temporarily Unavailable",
        )))
    }

    /// Sends `req` to every reachable contact of `aor` as one fork: how many branches started.
    fn fork(
        &mut self,
        shared: &Shared,
        origin: Origin,
        req: &Message,
        aor: &str,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> usize {
        let fork_id = self.next_fork;
        let mut started = 0;
        for (b, dest, reliable) in routing::contacts(shared, &Aor::new(aor.to_owned()), now) {
            let fwd = routing::forward_copy(shared, req, &b, reliable, txn);
            match txn.send_request(fwd, dest, reliable, now) {
                Ok(cid) => {
                    self.branches.insert(cid, fork_id);
                    started += 1;
                }
                Err(e) => tracing::debug!(error = %e.reason(), "branch not started"),
            }
        }
        if started > 0 {
            self.next_fork += 1;
            let timeout = shared.config.message_delivery_timeout;
            if !matches!(origin, Origin::Own) && shared.config.store_and_forward && timeout > 0 {
                self.deadlines
                    .push_back((now + Duration::from_secs(timeout), fork_id));
            }
            self.forks.insert(
                fork_id,
                Fork {
                    origin,
                    pending: started,
                    answered: false,
                    best: None,
                },
            );
        }
        started
    }

    /// A response on client transaction `id`: `Err(resp)` when it is none of ours, else the
    /// responses to send now.
    #[allow(clippy::result_large_err)]
    pub fn on_response(
        &mut self,
        shared: &Shared,
        id: ClientTxId,
        resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<Responses, Message> {
        let mut resp =
            match self
                .large
                .on_response(shared, self.store_done.as_ref(), id, resp, now, txn)
            {
                Ok(finished) => {
                    let mut out = Vec::new();
                    if let Some(f) = finished {
                        self.on_large_finished(shared, f, now, txn, &mut out);
                    }
                    return Ok(out);
                }
                Err(resp) => resp,
            };
        let code = resp.status().unwrap_or(0);
        let Some(&fork_id) = self.branches.get(&id) else {
            return Err(resp);
        };
        if code < 200 {
            return Ok(Vec::new()); // provisional responses to MESSAGE are not relayed
        }
        self.branches.remove(&id);
        let Some(fork) = self.forks.get_mut(&fork_id) else {
            return Ok(Vec::new());
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
        let mut out = Vec::new();
        let mut outcome = None;
        // A 2xx after the outcome: another device's (nothing to do) or one after the delivery
        // timeout (its held copy goes).
        let late_2xx = fork.answered && (200..300).contains(&code);
        if !fork.answered {
            if (200..300).contains(&code) {
                fork.answered = true;
                outcome = Some(resp);
            } else if better(&resp, fork.best.as_ref()) {
                fork.best = Some(resp);
            }
        }
        let done = fork.pending == 0;
        if late_2xx {
            self.take_held_copy(shared, fork_id, code);
        }
        if done && matches!(self.held_copies.get(&fork_id), Some(HeldCopy::Row { .. })) {
            // No device of this fork can answer any more: the held copy stays held.
            self.held_copies.remove(&fork_id);
        }
        if outcome.is_some() {
            // A 2xx: acted on at once; the fork stays until its other branches end.
            let origin = if done {
                self.forks.remove(&fork_id).map(|f| f.origin)
            } else {
                self.forks
                    .get_mut(&fork_id)
                    .map(|f| std::mem::replace(&mut f.origin, Origin::Own))
            };
            if let (Some(origin), Some(r)) = (origin, outcome) {
                self.on_outcome(shared, origin, r, now, txn, &mut out);
            }
        } else if done {
            if let Some(f) = self.forks.remove(&fork_id) {
                if !f.answered {
                    if let Some(best) = f.best {
                        self.on_outcome(shared, f.origin, best, now, txn, &mut out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// What a fork's final outcome (`resp`: the 2xx, or the best failure) means for its origin.
    fn on_outcome(
        &mut self,
        shared: &Shared,
        origin: Origin,
        resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
        out: &mut Responses,
    ) {
        let code = resp.status().unwrap_or(500);
        let ok = (200..300).contains(&code);
        match origin {
            Origin::Relay { tx, req, aor } => {
                if !ok && shared.config.store_and_forward && unreachable(code) {
                    if let Err(r) = self.hold(shared, Some(tx), *req, aor, None) {
                        out.push((tx, *r));
                    }
                } else {
                    if ok {
                        store_copies(shared, &req, &aor, DeliveryState::Delivered);
                    }
                    let outcome = if ok { "delivered" } else { "failed" };
                    charge(shared, &req, &aor, outcome, Some(code));
                    out.push((tx, resp));
                }
            }
            Origin::Held { aor, row } => {
                if ok {
                    shared.metrics[self.worker].held_delivered();
                    charge_held(shared, &row.record, "delivered-held", Some(code));
                    self.finish_held(shared, &aor, &row, DeliveryState::Delivered);
                } else if unreachable(code) {
                    // The device is not there after all: the rest waits for the next REGISTER.
                    self.end_run(shared, &aor);
                } else {
                    // Refused for good by the user's devices (RFC 5438 §5.1: the server gives
                    // up on it and tells the sender, if asked).
                    tracing::info!(to = %aor, code, "held message refused by the recipient");
                    shared.metrics[self.worker].held_failed();
                    charge_held(shared, &row.record, "refused", Some(code));
                    self.finish_held(shared, &aor, &row, DeliveryState::Failed);
                    self.send_failure_imdn(shared, &row.record, now, txn);
                }
                // The run goes on once the removal committed (StoreEvent::Removed), so no later
                // read, by this run or the next, can see the message again.
            }
            Origin::Own => {}
        }
    }

    // ---- holding --------------------------------------------------------------------------

    /// Holds `req` for `aor`: one write that counts what is held for the user and, under the
    /// per-user cap, adds it, in one transaction; the 202 (or the 480 of a full queue) follows
    /// in [`MessageController::on_store`]. `Err` is the response to send now. `fork`: the fork
    /// whose delivery timeout holds it (see [`HeldCopy`]).
    fn hold(
        &mut self,
        shared: &Shared,
        tx: Option<ServerTxId>,
        req: Message,
        aor: String,
        fork: Option<u64>,
    ) -> Result<(), Box<Message>> {
        let Some(done) = self.store_done.clone() else {
            return Err(Box::new(unavailable(&req)));
        };
        let policy = Self::policy(shared);
        let op = WriteOp::DeferCapped {
            message: deferred_record(&req, &aor, policy.expiry, SystemTime::now()),
            cap: policy.per_user_cap as u64,
        };
        let held = Box::new(req);
        let copy = held.clone();
        shared
            .storage
            .write(op, move |result| {
                done.do_send(StoreDone(StoreEvent::Held {
                    tx,
                    aor,
                    req: copy,
                    fork,
                    result,
                }))
            })
            .map_err(|e| {
                tracing::warn!(error = %e, "message not held: storage busy");
                Box::new(unavailable(&held))
            })?;
        if let Some(fork) = fork {
            self.held_copies.insert(fork, HeldCopy::Writing);
        }
        Ok(())
    }

    /// A storage answer (see [`StoreEvent`]): the responses to send.
    pub fn on_store(
        &mut self,
        shared: &Shared,
        event: StoreEvent,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Responses {
        let mut out = Vec::new();
        match event {
            StoreEvent::Held {
                tx,
                aor,
                req,
                fork,
                result,
            } => match result {
                Ok(WriteResult::Deferred(id)) => {
                    tracing::debug!(to = %aor, id = %id, "message held");
                    shared.metrics[self.worker].held();
                    // RFC 3428 §7: 202 Accepted, delivered later.
                    if let Some(tx) = tx {
                        store_copies(shared, &req, &aor, DeliveryState::Stored);
                        charge(shared, &req, &aor, "held", Some(202));
                        out.push((tx, builder::local_response(&req, 202, "Accepted")));
                    }
                    if let Some(fork) = fork {
                        // Held at the delivery timeout: its devices did not answer in time,
                        // so it waits for the user's next REGISTER (not tried again at once);
                        // a 2xx they send meanwhile takes the held copy away.
                        let record = deferred_record(&req, &aor, Duration::ZERO, SystemTime::now());
                        self.on_held_copy(shared, fork, aor, id, record);
                    } else if !routing::contacts(shared, &Aor::new(aor.clone()), now).is_empty() {
                        self.start_run(shared, &aor);
                    }
                }
                Ok(WriteResult::CapReached { queued }) => {
                    tracing::info!(to = %aor, queued, "message refused: the recipient's queue is full");
                    fork.map(|f| self.held_copies.remove(&f));
                    if let Some(tx) = tx {
                        let cap = shared.config.message_user_cap;
                        charge(shared, &req, &aor, "failed", Some(480));
                        out.push((tx, refused(&req, Refusal::QueueFull { cap })));
                    }
                }
                other => {
                    tracing::warn!(to = %aor, result = ?other, "message could not be held");
                    fork.map(|f| self.held_copies.remove(&f));
                    if let Some(tx) = tx {
                        let r = builder::local_response(&req, 500, "Message Could Not Be Stored");
                        out.push((tx, r));
                    }
                }
            },
            StoreEvent::Pending { aor, result } => match result {
                Ok(ReadResult::Deferred(rows)) => self.on_pending(shared, &aor, rows, now, txn),
                other => {
                    tracing::warn!(to = %aor, result = ?other, "held messages could not be read");
                    self.end_run(shared, &aor);
                }
            },
            StoreEvent::Removed { aor, id, result } => match result {
                Ok(_) => self.deliver_next(shared, &aor, now, txn),
                Err(e) => {
                    // Left in the queue: delivered again at the next REGISTER (a duplicate
                    // rather than a loss).
                    tracing::warn!(id = %id, error = %e, "held message not removed");
                    self.end_run(shared, &aor);
                }
            },
            StoreEvent::CopyRemoved { aor, id, result } => match result {
                Ok(_) => shared.metrics[self.worker].held_delivered(),
                Err(e) => {
                    tracing::warn!(to = %aor, id = %id, error = %e, "held copy not removed: sent again at the next REGISTER");
                }
            },
            StoreEvent::Expired(result) => match result {
                Ok(WriteResult::Expired(rows)) => {
                    if rows.len() >= EXPIRY_BATCH as usize {
                        // A full batch: more may have expired; sweep again at once.
                        self.next_expiry_sweep = Some(now);
                    }
                    for row in rows {
                        tracing::info!(to = %row.record.recipient, from = %row.record.sender, "held message expired");
                        shared.metrics[self.worker].held_expired();
                        charge_held(shared, &row.record, "expired", None);
                        if let Ok(held) = cpm_engine::sip::parse(row.record.request.clone()) {
                            set_state(shared, &message_id(&held), DeliveryState::Failed);
                        }
                        self.send_failure_imdn(shared, &row.record, now, txn);
                    }
                }
                other => tracing::warn!(result = ?other, "expiry sweep failed"),
            },
            StoreEvent::LargeHeld { aor, req, result } => match result {
                Ok(WriteResult::Deferred(id)) => {
                    tracing::debug!(to = %aor, id = %id, "large message held");
                    shared.metrics[self.worker].held();
                    store_copies(shared, &req, &aor, DeliveryState::Stored);
                    charge(shared, &req, &aor, "held", Some(200));
                    if !routing::contacts(shared, &Aor::new(aor.clone()), now).is_empty() {
                        self.start_run(shared, &aor);
                    }
                }
                other => {
                    tracing::info!(to = %aor, result = ?other, "large message not held");
                    charge(shared, &req, &aor, "failed", None);
                }
            },
            StoreEvent::LargeHandBack {
                tx,
                invite,
                source,
                reliable,
            } => {
                tracing::info!("large-message INVITE: every device unavailable, taken by cpmd");
                let done = self.store_done.clone();
                let taken = self
                    .large
                    .accept(shared, done, tx, &invite, source, reliable, txn, now);
                if let Err(r) = taken {
                    out.push((tx, *r));
                }
            }
            StoreEvent::LargeSent { key, result } => {
                if let Some(f) = self.large.end_delivery(shared, key, result, now, txn) {
                    self.on_large_finished(shared, f, now, txn, &mut out);
                }
            }
        }
        out
    }

    /// A held message's delivery over MSRP ended: its outcome as a fork's would be.
    fn on_large_finished(
        &mut self,
        shared: &Shared,
        f: large::Finished,
        now: Instant,
        txn: &mut TransactionLayer,
        out: &mut Responses,
    ) {
        let origin = Origin::Held {
            aor: f.aor,
            row: f.row,
        };
        self.on_outcome(shared, origin, f.outcome, now, txn, out);
    }

    // ---- large message mode ---------------------------------------------------------------

    /// Whether an INVITE is one of large message mode that cpmd answers itself (an MSRP-only
    /// offer to a local user who is offline, store-and-forward on).
    pub fn large_wanted(&self, shared: &Shared, req: &Message, now: Instant) -> bool {
        large::LargeMessages::wanted(shared, req, now)
    }

    /// Answers a large-message INVITE (see [`MessageController::large_wanted`]) as the MSRP
    /// endpoint; `Err` is the response to send instead.
    #[allow(clippy::too_many_arguments)]
    pub fn on_large_invite(
        &mut self,
        shared: &Shared,
        id: ServerTxId,
        req: &Message,
        source: std::net::SocketAddr,
        reliable: bool,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<(), Box<Message>> {
        let done = self.store_done.clone();
        self.large
            .accept(shared, done, id, req, source, reliable, txn, now)
    }

    /// Where a session hands back an INVITE that large message mode takes when the user's
    /// devices are all unavailable (an MSRP-only offer, store-and-forward on); `None`: the
    /// session answers it whatever happens.
    pub fn large_hand_back(&self, shared: &Shared, req: &Message) -> Option<Recipient<StoreDone>> {
        large::LargeMessages::may_take(shared, req)
            .then(|| self.store_done.clone())
            .flatten()
    }

    /// A request in one of the large-message dialogs: its response (`None`: not one of them).
    pub fn on_dialog_request(&mut self, req: &Message) -> Option<Message> {
        self.large.on_request(req)
    }

    /// The ACK of a 2xx outside any session: whether it was one of a large-message session.
    pub fn on_ack(&mut self, ack: &Message) -> bool {
        self.large.on_ack(ack)
    }

    // ---- delivering held messages ---------------------------------------------------------

    /// A user registered (a binding was added or refreshed): deliver what is held for them.
    pub fn on_registered(&mut self, shared: &Shared, aor: &Aor) {
        if shared.config.store_and_forward {
            self.start_run(shared, &aor_string(aor));
        }
    }

    /// Looks for `aor`'s held messages to deliver them here, unless a worker delivers them
    /// already (then it is told that more may have arrived).
    fn start_run(&mut self, shared: &Shared, aor: &str) {
        if let Some(more) = shared.delivering.lock().get_mut(aor) {
            *more = true;
            return;
        }
        if let Some(probe) = self.runs.get_mut(aor) {
            probe.more = true;
            return;
        }
        self.runs.insert(aor.to_owned(), Run::default());
        self.read_more(shared, aor, None);
    }

    /// Held messages were read for `aor`: a probe that found some takes over the user's
    /// delivery (unless another worker did meanwhile); then they are delivered in order.
    fn on_pending(
        &mut self,
        shared: &Shared,
        aor: &str,
        rows: Vec<Row<DeferredId, DeferredMessage>>,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        let Some(run) = self.runs.get_mut(aor) else {
            return;
        };
        if !run.owned {
            if rows.is_empty() {
                if std::mem::take(&mut run.more) {
                    return self.read_more(shared, aor, None);
                }
                self.runs.remove(aor);
                return;
            }
            let mut delivering = shared.delivering.lock();
            if let Some(more) = delivering.get_mut(aor) {
                // Another worker delivers them.
                *more = true;
                drop(delivering);
                self.runs.remove(aor);
                return;
            }
            delivering.insert(aor.to_owned(), false);
            run.owned = true;
        }
        if rows.is_empty() {
            return self.end_run(shared, aor);
        }
        run.last = rows.last().map(|r| r.id);
        run.queue.extend(rows);
        self.deliver_next(shared, aor, now, txn);
    }

    fn read_more(&mut self, shared: &Shared, aor: &str, after: Option<DeferredId>) {
        let Some(done) = self.store_done.clone() else {
            return self.end_run(shared, aor);
        };
        let q = ReadQuery::Deferred {
            recipient: aor.to_owned(),
            after,
            limit: DELIVERY_BATCH,
        };
        let who = aor.to_owned();
        let read = shared.storage.read(q, move |result| {
            done.do_send(StoreDone(StoreEvent::Pending { aor: who, result }))
        });
        if let Err(e) = read {
            tracing::warn!(error = %e, "held messages not read: storage busy");
            self.end_run(shared, aor);
        }
    }

    /// Sends the next held message of `aor`'s run, or reads more.
    fn deliver_next(
        &mut self,
        shared: &Shared,
        aor: &str,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        let Some(run) = self.runs.get_mut(aor) else {
            return;
        };
        let Some(row) = run.queue.pop_front() else {
            let after = run.last;
            return self.read_more(shared, aor, after);
        };
        if row.record.expires_at <= unix_ms(SystemTime::now()) {
            // Expired while waiting: the sweep fails it (and tells the sender); never both
            // delivered and reported failed.
            return self.deliver_next(shared, aor, now, txn);
        }
        let Ok(held) = cpm_engine::sip::parse(row.record.request.clone()) else {
            // Only what parsed was ever held; a row that does not is dropped, not retried.
            tracing::error!(id = %row.id, "held message does not parse: dropped");
            return self.finish_held(shared, aor, &row, DeliveryState::Failed);
        };
        let req = self.redelivery(shared, held);
        if req.body.len() > shared.config.message_max_size {
            // Large message mode: over a session of its own (the run goes on after it).
            if let Err(row) = self.large.deliver(shared, aor, row, req, now, txn) {
                tracing::debug!(id = %row.id, "large message not sent: offline again");
                self.end_run(shared, aor);
            }
            return;
        }
        let origin = Origin::Held {
            aor: aor.to_owned(),
            row: Box::new(row),
        };
        if self.fork(shared, origin, &req, aor, now, txn) == 0 {
            // Offline again: everything stays for the next REGISTER.
            self.end_run(shared, aor);
        }
    }

    /// A held message is done with: out of the queue (the run continues when that committed,
    /// [`StoreEvent::Removed`]), and the state of its stored copies moved.
    fn finish_held(
        &mut self,
        shared: &Shared,
        aor: &str,
        row: &Row<DeferredId, DeferredMessage>,
        state: DeliveryState,
    ) {
        let removed = |aor, id, result| StoreEvent::Removed { aor, id, result };
        if !self.remove_held(shared, aor, row.id, &row.record, state, removed) {
            self.end_run(shared, aor);
        }
    }

    /// Moves the stored copies of held message `id` of `aor` to `state` and deletes it from
    /// the queue; `event` is the storage answer that follows. False if it could not be asked
    /// (storage busy or not started; logged).
    fn remove_held(
        &self,
        shared: &Shared,
        aor: &str,
        id: DeferredId,
        record: &DeferredMessage,
        state: DeliveryState,
        event: fn(String, DeferredId, Result<WriteResult, StoreError>) -> StoreEvent,
    ) -> bool {
        if let Ok(held) = cpm_engine::sip::parse(record.request.clone()) {
            set_state(shared, &message_id(&held), state);
        }
        let Some(done) = self.store_done.clone() else {
            return false;
        };
        let who = aor.to_owned();
        let queued = shared
            .storage
            .write(WriteOp::DeleteDeferred { id }, move |result| {
                done.do_send(StoreDone(event(who, id, result)))
            });
        if let Err(e) = &queued {
            tracing::warn!(id = %id, error = %e, "held message not removed: storage busy");
        }
        queued.is_ok()
    }

    /// The held request as this server sends it now: a new transaction of a new Call-ID this
    /// worker owns (the sender's transaction ended with the 202), From, To, body and the
    /// sender's other headers as they were.
    fn redelivery(&mut self, shared: &Shared, mut req: Message) -> Message {
        for name in [HeaderName::Via, HeaderName::Route, HeaderName::RecordRoute] {
            req.headers.remove(&name);
        }
        let call_id = routing::owned_call_id(shared, self.worker, self.workers, &mut self.salt);
        req.headers.set(HeaderName::CallId, call_id);
        req.headers.set(HeaderName::CSeq, "1 MESSAGE");
        req.headers.set(HeaderName::MaxForwards, "70");
        req
    }

    /// The run stops (its queue is empty, or the user is unreachable, or storage failed),
    /// unless the user registered again or more was held meanwhile: then it starts over from
    /// the oldest held message.
    fn end_run(&mut self, shared: &Shared, aor: &str) {
        if !self.runs.get(aor).is_some_and(|r| r.owned) {
            self.runs.remove(aor);
            return;
        }
        let again = {
            let mut delivering = shared.delivering.lock();
            match delivering.get_mut(aor) {
                Some(more) if *more => {
                    *more = false;
                    true
                }
                _ => {
                    delivering.remove(aor);
                    false
                }
            }
        };
        if again {
            let run = Run {
                owned: true,
                ..Run::default()
            };
            self.runs.insert(aor.to_owned(), run);
            self.read_more(shared, aor, None);
        } else {
            self.runs.remove(aor);
        }
    }

    // ---- expiry and failure notifications -------------------------------------------------

    /// Parked pager messages whose large message is done (stored, refused or dropped) or
    /// that waited [`PARK_MAX`] are held, in arrival order: always held, never forked at
    /// once, so they come after the large message in the user's queue (its row committed
    /// before the sink stopped counting it) and a delivery run takes them in that order.
    fn release_parked(&mut self, shared: &Shared, now: Instant, out: &mut Responses) {
        if self.next_park_check.is_none_or(|t| t > now) {
            return;
        }
        let mut waiting = VecDeque::new();
        for p in std::mem::take(&mut self.parked) {
            let blocked = waiting.iter().any(|w: &Parked| w.aor == p.aor)
                || (p.until > now && shared.msrp.receiving(p.aor.as_bytes()));
            if blocked {
                waiting.push_back(p);
            } else if let Err(r) = self.hold(shared, Some(p.tx), *p.req, p.aor, None) {
                out.push((p.tx, *r));
            }
        }
        self.parked = waiting;
        self.next_park_check = (!self.parked.is_empty()).then(|| now + PARK_POLL);
    }

    /// Periodic work: idle large-message sessions end, parked pager messages go on, and
    /// worker 0 removes expired held messages (their failure IMDNs follow). Returns the
    /// responses to send.
    pub fn handle_timeout(
        &mut self,
        shared: &Shared,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Responses {
        let mut out = Vec::new();
        self.large.handle_timeout(shared, now, txn);
        self.expire_forks(shared, now, &mut out);
        self.release_parked(shared, now, &mut out);
        self.sweep_expired(shared, now);
        out
    }

    /// Forks no device answered within `--message-delivery-timeout` end as if every device
    /// had failed (408): a sender's MESSAGE is held and its sender gets the 202 now; a held
    /// message's delivery run stops, to go on at the next REGISTER (at once if the user
    /// registered meanwhile). Waiting for the branches' own Timer F (32 s, RFC 3261
    /// §17.1.2.2) would answer the sender when its own transaction has timed out too
    /// (RFC 4321 §1.1: a non-INVITE answered that late is answered to nobody), and would stop
    /// the user's queue for as long: a device that vanished without unregistering is an
    /// everyday case for a mobile user. A device that answers 2xx after that takes the held
    /// copy away ([`HeldCopy`]).
    fn expire_forks(&mut self, shared: &Shared, now: Instant, out: &mut Responses) {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(fork) = self.forks.get_mut(&id) else {
                continue; // answered or failed in time
            };
            if fork.answered {
                continue;
            }
            fork.answered = true;
            tracing::debug!(
                branches = fork.pending,
                "no device answered a MESSAGE in time"
            );
            match std::mem::replace(&mut fork.origin, Origin::Own) {
                // What on_outcome does for a sender's MESSAGE every device failed (408),
                // remembering the fork for a 2xx that comes later.
                Origin::Relay { tx, req, aor } => {
                    if let Err(r) = self.hold(shared, Some(tx), *req, aor, Some(id)) {
                        out.push((tx, *r));
                    }
                }
                Origin::Held { aor, row } => {
                    // What on_outcome does for a held message's 408; the row is kept in
                    // mind for a 2xx that comes later.
                    self.end_run(shared, &aor);
                    let copy = HeldCopy::Row {
                        aor,
                        id: row.id,
                        record: Box::new(row.record),
                    };
                    self.held_copies.insert(id, copy);
                }
                Origin::Own => {}
            }
        }
    }

    /// The hold of timed-out fork `fork` committed as row `id` of `aor`'s queue.
    fn on_held_copy(
        &mut self,
        shared: &Shared,
        fork: u64,
        aor: String,
        id: DeferredId,
        record: DeferredMessage,
    ) {
        match self.held_copies.remove(&fork) {
            Some(HeldCopy::Taken(code)) => self.drop_held_copy(shared, &aor, id, &record, code),
            Some(HeldCopy::Writing) if self.forks.contains_key(&fork) => {
                let copy = HeldCopy::Row {
                    aor,
                    id,
                    record: Box::new(record),
                };
                self.held_copies.insert(fork, copy);
            }
            // Every branch ended without a 2xx: it stays held.
            _ => {}
        }
    }

    /// A device of timed-out fork `fork` answered `code` (2xx) after all.
    fn take_held_copy(&mut self, shared: &Shared, fork: u64, code: u16) {
        match self.held_copies.remove(&fork) {
            Some(HeldCopy::Row { aor, id, record }) => {
                self.drop_held_copy(shared, &aor, id, &record, code)
            }
            Some(HeldCopy::Writing) => {
                self.held_copies.insert(fork, HeldCopy::Taken(code));
            }
            Some(taken @ HeldCopy::Taken(_)) => {
                self.held_copies.insert(fork, taken);
            }
            None => {}
        }
    }

    /// Held row `id` of `aor` was delivered by a device's late 2xx (`code`): out of the
    /// queue (counted as a held message delivered once that committed,
    /// [`StoreEvent::CopyRemoved`]), charged so, its stored copies delivered.
    /// A delivery run that already sent it sends it twice (decision 0016); one of this worker
    /// that has it queued skips it.
    fn drop_held_copy(
        &mut self,
        shared: &Shared,
        aor: &str,
        id: DeferredId,
        record: &DeferredMessage,
        code: u16,
    ) {
        tracing::info!(to = %aor, id = %id, "a device took a message after its delivery timeout: its held copy goes");
        if let Some(run) = self.runs.get_mut(aor) {
            run.queue.retain(|r| r.id != id);
        }
        charge_held(shared, record, "delivered-held", Some(code));
        let removed = |aor, id, result| StoreEvent::CopyRemoved { aor, id, result };
        // Not asked: it stays held and is sent again at the next REGISTER (logged).
        let _ = self.remove_held(shared, aor, id, record, DeliveryState::Delivered, removed);
    }

    fn sweep_expired(&mut self, shared: &Shared, now: Instant) {
        if self.worker != 0 || !shared.config.store_and_forward {
            return;
        }
        let every = sweep_interval(shared.config.message_expiry);
        match self.next_expiry_sweep {
            None => self.next_expiry_sweep = Some(now + every),
            Some(t) if t <= now => {
                self.next_expiry_sweep = Some(now + every);
                let Some(done) = self.store_done.clone() else {
                    return;
                };
                let op = WriteOp::ExpireDeferred {
                    now: unix_ms(SystemTime::now()),
                    limit: EXPIRY_BATCH,
                };
                let queued = shared
                    .storage
                    .write(op, move |r| done.do_send(StoreDone(StoreEvent::Expired(r))));
                if let Err(e) = queued {
                    tracing::warn!(error = %e, "expiry sweep not queued");
                }
            }
            Some(_) => {}
        }
    }

    /// When [`MessageController::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_expiry_sweep,
            self.large.poll_timeout(),
            self.next_park_check,
            self.deadlines.front().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The server gave up on `held`: the negative delivery IMDN (RFC 5438 §5.1, §9) to its
    /// sender when one was asked for, sent like any MESSAGE to a local user (held in turn if
    /// the sender is offline). Senders of other domains are not reached (no outbound routing).
    fn send_failure_imdn(
        &mut self,
        shared: &Shared,
        held: &DeferredMessage,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        let Some(imdn_req) = imdn_request_of(&held.request) else {
            return;
        };
        let now_text = crate::time::rfc3339(SystemTime::now());
        self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let new_id = format!("{:016x}", self.salt.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let Some(body) = imdn::failure_notification(
            &imdn_req,
            &held.recipient,
            &held.sender,
            &now_text,
            &new_id,
        ) else {
            return;
        };
        let target = imdn_req.notify_target(&held.sender).to_owned();
        let call_id = routing::owned_call_id(shared, self.worker, self.workers, &mut self.salt);
        let text = format!(
            "MESSAGE {target} SIP/2.0\r\n\
             From: <{from}>;tag={tag:x}\r\n\
             To: <{target}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 MESSAGE\r\n\
             Max-Forwards: 70\r\n\
             Content-Type: message/cpim\r\n\
             Content-Length: {len}\r\n\r\n",
            from = held.recipient,
            tag = self.salt,
            call_id = String::from_utf8_lossy(&call_id),
            len = body.len(),
        );
        let mut raw = text.into_bytes();
        raw.extend_from_slice(&body);
        let Ok(req) = cpm_engine::sip::parse(Bytes::from(raw)) else {
            tracing::warn!(to = %target, "failure IMDN not built");
            return;
        };
        let Ok(aor) = routing::local_user(shared, &req) else {
            tracing::debug!(to = %target, "failure IMDN for a sender not served here: not sent");
            return;
        };
        let aor = aor_string(&aor);
        shared.metrics[self.worker].imdn_sent();
        if self.fork(shared, Origin::Own, &req, &aor, now, txn) == 0
            && shared.config.store_and_forward
        {
            let _ = self.hold(shared, None, req, aor, None);
        }
    }
}

/// Test-only fault injection (`--test-hooks`): a MESSAGE carrying
/// `X-Cpm-Test: fail-storage-read=K` makes the storage read after the next `K` fail once;
/// `X-Cpm-Test: delay-storage-writes=MS` holds every write back for MS milliseconds (a slow
/// disk).
fn fault_hook(shared: &Shared, req: &Message) {
    let hooks = req.headers.iter().filter_map(|h| match &h.name {
        HeaderName::Other(n) if n.eq_ignore_ascii_case(b"X-Cpm-Test") => {
            std::str::from_utf8(&h.value).ok()
        }
        _ => None,
    });
    for hook in hooks {
        let (name, value) = hook.split_once('=').unwrap_or((hook, ""));
        let Ok(n) = value.trim().parse::<u64>() else {
            continue;
        };
        match name.trim() {
            "fail-storage-read" => {
                tracing::warn!(after = n, "test hook: a storage read will fail");
                shared.storage.fail_reads(n, 1);
            }
            "delay-storage-writes" => {
                tracing::warn!(ms = n, "test hook: storage writes held back");
                shared.storage.hold_writes(Duration::from_millis(n));
            }
            _ => {}
        }
    }
}

/// Whether a final failure means "no device could take it now" (so the message is held):
/// timeouts, 480 (a 503 became 480 above), and the server errors.
fn unreachable(code: u16) -> bool {
    matches!(code, 408 | 480) || (500..600).contains(&code)
}

/// The record of a MESSAGE held for `aor` at `now`.
fn deferred_record(req: &Message, aor: &str, expiry: Duration, now: SystemTime) -> DeferredMessage {
    let request = req.to_bytes();
    let imdn = imdn_request_of_message(req);
    let received_at = unix_ms(now);
    DeferredMessage {
        recipient: aor.to_owned(),
        sender: req
            .from()
            .ok()
            .and_then(|f| f.uri.aor())
            .unwrap_or_default(),
        received_at,
        expires_at: received_at
            .saturating_add(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX)),
        size: request.len() as u64,
        imdn_message_id: imdn.as_ref().map(|i| i.message_id.clone()),
        dispositions: imdn.as_ref().and_then(|i| {
            (!i.dispositions.is_empty()).then(|| {
                i.dispositions
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        }),
        request,
    }
}

/// The IMDN request of a SIP MESSAGE (raw bytes) with a CPIM body, if it carries one.
fn imdn_request_of(raw: &Bytes) -> Option<ImdnRequest> {
    imdn_request_of_message(&cpm_engine::sip::parse(raw.clone()).ok()?)
}

/// The IMDN request of a SIP MESSAGE with a CPIM body, if it carries one.
fn imdn_request_of_message(msg: &Message) -> Option<ImdnRequest> {
    ImdnRequest::from_cpim(&cpim::of_sip(msg)?.ok()?).ok()
}

/// The header with which a sender asks for a message to be kept in network storage when the
/// user's policy is "on request" ([`StoragePolicy::OnRequest`]): `X-CPM-Store: yes`.
const STORE_REQUEST_HEADER: &str = "X-CPM-Store";

/// The id stored copies and delivery states are matched by: the IMDN Message-ID (RFC 5438
/// §6.3) when the message carries one, else one of the server's own made of its Call-ID and
/// CSeq (stable from relaying to holding to delivering).
fn message_id(req: &Message) -> String {
    message_id_in(req, cpim::of_sip(req).and_then(Result::ok).as_ref())
}

/// [`message_id`] of a request whose CPIM envelope (if any) is parsed already.
fn message_id_in(req: &Message, cpim: Option<&CpimMessage>) -> String {
    if let Some(imdn) = cpim.and_then(|c| ImdnRequest::from_cpim(c).ok()) {
        return imdn.message_id;
    }
    let call_id = req
        .call_id()
        .map(|c| String::from_utf8_lossy(c).into_owned());
    let seq = req.cseq().map(|c| c.seq).unwrap_or(0);
    format!("{}/{seq}", call_id.unwrap_or_default())
}

/// Network storage (CM-5, the message policy's storage decision): a copy of a pager message
/// for each local party whose settings (or `--storage-default`, for a user who set none) keep
/// it: "all", or "on request" when the sender asked
/// ([`STORE_REQUEST_HEADER`]). IMDNs are delivery states, not messages: never stored. The
/// copy holds the content (the inner one of a CPIM message).
fn store_copies(shared: &Shared, req: &Message, recipient: &str, state: DeliveryState) {
    // The envelope is parsed once: IMDN test, message id and stored content all read it.
    let envelope = cpim::of_sip(req).and_then(Result::ok);
    if envelope.as_ref().is_some_and(imdn::is_imdn) {
        return;
    }
    let Some(sender) = req.from().ok().and_then(|f| f.uri.aor()) else {
        return;
    };
    let requested = req.headers.iter().any(|h| {
        matches!(&h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(STORE_REQUEST_HEADER.as_bytes()))
            && h.value.trim_ascii().eq_ignore_ascii_case(b"yes")
    });
    let keeps = |owner: &str| {
        let policy = shared
            .settings
            .read()
            .get(owner)
            .map(|s| s.storage)
            .unwrap_or(shared.config.storage_default.0);
        match policy {
            StoragePolicy::All => true,
            StoragePolicy::OnRequest => requested,
            StoragePolicy::None => false,
        }
    };
    let (content_type, body) = match &envelope {
        Some(c) => (
            String::from_utf8_lossy(c.content_type()).into_owned(),
            c.body().clone(),
        ),
        None => (
            req.headers
                .get(&HeaderName::ContentType)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_else(|| "text/plain".into()),
            req.body.clone(),
        ),
    };
    let id = message_id_in(req, envelope.as_ref());
    let time = unix_ms(SystemTime::now());
    let sender_copy =
        routing::is_local_aor(shared, &sender) && sender_verified(shared, req, &sender);
    for (owner, peer, direction) in [
        (recipient, sender.as_str(), Direction::In),
        (sender.as_str(), recipient, Direction::Out),
    ] {
        if direction == Direction::Out && !sender_copy {
            continue;
        }
        if !keeps(owner) {
            continue;
        }
        let copy = StoredMessage {
            owner: owner.to_owned(),
            conversation: peer.to_owned(),
            direction,
            peer: peer.to_owned(),
            sender: sender.clone(),
            recipient: recipient.to_owned(),
            time,
            content_type: content_type.clone(),
            body: body.clone(),
            message_id: id.clone(),
            state,
            flags: Flags::default(),
            session_id: None,
            file: None,
        };
        if let Err(e) = shared.storage.write(WriteOp::StoreMessage(copy), |_| {}) {
            tracing::debug!(error = %e, "message copy not stored");
        }
    }
}

/// Whether the sender's history may hold a copy of `req`. MESSAGE is not authenticated (only
/// REGISTER is, decision 0003), so where users authenticate (`--users-file`) the From alone
/// proves nothing: the request must come from an address the sender registered from (its top
/// Via as the transaction layer stamped it: `received`, `rport`, RFC 3261 §18.2.1, RFC 3581).
/// Otherwise nothing is written in the name of the user the From names.
fn sender_verified(shared: &Shared, req: &Message, sender: &str) -> bool {
    if shared.users.is_none() {
        return true;
    }
    let Ok(via) = req.top_via() else {
        return false;
    };
    let host = via
        .received()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(&via.host).into_owned());
    let port = via.rport().flatten().or(via.port).unwrap_or(5060);
    let Ok(ip) = host.trim_matches(|c| c == '[' || c == ']').parse() else {
        return false;
    };
    let source = std::net::SocketAddr::new(ip, port);
    let aor = Aor::new(sender.to_owned());
    shared
        .registrar(&aor)
        .lock()
        .lookup(&aor, Instant::now())
        .iter()
        .any(|b| b.source == Some(source))
}

/// The charging event of a pager message (CH-x; IMDNs are charged like any message).
fn charge(shared: &Shared, req: &Message, to: &str, outcome: &'static str, status: Option<u16>) {
    shared.charging.write_message(MessageEvent {
        at: SystemTime::now(),
        call_id: req
            .call_id()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default(),
        from: req
            .from()
            .ok()
            .and_then(|f| f.uri.aor())
            .unwrap_or_default(),
        to: to.to_owned(),
        size: req.body.len(),
        outcome,
        status,
    });
}

/// [`charge`] for a held message.
fn charge_held(
    shared: &Shared,
    held: &DeferredMessage,
    outcome: &'static str,
    status: Option<u16>,
) {
    if let Ok(req) = cpm_engine::sip::parse(held.request.clone()) {
        charge(shared, &req, &held.recipient, outcome, status);
    }
}

/// A relayed IMDN moves the delivery state of the message it is about (RFC 5438 §7).
fn note_imdn(shared: &Shared, req: &Message) {
    let Some(Ok(n)) = imdn::relayed_notification(req) else {
        return;
    };
    use cpm_engine::deferred::DeliveryEvent as E;
    let state = match n.delivery_event() {
        Some(E::ImdnDelivered) => DeliveryState::Delivered,
        Some(E::ImdnDisplayed) => DeliveryState::Displayed,
        Some(E::ImdnFailed) => DeliveryState::Failed,
        _ => return,
    };
    // Only the copies of the two parties of this IMDN (RFC 5438 §7: it travels from the
    // original recipient back to the original sender), never every user's copy of that id.
    for party in [req.from().ok(), req.to().ok()]
        .into_iter()
        .flatten()
        .filter_map(|na| na.uri.aor())
    {
        set_state_of(shared, Some(party), &n.message_id, state);
    }
}

/// Moves every stored copy of `message_id` to `state` (fire and forget: a lost update only
/// leaves a state behind).
fn set_state(shared: &Shared, message_id: &str, state: DeliveryState) {
    set_state_of(shared, None, message_id, state);
}

/// [`set_state`] for one owner's copies only (`None`: every copy).
fn set_state_of(shared: &Shared, owner: Option<String>, message_id: &str, state: DeliveryState) {
    let op = WriteOp::SetState {
        owner,
        message_id: message_id.to_owned(),
        state,
    };
    if let Err(e) = shared.storage.write(op, |_| {}) {
        tracing::debug!(error = %e, "delivery state not updated");
    }
}

/// 503 with Retry-After: storage is busy, try again shortly (RFC 3261 §21.5.4).
fn unavailable(req: &Message) -> Message {
    let mut r = builder::local_response(req, 503, "Service Unavailable");
    r.headers.push(HeaderName::RetryAfter, "5");
    r
}

/// The answer to a MESSAGE the store-and-forward policy refuses, with its Warning hint.
fn refused(req: &Message, refusal: Refusal) -> Message {
    let mut r = builder::local_response(req, refusal.code(), refusal.reason());
    r.headers.push(HeaderName::Warning, refusal.warning("cpmd"));
    r
}

/// The storage key of a user: the canonical AOR.
fn aor_string(aor: &Aor) -> String {
    String::from_utf8_lossy(aor.as_bytes()).into_owned()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How often expired messages are swept: a tenth of the expiry, between 1 s and 60 s.
fn sweep_interval(expiry_secs: u64) -> Duration {
    Duration::from_secs((expiry_secs / 10).clamp(1, 60))
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

    #[test]
    fn what_counts_as_unreachable() {
        for c in [408, 480, 500, 503, 504] {
            assert!(unreachable(c), "{c}");
        }
        for c in [400, 403, 404, 415, 486, 603] {
            assert!(!unreachable(c), "{c}");
        }
    }

    #[test]
    fn held_record_keeps_the_request_and_its_imdn_request() {
        let body = "From: <sip:alice@localhost>\r\nTo: <sip:bob@localhost>\r\n\
            DateTime: 2026-11-26T12:00:00Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
            imdn.Message-ID: Xs8d1\r\nimdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\
            \r\nContent-Type: text/plain\r\n\r\nhi";
        let raw = format!(
            "MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1\r\n\
             From: <sip:alice@localhost>;tag=1\r\nTo: <sip:bob@localhost>\r\nCall-ID: c1\r\n\
             CSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let req = cpm_engine::sip::parse(Bytes::from(raw)).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let r = deferred_record(&req, "sip:bob@localhost", Duration::from_secs(60), t);
        assert_eq!(r.recipient, "sip:bob@localhost");
        assert_eq!(r.sender, "sip:alice@localhost");
        assert_eq!((r.received_at, r.expires_at), (1_000_000, 1_060_000));
        assert_eq!(r.imdn_message_id.as_deref(), Some("Xs8d1"));
        let d = r.dispositions.unwrap();
        assert!(
            d.contains("negative-delivery") && d.contains("positive-delivery"),
            "{d}"
        );
        assert_eq!(cpm_engine::sip::parse(r.request).unwrap().body, req.body);
    }

    #[test]
    fn sweeps_follow_the_expiry() {
        assert_eq!(sweep_interval(3), Duration::from_secs(1));
        assert_eq!(sweep_interval(300), Duration::from_secs(30));
        assert_eq!(sweep_interval(72 * 3600), Duration::from_secs(60));
    }
}
