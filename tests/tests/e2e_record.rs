//! Recording a session into network storage (CPM.md §5 fig. 12), session history and MSRP
//! charging, end to end with the real cpmd: a party REFERs the storage controller
//! (`sip:storage@localhost;method=INVITE`), cpmd answers 202 and NOTIFY itself, and every
//! SEND relayed from then on (both directions) is stored for both parties until a REFER with
//! `method=BYE`. The storage is read back from cpmd's SQLite database, read-only.

use std::path::Path;
use std::time::{Duration, Instant};

use cpm_engine::msrp::Flag;
use cpm_engine::sip::Message;
use cpm_tests::dialog::Dialog;
use cpm_tests::msrp::{MsrpClient, Part};
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

fn start() -> (Cpmd, Ua, Ua) {
    start_with(|cpmd| cpmd)
}

/// cpmd (passed through `prepare` before the users register), alice and bob registered.
fn start_with(prepare: impl FnOnce(Cpmd) -> Cpmd) -> (Cpmd, Ua, Ua) {
    let cpmd = prepare(Cpmd::builder().msrp_on_a_picked_port().spawn());
    let bob = registered(&cpmd, "bob");
    let alice = registered(&cpmd, "alice");
    (cpmd, alice, bob)
}

fn chat_sdp(path: &str, setup: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=u 77 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim text/plain application/octet-stream\r\n\
         {extra}a=path:{path}\r\na=setup:{setup}\r\n"
    )
}

fn attr(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let prefix = format!("a={name}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no a={name} in:\n{text}"))
        .to_string()
}

#[track_caller]
fn expect_request(ua: &mut Ua, want: &str) -> Received {
    let got = ua.recv_request(WAIT).unwrap_or_else(|| panic!("no {want}"));
    assert_eq!(
        got.msg.method().map(|m| m.as_str()).unwrap_or(""),
        want,
        "got:\n{}",
        got.msg
    );
    got
}

#[track_caller]
fn final_response(ua: &mut Ua, req: &Req) -> Message {
    ua.await_response(req, WAIT, |c| c >= 200)
        .unwrap_or_else(|| panic!("no final response to {}", req.method))
}

fn header(m: &Message, name: &str) -> String {
    m.headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .unwrap_or_default()
}

/// An established chat: dialogs, MSRP connections, A's Call-ID.
struct Chat {
    a: Dialog,
    b: Dialog,
    alice: MsrpClient,
    bob: MsrpClient,
    call_id: String,
    /// The SDP bob got, and the SDP alice got.
    sdp: [String; 2],
}

impl Chat {
    /// alice invites bob to a chat (`extra` SDP lines in both offer and answer).
    fn setup(alice: &mut Ua, bob: &mut Ua, extra: &str) -> Chat {
        let contact = format!("<{}>", alice.contact_uri());
        let invite = alice
            .req("INVITE", "sip:bob@localhost")
            .header("Contact", contact)
            .body(SDP, chat_sdp(ALICE, "actpass", extra));
        alice.send_req(&invite);
        let inv = expect_request(bob, "INVITE");
        let b_uri = attr(&inv.msg.body, "path");
        let contact = format!("<{}>", bob.contact_uri());
        bob.reply_with(
            &inv,
            200,
            "OK",
            &[("Contact", &contact)],
            Some((SDP, chat_sdp(BOB, "active", extra).as_bytes())),
        );
        let b = Dialog::uas(&inv.msg, bob.tag());
        let resp = final_response(alice, &invite);
        assert_status(&resp, 200);
        alice.ack(&invite, &resp);
        expect_request(bob, "ACK");
        let a = Dialog::uac(&invite, &resp);
        let a_uri = attr(&resp.body, "path");
        let mut bob_msrp = MsrpClient::connect(&b_uri, BOB);
        let tid = bob_msrp.send_empty();
        let ok = bob_msrp.await_response(&tid, WAIT).expect("bound");
        assert_eq!(ok.head.code(), Some(200));
        let alice_msrp = MsrpClient::connect(&a_uri, ALICE);
        Chat {
            call_id: a.call_id.clone(),
            a,
            b,
            alice: alice_msrp,
            bob: bob_msrp,
            sdp: [
                String::from_utf8_lossy(&inv.msg.body).into_owned(),
                String::from_utf8_lossy(&resp.body).into_owned(),
            ],
        }
    }

    /// `from` sends `text`; the other gets it intact, the sender its 200.
    fn say(&mut self, alice_speaks: bool, text: &str) {
        let (tx, rx) = if alice_speaks {
            (&mut self.alice, &mut self.bob)
        } else {
            (&mut self.bob, &mut self.alice)
        };
        let (mid, tids) = tx.send_message(text.as_bytes(), "text/plain", 4096, &[]);
        let got = rx
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("the SEND relayed");
        assert_eq!(got.body, text.as_bytes());
        assert_eq!(got.get("Message-ID"), Some(mid));
        let ok = tx.await_response(&tids[0], WAIT).expect("200");
        assert_eq!(ok.head.code(), Some(200));
    }

    fn bye(&mut self, alice: &mut Ua, bob: &mut Ua) {
        let bye = self.a.request(alice, "BYE");
        alice.send_req(&bye);
        let got = expect_request(bob, "BYE");
        bob.reply(&got, 200, "OK");
        assert_status(&final_response(alice, &bye), 200);
    }
}

/// `ua` REFERs the storage in `dialog` with `method`; cpmd answers 202, then the final NOTIFY
/// (RFC 3515 §2.4.5); `other` sees nothing of it.
fn refer_storage(ua: &mut Ua, dialog: &mut Dialog, other: &mut Ua, method: &str) {
    let refer = dialog.request(ua, "REFER").header(
        "Refer-To",
        format!("<sip:storage@localhost;method={method}>"),
    );
    ua.send_req(&refer);
    assert_status(&final_response(ua, &refer), 202);
    let notify = expect_request(ua, "NOTIFY");
    assert!(dialog.owns(&notify.msg), "NOTIFY in the referrer's dialog");
    assert!(header(&notify.msg, "Event").starts_with("refer"));
    assert!(header(&notify.msg, "Subscription-State").starts_with("terminated"));
    assert!(header(&notify.msg, "Content-Type").starts_with("message/sipfrag"));
    assert_eq!(&notify.msg.body[..], b"SIP/2.0 200 OK\r\n");
    ua.reply(&notify, 200, "OK");
    other.expect_silence(Duration::from_millis(200), "the REFER is not relayed");
}

fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("storage.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("storage.db")
}

/// A stored message row: owner, direction, body, content type, the file's path.
type Row = (String, String, Vec<u8>, String, Option<String>);

/// `(owner, direction, body, content_type, file path)` of the session's stored messages,
/// once `want` rows are there (storage writes are asynchronous).
fn stored(dir: &Path, session: &str, want: usize) -> Vec<Row> {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = db(dir);
        let mut st = c
            .prepare(
                "SELECT m.owner, m.direction, m.body, m.content_type, f.path FROM messages m
                 LEFT JOIN files f ON f.id = m.file_id WHERE m.session_id = ?1 ORDER BY m.id",
            )
            .unwrap();
        let rows: Vec<_> = st
            .query_map([session], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// REFER on → chat both ways → REFER off → more chat: exactly the messages between on and off
/// are stored, for both parties, with the direction of each owner; the chat never stops.
/// Both parties get a history entry (chat, with the end reason); the stop CDR carries the
/// MSRP leg's figures.
#[test]
fn refer_records_exactly_between_on_and_off_for_both_parties() {
    let (cpmd, mut alice, mut bob) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, "");
    chat.say(true, "before recording");
    refer_storage(&mut alice, &mut chat.a, &mut bob, "INVITE");
    chat.say(true, "recorded one");
    chat.say(false, "recorded two");
    refer_storage(&mut bob, &mut chat.b, &mut alice, "BYE");
    chat.say(true, "after recording");
    chat.bye(&mut alice, &mut bob);

    let rows = stored(&cpmd.data_dir(), &chat.call_id, 4);
    std::thread::sleep(Duration::from_millis(300));
    let rows_later = stored(&cpmd.data_dir(), &chat.call_id, 4);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows_later.len(), 4, "nothing else stored");
    let has = |owner: &str, dir: &str, body: &str| {
        rows.iter().any(|r| {
            r.0 == format!("sip:{owner}@localhost")
                && r.1 == dir
                && r.2 == body.as_bytes()
                && r.3 == "text/plain"
        })
    };
    assert!(has("alice", "out", "recorded one"), "{rows:?}");
    assert!(has("bob", "in", "recorded one"), "{rows:?}");
    assert!(has("alice", "in", "recorded two"), "{rows:?}");
    assert!(has("bob", "out", "recorded two"), "{rows:?}");

    // History: one entry each, a chat, closed with the CDR's reason.
    let cdr = cpmd.wait_cdr(&chat.call_id, "stop", WAIT);
    let reason = cdr["end_reason"].as_str().unwrap().to_string();
    assert_eq!(reason, "bye-caller");
    let deadline = Instant::now() + WAIT;
    let history = loop {
        let c = db(&cpmd.data_dir());
        let mut st = c
            .prepare(
                "SELECT owner, peer, kind, end_reason FROM sessions
                 WHERE end_reason IS NOT NULL ORDER BY owner",
            )
            .unwrap();
        let rows: Vec<(String, String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if rows.len() >= 2 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let a = "sip:alice@localhost".to_string();
    let b = "sip:bob@localhost".to_string();
    let (chat_kind, r) = ("chat".to_string(), reason.clone());
    assert_eq!(
        history,
        vec![
            (a.clone(), b.clone(), chat_kind.clone(), r.clone()),
            (b, a, chat_kind, r)
        ]
    );

    // Charging: the message leg's figures (alice 3 messages, bob 1 plus his empty bind).
    let leg = cdr["legs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["media"] == "message")
        .unwrap_or_else(|| panic!("no MSRP leg in {cdr}"))
        .clone();
    let m = &leg["msrp"];
    assert_eq!(m["messages"]["from_a"], 3, "{leg}");
    assert!(m["messages"]["from_b"].as_u64().unwrap() >= 1, "{leg}");
    let text_bytes =
        ("before recording".len() + "recorded one".len() + "after recording".len()) as u64;
    assert_eq!(m["bytes"]["from_a"], text_bytes, "{leg}");
    assert_eq!(m["bytes"]["from_b"], "recorded two".len() as u64, "{leg}");
    assert_eq!(m["reports_generated"], 0);
    assert_eq!(leg["from_a"]["bytes"], text_bytes);
}

/// bob's settings say "record my sessions": the session is recorded from its start, without
/// a REFER (the settings are read from storage when cpmd starts).
#[test]
fn a_user_setting_records_from_the_start() {
    let (cpmd, mut alice, mut bob) = start_with(|cpmd| {
        let c = rusqlite::Connection::open(cpmd.data_dir().join("storage.db")).unwrap();
        c.execute(
            "INSERT INTO settings (owner, storage, record_sessions) VALUES (?1, 'all', 1)",
            ["sip:bob@localhost"],
        )
        .unwrap();
        drop(c);
        cpmd.crash_and_restart()
    });
    let mut chat = Chat::setup(&mut alice, &mut bob, "");
    chat.say(true, "from the start");
    chat.say(false, "indeed");
    refer_storage(&mut alice, &mut chat.a, &mut bob, "BYE");
    chat.say(true, "not stored");
    chat.bye(&mut alice, &mut bob);
    let rows = stored(&cpmd.data_dir(), &chat.call_id, 4);
    std::thread::sleep(Duration::from_millis(300));
    let bodies: Vec<(String, String)> = stored(&cpmd.data_dir(), &chat.call_id, 4)
        .into_iter()
        .map(|r| (r.0, String::from_utf8_lossy(&r.2).into_owned()))
        .collect();
    assert_eq!(rows.len(), 4, "{bodies:?}");
    for owner in ["sip:alice@localhost", "sip:bob@localhost"] {
        for text in ["from the start", "indeed"] {
            assert!(
                bodies.contains(&(owner.to_string(), text.to_string())),
                "{owner} {text}: {bodies:?}"
            );
        }
    }
}

/// A file sent while recording is stored on disk (one copy per party), its message rows
/// referencing it.
#[test]
fn a_recorded_file_is_stored_on_disk() {
    let (cpmd, mut alice, mut bob) = start();
    let mut chat = Chat::setup(&mut alice, &mut bob, "");
    refer_storage(&mut alice, &mut chat.a, &mut bob, "INVITE");
    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    let (_, _) = chat
        .alice
        .send_message(&file, "application/octet-stream", 65536, &[]);
    let mut got = Vec::new();
    while got.len() < file.len() {
        let c = chat
            .bob
            .recv_request(WAIT, true, &mut Vec::new())
            .expect("a chunk");
        got.extend_from_slice(&c.body);
    }
    assert!(got == file);
    let rows = stored(&cpmd.data_dir(), &chat.call_id, 2);
    assert_eq!(
        rows.len(),
        2,
        "{:?}",
        rows.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (owner, _, body, ct, path) in &rows {
        assert!(body.is_empty(), "the bytes are in the file");
        assert_eq!(ct, "application/octet-stream");
        let path = path.as_ref().unwrap_or_else(|| panic!("{owner}: no file"));
        let on_disk = std::fs::read(cpmd.data_dir().join(path)).unwrap();
        assert!(on_disk == file, "{owner}'s copy intact");
    }
    chat.bye(&mut alice, &mut bob);
}

/// RFC 5547 §8: a 1 MiB transfer is interrupted after 512 KiB (the sender closes); a new
/// session with `a=file-range:524289-1048576` resumes it: cpmd passes file-selector and
/// file-range through in both directions and keeps the Byte-Ranges, so bob completes the file.
#[test]
fn an_interrupted_file_transfer_resumes_with_file_range() {
    const TOTAL: usize = 1_048_576;
    const HALF: usize = 524_288;
    let (_cpmd, mut alice, mut bob) = start();
    let file: Vec<u8> = (0..TOTAL as u32)
        .map(|i| (i * 31 + i / 509) as u8)
        .collect();
    let selector =
        "a=file-selector:name:\"big.bin\" type:application/octet-stream size:1048576\r\n";
    let receive = |rx: &mut MsrpClient,
                   into: &mut Vec<u8>,
                   ranges: &mut Vec<(String, Option<Flag>)>,
                   until: usize| {
        while into.len() < until {
            let c = rx
                .recv_request(WAIT, true, &mut Vec::new())
                .expect("a chunk");
            into.extend_from_slice(&c.body);
            ranges.push((c.get("Byte-Range").unwrap(), c.flag));
        }
    };

    let mut first = Chat::setup(&mut alice, &mut bob, selector);
    let part = Part {
        message_id: "bigfile1",
        offset: 0,
        total: TOTAL as u64,
        content_type: "application/octet-stream",
        chunk: 65_536,
    };
    first.alice.send_part(&part, &file[..HALF], &[]);
    let (mut got, mut ranges) = (Vec::new(), Vec::new());
    receive(&mut first.bob, &mut got, &mut ranges, HALF);
    assert_eq!(ranges.len(), 8);
    assert_eq!(
        ranges[0],
        ("1-65536/1048576".to_string(), Some(Flag::Continues))
    );
    assert_eq!(ranges[7].0, "458753-524288/1048576");
    assert_eq!(
        ranges[7].1,
        Some(Flag::Continues),
        "the message is unfinished"
    );
    // The sender goes away mid-transfer, then hangs up.
    first
        .alice
        .stream()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    first.bye(&mut alice, &mut bob);

    let range = "a=file-range:524289-1048576\r\n";
    let mut second = Chat::setup(&mut alice, &mut bob, &format!("{selector}{range}"));
    for (who, sdp) in ["bob's offer", "alice's answer"].iter().zip(&second.sdp) {
        assert!(sdp.contains("a=file-range:524289-1048576"), "{who}: {sdp}");
        assert!(
            sdp.contains("a=file-selector:name:\"big.bin\""),
            "{who}: {sdp}"
        );
    }
    let part = Part {
        offset: HALF as u64,
        ..part
    };
    second.alice.send_part(&part, &file[HALF..], &[]);
    let mut ranges = Vec::new();
    receive(&mut second.bob, &mut got, &mut ranges, TOTAL);
    assert_eq!(ranges.len(), 8);
    assert_eq!(
        ranges[0],
        ("524289-589824/1048576".to_string(), Some(Flag::Continues))
    );
    assert_eq!(
        ranges[7],
        ("983041-1048576/1048576".to_string(), Some(Flag::Complete))
    );
    assert!(got == file, "bob has the whole file");
    second.bye(&mut alice, &mut bob);
}
