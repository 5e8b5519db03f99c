//! HTTP Digest authentication for SIP (RFC 3261 §22.4, with the algorithms of RFC 8760 and the
//! computation rules of RFC 7616 §3.4): challenges, credentials, a stateless nonce, the server's
//! verification, the client's response, and the users file.
//!
//! Sans-IO: nothing here reads a clock or a random source. The time a nonce is issued or checked
//! (`now_secs`, seconds on a clock every worker shares, e.g. the UNIX epoch), the nonce salt and
//! the client nonce are inputs.
//!
//! Auth-param values are held as owned, unescaped `String`s rather than slices: a quoted string
//! may contain `\"` escapes, the values are hashed as text, and authentication happens once per
//! REGISTER or dialog-creating request, not per packet.
//!
//! ```text
//!   401/407 ◄── Authenticator::challenges(now, salt)        (server)
//!   respond(challenge, user, password, method, uri, cnonce, nc) ──► Authorization   (client)
//!   Authenticator::verify(credentials, method, secret, now) ──► Verdict::{Ok, Stale, Bad}
//! ```

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use md5::Md5;
use sha2::{Digest as _, Sha256};

use crate::sip::{HeaderName, Message};

/// A digest algorithm (RFC 7616 §3.3 `algorithm`; SHA-256 for SIP: RFC 8760 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// `MD5`, the RFC 3261 default when the parameter is absent.
    Md5,
    /// `MD5-sess`: HA1 is rehashed with the nonce and cnonce (RFC 7616 §3.4.2).
    Md5Sess,
    /// `SHA-256` (RFC 8760).
    Sha256,
    /// `SHA-256-sess` (RFC 8760).
    Sha256Sess,
    /// Any other token (e.g. `SHA-512-256`, `AKAv1-MD5`): parsed and printed, never computed.
    Other(String),
}

impl Algorithm {
    /// Recognises an algorithm token (case-insensitive, RFC 7616 §3.3).
    pub fn from_token(t: &str) -> Algorithm {
        match t.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" => Algorithm::Sha256,
            "SHA-256-SESS" => Algorithm::Sha256Sess,
            _ => Algorithm::Other(t.to_string()),
        }
    }

    /// The token as printed in a header.
    pub fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Other(t) => t,
        }
    }

    /// Whether this crate can compute it.
    pub fn is_supported(&self) -> bool {
        !matches!(self, Algorithm::Other(_))
    }

    /// Whether it is a `-sess` variant.
    pub fn is_sess(&self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The hash family the HA1 of a users file entry must be in for this algorithm.
    fn base(&self) -> Option<HashKind> {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Some(HashKind::Md5),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Some(HashKind::Sha256),
            Algorithm::Other(_) => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashKind {
    Md5,
    Sha256,
}

impl HashKind {
    /// `H(data)` as lowercase hex (RFC 7616 §3.4: "the hexadecimal representation").
    fn hex(self, data: &[u8]) -> String {
        match self {
            HashKind::Md5 => to_hex(&Md5::digest(data)),
            HashKind::Sha256 => to_hex(&Sha256::digest(data)),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            HashKind::Md5 => 32,
            HashKind::Sha256 => 64,
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why an authentication header or a users file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// The scheme is not `Digest` (e.g. `Basic`, which SIP forbids: RFC 3261 §22.1).
    NotDigest,
    /// The auth-param list does not follow the grammar (RFC 3261 §25.1 `auth-param`).
    Syntax(&'static str),
    /// A required parameter is absent.
    Missing(&'static str),
    /// A parameter appears twice (RFC 7616 §3.3).
    Duplicate(String),
    /// A parameter's value is not valid for it.
    BadValue(&'static str),
    /// The challenge asks for an algorithm or qop this crate does not compute.
    Unsupported(String),
    /// A users file line is wrong; carries the 1-based line number and what is wrong.
    UsersFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl DigestError {
    /// A reason phrase naming the problem, for a 400 response or a log line.
    pub fn reason(&self) -> String {
        match self {
            DigestError::NotDigest => "Authorization Scheme Not Digest".into(),
            DigestError::Syntax(what) => format!("Malformed Digest Parameters: {what}"),
            DigestError::Missing(p) => format!("Missing Digest Parameter {p}"),
            DigestError::Duplicate(p) => format!("Duplicate Digest Parameter {p}"),
            DigestError::BadValue(p) => format!("Bad Digest Parameter {p}"),
            DigestError::Unsupported(what) => format!("Unsupported Digest {what}"),
            DigestError::UsersFile { line, reason } => format!("users file line {line}: {reason}"),
        }
    }
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for DigestError {}

/// One `name=value` auth-param (RFC 3261 §25.1), value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParam {
    /// The parameter name as received.
    pub name: String,
    /// The value, with quotes removed and `\x` escapes resolved.
    pub value: String,
    /// Whether it was (and will be printed as) a quoted-string.
    pub quoted: bool,
}

/// Splits `Digest name=value, name="value", ...` into its parameters; another scheme is
/// [`DigestError::NotDigest`] whatever follows it (e.g. a `Basic` token68).
fn parse_auth(raw: &[u8]) -> Result<Vec<AuthParam>, DigestError> {
    let mut i = 0;
    skip_lws(raw, &mut i);
    let scheme = take_token(raw, &mut i);
    if scheme.is_empty() {
        return Err(DigestError::Syntax("no scheme"));
    }
    if !scheme.eq_ignore_ascii_case(b"Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut params: Vec<AuthParam> = Vec::new();
    skip_lws(raw, &mut i);
    while i < raw.len() {
        let name = take_token(raw, &mut i);
        if name.is_empty() {
            return Err(DigestError::Syntax("expected a parameter name"));
        }
        let name = utf8(name)?;
        skip_lws(raw, &mut i);
        if raw.get(i) != Some(&b'=') {
            return Err(DigestError::Syntax("expected '='"));
        }
        i += 1;
        skip_lws(raw, &mut i);
        let (value, quoted) = if raw.get(i) == Some(&b'"') {
            (take_quoted(raw, &mut i)?, true)
        } else {
            // A token; lenient about the characters (some clients send unquoted URIs), strict
            // about the end: whitespace or a comma.
            let s = i;
            while i < raw.len() && raw[i] != b',' && !is_lws(raw[i]) {
                i += 1;
            }
            if i == s {
                return Err(DigestError::Syntax("empty value"));
            }
            (utf8(&raw[s..i])?, false)
        };
        if params.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
            return Err(DigestError::Duplicate(name));
        }
        params.push(AuthParam {
            name,
            value,
            quoted,
        });
        skip_lws(raw, &mut i);
        match raw.get(i) {
            None => break,
            Some(b',') => {
                i += 1;
                skip_lws(raw, &mut i);
            }
            Some(_) => return Err(DigestError::Syntax("expected ','")),
        }
    }
    Ok(params)
}

fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_lws(raw: &[u8], i: &mut usize) {
    while *i < raw.len() && is_lws(raw[*i]) {
        *i += 1;
    }
}

fn take_token<'a>(raw: &'a [u8], i: &mut usize) -> &'a [u8] {
    let s = *i;
    while *i < raw.len() && crate::sip::message::is_token_char(raw[*i]) {
        *i += 1;
    }
    &raw[s..*i]
}

/// Reads a quoted-string starting at the opening quote (RFC 3261 §25.1 `quoted-pair`).
fn take_quoted(raw: &[u8], i: &mut usize) -> Result<String, DigestError> {
    *i += 1;
    let mut out = Vec::new();
    loop {
        match raw.get(*i) {
            None => return Err(DigestError::Syntax("unterminated quoted string")),
            Some(b'"') => {
                *i += 1;
                break;
            }
            Some(b'\\') => {
                let c = *raw
                    .get(*i + 1)
                    .ok_or(DigestError::Syntax("dangling escape"))?;
                if c == b'\r' || c == b'\n' {
                    return Err(DigestError::Syntax("escaped line end"));
                }
                out.push(c);
                *i += 2;
            }
            Some(&c) => {
                out.push(c);
                *i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DigestError::Syntax("not UTF-8"))
}

fn utf8(b: &[u8]) -> Result<String, DigestError> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| DigestError::Syntax("not UTF-8"))
}

/// Writes `, name=value` or `, name="value"` (escaping `"` and `\`); no comma for the first.
fn write_param(out: &mut String, first: &mut bool, name: &str, value: &str, quoted: bool) {
    out.push_str(if *first { " " } else { ", " });
    *first = false;
    out.push_str(name);
    out.push('=');
    if quoted {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Removes and returns the named parameter's value.
fn take(params: &mut Vec<AuthParam>, name: &str) -> Option<String> {
    let pos = params
        .iter()
        .position(|p| p.name.eq_ignore_ascii_case(name))?;
    Some(params.remove(pos).value)
}

/// A `Digest` challenge: the value of WWW-Authenticate or Proxy-Authenticate
/// (RFC 3261 §22.4, §25.1 `challenge`; RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`: the protection space, shown to the user (RFC 3261 §22.1).
    pub realm: String,
    /// `domain`, if given (a space-separated URI list).
    pub domain: Option<String>,
    /// `nonce`: server-chosen, opaque to the client.
    pub nonce: String,
    /// `opaque`, echoed back unchanged.
    pub opaque: Option<String>,
    /// `stale=true`: the previous nonce expired but the digest was right; retry silently.
    pub stale: bool,
    /// `algorithm`; MD5 when absent (RFC 3261 §25.1). Always printed.
    pub algorithm: Algorithm,
    /// `qop` options offered, e.g. `["auth"]`; empty when absent (RFC 2069 compatibility).
    pub qop: Vec<String>,
    /// Any other parameters, in order (e.g. `userhash`, `charset`).
    pub other: Vec<AuthParam>,
}

impl Challenge {
    /// Parses a WWW-Authenticate / Proxy-Authenticate value.
    pub fn parse(raw: &[u8]) -> Result<Challenge, DigestError> {
        let mut p = parse_auth(raw)?;
        let realm = take(&mut p, "realm").ok_or(DigestError::Missing("realm"))?;
        let nonce = take(&mut p, "nonce").ok_or(DigestError::Missing("nonce"))?;
        let stale = match take(&mut p, "stale") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(DigestError::BadValue("stale")),
        };
        let algorithm =
            take(&mut p, "algorithm").map_or(Algorithm::Md5, |a| Algorithm::from_token(&a));
        let qop = take(&mut p, "qop")
            .map(|q| {
                q.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Challenge {
            realm,
            domain: take(&mut p, "domain"),
            nonce,
            opaque: take(&mut p, "opaque"),
            stale,
            algorithm,
            qop,
            other: p,
        })
    }

    /// Whether `qop=auth` is offered.
    pub fn offers_auth(&self) -> bool {
        self.qop.iter().any(|q| q.eq_ignore_ascii_case("auth"))
    }
}

impl fmt::Display for Challenge {
    /// Prints the header value, `Digest realm="...", ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from("Digest");
        let first = &mut true;
        write_param(&mut s, first, "realm", &self.realm, true);
        if let Some(d) = &self.domain {
            write_param(&mut s, first, "domain", d, true);
        }
        write_param(&mut s, first, "nonce", &self.nonce, true);
        if let Some(o) = &self.opaque {
            write_param(&mut s, first, "opaque", o, true);
        }
        if self.stale {
            write_param(&mut s, first, "stale", "true", false);
        }
        write_param(&mut s, first, "algorithm", self.algorithm.as_str(), false);
        if !self.qop.is_empty() {
            write_param(&mut s, first, "qop", &self.qop.join(","), true);
        }
        for p in &self.other {
            write_param(&mut s, first, &p.name, &p.value, p.quoted);
        }
        f.write_str(&s)
    }
}

/// `Digest` credentials: the value of Authorization or Proxy-Authorization
/// (RFC 3261 §22.4, §25.1 `credentials`; RFC 7616 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`, copied from the challenge.
    pub realm: String,
    /// `nonce`, copied from the challenge.
    pub nonce: String,
    /// `uri`: the Request-URI the response was computed over.
    pub uri: String,
    /// `response`: the request digest, lowercase hex.
    pub response: String,
    /// `algorithm`; `None` when absent (then MD5, RFC 3261 §25.1).
    pub algorithm: Option<Algorithm>,
    /// `cnonce`: required with a qop.
    pub cnonce: Option<String>,
    /// `opaque`, echoed from the challenge.
    pub opaque: Option<String>,
    /// `qop` chosen (unquoted `auth`); `None` for RFC 2069 style.
    pub qop: Option<String>,
    /// `nc`: the nonce count, eight lowercase hex digits on the wire; required with a qop.
    pub nc: Option<u32>,
    /// Any other parameters, in order.
    pub other: Vec<AuthParam>,
}

impl Credentials {
    /// Parses an Authorization / Proxy-Authorization value.
    pub fn parse(raw: &[u8]) -> Result<Credentials, DigestError> {
        let mut p = parse_auth(raw)?;
        let nc = match take(&mut p, "nc") {
            None => None,
            Some(v) => Some(parse_nc(&v).ok_or(DigestError::BadValue("nc"))?),
        };
        Ok(Credentials {
            username: take(&mut p, "username").ok_or(DigestError::Missing("username"))?,
            realm: take(&mut p, "realm").ok_or(DigestError::Missing("realm"))?,
            nonce: take(&mut p, "nonce").ok_or(DigestError::Missing("nonce"))?,
            uri: take(&mut p, "uri").ok_or(DigestError::Missing("uri"))?,
            response: take(&mut p, "response").ok_or(DigestError::Missing("response"))?,
            algorithm: take(&mut p, "algorithm").map(|a| Algorithm::from_token(&a)),
            cnonce: take(&mut p, "cnonce"),
            opaque: take(&mut p, "opaque"),
            qop: take(&mut p, "qop"),
            nc,
            other: p,
        })
    }

    /// The algorithm in effect (MD5 when absent).
    pub fn effective_algorithm(&self) -> Algorithm {
        self.algorithm.clone().unwrap_or(Algorithm::Md5)
    }
}

/// `nc-value = 8LHEX` (RFC 7616 §3.4: lowercase hex, exactly eight digits).
fn parse_nc(v: &str) -> Option<u32> {
    let ok = v.len() == 8
        && v.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if ok {
        u32::from_str_radix(v, 16).ok()
    } else {
        None
    }
}

impl fmt::Display for Credentials {
    /// Prints the header value, `Digest username="...", ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from("Digest");
        let first = &mut true;
        write_param(&mut s, first, "username", &self.username, true);
        write_param(&mut s, first, "realm", &self.realm, true);
        write_param(&mut s, first, "nonce", &self.nonce, true);
        write_param(&mut s, first, "uri", &self.uri, true);
        write_param(&mut s, first, "response", &self.response, true);
        if let Some(a) = &self.algorithm {
            write_param(&mut s, first, "algorithm", a.as_str(), false);
        }
        if let Some(c) = &self.cnonce {
            write_param(&mut s, first, "cnonce", c, true);
        }
        if let Some(o) = &self.opaque {
            write_param(&mut s, first, "opaque", o, true);
        }
        if let Some(q) = &self.qop {
            write_param(&mut s, first, "qop", q, false);
        }
        if let Some(nc) = self.nc {
            write_param(&mut s, first, "nc", &format!("{nc:08x}"), false);
        }
        for p in &self.other {
            write_param(&mut s, first, &p.name, &p.value, p.quoted);
        }
        f.write_str(&s)
    }
}

/// The credentials for `realm` among a request's Authorization headers (Proxy-Authorization
/// with `proxy`): a request may carry one per realm (RFC 3261 §22.3). Other schemes and other
/// realms are skipped; a malformed Digest value is an error only if none matches.
pub fn find_credentials(
    msg: &Message,
    proxy: bool,
    realm: &str,
) -> Result<Option<Credentials>, DigestError> {
    let name = if proxy {
        HeaderName::ProxyAuthorization
    } else {
        HeaderName::Authorization
    };
    let mut first_err = None;
    for v in msg.headers.get_all(&name) {
        match Credentials::parse(v) {
            Ok(c) if c.realm == realm => return Ok(Some(c)),
            Ok(_) | Err(DigestError::NotDigest) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(None), Err)
}

/// What the server knows about a user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSecret {
    /// The clear-text password.
    Password(String),
    /// Precomputed `HA1 = H(username:realm:password)` (RFC 7616 §3.4.2), lowercase hex, per
    /// hash; an algorithm whose HA1 is missing cannot be verified.
    Ha1 {
        /// MD5 HA1 (32 hex digits).
        md5: Option<String>,
        /// SHA-256 HA1 (64 hex digits).
        sha256: Option<String>,
    },
}

impl UserSecret {
    /// `H(username:realm:password)` for the algorithm's hash, before any `-sess` step.
    fn base_ha1(&self, kind: HashKind, username: &str, realm: &str) -> Option<String> {
        match self {
            UserSecret::Password(pw) => {
                Some(kind.hex(format!("{username}:{realm}:{pw}").as_bytes()))
            }
            UserSecret::Ha1 { md5, sha256 } => match kind {
                HashKind::Md5 => md5.clone(),
                HashKind::Sha256 => sha256.clone(),
            },
        }
    }
}

/// The request digest of RFC 7616 §3.4.1 (`qop=auth`) or RFC 2069 (no qop), lowercase hex.
/// `None` for an algorithm this crate does not compute or a secret without its HA1.
/// `auth-int` is not computed (it needs the body hash and no SIP UA we serve uses it).
#[allow(clippy::too_many_arguments)]
fn request_digest(
    alg: &Algorithm,
    secret: &UserSecret,
    username: &str,
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, u32, &str)>,
) -> Option<String> {
    let kind = alg.base()?;
    let mut ha1 = secret.base_ha1(kind, username, realm)?;
    if alg.is_sess() {
        // RFC 7616 §3.4.2: HA1 = H(H(user:realm:pw):nonce:cnonce); -sess needs a cnonce.
        let (_, _, cnonce) = qop?;
        ha1 = kind.hex(format!("{ha1}:{nonce}:{cnonce}").as_bytes());
    }
    let ha2 = kind.hex(format!("{method}:{uri}").as_bytes());
    let data = match qop {
        Some((q, nc, cnonce)) => format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:{q}:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    Some(kind.hex(data.as_bytes()))
}

/// The client side: answers a challenge (RFC 3261 §22.4, RFC 7616 §3.4).
///
/// Uses `qop=auth` with `cnonce` and `nc` when the challenge offers it, otherwise the RFC 2069
/// form without them. `nc` counts the requests sent with this nonce, starting at 1.
pub fn respond(
    challenge: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials, DigestError> {
    let alg = &challenge.algorithm;
    if !alg.is_supported() {
        return Err(DigestError::Unsupported(format!("algorithm {alg}")));
    }
    let with_qop = if challenge.qop.is_empty() {
        false
    } else if challenge.offers_auth() {
        true
    } else {
        return Err(DigestError::Unsupported(format!(
            "qop {}",
            challenge.qop.join(",")
        )));
    };
    let qop = with_qop.then_some(("auth", nc, cnonce));
    let secret = UserSecret::Password(password.to_string());
    let response = request_digest(
        alg,
        &secret,
        username,
        &challenge.realm,
        &challenge.nonce,
        method,
        uri,
        qop,
    )
    .ok_or(DigestError::Unsupported(format!(
        "algorithm {alg} without qop"
    )))?;
    Ok(Credentials {
        username: username.to_string(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_string(),
        response,
        algorithm: Some(alg.clone()),
        cnonce: with_qop.then(|| cnonce.to_string()),
        opaque: challenge.opaque.clone(),
        qop: with_qop.then(|| "auth".to_string()),
        nc: with_qop.then_some(nc),
        other: Vec::new(),
    })
}

/// The outcome of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The digest is right and the nonce is ours and fresh.
    Ok,
    /// The digest is right but the nonce has expired: challenge again with `stale=true`
    /// (RFC 7616 §3.3: only when the digest itself is valid).
    Stale,
    /// Not authenticated: challenge again (401/407) without `stale`; log the reason at debug.
    Bad(BadReason),
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadReason {
    /// The realm is not this server's.
    WrongRealm,
    /// The algorithm is unknown or not offered by this server.
    Algorithm,
    /// The nonce was not issued by a server sharing this secret, or is malformed.
    ForeignNonce,
    /// The nonce carries a time ahead of `now` by more than the allowed skew.
    FutureNonce,
    /// `qop` is not `auth`, or `cnonce`/`nc` are missing for it.
    Qop,
    /// RFC 2069 style credentials (no qop) while this server requires qop.
    QopRequired,
    /// The user's secret has no HA1 for this algorithm.
    NoSecret,
    /// The response does not match: wrong password, or a tampered field.
    WrongResponse,
}

impl BadReason {
    /// A short phrase for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BadReason::WrongRealm => "realm is not ours",
            BadReason::Algorithm => "algorithm not offered",
            BadReason::ForeignNonce => "nonce not issued by us",
            BadReason::FutureNonce => "nonce from the future",
            BadReason::Qop => "bad qop, cnonce or nc",
            BadReason::QopRequired => "qop required",
            BadReason::NoSecret => "no HA1 for this algorithm",
            BadReason::WrongResponse => "wrong response",
        }
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The server side: issues challenges with a stateless nonce and verifies credentials.
///
/// The nonce is `hex(timestamp) || hex(salt) || hex(HMAC-SHA-256(secret, timestamp||salt)[..16])`
/// (64 hex digits): any worker holding the same secret can check it and tell its age without a
/// shared table. Replay of a nonce within its lifetime (nonce-count tracking, RFC 7616 §3.4)
/// needs per-nonce state and is left to the caller.
#[derive(Debug, Clone)]
pub struct Authenticator {
    realm: String,
    secret: Vec<u8>,
    /// Algorithms offered, most preferred first (RFC 8760 §2.4: one challenge per algorithm).
    pub algorithms: Vec<Algorithm>,
    /// Seconds a nonce stays fresh; after that a correct digest earns [`Verdict::Stale`].
    pub nonce_lifetime: u64,
    /// Seconds a nonce's time may be ahead of `now` (clocks of different workers).
    pub max_skew: u64,
    /// Whether credentials without qop (RFC 2069 style) are accepted; RFC 3261 §22.4 keeps
    /// them for backward compatibility.
    pub allow_rfc2069: bool,
}

const NONCE_LEN: usize = 64;

impl Authenticator {
    /// A server for `realm` with a nonce secret (any length; 32 random bytes is plenty).
    /// Defaults: SHA-256 then MD5, nonce lifetime 300 s, skew 30 s, RFC 2069 clients accepted.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> Authenticator {
        Authenticator {
            realm: realm.into(),
            secret: secret.into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: 300,
            max_skew: 30,
            allow_rfc2069: true,
        }
    }

    /// The realm this server authenticates.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce issued at `now_secs`; `salt` makes nonces issued in the same second differ.
    pub fn nonce(&self, now_secs: u64, salt: u64) -> String {
        let mut data = [0u8; 16];
        data[..8].copy_from_slice(&now_secs.to_be_bytes());
        data[8..].copy_from_slice(&salt.to_be_bytes());
        let mac = hmac_sha256(&self.secret, &data);
        let mut s = to_hex(&data);
        s.push_str(&to_hex(&mac[..16]));
        s
    }

    /// The issue time of a nonce, if this server (or one sharing its secret) issued it.
    pub fn nonce_time(&self, nonce: &str) -> Option<u64> {
        let raw = from_hex(nonce)?;
        if nonce.len() != NONCE_LEN {
            return None;
        }
        let (data, mac) = raw.split_at(16);
        let expect = hmac_sha256(&self.secret, data);
        if !ct_eq(mac, &expect[..16]) {
            return None;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&data[..8]);
        Some(u64::from_be_bytes(ts))
    }

    /// One challenge for one algorithm (RFC 3261 §22.4: realm, nonce, algorithm, qop).
    pub fn challenge(
        &self,
        algorithm: Algorithm,
        now_secs: u64,
        salt: u64,
        stale: bool,
    ) -> Challenge {
        Challenge {
            realm: self.realm.clone(),
            domain: None,
            nonce: self.nonce(now_secs, salt),
            opaque: None,
            stale,
            algorithm,
            qop: vec!["auth".to_string()],
            other: Vec::new(),
        }
    }

    /// The challenges for a 401/407: one per offered algorithm, preferred first, sharing one
    /// nonce (RFC 8760 §2.4). Each goes in its own WWW-Authenticate / Proxy-Authenticate line.
    pub fn challenges(&self, now_secs: u64, salt: u64, stale: bool) -> Vec<Challenge> {
        self.algorithms
            .iter()
            .map(|a| self.challenge(a.clone(), now_secs, salt, stale))
            .collect()
    }

    /// Verifies credentials for a request with this method, given the user's secret
    /// (RFC 3261 §22.4, RFC 7616 §3.4). Comparing `credentials.uri` with the Request-URI and
    /// looking up the user are the caller's.
    pub fn verify(
        &self,
        credentials: &Credentials,
        method: &str,
        secret: &UserSecret,
        now_secs: u64,
    ) -> Verdict {
        let c = credentials;
        if c.realm != self.realm {
            return Verdict::Bad(BadReason::WrongRealm);
        }
        let alg = c.effective_algorithm();
        if !alg.is_supported() || !self.algorithms.contains(&alg) {
            return Verdict::Bad(BadReason::Algorithm);
        }
        let Some(issued) = self.nonce_time(&c.nonce) else {
            return Verdict::Bad(BadReason::ForeignNonce);
        };
        if issued > now_secs.saturating_add(self.max_skew) {
            return Verdict::Bad(BadReason::FutureNonce);
        }
        let qop = match (&c.qop, &c.cnonce, c.nc) {
            (None, _, _) if !self.allow_rfc2069 || alg.is_sess() => {
                return Verdict::Bad(BadReason::QopRequired)
            }
            (None, _, _) => None,
            (Some(q), Some(cn), Some(nc)) if q.eq_ignore_ascii_case("auth") => {
                Some(("auth", nc, cn.as_str()))
            }
            _ => return Verdict::Bad(BadReason::Qop),
        };
        let Some(expect) = request_digest(
            &alg,
            secret,
            &c.username,
            &c.realm,
            &c.nonce,
            method,
            &c.uri,
            qop,
        ) else {
            return Verdict::Bad(BadReason::NoSecret);
        };
        if !ct_eq(
            expect.as_bytes(),
            c.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Verdict::Bad(BadReason::WrongResponse);
        }
        if now_secs.saturating_sub(issued) > self.nonce_lifetime {
            Verdict::Stale
        } else {
            Verdict::Ok
        }
    }
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    const B: usize = 64;
    let mut k = [0u8; B];
    if key.len() > B {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    pairs.map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

/// The users file: who may register, and their secrets.
///
/// One entry per line; blank lines and lines whose first non-blank character is `#` are
/// ignored. Fields are separated by blanks:
///
/// ```text
/// # identity            secret
/// alice@example.com     Circle Of Life          <- realm example.com; the password is the rest
/// bob                   s3cret                  <-    of the line, trimmed (may hold spaces)
/// carol@example.com     {MD5}8ff0...32 hex  {SHA-256}a1b2...64 hex   <- HA1 form
/// ```
///
/// The identity is `user@realm` or `user` (then it matches any realm). A secret made only of
/// `{MD5}<32 hex>` and/or `{SHA-256}<64 hex>` words is a precomputed
/// `HA1 = H(user:realm:password)` (RFC 7616 §3.4.2), which needs `user@realm` since it depends
/// on the realm. Any other secret is a clear-text password. An identity may appear once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    users: HashMap<(String, Option<String>), UserSecret>,
}

impl UserDb {
    /// Parses a users file; the error names the first bad line.
    pub fn parse(text: &str) -> Result<UserDb, DigestError> {
        let mut db = UserDb::default();
        for (n, line) in text.lines().enumerate() {
            let err = |reason| DigestError::UsersFile {
                line: n + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (ident, secret) = line.split_once([' ', '\t']).ok_or(err("missing secret"))?;
            let secret = secret.trim();
            let (user, realm) = match ident.split_once('@') {
                Some((u, r)) if !u.is_empty() && !r.is_empty() => (u, Some(r.to_string())),
                Some(_) => return Err(err("bad identity")),
                None => (ident, None),
            };
            let secret = match parse_ha1(secret) {
                Some(Ok(s)) if realm.is_some() => s,
                Some(Ok(_)) => return Err(err("an HA1 entry needs user@realm")),
                Some(Err(reason)) => return Err(err(reason)),
                None => UserSecret::Password(secret.to_string()),
            };
            if db.users.insert((user.to_string(), realm), secret).is_some() {
                return Err(err("duplicate identity"));
            }
        }
        Ok(db)
    }

    /// Adds or replaces an entry; `realm: None` matches any realm.
    pub fn insert(&mut self, user: &str, realm: Option<&str>, secret: UserSecret) {
        self.users
            .insert((user.to_string(), realm.map(str::to_string)), secret);
    }

    /// The secret of a digest `username` in `realm`: the `user@realm` entry, else the bare
    /// `user` entry. A username of the IMS form `user@realm` also finds the entry of `user`.
    pub fn lookup(&self, username: &str, realm: &str) -> Option<&UserSecret> {
        let find = |u: &str| {
            self.users
                .get(&(u.to_string(), Some(realm.to_string())))
                .or_else(|| self.users.get(&(u.to_string(), None)))
        };
        find(username).or_else(|| match username.split_once('@') {
            Some((u, r)) if r.eq_ignore_ascii_case(realm) => find(u),
            _ => None,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// `None` if the secret is not in HA1 form; else the HA1 secret or what is wrong with it.
fn parse_ha1(secret: &str) -> Option<Result<UserSecret, &'static str>> {
    let words: Vec<&str> = secret.split_whitespace().collect();
    let tagged = |w: &str| {
        let u = w.to_ascii_uppercase();
        u.starts_with("{MD5}") || u.starts_with("{SHA-256}")
    };
    if words.is_empty() || !words.iter().all(|w| tagged(w)) {
        return None;
    }
    let (mut md5, mut sha256) = (None, None);
    for w in words {
        let (tag, hex) = w.split_once('}').unwrap_or((w, ""));
        let (slot, kind) = if tag.eq_ignore_ascii_case("{MD5") {
            (&mut md5, HashKind::Md5)
        } else {
            (&mut sha256, HashKind::Sha256)
        };
        if hex.len() != kind.hex_len() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Some(Err("bad HA1 hex"));
        }
        if slot.replace(hex.to_ascii_lowercase()).is_some() {
            return Some(Err("HA1 given twice"));
        }
    }
    Some(Ok(UserSecret::Ha1 { md5, sha256 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 2617 §3.5 (the MD5 example; the password there is "Circle Of Life").
    const RFC2617_AUTH: &str = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
        nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
        nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
        opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    // RFC 7616 §3.9.1 (password "Circle of Life", lowercase "of": erratum 4495).
    const RFC7616_CHALLENGE: &str =
        "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
        algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    const RFC7616_AUTH: &str = "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
        uri=\"/dir/index.html\", algorithm=SHA-256, \
        nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
        cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
        response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    fn digest_of(c: &Credentials, password: &str, method: &str) -> Option<String> {
        let qop = c
            .qop
            .as_ref()
            .map(|q| (q.as_str(), c.nc.unwrap(), c.cnonce.as_deref().unwrap()));
        request_digest(
            &c.effective_algorithm(),
            &UserSecret::Password(password.into()),
            &c.username,
            &c.realm,
            &c.nonce,
            method,
            &c.uri,
            qop,
        )
    }

    #[test]
    fn rfc2617_md5_example() {
        let c = Credentials::parse(RFC2617_AUTH.as_bytes()).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.algorithm, None);
        assert_eq!(digest_of(&c, "Circle Of Life", "GET").unwrap(), c.response);
        assert_ne!(digest_of(&c, "Circle of Life", "GET").unwrap(), c.response);
    }

    #[test]
    fn rfc7616_sha256_example() {
        let c = Credentials::parse(RFC7616_AUTH.as_bytes()).unwrap();
        assert_eq!(c.algorithm, Some(Algorithm::Sha256));
        assert_eq!(digest_of(&c, "Circle of Life", "GET").unwrap(), c.response);
        // The client side reproduces it from the challenge.
        let ch = Challenge::parse(RFC7616_CHALLENGE.as_bytes()).unwrap();
        assert_eq!(ch.qop, vec!["auth", "auth-int"]);
        let r = respond(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            c.cnonce.as_deref().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(r.response, c.response);
        assert_eq!(r.opaque, c.opaque);
        // And MD5 over the same inputs gives the RFC's MD5 answer.
        let md5 = Challenge {
            algorithm: Algorithm::Md5,
            ..ch
        };
        let r = respond(
            &md5,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            c.cnonce.as_deref().unwrap(),
            1,
        )
        .unwrap();
        assert_eq!(r.response, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc2069_without_qop() {
        let ch = Challenge::parse(
            b"Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
        )
        .unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        let r = respond(
            &ch,
            "Mufasa",
            "CircleOfLife",
            "GET",
            "/dir/index.html",
            "x",
            1,
        )
        .unwrap();
        // RFC 2069 §2.4 example response.
        assert_eq!(r.response, "1949323746fe6a43ef61f9606e7febea");
        assert_eq!((r.qop, r.nc, r.cnonce), (None, None, None));
    }

    #[test]
    fn escapes_unknown_params_and_round_trip() {
        let raw = br#"Digest realm="a \"q\" \\ b",nonce="n", stale=TRUE ,algorithm=md5-sess, qop="auth", userhash=true, x="y,z""#;
        let ch = Challenge::parse(raw).unwrap();
        assert_eq!(ch.realm, r#"a "q" \ b"#);
        assert!(ch.stale);
        assert_eq!(ch.algorithm, Algorithm::Md5Sess);
        assert_eq!(ch.other.len(), 2);
        assert_eq!(
            ch.other[1],
            AuthParam {
                name: "x".into(),
                value: "y,z".into(),
                quoted: true
            }
        );
        let printed = ch.to_string();
        assert_eq!(
            printed,
            r#"Digest realm="a \"q\" \\ b", nonce="n", stale=true, algorithm=MD5-sess, qop="auth", userhash=true, x="y,z""#
        );
        assert_eq!(Challenge::parse(printed.as_bytes()).unwrap(), ch);

        let c = Credentials::parse(RFC7616_AUTH.as_bytes()).unwrap();
        assert_eq!(Credentials::parse(c.to_string().as_bytes()).unwrap(), c);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            Challenge::parse(b"Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse(b"Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert!(matches!(
            Challenge::parse(b"Digest realm=\"x"),
            Err(DigestError::Syntax(_))
        ));
        assert!(matches!(
            Challenge::parse(b"Digest realm=\"x\" nonce=\"y\""),
            Err(DigestError::Syntax(_))
        ));
        assert!(matches!(
            Challenge::parse(b"Digest realm"),
            Err(DigestError::Syntax(_))
        ));
        assert!(matches!(Challenge::parse(b""), Err(DigestError::Syntax(_))));
        assert_eq!(
            Challenge::parse(b"Digest realm=a, REALM=b, nonce=c"),
            Err(DigestError::Duplicate("REALM".into()))
        );
        let bad_nc = RFC7616_AUTH.replace("nc=00000001", "nc=1");
        assert_eq!(
            Credentials::parse(bad_nc.as_bytes()),
            Err(DigestError::BadValue("nc"))
        );
        assert_eq!(
            Credentials::parse(b"Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:x\""),
            Err(DigestError::Missing("response"))
        );
        let unsupported =
            Challenge::parse(b"Digest realm=r, nonce=n, algorithm=AKAv1-MD5").unwrap();
        assert!(matches!(
            respond(&unsupported, "u", "p", "REGISTER", "sip:r", "c", 1),
            Err(DigestError::Unsupported(_))
        ));
        let int_only = Challenge::parse(b"Digest realm=r, nonce=n, qop=\"auth-int\"").unwrap();
        assert!(matches!(
            respond(&int_only, "u", "p", "REGISTER", "sip:r", "c", 1),
            Err(DigestError::Unsupported(_))
        ));
    }

    fn server() -> Authenticator {
        Authenticator::new("example.com", b"worker secret".to_vec())
    }

    #[test]
    fn stateless_nonce() {
        let s = server();
        let n = s.nonce(1_700_000_000, 42);
        assert_eq!(n.len(), NONCE_LEN);
        assert_ne!(n, s.nonce(1_700_000_000, 43));
        assert_eq!(s.nonce_time(&n), Some(1_700_000_000));
        // Another worker with the same secret agrees; one with another secret does not.
        assert_eq!(server().nonce_time(&n), Some(1_700_000_000));
        assert_eq!(
            Authenticator::new("example.com", b"other".to_vec()).nonce_time(&n),
            None
        );
        // A forged timestamp breaks the MAC.
        let forged = format!("{:016x}{}", 1_800_000_000u64, &n[16..]);
        assert_eq!(s.nonce_time(&forged), None);
        assert_eq!(s.nonce_time("zz"), None);
        assert_eq!(s.nonce_time(&n[..62]), None);
    }

    #[test]
    fn server_verifies_both_algorithms() {
        let s = server();
        let t0 = 1_700_000_000;
        let chs = s.challenges(t0, 7, false);
        assert_eq!(
            chs.iter().map(|c| c.algorithm.clone()).collect::<Vec<_>>(),
            [Algorithm::Sha256, Algorithm::Md5]
        );
        let pw = UserSecret::Password("pw".into());
        let nope = UserSecret::Password("nope".into());
        for ch in &chs {
            // Over the wire and back.
            let ch = Challenge::parse(ch.to_string().as_bytes()).unwrap();
            let c = respond(&ch, "alice", "pw", "REGISTER", "sip:example.com", "abc", 1).unwrap();
            let c = Credentials::parse(c.to_string().as_bytes()).unwrap();
            assert_eq!(s.verify(&c, "REGISTER", &pw, t0 + 10), Verdict::Ok);
            assert_eq!(
                s.verify(&c, "INVITE", &pw, t0 + 10),
                Verdict::Bad(BadReason::WrongResponse)
            );
            assert_eq!(
                s.verify(&c, "REGISTER", &nope, t0 + 10),
                Verdict::Bad(BadReason::WrongResponse)
            );
            assert_eq!(s.verify(&c, "REGISTER", &pw, t0 + 301), Verdict::Stale);
            assert_eq!(
                s.verify(&c, "REGISTER", &pw, t0 - 31),
                Verdict::Bad(BadReason::FutureNonce)
            );
            // A stale nonce with a wrong password is Bad, not Stale.
            assert_eq!(
                s.verify(&c, "REGISTER", &nope, t0 + 301),
                Verdict::Bad(BadReason::WrongResponse)
            );
        }
    }

    #[test]
    fn server_refusals() {
        let s = server();
        let t0 = 1_000;
        let pw = UserSecret::Password("pw".into());
        let ch = s.challenge(Algorithm::Md5, t0, 1, false);
        let good = respond(&ch, "alice", "pw", "REGISTER", "sip:example.com", "abc", 1).unwrap();

        let wrong_realm = Credentials {
            realm: "other".into(),
            ..good.clone()
        };
        assert_eq!(
            s.verify(&wrong_realm, "REGISTER", &pw, t0),
            Verdict::Bad(BadReason::WrongRealm)
        );
        let foreign = Credentials {
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            ..good.clone()
        };
        assert_eq!(
            s.verify(&foreign, "REGISTER", &pw, t0),
            Verdict::Bad(BadReason::ForeignNonce)
        );
        let no_cnonce = Credentials {
            cnonce: None,
            ..good.clone()
        };
        assert_eq!(
            s.verify(&no_cnonce, "REGISTER", &pw, t0),
            Verdict::Bad(BadReason::Qop)
        );
        let other_alg = Credentials {
            algorithm: Some(Algorithm::from_token("SHA-512-256")),
            ..good.clone()
        };
        assert_eq!(
            s.verify(&other_alg, "REGISTER", &pw, t0),
            Verdict::Bad(BadReason::Algorithm)
        );

        // RFC 2069 style: accepted by default, refused when qop is required.
        let ch2069 = Challenge {
            qop: vec![],
            ..ch.clone()
        };
        let old = respond(&ch2069, "alice", "pw", "REGISTER", "sip:example.com", "", 0).unwrap();
        assert_eq!(s.verify(&old, "REGISTER", &pw, t0), Verdict::Ok);
        let strict = Authenticator {
            allow_rfc2069: false,
            ..s.clone()
        };
        assert_eq!(
            strict.verify(&old, "REGISTER", &pw, t0),
            Verdict::Bad(BadReason::QopRequired)
        );

        // HA1 only for MD5: SHA-256 credentials cannot be checked.
        let ha1 = UserSecret::Ha1 {
            md5: Some(HashKind::Md5.hex(b"alice:example.com:pw")),
            sha256: None,
        };
        assert_eq!(s.verify(&good, "REGISTER", &ha1, t0), Verdict::Ok);
        let sha = respond(
            &s.challenge(Algorithm::Sha256, t0, 1, false),
            "alice",
            "pw",
            "REGISTER",
            "sip:x",
            "c",
            1,
        )
        .unwrap();
        assert_eq!(
            s.verify(&sha, "REGISTER", &ha1, t0),
            Verdict::Bad(BadReason::NoSecret)
        );

        // -sess variants verify when offered.
        let sess = Authenticator {
            algorithms: vec![Algorithm::Sha256Sess],
            ..s.clone()
        };
        let c = respond(
            &sess.challenge(Algorithm::Sha256Sess, t0, 2, false),
            "alice",
            "pw",
            "INVITE",
            "sip:b@x",
            "cn",
            3,
        )
        .unwrap();
        assert_eq!(sess.verify(&c, "INVITE", &pw, t0), Verdict::Ok);
    }

    #[test]
    fn credentials_in_a_request() {
        let s = server();
        let ch = s.challenge(Algorithm::Sha256, 1000, 1, false);
        let c = respond(&ch, "alice", "pw", "REGISTER", "sip:example.com", "c", 1).unwrap();
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nAuthorization: Basic QWxhZGRpbjpvcGVu\r\n\
             Authorization: Digest username=\"alice\", realm=\"other.net\", nonce=\"n\", uri=\"sip:x\", response=\"r\"\r\n\
             Authorization: {c}\r\nProxy-Authorization: Digest realm=\r\nContent-Length: 0\r\n\r\n"
        );
        let m = crate::sip::parse(bytes::Bytes::from(raw)).unwrap();
        let found = find_credentials(&m, false, "example.com").unwrap().unwrap();
        assert_eq!(found, c);
        assert_eq!(
            s.verify(&found, "REGISTER", &UserSecret::Password("pw".into()), 1000),
            Verdict::Ok
        );
        assert_eq!(find_credentials(&m, false, "nowhere"), Ok(None));
        assert_eq!(
            Credentials::parse(b"Basic QWxhZGRpbjpvcGVu"),
            Err(DigestError::NotDigest)
        );
        assert!(find_credentials(&m, true, "example.com").is_err());
    }

    #[test]
    fn users_file() {
        let md5 = HashKind::Md5.hex(b"carol:example.com:pw");
        let sha = HashKind::Sha256.hex(b"carol:example.com:pw");
        let text = format!(
            "# users\n\nalice@example.com  Circle Of Life \n\tbob\ts3cret\ncarol@example.com {{MD5}}{md5} {{sha-256}}{}\n",
            sha.to_uppercase()
        );
        let db = UserDb::parse(&text).unwrap();
        assert_eq!(db.len(), 3);
        assert_eq!(
            db.lookup("alice", "example.com"),
            Some(&UserSecret::Password("Circle Of Life".into()))
        );
        assert_eq!(
            db.lookup("alice@example.com", "example.com"),
            db.lookup("alice", "example.com")
        );
        assert_eq!(db.lookup("alice", "other.org"), None);
        assert_eq!(
            db.lookup("bob", "anywhere"),
            Some(&UserSecret::Password("s3cret".into()))
        );
        assert_eq!(
            db.lookup("carol", "example.com"),
            Some(&UserSecret::Ha1 {
                md5: Some(md5),
                sha256: Some(sha)
            })
        );

        let err = |t: &str| match UserDb::parse(t) {
            Err(DigestError::UsersFile { line, reason }) => (line, reason),
            other => panic!("{other:?}"),
        };
        assert_eq!(err("# c\nalice"), (2, "missing secret"));
        assert_eq!(err("a p\na q"), (2, "duplicate identity"));
        assert_eq!(err("@x p"), (1, "bad identity"));
        assert_eq!(
            err("carol {MD5}0123456789abcdef0123456789abcdef"),
            (1, "an HA1 entry needs user@realm")
        );
        assert_eq!(err("\n\ncarol@x {MD5}0123"), (3, "bad HA1 hex"));
    }
}
