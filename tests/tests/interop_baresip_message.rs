//! Interop with baresip (Debian `baresip-core`): pager-mode MESSAGEs (RFC 3428) between two
//! baresip instances registered at cpmd, sent with the `contact` module's `message` command and
//! read back from their SIP traces. Online: relayed, the recipient's 200 reaching the sender.
//! Offline (issue 5, store and forward): cpmd holds them and answers 202; when the recipient
//! starts and registers, they arrive in the order sent.

use std::thread;
use std::time::Duration;

use cpm_tests::baresip::{self, Baresip};
use cpm_tests::Cpmd;

/// How long a MESSAGE may take to be answered or delivered.
const WAIT: Duration = Duration::from_secs(10);
/// How long nothing more may arrive after the expected messages (a redelivery would).
const QUIET: Duration = Duration::from_millis(800);

fn require_baresip() {
    assert!(
        baresip::available(),
        "baresip or its modules {:?} missing: apt-get install baresip-core",
        baresip::MODULES
    );
}

/// `sip:USER@<cpmd>`, the address-of-record both instances register and write to.
fn aor(cpmd: &Cpmd, user: &str) -> String {
    format!("sip:{user}@{}", cpmd.sip_addr())
}

/// `to` received exactly the texts `want`, in that order, each from `from`, sent by cpmd to
/// its registered contact (its own listener, not the address-of-record), and answered 200.
#[track_caller]
fn assert_received(to: &Baresip, want: &[&str], from: &str) {
    let got = to.wait_received(want.len(), WAIT);
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, want, "received texts, in order: {got:#?}");
    let contact_host = format!("@{}", to.sip_addr());
    for m in &got {
        assert!(
            m.uri.ends_with(&contact_host),
            "Request-URI {:?} is not its contact at {contact_host}",
            m.uri
        );
        assert!(m.from.contains(from), "From {:?}, not {from}", m.from);
        assert!(
            m.content_type.starts_with("text/plain"),
            "Content-Type {:?}",
            m.content_type
        );
        assert_eq!(m.status, Some(200), "the recipient's answer to {m:?}");
    }
}

/// Both online: alice writes to bob through cpmd, bob's baresip receives it and answers 200,
/// which reaches alice; then bob replies the same way. Nothing is held.
#[test]
#[ignore = "needs baresip"]
fn baresips_exchange_messages_through_cpmd() {
    require_baresip();
    // No digest: see interop_baresip.rs, baresips_register_at_cpmd.
    let cpmd = Cpmd::spawn(&[]);
    let (alice_aor, bob_aor) = (aor(&cpmd, "alice"), aor(&cpmd, "bob"));
    let mut alice = Baresip::builder("alice")
        .registrar(cpmd.sip_addr())
        .contact(&bob_aor)
        .spawn();
    let mut bob = Baresip::builder("bob")
        .registrar(cpmd.sip_addr())
        .contact(&alice_aor)
        .spawn();
    cpmd.wait_metric("cpm_registered_contacts", WAIT, |v| v == 2.0);

    alice.send_message(&bob_aor, "hello bob, through cpmd");
    let sent = alice.wait_sent("hello bob, through cpmd", WAIT);
    assert_eq!(sent.status, Some(200), "alice's MESSAGE: {sent:?}");
    assert_eq!(sent.uri, bob_aor);
    assert_received(&bob, &["hello bob, through cpmd"], &alice_aor);

    bob.send_message(&alice_aor, "hi alice, bob here");
    let reply = bob.wait_sent("hi alice, bob here", WAIT);
    assert_eq!(reply.status, Some(200), "bob's MESSAGE: {reply:?}");
    assert_received(&alice, &["hi alice, bob here"], &bob_aor);

    thread::sleep(QUIET);
    assert_eq!(bob.received_messages().len(), 1, "bob got a message twice");
    assert_eq!(
        alice.received_messages().len(),
        1,
        "alice got a message twice"
    );
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 0.0);
}

/// bob has never run: alice's two MESSAGEs are each answered 202 and held. bob's baresip then
/// starts and registers, receives both in the order sent (each answered 200, each once), and
/// his reply reaches alice, who is online, at once.
#[test]
#[ignore = "needs baresip"]
fn baresip_gets_messages_held_while_offline() {
    require_baresip();
    let cpmd = Cpmd::spawn(&[]);
    let (alice_aor, bob_aor) = (aor(&cpmd, "alice"), aor(&cpmd, "bob"));
    let mut alice = Baresip::builder("alice")
        .registrar(cpmd.sip_addr())
        .contact(&bob_aor)
        .spawn();
    let texts = ["first, while you were away", "second, still away"];
    for text in texts {
        alice.send_message(&bob_aor, text);
        // One at a time, so the order cpmd holds them in is the order sent.
        let sent = alice.wait_sent(text, WAIT);
        assert_eq!(sent.status, Some(202), "held, not delivered: {sent:?}");
    }
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 2.0);

    let mut bob = Baresip::builder("bob")
        .registrar(cpmd.sip_addr())
        .contact(&alice_aor)
        .spawn();
    assert_received(&bob, &texts, &alice_aor);
    cpmd.wait_metric(
        "cpm_messages_held_done_total{outcome=\"delivered\"}",
        WAIT,
        |v| v == 2.0,
    );
    thread::sleep(QUIET);
    assert_eq!(
        bob.received_messages().len(),
        2,
        "a held message came twice"
    );

    bob.send_message(&alice_aor, "back now, thanks");
    let reply = bob.wait_sent("back now, thanks", WAIT);
    assert_eq!(reply.status, Some(200), "alice is online: {reply:?}");
    assert_received(&alice, &["back now, thanks"], &bob_aor);
    assert_eq!(cpmd.metric("cpm_messages_held_total"), 2.0);
}
