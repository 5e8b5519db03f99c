//! `name-addr` / `addr-spec` with header parameters (RFC 3261 §20.10, §20.20, §20.39, §25.1):
//! the shape of From, To, Contact, Route, Record-Route, Refer-To and Referred-By values.
//!
//! ```text
//! "Alice" <sip:alice@atlanta.com;transport=tcp>;tag=1928301774    name-addr
//! sip:alice@atlanta.com;tag=1928301774                            addr-spec
//! ```
//! In the `addr-spec` form everything after the first `;` is a *header* parameter, and a URI
//! holding `,`, `?` or `;` must be bracketed (RFC 3261 §20.10), so such a value is malformed.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use super::params::quoted_string_end;
use super::{HeaderError, Params};
use crate::sip::message::{is_token_char, is_ws, trim};
use crate::sip::uri::Uri;

/// One `name-addr` or `addr-spec` value with its header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as received: a quoted string (quotes included) or a run of tokens.
    pub display: Option<Bytes>,
    /// The URI.
    pub uri: Uri,
    /// The header parameters (`tag`, `expires`, `q`, `lr`, ...), after the URI.
    pub params: Params,
    /// Whether the URI was written between `<` and `>`.
    pub bracketed: bool,
}

impl NameAddr {
    /// Parses one value; errors name `header` (e.g. "Malformed To Header").
    pub fn parse(raw: &Bytes, header: &'static str) -> Result<NameAddr, HeaderError> {
        let err = HeaderError::Malformed(header);
        let v = trim(raw);
        let b = &v[..];
        let (display, lt) = if b.first() == Some(&b'"') {
            let end = quoted_string_end(b).ok_or(err)?;
            let mut i = end;
            while i < b.len() && is_ws(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b'<') {
                return Err(err);
            }
            (Some(v.slice(..end)), Some(i))
        } else {
            match b.iter().position(|&c| c == b'<') {
                Some(lt) => {
                    let d = trim(&v.slice(..lt));
                    // display-name = *(token LWS): tokens separated by whitespace only.
                    if !d.iter().all(|&c| is_token_char(c) || is_ws(c)) {
                        return Err(err);
                    }
                    ((!d.is_empty()).then_some(d), Some(lt))
                }
                None => (None, None),
            }
        };

        let (uri_raw, rest, bracketed) = match lt {
            Some(lt) => {
                let gt = b[lt..].iter().position(|&c| c == b'>').ok_or(err)? + lt;
                (v.slice(lt + 1..gt), v.slice(gt + 1..), true)
            }
            None => {
                let end = b.iter().position(|&c| c == b';').unwrap_or(b.len());
                let uri = trim(&v.slice(..end));
                if uri.iter().any(|&c| c == b'?' || c == b',') {
                    return Err(err);
                }
                (uri, v.slice(end..), false)
            }
        };
        let uri = Uri::parse(&uri_raw).map_err(|_| err)?;
        let params = Params::parse_strict(&rest, header)?;
        Ok(NameAddr {
            display,
            uri,
            params,
            bracketed,
        })
    }

    /// The `tag` parameter (From/To, RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&Bytes> {
        self.params.value("tag")
    }

    /// The display name as text: quotes removed and quoted-pairs resolved, or the tokens as
    /// written. Invalid UTF-8 is replaced.
    pub fn display_name(&self) -> Option<String> {
        let d = self.display.as_ref()?;
        if d.first() != Some(&b'"') {
            return Some(String::from_utf8_lossy(d).into_owned());
        }
        let inner = d.get(1..d.len().saturating_sub(1)).unwrap_or_default();
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            if inner[i] == b'\\' && i + 1 < inner.len() {
                i += 1;
            }
            out.push(inner[i]);
            i += 1;
        }
        Some(match String::from_utf8_lossy(&out) {
            Cow::Borrowed(s) => s.to_owned(),
            Cow::Owned(s) => s,
        })
    }
}

/// Prints the value in `name-addr` form (always bracketed, so URI parameters stay URI
/// parameters), display name as received.
impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{} ", String::from_utf8_lossy(d))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(s: &'static [u8]) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(&Bytes::from_static(s), "To")
    }

    #[test]
    fn name_addr_forms() {
        let a = na(b"\"Alice \\\"A\\\"\" <sip:alice@atlanta.com;transport=tcp>;tag=1928").unwrap();
        assert_eq!(a.display_name().unwrap(), "Alice \"A\"");
        assert_eq!(&a.tag().unwrap()[..], b"1928");
        assert!(a.bracketed);
        assert_eq!(&a.uri.as_sip().unwrap().transport().unwrap()[..], b"tcp");

        let b = na(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(b.display_name().unwrap(), "caller");

        let c = na(b"token1~` token2'+_ <sip:mundane@example.com>").unwrap();
        assert_eq!(c.display_name().unwrap(), "token1~` token2'+_");

        let d = na(b"<sip:x@y>").unwrap();
        assert_eq!(d.display, None);
        assert!(d.params.is_empty());
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        // RFC 4475 §3.3.12: `unknownparam` is a Contact parameter, not a URI parameter.
        let a = na(b"sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(a.params.has("unknownparam"));
        assert!(a.uri.as_sip().unwrap().params.is_empty());
        assert!(!a.bracketed);
        // RFC 4475 §3.3.13: bracketed, it is a URI parameter.
        let b = na(b"<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(b.params.is_empty());
        assert!(b.uri.as_sip().unwrap().params.has("unknownparam"));
        // RFC 4475 §3.1.1.1: whitespace around ';' and '='.
        let c = na(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(&c.tag().unwrap()[..], b"1918181833n");
        // Other schemes (RFC 4475 §3.3.4).
        assert_eq!(na(b"isbn:2983792873").unwrap().uri.scheme(), "isbn");
    }

    #[test]
    fn rejects_rfc4475_invalid_forms() {
        // §3.1.2.6 unterminated quote, §3.1.2.13 '?' in addr-spec, §3.1.2.14 spaces inside <>,
        // §3.1.2.15 comma in an unquoted display name, §3.1.2.1 empty parameters.
        for bad in [
            &b"\"Mr. J. User <sip:j.user@example.com>"[..],
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"\"Watson, Thomas\" < sip:t.watson@example.org >",
            b"Watson, Thomas <sip:t.watson@example.org>",
            b"\"Joe\" <sip:joe@example.org>;;;;",
            b"<sip:a@b",
            b"\"x\" sip:a@b",
            b"",
            b"<>",
            b"sip:a@b junk",
            b"<sip:a@b> junk",
        ] {
            assert_eq!(
                NameAddr::parse(&Bytes::copy_from_slice(bad), "To"),
                Err(HeaderError::Malformed("To")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn display_reparses() {
        let a = na(b"sip:a@b.com;tag=1").unwrap();
        assert_eq!(a.to_string(), "<sip:a@b.com>;tag=1");
        let again = NameAddr::parse(&Bytes::from(a.to_string()), "To").unwrap();
        assert_eq!(again.uri, a.uri);
        assert_eq!(again.params, a.params);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9u32;
        let alphabet = b"\"\\<>;=, sip:@abc.\t";
        for _ in 0..20_000 {
            let len = (seed % 20) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[seed as usize % alphabet.len()]
                })
                .collect();
            if let Ok(a) = NameAddr::parse(&Bytes::from(v), "To") {
                let _ = a.display_name();
                let _ = a.to_string();
            }
        }
    }
}
