//! The session on virtual time: messages built with the engine's builder and dialogs, fed as
//! the actor would, and the exact actions asserted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::builder::{response_to_with_tag, tag_of};
use crate::sip::dialog::{via_value, Dialog};
use crate::sip::{parse, HeaderName, Message, Method};

// ---- fakes -------------------------------------------------------------------------------

/// Records every call; rewrites a body by appending `a=relayed:<kind>-<from>`.
#[derive(Debug, Default)]
struct FakeRelay {
    calls: Vec<String>,
    reject_offer: Option<MediaReject>,
    reject_answer: Option<MediaReject>,
}

fn relayed(sdp: &Bytes, kind: &str, from: Side) -> Bytes {
    Bytes::from(format!(
        "{}a=relayed:{kind}-{from:?}\r\n",
        String::from_utf8_lossy(sdp)
    ))
}

impl SdpRelay for FakeRelay {
    fn offer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.calls.push(format!("offer {from:?}"));
        match &self.reject_offer {
            Some(r) => Err(r.clone()),
            None => Ok(relayed(sdp, "offer", from)),
        }
    }

    fn answer(&mut self, from: Side, sdp: &Bytes) -> Result<Bytes, MediaReject> {
        self.calls.push(format!("answer {from:?}"));
        match &self.reject_answer {
            Some(r) => Err(r.clone()),
            None => Ok(relayed(sdp, "answer", from)),
        }
    }

    fn rollback(&mut self) {
        self.calls.push("rollback".into());
    }
}

/// Records the policy calls.
#[derive(Debug, Default)]
struct Recorder {
    calls: Vec<String>,
    reject: Option<(u16, String)>,
}

impl SessionPolicy for Recorder {
    fn invite_received(&mut self, _info: &SessionInfo, _invite: &Message) -> Admission {
        self.calls.push("invite".into());
        match &self.reject {
            Some((status, reason)) => Admission::Reject {
                status: *status,
                reason: reason.clone(),
            },
            None => Admission::Accept {
                store_history: true,
            },
        }
    }
    fn early_media(&mut self, _info: &SessionInfo) {
        self.calls.push("early-media".into());
    }
    fn answered(&mut self, _info: &SessionInfo) {
        self.calls.push("answered".into());
    }
    fn media_changed(&mut self, _info: &SessionInfo, by: Side) {
        self.calls.push(format!("media-changed {by:?}"));
    }
    fn charging(&mut self, record: &ChargingRecord) {
        self.calls.push(format!("charging {:?}", record.kind));
    }
    fn ended(&mut self, _info: &SessionInfo, reason: EndReason) {
        self.calls.push(format!("ended {reason}"));
    }
}

// ---- messages ----------------------------------------------------------------------------

const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &str = "v=0\r\no=bob 2 2 IN IP4 192.0.2.21\r\ns=-\r\nc=IN IP4 192.0.2.21\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
const A_ADDR: &str = "192.0.2.10:5060";
const LOCAL: &str = "198.51.100.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn a_invite(extra: &str, body: Option<&str>) -> Message {
    let body = body.unwrap_or("");
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    parse(Bytes::from(format!(
        "INVITE sip:bob@cpm.example SIP/2.0\r\n\
Via: SIP/2.0/UDP {A_ADDR};branch=z9hG4bKa1;rport=5060;received=192.0.2.10\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@cpm.example>;tag=atag\r\n\
To: <sip:bob@cpm.example>\r\n\
Call-ID: call-a@192.0.2.10\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:alice@{A_ADDR}>\r\n\
Subject: lunch\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )))
    .unwrap()
}

fn contact(n: usize) -> Peer {
    let a = format!("192.0.2.{}:{}", 20 + n, 5060 + 2 * n);
    Peer {
        uri: Bytes::from(format!("sip:bob@{a}")),
        dest: addr(&a),
        reliable: false,
    }
}

fn with_body(mut m: Message, sdp: &str) -> Message {
    m.set_body(Bytes::from(sdp.to_owned()), Some("application/sdp"));
    m
}

/// The response a B contact gives to our INVITE (or any request), To tag `tag`.
fn b_resp(req: &Message, code: u16, tag: &str, sdp: Option<&str>) -> Message {
    let mut r = response_to_with_tag(req, code, "Whatever", Some(tag));
    if code < 300 {
        let host = req.request_uri().unwrap().clone();
        r.headers.push(
            HeaderName::Contact,
            format!("<{}>", String::from_utf8_lossy(&host)),
        );
    }
    match sdp {
        Some(s) => with_body(r, s),
        None => r,
    }
}

fn hdr(m: &Message, h: HeaderName) -> String {
    m.headers
        .get(&h)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn to_tag(m: &Message) -> String {
    m.headers
        .get(&HeaderName::To)
        .and_then(tag_of)
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default()
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

fn branch(m: &Message) -> String {
    String::from_utf8_lossy(m.top_via().unwrap().branch().unwrap()).into_owned()
}

// ---- the harness -------------------------------------------------------------------------

type S = Session<FakeRelay, Recorder>;

struct H {
    s: S,
    t0: Instant,
    now: Instant,
    a_invite: Message,
    next_tx: u64,
}

const A_TX: ServerTxId = ServerTxId(1);

impl H {
    fn start(extra: &str, sdp: Option<&str>, contacts: usize) -> (H, Vec<Action>) {
        H::start_with(
            extra,
            sdp,
            contacts,
            FakeRelay::default(),
            Recorder::default(),
        )
    }

    fn start_with(
        extra: &str,
        sdp: Option<&str>,
        contacts: usize,
        relay: FakeRelay,
        policy: Recorder,
    ) -> (H, Vec<Action>) {
        let t0 = Instant::now();
        let a_invite = a_invite(extra, sdp);
        let start = SessionStart {
            tx: A_TX,
            invite: a_invite.clone(),
            source: addr(A_ADDR),
            reliable: false,
            contacts: (1..=contacts).map(contact).collect(),
            b_call_id: Bytes::from_static(b"call-b"),
            seed: 42,
        };
        let cfg = SessionConfig {
            local: LOCAL.into(),
            ..SessionConfig::default()
        };
        let s = Session::new(cfg, start, relay, policy, t0);
        let mut h = H {
            s,
            t0,
            now: t0,
            a_invite,
            next_tx: 100,
        };
        let out = h.drain();
        (h, out)
    }

    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn at(&mut self, secs: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs);
    }

    fn tx(&mut self) -> ServerTxId {
        self.next_tx += 1;
        ServerTxId(self.next_tx)
    }

    fn response(&mut self, id: ReqId, resp: Message) -> Vec<Action> {
        // Printed and parsed, as on the wire.
        let resp = parse(resp.to_bytes()).unwrap();
        self.s.on_response(id, resp, self.now);
        self.drain()
    }

    fn request(&mut self, tx: ServerTxId, req: Message) -> Vec<Action> {
        let req = parse(req.to_bytes()).unwrap();
        self.s.on_request(tx, req, self.now);
        self.drain()
    }

    fn ack(&mut self, ack: Message) -> Vec<Action> {
        let ack = parse(ack.to_bytes()).unwrap();
        self.s.on_ack(ack, self.now);
        self.drain()
    }

    fn timer(&mut self) -> Vec<Action> {
        self.s.on_timer(self.now);
        self.drain()
    }

    fn relay_calls(&self) -> Vec<String> {
        self.s.relay().calls.clone()
    }

    fn policy_calls(&self) -> Vec<String> {
        self.s.policy().calls.clone()
    }

    /// A's side of the dialog (A is its UAC), from the response A got.
    fn a_dialog(&self, resp_to_a: &Message) -> Dialog {
        Dialog::uac(&self.a_invite, resp_to_a).unwrap()
    }

    /// A basic call up to A's ACK: returns A's dialog, B's dialog (B is UAS), B's INVITE.
    fn connect(extra: &str) -> (H, Dialog, Dialog, Message) {
        let (mut h, out) = H::start(extra, Some(OFFER), 1);
        let (id, inv) = single_request(&out);
        let ok = b_resp(&inv, 200, "btag", Some(ANSWER));
        let out = h.response(id, ok.clone());
        let to_a = response_on(&out, A_TX).unwrap();
        let a = h.a_dialog(&to_a);
        let ack = a.ack(10, via_value(false, A_ADDR, b"z9hG4bKack"));
        assert_eq!(h.ack(ack), vec![Action::Timer(None)]);
        let b = Dialog::uas(&inv, &ok, Bytes::from_static(b"<sip:bob@192.0.2.21:5062>")).unwrap();
        (h, a, b, inv)
    }
}

fn a_via(b: &str) -> Bytes {
    via_value(false, A_ADDR, b.as_bytes())
}

fn b_via(b: &str) -> Bytes {
    via_value(false, "192.0.2.21:5062", b.as_bytes())
}

/// The requests sent, with their id and side.
fn requests(out: &[Action]) -> Vec<(ReqId, Side, Message)> {
    out.iter()
        .filter_map(|a| match a {
            Action::SendRequest {
                id, side, request, ..
            } => Some((*id, *side, request.clone())),
            _ => None,
        })
        .collect()
}

fn single_request(out: &[Action]) -> (ReqId, Message) {
    let r = requests(out);
    assert_eq!(r.len(), 1, "{out:#?}");
    (r[0].0, r[0].2.clone())
}

fn responses(out: &[Action]) -> Vec<(ServerTxId, Message)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Respond { tx, response } => Some((*tx, response.clone())),
            _ => None,
        })
        .collect()
}

fn response_on(out: &[Action], tx: ServerTxId) -> Option<Message> {
    responses(out)
        .into_iter()
        .find(|(t, _)| *t == tx)
        .map(|(_, r)| r)
}

fn acks(out: &[Action]) -> Vec<(Side, SocketAddr, Message)> {
    out.iter()
        .filter_map(|a| match a {
            Action::SendAck {
                side, dest, ack, ..
            } => Some((*side, *dest, ack.clone())),
            _ => None,
        })
        .collect()
}

fn cancels(out: &[Action]) -> Vec<ReqId> {
    out.iter()
        .filter_map(|a| match a {
            Action::Cancel { id } => Some(*id),
            _ => None,
        })
        .collect()
}

fn charging(out: &[Action]) -> Vec<ChargingRecord> {
    out.iter()
        .filter_map(|a| match a {
            Action::Charging(c) => Some((**c).clone()),
            _ => None,
        })
        .collect()
}

fn ended(out: &[Action]) -> Option<EndReason> {
    out.iter().find_map(|a| match a {
        Action::Ended(r) => Some(*r),
        _ => None,
    })
}

fn timer_of(out: &[Action]) -> Option<Option<Instant>> {
    out.iter().rev().find_map(|a| match a {
        Action::Timer(t) => Some(*t),
        _ => None,
    })
}

fn status(m: &Message) -> u16 {
    m.status().unwrap()
}

// ---- setup -------------------------------------------------------------------------------

#[test]
fn basic_call() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    assert_eq!(h.relay_calls(), ["offer A"]);
    assert_eq!(timer_of(&out), Some(Some(h.t0 + Duration::from_secs(180))));
    let (id, inv) = single_request(&out);
    let Action::SendRequest {
        side,
        dest,
        reliable,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (*side, *dest, *reliable),
        (Side::B, addr("192.0.2.21:5062"), false)
    );
    // The INVITE toward B: our own UAC request (decision 0008).
    assert_eq!(inv.method(), Some(&Method::Invite));
    assert_eq!(&inv.request_uri().unwrap()[..], b"sip:bob@192.0.2.21:5062");
    assert_eq!(inv.vias().unwrap().len(), 1);
    let via = inv.top_via().unwrap();
    assert!(via.is_rfc3261_branch());
    assert_eq!(via.sent_by().to_string(), LOCAL);
    assert_eq!(hdr(&inv, HeaderName::MaxForwards), "69");
    let from_tag = tag_of(inv.headers.get(&HeaderName::From).unwrap()).unwrap();
    assert_ne!(&from_tag[..], b"atag");
    assert!(hdr(&inv, HeaderName::From).starts_with("\"Alice\" <sip:alice@cpm.example>;tag="));
    assert_eq!(hdr(&inv, HeaderName::To), "<sip:bob@cpm.example>");
    assert_eq!(hdr(&inv, HeaderName::CallId), "call-b");
    assert_eq!(hdr(&inv, HeaderName::CSeq), "1 INVITE");
    assert_eq!(hdr(&inv, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    assert_eq!(hdr(&inv, HeaderName::Subject), "lunch");
    assert_eq!(body(&inv), format!("{OFFER}a=relayed:offer-A\r\n"));
    assert_eq!(hdr(&inv, HeaderName::ContentType), "application/sdp");

    // 200 from B: ACK to B at once, 200 to A with the rewritten answer.
    h.at(2.0);
    let mut ok = b_resp(&inv, 200, "btag", Some(ANSWER));
    ok.headers.push(
        HeaderName::RecordRoute,
        "<sip:p2.example;lr>, <sip:p1.example;lr>",
    );
    let out = h.response(id, ok);
    assert_eq!(h.relay_calls(), ["offer A", "answer B"]);
    let acks = acks(&out);
    assert_eq!(acks.len(), 1);
    let (side, dest, ack) = &acks[0];
    assert_eq!((*side, *dest), (Side::B, addr("192.0.2.21:5062")));
    assert_eq!(hdr(ack, HeaderName::CSeq), "1 ACK");
    assert_eq!(&ack.request_uri().unwrap()[..], b"sip:bob@192.0.2.21:5062");
    assert_eq!(to_tag(ack), "btag");
    assert_ne!(branch(ack), branch(&inv));
    // B's route set: its 2xx's Record-Route reversed (§12.1.2).
    let routes: Vec<Bytes> = ack.headers.values(&HeaderName::Route).collect();
    assert_eq!(routes, ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    // Topology hiding: nothing of B's path reaches A.
    assert!(response_on(&out, A_TX)
        .unwrap()
        .headers
        .get(&HeaderName::RecordRoute)
        .is_none());
    let to_a = response_on(&out, A_TX).unwrap();
    assert_eq!(status(&to_a), 200);
    let a_tag = to_tag(&to_a);
    assert_eq!(a_tag.len(), 16);
    assert_ne!(a_tag, "btag");
    assert_eq!(hdr(&to_a, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    assert_eq!(hdr(&to_a, HeaderName::CSeq), "10 INVITE");
    assert_eq!(hdr(&to_a, HeaderName::CallId), "call-a@192.0.2.10");
    assert_eq!(body(&to_a), format!("{ANSWER}a=relayed:answer-B\r\n"));
    let start = charging(&out);
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].kind, ChargingKind::Start);
    assert_eq!(&start[0].from[..], b"sip:alice@cpm.example");
    assert_eq!(&start[0].to[..], b"sip:bob@cpm.example");
    assert_eq!(start[0].answered, Some(h.t0 + Duration::from_secs(2)));
    // The setup timer is gone; the 2xx retransmission timer is armed at T1.
    assert_eq!(
        timer_of(&out),
        Some(Some(h.t0 + Duration::from_millis(2500)))
    );
    assert_eq!(h.s.info().state, SessionState::Connected);

    // No ACK yet: the 2xx again at T1, then 2*T1.
    h.at(2.5);
    let out = h.timer();
    assert_eq!(response_on(&out, A_TX), Some(to_a.clone()));
    assert_eq!(
        timer_of(&out),
        Some(Some(h.t0 + Duration::from_millis(3500)))
    );
    // B retransmits its 2xx: the same ACK again.
    let again = h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    assert_eq!(acks_of(&again), vec![ack.clone()]);

    // A's ACK stops the retransmissions.
    let a = h.a_dialog(&to_a);
    assert_eq!(
        h.ack(a.ack(10, a_via("z9hG4bKack"))),
        vec![Action::Timer(None)]
    );

    // A hangs up: 200 to A, BYE to B in B's dialog, the stop record, the end.
    h.at(60.0);
    let mut a = a;
    let bye_tx = h.tx();
    let out = h.request(bye_tx, a.request(Method::Bye, a_via("z9hG4bKbye")));
    assert_eq!(status(&response_on(&out, bye_tx).unwrap()), 200);
    let (_, bye) = single_request(&out);
    assert_eq!(requests(&out)[0].1, Side::B);
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(&bye.request_uri().unwrap()[..], b"sip:bob@192.0.2.21:5062");
    assert_eq!(hdr(&bye, HeaderName::CSeq), "2 BYE");
    assert_eq!(to_tag(&bye), "btag");
    assert_eq!(hdr(&bye, HeaderName::CallId), "call-b");
    assert_eq!(bye.headers.values(&HeaderName::Route).count(), 2);
    assert!(bye.top_via().unwrap().is_rfc3261_branch());
    let stop = charging(&out);
    assert_eq!(stop[0].kind, ChargingKind::Stop);
    assert_eq!(stop[0].end_reason, Some(EndReason::Bye(Side::A)));
    assert_eq!(stop[0].ended, Some(h.t0 + Duration::from_secs(60)));
    assert_eq!(stop[0].final_status, Some(200));
    assert_eq!(ended(&out), Some(EndReason::Bye(Side::A)));
    assert!(h.s.is_ended());
    assert_eq!(
        h.policy_calls(),
        [
            "invite",
            "answered",
            "charging Start",
            "charging Stop",
            "ended bye-caller"
        ]
    );
}

#[test]
fn ringing_then_answer_keeps_one_a_dialog() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    // 100 is not relayed.
    assert!(h.response(id, b_resp(&inv, 100, "", None)).is_empty());
    let out = h.response(id, b_resp(&inv, 180, "btag", None));
    let ringing = response_on(&out, A_TX).unwrap();
    assert_eq!(status(&ringing), 180);
    assert_eq!(&ringing.start.to_string_reason()[..], "Whatever");
    let tag = to_tag(&ringing);
    assert_eq!(tag.len(), 16);
    assert_eq!(hdr(&ringing, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    assert!(ringing.body.is_empty());
    assert_eq!(h.s.info().state, SessionState::Early);
    assert_eq!(
        h.s.dialog(Side::A).unwrap().state(),
        crate::sip::dialog::DialogState::Early
    );
    let out = h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    let ok = response_on(&out, A_TX).unwrap();
    assert_eq!(to_tag(&ok), tag);
    assert_eq!(
        h.s.dialog(Side::A).unwrap().state(),
        crate::sip::dialog::DialogState::Confirmed
    );
}

trait Reason {
    fn to_string_reason(&self) -> String;
}

impl Reason for crate::sip::StartLine {
    fn to_string_reason(&self) -> String {
        match self {
            crate::sip::StartLine::Response { reason, .. } => {
                String::from_utf8_lossy(reason).into_owned()
            }
            _ => String::new(),
        }
    }
}

#[test]
fn early_media_183_goes_through_the_relay() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    let out = h.response(id, b_resp(&inv, 183, "btag", Some(ANSWER)));
    let progress = response_on(&out, A_TX).unwrap();
    assert_eq!(status(&progress), 183);
    assert_eq!(body(&progress), format!("{ANSWER}a=relayed:answer-B\r\n"));
    assert_eq!(h.relay_calls(), ["offer A", "answer B"]);
    assert_eq!(h.policy_calls(), ["invite", "early-media"]);
}

#[test]
fn forking_first_2xx_wins_and_the_other_branch_is_cancelled() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 2);
    let (id1, _, inv1) = reqs[0].clone();
    let (id2, _, inv2) = reqs[1].clone();
    assert_eq!(&inv2.request_uri().unwrap()[..], b"sip:bob@192.0.2.22:5064");
    assert_ne!(branch(&inv1), branch(&inv2));
    // Same Call-ID and From tag: one request forked, as RFC 3261 §16 would.
    assert_eq!(hdr(&inv1, HeaderName::From), hdr(&inv2, HeaderName::From));
    assert_eq!(
        hdr(&inv1, HeaderName::CallId),
        hdr(&inv2, HeaderName::CallId)
    );
    // Both ring; each early dialog relays to A with our one tag.
    let r1 = response_on(&h.response(id1, b_resp(&inv1, 180, "b1", None)), A_TX).unwrap();
    let r2 = response_on(&h.response(id2, b_resp(&inv2, 180, "b2", None)), A_TX).unwrap();
    assert_eq!(to_tag(&r1), to_tag(&r2));
    // The second answers first.
    let out = h.response(id2, b_resp(&inv2, 200, "b2", Some(ANSWER)));
    assert_eq!(cancels(&out), vec![id1]);
    assert_eq!(acks(&out)[0].1, addr("192.0.2.22:5064"));
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 200);
    // The cancelled branch's 487 goes nowhere.
    let out = h.response(id1, b_resp(&inv1, 487, "b1", None));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.s.dialog(Side::B).unwrap().id().remote_tag, "b2");
}

#[test]
fn a_late_2xx_from_another_branch_gets_ack_and_bye() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    let (id1, _, inv1) = reqs[0].clone();
    let (id2, _, inv2) = reqs[1].clone();
    h.response(id1, b_resp(&inv1, 200, "b1", Some(ANSWER)));
    // The CANCEL crossed branch 2's 200.
    let out = h.response(id2, b_resp(&inv2, 200, "b2", Some(ANSWER)));
    assert!(response_on(&out, A_TX).is_none());
    let acks = acks(&out);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].1, addr("192.0.2.22:5064"));
    assert_eq!(to_tag(&acks[0].2), "b2");
    assert_eq!(hdr(&acks[0].2, HeaderName::CSeq), "1 ACK");
    let (_, side, bye) = requests(&out)[0].clone();
    assert_eq!(side, Side::B);
    assert_eq!(bye.method(), Some(&Method::Bye));
    assert_eq!(to_tag(&bye), "b2");
    assert_eq!(hdr(&bye, HeaderName::CSeq), "2 BYE");
    assert_eq!(&bye.request_uri().unwrap()[..], b"sip:bob@192.0.2.22:5064");
    // Only one answer went through the relay.
    assert_eq!(h.relay_calls(), ["offer A", "answer B"]);
    // Its retransmitted 200 gets the same ACK, no second BYE.
    let again = h.response(id2, b_resp(&inv2, 200, "b2", Some(ANSWER)));
    assert_eq!(acks_of(&again), vec![acks[0].2.clone()]);
    assert!(requests(&again).is_empty());
    assert_eq!(h.s.dialog(Side::B).unwrap().id().remote_tag, "b1");
}

fn acks_of(out: &[Action]) -> Vec<Message> {
    acks(out).into_iter().map(|(_, _, m)| m).collect()
}

#[test]
fn all_branches_fail_the_best_response_is_relayed() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    let (id1, _, inv1) = reqs[0].clone();
    let (id2, _, inv2) = reqs[1].clone();
    let mut busy = b_resp(&inv1, 486, "b1", None);
    busy.headers.push(HeaderName::RetryAfter, "30");
    assert!(response_on(&h.response(id1, busy), A_TX).is_none());
    let out = h.response(id2, b_resp(&inv2, 404, "b2", None));
    let r = response_on(&out, A_TX).unwrap();
    // Same class: the first stays (RFC 3261 §16.7 step 6 as in the pager proxy).
    assert_eq!(status(&r), 486);
    assert_eq!(hdr(&r, HeaderName::RetryAfter), "30");
    assert_eq!(hdr(&r, HeaderName::CallId), "call-a@192.0.2.10");
    assert_eq!(to_tag(&r).len(), 16);
    assert_eq!(h.relay_calls(), ["offer A", "rollback"]);
    assert_eq!(ended(&out), Some(EndReason::Rejected(486)));
    assert_eq!(charging(&out)[0].final_status, Some(486));

    // A lower class wins; a 503 is relayed as 480.
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    h.response(reqs[0].0, b_resp(&reqs[0].2, 500, "b1", None));
    let out = h.response(reqs[1].0, b_resp(&reqs[1].2, 503, "b2", None));
    let r = response_on(&out, A_TX).unwrap();
    assert_eq!(status(&r), 480);
    assert_eq!(r.start.to_string_reason(), "Temporarily Unavailable");
}

#[test]
fn unavailable_branches_hand_the_invite_back_when_asked() {
    // 480 and 408: A gets nothing, the session ends handed back; its offer is rolled back.
    let (mut h, out) = H::start("", Some(OFFER), 2);
    h.s.hand_back_when_unavailable();
    let reqs = requests(&out);
    h.response(reqs[0].0, b_resp(&reqs[0].2, 480, "b1", None));
    let out = h.response(reqs[1].0, b_resp(&reqs[1].2, 408, "b2", None));
    assert!(response_on(&out, A_TX).is_none(), "{out:?}");
    assert_eq!(
        ended(&out),
        Some(EndReason::HandedBack(480)),
        "the first of a class"
    );
    assert_eq!(h.relay_calls(), ["offer A", "rollback"]);
    // A refusal is still relayed.
    let (mut h, out) = H::start("", Some(OFFER), 2);
    h.s.hand_back_when_unavailable();
    let reqs = requests(&out);
    h.response(reqs[0].0, b_resp(&reqs[0].2, 486, "b1", None));
    let out = h.response(reqs[1].0, b_resp(&reqs[1].2, 503, "b2", None));
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 486);
    assert_eq!(ended(&out), Some(EndReason::Rejected(486)));
}

#[test]
fn a_6xx_stops_the_forking_at_once() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    let out = h.response(reqs[0].0, b_resp(&reqs[0].2, 603, "b1", None));
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 603);
    assert_eq!(cancels(&out), vec![reqs[1].0]);
    // Not ended until the cancelled branch has its final response.
    assert_eq!(ended(&out), None);
    assert_eq!(timer_of(&out), Some(Some(h.t0 + Duration::from_secs(32))));
    let out = h.response(reqs[1].0, b_resp(&reqs[1].2, 487, "b2", None));
    assert_eq!(ended(&out), Some(EndReason::Rejected(603)));
}

#[test]
fn cancel_from_a() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    h.response(reqs[0].0, b_resp(&reqs[0].2, 180, "b1", None));
    h.at(3.0);
    let cancel = crate::sip::builder::cancel_for(&h.a_invite);
    let cancel_tx = h.tx();
    h.s.on_cancel(cancel_tx, Some(A_TX), cancel, h.now);
    let out = h.drain();
    let ok = response_on(&out, cancel_tx).unwrap();
    assert_eq!(status(&ok), 200);
    assert_eq!(hdr(&ok, HeaderName::CSeq), "10 CANCEL");
    let terminated = response_on(&out, A_TX).unwrap();
    assert_eq!(status(&terminated), 487);
    // §9.2: the same To tag on both.
    assert_eq!(to_tag(&ok), to_tag(&terminated));
    assert_eq!(cancels(&out), vec![reqs[0].0, reqs[1].0]);
    assert_eq!(h.relay_calls(), ["offer A", "rollback"]);
    assert_eq!(ended(&out), None);
    // The branches' 487s end it.
    assert!(ended(&h.response(reqs[0].0, b_resp(&reqs[0].2, 487, "b1", None))).is_none());
    let out = h.response(reqs[1].0, b_resp(&reqs[1].2, 487, "b2", None));
    assert_eq!(ended(&out), Some(EndReason::Cancelled));
    // Found by the sip_session fuzz target: the ended session left its last timer armed.
    assert_eq!(
        timer_of(&out),
        Some(None),
        "the timer is disarmed at the end"
    );
    let stop = charging(&out);
    assert_eq!(stop[0].kind, ChargingKind::Stop);
    assert_eq!(stop[0].answered, None);
    assert_eq!(stop[0].ended, Some(h.t0 + Duration::from_secs(3)));
    assert_eq!(stop[0].final_status, Some(487));
}

#[test]
fn cancel_crossing_a_2xx_and_a_branch_that_never_answers() {
    let (mut h, out) = H::start("", Some(OFFER), 2);
    let reqs = requests(&out);
    let cancel_tx = h.tx();
    let cancel = crate::sip::builder::cancel_for(&h.a_invite);
    h.s.on_cancel(cancel_tx, Some(A_TX), cancel, h.now);
    h.drain();
    // Branch 1 answered before it saw the CANCEL: ACK and BYE.
    let out = h.response(reqs[0].0, b_resp(&reqs[0].2, 200, "b1", Some(ANSWER)));
    assert_eq!(acks(&out).len(), 1);
    assert_eq!(requests(&out)[0].2.method(), Some(&Method::Bye));
    assert!(response_on(&out, A_TX).is_none());
    // Branch 2 never answers: the session gives up 64*T1 after the CANCEL.
    h.at(32.0);
    let out = h.timer();
    assert_eq!(ended(&out), Some(EndReason::Cancelled));
}

#[test]
fn bye_from_a_on_the_early_dialog_cancels() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    let out = h.response(id, b_resp(&inv, 180, "b1", None));
    let mut a = h.a_dialog(&response_on(&out, A_TX).unwrap());
    let bye_tx = h.tx();
    let out = h.request(bye_tx, a.request(Method::Bye, a_via("z9hG4bKeb")));
    assert_eq!(status(&response_on(&out, bye_tx).unwrap()), 200);
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 487);
    assert_eq!(cancels(&out), vec![id]);
}

#[test]
fn timer_c_cancels_and_answers_408() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    h.at(60.0);
    // Provisional responses do not extend the hard limit.
    h.response(id, b_resp(&inv, 180, "b1", None));
    h.at(180.0);
    let out = h.timer();
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 408);
    assert_eq!(cancels(&out), vec![id]);
    let out = h.response(id, b_resp(&inv, 487, "b1", None));
    assert_eq!(ended(&out), Some(EndReason::SetupTimeout));
}

#[test]
fn media_rejections_answer_a_with_their_status() {
    for (status_code, retry) in [(488, None), (503, Some(10)), (400, None)] {
        let relay = FakeRelay {
            reject_offer: Some(MediaReject {
                status: status_code,
                reason: "Media Refused".into(),
                retry_after: retry,
            }),
            ..FakeRelay::default()
        };
        let (h, out) = H::start_with("", Some(OFFER), 1, relay, Recorder::default());
        assert!(requests(&out).is_empty());
        let r = response_on(&out, A_TX).unwrap();
        assert_eq!(status(&r), status_code);
        assert_eq!(r.start.to_string_reason(), "Media Refused");
        assert_eq!(
            r.headers.get(&HeaderName::RetryAfter).map(|v| v.to_vec()),
            retry.map(|s| s.to_string().into_bytes())
        );
        assert_eq!(ended(&out), Some(EndReason::Rejected(status_code)));
        assert_eq!(h.relay_calls(), ["offer A"]);
    }
}

#[test]
fn refusals_before_forking() {
    // Policy.
    let policy = Recorder {
        reject: Some((403, "Barred".into())),
        ..Recorder::default()
    };
    let (_, out) = H::start_with("", Some(OFFER), 1, FakeRelay::default(), policy);
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 403);
    // An extension we cannot relay.
    let (_, out) = H::start("Require: 100rel\r\n", Some(OFFER), 1);
    let r = response_on(&out, A_TX).unwrap();
    assert_eq!(
        (status(&r), hdr(&r, HeaderName::Unsupported)),
        (420, "100rel".into())
    );
    // Session interval too small (RFC 4028 §6).
    let (_, out) = H::start(
        "Supported: timer\r\nSession-Expires: 30\r\n",
        Some(OFFER),
        1,
    );
    let r = response_on(&out, A_TX).unwrap();
    assert_eq!((status(&r), hdr(&r, HeaderName::MinSe)), (422, "90".into()));
    // Max-Forwards exhausted (our B-side INVITE would carry -1).
    let mut inv = a_invite("", Some(OFFER));
    inv.headers.set(HeaderName::MaxForwards, "0");
    let start = SessionStart {
        tx: A_TX,
        invite: inv,
        source: addr(A_ADDR),
        reliable: false,
        contacts: vec![contact(1)],
        b_call_id: Bytes::from_static(b"call-b"),
        seed: 1,
    };
    let mut s = Session::new(
        SessionConfig::default(),
        start,
        FakeRelay::default(),
        NoPolicy,
        Instant::now(),
    );
    let out: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 483);
    assert!(requests(&out).is_empty());
    // No contact.
    let (h, out) = H::start("", Some(OFFER), 0);
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 480);
    assert_eq!(h.relay_calls(), ["offer A", "rollback"]);
    assert!(ended(&out).is_some());
}

#[test]
fn late_offer_answer_travels_in_the_acks() {
    let (mut h, out) = H::start("", None, 1);
    let (id, inv) = single_request(&out);
    assert!(inv.body.is_empty());
    // B's 200 carries the offer: relayed to A, B not ACKed yet.
    let out = h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    assert!(acks(&out).is_empty());
    let ok = response_on(&out, A_TX).unwrap();
    assert_eq!(body(&ok), format!("{ANSWER}a=relayed:offer-B\r\n"));
    // Its retransmission is not ACKed either.
    assert!(acks(&h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)))).is_empty());
    // A's ACK has the answer; it goes to B in B's ACK.
    let a = h.a_dialog(&ok);
    let ack = with_body(a.ack(10, a_via("z9hG4bKla")), OFFER);
    let out = h.ack(ack);
    let acks = acks(&out);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0, Side::B);
    assert_eq!(hdr(&acks[0].2, HeaderName::CSeq), "1 ACK");
    assert_eq!(body(&acks[0].2), format!("{OFFER}a=relayed:answer-A\r\n"));
    assert_eq!(h.relay_calls(), ["offer B", "answer A"]);
    // Now B's retransmitted 200 gets that ACK.
    let again = h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    assert_eq!(acks_of(&again), vec![acks[0].2.clone()]);
}

#[test]
fn no_ack_from_a_ends_the_session() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    let mut sent = 0;
    let mut byes = Vec::new();
    for ms in (500..=32_000).step_by(500) {
        h.at(f64::from(ms) / 1000.0);
        let out = h.timer();
        sent += responses(&out).len();
        byes.extend(requests(&out));
        if ended(&out).is_some() {
            assert_eq!(ended(&out), Some(EndReason::NoAck));
        }
    }
    // T1, 2T1, 4T1, then every T2 up to 64*T1: 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5.
    assert_eq!(sent, 3 + 7);
    let sides: Vec<Side> = byes.iter().map(|b| b.1).collect();
    assert_eq!(sides, [Side::A, Side::B]);
    assert!(h.s.is_ended());
}

// ---- in the dialogs ----------------------------------------------------------------------

#[test]
fn bye_from_b() {
    // A came through an edge proxy that record-routed: our requests to A follow it.
    let (mut h, _a, mut b, _) = H::connect("Record-Route: <sip:edge.example;lr>\r\n");
    let tx = h.tx();
    let out = h.request(tx, b.request(Method::Bye, b_via("z9hG4bKbb")));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 200);
    let (_, side, bye) = requests(&out)[0].clone();
    assert_eq!(side, Side::A);
    assert_eq!(
        &bye.request_uri().unwrap()[..],
        format!("sip:alice@{A_ADDR}").as_bytes()
    );
    assert_eq!(hdr(&bye, HeaderName::CSeq), "1 BYE");
    assert_eq!(hdr(&bye, HeaderName::Route), "<sip:edge.example;lr>");
    assert_eq!(hdr(&bye, HeaderName::CallId), "call-a@192.0.2.10");
    assert_eq!(to_tag(&bye), "atag");
    assert!(hdr(&bye, HeaderName::From).starts_with("<sip:bob@cpm.example>;tag="));
    assert_eq!(ended(&out), Some(EndReason::Bye(Side::B)));
    // A request after the end: a BYE is still answered 200, anything else 481.
    let tx = h.tx();
    let out = h.request(tx, b.request(Method::Options, b_via("z9hG4bKo")));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 481);
}

#[test]
fn bye_from_b_before_a_acked_waits_for_the_ack() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    let ok = b_resp(&inv, 200, "btag", Some(ANSWER));
    let to_a = response_on(&h.response(id, ok.clone()), A_TX).unwrap();
    let mut b = Dialog::uas(&inv, &ok, Bytes::new()).unwrap();
    let tx = h.tx();
    let out = h.request(tx, b.request(Method::Bye, b_via("z9hG4bKbb")));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 200);
    // RFC 3261 §15: no BYE to A before its ACK.
    assert!(requests(&out).is_empty());
    assert_eq!(ended(&out), None);
    let a = h.a_dialog(&to_a);
    let out = h.ack(a.ack(10, a_via("z9hG4bKa")));
    assert_eq!(requests(&out)[0].2.method(), Some(&Method::Bye));
    assert_eq!(requests(&out)[0].1, Side::A);
    assert_eq!(ended(&out), Some(EndReason::Bye(Side::B)));
}

#[test]
fn reinvite_hold_from_a() {
    let (mut h, mut a, _b, _) = H::connect("");
    let hold = "v=0\r\no=alice 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let tx = h.tx();
    let reinvite = with_body(a.request(Method::Invite, a_via("z9hG4bKh")), hold);
    let out = h.request(tx, reinvite);
    let (id, side, to_b) = requests(&out)[0].clone();
    assert_eq!(side, Side::B);
    assert_eq!(to_b.method(), Some(&Method::Invite));
    assert_eq!(hdr(&to_b, HeaderName::CSeq), "2 INVITE");
    assert_eq!(to_tag(&to_b), "btag");
    assert_eq!(&to_b.request_uri().unwrap()[..], b"sip:bob@192.0.2.21:5062");
    assert_eq!(hdr(&to_b, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    assert_eq!(body(&to_b), format!("{hold}a=relayed:offer-A\r\n"));
    // B answers recvonly.
    let recvonly = ANSWER.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=recvonly\r\n");
    let out = h.response(id, b_resp(&to_b, 200, "btag", Some(&recvonly)));
    let ack = &acks(&out)[0];
    assert_eq!(
        (ack.0, hdr(&ack.2, HeaderName::CSeq)),
        (Side::B, "2 ACK".into())
    );
    let ok = response_on(&out, tx).unwrap();
    assert_eq!(status(&ok), 200);
    assert_eq!(hdr(&ok, HeaderName::CSeq), "11 INVITE");
    assert_eq!(hdr(&ok, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    assert_eq!(body(&ok), format!("{recvonly}a=relayed:answer-B\r\n"));
    assert_eq!(
        h.relay_calls(),
        ["offer A", "answer B", "offer A", "answer B"]
    );
    assert!(h.policy_calls().contains(&"media-changed A".to_string()));
    // A's ACK for the re-INVITE's 2xx stops its retransmission.
    assert_eq!(
        h.ack(a.ack(11, a_via("z9hG4bKha"))),
        vec![Action::Timer(None)]
    );
}

#[test]
fn reinvite_adding_video_from_b() {
    let (mut h, _a, mut b, _) = H::connect("");
    let video = format!("{ANSWER}m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(b.request(Method::Invite, b_via("z9hG4bKv")), &video),
    );
    let (id, side, to_a) = requests(&out)[0].clone();
    assert_eq!(side, Side::A);
    assert_eq!(
        &to_a.request_uri().unwrap()[..],
        format!("sip:alice@{A_ADDR}").as_bytes()
    );
    assert_eq!(hdr(&to_a, HeaderName::CSeq), "1 INVITE");
    assert_eq!(to_tag(&to_a), "atag");
    assert_eq!(body(&to_a), format!("{video}a=relayed:offer-B\r\n"));
    let a_answer = format!("{OFFER}m=video 4002 RTP/AVP 96\r\n");
    let out = h.response(id, b_resp(&to_a, 200, "atag", Some(&a_answer)));
    let (side, dest, ack) = acks(&out)[0].clone();
    assert_eq!((side, dest), (Side::A, addr(A_ADDR)));
    assert_eq!(hdr(&ack, HeaderName::CSeq), "1 ACK");
    let ok = response_on(&out, tx).unwrap();
    assert_eq!(body(&ok), format!("{a_answer}a=relayed:answer-A\r\n"));
    assert_eq!(hdr(&ok, HeaderName::CSeq), "1 INVITE");
    assert!(h.policy_calls().contains(&"media-changed B".to_string()));
    // B's ACK.
    assert_eq!(
        h.ack(b.ack(1, b_via("z9hG4bKva"))),
        vec![Action::Timer(None)]
    );
}

#[test]
fn update_relays_offer_and_answer() {
    let (mut h, mut a, _b, _) = H::connect("");
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(a.request(Method::Update, a_via("z9hG4bKu")), OFFER),
    );
    let (id, _, upd) = requests(&out)[0].clone();
    assert_eq!(upd.method(), Some(&Method::Update));
    assert_eq!(hdr(&upd, HeaderName::CSeq), "2 UPDATE");
    assert_eq!(hdr(&upd, HeaderName::Contact), format!("<sip:{LOCAL}>"));
    let out = h.response(id, b_resp(&upd, 200, "btag", Some(ANSWER)));
    assert!(acks(&out).is_empty());
    let ok = response_on(&out, tx).unwrap();
    assert_eq!(hdr(&ok, HeaderName::CSeq), "11 UPDATE");
    assert_eq!(body(&ok), format!("{ANSWER}a=relayed:answer-B\r\n"));
    // Not an INVITE: nothing waits for an ACK.
    assert_eq!(timer_of(&out), None);
}

#[test]
fn rejected_reinvite_rolls_back() {
    let (mut h, mut a, _b, _) = H::connect("");
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(a.request(Method::Invite, a_via("z9hG4bKr")), OFFER),
    );
    let (id, _, to_b) = requests(&out)[0].clone();
    let out = h.response(id, b_resp(&to_b, 488, "btag", None));
    let r = response_on(&out, tx).unwrap();
    assert_eq!(status(&r), 488);
    assert!(acks(&out).is_empty(), "the layer ACKs a non-2xx");
    assert_eq!(h.relay_calls().last().unwrap(), "rollback");
    assert_eq!(ended(&out), None);
    // 481 means B's dialog is gone: relayed, and the session ends with BYE to A.
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(a.request(Method::Invite, a_via("z9hG4bKr2")), OFFER),
    );
    let (id, _, to_b) = requests(&out)[0].clone();
    let out = h.response(id, b_resp(&to_b, 481, "btag", None));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 481);
    assert_eq!(requests(&out)[0].1, Side::A);
    assert_eq!(ended(&out), Some(EndReason::PeerGone(Side::B)));
}

#[test]
fn glare_gets_491_both_ways() {
    let (mut h, mut a, mut b, _) = H::connect("");
    let tx_a = h.tx();
    let out = h.request(
        tx_a,
        with_body(a.request(Method::Invite, a_via("z9hG4bKg1")), OFFER),
    );
    let (id, _, to_b) = requests(&out)[0].clone();
    // B's own re-INVITE crosses ours toward B.
    let tx_b = h.tx();
    let out = h.request(
        tx_b,
        with_body(b.request(Method::Invite, b_via("z9hG4bKg2")), ANSWER),
    );
    let r = response_on(&out, tx_b).unwrap();
    assert_eq!(status(&r), 491);
    assert!(requests(&out).is_empty());
    // B answers ours 491 too: relayed to A, offer rolled back.
    let out = h.response(id, b_resp(&to_b, 491, "btag", None));
    assert_eq!(status(&response_on(&out, tx_a).unwrap()), 491);
    assert_eq!(h.relay_calls().last().unwrap(), "rollback");
    // A second INVITE from A while its first is pending: 500 with Retry-After (§14.2).
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(a.request(Method::Invite, a_via("z9hG4bKg3")), OFFER),
    );
    assert_eq!(requests(&out).len(), 1);
    let tx2 = h.tx();
    let out = h.request(
        tx2,
        with_body(a.request(Method::Invite, a_via("z9hG4bKg4")), OFFER),
    );
    let r = response_on(&out, tx2).unwrap();
    assert_eq!(status(&r), 500);
    let secs: u32 = hdr(&r, HeaderName::RetryAfter).parse().unwrap();
    assert!(secs <= 10);
}

#[test]
fn options_inside_the_dialog_is_relayed() {
    let (mut h, mut a, _b, _) = H::connect("");
    let tx = h.tx();
    let out = h.request(tx, a.request(Method::Options, a_via("z9hG4bKo")));
    let (id, side, opt) = requests(&out)[0].clone();
    assert_eq!((side, opt.method()), (Side::B, Some(&Method::Options)));
    assert_eq!(hdr(&opt, HeaderName::CSeq), "2 OPTIONS");
    assert!(opt.headers.get(&HeaderName::Contact).is_none());
    let mut ok = b_resp(&opt, 200, "btag", None);
    ok.headers
        .push(HeaderName::Allow, "INVITE, ACK, BYE, OPTIONS");
    let out = h.response(id, ok);
    let r = response_on(&out, tx).unwrap();
    assert_eq!(status(&r), 200);
    assert_eq!(hdr(&r, HeaderName::Allow), "INVITE, ACK, BYE, OPTIONS");
    assert_eq!(hdr(&r, HeaderName::CSeq), "11 OPTIONS");
    assert!(r.headers.get(&HeaderName::Contact).is_none());
    // A timeout (the layer's 408) means B is gone.
    let tx = h.tx();
    let out = h.request(tx, a.request(Method::Info, a_via("z9hG4bKi")));
    let (id, _, info) = requests(&out)[0].clone();
    let out = h.response(
        id,
        response_to_with_tag(&info, 408, "Request Timeout", None),
    );
    assert_eq!(status(&response_on(&out, tx).unwrap()), 408);
    assert_eq!(ended(&out), Some(EndReason::PeerGone(Side::B)));
}

#[test]
fn unknown_dialog_and_out_of_order_requests() {
    let (mut h, mut a, _b, _) = H::connect("");
    // Another From tag: no dialog of this session.
    let mut stray = a.request(Method::Bye, a_via("z9hG4bKs"));
    stray
        .headers
        .set(HeaderName::From, "<sip:alice@cpm.example>;tag=other");
    assert_eq!(h.s.matches(&stray), None);
    let tx = h.tx();
    let out = h.request(tx, stray.clone());
    assert_eq!(status(&response_on(&out, tx).unwrap()), 481);
    assert_eq!(status(&no_dialog(&stray)), 481);
    // The routing helper: A's requests and B's.
    let bye = a.request(Method::Options, a_via("z9hG4bKm"));
    assert_eq!(h.s.matches(&bye), Some(Side::A));
    assert_eq!(h.s.matches(&h.a_invite.clone()), Some(Side::A));
    assert_eq!(
        h.s.call_ids(),
        [&Bytes::from("call-a@192.0.2.10"), &Bytes::from("call-b")]
    );
    // CSeq lower than the last: 500 (§12.2.2).
    let mut old = a.request(Method::Options, a_via("z9hG4bKold"));
    old.headers.set(HeaderName::CSeq, "1 OPTIONS");
    let tx = h.tx();
    let out = h.request(tx, old);
    assert_eq!(status(&response_on(&out, tx).unwrap()), 500);
    assert!(requests(&out).is_empty());
}

#[test]
fn requests_in_early_dialogs_wait() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    let ringing = b_resp(&inv, 180, "b1", None);
    let out = h.response(id, ringing.clone());
    let mut a = h.a_dialog(&response_on(&out, A_TX).unwrap());
    let tx = h.tx();
    let out = h.request(
        tx,
        with_body(a.request(Method::Update, a_via("z9hG4bKe")), OFFER),
    );
    let r = response_on(&out, tx).unwrap();
    assert_eq!(status(&r), 500);
    assert!(r.headers.get(&HeaderName::RetryAfter).is_some());
    // From B's early dialog too.
    let mut b = Dialog::uas(&inv, &ringing, Bytes::new()).unwrap();
    assert_eq!(
        h.s.matches(&b.request(Method::Info, b_via("x"))),
        Some(Side::B)
    );
    let tx = h.tx();
    let out = h.request(tx, b.request(Method::Info, b_via("z9hG4bKi")));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 500);
}

// ---- liveness ----------------------------------------------------------------------------

#[test]
fn session_timer_expiry_ends_with_bye_both() {
    let (mut h, out) = H::start(
        "Supported: timer\r\nSession-Expires: 120\r\n",
        Some(OFFER),
        1,
    );
    let (id, inv) = single_request(&out);
    assert_eq!(hdr(&inv, HeaderName::SessionExpires), "120");
    assert_eq!(hdr(&inv, HeaderName::Supported), "timer");
    // B does not do timers: A refreshes (RFC 4028 §8.2).
    let ok = b_resp(&inv, 200, "btag", Some(ANSWER));
    let out = h.response(id, ok);
    let to_a = response_on(&out, A_TX).unwrap();
    assert_eq!(hdr(&to_a, HeaderName::SessionExpires), "120;refresher=uac");
    assert_eq!(hdr(&to_a, HeaderName::Require), "timer");
    let mut a = h.a_dialog(&to_a);
    h.ack(a.ack(10, a_via("z9hG4bKa")));
    assert_eq!(h.s.poll_timeout(), Some(h.t0 + Duration::from_secs(120)));

    // A refresh at 60 s (an UPDATE without SDP) restarts the interval.
    h.at(60.0);
    let tx = h.tx();
    let mut upd = a.request(Method::Update, a_via("z9hG4bKu"));
    upd.headers
        .push(HeaderName::SessionExpires, "120;refresher=uac");
    upd.headers.push(HeaderName::Supported, "timer");
    let out = h.request(tx, upd);
    let (id, _, to_b) = requests(&out)[0].clone();
    assert_eq!(hdr(&to_b, HeaderName::SessionExpires), "120;refresher=uac");
    let out = h.response(id, b_resp(&to_b, 200, "btag", None));
    let ok = response_on(&out, tx).unwrap();
    assert_eq!(hdr(&ok, HeaderName::SessionExpires), "120;refresher=uac");
    assert_eq!(timer_of(&out), Some(Some(h.t0 + Duration::from_secs(180))));
    assert_eq!(h.relay_calls(), ["offer A", "answer B"]);

    // No refresh again: at expiry, BYE to both.
    h.at(179.0);
    assert!(h.timer().is_empty());
    h.at(180.0);
    let out = h.timer();
    let sides: Vec<Side> = requests(&out).iter().map(|r| r.1).collect();
    assert_eq!(sides, [Side::A, Side::B]);
    assert!(requests(&out)
        .iter()
        .all(|r| r.2.method() == Some(&Method::Bye)));
    assert_eq!(ended(&out), Some(EndReason::SessionExpired));
}

#[test]
fn session_timer_inserted_when_a_supports_but_asks_none() {
    let (mut h, out) = H::start("Supported: timer, 100rel\r\n", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    // 100rel is not relayed (no PRACK); our default interval is inserted.
    assert_eq!(hdr(&inv, HeaderName::Supported), "timer");
    assert_eq!(hdr(&inv, HeaderName::SessionExpires), "1800");
    let mut ok = b_resp(&inv, 200, "btag", Some(ANSWER));
    ok.headers
        .push(HeaderName::SessionExpires, "1800;refresher=uas");
    ok.headers.push(HeaderName::Require, "timer");
    let out = h.response(id, ok);
    let to_a = response_on(&out, A_TX).unwrap();
    assert_eq!(hdr(&to_a, HeaderName::SessionExpires), "1800;refresher=uas");
    assert_eq!(to_a.headers.count(&HeaderName::Require), 1);
    h.ack(h.a_dialog(&to_a).ack(10, a_via("z9hG4bKa")));
    assert_eq!(h.s.poll_timeout(), Some(h.t0 + Duration::from_secs(1800)));
}

#[test]
fn media_inactivity_ends_with_bye_both() {
    let (mut h, _a, _b, _) = H::connect("");
    h.at(30.0);
    h.s.on_media_inactive(h.now);
    let out = h.drain();
    let byes = requests(&out);
    assert_eq!(byes.len(), 2);
    assert_eq!(byes[0].1, Side::A);
    assert_eq!(hdr(&byes[0].2, HeaderName::CSeq), "1 BYE");
    assert_eq!(byes[1].1, Side::B);
    assert_eq!(hdr(&byes[1].2, HeaderName::CSeq), "2 BYE");
    assert_eq!(ended(&out), Some(EndReason::MediaInactive));
    let stop = charging(&out);
    assert_eq!(stop[0].end_reason, Some(EndReason::MediaInactive));
}

#[test]
fn shutdown_ends_a_connected_session_with_bye_both() {
    let (mut h, _a, _b, _) = H::connect("");
    h.at(30.0);
    h.s.shutdown(h.now);
    let out = h.drain();
    let byes = requests(&out);
    assert_eq!(byes.len(), 2);
    assert_eq!(
        (byes[0].1, byes[1].1),
        (Side::A, Side::B),
        "a BYE to each side"
    );
    assert!(byes.iter().all(|b| b.2.method() == Some(&Method::Bye)));
    assert_eq!(ended(&out), Some(EndReason::Shutdown));
    assert_eq!(charging(&out)[0].end_reason, Some(EndReason::Shutdown));
    assert!(
        !matches!(timer_of(&out), Some(Some(_))),
        "no timer left armed"
    );
    // Once over, shutting down again does nothing.
    h.s.shutdown(h.now);
    assert!(h.drain().is_empty());
}

#[test]
fn shutdown_during_setup_answers_503_and_cancels() {
    let (mut h, out) = H::start("", Some(OFFER), 1);
    let (id, inv) = single_request(&out);
    h.response(id, b_resp(&inv, 180, "b1", None));
    h.s.shutdown(h.now);
    let out = h.drain();
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 503);
    assert_eq!(cancels(&out), vec![id]);
    let out = h.response(id, b_resp(&inv, 487, "b1", None));
    assert_eq!(ended(&out), Some(EndReason::Shutdown));
}

#[test]
fn interim_records_on_demand() {
    let (mut h, _a, _b, _) = H::connect("");
    h.at(300.0);
    h.s.interim(h.now);
    let out = h.drain();
    let rec = charging(&out);
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].kind, ChargingKind::Interim);
    assert_eq!(rec[0].at, h.t0 + Duration::from_secs(300));
    assert!(rec[0].legs.is_empty());
    assert!(h.s.info().store_history);
}

#[test]
fn answer_the_relay_refuses_drops_the_branch() {
    let relay = FakeRelay {
        reject_answer: Some(MediaReject {
            status: 488,
            reason: "Not Acceptable Here".into(),
            retry_after: None,
        }),
        ..FakeRelay::default()
    };
    let (mut h, out) = H::start_with("", Some(OFFER), 1, relay, Recorder::default());
    let (id, inv) = single_request(&out);
    let out = h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    // B is ACKed and BYEd; A gets the 488.
    assert_eq!(acks(&out).len(), 1);
    assert_eq!(requests(&out)[0].2.method(), Some(&Method::Bye));
    assert_eq!(status(&response_on(&out, A_TX).unwrap()), 488);
    assert_eq!(ended(&out), Some(EndReason::Rejected(488)));
}

#[test]
fn cancel_of_a_relayed_reinvite() {
    let (mut h, mut a, _b, _) = H::connect("");
    let tx = h.tx();
    let reinvite = with_body(a.request(Method::Invite, a_via("z9hG4bKc")), OFFER);
    let out = h.request(tx, reinvite.clone());
    let (id, _, to_b) = requests(&out)[0].clone();
    // The layer matched A's CANCEL to the re-INVITE's transaction.
    let cancel_tx = h.tx();
    let cancel = crate::sip::builder::cancel_for(&reinvite);
    h.s.on_cancel(cancel_tx, Some(tx), cancel, h.now);
    let out = h.drain();
    assert_eq!(status(&response_on(&out, cancel_tx).unwrap()), 200);
    assert_eq!(cancels(&out), vec![id]);
    // B's 487 is the re-INVITE's answer; the offer is rolled back; the call goes on.
    let out = h.response(id, b_resp(&to_b, 487, "btag", None));
    assert_eq!(status(&response_on(&out, tx).unwrap()), 487);
    assert_eq!(h.relay_calls().last().unwrap(), "rollback");
    assert_eq!(ended(&out), None);
    // A CANCEL matching nothing: 481.
    let cancel_tx = h.tx();
    h.s.on_cancel(
        cancel_tx,
        None,
        crate::sip::builder::cancel_for(&reinvite),
        h.now,
    );
    assert_eq!(status(&response_on(&h.drain(), cancel_tx).unwrap()), 481);
}

#[test]
fn late_offer_without_ack_from_a_acks_b_before_the_bye() {
    let (mut h, out) = H::start("", None, 1);
    let (id, inv) = single_request(&out);
    h.response(id, b_resp(&inv, 200, "btag", Some(ANSWER)));
    let mut out = Vec::new();
    for ms in (500..=32_000).step_by(500) {
        h.at(f64::from(ms) / 1000.0);
        out.extend(h.timer());
    }
    let acks = acks(&out);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0].0, hdr(&acks[0].2, HeaderName::CSeq)),
        (Side::B, "1 ACK".into())
    );
    assert!(acks[0].2.body.is_empty());
    let byes: Vec<Side> = requests(&out).iter().map(|r| r.1).collect();
    assert_eq!(byes, [Side::A, Side::B]);
    // The ACK goes out before B's BYE.
    let ack_pos = out.iter().position(|a| matches!(a, Action::SendAck { .. }));
    let bye_pos = out
        .iter()
        .position(|a| matches!(a, Action::SendRequest { side: Side::B, .. }));
    assert!(ack_pos < bye_pos);
    assert_eq!(ended(&out), Some(EndReason::NoAck));
}

/// CPM.md §5 fig. 12: a REFER to the storage controller is answered by the session (202,
/// then the final NOTIFY in the referrer's dialog), never relayed; it turns recording on and
/// off; a REFER to anyone else (a transfer) is relayed as before.
#[test]
fn refer_to_storage_is_answered_here_and_toggles_recording() {
    let (mut h, mut a, mut b, _) = H::connect("");
    let refer = |d: &mut Dialog, via: Bytes, to: &str| {
        let mut r = d.request(Method::Refer, via);
        r.headers.push(HeaderName::ReferTo, to.to_string());
        r
    };
    let tx = h.tx();
    let req = refer(
        &mut a,
        a_via("z9hG4bKr1"),
        "<sip:storage@cpm.example;method=INVITE>",
    );
    let refer_seq = a.local_seq().unwrap();
    let out = h.request(tx, req);
    let ok = response_on(&out, tx).expect("answered here");
    assert_eq!(status(&ok), 202);
    assert!(ok.headers.get(&HeaderName::Contact).is_some());
    let sent = requests(&out);
    assert_eq!(sent.len(), 1, "only the NOTIFY, nothing to B: {out:#?}");
    let (_, side, notify) = &sent[0];
    assert_eq!(*side, Side::A);
    assert_eq!(notify.method(), Some(&Method::Notify));
    assert_eq!(
        hdr(notify, HeaderName::Event),
        format!("refer;id={refer_seq}")
    );
    assert!(hdr(notify, HeaderName::SubscriptionState).starts_with("terminated"));
    assert_eq!(
        hdr(notify, HeaderName::ContentType),
        "message/sipfrag;version=2.0"
    );
    assert_eq!(body(notify), "SIP/2.0 200 OK\r\n");
    assert_eq!(notify.call_id(), Some(&a.id().call_id), "in A's dialog");
    assert_eq!(to_tag(notify), a.id().local_tag, "toward A");
    assert!(h.s.is_recording());
    assert_eq!(
        h.s.poll_record(),
        Some(crate::record::RecordChange {
            on: true,
            by: Side::A
        })
    );
    assert_eq!(h.s.poll_record(), None);

    // B stops it; the session goes on.
    let tx = h.tx();
    let req = refer(
        &mut b,
        b_via("z9hG4bKr2"),
        "<sip:storage@cpm.example;method=BYE>",
    );
    let out = h.request(tx, req);
    assert_eq!(status(&response_on(&out, tx).unwrap()), 202);
    assert_eq!(requests(&out)[0].1, Side::B);
    assert!(!h.s.is_recording());
    assert_eq!(h.s.poll_record().map(|c| c.on), Some(false));
    assert!(ended(&out).is_none());

    // A transfer is relayed to the other side.
    let tx = h.tx();
    let req = refer(&mut a, a_via("z9hG4bKr3"), "<sip:carol@cpm.example>");
    let out = h.request(tx, req);
    assert!(response_on(&out, tx).is_none());
    let (_, to_b) = single_request(&out);
    assert_eq!(to_b.method(), Some(&Method::Refer));
    assert_eq!(h.s.poll_record(), None);

    // Storage with a method it does not do: 400, nothing relayed.
    let tx = h.tx();
    let req = refer(
        &mut a,
        a_via("z9hG4bKr4"),
        "<sip:storage@cpm.example;method=MESSAGE>",
    );
    let out = h.request(tx, req);
    assert_eq!(status(&response_on(&out, tx).unwrap()), 400);
    assert!(requests(&out).is_empty());
}
