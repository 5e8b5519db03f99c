//! Running SIPp (Debian package `sip-tester`) scenarios from `tests/sipp/` against cpmd, bounded
//! by call count and timeouts, and reading its final statistics.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::util::{poll_until, TempDir};

/// A scenario file of `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Whether `sipp` can be run.
pub fn available() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running SIPp instance, killed on drop.
#[derive(Debug)]
pub struct Sipp {
    child: Child,
    name: String,
    dir: TempDir,
}

/// What a finished SIPp run reported.
#[derive(Debug, Clone)]
pub struct SippResult {
    /// SIPp's exit status (0: every call succeeded).
    pub status: ExitStatus,
    /// `SuccessfulCall(C)` of the final statistics row.
    pub successful: u64,
    /// `FailedCall(C)` of the final statistics row.
    pub failed: u64,
    /// SIPp's screen output and error/message logs, for failure messages.
    pub output: String,
}

impl Sipp {
    /// Starts `sipp` with `args` (scenario, target, `-m`, ...) plus statistics and error logs in
    /// a temp dir; `name` labels it in failure messages.
    pub fn spawn(name: &str, args: &[&str]) -> Sipp {
        let dir = TempDir::new();
        let out = std::fs::File::create(dir.path().join("screen.log")).expect("create sipp log");
        let child = Command::new("sipp")
            .current_dir(dir.path())
            .args(args)
            .args(["-trace_stat", "-stf"])
            .arg(dir.path().join("stat.csv"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.path().join("errors.log"))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.path().join("messages.log"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sipp: {e}"));
        Sipp {
            child,
            name: name.into(),
            dir,
        }
    }

    /// Waits for SIPp to exit (panics after `timeout`) and reads its statistics.
    pub fn wait(mut self, timeout: Duration) -> SippResult {
        let status = poll_until(timeout, || self.child.try_wait().expect("try_wait sipp"));
        let output = self.output();
        let Some(status) = status else {
            panic!(
                "sipp {} still running after {timeout:?}; output:\n{output}",
                self.name
            );
        };
        let stats = std::fs::read_to_string(self.dir.path().join("stat.csv")).unwrap_or_default();
        let (successful, failed) = final_counts(&stats).unwrap_or_else(|| {
            panic!(
                "sipp {}: no statistics ({status}); output:\n{output}",
                self.name
            )
        });
        SippResult {
            status,
            successful,
            failed,
            output,
        }
    }

    /// SIPp's screen output, errors and message trace so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        for f in ["screen.log", "errors.log", "messages.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            s.push_str(&format!("--- sipp {} {f} ---\n{text}\n", self.name));
        }
        s
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `SuccessfulCall(C)` and `FailedCall(C)` of the last row of a SIPp `-trace_stat` CSV file
/// (`;`-separated, header row first).
pub fn final_counts(csv: &str) -> Option<(u64, u64)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let col = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| h.trim() == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_counts() {
        let csv = "StartTime;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\n\
                   t0;0;0;0;0;\n\
                   t1;3;5;0;1;\n";
        assert_eq!(final_counts(csv), Some((5, 1)));
        assert_eq!(final_counts("StartTime;\n"), None);
    }
}
