//! The thin OS layer: the only `unsafe` code of the crate (outside `net/`) lives here.
//!
//! A `timerfd` gives the event loop nanosecond wake-ups (epoll's own timeout has millisecond
//! granularity, too coarse to pace thousands of sessions per second evenly); a signal handler
//! turns SIGINT/SIGTERM into a flag; `isatty` decides whether the progress line is shown.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A one-shot monotonic timer readable through epoll.
#[derive(Debug)]
pub struct TimerFd(OwnedFd);

impl TimerFd {
    /// A disarmed, non-blocking timer on `CLOCK_MONOTONIC` (the clock of `Instant`).
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns, so OwnedFd may take it.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: `fd` is a fresh, owned, open descriptor.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once after `after` (rounded up to 1 ns: zero would disarm), or never with `None`.
    pub fn set(&self, after: Option<Duration>) -> io::Result<()> {
        let value = match after {
            Some(d) => {
                let d = d.max(Duration::from_nanos(1));
                libc::timespec {
                    tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                }
            }
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: `spec` is a live, initialised itimerspec; the old-value pointer may be null;
        // the descriptor is owned by self and open.
        let r =
            unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Clears the expiry count (after epoll reported the timer readable).
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer from our own descriptor; a
        // failure (EAGAIN when nothing expired) is harmless and ignored.
        unsafe {
            libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Whether file descriptor `fd` (1 stdout, 2 stderr) is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number; an invalid one yields 0.
    unsafe { libc::isatty(fd) == 1 }
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // Async-signal-safe: one atomic increment.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// SIGINT and SIGTERM are counted: the first asks for a graceful stop ([`stop_requested`]: the
/// run drains and reports), the second for an immediate end ([`abort_requested`]).
pub fn install_stop_handler() {
    let handler: extern "C" fn(libc::c_int) = on_stop_signal;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is an `extern "C" fn(c_int)` that only performs an atomic store
        // (async-signal-safe); `sa` is zero-initialised (a valid empty sigaction with an empty
        // mask) before the handler is set; the old-action pointer may be null.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_handler`].
pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) >= 1
}

/// Whether a second SIGINT or SIGTERM arrived: stop draining, report now.
pub fn abort_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) >= 2
}

/// Raises the soft limit of open files to the hard limit (one socket per simulated user).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit read and write one live, initialised rlimit value.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The CPU time this process has used so far (getrusage(2), `RUSAGE_SELF`: every thread).
pub fn cpu_used() -> Option<crate::report::CpuUse> {
    // SAFETY: getrusage fills one live, zero-initialised rusage value.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0).then_some(u)
    }?;
    let d = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(crate::report::CpuUse {
        user: d(usage.ru_utime),
        system: d(usage.ru_stime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn timerfd_fires_after_the_delay() {
        let t = TimerFd::new().unwrap();
        let mut pfd = libc::pollfd {
            fd: t.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let poll = |pfd: &mut libc::pollfd, ms| {
            // SAFETY: one live pollfd, count 1.
            unsafe { libc::poll(pfd, 1, ms) }
        };
        // Disarmed: nothing within 20 ms.
        t.set(None).unwrap();
        assert_eq!(poll(&mut pfd, 20), 0);
        let start = Instant::now();
        t.set(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(poll(&mut pfd, 1_000), 1);
        assert!(start.elapsed() >= Duration::from_millis(5));
        t.drain();
        pfd.revents = 0;
        assert_eq!(poll(&mut pfd, 0), 0, "drained");
    }

    #[test]
    fn cpu_time_grows_with_work() {
        // Spin until 30 ms of CPU time are counted, for at most 5 s: on a busy machine a wall
        // clock window gets less CPU than it lasts (a 50 ms window failed with the cores taken).
        let before = cpu_used().unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = cpu_used().unwrap().since(before);
            if used.user + used.system >= Duration::from_millis(30)
                || start.elapsed() > Duration::from_secs(5)
            {
                break used;
            }
        };
        assert!(
            used.user + used.system >= Duration::from_millis(30),
            "{used:?} in {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn dev_null_is_no_terminal() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_terminal(f.as_raw_fd()));
    }
}
