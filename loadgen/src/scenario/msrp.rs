//! `msrp`: one MSRP session per SIP session (RFC 4975, RFC 6135). INVITE with an
//! `m=message TCP/MSRP` offer (`a=setup:active`: we connect); on the 2xx the ACK, then a
//! connection to the first URI of the answer's `a=path` (the server's, as cpmd rewrote it:
//! it answers `passive`), which carries `--messages` stamped messages of `--size` bytes (or one
//! of `--file` bytes) in chunks of `--chunk` bytes, each chunk answered 200 by the receiving
//! `uas` through the relay; after `--hold`, BYE. The session succeeds when every chunk got its
//! 200 and the BYE its 2xx.
//!
//! The TCP side runs on the [`Plane`]'s thread; its events are read every [`POLL`] from a
//! timer. Measures: `msrp_message` (first chunk queued → 200 of the last, per message) here;
//! `msrp_delivery` (stamp → last byte) at the receiving `uas`. The summary prints messages/s,
//! chunks/s and MB/s over the transfer window (first chunk → last 200).
//!
//! With `--relay HOST:PORT` (an RFC 4976 relay that is not a media anchor, e.g. Kamailio's
//! `msrp` module) each session first authenticates at the relay (AUTH), offers the relay's
//! Use-Path followed by our URI as its path, and sends to the answer's path over the same
//! connection; the `uas` does the same with its `--msrp-relay` (perf/reference/README.md).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::msrp::uri::first_of_path;
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{HeaderName, Message, Method};

use super::call::{in_dialog, set_branch};
use super::{status_line, Outcome, RequestSpec, Scenario, SessionId, SocketId, Target, NO_SESSION};
use crate::driver::Ctx;
use crate::metrics::Quantity;
use crate::msrp::{Event, Load, Open, Plane, Role, Sent};

/// How often the plane's events are read.
pub const POLL: Duration = Duration::from_millis(1);

/// Timer tokens.
const POLL_TOKEN: u64 = 0;
const HANGUP: u64 = 1;

/// The per-message latency at the sender.
pub const MESSAGE_RTT: Quantity = Quantity::Custom("msrp_message");
/// The delivery latency at the receiver.
pub const DELIVERY: Quantity = Quantity::Custom("msrp_delivery");

/// Settings of the `msrp` scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsrpConfig {
    /// What each session sends.
    pub load: Load,
    /// Time between the last 200 and the BYE.
    pub hold: Duration,
    /// The RFC 4976 relay both sides authenticate at (`--relay`); `None`: the SDP answer's
    /// path is connected to directly (cpmd's anchor).
    pub relay: Option<SocketAddr>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// AUTH at the relay in progress; the INVITE follows (session number `n`).
    Authing(u64),
    Inviting,
    Sending,
    Holding,
    Hangup,
}

#[derive(Debug)]
struct Leg {
    state: State,
    invite: Message,
    invite_sent: Instant,
    ack: Option<Message>,
    bye: Option<Message>,
    failure: Option<String>,
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    sent: Sent,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// INVITE (chat offer) → ACK → MSRP load → hold → BYE, one session per SIP session.
#[derive(Debug)]
pub struct MsrpScenario {
    target: Target,
    cfg: MsrpConfig,
    socket: Option<(SocketId, SocketAddr)>,
    plane: Option<Plane>,
    legs: HashMap<SessionId, Leg>,
    by_call_id: HashMap<Bytes, SessionId>,
    polling: bool,
    totals: Totals,
}

/// An SDP with one `m=message` stream (RFC 4975 §8.1): our `path`, who connects (`setup`,
/// RFC 6135). The port is 9 (discard): we always connect, nobody connects to it.
pub fn chat_sdp(ip: IpAddr, path: &str, setup: &str) -> Bytes {
    let net = if ip.is_ipv4() { "IP4" } else { "IP6" };
    Bytes::from(format!(
        "v=0\r\no=cpm-loadgen 1 1 IN {net} {ip}\r\ns=-\r\nc=IN {net} {ip}\r\nt=0 0\r\n\
         m=message 9 TCP/MSRP *\r\na=accept-types:text/plain message/cpim\r\n\
         a=path:{path}\r\na=setup:{setup}\r\n"
    ))
}

/// The `a=path` and `a=setup` of the first `m=message` stream of an SDP body.
pub fn chat_media(body: &Bytes) -> Option<(Bytes, Option<Bytes>)> {
    let sdp = SessionDescription::parse(body).ok()?;
    let m = sdp
        .media()
        .iter()
        .find(|m| &m.kind()[..] == b"message" && m.port() != 0)?;
    let path = m.attribute("path")?.value()?.clone();
    let setup = m.attribute("setup").and_then(|a| a.value().cloned());
    Some((path, setup))
}

/// The address of the first URI of an MSRP path (an IP literal host).
pub fn first_hop(path: &Bytes) -> Option<SocketAddr> {
    let uri = first_of_path(path).ok()?;
    let host = std::str::from_utf8(uri.host()).ok()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, uri.port()?))
}

/// Whether an `a=setup` value leaves the connecting to us (RFC 6135 §4.1: `passive` or
/// `actpass` peers wait; no attribute means the offerer is active, §4.2.1 / RFC 4975 §5.4).
pub fn we_may_connect(setup: Option<&Bytes>) -> bool {
    matches!(setup.map(|s| &s[..]), Some(b"passive") | Some(b"actpass"))
}

impl MsrpScenario {
    /// A scenario sending to `target`.
    pub fn new(target: Target, cfg: MsrpConfig) -> MsrpScenario {
        MsrpScenario {
            target,
            cfg,
            socket: None,
            plane: None,
            legs: HashMap::new(),
            by_call_id: HashMap::new(),
            polling: false,
            totals: Totals::default(),
        }
    }

    fn end(&mut self, ctx: &mut Ctx<'_>, session: SessionId, outcome: Outcome) {
        if let Some(leg) = self.legs.remove(&session) {
            if let Some(id) = leg.invite.call_id() {
                self.by_call_id.remove(id);
            }
            if let Some(p) = &self.plane {
                p.close(session.0);
            }
        }
        ctx.finish(session, outcome);
    }

    fn on_invite_2xx(&mut self, ctx: &mut Ctx<'_>, session: SessionId, resp: &Message) {
        let Some(socket) = self.socket else { return };
        let Some(leg) = self.legs.get_mut(&session) else {
            return;
        };
        if leg.state != State::Inviting {
            if let Some(ack) = &leg.ack {
                ctx.send_stateless(socket.0, ack, self.target.addr);
            }
            return;
        }
        ctx.record(Quantity::CallSetup, ctx.now() - leg.invite_sent);
        let ack = in_dialog(&leg.invite, resp, Method::Ack, 1, ctx.new_branch());
        let bye = in_dialog(&leg.invite, resp, Method::Bye, 2, Bytes::new());
        ctx.send_stateless(socket.0, &ack, self.target.addr);
        leg.ack = Some(ack);
        leg.bye = Some(bye);
        leg.state = State::Sending;
        let media = chat_media(&resp.body);
        let open = media.as_ref().and_then(|(path, setup)| {
            if !we_may_connect(setup.as_ref()) {
                return None;
            }
            Some((first_hop(path)?, path.clone()))
        });
        if self.cfg.relay.is_some() {
            // Both sides are connected to the relay already: the answer's path is the To-Path.
            match media {
                Some((path, _)) => {
                    if let Some(p) = &self.plane {
                        p.start(session.0, path, Role::Send(self.cfg.load));
                    }
                    self.totals.first.get_or_insert(ctx.now());
                }
                None => {
                    leg.failure = Some("answer without an m=message path".into());
                    return self.hang_up(ctx, session);
                }
            }
            return self.ensure_polling(ctx);
        }
        let Some((connect, to_path)) = open else {
            leg.failure = Some(match media {
                None => "answer without an m=message path".into(),
                Some(_) => "answer leaves us passive (we only connect)".into(),
            });
            return self.hang_up(ctx, session);
        };
        let local = local_uri(socket.1.ip(), session);
        if let Some(p) = &self.plane {
            p.open(Open {
                key: session.0,
                connect,
                local,
                to_path,
                role: Role::Send(self.cfg.load),
            });
        }
        self.totals.first.get_or_insert(ctx.now());
        self.ensure_polling(ctx);
    }

    fn ensure_polling(&mut self, ctx: &mut Ctx<'_>) {
        if !self.polling {
            self.polling = true;
            ctx.set_timer(ctx.now() + POLL, NO_SESSION, POLL_TOKEN);
        }
    }

    /// Sends the INVITE of session `n` offering `path` (ours, or the relay's then ours).
    fn invite(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64, path: &str) {
        let Some((socket, local)) = self.socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let uri = self.target.to_uri(n);
        let call_id = ctx.new_call_id();
        let mut invite = RequestSpec {
            method: Method::Invite,
            uri: &uri,
            via: local,
            from: &self.target.from_uri(n),
            to: &uri,
            call_id: &call_id,
            cseq: 1,
        }
        .build(ctx);
        invite.headers.push(
            HeaderName::Contact,
            format!("<sip:loadgen@{}>", super::hostport(local)),
        );
        invite.set_body(
            chat_sdp(local.ip(), path, "active"),
            Some("application/sdp"),
        );
        self.legs.insert(
            session,
            Leg {
                state: State::Inviting,
                invite: invite.clone(),
                invite_sent: ctx.now(),
                ack: None,
                bye: None,
                failure: None,
            },
        );
        self.by_call_id.insert(Bytes::from(call_id), session);
        if let Err(e) = ctx.send_request(session, socket, invite, self.target.addr) {
            self.end(ctx, session, Outcome::Failure(e.reason()));
        }
    }

    fn hang_up(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        let Some(socket) = self.socket else { return };
        let Some(leg) = self.legs.get_mut(&session) else {
            return;
        };
        leg.state = State::Hangup;
        let Some(mut bye) = leg.bye.take() else {
            return;
        };
        let branch = ctx.new_branch();
        set_branch(&mut bye, socket.1, &branch);
        if let Err(e) = ctx.send_request(session, socket.0, bye, self.target.addr) {
            self.end(ctx, session, Outcome::Failure(e.reason()));
        }
    }

    /// Reads the plane's events (bounded per call).
    fn poll(&mut self, ctx: &mut Ctx<'_>) {
        let events = match &self.plane {
            Some(p) => p.poll_events(10_000),
            None => Vec::new(),
        };
        for ev in events {
            match ev {
                Event::Acked { rtt, .. } => ctx.record(MESSAGE_RTT, rtt),
                Event::Authed { key, path } => {
                    let session = SessionId(key);
                    let Some(State::Authing(n)) = self.legs.get(&session).map(|l| &l.state) else {
                        continue;
                    };
                    let n = *n;
                    match path {
                        Ok(p) => self.invite(ctx, session, n, &String::from_utf8_lossy(&p)),
                        Err(e) => self.end(ctx, session, Outcome::Failure(format!("msrp: {e}"))),
                    }
                }
                Event::Done { key, sent, error } => {
                    let session = SessionId(key);
                    self.totals.sent.messages_ok += sent.messages_ok;
                    self.totals.sent.messages_failed += sent.messages_failed;
                    self.totals.sent.chunks += sent.chunks;
                    self.totals.sent.chunks_ok += sent.chunks_ok;
                    self.totals.sent.bytes_ok += sent.bytes_ok;
                    // The totals as notes too (the JSON's counters): the window's growth in µs.
                    let now = ctx.now();
                    let since = self.totals.last.or(self.totals.first).unwrap_or(now);
                    self.totals.last = Some(now.max(since));
                    let rec = ctx.recorder();
                    rec.note("msrp_messages_ok", sent.messages_ok);
                    rec.note("msrp_messages_failed", sent.messages_failed);
                    rec.note("msrp_chunks_ok", sent.chunks_ok);
                    rec.note("msrp_bytes_ok", sent.bytes_ok);
                    rec.note(
                        "msrp_window_us",
                        now.saturating_duration_since(since).as_micros() as u64,
                    );
                    let Some(leg) = self.legs.get_mut(&session) else {
                        continue;
                    };
                    if leg.state != State::Sending {
                        continue;
                    }
                    leg.failure = error.or_else(|| {
                        let lost = self.cfg.load.messages.saturating_sub(sent.messages_ok);
                        (lost > 0).then(|| format!("msrp: {lost} messages not answered 200"))
                    });
                    leg.state = State::Holding;
                    if self.cfg.hold.is_zero() || leg.failure.is_some() {
                        self.hang_up(ctx, session);
                    } else {
                        ctx.set_timer(ctx.now() + self.cfg.hold, session, HANGUP);
                    }
                }
                Event::Delivered { .. } | Event::Closed { .. } => {}
            }
        }
        let sending = self
            .legs
            .values()
            .any(|l| matches!(l.state, State::Sending | State::Authing(_)));
        if sending {
            ctx.set_timer(ctx.now() + POLL, NO_SESSION, POLL_TOKEN);
        } else {
            self.polling = false;
        }
    }
}

/// Our MSRP URI for session `session` (port 9: we never listen).
fn local_uri(ip: IpAddr, session: SessionId) -> Bytes {
    let host = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    Bytes::from(format!("msrp://{host}:9/lg{:x};tcp", session.0))
}

fn is_invite_response(resp: &Message) -> bool {
    resp.cseq().is_ok_and(|c| c.method == Method::Invite)
}

impl Scenario for MsrpScenario {
    fn name(&self) -> &'static str {
        "msrp"
    }

    fn primary(&self) -> Quantity {
        MESSAGE_RTT
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        crate::sys::raise_nofile_limit();
        self.socket = Some(self.target.bind_client(ctx)?);
        self.plane = Some(Plane::spawn(ctx.random_u64()).map_err(|e| format!("msrp: {e}"))?);
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let Some((_, local)) = self.socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        if let (Some(relay), Some(p)) = (self.cfg.relay, &self.plane) {
            p.auth(session.0, relay);
            self.legs.insert(
                session,
                Leg {
                    state: State::Authing(n),
                    invite: Message {
                        start: cpm_engine::sip::StartLine::Request {
                            method: Method::Invite,
                            uri: Bytes::new(),
                            version: Bytes::from_static(b"SIP/2.0"),
                        },
                        headers: cpm_engine::sip::Headers::new(),
                        body: Bytes::new(),
                    },
                    invite_sent: ctx.now(),
                    ack: None,
                    bye: None,
                    failure: None,
                },
            );
            return self.ensure_polling(ctx);
        }
        let path = local_uri(local.ip(), session);
        self.invite(ctx, session, n, &String::from_utf8_lossy(&path));
    }

    fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        session: SessionId,
        _tx: ClientTxId,
        response: &Message,
    ) {
        let Some(code) = response.status() else {
            return;
        };
        if code < 200 {
            return;
        }
        if is_invite_response(response) {
            if (200..300).contains(&code) {
                self.on_invite_2xx(ctx, session, response);
            } else if self
                .legs
                .get(&session)
                .is_some_and(|l| l.state == State::Inviting)
            {
                self.end(ctx, session, Outcome::Failure(status_line(response)));
            }
            return;
        }
        // The BYE's final response ends the session.
        let outcome = match self.legs.get_mut(&session).and_then(|l| l.failure.take()) {
            Some(f) => Outcome::Failure(f),
            None => Outcome::of_response(response),
        };
        self.end(ctx, session, outcome);
    }

    fn on_stray(&mut self, ctx: &mut Ctx<'_>, msg: Message, _socket: SocketId, _src: SocketAddr) {
        if !msg.status().is_some_and(|c| (200..300).contains(&c)) || !is_invite_response(&msg) {
            return;
        }
        let Some(&session) = msg.call_id().and_then(|id| self.by_call_id.get(id)) else {
            return;
        };
        self.on_invite_2xx(ctx, session, &msg);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, session: SessionId, token: u64) {
        match token {
            POLL_TOKEN => self.poll(ctx),
            HANGUP => self.hang_up(ctx, session),
            _ => {}
        }
    }

    fn summary_lines(&self) -> Vec<String> {
        let t = &self.totals;
        let s = &t.sent;
        let mut out = vec![format!(
            "msrp: {} messages of {} B in chunks of {} B per session, hold {:?}",
            self.cfg.load.messages, self.cfg.load.size, self.cfg.load.chunk, self.cfg.hold
        )];
        let window = match (t.first, t.last) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        out.push(format!(
            "msrp sent: {} messages ok, {} failed; {} chunks ({} answered 200); {:.3} MB",
            s.messages_ok,
            s.messages_failed,
            s.chunks,
            s.chunks_ok,
            s.bytes_ok as f64 / 1e6
        ));
        if window > 0.0 {
            out.push(format!(
                "msrp rate over {:.3} s: {:.0} messages/s, {:.0} chunks/s, {:.2} MB/s",
                window,
                s.messages_ok as f64 / window,
                s.chunks_ok as f64 / window,
                s.bytes_ok as f64 / 1e6 / window
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_parses_back_and_names_the_first_hop() {
        let sdp = chat_sdp(
            [127, 0, 0, 1].into(),
            "msrp://127.0.0.1:2855/abc;tcp msrp://127.0.0.1:9/x;tcp",
            "active",
        );
        let (path, setup) = chat_media(&sdp).unwrap();
        assert_eq!(setup.as_deref(), Some(&b"active"[..]));
        assert_eq!(first_hop(&path), Some("127.0.0.1:2855".parse().unwrap()));
        assert!(!we_may_connect(setup.as_ref()));
        assert!(we_may_connect(Some(&Bytes::from_static(b"passive"))));
        assert!(we_may_connect(Some(&Bytes::from_static(b"actpass"))));
        assert!(!we_may_connect(None));
        assert_eq!(chat_media(&Bytes::from_static(b"v=0\r\n")), None);
    }
}
