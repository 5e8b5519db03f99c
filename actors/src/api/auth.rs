//! Who is calling the API: a bearer token from `--api-tokens` (RFC 6750 §2.1) or HTTP Digest
//! (RFC 7616, `qop=auth`, SHA-256 and MD5) with the SIP credentials of `--users-file`.
//!
//! The result is the caller's address-of-record, `sip:USER@FIRST-DOMAIN`: every storage query
//! is scoped by it, and nothing in a request can name another owner.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use cpm_engine::sip::digest::{Credentials, Verdict};

use crate::shared::Shared;

/// The bearer tokens of `--api-tokens`, by token.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tokens {
    by_token: HashMap<String, String>,
}

impl Tokens {
    /// Parses `user token` lines; blank lines and `#` comments are skipped. A user may have
    /// several tokens; a token may appear once. The error names the first bad line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut t = Tokens::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(user), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {}: expected `user token`", n + 1));
            };
            let user = user.split('@').next().unwrap_or(user);
            if user.is_empty() || token.len() < 8 {
                return Err(format!(
                    "line {}: empty user or token shorter than 8 characters",
                    n + 1
                ));
            }
            if t.by_token.insert(token.into(), user.into()).is_some() {
                return Err(format!("line {}: duplicate token", n + 1));
            }
        }
        Ok(t)
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("api tokens {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("api tokens {}: {e}", path.display()))
    }

    /// The user a token belongs to.
    pub fn user(&self, token: &str) -> Option<&str> {
        self.by_token.get(token).map(String::as_str)
    }

    /// Whether the file named no token.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// The authenticated caller: the AOR whose data every query is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Neither `--users-file` nor `--api-tokens`: 503.
    Disabled,
    /// No or wrong credentials: 401 with these `WWW-Authenticate` values.
    Unauthorized(Vec<String>),
}

/// The API's authenticator over the shared users database and the tokens file.
#[derive(Debug, Default)]
pub struct ApiAuth {
    tokens: Tokens,
    salt: AtomicU64,
}

impl ApiAuth {
    /// An authenticator taking `tokens` (and digest, when the server has a users file).
    pub fn new(tokens: Tokens, seed: u64) -> ApiAuth {
        ApiAuth {
            tokens,
            salt: AtomicU64::new(seed),
        }
    }

    /// Authenticates a request from its `Authorization` value, method and request-target
    /// (path and query, as the digest `uri` must name it: RFC 7616 §3.4.6).
    pub fn check(
        &self,
        shared: &Shared,
        authorization: Option<&[u8]>,
        method: &str,
        target: &str,
    ) -> Result<Owner, Refusal> {
        let digest_on = shared.users.is_some();
        if !digest_on && self.tokens.is_empty() {
            return Err(Refusal::Disabled);
        }
        let mut stale = false;
        let mut bad_token = false;
        if let Some(value) = authorization {
            let (scheme, rest) = split_scheme(value);
            if scheme.eq_ignore_ascii_case(b"Bearer") {
                let token = std::str::from_utf8(rest).unwrap_or("").trim();
                match self.tokens.user(token) {
                    Some(user) => return Ok(self.owner(shared, user)),
                    None => bad_token = true,
                }
            } else if scheme.eq_ignore_ascii_case(b"Digest") && digest_on {
                match self.digest(shared, value, method, target) {
                    Ok(user) => return Ok(self.owner(shared, &user)),
                    Err(s) => stale = s,
                }
            }
        }
        Err(Refusal::Unauthorized(
            self.challenges(shared, stale, bad_token),
        ))
    }

    /// `Ok(username)`, or whether the digest was right but its nonce stale.
    fn digest(
        &self,
        shared: &Shared,
        value: &[u8],
        method: &str,
        target: &str,
    ) -> Result<String, bool> {
        let users = shared.users.as_ref().ok_or(false)?;
        let auth = &shared.auth;
        let creds = Credentials::parse(value).map_err(|e| {
            tracing::debug!(reason = %e, "API digest credentials malformed");
            false
        })?;
        if creds.realm != auth.realm() || creds.uri != target {
            tracing::debug!(uri = %creds.uri, "API digest for another realm or request-target");
            return Err(false);
        }
        let secret = users.lookup(&creds.username, auth.realm()).ok_or(false)?;
        match auth.verify(&creds, method, secret, now_secs()) {
            Verdict::Ok => Ok(creds.username),
            Verdict::Stale => Err(true),
            Verdict::Bad(why) => {
                tracing::debug!(user = %creds.username, reason = %why, "API digest refused");
                Err(false)
            }
        }
    }

    /// The caller's AOR: the user part of `user` (a digest username may be `user@realm`) at the
    /// server's first domain.
    fn owner(&self, shared: &Shared, user: &str) -> Owner {
        let user = user.split('@').next().unwrap_or(user);
        let domain = shared.domains.first().map_or("localhost", String::as_str);
        Owner(format!("sip:{user}@{domain}"))
    }

    /// The `WWW-Authenticate` values of a 401: Bearer when tokens are configured (with
    /// `error="invalid_token"` after a wrong one, RFC 6750 §3), and one Digest challenge per
    /// algorithm when users are (RFC 7616 §3.7: SHA-256 first).
    fn challenges(&self, shared: &Shared, stale: bool, bad_token: bool) -> Vec<String> {
        let realm = shared.auth.realm();
        let mut out = Vec::new();
        if !self.tokens.is_empty() {
            let mut b = format!("Bearer realm=\"{realm}\"");
            if bad_token {
                b.push_str(", error=\"invalid_token\"");
            }
            out.push(b);
        }
        if shared.users.is_some() {
            let salt = self.salt.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed);
            out.extend(
                shared
                    .auth
                    .challenges(now_secs(), salt, stale)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        out
    }
}

/// `Scheme rest` of an Authorization value (RFC 9110 §11.4).
fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    let v = value.trim_ascii_start();
    match v.iter().position(|&c| c == b' ' || c == b'\t') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[]),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file() {
        let t =
            Tokens::parse("# comment\n\nalice  tok-alice-1\nbob@localhost tok-bob-12\n").unwrap();
        assert_eq!(t.user("tok-alice-1"), Some("alice"));
        assert_eq!(t.user("tok-bob-12"), Some("bob"));
        assert_eq!(t.user("tok-alice"), None);
        assert!(Tokens::parse("alice").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("alice short").is_err());
        assert!(Tokens::parse("a tok-12345\nb tok-12345")
            .unwrap_err()
            .contains("line 2: duplicate"));
        assert!(Tokens::parse("a tok-12345 extra").is_err());
    }

    #[test]
    fn schemes_split() {
        assert_eq!(split_scheme(b"  Bearer abc"), (&b"Bearer"[..], &b"abc"[..]));
        assert_eq!(split_scheme(b"Digest"), (&b"Digest"[..], &b""[..]));
    }
}
