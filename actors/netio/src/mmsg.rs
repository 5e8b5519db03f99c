//! `sendmmsg(2)` and `recvmmsg(2)` through libc (Linux): the crate's only unsafe code. Each
//! call builds its message headers in fixed arrays on the stack, pointing at the caller's
//! buffers, and makes one system call for up to [`MAX_BATCH`] datagrams.
//!
//! The calls go through `syscall(2)`, not glibc's wrappers: these are thread cancellation
//! points, which in a multithreaded process cost two calls
//! (`__pthread_enable_asynccancel`/`disable`) around every system call, about 40 ns per
//! relayed packet measured with `perf` (we never cancel threads).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::ptr;

use bytes::BytesMut;

use super::{RecvMeta, MAX_BATCH};

/// A socket address as the kernel reads and writes it (mio's `SocketAddrCRepr`): either
/// family, both plain integer structs valid for any bit pattern.
#[derive(Clone, Copy)]
#[repr(C)]
union CSockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// All-zero address, the larger member, so every byte of a [`CSockAddr`] is initialised.
const UNSPECIFIED: CSockAddr = CSockAddr {
    v6: libc::sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    },
};

const NO_IOVEC: libc::iovec = libc::iovec {
    iov_base: ptr::null_mut(),
    iov_len: 0,
};

fn to_c(addr: &SocketAddr) -> (CSockAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            let v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                // s_addr holds the octets in network order, so no byte swap.
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // Start from all zeroes so the bytes past the v4 member are initialised too.
            let mut c = UNSPECIFIED;
            c.v4 = v4;
            (c, len)
        }
        SocketAddr::V6(a) => {
            let v6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            let len = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            (CSockAddr { v6 }, len)
        }
    }
}

fn from_c(c: &CSockAddr) -> Option<SocketAddr> {
    // SAFETY: both members are structs of integers and byte arrays, for which any bit pattern is
    // valid, and every byte of `c` was initialised (from UNSPECIFIED, then by the kernel); the
    // family field sits at offset 0 in both.
    let family = unsafe { c.v4.sin_family };
    match i32::from(family) {
        libc::AF_INET => {
            // SAFETY: as above; the family says the kernel wrote a sockaddr_in.
            let a = unsafe { c.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above; the family says the kernel wrote a sockaddr_in6.
            let a = unsafe { c.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A socket address in the kernel's layout, for system calls made outside this crate (the
/// media loop's io_uring `sendmsg`, which reads it until the send completes: keep it put).
#[derive(Clone, Copy)]
pub struct RawSockAddr {
    c: CSockAddr,
    len: libc::socklen_t,
}

impl RawSockAddr {
    /// `addr` in the kernel's layout.
    pub fn new(addr: &SocketAddr) -> RawSockAddr {
        let (c, len) = to_c(addr);
        RawSockAddr { c, len }
    }

    /// For `msghdr.msg_name`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        (&mut self.c as *mut CSockAddr).cast()
    }

    /// For `msghdr.msg_namelen`.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// Never: an address has a length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address the kernel wrote into `name` (a `sockaddr_in` or `sockaddr_in6`, e.g. the
    /// name area of an io_uring `recvmsg`); `None` for another family or a short name.
    pub fn parse(name: &[u8]) -> Option<SocketAddr> {
        let need = match i32::from(u16::from_ne_bytes(name.get(..2)?.try_into().ok()?)) {
            libc::AF_INET => mem::size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => mem::size_of::<libc::sockaddr_in6>(),
            _ => return None,
        };
        let mut c = UNSPECIFIED;
        // SAFETY: `need` bytes of `name` exist (checked) and fit in `c` (its larger member is
        // a sockaddr_in6); any byte pattern is valid for both members.
        unsafe {
            ptr::copy_nonoverlapping(
                name.get(..need)?.as_ptr(),
                (&mut c as *mut CSockAddr).cast::<u8>(),
                need,
            )
        };
        from_c(&c)
    }
}

fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a C struct of integers and raw pointers; all-zero bytes is a valid
    // value of it (null pointers, zero lengths, no flags), as C code gets from memset.
    unsafe { mem::zeroed() }
}

/// Sends up to [`MAX_BATCH`] datagrams with one `sendmmsg` and returns how many the kernel took.
/// Datagrams to the connected `peer` go without an address (the kernel then uses the socket's
/// cached route).
pub(super) fn send<B: AsRef<[u8]>>(
    socket: &UdpSocket,
    peer: Option<SocketAddr>,
    packets: &[(SocketAddr, B)],
) -> io::Result<usize> {
    let n = packets.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut names = [UNSPECIFIED; MAX_BATCH];
    let mut iovs = [NO_IOVEC; MAX_BATCH];
    let mut hdrs = [empty_mmsghdr(); MAX_BATCH];
    for ((((dest, data), name), iov), h) in packets
        .iter()
        .zip(names.iter_mut())
        .zip(iovs.iter_mut())
        .zip(hdrs.iter_mut())
    {
        // sendmmsg only reads the datagram; the field is *mut because recvmmsg shares it.
        let data = data.as_ref();
        *iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        if Some(*dest) != peer {
            let (c, len) = to_c(dest);
            *name = c;
            h.msg_hdr.msg_name = ptr::from_mut(name).cast();
            h.msg_hdr.msg_namelen = len;
        }
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let fd = socket.as_raw_fd();
    loop {
        // SAFETY: `fd` is the open socket `socket` borrows for the whole call. The first `n`
        // headers each point to one iovec in `iovs` and to no address (null, length 0) or one
        // in `names`, stack arrays alive until the call returns and not otherwise touched
        // meanwhile; each iovec points to the bytes of a caller's datagram (`as_ref` of an
        // element of `packets`, borrowed for this function) and is only read by sendmmsg.
        // `n` is at most MAX_BATCH, the length of `hdrs`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendmmsg,
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends one datagram with one `sendto` (no address to the connected `peer`) and returns its
/// length.
pub(super) fn send_one(
    socket: &UdpSocket,
    peer: Option<SocketAddr>,
    dest: &SocketAddr,
    data: &[u8],
) -> io::Result<usize> {
    let (name, len) = to_c(dest);
    let (name_ptr, len) = if Some(*dest) == peer {
        (ptr::null(), 0)
    } else {
        (ptr::from_ref(&name), len)
    };
    let fd = socket.as_raw_fd();
    loop {
        // SAFETY: `fd` is the open socket `socket` borrows for the whole call; the buffer
        // pointer and length describe `data`, borrowed for this function and only read; the
        // address is null with length 0, or points to the local `name` of `len` bytes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                data.as_ptr(),
                data.len(),
                0,
                name_ptr,
                len,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives up to one datagram per slot with one `recvmmsg`, pushing each one's metadata.
pub(super) fn recv<'a>(
    socket: &UdpSocket,
    slots: impl Iterator<Item = &'a mut [u8]>,
    meta: &mut Vec<RecvMeta>,
    stamps: bool,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; MAX_BATCH];
    let mut n = 0;
    for (slot, iov) in slots.zip(iovs.iter_mut()) {
        *iov = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        };
        n += 1;
    }
    // SAFETY: each of the first `n` iovecs points to a distinct slot the caller lent us mutably
    // for this call, with its exact length; the kernel writes only initialised bytes into them.
    unsafe { recv_iovs::<MAX_BATCH>(socket, &iovs[..n], meta, stamps) }
}

/// Receives into the spare capacity of pooled buffers (each cleared, with room reserved, by
/// the caller) with one `recvmmsg`, and sets each filled buffer's length to its datagram's.
pub(super) fn recv_bytes(
    socket: &UdpSocket,
    slots: &mut [BytesMut],
    meta: &mut Vec<RecvMeta>,
    stamps: bool,
) -> io::Result<usize> {
    // Small receives (the common case for RTP: one datagram per wake-up) build small arrays.
    if slots.len() <= SMALL_BATCH {
        recv_bytes_n::<SMALL_BATCH>(socket, slots, meta, stamps)
    } else {
        recv_bytes_n::<MAX_BATCH>(socket, slots, meta, stamps)
    }
}

/// Header arrays of this many entries serve receives of up to as many slots.
const SMALL_BATCH: usize = 8;

fn recv_bytes_n<const N: usize>(
    socket: &UdpSocket,
    slots: &mut [BytesMut],
    meta: &mut Vec<RecvMeta>,
    stamps: bool,
) -> io::Result<usize> {
    let mut iovs = [NO_IOVEC; N];
    let mut n = 0;
    for (slot, iov) in slots.iter_mut().zip(iovs.iter_mut()) {
        let spare = slot.spare_capacity_mut();
        *iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        n += 1;
    }
    // SAFETY: each of the first `n` iovecs points to the spare capacity of a distinct buffer of
    // `slots`, mutably borrowed for this call and not otherwise touched until it returns; the
    // kernel may write anywhere inside (the bytes need not be initialised before).
    let received = unsafe { recv_iovs::<N>(socket, &iovs[..n], meta, stamps)? };
    for (slot, m) in slots.iter_mut().zip(meta.iter()) {
        // SAFETY: the kernel initialised the first `m.len` bytes of this buffer's spare capacity
        // (`recv_iovs` reports at most the iovec's length, which is that capacity), and the
        // buffer was empty, so its first `m.len` bytes are now initialised.
        unsafe { slot.set_len(m.len) };
    }
    Ok(received)
}

/// Room for one control message holding a `timespec` (`CMSG_SPACE(16)` is 32 on 64-bit
/// Linux), aligned for `cmsghdr`.
type Control = [u64; 6];

/// Has the kernel stamp each received datagram (`SO_TIMESTAMPNS`, socket(7)).
pub(super) fn enable_timestamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is the open socket `socket` borrows; the option value is a c_int that lives
    // through the call, and its size is given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            ptr::from_ref(&on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `SCM_TIMESTAMPNS` stamp among the control messages `recvmmsg` left in `h`.
fn stamp_of(h: &libc::msghdr) -> Option<std::time::Duration> {
    // SAFETY: `h` is a header the kernel filled: msg_control points to its control buffer and
    // msg_controllen says how much of it the kernel wrote, so the CMSG_* walk stays inside it;
    // a SCM_TIMESTAMPNS message carries one timespec (socket(7)), read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(std::time::Duration::new(
                    ts.tv_sec as u64,
                    ts.tv_nsec as u32,
                ));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// The `recvmmsg` call itself, into the given iovecs (the first `N` of them), with header
/// arrays of `N` entries on the stack; with `stamps`, each header also gets a control buffer
/// for the kernel's arrival time.
///
/// # Safety
/// Every iovec must describe a writable region, not aliased by any live reference, that stays
/// valid until this function returns.
unsafe fn recv_iovs<const N: usize>(
    socket: &UdpSocket,
    iovs: &[libc::iovec],
    meta: &mut Vec<RecvMeta>,
    stamps: bool,
) -> io::Result<usize> {
    let mut names = [UNSPECIFIED; N];
    let mut iovs_copy = [NO_IOVEC; N];
    let mut hdrs = [empty_mmsghdr(); N];
    // Not initialised: the kernel writes what it reports (msg_controllen), and only that is
    // read; a relay that wants no stamps pays nothing for them.
    let mut controls = [const { mem::MaybeUninit::<Control>::uninit() }; N];
    let mut n = 0;
    for ((((src, iov), name), h), control) in iovs
        .iter()
        .zip(iovs_copy.iter_mut())
        .zip(names.iter_mut())
        .zip(hdrs.iter_mut())
        .zip(controls.iter_mut())
    {
        *iov = *src;
        h.msg_hdr.msg_name = ptr::from_mut(name).cast();
        h.msg_hdr.msg_namelen = mem::size_of::<CSockAddr>() as libc::socklen_t;
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        if stamps {
            h.msg_hdr.msg_control = ptr::from_mut(control).cast();
            h.msg_hdr.msg_controllen = mem::size_of::<Control>();
        }
        n += 1;
    }
    let fd = socket.as_raw_fd();
    let received = loop {
        // SAFETY: `fd` is the open socket `socket` borrows for the whole call. The first `n`
        // headers each point to one address buffer in `names` (its size in msg_namelen) and one
        // iovec in `iovs_copy`, stack arrays alive until the call returns and not otherwise
        // touched meanwhile; each iovec describes a writable region the caller guarantees (see
        // this function's contract), so the kernel writes only inside it; with `stamps` each
        // also points to its own control buffer in `controls` (its size in msg_controllen).
        // `n` is at most N, the length of `hdrs`. A null timeout is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_recvmmsg,
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut::<libc::timespec>(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    for ((h, name), iov) in hdrs.iter().zip(&names).zip(&iovs_copy).take(received) {
        meta.push(RecvMeta {
            len: (h.msg_len as usize).min(iov.iov_len),
            // An AF_INET/AF_INET6 UDP socket always reports an inet sender.
            source: from_c(name).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            stamp: if stamps { stamp_of(&h.msg_hdr) } else { None },
        });
    }
    Ok(received)
}

/// Dissolves a UDP socket's association with its peer: `connect` to an `AF_UNSPEC` address
/// (connect(2)). An explicitly bound local address and port are kept.
pub(super) fn disconnect(socket: &UdpSocket) -> io::Result<()> {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: `socket` is open for the call; the address pointer refers to a local,
    // initialised sockaddr of exactly `len` bytes, which connect only reads.
    let r = unsafe { libc::connect(socket.as_raw_fd(), &unspec, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The limits of open descriptors (`RLIMIT_NOFILE`).
fn nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the local value the pointer refers to.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The soft limit of open descriptors.
pub(super) fn fd_limit() -> io::Result<u64> {
    // rlim_t is u32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    nofile().map(|l| u64::from(l.rlim_cur))
}

/// Raises the soft limit of open descriptors to the hard limit and returns the new soft limit.
pub(super) fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = nofile()?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the local, initialised rlimit the pointer refers to.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    // rlim_t is u32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(lim.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_convert_both_ways() {
        for a in [
            "127.0.0.1:5060",
            "10.1.2.3:0",
            "[::1]:40000",
            "[fe80::1%3]:9",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let (c, len) = to_c(&addr);
            let want = if addr.is_ipv4() { 16 } else { 28 };
            assert_eq!(len, want);
            assert_eq!(from_c(&c), Some(addr), "{a}");
        }
        assert_eq!(from_c(&UNSPECIFIED), None);
    }

    #[test]
    fn raw_addresses_parse_what_the_kernel_writes_and_nothing_short() {
        for a in ["127.0.0.1:5060", "[fe80::1%3]:9"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut raw = RawSockAddr::new(&addr);
            let len = raw.len() as usize;
            // SAFETY: `len` bytes of the address, as a sendmsg would read them.
            let bytes = unsafe { std::slice::from_raw_parts(raw.as_mut_ptr().cast::<u8>(), len) };
            assert_eq!(RawSockAddr::parse(bytes), Some(addr), "{a}");
            // A name cut short (a truncated recvmsg name area) is no address.
            assert_eq!(RawSockAddr::parse(&bytes[..len - 1]), None, "{a}");
        }
        assert_eq!(RawSockAddr::parse(&[]), None);
        assert_eq!(RawSockAddr::parse(&[0; 28]), None, "family 0");
    }
}
