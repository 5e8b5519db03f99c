//! Starting and stopping the whole server: [`Engine::start`] binds the sockets, starts one
//! worker per core (an actix `Arbiter`, pinned), the HTTP server, and returns an
//! [`EngineHandle`] to query and stop it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Supervisor};
use actix_rt::{Arbiter, System};

use crate::config::Config;
use crate::shared::Shared;
use crate::transport::{tcp, udp, Router};
use crate::worker::{EndSessions, StartIo, Worker};

/// Signaling messages a worker may have queued before new ones are refused (overload).
const MAILBOX_CAPACITY: usize = 16 * 1024;

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A socket could not be bound.
    Bind {
        /// What was being bound.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// A configured file could not be read or parsed.
    Config(String),
    /// The runtime could not start.
    Runtime(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { what, addr, error } => {
                write!(f, "cannot bind {what} on {addr}: {error}")
            }
            StartError::Config(e) => write!(f, "configuration: {e}"),
            StartError::Runtime(e) => write!(f, "runtime: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The embeddable server.
pub struct Engine;

/// A running server: its addresses, its state, and how to stop it.
pub struct EngineHandle {
    sip_addr: SocketAddr,
    http_addr: SocketAddr,
    shared: Arc<Shared>,
    system: System,
    arbiters: Vec<Arbiter>,
    workers: Vec<Addr<Worker>>,
    http: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Binds every socket and starts the workers. Returns once the server answers.
    pub fn start(config: Config) -> Result<EngineHandle, StartError> {
        let n = config.worker_count();
        let bind_err = |what, addr, error| StartError::Bind { what, addr, error };
        let (udp_socks, tcp_socks, sip_addr) = bind_sip(config.sip_listen, n)?;
        let mut config = config;
        config.sip_listen = sip_addr;
        let pin = config.pins_threads();
        if config.pin_workers && !pin {
            tracing::info!("real-time media loops: workers and media loops are not pinned");
        }
        let http_listen = config.http_listen;
        let shared = Arc::new(Shared::new(config, n)?);

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cpm-control".into())
            .spawn(move || {
                let sys = System::new();
                sys.block_on(async move {
                    let cores = crate::sys::allowed_cores();
                    let mut arbiters = Vec::with_capacity(n);
                    let mut addrs = Vec::with_capacity(n);
                    for (k, (udp_sock, tcp_sock)) in
                        udp_socks.into_iter().zip(tcp_socks).enumerate()
                    {
                        let arbiter = Arbiter::with_tokio_rt(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .expect("worker runtime")
                        });
                        if pin && !cores.is_empty() {
                            let core = cores[k % cores.len()];
                            arbiter.spawn_fn(move || {
                                if !crate::sys::pin_current_thread(core) {
                                    tracing::info!(
                                        worker = k,
                                        core,
                                        "could not pin worker to core"
                                    );
                                }
                            });
                        }
                        let shared = shared2.clone();
                        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                            Worker::new(k, shared, udp_sock, tcp_sock)
                        });
                        arbiters.push(arbiter);
                        addrs.push(addr);
                    }
                    let router = Router::new(addrs.clone())
                        .with_conferences(shared2.conferences.names().clone())
                        .with_overload(shared2.overload.clone());
                    for addr in &addrs {
                        addr.do_send(StartIo {
                            router: router.clone(),
                        });
                    }
                    let http = crate::http::server(shared2.clone(), http_listen);
                    match http {
                        Ok((server, http_addr)) => {
                            let handle = server.handle();
                            actix_rt::spawn(server);
                            let _ = ready_tx.send(Ok((
                                System::current(),
                                arbiters,
                                addrs,
                                handle,
                                http_addr,
                            )));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(bind_err("HTTP", http_listen, e)));
                            System::current().stop();
                        }
                    }
                });
                let _ = sys.run();
            })
            .map_err(|e| StartError::Runtime(e.to_string()))?;

        let (system, arbiters, workers, http, http_addr) = ready_rx
            .recv()
            .map_err(|_| StartError::Runtime("control thread ended during start".into()))??;
        let handle = EngineHandle {
            sip_addr,
            http_addr,
            shared,
            system,
            arbiters,
            workers,
            http,
            thread: Some(thread),
        };
        tracing::info!(sip = %sip_addr, http = %http_addr, workers = n, "cpmd started");
        Ok(handle)
    }
}

/// Port 0 asks for any free port: UDP picks one, and TCP must get the same number; when that
/// number is taken on TCP, try another (a bounded number of times).
const PORT_ZERO_ATTEMPTS: usize = 32;

type SipSockets = (
    Vec<std::net::UdpSocket>,
    Vec<std::net::TcpListener>,
    SocketAddr,
);

/// Binds the SIP UDP sockets and TCP listeners (one of each per worker) on one address.
fn bind_sip(listen: SocketAddr, n: usize) -> Result<SipSockets, StartError> {
    let bind_err = |what, addr, error| StartError::Bind { what, addr, error };
    let attempts = if listen.port() == 0 {
        PORT_ZERO_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp_socks =
            udp::bind_reuseport(listen, n).map_err(|e| bind_err("SIP UDP", listen, e))?;
        let sip_addr = udp_socks[0]
            .local_addr()
            .map_err(|e| bind_err("SIP UDP", listen, e))?;
        // A port we picked must be ours alone on TCP too.
        let picked = listen.port() == 0;
        match (0..n)
            .map(|i| tcp::bind_reuseport(sip_addr, picked && i == 0))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(tcp_socks) => return Ok((udp_socks, tcp_socks, sip_addr)),
            Err(e) => last = Some(bind_err("SIP TCP", sip_addr, e)),
        }
    }
    Err(last.unwrap_or_else(|| StartError::Runtime("no SIP port".into())))
}

impl EngineHandle {
    /// The SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// The HTTP address (`/health`, `/metrics`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The shared state: metrics, registrar, configuration.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        self.shared.render_metrics()
    }

    /// Graceful shutdown: new requests are refused with 503 at once (in-dialog requests of
    /// live sessions still reach them); established sessions get `drain` to end by themselves,
    /// then the ones left are ended (BYE to both parties, 503 to a caller still being
    /// connected); requests in flight (a MESSAGE waiting for its recipient's answer, the BYEs)
    /// get up to `grace` to finish and have their final response relayed; then every worker
    /// stops, the charging records and storage are flushed, and this returns. Transactions
    /// that only absorb retransmissions of an answer already sent do not hold the shutdown.
    pub fn shutdown(mut self, drain: Duration, grace: Duration) {
        self.shared.start_draining();
        // Sessions and conferences alive.
        let sessions = |shared: &Shared| -> u64 {
            let sessions: u64 = shared
                .metrics
                .iter()
                .map(|m| m.sessions.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            sessions + shared.conferences.counts().0 as u64
        };
        let drained = Instant::now() + drain;
        while sessions(&self.shared) > 0 && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = sessions(&self.shared);
        if left > 0 {
            tracing::info!(sessions = left, "drain time over: ending the sessions left");
            for w in &self.workers {
                w.do_send(EndSessions);
            }
        }
        let deadline = Instant::now() + grace;
        while (self.shared.pending_requests() > 0 || sessions(&self.shared) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (left, sessions_left) = (self.shared.pending_requests(), sessions(&self.shared));
        if left > 0 || sessions_left > 0 {
            tracing::warn!(
                requests = left,
                sessions = sessions_left,
                "shutdown grace elapsed with work in flight"
            );
        }
        // Give the last relayed responses and BYEs a moment to leave the workers' sockets.
        std::thread::sleep(Duration::from_millis(20));
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let http = self.http.clone();
        let system = self.system.clone();
        // Stopping the HTTP server is async; run it on the control system, then stop it.
        system.arbiter().spawn(async move {
            http.stop(false).await;
            System::current().stop();
        });
        for a in self.arbiters.drain(..) {
            a.stop();
            let _ = a.join();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for plane in &self.shared.media {
            plane.shutdown();
        }
        self.shared.charging.stop();
        // Every accepted write is committed before the process exits.
        self.shared.storage.shutdown();
        tracing::info!("cpmd stopped");
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_now();
        }
    }
}
