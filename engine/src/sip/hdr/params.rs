//! Generic `;name[=value]` parameters (RFC 3261 §25.1 `generic-param`), as slices.

use bytes::Bytes;

use crate::sip::message::{is_ws, trim};

/// A parameter list: names and optional values, slices of the header value, in order.
/// Lookups are case-insensitive on the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(Bytes, Option<Bytes>)>);

impl Params {
    /// Parses `;a=b;c;d="x;y"` (the leading `;` is optional). Quoted values keep their quotes.
    pub fn parse(raw: &Bytes) -> Params {
        let mut out = Vec::new();
        let mut start = 0;
        let mut in_quote = false;
        let mut i = 0;
        let mut bounds = Vec::new();
        while i < raw.len() {
            let c = raw[i];
            if in_quote {
                if c == b'\\' {
                    i += 1;
                } else if c == b'"' {
                    in_quote = false;
                }
            } else if c == b'"' {
                in_quote = true;
            } else if c == b';' {
                bounds.push((start, i));
                start = i + 1;
            }
            i += 1;
        }
        bounds.push((start, raw.len()));
        for (s, e) in bounds {
            let p = trim(&raw.slice(s..e));
            if p.is_empty() {
                continue;
            }
            match p.iter().position(|&c| c == b'=') {
                Some(eq) => {
                    let name = trim(&p.slice(..eq));
                    let value = trim(&p.slice(eq + 1..));
                    out.push((name, Some(value)));
                }
                None => out.push((p, None)),
            }
        }
        Params(out)
    }

    /// The value of a parameter: `None` if absent, `Some(None)` if present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&Bytes>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// The value of a parameter that has one.
    pub fn value(&self, name: &str) -> Option<&Bytes> {
        self.get(name).flatten()
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

    /// Writes `;name=value` for each parameter.
    pub fn write(&self, out: &mut String) {
        for (n, v) in &self.0 {
            out.push(';');
            out.push_str(&String::from_utf8_lossy(n));
            if let Some(v) = v {
                out.push('=');
                out.push_str(&String::from_utf8_lossy(v));
            }
        }
    }
}

/// Whether a byte string has no whitespace inside.
pub(crate) fn has_no_ws(v: &[u8]) -> bool {
    !v.iter().any(|&c| is_ws(c) || c == b'\r' || c == b'\n')
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
        assert!(!p.has("maddr"));
    }
}
