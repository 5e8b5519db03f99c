//! Serialising MSRP requests, responses and chunks (RFC 4975 §7.1, §7.2, §9), and transaction
//! and message ids.
//!
//! A chunk is written as three buffers, head, body and end line, so that a received body slice
//! goes out as it came (a vectored write) and only the head and the end line are new bytes.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::head::{FailureReport, Flag, Head, Kind};
use super::uri::first_item;
use crate::sip::builder::BranchGen;

/// The reason phrase of an MSRP status code (RFC 4975 §10, RFC 4976 §5).
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        408 => "Timeout",
        413 => "Message Too Large",
        415 => "Unsupported Media Type",
        423 => "Parameter Out Of Bounds",
        481 => "Session Does Not Exist",
        501 => "Unknown Method",
        506 => "Session Already In Use",
        _ => "Unknown",
    }
}

/// Writes the head: start line, header fields (Content-Type last, §7.1) and, if the head has a
/// body, the empty line before it.
pub fn head(h: &Head, out: &mut BytesMut) {
    out.put_slice(b"MSRP ");
    out.put_slice(&h.tid);
    out.put_u8(b' ');
    match &h.kind {
        Kind::Request(m) => out.put_slice(m.as_bytes()),
        Kind::Response { code, comment } => {
            let _ = write!(out, "{code:03}");
            if let Some(c) = comment {
                out.put_u8(b' ');
                out.put_slice(c);
            }
        }
    }
    out.put_slice(b"\r\n");
    line(out, b"To-Path", &h.to_path);
    line(out, b"From-Path", &h.from_path);
    if let Some(v) = &h.message_id {
        line(out, b"Message-ID", v);
    }
    if let Some(v) = h.success_report {
        line(out, b"Success-Report", if v { b"yes" } else { b"no" });
    }
    if let Some(v) = h.failure_report {
        let v: &[u8] = match v {
            FailureReport::Yes => b"yes",
            FailureReport::Partial => b"partial",
            FailureReport::No => b"no",
        };
        line(out, b"Failure-Report", v);
    }
    if let Some(r) = &h.byte_range {
        let _ = write!(out, "Byte-Range: {r}\r\n");
    }
    if let Some(s) = &h.status {
        let _ = write!(out, "Status: {:03} {:03}", s.namespace, s.code);
        if let Some(r) = &s.reason {
            out.put_u8(b' ');
            out.put_slice(r);
        }
        out.put_slice(b"\r\n");
    }
    if let Some(v) = &h.use_path {
        line(out, b"Use-Path", v);
    }
    for (n, v) in &h.other {
        line(out, n, v);
    }
    if let Some(v) = &h.content_type {
        line(out, b"Content-Type", v);
    }
    if h.has_body {
        out.put_slice(b"\r\n");
    }
}

/// Writes the end line `"-------" tid flag CRLF` (§9), preceded by the CRLF that ends a body.
pub fn end_line(tid: &[u8], flag: Flag, after_body: bool, out: &mut BytesMut) {
    if after_body {
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"-------");
    out.put_slice(tid);
    out.put_u8(flag.as_byte());
    out.put_slice(b"\r\n");
}

/// The spare capacity [`make_room`] keeps, and the block it takes when short.
const ROOM_MIN: usize = 1024;
const ROOM_BLOCK: usize = 8 * 1024;

/// Readies `buf`, a buffer that messages are written into and split off one after another,
/// for the next one: when less than 1 KiB is spare it takes an 8 KiB block, which the next
/// messages share (each split-off message holds a count on it). Without this a buffer left
/// empty by a split grows every message from nothing, a reallocation at each doubling.
pub fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < ROOM_MIN {
        buf.reserve(ROOM_BLOCK);
    }
}

/// A whole chunk as head, body and end line, for a vectored write; the body is not copied.
/// `h.has_body` is set from `body` (an empty body gets no Content-Type section). `buf` is
/// split off, and keeps room for the next ([`make_room`]).
pub fn chunk(h: &mut Head, body: Bytes, flag: Flag, buf: &mut BytesMut) -> [Bytes; 3] {
    make_room(buf);
    h.has_body = !body.is_empty();
    head(h, buf);
    let head_bytes = buf.split().freeze();
    end_line(&h.tid, flag, h.has_body, buf);
    [head_bytes, body, buf.split().freeze()]
}

/// A head without body and its end line (responses, REPORTs), as one buffer split off `buf`,
/// which keeps room for the next ([`make_room`]).
pub fn bodyless(h: &Head, buf: &mut BytesMut) -> Bytes {
    make_room(buf);
    bodyless_into(h, buf);
    buf.split().freeze()
}

/// Appends a head without body and its end line to `out` (several responses in one buffer).
pub fn bodyless_into(h: &Head, out: &mut BytesMut) {
    debug_assert!(!h.has_body);
    head(h, out);
    end_line(&h.tid, Flag::Complete, false, out);
}

/// The response to `req` (RFC 4975 §7.2): same transaction id; To-Path is the previous hop
/// (the first From-Path URI), From-Path our URI (the first To-Path URI). `None` if the request
/// is a REPORT or its Failure-Report forbids this response (§7.1.1).
pub fn response(req: &Head, code: u16, comment: Option<&'static str>) -> Option<Head> {
    let fr = req.failure_report();
    if fr == FailureReport::No || (fr == FailureReport::Partial && code == 200) {
        return None;
    }
    // The first URI as the peer wrote it: no parse and re-print per response.
    let hop = |p: &Bytes| first_item(p).unwrap_or_else(|| p.clone());
    let comment = Bytes::from_static(comment.unwrap_or(reason(code)).as_bytes());
    Some(Head::new(
        req.tid.clone(),
        Kind::Response {
            code,
            comment: Some(comment),
        },
        hop(&req.from_path),
        hop(&req.to_path),
    ))
}

/// Transaction ids and Message-IDs: 16 hex digits (64 random bits, RFC 4975 §7.1) from a
/// deterministic generator seeded by the caller.
#[derive(Debug, Clone)]
pub struct IdGen(BranchGen, BytesMut);

/// The block ids are written into (64 ids).
const ID_BLOCK: usize = 64 * 16;

impl IdGen {
    /// A generator starting from `seed` (take it from the OS RNG in the driver).
    pub fn new(seed: u64) -> IdGen {
        IdGen(BranchGen::new(seed), BytesMut::new())
    }

    /// A new id: 16 lower-case hex digits, a valid `ident` (§9).
    pub fn next_id(&mut self) -> Bytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let v = self.0.next_u64();
        let out = &mut self.1;
        if out.capacity() < 16 {
            // Ids share a block (64 at a time), not an allocation each.
            out.reserve(ID_BLOCK);
        }
        for shift in (0..16).rev() {
            out.put_u8(HEX[((v >> (shift * 4)) & 0xf) as usize]);
        }
        out.split().freeze()
    }
}

fn line(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msrp::parser::tests::{run, CHUNK1};
    use crate::msrp::{ByteRange, Event, Limits, Method, Status};

    fn parse_one(raw: &[u8]) -> (Head, Vec<Event>) {
        let mut ev: Vec<Event> = run(Limits::default(), &[raw])
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let Event::Head(h) = ev.remove(0) else {
            panic!("no head")
        };
        (*h, ev)
    }

    #[test]
    fn parse_print_round_trip() {
        let (h, ev) = parse_one(CHUNK1);
        let Event::Body(body) = ev[0].clone() else {
            panic!()
        };
        let mut h2 = h.clone();
        let mut buf = BytesMut::new();
        let parts = chunk(&mut h2, body.clone(), Flag::Continues, &mut buf);
        assert_eq!(parts.concat(), CHUNK1);
        assert_eq!(parts[1].as_ptr(), body.as_ptr(), "the body is not copied");
    }

    #[test]
    fn responses_follow_7_2_and_failure_report() {
        let (req, _) = parse_one(CHUNK1);
        let ok = response(&req, 200, None).unwrap();
        assert_eq!(
            &ok.to_path[..],
            b"msrp://bob.example.com:8888/9di4eae923wzd;tcp"
        );
        assert_eq!(
            &ok.from_path[..],
            b"msrp://alice.example.com:7777/iau39soe2843z;tcp"
        );
        let raw = bodyless(&ok, &mut BytesMut::new());
        assert_eq!(
            &raw[..],
            b"MSRP dkei38sd 200 OK\r\nTo-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
From-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp\r\n-------dkei38sd$\r\n"
        );
        let (back, ev) = parse_one(&raw);
        assert_eq!(back, ok);
        assert_eq!(ev, [Event::End(Flag::Complete)]);
        for code in [400, 403, 408, 413, 415, 423, 481, 501, 506] {
            let r = response(&req, code, None).unwrap();
            assert_eq!(r.code(), Some(code));
            assert_ne!(reason(code), "Unknown");
        }
        // The first URI of each path, as the peer wrote it (not re-printed).
        let mut two = req.clone();
        two.from_path = "msrp://Bob.Example.com:8888/9di;tcp \t msrp://relay:1/x;tcp".into();
        two.to_path = "  msrp://us:2855/abc;tcp".into();
        let r = response(&two, 200, None).unwrap();
        assert_eq!(&r.to_path[..], b"msrp://Bob.Example.com:8888/9di;tcp");
        assert_eq!(&r.from_path[..], b"msrp://us:2855/abc;tcp");
        let mut partial = req.clone();
        partial.failure_report = Some(FailureReport::Partial);
        assert!(response(&partial, 200, None).is_none());
        assert!(response(&partial, 413, None).is_some());
        partial.failure_report = Some(FailureReport::No);
        assert!(response(&partial, 481, None).is_none());
        let mut report = req.clone();
        report.kind = Kind::Request(Method::Report);
        assert!(response(&report, 200, None).is_none());
    }

    #[test]
    fn report_round_trip_and_ids() {
        let mut ids = IdGen::new(7);
        let (a, b) = (ids.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert!(crate::msrp::head::is_ident(&a) && a.len() == 16);
        assert_eq!(IdGen::new(7).next_id(), a, "seeded");
        let mut h = Head::new(
            a,
            Kind::Request(Method::Report),
            "msrp://a.example.com:1/x;tcp".into(),
            "msrp://b.example.com:2/y;tcp".into(),
        );
        h.message_id = Some(b);
        h.byte_range = Some(ByteRange::whole(106));
        h.status = Some(Status {
            namespace: 0,
            code: 408,
            reason: Some("Timeout".into()),
        });
        let raw = bodyless(&h, &mut BytesMut::new());
        assert_eq!(parse_one(&raw).0, h);
    }
}
