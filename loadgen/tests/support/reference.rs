//! The Kamailio + rtpengine reference (`perf/reference/kamailio-rtpengine/ctl.sh`) started for
//! a test on the ports reserved for the loadgen's tests, and always stopped (on drop).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::TempDir;

/// Kamailio's SIP port on 127.0.0.1.
pub const SIP_PORT: u16 = 5270;
/// rtpengine's ng control port.
pub const NG_PORT: u16 = 22422;
/// rtpengine's media port range.
pub const RTP_MIN: u16 = 32000;
/// See [`RTP_MIN`].
pub const RTP_MAX: u16 = 32999;

/// The ports are fixed, so the tests of one binary that use them take turns.
static TURN: Mutex<()> = Mutex::new(());

/// A running reference; `ctl.sh stop` on drop.
pub struct Reference {
    dir: TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Reference {
    /// Starts Kamailio and rtpengine (returns once both answer; panics with their logs if
    /// they do not, or if either program is missing).
    pub fn start() -> Reference {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        for prog in ["kamailio", "rtpengine"] {
            assert!(
                Command::new("which")
                    .arg(prog)
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{prog} not found (apt-get install kamailio rtpengine-daemon)"
            );
        }
        let r = Reference {
            dir: TempDir::new(),
            _turn: turn,
        };
        let (ok, out) = r.ctl("start");
        assert!(ok, "ctl.sh start failed:\n{out}\n{}", r.logs());
        r
    }

    /// Kamailio's address.
    pub fn sip_addr(&self) -> String {
        format!("127.0.0.1:{SIP_PORT}")
    }

    /// Runs `ctl.sh CMD` (30 s at most); its success and output (stdout then stderr).
    pub fn ctl(&self, cmd: &str) -> (bool, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../perf/reference/kamailio-rtpengine/ctl.sh");
        let out = Command::new("timeout")
            .arg("30")
            .arg(&script)
            .arg(cmd)
            .env("REF_DIR", self.dir.path().join("ref"))
            .env("SIP_PORT", SIP_PORT.to_string())
            .env("NG_PORT", NG_PORT.to_string())
            .env("RTP_MIN", RTP_MIN.to_string())
            .env("RTP_MAX", RTP_MAX.to_string())
            .env("KAMAILIO_WORKERS", "2")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// rtpengine's totals (`ctl.sh stats`): relayedpackets, offercount, answercount, ...
    pub fn stats(&self) -> HashMap<String, i64> {
        let (ok, out) = self.ctl("stats");
        assert!(ok, "ctl.sh stats: {out}");
        out.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// rtpengine's totals once `done` holds for them (5 s at most; the last ones otherwise).
    pub fn stats_when(&self, done: impl Fn(&HashMap<String, i64>) -> bool) -> HashMap<String, i64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.stats();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tails of Kamailio's and rtpengine's logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["kamailio.log", "rtpengine.log"] {
            let text =
                std::fs::read_to_string(self.dir.path().join("ref").join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            s.push_str(&format!("--- {f} ---\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let (ok, out) = self.ctl("stop");
        if !ok {
            eprintln!("ctl.sh stop failed: {out}");
        }
    }
}
