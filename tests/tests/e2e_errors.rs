//! Requests cpmd must refuse, each with the status the RFC names and, for 400, a reason phrase
//! naming the problem.

use std::time::Duration;

use cpm_tests::check::lists;
use cpm_tests::{assert_status, over_udp_and_tcp, reason, Cpmd, Transport, Ua};

/// Asserts a 400 whose reason phrase mentions `what` (case-insensitive).
#[track_caller]
fn assert_bad_request(resp: &cpm_engine::sip::Message, what: &str) {
    assert_status(resp, 400);
    let r = reason(resp);
    assert!(
        r.to_ascii_lowercase().contains(&what.to_ascii_lowercase()),
        "400 reason {r:?} does not name {what}"
    );
}

over_udp_and_tcp!(
    missing_call_id_is_400,
    cseq_method_mismatch_is_400,
    malformed_cseq_is_400,
    unknown_method_is_501,
    max_forwards_zero_is_483,
    unsupported_require_is_420,
    unsupported_proxy_require_is_420,
    too_large_is_513,
    invite_to_the_server_itself_is_404,
    subscribe_is_489_bad_event,
    refer_is_405_with_allow,
);

fn missing_call_id_is_400(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost").remove("Call-ID");
    assert_bad_request(&ua.request(&req), "Call-ID");
    // A request refused for its syntax counts as a parse error.
    cpmd.wait_metric("cpm_sip_parse_errors_total", Duration::from_secs(2), |v| {
        v >= 1.0
    });
}

/// RFC 3261 §8.1.1.5: the CSeq method must match the request's.
fn cseq_method_mismatch_is_400(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost").set("CSeq", "1 INVITE");
    // The response carries the request's (mismatched) CSeq, so match on branch alone.
    ua.send_req(&req);
    let resp = recv_final(&mut ua);
    assert_bad_request(&resp, "CSeq");
}

fn malformed_cseq_is_400(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("OPTIONS", "sip:localhost")
        .set("CSeq", "abc OPTIONS");
    ua.send_req(&req);
    assert_bad_request(&recv_final(&mut ua), "CSeq");
}

/// The next final response, whatever it answers.
fn recv_final(ua: &mut Ua) -> cpm_engine::sip::Message {
    for _ in 0..10 {
        let m = ua.recv(Duration::from_secs(5)).expect("a response");
        if m.status().is_some_and(|s| s >= 200) {
            return m;
        }
    }
    panic!("no final response");
}

/// RFC 3261 §18.3: a datagram shorter than its Content-Length is malformed.
#[test]
fn content_length_beyond_datagram_is_400() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "short")
        .set("Content-Length", "100");
    assert_bad_request(&ua.request(&req), "Content-Length");
}

/// RFC 3261 §8.2.1: an unknown method is 501.
fn unknown_method_is_501(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("FROBNICATE", "sip:localhost");
    assert_status(&ua.request(&req), 501);
}

/// RFC 3261 §16.3 step 3: Max-Forwards 0 on a request to forward is 483.
fn max_forwards_zero_is_483(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = Ua::new(t, cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .set("Max-Forwards", "0")
        .body("text/plain", "hop");
    assert_status(&ua.request(&req), 483);
    bob.expect_silence(Duration::from_millis(300), "a MESSAGE with Max-Forwards 0");
}

/// RFC 3261 §8.2.2.3: an unknown extension in Require is 420 listing it in Unsupported.
fn unsupported_require_is_420(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost").header("Require", "foo");
    let resp = ua.request(&req);
    assert_status(&resp, 420);
    assert!(
        lists(&resp, "Unsupported", "foo"),
        "Unsupported: foo missing in:\n{resp}"
    );
}

/// RFC 3261 §16.3 step 5: a MESSAGE to forward with a Proxy-Require we do not support is 420;
/// the same option tag in Proxy-Require of an OPTIONS to the server itself is ignored.
fn unsupported_proxy_require_is_420(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .header("Proxy-Require", "bar")
        .body("text/plain", "hi");
    let resp = ua.request(&req);
    assert_status(&resp, 420);
    assert!(
        lists(&resp, "Unsupported", "bar"),
        "Unsupported: bar missing in:\n{resp}"
    );
    let req = ua
        .req("OPTIONS", "sip:localhost")
        .header("Proxy-Require", "bar");
    assert_status(&ua.request(&req), 200);
}

/// RFC 3261 §21.4.11: a message larger than `--max-message-size` is 513.
fn too_large_is_513(t: Transport) {
    let cpmd = Cpmd::spawn(&["--max-message-size", "4000"]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", vec![b'x'; 5000]);
    assert_status(&ua.request(&req), 513);
    // The server still answers afterwards (a new connection for TCP).
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost");
    assert_status(&ua.request(&req), 200);
}

/// Over TCP a message can exceed the 65535-byte default limit.
#[test]
fn too_large_for_default_limit_over_tcp_is_513() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::tcp(cpmd.sip_addr());
    let req = ua
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", vec![b'y'; 70_000]);
    assert_status(&ua.request(&req), 513);
}

/// An INVITE for the server itself (no user part): nobody to call, 404; the 404 is ACKed and
/// not retransmitted after the ACK (RFC 3261 §17.2.1).
fn invite_to_the_server_itself_is_404(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("INVITE", "sip:localhost")
        .header("Contact", format!("<{}>", ua.contact_uri()))
        .body("application/sdp", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n");
    let resp = ua.request(&req);
    ua.ack(&req, &resp);
    assert_status(&resp, 404);
    // After the ACK, no retransmission of the 405 (RFC 3261 §17.2.1).
    std::thread::sleep(Duration::from_millis(100));
    while ua.recv(Duration::from_millis(10)).is_some() {}
    ua.expect_silence(
        Duration::from_millis(1200),
        "a 405 retransmitted after the ACK",
    );
}

/// No event package is served yet: RFC 6665 §8.3.2 answers an unknown package with 489.
fn subscribe_is_489_bad_event(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("SUBSCRIBE", "sip:localhost")
        .header("Event", "presence")
        .header("Contact", format!("<{}>", ua.contact_uri()));
    let resp = ua.request(&req);
    assert_status(&resp, 489);
}

/// A known method not served in this phase: 405 with Allow (RFC 3261 §21.4.6).
fn refer_is_405_with_allow(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("REFER", "sip:bob@localhost")
        .header("Refer-To", "<sip:carol@localhost>")
        .header("Contact", format!("<{}>", ua.contact_uri()));
    let resp = ua.request(&req);
    assert_status(&resp, 405);
    assert!(lists(&resp, "Allow", "MESSAGE"), "Allow in:\n{resp}");
    assert!(
        !lists(&resp, "Allow", "REFER"),
        "Allow lists the refused method:\n{resp}"
    );
}
