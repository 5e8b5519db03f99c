//! Large message mode for offline users (issue 5; OMA CPM / RCS: one message in an MSRP
//! session of its own): alice invites offline bob with an MSRP-only offer, cpmd answers as the
//! MSRP endpoint and holds each message once it is stored (200 to the last chunk after the
//! commit); when bob registers, cpmd invites him and sends the message over MSRP, in order
//! with bob's pager messages, and forgets it after the 200 to the last chunk. Also the failure
//! paths around store and forward: a full storage queue, an MSRP connection that never names a
//! session, and a storage read failing in the middle of a delivery run. And the second cut:
//! cpmd's 200 repeated until the ACK (and its ACK repeated for each repeated 2xx), devices
//! that are all unavailable (the INVITE handed back and stored), a passive sender (cpmd
//! connects), delivery tried contact after contact, and pager messages held behind a large
//! message being received.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use cpm_engine::msrp::Flag;
use cpm_tests::dialog::Dialog;
use cpm_tests::msrp::{MsrpClient, Part};
use cpm_tests::{assert_status, header, Cpmd, Received, Ua};

const WAIT: Duration = Duration::from_secs(10);
const SDP: &str = "application/sdp";
const ALICE: &str = "msrp://127.0.0.1:9/alice7large;tcp";

/// A free TCP port for cpmd's MSRP listener.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(extra: &[&str]) -> Cpmd {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--msrp-listen", listen.as_str()];
    args.extend_from_slice(extra);
    Cpmd::builder().args(&args).spawn()
}

/// An MSRP-only offer (large message mode: no audio, no video).
fn offer(path: &str, setup: &str) -> String {
    format!(
        "v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=message 9 TCP/MSRP *\r\na=accept-types:text/plain message/cpim\r\n\
         a=path:{path}\r\na=setup:{setup}\r\na=sendonly\r\n"
    )
}

/// The `a=<name>:` value in an SDP body.
fn attr(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let prefix = format!("a={name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no a={name} in:\n{text}"))
        .trim()
        .to_string()
}

/// A large-message session from alice to `to`, answered by cpmd: the dialog and alice's MSRP
/// connection to cpmd's path.
struct Session {
    dialog: Dialog,
    msrp: MsrpClient,
}

impl Session {
    fn open(alice: &mut Ua, to: &str) -> Session {
        let contact = format!("<{}>", alice.contact_uri());
        let invite = alice
            .req("INVITE", &format!("sip:{to}@localhost"))
            .header("Contact", contact)
            .body(SDP, offer(ALICE, "active"));
        alice.send_req(&invite);
        let resp = alice
            .await_response(&invite, WAIT, |c| c >= 200)
            .expect("final response to the large-message INVITE");
        assert_status(&resp, 200);
        assert_eq!(attr(&resp.body, "setup"), "passive", "cpmd is passive");
        let path = attr(&resp.body, "path");
        alice.ack(&invite, &resp);
        let dialog = Dialog::uac(&invite, &resp);
        Session {
            dialog,
            msrp: MsrpClient::connect(&path, ALICE),
        }
    }

    /// Sends `body` in chunks of `chunk` bytes; the status of each chunk, in order.
    fn send(&mut self, body: &[u8], chunk: usize, extra: &[(&str, &str)]) -> Vec<u16> {
        let (_, tids) = self.msrp.send_message(body, "text/plain", chunk, extra);
        tids.iter()
            .map(|t| {
                self.msrp
                    .await_response(t, WAIT)
                    .and_then(|r| r.head.code())
                    .unwrap_or(0)
            })
            .collect()
    }

    fn bye(mut self, alice: &mut Ua) {
        let bye = self.dialog.request(alice, "BYE");
        alice.send_req(&bye);
        let r = alice
            .await_response(&bye, WAIT, |c| c >= 200)
            .expect("200 to BYE");
        assert_status(&r, 200);
    }
}

fn send_text(from: &mut Ua, to: &str, text: &str) -> u16 {
    let req = from
        .req("MESSAGE", &format!("sip:{to}@localhost"))
        .body("text/plain", text);
    from.request(&req).status().unwrap_or(0)
}

/// The next request bob gets that is not an ACK.
fn next_request(bob: &mut Ua, what: &str) -> Received {
    loop {
        let got = bob
            .recv_request(WAIT)
            .unwrap_or_else(|| panic!("nothing within {WAIT:?}: {what}"));
        if got.msg.method().map(|m| m.as_str()) != Some("ACK") {
            return got;
        }
    }
}

fn method(r: &Received) -> String {
    r.msg
        .method()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default()
}

/// bob takes a MESSAGE with body `text`.
fn take_message(bob: &mut Ua, text: &str) {
    let got = next_request(bob, text);
    assert_eq!(method(&got), "MESSAGE", "{text}: got\n{}", got.msg);
    assert_eq!(String::from_utf8_lossy(&got.msg.body), text);
    bob.reply(&got, 200, "OK");
}

/// bob takes a session cpmd originates: answers its INVITE (passive, on a listener of his),
/// receives the message's chunks, and answers the BYE. Returns the body.
fn take_large(bob: &mut Ua) -> Vec<u8> {
    take_large_with(bob, false)
}

/// The ACK of a 2xx cpmd sent bob.
fn expect_ack(bob: &mut Ua, what: &str) {
    let got = bob
        .recv_request(WAIT)
        .unwrap_or_else(|| panic!("no ACK: {what}"));
    assert_eq!(method(&got), "ACK", "{what}: got\n{}", got.msg);
}

/// [`take_large`]; with `repeat_200`, bob's 200 is sent again after cpmd's ACK, as if that
/// ACK was lost, and cpmd must ACK it again (RFC 3261 §13.2.2.4).
fn take_large_with(bob: &mut Ua, repeat_200: bool) -> Vec<u8> {
    let inv = next_request(bob, "the large-message INVITE");
    assert_eq!(method(&inv), "INVITE", "got\n{}", inv.msg);
    let from = header(&inv.msg, "From").unwrap();
    assert!(from.contains("sip:alice@localhost"), "From: {from}");
    assert_eq!(attr(&inv.msg.body, "setup"), "active", "cpmd connects");
    let cpmd_path = attr(&inv.msg.body, "path");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let bob_uri = format!(
        "msrp://127.0.0.1:{}/bob7large;tcp",
        listener.local_addr().unwrap().port()
    );
    let contact = format!("<{}>", bob.contact_uri());
    let answer = offer(&bob_uri, "passive");
    bob.reply_with(
        &inv,
        200,
        "OK",
        &[("Contact", &contact)],
        Some((SDP, answer.as_bytes())),
    );
    if repeat_200 {
        expect_ack(bob, "the first 200");
        bob.reply_with(
            &inv,
            200,
            "OK",
            &[("Contact", &contact)],
            Some((SDP, answer.as_bytes())),
        );
        expect_ack(bob, "the repeated 200");
    }
    let mut msrp = MsrpClient::accept(&listener, &cpmd_path, &bob_uri);
    let mut body = Vec::new();
    loop {
        let c = msrp
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("a SEND chunk from cpmd");
        assert_eq!(c.method(), "SEND");
        assert_eq!(c.get("To-Path").as_deref(), Some(bob_uri.as_str()));
        body.extend_from_slice(&c.body);
        if c.flag == Some(Flag::Complete) {
            break;
        }
    }
    let bye = next_request(bob, "cpmd's BYE");
    assert_eq!(method(&bye), "BYE", "got\n{}", bye.msg);
    bob.reply(&bye, 200, "OK");
    body
}

fn held_rows(cpmd: &Cpmd) -> i64 {
    let db = cpmd.data_dir().join("storage.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open storage.db read-only");
    conn.query_row("SELECT COUNT(*) FROM deferred", [], |r| r.get(0))
        .unwrap()
}

/// Waits until `n` rows are held (deletes commit after the delivery is counted).
#[track_caller]
fn wait_rows(cpmd: &Cpmd, n: i64, what: &str) {
    let until = std::time::Instant::now() + WAIT;
    while held_rows(cpmd) != n && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(held_rows(cpmd), n, "{what}");
}

fn large_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Offline bob: a pager message, a 300 KB message over MSRP (every chunk 200, the last after
/// the commit, with the success REPORT asked for), another pager message. bob registers and
/// gets them in that order, the large one over a session cpmd starts; no held row is left.
#[test]
fn large_message_is_held_and_delivered_over_msrp_in_order() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "before"), 202);
    let body = large_body(300_000);
    let mut s = Session::open(&mut alice, "bob");
    let codes = s.send(&body, 64 * 1024, &[("Success-Report", "yes")]);
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    let report = s.msrp.recv(WAIT).expect("a success REPORT");
    assert_eq!(report.method(), "REPORT");
    assert!(report.get("Status").unwrap().contains("200"));
    s.bye(&mut alice);
    assert_eq!(send_text(&mut alice, "bob", "after"), 202);
    assert_eq!(held_rows(&cpmd), 3);

    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    take_message(&mut bob, "before");
    assert_eq!(take_large(&mut bob), body, "the large message, whole");
    take_message(&mut bob, "after");
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 3.0,
    );
    wait_rows(&cpmd, 0, "every held row deleted");
    bob.expect_silence(Duration::from_millis(500), "a message delivered twice");
}

/// A message over --large-message-max is refused with 413 on its chunk and not stored.
#[test]
fn over_limit_large_message_is_refused_and_not_stored() {
    let cpmd = start(&["--large-message-max", "100000"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut s = Session::open(&mut alice, "bob");
    let codes = s.send(&large_body(150_000), 50_000, &[]);
    assert_eq!(codes.last(), Some(&413), "{codes:?}");
    assert!(
        codes.iter().all(|&c| c == 413),
        "refused from the declared size: {codes:?}"
    );
    // A message within the limit on the same session still goes through.
    assert_eq!(s.send(&large_body(5_000), 4_000, &[]), [200, 200]);
    s.bye(&mut alice);
    assert_eq!(held_rows(&cpmd), 1, "only the message within the limit");
}

/// BYE in the middle of a message: nothing is stored; so is a lost connection.
#[test]
fn interrupted_large_message_stores_nothing() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut s = Session::open(&mut alice, "bob");
    let data = large_body(40_000);
    let part = Part {
        message_id: "half1",
        offset: 0,
        total: 100_000,
        content_type: "text/plain",
        chunk: 10_000,
    };
    let tids = s.msrp.send_part(&part, &data, &[]);
    for t in &tids {
        let r = s.msrp.await_response(t, WAIT).expect("200 to a `+` chunk");
        assert_eq!(r.head.code(), Some(200));
    }
    s.bye(&mut alice);
    assert!(alive(cpmd.sip_addr()), "cpmd still answers");
    // The connection lost half way, without a BYE.
    let mut s = Session::open(&mut alice, "bob");
    let part = Part {
        message_id: "half2",
        ..part
    };
    let tids = s.msrp.send_part(&part, &data, &[]);
    s.msrp
        .await_response(tids.last().unwrap(), WAIT)
        .expect("200");
    drop(s.msrp);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(held_rows(&cpmd), 0, "no partial message held");
}

/// cpmd is alive (an OPTIONS is answered).
fn alive(server: std::net::SocketAddr) -> bool {
    let mut ua = Ua::udp(server).user("probe");
    let req = ua.req("OPTIONS", "sip:localhost");
    ua.request(&req).status() == Some(200)
}

/// Nothing taken is lost: cpmd is killed with SIGKILL right after the 200 to the last chunk,
/// restarted, and bob gets the message over MSRP when he registers.
#[test]
fn large_message_survives_kill_9() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let body = large_body(200_000);
    let mut s = Session::open(&mut alice, "bob");
    assert!(s.send(&body, 64 * 1024, &[]).iter().all(|&c| c == 200));
    let cpmd = cpmd.crash_and_restart();
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    assert_eq!(take_large(&mut bob), body);
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 1.0,
    );
    wait_rows(&cpmd, 0, "the row deleted");
}

/// A device refusing the session (603) fails the held message like pager mode: gone from the
/// queue, the run goes on with the next one.
#[test]
fn device_refusing_the_session_fails_the_message() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut s = Session::open(&mut alice, "bob");
    assert!(s
        .send(&large_body(10_000), 4096, &[])
        .iter()
        .all(|&c| c == 200));
    s.bye(&mut alice);
    assert_eq!(send_text(&mut alice, "bob", "next"), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let inv = next_request(&mut bob, "INVITE");
    assert_eq!(method(&inv), "INVITE");
    bob.reply(&inv, 603, "Decline");
    take_message(&mut bob, "next");
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"refused\"}",
        WAIT,
        |v| v == 1.0,
    );
    wait_rows(&cpmd, 0, "the row deleted");
}

/// A storage whose write queue is full: a MESSAGE for an offline user gets 503 with
/// Retry-After (RFC 3261 §21.5.4), not a 202 for a message that was never stored.
#[test]
fn full_storage_queue_gives_503_with_retry_after() {
    let cpmd = start(&["--storage-queue", "0"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "x");
    let resp = alice.request(&req);
    assert_status(&resp, 503);
    assert!(header(&resp, "Retry-After").is_some(), "{resp}");
}

/// An MSRP connection that never names a session is closed after --msrp-bind-timeout.
#[test]
fn unbound_msrp_connection_is_closed_after_the_bind_timeout() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _cpmd = Cpmd::builder()
        .args(&["--msrp-listen", &listen, "--msrp-bind-timeout", "1"])
        .spawn();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "closed without a word");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// Storage failing in the middle of a delivery run (the second read of the held queue): the
/// run ends, nothing is lost or delivered twice, and the next REGISTER delivers the rest.
#[test]
fn storage_read_failure_mid_delivery_loses_nothing() {
    let cpmd = start(&["--test-hooks", "true"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    // 70 held: the run reads 64, then the rest.
    let texts: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
    for t in &texts {
        assert_eq!(send_text(&mut alice, "bob", t), 202, "{t}");
    }
    // The hook: the read after the next one fails.
    let hook = alice
        .req("MESSAGE", "sip:carol@localhost")
        .header("X-Cpm-Test", "fail-storage-read=1")
        .body("text/plain", "hook");
    assert_eq!(alice.request(&hook).status(), Some(202));
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    for t in &texts[..64] {
        take_message(&mut bob, t);
    }
    bob.expect_silence(
        Duration::from_millis(700),
        "the run ended at the failed read",
    );
    assert_eq!(held_rows(&cpmd), 6 + 1, "six for bob, carol's hook message");
    assert_status(&bob.register(300), 200);
    for t in &texts[64..] {
        take_message(&mut bob, t);
    }
    bob.expect_silence(Duration::from_millis(500), "a message delivered twice");
    wait_rows(&cpmd, 1, "carol's message only");
}

// ---- second cut ---------------------------------------------------------------------------

/// RFC 3261 §13.3.1.4: alice drops cpmd's first 200 (no ACK); cpmd sends it again (T1 later)
/// until the ACK, and no more after it; the message then goes through and is stored. On the
/// delivering side, bob's 200 repeated after cpmd's ACK is ACKed again.
#[test]
fn our_200_is_repeated_until_the_ack() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let contact = format!("<{}>", alice.contact_uri());
    let invite = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", contact)
        .body(SDP, offer(ALICE, "active"));
    alice.send_req(&invite);
    let first = alice
        .await_response(&invite, WAIT, |c| c >= 200)
        .expect("the 200");
    assert_status(&first, 200);
    // Dropped: no ACK. The same 200 comes again.
    let again = alice
        .await_response(&invite, Duration::from_secs(3), |c| c == 200)
        .expect("the 200 repeated before the ACK");
    assert_eq!(header(&again, "To"), header(&first, "To"), "the same 200");
    assert_eq!(again.body, first.body);
    alice.ack(&invite, &again);
    // Drain what was in flight, then nothing more.
    std::thread::sleep(Duration::from_millis(100));
    while alice
        .await_response(&invite, Duration::from_millis(10), |c| c == 200)
        .is_some()
    {}
    assert!(
        alice
            .await_response(&invite, Duration::from_millis(2500), |c| c == 200)
            .is_none(),
        "the 200 repeated after its ACK"
    );
    let mut s = Session {
        dialog: Dialog::uac(&invite, &again),
        msrp: MsrpClient::connect(&attr(&again.body, "path"), ALICE),
    };
    let body = large_body(20_000);
    assert!(s.send(&body, 8_000, &[]).iter().all(|&c| c == 200));
    s.bye(&mut alice);
    assert_eq!(held_rows(&cpmd), 1, "stored");

    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    assert_eq!(take_large_with(&mut bob, true), body);
    wait_rows(&cpmd, 0, "delivered");
}

/// bob is registered but his only device answers the MSRP-only INVITE 480: the session hands
/// it back and cpmd takes the message as for an offline user (200, stored); since bob is
/// registered, cpmd then tries to deliver it at once over a session of its own.
#[test]
fn unavailable_devices_get_the_message_stored() {
    let cpmd = start(&[]);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let contact = format!("<{}>", alice.contact_uri());
    let invite = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", contact)
        .body(SDP, offer(ALICE, "active"));
    alice.send_req(&invite);
    let relayed = next_request(&mut bob, "the session's INVITE");
    assert_eq!(method(&relayed), "INVITE");
    bob.reply(&relayed, 480, "Temporarily Unavailable");
    let resp = alice
        .await_response(&invite, WAIT, |c| c >= 200)
        .expect("a final response");
    assert_status(&resp, 200);
    assert_eq!(attr(&resp.body, "setup"), "passive", "cpmd is the endpoint");
    alice.ack(&invite, &resp);
    let mut s = Session {
        dialog: Dialog::uac(&invite, &resp),
        msrp: MsrpClient::connect(&attr(&resp.body, "path"), ALICE),
    };
    let body = large_body(30_000);
    assert!(s.send(&body, 10_000, &[]).iter().all(|&c| c == 200));
    s.bye(&mut alice);
    // bob is registered: the held message is offered to him at once.
    let inv = next_request(&mut bob, "cpmd's delivery INVITE");
    assert_eq!(method(&inv), "INVITE");
    bob.reply(&inv, 480, "Temporarily Unavailable");
    assert_eq!(held_rows(&cpmd), 1, "kept for the next REGISTER");
    assert_status(&bob.register(300), 200);
    assert_eq!(take_large(&mut bob), body);
    wait_rows(&cpmd, 0, "delivered");
}

/// A sender that is `a=setup:passive` (RFC 6135): cpmd answers `a=setup:active`, connects to
/// the sender's path, binds the connection with an empty SEND, and receives the message over
/// that connection.
#[test]
fn passive_sender_gets_cpmd_connecting() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let alice_uri = format!(
        "msrp://127.0.0.1:{}/alice7passive;tcp",
        listener.local_addr().unwrap().port()
    );
    let contact = format!("<{}>", alice.contact_uri());
    let invite = alice
        .req("INVITE", "sip:bob@localhost")
        .header("Contact", contact)
        .body(SDP, offer(&alice_uri, "passive"));
    alice.send_req(&invite);
    let resp = alice
        .await_response(&invite, WAIT, |c| c >= 200)
        .expect("a final response");
    assert_status(&resp, 200);
    assert_eq!(attr(&resp.body, "setup"), "active", "cpmd connects");
    alice.ack(&invite, &resp);
    let cpmd_path = attr(&resp.body, "path");
    let mut msrp = MsrpClient::accept(&listener, &cpmd_path, &alice_uri);
    let bind = msrp
        .recv_request(WAIT, true, &mut Vec::new())
        .expect("cpmd's binding SEND");
    assert_eq!(bind.method(), "SEND");
    assert_eq!(bind.get("To-Path").as_deref(), Some(alice_uri.as_str()));
    assert_eq!(bind.get("From-Path").as_deref(), Some(cpmd_path.as_str()));
    let mut s = Session {
        dialog: Dialog::uac(&invite, &resp),
        msrp,
    };
    let body = large_body(50_000);
    assert!(s.send(&body, 16_000, &[]).iter().all(|&c| c == 200));
    s.bye(&mut alice);
    assert_eq!(held_rows(&cpmd), 1, "stored");
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    assert_eq!(take_large(&mut bob), body);
}

/// Delivery tries bob's contacts in order (q): the first is gone (TCP, nobody listens: the
/// INVITE cannot be sent), the second answers 200 but cannot be reached over MSRP (it gets
/// cpmd's BYE), the third takes the message.
#[test]
fn delivery_tries_the_contacts_in_turn() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut s = Session::open(&mut alice, "bob");
    let body = large_body(12_000);
    assert!(s.send(&body, 5_000, &[]).iter().all(|&c| c == 200));
    s.bye(&mut alice);

    // One REGISTER of three contacts: the gone one (q=1.0), bob2 (q=0.8), bob3 (q=0.5).
    let mut bob2 = Ua::udp(cpmd.sip_addr()).user("bob");
    let mut bob3 = Ua::udp(cpmd.sip_addr()).user("bob");
    let contacts = format!(
        "<sip:bob@127.0.0.1:{};transport=tcp>;q=1.0, <{}>;q=0.8, <{}>;q=0.5",
        free_port(),
        bob2.contact_uri(),
        bob3.contact_uri()
    );
    let r = bob3.register_req(Some(300)).set("Contact", contacts);
    assert_status(&bob3.request(&r), 200);

    let inv = next_request(&mut bob2, "the INVITE after the gone contact");
    assert_eq!(method(&inv), "INVITE");
    let dead = format!("msrp://127.0.0.1:{}/dead;tcp", free_port());
    let contact = format!("<{}>", bob2.contact_uri());
    bob2.reply_with(
        &inv,
        200,
        "OK",
        &[("Contact", &contact)],
        Some((SDP, offer(&dead, "passive").as_bytes())),
    );
    expect_ack(&mut bob2, "bob2's 200");
    let bye = next_request(&mut bob2, "cpmd's BYE after MSRP failed");
    assert_eq!(method(&bye), "BYE");
    bob2.reply(&bye, 200, "OK");

    assert_eq!(take_large(&mut bob3), body, "the third contact takes it");
    wait_rows(&cpmd, 0, "delivered");
    bob2.expect_silence(Duration::from_millis(300), "bob2 tried again");
}

/// A pager message for bob sent while his large message is being received waits for it: its
/// 202 comes once the large message is stored, and bob gets the two in that order.
#[test]
fn pager_message_waits_behind_a_large_message_being_received() {
    let cpmd = start(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut carol = Ua::udp(cpmd.sip_addr()).user("carol");
    let mut s = Session::open(&mut alice, "bob");
    let body = large_body(30_000);
    let part = Part {
        message_id: "big1",
        offset: 0,
        total: body.len() as u64,
        content_type: "text/plain",
        chunk: 10_000,
    };
    // The first two chunks.
    for t in s.msrp.send_part(&part, &body[..20_000], &[]) {
        let r = s.msrp.await_response(&t, WAIT).expect("200 to a chunk");
        assert_eq!(r.head.code(), Some(200));
    }
    let pager = carol
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "from carol");
    carol.send_req(&pager);
    assert!(
        carol
            .await_response(&pager, Duration::from_millis(500), |c| c >= 200)
            .is_none(),
        "answered while bob's large message is unfinished"
    );
    let last = Part {
        offset: 20_000,
        ..part
    };
    let tids = s.msrp.send_part(&last, &body[20_000..], &[]);
    let r = s.msrp.await_response(&tids[0], WAIT).expect("200");
    assert_eq!(r.head.code(), Some(200));
    let resp = carol
        .await_response(&pager, WAIT, |c| c >= 200)
        .expect("carol's answer once the large message is stored");
    assert_status(&resp, 202);
    s.bye(&mut alice);
    assert_eq!(held_rows(&cpmd), 2);

    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    assert_eq!(take_large(&mut bob), body, "the large message first");
    take_message(&mut bob, "from carol");
    wait_rows(&cpmd, 0, "both delivered");
}
