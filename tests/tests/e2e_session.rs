//! 1-to-1 sessions through cpmd's B2BUA (issue 4), end to end with scripted peers: alice calls
//! bob (one or two registered contacts), cpmd relays the signaling with a dialog of its own
//! toward each side and anchors the media on its relay ports.
//!
//! Each test checks what every side receives (status codes; Call-IDs, tags and Vias of the
//! B2BUA; SDP naming cpmd's relay ports, never the peer's), counts the RTP that crosses the
//! relay exactly (numbered packets, received from cpmd's port facing the receiver), and ends
//! with every session, leg and pool port released (`/metrics`) and, where the call was
//! answered, its charging records in `DATA-DIR/cdr.jsonl`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cpm_engine::sip::Message;
use cpm_tests::dialog::{uri_of, Dialog};
use cpm_tests::rtp::{rtp_seq, rtp_ssrc, Datagram, RtpEndpoint};
use cpm_tests::sdp::{self, Sdp, Stream};
use cpm_tests::wire::param;
use cpm_tests::{assert_status, header, header_values, Cpmd, Received, Req, Ua};

/// The bound of every wait for a message or a packet.
const WAIT: Duration = Duration::from_secs(5);
/// RTP packets sent each way in a stream check.
const N: usize = 50;
/// How long a receiver keeps listening after the expected count, for extra packets.
const SETTLE: Duration = Duration::from_millis(150);
const SDP: &str = "application/sdp";
const PCMA: u8 = 8;
const H264: u8 = 96;

// ---- helpers ---------------------------------------------------------------------------------

fn registered(cpmd: &Cpmd, user: &str) -> Ua {
    let mut ua = Ua::udp(cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

fn method(m: &Message) -> &str {
    m.method().map(|m| m.as_str()).unwrap_or("")
}

/// The next request at `ua`, which must be a `want`.
#[track_caller]
fn expect_request(ua: &mut Ua, want: &str) -> Received {
    let got = ua
        .recv_request(WAIT)
        .unwrap_or_else(|| panic!("{} got no {want} within {WAIT:?}", ua.contact_uri()));
    assert_eq!(method(&got.msg), want, "expected {want}, got:\n{}", got.msg);
    got
}

/// The next response to `req` with a status in `codes`.
#[track_caller]
fn expect_response(ua: &mut Ua, req: &Req, codes: std::ops::RangeInclusive<u16>) -> Message {
    ua.await_response(req, WAIT, |c| codes.contains(&c))
        .unwrap_or_else(|| {
            panic!(
                "no {codes:?} response to {} {} within {WAIT:?}",
                req.method, req.uri
            )
        })
}

/// The SDP body of a message (asserting its Content-Type).
#[track_caller]
fn sdp_of(m: &Message) -> Sdp {
    assert_eq!(
        header(m, "Content-Type").as_deref(),
        Some(SDP),
        "no SDP in:\n{m}"
    );
    Sdp::parse(&m.body)
}

/// Asserts that `sdp` was rewritten by cpmd: every active stream on 127.0.0.1 (the media IP)
/// at a port of cpmd's relay range, none at a port of `not` (the other peer's own ports).
#[track_caller]
fn assert_anchored(cpmd: &Cpmd, sdp: &Sdp, not: &[u16]) {
    let range = cpmd.media_ports();
    for (i, m) in sdp.media.iter().enumerate().filter(|(_, m)| m.port != 0) {
        let at = sdp.rtp_addr(i);
        assert_eq!(
            at.ip().to_string(),
            "127.0.0.1",
            "stream {i} address: {sdp:?}"
        );
        assert!(
            range.contains(&m.port),
            "stream {i} port {} outside cpmd's relay range {range:?}: {sdp:?}",
            m.port
        );
        assert!(
            !not.contains(&m.port),
            "stream {i} names the peer's own port {}: {sdp:?}",
            m.port
        );
    }
}

/// The INVITE bob received is cpmd's own (B2BUA, decision 0008): a new Call-ID and From tag,
/// one Via (cpmd's), Request-URI bob's contact, Contact cpmd, from cpmd's SIP address.
#[track_caller]
fn assert_b2bua_invite(cpmd: &Cpmd, sent: &Req, got: &Received, contact: &Ua) {
    let m = &got.msg;
    assert_eq!(got.from, cpmd.sip_addr(), "INVITE not from cpmd:\n{m}");
    let ruri = String::from_utf8_lossy(m.request_uri().expect("Request-URI")).into_owned();
    assert_eq!(ruri, contact.contact_uri(), "Request-URI in:\n{m}");
    let call_id = header(m, "Call-ID").expect("Call-ID");
    assert_ne!(
        Some(call_id.as_str()),
        sent.get("Call-ID"),
        "Call-ID reused:\n{m}"
    );
    let from = header(m, "From").expect("From");
    assert!(from.contains("sip:alice@localhost"), "From in:\n{m}");
    assert_ne!(
        param(&from, "tag"),
        sent.get("From").and_then(|f| param(f, "tag")),
        "From tag reused:\n{m}"
    );
    assert_eq!(
        param(&header(m, "To").expect("To"), "tag"),
        None,
        "To tag in:\n{m}"
    );
    let vias = header_values(m, "Via");
    assert_eq!(vias.len(), 1, "a B2BUA sends its own Via only:\n{m}");
    assert_eq!(
        m.top_via().expect("Via").port,
        Some(cpmd.sip_addr().port()),
        "Via in:\n{m}"
    );
    let contact_uri = uri_of(&header(m, "Contact").expect("Contact"));
    assert!(
        contact_uri.ends_with(&cpmd.sip_addr().to_string()),
        "Contact {contact_uri} is not cpmd in:\n{m}"
    );
}

/// Sends `count` RTP packets from `from` to cpmd's port `to` and asserts that `at` receives
/// exactly those, in order, with the sender's SSRC, from cpmd's port `via` (the relay, not the
/// sender).
#[track_caller]
fn relay_one_way(
    from: &mut RtpEndpoint,
    to: SocketAddr,
    at: &RtpEndpoint,
    via: SocketAddr,
    count: usize,
    pt: u8,
) {
    let sent = from.send(to, count, pt);
    let got = at.recv(count, WAIT, SETTLE);
    assert_stream(&got, &sent, from.ssrc(), via);
}

#[track_caller]
fn assert_stream(got: &[Datagram], sent: &[u16], ssrc: u32, via: SocketAddr) {
    assert_eq!(
        got.len(),
        sent.len(),
        "received {} of {} RTP packets",
        got.len(),
        sent.len()
    );
    for d in got {
        assert_eq!(d.from, via, "an RTP packet not from cpmd's relay port");
        assert_eq!(rtp_ssrc(&d.data), Some(ssrc), "SSRC changed on the way");
    }
    let seqs: Vec<u16> = got.iter().filter_map(|d| rtp_seq(&d.data)).collect();
    assert_eq!(seqs, sent, "sequence numbers");
}

/// Asserts that nothing arrives at `at` for a moment.
#[track_caller]
/// Asserts that nothing from `cpmd`'s relay ports reaches `at` for a moment. Datagrams from
/// elsewhere are strays of other tests (a peer still sending to a port this test's socket was
/// given again by the kernel): reported, not counted.
fn assert_no_rtp(cpmd: &Cpmd, at: &RtpEndpoint, what: &str) {
    let got = at.recv(1, Duration::from_millis(300), Duration::ZERO);
    let (ours, strays): (Vec<_>, Vec<_>) = got
        .iter()
        .partition(|d| cpmd.media_ports().contains(&d.from.port()));
    if !strays.is_empty() {
        eprintln!(
            "{what}: {} stray datagrams from other sockets ignored",
            strays.len()
        );
    }
    assert!(
        ours.is_empty(),
        "{what}: got {} datagrams from cpmd",
        ours.len()
    );
}

/// Asserts that no request reaches `ua` for a moment (responses, e.g. a 100 Trying, are
/// dropped).
#[track_caller]
fn assert_no_request(ua: &mut Ua, what: &str) {
    let until = Instant::now() + Duration::from_millis(300);
    while let Some(m) = ua.recv(until.saturating_duration_since(Instant::now())) {
        assert!(!m.is_request(), "{what}:\n{m}");
    }
}

/// Every session, relay leg, bound relay port (catch-alls included) and pool port is gone.
#[track_caller]
fn assert_released(cpmd: &Cpmd) {
    for series in [
        "cpm_sessions",
        "cpm_media_legs",
        "cpm_media_ports_in_use",
        "cpm_media_pool_ports_in_use",
        "cpm_media_relay_sockets",
    ] {
        cpmd.wait_metric(series, WAIT, |v| v == 0.0);
    }
}

/// What cpmd holds for `sessions` calls of one audio leg each.
#[track_caller]
fn assert_held(cpmd: &Cpmd, sessions: f64, legs: f64) {
    cpmd.wait_metric("cpm_sessions", WAIT, |v| v == sessions);
    cpmd.wait_metric("cpm_media_legs", WAIT, |v| v == legs);
    // Two RTP/RTCP pairs per leg: the A-facing and the B-facing one.
    cpmd.wait_metric("cpm_media_pool_ports_in_use", WAIT, |v| v == 4.0 * legs);
}

/// alice's INVITE to bob with an SDP offer of `streams`, sent.
fn invite(alice: &mut Ua, streams: &[Stream]) -> Req {
    let contact = format!("<{}>", alice.contact_uri());
    let req = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", contact)
        .body(SDP, sdp::body(1, streams));
    alice.send_req(&req);
    req
}

/// `ua` answers `req` with `code` and its Contact, and an SDP of `streams` when given.
fn answer(ua: &mut Ua, req: &Received, code: u16, reason: &str, sdp: Option<(u64, &[Stream])>) {
    let contact = format!("<{}>", ua.contact_uri());
    let body = sdp.map(|(v, s)| sdp::body(v, s));
    ua.reply_with(
        req,
        code,
        reason,
        &[("Contact", &contact)],
        body.as_deref().map(|b| (SDP, b.as_bytes())),
    );
}

/// An answered audio call and what each side knows of it.
struct Call {
    /// alice's INVITE.
    invite: Req,
    /// alice's dialog (with cpmd's A side).
    a: Dialog,
    /// bob's dialog (with cpmd's B side).
    b: Dialog,
    /// alice's media socket.
    a_rtp: RtpEndpoint,
    /// bob's media socket.
    b_rtp: RtpEndpoint,
    /// cpmd's audio port facing alice (in the SDP alice got).
    a_facing: SocketAddr,
    /// cpmd's audio port facing bob (in the SDP bob got).
    b_facing: SocketAddr,
    /// The SDP version bob was last sent.
    b_seen_version: u64,
}

impl Call {
    /// alice calls bob: INVITE with an audio offer, 180 and 200 from bob, ACK; every message
    /// checked on the way (cpmd's own dialog toward bob, SDP anchored on cpmd's ports).
    fn setup(cpmd: &Cpmd, alice: &mut Ua, bob: &mut Ua) -> Call {
        let a_rtp = RtpEndpoint::bind();
        let b_rtp = RtpEndpoint::bind();
        let invite = invite(alice, &[Stream::audio(a_rtp.port())]);
        let inv = expect_request(bob, "INVITE");
        assert_b2bua_invite(cpmd, &invite, &inv, bob);
        let offer = sdp_of(&inv.msg);
        assert_eq!(offer.media.len(), 1, "{offer:?}");
        assert_eq!(
            offer.media[0].formats,
            ["0", "8", "101"],
            "codecs relayed as offered"
        );
        assert_anchored(cpmd, &offer, &[a_rtp.port()]);
        let b_facing = offer.rtp_addr(0);

        answer(bob, &inv, 180, "Ringing", None);
        let ringing = expect_response(alice, &invite, 101..=199);
        assert_status(&ringing, 180);
        let audio = [Stream::audio(b_rtp.port()).formats(&[PCMA])];
        answer(bob, &inv, 200, "OK", Some((1, &audio)));
        let ok = expect_response(alice, &invite, 200..=699);
        assert_status(&ok, 200);
        // One dialog toward alice: the 200 carries the 180's To tag.
        assert_eq!(
            header(&ok, "To")
                .as_deref()
                .and_then(|t| param(t, "tag").map(String::from)),
            header(&ringing, "To")
                .as_deref()
                .and_then(|t| param(t, "tag").map(String::from)),
            "To tags of 180 and 200"
        );
        assert_eq!(
            header_values(&ok, "Via").len(),
            1,
            "alice's Via only:\n{ok}"
        );
        let a = Dialog::uac(&invite, &ok);
        assert!(
            a.target.ends_with(&cpmd.sip_addr().to_string()),
            "the 200's Contact is not cpmd:\n{ok}"
        );
        let answer_sdp = sdp_of(&ok);
        assert_eq!(answer_sdp.media[0].formats, ["8"], "the answer's codec");
        assert_anchored(cpmd, &answer_sdp, &[b_rtp.port(), b_facing.port()]);
        let a_facing = answer_sdp.rtp_addr(0);

        alice.send_req(&a.ack(alice, invite.cseq().expect("CSeq")));
        let b = Dialog::uas(&inv.msg, bob.tag());
        let ack = expect_request(bob, "ACK");
        assert!(b.owns(&ack.msg), "ACK of another dialog:\n{}", ack.msg);
        Call {
            invite,
            a,
            b,
            a_rtp,
            b_rtp,
            a_facing,
            b_facing,
            b_seen_version: offer.version,
        }
    }

    fn call_id(&self) -> &str {
        self.invite.get("Call-ID").expect("Call-ID")
    }

    /// `count` audio packets each way, each received exactly once through the relay.
    fn talk(&mut self, count: usize) {
        let (a_facing, b_facing) = (self.a_facing, self.b_facing);
        relay_one_way(
            &mut self.a_rtp,
            a_facing,
            &self.b_rtp,
            b_facing,
            count,
            PCMA,
        );
        relay_one_way(
            &mut self.b_rtp,
            b_facing,
            &self.a_rtp,
            a_facing,
            count,
            PCMA,
        );
    }

    /// alice hangs up: 200 to her BYE, bob gets the BYE of his dialog and answers 200.
    fn bye_from_alice(&mut self, alice: &mut Ua, bob: &mut Ua) {
        let bye = self.a.request(alice, "BYE");
        assert_status(&alice.request(&bye), 200);
        let got = expect_request(bob, "BYE");
        assert!(self.b.owns(&got.msg), "BYE of another dialog:\n{}", got.msg);
        bob.reply(&got, 200, "OK");
    }

    /// bob hangs up: 200 to his BYE, alice gets the BYE of her dialog and answers 200.
    fn bye_from_bob(&mut self, alice: &mut Ua, bob: &mut Ua) {
        let bye = self.b.request(bob, "BYE");
        assert_status(&bob.request(&bye), 200);
        let got = expect_request(alice, "BYE");
        assert!(self.a.owns(&got.msg), "BYE of another dialog:\n{}", got.msg);
        alice.reply(&got, 200, "OK");
    }

    /// alice sends a re-INVITE (or UPDATE) with `streams`; bob gets it in his dialog and
    /// answers with `answer`; alice gets the 200 (and ACKs it for an INVITE). Returns the SDP
    /// bob and alice received.
    fn renegotiate(
        &mut self,
        alice: &mut Ua,
        bob: &mut Ua,
        how: &str,
        version: u64,
        streams: &[Stream],
        answer_streams: &[Stream],
    ) -> (Sdp, Sdp) {
        let req = self
            .a
            .request(alice, how)
            .body(SDP, sdp::body(version, streams));
        alice.send_req(&req);
        let got = expect_request(bob, how);
        assert!(
            self.b.owns(&got.msg),
            "{how} of another dialog:\n{}",
            got.msg
        );
        let offer = sdp_of(&got.msg);
        assert!(
            offer.version > self.b_seen_version,
            "a changed offer must raise the o= version (RFC 3264 §8): {} after {}",
            offer.version,
            self.b_seen_version
        );
        self.b_seen_version = offer.version;
        answer(bob, &got, 200, "OK", Some((version, answer_streams)));
        let ok = expect_response(alice, &req, 200..=699);
        assert_status(&ok, 200);
        let answer_sdp = sdp_of(&ok);
        if how == "INVITE" {
            alice.send_req(&self.a.ack(alice, req.cseq().expect("CSeq")));
            let ack = expect_request(bob, "ACK");
            assert!(self.b.owns(&ack.msg), "ACK of another dialog:\n{}", ack.msg);
        }
        (offer, answer_sdp)
    }
}

/// cpmd and two registered users.
fn start(args: &[&str]) -> (Cpmd, Ua, Ua) {
    let cpmd = Cpmd::spawn(args);
    let (alice, bob) = users(&cpmd);
    (cpmd, alice, bob)
}

/// alice and bob registered at `cpmd`.
fn users(cpmd: &Cpmd) -> (Ua, Ua) {
    let bob = registered(cpmd, "bob");
    let alice = registered(cpmd, "alice");
    (alice, bob)
}

/// alice calls bob, [`N`] packets each way are relayed exactly (and counted by cpmd, none
/// dropped), alice hangs up, and nothing is left held; the call, for its records.
fn relayed_call(cpmd: &Cpmd, alice: &mut Ua, bob: &mut Ua) -> Call {
    let relayed = cpmd.metric("cpm_media_packets_relayed_total");
    let mut call = Call::setup(cpmd, alice, bob);
    assert_held(cpmd, 1.0, 1.0);
    call.talk(N);
    cpmd.wait_metric("cpm_media_packets_relayed_total", WAIT, |v| {
        v == relayed + 2.0 * N as f64
    });
    assert_eq!(cpmd.metric("cpm_media_dropped_total"), 0.0, "media dropped");
    call.bye_from_alice(alice, bob);
    assert_released(cpmd);
    call
}

// ---- 1. the basic call -----------------------------------------------------------------------

/// INVITE/180/200/ACK through the B2BUA, RTP both ways through cpmd's ports, BYE from alice;
/// then nothing held, and a start and a stop record with the packet counts.
#[test]
fn basic_call() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    // Both workers' media loops on the default path.
    cpmd.wait_metric("cpm_media_loops{io=\"io_uring\"}", WAIT, |v| v == 2.0);
    let call = relayed_call(&cpmd, &mut alice, &mut bob);

    let start = cpmd.wait_cdr(call.call_id(), "start", WAIT);
    assert_eq!(start["final_status"], 200, "{start}");
    assert!(
        start["from"].as_str().is_some_and(|f| f.contains("alice")),
        "{start}"
    );
    assert!(
        start["to"].as_str().is_some_and(|t| t.contains("bob")),
        "{start}"
    );
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "bye-caller", "{stop}");
    let legs = stop["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 1, "{stop}");
    assert_eq!(legs[0]["media"], "audio", "{stop}");
    for dir in ["from_a", "from_b"] {
        assert_eq!(legs[0][dir]["packets"], N, "{dir} in {stop}");
        assert_eq!(legs[0][dir]["bytes"], N * 172, "{dir} in {stop}");
        assert_eq!(legs[0][dir]["lost"], 0, "{dir} in {stop}");
    }
}

/// The basic call where the kernel refuses io_uring (a seccomp filter, as in a container whose
/// profile denies it): cpmd says so in its log, its media loops run on epoll (`/metrics`), and
/// the call's RTP is relayed exactly, both ways, as on the default path.
#[test]
fn without_io_uring_the_media_falls_back_to_epoll() {
    let cpmd = Cpmd::builder().without_io_uring().spawn();
    cpmd.wait_metric("cpm_media_loops{io=\"epoll\"}", WAIT, |v| v == 2.0);
    assert_eq!(cpmd.metric("cpm_media_loops{io=\"io_uring\"}"), 0.0);
    assert!(
        cpmd.log()
            .contains("io_uring unavailable: the media loop uses epoll"),
        "no warning in the log:\n{}",
        cpmd.log()
    );
    let (mut alice, mut bob) = users(&cpmd);
    relayed_call(&cpmd, &mut alice, &mut bob);
}

// ---- 2. BYE from the callee ------------------------------------------------------------------

#[test]
fn bye_from_callee() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    call.talk(10);
    call.bye_from_bob(&mut alice, &mut bob);
    assert_released(&cpmd);
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "bye-callee", "{stop}");
    assert_eq!(stop["legs"][0]["from_b"]["packets"], 10, "{stop}");
    // The relay is gone with the session.
    call.a_rtp.send(call.a_facing, 3, PCMA);
    assert_no_rtp(&cpmd, &call.b_rtp, "media after the BYE");
}

// ---- 3. CANCEL before the answer -------------------------------------------------------------

/// alice CANCELs after the 180: 200 to the CANCEL and 487 to her INVITE; bob's INVITE is
/// CANCELled (RFC 3261 §9) and his 487 ACKed; the offer's ports go back to the pool.
#[test]
fn cancel_before_answer() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let a_rtp = RtpEndpoint::bind();
    let invite = invite(&mut alice, &[Stream::audio(a_rtp.port())]);
    let inv = expect_request(&mut bob, "INVITE");
    answer(&mut bob, &inv, 180, "Ringing", None);
    let ringing = expect_response(&mut alice, &invite, 101..=199);
    assert_status(&ringing, 180);
    assert_held(&cpmd, 1.0, 1.0);

    let cancel = alice.cancel_req(&invite);
    alice.send_req(&cancel);
    let ok = expect_response(&mut alice, &cancel, 200..=699);
    assert_status(&ok, 200);
    // §9.2: the 200 to the CANCEL carries the To tag of the INVITE's responses.
    let tag = |m: &Message| header(m, "To").and_then(|t| param(&t, "tag").map(String::from));
    assert_eq!(tag(&ok), tag(&ringing), "To tag of the 200 to the CANCEL");
    let terminated = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&terminated, 487);
    assert_eq!(tag(&terminated), tag(&ringing), "To tag of the 487");
    alice.ack(&invite, &terminated);

    let got = expect_request(&mut bob, "CANCEL");
    // §9.1: the CANCEL matches bob's INVITE: same Call-ID, CSeq number and top Via branch.
    for name in ["Call-ID", "From"] {
        assert_eq!(header(&got.msg, name), header(&inv.msg, name), "{name}");
    }
    let branch = |m: &Message| header(m, "Via").and_then(|v| param(&v, "branch").map(String::from));
    assert_eq!(branch(&got.msg), branch(&inv.msg), "CANCEL branch");
    assert_eq!(
        header(&got.msg, "CSeq").and_then(|c| c.split_whitespace().next().map(String::from)),
        header(&inv.msg, "CSeq").and_then(|c| c.split_whitespace().next().map(String::from)),
        "CANCEL CSeq number"
    );
    bob.reply(&got, 200, "OK");
    bob.reply(&inv, 487, "Request Terminated");
    // §17.1.1.3: the ACK of a non-2xx is hop-by-hop, on the INVITE's branch.
    let ack = expect_request(&mut bob, "ACK");
    assert_eq!(branch(&ack.msg), branch(&inv.msg), "ACK branch");
    assert_released(&cpmd);
    bob.expect_silence(Duration::from_millis(300), "anything after the CANCEL");
}

/// bob is busy: his 486 reaches alice (our To tag), both ACKs are hop-by-hop, the offer's ports
/// go back, and the stop record says why.
#[test]
fn callee_busy_is_relayed() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let a_rtp = RtpEndpoint::bind();
    let invite = invite(&mut alice, &[Stream::audio(a_rtp.port())]);
    let inv = expect_request(&mut bob, "INVITE");
    bob.reply(&inv, 486, "Busy Here");
    let resp = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&resp, 486);
    assert_eq!(
        cpm_tests::reason(&resp),
        "Busy Here",
        "reason phrase relayed"
    );
    alice.ack(&invite, &resp);
    expect_request(&mut bob, "ACK");
    assert_released(&cpmd);
    let call_id = invite.get("Call-ID").unwrap();
    let stop = cpmd.wait_cdr(call_id, "stop", WAIT);
    assert_eq!(stop["final_status"], 486, "{stop}");
    assert!(
        !cpmd
            .cdrs()
            .iter()
            .any(|r| r["call_id"] == call_id && r["record"] == "start"),
        "a start record for a call never answered"
    );
}

// ---- 4. forking to two contacts --------------------------------------------------------------

/// bob has two contacts: both get the INVITE, the first 200 wins, the other contact is
/// CANCELled; alice sees one 200, and only the winner carries media and gets the BYE.
#[test]
fn forking_to_two_contacts() {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob1 = registered(&cpmd, "bob");
    let mut bob2 = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    let mut a_rtp = RtpEndpoint::bind();
    let mut b1_rtp = RtpEndpoint::bind();
    let b2_rtp = RtpEndpoint::bind();
    let invite = invite(&mut alice, &[Stream::audio(a_rtp.port())]);
    let inv1 = expect_request(&mut bob1, "INVITE");
    let inv2 = expect_request(&mut bob2, "INVITE");
    assert_b2bua_invite(&cpmd, &invite, &inv1, &bob1);
    assert_b2bua_invite(&cpmd, &invite, &inv2, &bob2);
    // One B-side request forked: one Call-ID and From tag, two branches, one relay leg.
    for name in ["Call-ID", "From"] {
        assert_eq!(header(&inv1.msg, name), header(&inv2.msg, name), "{name}");
    }
    assert_ne!(
        header(&inv1.msg, "Via"),
        header(&inv2.msg, "Via"),
        "branches"
    );
    let b_facing = sdp_of(&inv1.msg).rtp_addr(0);
    assert_eq!(
        sdp_of(&inv2.msg).rtp_addr(0),
        b_facing,
        "one leg for both forks"
    );
    assert_held(&cpmd, 1.0, 1.0);

    answer(&mut bob1, &inv1, 180, "Ringing", None);
    answer(&mut bob2, &inv2, 180, "Ringing", None);
    assert_status(&expect_response(&mut alice, &invite, 101..=199), 180);
    answer(
        &mut bob1,
        &inv1,
        200,
        "OK",
        Some((1, &[Stream::audio(b1_rtp.port())])),
    );
    let ok = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&ok, 200);
    let a_facing = sdp_of(&ok).rtp_addr(0);
    let mut a = Dialog::uac(&invite, &ok);
    alice.send_req(&a.ack(&alice, invite.cseq().unwrap()));
    let b = Dialog::uas(&inv1.msg, bob1.tag());
    assert!(b.owns(&expect_request(&mut bob1, "ACK").msg));

    let cancel = expect_request(&mut bob2, "CANCEL");
    bob2.reply(&cancel, 200, "OK");
    bob2.reply(&inv2, 487, "Request Terminated");
    expect_request(&mut bob2, "ACK");
    // One final response reached alice (the 200, retransmitted at most, never another).
    if let Some(m) = alice.recv(Duration::from_millis(300)) {
        assert!(
            m.status() == Some(200) && header(&m, "To") == header(&ok, "To"),
            "alice got more than the one 200:\n{m}"
        );
    }

    relay_one_way(&mut a_rtp, a_facing, &b1_rtp, b_facing, N, PCMA);
    relay_one_way(&mut b1_rtp, b_facing, &a_rtp, a_facing, N, PCMA);
    assert_no_rtp(&cpmd, &b2_rtp, "the losing contact");

    let bye = a.request(&alice, "BYE");
    assert_status(&alice.request(&bye), 200);
    let got = expect_request(&mut bob1, "BYE");
    assert!(b.owns(&got.msg));
    bob1.reply(&got, 200, "OK");
    bob2.expect_silence(Duration::from_millis(300), "a BYE to the losing contact");
    assert_released(&cpmd);
}

/// Both contacts answer (bob2's 200 crosses cpmd's CANCEL): the first 200 wins; the second is
/// ACKed and ended with a BYE (RFC 3261 §13.2.2.4 for a UAC that wants one dialog), and alice
/// sees one 200 only.
#[test]
fn forking_second_200_is_acked_and_byed() {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob1 = registered(&cpmd, "bob");
    let mut bob2 = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    let invite = invite(&mut alice, &[Stream::audio(9)]);
    let inv1 = expect_request(&mut bob1, "INVITE");
    let inv2 = expect_request(&mut bob2, "INVITE");
    // A provisional first: cpmd may CANCEL bob2's branch only then (RFC 3261 §9.1).
    answer(&mut bob2, &inv2, 180, "Ringing", None);
    answer(&mut bob1, &inv1, 200, "OK", Some((1, &[Stream::audio(9)])));
    let ok = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&ok, 200);
    let mut a = Dialog::uac(&invite, &ok);
    alice.send_req(&a.ack(&alice, invite.cseq().unwrap()));
    expect_request(&mut bob1, "ACK");

    let cancel = expect_request(&mut bob2, "CANCEL");
    bob2.reply(&cancel, 200, "OK");
    answer(&mut bob2, &inv2, 200, "OK", Some((1, &[Stream::audio(9)])));
    let b2 = Dialog::uas(&inv2.msg, bob2.tag());
    let ack = expect_request(&mut bob2, "ACK");
    assert!(b2.owns(&ack.msg), "ACK of another dialog:\n{}", ack.msg);
    let bye = expect_request(&mut bob2, "BYE");
    assert!(b2.owns(&bye.msg), "BYE of another dialog:\n{}", bye.msg);
    bob2.reply(&bye, 200, "OK");
    assert_no_request(&mut alice, "anything from the second 200");
    assert_held(&cpmd, 1.0, 1.0);

    let bye = a.request(&alice, "BYE");
    assert_status(&alice.request(&bye), 200);
    let got = expect_request(&mut bob1, "BYE");
    bob1.reply(&got, 200, "OK");
    assert_released(&cpmd);
}

/// An INVITE without SDP (late offer, RFC 3264 via RFC 3261 §13.2.1): bob's offer comes in his
/// 200, alice's answer in her ACK, each rewritten to cpmd's ports; media flows both ways.
#[test]
fn late_offer() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut a_rtp = RtpEndpoint::bind();
    let mut b_rtp = RtpEndpoint::bind();
    let contact = format!("<{}>", alice.contact_uri());
    let invite = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", contact);
    alice.send_req(&invite);
    let inv = expect_request(&mut bob, "INVITE");
    assert!(inv.msg.body.is_empty(), "an offer appeared:\n{}", inv.msg);
    answer(
        &mut bob,
        &inv,
        200,
        "OK",
        Some((1, &[Stream::audio(b_rtp.port())])),
    );
    let ok = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&ok, 200);
    let offer = sdp_of(&ok);
    assert_anchored(&cpmd, &offer, &[b_rtp.port()]);
    let a_facing = offer.rtp_addr(0);
    let a = Dialog::uac(&invite, &ok);
    let ack = a.ack(&alice, invite.cseq().unwrap()).body(
        SDP,
        sdp::body(1, &[Stream::audio(a_rtp.port()).formats(&[PCMA])]),
    );
    alice.send_req(&ack);
    let got = expect_request(&mut bob, "ACK");
    let answer_sdp = sdp_of(&got.msg);
    assert_eq!(answer_sdp.media[0].formats, ["8"], "{answer_sdp:?}");
    assert_anchored(&cpmd, &answer_sdp, &[a_rtp.port(), a_facing.port()]);
    let b_facing = answer_sdp.rtp_addr(0);
    assert_held(&cpmd, 1.0, 1.0);
    relay_one_way(&mut a_rtp, a_facing, &b_rtp, b_facing, N, PCMA);
    relay_one_way(&mut b_rtp, b_facing, &a_rtp, a_facing, N, PCMA);
    let mut b = Dialog::uas(&inv.msg, bob.tag());
    let bye = b.request(&bob, "BYE");
    assert_status(&bob.request(&bye), 200);
    let got = expect_request(&mut alice, "BYE");
    alice.reply(&got, 200, "OK");
    assert_released(&cpmd);
}

// ---- 5. re-INVITE adding video ---------------------------------------------------------------

/// alice adds a video stream: bob's re-INVITE has two m-lines on cpmd's ports (audio's port
/// unchanged, video on a new one), and video is relayed both ways on its own leg.
#[test]
fn reinvite_adds_video() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    let mut a_video = RtpEndpoint::bind();
    let mut b_video = RtpEndpoint::bind();
    let (offer, answer_sdp) = call.renegotiate(
        &mut alice,
        &mut bob,
        "INVITE",
        2,
        &[
            Stream::audio(call.a_rtp.port()),
            Stream::video(a_video.port()),
        ],
        &[
            Stream::audio(call.b_rtp.port()).formats(&[PCMA]),
            Stream::video(b_video.port()),
        ],
    );
    assert_eq!(offer.media.len(), 2, "{offer:?}");
    assert_eq!(offer.media[1].kind, "video");
    assert_anchored(&cpmd, &offer, &[call.a_rtp.port(), a_video.port()]);
    assert_eq!(
        offer.rtp_addr(0),
        call.b_facing,
        "audio port toward bob moved"
    );
    let b_video_facing = offer.rtp_addr(1);
    assert_ne!(b_video_facing.port(), call.b_facing.port());
    assert_eq!(answer_sdp.media.len(), 2, "{answer_sdp:?}");
    assert_anchored(
        &cpmd,
        &answer_sdp,
        &[
            call.b_rtp.port(),
            b_video.port(),
            call.b_facing.port(),
            b_video_facing.port(),
        ],
    );
    assert_eq!(
        answer_sdp.rtp_addr(0),
        call.a_facing,
        "audio port toward alice moved"
    );
    let a_video_facing = answer_sdp.rtp_addr(1);
    assert_ne!(a_video_facing.port(), call.a_facing.port());
    assert_held(&cpmd, 1.0, 2.0);

    relay_one_way(
        &mut a_video,
        a_video_facing,
        &b_video,
        b_video_facing,
        N,
        H264,
    );
    relay_one_way(
        &mut b_video,
        b_video_facing,
        &a_video,
        a_video_facing,
        N,
        H264,
    );
    call.talk(5);
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    let video = stop["legs"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["media"] == "video"))
        .unwrap_or_else(|| panic!("no video leg in {stop}"));
    assert_eq!(video["from_a"]["packets"], N, "{stop}");
    assert_eq!(video["from_b"]["packets"], N, "{stop}");
}

/// bob refuses a re-INVITE adding video (488): alice gets the 488, the offer is rolled back
/// (RFC 3264 §8, RFC 6337): the video leg's ports return and audio flows on as before.
#[test]
fn rejected_reinvite_rolls_back() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    let streams = [
        Stream::audio(call.a_rtp.port()),
        Stream::video(RtpEndpoint::bind().port()),
    ];
    let req = call
        .a
        .request(&alice, "INVITE")
        .body(SDP, sdp::body(2, &streams));
    alice.send_req(&req);
    let got = expect_request(&mut bob, "INVITE");
    assert!(call.b.owns(&got.msg));
    assert_held(&cpmd, 1.0, 2.0);
    bob.reply(&got, 488, "Not Acceptable Here");
    let resp = expect_response(&mut alice, &req, 200..=699);
    assert_status(&resp, 488);
    alice.ack(&req, &resp);
    expect_request(&mut bob, "ACK");
    assert_held(&cpmd, 1.0, 1.0);
    call.talk(N);
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

// ---- 6. hold and resume ----------------------------------------------------------------------

/// Hold (a=sendonly, answered a=recvonly) and resume (a=sendrecv): each re-INVITE relayed with
/// its direction as sent and the ports unchanged; media flows again after the resume.
#[test]
fn hold_and_resume() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    let (a_port, b_port) = (call.a_rtp.port(), call.b_rtp.port());
    for (version, offered, answered) in [(2, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")] {
        let (offer, answer_sdp) = call.renegotiate(
            &mut alice,
            &mut bob,
            "INVITE",
            version,
            &[Stream::audio(a_port).direction(offered)],
            &[Stream::audio(b_port).formats(&[PCMA]).direction(answered)],
        );
        assert_eq!(offer.media[0].direction(), offered, "{offer:?}");
        assert_eq!(
            offer.rtp_addr(0),
            call.b_facing,
            "port toward bob on {offered}"
        );
        assert_eq!(answer_sdp.media[0].direction(), answered, "{answer_sdp:?}");
        assert_eq!(
            answer_sdp.rtp_addr(0),
            call.a_facing,
            "port toward alice on {offered}"
        );
        assert_held(&cpmd, 1.0, 1.0);
        if offered == "sendonly" {
            // On hold, alice still sends (music on hold) and bob receives it.
            let (a_facing, b_facing) = (call.a_facing, call.b_facing);
            relay_one_way(&mut call.a_rtp, a_facing, &call.b_rtp, b_facing, 10, PCMA);
        }
    }
    call.talk(N);
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

/// Glare (RFC 3261 §14.2): bob's re-INVITE while alice's is still with him gets 491; alice's
/// completes, and bob's retry then goes through to alice, the ports unchanged.
#[test]
fn reinvite_glare_is_491() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    let (a_port, b_port) = (call.a_rtp.port(), call.b_rtp.port());
    let hold = call.a.request(&alice, "INVITE").body(
        SDP,
        sdp::body(2, &[Stream::audio(a_port).direction("sendonly")]),
    );
    alice.send_req(&hold);
    let alices = expect_request(&mut bob, "INVITE");
    assert!(call.b.owns(&alices.msg));

    let bobs = call
        .b
        .request(&bob, "INVITE")
        .body(SDP, sdp::body(2, &[Stream::audio(b_port).formats(&[PCMA])]));
    bob.send_req(&bobs);
    let glare = expect_response(&mut bob, &bobs, 200..=699);
    assert_status(&glare, 491);
    bob.ack(&bobs, &glare);
    assert_no_request(&mut alice, "bob's re-INVITE during glare");

    let held = [Stream::audio(b_port).formats(&[PCMA]).direction("recvonly")];
    answer(&mut bob, &alices, 200, "OK", Some((2, &held)));
    let ok = expect_response(&mut alice, &hold, 200..=699);
    assert_status(&ok, 200);
    assert_eq!(sdp_of(&ok).media[0].direction(), "recvonly");
    alice.send_req(&call.a.ack(&alice, hold.cseq().unwrap()));
    expect_request(&mut bob, "ACK");

    // bob's retry: now it reaches alice.
    let retry = call
        .b
        .request(&bob, "INVITE")
        .body(SDP, sdp::body(3, &[Stream::audio(b_port).formats(&[PCMA])]));
    bob.send_req(&retry);
    let got = expect_request(&mut alice, "INVITE");
    assert!(
        call.a.owns(&got.msg),
        "re-INVITE of another dialog:\n{}",
        got.msg
    );
    let offer = sdp_of(&got.msg);
    assert_eq!(offer.rtp_addr(0), call.a_facing, "port toward alice moved");
    answer(
        &mut alice,
        &got,
        200,
        "OK",
        Some((3, &[Stream::audio(a_port).formats(&[PCMA])])),
    );
    let ok = expect_response(&mut bob, &retry, 200..=699);
    assert_status(&ok, 200);
    assert_eq!(
        sdp_of(&ok).rtp_addr(0),
        call.b_facing,
        "port toward bob moved"
    );
    bob.send_req(&call.b.ack(&bob, retry.cseq().unwrap()));
    let ack = expect_request(&mut alice, "ACK");
    assert!(call.a.owns(&ack.msg));
    assert_held(&cpmd, 1.0, 1.0);
    call.talk(N);
    call.bye_from_bob(&mut alice, &mut bob);
    assert_released(&cpmd);
}

// ---- 7. UPDATE -------------------------------------------------------------------------------

/// UPDATE (RFC 3311) in the confirmed dialog: alice moves her media to a new socket and keeps
/// PCMA only; bob's UPDATE carries the new codec list on the same relay port, and the media
/// follows alice to her new address (the relay unlatches the old one).
#[test]
fn update_changes_media() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    call.talk(10);
    let moved = RtpEndpoint::bind();
    let (offer, answer_sdp) = call.renegotiate(
        &mut alice,
        &mut bob,
        "UPDATE",
        2,
        &[Stream::audio(moved.port()).formats(&[PCMA])],
        &[Stream::audio(call.b_rtp.port()).formats(&[PCMA])],
    );
    assert_eq!(offer.media[0].formats, ["8"], "{offer:?}");
    assert_eq!(offer.rtp_addr(0), call.b_facing, "{offer:?}");
    assert_eq!(answer_sdp.media[0].formats, ["8"], "{answer_sdp:?}");
    assert_eq!(answer_sdp.rtp_addr(0), call.a_facing, "{answer_sdp:?}");
    let old = std::mem::replace(&mut call.a_rtp, moved);
    call.talk(N);
    assert_no_rtp(&cpmd, &old, "alice's old media address");
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

// ---- 8. OPTIONS in the dialog, 481 outside ---------------------------------------------------

/// OPTIONS inside the dialog is relayed both ways with its answer; a BYE of no dialog gets 481
/// (RFC 3261 §12.2.2), whether its Call-ID is unknown or only its tags are wrong.
#[test]
fn in_dialog_options_and_481() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);

    let opts = call.a.request(&alice, "OPTIONS");
    alice.send_req(&opts);
    let got = expect_request(&mut bob, "OPTIONS");
    assert!(
        call.b.owns(&got.msg),
        "OPTIONS of another dialog:\n{}",
        got.msg
    );
    bob.reply_with(&got, 200, "OK", &[("Accept", SDP)], None);
    let ok = expect_response(&mut alice, &opts, 200..=699);
    assert_status(&ok, 200);
    assert_eq!(
        header(&ok, "Accept").as_deref(),
        Some(SDP),
        "Accept relayed:\n{ok}"
    );

    let opts = call.b.request(&bob, "OPTIONS");
    bob.send_req(&opts);
    let got = expect_request(&mut alice, "OPTIONS");
    assert!(
        call.a.owns(&got.msg),
        "OPTIONS of another dialog:\n{}",
        got.msg
    );
    alice.reply(&got, 200, "OK");
    assert_status(&expect_response(&mut bob, &opts, 200..=699), 200);

    let mut stranger = call.a.clone();
    stranger.call_id = format!("{}@127.0.0.1", cpm_tests::util::token());
    let bye = stranger.request(&alice, "BYE");
    assert_status(&alice.request(&bye), 481);
    let mut wrong_tag = call.a.clone();
    wrong_tag.remote = "<sip:bob@localhost>;tag=nosuchtag".into();
    let bye = wrong_tag.request(&alice, "BYE");
    assert_status(&alice.request(&bye), 481);
    bob.expect_silence(Duration::from_millis(300), "a BYE of no dialog");
    assert_held(&cpmd, 1.0, 1.0);
    call.talk(5);
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

// ---- 9. media inactivity ---------------------------------------------------------------------

/// Both sides get a BYE of their dialog (answered 200) between `min` and `max` after `since`.
fn expect_byes_from_cpmd(
    call: &Call,
    alice: &mut Ua,
    bob: &mut Ua,
    since: Instant,
    min: Duration,
    max: Duration,
) {
    for (ua, dialog) in [(alice, &call.a), (bob, &call.b)] {
        let got = ua
            .recv_request(max.saturating_sub(since.elapsed()))
            .unwrap_or_else(|| panic!("no BYE at {} within {max:?}", ua.aor()));
        assert_eq!(method(&got.msg), "BYE", "got:\n{}", got.msg);
        assert!(dialog.owns(&got.msg), "BYE of another dialog:\n{}", got.msg);
        ua.reply(&got, 200, "OK");
    }
    let after = since.elapsed();
    assert!(after >= min, "BYE {after:?} after, before the timeout");
}

/// With `--media-timeout 2` and no RTP at all after the ACK, both sides get a BYE about 2 s
/// later (within ~3 s) and everything is released.
#[test]
fn media_inactivity_without_rtp() {
    let (cpmd, mut alice, mut bob) = start(&["--media-timeout", "2"]);
    let call = Call::setup(&cpmd, &mut alice, &mut bob);
    let acked = Instant::now();
    expect_byes_from_cpmd(
        &call,
        &mut alice,
        &mut bob,
        acked,
        Duration::from_millis(1500),
        Duration::from_millis(3500),
    );
    assert_released(&cpmd);
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "media-inactive", "{stop}");
}

/// With `--media-timeout 2`, media that flows keeps the session past the timeout; once it
/// stops, both sides get a BYE about 2 s later.
#[test]
fn media_inactivity_after_media_stops() {
    let (cpmd, mut alice, mut bob) = start(&["--media-timeout", "2"]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    // 3 s of sparse media (longer than the timeout): no BYE.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        call.talk(1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = Instant::now();
    for ua in [&mut alice, &mut bob] {
        assert_no_request(ua, "a request while media flowed");
    }
    expect_byes_from_cpmd(
        &call,
        &mut alice,
        &mut bob,
        stopped,
        Duration::from_millis(1500),
        Duration::from_secs(4),
    );
    assert_released(&cpmd);
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "media-inactive", "{stop}");
}

// ---- 10. bad input ---------------------------------------------------------------------------

/// An SDP offer that does not parse: 400 naming the problem, nothing forwarded, nothing held.
/// (No 488 test: cpmd has no codec policy option, so every codec is allowed.)
#[test]
fn unparsable_sdp_is_400() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let req = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", format!("<{}>", alice.contact_uri()))
        .body(SDP, "v=0\r\nthis is not SDP\r\n");
    let resp = alice.request(&req);
    assert_status(&resp, 400);
    assert!(
        cpm_tests::reason(&resp).contains("SDP"),
        "reason does not name SDP:\n{resp}"
    );
    alice.ack(&req, &resp);
    bob.expect_silence(Duration::from_millis(300), "an INVITE with a bad offer");
    assert_released(&cpmd);
}

/// cpmd allows only PCMU (`--codecs PCMU`): an offer of PCMA alone leaves no stream, 488
/// (RFC 3264 §6, RFC 3261 §21.4.26) and bob hears nothing; an offer of PCMU and PCMA reaches
/// bob with PCMA and its rtpmap removed.
#[test]
fn codecs_outside_the_allowed_list_are_refused_488() {
    let (cpmd, mut alice, mut bob) = start(&["--codecs", "PCMU"]);
    let req = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", format!("<{}>", alice.contact_uri()))
        .body(SDP, sdp::body(1, &[Stream::audio(9).formats(&[8])]));
    let resp = alice.request(&req);
    assert_status(&resp, 488);
    alice.ack(&req, &resp);
    bob.expect_silence(
        Duration::from_millis(300),
        "an INVITE without an allowed codec",
    );
    assert_released(&cpmd);
    let _call = invite(&mut alice, &[Stream::audio(9).formats(&[0, 8])]);
    let inv = expect_request(&mut bob, "INVITE");
    let body = String::from_utf8_lossy(&inv.msg.body).to_string();
    let m_line = body
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("m=audio");
    assert!(m_line.ends_with("RTP/AVP 0"), "{body}");
    assert!(!body.contains("PCMA"), "{body}");
}

/// bob answers an offer with a 200 without SDP (RFC 3264 §5: the answer must come in the
/// 2xx): nothing can be relayed, so bob's dialog is ACKed and ended with a BYE, and alice gets
/// 488 (RFC 3261 §21.4.26).
#[test]
fn answer_without_sdp_is_488() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let invite = invite(&mut alice, &[Stream::audio(9)]);
    let inv = expect_request(&mut bob, "INVITE");
    answer(&mut bob, &inv, 200, "OK", None);
    let b = Dialog::uas(&inv.msg, bob.tag());
    let ack = expect_request(&mut bob, "ACK");
    assert!(b.owns(&ack.msg));
    let bye = expect_request(&mut bob, "BYE");
    assert!(b.owns(&bye.msg));
    bob.reply(&bye, 200, "OK");
    let resp = expect_response(&mut alice, &invite, 200..=699);
    assert_status(&resp, 488);
    alice.ack(&invite, &resp);
    assert_released(&cpmd);
}

/// A pool of 4 ports (one worker) holds one leg: a second concurrent call gets 503 with
/// Retry-After (and a log line); once the first ends, its ports serve the next call.
#[test]
fn exhausted_port_pool_is_503() {
    let cpmd = Cpmd::builder()
        .media_ports(4)
        .args(&["--workers", "1"])
        .spawn();
    let mut bob = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    let mut first = Call::setup(&cpmd, &mut alice, &mut bob);
    assert_held(&cpmd, 1.0, 1.0);

    let a_rtp = RtpEndpoint::bind();
    let req = invite(&mut alice, &[Stream::audio(a_rtp.port())]);
    let resp = expect_response(&mut alice, &req, 200..=699);
    assert_status(&resp, 503);
    let retry = header(&resp, "Retry-After").unwrap_or_else(|| panic!("no Retry-After:\n{resp}"));
    assert!(retry.trim().parse::<u32>().is_ok(), "Retry-After {retry:?}");
    alice.ack(&req, &resp);
    bob.expect_silence(Duration::from_millis(300), "an INVITE without ports");
    assert!(
        cpmd.log().contains("exhausted"),
        "no log line for the exhausted pool:\n{}",
        cpmd.log()
    );
    first.talk(5);

    first.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
    let mut next = Call::setup(&cpmd, &mut alice, &mut bob);
    next.talk(5);
    next.bye_from_bob(&mut alice, &mut bob);
    assert_released(&cpmd);
}

/// cpmd out of file descriptors (`prlimit --nofile`, a hard limit it cannot raise): the call
/// that finds no descriptor for its relay sockets gets 503 with Retry-After at once, with a
/// log line naming the cause, and no other port is tried (no port is at fault); the calls
/// up then carry media, and once two end the next call is set up and relayed again.
#[test]
fn out_of_descriptors_is_503_at_once() {
    let cpmd = Cpmd::builder()
        .wrapper(&["prlimit", "--nofile=160:160"])
        .args(&["--workers", "1"])
        .spawn();
    let mut bob = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    let mut calls = Vec::new();
    let (req, resp) = 'refused: loop {
        assert!(calls.len() < 40, "no 503 after {} calls", calls.len());
        let a_rtp = RtpEndpoint::bind();
        let req = invite(&mut alice, &[Stream::audio(a_rtp.port())]);
        // Either bob gets the INVITE or alice a final response.
        let deadline = Instant::now() + WAIT;
        let inv = loop {
            if let Some(inv) = bob.recv_request(Duration::from_millis(10)) {
                break inv;
            }
            let tick = Duration::from_millis(10);
            if let Some(resp) = alice.await_response(&req, tick, |c| c >= 200) {
                break 'refused (req, resp);
            }
            assert!(
                Instant::now() < deadline,
                "no INVITE at bob, no answer to alice"
            );
        };
        // Set up by hand (Call::setup checks more, and sends no INVITE that may fail).
        assert_eq!(method(&inv.msg), "INVITE");
        let b_rtp = RtpEndpoint::bind();
        let offer = sdp_of(&inv.msg);
        let b_facing = offer.rtp_addr(0);
        let audio = [Stream::audio(b_rtp.port()).formats(&[PCMA])];
        answer(&mut bob, &inv, 200, "OK", Some((1, &audio)));
        let ok = expect_response(&mut alice, &req, 200..=699);
        assert_status(&ok, 200);
        let a = Dialog::uac(&req, &ok);
        alice.send_req(&a.ack(&alice, req.cseq().expect("CSeq")));
        expect_request(&mut bob, "ACK");
        calls.push(Call {
            a_facing: sdp_of(&ok).rtp_addr(0),
            b: Dialog::uas(&inv.msg, bob.tag()),
            invite: req,
            a,
            a_rtp,
            b_rtp,
            b_facing,
            b_seen_version: offer.version,
        });
    };
    assert_status(&resp, 503);
    let retry = header(&resp, "Retry-After").unwrap_or_else(|| panic!("no Retry-After:\n{resp}"));
    assert!(retry.trim().parse::<u32>().is_ok(), "Retry-After {retry:?}");
    alice.ack(&req, &resp);
    let log = cpmd.log();
    assert!(
        log.contains("cannot open relay sockets: session refused with 503")
            && log.contains("Too many open files"),
        "no log line naming the cause:\n{log}"
    );
    assert!(
        !log.contains("offer planned again"),
        "other ports were tried for a descriptor shortage:\n{log}"
    );
    assert!(
        calls.len() >= 2,
        "only {} calls before the limit",
        calls.len()
    );
    // The calls that are up relay; two end, and their descriptors serve a new call.
    calls[0].talk(5);
    for mut call in calls.drain(..2) {
        call.bye_from_alice(&mut alice, &mut bob);
    }
    cpmd.wait_metric("cpm_media_legs", WAIT, |v| v == calls.len() as f64);
    let mut next = Call::setup(&cpmd, &mut alice, &mut bob);
    next.talk(5);
    next.bye_from_alice(&mut alice, &mut bob);
    for mut call in calls {
        call.bye_from_alice(&mut alice, &mut bob);
    }
    assert_released(&cpmd);
}

/// The UDP sockets bound to local `port` (`/proc/net/udp`), each as whether it is connected.
fn udp_sockets_on(port: u16) -> Vec<bool> {
    let text = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let connected = !f.get(2)?.ends_with(":0000");
            (local == port).then_some(connected)
        })
        .collect()
}

/// Low on descriptors, a latched RTP port stays unconnected: with plenty left it is
/// connected to its source, with a catch-all socket beside it (two descriptors); once relay
/// sockets hold three quarters of cpmd's open-file limit it gets no catch-all, so the last
/// quarter stays for the sockets of new calls, and the media is relayed all the same.
#[test]
fn low_on_descriptors_latched_ports_stay_unconnected() {
    let cpmd = Cpmd::builder()
        .wrapper(&["prlimit", "--nofile=400:400"])
        .media_ports(400)
        .args(&["--workers", "1"])
        .spawn();
    let mut bob = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    // Descriptors that are not relay sockets (listeners, storage, threads' rings).
    let others = cpmd.open_fds();
    let relay_sockets = |cpmd: &Cpmd| cpmd.open_fds().saturating_sub(others);
    let mut calls = vec![Call::setup(&cpmd, &mut alice, &mut bob)];
    calls[0].talk(5);
    for port in [calls[0].a_facing.port(), calls[0].b_facing.port()] {
        let mut sockets = udp_sockets_on(port);
        sockets.sort();
        assert_eq!(
            sockets,
            [false, true],
            "port {port}: a catch-all and the connected socket"
        );
    }
    // Calls without media until relay sockets hold 300 descriptors (three quarters of 400).
    while relay_sockets(&cpmd) < 300 {
        assert!(
            calls.len() < 90,
            "{} descriptors after {} calls",
            cpmd.open_fds(),
            calls.len()
        );
        calls.push(Call::setup(&cpmd, &mut alice, &mut bob));
    }
    let mut last = Call::setup(&cpmd, &mut alice, &mut bob);
    last.talk(5);
    for port in [last.a_facing.port(), last.b_facing.port()] {
        assert_eq!(
            udp_sockets_on(port),
            [false],
            "port {port}: one unconnected socket"
        );
    }
    calls.push(last);
    for mut call in calls {
        call.bye_from_alice(&mut alice, &mut bob);
    }
    assert_released(&cpmd);
}

/// `--media-priority 5`: the media loop threads run under `SCHED_FIFO` at priority 5, nothing
/// is pinned, every other thread keeps the normal scheduler, and calls are relayed; without
/// it, none is real-time and each media loop is pinned to a core.
#[test]
fn media_priority_runs_the_media_loops_real_time() {
    let cpmd = Cpmd::spawn(&["--media-priority", "5"]);
    let threads = cpmd.threads();
    let media: Vec<_> = threads
        .iter()
        .filter(|(name, ..)| name.starts_with("cpm-media"))
        .collect();
    assert_eq!(media.len(), 2, "{threads:?}");
    assert!(
        media
            .iter()
            .all(|&(_, prio, policy)| (*prio, *policy) == (5, 1)),
        "{threads:?}"
    );
    assert!(
        threads
            .iter()
            .filter(|(name, ..)| !name.starts_with("cpm-media"))
            .all(|&(_, _, policy)| policy == 0),
        "{threads:?}"
    );
    // With real-time loops nothing is pinned (pinned, a loop held its core for up to a
    // second on a virtual machine): each loop may run wherever the process may.
    let (cpus, own) = cpmd.cpus_allowed();
    let media_cpus = |cpus: &[(String, String)]| -> Vec<String> {
        cpus.iter()
            .filter(|(name, _)| name.starts_with("cpm-media"))
            .map(|(_, list)| list.clone())
            .collect()
    };
    assert_eq!(
        media_cpus(&cpus),
        vec![own.clone(), own.clone()],
        "{cpus:?}"
    );
    let (mut alice, mut bob) = users(&cpmd);
    relayed_call(&cpmd, &mut alice, &mut bob);

    let plain = Cpmd::spawn(&[]);
    let threads = plain.threads();
    assert!(
        threads.iter().all(|&(_, _, policy)| policy == 0),
        "{threads:?}"
    );
    // On the normal scheduler each loop is pinned to its worker's core (`--pin-workers`).
    let (cpus, own) = plain.cpus_allowed();
    if own.contains([',', '-']) {
        let media = media_cpus(&cpus);
        assert_eq!(media.len(), 2, "{cpus:?}");
        assert!(
            media.iter().all(|l| !l.contains([',', '-'])),
            "one core each: {cpus:?}"
        );
    }
}

/// `--media-priority` where the process may not have it (no `CAP_SYS_NICE`, dropped from its
/// bounding set by `setpriv`, and an `RLIMIT_RTPRIO` of 0): each media loop says so in the log
/// and keeps the normal scheduler, and calls are relayed all the same.
#[test]
fn media_priority_refused_keeps_the_normal_scheduler() {
    let cpmd = Cpmd::builder()
        .wrapper(&[
            "setpriv",
            "--bounding-set=-sys_nice",
            "--inh-caps=-sys_nice",
            "prlimit",
            "--rtprio=0:0",
        ])
        .args(&["--media-priority", "5"])
        .spawn();
    let threads = cpmd.threads();
    assert!(
        threads.iter().all(|&(_, _, policy)| policy == 0),
        "{threads:?}"
    );
    let log = cpmd.log();
    assert_eq!(
        log.matches("media loop keeps the normal scheduler").count(),
        2,
        "one warning per media loop:\n{log}"
    );
    let (mut alice, mut bob) = users(&cpmd);
    relayed_call(&cpmd, &mut alice, &mut bob);
}

/// A relay port another process holds is found while the offer is made, before any SDP names
/// it: the offer is planned again on other ports and the call carries media; the held port is
/// never offered.
#[test]
fn busy_relay_port_is_skipped_before_the_offer() {
    let cpmd = Cpmd::builder()
        .media_ports(8)
        .args(&["--workers", "1"])
        .spawn();
    let ports = cpmd.media_ports();
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", *ports.start()))
        .expect("hold the first relay port");
    let mut bob = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    for port in [call.a_facing.port(), call.b_facing.port()] {
        assert_ne!(port, *ports.start(), "the held port was offered");
    }
    call.talk(5);
    assert!(
        cpmd.log().contains("offer planned again"),
        "no log line for the busy port:\n{}",
        cpmd.log()
    );
    call.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
    drop(squatter);
}

/// A second INVITE with the Call-ID of a session alive but a new From tag is a new dialog
/// (RFC 3261 §12: a dialog is Call-ID plus both tags): it is a call of its own.
///
/// A request without a To tag is outside any dialog (RFC 3261 §12.2, §8.2): sessions are found
/// by Call-ID and the caller's From tag, so carol's INVITE starts a call of its own.
#[test]
fn same_call_id_new_dialog_is_a_new_call() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut first = Call::setup(&cpmd, &mut alice, &mut bob);
    let mut carol = registered(&cpmd, "carol");
    let c_rtp = RtpEndpoint::bind();
    let req = carol
        .req("INVITE", "sip:bob@localhost")
        .set("Call-ID", first.call_id())
        .header("Contact", format!("<{}>", carol.contact_uri()))
        .body(SDP, sdp::body(1, &[Stream::audio(c_rtp.port())]));
    carol.send_req(&req);
    let Some(inv) = bob.recv_request(WAIT) else {
        let resp = carol.await_response(&req, Duration::from_millis(100), |c| c >= 200);
        panic!("bob got no INVITE; carol got:\n{resp:?}");
    };
    assert_eq!(method(&inv.msg), "INVITE", "got:\n{}", inv.msg);
    assert!(
        !first.b.owns(&inv.msg),
        "the new INVITE came in the first call's dialog"
    );
    answer(
        &mut bob,
        &inv,
        200,
        "OK",
        Some((1, &[Stream::audio(RtpEndpoint::bind().port())])),
    );
    let ok = expect_response(&mut carol, &req, 200..=699);
    assert_status(&ok, 200);
    let mut second = Dialog::uac(&req, &ok);
    carol.send_req(&second.ack(&carol, req.cseq().unwrap()));
    expect_request(&mut bob, "ACK");
    assert_held(&cpmd, 2.0, 2.0);
    first.talk(5);

    let bye = second.request(&carol, "BYE");
    assert_status(&carol.request(&bye), 200);
    let got = expect_request(&mut bob, "BYE");
    bob.reply(&got, 200, "OK");
    first.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

/// Once a call has ended, its Call-ID may start a new one (the routes of the old session are
/// gone).
#[test]
fn call_id_of_an_ended_call_can_be_reused() {
    let (cpmd, mut alice, mut bob) = start(&[]);
    let mut first = Call::setup(&cpmd, &mut alice, &mut bob);
    first.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
    let mut carol = registered(&cpmd, "carol");
    let req = carol
        .req("INVITE", "sip:bob@localhost")
        .set("Call-ID", first.call_id())
        .header("Contact", format!("<{}>", carol.contact_uri()))
        .body(SDP, sdp::body(1, &[Stream::audio(9)]));
    carol.send_req(&req);
    let inv = expect_request(&mut bob, "INVITE");
    assert!(
        !first.b.owns(&inv.msg),
        "the old dialog's INVITE:\n{}",
        inv.msg
    );
    answer(&mut bob, &inv, 200, "OK", Some((1, &[Stream::audio(9)])));
    let ok = expect_response(&mut carol, &req, 200..=699);
    assert_status(&ok, 200);
    let mut d = Dialog::uac(&req, &ok);
    carol.send_req(&d.ack(&carol, req.cseq().unwrap()));
    expect_request(&mut bob, "ACK");
    assert_held(&cpmd, 1.0, 1.0);
    let bye = d.request(&carol, "BYE");
    assert_status(&carol.request(&bye), 200);
    let got = expect_request(&mut bob, "BYE");
    bob.reply(&got, 200, "OK");
    assert_released(&cpmd);
}

// ---- 11. resources under volume --------------------------------------------------------------

/// One short call without RTP: INVITE, 200, ACK, BYE.
fn short_call(alice: &mut Ua, bob: &mut Ua) {
    let invite = invite(alice, &[Stream::audio(9)]);
    let inv = expect_request(bob, "INVITE");
    answer(bob, &inv, 200, "OK", Some((1, &[Stream::audio(9)])));
    let ok = expect_response(alice, &invite, 200..=699);
    assert_status(&ok, 200);
    let mut a = Dialog::uac(&invite, &ok);
    alice.send_req(&a.ack(alice, invite.cseq().unwrap()));
    expect_request(bob, "ACK");
    let bye = a.request(alice, "BYE");
    alice.send_req(&bye);
    let got = expect_request(bob, "BYE");
    bob.reply(&got, 200, "OK");
    assert_status(&expect_response(alice, &bye, 200..=699), 200);
}

/// The next message at `ua` within `WAIT` (panics naming `what` when none comes).
fn next(ua: &mut Ua, what: &str) -> Message {
    ua.recv(WAIT)
        .unwrap_or_else(|| panic!("{} waited {WAIT:?} for {what}", ua.aor()))
}

/// 200 sequential calls, then 50 at once: afterwards no session, leg or port remains, and
/// every answered call has its start and stop records.
#[test]
fn resources_released_under_volume() {
    const SEQUENTIAL: usize = 200;
    const CONCURRENT: usize = 50;
    // A leg's ports stay held for a second after its call (the media linger), so at this
    // call rate a few hundred are held at once: 2,000 ports, 1,000 (250 legs) per worker.
    let cpmd = Cpmd::builder().media_ports(2000).spawn();
    let mut bob = registered(&cpmd, "bob");
    let mut alice = registered(&cpmd, "alice");
    for _ in 0..SEQUENTIAL {
        short_call(&mut alice, &mut bob);
    }
    assert_released(&cpmd);

    // 50 INVITEs at once; bob answers each as it comes, alice ACKs each 200.
    let mut invites: HashMap<String, Req> = HashMap::new();
    for _ in 0..CONCURRENT {
        let r = invite(&mut alice, &[Stream::audio(9)]);
        invites.insert(r.get("Call-ID").unwrap().to_string(), r);
    }
    // cpmd ACKs each of bob's 200s at once (its B-side dialog), before alice's ACK.
    let mut b_dialogs: HashMap<String, Dialog> = HashMap::new();
    let mut acked = 0;
    while b_dialogs.len() < CONCURRENT || acked < CONCURRENT {
        let got = bob
            .recv_request(WAIT)
            .unwrap_or_else(|| panic!("bob has {} INVITEs, {acked} ACKs", b_dialogs.len()));
        match method(&got.msg) {
            "INVITE" => {
                let call_id = header(&got.msg, "Call-ID").unwrap();
                answer(&mut bob, &got, 200, "OK", Some((1, &[Stream::audio(9)])));
                b_dialogs
                    .entry(call_id)
                    .or_insert_with(|| Dialog::uas(&got.msg, bob.tag()));
            }
            "ACK" => acked += 1,
            _ => panic!("bob got:\n{}", got.msg),
        }
    }
    let mut a_dialogs: HashMap<String, Dialog> = HashMap::new();
    while a_dialogs.len() < CONCURRENT {
        let m = next(&mut alice, "the 200s");
        if m.status() != Some(200) {
            continue;
        }
        let call_id = header(&m, "Call-ID").unwrap();
        let invite = &invites[&call_id];
        let d = Dialog::uac(invite, &m);
        alice.send_req(&d.ack(&alice, invite.cseq().unwrap()));
        a_dialogs.entry(call_id).or_insert(d);
    }
    assert_held(&cpmd, CONCURRENT as f64, CONCURRENT as f64);

    // alice hangs up all 50.
    for d in a_dialogs.values_mut() {
        let bye = d.request(&alice, "BYE");
        alice.send_req(&bye);
    }
    let mut ended = std::collections::HashSet::new();
    while ended.len() < CONCURRENT {
        let got = expect_request(&mut bob, "BYE");
        let call_id = header(&got.msg, "Call-ID").unwrap();
        assert!(
            b_dialogs.contains_key(&call_id),
            "BYE of no call:\n{}",
            got.msg
        );
        bob.reply(&got, 200, "OK");
        ended.insert(call_id);
    }
    let mut ok = std::collections::HashSet::new();
    while ok.len() < CONCURRENT {
        let m = next(&mut alice, "the 200s to the BYEs");
        if m.status() == Some(200) && header(&m, "CSeq").is_some_and(|c| c.ends_with("BYE")) {
            ok.insert(header(&m, "Call-ID").unwrap());
        }
    }
    assert_released(&cpmd);
    let total = SEQUENTIAL + CONCURRENT;
    let records = cpm_tests::util::poll_until(WAIT, || {
        let cdrs = cpmd.cdrs();
        let count = |kind: &str| cdrs.iter().filter(|r| r["record"] == kind).count();
        (count("start") == total && count("stop") == total).then_some(cdrs.len())
    });
    assert!(
        records.is_some(),
        "expected {total} start and stop records, have {}",
        cpmd.cdrs().len()
    );
}

// ---- a session actor that panics --------------------------------------------------------------

/// With `--test-hooks`, a request carrying `X-Cpm-Test: panic-session` makes its session actor
/// panic: that session's legs, ports and routes are released, while another call on the same
/// cpmd (one worker: the same thread) goes on relaying and ends normally.
#[test]
fn a_panicking_session_byes_its_parties_releases_its_media_and_others_go_on() {
    let (cpmd, mut alice, mut bob) = start(&["--test-hooks", "true", "--workers", "1"]);
    let mut doomed = Call::setup(&cpmd, &mut alice, &mut bob);
    let mut other = Call::setup(&cpmd, &mut alice, &mut bob);
    cpmd.wait_metric("cpm_sessions", Duration::from_secs(5), |v| v == 2.0);
    let info = doomed
        .a
        .request(&alice, "INFO")
        .header("X-Cpm-Test", "panic-session");
    alice.send_req(&info);
    // Both parties of the dead session get a BYE of its dialogs.
    for (ua, dialog) in [(&mut alice, &doomed.a), (&mut bob, &doomed.b)] {
        let bye = expect_request(ua, "BYE");
        assert!(dialog.owns(&bye.msg), "BYE of another dialog:\n{}", bye.msg);
        ua.reply(&bye, 200, "OK");
    }
    // The dead session's routes, legs and ports go; the other call's stay.
    for (series, left) in [
        ("cpm_sessions", 1.0),
        ("cpm_media_legs", 1.0),
        ("cpm_media_pool_ports_in_use", 4.0),
    ] {
        let v = cpmd.wait_metric(series, Duration::from_secs(5), |v| v == left);
        assert_eq!(v, left, "{series}:\n{}", cpmd.metrics());
    }
    assert_eq!(
        cpmd.metric("cpm_actor_restarts_total"),
        0.0,
        "the worker itself went on"
    );
    other.talk(20);
    other.bye_from_alice(&mut alice, &mut bob);
    assert_released(&cpmd);
}

// ---- graceful shutdown (issue 7) -------------------------------------------------------------

/// SIGTERM: established calls go on for `--drain-time` (media included) while new calls get
/// 503; then cpmd ends them with a BYE to both parties, writes their stop records and exits 0.
#[test]
fn sigterm_drains_then_ends_sessions_with_bye() {
    let (mut cpmd, mut alice, mut bob) = start(&["--drain-time", "1"]);
    let mut carol = registered(&cpmd, "carol");
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    let since = Instant::now();
    cpmd.terminate();
    call.talk(5);
    let c_rtp = RtpEndpoint::bind();
    let req = invite(&mut carol, &[Stream::audio(c_rtp.port())]);
    let resp = expect_response(&mut carol, &req, 200..=699);
    assert_status(&resp, 503);
    carol.ack(&req, &resp);
    expect_byes_from_cpmd(
        &call,
        &mut alice,
        &mut bob,
        since,
        Duration::from_millis(900),
        Duration::from_secs(4),
    );
    let status = cpmd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "shutdown", "{stop}");
}

/// A call that ends by itself during the drain time lets cpmd exit at once, without waiting
/// for the rest of the drain time.
#[test]
fn sigterm_exits_when_the_last_call_ends() {
    let (mut cpmd, mut alice, mut bob) = start(&["--drain-time", "30"]);
    let mut call = Call::setup(&cpmd, &mut alice, &mut bob);
    cpmd.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(cpmd.is_running(), "cpmd exited with a call up");
    let hung_up = Instant::now();
    call.bye_from_alice(&mut alice, &mut bob);
    let status = cpmd.wait_exit(Duration::from_secs(8));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        hung_up.elapsed() < Duration::from_secs(8),
        "cpmd waited for the drain time"
    );
    let stop = cpmd.wait_cdr(call.call_id(), "stop", WAIT);
    assert_eq!(stop["end_reason"], "bye-caller", "{stop}");
}
