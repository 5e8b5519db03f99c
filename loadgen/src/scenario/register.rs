//! `register`: one registration per session (RFC 3261 §10.2), for users `0..users` in turn, each
//! from its own socket and with its own Contact (distinct ports and AORs, so the registrar's
//! table grows as in the field). A 401/407 is answered once with digest credentials
//! ([`cpm_engine::sip::digest::respond`]); the session succeeds on the 200.
//!
//! [`RegFlow`] is the registration of one user, shared with the `uas` (which registers its
//! users at `--register-to`, refreshes them and unregisters them at the end).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use cpm_engine::sip::digest::{self, Challenge, UserDb, UserSecret};
use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{HeaderName, Message, Method};

use super::{status_line, Outcome, RequestSpec, Scenario, SessionId, SocketId, SocketKind, Target};
use crate::driver::Ctx;
use crate::metrics::Quantity;

/// Where the passwords of digest authentication come from.
#[derive(Debug, Clone, Default)]
pub enum Secrets {
    /// None: a challenge fails the registration.
    #[default]
    None,
    /// One password for every user (`--password`).
    Password(String),
    /// A users file in cpmd's format (`user password` lines; `--users-file`).
    Users(UserDb),
}

impl Secrets {
    /// From `--password` and `--users-file` (the file wins for the users it names).
    pub fn load(password: Option<&str>, users_file: Option<&Path>) -> Result<Secrets, String> {
        match (users_file, password) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("users file {}: {e}", path.display()))?;
                let mut db = UserDb::parse(&text)
                    .map_err(|e| format!("users file {}: {}", path.display(), e.reason()))?;
                if let Some(p) = password {
                    // A fallback for users the file does not name: insert() would replace,
                    // so only the wildcard "*" entry is added.
                    db.insert("*", None, UserSecret::Password(p.to_string()));
                }
                Ok(Secrets::Users(db))
            }
            (None, Some(p)) => Ok(Secrets::Password(p.to_string())),
            (None, None) => Ok(Secrets::None),
        }
    }

    /// The clear-text password of `user` in `realm`.
    pub fn password(&self, user: &str, realm: &str) -> Option<String> {
        match self {
            Secrets::None => None,
            Secrets::Password(p) => Some(p.clone()),
            Secrets::Users(db) => match db.lookup(user, realm).or_else(|| db.lookup("*", realm)) {
                Some(UserSecret::Password(p)) => Some(p.clone()),
                _ => None,
            },
        }
    }
}

/// The registration of one user: REGISTER, the digest retry, and the granted expiry.
#[derive(Debug, Clone)]
pub struct RegFlow {
    /// The user (AOR user part).
    pub user: String,
    socket: SocketId,
    local: SocketAddr,
    registrar: SocketAddr,
    domain: String,
    call_id: String,
    from_tag: Bytes,
    cseq: u32,
    expires: u32,
    started: Instant,
    auth_tries: u32,
}

impl RegFlow {
    /// The flow of `user`, registering the contact `local` (the socket's address) for
    /// `expires` seconds (0 unregisters it) at `registrar`, AOR `sip:<user>@<domain>`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &mut Ctx<'_>,
        user: String,
        socket: SocketId,
        local: SocketAddr,
        registrar: SocketAddr,
        domain: String,
        expires: u32,
    ) -> RegFlow {
        RegFlow {
            user,
            socket,
            local,
            registrar,
            domain,
            call_id: ctx.new_call_id(),
            from_tag: ctx.new_tag(),
            cseq: 0,
            expires,
            started: ctx.now(),
            auth_tries: 0,
        }
    }

    /// Sends the first REGISTER of the flow (again, for a refresh: same Call-ID, next CSeq).
    pub fn send(&mut self, ctx: &mut Ctx<'_>, session: SessionId) -> Result<(), String> {
        self.started = ctx.now();
        self.auth_tries = 0;
        let req = self.request(ctx, None);
        ctx.send_request(session, self.socket, req, self.registrar)
            .map(|_| ())
            .map_err(|e| e.reason())
    }

    /// When the flow (or its refresh) started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Sets the expiry of the next REGISTER (0: unregister).
    pub fn set_expires(&mut self, expires: u32) {
        self.expires = expires;
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.domain)
    }

    fn request(&mut self, ctx: &mut Ctx<'_>, auth: Option<(HeaderName, String)>) -> Message {
        self.cseq += 1;
        let aor = format!("sip:{}@{}", self.user, self.domain);
        let branch = ctx.new_branch();
        let mut req = RequestSpec {
            method: Method::Register,
            uri: &self.request_uri(),
            via: self.local,
            from: &aor,
            to: &aor,
            call_id: &self.call_id,
            cseq: self.cseq,
        }
        .build_with(&branch, &self.from_tag);
        req.headers.push(
            HeaderName::Contact,
            format!("<sip:{}@{}>", self.user, self.local),
        );
        req.headers
            .push(HeaderName::Expires, self.expires.to_string());
        if let Some((name, value)) = auth {
            req.headers.push(name, value);
        }
        req
    }

    /// A final response: `Some(Ok(granted expiry))` on 2xx, `Some(Err(reason))` on failure,
    /// `None` when the challenge was answered and the flow goes on.
    pub fn on_final(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        resp: &Message,
        secrets: &Secrets,
    ) -> Option<Result<u32, String>> {
        match resp.status() {
            Some(200..=299) => Some(Ok(self.granted(resp))),
            Some(code @ (401 | 407)) => {
                if self.auth_tries >= 2 {
                    return Some(Err(format!("{} (credentials rejected)", status_line(resp))));
                }
                self.auth_tries += 1;
                let auth = match self.answer(ctx, resp, code == 407, secrets) {
                    Ok(a) => a,
                    Err(e) => return Some(Err(e)),
                };
                let req = self.request(ctx, Some(auth));
                match ctx.send_request(session, self.socket, req, self.registrar) {
                    Ok(_) => None,
                    Err(e) => Some(Err(e.reason())),
                }
            }
            _ => Some(Err(status_line(resp))),
        }
    }

    /// The Authorization (or Proxy-Authorization) header answering the first Digest
    /// challenge we can answer (RFC 3261 §22.2).
    fn answer(
        &mut self,
        ctx: &mut Ctx<'_>,
        resp: &Message,
        proxy: bool,
        secrets: &Secrets,
    ) -> Result<(HeaderName, String), String> {
        let (challenge_name, auth_name) = if proxy {
            (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        let mut why = format!("{} without a Digest challenge", status_line(resp));
        for value in resp.headers.get_all(&challenge_name) {
            let Ok(ch) = Challenge::parse(value) else {
                continue;
            };
            let Some(password) = secrets.password(&self.user, &ch.realm) else {
                why = format!("{} (no password for {})", status_line(resp), self.user);
                continue;
            };
            let cnonce = format!("{:016x}", ctx.random_u64());
            match digest::respond(
                &ch,
                &self.user,
                &password,
                "REGISTER",
                &self.request_uri(),
                &cnonce,
                1,
            ) {
                Ok(c) => return Ok((auth_name, c.to_string())),
                Err(e) => why = format!("{} ({})", status_line(resp), e.reason()),
            }
        }
        Err(why)
    }

    /// The expiry the registrar granted our contact (its `expires` parameter, else Expires,
    /// else what we asked).
    fn granted(&self, resp: &Message) -> u32 {
        let ours = resp.contacts().ok().and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c.uri().and_then(|u| u.as_sip()).is_some_and(|u| {
                        u.port == Some(self.local.port()) && u.host.ip() == Some(self.local.ip())
                    })
                })
                .and_then(|c| c.expires())
        });
        ours.or_else(|| resp.expires().ok().flatten())
            .unwrap_or(self.expires)
    }
}

/// Registrations of users `0..users` (AOR `sip:<to pattern>@<domain>`), one per session.
#[derive(Debug)]
pub struct Register {
    target: Target,
    secrets: Secrets,
    expires: u32,
    sockets: Vec<(SocketId, SocketAddr)>,
    flows: HashMap<SessionId, RegFlow>,
}

impl Register {
    /// Registrations at `target` for `expires` seconds.
    pub fn new(target: Target, secrets: Secrets, expires: u32) -> Register {
        Register {
            target,
            secrets,
            expires,
            sockets: Vec::new(),
            flows: HashMap::new(),
        }
    }
}

impl Scenario for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn primary(&self) -> Quantity {
        Quantity::Registration
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        crate::sys::raise_nofile_limit();
        let bind = SocketAddr::new(self.target.local_ip, 0);
        for _ in 0..self.target.users.max(1) {
            let s = ctx
                .bind_udp(bind, SocketKind::Sip)
                .map_err(|e| format!("bind {bind} (one socket per user): {e}"))?;
            self.sockets.push(s);
        }
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let i = self.target.user_index(n);
        let Some(&(socket, local)) = self.sockets.get(i as usize) else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let mut flow = RegFlow::new(
            ctx,
            self.target.to.expand(i),
            socket,
            local,
            self.target.addr,
            self.target.domain.clone(),
            self.expires,
        );
        match flow.send(ctx, session) {
            Ok(()) => {
                self.flows.insert(session, flow);
            }
            Err(e) => ctx.finish(session, Outcome::Failure(e)),
        }
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        if response.status().is_none_or(|c| c < 200) {
            return;
        }
        let Some(flow) = self.flows.get_mut(&session) else {
            return;
        };
        match flow.on_final(ctx, session, response, &self.secrets) {
            None => {}
            Some(Ok(_)) => {
                let took = ctx.now() - flow.started();
                ctx.record(Quantity::Registration, took);
                self.flows.remove(&session);
                ctx.finish(session, Outcome::Success);
            }
            Some(Err(reason)) => {
                self.flows.remove(&session);
                ctx.finish(session, Outcome::Failure(reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_password_and_file() {
        assert_eq!(Secrets::None.password("alice", "r"), None);
        assert_eq!(
            Secrets::Password("pw".into()).password("alice", "r"),
            Some("pw".into())
        );
        let dir = std::env::temp_dir().join(format!("lg-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("users");
        std::fs::write(
            &f,
            "user0000 pw0\nuser0001@example.com pw1\nha@example.com {MD5}0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        let s = Secrets::load(None, Some(&f)).unwrap();
        assert_eq!(s.password("user0000", "any"), Some("pw0".into()));
        assert_eq!(s.password("user0001", "example.com"), Some("pw1".into()));
        assert_eq!(s.password("user0001", "other"), None);
        // A precomputed HA1 cannot answer a challenge.
        assert_eq!(s.password("ha", "example.com"), None);
        let s = Secrets::load(Some("fallback"), Some(&f)).unwrap();
        assert_eq!(s.password("user0000", "r"), Some("pw0".into()));
        assert_eq!(s.password("user0099", "r"), Some("fallback".into()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Secrets::load(None, Some(&dir.join("missing"))).is_err());
    }
}
