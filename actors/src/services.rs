//! The controllers a worker dispatches to once the signaling manager has classified a request
//! (CPM.md §3–4): the registrar, OPTIONS, and pager-mode MESSAGE delivery. Services not served
//! yet get the answer `cpm_engine::service` gives them.
//!
//! Pager mode (CPM.md §5 fig. 5, RFC 3428) is delivered as a stateful forking proxy (RFC 3261
//! §16): one client transaction per registered contact of the target, the first 2xx relayed at
//! once, otherwise the best final response when every branch has answered (§16.7).
//!
//! A 1-to-1 session (CPM.md §5 fig. 6-7) gets a [`SessionActor`] on this worker: an INVITE to a
//! registered local user starts one, and every later request, ACK, CANCEL and response of its
//! Call-IDs is routed to it through the [`SessionTable`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::media::{MediaConfig as SdpConfig, PortPool};
use cpm_engine::registrar::{Aor, Binding, RegisterRequest};
use cpm_engine::service::{self, ServiceConfig, ServiceType};
use cpm_engine::session::{Peer, SessionConfig, SessionStart};
use cpm_engine::sip::digest::{Credentials, Verdict};
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId, TransactionLayer};
use cpm_engine::sip::uri::Uri;
use cpm_engine::sip::{builder, HeaderName, Message, Method, StartLine};

use crate::session::{FromSession, SessionActor, SessionEnv, SessionKey, SessionTable, ToSession};
use crate::shared::Shared;
use crate::transport::{Router, Transport};

/// Body types the server itself accepts (MESSAGE bodies of any type are relayed unchanged).
pub const ACCEPT: &str = "text/plain, message/cpim, application/im-iscomposing+xml";
/// Option tags understood; any other in Require gets 420 (RFC 3261 §8.2.2.3).
pub const SUPPORTED: &[&str] = &[];
/// Our Server / User-Agent value.
pub const SERVER: &str = concat!("cpm-engine/", env!("CARGO_PKG_VERSION"));

/// How often each worker sweeps expired registrations out of its registrar shards.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One MESSAGE being delivered to every contact of its target (RFC 3261 §16.6-16.7).
struct Fork {
    /// Branches still without a final response.
    pending: usize,
    /// Whether a final response was relayed already (a 2xx).
    answered: bool,
    /// The best final response so far.
    best: Option<Message>,
}

/// The controllers of one worker.
pub struct Services {
    shared: Arc<Shared>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
    svc: ServiceConfig,
    worker: usize,
    workers: usize,
    forks: HashMap<ServerTxId, Fork>,
    branches: HashMap<ClientTxId, ServerTxId>,
    next_sweep: Option<Instant>,
    salt: u64,
    /// The sessions of this worker and how their traffic reaches them.
    pub sessions: SessionTable,
    env: Rc<SessionEnv>,
    /// The worker, which carries out the sessions' SIP actions (set when it starts).
    worker_addr: Option<Recipient<FromSession>>,
}

impl Services {
    /// The controllers of worker `worker` of `workers`.
    pub fn new(shared: Arc<Shared>, worker: usize, workers: usize, seed: u64) -> Services {
        let mut svc = ServiceConfig::new(
            shared
                .domains
                .first()
                .map(String::as_str)
                .unwrap_or("localhost"),
        );
        svc.local_domains = shared.domains.clone();
        svc.served_methods = vec![
            Method::Register,
            Method::Options,
            Method::Message,
            Method::Ack,
            Method::Cancel,
            Method::Invite,
            Method::Bye,
            Method::Update,
            Method::Info,
        ];
        let cfg = &shared.config;
        let env = Rc::new(SessionEnv {
            config: SessionConfig {
                local: cfg.sip_listen.to_string(),
                ..SessionConfig::default()
            },
            sdp: Arc::new(SdpConfig {
                codecs: (!cfg.codecs.0.is_empty()).then(|| cfg.codecs.0.clone()),
                ..SdpConfig::new(cfg.media_ip)
            }),
            pool: Rc::new(RefCell::new(PortPool::partition(
                cfg.media_ports.min,
                cfg.media_ports.max,
                workers,
                worker,
            ))),
            plane: shared.media[worker].clone(),
            charging: shared.charging.clone(),
            interim: cfg.cdr_interim(),
            media_timeout: cfg.media_timeout(),
            test_hooks: cfg.test_hooks,
        });
        Services {
            sessions: SessionTable::default(),
            env,
            worker_addr: None,
            metrics: shared.metrics[worker].clone(),
            shared,
            svc,
            worker,
            workers,
            forks: HashMap::new(),
            branches: HashMap::new(),
            next_sweep: None,
            salt: seed,
        }
    }

    /// Forgets per-call state (after a supervisor restart).
    pub fn reset(&mut self) {
        self.forks.clear();
        self.branches.clear();
        self.sessions.clear();
    }

    /// The worker's address, for the sessions it starts.
    pub fn set_worker(&mut self, worker: Recipient<FromSession>) {
        self.worker_addr = Some(worker);
    }

    /// Relay ports of this worker in use.
    pub fn media_ports_in_use(&self) -> usize {
        self.env.pool.borrow().in_use()
    }

    /// Deliveries in progress.
    pub fn forks_in_flight(&self) -> usize {
        self.forks.len()
    }

    /// A new server transaction: decide the service and serve it.
    pub fn on_request(
        &mut self,
        id: ServerTxId,
        req: Message,
        source: SocketAddr,
        transport: &Transport,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if self.shared.config.test_hooks
            && req.headers.iter().any(|h| {
                matches!(&h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(b"X-Cpm-Test"))
                    && &h.value[..] == b"panic"
            })
        {
            panic!("fault injected by X-Cpm-Test: panic");
        }
        // Requests of a session go to it, also while shutting down (a BYE must get through).
        // Sessions are found by Call-ID and the caller's From tag; the session answers 481
        // for what matches none of its dialogs.
        if let Some(actor) = self.sessions.route(&req) {
            actor.do_send(ToSession::Request {
                tx: id,
                request: req,
            });
            return;
        }
        if self.shared.is_draining() {
            let mut r = builder::local_response(&req, 503, "Service Unavailable (Shutting Down)");
            r.headers.push(HeaderName::RetryAfter, "5");
            return self.respond(id, r, now, txn);
        }
        // RFC 3261 §8.2.2.3: a Require we do not understand gets 420 (never for ACK/CANCEL).
        let unsupported = cpm_engine::sip::validate::unsupported_requires(&req, SUPPORTED);
        if !unsupported.is_empty() {
            let mut r = builder::local_response(&req, 420, "Bad Extension");
            r.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return self.respond(id, r, now, txn);
        }
        let class = service::classify(&req, &self.svc);
        tracing::debug!(service = ?class.service, "classified");
        // RFC 3261 §16.3 step 2: a request for someone else (not the registrar, not an OPTIONS
        // to the server itself) with Max-Forwards 0 goes no further (RFC 4475 §3.3.11, zeromf).
        let for_us = matches!(
            class.service,
            ServiceType::Registration | ServiceType::Options
        );
        if !for_us
            && req.max_forwards().ok().flatten() == Some(0)
            && req.method() != Some(&Method::Ack)
        {
            return self.respond(
                id,
                builder::local_response(&req, 483, "Too Many Hops"),
                now,
                txn,
            );
        }
        // RFC 3261 §16.3 step 5: a proxy refuses what Proxy-Require asks and it does not do.
        if !for_us {
            let unsupported =
                cpm_engine::sip::validate::unsupported_proxy_requires(&req, SUPPORTED);
            if !unsupported.is_empty() {
                let mut r = builder::local_response(&req, 420, "Bad Extension");
                r.headers
                    .push(HeaderName::Unsupported, unsupported.join(", "));
                return self.respond(id, r, now, txn);
            }
        }
        match class.service {
            ServiceType::Registration => self.register(id, req, source, transport, now, txn),
            ServiceType::Options => {
                let mut r = builder::response_to_with_tag(&req, 200, "OK", Some(&self.tag(txn)));
                r.headers.push(HeaderName::Allow, self.allow());
                r.headers.push(HeaderName::Accept, ACCEPT);
                r.headers.push(HeaderName::Supported, SUPPORTED.join(", "));
                r.headers.push(HeaderName::Server, SERVER);
                self.respond(id, r, now, txn)
            }
            ServiceType::PagerMessage => self.message(id, req, now, txn),
            ServiceType::Session if !class.in_dialog && req.method() == Some(&Method::Invite) => {
                if let Err(r) = self.invite(id, req, source, transport, now) {
                    self.respond(id, *r, now, txn);
                }
            }
            _ => {
                let Some(answer) = class.not_served(&self.svc) else {
                    return;
                };
                let mut r = builder::local_response(&req, answer.status, answer.reason);
                if let Some(allow) = answer.allow {
                    r.headers.push(HeaderName::Allow, allow);
                }
                if let Some(events) = answer.allow_events {
                    r.headers.push(HeaderName::AllowEvents, events);
                }
                self.respond(id, r, now, txn)
            }
        }
    }

    /// A CANCEL: nothing this server serves now can be cancelled once it has its transaction,
    /// so the CANCEL is answered 200 if it matched, 481 otherwise (RFC 3261 §9.2).
    pub fn on_cancel(
        &mut self,
        cancel_tx: ServerTxId,
        invite_tx: Option<ServerTxId>,
        req: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if let Some(actor) = invite_tx.and_then(|t| self.sessions.by_invite(t)) {
            // The session answers the CANCEL, 487s its INVITE and cancels its branches.
            actor.do_send(ToSession::Cancel {
                cancel_tx,
                invite_tx: invite_tx.expect("matched above"),
                request: req,
            });
            return;
        }
        let r = match invite_tx {
            Some(_) => builder::local_response(&req, 200, "OK"),
            None => builder::local_response(&req, 481, "Call/Transaction Does Not Exist"),
        };
        self.respond(cancel_tx, r, now, txn);
    }

    /// The ACK of a 2xx (its own transaction, RFC 3261 §17): the session's, if any.
    pub fn on_ack(&mut self, ack: Message) {
        if let Some(actor) = self.sessions.route(&ack) {
            actor.do_send(ToSession::Ack(ack));
        }
    }

    /// A final or provisional response on one of our client transactions.
    pub fn on_response(
        &mut self,
        id: ClientTxId,
        mut resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if let Some((actor, req)) = self.sessions.by_client(id) {
            actor.do_send(ToSession::Response {
                id: req,
                response: resp,
            });
            return;
        }
        let code = resp.status().unwrap_or(0);
        if code < 200 {
            return; // provisional responses to MESSAGE are not relayed
        }
        let Some(server) = self.branches.remove(&id) else {
            return;
        };
        let Some(fork) = self.forks.get_mut(&server) else {
            return;
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
        if let Some(r) = relay {
            self.respond(server, r, now, txn);
        }
    }

    /// Starts the periodic registration sweep (called when the worker starts).
    pub fn start_sweeps(&mut self, now: Instant) {
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// Periodic work: sweep expired registrations out of this worker's registrar shards.
    pub fn handle_timeout(&mut self, now: Instant, _txn: &mut TransactionLayer) {
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        for (i, shard) in self.shared.registrar_shards().iter().enumerate() {
            if i % self.workers == self.worker {
                for (aor, b) in shard.lock().expire(now) {
                    tracing::debug!(aor = %String::from_utf8_lossy(aor.as_bytes()), contact = %String::from_utf8_lossy(&b.contact), "registration expired");
                }
            }
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// When [`Services::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    fn respond(
        &mut self,
        id: ServerTxId,
        mut resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        self.metrics.response_sent(resp.status().unwrap_or(0));
        // Headers added after the builder's Content-Length go before it, as people read it.
        if let Some(cl) = resp.headers.remove_first(&HeaderName::ContentLength) {
            resp.headers.push(HeaderName::ContentLength, cl);
        }
        if let Err(e) = txn.respond(id, &resp, now) {
            tracing::debug!(error = %e.reason(), "response not sent");
        }
    }

    /// The Allow value: the methods served (RFC 3261 §20.5).
    fn allow(&self) -> String {
        self.svc
            .served_methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn tag(&mut self, txn: &mut TransactionLayer) -> String {
        String::from_utf8_lossy(&txn.new_tag()).into_owned()
    }

    // ---- registrar (RFC 3261 §10.3) -----------------------------------------------------

    fn register(
        &mut self,
        id: ServerTxId,
        req: Message,
        source: SocketAddr,
        transport: &Transport,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        match self.try_register(&req, source, transport, now, txn) {
            Ok(r) => self.respond(id, r, now, txn),
            Err(r) => self.respond(id, *r, now, txn),
        }
    }

    fn try_register(
        &mut self,
        req: &Message,
        source: SocketAddr,
        transport: &Transport,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<Message, Box<Message>> {
        let bad = |code: u16, reason: &str| Box::new(builder::local_response(req, code, reason));
        // Step 1: the Request-URI names a domain of ours.
        let ruri = req.request_uri().and_then(|u| Uri::parse(u).ok());
        let domain_ok = ruri
            .as_ref()
            .and_then(|u| u.as_sip())
            .is_some_and(|u| self.shared.is_local_domain(&u.host.to_lowercase()));
        if !domain_ok {
            return Err(bad(403, "Domain Not Served"));
        }
        // Step 5: the address-of-record from To.
        let to = req.to().map_err(|e| bad(400, &e.reason()))?;
        let to_sip = to
            .uri
            .as_sip()
            .ok_or_else(|| bad(400, "To Is Not A SIP URI"))?;
        if !self.shared.is_local_domain(&to_sip.host.to_lowercase()) {
            return Err(bad(403, "Domain Not Served"));
        }
        let aor_text = to
            .uri
            .aor()
            .ok_or_else(|| bad(400, "Malformed To Header"))?;
        // Steps 3-4 and 6: authentication, and the user may only register their own AOR.
        if self.shared.users.is_some() {
            let user = self.authenticate(req, now, txn)?;
            let to_user = to_sip
                .user
                .as_ref()
                .map(|u| String::from_utf8_lossy(u).into_owned())
                .unwrap_or_default();
            let user_part = user.split('@').next().unwrap_or_default();
            if user_part != to_user {
                return Err(bad(403, "Not Authorized For This AOR"));
            }
        }
        // Step 7: the bindings.
        let reg = RegisterRequest::from_message(
            req,
            Some(source),
            Some(Bytes::from_static(transport.token().as_bytes())),
        )
        .map_err(|e| bad(400, &e.reason()))?;
        let aor = Aor::new(aor_text);
        let result = self.shared.registrar(&aor).lock().apply(&aor, &reg, now);
        match result {
            Ok(bindings) => {
                let mut r = builder::response_to_with_tag(req, 200, "OK", Some(&self.tag(txn)));
                for b in &bindings {
                    r.headers.push(HeaderName::Contact, b.contact_value(now));
                }
                r.headers
                    .push(HeaderName::Date, crate::time::httpdate(SystemTime::now()));
                r.headers.push(HeaderName::Server, SERVER);
                tracing::debug!(aor = %String::from_utf8_lossy(aor.as_bytes()), contacts = bindings.len(), "registered");
                Ok(r)
            }
            Err(e) => {
                let mut r = bad(e.status(), e.reason());
                if let Some(min) = e.min_expires() {
                    r.headers.push(HeaderName::MinExpires, min.to_string());
                }
                Err(r)
            }
        }
    }

    /// RFC 3261 §22 digest: the authenticated username, or the 401 to send.
    fn authenticate(
        &mut self,
        req: &Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<String, Box<Message>> {
        let _ = now;
        let shared = self.shared.clone();
        let users = shared.users.as_ref().expect("checked by caller");
        let auth = &shared.auth;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let method = req.method().map(Method::as_str).unwrap_or("REGISTER");
        let mut stale = false;
        for line in req.headers.get_all(&HeaderName::Authorization) {
            let Ok(creds) = Credentials::parse(line) else {
                continue;
            };
            if creds.realm != auth.realm() {
                continue;
            }
            let Some(secret) = users.lookup(&creds.username, auth.realm()) else {
                tracing::debug!(user = %creds.username, "unknown user");
                break;
            };
            match auth.verify(&creds, method, secret, secs) {
                Verdict::Ok => return Ok(creds.username.clone()),
                Verdict::Stale => stale = true,
                Verdict::Bad(why) => {
                    tracing::debug!(user = %creds.username, reason = %why, "authentication failed")
                }
            }
        }
        self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let challenges = self.shared.auth.challenges(secs, self.salt, stale);
        let mut r = builder::response_to_with_tag(req, 401, "Unauthorized", Some(&self.tag(txn)));
        for c in challenges {
            r.headers.push(HeaderName::WwwAuthenticate, c.to_string());
        }
        Err(Box::new(r))
    }

    // ---- pager-mode MESSAGE (CPM.md §5 fig. 5, RFC 3428) ---------------------------------

    fn message(&mut self, id: ServerTxId, req: Message, now: Instant, txn: &mut TransactionLayer) {
        match self.try_message(id, &req, now, txn) {
            Ok(()) => {}
            Err(r) => self.respond(id, *r, now, txn),
        }
    }

    fn try_message(
        &mut self,
        id: ServerTxId,
        req: &Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) -> Result<(), Box<Message>> {
        // Max-Forwards was checked for every forwarded service in `on_request` (400, 483).
        let mut started = 0;
        for (b, dest, reliable) in self.local_targets(req, now)? {
            let fwd = self.forward_copy(req, &b, reliable, txn);
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

    /// The registered contacts of the local user a request is for, with where each is reached:
    /// 400 for a malformed Request-URI, 404 for a domain or user not served here, 480 when
    /// the user has no reachable contact (decision 0003).
    fn local_targets(
        &self,
        req: &Message,
        now: Instant,
    ) -> Result<Vec<(Binding, SocketAddr, bool)>, Box<Message>> {
        let bad = |code: u16, reason: &str| Box::new(builder::local_response(req, code, reason));
        let target = req
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .ok_or_else(|| bad(400, "Malformed Request-URI"))?;
        let sip = target.as_sip().ok_or_else(|| bad(404, "Not Found"))?;
        if !self.shared.is_local_domain(&sip.host.to_lowercase()) {
            return Err(bad(404, "Domain Not Served"));
        }
        let user = sip
            .user
            .as_ref()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        if user.is_empty() {
            // The server itself: nobody to deliver to (OPTIONS to it is answered elsewhere).
            return Err(bad(404, "Not Found"));
        }
        if let Some(users) = &self.shared.users {
            if users.lookup(&user, self.shared.auth.realm()).is_none() {
                return Err(bad(404, "Not Found"));
            }
        }
        let aor = Aor::new(target.aor().ok_or_else(|| bad(404, "Not Found"))?);
        let bindings = self.shared.registrar(&aor).lock().lookup(&aor, now);
        let targets: Vec<_> = bindings
            .into_iter()
            .filter_map(|b| self.destination(&b).map(|(d, r)| (b, d, r)))
            .collect();
        if targets.is_empty() {
            return Err(bad(480, "Temporarily Unavailable"));
        }
        Ok(targets)
    }

    // ---- 1-to-1 sessions (CPM.md §5 fig. 6-7) -------------------------------------------

    /// An INVITE to a local user: a session actor relays it to every registered contact
    /// (the B2BUA of `cpm_engine::session`), with its media anchored here.
    fn invite(
        &mut self,
        id: ServerTxId,
        req: Message,
        source: SocketAddr,
        transport: &Transport,
        now: Instant,
    ) -> Result<(), Box<Message>> {
        // Max-Forwards was checked for every forwarded service in `on_request` (400, 483).
        let Some(worker) = self.worker_addr.clone() else {
            return Err(Box::new(builder::local_response(
                &req,
                503,
                "Service Unavailable",
            )));
        };
        let contacts = self
            .local_targets(&req, now)?
            .into_iter()
            .map(|(b, dest, reliable)| Peer {
                uri: b.contact.clone(),
                dest,
                reliable,
            })
            .collect();
        let b_call_id = self.owned_call_id();
        self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let start = SessionStart {
            tx: id,
            invite: req.clone(),
            source,
            reliable: transport.reliable(),
            contacts,
            b_call_id: b_call_id.clone(),
            seed: self.salt,
        };
        let key: SessionKey = self.sessions.next_key();
        let actor = SessionActor::new(key, start, self.env.clone(), worker, now).start();
        self.sessions.insert(key, actor, (&req, id), b_call_id);
        Ok(())
    }

    /// A fresh Call-ID for the B side that this worker owns (the router sends its traffic
    /// here): about N tries for N workers.
    fn owned_call_id(&mut self) -> Bytes {
        loop {
            self.salt = self
                .salt
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let id = Bytes::from(format!(
                "{:016x}@{}",
                self.salt,
                self.shared.config.sip_listen.ip()
            ));
            if Router::owner(Some(&id), self.workers) == self.worker {
                return id;
            }
        }
    }

    /// Where a binding is reached: over the TCP connection it registered on while that is
    /// open; else at the contact URI's address when it is an IP literal; else at the address
    /// the REGISTER came from (a client behind NAT, RFC 3581 style). Decision 0003.
    fn destination(&self, b: &Binding) -> Option<(SocketAddr, bool)> {
        let registered_tcp = b.transport.as_deref() == Some(&b"TCP"[..]);
        if registered_tcp {
            if let Some(src) = b.source {
                if self.shared.tcp.get(&src).is_some() {
                    return Some((src, true));
                }
            }
        }
        let uri = Uri::parse(&b.contact).ok()?;
        let sip = uri.as_sip()?;
        let reliable = sip
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"tcp"))
            || registered_tcp;
        match sip.host.ip() {
            Some(ip) => Some((SocketAddr::new(ip, sip.port.unwrap_or(5060)), reliable)),
            None => b.source.map(|s| (s, reliable)),
        }
    }

    /// The request as forwarded to one contact (RFC 3261 §16.6): Request-URI = the contact,
    /// Max-Forwards decremented, our Via on top with a fresh branch, Routes to us removed.
    fn forward_copy(
        &mut self,
        req: &Message,
        b: &Binding,
        reliable: bool,
        txn: &mut TransactionLayer,
    ) -> Message {
        let mut fwd = req.clone();
        if let StartLine::Request { uri, .. } = &mut fwd.start {
            *uri = b.contact.clone();
        }
        let mf = req.max_forwards().ok().flatten().unwrap_or(70);
        fwd.headers
            .set(HeaderName::MaxForwards, (mf.saturating_sub(1)).to_string());
        let routes: Vec<Bytes> = fwd.headers.values(&HeaderName::Route).collect();
        if !routes.is_empty() {
            fwd.headers.remove(&HeaderName::Route);
            for r in routes.into_iter().filter(|r| !self.is_our_route(r)) {
                fwd.headers.push(HeaderName::Route, r);
            }
        }
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            if reliable { "TCP" } else { "UDP" },
            self.shared.config.sip_listen,
            String::from_utf8_lossy(&txn.new_branch())
        );
        fwd.headers.push_front(HeaderName::Via, via);
        fwd
    }

    fn is_our_route(&self, r: &Bytes) -> bool {
        cpm_engine::sip::hdr::NameAddr::parse(r, "Route")
            .ok()
            .and_then(|na| na.uri.as_sip().map(|s| (s.host.to_lowercase(), s.port)))
            .is_some_and(|(host, port)| {
                self.shared.is_local_domain(&host)
                    && port.is_none_or(|p| p == self.shared.config.sip_listen.port())
            })
    }
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
