//! Batched UDP I/O: `recvmmsg(2)` and `sendmmsg(2)` over a set of reusable buffers.
//!
//! The only `unsafe` code of the crate. A [`Batch`] owns its payload buffers, source addresses
//! and the `mmsghdr`/`iovec` arrays the kernel reads; the arrays are re-pointed at the buffers
//! before every call, so no pointer outlives a borrow of the batch.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

/// Largest datagram a slot holds; longer ones are truncated by the kernel (and counted as such).
pub const SLOT: usize = 2048;

/// A socket address in the kernel's representation, ready to be passed to `sendmmsg`.
#[derive(Clone, Copy)]
pub struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    /// The kernel representation of `addr`.
    pub fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
                unsafe { (&mut storage as *mut _ as *mut libc::sockaddr_in).write(sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above.
                unsafe { (&mut storage as *mut _ as *mut libc::sockaddr_in6).write(sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        RawAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// The address, if it is an IPv4 or IPv6 one.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
                let sin = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
                let sin6 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// `n` datagram slots for one `recvmmsg` or `sendmmsg` call.
pub struct Batch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<RawAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    /// A batch of `n` slots of [`SLOT`] bytes (`n` at least 1).
    pub fn new(n: usize) -> Batch {
        let n = n.max(1);
        let empty = RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        Batch {
            bufs: vec![0; n * SLOT],
            lens: vec![0; n],
            addrs: vec![empty; n],
            // SAFETY: iovec and mmsghdr are plain old data (null pointers, zero lengths).
            iovs: vec![unsafe { zeroed() }; n],
            // SAFETY: as above.
            hdrs: vec![unsafe { zeroed() }; n],
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Payload of slot `i` as received (or as set with [`Batch::set`]).
    pub fn payload(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// Source address of slot `i` after a receive.
    pub fn source(&self, i: usize) -> &RawAddr {
        &self.addrs[i]
    }

    /// Fills slot `i` with `data` (truncated to [`SLOT`]) for a send to `dest`.
    pub fn set(&mut self, i: usize, data: &[u8], dest: &RawAddr) {
        let n = data.len().min(SLOT);
        self.bufs[i * SLOT..i * SLOT + n].copy_from_slice(&data[..n]);
        self.lens[i] = n;
        self.addrs[i] = *dest;
    }

    /// Receives up to `capacity()` datagrams from the non-blocking socket `fd`; `Ok(0)` when
    /// none is waiting. Slot `i < n` then holds datagram `i` and its source.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.capacity();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i].storage as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers, addresses and iovecs owned by `self` that stay
        // borrowed (and so alive and unmoved) for the call; lengths match the buffers.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(err)
            };
        }
        let got = got as usize;
        for i in 0..got {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(SLOT);
            self.addrs[i].len = self.hdrs[i].msg_hdr.msg_namelen;
        }
        Ok(got)
    }

    /// Sends slots `range` from `fd`, each to `dest` when given, else to the address stored in
    /// its slot. Returns how many the kernel took, from the first (`Ok(0)` when the socket
    /// buffer is full).
    pub fn send(
        &mut self,
        fd: RawFd,
        range: Range<usize>,
        dest: Option<&RawAddr>,
    ) -> io::Result<usize> {
        let range = range.start..range.end.min(self.capacity());
        if range.is_empty() {
            return Ok(0);
        }
        for i in range.clone() {
            if let Some(d) = dest {
                self.addrs[i] = *d;
            }
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * SLOT..].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i].storage as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.addrs[i].len;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        let hdrs = &mut self.hdrs[range.clone()];
        // SAFETY: as in `recv`: `hdrs` and everything its entries point at are owned by `self`
        // and borrowed for the call; the kernel only reads the buffers and addresses.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(err)
            };
        }
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn raw_addr_round_trips() {
        for a in ["127.0.0.1:40000", "[::1]:5060", "10.1.2.3:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(RawAddr::new(addr).to_socket_addr(), Some(addr));
        }
    }

    #[test]
    fn send_and_receive_a_batch() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let to_b = RawAddr::new(b.local_addr().unwrap());
        let mut out = Batch::new(8);
        for i in 0..5u8 {
            out.set(usize::from(i), &[i; 100], &to_b);
        }
        assert_eq!(out.send(a.as_raw_fd(), 0..5, None).unwrap(), 5);

        let mut inb = Batch::new(8);
        let mut got = Vec::new();
        for _ in 0..1000 {
            let n = inb.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                assert_eq!(
                    inb.source(i).to_socket_addr(),
                    Some(a.local_addr().unwrap())
                );
                got.push(inb.payload(i).to_vec());
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
        assert_eq!(
            inb.recv(b.as_raw_fd()).unwrap(),
            0,
            "nothing more is waiting"
        );
    }
}
