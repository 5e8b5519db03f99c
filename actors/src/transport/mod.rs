//! SIP transports: UDP (one `SO_REUSEPORT` socket per worker) and TCP (a listener per worker,
//! a reader and a writer task per connection), all on the same address and port.
//!
//! Receiving tasks parse each message (zero-copy, on the receiving core) and hand it to the
//! worker that owns its Call-ID ([`Router`]); the owning worker answers through
//! [`Outbound::send`], which picks the UDP socket or the message's TCP connection.

pub mod limits;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use cpm_engine::sip::Message;

use crate::metrics::{Drop, WorkerMetrics};
use crate::worker::Worker;

pub use limits::{LimitsConfig, SourceLimits};
pub use tcp::{TcpConn, TcpRegistry};

/// Which transport a message arrived on (and its answer leaves by).
#[derive(Debug, Clone)]
pub enum Transport {
    /// UDP on the shared listen port.
    Udp,
    /// A TCP connection.
    Tcp(TcpConn),
}

impl Transport {
    /// Whether the transport is reliable (RFC 3261 §17: changes the transaction timers).
    pub fn reliable(&self) -> bool {
        matches!(self, Transport::Tcp(_))
    }

    /// The Via transport token.
    pub fn token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp(_) => "TCP",
        }
    }
}

/// A parsed message on its way to the worker that owns its Call-ID.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Inbound {
    /// The message.
    pub msg: Message,
    /// Where it came from.
    pub source: SocketAddr,
    /// How it came.
    pub transport: Transport,
    /// Its size on the wire.
    pub size: usize,
    /// Set when the bytes could not be parsed whole but the head could: answer this statelessly
    /// (e.g. a Content-Length larger than the datagram, RFC 4475 §3.1.2.3).
    pub reject: Option<cpm_engine::sip::validate::Rejection>,
}

/// Hands parsed messages to their owning worker: owner(Call-ID) = hash(Call-ID) mod N, except
/// conference traffic (decision 0014): a request whose Request-URI names a conference focus
/// goes to owner(conference name), and a response to a request a conference sent (its top Via
/// branch carries the worker, [`crate::conference::focus::branch`]) goes back to that worker.
#[derive(Clone)]
pub struct Router {
    workers: Arc<Vec<Addr<Worker>>>,
    conferences: Arc<crate::conference::focus::FocusNames>,
}

impl Router {
    /// A router over the workers' addresses, index = worker id, that knows only ad-hoc
    /// conference names (`conf-...`).
    pub fn new(workers: Vec<Addr<Worker>>) -> Router {
        Router {
            workers: Arc::new(workers),
            conferences: Arc::default(),
        }
    }

    /// The same router, also routing requests to these conference names (the factory's and
    /// the predefined conferences').
    pub fn with_conferences(mut self, names: crate::conference::focus::FocusNames) -> Router {
        self.conferences = Arc::new(names);
        self
    }

    /// The worker a message goes to (see [`Router`]).
    pub fn owner_of(&self, msg: &Message) -> usize {
        let n = self.workers.len();
        if msg.is_request() {
            if let Some(name) = self.conferences.conference_of(msg) {
                return crate::conference::focus::owner(name, n);
            }
        } else if let Some(w) = crate::conference::focus::branch_worker(msg) {
            if w < n {
                return w;
            }
        }
        Router::owner(msg.call_id(), n)
    }

    /// The index of the worker owning a Call-ID (FNV-1a; Call-IDs compare byte-exact,
    /// RFC 3261 §20.8).
    pub fn owner(call_id: Option<&Bytes>, workers: usize) -> usize {
        let Some(cid) = call_id else { return 0 };
        let h = cpm_engine::hash::fnv1a(cid);
        (h % workers.max(1) as u64) as usize
    }

    /// Hands a message to its owner; a full mailbox (overload) drops it and counts the drop.
    pub fn route(&self, inbound: Inbound, metrics: &WorkerMetrics) {
        let owner = self.owner_of(&inbound.msg);
        if self.workers[owner].try_send(inbound).is_err() {
            metrics.dropped(Drop::MailboxFull);
        }
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The workers' addresses.
    pub fn workers(&self) -> &[Addr<Worker>] {
        &self.workers
    }
}

/// How a worker sends: its own UDP socket, and the shared TCP connection registry.
#[derive(Clone)]
pub struct Outbound {
    /// This worker's UDP socket (bound to the shared listen address).
    pub udp: Arc<tokio::net::UdpSocket>,
    /// Open TCP connections by peer address.
    pub tcp: TcpRegistry,
}

/// Why a message could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// The socket refused it.
    Io(std::io::Error),
    /// No TCP connection to that peer, and a new one could not be started.
    NoConnection,
    /// The connection's write queue is full (slow peer).
    QueueFull,
}

/// Called when a send that was accepted fails later (a TCP connection that cannot be opened),
/// so the transaction that sent it learns it at once instead of waiting for its timeout.
pub type OnLateFailure = Box<dyn FnOnce() + 'static>;

impl Outbound {
    /// Sends bytes to a peer. UDP goes straight out of this worker's socket (the kernel queue
    /// absorbs bursts; a would-block is retried asynchronously); TCP goes to the connection's
    /// writer, opening a connection when there is none (RFC 3261 §18.1.1). An immediate failure
    /// is returned; a failure to connect is reported through `on_late_failure`.
    pub fn send(
        &self,
        dest: SocketAddr,
        reliable: bool,
        payload: Bytes,
        metrics: &Arc<WorkerMetrics>,
        on_late_failure: Option<OnLateFailure>,
    ) -> Result<(), SendError> {
        if !reliable {
            return match self.udp.try_send_to(&payload, dest) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let udp = self.udp.clone();
                    actix_rt::spawn(async move {
                        if let Err(e) = udp.send_to(&payload, dest).await {
                            tracing::debug!(%dest, error = %e, "UDP send failed");
                        }
                    });
                    Ok(())
                }
                Err(e) => Err(SendError::Io(e)),
            };
        }
        match self.tcp.get(&dest) {
            Some(conn) => conn.send(payload),
            None => {
                tcp::connect_and_send(
                    self.tcp.clone(),
                    dest,
                    payload,
                    metrics.clone(),
                    on_late_failure,
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        let n = 4;
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let cid = Bytes::from(format!("{i}@host"));
            let a = Router::owner(Some(&cid), n);
            assert_eq!(a, Router::owner(Some(&cid), n));
            seen[a] += 1;
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
        assert_eq!(Router::owner(None, n), 0);
    }
}
