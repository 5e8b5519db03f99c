//! The incremental MSRP parser: a TCP byte stream in, [`Event`]s out (RFC 4975 §7, §9).
//!
//! The parser is fed [`Bytes`] as they come off the socket, split anywhere, and yields the head
//! of each request or response once its header section is complete, then the body as slices of
//! the fed buffers (no copy) as they arrive, then the end line's flag. A relay can therefore
//! forward a chunk's body before the chunk is complete while knowing its headers.
//!
//! The end of a body is found by scanning for `CRLF "-------" transact-id flag CRLF` (§7.1).
//! Body bytes that only look like an end line (another transaction id, a missing flag, a
//! missing CRLF) are body; when such a lookalike straddles two feeds, the held back bytes (at
//! most 44) are released as one small copied slice.
//!
//! Memory is bounded: the header section is buffered up to [`Limits::max_head`]; bodies are never
//! buffered. A body longer than [`Limits::max_chunk`] is cut: the parser reports a
//! [`Reject`] (413) and skips to the end line, so a chunk that never ends costs no memory.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::head::{parse_headers, parse_start_line, Flag, Head, Kind, ParseError};
use crate::sip::message::{memchr, trim};

/// The bounds of what the parser holds or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest header section (start line and header fields), in bytes.
    pub max_head: usize,
    /// The largest body of one chunk, in bytes.
    pub max_chunk: u64,
}

impl Default for Limits {
    /// 16 KiB of header section, 16 MiB of chunk body.
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_chunk: 16 * 1024 * 1024,
        }
    }
}

/// What the parser found in the stream.
// The head is boxed: an event is moved several times on its way (into the parser's queue,
// out of it, into the reader's handlers), and a head is ten times the size of the other
// variants: one allocation per head costs less than those copies (perf/reference/README.md,
// "Measured (MSRP), 2026-11-28 morning").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The start line and header fields of a request or response.
    Head(Box<Head>),
    /// A piece of the body of the current request, in order (a slice of the input).
    Body(Bytes),
    /// The end line of the current request or response, with its continuation flag.
    End(Flag),
    /// A transaction the parser did not accept; its remaining bytes are skipped and no `End`
    /// follows. Answer a request with `error.status()` (a response cannot be answered).
    Reject(Box<Reject>),
}

/// A transaction cut short by a recoverable [`ParseError`], with what is needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub error: ParseError,
    /// The transaction id of the start line.
    pub tid: Bytes,
    /// True for a request (answerable), false for a response.
    pub request: bool,
    /// The To-Path value, if it was read.
    pub to_path: Option<Bytes>,
    /// The From-Path value, if it was read.
    pub from_path: Option<Bytes>,
    /// True if the [`Event::Head`] of this transaction was already delivered: the chunk was cut
    /// in its body (a relay ends what it forwarded with a `#` end line).
    pub after_head: bool,
}

/// The incremental parser of one MSRP connection (RFC 4975 §9).
///
/// Drive it with [`Parser::feed`] and then [`Parser::poll`] until it returns `None`. A
/// `Some(Err(_))` is fatal (the stream cannot be resynchronised): close the connection.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    input: Bytes,
    out: VecDeque<Event>,
    state: State,
}

#[derive(Debug)]
enum State {
    Head(HeadScan),
    Body { scan: EndScan, len: u64 },
    Skip(EndScan),
    Dead,
}

/// The header section being collected.
#[derive(Debug, Default)]
struct HeadScan {
    /// The head's bytes when it spans feeds (empty while the head lies in `input`).
    buf: BytesMut,
    /// The offset, from the head's start, of the first byte not yet split into lines.
    pos: usize,
    /// The start line's transaction id and request or response, once it is read (parsed once:
    /// the head's fields are parsed from the lines after it).
    start: Option<(Bytes, Kind)>,
}

enum LineEnd {
    /// The header section goes on.
    More,
    /// An empty line: a body follows.
    Body,
    /// The end line of a request or response without body.
    End(Flag),
}

impl Parser {
    /// A parser with the given limits.
    pub fn new(limits: Limits) -> Parser {
        Parser {
            limits,
            input: Bytes::new(),
            out: VecDeque::new(),
            state: State::Head(HeadScan::default()),
        }
    }

    /// Adds received bytes. Poll until `None` before feeding again: bytes fed while earlier
    /// ones are still unparsed are joined by a copy.
    pub fn feed(&mut self, data: Bytes) {
        if matches!(self.state, State::Dead) || data.is_empty() {
            return;
        }
        if self.input.is_empty() {
            self.input = data;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + data.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&data);
            self.input = joined.freeze();
        }
    }

    /// The next event, `None` when the fed bytes are used up, `Some(Err)` once on a fatal error
    /// (and `None` from then on).
    pub fn poll(&mut self) -> Option<Result<Event, ParseError>> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(Ok(e));
            }
            if self.input.is_empty() || matches!(self.state, State::Dead) {
                return None;
            }
            if let Err(e) = self.step() {
                self.state = State::Dead;
                self.input = Bytes::new();
                return Some(Err(e));
            }
        }
    }

    /// True between the head of a request with a body and its end line.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    fn step(&mut self) -> Result<(), ParseError> {
        match &mut self.state {
            State::Head(_) => self.step_head(),
            State::Body { .. } | State::Skip(_) => {
                self.step_body();
                Ok(())
            }
            State::Dead => Ok(()),
        }
    }

    /// Splits input into head lines until the header section ends or the input is used up.
    fn step_head(&mut self) -> Result<(), ParseError> {
        let max = self.limits.max_head;
        let State::Head(hs) = &mut self.state else {
            return Ok(());
        };
        loop {
            // The next line: in `input` directly while nothing is buffered, else appended.
            let direct = hs.buf.is_empty();
            let nl = if direct {
                memchr(b'\n', &self.input[hs.pos..]).map(|p| hs.pos + p)
            } else {
                memchr(b'\n', &self.input).map(|p| hs.buf.len() + p)
            };
            let Some(nl) = nl else {
                let have = if direct {
                    self.input.len()
                } else {
                    hs.buf.len() + self.input.len()
                };
                if have > max {
                    return self.head_too_large();
                }
                hs.buf.extend_from_slice(&self.input);
                self.input = Bytes::new();
                return Ok(());
            };
            if nl >= max {
                return self.head_too_large();
            }
            if !direct {
                let take = nl + 1 - hs.buf.len();
                hs.buf.extend_from_slice(&self.input[..take]);
                self.input.advance(take);
            }
            let view: &[u8] = if direct { &self.input } else { &hs.buf };
            let line_start = hs.pos;
            let mut line = &view[line_start..nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            hs.pos = nl + 1;
            let Some((tid, _)) = &hs.start else {
                if line.is_empty() {
                    // Lenient: blank lines between transactions are skipped.
                    if direct {
                        self.input.advance(hs.pos);
                    } else {
                        hs.buf.clear();
                    }
                    hs.pos = 0;
                    continue;
                }
                let line = if direct {
                    self.input.slice_ref(line)
                } else {
                    Bytes::copy_from_slice(line)
                };
                hs.start = Some(parse_start_line(&line)?);
                continue;
            };
            let end = if line.is_empty() {
                LineEnd::Body
            } else {
                match end_line_flag(line, tid) {
                    Some(f) => LineEnd::End(f),
                    None => LineEnd::More,
                }
            };
            if matches!(end, LineEnd::More) {
                continue;
            }
            let head = if direct {
                self.input.split_to(hs.pos)
            } else {
                std::mem::take(&mut hs.buf).freeze()
            };
            let Some((tid, kind)) = hs.start.take() else {
                return Ok(());
            };
            self.finish_head(tid, kind, head, line_start, end);
            return Ok(());
        }
    }

    /// The header section `head` (its start line parsed into `tid` and `kind`) is complete;
    /// `lines_end` is where its terminating line starts.
    fn finish_head(&mut self, tid: Bytes, kind: Kind, head: Bytes, lines_end: usize, end: LineEnd) {
        let first_nl = memchr(b'\n', &head).unwrap_or(0);
        let has_body = matches!(end, LineEnd::Body);
        let request = matches!(kind, Kind::Request(_));
        let parsed = parse_headers(
            tid.clone(),
            kind,
            &head.slice(..lines_end),
            first_nl + 1,
            has_body,
        );
        match parsed {
            Ok(h) => {
                self.out.push_back(Event::Head(Box::new(h)));
                self.state = match end {
                    LineEnd::End(f) => {
                        self.out.push_back(Event::End(f));
                        State::Head(HeadScan::default())
                    }
                    _ => State::Body {
                        scan: EndScan::new(tid, true),
                        len: 0,
                    },
                };
            }
            Err(error) => {
                // The start line was accepted while scanning, so this is a header error.
                let lines = head.slice(first_nl + 1..lines_end);
                self.out.push_back(Event::Reject(Box::new(Reject {
                    error,
                    tid: tid.clone(),
                    request,
                    to_path: raw_header(&lines, b"to-path"),
                    from_path: raw_header(&lines, b"from-path"),
                    after_head: false,
                })));
                self.state = if has_body {
                    State::Skip(EndScan::new(tid, true))
                } else {
                    State::Head(HeadScan::default())
                };
            }
        }
    }

    /// The header section outgrew the limit: skip the transaction if its id is known.
    fn head_too_large(&mut self) -> Result<(), ParseError> {
        let State::Head(hs) = &mut self.state else {
            return Ok(());
        };
        let Some((tid, kind)) = hs.start.clone() else {
            return Err(ParseError::StartLineTooLong);
        };
        // Resume the end-line search at the start of the line being read.
        let mut scan = EndScan::new(tid.clone(), true);
        if hs.buf.is_empty() {
            let pos = hs.pos.min(self.input.len());
            self.input.advance(pos);
        } else if let Some(partial) = hs.buf.get(hs.pos..) {
            // A body may not be emitted here: only the matcher state matters.
            scan.scan(partial);
        }
        self.out.push_back(Event::Reject(Box::new(Reject {
            error: ParseError::HeadTooLarge,
            tid,
            request: matches!(kind, Kind::Request(_)),
            to_path: None,
            from_path: None,
            after_head: false,
        })));
        self.state = State::Skip(scan);
        Ok(())
    }

    /// Forwards (or skips) body bytes up to the end line.
    fn step_body(&mut self) {
        let max_chunk = self.limits.max_chunk;
        let (scan, emit_len) = match &mut self.state {
            State::Body { scan, len } => (scan, Some(len)),
            State::Skip(scan) => (scan, None),
            _ => return,
        };
        let found = scan.scan(&self.input);
        let tid = scan.tid.clone();
        let emit = emit_len.is_some();
        if let Some(len) = emit_len {
            *len += (found.released.len() + found.body_to) as u64;
            if *len > max_chunk {
                self.out.push_back(Event::Reject(Box::new(Reject {
                    error: ParseError::ChunkTooLarge,
                    tid: tid.clone(),
                    request: true,
                    to_path: None,
                    from_path: None,
                    after_head: true,
                })));
                match found.end {
                    Some((_, used)) => {
                        self.input.advance(used);
                        self.state = State::Head(HeadScan::default());
                    }
                    None => {
                        self.input = Bytes::new();
                        let State::Body { scan, .. } =
                            std::mem::replace(&mut self.state, State::Dead)
                        else {
                            return;
                        };
                        self.state = State::Skip(scan);
                    }
                }
                return;
            }
            if !found.released.is_empty() {
                self.out.push_back(Event::Body(found.released));
            }
            if found.body_to > 0 {
                self.out
                    .push_back(Event::Body(self.input.slice(..found.body_to)));
            }
        }
        match found.end {
            Some((flag, used)) => {
                if emit {
                    self.out.push_back(Event::End(flag));
                }
                self.input.advance(used);
                self.state = State::Head(HeadScan::default());
            }
            None => self.input = Bytes::new(),
        }
    }
}

/// The flag of `line` if it is `"-------" tid flag` (§9 `end-line`, without CRLF).
fn end_line_flag(line: &[u8], tid: &[u8]) -> Option<Flag> {
    let rest = line.strip_prefix(b"-------")?.strip_prefix(tid)?;
    match rest {
        [f] => Flag::from_byte(*f),
        _ => None,
    }
}

/// The value of the first header line named `name` (lower case) in `lines`, best effort.
fn raw_header(lines: &Bytes, name: &[u8]) -> Option<Bytes> {
    let line = lines
        .split(|&c| c == b'\n')
        .find(|l| memchr(b':', l).is_some_and(|colon| l[..colon].eq_ignore_ascii_case(name)))?;
    let colon = memchr(b':', line)?;
    let value = line[colon + 1..]
        .strip_suffix(b"\r")
        .unwrap_or(&line[colon + 1..]);
    Some(trim(&lines.slice_ref(value)))
}

const PREFIX: &[u8; 9] = b"\r\n-------";

/// The end-line search (RFC 4975 §7.1): a matcher of `CRLF "-------" tid flag CRLF` that keeps
/// its state across feeds.
#[derive(Debug)]
struct EndScan {
    tid: Bytes,
    /// Bytes of the pattern matched so far.
    k: usize,
    /// How many of the matched bytes are virtual (the CRLF that ended the line before the
    /// body: an end line may follow the empty line directly).
    virt: usize,
    /// The flag byte, once matched.
    flag: u8,
}

/// One scan's result.
struct Scanned {
    /// Held back bytes of an earlier feed that turned out to be body (they come first).
    released: Bytes,
    /// `buf[..body_to]` is body.
    body_to: usize,
    /// The end line's flag and how many bytes of `buf` were used through its CRLF.
    end: Option<(Flag, usize)>,
}

impl EndScan {
    fn new(tid: Bytes, at_line_start: bool) -> EndScan {
        let k = if at_line_start { 2 } else { 0 };
        EndScan {
            tid,
            k,
            virt: k,
            flag: b'$',
        }
    }

    /// The pattern length before the flag.
    fn len(&self) -> usize {
        PREFIX.len() + self.tid.len()
    }

    /// Byte `j` of the full pattern, with `flag` at the flag position.
    fn pattern_byte(&self, j: usize, flag: u8) -> u8 {
        let l = self.len();
        if j < PREFIX.len() {
            PREFIX[j]
        } else if j < l {
            self.tid[j - PREFIX.len()]
        } else if j == l {
            flag
        } else if j == l + 1 {
            b'\r'
        } else {
            b'\n'
        }
    }

    fn scan(&mut self, buf: &[u8]) -> Scanned {
        let l = self.len();
        let carried_from = self.virt;
        let carried_flag = self.flag;
        let mut pending = self.k - self.virt;
        let mut released = 0usize;
        let mut start: Option<usize> = None;
        let mut end = None;
        let mut i = 0;
        while i < buf.len() {
            if self.k == 0 {
                match memchr(b'\r', &buf[i..]) {
                    None => break,
                    Some(p) => {
                        i += p;
                        start = Some(i);
                        self.k = 1;
                        i += 1;
                        continue;
                    }
                }
            }
            let c = buf[i];
            let k = self.k;
            let ok = if k == l {
                Flag::from_byte(c).is_some()
            } else {
                c == self.pattern_byte(k, 0)
            };
            if ok {
                if k == l {
                    self.flag = c;
                }
                self.k += 1;
                i += 1;
                if self.k == l + 3 {
                    end = Flag::from_byte(self.flag).map(|f| (f, i));
                    break;
                }
                continue;
            }
            // Mismatch: what was matched is body, except a CR that may start an end line.
            let restart_at_cr = k == l + 2;
            self.virt = 0;
            if start.is_none() {
                if restart_at_cr && i == 0 {
                    released += pending - 1;
                    pending = 1;
                    self.k = 1;
                    continue;
                }
                released += pending;
                pending = 0;
            }
            if restart_at_cr {
                start = Some(i - 1);
                self.k = 1;
            } else {
                start = None;
                self.k = 0;
            }
        }
        let body_to = if self.k == 0 {
            buf.len()
        } else {
            start.unwrap_or(0)
        };
        let released = if released == 0 {
            Bytes::new()
        } else {
            (carried_from..carried_from + released)
                .map(|j| self.pattern_byte(j, carried_flag))
                .collect::<Vec<u8>>()
                .into()
        };
        if end.is_some() {
            self.k = 0;
            self.virt = 0;
        }
        Scanned {
            released,
            body_to,
            end,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::msrp::{FailureReport, Method};

    /// RFC 4975 §7.1.1: a message in two chunks, the first interruptible.
    pub(crate) const CHUNK1: &[u8] = b"MSRP dkei38sd SEND\r\n\
To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp\r\n\
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
Message-ID: 4564dpWd\r\n\
Byte-Range: 1-*/8\r\n\
Content-Type: text/plain\r\n\
\r\n\
abcd\r\n\
-------dkei38sd+\r\n";
    const CHUNK2: &[u8] = b"MSRP dkei38ia SEND\r\n\
To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp\r\n\
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
Message-ID: 4564dpWd\r\n\
Byte-Range: 5-8/8\r\n\
Content-Type: text/plain\r\n\
\r\n\
EFGH\r\n\
-------dkei38ia$\r\n";
    /// RFC 4975 §4: the SEND and its 200 OK.
    const RESPONSE: &[u8] = b"MSRP a786hjs2 200 OK\r\n\
To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
-------a786hjs2$\r\n";
    /// RFC 4975 §10 (example of a success report).
    const REPORT: &[u8] = b"MSRP dkei38sd REPORT\r\n\
To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n\
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
Message-ID: 12339sdqwer\r\n\
Byte-Range: 1-106/106\r\n\
Status: 000 200 OK\r\n\
-------dkei38sd$\r\n";

    fn stream() -> Vec<u8> {
        [CHUNK1, RESPONSE, CHUNK2, REPORT].concat()
    }

    /// Feeds `pieces` and returns the events, consecutive bodies joined (a fatal error last).
    pub(crate) fn run(limits: Limits, pieces: &[&[u8]]) -> Vec<Result<Event, ParseError>> {
        let mut p = Parser::new(limits);
        let mut out: Vec<Result<Event, ParseError>> = Vec::new();
        for piece in pieces {
            p.feed(Bytes::copy_from_slice(piece));
            while let Some(e) = p.poll() {
                if let (Ok(Event::Body(b)), Some(Ok(Event::Body(prev)))) = (&e, out.last_mut()) {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(b);
                    *prev = joined.into();
                    continue;
                }
                if let Ok(Event::Body(b)) = &e {
                    assert!(!b.is_empty(), "empty body event");
                }
                out.push(e);
            }
        }
        out
    }

    fn whole(input: &[u8]) -> Vec<Result<Event, ParseError>> {
        run(Limits::default(), &[input])
    }

    fn head(e: &Result<Event, ParseError>) -> &Head {
        match e {
            Ok(Event::Head(h)) => h,
            other => panic!("not a head: {other:?}"),
        }
    }

    fn body(s: &'static [u8]) -> Result<Event, ParseError> {
        Ok(Event::Body(Bytes::from_static(s)))
    }

    #[test]
    fn rfc_examples_parse() {
        let ev = whole(&stream());
        assert_eq!(ev.len(), 10, "{ev:?}");
        let h = head(&ev[0]);
        assert_eq!(&h.tid[..], b"dkei38sd");
        assert_eq!(h.method(), Some(&Method::Send));
        assert_eq!(
            &h.to_path[..],
            b"msrp://alice.example.com:7777/iau39soe2843z;tcp"
        );
        assert_eq!(
            &h.from_path[..],
            b"msrp://bob.example.com:8888/9di4eae923wzd;tcp"
        );
        assert_eq!(h.message_id.as_deref(), Some(&b"4564dpWd"[..]));
        assert_eq!(h.byte_range, ByteRange::parse(b"1-*/8"));
        assert_eq!(h.content_type.as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(h.failure_report(), FailureReport::Yes);
        assert!(h.has_body);
        assert_eq!(ev[1], body(b"abcd"));
        assert_eq!(ev[2], Ok(Event::End(Flag::Continues)));

        let r = head(&ev[3]);
        assert_eq!(r.code(), Some(200));
        assert_eq!(&r.tid[..], b"a786hjs2");
        assert!(!r.has_body);
        assert_eq!(
            r.kind,
            Kind::Response {
                code: 200,
                comment: Some(Bytes::from_static(b"OK"))
            }
        );
        assert_eq!(ev[4], Ok(Event::End(Flag::Complete)));

        assert_eq!(head(&ev[5]).byte_range, ByteRange::parse(b"5-8/8"));
        assert_eq!(ev[6], body(b"EFGH"));
        assert_eq!(ev[7], Ok(Event::End(Flag::Complete)));

        let rep = head(&ev[8]);
        assert_eq!(rep.method(), Some(&Method::Report));
        assert_eq!(rep.status.as_ref().map(|s| s.code), Some(200));
        assert_eq!(rep.failure_report(), FailureReport::No);
        assert_eq!(ev[9], Ok(Event::End(Flag::Complete)));
    }

    use crate::msrp::ByteRange;

    #[test]
    fn every_split_point_gives_the_same_events() {
        let s = stream();
        let reference = whole(&s);
        for i in 0..=s.len() {
            assert_eq!(
                run(Limits::default(), &[&s[..i], &s[i..]]),
                reference,
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(Limits::default(), &bytes), reference, "byte by byte");
        for i in (0..CHUNK1.len()).step_by(3) {
            for j in i..=CHUNK1.len() {
                let split = [&CHUNK1[..i], &CHUNK1[i..j], &CHUNK1[j..]];
                assert_eq!(
                    run(Limits::default(), &split),
                    whole(CHUNK1),
                    "split {i} {j}"
                );
            }
        }
    }

    /// Body bytes that look like the start of an end line, at every split point.
    #[test]
    fn end_line_lookalikes_are_body() {
        let tricky: &[u8] = b"a\r\n-------dkei38sd\r\n--------dkei38sd$\r-\r\n-------dkei38sX$\r\n\
-------dkei38sd+\r\r\r\n-------dkei38sd$x\r\n-------dkei38sd#\r\r\n-------dkei38sd";
        let mut msg = CHUNK1[..CHUNK1.len() - b"abcd\r\n-------dkei38sd+\r\n".len()].to_vec();
        msg.extend_from_slice(tricky);
        msg.extend_from_slice(b"\r\n-------dkei38sd#\r\n");
        msg.extend_from_slice(RESPONSE);
        let ev = whole(&msg);
        assert_eq!(ev[1], Ok(Event::Body(Bytes::copy_from_slice(tricky))));
        assert_eq!(ev[2], Ok(Event::End(Flag::Aborted)));
        assert_eq!(head(&ev[3]).code(), Some(200));
        assert_eq!(ev.len(), 5);
        for i in 0..=msg.len() {
            assert_eq!(
                run(Limits::default(), &[&msg[..i], &msg[i..]]),
                ev,
                "split at {i}"
            );
        }
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(run(Limits::default(), &bytes), ev);
    }

    #[test]
    fn empty_bodies() {
        // Per §9 (data is empty, then the CRLF before the end line) and without that CRLF.
        for msg in [
            &b"MSRP abcd1 SEND\r\nTo-Path: msrp://a/s;tcp\r\nFrom-Path: msrp://b/t;tcp\r\nMessage-ID: m123\r\nContent-Type: text/plain\r\n\r\n\r\n-------abcd1$\r\n"[..],
            &b"MSRP abcd1 SEND\r\nTo-Path: msrp://a/s;tcp\r\nFrom-Path: msrp://b/t;tcp\r\nMessage-ID: m123\r\nContent-Type: text/plain\r\n\r\n-------abcd1$\r\n"[..],
        ] {
            let ev = whole(msg);
            assert!(head(&ev[0]).has_body);
            assert_eq!(ev[1..], [Ok(Event::End(Flag::Complete))], "{ev:?}");
            for i in 0..=msg.len() {
                assert_eq!(run(Limits::default(), &[&msg[..i], &msg[i..]]), ev, "split at {i}");
            }
        }
    }

    #[test]
    fn body_is_a_slice_of_the_input() {
        let input = Bytes::copy_from_slice(CHUNK1);
        let mut p = Parser::new(Limits::default());
        p.feed(input.clone());
        assert!(matches!(p.poll(), Some(Ok(Event::Head(_)))));
        assert!(p.in_body());
        let Some(Ok(Event::Body(b))) = p.poll() else {
            panic!("no body")
        };
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
        assert!(range.contains(&(b.as_ptr() as usize)));
        assert_eq!(p.poll(), Some(Ok(Event::End(Flag::Continues))));
        assert!(!p.in_body());
    }

    #[test]
    fn body_is_forwarded_before_the_chunk_ends() {
        let mut p = Parser::new(Limits::default());
        p.feed(Bytes::copy_from_slice(&CHUNK1[..CHUNK1.len() - 20]));
        assert!(matches!(p.poll(), Some(Ok(Event::Head(_)))));
        assert_eq!(p.poll(), Some(body(b"abcd")));
        assert_eq!(p.poll(), None);
        assert!(p.in_body());
    }

    #[test]
    fn bad_start_lines_are_fatal() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"MSRP ab SEND\r\n",
            b"MSRP abcd1 20 OK\r\n",
            b"MSRP abcd1 send\r\n",
            b"MSRP abcd1\r\n",
        ] {
            let mut input = bad.to_vec();
            input.extend_from_slice(RESPONSE);
            let ev = whole(&input);
            assert_eq!(ev.len(), 1, "{ev:?}");
            assert!(ev[0]
                .as_ref()
                .is_err_and(|e| e.is_fatal() && e.status() == 400));
        }
        let mut p = Parser::new(Limits::default());
        p.feed(Bytes::from_static(b"GARBAGE\r\n"));
        assert!(matches!(p.poll(), Some(Err(ParseError::BadStartLine))));
        p.feed(Bytes::from_static(RESPONSE));
        assert_eq!(p.poll(), None);
    }

    #[test]
    fn bad_headers_are_rejected_and_skipped() {
        let bad =
            b"MSRP abcd1 SEND\r\nFrom-Path: msrp://b.example.com/t;tcp\r\nMessage-ID: m123\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n-------abcd1$\r\n";
        let mut input = bad.to_vec();
        input.extend_from_slice(RESPONSE);
        let ev = whole(&input);
        let Ok(Event::Reject(r)) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(r.error, ParseError::MissingHeader("To-Path"));
        assert_eq!(
            (r.error.status(), r.request, r.after_head),
            (400, true, false)
        );
        assert_eq!(&r.tid[..], b"abcd1");
        assert_eq!(
            r.from_path.as_deref(),
            Some(&b"msrp://b.example.com/t;tcp"[..])
        );
        assert_eq!(head(&ev[1]).code(), Some(200));
        assert_eq!(ev.len(), 3);

        let cases: [(&[u8], ParseError); 5] = [
            (
                b"Byte-Range: 1-x/5\r\n",
                ParseError::BadHeader("Byte-Range"),
            ),
            (
                b"Failure-Report: maybe\r\n",
                ParseError::BadHeader("Failure-Report"),
            ),
            (
                b"Success-Report: YES\r\n",
                ParseError::BadHeader("Success-Report"),
            ),
            (b"no colon here\r\n", ParseError::BadHeaderLine),
            (b"Message-ID: x\r\n", ParseError::BadHeader("Message-ID")),
        ];
        for (line, err) in cases {
            let mut input = CHUNK1.to_vec();
            let at = input.windows(4).position(|w| w == b"Cont").unwrap();
            input.splice(at..at, line.iter().copied());
            input.extend_from_slice(RESPONSE);
            let ev = whole(&input);
            assert!(
                matches!(&ev[0], Ok(Event::Reject(r)) if r.error == err),
                "{ev:?}"
            );
            assert_eq!(head(&ev[1]).code(), Some(200));
        }
    }

    #[test]
    fn oversize_head_is_skipped_and_the_stream_goes_on() {
        let limits = Limits {
            max_head: 256,
            ..Limits::default()
        };
        let mut big = CHUNK1.to_vec();
        let at = big.windows(4).position(|w| w == b"Cont").unwrap();
        let filler = format!("X-Filler: {}\r\n", "z".repeat(400));
        big.splice(at..at, filler.bytes());
        big.extend_from_slice(RESPONSE);
        let reference = run(limits, &[&big]);
        assert!(
            matches!(&reference[0], Ok(Event::Reject(r)) if r.error == ParseError::HeadTooLarge
                && &r.tid[..] == b"dkei38sd" && r.request)
        );
        assert_eq!(head(&reference[1]).code(), Some(200));
        assert_eq!(reference.len(), 3);
        for i in 0..=big.len() {
            assert_eq!(
                run(limits, &[&big[..i], &big[i..]]),
                reference,
                "split at {i}"
            );
        }
        // A start line longer than the limit cannot be resynchronised.
        let long = format!("MSRP abcd1 {}\r\n", "X".repeat(300));
        let ev = run(limits, &[long.as_bytes()]);
        assert_eq!(ev, [Err(ParseError::StartLineTooLong)]);
    }

    #[test]
    fn never_ending_body_is_cut() {
        let limits = Limits {
            max_chunk: 100,
            ..Limits::default()
        };
        let mut p = Parser::new(limits);
        let head_len = CHUNK1.len() - b"abcd\r\n-------dkei38sd+\r\n".len();
        p.feed(Bytes::copy_from_slice(&CHUNK1[..head_len]));
        assert!(matches!(p.poll(), Some(Ok(Event::Head(_)))));
        let mut forwarded = 0;
        let mut rejected = None;
        for _ in 0..1000 {
            p.feed(Bytes::from_static(&[b'x'; 64]));
            while let Some(e) = p.poll() {
                match e {
                    Ok(Event::Body(b)) => forwarded += b.len(),
                    Ok(Event::Reject(r)) => rejected = Some(r),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(forwarded <= 100, "{forwarded}");
        let r = rejected.unwrap();
        assert_eq!((r.error.status(), r.after_head), (413, true));
        assert!(!r.error.is_fatal());
        // The parser resynchronises at the end line.
        p.feed(Bytes::from_static(b"\r\n-------dkei38sd+\r\n"));
        p.feed(Bytes::from_static(RESPONSE));
        assert!(matches!(p.poll(), Some(Ok(Event::Head(h))) if h.code() == Some(200)));
        assert_eq!(p.poll(), Some(Ok(Event::End(Flag::Complete))));
        assert_eq!(p.poll(), None);
    }

    #[test]
    fn extension_headers_are_kept() {
        let msg = b"MSRP abcd1 SEND\r\nTo-Path: msrp://a/s;tcp\r\nFrom-Path: msrp://b/t;tcp\r\n\
Message-ID: m123\r\nSuccess-Report: yes\r\nFailure-Report: partial\r\nExpires: 300\r\n\
Content-Disposition: inline\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------abcd1$\r\n";
        let ev = whole(msg);
        let h = head(&ev[0]);
        assert_eq!(h.success_report, Some(true));
        assert_eq!(h.failure_report(), FailureReport::Partial);
        assert_eq!(h.other("expires").map(|v| &v[..]), Some(&b"300"[..]));
        assert_eq!(h.other.len(), 2);
        assert_eq!(ev[1], body(b"hi"));
    }

    /// Mutated streams fed in random pieces: no panic, and body never exceeds the limit.
    #[test]
    fn mutated_input_never_panics() {
        let mut rng = crate::sip::builder::BranchGen::new(42);
        let base = stream();
        let limits = Limits {
            max_head: 200,
            max_chunk: 64,
        };
        for _ in 0..2000 {
            let mut m = base.clone();
            for _ in 0..(rng.next_u64() % 4 + 1) {
                let at = (rng.next_u64() % m.len() as u64) as usize;
                let byte = [b'\r', b'\n', b'-', b'$', b'#', b':', b' ', b'x']
                    [(rng.next_u64() % 8) as usize];
                m[at] = byte;
            }
            let mut p = Parser::new(limits);
            let mut at = 0;
            let mut body = 0u64;
            while at < m.len() {
                let n = (rng.next_u64() % 40 + 1) as usize;
                let e = (at + n).min(m.len());
                p.feed(Bytes::copy_from_slice(&m[at..e]));
                at = e;
                while let Some(ev) = p.poll() {
                    match ev {
                        Ok(Event::Body(b)) => body += b.len() as u64,
                        Ok(Event::Head(_) | Event::End(_) | Event::Reject(_)) => body = 0,
                        Err(e) => assert!(e.is_fatal()),
                    }
                    assert!(body <= limits.max_chunk);
                }
            }
        }
    }
}
