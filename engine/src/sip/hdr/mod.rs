//! Typed views of the headers the server reads.
//!
//! Each type parses one header *value* (one element of a list header) and keeps its parts as
//! slices of that value. Typed accessors on [`Message`](super::Message) find the header and
//! parse it on demand; nothing is parsed that the server does not read.

pub mod params;
pub mod via;

pub use params::Params;
pub use via::Via;

use super::{HeaderName, Message};

/// Why a header value could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is required here but absent.
    Missing(&'static str),
    /// The header is present but its value does not follow the grammar.
    Malformed(&'static str),
}

impl HeaderError {
    /// A reason phrase naming the problem, for a 400 response.
    pub fn reason(&self) -> String {
        match self {
            HeaderError::Missing(h) => format!("Missing {h} Header"),
            HeaderError::Malformed(h) => format!("Malformed {h} Header"),
        }
    }
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for HeaderError {}

impl Message {
    /// The topmost Via (the one a response is routed by, and the transaction key).
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let v = self
            .headers
            .values(&HeaderName::Via)
            .next()
            .ok_or(HeaderError::Missing("Via"))?;
        Via::parse(&v)
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        self.headers
            .values(&HeaderName::Via)
            .map(|v| Via::parse(&v))
            .collect()
    }
}
