//! The transaction layer of one worker: every client and server transaction, the matching
//! tables, one deadline index, and the output queues.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::key::{ClientKey, Host, ServerKey};
use super::{
    AckDisposition, Actions, CancelOutcome, ClientTxId, Failure, InFlight, InviteClient,
    InviteClientState, InviteServer, LayerConfig, NonInviteClient, NonInviteServer, RequestOutcome,
    ResponseOutcome, ServerTxId, Transmit, TxError, TxEvent, TxId, TxStats,
};
use crate::sip::builder::{cancel_for, response_to, stamp_received, tag_of, BranchGen};
use crate::sip::hdr::Via;
use crate::sip::{HeaderName, Message, Method};

/// Every transaction of one worker (the "endpoint" in quinn terms). See the
/// [module documentation](super) for the drive loop.
///
/// Terminated transactions are removed at once; each removal is reported as
/// [`TxEvent::Terminated`].
#[derive(Debug)]
pub struct TransactionLayer {
    config: LayerConfig,
    branches: BranchGen,
    next_id: u64,
    // Entries (600+ bytes) and server keys (200+) are boxed: a table holds a pointer per
    // slot, so its spare slots (hashbrown doubles a table whose deleted slots run out while
    // more than half of it is in use, at a steady count of transactions) cost 16 bytes
    // each, not the entry's size. Inline, a 4,400-transaction worker's tables grew from 7 to
    // 17 MiB in the soak's eighth minute.
    clients: HashMap<ClientTxId, Box<ClientEntry>>,
    client_keys: HashMap<ClientKey, ClientTxId>,
    servers: HashMap<ServerTxId, Box<ServerEntry>>,
    server_keys: HashMap<Box<ServerKey>, ServerTxId>,
    /// (deadline, transaction) for every transaction with an armed timer.
    deadlines: BTreeSet<(Instant, TxId)>,
    due: Vec<TxId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
    stats: TxStats,
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientTx,
    key: ClientKey,
    /// The sent-by of our Via: a response naming another one is discarded (§18.1.2).
    sent_by: (Host, Option<u16>),
    dest: SocketAddr,
    reliable: bool,
    armed: Option<Instant>,
    cancel_pending: bool,
}

/// `match` over both variants of `ClientTx` or `ServerTx`, binding the machine to `$t`.
macro_rules! each {
    ($tx:expr, $enum:ident, $t:ident => $call:expr) => {
        match $tx {
            $enum::Invite($t) => $call,
            $enum::NonInvite($t) => $call,
        }
    };
}

#[derive(Debug)]
enum ClientTx {
    Invite(InviteClient),
    NonInvite(NonInviteClient),
}

impl ClientTx {
    fn handle_response(&mut self, resp: &Message, now: Instant) -> Actions {
        each!(self, ClientTx, t => t.handle_response(resp, now))
    }

    fn handle_timeout(&mut self, now: Instant) -> Actions {
        each!(self, ClientTx, t => t.handle_timeout(now))
    }

    fn handle_transport_error(&mut self) -> Actions {
        each!(self, ClientTx, t => t.handle_transport_error())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        each!(self, ClientTx, t => t.poll_timeout())
    }

    fn is_terminated(&self) -> bool {
        match self {
            ClientTx::Invite(t) => t.state() == InviteClientState::Terminated,
            ClientTx::NonInvite(t) => t.state() == super::NonInviteClientState::Terminated,
        }
    }

    fn request(&self) -> &Message {
        each!(self, ClientTx, t => t.request())
    }
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTx,
    key: ServerKey,
    dest: SocketAddr,
    reliable: bool,
    armed: Option<Instant>,
    /// The To tag of the final response, which an RFC 2543 ACK must carry (§17.2.3).
    final_to_tag: Option<Bytes>,
}

#[derive(Debug)]
enum ServerTx {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

impl ServerTx {
    fn handle_retransmission(&mut self, now: Instant) -> Actions {
        each!(self, ServerTx, t => t.handle_retransmission(now))
    }

    fn respond(&mut self, response: &Message, now: Instant) -> Result<Actions, TxError> {
        each!(self, ServerTx, t => t.respond(response, now))
    }

    fn handle_timeout(&mut self, now: Instant) -> Actions {
        each!(self, ServerTx, t => t.handle_timeout(now))
    }

    fn handle_transport_error(&mut self) -> Actions {
        each!(self, ServerTx, t => t.handle_transport_error())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        each!(self, ServerTx, t => t.poll_timeout())
    }

    fn is_terminated(&self) -> bool {
        match self {
            ServerTx::Invite(t) => t.state() == super::InviteServerState::Terminated,
            ServerTx::NonInvite(t) => t.state() == super::NonInviteServerState::Terminated,
        }
    }
}

/// Where the responses of a server transaction go (RFC 3261 §18.2.2, RFC 3581 §4): over a
/// reliable transport back to the source; over UDP to the source address (what `received`
/// records) at the source port if `rport` was asked for, else at the sent-by port (5060).
/// `maddr` (multicast) is not supported. Stateless responses (a request refused before any
/// transaction exists) go to the same place.
pub fn response_dest(via: &Via, source: SocketAddr, reliable: bool) -> SocketAddr {
    if reliable || via.rport().is_some() {
        source
    } else {
        SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
    }
}

/// Queues what transaction `tx` asked to send to `(dest, reliable)`, counting retransmissions.
fn queue_send(
    transmits: &mut VecDeque<Transmit>,
    stats: &mut TxStats,
    tx: TxId,
    (dest, reliable): (SocketAddr, bool),
    actions: &mut Actions,
) {
    if let Some(payload) = actions.send.take() {
        if actions.retransmission {
            stats.retransmissions_sent += 1;
        }
        transmits.push_back(Transmit {
            dest,
            reliable,
            payload,
            tx: Some(tx),
        });
    }
}

/// Moves a transaction's entry in the deadline index from `armed` to `next`.
fn rearm(
    deadlines: &mut BTreeSet<(Instant, TxId)>,
    id: TxId,
    armed: &mut Option<Instant>,
    next: Option<Instant>,
) {
    if *armed == next {
        return;
    }
    if let Some(at) = armed.take() {
        deadlines.remove(&(at, id));
    }
    if let Some(at) = next {
        deadlines.insert((at, id));
    }
    *armed = next;
}

impl TransactionLayer {
    /// An empty layer. `branch_seed` seeds [`TransactionLayer::new_branch`]; take it from the
    /// OS RNG in the driver, one per worker.
    pub fn new(config: LayerConfig, branch_seed: u64) -> TransactionLayer {
        TransactionLayer {
            config,
            branches: BranchGen::new(branch_seed),
            next_id: 0,
            clients: HashMap::new(),
            client_keys: HashMap::new(),
            servers: HashMap::new(),
            server_keys: HashMap::new(),
            deadlines: BTreeSet::new(),
            due: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TxStats::default(),
        }
    }

    /// A fresh branch (`z9hG4bK...`) for the top Via of a request this worker sends.
    pub fn new_branch(&mut self) -> Bytes {
        self.branches.next_branch()
    }

    /// A fresh From/To tag.
    pub fn new_tag(&mut self) -> Bytes {
        self.branches.next_tag()
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- server side -------------------------------------------------------------------

    /// A request received from `source` (over a reliable transport or not) at `now`: matched
    /// to a server transaction (§17.2.3) or starting one.
    pub fn handle_request(
        &mut self,
        mut msg: Message,
        source: SocketAddr,
        reliable: bool,
        now: Instant,
    ) -> RequestOutcome {
        let Some(method) = msg.method().cloned() else {
            return RequestOutcome::Invalid {
                request: msg,
                error: TxError::NotARequest,
            };
        };
        let is_ack = method == Method::Ack;
        let lookup = if is_ack {
            Method::Invite
        } else {
            method.clone()
        };
        let key = match ServerKey::of_request(&msg, lookup) {
            Ok(k) => k,
            Err(error) => {
                tracing::debug!(%error, "request without a transaction key");
                return RequestOutcome::Invalid {
                    request: msg,
                    error,
                };
            }
        };
        if is_ack {
            return self.handle_ack(msg, &key, now);
        }
        if let Some(&id) = self.server_keys.get(&key) {
            if let Some(entry) = self.servers.get_mut(&id) {
                let actions = entry.tx.handle_retransmission(now);
                self.after_server(id, actions);
            }
            return RequestOutcome::Retransmission(id);
        }

        // The Via parsed when the key was made; the key is of the Via as received.
        let via = match msg.top_via() {
            Ok(v) => v,
            Err(e) => {
                return RequestOutcome::Invalid {
                    request: msg,
                    error: e.into(),
                }
            }
        };
        let dest = response_dest(&via, source, reliable);
        stamp_received(&mut msg, source);
        let id = ServerTxId(self.next_id());
        let timers = self.config.timers;
        let (tx, actions) = if method == Method::Invite {
            let (t, a) = InviteServer::start(&msg, reliable, timers, self.config.auto_trying, now);
            (ServerTx::Invite(t), a)
        } else {
            (
                ServerTx::NonInvite(NonInviteServer::start(reliable, timers, now)),
                Actions::default(),
            )
        };
        self.server_keys.insert(Box::new(key.clone()), id);
        self.servers.insert(
            id,
            Box::new(ServerEntry {
                tx,
                key: key.clone(),
                dest,
                reliable,
                armed: None,
                final_to_tag: None,
            }),
        );
        self.after_server(id, actions);

        if method == Method::Cancel {
            // §9.2: the transaction the CANCEL would match were it the INVITE.
            let invite_tx = self
                .server_keys
                .get(&key.with_method(Method::Invite))
                .copied();
            return RequestOutcome::Cancel {
                cancel_tx: id,
                invite_tx,
                request: msg,
            };
        }
        RequestOutcome::New { id, request: msg }
    }

    fn handle_ack(&mut self, msg: Message, key: &ServerKey, now: Instant) -> RequestOutcome {
        let found = if key.is_rfc2543() {
            // The ACK's To carries the response's tag; the INVITE's key has the INVITE's own
            // To tag: none for an initial INVITE, the dialog's for a re-INVITE.
            let ack_tag = key.to_tag().cloned();
            [key.clone(), key.with_to_tag(None)]
                .iter()
                .find_map(|k| self.server_keys.get(k).copied())
                .filter(|id| {
                    self.servers
                        .get(id)
                        .is_some_and(|e| e.final_to_tag == ack_tag)
                })
        } else {
            self.server_keys.get(key).copied()
        };
        let Some(id) = found else {
            return RequestOutcome::Ack2xx(msg);
        };
        let disposition = match self.servers.get_mut(&id).map(|e| &mut e.tx) {
            Some(ServerTx::Invite(tx)) => tx.handle_ack(now),
            _ => return RequestOutcome::Ack2xx(msg),
        };
        self.after_server(id, Actions::default());
        match disposition {
            AckDisposition::Confirmed => RequestOutcome::AckForInvite(id),
            AckDisposition::Absorbed => RequestOutcome::Retransmission(id),
            AckDisposition::PassToTu => RequestOutcome::Ack2xx(msg),
        }
    }

    /// The TU's response for a server transaction; it is sent at once (to the address of
    /// §18.2.2) and, if final, retransmitted as the transaction requires.
    pub fn respond(
        &mut self,
        id: ServerTxId,
        response: &Message,
        now: Instant,
    ) -> Result<(), TxError> {
        let entry = self
            .servers
            .get_mut(&id)
            .ok_or(TxError::UnknownTransaction)?;
        let actions = entry.tx.respond(response, now)?;
        if entry.key.is_rfc2543() && response.status().is_some_and(|c| c >= 200) {
            entry.final_to_tag = response.headers.get(&HeaderName::To).and_then(tag_of);
        }
        self.after_server(id, actions);
        Ok(())
    }

    // ---- client side -------------------------------------------------------------------

    /// Starts a client transaction for `request` (its top Via must carry a fresh RFC 3261
    /// branch, e.g. from [`TransactionLayer::new_branch`]); the request goes out at once.
    pub fn send_request(
        &mut self,
        request: Message,
        dest: SocketAddr,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientTxId, TxError> {
        let method = request.method().ok_or(TxError::NotARequest)?.clone();
        if method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let via = request.top_via()?;
        let key = ClientKey::of_request(&request, &via)?;
        if self.client_keys.contains_key(&key) {
            return Err(TxError::DuplicateTransaction);
        }
        let id = ClientTxId(self.next_id());
        let timers = self.config.timers;
        let (tx, actions) = if method == Method::Invite {
            let (t, a) = InviteClient::start(request, reliable, timers, now);
            (ClientTx::Invite(t), a)
        } else {
            let (t, a) = NonInviteClient::start(request, reliable, timers, now);
            (ClientTx::NonInvite(t), a)
        };
        self.client_keys.insert(key.clone(), id);
        let sent_by = (Host(via.host), via.port);
        self.clients.insert(
            id,
            Box::new(ClientEntry {
                tx,
                key,
                sent_by,
                dest,
                reliable,
                armed: None,
                cancel_pending: false,
            }),
        );
        self.after_client(id, actions);
        Ok(id)
    }

    /// Cancels a pending INVITE client transaction (§9.1): the CANCEL is its own client
    /// transaction, sent to the INVITE's destination now or after the first provisional.
    pub fn cancel(&mut self, id: ClientTxId, now: Instant) -> Result<CancelOutcome, TxError> {
        let entry = self
            .clients
            .get_mut(&id)
            .ok_or(TxError::UnknownTransaction)?;
        let ClientTx::Invite(tx) = &entry.tx else {
            return Err(TxError::NotCancellable);
        };
        match tx.state() {
            InviteClientState::Calling => {
                entry.cancel_pending = true;
                Ok(CancelOutcome::Deferred)
            }
            InviteClientState::Proceeding => {
                let cancel = cancel_for(tx.request());
                let (dest, reliable) = (entry.dest, entry.reliable);
                self.send_request(cancel, dest, reliable, now)
                    .map(CancelOutcome::Sent)
            }
            _ => Err(TxError::NotCancellable),
        }
    }

    /// Queues a message outside any transaction: the ACK for a 2xx, 2xx retransmissions of the
    /// dialog layer, or a stateless response.
    pub fn send_stateless(&mut self, msg: &Message, dest: SocketAddr, reliable: bool) {
        self.transmits.push_back(Transmit {
            dest,
            reliable,
            payload: msg.to_bytes(),
            tx: None,
        });
    }

    /// A response received from `source`: matched to a client transaction (§17.1.3).
    pub fn handle_response(
        &mut self,
        msg: Message,
        source: SocketAddr,
        now: Instant,
    ) -> ResponseOutcome {
        let Some(code) = msg.status() else {
            return self.stray(msg, source);
        };
        let Some((key, via)) = ClientKey::of_response(&msg) else {
            return self.stray(msg, source);
        };
        let Some(&id) = self.client_keys.get(&key) else {
            return self.stray(msg, source);
        };
        let Some(entry) = self.clients.get_mut(&id) else {
            return self.stray(msg, source);
        };
        if entry.sent_by != (Host(via.host), via.port) {
            return self.stray(msg, source);
        }
        let actions = entry.tx.handle_response(&msg, now);
        let send_cancel = entry.cancel_pending && code < 200;
        if entry.cancel_pending && (send_cancel || actions.to_tu) {
            entry.cancel_pending = false;
        }
        let to_tu = actions.to_tu;
        self.after_client(id, actions);
        if send_cancel {
            if let Ok(CancelOutcome::Sent(cancel)) = self.cancel(id, now) {
                self.events
                    .push_back(TxEvent::CancelSent { invite: id, cancel });
            }
        }
        if to_tu {
            ResponseOutcome::Response { id, response: msg }
        } else {
            ResponseOutcome::Absorbed(id)
        }
    }

    fn stray(&mut self, msg: Message, _source: SocketAddr) -> ResponseOutcome {
        self.stats.stray_responses += 1;
        tracing::debug!(status = ?msg.status(), "stray response");
        ResponseOutcome::Stray(msg)
    }

    // ---- time, transport, outputs -----------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            due.push(id);
        }
        for id in due.drain(..) {
            match id {
                TxId::Client(c) => {
                    if let Some(e) = self.clients.get_mut(&c) {
                        e.armed = None;
                        let actions = e.tx.handle_timeout(now);
                        self.after_client(c, actions);
                    }
                }
                TxId::Server(s) => {
                    if let Some(e) = self.servers.get_mut(&s) {
                        e.armed = None;
                        let actions = e.tx.handle_timeout(now);
                        self.after_server(s, actions);
                    }
                }
            }
        }
        self.due = due;
    }

    /// The transport could not send a [`Transmit`] of transaction `id` (e.g. the TCP
    /// connection failed): the transaction ends and the TU is told (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, id: TxId, _now: Instant) {
        match id {
            TxId::Client(c) => {
                if let Some(e) = self.clients.get_mut(&c) {
                    let actions = e.tx.handle_transport_error();
                    self.after_client(c, actions);
                }
            }
            TxId::Server(s) => {
                if let Some(e) = self.servers.get_mut(&s) {
                    let actions = e.tx.handle_transport_error();
                    self.after_server(s, actions);
                }
            }
        }
    }

    /// Drops a transaction at once, e.g. an INVITE client transaction the TU gave up on
    /// (it has no timer in Proceeding). Returns whether it existed.
    pub fn abandon(&mut self, id: TxId) -> bool {
        let found = match id {
            TxId::Client(c) => self.remove_client(c),
            TxId::Server(s) => self.remove_server(s),
        };
        if found {
            self.events.push_back(TxEvent::Terminated(id));
        }
        found
    }

    /// The next deadline: call [`TransactionLayer::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// Counters; O(1), so a worker reads them after every drain.
    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// The transactions in flight by kind. O(n): it walks every transaction, hundreds of
    /// thousands lingering in Timer J under load, so it is for tests and diagnostics, never
    /// per message ([`len`](Self::len) is the O(1) total).
    pub fn in_flight(&self) -> InFlight {
        let mut n = InFlight::default();
        for e in self.clients.values() {
            match e.tx {
                ClientTx::Invite(_) => n.client_invite += 1,
                ClientTx::NonInvite(_) => n.client_non_invite += 1,
            }
        }
        for e in self.servers.values() {
            match e.tx {
                ServerTx::Invite(_) => n.server_invite += 1,
                ServerTx::NonInvite(_) => n.server_non_invite += 1,
            }
        }
        n
    }

    /// Transactions in flight.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Whether no transaction is in flight.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    // ---- bookkeeping after every input ------------------------------------------------

    fn count_failure(&mut self, f: Failure) {
        match f {
            Failure::Timeout => self.stats.timeouts += 1,
            Failure::Transport => self.stats.transport_errors += 1,
        }
    }

    fn after_client(&mut self, id: ClientTxId, mut actions: Actions) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        let txid = TxId::Client(id);
        queue_send(
            &mut self.transmits,
            &mut self.stats,
            txid,
            (e.dest, e.reliable),
            &mut actions,
        );
        if let Some(reason) = actions.failed {
            let (code, phrase) = reason.synthesized_status();
            let response = response_to(e.tx.request(), code, phrase);
            self.events.push_back(TxEvent::ClientFailed {
                id,
                reason,
                response,
            });
            self.count_failure(reason);
        }
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        if e.tx.is_terminated() {
            self.remove_client(id);
            self.events.push_back(TxEvent::Terminated(txid));
        } else {
            let next = e.tx.poll_timeout();
            rearm(&mut self.deadlines, txid, &mut e.armed, next);
        }
    }

    fn after_server(&mut self, id: ServerTxId, mut actions: Actions) {
        let Some(e) = self.servers.get_mut(&id) else {
            return;
        };
        let txid = TxId::Server(id);
        queue_send(
            &mut self.transmits,
            &mut self.stats,
            txid,
            (e.dest, e.reliable),
            &mut actions,
        );
        let terminated = e.tx.is_terminated();
        if !terminated {
            let next = e.tx.poll_timeout();
            rearm(&mut self.deadlines, txid, &mut e.armed, next);
        }
        if let Some(reason) = actions.failed {
            self.events.push_back(TxEvent::ServerFailed { id, reason });
            self.count_failure(reason);
        }
        if terminated {
            self.remove_server(id);
            self.events.push_back(TxEvent::Terminated(txid));
        }
    }

    fn remove_client(&mut self, id: ClientTxId) -> bool {
        let Some(mut e) = self.clients.remove(&id) else {
            return false;
        };
        rearm(&mut self.deadlines, TxId::Client(id), &mut e.armed, None);
        if self.client_keys.get(&e.key) == Some(&id) {
            self.client_keys.remove(&e.key);
        }
        true
    }

    fn remove_server(&mut self, id: ServerTxId) -> bool {
        let Some(mut e) = self.servers.remove(&id) else {
            return false;
        };
        rearm(&mut self.deadlines, TxId::Server(id), &mut e.armed, None);
        if self.server_keys.get(&e.key) == Some(&id) {
            self.server_keys.remove(&e.key);
        }
        true
    }
}

#[cfg(test)]
impl TransactionLayer {
    pub(crate) fn invite_client(&self, id: ClientTxId) -> Option<&InviteClient> {
        match &self.clients.get(&id)?.tx {
            ClientTx::Invite(t) => Some(t),
            ClientTx::NonInvite(_) => None,
        }
    }

    pub(crate) fn non_invite_client(&self, id: ClientTxId) -> Option<&NonInviteClient> {
        match &self.clients.get(&id)?.tx {
            ClientTx::NonInvite(t) => Some(t),
            ClientTx::Invite(_) => None,
        }
    }

    pub(crate) fn invite_server(&self, id: ServerTxId) -> Option<&InviteServer> {
        match &self.servers.get(&id)?.tx {
            ServerTx::Invite(t) => Some(t),
            ServerTx::NonInvite(_) => None,
        }
    }

    pub(crate) fn non_invite_server(&self, id: ServerTxId) -> Option<&NonInviteServer> {
        match &self.servers.get(&id)?.tx {
            ServerTx::NonInvite(t) => Some(t),
            ServerTx::Invite(_) => None,
        }
    }

    pub(crate) fn next_id_for_tests(&self) -> u64 {
        self.next_id
    }

    /// The tables agree: one key per transaction, one index entry per armed timer.
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.client_keys.len(), self.clients.len());
        assert_eq!(self.server_keys.len(), self.servers.len());
        let armed = self
            .clients
            .iter()
            .filter_map(|(id, e)| e.armed.map(|at| (at, TxId::Client(*id))));
        let armed = armed.chain(
            self.servers
                .iter()
                .filter_map(|(id, e)| e.armed.map(|at| (at, TxId::Server(*id)))),
        );
        let armed: BTreeSet<_> = armed.collect();
        assert_eq!(armed, self.deadlines);
        for (id, e) in &self.clients {
            assert_eq!(e.armed, e.tx.poll_timeout(), "client {id:?}");
        }
        for (id, e) in &self.servers {
            assert_eq!(e.armed, e.tx.poll_timeout(), "server {id:?}");
        }
    }
}
