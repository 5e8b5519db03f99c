//! The driver: one scenario, one transaction layer, the pacer and the recorder of one thread.
//!
//! Like the engine's state machines it reads no clock and owns no socket: datagrams and the
//! time go in ([`Driver::handle_datagram`], [`Driver::handle_timeout`], each with `now`), sends
//! go out through a [`Net`] (real UDP in [`crate::io`], an in-memory network in tests), and
//! [`Driver::poll_timeout`] says when to call again.
//!
//! ```text
//!   pacer ──start──►  Scenario  ──Ctx──► TransactionLayer ──► Net::send_to
//!   datagram ─► parse ─► TransactionLayer ─► on_request / on_response / on_ack / on_stray
//!   timers (layer, scenario, 1 Hz tick) ◄── poll_timeout
//! ```
//!
//! Phases: setup → running (the pacer starts sessions, at most `concurrency` in flight) →
//! draining (no new session; sessions in flight finish, bounded by the drain time, after which
//! they count as failed `"unfinished"`) → done.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::builder::BranchGen;
use cpm_engine::sip::transaction::{
    ClientTxId, LayerConfig, RequestOutcome, ResponseOutcome, ServerTxId, TransactionLayer,
    TxError, TxEvent, TxId,
};
use cpm_engine::sip::{builder, parse, Message};

use crate::metrics::{Counter, Quantity, Recorder};
use crate::pacing::Pacer;
use crate::scenario::{Incoming, Outcome, Scenario, SessionId, SocketId, SocketKind};

/// The sockets of a driver: real UDP ([`crate::io::UdpNet`]) or a test network.
pub trait Net {
    /// Binds a UDP socket (port 0: any free port); returns its id and actual address. Ids are
    /// never reused within one `Net`.
    fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<(SocketId, SocketAddr)>;

    /// Sends one datagram. A full send buffer is an error (the datagram is lost; SIP
    /// retransmits).
    fn send_to(&mut self, socket: SocketId, dest: SocketAddr, payload: &[u8]) -> io::Result<()>;

    /// The wall clock now (µs since the Unix epoch), where reading it is real: a send stamp
    /// taken just before its send, not at the start of the turn. `None` (simulated networks):
    /// the turn's time.
    fn clock_us(&self) -> Option<u64> {
        None
    }
}

/// How a run is bounded.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Starts the sessions of a client role; `None` for an answering role.
    pub pacer: Option<Pacer>,
    /// Sessions in flight at most; due sessions wait for a free slot.
    pub concurrency: usize,
    /// After the last start (or a stop), how long sessions in flight may take to finish.
    pub drain: Duration,
    /// Stop after this long even without a pacer (the `uas --duration`).
    pub run_for: Option<Duration>,
}

/// What the progress line shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the start.
    pub elapsed: Duration,
    /// Sessions started.
    pub attempted: u64,
    /// Sessions that succeeded.
    pub succeeded: u64,
    /// Sessions that failed.
    pub failed: u64,
    /// Sessions in flight.
    pub in_flight: usize,
    /// Sessions started in the last full second.
    pub rate_last_second: u64,
    /// p99 of the primary quantity in the last full second, µs.
    pub p99_last_second_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Running,
    Draining { until: Instant },
    Done,
}

#[derive(Debug)]
struct TxEntry {
    session: SessionId,
    socket: SocketId,
    quantity: Quantity,
    sent: Instant,
    answered: bool,
}

/// The driver's state a scenario acts on through [`Ctx`].
pub struct Core {
    now: Instant,
    start: Instant,
    /// (instant, wall clock µs since the Unix epoch at that instant).
    wall: (Instant, u64),
    /// When the kernel received the datagram being handled (wall clock µs), if it said.
    arrival_us: Option<u64>,
    layer: TransactionLayer,
    ids: BranchGen,
    sockets: HashMap<SocketId, (SocketAddr, SocketKind)>,
    txs: HashMap<ClientTxId, TxEntry>,
    server_sockets: HashMap<ServerTxId, SocketId>,
    /// Counted sessions in flight (a value of false marks an uncounted one).
    sessions: HashMap<SessionId, bool>,
    in_flight: usize,
    next_session: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, SessionId, u64)>>,
    timer_seq: u64,
    recorder: Recorder,
    first_start: Option<Instant>,
    last_start: Option<Instant>,
}

/// What a scenario acts through: the transaction layer, the sockets, timers, the recorder.
pub struct Ctx<'a> {
    core: &'a mut Core,
    net: &'a mut dyn Net,
}

impl Ctx<'_> {
    /// The time of the input being handled.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// A send stamp for a payload (µs since the Unix epoch): the clock read now where the
    /// network is real ([`Net::clock_us`]), else [`Self::unix_us`].
    pub fn send_stamp_us(&self) -> u64 {
        self.net.clock_us().unwrap_or_else(|| self.unix_us())
    }

    /// When the datagram being handled arrived (µs since the Unix epoch): the kernel's stamp
    /// where it gave one, else [`Self::unix_us`] (when it was read).
    pub fn arrival_us(&self) -> u64 {
        self.core.arrival_us.unwrap_or_else(|| self.unix_us())
    }

    /// The wall clock (µs since the Unix epoch) at `now`, for stamps read by another process.
    pub fn unix_us(&self) -> u64 {
        let (at, us) = self.core.wall;
        if self.core.now >= at {
            us + self.core.now.duration_since(at).as_micros() as u64
        } else {
            us.saturating_sub(at.duration_since(self.core.now).as_micros() as u64)
        }
    }

    /// When the run started.
    pub fn run_start(&self) -> Instant {
        self.core.start
    }

    /// Binds a UDP socket whose datagrams are handled as `kind`.
    pub fn bind_udp(
        &mut self,
        addr: SocketAddr,
        kind: SocketKind,
    ) -> io::Result<(SocketId, SocketAddr)> {
        let (id, local) = self.net.bind_udp(addr)?;
        self.core.sockets.insert(id, (local, kind));
        Ok((id, local))
    }

    /// The address a socket is bound to.
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.core.sockets.get(&socket).map(|(a, _)| *a)
    }

    /// A fresh RFC 3261 branch (`z9hG4bK...`).
    pub fn new_branch(&mut self) -> Bytes {
        self.core.layer.new_branch()
    }

    /// A fresh From/To tag.
    pub fn new_tag(&mut self) -> Bytes {
        self.core.layer.new_tag()
    }

    /// A fresh Call-ID (`<16 hex>@cpm-loadgen`).
    pub fn new_call_id(&mut self) -> String {
        format!("{:016x}@cpm-loadgen", self.core.ids.next_u64())
    }

    /// 64 pseudo-random bits (cnonces, SSRCs).
    pub fn random_u64(&mut self) -> u64 {
        self.core.ids.next_u64()
    }

    /// Sends `request` from `socket` to `dest` as a client transaction of `session`
    /// (retransmitted and timed out by the engine's transaction layer). Its latency to the
    /// final response is recorded as [`Quantity::Request`] of its method.
    pub fn send_request(
        &mut self,
        session: SessionId,
        socket: SocketId,
        request: Message,
        dest: SocketAddr,
    ) -> Result<ClientTxId, TxError> {
        let quantity = Quantity::request(request.method().ok_or(TxError::NotARequest)?);
        let now = self.core.now;
        let id = self.core.layer.send_request(request, dest, false, now)?;
        self.core.txs.insert(
            id,
            TxEntry {
                session,
                socket,
                quantity,
                sent: now,
                answered: false,
            },
        );
        self.core.flush(self.net);
        Ok(id)
    }

    /// Answers a server transaction (sent at once, retransmitted as the transaction requires).
    pub fn respond(&mut self, tx: ServerTxId, response: &Message) {
        if let Err(e) = self.core.layer.respond(tx, response, self.core.now) {
            tracing::debug!(error = %e, "response not sent");
            self.core.recorder.note("response_errors", 1);
        }
        self.core.flush(self.net);
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, a 2xx retransmission).
    pub fn send_stateless(&mut self, socket: SocketId, msg: &Message, dest: SocketAddr) {
        self.send_raw(socket, dest, &msg.to_bytes());
    }

    /// Sends raw bytes (RTP).
    pub fn send_raw(&mut self, socket: SocketId, dest: SocketAddr, payload: &[u8]) {
        if self.net.send_to(socket, dest, payload).is_err() {
            self.core.recorder.note("send_errors", 1);
        }
    }

    /// Arms a timer: [`Scenario::on_timer`] with `session` and `token` at `at` (at once if
    /// past). Timers cannot be cancelled: ignore the ones that no longer apply.
    pub fn set_timer(&mut self, at: Instant, session: SessionId, token: u64) {
        self.core.timer_seq += 1;
        let seq = self.core.timer_seq;
        self.core.timers.push(Reverse((at, seq, session, token)));
    }

    /// A session not started by the pacer (an answering role's incoming call or request);
    /// `counted` ones count in attempted/succeeded/failed and in flight.
    pub fn new_session(&mut self, counted: bool) -> SessionId {
        let id = self.core.new_session(counted);
        if counted {
            self.core.recorder.add(Counter::Started, 1, self.core.now);
        }
        id
    }

    /// Ends a session; the outcome is counted once (later calls are ignored).
    pub fn finish(&mut self, session: SessionId, outcome: Outcome) {
        self.core.finish(session, outcome);
    }

    /// Whether a session is still in flight.
    pub fn is_active(&self, session: SessionId) -> bool {
        self.core.sessions.contains_key(&session)
    }

    /// Records a sample.
    pub fn record(&mut self, q: Quantity, value: Duration) {
        let now = self.core.now;
        self.core.recorder.record(q, value, now);
    }

    /// The recorder (counters, RTP figures, notes).
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.core.recorder
    }
}

impl Core {
    fn new_session(&mut self, counted: bool) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(id, counted);
        if counted {
            self.in_flight += 1;
        }
        id
    }

    fn finish(&mut self, session: SessionId, outcome: Outcome) {
        let Some(counted) = self.sessions.remove(&session) else {
            return;
        };
        if !counted {
            return;
        }
        self.in_flight -= 1;
        match outcome {
            Outcome::Success => self.recorder.add(Counter::Succeeded, 1, self.now),
            Outcome::Failure(reason) => self.recorder.fail(&reason, self.now),
        }
    }

    /// Sends what the transaction layer queued, each from the socket of its transaction.
    fn flush(&mut self, net: &mut dyn Net) {
        while let Some(t) = self.layer.poll_transmit() {
            let socket = match t.tx {
                Some(TxId::Client(c)) => self.txs.get(&c).map(|e| e.socket),
                Some(TxId::Server(s)) => self.server_sockets.get(&s).copied(),
                None => None,
            };
            let Some(socket) = socket else {
                self.recorder.note("unroutable_transmits", 1);
                continue;
            };
            if net.send_to(socket, t.dest, &t.payload).is_err() {
                self.recorder.note("send_errors", 1);
            }
        }
    }
}

/// One scenario driven over one [`Net`].
pub struct Driver {
    scenario: Box<dyn Scenario>,
    core: Core,
    plan: Plan,
    phase: Phase,
}

impl Driver {
    /// A driver whose run starts at `start`; `wall_us` is the wall clock at `start` (µs since
    /// the Unix epoch); `seed` seeds branches, tags and Call-IDs.
    pub fn new(
        scenario: Box<dyn Scenario>,
        plan: Plan,
        start: Instant,
        wall_us: u64,
        seed: u64,
    ) -> Driver {
        Driver {
            scenario,
            core: Core {
                now: start,
                start,
                wall: (start, wall_us),
                arrival_us: None,
                layer: TransactionLayer::new(LayerConfig::default(), seed),
                ids: BranchGen::new(seed ^ 0x6c67_6964_7365_6564),
                sockets: HashMap::new(),
                txs: HashMap::new(),
                server_sockets: HashMap::new(),
                sessions: HashMap::new(),
                in_flight: 0,
                next_session: 0,
                timers: BinaryHeap::new(),
                timer_seq: 0,
                recorder: Recorder::new(start),
                first_start: None,
                last_start: None,
            },
            plan,
            phase: Phase::Setup,
        }
    }

    /// The scenario's name.
    pub fn scenario_name(&self) -> &'static str {
        self.scenario.name()
    }

    /// The scenario's primary quantity.
    pub fn primary(&self) -> Quantity {
        self.scenario.primary()
    }

    /// Calls [`Scenario::setup`] and starts running.
    pub fn setup(&mut self, net: &mut dyn Net, now: Instant) -> Result<(), String> {
        self.core.now = now;
        let mut ctx = Ctx {
            core: &mut self.core,
            net,
        };
        self.scenario.setup(&mut ctx)?;
        self.phase = Phase::Running;
        self.pump(net);
        Ok(())
    }

    /// Starts the pacer's schedule at `now` instead of at the run's start (so that a long
    /// setup, e.g. binding thousands of sockets, is not followed by a burst of overdue starts).
    pub fn start_pacing(&mut self, now: Instant) {
        if let Some(p) = self.plan.pacer.as_mut() {
            p.restart(now);
        }
    }

    /// Re-anchors the wall clock (call about once a second so that stamps follow NTP slew).
    pub fn anchor_wall_clock(&mut self, at: Instant, wall_us: u64) {
        self.core.wall = (at, wall_us);
    }

    /// The address of a socket.
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.core.sockets.get(&socket).map(|(a, _)| *a)
    }

    /// One received datagram, read at `now`; `arrival_us` is the kernel's arrival time (µs since
    /// the Unix epoch) where the network gives one, for one-way delays that leave out how
    /// long it waited to be read.
    pub fn handle_datagram(
        &mut self,
        net: &mut dyn Net,
        socket: SocketId,
        source: SocketAddr,
        payload: Bytes,
        now: Instant,
        arrival_us: Option<u64>,
    ) {
        self.core.now = now;
        self.core.arrival_us = arrival_us;
        let kind = self.core.sockets.get(&socket).map(|(_, k)| *k);
        match kind {
            Some(SocketKind::Sip) => self.handle_sip(net, socket, source, payload),
            Some(SocketKind::Raw) => {
                let mut ctx = Ctx {
                    core: &mut self.core,
                    net,
                };
                self.scenario.on_datagram(&mut ctx, socket, source, payload);
            }
            None => self.core.recorder.note("datagrams_on_unknown_socket", 1),
        }
        self.core.arrival_us = None;
        self.pump(net);
    }

    fn handle_sip(&mut self, net: &mut dyn Net, socket: SocketId, source: SocketAddr, buf: Bytes) {
        // Keep-alives (CRLF) and other blank datagrams are not messages.
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        let msg = match parse(buf) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(reason = e.reason(), %source, "unparsable datagram");
                self.core.recorder.note("parse_errors", 1);
                return;
            }
        };
        let now = self.core.now;
        if msg.is_request() {
            match self.core.layer.handle_request(msg, source, false, now) {
                RequestOutcome::New { id, request } => {
                    self.core.server_sockets.insert(id, socket);
                    let mut ctx = Ctx {
                        core: &mut self.core,
                        net,
                    };
                    let incoming = Incoming {
                        tx: id,
                        request,
                        socket,
                        source,
                    };
                    self.scenario.on_request(&mut ctx, incoming);
                }
                RequestOutcome::Ack2xx(ack) => {
                    let mut ctx = Ctx {
                        core: &mut self.core,
                        net,
                    };
                    self.scenario.on_ack(&mut ctx, ack, socket, source);
                }
                RequestOutcome::Cancel {
                    cancel_tx,
                    invite_tx,
                    request,
                } => {
                    // §9.2: 200 for the CANCEL (481 without a target); the scenario that
                    // owns the INVITE answers it with 487.
                    self.core.server_sockets.insert(cancel_tx, socket);
                    let r = match invite_tx {
                        Some(_) => builder::local_response(&request, 200, "OK"),
                        None => builder::local_response(
                            &request,
                            481,
                            "Call/Transaction Does Not Exist",
                        ),
                    };
                    let _ = self.core.layer.respond(cancel_tx, &r, now);
                    if let Some(invite) = invite_tx {
                        let mut ctx = Ctx {
                            core: &mut self.core,
                            net,
                        };
                        self.scenario.on_cancel(&mut ctx, invite, &request);
                    }
                }
                RequestOutcome::Retransmission(_) | RequestOutcome::AckForInvite(_) => {}
                RequestOutcome::Invalid { error, .. } => {
                    tracing::debug!(error = %error, "request without a transaction");
                    self.core.recorder.note("invalid_requests", 1);
                }
            }
        } else {
            match self.core.layer.handle_response(msg, source, now) {
                ResponseOutcome::Response { id, response } => {
                    self.deliver_response(net, id, &response)
                }
                ResponseOutcome::Absorbed(_) => {}
                ResponseOutcome::Stray(msg) => {
                    let mut ctx = Ctx {
                        core: &mut self.core,
                        net,
                    };
                    self.scenario.on_stray(&mut ctx, msg, socket, source);
                }
            }
        }
    }

    /// A response for client transaction `id`: latency on the first final one, then the
    /// scenario.
    fn deliver_response(&mut self, net: &mut dyn Net, id: ClientTxId, response: &Message) {
        let now = self.core.now;
        let Some(entry) = self.core.txs.get_mut(&id) else {
            return;
        };
        let session = entry.session;
        if response.status().is_some_and(|c| c >= 200) && !entry.answered {
            entry.answered = true;
            let (q, sent) = (entry.quantity, entry.sent);
            self.core.recorder.record(q, now - sent, now);
        }
        let mut ctx = Ctx {
            core: &mut self.core,
            net,
        };
        self.scenario.on_response(&mut ctx, session, id, response);
    }

    /// Sends queued transmits and handles transaction events until both queues are empty.
    fn pump(&mut self, net: &mut dyn Net) {
        loop {
            self.core.flush(net);
            let Some(ev) = self.core.layer.poll_event() else {
                break;
            };
            match ev {
                TxEvent::ClientFailed {
                    id,
                    reason,
                    response,
                } => {
                    let note = match reason {
                        cpm_engine::sip::transaction::Failure::Timeout => "timeouts",
                        cpm_engine::sip::transaction::Failure::Transport => "transport_errors",
                    };
                    self.core.recorder.note(note, 1);
                    // The synthesized 408/503 is no measured latency.
                    if let Some(e) = self.core.txs.get_mut(&id) {
                        e.answered = true;
                    }
                    self.deliver_response(net, id, &response);
                }
                TxEvent::ServerFailed { .. } => self.core.recorder.note("server_tx_failures", 1),
                TxEvent::Terminated(TxId::Client(c)) => {
                    self.core.txs.remove(&c);
                }
                TxEvent::Terminated(TxId::Server(s)) => {
                    self.core.server_sockets.remove(&s);
                }
                TxEvent::CancelSent { .. } => {}
            }
        }
    }

    /// Fires everything due at `now`: transaction timers, scenario timers, session starts,
    /// the drain deadline, the 1 Hz closing of the time series.
    pub fn handle_timeout(&mut self, net: &mut dyn Net, now: Instant) {
        self.core.now = now;
        self.core.recorder.tick(now);
        if self.core.layer.poll_timeout().is_some_and(|t| t <= now) {
            self.core.layer.handle_timeout(now);
            self.pump(net);
        }
        while let Some(Reverse((at, _, session, token))) = self.core.timers.peek().copied() {
            if at > now {
                break;
            }
            self.core.timers.pop();
            let mut ctx = Ctx {
                core: &mut self.core,
                net,
            };
            self.scenario.on_timer(&mut ctx, session, token);
            self.pump(net);
        }
        match self.phase {
            Phase::Running => {
                self.start_due(net, now);
                let ended = self.plan.pacer.as_ref().is_some_and(Pacer::is_exhausted)
                    || self
                        .plan
                        .run_for
                        .is_some_and(|d| now >= self.core.start + d);
                if ended {
                    self.stop(net, now);
                }
            }
            Phase::Draining { until } => {
                if self.core.in_flight == 0 && self.scenario.is_idle() {
                    self.phase = Phase::Done;
                } else if now >= until {
                    self.abort("unfinished", now);
                }
            }
            Phase::Setup | Phase::Done => {}
        }
    }

    fn start_due(&mut self, net: &mut dyn Net, now: Instant) {
        while self.core.in_flight < self.plan.concurrency {
            let Some(n) = self.plan.pacer.as_mut().and_then(|p| p.take_due(now)) else {
                break;
            };
            let session = self.core.new_session(true);
            self.core.recorder.add(Counter::Started, 1, now);
            self.core.first_start.get_or_insert(now);
            self.core.last_start = Some(now);
            let mut ctx = Ctx {
                core: &mut self.core,
                net,
            };
            self.scenario.start(&mut ctx, session, n);
            self.pump(net);
        }
    }

    /// Stops starting sessions (the bounds are reached, or a signal came): the scenario winds
    /// down and sessions in flight get the drain time to finish. Idempotent.
    pub fn stop(&mut self, net: &mut dyn Net, now: Instant) {
        if matches!(self.phase, Phase::Draining { .. } | Phase::Done) {
            return;
        }
        self.core.now = now;
        if let Some(p) = self.plan.pacer.as_mut() {
            p.stop();
        }
        self.phase = Phase::Draining {
            until: now + self.plan.drain,
        };
        let mut ctx = Ctx {
            core: &mut self.core,
            net,
        };
        self.scenario.on_stop(&mut ctx);
        self.pump(net);
        if self.core.in_flight == 0 && self.scenario.is_idle() {
            self.phase = Phase::Done;
        }
    }

    /// Ends the run now: sessions in flight fail with `reason` (the drain time ran out, or a
    /// second signal came).
    pub fn abort(&mut self, reason: &str, now: Instant) {
        self.core.now = now;
        if let Some(p) = self.plan.pacer.as_mut() {
            p.stop();
        }
        let mut left: Vec<SessionId> = self.core.sessions.keys().copied().collect();
        left.sort();
        for s in left {
            self.core.finish(s, Outcome::Failure(reason.to_string()));
        }
        self.phase = Phase::Done;
    }

    /// When [`Driver::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next_second =
            self.core.start + Duration::from_secs(self.core.recorder.second_of(self.core.now) + 1);
        let mut t = Some(next_second);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.core.layer.poll_timeout());
        consider(self.core.timers.peek().map(|Reverse((at, ..))| *at));
        match self.phase {
            Phase::Running => {
                if self.core.in_flight < self.plan.concurrency {
                    consider(self.plan.pacer.as_ref().and_then(Pacer::next_deadline));
                }
                consider(self.plan.run_for.map(|d| self.core.start + d));
            }
            Phase::Draining { until } => consider(Some(until)),
            Phase::Setup | Phase::Done => {}
        }
        t
    }

    /// Whether the run is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the run has stopped starting sessions.
    pub fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. } | Phase::Done)
    }

    /// Whether the scenario is ready for traffic ([`Scenario::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.phase != Phase::Setup && self.scenario.is_ready()
    }

    /// The figures of the progress line at `now`.
    pub fn progress(&self, now: Instant) -> Progress {
        let r = &self.core.recorder;
        let prev = r.second_of(now).saturating_sub(1);
        Progress {
            elapsed: now.saturating_duration_since(self.core.start),
            attempted: r.total(Counter::Started),
            succeeded: r.total(Counter::Succeeded),
            failed: r.total(Counter::Failed),
            in_flight: self.core.in_flight,
            rate_last_second: r.counter_at(Counter::Started, prev),
            p99_last_second_us: r.last_second(self.primary(), now).map(|p| p.p99_us),
        }
    }

    /// The recorder so far.
    pub fn recorder(&self) -> &Recorder {
        &self.core.recorder
    }

    /// Ends the run at `now`: the recorder's last second is closed, and the run's figures are
    /// returned with the scenario's summary lines.
    pub fn finish(mut self, now: Instant) -> RunData {
        self.core.recorder.note(
            "retransmissions",
            self.core.layer.stats().retransmissions_sent,
        );
        self.core
            .recorder
            .note("stray_responses", self.core.layer.stats().stray_responses);
        self.core.recorder.finish(now);
        let window = match (&self.plan.pacer, self.core.first_start) {
            (Some(p), Some(_)) => {
                let scheduled = p.window();
                let actual = self
                    .core
                    .last_start
                    .map_or(Duration::ZERO, |l| l.saturating_duration_since(p.start()));
                scheduled.max(actual)
            }
            _ => now.saturating_duration_since(self.core.start),
        };
        RunData {
            scenario: self.scenario.name(),
            primary: self.scenario.primary(),
            recorder: self.core.recorder,
            start_window: window,
            elapsed: now.saturating_duration_since(self.core.start),
            summary_lines: self.scenario.summary_lines(),
        }
    }
}

/// What a finished run hands to the reports.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Its primary quantity.
    pub primary: Quantity,
    /// Every measure.
    pub recorder: Recorder,
    /// The time over which sessions were started (the achieved rate's denominator).
    pub start_window: Duration,
    /// Start to end, drain included.
    pub elapsed: Duration,
    /// The scenario's extra summary lines.
    pub summary_lines: Vec<String>,
}

impl RunData {
    /// Sessions started per second over the start window.
    pub fn rate_achieved(&self) -> f64 {
        let secs = self.start_window.as_secs_f64();
        if secs > 0.0 {
            self.recorder.total(Counter::Started) as f64 / secs
        } else {
            0.0
        }
    }
}
