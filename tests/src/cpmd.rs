//! Running the real `cpmd` binary: spawn on free ports, learn them from the ready line, read
//! `/metrics`, stop it with SIGTERM, and show its log when a test fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::http;
use crate::util::TempDir;

/// How long cpmd may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeout of one HTTP request to cpmd's management listener.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The cpmd binary: `$CPMD_BIN`, or `<target>/<profile>/cpmd` next to the running test
/// executable, brought up to date once per process with `cargo build -p cpm-actors --bin cpmd`
/// (a no-op when fresh; `cargo test -p cpm-tests` alone does not rebuild other packages' binaries).
pub fn cpmd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CPMD_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe
            .parent()
            .expect("test binary has a parent dir")
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join("cpmd");
        if std::env::var_os("CPM_TESTS_NO_BUILD").is_none() || !bin.exists() {
            build_cpmd(&dir);
        }
        assert!(
            bin.exists(),
            "cpmd not found at {} after building it",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Runs `cargo build -p cpm-actors --bin cpmd` into the profile directory `profile_dir`
/// (`<target-dir>/<profile>`) the tests run from.
fn build_cpmd(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "-q", "-p", "cpm-actors", "--bin", "cpmd"]);
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build for cpmd");
    assert!(
        status.success(),
        "cargo build -p cpm-actors --bin cpmd failed: {status}"
    );
}

/// Options for starting cpmd; see [`Cpmd::builder`].
#[derive(Debug)]
pub struct CpmdBuilder {
    dir: TempDir,
    args: Vec<String>,
    wrapper: Vec<String>,
    retry_bind: bool,
    media_ports: u16,
    no_io_uring: bool,
    msrp_picked: bool,
}

impl CpmdBuilder {
    /// Adds command-line arguments (a flag given here replaces the default for it).
    pub fn args(mut self, args: &[&str]) -> CpmdBuilder {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Writes a users file (`user password` lines) into the temp dir and passes `--users-file`.
    pub fn users(self, lines: &str) -> CpmdBuilder {
        let path = self.dir.write("users", lines);
        let path = path.to_str().expect("utf-8 temp path").to_string();
        self.args(&["--users-file", &path])
    }

    /// Writes a file into cpmd's temp dir (e.g. a `--config` file) and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        self.dir.write(name, contents)
    }

    /// Runs cpmd through a wrapper command, e.g. `["ip", "netns", "exec", "NS"]` (which must
    /// exec cpmd in place so that signals reach it).
    pub fn wrapper(mut self, wrapper: &[&str]) -> CpmdBuilder {
        self.wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The size of the relay port range cpmd gets when no `--media-ports` is given (default
    /// [`MEDIA_BLOCK`]; larger sizes take several consecutive blocks, smaller ones the start of
    /// one, e.g. 4 ports: one leg on one worker; at most 5,000).
    pub fn media_ports(mut self, count: u16) -> CpmdBuilder {
        self.media_ports = count.clamp(2, 25 * MEDIA_BLOCK);
        self
    }

    /// Runs cpmd where the kernel refuses io_uring (a seccomp filter, as a container's
    /// profile may have: [`crate::seccomp`]), so its media loops fall back to epoll.
    pub fn without_io_uring(mut self) -> CpmdBuilder {
        self.no_io_uring = true;
        self
    }

    /// Runs the MSRP listener on a port picked here (for tests whose URIs name it, read with
    /// [`Cpmd::msrp_port`]); picked again when another process took it before cpmd bound it.
    pub fn msrp_on_a_picked_port(mut self) -> CpmdBuilder {
        self.msrp_picked = true;
        self
    }

    /// Starts cpmd and waits for its ready line (panics with its log if it does not come).
    pub fn spawn(self) -> Cpmd {
        let data_dir = self.dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let data_dir = data_dir.to_str().expect("utf-8 temp path").to_string();
        let own_ports = self
            .args
            .iter()
            .any(|a| a == "--media-ports" || a.starts_with("--media-ports="));
        let media = (!own_ports).then(|| MediaPorts::reserve(self.media_ports));
        let media_range = media.as_ref().map(|m| m.range.clone()).unwrap_or_default();
        let defaults = [
            ("--sip-listen", "127.0.0.1:0"),
            ("--http-listen", "127.0.0.1:0"),
            ("--msrp-listen", "127.0.0.1:0"),
            ("--data-dir", data_dir.as_str()),
            ("--workers", "2"),
            ("--media-ports", media_range.as_str()),
        ];
        let mut argv: Vec<String> = Vec::new();
        for (flag, value) in defaults {
            if !self
                .args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
            {
                argv.push(flag.to_string());
                argv.push(value.to_string());
            }
        }
        argv.extend(self.args.iter().cloned());

        let log_path = self.dir.path().join("cpmd.log");
        let port_zero = argv
            .windows(2)
            .any(|w| w[0] == "--sip-listen" && w[1].ends_with(":0"));
        let mut attempt = 1;
        loop {
            let msrp_port = self.msrp_picked.then(|| {
                let port = free_tcp_port();
                let i = argv.iter().position(|a| a == "--msrp-listen");
                let i = i.expect("--msrp-listen is among the defaults");
                argv[i + 1] = format!("127.0.0.1:{port}");
                port
            });
            let mut child = self.launch(&argv, &log_path);
            match wait_ready(&mut child, &log_path) {
                Ok((sip, http)) => {
                    return Cpmd {
                        child,
                        sip,
                        http,
                        log_path,
                        status: None,
                        dir: self.dir,
                        argv,
                        msrp_port,
                        _media: media,
                    }
                }
                Err(Startup::Exited(status, log))
                    if self.retry_bind
                        && (port_zero || self.msrp_picked)
                        && attempt < 5
                        && log.contains("Address already in use") =>
                {
                    eprintln!(
                        "[cpm-tests] WARNING: cpmd lost the port-0 race ({status}), retrying: {}",
                        log.trim()
                    );
                    attempt += 1;
                }
                Err(Startup::Exited(status, log)) => {
                    panic!("cpmd {argv:?} exited before ready ({status}); log:\n{log}")
                }
                Err(Startup::Silent(log)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "cpmd {argv:?} printed no ready line within {READY_TIMEOUT:?}; log:\n{log}"
                    )
                }
            }
        }
    }

    /// cpmd fails its start instead of being restarted when its UDP port 0 pick is taken on
    /// TCP (by default the harness retries up to 5 times, with a warning).
    pub fn strict_bind(mut self) -> CpmdBuilder {
        self.retry_bind = false;
        self
    }

    /// Starts the process with stdout and stderr appended to a fresh log file.
    fn launch(&self, argv: &[String], log_path: &Path) -> Child {
        launch(&self.wrapper, argv, log_path, self.no_io_uring)
    }
}

/// Starts cpmd (through `wrapper`, if any) with stdout and stderr going to a fresh log file;
/// `no_io_uring`: under [`crate::seccomp::deny_io_uring`].
fn launch(wrapper: &[String], argv: &[String], log_path: &Path, no_io_uring: bool) -> Child {
    {
        let log = std::fs::File::create(log_path).expect("create cpmd log");
        let bin = cpmd_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        if no_io_uring {
            crate::seccomp::deny_io_uring(&mut cmd);
        }
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
    }
}

/// Why cpmd did not become ready.
enum Startup {
    /// It exited, with this log.
    Exited(ExitStatus, String),
    /// It printed no ready line within [`READY_TIMEOUT`].
    Silent(String),
}

/// Waits for `cpmd ready sip=IP:PORT http=IP:PORT` in the log.
fn wait_ready(child: &mut Child, log_path: &Path) -> Result<(SocketAddr, SocketAddr), Startup> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let log = read_log(log_path);
        if let Some(addrs) = log.lines().find_map(parse_ready_line) {
            return Ok(addrs);
        }
        if let Some(status) = child.try_wait().expect("try_wait cpmd") {
            return Err(Startup::Exited(status, read_log(log_path)));
        }
        if Instant::now() >= deadline {
            return Err(Startup::Silent(log));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A log file's text (empty if unreadable).
fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A running cpmd process; killed (SIGKILL) on drop if still running. Its stdout and stderr go
/// to `cpmd.log` in its temp dir, printed to stderr when the owning test panics.
#[derive(Debug)]
pub struct Cpmd {
    child: Child,
    sip: SocketAddr,
    http: SocketAddr,
    log_path: PathBuf,
    status: Option<ExitStatus>,
    argv: Vec<String>,
    /// Its MSRP port, when picked by the harness ([`CpmdBuilder::msrp_on_a_picked_port`]).
    msrp_port: Option<u16>,
    /// Its relay port range, reserved while it runs.
    _media: Option<MediaPorts>,
    // Dropped last: the log lives in it.
    dir: TempDir,
}

impl Cpmd {
    /// Starts cpmd with the default listeners (`127.0.0.1:0`), a temp `--data-dir`,
    /// `--workers 2`, plus `args` (which override those defaults flag by flag).
    pub fn spawn(args: &[&str]) -> Cpmd {
        Cpmd::builder().args(args).spawn()
    }

    /// A builder, for users files, config files and wrappers.
    pub fn builder() -> CpmdBuilder {
        CpmdBuilder {
            dir: TempDir::new(),
            args: Vec::new(),
            wrapper: Vec::new(),
            retry_bind: true,
            media_ports: MEDIA_BLOCK,
            no_io_uring: false,
            msrp_picked: false,
        }
    }

    /// The SIP listener (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// The HTTP management listener.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// cpmd's temp dir (holds `data/`, `cpmd.log` and written files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The value of a command-line flag cpmd was started with (the last one given).
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let prefix = format!("{flag}=");
        let mut found = None;
        for (i, a) in self.argv.iter().enumerate() {
            if a == flag {
                found = self.argv.get(i + 1).map(String::as_str);
            } else if let Some(v) = a.strip_prefix(&prefix) {
                found = Some(v);
            }
        }
        found
    }

    /// The `--data-dir` (where `cdr.jsonl` is written).
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.arg("--data-dir").expect("cpmd runs with --data-dir"))
    }

    /// The relay port range (`--media-ports MIN-MAX`).
    pub fn media_ports(&self) -> std::ops::RangeInclusive<u16> {
        let r = self
            .arg("--media-ports")
            .expect("cpmd runs with --media-ports");
        let (min, max) = r
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or_else(|| panic!("--media-ports {r:?} is not MIN-MAX"));
        min..=max
    }

    /// Every charging record of `DATA-DIR/cdr.jsonl` so far, one JSON object each (an
    /// incomplete last line, being written, is left out).
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.data_dir().join("cdr.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls `cdr.jsonl` until it holds a record of `kind` (`start`, `interim`, `stop`) for
    /// A's Call-ID `call_id`; panics with the records seen after `timeout`.
    pub fn wait_cdr(&self, call_id: &str, kind: &str, timeout: Duration) -> serde_json::Value {
        crate::util::poll_until(timeout, || {
            self.cdrs()
                .into_iter()
                .find(|r| r["call_id"] == call_id && r["record"] == kind)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {kind} record for {call_id} in cdr.jsonl within {timeout:?}: {:#?}",
                self.cdrs()
            )
        })
    }

    /// Everything cpmd wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// `GET path` on the management listener.
    pub fn http_get(&self, path: &str) -> http::HttpResponse {
        http::get(self.http, path, HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("GET {path} on cpmd {}: {e}", self.http))
    }

    /// The `/metrics` text (asserts status 200).
    pub fn metrics(&self) -> String {
        let r = self.http_get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
        r.body
    }

    /// One series of `/metrics`, e.g. `cpm_sip_requests_total{method="REGISTER"}`; 0 when the
    /// family is exposed without that series yet. Panics when the family is missing altogether.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        if let Some(v) = http::metric_value(&text, series) {
            return v;
        }
        let family = series.split('{').next().unwrap_or(series);
        assert!(
            http::has_family(&text, family),
            "metric {family} missing from /metrics:\n{text}"
        );
        0.0
    }

    /// Polls [`Cpmd::metric`] until `pred` holds (metrics are updated asynchronously), returning
    /// the last value; panics after `timeout`.
    pub fn wait_metric(&self, series: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let mut last = f64::NAN;
        crate::util::poll_until(timeout, || {
            last = self.metric(series);
            pred(last).then_some(last)
        })
        .unwrap_or_else(|| {
            panic!("{series} = {last} did not reach the expected value in {timeout:?}")
        })
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits (up to `timeout`) until `/health` says cpmd is draining: after [`Self::terminate`]
    /// cpmd's main thread handles the signal a moment later, so a request sent at once may
    /// still find it running normally.
    pub fn wait_draining(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match http::get(self.http, "/health", HTTP_TIMEOUT) {
                Ok(r) if r.status == 503 && r.body.contains("draining") => return,
                _ => {}
            }
            assert!(Instant::now() < deadline, "cpmd does not report draining");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// How many descriptors the process has open (`/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Each thread's name, real-time priority and scheduling policy (`/proc/PID/task/TID/stat`
    /// fields 2, 40 and 41; policy 0 is the normal scheduler, 1 `SCHED_FIFO`).
    pub fn threads(&self) -> Vec<(String, u32, u32)> {
        let dir = format!("/proc/{}/task", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
                let (head, rest) = stat.rsplit_once(')')?;
                let name = head.split_once('(')?.1.to_string();
                // `rest` starts at field 3.
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some((name, f.get(37)?.parse().ok()?, f.get(38)?.parse().ok()?))
            })
            .collect()
    }

    /// The cores each thread may run on (`Cpus_allowed_list` of `/proc/PID/task/TID/status`,
    /// e.g. `0-1` or `1`), by thread name, and the process's own list.
    pub fn cpus_allowed(&self) -> (Vec<(String, String)>, String) {
        let list = |status: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        };
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).ok();
        let dir = format!("/proc/{}/task", self.pid());
        let threads = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|t| {
                let t = t.ok()?.path();
                let name = read(t.join("comm"))?.trim().to_string();
                Some((name, list(&read(t.join("status"))?)?))
            })
            .collect();
        let own = read(format!("/proc/{}/status", self.pid()).into())
            .and_then(|s| list(&s))
            .expect("the process's Cpus_allowed_list");
        (threads, own)
    }

    /// The MSRP port the harness picked ([`CpmdBuilder::msrp_on_a_picked_port`]).
    pub fn msrp_port(&self) -> u16 {
        self.msrp_port.expect("started with msrp_on_a_picked_port")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child, which
        // has not been reaped while `self.child` is alive and unwaited.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// The exit status if the process has exited (non-blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait cpmd");
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Kills cpmd with SIGKILL, as a crash would (nothing is flushed that was not durable
    /// already), and starts it again with the same arguments and data directory. Its listeners
    /// were port 0, so they are new: ask [`Cpmd::sip_addr`] again. The first run's log is kept
    /// as `cpmd.log.crashed`. Not for cpmd behind a wrapper or without io_uring (it restarts plain).
    pub fn crash_and_restart(mut self) -> Cpmd {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().expect("wait for the killed cpmd");
        assert!(!status.success(), "cpmd survived SIGKILL: {status}");
        let _ = std::fs::rename(&self.log_path, self.dir.path().join("cpmd.log.crashed"));
        self.child = launch(&[], &self.argv, &self.log_path, false);
        self.status = None;
        match wait_ready(&mut self.child, &self.log_path) {
            Ok((sip, http)) => {
                self.sip = sip;
                self.http = http;
                self
            }
            Err(Startup::Exited(status, log)) => {
                panic!("restarted cpmd exited before ready ({status}); log:\n{log}")
            }
            Err(Startup::Silent(log)) => {
                panic!("restarted cpmd printed no ready line; log:\n{log}")
            }
        }
    }

    /// Waits for the process to exit; panics (with the log) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match crate::util::poll_until(timeout, || self.try_status()) {
            Some(s) => s,
            None => panic!(
                "cpmd still running {timeout:?} after the request to stop; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Cpmd {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "----- cpmd {:?} (sip={} http={}) log -----\n{}----- end of cpmd log -----",
                self.argv,
                self.sip,
                self.http,
                self.log()
            );
        }
    }
}

/// A TCP port free on 127.0.0.1 a moment ago.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// `cpmd ready sip=IP:PORT http=IP:PORT` → the two addresses.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("cpmd ready ")?;
    let mut sip = None;
    let mut http = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("sip=") {
            sip = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("http=") {
            http = v.parse().ok();
        }
    }
    Some((sip?, http?))
}

/// Ports in one block of [`MediaPorts`].
pub const MEDIA_BLOCK: u16 = 200;

/// A relay port range of its own for each cpmd the tests start (`--media-ports`), so that cpmds
/// of parallel tests, and of other test processes on the machine, never share ports: blocks of
/// [`MEDIA_BLOCK`] ports in 20000-29999, below the kernel's ephemeral range (32768-60999),
/// apart from the ranges of other test peers. Each block is reserved across processes by a TCP
/// listener on its first port (cpmd binds only UDP there), held as long as this value; a block
/// is taken only when that listener binds and its UDP ports are free at the time.
#[derive(Debug)]
struct MediaPorts {
    /// `MIN-MAX`.
    range: String,
    _locks: Vec<std::net::TcpListener>,
}

impl MediaPorts {
    /// `count` ports at the start of as many consecutive free blocks as they need (at most
    /// 25). The process-wide cursor only moves forward, so the ranges of one process do not
    /// overlap; blocks held by other processes are skipped. Panics when none is free.
    fn reserve(count: u16) -> MediaPorts {
        use std::net::{TcpListener, UdpSocket};
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        const BLOCKS: u32 = 50;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let need = u32::from(count)
            .div_ceil(u32::from(MEDIA_BLOCK))
            .clamp(1, BLOCKS / 2);
        let base = std::process::id().wrapping_mul(7);
        // Tests of other binaries running at once (nextest) may hold blocks for a while: a
        // large range waits for enough of them to come free.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            for _ in 0..2 * BLOCKS {
                let n = NEXT.fetch_add(need, Relaxed);
                let block = base.wrapping_add(n) % BLOCKS;
                // A range does not wrap from the last block to the first.
                if block + need > BLOCKS {
                    continue;
                }
                let min = 20_000 + block * u32::from(MEDIA_BLOCK);
                let max = min + u32::from(count) - 1;
                let port = |p: u32| u16::try_from(p).expect("ports below 30000");
                let locks: Option<Vec<TcpListener>> = (0..need)
                    .map(|b| {
                        TcpListener::bind(("127.0.0.1", port(min + b * u32::from(MEDIA_BLOCK))))
                            .ok()
                    })
                    .collect();
                let Some(locks) = locks else { continue };
                if (min..=max).all(|p| UdpSocket::bind(("127.0.0.1", port(p))).is_ok()) {
                    return MediaPorts {
                        range: format!("{min}-{max}"),
                        _locks: locks,
                    };
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("no free block of {count} relay ports in 20000-29999");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        let (s, h) =
            parse_ready_line("cpmd ready sip=127.0.0.1:5060 http=127.0.0.1:8080\n").unwrap();
        assert_eq!(s, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(h, "127.0.0.1:8080".parse().unwrap());
        assert!(parse_ready_line("cpmd ready sip=127.0.0.1:5060").is_none());
        assert!(parse_ready_line("INFO starting").is_none());
    }
}
