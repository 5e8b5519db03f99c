//! The scenario layer: what a run does, session by session.
//!
//! A [`Scenario`] is a set of callbacks the [`Driver`](crate::driver::Driver) calls; it acts
//! through the [`Ctx`] it is handed (send a request, answer one, bind a socket, arm a timer,
//! record a measure, end a session). It never sees a socket or a clock: the driver gives it
//! `ctx.now()`, and the same scenario runs over real UDP or over the in-memory network of the
//! tests.
//!
//! A *session* is the unit the pacer starts and the report counts: one OPTIONS transaction,
//! one registration (with its digest round trip), one MESSAGE, one call. The driver starts
//! sessions at their due time ([`Scenario::start`]); the scenario ends each one with
//! [`Ctx::finish`] and an [`Outcome`].
//!
//! Scenarios of this crate: [`options`], [`register`], [`message`], [`msrp`] (MSRP over
//! [`crate::msrp`]), [`call`] (with the RTP
//! of [`media`]), [`conference`] (ad-hoc conferences through a mixer, judged by tones), and
//! the answering side [`uas`]. See the crate documentation for how a scenario plugs in.

pub mod call;
pub mod conference;
pub mod media;
pub mod message;
pub mod msrp;
pub mod options;
pub mod register;
pub mod uas;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use cpm_engine::sip::builder;
use cpm_engine::sip::transaction::{ClientTxId, ServerTxId};
use cpm_engine::sip::{HeaderName, Message, Method};

use crate::driver::Ctx;
use crate::metrics::Quantity;

/// One session of a run (a call, a transaction, a registration), as numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// The session of a timer that belongs to no session (a scenario's own background work).
pub const NO_SESSION: SessionId = SessionId(u64::MAX);

/// A socket bound through [`Ctx::bind_udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub usize);

/// What the driver does with a socket's datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// SIP: parsed and matched by the transaction layer, then [`Scenario::on_request`],
    /// [`Scenario::on_response`], [`Scenario::on_ack`] or [`Scenario::on_stray`].
    Sip,
    /// Anything else (RTP, RTCP): handed as is to [`Scenario::on_datagram`].
    Raw,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it should.
    Success,
    /// It failed; the reason is counted (e.g. `"408 Request Timeout"`).
    Failure(String),
}

impl Outcome {
    /// Success for a 2xx final response, otherwise a failure named by the status line.
    pub fn of_response(resp: &Message) -> Outcome {
        match resp.status() {
            Some(200..=299) => Outcome::Success,
            _ => Outcome::Failure(status_line(resp)),
        }
    }
}

/// `"<code> <reason>"` of a response (`"?"` for a request).
pub fn status_line(resp: &Message) -> String {
    match &resp.start {
        cpm_engine::sip::StartLine::Response { code, reason, .. } => {
            format!("{code} {}", String::from_utf8_lossy(reason))
        }
        cpm_engine::sip::StartLine::Request { .. } => "?".into(),
    }
}

/// A request that created a new server transaction.
#[derive(Debug)]
pub struct Incoming {
    /// Its server transaction: answer it with [`Ctx::respond`].
    pub tx: ServerTxId,
    /// The request (top Via stamped with `received`/`rport`).
    pub request: Message,
    /// The socket it arrived on.
    pub socket: SocketId,
    /// Where it came from.
    pub source: SocketAddr,
}

/// What a run does. Every callback gets the [`Ctx`] to act through; all have defaults except
/// [`Scenario::name`], [`Scenario::primary`] and [`Scenario::setup`].
pub trait Scenario: Send {
    /// The name in reports (`"options"`, `"call"`, `"uas"`, ...).
    fn name(&self) -> &'static str;

    /// The quantity the progress line shows and `--max-p99-ms` checks.
    fn primary(&self) -> Quantity;

    /// Called once before anything else: bind sockets ([`Ctx::bind_udp`]), arm timers
    /// (e.g. the registrations of a `uas`). An error ends the run before it starts.
    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String>;

    /// Session `session`, the `n`-th of the run (from 0), is due now (client roles).
    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let _ = n;
        ctx.finish(
            session,
            Outcome::Failure("scenario starts no sessions".into()),
        );
    }

    /// A response to a request of `session`: provisional, final, a retransmitted 2xx of an
    /// INVITE, or the 408/503 synthesized when the transaction timed out or could not be
    /// sent (RFC 3261 §8.1.3.1).
    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        tx: ClientTxId,
        response: &Message,
    ) {
        let _ = (ctx, session, tx, response);
    }

    /// A new request (a new server transaction). The default answers 405 with no session.
    fn on_request(&mut self, ctx: &mut Ctx<'_>, incoming: Incoming) {
        let r = builder::local_response(&incoming.request, 405, "Method Not Allowed");
        ctx.respond(incoming.tx, &r);
    }

    /// A CANCEL for the pending INVITE server transaction `invite` (already answered 200):
    /// the scenario that holds the INVITE answers it with 487 (RFC 3261 §9.2).
    fn on_cancel(&mut self, ctx: &mut Ctx<'_>, invite: ServerTxId, cancel: &Message) {
        let _ = (ctx, invite, cancel);
    }

    /// The ACK for a 2xx (its own transaction, RFC 3261 §17), for the dialog layer.
    fn on_ack(&mut self, ctx: &mut Ctx<'_>, ack: Message, socket: SocketId, source: SocketAddr) {
        let _ = (ctx, ack, socket, source);
    }

    /// A response that matches no transaction (e.g. a 2xx retransmitted after the INVITE
    /// transaction ended: the ACK must be sent again, §13.2.2.4).
    fn on_stray(&mut self, ctx: &mut Ctx<'_>, msg: Message, socket: SocketId, source: SocketAddr) {
        let _ = (ctx, msg, socket, source);
    }

    /// A timer armed with [`Ctx::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, session: SessionId, token: u64) {
        let _ = (ctx, session, token);
    }

    /// A datagram on a [`SocketKind::Raw`] socket (RTP, RTCP).
    fn on_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        source: SocketAddr,
        payload: Bytes,
    ) {
        let _ = (ctx, socket, source, payload);
    }

    /// Whether the scenario is ready for traffic (a `uas`: every user registered); the
    /// driver reports it, runners wait for it.
    fn is_ready(&self) -> bool {
        true
    }

    /// The run stops starting sessions (count or duration reached, or a signal): wind down
    /// (hang up calls, unregister users).
    fn on_stop(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// Whether background work outside counted sessions is finished (e.g. unregistrations);
    /// the run ends when this holds and no session is in flight, or when the drain time ends.
    fn is_idle(&self) -> bool {
        true
    }

    /// Lines added to the end-of-run text summary.
    fn summary_lines(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A user name pattern: `%d` or `%0Nd` is replaced by the user's index (`user%04d` →
/// `user0042`); without a placeholder every index gives the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    prefix: String,
    width: usize,
    suffix: String,
    indexed: bool,
}

impl Pattern {
    /// Parses a pattern.
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let Some(pos) = p.find('%') else {
            return Ok(Pattern {
                prefix: p.to_string(),
                width: 0,
                suffix: String::new(),
                indexed: false,
            });
        };
        let rest = &p[pos + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[digits.len()..];
        let Some(suffix) = after.strip_prefix('d') else {
            return Err(format!("pattern {p:?}: only %d or %0Nd is understood"));
        };
        if suffix.contains('%') {
            return Err(format!("pattern {p:?}: one placeholder at most"));
        }
        let width = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| format!("pattern {p:?}: bad width"))?
        };
        Ok(Pattern {
            prefix: p[..pos].to_string(),
            width,
            suffix: suffix.to_string(),
            indexed: true,
        })
    }

    /// The name of user `i`.
    pub fn expand(&self, i: u64) -> String {
        if self.indexed {
            format!(
                "{}{:0width$}{}",
                self.prefix,
                i,
                self.suffix,
                width = self.width
            )
        } else {
            self.prefix.clone()
        }
    }
}

/// Where and to whom a client scenario sends.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where requests are sent (a server, or a `uas` directly).
    pub addr: SocketAddr,
    /// The host part of URIs (by default the target's `host[:port]`).
    pub domain: String,
    /// The To user of session `n`: `to.expand(n % users)`.
    pub to: Pattern,
    /// The From user of session `n`: `from.expand(n % users)`.
    pub from: Pattern,
    /// Users in the patterns' range (user `0..users`).
    pub users: u64,
    /// The IP our sockets bind to and name in Via and Contact.
    pub local_ip: IpAddr,
}

impl Target {
    /// The index of the user session `n` is for.
    pub fn user_index(&self, n: u64) -> u64 {
        n % self.users.max(1)
    }

    /// `sip:<user>@<domain>`, or `sip:<domain>` for an empty user (`--to ''`: the server
    /// itself, e.g. an OPTIONS ping of a proxy, RFC 3261 §11).
    pub fn uri(&self, user: &str) -> String {
        if user.is_empty() {
            format!("sip:{}", self.domain)
        } else {
            format!("sip:{user}@{}", self.domain)
        }
    }

    /// The To URI of session `n`.
    pub fn to_uri(&self, n: u64) -> String {
        self.uri(&self.to.expand(self.user_index(n)))
    }

    /// The From URI of session `n`.
    pub fn from_uri(&self, n: u64) -> String {
        self.uri(&self.from.expand(self.user_index(n)))
    }

    /// Binds the one SIP socket of a one-request client scenario (`options`, `message`) on
    /// our local IP.
    pub fn bind_client(&self, ctx: &mut Ctx<'_>) -> Result<(SocketId, SocketAddr), String> {
        let bind = SocketAddr::new(self.local_ip, 0);
        ctx.bind_udp(bind, SocketKind::Sip)
            .map_err(|e| format!("bind {bind}: {e}"))
    }

    /// Starts session `n` of a one-request client scenario: the out-of-dialog `method` request
    /// to the session's user, with an optional body (`(bytes, content type)`), sent from
    /// `socket`. A request that cannot be sent ends the session as a failure.
    pub fn send_one(
        &self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        socket: Option<(SocketId, SocketAddr)>,
        method: Method,
        n: u64,
        body: Option<(Bytes, &str)>,
    ) {
        let Some((socket, local)) = socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let uri = self.to_uri(n);
        let call_id = ctx.new_call_id();
        let mut req = RequestSpec {
            method,
            uri: &uri,
            via: local,
            from: &self.from_uri(n),
            to: &uri,
            call_id: &call_id,
            cseq: 1,
        }
        .build(ctx);
        if let Some((bytes, content_type)) = body {
            req.set_body(bytes, Some(content_type));
        }
        if let Err(e) = ctx.send_request(session, socket, req, self.addr) {
            ctx.finish(session, Outcome::Failure(e.reason()));
        }
    }
}

/// Ends a one-request session on its final response (2xx: success; else the status line).
pub fn finish_on_final(ctx: &mut Ctx<'_>, session: SessionId, response: &Message) {
    if response.status().is_some_and(|c| c >= 200) {
        ctx.finish(session, Outcome::of_response(response));
    }
}

/// The common headers of a new out-of-dialog request (RFC 3261 §8.1.1): Via with a fresh
/// branch and `rport`, Max-Forwards, From with a fresh tag, To, Call-ID, CSeq.
pub struct RequestSpec<'a> {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: &'a str,
    /// The address in our Via (the sending socket's).
    pub via: SocketAddr,
    /// From, as a URI (`sip:alice@example.com`).
    pub from: &'a str,
    /// To, as a URI.
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
}

impl RequestSpec<'_> {
    /// The request, with branch and From tag from the context.
    pub fn build(&self, ctx: &mut Ctx<'_>) -> Message {
        let branch = ctx.new_branch();
        let tag = ctx.new_tag();
        self.build_with(&branch, &tag)
    }

    /// The request with the given branch and From tag.
    pub fn build_with(&self, branch: &[u8], from_tag: &[u8]) -> Message {
        let mut headers = cpm_engine::sip::Headers::new();
        headers.push(
            HeaderName::Via,
            format!(
                "SIP/2.0/UDP {};branch={};rport",
                self.via,
                String::from_utf8_lossy(branch)
            ),
        );
        headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        headers.push(
            HeaderName::From,
            format!("<{}>;tag={}", self.from, String::from_utf8_lossy(from_tag)),
        );
        headers.push(HeaderName::To, format!("<{}>", self.to));
        headers.push(HeaderName::CallId, self.call_id.to_string());
        headers.push(
            HeaderName::CSeq,
            format!("{} {}", self.cseq, self.method.as_str()),
        );
        headers.push(
            HeaderName::Other(Bytes::from_static(b"User-Agent")),
            Bytes::from_static(b"cpm-loadgen"),
        );
        headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
        Message {
            start: cpm_engine::sip::StartLine::Request {
                method: self.method.clone(),
                uri: Bytes::copy_from_slice(self.uri.as_bytes()),
                version: Bytes::from_static(b"SIP/2.0"),
            },
            headers,
            body: Bytes::new(),
        }
    }
}

/// `host` or `host:port` for URIs: the port is left out when it is 5060 (RFC 3261 §19.1.2),
/// IPv6 hosts are bracketed.
pub fn hostport(addr: SocketAddr) -> String {
    match (addr, addr.port()) {
        (SocketAddr::V4(a), 5060) => a.ip().to_string(),
        (SocketAddr::V6(a), 5060) => format!("[{}]", a.ip()),
        (a, _) => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_engine::sip::parse;

    #[test]
    fn patterns() {
        let p = Pattern::parse("user%04d").unwrap();
        assert_eq!(p.expand(42), "user0042");
        assert_eq!(p.expand(12345), "user12345");
        assert_eq!(Pattern::parse("u%d@x").unwrap().expand(7), "u7@x");
        assert_eq!(Pattern::parse("alice").unwrap().expand(7), "alice");
        assert!(Pattern::parse("user%s").is_err());
        assert!(Pattern::parse("%d%d").is_err());
    }

    #[test]
    fn request_spec_builds_a_request_our_parser_accepts() {
        let spec = RequestSpec {
            method: Method::Options,
            uri: "sip:user0000@127.0.0.1:5070",
            via: "127.0.0.1:40000".parse().unwrap(),
            from: "sip:loadgen@127.0.0.1",
            to: "sip:user0000@127.0.0.1:5070",
            call_id: "abc@lg",
            cseq: 7,
        };
        let m = spec.build_with(b"z9hG4bK1", b"t1");
        let back = parse(m.to_bytes()).unwrap();
        assert_eq!(back.method(), Some(&Method::Options));
        let via = back.top_via().unwrap();
        assert_eq!(via.branch().map(|b| &b[..]), Some(&b"z9hG4bK1"[..]));
        assert_eq!(back.cseq().unwrap().seq, 7);
        assert_eq!(back.call_id().map(|c| &c[..]), Some(&b"abc@lg"[..]));
    }

    #[test]
    fn an_empty_user_names_the_domain_itself() {
        let t = Target {
            addr: "127.0.0.1:5060".parse().unwrap(),
            domain: "example.com".into(),
            to: Pattern::parse("").unwrap(),
            from: Pattern::parse("loadgen").unwrap(),
            users: 1,
            local_ip: [127, 0, 0, 1].into(),
        };
        assert_eq!(t.to_uri(7), "sip:example.com");
        assert_eq!(t.from_uri(7), "sip:loadgen@example.com");
    }

    #[test]
    fn hostports() {
        assert_eq!(hostport("10.0.0.1:5060".parse().unwrap()), "10.0.0.1");
        assert_eq!(hostport("10.0.0.1:5070".parse().unwrap()), "10.0.0.1:5070");
        assert_eq!(hostport("[::1]:5060".parse().unwrap()), "[::1]");
    }

    #[test]
    fn outcome_of_response() {
        let req = RequestSpec {
            method: Method::Options,
            uri: "sip:a@b",
            via: "127.0.0.1:1".parse().unwrap(),
            from: "sip:a@b",
            to: "sip:a@b",
            call_id: "c",
            cseq: 1,
        }
        .build_with(b"z9hG4bKx", b"t");
        assert_eq!(
            Outcome::of_response(&builder::response_to(&req, 202, "Accepted")),
            Outcome::Success
        );
        assert_eq!(
            Outcome::of_response(&builder::response_to(&req, 480, "Temporarily Unavailable")),
            Outcome::Failure("480 Temporarily Unavailable".into())
        );
    }
}
