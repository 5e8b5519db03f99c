//! The roles as the binary runs them: resolve addresses, build the scenario, drive it on this
//! thread (plus the in-process receiver's thread for `message --receiver`), and report.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::cli::{self, ClientArgs, Command, ScenarioKind, UasArgs};
use crate::driver::{Driver, Plan, RunData};
use crate::io::{self, unix_us, LoopOptions, UdpNet};
use crate::metrics::Quantity;
use crate::pacing::{Pacer, Schedule};
use crate::report::{self, Report};
use crate::scenario::call::Call;
use crate::scenario::conference::{Conference, ConferenceConfig};
use crate::scenario::message::{Body, MessageScenario};
use crate::scenario::msrp::{MsrpConfig, MsrpScenario};
use crate::scenario::options::Options;
use crate::scenario::register::{Register, Secrets};
use crate::scenario::uas::{Uas, UasConfig};
use crate::scenario::{hostport, Scenario, SocketId, Target};
use crate::sys;

/// How long the in-process receiver may take to bind and register its users.
const RECEIVER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the command line `args` (without the program name) and returns the exit code: 0 when
/// the thresholds are met, 1 when not (reasons on stderr), 2 on a usage or setup error.
pub fn main_with(args: &[String]) -> i32 {
    let cmd = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cpm-loadgen: {e}\n(cpm-loadgen --help lists the options)");
            return 2;
        }
    };
    let result = match &cmd {
        Command::Help => {
            print!("{}", cli::USAGE);
            return 0;
        }
        Command::Version => {
            println!("cpm-loadgen {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Command::Uas(a) => {
            sys::install_stop_handler();
            run_uas(a).map(|r| (r, &a.common))
        }
        Command::Client(a) => {
            sys::install_stop_handler();
            run_client(a).map(|r| (r, &a.common))
        }
    };
    let (report, common) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cpm-loadgen: {e}");
            return 2;
        }
    };
    print!("{}", report::text::summary(&report));
    if let Some(p) = &common.json {
        if let Err(e) = report::json::write(&report, p) {
            eprintln!("cpm-loadgen: writing {}: {e}", p.display());
            return 2;
        }
    }
    if let Some(p) = &common.html {
        if let Err(e) = report::html::write(&report, p) {
            eprintln!("cpm-loadgen: writing {}: {e}", p.display());
            return 2;
        }
    }
    let violations = report.violations();
    for v in &violations {
        eprintln!("cpm-loadgen: threshold not met: {v}");
    }
    i32::from(!violations.is_empty())
}

/// Resolves `HOST:PORT` (IPv4 preferred).
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text}: no address"))
}

/// The local address the kernel would send from to reach `dest`.
pub fn route_ip(dest: SocketAddr) -> IpAddr {
    let any: SocketAddr = if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    UdpSocket::bind(any)
        .and_then(|s| s.connect(dest).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The host part of URIs for a target given as `text` and resolved to `addr`: the name as
/// written (an IP literal as resolved), with the port unless it is 5060.
pub fn domain_of(text: &str, addr: SocketAddr) -> String {
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_ok() {
        return hostport(addr);
    }
    match addr.port() {
        5060 => host.to_string(),
        p => format!("{host}:{p}"),
    }
}

fn seed(common: &cli::Common) -> u64 {
    common
        .seed
        .unwrap_or_else(|| unix_us() ^ (u64::from(std::process::id()) << 40))
}

fn show_progress(common: &cli::Common) -> bool {
    !common.quiet && sys::is_terminal(2)
}

/// Drives `driver` on this thread to its end; returns its figures.
fn drive(
    mut driver: Driver,
    stop: &AtomicBool,
    signals: bool,
    progress: bool,
    on_ready: Option<io::OnReady<'_>>,
    pacing_starts_after_setup: bool,
) -> Result<RunData, String> {
    let mut net = UdpNet::new().map_err(|e| format!("poll: {e}"))?;
    driver.setup(&mut net, Instant::now())?;
    if pacing_starts_after_setup {
        driver.start_pacing(Instant::now());
    }
    let name = driver.scenario_name();
    let mut print = |p: &crate::driver::Progress| {
        eprint!("\r{}\x1b[K", report::progress_line(name, p));
    };
    let opts = LoopOptions {
        stop,
        signals,
        progress: if progress { Some(&mut print) } else { None },
        on_ready,
    };
    io::run(&mut driver, &mut net, opts).map_err(|e| format!("event loop: {e}"))?;
    if progress {
        eprintln!();
    }
    Ok(driver.finish(Instant::now()))
}

/// Runs the answering side until `stop`, a signal (with `signals`), or `run_for`; `on_ready`
/// gets the first user's address once every user is registered.
#[allow(clippy::too_many_arguments)]
pub fn serve_uas(
    cfg: UasConfig,
    run_for: Option<Duration>,
    stop: &AtomicBool,
    signals: bool,
    progress: bool,
    seed: u64,
    start: Instant,
    on_ready: Box<dyn FnOnce(SocketAddr) + '_>,
) -> Result<RunData, String> {
    // Unregistering takes one round trip per user, paced like the registrations.
    let drain = Duration::from_secs(5)
        + Duration::from_secs_f64(cfg.users as f64 / cfg.register_rate.max(1.0));
    let plan = Plan {
        pacer: None,
        concurrency: usize::MAX,
        drain,
        run_for,
    };
    let driver = Driver::new(Box::new(Uas::new(cfg)), plan, start, unix_us(), seed);
    let ready = Box::new(move |d: &Driver| {
        // Registrations that failed are named at once (the run goes on for the others).
        for (note, n) in d.recorder().notes() {
            if note.starts_with("registration failed") {
                eprintln!("cpm-loadgen uas: {note} ({n} users)");
            }
        }
        if let Some(a) = d.local_addr(SocketId(0)) {
            on_ready(a);
        }
    });
    drive(driver, stop, signals, progress, Some(ready), false)
}

/// The `uas` subcommand.
pub fn run_uas(a: &UasArgs) -> Result<Report, String> {
    let register_to = a.register_to.as_deref().map(resolve).transpose()?;
    let contact_ip = match (a.listen.ip().is_unspecified(), register_to) {
        (false, _) => a.listen.ip(),
        (true, Some(r)) => route_ip(r),
        (true, None) => IpAddr::from([127, 0, 0, 1]),
    };
    let domain = match (&a.domain, &a.register_to, register_to) {
        (Some(d), _, _) => d.clone(),
        (None, Some(text), Some(addr)) => domain_of(text, addr),
        _ => hostport(a.listen),
    };
    let cfg = UasConfig {
        listen: a.listen,
        contact_ip,
        users: a.users,
        pattern: a.pattern.clone(),
        register_to,
        domain,
        secrets: Secrets::load(a.password.as_deref(), a.users_file.as_deref())?,
        expires: a.expires,
        register_rate: a.register_rate,
        rtp: a.rtp,
        codecs: a.codecs.clone(),
        payload_len: a.payload_len,
        rtp_ports: a.rtp_ports,
        register_after: a.register_after,
        msrp_relay: a.msrp_relay.as_deref().map(resolve).transpose()?,
    };
    let cpu_before = sys::cpu_used();
    let users = a.users;
    let registered = register_to.map_or(String::new(), |r| format!(" registered-at={r}"));
    let stop = AtomicBool::new(false);
    let data = serve_uas(
        cfg,
        a.duration,
        &stop,
        true,
        show_progress(&a.common),
        seed(&a.common),
        Instant::now(),
        Box::new(move |addr| {
            use std::io::Write;
            println!("cpm-loadgen uas ready listen={addr} users={users}{registered}");
            let _ = std::io::stdout().flush();
        }),
    )?;
    Ok(Report {
        role: "uas",
        target: a.listen.to_string(),
        rate_requested: None,
        data,
        thresholds: a.common.thresholds,
        cpu: cpu_before.zip(sys::cpu_used()).map(|(b, a)| a.since(b)),
    })
}

/// The in-process receiver of `message --receiver`: a `uas` on its own thread.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<RunData, String>>,
}

impl Receiver {
    /// Starts the receiver and waits until it is ready (its users registered).
    fn start(cfg: UasConfig, seed: u64, start: Instant) -> Result<Receiver, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                serve_uas(
                    cfg,
                    None,
                    &thread_stop,
                    false,
                    false,
                    seed,
                    start,
                    Box::new(move |a| {
                        let _ = tx.send(a);
                    }),
                )
            })
            .map_err(|e| format!("receiver thread: {e}"))?;
        match rx.recv_timeout(RECEIVER_READY_TIMEOUT) {
            Ok(addr) => Ok(Receiver { addr, stop, thread }),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                match thread.join() {
                    Ok(Err(e)) => Err(format!("receiver: {e}")),
                    _ => Err("receiver: not ready in time (registrations failed?)".into()),
                }
            }
        }
    }

    /// Stops the receiver (it unregisters its users) and returns its figures.
    fn finish(self) -> Result<RunData, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "receiver thread panicked".to_string())?
    }
}

/// The client subcommands.
pub fn run_client(a: &ClientArgs) -> Result<Report, String> {
    let cpu_before = sys::cpu_used();
    let start = Instant::now();
    let seed = seed(&a.common);
    let given = a.target.as_deref().map(resolve).transpose()?;
    // The in-process receiver: registered at the target unless it is the target itself.
    let receiver = match a.receiver {
        None => None,
        Some(listen) => {
            let register_to = given.filter(|t| *t != listen);
            let domain = match (&a.domain, &a.target, register_to) {
                (Some(d), _, _) => d.clone(),
                (None, Some(text), Some(addr)) => domain_of(text, addr),
                _ => hostport(listen),
            };
            let contact_ip = match register_to {
                _ if !listen.ip().is_unspecified() => listen.ip(),
                Some(r) => route_ip(r),
                None => IpAddr::from([127, 0, 0, 1]),
            };
            let cfg = UasConfig {
                listen,
                contact_ip,
                users: a.users,
                pattern: a.to.clone(),
                register_to,
                domain,
                secrets: Secrets::load(a.password.as_deref(), a.users_file.as_deref())?,
                expires: a.expires,
                register_rate: 500.0,
                rtp: Default::default(),
                codecs: crate::scenario::media::fixed_rate_codecs(),
                payload_len: None,
                rtp_ports: None,
                register_after: Duration::ZERO,
                msrp_relay: None,
            };
            Some(Receiver::start(cfg, seed ^ 0x5eed, start)?)
        }
    };
    let addr = match (given, &receiver) {
        (Some(t), _) => t,
        (None, Some(r)) => r.addr,
        (None, None) => return Err("--target HOST:PORT is required".into()),
    };
    let domain = match (&a.domain, &a.target) {
        (Some(d), _) => d.clone(),
        (None, Some(text)) => domain_of(text, addr),
        (None, None) => hostport(addr),
    };
    let target = Target {
        addr,
        domain,
        to: a.to.clone(),
        from: a.from.clone(),
        users: a.users,
        local_ip: a.local.unwrap_or_else(|| route_ip(addr)),
    };
    let scenario: Box<dyn Scenario> = match a.kind {
        ScenarioKind::Options => Box::new(Options::new(target)),
        ScenarioKind::Message => Box::new(
            MessageScenario::new(
                target,
                Body {
                    size: a.body_size,
                    content_type: a.content_type.clone(),
                },
            )
            .expecting(&a.expect),
        ),
        ScenarioKind::Msrp => Box::new(MsrpScenario::new(
            target,
            MsrpConfig {
                load: a.msrp,
                hold: a.hold,
                relay: a.relay.as_deref().map(resolve).transpose()?,
            },
        )),
        ScenarioKind::Register => Box::new(Register::new(
            target,
            Secrets::load(a.password.as_deref(), a.users_file.as_deref())?,
            a.expires,
        )),
        ScenarioKind::Call => Box::new(Call::with_rtp_ports(
            target,
            a.hold,
            a.media.clone(),
            a.rtp_ports,
        )),
        ScenarioKind::Conference => return run_conference(a, target, start, seed, cpu_before),
    };
    let plan = Plan {
        pacer: Some(Pacer::new(
            Schedule::new(a.rate, a.ramp_up),
            start,
            a.count,
            a.duration,
        )),
        concurrency: a.concurrency,
        // A call in flight at the last start still has its hold to go.
        drain: match a.kind {
            ScenarioKind::Call | ScenarioKind::Msrp => a.drain + a.hold,
            _ => a.drain,
        },
        run_for: None,
    };
    let driver = Driver::new(scenario, plan, start, unix_us(), seed);
    let stop = AtomicBool::new(false);
    let run = drive(driver, &stop, true, show_progress(&a.common), None, true);
    let received = receiver.map(Receiver::finish);
    let mut data = run?;
    if let Some(received) = received {
        let r = received?;
        data.recorder.merge_measures(&r.recorder, "receiver.");
        data.summary_lines
            .extend(r.summary_lines.iter().map(|l| format!("receiver {l}")));
        if data.recorder.stats(Quantity::MessageDelivery).is_none() {
            data.summary_lines
                .push("receiver: no stamped MESSAGE arrived".into());
        }
    }
    Ok(Report {
        role: "client",
        target: addr.to_string(),
        rate_requested: Some(a.rate),
        data,
        thresholds: a.common.thresholds,
        cpu: cpu_before.zip(sys::cpu_used()).map(|(b, a)| a.since(b)),
    })
}

/// The `conference` subcommand: every participant a session, started at `--rate` (creators
/// first), all in flight at once; the run lasts the joins, `--duration`, and the BYEs.
fn run_conference(
    a: &ClientArgs,
    target: Target,
    start: Instant,
    seed: u64,
    cpu_before: Option<report::CpuUse>,
) -> Result<Report, String> {
    let c = &a.conference;
    let duration = a.duration.unwrap_or(Duration::from_secs(10));
    let cfg = ConferenceConfig {
        conferences: c.conferences,
        participants: c.participants,
        talkers: c.talkers,
        duration,
        factory: c.factory.clone(),
        law: c.law,
        register: if c.register {
            Some((
                Secrets::load(a.password.as_deref(), a.users_file.as_deref())?,
                a.expires,
            ))
        } else {
            None
        },
        rtp_ports: a.rtp_ports,
        burst: (Duration::from_secs(1), Duration::from_secs(1)),
        settle: Duration::from_millis(500),
    };
    let sessions = cfg.sessions();
    let addr = target.addr;
    let scenario = Conference::new(target, cfg)?.leaving_on_signals();
    let plan = Plan {
        pacer: Some(Pacer::new(
            Schedule::new(a.rate, a.ramp_up),
            start,
            Some(sessions),
            None,
        )),
        concurrency: usize::try_from(sessions).unwrap_or(usize::MAX),
        // After the last join: the INVITEs in flight, the conference, the BYEs.
        drain: a.drain + duration,
        run_for: None,
    };
    let driver = Driver::new(Box::new(scenario), plan, start, unix_us(), seed);
    let stop = AtomicBool::new(false);
    let data = drive(driver, &stop, true, show_progress(&a.common), None, true)?;
    Ok(Report {
        role: "client",
        target: addr.to_string(),
        rate_requested: Some(a.rate),
        data,
        thresholds: a.common.thresholds,
        cpu: cpu_before.zip(sys::cpu_used()).map(|(b, a)| a.since(b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let a: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        assert_eq!(domain_of("127.0.0.1:5070", a), "127.0.0.1:5070");
        assert_eq!(domain_of("localhost:5070", a), "localhost:5070");
        let b: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(domain_of("localhost:5060", b), "localhost");
        assert_eq!(domain_of("127.0.0.1:5060", b), "127.0.0.1");
    }

    #[test]
    fn resolves_and_routes() {
        let a = resolve("127.0.0.1:5060").unwrap();
        assert_eq!(a, "127.0.0.1:5060".parse().unwrap());
        assert!(resolve("no-such-host.invalid:5060").is_err());
        assert_eq!(route_ip(a), IpAddr::from([127, 0, 0, 1]));
    }
}
