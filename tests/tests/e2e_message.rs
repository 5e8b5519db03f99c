//! MESSAGE (RFC 3428) through cpmd acting as a stateful proxy (RFC 3261 §16): forked to every
//! registered contact, body untouched, the final response relayed back; 404, 413 and (without
//! store and forward) 480.

use std::time::Duration;

use cpm_tests::wire::param;
use cpm_tests::{
    assert_echoes, assert_status, header, header_values, over_udp_and_tcp, Cpmd, Received, Req,
    Transport, Ua,
};

const WAIT: Duration = Duration::from_secs(5);

/// A CPIM body (RFC 3862) with its own header blocks, CRLFs and UTF-8.
const CPIM: &str = "From: Alice <sip:alice@localhost>\r\n\
    To: Bob <sip:bob@localhost>\r\n\
    DateTime: 2024-05-01T12:00:00Z\r\n\
    NS: imdn <urn:ietf:params:imdn>\r\n\
    imdn.Message-ID: 34jk324j\r\n\
    \r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 13\r\n\
    \r\n\
    H\u{e9}llo, Bob \u{1f44b}";

/// Registers `user` from a new agent on `t`.
fn registered(cpmd: &Cpmd, t: Transport, user: &str) -> Ua {
    let mut ua = Ua::new(t, cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

/// Receives the forwarded MESSAGE at `contact` and checks what a proxy must and must not change.
fn expect_forwarded(contact: &mut Ua, sent: &Req, cpmd: &Cpmd) -> Received {
    let got = contact.recv_request(WAIT).unwrap_or_else(|| {
        panic!(
            "{} received no MESSAGE within {WAIT:?}",
            contact.contact_uri()
        )
    });
    let m = &got.msg;
    assert_eq!(m.method().map(|m| m.as_str()), Some("MESSAGE"), "got:\n{m}");
    // RFC 3261 §16.6 step 6: the Request-URI becomes the contact's.
    let ruri = String::from_utf8_lossy(m.request_uri().unwrap()).into_owned();
    assert!(
        ruri.eq_ignore_ascii_case(&contact.contact_uri()),
        "Request-URI {ruri} in:\n{m}"
    );
    // The body and its type pass unchanged.
    assert_eq!(&m.body[..], &sent.body[..], "body changed:\n{m}");
    assert_eq!(
        header(m, "Content-Type").as_deref(),
        sent.get("Content-Type"),
        "Content-Type in:\n{m}"
    );
    // §16.6 step 8: the proxy's Via on top (with the contact's transport), the sender's below.
    let vias = header_values(m, "Via");
    assert_eq!(vias.len(), 2, "two Vias expected in:\n{m}");
    let top = m.top_via().expect("top Via parses");
    assert!(top.is_rfc3261_branch(), "proxy branch not z9hG4bK in:\n{m}");
    assert_ne!(
        param(&vias[0], "branch"),
        sent.branch().as_deref(),
        "proxy reused the sender's branch"
    );
    assert!(
        String::from_utf8_lossy(&top.transport)
            .eq_ignore_ascii_case(contact.transport().via_token()),
        "top Via transport in:\n{m}"
    );
    assert_eq!(
        top.port,
        Some(cpmd.sip_addr().port()),
        "top Via port in:\n{m}"
    );
    assert_eq!(
        param(&vias[1], "branch"),
        sent.branch().as_deref(),
        "sender's Via in:\n{m}"
    );
    // §16.6 step 3: Max-Forwards decremented; From, To, Call-ID, CSeq unchanged.
    assert_eq!(
        header(m, "Max-Forwards").as_deref(),
        Some("69"),
        "Max-Forwards in:\n{m}"
    );
    for name in ["From", "To", "Call-ID", "CSeq"] {
        assert_eq!(
            header(m, name).as_deref(),
            sent.get(name),
            "{name} in:\n{m}"
        );
    }
    got
}

over_udp_and_tcp!(
    message_reaches_every_contact,
    cpim_body_passes_unchanged,
    final_error_is_relayed
);

/// Two devices of bob both receive alice's MESSAGE; alice gets one 200.
fn message_reaches_every_contact(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut phone = registered(&cpmd, t, "bob");
    let mut laptop = registered(&cpmd, t, "bob");
    let mut alice = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "Hello, Bob!");
    alice.send_req(&req);
    for dev in [&mut phone, &mut laptop] {
        let got = expect_forwarded(dev, &req, &cpmd);
        dev.reply(&got, 200, "OK");
    }
    let resp = alice
        .await_final(&req, WAIT)
        .expect("alice gets a final response");
    assert_status(&resp, 200);
    assert_echoes(&req, &resp);
    assert_eq!(
        header_values(&resp, "Via").len(),
        1,
        "proxy Via must be removed:\n{resp}"
    );
    // RFC 3261 §16.7 step 5: only one final response to a non-INVITE.
    alice.expect_silence(Duration::from_millis(500), "a second final response");
}

fn cpim_body_passes_unchanged(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = registered(&cpmd, t, "bob");
    let mut alice = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("message/cpim", CPIM);
    alice.send_req(&req);
    let got = expect_forwarded(&mut bob, &req, &cpmd);
    bob.reply(&got, 200, "OK");
    assert_status(&alice.await_final(&req, WAIT).expect("final response"), 200);
}

/// The contact's final error is what the sender gets (RFC 3261 §16.7 step 6).
fn final_error_is_relayed(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = registered(&cpmd, t, "bob");
    let mut alice = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "ping");
    alice.send_req(&req);
    let got = expect_forwarded(&mut bob, &req, &cpmd);
    bob.reply(&got, 603, "Decline");
    let resp = alice.await_final(&req, WAIT).expect("final response");
    assert_status(&resp, 603);
    assert_echoes(&req, &resp);
}

/// The sender and the recipient on different transports: the proxy's Via names the outgoing one.
#[test]
fn udp_sender_to_tcp_contact() {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = registered(&cpmd, Transport::Tcp, "bob");
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "over TCP");
    alice.send_req(&req);
    let got = expect_forwarded(&mut bob, &req, &cpmd);
    bob.reply(&got, 200, "OK");
    assert_status(&alice.await_final(&req, WAIT).expect("final response"), 200);
}

#[test]
fn tcp_sender_to_udp_contact() {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = registered(&cpmd, Transport::Udp, "bob");
    let mut alice = Ua::tcp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("message/cpim", CPIM);
    alice.send_req(&req);
    let got = expect_forwarded(&mut bob, &req, &cpmd);
    bob.reply(&got, 200, "OK");
    assert_status(&alice.await_final(&req, WAIT).expect("final response"), 200);
}

over_udp_and_tcp!(unknown_user_is_404, known_unregistered_user_is_480);

/// With a users file, a user not in it does not exist (RFC 3261 §21.4.5).
fn unknown_user_is_404(t: Transport) {
    let cpmd = Cpmd::builder().users("bob hunter2\n").spawn();
    let mut alice = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:nobody@localhost")
        .body("text/plain", "hi");
    let resp = alice.request(&req);
    assert_status(&resp, 404);
    assert_echoes(&req, &resp);
}

/// A known user without a binding is temporarily unavailable (RFC 3261 §21.4.18), when cpmd
/// does not hold messages (store and forward: e2e_store_forward.rs).
fn known_unregistered_user_is_480(t: Transport) {
    let cpmd = Cpmd::builder()
        .users("bob hunter2\n")
        .args(&["--store-and-forward", "false"])
        .spawn();
    let mut alice = Ua::new(t, cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "hi");
    let resp = alice.request(&req);
    assert_status(&resp, 480);
    assert_echoes(&req, &resp);
}

/// After bob unregisters, a MESSAGE to him is no longer forwarded.
#[test]
fn unregistered_contact_gets_nothing() {
    let cpmd = Cpmd::builder()
        .users("bob hunter2\n")
        .args(&["--store-and-forward", "false"])
        .spawn();
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob").password("hunter2");
    assert_status(&bob.register(300), 200);
    assert_status(&bob.register(0), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "hi");
    assert_status(&alice.request(&req), 480);
    bob.expect_silence(Duration::from_millis(300), "a MESSAGE after unregistering");
}

/// A contact that vanished: bob registered over TCP, then his connection and his listening
/// port are gone. The forwarded MESSAGE cannot be delivered; the connect failure reaches the
/// transaction at once (no 32 s Timer F), and alice gets 480 (a 503 is never relayed upstream,
/// RFC 3261 §16.7 step 6). Without store and forward (with it, the message is held: 202).
#[test]
fn vanished_tcp_contact_is_480_at_once() {
    let cpmd = Cpmd::spawn(&["--store-and-forward", "false"]);
    // A port nobody listens on: bind, learn it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    {
        let mut bob = Ua::tcp(cpmd.sip_addr()).user("bob");
        let reg = bob
            .register_req(Some(300))
            .set("Contact", format!("<sip:bob@{dead};transport=tcp>"));
        assert_status(&bob.request(&reg), 200);
    } // bob's connection closes here
    std::thread::sleep(Duration::from_millis(200));
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "anyone there?");
    let started = std::time::Instant::now();
    let resp = alice.request(&req);
    assert_status(&resp, 480);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the failure took {:?}",
        started.elapsed()
    );
}

/// Large message mode (RFC 3428 §7): a body over `--message-max-size` gets 413 with a Warning
/// pointing to MSRP, and nothing reaches bob; a body of exactly the limit is delivered.
#[test]
fn large_pager_body_is_413() {
    let cpmd = Cpmd::spawn(&["--message-max-size", "1300"]);
    let mut bob = registered(&cpmd, Transport::Udp, "bob");
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let big = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "x".repeat(1301));
    let resp = alice.request(&big);
    assert_status(&resp, 413);
    assert_echoes(&big, &resp);
    let warning = header(&resp, "Warning").expect("a Warning with the hint");
    assert!(
        warning.starts_with("399 ") && warning.contains("MSRP"),
        "{warning}"
    );
    bob.expect_silence(Duration::from_millis(300), "a MESSAGE over the size limit");
    let fits = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "y".repeat(1300));
    alice.send_req(&fits);
    let got = expect_forwarded(&mut bob, &fits, &cpmd);
    bob.reply(&got, 200, "OK");
    assert_status(
        &alice.await_final(&fits, WAIT).expect("a final response"),
        200,
    );
}
