//! What a media anchor does with MSRP traffic between two sides of a session (RFC 4976 §6
//! applied by a back-to-back relay), sans-IO.
//!
//! The anchor terminates each side's path: side A was given our A-facing URI in SDP, so its
//! requests arrive with `To-Path: <our A-facing URI>`; they leave towards B with B's path as
//! To-Path and our B-facing URI as From-Path ([`Side`], [`forward`]). Transaction responses are
//! hop by hop (RFC 4975 §7.2): the anchor answers each side itself ([`upstream_response`]), keeps
//! the requests it sent in a [`Transactions`] table keyed by its own transaction id, and turns a
//! downstream failure (a 4xx response, or no response in time: 408) into a failure REPORT to the
//! sender ([`failure_report`], RFC 4975 §7.1.2, §7.1.4) when the sender's Failure-Report asks for
//! one. Success-Report REPORTs are end to end: they are forwarded like any request.
//!
//! [`Rechunker`] splits the chunks of one side into chunks of at most N bytes for the other side,
//! with correct Byte-Range and continuation flags (RFC 4975 §7.1.1), forwarding body slices as
//! they are; [`Rechunker::interrupt`] ends the open chunk early with `+` so that other messages
//! (responses, REPORTs) can go out on the connection while the sender's chunk is stalled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::head::{ByteRange, FailureReport, Flag, Head, Kind, Method, Status};
use super::uri::{first_item, first_of_path, write_path, Uri};
use super::write::{reason, response};

/// How long the anchor waits for a downstream response before it counts the transaction as
/// failed with 408 (RFC 4975 §7.1.1 suggests 30 seconds).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a received request cannot be relayed: answer with [`RelayError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The first To-Path URI is not our URI on this side (RFC 4975 §7.3: 481).
    NoSession,
    /// The To-Path does not parse (400).
    BadPath,
}

impl RelayError {
    /// The MSRP status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            RelayError::NoSession => 481,
            RelayError::BadPath => 400,
        }
    }

    /// A reason phrase for logs.
    pub fn reason(self) -> &'static str {
        match self {
            RelayError::NoSession => "To-Path is not this session",
            RelayError::BadPath => "malformed To-Path",
        }
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RelayError {}

/// One side of an anchored session: our URI facing it and the path to its endpoint (its SDP
/// `a=path`), both printed once so each forwarded chunk only copies references.
#[derive(Debug, Clone)]
pub struct Side {
    local: Uri,
    local_bytes: Bytes,
    peer_path: Bytes,
}

impl Side {
    /// A side whose endpoint is reached through `peer_path` and which knows us as `local`; an
    /// empty `peer_path` means the endpoint is not known yet (SDP answer pending).
    pub fn new(local: Uri, peer_path: &[Uri]) -> Side {
        let mut p = BytesMut::with_capacity(64 * peer_path.len().max(1));
        write_path(peer_path, &mut p);
        Side {
            local_bytes: local.to_bytes(),
            local,
            peer_path: p.freeze(),
        }
    }

    /// Our URI on this side (what it puts in To-Path).
    pub fn local(&self) -> &Uri {
        &self.local
    }

    /// Our URI on this side as printed (the From-Path of what we send it).
    pub fn local_bytes(&self) -> &Bytes {
        &self.local_bytes
    }

    /// The path to the endpoint of this side, as a header value.
    pub fn peer_path(&self) -> &Bytes {
        &self.peer_path
    }

    /// Whether the endpoint's path is known, so that requests can be sent to this side.
    pub fn peer_known(&self) -> bool {
        !self.peer_path.is_empty()
    }

    /// Checks that a request received on this side is for us (RFC 4975 §7.3, §6.1 comparison of
    /// the first To-Path URI). URIs after ours are ignored: the anchor terminates the path.
    pub fn accept(&self, head: &Head) -> Result<(), RelayError> {
        // Peers echo the URI we gave them: the same bytes are the same URI.
        if first_item(&head.to_path).is_some_and(|f| f == self.local_bytes) {
            return Ok(());
        }
        let first = first_of_path(&head.to_path).map_err(|_| RelayError::BadPath)?;
        if first == self.local {
            Ok(())
        } else {
            Err(RelayError::NoSession)
        }
    }
}

/// The head to send on side `to` for a request received from the other side: our transaction
/// id `tid`, To-Path the side's path, From-Path our URI on that side; Message-ID, Byte-Range,
/// reports, Status, Content-Type and every other header field are kept.
pub fn forward(head: &Head, to: &Side, tid: Bytes) -> Head {
    let mut out = head.clone();
    out.tid = tid;
    out.to_path = to.peer_path.clone();
    out.from_path = to.local_bytes.clone();
    out
}

/// The response the anchor owes the sender of `req` once it has taken the request on (200),
/// or for a request it refuses (`code` >= 300). `None` when none is due: REPORTs are never
/// answered, `Failure-Report: no` wants nothing, `partial` wants failures only (§7.1.1).
pub fn upstream_response(req: &Head, code: u16) -> Option<Head> {
    response(req, code, None)
}

/// A request the anchor sent and still waits a response for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The Message-ID of the request.
    pub message_id: Option<Bytes>,
    /// The Byte-Range of the chunk sent.
    pub byte_range: ByteRange,
    /// The sender's Failure-Report.
    pub failure_report: FailureReport,
    /// Caller data (e.g. which side the request came from, its transaction id).
    pub tag: u64,
}

impl Pending {
    /// What a failure REPORT about request `req` needs (RFC 4975 §7.1.2): its Message-ID,
    /// Byte-Range and Failure-Report; also for a request the anchor could not forward at all.
    pub fn of(req: &Head, tag: u64) -> Pending {
        Pending {
            message_id: req.message_id.clone(),
            byte_range: req.range(),
            failure_report: req.failure_report(),
            tag,
        }
    }
}

/// The anchor's outstanding requests of one side, by its own transaction id, with their
/// deadlines (time is an input).
#[derive(Debug)]
pub struct Transactions {
    /// By transaction id: the request, its deadline and its place in sending order.
    pending: HashMap<Bytes, (Pending, Instant, u64)>,
    timeout: Duration,
    next_seq: u64,
}

/// How a tracked transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered to the next hop; nothing to do.
    Delivered(Pending),
    /// Failed with the status code (response code, or 408 for no response): send
    /// [`failure_report`] to the sender if the Failure-Report asks for it.
    Failed(Pending, u16),
}

impl Transactions {
    /// An empty table whose transactions time out after `timeout`.
    pub fn new(timeout: Duration) -> Transactions {
        Transactions {
            pending: HashMap::new(),
            timeout,
            next_seq: 0,
        }
    }

    /// Records request `sent` (as forwarded) at `now`, with a caller `tag`. Requests that expect
    /// no response (Failure-Report no, REPORT) are not recorded.
    pub fn on_sent(&mut self, sent: &Head, tag: u64, now: Instant) {
        let failure_report = sent.failure_report();
        if failure_report == FailureReport::No || !sent.is_request() {
            return;
        }
        self.next_seq += 1;
        self.pending.insert(
            sent.tid.clone(),
            (Pending::of(sent, tag), now + self.timeout, self.next_seq),
        );
    }

    /// A response from the next hop: the transaction it ends, `None` if unknown (stale or
    /// not ours: ignore it).
    pub fn on_response(&mut self, resp: &Head) -> Option<Outcome> {
        let code = resp.code()?;
        let (p, ..) = self.pending.remove(&resp.tid)?;
        Some(if code < 300 {
            Outcome::Delivered(p)
        } else {
            Outcome::Failed(p, code)
        })
    }

    /// The earliest deadline, for the driver's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|(_, d, _)| *d).min()
    }

    /// Ends the transactions whose deadline passed, in the order they were sent:
    /// `Failed(_, 408)` for Failure-Report yes; with `partial` silence means success (§7.1.1),
    /// so they end as `Delivered`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Outcome> {
        let mut expired: Vec<(u64, Bytes)> = self
            .pending
            .iter()
            .filter(|(_, (_, d, _))| *d <= now)
            .map(|(t, (_, _, seq))| (*seq, t.clone()))
            .collect();
        expired.sort_unstable_by_key(|(seq, _)| *seq);
        expired
            .into_iter()
            .filter_map(|(_, t)| self.pending.remove(&t))
            .map(|(p, ..)| match p.failure_report {
                FailureReport::Yes => Outcome::Failed(p, 408),
                _ => Outcome::Delivered(p),
            })
            .collect()
    }

    /// Ends every transaction with `code` (the next hop's connection was lost: 408 or 481), in
    /// the order they were sent.
    pub fn fail_all(&mut self, code: u16) -> Vec<Outcome> {
        let mut all: Vec<(Pending, Instant, u64)> = self.pending.drain().map(|(_, v)| v).collect();
        all.sort_unstable_by_key(|(_, _, seq)| *seq);
        all.into_iter()
            .map(|(p, ..)| Outcome::Failed(p, code))
            .collect()
    }

    /// How many transactions are outstanding.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if none is outstanding.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The failure REPORT for a chunk that could not be delivered (RFC 4975 §7.1.2, §7.1.4): sent
/// on side `to` (the original sender's side), with the failed chunk's Message-ID and
/// Byte-Range and `Status: 000 <code>`. `None` if the sender's Failure-Report is `no` or the
/// request had no Message-ID.
pub fn failure_report(p: &Pending, code: u16, to: &Side, tid: Bytes) -> Option<Head> {
    if p.failure_report == FailureReport::No {
        return None;
    }
    let mut h = Head::new(
        tid,
        Kind::Request(Method::Report),
        to.peer_path.clone(),
        to.local_bytes.clone(),
    );
    h.message_id = Some(p.message_id.clone()?);
    h.byte_range = Some(p.byte_range);
    h.status = Some(Status {
        namespace: 0,
        code,
        reason: Some(Bytes::from_static(reason(code).as_bytes())),
    });
    Some(h)
}

/// A piece of the re-chunked output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Start a new outgoing chunk with this Byte-Range (the end is `*` when not yet known).
    Open(ByteRange),
    /// Body bytes of the open chunk (a slice of the input).
    Data(Bytes),
    /// End the open chunk with this flag.
    Close(Flag),
}

/// Splits incoming chunks into outgoing chunks of at most `max` body bytes (RFC 4975 §7.1.1:
/// positions are of the whole message, so Byte-Ranges stay true across the split).
///
/// An outgoing chunk never spans two incoming chunks: each incoming chunk maps to one or more
/// outgoing ones, the last taking the incoming flag, the others `+`.
#[derive(Debug, Clone)]
pub struct Rechunker {
    max: u64,
    /// Position (from 1) of the next body byte.
    next: u64,
    /// Declared last position of the incoming chunk.
    in_end: Option<u64>,
    total: Option<u64>,
    /// Bytes in the open outgoing chunk, `None` if none is open.
    open: Option<u64>,
}

impl Rechunker {
    /// A rechunker emitting chunks of at most `max` bytes (at least 1).
    pub fn new(max: u64) -> Rechunker {
        Rechunker {
            max: max.max(1),
            next: 1,
            in_end: None,
            total: None,
            open: None,
        }
    }

    /// An incoming chunk starts with this Byte-Range.
    pub fn begin(&mut self, range: ByteRange) {
        self.next = range.start;
        self.in_end = range.end;
        self.total = range.total;
        self.open = None;
    }

    /// Body bytes of the incoming chunk; the pieces to send are appended to `out`.
    pub fn push(&mut self, mut data: Bytes, out: &mut Vec<Piece>) {
        while !data.is_empty() {
            if self.open == Some(self.max) {
                // A full chunk of unknown extent ends only when more bytes come.
                out.push(Piece::Close(Flag::Continues));
                self.open = None;
            }
            let filled = match self.open {
                Some(n) => n,
                None => {
                    if self.in_end.is_some_and(|e| self.next > e) {
                        // More bytes than declared: the rest gets `*`.
                        self.in_end = None;
                    }
                    let end = self.in_end.map(|e| e.min(self.next + self.max - 1));
                    out.push(Piece::Open(ByteRange {
                        start: self.next,
                        end,
                        total: self.total,
                    }));
                    0
                }
            };
            let n = (self.max - filled).min(data.len() as u64);
            out.push(Piece::Data(data.split_to(n as usize)));
            self.next += n;
            let filled = filled + n;
            self.open = Some(filled);
            if filled == self.max && self.in_end.is_some_and(|e| self.next <= e) {
                out.push(Piece::Close(Flag::Continues));
                self.open = None;
            }
        }
    }

    /// Whether an outgoing chunk is open (its head sent, its end line not yet).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Ends the open outgoing chunk now with `+` (RFC 4975 §7.1.1: a sender may interrupt a
    /// chunk to send other messages); the rest of the incoming chunk goes out in a new chunk
    /// from the next position. Nothing when no chunk is open.
    ///
    /// The interrupted chunk's Byte-Range may have declared a larger end than the bytes it
    /// carries: the end line is what ends it.
    pub fn interrupt(&mut self, out: &mut Vec<Piece>) {
        if self.open.take().is_some() {
            out.push(Piece::Close(Flag::Continues));
        }
    }

    /// The incoming chunk ended with `flag`: close the open chunk (an empty chunk if none is).
    pub fn end(&mut self, flag: Flag, out: &mut Vec<Piece>) {
        if self.open.is_none() {
            out.push(Piece::Open(ByteRange {
                start: self.next,
                end: Some(self.next - 1),
                total: self.total,
            }));
        }
        out.push(Piece::Close(flag));
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msrp::parser::tests::{run, CHUNK1};
    use crate::msrp::write::{self, IdGen};
    use crate::msrp::{Event, Limits, Parser};

    fn uri(s: &'static str) -> Uri {
        Uri::parse(&Bytes::from_static(s.as_bytes())).unwrap()
    }

    /// The anchor between Bob (side A, who sends CHUNK1) and Alice (side B).
    fn sides() -> (Side, Side) {
        let a = Side::new(
            uri("msrp://alice.example.com:7777/iau39soe2843z;tcp"),
            &[uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")],
        );
        let b = Side::new(
            uri("msrp://anchor.example.net:2855/b-side1;tcp"),
            &[uri("msrp://alicepc.example.com:7777/real;tcp")],
        );
        (a, b)
    }

    fn first_head(raw: &[u8]) -> Head {
        match run(Limits::default(), &[raw]).remove(0) {
            Ok(Event::Head(h)) => *h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_are_rewritten_hop_by_hop() {
        let (a, b) = sides();
        let h = first_head(CHUNK1);
        assert_eq!(a.accept(&h), Ok(()));
        assert_eq!(b.accept(&h), Err(RelayError::NoSession));
        assert_eq!(RelayError::NoSession.status(), 481);

        let out = forward(&h, &b, Bytes::from_static(b"anchor01"));
        assert_eq!(
            &out.to_path[..],
            b"msrp://alicepc.example.com:7777/real;tcp"
        );
        assert_eq!(
            &out.from_path[..],
            b"msrp://anchor.example.net:2855/b-side1;tcp"
        );
        assert_eq!(
            (out.message_id.clone(), out.byte_range),
            (h.message_id.clone(), h.byte_range)
        );
        assert_eq!(out.content_type, h.content_type);
        // What goes out parses back, and B's answer is accepted on side B.
        let mut buf = BytesMut::new();
        let mut sent = out.clone();
        let wire = write::chunk(&mut sent, "abcd".into(), Flag::Continues, &mut buf).concat();
        let back = first_head(&wire);
        assert_eq!(back, sent);
        let resp = write::response(&back, 200, None).unwrap();
        assert_eq!(
            &resp.to_path[..],
            b"msrp://anchor.example.net:2855/b-side1;tcp"
        );

        // Not our URI's bytes but the same URI (§6.1: scheme and host compare without case):
        // still ours.
        let mut same = h.clone();
        same.to_path = "MSRP://Alice.Example.COM:7777/iau39soe2843z;tcp".into();
        assert_eq!(a.accept(&same), Ok(()));
        // Session-ids compare case-sensitively (§6.1).
        let mut wrong = h.clone();
        wrong.to_path = "msrp://alice.example.com:7777/IAU39SOE2843Z;tcp".into();
        assert_eq!(a.accept(&wrong), Err(RelayError::NoSession));
        wrong.to_path = "garbage".into();
        assert_eq!(a.accept(&wrong), Err(RelayError::BadPath));
    }

    #[test]
    fn reports_on_downstream_failure_and_timeout() {
        let (a, b) = sides();
        let t0 = Instant::now();
        let mut ids = IdGen::new(1);
        let mut tx = Transactions::new(TRANSACTION_TIMEOUT);
        let h = first_head(CHUNK1);

        // The upstream 200 is due at once (Failure-Report defaults to yes).
        assert_eq!(upstream_response(&h, 200).unwrap().code(), Some(200));

        let sent1 = forward(&h, &b, ids.next_id());
        tx.on_sent(&sent1, 7, t0);
        let sent2 = forward(&h, &b, ids.next_id());
        tx.on_sent(&sent2, 8, t0 + Duration::from_secs(1));
        assert_eq!(tx.len(), 2);
        assert_eq!(tx.poll_timeout(), Some(t0 + TRANSACTION_TIMEOUT));

        // B answers the first with 415: a REPORT goes back to side A.
        let resp = write::response(&sent1, 415, None).unwrap();
        let Some(Outcome::Failed(p, 415)) = tx.on_response(&resp) else {
            panic!()
        };
        assert_eq!(p.tag, 7);
        let rep = failure_report(&p, 415, &a, ids.next_id()).unwrap();
        assert_eq!(
            &rep.to_path[..],
            b"msrp://bob.example.com:8888/9di4eae923wzd;tcp"
        );
        assert_eq!(
            &rep.from_path[..],
            b"msrp://alice.example.com:7777/iau39soe2843z;tcp"
        );
        assert_eq!(rep.message_id, h.message_id);
        assert_eq!(rep.byte_range, h.byte_range);
        assert_eq!(
            rep.status.as_ref().map(|s| (s.namespace, s.code)),
            Some((0, 415))
        );
        let wire = write::bodyless(&rep, &mut BytesMut::new());
        assert_eq!(first_head(&wire), rep);
        assert!(tx.on_response(&resp).is_none(), "answered once");

        // The second never gets an answer: 408 after the timeout, not before.
        assert!(tx.handle_timeout(t0 + TRANSACTION_TIMEOUT).is_empty());
        let out = tx.handle_timeout(t0 + TRANSACTION_TIMEOUT + Duration::from_secs(1));
        assert!(matches!(&out[..], [Outcome::Failed(p, 408)] if p.tag == 8));
        assert!(tx.is_empty());
    }

    /// Failures come out in the order the requests were sent (the sender gets its REPORTs
    /// in its messages' order), for a timeout of many at once and for a lost next hop.
    #[test]
    fn failures_come_in_sending_order() {
        let (_, b) = sides();
        let t0 = Instant::now();
        let mut ids = IdGen::new(3);
        let h = first_head(CHUNK1);
        for fail in [false, true] {
            let mut tx = Transactions::new(TRANSACTION_TIMEOUT);
            for tag in 0..50 {
                tx.on_sent(&forward(&h, &b, ids.next_id()), tag, t0);
            }
            let out = if fail {
                tx.fail_all(481)
            } else {
                tx.handle_timeout(t0 + TRANSACTION_TIMEOUT)
            };
            let tags: Vec<u64> = out
                .iter()
                .map(|o| match o {
                    Outcome::Failed(p, _) | Outcome::Delivered(p) => p.tag,
                })
                .collect();
            assert_eq!(tags, (0..50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn failure_report_header_is_honoured() {
        let (a, b) = sides();
        let t0 = Instant::now();
        let mut tx = Transactions::new(TRANSACTION_TIMEOUT);
        let mut h = first_head(CHUNK1);

        h.failure_report = Some(FailureReport::No);
        assert!(upstream_response(&h, 200).is_none());
        assert!(upstream_response(&h, 481).is_none());
        tx.on_sent(&forward(&h, &b, "notrack1".into()), 0, t0);
        assert!(tx.is_empty());

        h.failure_report = Some(FailureReport::Partial);
        assert!(upstream_response(&h, 200).is_none());
        assert!(upstream_response(&h, 481).is_some());
        let sent = forward(&h, &b, "partial1".into());
        tx.on_sent(&sent, 0, t0);
        // Silence means success with partial.
        let out = tx.handle_timeout(t0 + TRANSACTION_TIMEOUT);
        assert!(matches!(&out[..], [Outcome::Delivered(_)]));
        tx.on_sent(&sent, 0, t0);
        let Some(Outcome::Failed(p, 481)) =
            tx.on_response(&write::response(&sent, 481, None).unwrap())
        else {
            panic!()
        };
        assert!(failure_report(&p, 481, &a, "rep00001".into()).is_some());
        tx.on_sent(&sent, 0, t0);
        assert_eq!(tx.fail_all(408).len(), 1);

        // REPORTs are forwarded but never answered nor tracked.
        let rep = failure_report(&p, 481, &a, "rep00002".into()).unwrap();
        assert!(upstream_response(&rep, 200).is_none());
        tx.on_sent(&rep, 0, t0);
        assert!(tx.is_empty());
    }

    /// Pieces to (range, data, flag) per outgoing chunk.
    fn chunks_of(pieces: &[Piece]) -> Vec<(ByteRange, Vec<u8>, Flag)> {
        let mut out = Vec::new();
        let mut cur: Option<(ByteRange, Vec<u8>)> = None;
        for p in pieces {
            match p {
                Piece::Open(r) => {
                    assert!(cur.is_none(), "open while open");
                    cur = Some((*r, Vec::new()));
                }
                Piece::Data(d) => cur
                    .as_mut()
                    .expect("data outside a chunk")
                    .1
                    .extend_from_slice(d),
                Piece::Close(f) => {
                    let (r, d) = cur.take().expect("close without open");
                    out.push((r, d, *f));
                }
            }
        }
        assert!(cur.is_none());
        out
    }

    #[test]
    fn rechunking_round_trip() {
        let msg: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let total = msg.len() as u64;
        for (in_size, max, star) in [
            (10_000, 1000, false),
            (3000, 1000, true),
            (700, 256, false),
            (999, 1000, false),
            (2000, 1000, true),
        ] {
            let mut rc = Rechunker::new(max);
            let mut pieces = Vec::new();
            let mut pos = 0usize;
            while pos < msg.len() {
                let end = (pos + in_size).min(msg.len());
                rc.begin(ByteRange {
                    start: pos as u64 + 1,
                    end: (!star).then_some(end as u64),
                    total: Some(total),
                });
                // The body arrives in uneven slices.
                let mut p = pos;
                let mut step = 1;
                while p < end {
                    let e = (p + step).min(end);
                    rc.push(Bytes::copy_from_slice(&msg[p..e]), &mut pieces);
                    p = e;
                    step = step * 3 + 1;
                }
                let flag = if end == msg.len() {
                    Flag::Complete
                } else {
                    Flag::Continues
                };
                rc.end(flag, &mut pieces);
                pos = end;
            }
            let chunks = chunks_of(&pieces);
            let mut next = 1u64;
            let mut joined = Vec::new();
            for (i, (r, d, f)) in chunks.iter().enumerate() {
                assert!(d.len() as u64 <= max);
                assert!(!d.is_empty());
                assert_eq!(r.start, next, "contiguous");
                assert_eq!(r.total, Some(total));
                if let Some(e) = r.end {
                    assert_eq!(e, r.start + d.len() as u64 - 1, "declared end is exact");
                } else {
                    assert!(star);
                }
                let last = i + 1 == chunks.len();
                assert_eq!(
                    *f,
                    if last {
                        Flag::Complete
                    } else {
                        Flag::Continues
                    }
                );
                next += d.len() as u64;
                joined.extend_from_slice(d);
            }
            assert_eq!(joined, msg, "in {in_size} max {max}");

            // Serialised and parsed again, the chunks carry the message.
            let (_, b) = sides();
            let mut ids = IdGen::new(3);
            let mut wire = Vec::new();
            let mut buf = BytesMut::new();
            for (r, d, f) in &chunks {
                let mut h = Head::new(
                    ids.next_id(),
                    Kind::Request(Method::Send),
                    b.peer_path().clone(),
                    b.local().to_bytes(),
                );
                h.message_id = Some("msg00001".into());
                h.byte_range = Some(*r);
                h.content_type = Some("application/octet-stream".into());
                wire.extend(write::chunk(&mut h, Bytes::copy_from_slice(d), *f, &mut buf).concat());
            }
            let mut p = Parser::new(Limits::default());
            p.feed(wire.into());
            let mut got = Vec::new();
            let mut ends = Vec::new();
            while let Some(e) = p.poll() {
                match e.unwrap() {
                    Event::Body(b) => got.extend_from_slice(&b),
                    Event::End(f) => ends.push(f),
                    Event::Head(_) => {}
                    Event::Reject(r) => panic!("{r:?}"),
                }
            }
            assert_eq!(got, msg);
            assert_eq!(ends.len(), chunks.len());
        }
    }

    #[test]
    fn an_interrupted_chunk_goes_on_in_a_new_chunk() {
        let mut rc = Rechunker::new(4);
        let mut out = Vec::new();
        rc.interrupt(&mut out);
        assert!(
            out.is_empty() && !rc.is_open(),
            "nothing open, nothing to end"
        );
        rc.begin(ByteRange::whole(7));
        rc.push("ab".into(), &mut out);
        assert!(rc.is_open());
        rc.interrupt(&mut out);
        assert!(!rc.is_open());
        rc.interrupt(&mut out);
        rc.push("cdefg".into(), &mut out);
        rc.end(Flag::Complete, &mut out);
        let r = |start, end| ByteRange {
            start,
            end: Some(end),
            total: Some(7),
        };
        assert_eq!(
            chunks_of(&out),
            [
                (r(1, 4), b"ab".to_vec(), Flag::Continues),
                (r(3, 6), b"cdef".to_vec(), Flag::Continues),
                (r(7, 7), b"g".to_vec(), Flag::Complete),
            ]
        );
    }

    #[test]
    fn a_side_without_peer_and_a_refused_request() {
        let (a, _) = sides();
        let early = Side::new(a.local().clone(), &[]);
        assert!(!early.peer_known() && a.peer_known());
        assert_eq!(
            early.accept(&first_head(CHUNK1)),
            Ok(()),
            "ours before the SDP answer"
        );
        assert_eq!(
            &early.local_bytes()[..],
            b"msrp://alice.example.com:7777/iau39soe2843z;tcp"
        );
        // A request never forwarded still gets its REPORT from what it carried.
        let h = first_head(CHUNK1);
        let p = Pending::of(&h, 1);
        assert_eq!(
            (p.message_id.clone(), p.byte_range, p.failure_report, p.tag),
            (h.message_id.clone(), h.range(), FailureReport::Yes, 1)
        );
        let rep = failure_report(&p, 481, &a, "rep00003".into()).unwrap();
        assert_eq!(rep.status.map(|s| s.code), Some(481));
    }

    #[test]
    fn rechunking_empty_and_short_chunks() {
        let mut rc = Rechunker::new(4);
        let mut out = Vec::new();
        rc.begin(ByteRange::whole(0));
        rc.end(Flag::Complete, &mut out);
        assert_eq!(
            out,
            [
                Piece::Open(ByteRange {
                    start: 1,
                    end: Some(0),
                    total: Some(0)
                }),
                Piece::Close(Flag::Complete)
            ]
        );
        // Exactly max bytes with a known end: one chunk, closed by the incoming flag.
        out.clear();
        rc.begin(ByteRange::whole(4));
        rc.push("abcd".into(), &mut out);
        assert_eq!(out.len(), 2, "not closed before the incoming end line");
        rc.end(Flag::Aborted, &mut out);
        assert_eq!(
            chunks_of(&out),
            [(ByteRange::whole(4), b"abcd".to_vec(), Flag::Aborted)]
        );
    }
}
