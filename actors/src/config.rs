//! Configuration: embedded defaults, a TOML file (`--config FILE`), and command-line flags.
//!
//! Every flag is also a config key (`--sip-listen` ↔ `sip_listen`); a flag given on the command
//! line wins over the file, the file wins over the defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SIP listen address, UDP and TCP on the same port (`--sip-listen`).
    pub sip_listen: SocketAddr,
    /// Domains this server is responsible for (`--domain`, repeatable). Empty means
    /// `localhost` and the listen address.
    pub domain: Vec<String>,
    /// Where stored data lives (`--data-dir`).
    pub data_dir: PathBuf,
    /// HTTP listen address for `/health` and `/metrics` (`--http-listen`).
    pub http_listen: SocketAddr,
    /// Number of workers (one per core by default; `--workers`).
    pub workers: usize,
    /// Log filter, e.g. `info` or `cpm_actors=debug` (`--log`).
    pub log: String,
    /// Pin each worker to its core where the OS allows (`--pin-workers`).
    pub pin_workers: bool,
    /// Digest-authentication users file; when set, REGISTER must authenticate (`--users-file`).
    pub users_file: Option<PathBuf>,
    /// The digest realm (`--realm`); defaults to the first domain.
    pub realm: Option<String>,
    /// Largest SIP message accepted, in bytes (`--max-message-size`); larger ones get 513.
    pub max_message_size: usize,
    /// A TCP connection idle for this many seconds is closed (`--tcp-idle-timeout`).
    pub tcp_idle_timeout: u64,
    /// A TCP message must arrive whole within this many seconds of its first byte
    /// (`--tcp-message-timeout`; slowloris).
    pub tcp_message_timeout: u64,
    /// TCP connections one source IP may hold (`--tcp-max-per-ip`; 0: no limit).
    pub tcp_max_per_ip: usize,
    /// A worker whose messages wait this many milliseconds is overloaded: new INVITEs and
    /// MESSAGEs for it get 503 (`--overload-delay`; 0: off).
    pub overload_delay: u64,
    /// Requests per second one source IP may send (`--source-rate`; 0: no limit).
    pub source_rate: u32,
    /// Requests a source may send at once above its rate (`--source-burst`; 0: the rate).
    pub source_burst: u32,
    /// Registration expiry bounds, in seconds.
    pub min_expires: u32,
    /// Longest registration granted, in seconds.
    pub max_expires: u32,
    /// Registration expiry when the client names none, in seconds.
    pub default_expires: u32,
    /// Most contacts one address-of-record may register.
    pub max_contacts_per_aor: usize,
    /// On SIGTERM, how long in-flight transactions may take to finish, in seconds.
    pub shutdown_grace: u64,
    /// On SIGTERM, how long established sessions may go on before they are ended with a BYE,
    /// in seconds (`--drain-time`).
    pub drain_time: u64,
    /// Enables test-only hooks (fault injection). Never in production.
    pub test_hooks: bool,
    /// The address relay sockets are bound on, and that rewritten SDP names (`--media-ip`).
    pub media_ip: IpAddr,
    /// The UDP ports relay sockets may use (`--media-ports MIN-MAX`).
    pub media_ports: PortRange,
    /// The TCP listener of the MSRP relay, shared by every MSRP session (`--msrp-listen`);
    /// its port is the one rewritten SDP names, on `--media-ip`.
    pub msrp_listen: SocketAddr,
    /// The TCP listener of BFCP floor control for half-duplex conferences (`--bfcp-listen`);
    /// `None`: `--media-ip` on a port the system picks (the SDP answers name it).
    pub bfcp_listen: Option<SocketAddr>,
    /// A media leg with no packet for this many seconds is reported inactive, so its session
    /// ends (`--media-timeout`; 0 turns the check off).
    pub media_timeout: u64,
    /// After latching, drop packets from other sources (`true`) or latch again to the new
    /// source (`false`) (`--media-strict-source`).
    pub media_strict_source: bool,
    /// Connect a relay socket to the source it latched, strangers going to a catch-all socket
    /// (`--media-connect`; decision 0009).
    pub media_connect: bool,
    /// While busy, the media loop looks at its sockets at most once per this many microseconds
    /// (`--media-pace`; 0: at every datagram; decision 0009).
    pub media_pace: u64,
    /// How the media loop waits for and moves datagrams (`--media-io`; decision 0009).
    pub media_io: MediaIo,
    /// Real-time priority of the media loop threads (`--media-priority`; decision 0009).
    pub media_priority: RtPriority,
    /// Interim charging records of a session every this many seconds (`--cdr-interim`; 0:
    /// start and stop records only).
    pub cdr_interim: u64,
    /// The codecs relayed sessions may use (`--codecs PCMU,PCMA,...`); empty: any. Formats
    /// outside it are removed from offers; a stream left with none is refused (488 when no
    /// stream is left, RFC 3264 §6).
    pub codecs: CodecList,
    /// Hold MESSAGEs for a user who is offline (or whose contacts all fail) and deliver them
    /// when the user registers (`--store-and-forward`); `false`: answer 480 as a plain proxy.
    pub store_and_forward: bool,
    /// A held MESSAGE is given up after this many seconds (`--message-expiry`).
    pub message_expiry: u64,
    /// A MESSAGE no device answered within this many seconds is held and its sender answered
    /// 202 (`--message-delivery-timeout`, with store-and-forward); 0: wait for the branches'
    /// own timeout (32 s, when the sender has given up too).
    pub message_delivery_timeout: u64,
    /// Most MESSAGEs held for one user (`--message-user-cap`); more get 480 with a Warning.
    pub message_user_cap: usize,
    /// Which messages go to network storage for a user who set nothing
    /// (`--storage-default all|none|on-request`).
    pub storage_default: StorageDefault,
    /// Largest pager-mode MESSAGE body in bytes (`--message-max-size`, large message mode of
    /// RFC 3428 §7 / CPM); larger ones get 413 and are to be sent over MSRP.
    pub message_max_size: usize,
    /// Largest message taken in large message mode, a one-shot MSRP session to an offline
    /// user (`--large-message-max`); larger ones get MSRP 413 and are not stored.
    pub large_message_max: u64,
    /// An MSRP connection naming none of our sessions within this many seconds is closed
    /// (`--msrp-bind-timeout`).
    pub msrp_bind_timeout: u64,
    /// Threads of the MSRP relay, each running its share of the MSRP sessions
    /// (`--msrp-threads`); 0: one per worker.
    pub msrp_threads: usize,
    /// Storage writes queued at most (`--storage-queue`); beyond, a MESSAGE to hold gets 503.
    /// 0 refuses every write (a test knob).
    pub storage_queue: usize,
    /// SQLite page cache per storage connection, MiB (`--storage-cache-mib`).
    pub storage_cache_mib: u32,
    /// Bearer tokens of the HTTP API (`--api-tokens`): a file of `user token` lines; with
    /// `--users-file` the API also takes HTTP Digest with the SIP credentials.
    pub api_tokens: Option<PathBuf>,
    /// The conference factory URI (`--conference-factory`; default
    /// `sip:conf-factory@<first domain>`): an INVITE to it creates an ad-hoc conference.
    pub conference_factory: Option<String>,
    /// Most conferences at once (`--conference-max`); more are refused with 503.
    pub conference_max: usize,
    /// Most participants in one conference (`--conference-max-participants`); more get 503.
    pub conference_max_participants: usize,
    /// Predefined conferences, a TOML file of `[[conference]]` tables (`--conferences-file`,
    /// see `conference::predefined`).
    pub conferences_file: Option<PathBuf>,
    /// The bearer token of the HTTP API's conference administration
    /// (`/api/v1/conferences...`, `--api-admin-token`); unset: those endpoints answer 503.
    pub api_admin_token: Option<String>,
}

/// A list of codecs by name (`PCMU,PCMA,G722,opus/48000/2`, see `Codec::from_spec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CodecList(pub Vec<cpm_engine::sdp::Codec>);

impl std::str::FromStr for CodecList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                cpm_engine::sdp::Codec::from_spec(c)
                    .map_err(|e| format!("codec {c:?}: {}", e.reason()))
            })
            .collect::<Result<_, _>>()
            .map(CodecList)
    }
}

impl TryFrom<String> for CodecList {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sip_listen: "127.0.0.1:5060".parse().expect("valid literal"),
            domain: Vec::new(),
            data_dir: PathBuf::from("./cpmd-data"),
            http_listen: "127.0.0.1:8080".parse().expect("valid literal"),
            workers: 0,
            log: "info".into(),
            pin_workers: true,
            users_file: None,
            realm: None,
            max_message_size: 65_535,
            tcp_idle_timeout: 300,
            tcp_message_timeout: 10,
            tcp_max_per_ip: 256,
            overload_delay: 200,
            source_rate: 0,
            source_burst: 0,
            min_expires: 60,
            max_expires: 86_400,
            default_expires: 3600,
            max_contacts_per_aor: 16,
            shutdown_grace: 5,
            drain_time: 10,
            test_hooks: false,
            media_ip: IpAddr::from([127, 0, 0, 1]),
            media_ports: PortRange {
                min: 30_000,
                max: 39_999,
            },
            media_timeout: 60,
            media_strict_source: true,
            media_connect: true,
            media_pace: 500,
            media_io: MediaIo::IoUring,
            media_priority: RtPriority::default(),
            msrp_listen: SocketAddr::from(([127, 0, 0, 1], 2855)),
            bfcp_listen: None,
            cdr_interim: 300,
            codecs: CodecList::default(),
            store_and_forward: true,
            message_expiry: 72 * 3600,
            message_delivery_timeout: 5,
            message_user_cap: 1000,
            message_max_size: 1300,
            large_message_max: 10 * 1024 * 1024,
            msrp_bind_timeout: 30,
            msrp_threads: 0,
            storage_queue: 16_384,
            storage_cache_mib: 64,
            storage_default: StorageDefault(cpm_engine::store::StoragePolicy::All),
            api_tokens: None,
            conference_factory: None,
            conference_max: 100,
            conference_max_participants: 1000,
            conferences_file: None,
            api_admin_token: None,
        }
    }
}

/// A storage policy by name (`all`, `none`, `on-request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StorageDefault(pub cpm_engine::store::StoragePolicy);

impl std::str::FromStr for StorageDefault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        cpm_engine::store::StoragePolicy::parse(s)
            .map(StorageDefault)
            .ok_or_else(|| "expected all, none or on-request".to_string())
    }
}

impl TryFrom<String> for StorageDefault {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How the media loop does its I/O (`--media-io`): `epoll` (readiness, then `recvmmsg` and
/// `sendmmsg` per socket) or `io_uring` (completions: one system call per busy turn); see
/// docs/decisions/0009-media-plane.md. `io_uring` falls back to `epoll`, with a warning,
/// where the kernel refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MediaIo {
    /// Readiness from an `epoll` set, then `recvmmsg`/`sendmmsg` per ready socket.
    Epoll,
    /// Multishot receives into provided buffers and sends queued on one io_uring.
    IoUring,
}

impl std::str::FromStr for MediaIo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "epoll" => Ok(MediaIo::Epoll),
            "io_uring" | "io-uring" | "uring" => Ok(MediaIo::IoUring),
            _ => Err(format!("{s:?}: expected epoll or io_uring")),
        }
    }
}

impl TryFrom<String> for MediaIo {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A `SCHED_FIFO` priority, 1-99 (`sched_get_priority_max(SCHED_FIFO)` on Linux), or 0 for
/// the normal scheduler (`--media-priority`); anything else is refused when the configuration
/// is read, not when a thread starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub struct RtPriority(u8);

impl RtPriority {
    /// The priority; 0: the normal scheduler.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for RtPriority {
    type Error = String;

    fn try_from(p: u8) -> Result<Self, Self::Error> {
        if p > 99 {
            return Err(format!("{p}: a real-time priority is 1-99 (0: off)"));
        }
        Ok(RtPriority(p))
    }
}

impl std::str::FromStr for RtPriority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p: u8 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        p.try_into()
    }
}

/// A range of UDP ports, `MIN-MAX` inclusive (at least two ports: RTP and RTCP pair up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    /// The lowest port.
    pub min: u16,
    /// The highest port.
    pub max: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.max) - usize::from(self.min) + 1
    }

    /// Never true: a range holds at least two ports.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (min, max) = s
            .split_once('-')
            .ok_or_else(|| "expected MIN-MAX, e.g. 30000-39999".to_string())?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|e| format!("port {p:?}: {e}"))
        };
        let (min, max) = (port(min)?, port(max)?);
        if min == 0 || max <= min {
            return Err("needs 0 < MIN < MAX".into());
        }
        Ok(PortRange { min, max })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A flag that does not exist.
    UnknownFlag(String),
    /// A flag without its value.
    MissingValue(String),
    /// A value that does not parse.
    BadValue {
        /// The flag or key.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The config file cannot be read or parsed.
    File(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnknownFlag(k) => write!(f, "unknown option {k} (see --help)"),
            ConfigError::MissingValue(k) => write!(f, "option {k} needs a value"),
            ConfigError::BadValue { key, value, why } => {
                write!(f, "bad value {value:?} for {key}: {why}")
            }
            ConfigError::File(e) => write!(f, "config file: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every option name, as a flag without `--`.
const KEYS: &[&str] = &[
    "sip-listen",
    "domain",
    "data-dir",
    "http-listen",
    "workers",
    "pin-workers",
    "log",
    "users-file",
    "realm",
    "max-message-size",
    "tcp-idle-timeout",
    "tcp-message-timeout",
    "tcp-max-per-ip",
    "overload-delay",
    "source-rate",
    "source-burst",
    "min-expires",
    "max-expires",
    "default-expires",
    "max-contacts-per-aor",
    "shutdown-grace",
    "drain-time",
    "test-hooks",
    "media-ip",
    "media-ports",
    "media-timeout",
    "media-strict-source",
    "media-connect",
    "media-pace",
    "media-io",
    "media-priority",
    "msrp-listen",
    "bfcp-listen",
    "cdr-interim",
    "codecs",
    "store-and-forward",
    "message-expiry",
    "message-delivery-timeout",
    "message-user-cap",
    "message-max-size",
    "large-message-max",
    "msrp-bind-timeout",
    "msrp-threads",
    "storage-queue",
    "storage-cache-mib",
    "storage-default",
    "api-tokens",
    "conference-factory",
    "conference-max",
    "conference-max-participants",
    "conferences-file",
    "api-admin-token",
];

/// The `--help` text.
pub const USAGE: &str = "\
cpmd: the cpm-engine CPM server

USAGE: cpmd [OPTIONS]

OPTIONS (every option is also a key of the TOML config file, with - written _):
  --config FILE             TOML configuration file
  --sip-listen ADDR:PORT    SIP over UDP and TCP [default: 127.0.0.1:5060]
  --domain NAME             a domain served here, repeatable [default: localhost + listen address]
  --data-dir DIR            data directory [default: ./cpmd-data]
  --http-listen ADDR:PORT   /health and /metrics [default: 127.0.0.1:8080]
  --workers N               worker threads, one per core by default
  --pin-workers BOOL        pin each worker to a core (not with --media-priority) [default: true]
  --log LEVEL               log filter (error, warn, info, debug, trace, or a tracing filter)
  --users-file FILE         digest users (`user[@domain] password` per line); enables auth
  --realm NAME              digest realm [default: the first domain]
  --max-message-size BYTES  larger SIP messages get 513 [default: 65535]
  --tcp-idle-timeout SECS   idle TCP connections are closed [default: 300]
  --tcp-message-timeout SECS  a TCP message must arrive whole this soon after its first
                            byte, or the connection is closed [default: 10]
  --tcp-max-per-ip N        TCP connections one source IP may hold; 0: no limit [default: 256]
  --overload-delay MS        a worker whose messages wait this long is overloaded: new
                            INVITEs and MESSAGEs for it get 503; 0: off [default: 200]
  --source-rate N           requests per second one source IP may send, more are dropped;
                            0: no limit [default: 0]
  --source-burst N          requests above the rate a source may send at once [default: rate]
  --min-expires SECS        shortest registration accepted (423 below) [default: 60]
  --max-expires SECS        longest registration granted [default: 86400]
  --default-expires SECS    registration expiry when none is asked [default: 3600]
  --max-contacts-per-aor N  contacts per address-of-record [default: 16]
  --shutdown-grace SECS     time for in-flight transactions on SIGTERM [default: 5]
  --drain-time SECS         on SIGTERM, established sessions may go on this long before
                            cpmd ends them with a BYE [default: 10]
  --media-ip ADDR           address of the RTP relay sockets [default: 127.0.0.1]
  --media-ports MIN-MAX     UDP ports of the RTP relay [default: 30000-39999]
  --media-timeout SECS      end a session whose media stopped this long, 0 = never [default: 60]
  --media-strict-source BOOL  after latching, drop packets from other sources (false: latch
                            again to the new source) [default: true]
  --media-connect BOOL      connect each relay socket to the source it latched, others'
                            packets reaching a second socket on the port [default: true]
  --media-pace MICROS       a busy media loop looks at its sockets at most once per MICROS
                            (fewer wake-ups; adds up to that delay), 0 = at every datagram
                            [default: 500]
  --media-io epoll|io_uring  how the media loop receives and sends: an epoll set with
                            recvmmsg/sendmmsg, or one io_uring (multishot receives into
                            provided buffers, sends queued on the ring; Linux 6.1, else
                            epoll) [default: io_uring]
  --media-priority N        run the media loops at real-time priority N (SCHED_FIFO, 1-99;
                            needs CAP_SYS_NICE or RLIMIT_RTPRIO, else a warning): a busy
                            machine then delays no relayed packet; turns --pin-workers off
                            (pinned, a real-time loop held its core up to 1 s on a virtual
                            machine); 0 = normal [default: 0]
  --msrp-listen ADDR:PORT   TCP listener of the MSRP relay, shared by all MSRP sessions
                            [default: 127.0.0.1:2855]
  --bfcp-listen ADDR:PORT   TCP listener of BFCP floor control (half-duplex conferences)
                            [default: the media IP, a free port]
  --cdr-interim SECS        interim charging record of each session every SECS, 0 = none;
                            records go to DATA-DIR/cdr.jsonl [default: 300]
  --codecs LIST             codecs relayed sessions may use, e.g. PCMU,PCMA,opus/48000/2;
                            others are removed from offers (488 if none is left) [default: any]
  --store-and-forward BOOL  hold MESSAGEs for offline users (202) and deliver them on REGISTER,
                            durably in DATA-DIR/storage.db [default: true]
  --message-expiry SECS     a held MESSAGE is given up (failure IMDN if asked) [default: 259200]
  --message-delivery-timeout SECS  a MESSAGE no device answered in SECS is held (202);
                            0 = wait for the devices' 32 s transaction timeout [default: 5]
  --message-user-cap N      most MESSAGEs held per user, more get 480 [default: 1000]
  --message-max-size BYTES  largest pager-mode body; larger gets 413 (send it over MSRP,
                            large message mode) [default: 1300]
  --large-message-max BYTES largest message taken over a one-shot MSRP session for an offline
                            user (large message mode); larger gets MSRP 413 [default: 10485760]
  --msrp-bind-timeout SECS  an MSRP connection naming none of our sessions is closed
                            [default: 30]
  --msrp-threads N          threads of the MSRP relay, each serving its share of the MSRP
                            sessions (0: one per worker) [default: 0]
  --storage-queue N         storage writes queued at most; beyond, a MESSAGE to hold gets 503
                            (0: refuse every write, for tests) [default: 16384]
  --storage-cache-mib N     SQLite page cache of each storage connection (writer, reader),
                            MiB; resident memory grows to it as the database does [default: 64]
  --storage-default POLICY  network storage of users who set nothing: all, none, or
                            on-request (X-CPM-Store: yes) [default: all]
  --api-tokens FILE         bearer tokens of the HTTP API /api/v1 (`user token` per line);
                            the API also takes digest with --users-file [default: none]
  --conference-factory URI  an INVITE to it creates an ad-hoc conference
                            [default: sip:conf-factory@FIRST-DOMAIN]
  --conference-max N        most conferences at once, more get 503 [default: 100]
  --conference-max-participants N  most participants per conference [default: 1000]
  --conferences-file FILE   predefined conferences (TOML [[conference]] tables: name,
                            participants, join = invited|anyone) [default: none]
  --api-admin-token TOKEN   bearer token of /api/v1/conferences (start, end, mute, list)
                            [default: none: those endpoints answer 503]
  -h, --help                this text
";

impl Config {
    /// Builds the configuration from command-line arguments (without the program name).
    /// Returns `Ok(None)` when `--help` was asked.
    pub fn from_args<I: IntoIterator<Item = String>>(
        args: I,
    ) -> Result<Option<Config>, ConfigError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(ConfigError::UnknownFlag(arg));
            };
            let name = flag.split_once('=').map_or(flag, |(k, _)| k);
            if name != "config" && !KEYS.contains(&name.replace('_', "-").as_str()) {
                return Err(ConfigError::UnknownFlag(format!("--{name}")));
            }
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?;
                    (flag.to_string(), v)
                }
            };
            pairs.push((key, value));
        }
        let mut config = match pairs.iter().find(|(k, _)| k == "config") {
            Some((_, file)) => Config::from_file(file)?,
            None => Config::default(),
        };
        for (k, v) in &pairs {
            if k != "config" {
                config.set(k, v)?;
            }
        }
        Ok(Some(config))
    }

    /// Reads a TOML file.
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::File(format!("{path}: {e}")))?;
        Config::from_toml(&text)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File(e.to_string()))
    }

    /// Sets one option from its flag name (`sip-listen`) or key (`sip_listen`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse::<T>().map_err(|e| ConfigError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                why: e.to_string(),
            })
        }
        match key.replace('_', "-").as_str() {
            "sip-listen" => self.sip_listen = parse(key, value)?,
            "domain" => self.domain.push(value.to_string()),
            "data-dir" => self.data_dir = PathBuf::from(value),
            "http-listen" => self.http_listen = parse(key, value)?,
            "workers" => self.workers = parse(key, value)?,
            "pin-workers" => self.pin_workers = parse(key, value)?,
            "log" => self.log = value.to_string(),
            "users-file" => self.users_file = Some(PathBuf::from(value)),
            "realm" => self.realm = Some(value.to_string()),
            "max-message-size" => self.max_message_size = parse(key, value)?,
            "tcp-idle-timeout" => self.tcp_idle_timeout = parse(key, value)?,
            "tcp-message-timeout" => self.tcp_message_timeout = parse(key, value)?,
            "tcp-max-per-ip" => self.tcp_max_per_ip = parse(key, value)?,
            "overload-delay" => self.overload_delay = parse(key, value)?,
            "source-rate" => self.source_rate = parse(key, value)?,
            "source-burst" => self.source_burst = parse(key, value)?,
            "min-expires" => self.min_expires = parse(key, value)?,
            "max-expires" => self.max_expires = parse(key, value)?,
            "default-expires" => self.default_expires = parse(key, value)?,
            "max-contacts-per-aor" => self.max_contacts_per_aor = parse(key, value)?,
            "shutdown-grace" => self.shutdown_grace = parse(key, value)?,
            "drain-time" => self.drain_time = parse(key, value)?,
            "test-hooks" => self.test_hooks = parse(key, value)?,
            "media-ip" => self.media_ip = parse(key, value)?,
            "media-ports" => self.media_ports = parse(key, value)?,
            "media-timeout" => self.media_timeout = parse(key, value)?,
            "cdr-interim" => self.cdr_interim = parse(key, value)?,
            "codecs" => self.codecs = parse(key, value)?,
            "media-strict-source" => self.media_strict_source = parse(key, value)?,
            "media-connect" => self.media_connect = parse(key, value)?,
            "media-pace" => self.media_pace = parse(key, value)?,
            "media-io" => self.media_io = parse(key, value)?,
            "media-priority" => self.media_priority = parse(key, value)?,
            "msrp-listen" => self.msrp_listen = parse(key, value)?,
            "bfcp-listen" => self.bfcp_listen = Some(parse(key, value)?),
            "store-and-forward" => self.store_and_forward = parse(key, value)?,
            "message-expiry" => self.message_expiry = parse(key, value)?,
            "message-delivery-timeout" => self.message_delivery_timeout = parse(key, value)?,
            "message-user-cap" => self.message_user_cap = parse(key, value)?,
            "message-max-size" => self.message_max_size = parse(key, value)?,
            "large-message-max" => self.large_message_max = parse(key, value)?,
            "msrp-bind-timeout" => self.msrp_bind_timeout = parse(key, value)?,
            "msrp-threads" => self.msrp_threads = parse(key, value)?,
            "storage-queue" => self.storage_queue = parse(key, value)?,
            "storage-cache-mib" => self.storage_cache_mib = parse(key, value)?,
            "storage-default" => self.storage_default = parse(key, value)?,
            "api-tokens" => self.api_tokens = Some(PathBuf::from(value)),
            "conference-factory" => self.conference_factory = Some(value.to_string()),
            "conference-max" => self.conference_max = parse(key, value)?,
            "conference-max-participants" => self.conference_max_participants = parse(key, value)?,
            "conferences-file" => self.conferences_file = Some(PathBuf::from(value)),
            "api-admin-token" => self.api_admin_token = Some(value.to_string()),
            _ => return Err(ConfigError::UnknownFlag(format!("--{key}"))),
        }
        Ok(())
    }

    /// Whether workers and their media loops are pinned to cores: `--pin-workers`, unless the
    /// media loops run real-time (`--media-priority`). With pinned threads, a real-time loop
    /// held its core for up to a second at a time (every thread there waiting, until the
    /// kernel's real-time throttling) in most 1,000-call runs on a virtual machine; with
    /// nothing pinned, in none (decision 0009, perf/reference/README.md).
    pub fn pins_threads(&self) -> bool {
        self.pin_workers && self.media_priority.get() == 0
    }

    /// The number of MSRP relay threads to start: the configured number, or one per worker.
    pub fn msrp_thread_count(&self) -> usize {
        match self.msrp_threads {
            0 => self.worker_count(),
            n => n,
        }
    }

    /// The number of workers to start: the configured number, or one per available core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }

    /// The domains served: the configured ones, or `localhost` and the listen address.
    pub fn domains(&self) -> Vec<String> {
        if !self.domain.is_empty() {
            return self.domain.clone();
        }
        let ip = self.sip_listen.ip();
        let mut d = vec!["localhost".to_string(), ip.to_string()];
        if ip.is_ipv6() {
            d.push(format!("[{ip}]"));
        }
        d.push(self.sip_listen.to_string());
        d
    }

    /// The digest realm.
    pub fn realm(&self) -> String {
        self.realm
            .clone()
            .unwrap_or_else(|| self.domains()[0].clone())
    }

    /// The TCP idle timeout.
    pub fn tcp_idle(&self) -> Duration {
        Duration::from_secs(self.tcp_idle_timeout)
    }

    /// The queueing delay that marks a worker overloaded (`None`: overload control off).
    pub fn overload_delay(&self) -> Option<Duration> {
        (self.overload_delay > 0).then(|| Duration::from_millis(self.overload_delay))
    }

    /// The per-source limits (request rate, TCP connections, incomplete TCP messages).
    pub fn source_limits(&self) -> crate::transport::LimitsConfig {
        let rate = (self.source_rate > 0).then_some(f64::from(self.source_rate));
        let burst = match self.source_burst {
            0 => self.source_rate.max(1),
            b => b,
        };
        crate::transport::LimitsConfig {
            rate,
            burst: f64::from(burst),
            tcp_max_per_ip: self.tcp_max_per_ip,
            tcp_message_timeout: Duration::from_secs(self.tcp_message_timeout.max(1)),
        }
    }

    /// The interval of interim charging records; `None` when off.
    pub fn cdr_interim(&self) -> Option<Duration> {
        (self.cdr_interim > 0).then(|| Duration::from_secs(self.cdr_interim))
    }

    /// The conference factory URI (RFC 4579 §3): `--conference-factory`, or
    /// `sip:conf-factory@<first domain>`.
    pub fn conference_factory(&self) -> String {
        self.conference_factory
            .clone()
            .unwrap_or_else(|| format!("sip:conf-factory@{}", self.domains()[0]))
    }

    /// The media inactivity limit, `None` when off.
    pub fn media_timeout(&self) -> Option<Duration> {
        (self.media_timeout > 0).then(|| Duration::from_secs(self.media_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::from_args(args(
            "--sip-listen 127.0.0.1:5070 --domain a.test --domain=b.test --workers 3",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.sip_listen.port(), 5070);
        assert_eq!(c.domains(), vec!["a.test", "b.test"]);
        assert_eq!(c.worker_count(), 3);
        assert_eq!(c.http_listen.port(), 8080);
        assert!(Config::from_args(args("--help")).unwrap().is_none());
    }

    #[test]
    fn errors_are_clear() {
        let e = Config::from_args(args("--bogus 1")).unwrap_err();
        assert_eq!(e.to_string(), "unknown option --bogus (see --help)");
        let e = Config::from_args(args("--bogus")).unwrap_err();
        assert_eq!(e.to_string(), "unknown option --bogus (see --help)");
        for k in KEYS {
            let mut c = Config::default();
            let v = match *k {
                "sip-listen" | "http-listen" | "msrp-listen" | "bfcp-listen" => "127.0.0.1:1",
                "pin-workers"
                | "test-hooks"
                | "media-strict-source"
                | "store-and-forward"
                | "media-connect" => "false",
                "media-ip" => "10.0.0.1",
                "media-ports" => "40000-40099",
                "media-io" => "epoll",
                "codecs" => "PCMA,opus/48000/2",
                "storage-default" => "on-request",
                "domain" | "data-dir" | "log" | "users-file" | "realm" | "api-tokens"
                | "conference-factory" | "conferences-file" | "api-admin-token" => "x",
                _ => "7",
            };
            c.set(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let e = Config::from_args(args("--workers")).unwrap_err();
        assert!(e.to_string().contains("needs a value"));
        let e = Config::from_args(args("--codecs PCMA,opus")).unwrap_err();
        assert!(e.to_string().contains("give NAME/RATE"), "{e}");
        let c = Config::from_toml("codecs = \"PCMU, G722\"").unwrap();
        assert_eq!(c.codecs.0.len(), 2);
        let e = Config::from_args(args("--workers many")).unwrap_err();
        assert!(e.to_string().contains("bad value \"many\" for workers"));
    }

    #[test]
    fn toml_keys_match_flags() {
        let c = Config::from_toml(
            "sip_listen = \"127.0.0.1:5999\"\ndomain = [\"x.test\"]\nmax_message_size = 4000\n",
        )
        .unwrap();
        assert_eq!(c.sip_listen.port(), 5999);
        assert_eq!(c.max_message_size, 4000);
        assert!(Config::from_toml("nope = 1").is_err());
    }

    #[test]
    fn media_options() {
        let c = Config::default();
        assert_eq!(c.media_ip.to_string(), "127.0.0.1");
        assert_eq!((c.media_ports.min, c.media_ports.max), (30_000, 39_999));
        assert_eq!(c.media_ports.len(), 10_000);
        assert_eq!(c.media_timeout(), Some(Duration::from_secs(60)));
        assert!(c.media_strict_source && c.media_connect);
        assert_eq!(c.media_pace, 500);
        assert_eq!(c.media_priority.get(), 0);
        let c = Config::from_args(args(
            "--media-ip ::1 --media-ports 40000-40099 --media-timeout 0 --media-strict-source false \
             --media-connect false --media-pace 0 --media-priority 7",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.media_ip.to_string(), "::1");
        assert_eq!(c.media_ports.to_string(), "40000-40099");
        assert_eq!(c.media_timeout(), None);
        assert!(!c.media_strict_source && !c.media_connect);
        assert_eq!(c.media_pace, 0);
        assert_eq!(c.media_priority.get(), 7);
        assert!(
            c.pin_workers && !c.pins_threads(),
            "real-time loops: nothing pinned"
        );
        assert!(Config::default().pins_threads());
        for bad in ["100", "-1", "x"] {
            let r = Config::from_args(args(&format!("--media-priority {bad}")));
            assert!(r.is_err(), "--media-priority {bad} accepted");
        }
        assert!(Config::from_toml("media_priority = 100\n").is_err());
        assert_eq!(
            Config::from_toml("media_priority = 99\n")
                .unwrap()
                .media_priority
                .get(),
            99
        );
        let c = Config::from_toml(
            "media_ports = \"20000-20001\"\nmedia_timeout = 5\nmedia_strict_source = false\n",
        )
        .unwrap();
        assert_eq!(c.media_ports.len(), 2);
        assert_eq!(c.media_timeout(), Some(Duration::from_secs(5)));
        for bad in ["40000", "5-4", "0-10", "7-7", "1-70000", "a-b"] {
            let e = Config::from_args(args(&format!("--media-ports {bad}"))).unwrap_err();
            assert!(e.to_string().contains("media-ports"), "{bad}: {e}");
        }
        assert!(Config::from_toml("media_ports = \"9-3\"").is_err());
    }
}
