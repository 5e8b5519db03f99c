//! Per-source limits: what keeps one misbehaving peer from taking the server (Kamailio's
//! `pike` and `tcp_max_connections`/`tcp_msg_read_timeout` in one place).
//!
//! - **Requests per second per source IP** (`--source-rate`, `--source-burst`): a token bucket
//!   per address; a request over it is dropped before it is parsed (one table lookup, no
//!   answer: answering a flood would amplify it) and counted (`rate_limited`). Responses are
//!   never limited (they answer our own requests).
//! - **TCP connections per source IP** (`--tcp-max-per-ip`): a connection over the limit is
//!   closed as soon as it is accepted and counted (`tcp_per_ip`).
//! - **Incomplete messages on TCP** (`--tcp-message-timeout`): once the first byte of a
//!   message arrived, the whole message must follow within the timeout, however slowly its
//!   bytes trickle in (slowloris); otherwise the connection is closed and counted
//!   (`incomplete_timeout`). The idle timeout (`--tcp-idle-timeout`) covers silent ones.
//!
//! The table is shared by every worker (a peer's datagrams reach the socket of whichever
//! worker the kernel hashes its 4-tuple to), sharded by address behind short locks that are
//! never held across I/O (decision 0002). Its size is bounded: a shard full of live sources
//! lets new ones through untracked rather than growing (a flood of spoofed sources must not
//! cost memory), after first sweeping out the buckets that have refilled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shards of the table (a power of two).
const SHARDS: usize = 16;
/// Sources tracked per shard at most.
const MAX_SOURCES_PER_SHARD: usize = 4096;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Requests per second one source IP may send (`None`: no limit).
    pub rate: Option<f64>,
    /// Requests a source may send at once above its rate (the bucket's size).
    pub burst: f64,
    /// TCP connections one source IP may hold open (0: no limit).
    pub tcp_max_per_ip: usize,
    /// How long one message may take to arrive completely on TCP.
    pub tcp_message_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    tcp: HashMap<IpAddr, usize>,
}

/// The per-source table, shared by the workers.
#[derive(Debug)]
pub struct SourceLimits {
    config: LimitsConfig,
    shards: Box<[Mutex<Shard>]>,
}

impl SourceLimits {
    /// An empty table enforcing `config`.
    pub fn new(config: LimitsConfig) -> Arc<SourceLimits> {
        Arc::new(SourceLimits {
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<Shard> {
        let h = match ip {
            IpAddr::V4(a) => cpm_engine::hash::fnv1a(&a.octets()),
            IpAddr::V6(a) => cpm_engine::hash::fnv1a(&a.octets()),
        };
        &self.shards[(h as usize) & (SHARDS - 1)]
    }

    /// Whether a request from `ip` at `now` is within its rate; takes a token if so.
    pub fn allow_request(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(rate) = self.config.rate else {
            return true;
        };
        let burst = self.config.burst;
        let mut shard = self.shard(&ip).lock();
        if !shard.buckets.contains_key(&ip) && shard.buckets.len() >= MAX_SOURCES_PER_SHARD {
            // Forget the sources whose bucket is full again: they are idle.
            shard
                .buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            if shard.buckets.len() >= MAX_SOURCES_PER_SHARD {
                return true;
            }
        }
        let b = shard.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let refill = now.saturating_duration_since(b.last).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Admits one more TCP connection from `ip`: a slot released when dropped, or `None` when
    /// `ip` holds its limit already.
    pub fn tcp_open(self: &Arc<Self>, ip: IpAddr) -> Option<TcpSlot> {
        let max = self.config.tcp_max_per_ip;
        let mut shard = self.shard(&ip).lock();
        let n = shard.tcp.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(TcpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// TCP connections `ip` holds open.
    pub fn tcp_count(&self, ip: IpAddr) -> usize {
        self.shard(&ip).lock().tcp.get(&ip).copied().unwrap_or(0)
    }
}

/// One admitted TCP connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct TcpSlot {
    limits: Arc<SourceLimits>,
    ip: IpAddr,
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(&self.ip).lock();
        if let Some(n) = shard.tcp.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.tcp.remove(&self.ip);
            }
        }
    }
}

/// Whether a datagram is a SIP response (`SIP/2.0 ...`): responses are never rate limited.
pub fn is_response(datagram: &[u8]) -> bool {
    datagram.starts_with(b"SIP/2.0 ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: Option<f64>, burst: f64, tcp: usize) -> Arc<SourceLimits> {
        SourceLimits::new(LimitsConfig {
            rate,
            burst,
            tcp_max_per_ip: tcp,
            tcp_message_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = limits(Some(10.0), 5.0, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| l.allow_request(ip, t0)).count(), 5);
        // 10/s: one token per 100 ms.
        assert!(!l.allow_request(ip, t0 + Duration::from_millis(50)));
        assert!(l.allow_request(ip, t0 + Duration::from_millis(160)));
        assert!(!l.allow_request(ip, t0 + Duration::from_millis(170)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| l.allow_request(ip, later)).count(), 5);
        // Another source has its own bucket.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(l.allow_request(other, t0 + Duration::from_millis(50)));
    }

    #[test]
    fn no_rate_means_no_limit() {
        let l = limits(None, 1.0, 0);
        let ip: IpAddr = "::1".parse().unwrap();
        let now = Instant::now();
        assert!((0..10_000).all(|_| l.allow_request(ip, now)));
    }

    #[test]
    fn table_is_bounded_under_a_spoofed_flood() {
        let l = limits(Some(1.0), 1.0, 0);
        let now = Instant::now();
        for i in 0..(SHARDS * MAX_SOURCES_PER_SHARD * 2) as u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            l.allow_request(ip, now);
        }
        let tracked: usize = l.shards.iter().map(|s| s.lock().buckets.len()).sum();
        assert!(tracked <= SHARDS * MAX_SOURCES_PER_SHARD, "{tracked}");
        // Once they refilled, the idle sources are swept for new ones.
        let later = now + Duration::from_secs(5);
        let fresh = IpAddr::from([203, 0, 113, 7]);
        assert!(l.allow_request(fresh, later));
        assert!(!l.allow_request(fresh, later), "the new source is tracked");
    }

    #[test]
    fn tcp_slots_per_ip() {
        let l = limits(None, 1.0, 2);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let a = l.tcp_open(ip).unwrap();
        let b = l.tcp_open(ip).unwrap();
        assert!(l.tcp_open(ip).is_none());
        assert!(l.tcp_open("192.0.2.10".parse().unwrap()).is_some());
        drop(a);
        assert_eq!(l.tcp_count(ip), 1);
        let _c = l.tcp_open(ip).unwrap();
        drop(b);
        assert_eq!(l.tcp_count(ip), 1);
    }

    #[test]
    fn responses_are_told_apart() {
        assert!(is_response(b"SIP/2.0 200 OK\r\n"));
        assert!(!is_response(b"INVITE sip:a@b SIP/2.0\r\n"));
        assert!(!is_response(b""));
    }
}
