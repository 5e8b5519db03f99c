//! The Via header (RFC 3261 §20.42, §18.2.1; rport RFC 3581).
//!
//! `Via: SIP/2.0/UDP host[:port];branch=z9hG4bK...;received=...;rport[=port]`

use bytes::Bytes;

use super::{HeaderError, Params};
use crate::sip::message::{is_ws, trim};
use crate::sip::uri::{Host, HostKind};

fn host_kind_of(host: &Bytes) -> Option<HostKind> {
    Host::parse(host).ok().map(|h| h.kind)
}

/// The RFC 3261 magic cookie every compliant branch starts with (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, e.g. `SIP/2.0`.
    pub protocol: Bytes,
    /// Transport token, e.g. `UDP`, `TCP`, `TLS`, `WS` (as received).
    pub transport: Bytes,
    /// The sent-by host: a host name, an IPv4 address, or an IPv6 reference *with* brackets.
    pub host: Bytes,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// The parameters (branch, received, rport, maddr, ttl, ...).
    pub params: Params,
}

impl Via {
    /// Parses one Via value.
    pub fn parse(raw: &Bytes) -> Result<Via, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Via");
        let raw = trim(raw);
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport (LWS allowed
        // around the slashes, RFC 3261 §25.1 SLASH = SWS "/" SWS).
        let mut parts: Vec<Bytes> = Vec::with_capacity(3);
        let mut i = 0;
        let mut start = 0;
        while parts.len() < 2 {
            let slash = raw[i..].iter().position(|&c| c == b'/').ok_or(E)? + i;
            parts.push(trim(&raw.slice(start..slash)));
            i = slash + 1;
            start = i;
        }
        while i < raw.len() && is_ws(raw[i]) {
            i += 1;
        }
        let t_start = i;
        while i < raw.len() && !is_ws(raw[i]) && raw[i] != b';' {
            i += 1;
        }
        let transport = raw.slice(t_start..i);
        if parts.iter().any(|p| p.is_empty()) || transport.is_empty() {
            return Err(E);
        }
        let protocol = raw.slice(0..trim_end(&raw, 0, raw[..start].len() - 1));
        // sent-by
        while i < raw.len() && is_ws(raw[i]) {
            i += 1;
        }
        let sb_start = i;
        if i < raw.len() && raw[i] == b'[' {
            let close = raw[i..].iter().position(|&c| c == b']').ok_or(E)? + i;
            i = close + 1;
        } else {
            while i < raw.len() && !is_ws(raw[i]) && raw[i] != b';' && raw[i] != b':' {
                i += 1;
            }
        }
        let host = raw.slice(sb_start..i);
        if host.is_empty() {
            return Err(E);
        }
        while i < raw.len() && is_ws(raw[i]) {
            i += 1;
        }
        let mut port = None;
        if i < raw.len() && raw[i] == b':' {
            i += 1;
            while i < raw.len() && is_ws(raw[i]) {
                i += 1;
            }
            let ps = i;
            while i < raw.len() && raw[i].is_ascii_digit() {
                i += 1;
            }
            let p = std::str::from_utf8(&raw[ps..i])
                .ok()
                .and_then(|s| s.parse::<u16>().ok());
            port = Some(p.ok_or(E)?);
            while i < raw.len() && is_ws(raw[i]) {
                i += 1;
            }
        }
        if i < raw.len() && raw[i] != b';' {
            return Err(E);
        }
        if host_kind_of(&host).is_none() {
            return Err(E);
        }
        let params = Params::parse_strict(&raw.slice(i..), "Via")?;
        Ok(Via {
            protocol,
            transport,
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&Bytes> {
        self.params.value("branch")
    }

    /// Whether the branch carries the RFC 3261 magic cookie *and* an identifier after it.
    /// A bare `z9hG4bK` (RFC 4475 §3.2.1) identifies nothing, so such a request falls back to
    /// RFC 2543 transaction matching (RFC 3261 §17.2.3) instead of colliding with every other
    /// request that does the same.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE.as_bytes()))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&Bytes> {
        self.params.value("received")
    }

    /// `rport`: `None` if absent, `Some(None)` if requested without a value (RFC 3581 §3).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| {
            v.and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|s| s.parse().ok())
        })
    }

    /// `sent-by` as `host[:port]` text.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", String::from_utf8_lossy(&self.host), p),
            None => String::from_utf8_lossy(&self.host).into_owned(),
        }
    }

    /// Prints the value back.
    pub fn to_string_value(&self) -> String {
        let mut s = format!(
            "{}/{} {}",
            String::from_utf8_lossy(&self.protocol),
            String::from_utf8_lossy(&self.transport),
            self.sent_by()
        );
        self.params.write(&mut s);
        s
    }
}

fn trim_end(raw: &Bytes, s: usize, mut e: usize) -> usize {
    while e > s && is_ws(raw[e - 1]) {
        e -= 1;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_via() {
        let v = Via::parse(&Bytes::from_static(
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;rport;received=10.0.0.1",
        ))
        .unwrap();
        assert_eq!(&v.protocol[..], b"SIP/2.0");
        assert_eq!(&v.transport[..], b"UDP");
        assert_eq!(&v.host[..], b"pc33.atlanta.com");
        assert_eq!(v.port, Some(5066));
        assert!(v.is_rfc3261_branch());
        assert_eq!(v.rport(), Some(None));
        assert_eq!(&v.received().unwrap()[..], b"10.0.0.1");
        let again = Via::parse(&Bytes::from(v.to_string_value())).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn parses_spaced_and_ipv6() {
        let v = Via::parse(&Bytes::from_static(
            b"SIP / 2.0 / TCP [2001:db8::9:1] : 5060 ;branch=z9hG4bKx",
        ))
        .unwrap();
        assert_eq!(&v.protocol[..], b"SIP / 2.0");
        assert_eq!(&v.host[..], b"[2001:db8::9:1]");
        assert_eq!(v.port, Some(5060));
        assert!(Via::parse(&Bytes::from_static(b"SIP/2.0/UDP")).is_err());
        assert!(Via::parse(&Bytes::from_static(b"garbage")).is_err());
        assert!(Via::parse(&Bytes::from_static(b"SIP/2.0/UDP host:99999")).is_err());
        // RFC 4475 §3.1.2.1: empty parameters; a bad host.
        assert!(Via::parse(&Bytes::from_static(b"SIP/2.0/UDP 192.0.2.15;;")).is_err());
        assert!(Via::parse(&Bytes::from_static(
            b"SIP/2.0/UDP bad_host-.x;branch=z9hG4bK1"
        ))
        .is_err());
        // RFC 5118 §4.5: received may be an unbracketed IPv6 address.
        let v = Via::parse(&Bytes::from_static(
            b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3",
        ))
        .unwrap();
        assert_eq!(&v.received().unwrap()[..], b"2001:db8::9:255");
        // RFC 4475 §3.2.1: the cookie alone is no RFC 3261 branch.
        let bare =
            Via::parse(&Bytes::from_static(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK")).unwrap();
        assert!(!bare.is_rfc3261_branch());
    }
}
