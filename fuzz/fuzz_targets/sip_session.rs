//! Structured fuzzing of the B2BUA session state machine (`cargo fuzz run sip_session`): A's
//! INVITE starts a session forked to two contacts of B, then the input is a script of events
//! (B's responses to any request the session sent, with or without SDP, from either fork; A's
//! and B's answers and in-dialog requests (BYE, re-INVITE, UPDATE, OPTIONS, INFO, ACK), CANCEL,
//! media inactivity, time passing), each built from a few bytes and fed as the session actor
//! feeds them. Media goes through a fake relay that refuses some offers and answers.
//!
//! Beyond "no panic", the session must end: once the script is over, A hangs up (CANCEL
//! before the answer, BYE after), every request the session sent gets a final response, and
//! after its timers run out the session reports `Ended` exactly once and arms no timer.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::media::{MediaReject, SdpRelay, Side};
use cpm_engine::session::{Action, NoPolicy, Peer, ReqId, Session, SessionConfig, SessionStart};
use cpm_engine::sip::builder::{response_to_with_tag, tag_of};
use cpm_engine::sip::transaction::ServerTxId;
use cpm_engine::sip::{parse, HeaderName, Message};
use libfuzzer_sys::fuzz_target;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                   m=audio 4000 RTP/AVP 0\r\n";
const STATUSES: [u16; 10] = [100, 180, 183, 200, 408, 481, 486, 487, 491, 503];

/// Passes SDP through; refuses when told to.
struct Relay {
    refuse: bool,
}

impl SdpRelay for Relay {
    fn offer(&mut self, _from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.result(sdp)
    }
    fn answer(&mut self, _from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.result(sdp)
    }
    fn rollback(&mut self) {}
}

impl Relay {
    fn result(&self, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        if self.refuse {
            Err(MediaReject {
                status: 488,
                reason: "Fuzz".into(),
                retry_after: None,
            })
        } else {
            Ok(sdp.clone())
        }
    }
}

/// The bytes of the script, read one at a time (zero once exhausted).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
}

struct Driver {
    session: Session<Relay, NoPolicy>,
    now: Instant,
    timer: Option<Instant>,
    next_tx: u64,
    /// Requests the session sent and that have no final response yet.
    sent: Vec<(ReqId, Side, Message)>,
    /// Requests the session received and has not answered finally.
    received: Vec<(ServerTxId, Side, Message)>,
    /// 2xx responses to INVITEs the session sent to A (for A's ACK) and B (ACKs it sends).
    a_ok: Option<Message>,
    /// A's dialog toward the session: our tag there (from a response to A), A's CSeq.
    a_tag: Option<Bytes>,
    a_cseq: u32,
    /// B's dialog: the session's B Call-ID and tag (from its INVITE), B's tag, B's CSeq.
    b_invite: Option<Message>,
    b_tag: Bytes,
    b_cseq: u32,
    ended: usize,
}

impl Driver {
    fn drain(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::SendRequest {
                    id, side, request, ..
                } => {
                    if side == Side::B && self.b_invite.is_none() {
                        self.b_invite = Some(request.clone());
                    }
                    self.sent.push((id, side, request));
                }
                Action::Respond { tx, response } => {
                    let code = response.status().unwrap_or(0);
                    if let Some(i) = self.received.iter().position(|(t, _, _)| *t == tx) {
                        let side = self.received[i].1;
                        if side == Side::A && code > 100 && self.a_tag.is_none() {
                            self.a_tag = response.headers.get(&HeaderName::To).and_then(tag_of);
                        }
                        if side == Side::A
                            && (200..300).contains(&code)
                            && self.received[i]
                                .2
                                .method()
                                .is_some_and(|m| m.as_str() == "INVITE")
                        {
                            self.a_ok = Some(response.clone());
                        }
                        if code >= 200 {
                            self.received.remove(i);
                        }
                    }
                }
                Action::Cancel { .. } | Action::SendAck { .. } | Action::Charging(_) => {}
                Action::Timer(at) => self.timer = at,
                Action::Ended(_) => self.ended += 1,
            }
        }
        assert!(self.ended <= 1, "the session ended twice");
    }

    fn tx(&mut self) -> ServerTxId {
        self.next_tx += 1;
        ServerTxId(self.next_tx)
    }

    /// An in-dialog request from `side` (A toward the session, or B on its dialog).
    fn request(&mut self, side: Side, method: &str, sdp: bool) -> Option<Message> {
        let (call_id, from_tag, to_tag, cseq, ruri) = match side {
            Side::A => {
                self.a_cseq += 1;
                (
                    Bytes::from_static(b"a-call@example.com"),
                    Bytes::from_static(b"a1"),
                    self.a_tag.clone()?,
                    self.a_cseq,
                    "sip:cpm@192.0.2.5",
                )
            }
            Side::B => {
                let inv = self.b_invite.as_ref()?;
                self.b_cseq += 1;
                (
                    inv.call_id()?.clone(),
                    self.b_tag.clone(),
                    inv.headers.get(&HeaderName::From).and_then(tag_of)?,
                    self.b_cseq,
                    "sip:cpm@192.0.2.5",
                )
            }
        };
        let cseq_method = if method == "ACK" { "INVITE" } else { method };
        let cseq = if method == "ACK" { 1 } else { cseq };
        let body = if sdp { SDP } else { "" };
        let ctype = if sdp {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        let text = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-{cseq}-{method}\r\n\
             From: <sip:x@example.com>;tag={}\r\n\
             To: <sip:y@example.com>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:x@192.0.2.9>\r\n\
             Max-Forwards: 70\r\n{ctype}\
             Content-Length: {}\r\n\r\n{body}",
            String::from_utf8_lossy(&from_tag),
            String::from_utf8_lossy(&to_tag),
            String::from_utf8_lossy(&call_id),
            body.len()
        );
        parse(Bytes::from(text)).ok()
    }

    /// A response from `i`'s peer to the `i`th request the session sent.
    fn answer_sent(&mut self, i: usize, status: u16, fork: u8, sdp: bool) {
        let Some((id, side, req)) = self.sent.get(i).cloned() else {
            return;
        };
        let tag = if side == Side::B && fork == 1 {
            "b2"
        } else {
            "b1"
        };
        if side == Side::B && status > 100 && status < 300 {
            self.b_tag = Bytes::from(tag);
        }
        let mut resp = response_to_with_tag(&req, status, "Fuzz", Some(tag));
        resp.headers.push(
            HeaderName::Contact,
            Bytes::from_static(b"<sip:y@192.0.2.8>"),
        );
        if sdp {
            resp.set_body(
                Bytes::from_static(SDP.as_bytes()),
                Some("application/sdp"),
            );
        }
        if status >= 200 && !(side == Side::B && status < 300 && fork == 1) {
            self.sent.remove(i);
        }
        self.session.on_response(id, resp, self.now);
        self.drain();
    }

    fn step(&mut self, s: &mut Script) {
        let op = s.byte() % 10;
        match op {
            0..=2 => {
                if !self.sent.is_empty() {
                    let i = usize::from(s.byte()) % self.sent.len();
                    let status = STATUSES[usize::from(s.byte()) % STATUSES.len()];
                    let (fork, sdp) = (s.byte() % 2, s.byte() % 2 == 0);
                    self.answer_sent(i, status, fork, sdp);
                }
            }
            3 | 4 => {
                let side = if s.byte() % 2 == 0 { Side::A } else { Side::B };
                let method = ["BYE", "INVITE", "UPDATE", "OPTIONS", "INFO", "ACK"]
                    [usize::from(s.byte()) % 6];
                let sdp = s.byte() % 2 == 0;
                if let Some(req) = self.request(side, method, sdp) {
                    if method == "ACK" {
                        self.session.on_ack(req, self.now);
                    } else {
                        let tx = self.tx();
                        self.received.push((tx, side, req.clone()));
                        self.session.on_request(tx, req, self.now);
                    }
                    self.drain();
                }
            }
            5 => {
                // A CANCEL of A's INVITE (tx 0).
                let cancel = self.cancel();
                let tx = self.tx();
                self.session
                    .on_cancel(tx, Some(ServerTxId(0)), cancel, self.now);
                self.drain();
            }
            6 => {
                if let Some(ok) = self.a_ok.clone() {
                    if let Some(mut ack) = self.request(Side::A, "ACK", false) {
                        // The ACK's CSeq is the INVITE's.
                        if let Some(c) = ok.headers.get(&HeaderName::CSeq) {
                            let n = String::from_utf8_lossy(c)
                                .split(' ')
                                .next()
                                .unwrap_or("1")
                                .to_string();
                            ack.headers
                                .set(HeaderName::CSeq, Bytes::from(format!("{n} ACK")));
                        }
                        self.session.on_ack(ack, self.now);
                        self.drain();
                    }
                }
            }
            7 => {
                self.session.on_media_inactive(self.now);
                self.drain();
            }
            8 => {
                self.session.relay_mut().refuse = s.byte() % 4 == 0;
            }
            _ => self.advance(Duration::from_millis(u64::from(s.byte()) * 100)),
        }
    }

    fn cancel(&self) -> Message {
        let text = "CANCEL sip:bob@cpm.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-a-invite\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@cpm.example>\r\n\
             Call-ID: a-call@example.com\r\n\
             CSeq: 1 CANCEL\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n";
        parse(Bytes::from_static(text.as_bytes())).expect("CANCEL parses")
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.timer.is_some_and(|t| t <= self.now) {
            self.session.on_timer(self.now);
            self.drain();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let invite = format!(
        "INVITE sip:bob@cpm.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-a-invite\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@cpm.example>\r\n\
         Call-ID: a-call@example.com\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@192.0.2.9>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let invite = parse(Bytes::from(invite)).expect("INVITE parses");
    let peer = |uri: &'static str, port: u16| Peer {
        uri: Bytes::from_static(uri.as_bytes()),
        dest: SocketAddr::from(([192, 0, 2, 8], port)),
        reliable: false,
    };
    let start = SessionStart {
        tx: ServerTxId(0),
        invite: invite.clone(),
        source: SocketAddr::from(([192, 0, 2, 9], 5060)),
        reliable: false,
        contacts: vec![
            peer("sip:bob@192.0.2.8:5060", 5060),
            peer("sip:bob@192.0.2.8:5070", 5070),
        ],
        b_call_id: Bytes::from_static(b"b-call@cpm"),
        seed: 1,
    };
    let config = SessionConfig {
        local: "192.0.2.5:5060".into(),
        ..SessionConfig::default()
    };
    let session = Session::new(config, start, Relay { refuse: false }, NoPolicy, now);
    let mut d = Driver {
        session,
        now,
        timer: None,
        next_tx: 0,
        sent: Vec::new(),
        received: vec![(ServerTxId(0), Side::A, invite)],
        a_ok: None,
        a_tag: None,
        a_cseq: 1,
        b_invite: None,
        b_tag: Bytes::from_static(b"b1"),
        b_cseq: 0,
        ended: 0,
    };
    d.drain();
    let mut script = Script(data);
    for _ in 0..128 {
        if script.0.is_empty() {
            break;
        }
        d.step(&mut script);
    }
    // The end: A hangs up, everyone answers everything, the timers run out.
    d.session.relay_mut().refuse = false;
    if d.ended == 0 {
        let cancel = d.cancel();
        let tx = d.tx();
        d.session.on_cancel(tx, Some(ServerTxId(0)), cancel, d.now);
        d.drain();
        if let Some(bye) = d.request(Side::A, "BYE", false) {
            let tx = d.tx();
            d.session.on_request(tx, bye, d.now);
            d.drain();
        }
    }
    for _ in 0..64 {
        while !d.sent.is_empty() {
            let before = d.sent.len();
            let code = if d.sent[0].2.method().is_some_and(|m| m.as_str() == "INVITE") {
                487
            } else {
                200
            };
            d.answer_sent(0, code, 0, false);
            if d.sent.len() == before {
                d.sent.remove(0);
            }
        }
        match d.timer {
            Some(at) => {
                let by = at.saturating_duration_since(d.now) + Duration::from_millis(1);
                d.advance(by);
            }
            None => break,
        }
    }
    assert_eq!(
        d.ended,
        1,
        "the session did not end: {:?}",
        d.session.info().state
    );
    assert!(d.session.is_ended());
    assert!(d.timer.is_none(), "a timer armed after the end");
});
