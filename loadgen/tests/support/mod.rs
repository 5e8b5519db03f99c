//! Running the `cpm-loadgen` binary from tests: a client run to its end, or a `uas` in the
//! background (its ready line awaited, stopped with SIGTERM so that it reports). Every wait is
//! bounded.

#![allow(dead_code)]

pub mod cpmd;
pub mod reference;
pub mod relay;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use cpm_tests::TempDir;
use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cpm-loadgen")
}

/// A finished client run.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cpm-loadgen ARGS` to its end (killed after `timeout`).
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cpm-loadgen");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cpm-loadgen {args:?} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// A UDP port `p` of 127.0.0.1 such that `p..=p + span` were all free a moment ago (for
/// programs that need fixed ports, such as SIPp's `-p` and `-mp`).
pub fn free_udp_ports(span: u16) -> u16 {
    for _ in 0..100 {
        let first = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        let p = first.local_addr().unwrap().port();
        let Some(last) = p.checked_add(span) else {
            continue;
        };
        let rest: Result<Vec<UdpSocket>, _> = (p + 1..=last)
            .map(|q| UdpSocket::bind(("127.0.0.1", q)))
            .collect();
        if rest.is_ok() {
            return p;
        }
    }
    panic!("no {} consecutive free UDP ports", span + 1);
}

/// Whether something has UDP port `port` bound (read from `/proc/net/udp`, so that probing
/// does not race with the program about to bind it).
pub fn udp_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let needle = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| local.ends_with(&needle))
    })
}

/// Waits (10 s at most) until UDP `port` is bound; false if it never was.
pub fn wait_udp_bound(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if udp_bound(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Reads a JSON report.
pub fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// The contract fields of every report, and attempted == succeeded == `n`, failed 0.
pub fn assert_all_succeeded(v: &Value, scenario: &str, n: u64) {
    assert_eq!(v["scenario"], scenario, "{v:#}");
    assert_eq!(v["attempted"], n, "{v:#}");
    assert_eq!(v["succeeded"], n, "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(v["rate_achieved"].as_f64().is_some(), "{v:#}");
}

/// The percentile fields of one quantity; returns its count.
pub fn quantity(v: &Value, name: &str) -> u64 {
    let q = &v["quantities"][name];
    for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(q[k].is_u64(), "{name}.{k} missing in {v:#}");
    }
    q["count"].as_u64().unwrap()
}

/// A `cpm-loadgen uas` in the background.
pub struct Uas {
    child: Child,
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Uas {
    /// Starts `cpm-loadgen uas ARGS` and waits for its ready line.
    pub fn spawn(args: &[&str]) -> Uas {
        let mut child = Command::new(bin())
            .arg("uas")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cpm-loadgen uas");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("cpm-loadgen uas ready listen=") {
                        let a = rest.split_whitespace().next().unwrap();
                        break a.parse().expect("ready line address");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("uas not ready: {}", stderr.join().unwrap_or_default());
                }
            }
        };
        Uas {
            child,
            addr,
            stdout: rx,
            stderr,
        }
    }

    /// SIGTERM, then waits for the exit (it unregisters and writes its reports first).
    pub fn stop(mut self) -> Output {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("uas did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            stdout.push_str(&l);
            stdout.push('\n');
        }
        Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}
