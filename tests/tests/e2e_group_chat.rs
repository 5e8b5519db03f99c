//! Group chat in conferences through the real cpmd (issue 6, decision 0014 "Group chat"):
//! participants offer `m=message TCP/MSRP` (with or without audio), the focus is the MSRP
//! endpoint of each one's session and fans every complete message out to all the others as
//! `message/cpim` `From:` the sender, `To:` the conference; never back to the sender; order
//! per sender kept; a 100 KiB message chunked; a participant that stops reading does not hold
//! up the others (its copies are dropped and counted); a recorded conference's chat is in the
//! recording owner's history through the HTTP API; everything is released at the end.

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use cpm_engine::cpim::CpimMessage;
use cpm_engine::msrp::{Flag, Method};
use cpm_tests::dialog::{uri_of, Dialog};
use cpm_tests::msrp::MsrpClient;
use cpm_tests::{assert_status, header, Cpmd, Received, Ua};

const WAIT: Duration = Duration::from_secs(10);
const SDP: &str = "application/sdp";

fn registered(cpmd: &Cpmd, user: &str) -> Ua {
    let mut ua = Ua::udp(cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

/// An offer with a chat stream at `path` (`setup` our role), and PCMU audio on `audio`.
fn offer(path: &str, setup: &str, audio: Option<u16>) -> String {
    let mut s =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n".to_string();
    if let Some(port) = audio {
        s += &format!("m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n");
    }
    s += &format!(
        "m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim text/plain\r\n\
         a=path:{path}\r\na=setup:{setup}\r\n"
    );
    s
}

/// The value of the first `a=<name>:` line of an SDP body.
fn attr(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let key = format!("a={name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no a={name} in\n{text}"))
        .trim()
        .to_string()
}

/// A participant: its SIP agent, its dialog with the focus, its MSRP connection.
struct Chatter {
    ua: Ua,
    dialog: Dialog,
    msrp: MsrpClient,
    /// Held so that the audio port stays ours.
    _rtp: Option<UdpSocket>,
}

/// `user` INVITEs `uri` with a chat stream (and audio if `audio`); `passive`: the focus
/// connects to us, else we connect and bind with an empty SEND. Returns the chatter and the
/// 2xx.
fn join(mut ua: Ua, uri: &str, audio: bool, passive: bool) -> (Chatter, cpm_engine::sip::Message) {
    let rtp = audio.then(|| UdpSocket::bind("127.0.0.1:0").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = if passive {
        listener.local_addr().unwrap().port()
    } else {
        9
    };
    let me = format!(
        "msrp://127.0.0.1:{port}/{}{};tcp",
        ua.contact_uri().len(),
        ua.aor().replace([':', '@', '.'], "")
    );
    let setup = if passive { "passive" } else { "active" };
    let body = offer(
        &me,
        setup,
        rtp.as_ref().map(|s| s.local_addr().unwrap().port()),
    );
    let invite = ua
        .req("INVITE", uri)
        .header("Contact", format!("<{}>", ua.contact_uri()))
        .body(SDP, body);
    let ok = ua.request(&invite);
    assert_status(&ok, 200);
    let dialog = Dialog::uac(&invite, &ok);
    ua.send_req(&dialog.ack(&ua, invite.cseq().unwrap()));
    let text = String::from_utf8_lossy(&ok.body).into_owned();
    assert_eq!(
        text.contains("m=audio 0 ") || !text.contains("m=audio"),
        !audio,
        "{text}"
    );
    assert!(
        text.contains("a=accept-types:message/cpim text/plain"),
        "{text}"
    );
    let focus_path = attr(&ok.body, "path");
    let msrp = if passive {
        assert_eq!(attr(&ok.body, "setup"), "active");
        let mut c = MsrpClient::accept(&listener, &focus_path, &me);
        // The focus binds the connection with an empty SEND (RFC 4975 §5.4).
        let bind = c
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("the focus's binding SEND");
        assert!(bind.body.is_empty());
        c
    } else {
        assert_eq!(attr(&ok.body, "setup"), "passive");
        let mut c = MsrpClient::connect(&focus_path, &me);
        let tid = c.send_empty();
        let r = c.await_response(&tid, WAIT).expect("bound");
        assert_eq!(r.head.code(), Some(200));
        c
    };
    (
        Chatter {
            ua,
            dialog,
            msrp,
            _rtp: rtp,
        },
        ok,
    )
}

/// A message as a participant received it: the CPIM From and To, the content, its MSRP
/// Message-ID.
#[derive(Debug, Clone)]
struct Got {
    from: String,
    to: String,
    content: Vec<u8>,
    message_id: String,
}

/// The next whole message on `c` (chunks joined; each answered 200).
fn recv_message(c: &mut MsrpClient) -> Option<Got> {
    let mut parts: HashMap<String, Vec<u8>> = HashMap::new();
    let until = Instant::now() + WAIT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let chunk = c.recv_request(left, true, &mut Vec::new())?;
        if chunk.head.method() != Some(&Method::Send) || chunk.body.is_empty() {
            continue;
        }
        assert_eq!(
            chunk.head.content_type.as_deref(),
            Some(&b"message/cpim"[..])
        );
        let id = chunk.get("Message-ID").expect("Message-ID");
        let body = parts.entry(id.clone()).or_default();
        body.extend_from_slice(&chunk.body);
        if chunk.flag == Some(Flag::Complete) {
            let whole = parts.remove(&id).unwrap();
            let m = CpimMessage::parse(whole.into()).expect("a CPIM body");
            return Some(Got {
                from: m.from().uri_str().to_string(),
                to: m.to()[0].uri_str().to_string(),
                content: m.body().to_vec(),
                message_id: id,
            });
        }
    }
}

/// `c` says `text` (plain text); its 200 comes back.
fn say(c: &mut Chatter, text: &[u8], chunk: usize) {
    let (_, tids) = c.msrp.send_message(text, "text/plain", chunk, &[]);
    let last = tids.last().unwrap();
    let ok = c
        .msrp
        .await_response(last, WAIT)
        .expect("200 to the last chunk");
    assert_eq!(ok.head.code(), Some(200));
}

fn leave(c: &mut Chatter) {
    let bye = c.dialog.request(&c.ua, "BYE");
    assert_status(&c.ua.request(&bye), 200);
}

fn assert_released(cpmd: &Cpmd) {
    cpmd.wait_metric("cpm_conferences", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_msrp_sinks", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_msrp_legs", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_msrp_connections", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_media_pool_ports_in_use", WAIT, |v| v == 0.0);
}

fn focus_of(ok: &cpm_engine::sip::Message) -> String {
    uri_of(&header(ok, "Contact").expect("Contact"))
}

#[test]
fn messages_fan_out_with_the_sender_in_cpim_in_order_and_a_slow_reader_blocks_nobody() {
    let cpmd = Cpmd::spawn(&[]);
    // Alice (audio + chat) creates the conference; bob and carol chat only (carol passive:
    // the focus connects to her).
    let (mut a, ok) = join(
        registered(&cpmd, "alice"),
        "sip:conf-factory@localhost",
        true,
        false,
    );
    let focus = focus_of(&ok);
    let conf = format!("{}@localhost", &focus[..focus.find('@').unwrap()]);
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus, false, false);
    let (mut c, _) = join(Ua::udp(cpmd.sip_addr()).user("carol"), &focus, false, true);

    // Each message reaches the two others, From its sender, To the conference, in order.
    for t in ["a1", "a2", "a3"] {
        say(&mut a, t.as_bytes(), 4096);
    }
    say(&mut b, b"b1", 4096);
    say(&mut c, b"c1", 4096);
    say(&mut b, b"b2", 4096);
    let mut seen: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for (who, x) in [("alice", &mut a), ("bob", &mut b), ("carol", &mut c)] {
        let want = if who == "alice" {
            3
        } else if who == "bob" {
            4
        } else {
            5
        };
        let mut ids = Vec::new();
        for _ in 0..want {
            let g = recv_message(&mut x.msrp).unwrap_or_else(|| panic!("{who} missed a message"));
            assert_eq!(g.to, conf, "To is the conference");
            assert!(!g.from.contains(who), "{who} got its own message back");
            ids.push(g.message_id.clone());
            seen.entry(who)
                .or_default()
                .push((g.from, String::from_utf8(g.content).unwrap()));
        }
        let mut uniq = ids.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len(), "a fresh Message-ID per copy");
        assert!(
            x.msrp.recv(Duration::from_millis(200)).is_none(),
            "{who}: nothing more"
        );
    }
    let from = |who: &str, sender: &str| -> Vec<String> {
        seen[who]
            .iter()
            .filter(|(f, _)| f == &format!("sip:{sender}@localhost"))
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(from("bob", "alice"), ["a1", "a2", "a3"]);
    assert_eq!(from("carol", "alice"), ["a1", "a2", "a3"]);
    assert_eq!(from("alice", "bob"), ["b1", "b2"]);
    assert_eq!(from("carol", "bob"), ["b1", "b2"]);
    assert_eq!(from("alice", "carol"), ["c1"]);
    assert_eq!(from("bob", "carol"), ["c1"]);

    // A 100 KiB message in 16 KiB chunks arrives whole at both others.
    let big: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    say(&mut b, &big, 16 * 1024);
    for x in [&mut a, &mut c] {
        let g = recv_message(&mut x.msrp).expect("the big message");
        assert_eq!(g.from, "sip:bob@localhost");
        assert_eq!(g.content, big);
    }

    // Dave joins and never reads: the others go on at full speed, dave's copies are dropped
    // once his queue is full (counted).
    let (mut d, _) = join(Ua::udp(cpmd.sip_addr()).user("dave"), &focus, false, false);
    let blob = vec![b'x'; 32 * 1024];
    let started = Instant::now();
    let n = 300;
    let mut got_b = 0;
    let mut got_c = 0;
    for i in 0..n {
        say(&mut a, &blob, 64 * 1024);
        // Bob and carol keep reading as they go.
        if i % 8 == 7 {
            while got_b <= i - 4 {
                recv_message(&mut b.msrp).expect("bob keeps receiving");
                got_b += 1;
            }
            while got_c <= i - 4 {
                recv_message(&mut c.msrp).expect("carol keeps receiving");
                got_c += 1;
            }
        }
    }
    while got_b < n {
        recv_message(&mut b.msrp).expect("bob gets every message");
        got_b += 1;
    }
    while got_c < n {
        recv_message(&mut c.msrp).expect("carol gets every message");
        got_c += 1;
    }
    eprintln!("{n} x 32 KiB fanned out in {:?}", started.elapsed());
    let dropped = cpmd.wait_metric("cpm_msrp_chat_dropped_total", WAIT, |v| v > 0.0);
    assert!(dropped > 0.0);

    // Everyone leaves: sessions closed, nothing left.
    for x in [&mut a, &mut b, &mut c, &mut d] {
        leave(x);
    }
    assert!(b.msrp.closes_within(WAIT), "bob's MSRP connection closed");
    assert_released(&cpmd);
}

/// Who may be the conference creator (registered) with an API token.
const TOKENS: &str = "alice tok-alice-0001\nbob tok-bob-0002\n";

fn api_get(cpmd: &Cpmd, token: &str, path: &str) -> serde_json::Value {
    let auth = format!("Bearer {token}");
    let r = cpm_tests::http::request(
        cpmd.http_addr(),
        "GET",
        path,
        &[("Authorization", &auth)],
        b"",
        WAIT,
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

#[test]
fn a_recorded_conference_chat_is_in_the_history() {
    let b = Cpmd::builder();
    let tokens = b.file("tokens", TOKENS);
    let cpmd = b.args(&["--api-tokens", tokens.to_str().unwrap()]).spawn();
    let (mut a, ok) = join(
        registered(&cpmd, "alice"),
        "sip:conf-factory@localhost",
        false,
        false,
    );
    let focus = focus_of(&ok);
    let conf = format!("{}@localhost", &focus[..focus.find('@').unwrap()]);
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus, false, false);

    say(&mut a, b"before the recording", 4096);
    recv_message(&mut b.msrp).expect("bob hears alice");

    // Alice asks the storage to join (REFER in her dialog with the focus): 202, then the
    // final sipfrag NOTIFY.
    let refer = a
        .dialog
        .request(&a.ua, "REFER")
        .header("Refer-To", "<sip:storage@localhost;method=INVITE>")
        .header("Contact", format!("<{}>", a.ua.contact_uri()));
    assert_status(&a.ua.request(&refer), 202);
    let n: Received = a.ua.recv_request(WAIT).expect("NOTIFY");
    assert_eq!(n.msg.method().map(|m| m.as_str()), Some("NOTIFY"));
    assert!(String::from_utf8_lossy(&n.msg.body).contains("200 OK"));
    a.ua.reply(&n, 200, "OK");

    say(&mut a, b"hello group", 4096);
    recv_message(&mut b.msrp).expect("bob hears alice");
    say(&mut b, b"hi alice", 4096);
    recv_message(&mut a.msrp).expect("alice hears bob");

    // Alice's history of the conference: the two messages, each stored once, with its sender.
    let path = format!("/api/v1/conversations/{conf}/messages");
    let deadline = Instant::now() + WAIT;
    let list = loop {
        let v = api_get(&cpmd, "tok-alice-0001", &path);
        if v["messages"].as_array().map_or(0, Vec::len) >= 2 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let msgs = list["messages"].as_array().expect("messages");
    let mut got: Vec<(String, String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["sender"].as_str().unwrap_or("").to_string(),
                m["body"].as_str().unwrap_or("").to_string(),
                m["direction"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "sip:alice@localhost".into(),
                "hello group".into(),
                "out".into()
            ),
            ("sip:bob@localhost".into(), "hi alice".into(), "in".into()),
        ],
        "{list}"
    );
    // Over the focus's a=max-size: 413 (RFC 4975 §7.2), nobody gets it.
    let huge = vec![b'x'; 1024 * 1024 + 1];
    let (_, tids) = a.msrp.send_message(&huge, "text/plain", 64 * 1024, &[]);
    let r = a.msrp.await_response(&tids[0], WAIT).expect("a response");
    assert_eq!(r.head.code(), Some(413));
    assert!(b.msrp.recv(Duration::from_millis(300)).is_none());

    // Bob did not ask: nothing in his storage.
    let bobs = api_get(&cpmd, "tok-bob-0002", &path);
    assert_eq!(bobs["messages"].as_array().map_or(0, Vec::len), 0, "{bobs}");

    leave(&mut b);
    leave(&mut a);
    assert_released(&cpmd);
}
