//! The Content-Type header (RFC 3261 §20.15): `type/subtype *(;param)`.

use std::fmt;

use bytes::Bytes;

use super::{HeaderError, Params};
use crate::sip::message::{is_token_char, trim};

/// A media type with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// The top-level type as received (`application`).
    pub mtype: Bytes,
    /// The subtype as received (`sdp`).
    pub subtype: Bytes,
    /// The parameters (`boundary`, `charset`, ...).
    pub params: Params,
}

impl ContentType {
    /// Parses `m-type SLASH m-subtype *(SEMI m-parameter)`, whitespace allowed around `/`.
    pub fn parse(raw: &Bytes) -> Result<ContentType, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Content-Type");
        let v = trim(raw);
        let slash = v.iter().position(|&c| c == b'/').ok_or(E)?;
        let end = v[slash..]
            .iter()
            .position(|&c| c == b';')
            .map_or(v.len(), |p| slash + p);
        let mtype = trim(&v.slice(..slash));
        let subtype = trim(&v.slice(slash + 1..end));
        let token = |t: &Bytes| !t.is_empty() && t.iter().all(|&c| is_token_char(c));
        if !token(&mtype) || !token(&subtype) {
            return Err(E);
        }
        let params = Params::parse_strict(&v.slice(end..), "Content-Type")?;
        Ok(ContentType {
            mtype,
            subtype,
            params,
        })
    }

    /// `type/subtype` lowercased, without parameters (media types are case-insensitive).
    pub fn essence(&self) -> String {
        let mut s = String::with_capacity(self.mtype.len() + self.subtype.len() + 1);
        s.push_str(&String::from_utf8_lossy(&self.mtype).to_ascii_lowercase());
        s.push('/');
        s.push_str(&String::from_utf8_lossy(&self.subtype).to_ascii_lowercase());
        s
    }

    /// Whether the media type is `essence` (e.g. `"application/sdp"`), case-insensitively,
    /// without allocating.
    pub fn is(&self, essence: &str) -> bool {
        let e = essence.as_bytes();
        e.len() == self.mtype.len() + 1 + self.subtype.len()
            && e[..self.mtype.len()].eq_ignore_ascii_case(&self.mtype)
            && e[self.mtype.len()] == b'/'
            && e[self.mtype.len() + 1..].eq_ignore_ascii_case(&self.subtype)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}{}",
            String::from_utf8_lossy(&self.mtype),
            String::from_utf8_lossy(&self.subtype),
            self.params
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static [u8]) -> Result<ContentType, HeaderError> {
        ContentType::parse(&Bytes::from_static(s))
    }

    #[test]
    fn parses_media_types() {
        let c = p(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert_eq!(c.essence(), "multipart/mixed");
        assert_eq!(
            &c.params.value("boundary").unwrap()[..],
            b"7a9cbec02ceef655"
        );
        let c = p(b"Application / SDP").unwrap();
        assert!(c.is("application/sdp"));
        assert!(!c.is("application/sd"));
        assert!(!c.is("message/cpim"));
        assert_eq!(c.essence(), "application/sdp");
        assert_eq!(
            p(b"message/cpim ; charset=\"utf-8\"").unwrap().to_string(),
            "message/cpim;charset=\"utf-8\""
        );
    }

    #[test]
    fn rejects_bad_media_types() {
        for bad in [
            &b""[..],
            b"text",
            b"/plain",
            b"text/",
            b"te xt/plain",
            b"text/plain;",
            b"text/plain;;a=b",
            b"a/b/c",
        ] {
            assert!(
                ContentType::parse(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
