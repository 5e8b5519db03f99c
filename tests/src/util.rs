//! Small helpers: unique tokens, temporary directories, free ports, bounded polling.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh random-looking token of 16 lowercase hex digits (for tags, branches, Call-IDs).
///
/// `RandomState` is seeded randomly per process; the counter makes tokens unique within it.
pub fn token() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A directory under the system temp dir, removed on drop unless the thread is panicking (then
/// it is kept and its path printed, for inspection).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/cpm-tests-<pid>-<token>`.
    pub fn new() -> TempDir {
        let path =
            std::env::temp_dir().join(format!("cpm-tests-{}-{}", std::process::id(), token()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("[cpm-tests] keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for peers such as SIPp that need a
/// port number up front; racy by nature, so use it only where the peer cannot take port 0).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

/// Polls `f` every 20 ms until it returns `Some`, or gives up after `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_hex() {
        let a = token();
        let b = token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let d = TempDir::new();
        let p = d.path().to_path_buf();
        d.write("f", "x");
        assert!(p.join("f").exists());
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn poll_until_gives_up() {
        let start = Instant::now();
        assert_eq!(poll_until(Duration::from_millis(60), || None::<()>), None);
        assert!(start.elapsed() >= Duration::from_millis(60));
        let mut n = 0;
        assert_eq!(
            poll_until(Duration::from_secs(1), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }
}
