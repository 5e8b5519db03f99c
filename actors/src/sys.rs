//! The thin OS layer: the only `unsafe` code of the crate lives here.

/// Pins the calling thread to one CPU core (Linux `sched_setaffinity`). Returns false where the
/// OS refuses (containers with a restricted cpuset) or does not support it; the worker then runs
/// unpinned.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(core: usize) -> bool {
    if core >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is a valid (empty) value;
    // CPU_SET writes one bit inside it (core < CPU_SETSIZE checked above); the pointer given to
    // sched_setaffinity points to that live local value and the size is its exact size. pid 0
    // means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Pinning is not supported on this OS.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_core: usize) -> bool {
    false
}

/// Runs the calling thread under `SCHED_FIFO` at `priority` (1-99): it then takes its core
/// from any normal thread the moment it wakes. Fails without `CAP_SYS_NICE` (or an
/// `RLIMIT_RTPRIO` as high), or off Linux.
#[cfg(target_os = "linux")]
pub fn set_fifo_priority(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pid 0 is the calling thread; the pointer is to a live local sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Real-time scheduling is not supported on this OS.
#[cfg(not(target_os = "linux"))]
pub fn set_fifo_priority(_priority: u8) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The cores this process may run on (its affinity mask), in order.
#[cfg(target_os = "linux")]
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: as above: a zeroed cpu_set_t is valid, sched_getaffinity fills the local value of
    // the exact size passed; CPU_ISSET reads bits inside it for indices < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The affinity mask is not available on this OS.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cores() -> Vec<usize> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_a_thread_to_an_allowed_core() {
        let cores = allowed_cores();
        assert!(!cores.is_empty());
        let first = cores[0];
        let pinned = std::thread::spawn(move || {
            let ok = pin_current_thread(first);
            (ok, allowed_cores())
        })
        .join()
        .unwrap();
        assert!(pinned.0);
        assert_eq!(pinned.1, vec![first]);
        assert!(!pin_current_thread(usize::MAX));
    }
}
