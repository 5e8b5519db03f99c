//! The worker actor: one per core, owning every transaction whose Call-ID hashes to it.
//!
//! It is the "generic driver" of STYLE.md: each [`Inbound`] message is fed to the engine's
//! transaction layer, the resulting work is dispatched by service type (the signaling
//! manager's decision, `cpm_engine::service`), then the worker drains the engine's transmits
//! and events and re-arms its one timer at the engine's next deadline.
//!
//! Supervision: a panic inside a handler is caught at the actor boundary, counted, and stops
//! the actor; its [`actix::Supervisor`] restarts it with fresh per-worker state while its
//! address (and so the router) stays valid. Other workers are not affected.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use cpm_engine::sip::transaction::{
    response_dest, ClientTxId, LayerConfig, RequestOutcome, ResponseOutcome, ServerTxId,
    TransactionLayer, TxEvent, TxId,
};
use cpm_engine::sip::{builder, validate, Message, Method};

use crate::conference::{ConfAction, FromConference, StartConference, ToConference};
use crate::messaging::StoreDone;
use crate::metrics::{Drop as DropReason, WorkerMetrics};
use crate::services::Services;
use crate::session::{FromSession, ToSession};
use crate::shared::Shared;
use crate::transport::{tcp, udp, Inbound, Outbound, Router, Transport};
use cpm_engine::session::Action;

/// Starts the worker's socket tasks once every worker exists (so the router is complete).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartIo {
    /// Routes parsed messages to their owners.
    pub router: Router,
}

/// The server's drain time passed on shutdown: end every session of this worker (BYE to both
/// parties of an established one, 503 to a caller still being connected) and every conference
/// (BYE to every participant).
#[derive(Message)]
#[rtype(result = "()")]
pub struct EndSessions;

impl Handler<EndSessions> for Worker {
    type Result = ();
    fn handle(&mut self, _: EndSessions, _: &mut Context<Self>) {
        let n = self.services.sessions.len();
        if n > 0 {
            tracing::info!(worker = self.id, sessions = n, "ending the sessions left");
        }
        for actor in self.services.sessions.actors() {
            actor.do_send(crate::session::ToSession::Shutdown);
        }
        for actor in self.services.conferences.actors() {
            actor.do_send(crate::conference::EndConference);
        }
    }
}

/// A send the worker's transport accepted failed later (a TCP connection could not be opened):
/// the transaction is told at once (RFC 3261 §8.1.3.1: its TU sees a 503).
#[derive(Message)]
#[rtype(result = "()")]
struct SendFailed {
    tx: TxId,
}

/// One worker.
pub struct Worker {
    id: usize,
    shared: Arc<Shared>,
    metrics: Arc<WorkerMetrics>,
    out: Option<Outbound>,
    pending_udp: Option<std::net::UdpSocket>,
    pending_tcp: Option<std::net::TcpListener>,
    seed: u64,
    txn: TransactionLayer,
    services: Services,
    timer: Option<(Instant, SpawnHandle)>,
    /// This worker's queueing delay, for overload control.
    load: crate::transport::LoadMeter,
}

impl Worker {
    /// A worker with its sockets (converted to the worker's runtime when it starts).
    pub fn new(
        id: usize,
        shared: Arc<Shared>,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
    ) -> Worker {
        let metrics = shared.metrics[id].clone();
        let seed = shared.seed() ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let workers = shared.metrics.len();
        Worker {
            id,
            services: Services::new(shared.clone(), id, workers, seed),
            shared,
            metrics,
            out: None,
            pending_udp: Some(udp),
            pending_tcp: Some(tcp),
            seed,
            txn: TransactionLayer::new(LayerConfig::default(), seed),
            timer: None,
            load: crate::transport::LoadMeter::new(id),
        }
    }

    fn on_inbound(&mut self, inb: Inbound, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.load.observe(&self.shared.overload, inb.received, now);
        let Some(out) = self.out.clone() else { return };
        let span = tracing::debug_span!(
            "sip",
            call_id = %String::from_utf8_lossy(inb.msg.call_id().map(|c| &c[..]).unwrap_or(b"-")),
            worker = self.id
        );
        let _enter = span.enter();
        if inb.msg.is_request() {
            self.on_request(inb, now, &out);
        } else {
            self.on_response(inb, now);
        }
        self.drive(now, &out, ctx);
    }

    fn on_request(&mut self, inb: Inbound, now: Instant, out: &Outbound) {
        let Inbound {
            msg,
            source,
            transport,
            size,
            reject,
            ..
        } = inb;
        let method = msg.method().cloned().unwrap_or(Method::Other(Bytes::new()));
        self.metrics.request(&method);
        // A request we cannot accept is answered statelessly (RFC 3261 §8.2: these checks come
        // before any transaction processing). ACK is never answered.
        let reject = match reject {
            Some(r) => Some((r.status, r.reason)),
            None if size > self.shared.config.max_message_size => {
                Some((513, "Message Too Large".to_string()))
            }
            None => validate::validate_request(&msg)
                .err()
                .map(|r| (r.status, r.reason)),
        };
        if let Some((code, reason)) = reject {
            self.metrics.rejected();
            tracing::debug!(%source, code, %reason, "request rejected");
            if method != Method::Ack {
                self.send_stateless(&msg, code, &reason, source, &transport, out);
            }
            return;
        }
        match self
            .txn
            .handle_request(msg, source, transport.reliable(), now)
        {
            RequestOutcome::New { id, request } => {
                self.services
                    .on_request(id, request, source, &transport, now, &mut self.txn)
            }
            RequestOutcome::Cancel {
                cancel_tx,
                invite_tx,
                request,
            } => self
                .services
                .on_cancel(cancel_tx, invite_tx, request, now, &mut self.txn),
            RequestOutcome::Invalid { request, error } => {
                self.metrics.rejected();
                self.send_stateless(&request, 400, &error.reason(), source, &transport, out);
            }
            RequestOutcome::Ack2xx(ack) => self.services.on_ack(ack),
            RequestOutcome::AckForInvite(_) | RequestOutcome::Retransmission(_) => {}
        }
    }

    fn on_response(&mut self, inb: Inbound, now: Instant) {
        let code = inb.msg.status().unwrap_or(0);
        self.metrics.response_received(code);
        if validate::validate_response(&inb.msg).is_err() {
            self.metrics.dropped(DropReason::MalformedResponse);
            return;
        }
        match self.txn.handle_response(inb.msg, inb.source, now) {
            ResponseOutcome::Response { id, response } => {
                self.services.on_response(id, response, now, &mut self.txn)
            }
            ResponseOutcome::Absorbed(_) => {}
            ResponseOutcome::Stray(_) => self.metrics.dropped(DropReason::StrayResponse),
        }
    }

    /// Sends what the engine wants sent, hands its events to the services, and re-arms the
    /// one timer at the engine's next deadline.
    fn drive(&mut self, now: Instant, out: &Outbound, ctx: &mut Context<Self>) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.txn.poll_event() {
                progressed = true;
                match ev {
                    TxEvent::ClientFailed { id, response, .. } => {
                        self.services.on_response(id, response, now, &mut self.txn)
                    }
                    TxEvent::Terminated(TxId::Client(id)) => {
                        self.services.sessions.tx_ended(id);
                        self.services.conferences.tx_ended(id);
                    }
                    _ => {}
                }
            }
            while let Some(t) = self.txn.poll_transmit() {
                progressed = true;
                let on_late_failure = t.tx.map(|tx| {
                    let me = ctx.address();
                    Box::new(move || {
                        if me.try_send(SendFailed { tx }).is_err() {
                            tracing::warn!("worker mailbox full: a send failure is lost");
                        }
                    }) as crate::transport::OnLateFailure
                });
                if let Err(e) = out.send(
                    t.dest,
                    t.reliable,
                    t.payload,
                    &self.metrics,
                    on_late_failure,
                ) {
                    tracing::debug!(dest = %t.dest, error = ?e, "send failed");
                    if let Some(tx) = t.tx {
                        self.txn.handle_transport_error(tx, now);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        self.metrics
            .transactions
            .store(self.txn.len() as u64, Relaxed);
        self.metrics
            .retransmissions
            .store(self.txn.stats().retransmissions_sent, Relaxed);
        self.metrics
            .pending_requests
            .store(self.services.forks_in_flight() as u64, Relaxed);
        self.metrics
            .sessions
            .store(self.services.sessions.len() as u64, Relaxed);
        self.metrics
            .session_ports
            .store(self.services.media_ports_in_use() as u64, Relaxed);
        let deadline = [self.txn.poll_timeout(), self.services.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match (deadline, &self.timer) {
            (Some(at), Some((armed, _))) if *armed <= at => {}
            (Some(at), _) => {
                if let Some((_, h)) = self.timer.take() {
                    ctx.cancel_future(h);
                }
                let h = ctx.run_later(at.saturating_duration_since(now), |w, ctx| {
                    w.timer = None;
                    w.guarded(ctx, |w, ctx| w.on_timer(ctx));
                });
                self.timer = Some((at, h));
            }
            (None, _) => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let Some(out) = self.out.clone() else { return };
        self.txn.handle_timeout(now);
        self.services.handle_timeout(now, &mut self.txn);
        self.drive(now, &out, ctx);
    }

    fn send_stateless(
        &self,
        req: &Message,
        code: u16,
        reason: &str,
        source: std::net::SocketAddr,
        transport: &Transport,
        out: &Outbound,
    ) {
        let resp = builder::local_response(req, code, reason);
        self.metrics.response_sent(code);
        // RFC 3261 §18.2.2 as for transaction responses; a request without a usable Via (it
        // is being refused for that) is answered at its source.
        let dest = match req.top_via() {
            Ok(via) => response_dest(&via, source, transport.reliable()),
            Err(_) => source,
        };
        if let Err(e) = out.send(
            dest,
            transport.reliable(),
            resp.to_bytes(),
            &self.metrics,
            None,
        ) {
            tracing::debug!(%dest, error = ?e, "send failed");
        }
    }

    /// Carries out a session's SIP actions on this worker's transaction layer.
    fn on_session_actions(&mut self, msg: FromSession, now: Instant) {
        let key = msg.key;
        for action in msg.actions {
            match action {
                Action::SendRequest {
                    id,
                    dest,
                    reliable,
                    request,
                    ..
                } => match self.start_client(request, dest, reliable, now) {
                    Ok(tx) => self.services.sessions.started(key, id, tx),
                    Err(refused) => {
                        if let Some(actor) = self.services.sessions.actor(key) {
                            actor.do_send(ToSession::Response {
                                id,
                                response: *refused,
                            });
                        }
                    }
                },
                Action::Cancel { id } => {
                    if let Some(tx) = self.services.sessions.client_of(key, id) {
                        if let Err(e) = self.txn.cancel(tx, now) {
                            tracing::debug!(error = %e.reason(), "CANCEL not sent");
                        }
                    }
                }
                Action::Respond { tx, response } => self.respond_server(tx, &response, now),
                Action::SendAck {
                    dest,
                    reliable,
                    ack,
                    ..
                } => self.txn.send_stateless(&ack, dest, reliable),
                Action::Ended(_) => self.services.sessions.remove(key),
                // Timers and charging records stay with the session's actor.
                Action::Timer(_) | Action::Charging(_) => {}
            }
        }
    }

    /// Carries out a conference's SIP actions on this worker's transaction layer.
    fn on_conference_actions(&mut self, msg: FromConference, now: Instant) {
        let key = msg.key;
        for action in msg.actions {
            match action {
                ConfAction::SendRequest {
                    id,
                    dest,
                    reliable,
                    request,
                } => match self.start_client(request, dest, reliable, now) {
                    Ok(tx) => self.services.conferences.started(key, id, tx),
                    Err(refused) => {
                        if let Some(actor) = self.services.conferences.actor(key) {
                            actor.do_send(ToConference::Response {
                                id,
                                response: *refused,
                            });
                        }
                    }
                },
                ConfAction::Respond { tx, response } => self.respond_server(tx, &response, now),
                ConfAction::SendAck {
                    dest,
                    reliable,
                    ack,
                } => self.txn.send_stateless(&ack, dest, reliable),
                ConfAction::Ended => self.services.conferences.remove(key),
            }
        }
    }

    /// Starts a client transaction for a session's or conference's request; when it cannot
    /// be sent, the 503 its actor takes as the answer (as a transport error would be, RFC 3261
    /// §8.1.3.1).
    fn start_client(
        &mut self,
        request: Message,
        dest: SocketAddr,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientTxId, Box<Message>> {
        let refused = Box::new(builder::local_response(
            &request,
            503,
            "Service Unavailable",
        ));
        self.txn
            .send_request(request, dest, reliable, now)
            .map_err(|e| {
                tracing::debug!(error = %e.reason(), "request not sent");
                refused
            })
    }

    /// Sends an actor's response on its server transaction, counted.
    fn respond_server(&mut self, tx: ServerTxId, response: &Message, now: Instant) {
        if let Some(code) = response.status() {
            self.metrics.response_sent(code);
        }
        if let Err(e) = self.txn.respond(tx, response, now) {
            tracing::debug!(error = %e.reason(), "response not sent");
        }
    }

    /// Runs a handler body; a panic stops the actor so that its supervisor restarts it.
    fn guarded(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if catch_unwind(AssertUnwindSafe(|| f(self, ctx))).is_err() {
            self.metrics.restarts.fetch_add(1, Relaxed);
            tracing::error!(
                worker = self.id,
                "worker handler panicked; restarting the worker actor"
            );
            ctx.stop();
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.services
            .set_worker(ctx.address().recipient(), ctx.address().recipient());
        self.services
            .set_conference_worker(ctx.address().recipient());
        self.shared
            .conferences
            .set_worker(self.id, ctx.address().recipient());
        // After a supervisor restart `out` is already set: the sockets and their tasks run on,
        // and the timer is re-armed for the periodic work.
        if let Some(out) = self.out.clone() {
            self.drive(Instant::now(), &out, ctx);
            return;
        }
        if let Some(udp_sock) = self.pending_udp.take() {
            match tokio::net::UdpSocket::from_std(udp_sock) {
                Ok(u) => {
                    self.out = Some(Outbound {
                        udp: Arc::new(u),
                        tcp: self.shared.tcp.clone(),
                    })
                }
                Err(e) => tracing::error!(error = %e, "cannot register UDP socket"),
            }
        }
    }
}

impl Supervised for Worker {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Fresh per-worker signaling state; the sockets and their tasks stay.
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.txn = TransactionLayer::new(LayerConfig::default(), self.seed);
        self.services.reset();
        self.timer = None;
        self.metrics.transactions.store(0, Relaxed);
        self.metrics.pending_requests.store(0, Relaxed);
    }
}

impl Handler<Inbound> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        self.guarded(ctx, |w, ctx| w.on_inbound(msg, ctx));
    }
}

impl Handler<FromSession> for Worker {
    type Result = ();
    fn handle(&mut self, msg: FromSession, ctx: &mut Context<Self>) {
        self.guarded(ctx, |w, ctx| {
            let Some(out) = w.out.clone() else { return };
            let now = Instant::now();
            w.on_session_actions(msg, now);
            w.drive(now, &out, ctx);
        });
    }
}

impl Handler<FromConference> for Worker {
    type Result = ();
    fn handle(&mut self, msg: FromConference, ctx: &mut Context<Self>) {
        self.guarded(ctx, |w, ctx| {
            let Some(out) = w.out.clone() else { return };
            let now = Instant::now();
            w.on_conference_actions(msg, now);
            w.drive(now, &out, ctx);
        });
    }
}

impl Handler<StartConference> for Worker {
    type Result = Result<String, String>;
    fn handle(&mut self, msg: StartConference, ctx: &mut Context<Self>) -> Self::Result {
        let mut result = Err("worker restarting".to_string());
        self.guarded(ctx, |w, ctx| {
            result = w.services.start_predefined(&msg.name);
            if let Some(out) = w.out.clone() {
                w.drive(Instant::now(), &out, ctx);
            }
        });
        result
    }
}

impl Handler<StoreDone> for Worker {
    type Result = ();
    fn handle(&mut self, msg: StoreDone, ctx: &mut Context<Self>) {
        self.guarded(ctx, |w, ctx| {
            let Some(out) = w.out.clone() else { return };
            let now = Instant::now();
            w.services.on_store(msg.0, now, &mut w.txn);
            w.drive(now, &out, ctx);
        });
    }
}

impl Handler<SendFailed> for Worker {
    type Result = ();
    fn handle(&mut self, msg: SendFailed, ctx: &mut Context<Self>) {
        self.guarded(ctx, |w, ctx| {
            let Some(out) = w.out.clone() else { return };
            let now = Instant::now();
            w.txn.handle_transport_error(msg.tx, now);
            w.drive(now, &out, ctx);
        });
    }
}

impl Handler<StartIo> for Worker {
    type Result = ();
    fn handle(&mut self, msg: StartIo, ctx: &mut Context<Self>) {
        let Some(tcp_sock) = self.pending_tcp.take() else {
            return;
        };
        let Some(out) = self.out.clone() else { return };
        let now = Instant::now();
        self.services.start_sweeps(now);
        self.drive(now, &out, ctx);
        let cfg = &self.shared.config;
        let limits = tcp::TcpLimits {
            max_message_size: cfg.max_message_size,
            idle_timeout: cfg.tcp_idle(),
            sources: self.shared.source_limits.clone(),
        };
        tcp::set_local(msg.router.clone(), limits.clone());
        actix_rt::spawn(udp::recv_loop(
            out.udp.clone(),
            msg.router.clone(),
            self.metrics.clone(),
            cfg.max_message_size,
            self.shared.source_limits.clone(),
        ));
        match tokio::net::TcpListener::from_std(tcp_sock) {
            Ok(listener) => {
                actix_rt::spawn(tcp::accept_loop(
                    listener,
                    out.tcp.clone(),
                    msg.router,
                    self.metrics.clone(),
                    limits,
                ));
            }
            Err(e) => tracing::error!(error = %e, "cannot register TCP listener"),
        }
    }
}
