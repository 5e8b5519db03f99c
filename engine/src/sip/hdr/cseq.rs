//! The CSeq header (RFC 3261 §20.16, §8.1.1.5): `CSeq: 314159 INVITE`.

use std::fmt;

use bytes::Bytes;

use super::HeaderError;
use crate::sip::message::{is_token_char, is_ws, trim, Method};

/// A CSeq value: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number. Senders keep it below 2^31 (§8.1.1.5); any 32-bit value is accepted.
    pub seq: u32,
    /// The method, which must equal the request's (RFC 3261 §8.2, checked by validation).
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`; leading zeros are allowed, values above 2^32-1 are not.
    pub fn parse(raw: &Bytes) -> Result<CSeq, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("CSeq");
        let v = trim(raw);
        let digits = v.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(E);
        }
        let mut seq: u32 = 0;
        for &c in &v[..digits] {
            seq = seq
                .checked_mul(10)
                .and_then(|s| s.checked_add(u32::from(c - b'0')))
                .ok_or(E)?;
        }
        let mut i = digits;
        while i < v.len() && is_ws(v[i]) {
            i += 1;
        }
        if i == digits || i == v.len() {
            return Err(E);
        }
        let method = v.slice(i..);
        if !method.iter().all(|&c| is_token_char(c)) {
            return Err(E);
        }
        Ok(CSeq {
            seq,
            method: Method::from_bytes(&method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static [u8]) -> Result<CSeq, HeaderError> {
        CSeq::parse(&Bytes::from_static(s))
    }

    #[test]
    fn parses_cseq() {
        let c = p(b"314159 INVITE").unwrap();
        assert_eq!(c.seq, 314159);
        assert_eq!(c.method, Method::Invite);
        assert_eq!(c.to_string(), "314159 INVITE");
        // RFC 4475 §3.1.1.1: leading zeros, folded whitespace.
        assert_eq!(p(b"0009 \t INVITE").unwrap().seq, 9);
        assert_eq!(p(b"4294967295 ACK").unwrap().seq, u32::MAX);
        let odd = p(b"139122385 !interesting-Method0123456789_*+`.%indeed'~").unwrap();
        assert_eq!(
            odd.method.as_str(),
            "!interesting-Method0123456789_*+`.%indeed'~"
        );
    }

    #[test]
    fn rejects_bad_cseq() {
        // RFC 4475 §3.1.2.4: overlarge.
        assert!(p(b"36893488147419103232 REGISTER").is_err());
        assert!(p(b"4294967296 ACK").is_err());
        for bad in [
            &b""[..],
            b"INVITE",
            b"12",
            b"12INVITE",
            b"-1 INVITE",
            b"1 IN VITE",
            b"1 <x>",
        ] {
            assert_eq!(
                CSeq::parse(&Bytes::copy_from_slice(bad)),
                Err(HeaderError::Malformed("CSeq"))
            );
        }
    }
}
