//! Counters and gauges, one set per worker, rendered as Prometheus text on `/metrics`.
//!
//! Each worker writes only its own [`WorkerMetrics`] (relaxed atomics on a cache line nobody
//! else writes), so counting costs no contention; a scrape sums the workers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cpm_engine::sip::Method;

/// Requests are counted per known method ([`Method::KNOWN`]) plus one `OTHER` slot.
const METHOD_SLOTS: usize = Method::KNOWN.len() + 1;

/// The label of counter slot `i`.
fn method_label(i: usize) -> &'static str {
    Method::KNOWN.get(i).copied().unwrap_or("OTHER")
}

/// Why a received message was dropped without an answer (the discriminant is the counter slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The bytes are not a SIP message.
    Unparsable,
    /// A response that fails validation (e.g. no usable Via).
    MalformedResponse,
    /// A response matching no transaction.
    StrayResponse,
    /// The owning worker's mailbox was full (overload).
    MailboxFull,
    /// Too large for the transport (no answer possible).
    TooLarge,
    /// Over its source's request rate (`--source-rate`).
    RateLimited,
    /// A TCP connection over its source's limit (`--tcp-max-per-ip`), closed at accept.
    TcpPerIp,
    /// A TCP connection whose message did not arrive whole in time (`--tcp-message-timeout`).
    IncompleteTimeout,
}

impl Drop {
    const ALL: [Drop; 8] = [
        Drop::Unparsable,
        Drop::MalformedResponse,
        Drop::StrayResponse,
        Drop::MailboxFull,
        Drop::TooLarge,
        Drop::RateLimited,
        Drop::TcpPerIp,
        Drop::IncompleteTimeout,
    ];
    fn label(self) -> &'static str {
        match self {
            Drop::Unparsable => "unparsable",
            Drop::MalformedResponse => "malformed_response",
            Drop::StrayResponse => "stray_response",
            Drop::MailboxFull => "mailbox_full",
            Drop::TooLarge => "too_large",
            Drop::RateLimited => "rate_limited",
            Drop::TcpPerIp => "tcp_per_ip",
            Drop::IncompleteTimeout => "incomplete_timeout",
        }
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    requests: [AtomicU64; METHOD_SLOTS],
    /// Responses sent, by class 1xx..6xx (index 1..=6).
    responses_sent: [AtomicU64; 7],
    /// Responses received (from clients we forwarded to), by class.
    responses_received: [AtomicU64; 7],
    drops: [AtomicU64; Drop::ALL.len()],
    /// Requests that could be parsed but not accepted (answered 4xx by validation).
    rejected: AtomicU64,
    /// Transactions alive on this worker (gauge).
    pub transactions: AtomicU64,
    /// Requests this worker is still working on: forwarded and awaiting their final response
    /// (gauge). Shutdown waits for these, not for transactions that only absorb retransmissions.
    pub pending_requests: AtomicU64,
    /// Retransmissions sent by this worker's transactions.
    pub retransmissions: AtomicU64,
    /// 1-to-1 sessions alive on this worker (gauge).
    pub sessions: AtomicU64,
    /// Relay ports this worker's sessions hold in its port pool (gauge).
    pub session_ports: AtomicU64,
    /// Times this worker's actor was restarted by its supervisor after a panic.
    pub restarts: AtomicU64,
    /// TCP connections open on this worker (gauge).
    pub tcp_connections: AtomicU64,
    /// Store and forward (`crate::messaging`): messages held, held ones delivered, failed
    /// (refused by every device), expired, and failure IMDNs sent.
    pub messages: MessageCounters,
    /// The counters of this worker's media loop (written by that thread only).
    pub media: MediaMetrics,
}

/// Store-and-forward counters of one worker.
#[derive(Debug, Default)]
pub struct MessageCounters {
    held: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    imdn_sent: AtomicU64,
}

impl WorkerMetrics {
    /// A message was held for an offline user (202 sent).
    pub fn held(&self) {
        self.messages.held.fetch_add(1, Relaxed);
    }

    /// A held message was delivered (a device answered 2xx).
    pub fn held_delivered(&self) {
        self.messages.delivered.fetch_add(1, Relaxed);
    }

    /// A held message was refused for good by the recipient's devices.
    pub fn held_failed(&self) {
        self.messages.failed.fetch_add(1, Relaxed);
    }

    /// A held message expired.
    pub fn held_expired(&self) {
        self.messages.expired.fetch_add(1, Relaxed);
    }

    /// The server sent a failure IMDN.
    pub fn imdn_sent(&self) {
        self.messages.imdn_sent.fetch_add(1, Relaxed);
    }
}

/// One media loop's counters (`crate::media`), on cache lines of their own: the loop thread
/// writes them, not the worker.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct MediaMetrics {
    /// Relay legs open (gauge).
    pub legs: AtomicU64,
    /// Relay sockets bound, one per port (gauge).
    pub ports: AtomicU64,
    /// Datagrams relayed.
    pub packets: AtomicU64,
    /// Bytes relayed (UDP payload).
    pub bytes: AtomicU64,
    /// Datagrams dropped, by [`MediaDrop`] slot.
    pub drops: [AtomicU64; MediaDrop::ALL.len()],
    /// How this worker's media loop does its I/O while it runs: [`MediaMetrics::NO_LOOP`],
    /// [`MediaMetrics::EPOLL`] (asked for, or io_uring refused) or [`MediaMetrics::IO_URING`].
    pub loop_io: AtomicU64,
    /// Receives that found every buffer of the loop's io_uring in use (`ENOBUFS`) and were
    /// armed again; their datagrams waited in the socket for the next turn.
    pub ring_exhausted: AtomicU64,
}

impl MediaMetrics {
    /// [`Self::loop_io`]: no media loop runs.
    pub const NO_LOOP: u64 = 0;
    /// [`Self::loop_io`]: the loop runs on epoll.
    pub const EPOLL: u64 = 1;
    /// [`Self::loop_io`]: the loop runs on io_uring.
    pub const IO_URING: u64 = 2;

    /// Drops counted for a reason.
    pub fn drops_for(&self, why: MediaDrop) -> u64 {
        self.drops[why as usize].load(Relaxed)
    }
}

use crate::media::DropReason as MediaDrop;

fn method_index(m: &Method) -> usize {
    m.known_index().unwrap_or(Method::KNOWN.len())
}

impl WorkerMetrics {
    /// Counts a received request.
    pub fn request(&self, m: &Method) {
        self.requests[method_index(m)].fetch_add(1, Relaxed);
    }
    /// Counts a response this worker sent.
    pub fn response_sent(&self, code: u16) {
        self.responses_sent[(code / 100).min(6) as usize].fetch_add(1, Relaxed);
    }
    /// Counts a response this worker received.
    pub fn response_received(&self, code: u16) {
        self.responses_received[(code / 100).min(6) as usize].fetch_add(1, Relaxed);
    }
    /// Counts a dropped message.
    pub fn dropped(&self, why: Drop) {
        self.drops[why as usize].fetch_add(1, Relaxed);
    }
    /// Counts a rejected (validated and refused) request.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
    /// Requests counted for a method name.
    pub fn requests_for(&self, method: &str) -> u64 {
        (0..METHOD_SLOTS)
            .find(|&i| method_label(i) == method)
            .map_or(0, |i| self.requests[i].load(Relaxed))
    }
    /// Drops counted for a reason.
    pub fn drops_for(&self, why: Drop) -> u64 {
        self.drops[why as usize].load(Relaxed)
    }
}

/// Renders every worker's metrics (summed) plus the given gauges as Prometheus text format.
pub fn render(
    workers: &[std::sync::Arc<WorkerMetrics>],
    registered_contacts: usize,
    registered_aors: usize,
) -> String {
    let mut out = String::with_capacity(4096);
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();

    out.push_str("# HELP cpm_sip_requests_total SIP requests received, by method.\n");
    out.push_str("# TYPE cpm_sip_requests_total counter\n");
    for i in 0..METHOD_SLOTS {
        let m = method_label(i);
        let v = sum(&|w| w.requests[i].load(Relaxed));
        let _ = writeln!(out, "cpm_sip_requests_total{{method=\"{m}\"}} {v}");
    }
    for (name, help, pick) in [
        (
            "cpm_sip_responses_sent_total",
            "SIP responses sent, by class.",
            0,
        ),
        (
            "cpm_sip_responses_received_total",
            "SIP responses received, by class.",
            1,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for class in 1..=6 {
            let v = sum(&|w| {
                if pick == 0 {
                    w.responses_sent[class].load(Relaxed)
                } else {
                    w.responses_received[class].load(Relaxed)
                }
            });
            let _ = writeln!(out, "{name}{{class=\"{class}xx\"}} {v}");
        }
    }
    out.push_str(
        "# HELP cpm_sip_dropped_total Received messages dropped without an answer, by reason.\n",
    );
    out.push_str("# TYPE cpm_sip_dropped_total counter\n");
    for (i, d) in Drop::ALL.iter().enumerate() {
        let v = sum(&|w| w.drops[i].load(Relaxed));
        let _ = writeln!(out, "cpm_sip_dropped_total{{reason=\"{}\"}} {v}", d.label());
    }
    let parse_errors =
        sum(&|w| w.drops[Drop::Unparsable as usize].load(Relaxed) + w.rejected.load(Relaxed));
    let gauges: [(&str, &str, &str, u64); 10] = [
        (
            "cpm_sip_parse_errors_total",
            "counter",
            "Messages that failed to parse or validate.",
            parse_errors,
        ),
        (
            "cpm_sip_transactions_in_flight",
            "gauge",
            "SIP transactions alive.",
            sum(&|w| w.transactions.load(Relaxed)),
        ),
        (
            "cpm_sessions",
            "gauge",
            "1-to-1 sessions alive (session actors).",
            sum(&|w| w.sessions.load(Relaxed)),
        ),
        (
            "cpm_media_pool_ports_in_use",
            "gauge",
            "Relay ports allocated to sessions from the port pools.",
            sum(&|w| w.session_ports.load(Relaxed)),
        ),
        (
            "cpm_sip_pending_requests",
            "gauge",
            "Requests forwarded and awaiting their final response.",
            sum(&|w| w.pending_requests.load(Relaxed)),
        ),
        (
            "cpm_sip_retransmissions_total",
            "counter",
            "Retransmissions sent by transactions.",
            sum(&|w| w.retransmissions.load(Relaxed)),
        ),
        (
            "cpm_registered_contacts",
            "gauge",
            "Live registered contacts.",
            registered_contacts as u64,
        ),
        (
            "cpm_registered_aors",
            "gauge",
            "Addresses-of-record with at least one contact.",
            registered_aors as u64,
        ),
        (
            "cpm_tcp_connections",
            "gauge",
            "Open SIP TCP connections.",
            sum(&|w| w.tcp_connections.load(Relaxed)),
        ),
        (
            "cpm_actor_restarts_total",
            "counter",
            "Worker actors restarted by their supervisor.",
            sum(&|w| w.restarts.load(Relaxed)),
        ),
    ];
    for (name, kind, help, v) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP cpm_workers Worker threads.\n# TYPE cpm_workers gauge\ncpm_workers {}",
        workers.len()
    );
    render_media(&mut out, workers);
    render_messages(&mut out, workers);
    out
}

/// The MSRP plane's counters (one plane per process, `actors::msrp`).
#[derive(Debug, Default)]
pub struct MsrpMetrics {
    /// MSRP legs open (gauge).
    pub legs: AtomicU64,
    /// MSRP TCP connections open (gauge).
    pub connections: AtomicU64,
    /// Body bytes relayed.
    pub bytes_relayed: AtomicU64,
    /// Failure REPORTs generated.
    pub reports_generated: AtomicU64,
    /// Endpoint sessions open (large-message sinks, conference chat sessions; gauge).
    pub sinks: AtomicU64,
    /// Group chat copies dropped because a participant's queue was full.
    pub chat_dropped: AtomicU64,
}

/// The MSRP plane's part of `/metrics`.
pub fn render_msrp(out: &mut String, m: &MsrpMetrics) {
    let series: [(&str, &str, &str, u64); 6] = [
        (
            "cpm_msrp_legs",
            "gauge",
            "MSRP relay legs open.",
            m.legs.load(Relaxed),
        ),
        (
            "cpm_msrp_connections",
            "gauge",
            "MSRP TCP connections open.",
            m.connections.load(Relaxed),
        ),
        (
            "cpm_msrp_bytes_relayed_total",
            "counter",
            "MSRP body bytes relayed.",
            m.bytes_relayed.load(Relaxed),
        ),
        (
            "cpm_msrp_reports_generated_total",
            "counter",
            "MSRP failure REPORTs generated by the relay.",
            m.reports_generated.load(Relaxed),
        ),
        (
            "cpm_msrp_sinks",
            "gauge",
            "MSRP sessions cpmd ends itself (large-message sinks, conference chat).",
            m.sinks.load(Relaxed),
        ),
        (
            "cpm_msrp_chat_dropped_total",
            "counter",
            "Group chat copies dropped: the participant's queue was full.",
            m.chat_dropped.load(Relaxed),
        ),
    ];
    write_series(out, &series);
}

fn write_series(out: &mut String, series: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, v) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// Overload control's part of `/metrics`.
pub fn render_overload(out: &mut String, o: &crate::transport::Overload) {
    write_series(
        out,
        &[
            (
                "cpm_overload_refused_total",
                "counter",
                "New INVITEs and MESSAGEs answered 503 because their worker was overloaded.",
                o.refused_total(),
            ),
            (
                "cpm_overloaded_workers",
                "gauge",
                "Workers overloaded now (queueing delay over --overload-delay).",
                o.overloaded_workers() as u64,
            ),
        ],
    );
}

/// The media plane's part of `/metrics`.
fn render_messages(out: &mut String, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let sum = |f: &dyn Fn(&MessageCounters) -> &AtomicU64| {
        workers
            .iter()
            .map(|w| f(&w.messages).load(Relaxed))
            .sum::<u64>()
    };
    let _ = writeln!(
        out,
        "# HELP cpm_messages_held_total Pager-mode MESSAGEs held for an offline user (202).\n\
         # TYPE cpm_messages_held_total counter\ncpm_messages_held_total {}",
        sum(&|m| &m.held)
    );
    let _ = writeln!(
        out,
        "# HELP cpm_messages_held_done_total Held MESSAGEs done with, by outcome.\n\
         # TYPE cpm_messages_held_done_total counter"
    );
    for (outcome, v) in [
        ("delivered", sum(&|m| &m.delivered)),
        ("refused", sum(&|m| &m.failed)),
        ("expired", sum(&|m| &m.expired)),
    ] {
        let _ = writeln!(
            out,
            "cpm_messages_held_done_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP cpm_imdn_sent_total Failure IMDNs the server sent (RFC 5438 §5.1).\n\
         # TYPE cpm_imdn_sent_total counter\ncpm_imdn_sent_total {}",
        sum(&|m| &m.imdn_sent)
    );
}

fn render_media(out: &mut String, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let sum = |f: &dyn Fn(&MediaMetrics) -> u64| workers.iter().map(|w| f(&w.media)).sum::<u64>();
    let series: [(&str, &str, &str, u64); 6] = [
        (
            "cpm_media_relay_sockets",
            "gauge",
            "Media relay descriptors open in the process (legs' and conference participants' \
             ports, and the connected fast path's catch-alls): what the catch-all budget counts.",
            crate::media::relay_sockets() as u64,
        ),
        (
            "cpm_media_legs",
            "gauge",
            "RTP relay legs open.",
            sum(&|m| m.legs.load(Relaxed)),
        ),
        (
            "cpm_media_ports_in_use",
            "gauge",
            "Media relay ports bound.",
            sum(&|m| m.ports.load(Relaxed)),
        ),
        (
            "cpm_media_packets_relayed_total",
            "counter",
            "RTP and RTCP datagrams relayed.",
            sum(&|m| m.packets.load(Relaxed)),
        ),
        (
            "cpm_media_bytes_relayed_total",
            "counter",
            "RTP and RTCP bytes relayed (UDP payload).",
            sum(&|m| m.bytes.load(Relaxed)),
        ),
        (
            "cpm_media_ring_exhausted_total",
            "counter",
            "Receives that found every buffer of an io_uring media loop in use; their \
             datagrams waited in the socket for the next turn.",
            sum(&|m| m.ring_exhausted.load(Relaxed)),
        ),
    ];
    for (name, kind, help, v) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP cpm_media_loops Media loop threads, by how they receive and send (io_uring \
         falls back to epoll where the kernel refuses a ring).\n# TYPE cpm_media_loops gauge\n\
         cpm_media_loops{{io=\"io_uring\"}} {}\ncpm_media_loops{{io=\"epoll\"}} {}",
        sum(&|m| u64::from(m.loop_io.load(Relaxed) == MediaMetrics::IO_URING)),
        sum(&|m| u64::from(m.loop_io.load(Relaxed) == MediaMetrics::EPOLL)),
    );
    out.push_str("# HELP cpm_media_dropped_total Media datagrams dropped, by reason.\n");
    out.push_str("# TYPE cpm_media_dropped_total counter\n");
    for d in MediaDrop::ALL {
        let v = sum(&|m| m.drops_for(d));
        let _ = writeln!(
            out,
            "cpm_media_dropped_total{{reason=\"{}\"}} {v}",
            d.label()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_sums_over_workers() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        a.request(&Method::Register);
        b.request(&Method::Register);
        b.request(&Method::Other(bytes::Bytes::from_static(b"FOO")));
        a.response_sent(200);
        b.response_sent(404);
        a.dropped(Drop::Unparsable);
        let text = render(&[a, b], 3, 2);
        assert!(text.contains("cpm_sip_requests_total{method=\"REGISTER\"} 2\n"));
        assert!(text.contains("cpm_sip_requests_total{method=\"OTHER\"} 1\n"));
        assert!(text.contains("cpm_sip_responses_sent_total{class=\"2xx\"} 1\n"));
        assert!(text.contains("cpm_sip_responses_sent_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("cpm_sip_dropped_total{reason=\"unparsable\"} 1\n"));
        assert!(text.contains("cpm_sip_parse_errors_total 1\n"));
        assert!(text.contains("cpm_registered_contacts 3\n"));
    }

    #[test]
    fn renders_media_counters() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        a.media.legs.store(2, Relaxed);
        b.media.legs.store(1, Relaxed);
        b.media.ports.store(6, Relaxed);
        a.media.packets.store(10, Relaxed);
        b.media.bytes.store(1720, Relaxed);
        b.media.drops[MediaDrop::NotRtp as usize].store(4, Relaxed);
        a.media.loop_io.store(MediaMetrics::IO_URING, Relaxed);
        b.media.loop_io.store(MediaMetrics::EPOLL, Relaxed);
        b.media.ring_exhausted.store(7, Relaxed);
        let text = render(&[a, b], 0, 0);
        assert!(
            text.contains("cpm_media_loops{io=\"io_uring\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("cpm_media_loops{io=\"epoll\"} 1\n"), "{text}");
        assert!(
            text.contains("cpm_media_ring_exhausted_total 7\n"),
            "{text}"
        );
        assert!(text.contains("cpm_media_legs 3\n"));
        assert!(text.contains("cpm_media_ports_in_use 6\n"));
        assert!(text.contains("cpm_media_packets_relayed_total 10\n"));
        assert!(text.contains("cpm_media_bytes_relayed_total 1720\n"));
        assert!(text.contains("cpm_media_dropped_total{reason=\"not_rtp\"} 4\n"));
        assert!(text.contains("cpm_media_dropped_total{reason=\"wrong_source\"} 0\n"));
    }

    #[test]
    fn renders_msrp_counters() {
        let m = MsrpMetrics::default();
        m.legs.store(2, Relaxed);
        m.bytes_relayed.store(1000, Relaxed);
        m.reports_generated.store(3, Relaxed);
        let mut text = String::new();
        render_msrp(&mut text, &m);
        assert!(text.contains("# TYPE cpm_msrp_legs gauge\ncpm_msrp_legs 2\n"));
        assert!(text.contains("cpm_msrp_connections 0\n"));
        assert!(text.contains("cpm_msrp_bytes_relayed_total 1000\n"));
        assert!(text.contains("cpm_msrp_reports_generated_total 3\n"));
    }
}
