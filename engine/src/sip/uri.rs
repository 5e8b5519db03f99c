//! URIs: SIP and SIPS (RFC 3261 §19.1, IPv6 references per RFC 5118), `tel` (RFC 3966), and
//! any other absolute URI kept raw with its scheme (so a request for it can be answered 416).
//!
//! [`Uri::parse`] checks the grammar and keeps every component as a slice of the input, *as
//! received* (still `%`-escaped): nothing is copied or decoded on the hot path. [`unescape`]
//! decodes a component on demand, and [`Uri::equivalent`] compares URIs per RFC 3261 §19.1.4,
//! decoding what it compares.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use super::hdr::Params;

/// Why a URI was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// Nothing to parse.
    Empty,
    /// No `scheme:` prefix, or a scheme with characters outside RFC 3986 §3.1.
    BadScheme,
    /// Whitespace, a control character, `<`, `>`, `"` or another character no URI may hold.
    InvalidChar,
    /// A `%` not followed by two hexadecimal digits.
    BadEscape,
    /// An empty or ill-formed user part (RFC 3261 §25.1 `user`).
    BadUser,
    /// An ill-formed password (RFC 3261 §25.1 `password`).
    BadPassword,
    /// A host that is neither a host name, an IPv4 address nor a bracketed IPv6 reference.
    BadHost,
    /// A port that is empty, not decimal, or above 65535.
    BadPort,
    /// An empty or ill-formed `;name[=value]` URI parameter.
    BadParam,
    /// An ill-formed `?name=value&...` header part.
    BadHeaders,
    /// A `tel` number that is not a global or local number (RFC 3966 §3).
    BadTelNumber,
}

impl UriError {
    /// A reason phrase naming the problem.
    pub fn reason(&self) -> &'static str {
        match self {
            UriError::Empty => "Empty URI",
            UriError::BadScheme => "Malformed URI Scheme",
            UriError::InvalidChar => "Invalid Character in URI",
            UriError::BadEscape => "Malformed Escape in URI",
            UriError::BadUser => "Malformed URI User Part",
            UriError::BadPassword => "Malformed URI Password",
            UriError::BadHost => "Malformed URI Host",
            UriError::BadPort => "Malformed URI Port",
            UriError::BadParam => "Malformed URI Parameter",
            UriError::BadHeaders => "Malformed URI Headers",
            UriError::BadTelNumber => "Malformed Telephone Number",
        }
    }
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for UriError {}

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:` (RFC 3261 §19.1).
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other absolute URI (RFC 3986 §4.3), kept whole.
    Other(OtherUri),
}

/// What kind of host a SIP URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A host name (RFC 3261 §25.1 `hostname`).
    Domain,
    /// A dotted-quad IPv4 address.
    Ipv4,
    /// An IPv6 reference, written with brackets (RFC 5118 §4.1).
    Ipv6,
}

/// The host of a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host as received; an IPv6 reference keeps its brackets.
    pub raw: Bytes,
    /// What the host is.
    pub kind: HostKind,
}

impl Host {
    /// Parses a host: host name, IPv4 address, or `[IPv6]` reference (RFC 3261 §25.1 `host`).
    pub fn parse(raw: &Bytes) -> Result<Host, UriError> {
        let kind = host_kind(raw).ok_or(UriError::BadHost)?;
        Ok(Host {
            raw: raw.clone(),
            kind,
        })
    }

    /// The host as text, lowercased (host names compare case-insensitively, RFC 3261 §19.1.4).
    pub fn to_lowercase(&self) -> String {
        String::from_utf8_lossy(&self.raw).to_ascii_lowercase()
    }

    /// The IP address, for an IPv4 or IPv6 host.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        let s = std::str::from_utf8(&self.raw).ok()?;
        match self.kind {
            HostKind::Domain => None,
            HostKind::Ipv4 => parse_ipv4_lenient(s).map(Into::into),
            HostKind::Ipv6 => s
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .and_then(parse_ipv6)
                .map(Into::into),
        }
    }

    /// Same host: names compare case-insensitively, addresses by value (`[::1]` = `[0::1]`).
    pub fn same_as(&self, other: &Host) -> bool {
        match (self.kind, other.kind) {
            (HostKind::Domain, HostKind::Domain) => self.raw.eq_ignore_ascii_case(&other.raw),
            (a, b) if a == b => self.ip().is_some() && self.ip() == other.ip(),
            _ => false,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.raw))
    }
}

/// An IPv4 address as RFC 3261 §25.1 writes it: four groups of one to three digits, each at
/// most 255. Unlike `Ipv4Addr::from_str`, leading zeros are allowed (`096.0.2.10` is 96.0.2.10;
/// found by fuzzing: such a host must still equal itself).
fn parse_ipv4_lenient(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *o = p.parse::<u16>().ok().filter(|&v| v <= 255)? as u8;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A `sip:` or `sips:` URI. Components are slices of the input, still `%`-escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part (may contain `;`, `?`, `/`, escapes: RFC 3261 §25.1 `user`).
    pub user: Option<Bytes>,
    /// The password after `user:` (deprecated but legal, RFC 3261 §19.1.1).
    pub password: Option<Bytes>,
    /// The host.
    pub host: Host,
    /// The port, if written.
    pub port: Option<u16>,
    /// The uri-parameters (`;transport=tcp;lr`), names and values as received.
    pub params: Params,
    /// The header part after `?` (without the `?`), if any.
    pub headers: Option<Bytes>,
}

impl SipUri {
    /// The port to use when none is written: 5060, or 5061 for `sips` (RFC 3261 §19.1.2).
    pub fn default_port(&self) -> u16 {
        if self.secure {
            5061
        } else {
            5060
        }
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&Bytes> {
        self.params.value("transport")
    }

    /// Whether the `lr` parameter is present (loose routing, RFC 3261 §19.1.1).
    pub fn lr(&self) -> bool {
        self.params.has("lr")
    }

    /// The `user` parameter (`phone`, `ip`, ...).
    pub fn user_param(&self) -> Option<&Bytes> {
        self.params.value("user")
    }

    /// The `?name=value` headers, names and values as received (escaped).
    pub fn header_fields(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        let raw = self.headers.clone().unwrap_or_default();
        let mut pos = 0;
        std::iter::from_fn(move || {
            while pos < raw.len() {
                let start = pos;
                let end = raw[start..]
                    .iter()
                    .position(|&c| c == b'&')
                    .map_or(raw.len(), |p| start + p);
                pos = end + 1;
                if end == start {
                    continue;
                }
                let field = raw.slice(start..end);
                return Some(match field.iter().position(|&c| c == b'=') {
                    Some(eq) => (field.slice(..eq), field.slice(eq + 1..)),
                    None => (field, Bytes::new()),
                });
            }
            None
        })
    }
}

/// A `tel:` URI (RFC 3966 §3): a global (`+` E.164) or local number, with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    /// The number as received, visual separators included (`+1-201-555-0123`).
    pub number: Bytes,
    /// The parameters (`ext`, `isub`, `phone-context`, ...).
    pub params: Params,
}

impl TelUri {
    /// Whether the number is global (starts with `+`).
    pub fn is_global(&self) -> bool {
        self.number.first() == Some(&b'+')
    }

    /// The number without visual separators (`-`, `.`, `(`, `)`), hex digits uppercased.
    pub fn digits(&self) -> String {
        self.number
            .iter()
            .filter(|c| !is_visual_separator(**c))
            .map(|&c| c.to_ascii_uppercase() as char)
            .collect()
    }

    /// The `phone-context` parameter (required for local numbers, RFC 3966 §5.1.5).
    pub fn phone_context(&self) -> Option<&Bytes> {
        self.params.value("phone-context")
    }
}

/// An absolute URI of a scheme this crate does not interpret (RFC 3986 §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherUri {
    /// The scheme, as received (compare case-insensitively).
    pub scheme: Bytes,
    /// The whole URI, scheme included.
    pub raw: Bytes,
}

impl Uri {
    /// Parses a URI; the input must not carry surrounding whitespace or angle brackets.
    pub fn parse(raw: &Bytes) -> Result<Uri, UriError> {
        if raw.is_empty() {
            return Err(UriError::Empty);
        }
        let colon = raw
            .iter()
            .position(|&c| c == b':')
            .ok_or(UriError::BadScheme)?;
        let scheme = &raw[..colon];
        if !is_scheme(scheme) {
            return Err(UriError::BadScheme);
        }
        let rest = raw.slice(colon + 1..);
        if scheme.eq_ignore_ascii_case(b"sip") {
            parse_sip(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            parse_sip(rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            parse_tel(rest).map(Uri::Tel)
        } else {
            if rest.is_empty() {
                return Err(UriError::InvalidChar);
            }
            if !rest.iter().all(|&c| is_uric(c)) {
                return Err(UriError::InvalidChar);
            }
            Ok(Uri::Other(OtherUri {
                scheme: raw.slice(..colon),
                raw: raw.clone(),
            }))
        }
    }

    /// The scheme, lowercase for the schemes this crate knows.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other(o) => std::str::from_utf8(&o.scheme).unwrap_or(""),
        }
    }

    /// The SIP/SIPS URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The tel URI, if this is one.
    pub fn as_tel(&self) -> Option<&TelUri> {
        match self {
            Uri::Tel(u) => Some(u),
            _ => None,
        }
    }

    /// A uri-parameter of a SIP or tel URI.
    pub fn param(&self, name: &str) -> Option<Option<&Bytes>> {
        match self {
            Uri::Sip(u) => u.params.get(name),
            Uri::Tel(u) => u.params.get(name),
            Uri::Other(_) => None,
        }
    }

    /// URI equivalence, RFC 3261 §19.1.4 for SIP/SIPS and RFC 3966 §4 for tel.
    ///
    /// SIP: schemes must agree; user and password compare case-sensitively after decoding;
    /// hosts case-insensitively (addresses by value, never a name against an address); ports
    /// must be both absent or equal (no default is assumed). A parameter present in both must
    /// match (case-insensitively, decoded); `user`, `ttl`, `method`, `maddr` and `transport`
    /// present in only one never match (`transport` follows the §19.1.4 examples, which the
    /// rule's prose omits); other one-sided parameters are ignored. Headers must be the same
    /// set. Other schemes compare scheme case-insensitively and the rest exactly.
    pub fn equivalent(&self, other: &Uri) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => sip_equivalent(a, b),
            (Uri::Tel(a), Uri::Tel(b)) => {
                a.digits() == b.digits() && params_same_set(&a.params, &b.params)
            }
            (Uri::Other(a), Uri::Other(b)) => {
                a.scheme.eq_ignore_ascii_case(&b.scheme)
                    && a.raw[a.scheme.len()..] == b.raw[b.scheme.len()..]
            }
            _ => false,
        }
    }

    /// The canonical address-of-record, the registrar's binding key (RFC 3261 §10.3 step 5).
    ///
    /// SIP/SIPS: `sip:user@host[:port]`: every uri-parameter and header dropped, the user
    /// decoded then re-escaped minimally (uppercase hex), the host lowercased, the port kept
    /// only when it is not the scheme's default. `sips` maps to `sip`: both name the same
    /// resource (RFC 5630 §3.1.1), only the transport security differs. Tel: `tel:` and the
    /// digits without visual separators, plus `;phone-context=` (lowercased) for a local
    /// number. Other schemes have no AOR.
    pub fn aor(&self) -> Option<String> {
        match self {
            Uri::Sip(u) => {
                let mut s = String::with_capacity(8 + u.host.raw.len());
                s.push_str("sip:");
                if let Some(user) = &u.user {
                    escape_into(&unescape(user), is_user_char, &mut s);
                    s.push('@');
                }
                s.push_str(&u.host.to_lowercase());
                if let Some(p) = u.port.filter(|&p| p != u.default_port()) {
                    s.push(':');
                    s.push_str(&p.to_string());
                }
                Some(s)
            }
            Uri::Tel(t) => {
                let mut s = format!("tel:{}", t.digits());
                if !t.is_global() {
                    if let Some(ctx) = t.phone_context() {
                        s.push_str(";phone-context=");
                        s.push_str(&String::from_utf8_lossy(ctx).to_ascii_lowercase());
                    }
                }
                Some(s)
            }
            Uri::Other(_) => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => {
                write!(f, "tel:{}", String::from_utf8_lossy(&t.number))?;
                write!(f, "{}", t.params)
            }
            Uri::Other(o) => f.write_str(&String::from_utf8_lossy(&o.raw)),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(&String::from_utf8_lossy(user))?;
            if let Some(pw) = &self.password {
                write!(f, ":{}", String::from_utf8_lossy(pw))?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            write!(f, "?{}", String::from_utf8_lossy(h))?;
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (RFC 3261 §25.1 `escaped`). Borrows when there is nothing to decode;
/// a `%` not followed by two hex digits is kept as it is.
pub fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex_val(raw[i + 1]), hex_val(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Writes `raw`, escaping every byte `keep` refuses as `%XX`.
fn escape_into(raw: &[u8], keep: fn(u8) -> bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in raw {
        if keep(c) && c != b'%' {
            out.push(c as char);
        } else {
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        }
    }
}

// ---- character classes (RFC 3261 §25.1, RFC 3986) ----

/// `unreserved = alphanum / mark`
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

/// Characters of `user` besides escapes.
fn is_user_char(c: u8) -> bool {
    is_unreserved(c) || b"&=+$,;?/".contains(&c)
}

/// Characters of `password` besides escapes.
fn is_password_char(c: u8) -> bool {
    is_unreserved(c) || b"&=+$,".contains(&c)
}

/// `paramchar` besides escapes.
fn is_param_char(c: u8) -> bool {
    is_unreserved(c) || b"[]/:&+$".contains(&c)
}

/// `hname` / `hvalue` characters besides escapes (`@` tolerated in values: it is common in
/// unescaped Replaces values).
fn is_header_char(c: u8) -> bool {
    is_unreserved(c) || b"[]/?:+$@".contains(&c)
}

/// Characters an opaque absolute URI may hold (RFC 3986 reserved, unreserved, `%`).
fn is_uric(c: u8) -> bool {
    is_unreserved(c) || b";/?:@&=+$,%[]#".contains(&c)
}

fn is_visual_separator(c: u8) -> bool {
    matches!(c, b'-' | b'.' | b'(' | b')')
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`
fn is_scheme(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        }
        None => false,
    }
}

/// Whether every byte is allowed by `class` or is part of a well-formed `%XX` escape.
fn check_escaped(s: &[u8], class: fn(u8) -> bool) -> Result<(), UriError> {
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'%' {
            match (s.get(i + 1), s.get(i + 2)) {
                (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return Err(UriError::BadEscape),
            }
        } else if class(c) {
            i += 1;
        } else {
            return Err(UriError::InvalidChar);
        }
    }
    Ok(())
}

/// Classifies a host: bracketed IPv6 reference, dotted-quad IPv4, or host name.
fn host_kind(h: &[u8]) -> Option<HostKind> {
    match h.first()? {
        b'[' => {
            let inner = h.strip_prefix(b"[")?.strip_suffix(b"]")?;
            parse_ipv6(std::str::from_utf8(inner).ok()?).map(|_| HostKind::Ipv6)
        }
        _ if h.iter().all(|&c| c.is_ascii_digit() || c == b'.') => {
            is_ipv4(h).then_some(HostKind::Ipv4)
        }
        _ => is_hostname(h).then_some(HostKind::Domain),
    }
}

/// An IPv6 address in RFC 4291 §2.2 text form, plus the one form RFC 3261's ABNF derives by
/// mistake: `:::` right before an embedded IPv4 address that ends the address
/// (`2001:db8:::192.0.2.1`), read as `::`. RFC 5118 §4.10: "an implementation must tolerate
/// both of the above constructs". Any other `:::` stays invalid.
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some(a);
    }
    let at = s.find(":::")?;
    let tail = &s[at + 3..];
    tail.parse::<Ipv4Addr>().ok()?;
    format!("{}::{}", &s[..at], tail).parse().ok()
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT`, each at most 255.
fn is_ipv4(h: &[u8]) -> bool {
    let mut n = 0;
    for part in h.split(|&c| c == b'.') {
        n += 1;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        if part.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0')) > 255 {
            return false;
        }
    }
    n == 4
}

/// `hostname = *( domainlabel "." ) toplabel [ "." ]`, labels of alphanumerics and inner `-`.
/// An `_` is tolerated (common in lab and container host names).
fn is_hostname(h: &[u8]) -> bool {
    let h = h.strip_suffix(b".").unwrap_or(h);
    if h.is_empty() {
        return false;
    }
    h.split(|&c| c == b'.').all(|label| {
        !label.is_empty()
            && label.first().is_some_and(u8::is_ascii_alphanumeric)
            && label
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && label
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

/// Parses what follows `sip:` / `sips:`.
fn parse_sip(rest: Bytes, secure: bool) -> Result<SipUri, UriError> {
    // userinfo ends at the first '@' (no '@' may appear unescaped elsewhere, RFC 3261 §25.1).
    let (user, password, hp_start) = match rest.iter().position(|&c| c == b'@') {
        Some(at) => {
            let info = &rest[..at];
            let (u_end, pw) = match info.iter().position(|&c| c == b':') {
                Some(c) => (c, Some(rest.slice(c + 1..at))),
                None => (at, None),
            };
            if u_end == 0 {
                return Err(UriError::BadUser);
            }
            check_escaped(&rest[..u_end], is_user_char).map_err(|e| match e {
                UriError::BadEscape => e,
                _ => UriError::BadUser,
            })?;
            if let Some(pw) = &pw {
                check_escaped(pw, is_password_char).map_err(|e| match e {
                    UriError::BadEscape => e,
                    _ => UriError::BadPassword,
                })?;
            }
            (Some(rest.slice(..u_end)), pw, at + 1)
        }
        None => (None, None, 0),
    };

    // hostport
    let b = &rest[..];
    let mut i = hp_start;
    let host_end = if b.get(i) == Some(&b'[') {
        let close = b[i..]
            .iter()
            .position(|&c| c == b']')
            .ok_or(UriError::BadHost)?
            + i;
        close + 1
    } else {
        i + b[i..]
            .iter()
            .position(|&c| matches!(c, b':' | b';' | b'?'))
            .unwrap_or(b.len() - i)
    };
    let host_raw = rest.slice(i..host_end);
    if host_raw.is_empty() {
        return Err(UriError::BadHost);
    }
    let host = Host::parse(&host_raw)?;
    i = host_end;
    let mut port = None;
    if b.get(i) == Some(&b':') {
        let ps = i + 1;
        let pe = ps
            + b[ps..]
                .iter()
                .position(|&c| c == b';' || c == b'?')
                .unwrap_or(b.len() - ps);
        port = Some(parse_port(&b[ps..pe]).ok_or(UriError::BadPort)?);
        i = pe;
    }

    // uri-parameters
    let mut params = Params::default();
    if b.get(i) == Some(&b';') {
        let pe = i + b[i..]
            .iter()
            .position(|&c| c == b'?')
            .unwrap_or(b.len() - i);
        params = parse_uri_params(&rest.slice(i + 1..pe), is_param_char)?;
        i = pe;
    }

    // headers
    let mut headers = None;
    match b.get(i) {
        Some(b'?') => {
            let h = rest.slice(i + 1..);
            for field in h.split(|&c| c == b'&') {
                let ok = match field.iter().position(|&c| c == b'=') {
                    Some(eq) => eq > 0 && check_escaped(field, is_header_char_or_eq).is_ok(),
                    None => false,
                };
                if !ok {
                    return Err(UriError::BadHeaders);
                }
            }
            headers = Some(h);
        }
        Some(_) => return Err(UriError::InvalidChar),
        None => {}
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn is_header_char_or_eq(c: u8) -> bool {
    c == b'=' || is_header_char(c)
}

/// `port = 1*DIGIT`, at most 65535.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    u16::try_from(p.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'))).ok()
}

/// Parses `name[=value];...` (no leading `;`); every name non-empty, characters per `class`.
fn parse_uri_params(raw: &Bytes, class: fn(u8) -> bool) -> Result<Params, UriError> {
    let mut params = Params::default();
    for (s, e) in split_positions(raw, b';') {
        let p = &raw[s..e];
        let (name, value) = match p.iter().position(|&c| c == b'=') {
            Some(eq) => (raw.slice(s..s + eq), Some(raw.slice(s + eq + 1..e))),
            None => (raw.slice(s..e), None),
        };
        if name.is_empty() || value.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(UriError::BadParam);
        }
        check_escaped(&name, class).map_err(|_| UriError::BadParam)?;
        if let Some(v) = &value {
            check_escaped(v, class).map_err(|_| UriError::BadParam)?;
        }
        params.push(name, value);
    }
    Ok(params)
}

/// (start, end) of each `sep`-separated piece.
fn split_positions(raw: &[u8], sep: u8) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = pos;
        match raw[start..].iter().position(|&c| c == sep) {
            Some(p) => {
                pos = start + p + 1;
                Some((start, start + p))
            }
            None => {
                done = true;
                Some((start, raw.len()))
            }
        }
    })
}

/// Parses what follows `tel:` (RFC 3966 §3).
fn parse_tel(rest: Bytes) -> Result<TelUri, UriError> {
    let end = rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
    let number = rest.slice(..end);
    let digits_ok = match number.split_first() {
        Some((b'+', tail)) => {
            tail.iter().any(u8::is_ascii_digit)
                && tail
                    .iter()
                    .all(|&c| c.is_ascii_digit() || is_visual_separator(c))
        }
        Some(_) => {
            number
                .iter()
                .any(|&c| c.is_ascii_hexdigit() || c == b'*' || c == b'#')
                && number.iter().all(|&c| {
                    c.is_ascii_hexdigit() || c == b'*' || c == b'#' || is_visual_separator(c)
                })
        }
        None => false,
    };
    if !digits_ok {
        return Err(UriError::BadTelNumber);
    }
    let params = if end < rest.len() {
        // RFC 3966 `pvalue` allows paramchar plus what phone-context and isub carry.
        parse_uri_params(&rest.slice(end + 1..), is_param_char)?
    } else {
        Params::default()
    };
    Ok(TelUri { number, params })
}

fn sip_equivalent(a: &SipUri, b: &SipUri) -> bool {
    fn opt_eq(x: &Option<Bytes>, y: &Option<Bytes>) -> bool {
        match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) => unescape(x) == unescape(y),
            _ => false,
        }
    }
    if a.secure != b.secure
        || a.port != b.port
        || !opt_eq(&a.user, &b.user)
        || !opt_eq(&a.password, &b.password)
        || !a.host.same_as(&b.host)
    {
        return false;
    }
    const MUST_BE_IN_BOTH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
    // RFC 3261 does not define a repeated parameter; like every lookup here, only its first
    // occurrence counts (found by fuzzing: `sip:h;x=1;x=2` must equal itself).
    for (i, (name, va)) in a.params.iter().enumerate() {
        if a.params
            .iter()
            .take(i)
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        match b.params.get_bytes(name) {
            Some(vb) => {
                if !opt_value_eq_ci(va, vb) {
                    return false;
                }
            }
            None => {
                if MUST_BE_IN_BOTH
                    .iter()
                    .any(|m| unescape(name).eq_ignore_ascii_case(m.as_bytes()))
                {
                    return false;
                }
            }
        }
    }
    for (name, _) in b.params.iter() {
        if a.params.get_bytes(name).is_none()
            && MUST_BE_IN_BOTH
                .iter()
                .any(|m| unescape(name).eq_ignore_ascii_case(m.as_bytes()))
        {
            return false;
        }
    }
    headers_same_set(a, b)
}

fn opt_value_eq_ci(a: Option<&Bytes>, b: Option<&Bytes>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => unescape(x).eq_ignore_ascii_case(&unescape(y)),
        _ => false,
    }
}

/// Same parameter names with equal values (case-insensitive, decoded), order ignored.
fn params_same_set(a: &Params, b: &Params) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(n, v)| b.get_bytes(n).is_some_and(|w| opt_value_eq_ci(v, w)))
}

fn headers_same_set(a: &SipUri, b: &SipUri) -> bool {
    let ha: Vec<_> = a.header_fields().collect();
    let hb: Vec<_> = b.header_fields().collect();
    ha.len() == hb.len()
        && ha.iter().all(|(n, v)| {
            hb.iter().any(|(m, w)| {
                unescape(n).eq_ignore_ascii_case(&unescape(m)) && unescape(v) == unescape(w)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Uri, UriError> {
        Uri::parse(&Bytes::copy_from_slice(s.as_bytes()))
    }

    fn sip(s: &str) -> SipUri {
        match p(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    /// Regression inputs found by the `sip_parse` fuzz target: each URI equals itself.
    #[test]
    fn fuzz_regressions_equal_themselves() {
        for raw in [
            "sip:096.0.2.10",
            "sip:h;x=1;x=2",
            "sip:u@010.001.000.255:5060;X=a;x=b",
        ] {
            let u = p(raw).unwrap();
            assert!(u.equivalent(&u), "{raw}");
        }
        assert_eq!(
            sip("sip:096.0.2.10").host.ip(),
            Some(std::net::IpAddr::from([96, 0, 2, 10]))
        );
        assert!(!p("sip:h;x=1")
            .unwrap()
            .equivalent(&p("sip:h;x=2;x=1").unwrap()));
    }

    #[test]
    fn parses_components() {
        let u = sip(
            "sips:alice:secret@Atlanta.COM:5071;transport=tcp;lr?subject=x%20y&priority=urgent",
        );
        assert!(u.secure);
        assert_eq!(&u.user.as_ref().unwrap()[..], b"alice");
        assert_eq!(&u.password.as_ref().unwrap()[..], b"secret");
        assert_eq!(&u.host.raw[..], b"Atlanta.COM");
        assert_eq!(u.host.kind, HostKind::Domain);
        assert_eq!(u.port, Some(5071));
        assert_eq!(&u.transport().unwrap()[..], b"tcp");
        assert!(u.lr());
        let h: Vec<_> = u.header_fields().collect();
        assert_eq!(h.len(), 2);
        assert_eq!(&h[0].0[..], b"subject");
        assert_eq!(&h[0].1[..], b"x%20y");
    }

    #[test]
    fn hosts_ipv4_ipv6() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host.kind, HostKind::Ipv6);
        assert_eq!(u.port, Some(5070));
        // RFC 5118 §4.3: the last group belongs to the address, not a port.
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert_eq!(
            sip("sip:user@[::ffff:192.0.2.10]").host.kind,
            HostKind::Ipv6
        );
        assert_eq!(sip("sip:192.0.2.4").host.kind, HostKind::Ipv4);
        // RFC 5118 §4.10: the three-colon form RFC 3261's ABNF allows is tolerated, and
        // names the same address; no other `:::` is.
        let bug = sip("sip:[2001:db8:::192.0.2.1]");
        assert!(bug.host.same_as(&sip("sip:[2001:db8::192.0.2.1]").host));
        assert_eq!(p("sip:[2001:db8:::10]"), Err(UriError::BadHost));
        assert_eq!(p("sip:[2001:db8::1:::192.0.2.1]"), Err(UriError::BadHost));
        assert_eq!(p("sip:[::::192.0.2.1]"), Err(UriError::BadHost));
        assert!(p("sip:2001:db8::10").is_err());
        assert_eq!(p("sip:host:db8::10"), Err(UriError::BadPort));
        assert_eq!(p("sip:[2001:db8::10"), Err(UriError::BadHost));
        assert_eq!(p("sip:host:99999"), Err(UriError::BadPort));
        assert_eq!(p("sip:host:"), Err(UriError::BadPort));
        assert_eq!(p("sip:-bad.example.com"), Err(UriError::BadHost));
        assert_eq!(p("sip:a..b"), Err(UriError::BadHost));
        assert_eq!(p("sip:256.1.1.1"), Err(UriError::BadHost));
        assert!(p("sip:example.com.").is_ok());
    }

    #[test]
    fn rfc4475_request_uris() {
        // §3.1.1.2: a user part with unusual characters and a password.
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            &u.user.unwrap()[..],
            b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        );
        assert_eq!(&u.host.raw[..], b"example.com");
        // §3.1.1.3 and §3.1.1.9: escapes and ';' inside the user part.
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(
            &unescape(u.user.as_ref().unwrap())[..],
            b"sips:user@example.com"
        );
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(
            &unescape(u.user.as_ref().unwrap())[..],
            b"user;par=u@example.net"
        );
        assert!(u.params.is_empty());
        // §3.1.1.4: escaped NUL.
        assert_eq!(
            &unescape(sip("sip:null-%00-null@example.com").user.as_ref().unwrap())[..],
            b"null-\0-null"
        );
        // §3.1.2.7, §3.1.2.8: brackets and whitespace.
        assert_eq!(p("<sip:user@example.com>"), Err(UriError::BadScheme));
        assert_eq!(p("sip:user@example.com; lr"), Err(UriError::BadParam));
        assert!(p("sip:user@example.com lr").is_err());
        // §3.3.2, §3.3.3: other schemes are kept.
        let o = p("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(o.scheme(), "nobodyKnowsThisScheme");
        assert_eq!(
            p("soap.beep://192.0.2.103:3002").unwrap().scheme(),
            "soap.beep"
        );
    }

    #[test]
    fn rejects_bad_syntax() {
        assert_eq!(p(""), Err(UriError::Empty));
        assert_eq!(p("sip"), Err(UriError::BadScheme));
        assert_eq!(p("1sip:x"), Err(UriError::BadScheme));
        assert_eq!(p("sip:@host"), Err(UriError::BadUser));
        assert_eq!(p("sip:us%4@host"), Err(UriError::BadEscape));
        assert_eq!(p("sip:us<er@host"), Err(UriError::BadUser));
        assert_eq!(p("sip:host;;lr"), Err(UriError::BadParam));
        assert_eq!(p("sip:host;a="), Err(UriError::BadParam));
        assert_eq!(p("sip:host?x"), Err(UriError::BadHeaders));
        assert_eq!(p("sip:host?=y"), Err(UriError::BadHeaders));
        assert_eq!(p("sip:"), Err(UriError::BadHost));
        assert_eq!(p("other:"), Err(UriError::InvalidChar));
        assert_eq!(p("other:a b"), Err(UriError::InvalidChar));
    }

    #[test]
    fn tel_uris() {
        let t = match p("tel:+1-201-555-0123;ext=1234").unwrap() {
            Uri::Tel(t) => t,
            _ => panic!(),
        };
        assert!(t.is_global());
        assert_eq!(t.digits(), "+12015550123");
        assert_eq!(&t.params.value("ext").unwrap()[..], b"1234");
        assert!(p("tel:7042;phone-context=example.com").is_ok());
        assert_eq!(p("tel:+"), Err(UriError::BadTelNumber));
        assert_eq!(p("tel:12z4"), Err(UriError::BadTelNumber));
        assert!(p("tel:+1(201)555-0123")
            .unwrap()
            .equivalent(&p("tel:+1.201.555.0123").unwrap()));
        assert!(!p("tel:+12015550123")
            .unwrap()
            .equivalent(&p("tel:+12015550124").unwrap()));
    }

    #[test]
    fn equivalence_rfc3261_examples() {
        let eq = |a: &str, b: &str| p(a).unwrap().equivalent(&p(b).unwrap());
        assert!(eq(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));
        assert!(!eq(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:6000;transport=tcp"
        ));
        assert!(!eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq("sip:a@b", "sips:a@b"));
        assert!(!eq("sip:a@b;maddr=1.2.3.4", "sip:a@b"));
        assert!(eq("sip:a@[2001:db8::1]", "sip:a@[2001:DB8:0::1]"));
        assert!(!eq("sip:a@b", "tel:+1"));
        assert!(eq("urn:x:Y", "URN:x:Y"));
        assert!(!eq("urn:x:Y", "urn:x:y"));
    }

    #[test]
    fn aor_is_canonical() {
        let aor = |s: &str| p(s).unwrap().aor();
        assert_eq!(
            aor("sip:%61lice@AtLanTa.CoM:5060;transport=tcp?x=y").unwrap(),
            "sip:alice@atlanta.com"
        );
        assert_eq!(
            aor("sips:alice@atlanta.com:5061").unwrap(),
            "sip:alice@atlanta.com"
        );
        assert_eq!(
            aor("sip:alice@atlanta.com:5070").unwrap(),
            "sip:alice@atlanta.com:5070"
        );
        assert_eq!(
            aor("sip:null-%00-null@example.com").unwrap(),
            "sip:null-%00-null@example.com"
        );
        assert_eq!(aor("sip:example.com").unwrap(), "sip:example.com");
        assert_eq!(
            aor("tel:+1-201-555-0123;ext=1").unwrap(),
            "tel:+12015550123"
        );
        assert_eq!(
            aor("tel:7042;phone-context=Example.com").unwrap(),
            "tel:7042;phone-context=example.com"
        );
        assert_eq!(aor("isbn:2983792873"), None);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sip:alice@atlanta.com",
            "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?h=v&i=w",
            "sip:192.0.2.1;maddr=239.255.255.1;ttl=15",
            "tel:+1-201-555-0123;ext=1234",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "sip:user;par=u%40example.net@example.com",
        ] {
            let u = p(s).unwrap();
            assert_eq!(u.to_string(), s);
            assert_eq!(p(&u.to_string()).unwrap(), u);
        }
    }

    #[test]
    fn unescape_cases() {
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
        assert_eq!(&unescape(b"a%20b%2")[..], b"a b%2");
        assert_eq!(&unescape(b"%zz%41")[..], b"%zzA");
        assert_eq!(&unescape(b"%")[..], b"%");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        let alphabet = b"sip:@[]%;?=&:.,<> \"abc019-+tel";
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                v.push(alphabet[(seed as usize) % alphabet.len()]);
            }
            if let Ok(u) = Uri::parse(&Bytes::from(v)) {
                let _ = u.aor();
                let _ = u.to_string();
                let _ = u.equivalent(&u);
            }
        }
    }
}
