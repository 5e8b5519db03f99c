//! `call`: one call per session. INVITE with an SDP audio offer (the [`MediaProfile`]: PCMU
//! 20 ms unless `--codec`, `--ptime`, `--payload-size` say otherwise) from the call's own RTP
//! socket; on the 2xx the ACK (RFC 3261 §13.2.2.4, sent again for every retransmitted 2xx) and
//! the call setup time (INVITE → 200); for `--hold` an RTP stream, a packet every ptime, to the
//! answer's media address while what comes back is measured ([`RtpMeter`]); then BYE (a new
//! transaction in the dialog, §15.1.1). The call succeeds when the BYE gets a 2xx.
//!
//! Against a `uas --rtp echo` the packets that come back carry our own stamps, so the
//! "one-way" delay measured is the round trip; against `--rtp generate` it is one way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::transaction::ClientTxId;
use cpm_engine::sip::{HeaderName, Message, Method, StartLine};

use super::media::{self, MediaProfile, RtpMeter, RtpSender, SocketPool};
use super::{status_line, Outcome, RequestSpec, Scenario, SessionId, SocketId, Target};
use crate::driver::Ctx;
use crate::metrics::Quantity;

/// Timer tokens.
const TICK: u64 = 0;
const HANGUP: u64 = 1;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Inviting,
    Holding,
    Hangup,
}

/// One call in flight.
#[derive(Debug)]
struct Leg {
    state: State,
    invite: Message,
    invite_sent: Instant,
    rtp: (SocketId, SocketAddr),
    remote: Option<SocketAddr>,
    ack: Option<Message>,
    bye: Option<Message>,
    sender: RtpSender,
    meter: RtpMeter,
    next_tick: Instant,
}

/// INVITE → ACK → hold with RTP both ways → BYE, one call per session.
#[derive(Debug)]
pub struct Call {
    target: Target,
    hold: Duration,
    media: MediaProfile,
    socket: Option<(SocketId, SocketAddr)>,
    calls: HashMap<SessionId, Leg>,
    by_call_id: HashMap<Bytes, SessionId>,
    by_rtp: HashMap<SocketId, SessionId>,
    pool: SocketPool,
}

impl Call {
    /// Calls to `target`, each held `hold` before the BYE, with RTP of `media`.
    pub fn new(target: Target, hold: Duration, media: MediaProfile) -> Call {
        Call::with_rtp_ports(target, hold, media, None)
    }

    /// As [`Call::new`], with RTP sockets on even ports of `rtp_ports` (`--rtp-ports`).
    pub fn with_rtp_ports(
        target: Target,
        hold: Duration,
        media: MediaProfile,
        rtp_ports: Option<(u16, u16)>,
    ) -> Call {
        Call {
            target,
            hold,
            media,
            socket: None,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            by_rtp: HashMap::new(),
            pool: SocketPool::in_range(rtp_ports),
        }
    }

    fn end(&mut self, ctx: &mut Ctx<'_>, session: SessionId, outcome: Outcome) {
        if let Some(mut leg) = self.calls.remove(&session) {
            leg.meter.close(ctx);
            self.by_rtp.remove(&leg.rtp.0);
            self.pool.give_back(leg.rtp);
            if let Some(id) = leg.invite.call_id() {
                self.by_call_id.remove(id);
            }
        }
        ctx.finish(session, outcome);
    }

    /// The 2xx of the INVITE: ACK (again, for a retransmission), and on the first one the
    /// dialog and the media.
    fn on_invite_2xx(&mut self, ctx: &mut Ctx<'_>, session: SessionId, resp: &Message) {
        let Some(socket) = self.socket else { return };
        let Some(leg) = self.calls.get_mut(&session) else {
            return;
        };
        if leg.state != State::Inviting {
            if let Some(ack) = &leg.ack {
                ctx.send_stateless(socket.0, ack, self.target.addr);
            }
            return;
        }
        ctx.record(Quantity::CallSetup, ctx.now() - leg.invite_sent);
        let answer = SessionDescription::parse(&resp.body).ok();
        leg.remote = answer.as_ref().and_then(media::remote_media);
        let ack = in_dialog(&leg.invite, resp, Method::Ack, 1, ctx.new_branch());
        let bye = in_dialog(&leg.invite, resp, Method::Bye, 2, Bytes::new());
        ctx.send_stateless(socket.0, &ack, self.target.addr);
        leg.ack = Some(ack);
        leg.bye = Some(bye);
        leg.state = State::Holding;
        let now = ctx.now();
        if leg.remote.is_none() {
            ctx.recorder().note("answers_without_media", 1);
        }
        leg.next_tick = now;
        ctx.set_timer(now, session, TICK);
        ctx.set_timer(now + self.hold, session, HANGUP);
    }

    fn hang_up(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        let Some(socket) = self.socket else { return };
        let Some(leg) = self.calls.get_mut(&session) else {
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
}

/// A request of the dialog the 2xx `resp` to `invite` set up (RFC 3261 §12.2.1.1): the remote
/// target (Contact) as Request-URI, the reversed Record-Route as Route, the To with the
/// remote tag, our From, Call-ID; CSeq `cseq` (the INVITE's for an ACK, §13.2.2.4). The Via
/// branch is `branch` (set later for a BYE, which gets its own transaction).
pub(crate) fn in_dialog(
    invite: &Message,
    resp: &Message,
    method: Method,
    cseq: u32,
    branch: Bytes,
) -> Message {
    let uri = resp
        .contacts()
        .ok()
        .and_then(|c| c.first().and_then(|c| c.uri().map(|u| u.to_string())))
        .map(Bytes::from)
        .or_else(|| invite.request_uri().cloned())
        .unwrap_or_default();
    let mut headers = cpm_engine::sip::Headers::new();
    if let Some(via) = invite.headers.get(&HeaderName::Via) {
        headers.push(HeaderName::Via, via.clone());
    }
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    let mut routes: Vec<Bytes> = resp.headers.values(&HeaderName::RecordRoute).collect();
    routes.reverse();
    for r in routes {
        headers.push(HeaderName::Route, r);
    }
    for h in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        let src = if h == HeaderName::To { resp } else { invite };
        if let Some(v) = src.headers.get(&h) {
            headers.push(h, v.clone());
        }
    }
    headers.push(HeaderName::CSeq, format!("{cseq} {}", method.as_str()));
    headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
    let mut m = Message {
        start: StartLine::Request {
            method,
            uri,
            version: Bytes::from_static(b"SIP/2.0"),
        },
        headers,
        body: Bytes::new(),
    };
    if !branch.is_empty() {
        let local = invite
            .top_via()
            .ok()
            .and_then(|v| v.sent_by().to_string().parse().ok());
        if let Some(local) = local {
            set_branch(&mut m, local, &branch);
        }
    }
    m
}

/// Replaces the top Via with ours at `local` with `branch` (and `rport`).
pub(crate) fn set_branch(m: &mut Message, local: SocketAddr, branch: &[u8]) {
    let via = format!(
        "SIP/2.0/UDP {local};branch={};rport",
        String::from_utf8_lossy(branch)
    );
    m.headers.replace_first(&HeaderName::Via, Bytes::from(via));
}

fn is_invite_response(resp: &Message) -> bool {
    resp.cseq().is_ok_and(|c| c.method == Method::Invite)
}

impl Scenario for Call {
    fn name(&self) -> &'static str {
        "call"
    }

    fn primary(&self) -> Quantity {
        Quantity::CallSetup
    }

    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<(), String> {
        crate::sys::raise_nofile_limit();
        self.socket = Some(self.target.bind_client(ctx)?);
        Ok(())
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, session: SessionId, n: u64) {
        let Some((socket, local)) = self.socket else {
            return ctx.finish(session, Outcome::Failure("no socket".into()));
        };
        let rtp = match self.pool.take(ctx, self.target.local_ip) {
            Ok(s) => s,
            Err(e) => return ctx.finish(session, Outcome::Failure(e)),
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
        invite.set_body(self.media.offer(rtp.1).to_bytes(), Some("application/sdp"));
        let now = ctx.now();
        let leg = Leg {
            state: State::Inviting,
            invite: invite.clone(),
            invite_sent: now,
            rtp,
            remote: None,
            ack: None,
            bye: None,
            sender: RtpSender::new(ctx, self.media.clone()),
            meter: RtpMeter::new(self.media.codec().clock_rate()),
            next_tick: now,
        };
        self.calls.insert(session, leg);
        self.by_call_id.insert(Bytes::from(call_id), session);
        self.by_rtp.insert(rtp.0, session);
        if let Err(e) = ctx.send_request(session, socket, invite, self.target.addr) {
            self.end(ctx, session, Outcome::Failure(e.reason()));
        }
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
                .calls
                .get(&session)
                .is_some_and(|l| l.state == State::Inviting)
            {
                self.end(ctx, session, Outcome::Failure(status_line(response)));
            }
            return;
        }
        // The BYE's final response ends the call.
        self.end(ctx, session, Outcome::of_response(response));
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
            TICK => {
                let Some(leg) = self.calls.get_mut(&session) else {
                    return;
                };
                if leg.state != State::Holding {
                    return;
                }
                if let Some(remote) = leg.remote {
                    leg.sender.send(ctx, leg.rtp.0, remote);
                    leg.next_tick += leg.sender.ptime();
                    ctx.set_timer(leg.next_tick, session, TICK);
                }
            }
            HANGUP => self.hang_up(ctx, session),
            _ => {}
        }
    }

    fn on_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        source: SocketAddr,
        payload: Bytes,
    ) {
        let Some(leg) = self.by_rtp.get(&socket).and_then(|s| self.calls.get_mut(s)) else {
            ctx.recorder().note("rtp_after_call", 1);
            return;
        };
        // Only the peer's media (a reused socket may still see the last call's packets).
        if leg.remote != Some(source) {
            ctx.recorder().note("rtp_from_elsewhere", 1);
            return;
        }
        leg.meter.on_datagram(ctx, payload);
    }

    fn summary_lines(&self) -> Vec<String> {
        vec![format!(
            "hold: {:?}, media {}",
            self.hold,
            self.media.describe()
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_engine::sip::builder::{self, tag_of};
    use cpm_engine::sip::parse;

    fn invite() -> Message {
        let mut m = RequestSpec {
            method: Method::Invite,
            uri: "sip:user0000@127.0.0.1:5070",
            via: "127.0.0.1:40000".parse().unwrap(),
            from: "sip:loadgen@127.0.0.1",
            to: "sip:user0000@127.0.0.1:5070",
            call_id: "c1@lg",
            cseq: 1,
        }
        .build_with(b"z9hG4bKinv", b"ft");
        m.headers
            .push(HeaderName::Contact, "<sip:loadgen@127.0.0.1:40000>");
        m
    }

    #[test]
    fn ack_and_bye_follow_the_dialog() {
        let inv = invite();
        let mut ok = builder::response_to_with_tag(&inv, 200, "OK", Some("uastag"));
        ok.headers
            .push(HeaderName::Contact, "<sip:user0000@127.0.0.1:5071>");
        ok.headers
            .push(HeaderName::RecordRoute, "<sip:p2;lr>, <sip:p1;lr>");
        let ack = in_dialog(&inv, &ok, Method::Ack, 1, Bytes::from_static(b"z9hG4bKack"));
        let ack = parse(ack.to_bytes()).unwrap();
        assert_eq!(
            ack.request_uri().map(|u| &u[..]),
            Some(&b"sip:user0000@127.0.0.1:5071"[..])
        );
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_eq!(ack.cseq().unwrap().method, Method::Ack);
        assert_eq!(
            ack.headers.get(&HeaderName::To).and_then(tag_of).as_deref(),
            Some(&b"uastag"[..])
        );
        let routes: Vec<Bytes> = ack.headers.values(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec![Bytes::from("<sip:p1;lr>"), Bytes::from("<sip:p2;lr>")]
        );
        assert_eq!(
            ack.top_via().unwrap().branch().map(|b| &b[..]),
            Some(&b"z9hG4bKack"[..])
        );
        let bye = in_dialog(&inv, &ok, Method::Bye, 2, Bytes::new());
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert_eq!(bye.method(), Some(&Method::Bye));
    }
}
