//! Receiving whole messages as an MSRP endpoint (RFC 4975 §7.3, §5.1 chunking): the chunks of
//! each message, matched by Message-ID and placed by Byte-Range, joined into one body, so that
//! a message is handled (stored) only once its `$` chunk arrived. Used by the server's large
//! message mode (OMA CPM / RCS: a one-shot MSRP session carrying one message), where the
//! server is the recipient's stand-in.
//!
//! ```text
//!   head ──► on_head (413 at once if Byte-Range total > max) ── body* ──► on_body
//!   end  ──► on_end: `+` Accepted (200) · `$` Complete(message) (200 after storing)
//!                   `#` Aborted (200, message dropped) · over max Refused(413, dropped)
//! ```
//!
//! Memory is bounded: at most [`MAX_PARTIAL`] unfinished messages, each at most `max` bytes
//! (the bytes beyond are not kept: the message is refused).

use bytes::{Bytes, BytesMut};

use super::head::{Flag, Head};

/// Unfinished messages kept per session; a new one beyond drops the oldest (RFC 4975 §7.1:
/// chunks of several messages may interleave, but a one-shot session carries one at a time).
pub const MAX_PARTIAL: usize = 4;

/// A message whose `$` chunk arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// Its Message-ID (RFC 4975 §7.1.1; mandatory in SEND, empty if a sender left it out).
    pub message_id: Bytes,
    /// The Content-Type of its first chunk (`None` for an empty message).
    pub content_type: Option<Bytes>,
    /// The whole body.
    pub body: Bytes,
    /// Whether the sender asked for a success REPORT (Success-Report: yes, §7.1.1).
    pub success_report: bool,
}

/// What the end of a chunk means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// A `+` chunk taken: answer 200.
    Accepted,
    /// The message is complete: answer once it is handled (200, or the error).
    Complete(Complete),
    /// The sender aborted the message (`#`): it is dropped; answer 200.
    Aborted,
    /// The message is refused (413: larger than the limit, §7.2 "the recipient wishes the
    /// sender to stop sending"; 400: a chunk out of place); the message is dropped.
    Refused(u16),
}

#[derive(Debug)]
struct Partial {
    message_id: Bytes,
    content_type: Option<Bytes>,
    body: BytesMut,
    success_report: bool,
    /// The status every further chunk of it gets (it was refused).
    refused: Option<u16>,
}

/// The chunks being joined on one MSRP session.
#[derive(Debug)]
pub struct Assembler {
    max: u64,
    partial: Vec<Partial>,
    /// The message the current chunk belongs to (index into `partial`), between a head and its
    /// end line.
    cur: Option<usize>,
}

impl Assembler {
    /// Joins messages of at most `max` bytes.
    pub fn new(max: u64) -> Assembler {
        Assembler {
            max,
            partial: Vec::new(),
            cur: None,
        }
    }

    /// Unfinished messages held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Bytes held for unfinished messages.
    pub fn held_bytes(&self) -> usize {
        self.partial.iter().map(|p| p.body.len()).sum()
    }

    /// The head of a SEND chunk with a body: finds (or starts) its message and checks where
    /// the chunk goes.
    pub fn on_head(&mut self, head: &Head) {
        let id = head.message_id.clone().unwrap_or_default();
        let i = match self.partial.iter().position(|p| p.message_id == id) {
            Some(i) => i,
            None => {
                if self.partial.len() >= MAX_PARTIAL {
                    self.partial.remove(0);
                }
                self.partial.push(Partial {
                    message_id: id,
                    content_type: head.content_type.clone(),
                    body: BytesMut::new(),
                    success_report: head.success_report == Some(true),
                    refused: None,
                });
                self.partial.len() - 1
            }
        };
        self.cur = Some(i);
        let max = self.max;
        let p = &mut self.partial[i];
        if p.refused.is_some() {
            return;
        }
        let range = head.range();
        if range.total.is_some_and(|t| t > max) {
            return Self::refuse(p, 413);
        }
        // In order, or a resend of bytes already held (the later copy wins); a gap cannot be
        // filled by a one-pass receiver.
        let at = range.start.saturating_sub(1);
        if at > p.body.len() as u64 {
            return Self::refuse(p, 400);
        }
        p.body.truncate(at as usize);
    }

    /// A piece of the current chunk's body (copied: the message is kept whole until stored).
    pub fn on_body(&mut self, data: &[u8]) {
        let max = self.max;
        let Some(p) = self.cur.and_then(|i| self.partial.get_mut(i)) else {
            return;
        };
        if p.refused.is_some() {
            return;
        }
        if (p.body.len() + data.len()) as u64 > max {
            return Self::refuse(p, 413);
        }
        p.body.extend_from_slice(data);
    }

    /// The end line of the current chunk.
    pub fn on_end(&mut self, flag: Flag) -> ChunkOutcome {
        let Some(i) = self.cur.take().filter(|&i| i < self.partial.len()) else {
            return ChunkOutcome::Refused(400);
        };
        if let Some(code) = self.partial[i].refused {
            if flag != Flag::Continues {
                self.partial.remove(i);
            }
            return ChunkOutcome::Refused(code);
        }
        match flag {
            Flag::Continues => ChunkOutcome::Accepted,
            Flag::Aborted => {
                self.partial.remove(i);
                ChunkOutcome::Aborted
            }
            Flag::Complete => {
                let p = self.partial.remove(i);
                ChunkOutcome::Complete(Complete {
                    message_id: p.message_id,
                    content_type: p.content_type,
                    body: p.body.freeze(),
                    success_report: p.success_report,
                })
            }
        }
    }

    /// The current chunk was cut by the parser (a malformed or oversized chunk): its message
    /// is dropped.
    pub fn on_reject(&mut self) {
        if let Some(i) = self.cur.take().filter(|&i| i < self.partial.len()) {
            self.partial.remove(i);
        }
    }

    fn refuse(p: &mut Partial, code: u16) {
        p.refused = Some(code);
        p.body = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msrp::{ByteRange, Kind, Method};

    fn head(id: &str, start: u64, end: u64, total: Option<u64>) -> Head {
        let mut h = Head::new(
            Bytes::from_static(b"t1"),
            Kind::Request(Method::Send),
            Bytes::from_static(b"msrp://a:1/s;tcp"),
            Bytes::from_static(b"msrp://b:1/s;tcp"),
        );
        h.message_id = Some(Bytes::copy_from_slice(id.as_bytes()));
        h.byte_range = Some(ByteRange {
            start,
            end: Some(end),
            total,
        });
        h.content_type = Some(Bytes::from_static(b"text/plain"));
        h.has_body = true;
        h
    }

    fn chunk(a: &mut Assembler, h: &Head, body: &[u8], flag: Flag) -> ChunkOutcome {
        a.on_head(h);
        for piece in body.chunks(3) {
            a.on_body(piece);
        }
        a.on_end(flag)
    }

    #[test]
    fn chunks_join_into_one_message() {
        let mut a = Assembler::new(100);
        let mut h = head("m1", 1, 5, Some(11));
        h.success_report = Some(true);
        assert_eq!(
            chunk(&mut a, &h, b"hello", Flag::Continues),
            ChunkOutcome::Accepted
        );
        assert_eq!(a.pending(), 1);
        let done = chunk(
            &mut a,
            &head("m1", 6, 11, Some(11)),
            b" world",
            Flag::Complete,
        );
        let ChunkOutcome::Complete(c) = done else {
            panic!("{done:?}")
        };
        assert_eq!(&c.body[..], b"hello world");
        assert_eq!(&c.message_id[..], b"m1");
        assert_eq!(c.content_type.as_deref(), Some(&b"text/plain"[..]));
        assert!(c.success_report);
        assert_eq!((a.pending(), a.held_bytes()), (0, 0));
    }

    #[test]
    fn aborted_and_interleaved_messages() {
        let mut a = Assembler::new(100);
        chunk(&mut a, &head("x", 1, 2, Some(4)), b"ab", Flag::Continues);
        chunk(&mut a, &head("y", 1, 2, Some(2)), b"yy", Flag::Continues);
        assert_eq!(
            chunk(&mut a, &head("x", 3, 3, Some(4)), b"c", Flag::Aborted),
            ChunkOutcome::Aborted
        );
        let ChunkOutcome::Complete(y) = chunk(&mut a, &head("y", 3, 3, None), b"!", Flag::Complete)
        else {
            panic!()
        };
        assert_eq!(&y.body[..], b"yy!");
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn over_the_limit_is_refused_and_dropped() {
        // Declared too large: refused from the first chunk, nothing kept.
        let mut a = Assembler::new(10);
        let out = chunk(
            &mut a,
            &head("big", 1, 5, Some(11)),
            b"12345",
            Flag::Continues,
        );
        assert_eq!(out, ChunkOutcome::Refused(413));
        assert_eq!(a.held_bytes(), 0);
        assert_eq!(
            chunk(
                &mut a,
                &head("big", 6, 11, Some(11)),
                b"678901",
                Flag::Complete
            ),
            ChunkOutcome::Refused(413)
        );
        assert_eq!(a.pending(), 0);
        // Total unknown: refused once the bytes pass the limit.
        let out = chunk(
            &mut a,
            &head("u", 1, 11, None),
            b"12345678901",
            Flag::Complete,
        );
        assert_eq!(out, ChunkOutcome::Refused(413));
        assert_eq!(a.pending(), 0);
        // Exactly the limit is fine.
        let out = chunk(
            &mut a,
            &head("ok", 1, 10, Some(10)),
            b"1234567890",
            Flag::Complete,
        );
        assert!(matches!(out, ChunkOutcome::Complete(c) if c.body.len() == 10));
    }

    #[test]
    fn gaps_are_refused_and_resends_overwrite() {
        let mut a = Assembler::new(100);
        chunk(&mut a, &head("g", 1, 3, Some(9)), b"abc", Flag::Continues);
        // A resend of the first bytes: the later copy wins.
        chunk(&mut a, &head("g", 1, 3, Some(9)), b"ABC", Flag::Continues);
        assert_eq!(
            chunk(&mut a, &head("g", 7, 9, Some(9)), b"ghi", Flag::Complete),
            ChunkOutcome::Refused(400)
        );
        assert_eq!(a.pending(), 0);
        // An end line without a head, and a rejected chunk.
        assert_eq!(a.on_end(Flag::Complete), ChunkOutcome::Refused(400));
        a.on_head(&head("r", 1, 3, Some(3)));
        a.on_body(b"ab");
        a.on_reject();
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn unfinished_messages_are_bounded() {
        let mut a = Assembler::new(100);
        for i in 0..(MAX_PARTIAL + 3) {
            chunk(
                &mut a,
                &head(&format!("m{i}"), 1, 1, Some(2)),
                b"x",
                Flag::Continues,
            );
        }
        assert_eq!(a.pending(), MAX_PARTIAL);
    }
}
