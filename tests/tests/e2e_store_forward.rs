//! Store and forward (issue 5, CPM.md §5 fig. 5): a MESSAGE for an offline user is held
//! durably and answered 202 (RFC 3428 §7); when the user registers, the held messages are
//! delivered in order and removed only after a device's 2xx; expiry and refusal fail a message
//! and send the failure IMDN its sender asked for (RFC 5438 §5.1); the per-user cap; and
//! nothing held is lost when cpmd is killed with SIGKILL.

use std::time::Duration;

use cpm_tests::{assert_status, header, Cpmd, Received, Transport, Ua};

const WAIT: Duration = Duration::from_secs(5);

/// Sends a text MESSAGE from `from` to `sip:<to>@localhost` and returns the final status.
fn send_text(from: &mut Ua, to: &str, text: &str) -> u16 {
    let req = from
        .req("MESSAGE", &format!("sip:{to}@localhost"))
        .body("text/plain", text);
    from.request(&req).status().unwrap_or(0)
}

/// A CPIM message (RFC 3862) from alice to bob asking for delivery notifications (RFC 5438
/// §6.2), with IMDN Message-ID `id`.
fn cpim_with_imdn(id: &str, text: &str) -> String {
    format!(
        "From: <sip:alice@localhost>\r\n\
         To: <sip:bob@localhost>\r\n\
         DateTime: 2026-11-26T12:00:00Z\r\n\
         NS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: {id}\r\n\
         imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\
         \r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         {text}"
    )
}

/// The next MESSAGE `ua` receives (panics after [`WAIT`]).
fn next_message(ua: &mut Ua, what: &str) -> Received {
    let got = ua
        .recv_request(WAIT)
        .unwrap_or_else(|| panic!("no MESSAGE within {WAIT:?}: {what}"));
    assert_eq!(
        got.msg.method().map(|m| m.as_str()),
        Some("MESSAGE"),
        "{what}: got\n{}",
        got.msg
    );
    got
}

fn body_text(r: &Received) -> String {
    String::from_utf8_lossy(&r.msg.body).into_owned()
}

/// Three messages to offline bob are each answered 202; when bob registers they arrive in the
/// order sent, one after the other's 200, from alice; a refresh later brings nothing again.
#[test]
fn held_messages_are_delivered_in_order_after_register() {
    let cpmd = Cpmd::spawn(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    for text in ["one", "two", "three"] {
        assert_eq!(send_text(&mut alice, "bob", text), 202, "{text}");
    }
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 3.0);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    for text in ["one", "two", "three"] {
        let got = next_message(&mut bob, text);
        assert_eq!(body_text(&got), text, "order kept");
        let from = header(&got.msg, "From").unwrap();
        assert!(from.contains("sip:alice@localhost"), "From: {from}");
        let ruri = String::from_utf8_lossy(got.msg.request_uri().unwrap()).into_owned();
        assert!(
            ruri.eq_ignore_ascii_case(&bob.contact_uri()),
            "Request-URI {ruri}"
        );
        bob.reply(&got, 200, "OK");
    }
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 3.0,
    );
    assert_status(&bob.register(300), 200);
    bob.expect_silence(Duration::from_millis(500), "a message delivered twice");
    // Online now: the next one goes straight through (200 relayed, nothing held).
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "four");
    alice.send_req(&req);
    let got = next_message(&mut bob, "four");
    bob.reply(&got, 200, "OK");
    assert_status(&alice.await_final(&req, WAIT).expect("final"), 200);
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 3.0);
    // The message policy's charging events (CH-x): held, delivered when held, delivered.
    let outcomes = || -> Vec<(String, String)> {
        cpmd.cdrs()
            .into_iter()
            .filter(|r| r["record"] == "event" && r["service"] == "message")
            .map(|r| {
                assert_eq!(r["from"], "sip:alice@localhost", "{r}");
                assert_eq!(r["to"], "sip:bob@localhost", "{r}");
                (
                    r["outcome"].as_str().unwrap().to_string(),
                    r["status"].to_string(),
                )
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while outcomes().len() < 7 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut got = outcomes();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("held", "202"),
        ("held", "202"),
        ("held", "202"),
        ("delivered-held", "200"),
        ("delivered-held", "200"),
        ("delivered-held", "200"),
        ("delivered", "200"),
    ]
    .iter()
    .map(|(o, s)| (o.to_string(), s.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want);
}

/// A held message stays held until a device answers 2xx: bob's 480 leaves it for his next
/// REGISTER, which brings it again.
#[test]
fn a_held_message_stays_until_a_2xx() {
    let cpmd = Cpmd::spawn(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "persistent"), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let got = next_message(&mut bob, "first attempt");
    bob.reply(&got, 480, "Temporarily Unavailable");
    bob.expect_silence(
        Duration::from_millis(500),
        "a retry before the next REGISTER",
    );
    assert_status(&bob.register(300), 200);
    let again = next_message(&mut bob, "second attempt");
    assert_eq!(body_text(&again), "persistent");
    bob.reply(&again, 200, "OK");
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 1.0,
    );
}

/// Every contact of bob fails (a TCP contact that vanished: 480 at once): the message is held
/// (202, not 480), and delivered when bob registers a working contact.
#[test]
fn a_message_no_device_takes_is_held() {
    let cpmd = Cpmd::spawn(&[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    register_bob_at(
        Ua::tcp(cpmd.sip_addr()),
        format!("<sip:bob@{dead};transport=tcp>"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "anyone?"), 202);
    bob_comes_back_and_gets(&cpmd, "anyone?");
}

/// Registers `contact` for bob from `ua` (a device that will not take what is sent to it).
fn register_bob_at(ua: Ua, contact: String) {
    let mut ua = ua.user("bob");
    let reg = ua.register_req(Some(300)).set("Contact", contact);
    assert_status(&ua.request(&reg), 200);
}

/// bob registers a device that answers: the held message `text` arrives there.
fn bob_comes_back_and_gets(cpmd: &Cpmd, text: &str) {
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let got = next_message(&mut bob, "the held message");
    assert_eq!(body_text(&got), text);
    bob.reply(&got, 200, "OK");
}

/// bob's only device went silent without unregistering (a phone out of coverage): no answer,
/// not even an error. alice's MESSAGE is held and answered 202 once `--message-delivery-timeout`
/// passed, not after the device's 32 s transaction timeout, when alice's own transaction would
/// have timed out too.
#[test]
fn a_message_a_silent_device_never_answers_is_held_after_the_delivery_timeout() {
    let cpmd = Cpmd::spawn(&["--message-delivery-timeout", "1"]);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let dead = silent.local_addr().unwrap();
    register_bob_at(Ua::udp(cpmd.sip_addr()), format!("<sip:bob@{dead}>"));
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let t = std::time::Instant::now();
    assert_eq!(send_text(&mut alice, "bob", "still there?"), 202);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "202 after {took:?}"
    );
    // The silent device was tried.
    let mut buf = [0u8; 4096];
    let (n, _) = silent
        .recv_from(&mut buf)
        .expect("the MESSAGE at the silent device");
    assert!(buf[..n].starts_with(b"MESSAGE "), "{:?}", &buf[..n]);
    bob_comes_back_and_gets(&cpmd, "still there?");
}

/// bob's device answers only after the delivery timeout: alice already has her 202 and the
/// message is held, not sent again at once (the device did not answer in time); the late 200
/// says it was delivered, so its held copy goes and bob's next REGISTER brings nothing
/// (decision 0016).
#[test]
fn a_device_answering_after_the_delivery_timeout_takes_the_held_copy_away() {
    slow_device_answers_late(false);
}

/// The device answers after the delivery timeout but before the hold's write committed (a slow
/// disk, `delay-storage-writes`): the held copy goes as soon as it is written, and alice still
/// has her 202.
#[test]
fn a_device_answering_while_the_hold_is_written_takes_the_held_copy_away_too() {
    slow_device_answers_late(true);
}

/// alice's MESSAGE reaches bob's registered device, which answers only after the 1 s delivery
/// timeout: after alice's 202, or (`slow_disk`) while the hold is being written (held back to
/// 2.5 s, the 200 at 1.5 s, before the 202).
fn slow_device_answers_late(slow_disk: bool) {
    let cpmd = Cpmd::spawn(&["--message-delivery-timeout", "1", "--test-hooks", "true"]);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut req = alice.req("MESSAGE", "sip:bob@localhost");
    if slow_disk {
        req = req.header("X-Cpm-Test", "delay-storage-writes=2500");
    }
    let req = req.body("text/plain", "slow device");
    alice.send_req(&req);
    let got = next_message(&mut bob, "the MESSAGE, answered late");
    if slow_disk {
        // Past the delivery timeout (1 s), before the held copy is written (2.5 s).
        std::thread::sleep(Duration::from_millis(1500));
        bob.reply(&got, 200, "OK");
    }
    let final_ = alice
        .await_final(&req, Duration::from_secs(5))
        .expect("alice's final response");
    assert_status(&final_, 202);
    if !slow_disk {
        bob.reply(&got, 200, "OK");
    }
    the_late_200_delivered_it(&cpmd, &mut bob, &[&got]);
}

/// The same for a held message's delivery: bob's device takes it only after the delivery
/// timeout ended the run; the late 200 removes it from the queue, and the next REGISTER
/// brings nothing.
#[test]
fn a_held_message_answered_after_the_delivery_timeout_is_not_sent_again() {
    let cpmd = Cpmd::spawn(&["--message-delivery-timeout", "1"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "answered late"), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let got = next_message(&mut bob, "the held message");
    assert_eq!(body_text(&got), "answered late");
    // Past the delivery timeout (the run ends), then the 200.
    std::thread::sleep(Duration::from_millis(1500));
    bob.reply(&got, 200, "OK");
    the_late_200_delivered_it(&cpmd, &mut bob, &[&got]);
}

/// The queue is full when the delivery timeout would hold a message: alice gets 480 for it,
/// and bob's late 200 to it deletes nothing; his late 200 to the one held before takes that
/// copy away as usual.
#[test]
fn a_full_queue_at_the_delivery_timeout_refuses_and_a_late_200_deletes_nothing() {
    let cpmd = Cpmd::spawn(&["--message-delivery-timeout", "1", "--message-user-cap", "1"]);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let mut sent = Vec::new();
    for (text, status) in [("held", 202), ("refused", 480)] {
        let req = alice
            .req("MESSAGE", "sip:bob@localhost")
            .body("text/plain", text);
        alice.send_req(&req);
        // Retransmissions of the earlier one (Timer E: bob does not answer) come too.
        let got = loop {
            let r = next_message(&mut bob, text);
            if body_text(&r) == text {
                break r;
            }
        };
        let final_ = alice
            .await_final(&req, Duration::from_secs(5))
            .expect("alice's final response");
        assert_status(&final_, status);
        sent.push(got);
    }
    // The refused one first: nothing is held for it.
    bob.reply(&sent[1], 200, "OK");
    bob.reply(&sent[0], 200, "OK");
    the_late_200_delivered_it(&cpmd, &mut bob, &[&sent[0], &sent[1]]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cpmd.metric("cpm_messages_held_done_total{outcome=\"delivered\"}"),
        1.0
    );
}

/// bob's late 200 counts as a held message delivered (its held copy deleted), and his next
/// REGISTER brings no copy of what he `got` (retransmissions of it aside).
fn the_late_200_delivered_it(cpmd: &Cpmd, bob: &mut Ua, got: &[&Received]) {
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 1.0,
    );
    assert_status(&bob.register(300), 200);
    let calls: Vec<_> = got.iter().map(|r| header(&r.msg, "Call-ID")).collect();
    expect_no_copy_of(bob, &calls);
}

/// For half a second bob gets nothing but retransmissions of the requests of `calls` (UDP,
/// Timer E; answered): no copy of them as a new request.
fn expect_no_copy_of(bob: &mut Ua, calls: &[Option<String>]) {
    let quiet_until = std::time::Instant::now() + Duration::from_millis(500);
    while let Some(r) =
        bob.recv_request(quiet_until.saturating_duration_since(std::time::Instant::now()))
    {
        let call = header(&r.msg, "Call-ID");
        assert!(calls.contains(&call), "a copy:\n{}", r.msg);
        bob.reply(&r, 200, "OK");
    }
}

/// bob's device refuses the held message for good (415): it fails, leaves the queue, and
/// alice, who asked for negative delivery notifications, gets an IMDN `<failed/>` about it.
#[test]
fn a_refused_held_message_fails_with_an_imdn() {
    let cpmd = Cpmd::spawn(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_status(&alice.register(300), 200);
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("message/cpim", cpim_with_imdn("Msg-415-a", "unwanted"));
    assert_status(&alice.request(&req), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let got = next_message(&mut bob, "the held CPIM message");
    assert!(body_text(&got).contains("imdn.Message-ID: Msg-415-a"));
    bob.reply(&got, 415, "Unsupported Media Type");
    let imdn = next_message(&mut alice, "the failure IMDN");
    assert_failure_imdn(&imdn, "Msg-415-a");
    alice.reply(&imdn, 200, "OK");
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"refused\"}",
        WAIT,
        |v| v == 1.0,
    );
    assert_status(&bob.register(300), 200);
    bob.expect_silence(Duration::from_millis(500), "a refused message again");
}

/// A held message past `--message-expiry` is given up: alice gets the failure IMDN, and bob,
/// registering afterwards, gets nothing.
#[test]
fn an_expired_message_fails_with_an_imdn() {
    let cpmd = Cpmd::spawn(&["--message-expiry", "2"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_status(&alice.register(300), 200);
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("message/cpim", cpim_with_imdn("Msg-exp-1", "too late"));
    assert_status(&alice.request(&req), 202);
    let imdn = alice
        .recv_request(Duration::from_secs(8))
        .expect("the failure IMDN within the expiry and a sweep");
    assert_failure_imdn(&imdn, "Msg-exp-1");
    alice.reply(&imdn, 200, "OK");
    assert_eq!(
        cpmd.metric("cpm_messages_held_done_total{outcome=\"expired\"}"),
        1.0
    );
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    bob.expect_silence(Duration::from_millis(700), "an expired message");
}

/// Beyond `--message-user-cap` held messages for one user, the next is refused with 480 and a
/// Warning saying why; the held ones are still delivered.
#[test]
fn the_per_user_cap_refuses_more() {
    let cpmd = Cpmd::spawn(&["--message-user-cap", "2"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "1"), 202);
    assert_eq!(send_text(&mut alice, "bob", "2"), 202);
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "3");
    let resp = alice.request(&req);
    assert_status(&resp, 480);
    let warning = header(&resp, "Warning").expect("a Warning");
    assert!(
        warning.starts_with("399 ") && warning.contains('2'),
        "{warning}"
    );
    // Another user's queue is not affected.
    assert_eq!(send_text(&mut alice, "carol", "for carol"), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    for text in ["1", "2"] {
        let got = next_message(&mut bob, text);
        assert_eq!(body_text(&got), text);
        bob.reply(&got, 200, "OK");
    }
    bob.expect_silence(Duration::from_millis(500), "the refused third message");
}

/// Nothing held is lost: cpmd is killed with SIGKILL right after its 202s, restarted on the
/// same data directory, and bob, registering with the new process, gets every message.
#[test]
fn held_messages_survive_kill_9() {
    let cpmd = Cpmd::spawn(&[]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let texts: Vec<String> = (0..20).map(|i| format!("durable {i}")).collect();
    for t in &texts {
        assert_eq!(send_text(&mut alice, "bob", t), 202, "{t}");
    }
    let cpmd = cpmd.crash_and_restart();
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    for t in &texts {
        let got = next_message(&mut bob, t);
        assert_eq!(&body_text(&got), t);
        bob.reply(&got, 200, "OK");
    }
    bob.expect_silence(Duration::from_millis(500), "a message delivered twice");
}

/// The stored copies of cpmd's network storage: (owner, peer, direction, state, body), oldest
/// first, read from its database (read-only, beside the running server: WAL).
fn stored_copies(cpmd: &Cpmd) -> Vec<(String, String, String, String, String)> {
    let db = cpmd.data_dir().join("storage.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open storage.db read-only");
    let mut stmt = conn
        .prepare("SELECT owner, peer, direction, state, body FROM messages ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        let body: Vec<u8> = r.get(4)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Network storage (CM-5) with the default policy "all": each pager message is kept once for
/// its recipient (in) and once for its sender (out), with its delivery state: delivered when a
/// device took it, stored while held, then delivered; a CPIM message keeps its inner content.
#[test]
fn pager_messages_are_kept_in_network_storage() {
    let cpmd = Cpmd::spawn(&[]);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    let req = alice.req("MESSAGE", "sip:bob@localhost").body(
        "message/cpim",
        cpim_with_imdn("Msg-kept-1", "kept for both"),
    );
    alice.send_req(&req);
    let got = next_message(&mut bob, "online");
    bob.reply(&got, 200, "OK");
    assert_status(&alice.await_final(&req, WAIT).expect("final"), 200);
    assert_eq!(send_text(&mut alice, "carol", "held for carol"), 202);
    let s = |v: &str| v.to_string();
    let expect_copies = |carol_state: &str| {
        vec![
            (
                s("sip:bob@localhost"),
                s("sip:alice@localhost"),
                s("in"),
                s("delivered"),
                s("kept for both"),
            ),
            (
                s("sip:alice@localhost"),
                s("sip:bob@localhost"),
                s("out"),
                s("delivered"),
                s("kept for both"),
            ),
            (
                s("sip:carol@localhost"),
                s("sip:alice@localhost"),
                s("in"),
                s(carol_state),
                s("held for carol"),
            ),
            (
                s("sip:alice@localhost"),
                s("sip:carol@localhost"),
                s("out"),
                s(carol_state),
                s("held for carol"),
            ),
        ]
    };
    let deadline = std::time::Instant::now() + WAIT;
    while stored_copies(&cpmd).len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stored_copies(&cpmd), expect_copies("stored"));
    let mut carol = Ua::udp(cpmd.sip_addr()).user("carol");
    assert_status(&carol.register(300), 200);
    let got = next_message(&mut carol, "held for carol");
    carol.reply(&got, 200, "OK");
    let deadline = std::time::Instant::now() + WAIT;
    while stored_copies(&cpmd) != expect_copies("delivered") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stored_copies(&cpmd), expect_copies("delivered"));
    // bob's display notification (RFC 5438 §7.2.1.2) for alice's first message, relayed to
    // alice, moves both copies of it to "displayed"; the IMDN itself is not stored.
    let imdn = "From: <sip:bob@localhost>\r\nTo: <sip:alice@localhost>\r\n\
        DateTime: 2026-11-26T12:00:05Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
        imdn.Message-ID: Msg-imdn-1\r\n\r\n\
        Content-Type: message/imdn+xml\r\nContent-Disposition: notification\r\n\r\n\
        <?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>Msg-kept-1</message-id>\
        <datetime>2026-11-26T12:00:00Z</datetime><display-notification><status><displayed/>\
        </status></display-notification></imdn>";
    assert_status(&alice.register(300), 200);
    let req = bob
        .req("MESSAGE", "sip:alice@localhost")
        .body("message/cpim", imdn);
    bob.send_req(&req);
    let got = next_message(&mut alice, "the display IMDN");
    alice.reply(&got, 200, "OK");
    assert_status(&bob.await_final(&req, WAIT).expect("final"), 200);
    let mut want = expect_copies("delivered");
    want[0].3 = s("displayed");
    want[1].3 = s("displayed");
    let deadline = std::time::Instant::now() + WAIT;
    while stored_copies(&cpmd) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stored_copies(&cpmd), want);
}

/// With `--storage-default none`, users who set nothing get no network-storage copies; the
/// message is still held and delivered.
#[test]
fn storage_default_none_keeps_no_copies() {
    let cpmd = Cpmd::spawn(&["--storage-default", "none"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "not kept"), 202);
    let mut bob = Ua::udp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let got = next_message(&mut bob, "held");
    assert_eq!(body_text(&got), "not kept");
    bob.reply(&got, 200, "OK");
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(stored_copies(&cpmd), vec![]);
}

/// Where users authenticate, a MESSAGE's From proves nothing (MESSAGE is not challenged): the
/// sender's history gets a copy only when the MESSAGE comes from an address the sender
/// registered from; the recipient's copy is always kept.
#[test]
fn a_forged_from_writes_nothing_in_the_senders_history() {
    let cpmd = Cpmd::builder()
        .users("alice alice-pw\nbob bob-pw\n")
        .spawn();
    // mallory, unregistered, sends as alice.
    let mut mallory = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut mallory, "bob", "forged"), 202);
    // alice herself, registered from her address.
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice").password("alice-pw");
    assert_status(&alice.register(300), 200);
    assert_eq!(send_text(&mut alice, "bob", "genuine"), 202);
    let s = |v: &str| v.to_string();
    let want = vec![
        (
            s("sip:bob@localhost"),
            s("sip:alice@localhost"),
            s("in"),
            s("stored"),
            s("forged"),
        ),
        (
            s("sip:bob@localhost"),
            s("sip:alice@localhost"),
            s("in"),
            s("stored"),
            s("genuine"),
        ),
        (
            s("sip:alice@localhost"),
            s("sip:bob@localhost"),
            s("out"),
            s("stored"),
            s("genuine"),
        ),
    ];
    let deadline = std::time::Instant::now() + WAIT;
    while stored_copies(&cpmd) != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stored_copies(&cpmd), want);
}

/// With `--store-and-forward false` cpmd is a plain proxy: 480 for an offline user.
#[test]
fn store_and_forward_can_be_off() {
    let cpmd = Cpmd::spawn(&["--store-and-forward", "false"]);
    let mut alice = Ua::udp(cpmd.sip_addr()).user("alice");
    assert_eq!(send_text(&mut alice, "bob", "no"), 480);
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 0.0);
}

/// A MESSAGE from the server carrying a negative delivery IMDN (RFC 5438 §7.2.1) about
/// `message_id`.
fn assert_failure_imdn(r: &Received, message_id: &str) {
    let m = &r.msg;
    assert_eq!(
        header(m, "Content-Type").as_deref(),
        Some("message/cpim"),
        "{m}"
    );
    let body = body_text(r);
    assert!(body.contains("message/imdn+xml"), "{body}");
    assert!(
        body.contains(&format!("<message-id>{message_id}</message-id>")),
        "{body}"
    );
    assert!(body.contains("<failed/>"), "{body}");
    let _ = Transport::Udp;
}
