//! SIP over UDP: one socket per worker, all bound to the listen address with `SO_REUSEPORT`,
//! so the kernel spreads datagrams over the workers and no socket is shared between threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};

use super::{Inbound, Router, SourceLimits, Transport};
use crate::metrics::{Drop, WorkerMetrics};

/// The largest datagram we read (a UDP payload cannot exceed it).
const MAX_DATAGRAM: usize = 65_535;

/// Binds `n` UDP sockets to one address with `SO_REUSEPORT`. When the port is 0, the first
/// socket picks it and the others join it.
///
/// The first socket of a port-0 bind sets `SO_REUSEPORT` only after binding: the kernel's
/// port-0 choice skips ports held by other sockets, except those that could share with the
/// new one (another process's `SO_REUSEPORT` sockets of the same user), so with the flag set
/// before, two servers (e.g. parallel tests) could be given one port and split its traffic.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        let pick = addr.port() == 0;
        if !pick {
            sock.set_reuse_port(true)?;
        }
        sock.set_reuse_address(true)?;
        // Room for bursts of signaling: 4 MiB each way (the kernel caps it at rmem_max).
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        if pick {
            sock.set_reuse_port(true)?;
            addr = sock
                .local_addr()?
                .as_socket()
                .ok_or_else(|| std::io::Error::other("no local address"))?;
        }
        out.push(sock.into());
    }
    Ok(out)
}

/// The receive loop of one worker's socket: read a datagram into a pooled buffer, parse it in
/// place, route it to the owner of its Call-ID. Runs until the socket fails.
pub async fn recv_loop(
    socket: Arc<tokio::net::UdpSocket>,
    router: Router,
    metrics: Arc<WorkerMetrics>,
    max_message_size: usize,
    limits: Arc<SourceLimits>,
) {
    let limited = limits.config().rate.is_some();
    // One buffer serves many datagrams: each datagram is split off as a `Bytes` that the
    // parsed message keeps; the rest of the allocation is reused for the next read.
    let mut buf = BytesMut::with_capacity(256 * 1024);
    loop {
        if buf.capacity() < MAX_DATAGRAM {
            buf = BytesMut::with_capacity(256 * 1024);
        }
        buf.clear();
        let (n, source) = match socket.recv_buf_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    || e.kind() == std::io::ErrorKind::ConnectionReset
                {
                    continue; // ICMP errors reported on the socket: not fatal
                }
                return;
            }
        };
        let datagram = buf.split_to(n).freeze();
        if datagram.iter().all(|&c| c == b'\r' || c == b'\n') {
            continue; // keep-alive (RFC 5626 §4.4.1 style CRLF), nothing to answer on UDP
        }
        let received = Instant::now();
        if limited
            && !super::limits::is_response(&datagram)
            && !limits.allow_request(source.ip(), received)
        {
            metrics.dropped(Drop::RateLimited);
            continue;
        }
        if n > max_message_size {
            // Still parse: a request that is too large is answered 513 by its worker.
            tracing::debug!(%source, size = n, "oversized datagram");
        }
        let refused = match cpm_engine::sip::parse(datagram.clone()) {
            Ok(msg) => router.route(
                Inbound {
                    msg,
                    source,
                    transport: Transport::Udp,
                    size: n,
                    reject: None,
                    received,
                },
                &metrics,
            ),
            Err(e) => match cpm_engine::sip::validate::reject_unparsable(&datagram, e) {
                Some((head, rejection)) => router.route(
                    Inbound {
                        msg: head,
                        source,
                        transport: Transport::Udp,
                        size: n,
                        reject: Some(rejection),
                        received,
                    },
                    &metrics,
                ),
                None => {
                    metrics.dropped(Drop::Unparsable);
                    tracing::debug!(%source, error = %e, "unparsable datagram dropped");
                    None
                }
            },
        };
        // Refused by overload control: the 503 goes back where the request came from.
        if let Some(resp) = refused {
            let _ = socket.try_send_to(&resp.to_bytes(), source);
        }
    }
}
