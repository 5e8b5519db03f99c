//! MSRP sessions through cpmd's media plane (issue 5, CPM.md §5 fig. 6), end to end: alice
//! invites bob with an `m=message TCP/MSRP` offer, cpmd rewrites each side's `a=path` to a
//! URI of its MSRP listener, both connect to cpmd (bob active, alice passive-answered), and
//! every SEND, response and REPORT crosses cpmd's relay with the paths rewritten.

use std::time::{Duration, Instant};

use cpm_engine::sip::Message;
use cpm_tests::dialog::Dialog;
use cpm_tests::msrp::{Chunk, MsrpClient};
use cpm_tests::{assert_status, Cpmd, Received, Req, Ua};

const WAIT: Duration = Duration::from_secs(5);
const SDP: &str = "application/sdp";
const ALICE: &str = "msrp://127.0.0.1:9/alice7sid;tcp";
const BOB: &str = "msrp://127.0.0.1:9/bob7sid;tcp";

fn registered(cpmd: &Cpmd, user: &str) -> Ua {
    let mut ua = Ua::udp(cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

/// cpmd with its MSRP listener on a free port; registered alice and bob.
fn start() -> (Cpmd, Ua, Ua, u16) {
    let cpmd = Cpmd::builder().msrp_on_a_picked_port().spawn();
    let port = cpmd.msrp_port();
    let bob = registered(&cpmd, "bob");
    let alice = registered(&cpmd, "alice");
    (cpmd, alice, bob, port)
}

/// A chat offer or answer (RFC 4975 §8.1, RFC 6135, RFC 5547 lines passing through), with an
/// audio stream after it when `audio` is given.
fn chat_sdp(version: u64, path: &str, setup: &str, audio: Option<u16>) -> String {
    let mut s = format!(
        "v=0\r\no=u 77 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim text/plain application/octet-stream\r\n\
         a=file-selector:name:\"f.bin\" type:application/octet-stream size:1048576\r\n\
         a=path:{path}\r\na=setup:{setup}\r\n"
    );
    if let Some(port) = audio {
        s.push_str(&format!(
            "m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
        ));
    }
    s
}

/// The `a=<name>:` value of the message stream in an SDP body.
fn attr(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let prefix = format!("a={name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no a={name} in:\n{text}"))
        .to_string()
}

fn method(m: &Message) -> &str {
    m.method().map(|m| m.as_str()).unwrap_or("")
}

#[track_caller]
fn expect_request(ua: &mut Ua, want: &str) -> Received {
    let got = ua.recv_request(WAIT).unwrap_or_else(|| panic!("no {want}"));
    assert_eq!(method(&got.msg), want, "got:\n{}", got.msg);
    got
}

#[track_caller]
fn final_response(ua: &mut Ua, req: &Req) -> Message {
    ua.await_response(req, WAIT, |c| c >= 200)
        .unwrap_or_else(|| panic!("no final response to {}", req.method))
}

fn answer(ua: &mut Ua, req: &Received, sdp: &str) {
    let contact = format!("<{}>", ua.contact_uri());
    ua.reply_with(
        req,
        200,
        "OK",
        &[("Contact", &contact)],
        Some((SDP, sdp.as_bytes())),
    );
}

/// An established chat: both dialogs, both MSRP connections, cpmd's URIs.
struct Chat {
    a: Dialog,
    b: Dialog,
    alice: MsrpClient,
    bob: MsrpClient,
    a_uri: String,
    b_uri: String,
}

impl Chat {
    fn setup(alice: &mut Ua, bob: &mut Ua, port: u16) -> Chat {
        let contact = format!("<{}>", alice.contact_uri());
        let invite = alice
            .req("INVITE", "sip:bob@localhost")
            .header("Contact", contact)
            .body(SDP, chat_sdp(1, ALICE, "actpass", None));
        alice.send_req(&invite);
        let inv = expect_request(bob, "INVITE");
        let b_uri = attr(&inv.msg.body, "path");
        assert!(
            b_uri.starts_with(&format!("msrp://127.0.0.1:{port}/")) && b_uri.ends_with(";tcp"),
            "bob's offer names cpmd's listener: {b_uri}"
        );
        assert_eq!(attr(&inv.msg.body, "setup"), "actpass");
        assert!(attr(&inv.msg.body, "file-selector").contains("f.bin"));
        let body = String::from_utf8_lossy(&inv.msg.body).into_owned();
        assert!(
            body.contains(&format!("m=message {port} TCP/MSRP *")),
            "{body}"
        );
        answer(bob, &inv, &chat_sdp(1, BOB, "active", None));
        let b = Dialog::uas(&inv.msg, bob.tag());
        let resp = final_response(alice, &invite);
        assert_status(&resp, 200);
        alice.ack(&invite, &resp);
        expect_request(bob, "ACK");
        let a = Dialog::uac(&invite, &resp);
        let a_uri = attr(&resp.body, "path");
        assert_eq!(
            attr(&resp.body, "setup"),
            "passive",
            "alice connects to cpmd"
        );
        assert_ne!(a_uri, b_uri, "one session-id per side");
        assert!(!a_uri.contains("alice7sid") && !b_uri.contains("bob7sid"));

        // bob is active (a=setup:active): it connects and binds with an empty SEND.
        let mut bob_msrp = MsrpClient::connect(&b_uri, BOB);
        let tid = bob_msrp.send_empty();
        let ok = bob_msrp
            .await_response(&tid, WAIT)
            .expect("200 to bob's empty SEND");
        assert_eq!(ok.head.code(), Some(200));
        let alice_msrp = MsrpClient::connect(&a_uri, ALICE);
        Chat {
            a,
            b,
            alice: alice_msrp,
            bob: bob_msrp,
            a_uri,
            b_uri,
        }
    }

    /// alice sends `text`; bob gets it with cpmd's paths; alice gets the 200.
    fn alice_says(&mut self, text: &str) -> Chunk {
        let (mid, tids) = self
            .alice
            .send_message(text.as_bytes(), "text/plain", 4096, &[]);
        let got = self
            .bob
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("bob gets the SEND");
        assert_eq!(got.method(), "SEND");
        assert_eq!(got.body, text.as_bytes());
        assert_eq!(got.get("To-Path").as_deref(), Some(BOB));
        assert_eq!(got.get("From-Path"), Some(self.b_uri.clone()));
        assert_eq!(got.get("Message-ID"), Some(mid));
        let ok = self
            .alice
            .await_response(&tids[0], WAIT)
            .expect("200 to alice");
        assert_eq!(ok.head.code(), Some(200));
        assert_eq!(ok.get("To-Path").as_deref(), Some(ALICE));
        got
    }

    fn bye(mut self, cpmd: &Cpmd, alice: &mut Ua, bob: &mut Ua) {
        let bye = self.a.request(alice, "BYE");
        alice.send_req(&bye);
        let got = expect_request(bob, "BYE");
        assert!(self.b.owns(&got.msg));
        bob.reply(&got, 200, "OK");
        assert_status(&final_response(alice, &bye), 200);
        for series in ["cpm_msrp_legs", "cpm_msrp_connections", "cpm_sessions"] {
            cpmd.wait_metric(series, WAIT, |v| v == 0.0);
        }
        assert!(self.alice.closes_within(WAIT), "alice's connection closed");
        assert!(self.bob.closes_within(WAIT), "bob's connection closed");
    }
}

#[test]
fn chat_both_ways_with_success_report_then_bye_releases_everything() {
    let (cpmd, mut alice, mut bob, port) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    cpmd.wait_metric("cpm_msrp_connections", WAIT, |v| v == 2.0);
    assert_eq!(cpmd.metric("cpm_msrp_legs"), 1.0);
    chat.alice_says("hello bob");

    // bob → alice.
    let (mid, tids) = chat.bob.send_message(b"hi alice", "text/plain", 4096, &[]);
    let got = chat
        .alice
        .recv_request(WAIT, true, &mut Vec::new())
        .expect("alice gets the SEND");
    assert_eq!(got.body, b"hi alice");
    assert_eq!(got.get("To-Path").as_deref(), Some(ALICE));
    assert_eq!(got.get("From-Path"), Some(chat.a_uri.clone()));
    assert_eq!(got.get("Message-ID"), Some(mid.clone()));
    assert_eq!(
        chat.bob
            .await_response(&tids[0], WAIT)
            .and_then(|c| c.head.code()),
        Some(200)
    );

    // alice's Success-Report from bob's REPORT, paths rewritten (RFC 4975 §7.1.2).
    let (mid, _) = chat.alice.send_message(
        b"report me",
        "text/plain",
        4096,
        &[("Success-Report", "yes")],
    );
    let got = chat.bob.recv_request(WAIT, true, &mut Vec::new()).unwrap();
    assert_eq!(got.head.success_report, Some(true));
    let report = format!(
        "MSRP rep1 REPORT\r\nTo-Path: {}\r\nFrom-Path: {BOB}\r\nMessage-ID: {mid}\r\n\
         Byte-Range: 1-9/9\r\nStatus: 000 200 OK\r\n-------rep1$\r\n",
        chat.b_uri
    );
    chat.bob.send_raw(report.as_bytes());
    let got = chat
        .alice
        .recv_request(WAIT, false, &mut Vec::new())
        .expect("alice gets the REPORT");
    assert_eq!(got.method(), "REPORT");
    assert_eq!(got.get("To-Path").as_deref(), Some(ALICE));
    assert_eq!(got.get("From-Path"), Some(chat.a_uri.clone()));
    assert_eq!(got.get("Status").as_deref(), Some("200"));
    assert_eq!(got.get("Message-ID"), Some(mid));

    chat.bye(&cpmd, &mut alice, &mut bob);
}

/// A 1 MiB file in 64 KiB chunks arrives whole with its Byte-Ranges; a 200 KiB single chunk is
/// re-chunked by cpmd into 64 KiB pieces with `+` and the right Byte-Range.
#[test]
fn file_transfer_in_chunks_and_rechunking() {
    let (cpmd, mut alice, mut bob, port) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    let file: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sender = chat.alice;
    let data = file.clone();
    let t = std::thread::spawn(move || {
        let r = sender.send_message(&data, "application/octet-stream", 65536, &[]);
        (sender, r)
    });
    let mut got = Vec::new();
    let mut ranges = Vec::new();
    loop {
        let c = chat
            .bob
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("a chunk");
        got.extend_from_slice(&c.body);
        ranges.push(c.get("Byte-Range").unwrap());
        if c.flag == Some(cpm_engine::msrp::Flag::Complete) {
            break;
        }
    }
    let (sender, _) = t.join().unwrap();
    chat.alice = sender;
    assert_eq!(ranges.len(), 16);
    assert_eq!(ranges[0], "1-65536/1048576");
    assert_eq!(ranges[15], "983041-1048576/1048576");
    assert!(got == file, "the file arrives intact");

    let big: Vec<u8> = (0..204_800u32).map(|i| (i % 253) as u8).collect();
    chat.alice
        .send_message(&big, "application/octet-stream", big.len(), &[]);
    let mut pieces = Vec::new();
    let mut body = Vec::new();
    loop {
        let c = chat.bob.recv_request(WAIT, true, &mut Vec::new()).unwrap();
        body.extend_from_slice(&c.body);
        pieces.push((c.get("Byte-Range").unwrap(), c.flag));
        if c.flag != Some(cpm_engine::msrp::Flag::Continues) {
            break;
        }
    }
    use cpm_engine::msrp::Flag::{Complete, Continues};
    assert_eq!(
        pieces,
        vec![
            ("1-65536/204800".to_string(), Some(Continues)),
            ("65537-131072/204800".to_string(), Some(Continues)),
            ("131073-196608/204800".to_string(), Some(Continues)),
            ("196609-204800/204800".to_string(), Some(Complete)),
        ]
    );
    assert!(body == big);
    assert!(cpmd.metric("cpm_msrp_bytes_relayed_total") >= (1_048_576 + 204_800) as f64);
    chat.bye(&cpmd, &mut alice, &mut bob);
}

/// A re-INVITE adds audio to the chat: the chat keeps its URIs and connections.
#[test]
fn reinvite_adds_audio_to_the_chat() {
    let (cpmd, mut alice, mut bob, port) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    let reinvite = chat
        .a
        .request(&alice, "INVITE")
        .body(SDP, chat_sdp(2, ALICE, "actpass", Some(40000)));
    alice.send_req(&reinvite);
    let got = expect_request(&mut bob, "INVITE");
    assert_eq!(
        attr(&got.msg.body, "path"),
        chat.b_uri,
        "same URI toward bob"
    );
    let body = String::from_utf8_lossy(&got.msg.body).into_owned();
    assert!(
        body.contains("m=audio ") && !body.contains("m=audio 40000"),
        "{body}"
    );
    answer(&mut bob, &got, &chat_sdp(2, BOB, "active", Some(41000)));
    let resp = final_response(&mut alice, &reinvite);
    assert_status(&resp, 200);
    assert_eq!(
        attr(&resp.body, "path"),
        chat.a_uri,
        "same URI toward alice"
    );
    let ack = chat.a.ack(&alice, reinvite.cseq().unwrap());
    alice.send_req(&ack);
    expect_request(&mut bob, "ACK");
    assert_eq!(cpmd.metric("cpm_media_legs"), 1.0, "the audio leg");
    chat.alice_says("still chatting");
    assert_eq!(cpmd.metric("cpm_msrp_connections"), 2.0, "same connections");
    chat.bye(&cpmd, &mut alice, &mut bob);
}

/// bob's connection is gone: alice's SEND gets an error and a REPORT (Failure-Report default
/// yes, RFC 4975 §7.1.1) generated by cpmd.
#[test]
fn report_when_the_receiver_is_gone() {
    let (cpmd, mut alice, mut bob, port) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    chat.alice_says("first");
    chat.bob
        .stream()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    cpmd.wait_metric("cpm_msrp_connections", WAIT, |v| v == 1.0);
    let (mid, tids) = chat.alice.send_message(b"lost", "text/plain", 4096, &[]);
    let err = chat
        .alice
        .await_response(&tids[0], WAIT)
        .expect("a response");
    assert_eq!(err.head.code(), Some(481));
    let report = chat
        .alice
        .recv_request(WAIT, false, &mut Vec::new())
        .expect("a REPORT");
    assert_eq!(report.method(), "REPORT");
    assert_eq!(report.get("Message-ID"), Some(mid));
    assert_eq!(report.get("Status").as_deref(), Some("481"));
    assert_eq!(report.get("To-Path").as_deref(), Some(ALICE));
    assert!(cpmd.metric("cpm_msrp_reports_generated_total") >= 1.0);
    chat.bye(&cpmd, &mut alice, &mut bob);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// bob stops reading while alice sends 64 MiB: cpmd stops reading alice (backpressure), its
/// memory stays bounded; alice's sending stalls.
#[test]
fn slow_reader_does_not_grow_memory() {
    let (cpmd, mut alice, mut bob, port) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    chat.alice_says("warm up");
    let before = rss_kib(cpmd.pid());
    let mut sender = chat.alice;
    sender
        .stream()
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let started = Instant::now();
        for _ in 0..64 {
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sender.send_message(&chunk, "application/octet-stream", 1 << 20, &[]);
            }));
            if r.is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let during = rss_kib(cpmd.pid());
    let relayed = cpmd.metric("cpm_msrp_bytes_relayed_total");
    assert!(
        relayed < 32.0 * 1048576.0,
        "cpmd kept reading alice: {relayed} bytes relayed"
    );
    assert!(
        during < before + 24 * 1024,
        "cpmd's RSS grew from {before} KiB to {during} KiB"
    );
    // bob goes away: cpmd drains alice (failing her SENDs) and the sender finishes.
    drop(chat.bob);
    t.join().ok();
    let bye = chat.a.request(&alice, "BYE");
    alice.send_req(&bye);
    let got = expect_request(&mut bob, "BYE");
    bob.reply(&got, 200, "OK");
    final_response(&mut alice, &bye);
    for series in ["cpm_msrp_legs", "cpm_msrp_connections"] {
        cpmd.wait_metric(series, WAIT, |v| v == 0.0);
    }
}

/// A connection naming no session is answered 481 and closed; malformed input on a bound
/// connection gets 400 and the connection goes on.
#[test]
fn bad_input_gets_the_right_status() {
    let (cpmd, mut alice, mut bob, port) = start();
    let stray_path = format!("msrp://127.0.0.1:{port}/nosuchsession;tcp");
    let mut stray = MsrpClient::connect(&stray_path, ALICE);
    let (_, tids) = stray.send_message(b"x", "text/plain", 10, &[]);
    let resp = stray.await_response(&tids[0], WAIT).expect("481");
    assert_eq!(resp.head.code(), Some(481));
    assert!(stray.recv(WAIT).is_none(), "closed after the 481");

    let mut chat = Chat::setup(&mut alice, &mut bob, port);
    // A SEND without Message-ID (RFC 4975 §7.1: mandatory): 400.
    let bad = format!(
        "MSRP bad1 SEND\r\nTo-Path: {}\r\nFrom-Path: {ALICE}\r\nByte-Range: 1-2/2\r\n\
         Content-Type: text/plain\r\n\r\nhi\r\n-------bad1$\r\n",
        chat.a_uri
    );
    chat.alice.send_raw(bad.as_bytes());
    let resp = chat.alice.await_response("bad1", WAIT).expect("a response");
    assert_eq!(resp.head.code(), Some(400));
    chat.alice_says("the connection survives");
    chat.bye(&cpmd, &mut alice, &mut bob);
}
