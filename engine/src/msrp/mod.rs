//! MSRP, the Message Session Relay Protocol (RFC 4975) and its relay rules (RFC 4976), sans-IO.
//!
//! - [`Parser`] turns a TCP byte stream, fed in pieces split anywhere, into [`Event`]s: the
//!   [`Head`] of each request or response, its body as slices of the received buffers (no copy,
//!   forwarded before the chunk is complete), and the end line's [`Flag`]. Memory is bounded by
//!   [`Limits`]; a bad transaction becomes a [`Reject`] carrying the status to answer.
//! - [`write`](mod@write) prints requests, responses and chunks, the body kept as its own `Bytes` for a
//!   vectored write, and makes transaction ids from a caller-seeded generator.
//! - [`relay`] is what a media anchor does per chunk: terminate one side's path and rewrite the
//!   To-Path/From-Path for the other side, decide which responses and REPORTs are due
//!   (Failure-Report, Success-Report), build failure REPORTs, and re-chunk large messages.
//! - [`assemble`] joins the chunks of whole messages where the server is the endpoint (large
//!   message mode).
//! - [`uri`] is the MSRP URI with the comparison of RFC 4975 §6.1.
//!
//! ```
//! use bytes::Bytes;
//! use cpm_engine::msrp::{Event, Flag, Limits, Parser};
//!
//! let mut p = Parser::new(Limits::default());
//! p.feed(Bytes::from_static(b"MSRP a786hjs2 SEND\r\nTo-Path: msrp://b.example.com:8888/9di4;tcp\r\n\
//!     From-Path: msrp://a.example.com:7777/iau39;tcp\r\nMessage-ID: 87652491\r\n\
//!     Byte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\nHel"));
//! assert!(matches!(p.poll(), Some(Ok(Event::Head(h))) if h.byte_range.unwrap().end == Some(5)));
//! assert_eq!(p.poll(), Some(Ok(Event::Body(Bytes::from_static(b"Hel")))));
//! assert_eq!(p.poll(), None);
//! p.feed(Bytes::from_static(b"lo\r\n-------a786hjs2$\r\n"));
//! assert_eq!(p.poll(), Some(Ok(Event::Body(Bytes::from_static(b"lo")))));
//! assert_eq!(p.poll(), Some(Ok(Event::End(Flag::Complete))));
//! ```

pub mod assemble;
mod head;
mod parser;
pub mod relay;
pub mod uri;
pub mod write;

pub use head::{ByteRange, FailureReport, Flag, Head, Kind, Method, ParseError, Status};
pub use parser::{Event, Limits, Parser, Reject};
pub use uri::Uri;
