//! A process without io_uring, as in a container whose seccomp profile refuses it (Docker's
//! default profile does since 2023): a classic BPF seccomp filter (`seccomp(2)`,
//! `SECCOMP_MODE_FILTER`) installed in the child between `fork` and `exec` answers
//! `io_uring_setup` with `EPERM` and allows every other system call.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `AUDIT_ARCH_*` of the architecture the tests run on (the filter allows everything on any
/// other, as the kernel would run a foreign-ABI call with other numbers).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Classic BPF (linux/filter.h, linux/seccomp.h).
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
const BPF_JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`: the system call number, then the architecture.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter: `io_uring_setup` fails with `EPERM`, everything else runs.
fn no_io_uring() -> [libc::sock_filter; 7] {
    [
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jeq(AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, DATA_NR),
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
}

/// Makes `cmd`'s process unable to create an io_uring (`io_uring_setup` fails with `EPERM`).
pub fn deny_io_uring(cmd: &mut Command) {
    let filter = no_io_uring();
    // SAFETY: the closure runs in the forked child before exec and only makes two `prctl`
    // calls (async-signal-safe system calls) on memory it owns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            // Required to install a filter without CAP_SYS_ADMIN; exec keeps both.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child under the filter cannot set up a ring and runs everything else; one without it
    /// can (this machine's kernel has io_uring). Checked with a tiny program: python3's
    /// `ctypes` calling `syscall(SYS_io_uring_setup, 1, params)`.
    #[test]
    fn the_filter_refuses_io_uring_setup_only() {
        let script = format!(
            "import ctypes, os\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             params = ctypes.create_string_buffer(120)\n\
             fd = libc.syscall({}, 1, params)\n\
             print(fd if fd < 0 else 'ok', ctypes.get_errno() if fd < 0 else '')\n",
            libc::SYS_io_uring_setup
        );
        let run = |deny: bool| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", &script]);
            if deny {
                deny_io_uring(&mut cmd);
            }
            let out = cmd.output().expect("run python3");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(run(true), format!("-1 {}", libc::EPERM));
        assert_eq!(run(false), "ok");
    }
}
