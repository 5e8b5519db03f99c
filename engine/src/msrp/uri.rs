//! MSRP URIs (RFC 4975 §6): `msrp://host:port/session-id;tcp` and `msrps://...`.
//!
//! A [`Uri`] keeps its parts as slices of the parsed buffer. Equality is the comparison of
//! RFC 4975 §6.1: scheme, host and transport case-insensitive, port as written, session-id
//! case-sensitive; the userinfo and the URI parameters other than the transport are ignored.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Why a URI or a path did not parse (a request carrying one is answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// The scheme is not `msrp` or `msrps`, or `://` is missing.
    Scheme,
    /// The authority (`[userinfo@]host[:port]`) is empty or malformed.
    Authority,
    /// The port is not a decimal number below 65536.
    Port,
    /// The session-id has a character outside `unreserved / "+" / "=" / "/"` (§9).
    SessionId,
    /// The mandatory `;transport` part is missing or empty.
    Transport,
    /// A path header field has no URI.
    EmptyPath,
}

impl UriError {
    /// A reason phrase for logs.
    pub fn reason(self) -> &'static str {
        match self {
            UriError::Scheme => "not an msrp: or msrps: URI",
            UriError::Authority => "malformed authority",
            UriError::Port => "malformed port",
            UriError::SessionId => "malformed session-id",
            UriError::Transport => "missing transport",
            UriError::EmptyPath => "empty path",
        }
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for UriError {}

/// An MSRP URI (RFC 4975 §6, §9 `MSRP-URI`).
#[derive(Debug, Clone)]
pub struct Uri {
    secure: bool,
    userinfo: Option<Bytes>,
    host: Bytes,
    port: Option<u16>,
    session_id: Bytes,
    transport: Bytes,
    /// The URI parameters after the transport, with their leading `;` (empty if none).
    params: Bytes,
}

impl Uri {
    /// Builds a URI from its parts (`session_id` may be empty; `transport` is usually `tcp`).
    pub fn new(secure: bool, host: Bytes, port: Option<u16>, session_id: Bytes) -> Uri {
        Uri {
            secure,
            userinfo: None,
            host,
            port,
            session_id,
            transport: Bytes::from_static(b"tcp"),
            params: Bytes::new(),
        }
    }

    /// Parses one URI (RFC 4975 §9); the parts are slices of `v`.
    pub fn parse(v: &Bytes) -> Result<Uri, UriError> {
        let (secure, rest) = if starts_with_ci(v, b"msrps://") {
            (true, 8)
        } else if starts_with_ci(v, b"msrp://") {
            (false, 7)
        } else {
            return Err(UriError::Scheme);
        };
        let tail = &v[rest..];
        // The authority ends at the first '/' or ';'.
        let auth_len = tail
            .iter()
            .position(|&c| c == b'/' || c == b';')
            .ok_or(UriError::Transport)?;
        let auth = v.slice(rest..rest + auth_len);
        let (userinfo, hostport) = match auth.iter().rposition(|&c| c == b'@') {
            Some(at) => (Some(auth.slice(..at)), auth.slice(at + 1..)),
            None => (None, auth),
        };
        let (host, port) = split_host_port(&hostport)?;
        let mut i = rest + auth_len;
        let mut session_id = Bytes::new();
        if v.get(i) == Some(&b'/') {
            let len = v[i + 1..]
                .iter()
                .position(|&c| c == b';')
                .ok_or(UriError::Transport)?;
            session_id = v.slice(i + 1..i + 1 + len);
            if session_id.is_empty() || !session_id.iter().all(|&c| is_session_char(c)) {
                return Err(UriError::SessionId);
            }
            i += 1 + len;
        }
        // v[i] is ';' here.
        let tr_start = i + 1;
        let tr_len = v[tr_start..]
            .iter()
            .position(|&c| c == b';')
            .unwrap_or(v.len() - tr_start);
        let transport = v.slice(tr_start..tr_start + tr_len);
        if transport.is_empty() || !transport.iter().all(u8::is_ascii_alphanumeric) {
            return Err(UriError::Transport);
        }
        Ok(Uri {
            secure,
            userinfo,
            host,
            port,
            session_id,
            transport,
            params: v.slice(tr_start + tr_len..),
        })
    }

    /// True for `msrps` (TLS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host: a name, an IPv4 address or a bracketed IPv6 reference.
    pub fn host(&self) -> &Bytes {
        &self.host
    }

    /// The port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The session-id (empty if the URI has none, as a relay's URI may).
    pub fn session_id(&self) -> &Bytes {
        &self.session_id
    }

    /// The transport (`tcp`).
    pub fn transport(&self) -> &Bytes {
        &self.transport
    }

    /// Writes the URI (RFC 4975 §9) into `out`.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.put_slice(if self.secure { b"msrps://" } else { b"msrp://" });
        if let Some(u) = &self.userinfo {
            out.put_slice(u);
            out.put_u8(b'@');
        }
        out.put_slice(&self.host);
        if let Some(p) = self.port {
            out.put_u8(b':');
            out.put_slice(p.to_string().as_bytes());
        }
        if !self.session_id.is_empty() {
            out.put_u8(b'/');
            out.put_slice(&self.session_id);
        }
        out.put_u8(b';');
        out.put_slice(&self.transport);
        out.put_slice(&self.params);
    }

    /// The URI as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        self.write_to(&mut out);
        out.freeze()
    }
}

/// RFC 4975 §6.1: scheme, host, port, session-id (case-sensitive) and transport are compared.
impl PartialEq for Uri {
    fn eq(&self, other: &Uri) -> bool {
        self.secure == other.secure
            && self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
            && self.session_id == other.session_id
            && self.transport.eq_ignore_ascii_case(&other.transport)
    }
}

impl Eq for Uri {}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Parses a To-Path or From-Path value: URIs separated by whitespace (RFC 4975 §9).
pub fn parse_path(v: &Bytes) -> Result<Vec<Uri>, UriError> {
    let uris = path_items(v)
        .map(|item| Uri::parse(&item))
        .collect::<Result<Vec<_>, _>>()?;
    if uris.is_empty() {
        return Err(UriError::EmptyPath);
    }
    Ok(uris)
}

/// The first URI of a path value, parsed (the hop a request is for, RFC 4975 §7.3).
pub fn first_of_path(v: &Bytes) -> Result<Uri, UriError> {
    let first = path_items(v).next().ok_or(UriError::EmptyPath)?;
    Uri::parse(&first)
}

/// The first URI of a path value as it was written (a slice, not parsed): what a response
/// echoes (RFC 4975 §7.2) and what a fast comparison looks at first.
pub fn first_item(v: &Bytes) -> Option<Bytes> {
    path_items(v).next()
}

/// Writes `uris` as a path value: the URIs separated by one SP.
pub fn write_path(uris: &[Uri], out: &mut BytesMut) {
    for (i, u) in uris.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        u.write_to(out);
    }
}

/// The whitespace-separated items of a path value, as slices of it.
fn path_items(v: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    v.split(|c| *c == b' ' || *c == b'\t')
        .filter(|s| !s.is_empty())
        .map(move |s| v.slice_ref(s))
}

fn split_host_port(hp: &Bytes) -> Result<(Bytes, Option<u16>), UriError> {
    let host_end = if hp.first() == Some(&b'[') {
        hp.iter()
            .position(|&c| c == b']')
            .ok_or(UriError::Authority)?
            + 1
    } else {
        hp.iter().position(|&c| c == b':').unwrap_or(hp.len())
    };
    let host = hp.slice(..host_end);
    if host.is_empty()
        || !host
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-.[]:_".contains(&c))
    {
        return Err(UriError::Authority);
    }
    let port = match &hp[host_end..] {
        [] => None,
        [b':', digits @ ..] => {
            if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(UriError::Port);
            }
            let n = digits
                .iter()
                .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
            Some(u16::try_from(n).map_err(|_| UriError::Port)?)
        }
        _ => return Err(UriError::Authority),
    };
    Ok((host, port))
}

/// `session-id = 1*( unreserved / "+" / "=" / "/" )`; `%` escapes are accepted as well.
fn is_session_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+=/%".contains(&c)
}

fn starts_with_ci(v: &[u8], prefix: &[u8]) -> bool {
    v.len() >= prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &'static str) -> Uri {
        Uri::parse(&Bytes::from_static(s.as_bytes())).unwrap()
    }

    #[test]
    fn parses_rfc_examples() {
        let u = uri("msrp://atlanta.example.com:7654/jshA7weztas;tcp");
        assert!(!u.is_secure());
        assert_eq!(&u.host()[..], b"atlanta.example.com");
        assert_eq!(u.port(), Some(7654));
        assert_eq!(&u.session_id()[..], b"jshA7weztas");
        assert_eq!(&u.transport()[..], b"tcp");

        let r = uri("msrps://bob@relay.example.net;tcp");
        assert!(r.is_secure());
        assert!(r.session_id().is_empty());
        assert_eq!(r.port(), None);
        assert_eq!(r.to_string(), "msrps://bob@relay.example.net;tcp");

        let v6 = uri("msrp://[2001:db8::1]:2855/s1;tcp;foo=bar");
        assert_eq!(&v6.host()[..], b"[2001:db8::1]");
        assert_eq!(v6.port(), Some(2855));
        assert_eq!(v6.to_string(), "msrp://[2001:db8::1]:2855/s1;tcp;foo=bar");
    }

    #[test]
    fn rejects_malformed() {
        let bad = |s: &'static str| Uri::parse(&Bytes::from_static(s.as_bytes())).unwrap_err();
        assert_eq!(bad("sip://a.example.com/x;tcp"), UriError::Scheme);
        assert_eq!(bad("msrp://a.example.com/x"), UriError::Transport);
        assert_eq!(bad("msrp://a.example.com:99999/x;tcp"), UriError::Port);
        assert_eq!(bad("msrp://a.example.com:/x;tcp"), UriError::Port);
        assert_eq!(bad("msrp:///x;tcp"), UriError::Authority);
        assert_eq!(bad("msrp://a b/x;tcp"), UriError::Authority);
        assert_eq!(bad("msrp://a/x y;tcp"), UriError::SessionId);
        assert_eq!(bad("msrp://a/x;"), UriError::Transport);
        assert_eq!(bad("msrp://a/;tcp"), UriError::SessionId);
    }

    #[test]
    fn compares_per_6_1() {
        let a = uri("msrp://Atlanta.Example.COM:7654/jshA7weztas;tcp");
        assert_eq!(a, uri("MSRP://atlanta.example.com:7654/jshA7weztas;TCP"));
        assert_eq!(
            a,
            uri("msrp://alice@atlanta.example.com:7654/jshA7weztas;tcp;x=1")
        );
        assert_ne!(a, uri("msrp://atlanta.example.com:7654/JSHA7WEZTAS;tcp"));
        assert_ne!(a, uri("msrps://atlanta.example.com:7654/jshA7weztas;tcp"));
        assert_ne!(a, uri("msrp://atlanta.example.com/jshA7weztas;tcp"));
        assert_ne!(a, uri("msrp://atlanta.example.com:7654/jshA7weztas;sctp"));
    }

    #[test]
    fn paths_parse_and_print() {
        let v = Bytes::from_static(b"msrp://r.example.net:9/a1;tcp  msrp://b.example.com:8/b2;tcp");
        let p = parse_path(&v).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(first_of_path(&v).unwrap(), p[0]);
        let mut out = BytesMut::new();
        write_path(&p, &mut out);
        assert_eq!(
            &out[..],
            b"msrp://r.example.net:9/a1;tcp msrp://b.example.com:8/b2;tcp"
        );
        assert_eq!(
            parse_path(&Bytes::from_static(b"  ")).unwrap_err(),
            UriError::EmptyPath
        );
        let built = Uri::new(
            false,
            Bytes::from_static(b"10.0.0.1"),
            Some(2855),
            "s".into(),
        );
        assert_eq!(built.to_string(), "msrp://10.0.0.1:2855/s;tcp");
    }
}
