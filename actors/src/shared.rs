//! State shared by every worker: configuration, the registrar's bindings, the users database,
//! open TCP connections and the metrics of each worker.
//!
//! Everything a single call touches lives on its owning worker; only what several calls must
//! see (a user's bindings are read by whichever worker owns a MESSAGE's Call-ID) is here, behind
//! short, sharded locks that are never held across I/O (decision 0002).

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cpm_engine::registrar::{Aor, Registrar, RegistrarConfig};
use cpm_engine::sip::digest::{Authenticator, UserDb};
use cpm_engine::store::{ReadQuery, ReadResult, UserSettings};
use parking_lot::{Mutex, RwLock};

use crate::charging::{ChargingWriter, JsonLines};
use crate::config::Config;
use crate::engine::StartError;
use crate::media::{MediaConfig, MediaPlane};
use crate::metrics::{self, MsrpMetrics, WorkerMetrics};
use crate::msrp::{MsrpPlane, MsrpSettings};
use crate::storage::{Storage, StorageOptions};
use crate::transport::{Overload, SourceLimits, TcpRegistry};

/// The Retry-After of the 503 overload control answers, in seconds.
const OVERLOAD_RETRY_AFTER: u32 = 2;

/// Registrar shards: an AOR's bindings live in shard hash(AOR) mod this.
const REGISTRAR_SHARDS: usize = 16;

/// The shared state.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Domains served here, lowercased.
    pub domains: Vec<String>,
    /// One metrics block per worker, index = worker id.
    pub metrics: Vec<Arc<WorkerMetrics>>,
    /// Open TCP connections.
    pub tcp: TcpRegistry,
    /// Per-source request rates and TCP connection counts.
    pub source_limits: Arc<SourceLimits>,
    /// Each worker's overload state (queueing delay), read by the receiving tasks' gate.
    pub overload: Arc<Overload>,
    /// One media plane (RTP relay loop) per worker, index = worker id.
    pub media: Vec<MediaPlane>,
    /// The MSRP relay (`--msrp-listen`).
    pub msrp: MsrpPlane,
    /// BFCP floor control of half-duplex conferences (`--bfcp-listen`).
    pub bfcp: crate::bfcp::BfcpPlane,
    /// The MSRP relay's counters.
    pub msrp_metrics: Arc<MsrpMetrics>,
    /// Where the sessions' charging records go (`<data-dir>/cdr.jsonl`).
    pub charging: ChargingWriter,
    /// Network storage and the store-and-forward queue (`<data-dir>/storage.db`).
    pub storage: Storage,
    /// The users whose held messages are being delivered right now (by one worker each), so a
    /// second REGISTER elsewhere does not deliver them twice, and new messages for them queue
    /// behind the held ones (order kept); the flag: more were held since the run's last read.
    pub delivering: Mutex<HashMap<String, bool>>,
    /// Every user's explicit storage settings (set through the API), by AOR: the message
    /// controller's network-storage decision reads it; loaded from storage at startup, and
    /// updated by whoever writes a user's settings (the HTTP API) once the write committed.
    pub settings: RwLock<HashMap<String, UserSettings>>,
    /// Digest users (from `--users-file`); `None` means registration is open.
    pub users: Option<UserDb>,
    /// The digest server (realm and nonce secret).
    pub auth: Authenticator,
    /// Conferences: predefined and running ones, the limits (decision 0014).
    pub conferences: crate::conference::Registry,
    registrar: Vec<Mutex<Registrar>>,
    seed: u64,
    draining: AtomicBool,
}

impl Shared {
    /// Builds the shared state for `workers` workers; reads the users file.
    pub fn new(config: Config, workers: usize) -> Result<Shared, StartError> {
        let domains = config
            .domains()
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let users = match &config.users_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StartError::Config(format!("users file {}: {e}", path.display()))
                })?;
                Some(UserDb::parse(&text).map_err(|e| {
                    StartError::Config(format!("users file {}: {e}", path.display()))
                })?)
            }
            None => None,
        };
        let random = random_bytes();
        let seed = u64::from_le_bytes(random[..8].try_into().unwrap_or([7; 8]));
        let reg_config = RegistrarConfig {
            min_expires: config.min_expires,
            max_expires: config.max_expires,
            default_expires: config.default_expires,
            max_contacts_per_aor: config.max_contacts_per_aor,
        };
        let metrics: Vec<Arc<WorkerMetrics>> = (0..workers)
            .map(|_| Arc::new(WorkerMetrics::default()))
            .collect();
        // Each worker's media loop runs on the worker's core (when workers are pinned), so a
        // call's signaling and media share a cache.
        let cores = if config.pins_threads() {
            crate::sys::allowed_cores()
        } else {
            Vec::new()
        };
        let media = metrics
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let core = (!cores.is_empty()).then(|| cores[k % cores.len()]);
                MediaPlane::start(k, MediaConfig::from_config(&config), core, m.clone())
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| StartError::Runtime(format!("media loop: {e}")))?;
        let msrp_metrics = Arc::new(MsrpMetrics::default());
        let mut key = [0u8; 32];
        key.copy_from_slice(&random_bytes()[..32]);
        // A listener that cannot be bound is a configuration error, as for SIP: cpmd does not
        // start rather than pass MSRP through unanchored without saying so.
        let msrp_settings = MsrpSettings {
            bind_timeout: std::time::Duration::from_secs(config.msrp_bind_timeout),
            threads: config.msrp_thread_count(),
            ..MsrpSettings::new(config.msrp_listen)
        };
        let msrp = MsrpPlane::start(msrp_settings, key, seed ^ 0x6d73_7270, msrp_metrics.clone())
            .map_err(|error| StartError::Bind {
            what: "MSRP TCP",
            addr: config.msrp_listen,
            error,
        })?;
        let bfcp_listen = config
            .bfcp_listen
            .unwrap_or(std::net::SocketAddr::new(config.media_ip, 0));
        let bfcp =
            crate::bfcp::BfcpPlane::start(bfcp_listen).map_err(|error| StartError::Bind {
                what: "BFCP TCP",
                addr: bfcp_listen,
                error,
            })?;
        let cdr_path = config.data_dir.join("cdr.jsonl");
        let charging = JsonLines::open(&cdr_path)
            .and_then(|sink| ChargingWriter::start(Box::new(sink)))
            .map_err(|e| {
                StartError::Config(format!("charging records {}: {e}", cdr_path.display()))
            })?;
        let storage_options = StorageOptions {
            write_queue: config.storage_queue,
            cache_kib: config.storage_cache_mib.saturating_mul(1024),
            ..StorageOptions::default()
        };
        let storage = Storage::open(&config.data_dir, storage_options).map_err(|e| {
            StartError::Config(format!("storage in {}: {e}", config.data_dir.display()))
        })?;
        let settings = load_settings(&storage)?;
        let conferences =
            crate::conference::Registry::new(&config, workers).map_err(StartError::Config)?;
        Ok(Shared {
            conferences,
            settings: RwLock::new(settings),
            charging,
            storage,
            delivering: Mutex::new(HashMap::new()),
            auth: Authenticator::new(config.realm(), random[8..].to_vec()),
            users,
            registrar: (0..REGISTRAR_SHARDS)
                .map(|_| Mutex::new(Registrar::new(reg_config.clone())))
                .collect(),
            domains,
            metrics,
            tcp: TcpRegistry::default(),
            source_limits: SourceLimits::new(config.source_limits()),
            overload: Arc::new(Overload::new(
                workers,
                config.overload_delay(),
                OVERLOAD_RETRY_AFTER,
            )),
            media,
            msrp,
            bfcp,
            msrp_metrics,
            seed,
            draining: AtomicBool::new(false),
            config,
        })
    }

    /// The registrar shard holding an AOR.
    pub fn registrar(&self, aor: &Aor) -> &Mutex<Registrar> {
        let h = cpm_engine::hash::fnv1a(aor.as_bytes());
        &self.registrar[(h % REGISTRAR_SHARDS as u64) as usize]
    }

    /// Every registrar shard (for expiry sweeps and gauges).
    pub fn registrar_shards(&self) -> &[Mutex<Registrar>] {
        &self.registrar
    }

    /// Random seed for branch and tag generation.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether the server is shutting down (new transactions get 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a host (from a Request-URI or To) is one of ours.
    pub fn is_local_domain(&self, host: &str) -> bool {
        let h = host.to_ascii_lowercase();
        self.domains.contains(&h)
    }

    /// Transactions alive over all workers.
    pub fn transactions_in_flight(&self) -> u64 {
        self.metrics
            .iter()
            .map(|m| m.transactions.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests forwarded and still awaiting a final response, over all workers: what a
    /// graceful shutdown waits for.
    pub fn pending_requests(&self) -> u64 {
        self.metrics
            .iter()
            .map(|m| m.pending_requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Live contacts and AORs over all shards.
    pub fn registrations(&self) -> (usize, usize) {
        self.registrar
            .iter()
            .map(|s| {
                let r = s.lock();
                (r.contact_count(), r.aor_count())
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// The Prometheus text of `/metrics`.
    pub fn render_metrics(&self) -> String {
        let (contacts, aors) = self.registrations();
        let mut out = metrics::render(&self.metrics, contacts, aors);
        self.storage.metrics().render(&mut out);
        metrics::render_msrp(&mut out, &self.msrp_metrics);
        let (conferences, participants) = self.conferences.counts();
        let ticks: Vec<_> = self.media.iter().map(|m| m.tick_stats()).collect();
        crate::media::room::render_metrics(&mut out, conferences, participants, &ticks);
        metrics::render_overload(&mut out, &self.overload);
        out
    }
}

/// Every user's explicit storage settings, read once at startup (blocking: nothing runs yet).
fn load_settings(storage: &Storage) -> Result<HashMap<String, UserSettings>, StartError> {
    let (tx, rx) = std::sync::mpsc::channel();
    storage
        .read(ReadQuery::AllSettings, move |r| {
            let _ = tx.send(r);
        })
        .map_err(|e| StartError::Config(format!("storage: {e}")))?;
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Ok(ReadResult::AllSettings(all))) => Ok(all.into_iter().collect()),
        Ok(other) => Err(StartError::Config(format!("user settings: {other:?}"))),
        Err(e) => Err(StartError::Config(format!("user settings: {e}"))),
    }
}

/// 40 bytes from the OS's random source (nonce secret and id seeds), or, where it cannot be
/// read, bytes derived from the time and process id (still unique per process).
fn random_bytes() -> [u8; 40] {
    let mut out = [0u8; 40];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut out).is_ok() {
            return out;
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = t ^ (u128::from(std::process::id()) << 64);
    for (i, b) in out.iter_mut().enumerate() {
        *b = (mix >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
    }
    out
}
