//! The controllers a worker dispatches to once the signaling manager has classified a request
//! (CPM.md §3–4): the registrar, OPTIONS, and pager-mode MESSAGE delivery. Services not served
//! yet get the answer `cpm_engine::service` gives them.
//!
//! Pager mode (CPM.md §5 fig. 5, RFC 3428) is the [`MessageController`]'s; where a request
//! goes (the target's contacts, the forwarded copy) is [`routing`]'s.
//!
//! A 1-to-1 session (CPM.md §5 fig. 6-7) gets a [`SessionActor`] on this worker: an INVITE to a
//! registered local user starts one, and every later request, ACK, CANCEL and response of its
//! Call-IDs is routed to it through the [`SessionTable`].

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
use cpm_engine::sip::{builder, HeaderName, Message, Method};

use crate::conference::{ConfEnv, ConferenceActor, ConferenceTable, FromConference, ToConference};
use crate::messaging::{MessageController, StoreDone, StoreEvent};
use crate::routing;
use crate::session::{FromSession, SessionActor, SessionEnv, SessionKey, SessionTable, ToSession};
use crate::shared::Shared;
use crate::transport::Transport;

/// Body types the server itself accepts (MESSAGE bodies of any type are relayed unchanged).
pub const ACCEPT: &str = "text/plain, message/cpim, application/im-iscomposing+xml";
/// Option tags understood; any other in Require gets 420 (RFC 3261 §8.2.2.3).
pub const SUPPORTED: &[&str] = &[];
/// Our Server / User-Agent value.
pub const SERVER: &str = concat!("cpm-engine/", env!("CARGO_PKG_VERSION"));

/// How often each worker sweeps expired registrations out of its registrar shards.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The controllers of one worker.
pub struct Services {
    shared: Arc<Shared>,
    metrics: Arc<crate::metrics::WorkerMetrics>,
    svc: ServiceConfig,
    worker: usize,
    workers: usize,
    messages: MessageController,
    next_sweep: Option<Instant>,
    salt: u64,
    /// The sessions of this worker and how their traffic reaches them.
    pub sessions: SessionTable,
    env: Rc<SessionEnv>,
    /// The worker, which carries out the sessions' SIP actions (set when it starts).
    worker_addr: Option<Recipient<FromSession>>,
    /// The conferences of this worker and how their traffic reaches them.
    pub conferences: ConferenceTable,
    /// What this worker's conferences share (set when the worker starts).
    conf_env: Option<Rc<ConfEnv>>,
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
                msrp: Some(shared.msrp.sdp_config()),
                ..SdpConfig::new(cfg.media_ip)
            }),
            pool: Rc::new(RefCell::new(PortPool::partition(
                cfg.media_ports.min,
                cfg.media_ports.max,
                workers,
                worker,
            ))),
            plane: shared.media[worker].clone(),
            msrp: Some(shared.msrp.clone()),
            charging: shared.charging.clone(),
            interim: cfg.cdr_interim(),
            media_timeout: cfg.media_timeout(),
            test_hooks: cfg.test_hooks,
            shared: Some(shared.clone()),
        });
        Services {
            sessions: SessionTable::default(),
            env,
            worker_addr: None,
            conferences: ConferenceTable::default(),
            conf_env: None,
            metrics: shared.metrics[worker].clone(),
            shared,
            svc,
            worker,
            workers,
            messages: MessageController::new(worker, workers, seed),
            next_sweep: None,
            salt: seed,
        }
    }

    /// Forgets per-call state (after a supervisor restart).
    pub fn reset(&mut self) {
        self.messages.reset(&self.shared);
        self.sessions.clear();
        self.conferences.clear();
    }

    /// The worker's address, for the conferences it starts.
    pub fn set_conference_worker(&mut self, worker: Recipient<FromConference>) {
        self.conf_env = Some(Rc::new(ConfEnv {
            worker: self.worker,
            workers: self.workers,
            shared: self.shared.clone(),
            pool: self.env.pool.clone(),
            plane: self.env.plane.clone(),
            out: worker,
        }));
    }

    /// The worker's address, for the sessions it starts.
    pub fn set_worker(&mut self, worker: Recipient<FromSession>, store: Recipient<StoreDone>) {
        self.worker_addr = Some(worker);
        self.messages.set_worker(store);
    }

    /// Relay ports of this worker in use.
    pub fn media_ports_in_use(&self) -> usize {
        self.env.pool.borrow().in_use()
    }

    /// Deliveries in progress.
    pub fn forks_in_flight(&self) -> usize {
        self.messages.in_flight()
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
        if self.shared.config.test_hooks {
            let hook = req.headers.iter().find_map(|h| {
                matches!(&h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(b"X-Cpm-Test"))
                    .then_some(&h.value[..])
            });
            match hook {
                Some(b"panic") => panic!("fault injected by X-Cpm-Test: panic"),
                // Saturation: the worker's thread is busy this long (what its queue sees).
                Some(v) if v.starts_with(b"stall-ms=") => {
                    let ms = std::str::from_utf8(&v[9..])
                        .ok()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                        .min(5000);
                    std::thread::sleep(Duration::from_millis(ms));
                }
                _ => {}
            }
        }
        // Requests to a conference focus go to its actor (decision 0014); while shutting
        // down, only those of its dialogs (a new participant gets 503 below).
        let joining = req.method() == Some(&Method::Invite)
            && cpm_engine::sip::dialog::DialogId::of_request(&req).is_none();
        if let Some(name) = self
            .shared
            .conferences
            .names()
            .conference_of(&req)
            .filter(|_| !(joining && self.shared.is_draining()))
        {
            let name = name.to_vec();
            return self.conference_request(&name, id, req, source, transport, now, txn);
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
        // Requests of a large-message session cpmd answered itself (a BYE).
        if let Some(r) = self.messages.on_dialog_request(&req) {
            return self.respond(id, r, now, txn);
        }
        if self.shared.is_draining() {
            let mut r = builder::local_response(&req, 503, "Service Unavailable (Shutting Down)");
            r.headers.push(HeaderName::RetryAfter, "5");
            return self.respond(id, r, now, txn);
        }
        // An INVITE to the conference factory creates an ad-hoc conference here (RFC 4579 §5.1).
        if req.method() == Some(&Method::Invite)
            && self.shared.conferences.names().is_factory(&req)
            && cpm_engine::sip::dialog::DialogId::of_request(&req).is_none()
        {
            if let Err(r) = self.create_conference(id, req, source, transport) {
                self.respond(id, *r, now, txn);
            }
            return;
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
                // Large message mode for an offline user: cpmd is the MSRP endpoint.
                let shared = self.shared.clone();
                if self.messages.large_wanted(&shared, &req, now) {
                    let reliable = transport.reliable();
                    if let Err(r) = self
                        .messages
                        .on_large_invite(&shared, id, &req, source, reliable, now, txn)
                    {
                        self.respond(id, *r, now, txn);
                    }
                    return;
                }
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

    /// The ACK of a 2xx (its own transaction, RFC 3261 §17): the conference's or the
    /// session's, if any.
    pub fn on_ack(&mut self, ack: Message) {
        if let Some(name) = self.shared.conferences.names().conference_of(&ack) {
            if let Some(actor) = self.conferences.by_name(name) {
                actor.do_send(ToConference::Ack(ack));
            }
            return;
        }
        if let Some(actor) = self.sessions.route(&ack) {
            actor.do_send(ToSession::Ack(ack));
        } else {
            self.messages.on_ack(&ack);
        }
    }

    /// A final or provisional response on one of our client transactions.
    pub fn on_response(
        &mut self,
        id: ClientTxId,
        resp: Message,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if let Some((actor, req)) = self.conferences.by_client(id) {
            actor.do_send(ToConference::Response {
                id: req,
                response: resp,
            });
            return;
        }
        if let Some((actor, req)) = self.sessions.by_client(id) {
            actor.do_send(ToSession::Response {
                id: req,
                response: resp,
            });
            return;
        }
        let shared = self.shared.clone();
        // Err: a late response to a transaction forgotten since.
        if let Ok(out) = self.messages.on_response(&shared, id, resp, now, txn) {
            for (server, r) in out {
                self.respond(server, r, now, txn);
            }
        }
    }

    /// A storage answer for the message controller.
    pub fn on_store(&mut self, event: StoreEvent, now: Instant, txn: &mut TransactionLayer) {
        let shared = self.shared.clone();
        for (server, r) in self.messages.on_store(&shared, event, now, txn) {
            self.respond(server, r, now, txn);
        }
    }

    /// Starts the periodic registration sweep (called when the worker starts).
    pub fn start_sweeps(&mut self, now: Instant) {
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// Periodic work: sweep expired registrations out of this worker's registrar shards.
    pub fn handle_timeout(&mut self, now: Instant, txn: &mut TransactionLayer) {
        let shared = self.shared.clone();
        for (server, r) in self.messages.handle_timeout(&shared, now, txn) {
            self.respond(server, r, now, txn);
        }
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
        [self.next_sweep, self.messages.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
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
                if !bindings.is_empty() {
                    // Held messages follow the 200 (the storage read answers later).
                    let shared = self.shared.clone();
                    self.messages.on_registered(&shared, &aor);
                }
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
        if let Err(r) = self.messages.on_message(&self.shared, id, &req, now, txn) {
            self.respond(id, *r, now, txn);
        }
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
            .local_targets_of(&req, now)?
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
        let hand_back = self.messages.large_hand_back(&self.shared, &req);
        let actor = SessionActor::new(key, start, self.env.clone(), worker, hand_back, now).start();
        self.sessions.insert(key, actor, (&req, id), b_call_id);
        Ok(())
    }

    // ---- conferences (CPM.md §5 fig. 8-11, decision 0014) ------------------------------

    /// A request to a conference focus: its actor's, else 404 (480 for a predefined
    /// conference not started, 481 inside a dialog of one that ended).
    #[allow(clippy::too_many_arguments)]
    fn conference_request(
        &mut self,
        name: &[u8],
        id: ServerTxId,
        req: Message,
        source: SocketAddr,
        transport: &Transport,
        now: Instant,
        txn: &mut TransactionLayer,
    ) {
        if let Some(actor) = self.conferences.by_name(name) {
            actor.do_send(ToConference::Request {
                tx: id,
                request: req,
                source,
                reliable: transport.reliable(),
            });
            return;
        }
        let in_dialog = cpm_engine::sip::dialog::DialogId::of_request(&req).is_some();
        let predefined = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.shared.conferences.predefined(n))
            .is_some();
        let (code, reason) = if in_dialog {
            (481, "Call/Transaction Does Not Exist")
        } else if predefined {
            (480, "Conference Not Started")
        } else {
            (404, "Conference Not Found")
        };
        self.respond(id, builder::local_response(&req, code, reason), now, txn);
    }

    /// An INVITE to the factory: policy (a registered local caller, `--conference-max`), a
    /// usable offer, then a new conference on this worker that takes the INVITE as its first
    /// participant's.
    fn create_conference(
        &mut self,
        id: ServerTxId,
        req: Message,
        source: SocketAddr,
        transport: &Transport,
    ) -> Result<(), Box<Message>> {
        let refuse = |code, reason| Err(Box::new(builder::local_response(&req, code, reason)));
        if self.shared.is_draining() {
            return refuse(503, "Service Unavailable (Shutting Down)");
        }
        let caller = req.from().ok().and_then(|f| f.uri.aor());
        let allowed = caller.is_some_and(|aor| {
            routing::is_local_aor(&self.shared, &aor)
                && !routing::contacts(
                    &self.shared,
                    &cpm_engine::registrar::Aor::new(aor),
                    Instant::now(),
                )
                .is_empty()
        });
        if !allowed {
            return refuse(
                403,
                "Conference Creation Allowed To Registered Local Users Only",
            );
        }
        if let Err(e) = crate::conference::sdp::acceptable(&req.body) {
            return refuse(488, e.reason());
        }
        let mut next = || {
            self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
            cpm_engine::hash::fnv1a(&self.salt.to_le_bytes())
        };
        let name = crate::conference::focus::adhoc_name(self.worker, self.workers, &mut next);
        let addr = self
            .start_conference(name, crate::conference::actor::Origin::AdHoc)
            .map_err(|(code, reason)| Box::new(builder::local_response(&req, code, reason)))?;
        addr.do_send(ToConference::Request {
            tx: id,
            request: req,
            source,
            reliable: transport.reliable(),
        });
        Ok(())
    }

    /// Starts predefined conference `name` (from the HTTP API): its focus URI.
    pub fn start_predefined(&mut self, name: &str) -> Result<String, String> {
        let def = self
            .shared
            .conferences
            .predefined(name)
            .cloned()
            .ok_or_else(|| format!("no predefined conference {name:?}"))?;
        self.start_conference(
            name.to_string(),
            crate::conference::actor::Origin::Predefined(def),
        )
        .map_err(|(_, reason)| reason.to_string())?;
        let domain = self.shared.domains.first().cloned().unwrap_or_default();
        Ok(format!("sip:{name}@{domain}"))
    }

    fn start_conference(
        &mut self,
        name: String,
        origin: crate::conference::actor::Origin,
    ) -> Result<Addr<ConferenceActor>, (u16, &'static str)> {
        let Some(env) = self.conf_env.clone() else {
            return Err((503, "Service Unavailable"));
        };
        let ctx = Context::<ConferenceActor>::new();
        let addr = ctx.address();
        let summary = Arc::new(parking_lot::Mutex::new(Default::default()));
        let running = crate::conference::registry::Running {
            addr: addr.clone(),
            summary: summary.clone(),
        };
        match self.shared.conferences.register(&name, running) {
            Ok(()) => {}
            Err(crate::conference::registry::Refused::TooMany) => {
                tracing::warn!("conference refused: --conference-max reached");
                return Err((503, "Too Many Conferences"));
            }
            Err(crate::conference::registry::Refused::Running) => {
                return Err((409, "Conference Already Running"));
            }
        }
        let key = self.conferences.next_key();
        self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let actor = ConferenceActor::new(key, name.clone(), env, origin, summary, self.salt);
        tracing::info!(conference = %name, focus = actor.focus(), "conference started");
        ctx.run(actor);
        self.conferences.insert(key, name, addr.clone());
        Ok(addr)
    }

    /// A fresh Call-ID for the B side that this worker owns.
    fn owned_call_id(&mut self) -> Bytes {
        routing::owned_call_id(&self.shared, self.worker, self.workers, &mut self.salt)
    }

    fn local_targets_of(
        &self,
        req: &Message,
        now: Instant,
    ) -> Result<Vec<(Binding, SocketAddr, bool)>, Box<Message>> {
        routing::local_targets(&self.shared, req, now)
    }
}
