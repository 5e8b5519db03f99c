//! Generic `;name[=value]` parameters (RFC 3261 §25.1 `generic-param`), as slices.

use std::fmt;

use bytes::Bytes;

use super::HeaderError;
use crate::sip::message::{is_token_char, is_ws, trim, Unquoted};

/// A parameter list: names and optional values, slices of the header value, in order.
/// Lookups are case-insensitive on the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(Bytes, Option<Bytes>)>);

impl Params {
    /// Parses `;a=b;c;d="x;y"` (the leading `;` is optional). Quoted values keep their quotes.
    /// Lenient: empty parameters are skipped and names are not checked; see
    /// [`Params::parse_strict`] for the grammar check.
    pub fn parse(raw: &Bytes) -> Params {
        let mut out = Params(Vec::new());
        for (s, e) in split_params(raw) {
            let p = trim(&raw.slice(s..e));
            if p.is_empty() {
                continue;
            }
            let (name, value) = split_name_value(&p);
            out.0.push((name, value));
        }
        out
    }

    /// Parses `;a=b;c` checking RFC 3261 §25.1 `generic-param`: every parameter has a token
    /// name, a value (when `=` is present) that is a token-like run (host and IPv6 characters
    /// allowed, so `received=2001:db8::1` passes, RFC 5118 §4.5) or a complete quoted string.
    /// Whitespace around `;` and `=` is allowed. `header` names the header in the error.
    pub fn parse_strict(raw: &Bytes, header: &'static str) -> Result<Params, HeaderError> {
        let err = HeaderError::Malformed(header);
        let raw = trim(raw);
        if raw.is_empty() {
            return Ok(Params::default());
        }
        if raw[0] != b';' {
            return Err(err);
        }
        let body = raw.slice(1..);
        if body.is_empty() {
            return Err(err);
        }
        let mut out = Params(Vec::new());
        for (s, e) in split_params(&body) {
            let p = trim(&body.slice(s..e));
            if p.is_empty() {
                return Err(err);
            }
            let (name, value) = split_name_value(&p);
            if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
                return Err(err);
            }
            if let Some(v) = &value {
                if !is_gen_value(v) {
                    return Err(err);
                }
            }
            out.0.push((name, value));
        }
        Ok(out)
    }

    /// Appends a parameter without checking it.
    pub(crate) fn push(&mut self, name: Bytes, value: Option<Bytes>) {
        self.0.push((name, value));
    }

    /// The value of a parameter: `None` if absent, `Some(None)` if present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&Bytes>> {
        self.get_bytes(name.as_bytes())
    }

    /// [`Params::get`] with the name as bytes.
    pub fn get_bytes(&self, name: &[u8]) -> Option<Option<&Bytes>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The value of a parameter that has one.
    pub fn value(&self, name: &str) -> Option<&Bytes> {
        self.get(name).flatten()
    }

    /// The value of a parameter with surrounding double quotes removed (escapes kept).
    pub fn unquoted(&self, name: &str) -> Option<Bytes> {
        self.value(name).map(|v| {
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v.slice(1..v.len() - 1)
            } else {
                v.clone()
            }
        })
    }

    /// Whether the parameter is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        self.0.iter().map(|(n, v)| (n, v.as_ref()))
    }

    /// Sets (or adds) a parameter.
    pub fn set(&mut self, name: &str, value: Option<Bytes>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        {
            Some(p) => p.1 = value,
            None => self
                .0
                .push((Bytes::copy_from_slice(name.as_bytes()), value)),
        }
    }

    /// Removes a parameter.
    pub fn remove(&mut self, name: &str) {
        self.0
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Writes `;name=value` for each parameter.
    pub fn write(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

/// Prints `;name=value` for each parameter (nothing for an empty list).
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            write!(f, ";{}", String::from_utf8_lossy(n))?;
            if let Some(v) = v {
                write!(f, "={}", String::from_utf8_lossy(v))?;
            }
        }
        Ok(())
    }
}

/// (start, end) of each `;`-separated piece, ignoring `;` inside quoted strings.
fn split_params(raw: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut semis = Unquoted::new(raw, b';', false);
    let mut start = 0;
    let mut done = raw.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let s = start;
        let e = semis.next().unwrap_or_else(|| {
            done = true;
            raw.len()
        });
        start = e + 1;
        Some((s, e))
    })
}

/// Splits a trimmed `name [= value]` at the first `=` and trims both sides.
fn split_name_value(p: &Bytes) -> (Bytes, Option<Bytes>) {
    match p.iter().position(|&c| c == b'=') {
        Some(eq) => (trim(&p.slice(..eq)), Some(trim(&p.slice(eq + 1..)))),
        None => (p.clone(), None),
    }
}

/// `gen-value = token / host / quoted-string`, leniently: a non-empty run of visible
/// characters other than separators, or one complete quoted string.
fn is_gen_value(v: &[u8]) -> bool {
    if v.first() == Some(&b'"') {
        return quoted_string_end(v) == Some(v.len());
    }
    !v.is_empty()
        && v.iter()
            .all(|&c| c > 0x20 && c != 0x7f && !matches!(c, b';' | b',' | b'"' | b'=') && !is_ws(c))
}

/// Given bytes starting with `"`, the index just past the closing quote (RFC 3261 §25.1
/// `quoted-string`, with `\` escaping the next byte).
pub(crate) fn quoted_string_end(v: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < v.len() {
        match v[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_params() {
        let p = Params::parse(&Bytes::from_static(
            b";branch=z9hG4bK1 ; rport;received=1.2.3.4;x=\"a;b\"",
        ));
        assert_eq!(&p.value("BRANCH").unwrap()[..], b"z9hG4bK1");
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(&p.value("x").unwrap()[..], b"\"a;b\"");
        assert_eq!(&p.unquoted("x").unwrap()[..], b"a;b");
        assert!(!p.has("maddr"));
        assert_eq!(p.len(), 4);
        assert_eq!(
            p.to_string(),
            ";branch=z9hG4bK1;rport;received=1.2.3.4;x=\"a;b\""
        );
    }

    #[test]
    fn strict_parse() {
        let ok = |s: &'static str| Params::parse_strict(&Bytes::from_static(s.as_bytes()), "X");
        let p = ok(" ;   tag    = 1918181833n ; q = 0.33;received=2001:db8::9:255").unwrap();
        assert_eq!(&p.value("tag").unwrap()[..], b"1918181833n");
        assert_eq!(&p.value("received").unwrap()[..], b"2001:db8::9:255");
        assert!(ok("").unwrap().is_empty());
        assert!(ok(";+sip.instance=\"<urn:uuid:1>\";reg-id=1").is_ok());
        assert_eq!(ok(";;"), Err(HeaderError::Malformed("X")));
        assert!(ok(";a;").is_err());
        assert!(ok(";a=\"open").is_err());
        assert!(ok(";a b=1").is_err());
        assert!(ok(";a=").is_err());
        assert!(ok(";a=b c").is_err());
        assert!(ok("a").is_err());
        assert!(ok(";a=\"x\"y").is_err());
    }

    #[test]
    fn quoted_string_end_cases() {
        assert_eq!(quoted_string_end(b"\"ab\\\"c\" rest"), Some(7));
        assert_eq!(quoted_string_end(b"\"abc"), None);
        assert_eq!(quoted_string_end(b"\"abc\\"), None);
    }
}
