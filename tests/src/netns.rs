//! A private network namespace with only loopback up (needs root and iproute2), deleted on drop,
//! so that a test's traffic can neither leave the machine nor meet anyone else's.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace `cpmtest-<pid>-<n>`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings `lo` up; `Err` with the reason when that fails
    /// (not root, no iproute2, no namespace support).
    pub fn create() -> Result<Netns, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cpmtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        run(ns.command("ip").args(["link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prefix that runs a program inside: `ip netns exec NAME` (which execs the program in
    /// place, so its pid and signals are the program's).
    pub fn wrapper(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    /// A command running `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("[cpm-tests] could not delete netns {}: {e}", self.name);
        }
    }
}

/// Runs a command to completion; `Err` with its stderr when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
