//! SIP (RFC 3261): message model, parser and serializer, typed headers, URIs, TCP framing,
//! transactions, dialogs and digest authentication.
//!
//! The parser works on a received [`bytes::Bytes`] buffer: start line parts, header names and
//! header values are slices of that buffer (reference-counted views, not copies). Only a header
//! value that was folded over several lines is rebuilt into a fresh buffer, since its bytes are
//! not contiguous on the wire.

pub mod builder;
pub mod dialog;
pub mod digest;
pub mod framing;
pub mod hdr;
pub mod message;
pub mod name;
pub mod retransmit;
pub mod transaction;
pub mod uri;
pub mod validate;

pub use message::{parse, parse_head, Header, Headers, Message, Method, ParseError, StartLine};
pub use name::HeaderName;
