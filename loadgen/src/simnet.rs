//! Deterministic simulations: drivers connected by an in-memory network with a fixed latency
//! and optional loss, stepped on virtual time (no socket, no sleep). They check the driver,
//! the pacer and the scenarios end to end, including retransmissions and digest auth.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::builder;
use cpm_engine::sip::digest::{find_credentials, Authenticator, UserSecret, Verdict};
use cpm_engine::sip::{HeaderName, Message, Method};

use crate::driver::{Driver, Net, Plan, RunData};
use crate::metrics::{Counter, Quantity};
use crate::pacing::{Pacer, Schedule};
use crate::scenario::call::Call;
use crate::scenario::conference::receive;
use crate::scenario::conference::tones::Law;
use crate::scenario::conference::{notes, Conference, ConferenceConfig, JOIN};
use crate::scenario::media::{parse_codec, MediaProfile};
use crate::scenario::message::{Body, MessageScenario};
use crate::scenario::options::Options;
use crate::scenario::register::{Register, Secrets};
use crate::scenario::uas::RtpMode;
use crate::scenario::uas::{Uas, UasConfig};
use crate::scenario::{Incoming, Pattern, Scenario, SocketId, SocketKind, Target};

/// Datagrams in flight, bound addresses, and the loss rule.
struct World {
    latency: Duration,
    /// Drop every n-th datagram sent (counting from 1).
    drop_every: Option<u64>,
    sent: u64,
    dropped: u64,
    next_port: u16,
    /// Address → (node, socket id on that node).
    bound: HashMap<SocketAddr, (usize, SocketId)>,
    /// Per node: its sockets' addresses by id.
    nodes: Vec<Vec<SocketAddr>>,
    /// (deliver at, sequence) → (from, to, payload).
    wire: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    now: Instant,
}

struct NodeNet<'a> {
    world: &'a mut World,
    node: usize,
}

impl Net for NodeNet<'_> {
    fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<(SocketId, SocketAddr)> {
        let w = &mut *self.world;
        let addr = if addr.port() == 0 {
            w.next_port += 1;
            SocketAddr::new(addr.ip(), w.next_port)
        } else {
            addr
        };
        if w.bound.contains_key(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let socks = &mut w.nodes[self.node];
        let id = SocketId(socks.len());
        socks.push(addr);
        w.bound.insert(addr, (self.node, id));
        Ok((id, addr))
    }

    fn send_to(&mut self, socket: SocketId, dest: SocketAddr, payload: &[u8]) -> io::Result<()> {
        let w = &mut *self.world;
        let from = w.nodes[self.node][socket.0];
        w.sent += 1;
        if w.drop_every.is_some_and(|n| w.sent.is_multiple_of(n)) {
            w.dropped += 1;
            return Ok(());
        }
        let seq = w.sent;
        w.wire.insert(
            (w.now + w.latency, seq),
            (from, dest, Bytes::copy_from_slice(payload)),
        );
        Ok(())
    }
}

/// Drivers on one simulated network.
struct Sim {
    world: World,
    drivers: Vec<Driver>,
    t0: Instant,
}

impl Sim {
    fn new(latency: Duration, drop_every: Option<u64>) -> Sim {
        let t0 = Instant::now();
        Sim {
            world: World {
                latency,
                drop_every,
                sent: 0,
                dropped: 0,
                next_port: 40_000,
                bound: HashMap::new(),
                nodes: Vec::new(),
                wire: BTreeMap::new(),
                now: t0,
            },
            drivers: Vec::new(),
            t0,
        }
    }

    /// Adds a driver (set up at once); returns its index.
    fn add(&mut self, scenario: Box<dyn Scenario>, plan: Plan) -> usize {
        let node = self.drivers.len();
        self.world.nodes.push(Vec::new());
        // Every node shares one wall clock: the delivery latency is the network latency.
        let mut d = Driver::new(scenario, plan, self.t0, 1_700_000_000_000_000, node as u64);
        let mut net = NodeNet {
            world: &mut self.world,
            node,
        };
        d.setup(&mut net, self.t0).expect("setup");
        self.drivers.push(d);
        node
    }

    fn net(&mut self, node: usize) -> NodeNet<'_> {
        NodeNet {
            world: &mut self.world,
            node,
        }
    }

    /// Steps until driver `main` is done (panics after `limit` of virtual time).
    fn run_until_done(&mut self, main: usize, limit: Duration) {
        loop {
            let next_wire = self.world.wire.keys().next().map(|(t, _)| *t);
            let next = self
                .drivers
                .iter()
                .filter(|d| !d.is_done())
                .filter_map(Driver::poll_timeout)
                .chain(next_wire)
                .min()
                .expect("something to do");
            let now = next.max(self.world.now);
            assert!(now - self.t0 <= limit, "not done after {limit:?}");
            self.world.now = now;
            while let Some(entry) = self.world.wire.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (from, to, payload) = entry.remove();
                if let Some(&(node, socket)) = self.world.bound.get(&to) {
                    let mut d = std::mem::replace(&mut self.drivers[node], placeholder());
                    d.handle_datagram(&mut self.net(node), socket, from, payload, now, None);
                    self.drivers[node] = d;
                }
            }
            for node in 0..self.drivers.len() {
                let mut d = std::mem::replace(&mut self.drivers[node], placeholder());
                if !d.is_done() {
                    d.handle_timeout(&mut self.net(node), now);
                }
                self.drivers[node] = d;
            }
            if self.drivers[main].is_done() {
                return;
            }
        }
    }

    /// Stops driver `node` (as a signal would) and runs it to its end.
    fn stop(&mut self, node: usize, limit: Duration) {
        let now = self.world.now;
        let mut d = std::mem::replace(&mut self.drivers[node], placeholder());
        d.stop(&mut self.net(node), now);
        self.drivers[node] = d;
        self.run_until_done(node, limit);
    }

    fn finish(&mut self, node: usize) -> RunData {
        std::mem::replace(&mut self.drivers[node], placeholder()).finish(self.world.now)
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.world.nodes[node][0]
    }
}

/// A driver that does nothing, to hold a slot while the real one is borrowed.
fn placeholder() -> Driver {
    struct Nothing;
    impl Scenario for Nothing {
        fn name(&self) -> &'static str {
            "nothing"
        }
        fn primary(&self) -> Quantity {
            Quantity::Custom("nothing")
        }
        fn setup(&mut self, _: &mut crate::driver::Ctx<'_>) -> Result<(), String> {
            Ok(())
        }
    }
    let plan = Plan {
        pacer: None,
        concurrency: 1,
        drain: Duration::ZERO,
        run_for: None,
    };
    Driver::new(Box::new(Nothing), plan, Instant::now(), 0, 0)
}

fn uas_plan() -> Plan {
    Plan {
        pacer: None,
        concurrency: usize::MAX,
        drain: Duration::from_secs(5),
        run_for: None,
    }
}

fn client_plan(sim: &Sim, rate: f64, count: u64, concurrency: usize) -> Plan {
    Plan {
        pacer: Some(Pacer::new(
            Schedule::new(rate, Duration::ZERO),
            sim.t0,
            Some(count),
            None,
        )),
        concurrency,
        drain: Duration::from_secs(40),
        run_for: None,
    }
}

fn uas_config(listen: SocketAddr, users: u64, register_to: Option<SocketAddr>) -> UasConfig {
    UasConfig {
        listen,
        contact_ip: listen.ip(),
        users,
        pattern: Pattern::parse("user%04d").unwrap(),
        register_to,
        domain: "example.com".into(),
        secrets: Secrets::Password("secret".into()),
        expires: 600,
        register_rate: 100.0,
        rtp: Default::default(),
        codecs: crate::scenario::media::fixed_rate_codecs(),
        payload_len: None,
        rtp_ports: None,
        register_after: Duration::ZERO,
        msrp_relay: None,
    }
}

fn target(addr: SocketAddr, users: u64) -> Target {
    Target {
        addr,
        domain: addr.to_string(),
        to: Pattern::parse("user%04d").unwrap(),
        from: Pattern::parse("loadgen").unwrap(),
        users,
        local_ip: "10.0.0.1".parse().unwrap(),
    }
}

const MS: Duration = Duration::from_millis(1);

/// Equal within the histograms' resolution (3 significant digits).
fn within(v: u64, want: u64) -> bool {
    v.abs_diff(want) * 1000 <= want
}

#[test]
fn options_against_uas_exact_counts_and_latency() {
    let mut sim = Sim::new(5 * MS, None);
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            1,
            None,
        ))),
        uas_plan(),
    );
    let plan = client_plan(&sim, 100.0, 50, 1000);
    let client = sim.add(Box::new(Options::new(target(sim.addr(uas), 1))), plan);
    sim.run_until_done(client, Duration::from_secs(5));
    let data = sim.finish(client);
    let r = &data.recorder;
    assert_eq!(r.total(Counter::Started), 50);
    assert_eq!(r.total(Counter::Succeeded), 50);
    assert_eq!(r.total(Counter::Failed), 0);
    let s = r.stats(Quantity::Request("OPTIONS")).unwrap();
    assert_eq!(s.count, 50);
    // A round trip of two 5 ms hops, exactly (virtual time; the histogram keeps 3 digits).
    assert_eq!(s.min_us, 10_000);
    assert!(within(s.max_us, 10_000), "{s:?}");
    // 50 sessions at 100/s: the window is 0.5 s, the rate exact.
    assert!(
        (data.rate_achieved() - 100.0).abs() < 1e-6,
        "{}",
        data.rate_achieved()
    );
    assert_eq!(r.noted("retransmissions"), 0);
    let u = sim.finish(uas);
    assert_eq!(u.recorder.total(Counter::Succeeded), 50);
}

#[test]
fn message_delivery_latency_is_measured_at_the_receiver() {
    let mut sim = Sim::new(3 * MS, None);
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            1,
            None,
        ))),
        uas_plan(),
    );
    let plan = client_plan(&sim, 200.0, 40, 1000);
    let body = Body {
        size: 500,
        content_type: "text/plain".into(),
    };
    let client = sim.add(
        Box::new(MessageScenario::new(target(sim.addr(uas), 1), body)),
        plan,
    );
    sim.run_until_done(client, Duration::from_secs(5));
    let c = sim.finish(client);
    assert_eq!(c.recorder.total(Counter::Succeeded), 40);
    let u = sim.finish(uas);
    let d = u.recorder.stats(Quantity::MessageDelivery).unwrap();
    assert_eq!(d.count, 40);
    assert_eq!(d.min_us, 3_000);
    assert!(within(d.max_us, 3_000), "{d:?}");
    assert_eq!(u.recorder.noted("messages_without_stamp"), 0);
    assert_eq!(u.recorder.noted("messages_duplicate"), 0);
    assert_eq!(u.recorder.noted("messages_out_of_order"), 0);
    assert!(u.summary_lines.iter().any(|l| l == "received: MESSAGE 40"));
}

#[test]
fn lost_datagrams_are_retransmitted_and_every_session_succeeds() {
    let mut sim = Sim::new(2 * MS, Some(7));
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            1,
            None,
        ))),
        uas_plan(),
    );
    let plan = client_plan(&sim, 50.0, 100, 1000);
    let client = sim.add(Box::new(Options::new(target(sim.addr(uas), 1))), plan);
    sim.run_until_done(client, Duration::from_secs(60));
    assert!(sim.world.dropped > 0);
    let data = sim.finish(client);
    assert_eq!(data.recorder.total(Counter::Succeeded), 100);
    assert!(data.recorder.noted("retransmissions") > 0);
    // A lost request costs T1 = 500 ms before its retransmission.
    let s = data.recorder.stats(Quantity::Request("OPTIONS")).unwrap();
    assert!(s.max_us >= 500_000, "{s:?}");
}

#[test]
fn concurrency_limits_sessions_in_flight() {
    // 100 ms each way: a session takes 200 ms; with 2 in flight, 10 sessions need 1 s.
    let mut sim = Sim::new(100 * MS, None);
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            1,
            None,
        ))),
        uas_plan(),
    );
    let plan = client_plan(&sim, 1000.0, 10, 2);
    let client = sim.add(Box::new(Options::new(target(sim.addr(uas), 1))), plan);
    sim.run_until_done(client, Duration::from_secs(5));
    let elapsed = sim.world.now - sim.t0;
    assert!(
        (Duration::from_millis(1000)..Duration::from_millis(1010)).contains(&elapsed),
        "{elapsed:?}"
    );
    let data = sim.finish(client);
    assert_eq!(data.recorder.total(Counter::Succeeded), 10);
}

#[test]
fn unanswered_sessions_time_out_or_end_unfinished() {
    // Nobody at the target: Timer F (32 s) fails each transaction with a synthesized 408.
    let mut sim = Sim::new(MS, None);
    let plan = client_plan(&sim, 10.0, 3, 100);
    let client = sim.add(
        Box::new(Options::new(target("10.9.9.9:5060".parse().unwrap(), 1))),
        plan,
    );
    sim.run_until_done(client, Duration::from_secs(40));
    let data = sim.finish(client);
    assert_eq!(data.recorder.total(Counter::Failed), 3);
    assert_eq!(data.recorder.failures()["408 Request Timeout"], 3);
    assert!(data.recorder.stats(Quantity::Request("OPTIONS")).is_none());
    // With a 2 s drain, the run ends earlier and the sessions count as unfinished.
    let mut sim = Sim::new(MS, None);
    let mut plan = client_plan(&sim, 10.0, 3, 100);
    plan.drain = Duration::from_secs(2);
    let client = sim.add(
        Box::new(Options::new(target("10.9.9.9:5060".parse().unwrap(), 1))),
        plan,
    );
    sim.run_until_done(client, Duration::from_secs(3));
    let data = sim.finish(client);
    assert_eq!(data.recorder.failures()["unfinished"], 3);
}

/// A registrar that challenges every REGISTER without valid credentials (engine digest) and
/// answers OPTIONS and MESSAGE like a proxy would not: enough to test the client flows.
struct Registrar {
    auth: Authenticator,
    salt: u64,
    /// AOR user → contact, for registered users (shared with the test).
    bindings: Arc<Mutex<HashMap<String, String>>>,
    registers: u64,
    challenges: u64,
}

impl Registrar {
    fn new(bindings: Arc<Mutex<HashMap<String, String>>>) -> Registrar {
        Registrar {
            auth: Authenticator::new("example.com", b"k".to_vec()),
            salt: 0,
            bindings,
            registers: 0,
            challenges: 0,
        }
    }
}

impl Scenario for Registrar {
    fn name(&self) -> &'static str {
        "registrar"
    }

    fn primary(&self) -> Quantity {
        Quantity::Custom("none")
    }

    fn setup(&mut self, ctx: &mut crate::driver::Ctx<'_>) -> Result<(), String> {
        ctx.bind_udp("10.0.0.3:5060".parse().unwrap(), SocketKind::Sip)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn on_request(&mut self, ctx: &mut crate::driver::Ctx<'_>, inc: Incoming) {
        let req = &inc.request;
        if req.method() != Some(&Method::Register) {
            let r = builder::local_response(req, 405, "Method Not Allowed");
            return ctx.respond(inc.tx, &r);
        }
        self.registers += 1;
        let creds = find_credentials(req, false, self.auth.realm())
            .ok()
            .flatten();
        let ok = creds.as_ref().is_some_and(|c| {
            self.auth
                .verify(c, "REGISTER", &UserSecret::Password("secret".into()), 1_000)
                == Verdict::Ok
        });
        if !ok {
            self.challenges += 1;
            self.salt += 1;
            let mut r = builder::local_response(req, 401, "Unauthorized");
            for ch in self.auth.challenges(1_000, self.salt, false) {
                r.headers.push(HeaderName::WwwAuthenticate, ch.to_string());
            }
            return ctx.respond(inc.tx, &r);
        }
        let user = creds.map(|c| c.username).unwrap_or_default();
        let contact = req
            .headers
            .get(&HeaderName::Contact)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let expires = req.expires().ok().flatten().unwrap_or(3600);
        if expires == 0 {
            self.bindings.lock().unwrap().remove(&user);
        } else {
            self.bindings.lock().unwrap().insert(user, contact.clone());
        }
        let mut r = builder::local_response(req, 200, "OK");
        if expires > 0 {
            r.headers
                .push(HeaderName::Contact, format!("{contact};expires={expires}"));
        }
        ctx.respond(inc.tx, &r);
    }
}

#[test]
fn register_answers_the_digest_challenge() {
    let mut sim = Sim::new(MS, None);
    let bindings = Arc::default();
    let registrar = sim.add(Box::new(Registrar::new(Arc::clone(&bindings))), uas_plan());
    let mut t = target(sim.addr(registrar), 5);
    t.domain = "example.com".into();
    let plan = client_plan(&sim, 100.0, 10, 100);
    let client = sim.add(
        Box::new(Register::new(t, Secrets::Password("secret".into()), 300)),
        plan,
    );
    sim.run_until_done(client, Duration::from_secs(5));
    let data = sim.finish(client);
    assert_eq!(data.recorder.total(Counter::Succeeded), 10);
    // Each registration: REGISTER, 401, REGISTER with credentials, 200 (4 hops of 1 ms).
    let s = data.recorder.stats(Quantity::Registration).unwrap();
    assert_eq!((s.count, s.min_us), (10, 4_000));
    assert!(within(s.max_us, 4_000), "{s:?}");
    assert_eq!(
        data.recorder
            .stats(Quantity::Request("REGISTER"))
            .unwrap()
            .count,
        20
    );
    // Five users with five distinct contacts (one socket per user).
    let b = bindings.lock().unwrap();
    assert_eq!(b.len(), 5);
    let contacts: std::collections::HashSet<_> = b.values().collect();
    assert_eq!(contacts.len(), 5);
    assert_eq!(b["user0003"], "<sip:user0003@10.0.0.1:40004>");
}

#[test]
fn wrong_password_fails_with_the_reason() {
    let mut sim = Sim::new(MS, None);
    let registrar = sim.add(Box::new(Registrar::new(Arc::default())), uas_plan());
    let mut t = target(sim.addr(registrar), 1);
    t.domain = "example.com".into();
    let plan = client_plan(&sim, 100.0, 2, 100);
    let client = sim.add(
        Box::new(Register::new(t, Secrets::Password("wrong".into()), 300)),
        plan,
    );
    sim.run_until_done(client, Duration::from_secs(5));
    let data = sim.finish(client);
    assert_eq!(data.recorder.total(Counter::Failed), 2);
    let (reason, n) = data.recorder.failures().iter().next().unwrap();
    assert_eq!(*n, 2);
    assert!(reason.contains("credentials rejected"), "{reason}");
}

#[test]
fn uas_registers_its_users_then_unregisters_them() {
    let mut sim = Sim::new(MS, None);
    let bindings = Arc::default();
    let registrar = sim.add(Box::new(Registrar::new(Arc::clone(&bindings))), uas_plan());
    let reg_addr = sim.addr(registrar);
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            4,
            Some(reg_addr),
        ))),
        uas_plan(),
    );
    assert!(!sim.drivers[uas].is_ready());
    // Four users at 100/s: registered within 0.1 s.
    let mut plan = client_plan(&sim, 1.0, 1, 1);
    plan.pacer = Some(Pacer::new(
        Schedule::new(1.0, Duration::ZERO),
        sim.t0 + Duration::from_millis(200),
        Some(1),
        None,
    ));
    // A probe that ends the simulation step after the registrations.
    let probe = sim.add(
        Box::new(Options::new(target("10.0.0.2:5070".parse().unwrap(), 1))),
        plan,
    );
    sim.run_until_done(probe, Duration::from_secs(2));
    assert!(sim.drivers[uas].is_ready());
    assert_eq!(bindings.lock().unwrap().len(), 4);
    // Each user has its own socket: ports 5070..5073.
    assert_eq!(sim.world.nodes[uas].len(), 4);
    assert_eq!(sim.world.nodes[uas][3].port(), 5073);
    sim.stop(uas, Duration::from_secs(10));
    assert!(bindings.lock().unwrap().is_empty(), "unregistered");
    let data = sim.finish(uas);
    assert!(
        data.summary_lines
            .iter()
            .any(|l| l == "registered at 10.0.0.3:5060: 4 ok, 0 failed"),
        "{:?}",
        data.summary_lines
    );
    assert_eq!(
        data.recorder.stats(Quantity::Registration).unwrap().count,
        4
    );
    // 4 registrations and 4 unregistrations, each challenged once: 16 REGISTERs.
    assert_eq!(
        data.recorder
            .stats(Quantity::Request("REGISTER"))
            .unwrap()
            .count,
        16
    );
    // The uas counted the probe's OPTIONS as its one session.
    assert_eq!(data.recorder.total(Counter::Started), 1);
}

fn echo_uas(sim: &mut Sim) -> usize {
    let mut cfg = uas_config("10.0.0.2:5070".parse().unwrap(), 1, None);
    cfg.rtp = RtpMode::Echo;
    sim.add(Box::new(Uas::new(cfg)), uas_plan())
}

#[test]
fn calls_against_an_echoing_uas_count_rtp_exactly() {
    let mut sim = Sim::new(5 * MS, None);
    let uas = echo_uas(&mut sim);
    let plan = client_plan(&sim, 10.0, 10, 1000);
    let call = Call::new(
        target(sim.addr(uas), 1),
        Duration::from_secs(1),
        Default::default(),
    );
    let client = sim.add(Box::new(call), plan);
    sim.run_until_done(client, Duration::from_secs(10));
    let c = sim.finish(client);
    let r = &c.recorder;
    assert_eq!(r.total(Counter::Succeeded), 10, "{:?}", r.failures());
    // 1 s of hold at 20 ms: 50 packets per call, every one echoed back.
    assert_eq!(r.total(Counter::RtpSent), 500);
    assert_eq!(r.total(Counter::RtpReceived), 500);
    assert_eq!(r.total(Counter::RtpLost), 0);
    assert_eq!(r.total(Counter::RtpDuplicates), 0);
    // INVITE → 200 is one round trip; an echoed packet's stamp is a round trip old.
    let setup = r.stats(Quantity::CallSetup).unwrap();
    assert_eq!((setup.count, setup.min_us), (10, 10_000));
    let owd = r.stats(Quantity::RtpOwd).unwrap();
    assert_eq!((owd.count, owd.min_us), (500, 10_000));
    assert!(within(owd.max_us, 10_000), "{owd:?}");
    // Virtual time: no jitter beyond rounding.
    assert!(r.stats(Quantity::RtpJitter).unwrap().max_us <= 1);
    let u = sim.finish(uas);
    assert_eq!(u.recorder.total(Counter::Succeeded), 10);
    assert!(u
        .summary_lines
        .iter()
        .any(|l| l == "received: BYE 10, INVITE 10"));
    // The echo counts what it received and sent back, and the one-way delay to it.
    assert_eq!(u.recorder.total(Counter::RtpReceived), 500);
    assert_eq!(u.recorder.total(Counter::RtpSent), 500);
    assert_eq!(u.recorder.total(Counter::RtpLost), 0);
    let owd = u.recorder.stats(Quantity::RtpOwd).unwrap();
    assert_eq!((owd.count, owd.min_us), (500, 5_000));
}

#[test]
fn the_uas_takes_rtp_ports_from_its_range_only() {
    let mut sim = Sim::new(5 * MS, None);
    let mut cfg = uas_config("10.0.0.2:5070".parse().unwrap(), 1, None);
    cfg.rtp = RtpMode::Echo;
    // Even ports 40000, 40002, 40004: three calls at a time.
    cfg.rtp_ports = Some((40000, 40005));
    let uas = sim.add(Box::new(Uas::new(cfg)), uas_plan());
    let plan = client_plan(&sim, 1000.0, 5, 1000);
    let call = Call::new(
        target(sim.addr(uas), 1),
        Duration::from_secs(1),
        Default::default(),
    );
    let client = sim.add(Box::new(call), plan);
    sim.run_until_done(client, Duration::from_secs(10));
    let c = sim.finish(client);
    assert_eq!(
        c.recorder.total(Counter::Succeeded),
        3,
        "{:?}",
        c.recorder.failures()
    );
    assert_eq!(
        c.recorder.failures().get("500 Server Internal Error"),
        Some(&2)
    );
    let u = sim.finish(uas);
    assert_eq!(u.recorder.noted("no free RTP port in 40000-40005"), 2);
}

#[test]
fn calls_survive_lost_acks_and_byes() {
    // Every 5th datagram is lost: INVITEs, 200s, ACKs (the 200 is sent again until the ACK
    // arrives, and ACKed again), BYEs and RTP.
    let mut sim = Sim::new(2 * MS, Some(5));
    let uas = echo_uas(&mut sim);
    let plan = client_plan(&sim, 10.0, 20, 1000);
    let call = Call::new(
        target(sim.addr(uas), 1),
        Duration::from_secs(1),
        Default::default(),
    );
    let client = sim.add(Box::new(call), plan);
    sim.run_until_done(client, Duration::from_secs(60));
    let c = sim.finish(client);
    let r = &c.recorder;
    assert_eq!(r.total(Counter::Succeeded), 20, "{:?}", r.failures());
    assert!(r.total(Counter::RtpReceived) < r.total(Counter::RtpSent));
    assert!(r.total(Counter::RtpLost) > 0);
    let u = sim.finish(uas);
    assert_eq!(u.recorder.total(Counter::Succeeded), 20);
    assert_eq!(u.recorder.noted("2xx_never_acked"), 0);
}

fn call_with(sim: &mut Sim, uas: usize, calls: u64, media: MediaProfile) -> usize {
    let plan = client_plan(sim, 10.0, calls, 1000);
    let call = Call::new(target(sim.addr(uas), 1), Duration::from_secs(1), media);
    sim.add(Box::new(call), plan)
}

#[test]
fn a_g722_30ms_call_keeps_the_rtp_clock_on_both_sides() {
    let mut sim = Sim::new(5 * MS, None);
    // The default uas generates its own stream in the offered codec and ptime.
    let uas = sim.add(
        Box::new(Uas::new(uas_config(
            "10.0.0.2:5070".parse().unwrap(),
            1,
            None,
        ))),
        uas_plan(),
    );
    let g722 = MediaProfile::new(parse_codec("G722").unwrap(), 30, None).unwrap();
    let client = call_with(&mut sim, uas, 10, g722);
    sim.run_until_done(client, Duration::from_secs(10));
    let c = sim.finish(client);
    let r = &c.recorder;
    assert_eq!(r.total(Counter::Succeeded), 10, "{:?}", r.failures());
    // 1 s of hold at 30 ms: packets at 0, 30, .. 990 ms.
    assert_eq!(r.total(Counter::RtpSent), 340);
    assert!(r.total(Counter::RtpReceived) > 300, "{:?}", r.notes());
    assert_eq!(r.total(Counter::RtpLost), 0);
    let u = sim.finish(uas);
    assert_eq!(u.recorder.total(Counter::RtpReceived), 340);
    assert_eq!(u.recorder.total(Counter::RtpLost), 0);
    // A timestamp step that did not match the packet interval (240 samples of the 8 kHz RTP
    // clock per 30 ms, RFC 3551 §4.5.2) would show as jitter on virtual time.
    for (side, rec) in [("caller", r), ("callee", &u.recorder)] {
        let jitter = rec.stats(Quantity::RtpJitter).unwrap();
        assert!(jitter.max_us <= 1, "{side}: {jitter:?}");
    }
    assert!(c
        .summary_lines
        .iter()
        .any(|l| l.ends_with("media G722/8000, 30 ms, 240-byte payload")));
}

#[test]
fn an_offer_the_uas_cannot_accept_gets_488() {
    let mut sim = Sim::new(5 * MS, None);
    let uas = echo_uas(&mut sim);
    let opus = MediaProfile::new(parse_codec("opus/48000/2").unwrap(), 20, Some(120)).unwrap();
    let client = call_with(&mut sim, uas, 3, opus);
    sim.run_until_done(client, Duration::from_secs(10));
    let c = sim.finish(client);
    assert_eq!(c.recorder.total(Counter::Succeeded), 0);
    assert_eq!(
        c.recorder.failures().get("488 Not Acceptable Here"),
        Some(&3),
        "{:?}",
        c.recorder.failures()
    );
    assert_eq!(c.recorder.total(Counter::RtpSent), 0);
}

/// A conference focus on the simulated network: the engine's mix-minus mixer behind a
/// factory URI (RFC 4579): an INVITE to `sip:conf-factory@…` creates conference `conf-N`, one
/// to `sip:conf-N@…` joins it; each is answered 200 with `Contact: <focus>;isfocus` and an RTP
/// port of its own; every 20 ms each participant gets its packet of its conference's mix.
struct FakeFocus {
    mixers: Vec<cpm_engine::conference::audio::Mixer>,
    addr: SocketAddr,
    /// Call-ID → (conference, participant).
    legs: HashMap<Bytes, (usize, cpm_engine::conference::audio::ParticipantId)>,
    /// RTP socket → (conference, participant).
    by_socket: HashMap<SocketId, (usize, cpm_engine::conference::audio::ParticipantId)>,
    /// Participant → (our RTP socket, its media address).
    out: HashMap<cpm_engine::conference::audio::ParticipantId, (SocketId, SocketAddr)>,
    next: u32,
    next_tick: Option<Instant>,
}

impl FakeFocus {
    fn new() -> FakeFocus {
        FakeFocus {
            mixers: Vec::new(),
            addr: "10.0.0.2:5060".parse().unwrap(),
            legs: HashMap::new(),
            by_socket: HashMap::new(),
            out: HashMap::new(),
            next: 0,
            next_tick: None,
        }
    }

    fn join(&mut self, ctx: &mut crate::driver::Ctx<'_>, inc: &Incoming, conf: usize) -> Message {
        use cpm_engine::conference::audio::{Codec as MixCodec, Mixer, ParticipantId};
        use cpm_engine::sdp::{Codec, SessionDescription};
        if conf == self.mixers.len() {
            self.mixers.push(Mixer::new(Default::default()));
        }
        let req = &inc.request;
        let offer = SessionDescription::parse(&req.body).unwrap();
        let remote = crate::scenario::media::remote_media(&offer).unwrap();
        let (socket, local) = ctx
            .bind_udp(SocketAddr::new(self.addr.ip(), 0), SocketKind::Raw)
            .unwrap();
        let answer = cpm_engine::sdp::answer(
            &offer,
            local.ip(),
            |_, _| local.port(),
            &[Codec::PCMU, Codec::PCMA],
        )
        .unwrap();
        let pt = answer.media()[0].codecs()[0].payload_type();
        let codec = if pt == 0 {
            MixCodec::Pcmu
        } else {
            MixCodec::Pcma
        };
        let id = ParticipantId(self.next);
        self.next += 1;
        self.mixers[conf].add(id, codec, pt, 0x1000 + id.0).unwrap();
        self.legs.insert(req.call_id().unwrap().clone(), (conf, id));
        self.by_socket.insert(socket, (conf, id));
        self.out.insert(id, (socket, remote));
        if self.next_tick.is_none() {
            self.next_tick = Some(ctx.now());
            ctx.set_timer(ctx.now(), crate::scenario::NO_SESSION, 0);
        }
        let mut ok = builder::response_to_with_tag(req, 200, "OK", Some("focus"));
        ok.headers.push(
            HeaderName::Contact,
            format!("<sip:conf-{conf}@{}>;isfocus", self.addr),
        );
        ok.set_body(answer.to_bytes(), Some("application/sdp"));
        ok
    }
}

impl Scenario for FakeFocus {
    fn name(&self) -> &'static str {
        "focus"
    }

    fn primary(&self) -> Quantity {
        Quantity::Custom("none")
    }

    fn setup(&mut self, ctx: &mut crate::driver::Ctx<'_>) -> Result<(), String> {
        ctx.bind_udp(self.addr, SocketKind::Sip)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn on_request(&mut self, ctx: &mut crate::driver::Ctx<'_>, inc: Incoming) {
        let req = &inc.request;
        let uri = String::from_utf8_lossy(req.request_uri().unwrap()).into_owned();
        let focus = uri
            .strip_prefix("sip:conf-")
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < self.mixers.len());
        let r = match req.method() {
            Some(Method::Invite) if uri.starts_with("sip:conf-factory@") => {
                self.join(ctx, &inc, self.mixers.len())
            }
            Some(Method::Invite) if focus.is_some() => {
                self.join(ctx, &inc, focus.unwrap_or_default())
            }
            Some(Method::Bye) => {
                if let Some((conf, id)) = self.legs.remove(req.call_id().unwrap()) {
                    self.mixers[conf].remove(id).unwrap();
                    self.out.remove(&id);
                }
                builder::response_to(req, 200, "OK")
            }
            _ => builder::local_response(req, 404, "Not Found"),
        };
        ctx.respond(inc.tx, &r);
    }

    fn on_timer(
        &mut self,
        ctx: &mut crate::driver::Ctx<'_>,
        _s: crate::scenario::SessionId,
        _t: u64,
    ) {
        let now = ctx.now();
        for mixer in &mut self.mixers {
            for p in &mixer.tick(now).packets {
                if let Some(&(socket, dest)) = self.out.get(&p.id) {
                    ctx.send_raw(socket, dest, &p.packet);
                }
            }
        }
        let next = self.next_tick.unwrap_or(now) + 20 * MS;
        self.next_tick = Some(next);
        ctx.set_timer(next, crate::scenario::NO_SESSION, 0);
    }

    fn on_datagram(
        &mut self,
        ctx: &mut crate::driver::Ctx<'_>,
        socket: SocketId,
        _source: SocketAddr,
        payload: Bytes,
    ) {
        let Some(&(conf, id)) = self.by_socket.get(&socket) else {
            return;
        };
        let pkt = cpm_engine::rtp::parse(payload).unwrap();
        let _ = self.mixers[conf].push_rtp(
            id,
            pkt.seq().0,
            pkt.timestamp(),
            pkt.marker(),
            pkt.payload_bytes(),
            ctx.now(),
        );
    }
}

fn conference_config(participants: usize, talkers: usize) -> ConferenceConfig {
    ConferenceConfig {
        conferences: 1,
        participants,
        talkers,
        duration: Duration::from_secs(4),
        factory: None,
        law: Law::Mu,
        register: None,
        rtp_ports: None,
        burst: (Duration::from_secs(1), Duration::from_secs(1)),
        settle: Duration::from_millis(500),
        half_duplex: false,
    }
}

#[test]
fn a_conference_through_the_engine_mixer_hears_every_other_talker() {
    let mut sim = Sim::new(5 * MS, None);
    let focus = sim.add(Box::new(FakeFocus::new()), uas_plan());
    let plan = client_plan(&sim, 50.0, 3, 3);
    let scenario = Conference::new(target(sim.addr(focus), 1), conference_config(3, 3)).unwrap();
    let client = sim.add(Box::new(scenario), plan);
    sim.run_until_done(client, Duration::from_secs(20));
    let c = sim.finish(client);
    let r = &c.recorder;
    assert_eq!(r.total(Counter::Succeeded), 3, "{:?}", r.failures());
    assert_eq!(r.noted(notes::CREATED), 1);
    assert_eq!(r.noted(notes::JOINED), 3);
    assert_eq!(r.noted("focus_contacts_without_isfocus"), 0);
    // Two bursts in 4 s; each of 3 receivers checks 3 talkers (2 others, itself) per burst.
    assert_eq!(r.noted(notes::BURSTS), 2);
    assert_eq!(r.noted(notes::TONES_WRONG), 0, "{:?}", r.notes());
    assert_eq!(r.noted(notes::TONES_OK), 18);
    assert_eq!(r.noted(notes::RECEIVERS_OK), 3);
    assert_eq!(r.total(Counter::RtpLost), 0);
    assert!(
        r.total(Counter::RtpReceived) > 3 * 150,
        "{}",
        r.total(Counter::RtpReceived)
    );
    // Each receiver detects each other talker's onset once per burst: the network both ways
    // plus the mixer's jitter buffer and talker detection.
    let delay = r.stats(receive::DELAY).unwrap();
    assert_eq!(delay.count, 12);
    assert!(
        delay.min_us >= 10_000 && delay.max_us < 300_000,
        "{delay:?}"
    );
    // Virtual time: the mixer's tick is exact.
    assert!(r.stats(receive::TICK_LATENESS).unwrap().max_us <= 1);
    let join = r.stats(JOIN).unwrap();
    assert_eq!((join.count, join.min_us), (3, 10_000));
    // The report's conference figures.
    let report = crate::report::Report {
        role: "client",
        target: "10.0.0.2:5060".into(),
        rate_requested: Some(50.0),
        data: c,
        thresholds: Default::default(),
        cpu: None,
    };
    let text = crate::report::text::summary(&report);
    assert!(
        text.contains("conferences: 1 of 1 created; participants: 3 of 3 joined"),
        "{text}"
    );
    assert!(
        text.contains("tones: 18 ok, 0 wrong; receivers all right: 3 of 3"),
        "{text}"
    );
    let json = crate::report::json::to_json(&report);
    assert_eq!(json["conference"]["tones_ok"], 18);
    assert_eq!(json["conference"]["delay"]["count"], 12);
    assert_eq!(json["conference"]["loss_pct"], 0.0);
    assert!(crate::report::html::page(&report).contains("<h2>Conference</h2>"));
}

#[test]
fn joiners_wait_for_the_focus_and_a_refused_factory_fails_them_all() {
    let mut sim = Sim::new(5 * MS, None);
    let focus = sim.add(Box::new(FakeFocus::new()), uas_plan());
    // Two conferences of 4, one talker; the joiners are due before the focus is known.
    let mut cfg = conference_config(4, 1);
    cfg.conferences = 2;
    let plan = client_plan(&sim, 1000.0, 8, 8);
    let scenario = Conference::new(target(sim.addr(focus), 1), cfg).unwrap();
    let client = sim.add(Box::new(scenario), plan);
    sim.run_until_done(client, Duration::from_secs(20));
    let c = sim.finish(client);
    let r = &c.recorder;
    assert_eq!(r.total(Counter::Succeeded), 8, "{:?}", r.failures());
    // The talker is checked for its own tone only; the 3 others for the talker's.
    assert_eq!(r.noted(notes::TONES_OK), 2 * 2 * 4);
    assert_eq!(r.noted(notes::TONES_WRONG), 0);

    // A factory URI the server does not know: the creator's 404 fails every joiner.
    let mut sim = Sim::new(5 * MS, None);
    let focus = sim.add(Box::new(FakeFocus::new()), uas_plan());
    let mut cfg = conference_config(3, 3);
    cfg.factory = Some("sip:nobody@10.0.0.2".into());
    let plan = client_plan(&sim, 1000.0, 3, 3);
    let scenario = Conference::new(target(sim.addr(focus), 1), cfg).unwrap();
    let client = sim.add(Box::new(scenario), plan);
    sim.run_until_done(client, Duration::from_secs(20));
    let c = sim.finish(client);
    let f = c.recorder.failures();
    assert_eq!(f.get("INVITE: 404 Not Found"), Some(&1), "{f:?}");
    assert_eq!(f.get("no conference to join"), Some(&2), "{f:?}");
}
