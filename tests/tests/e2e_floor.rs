//! Half-duplex (push-to-talk) conferences through the real cpmd (issue 6, decision 0015): an
//! ad-hoc conference created at `sip:conf-factory@localhost;floor=half-duplex`, participants
//! offering `m=application TCP/BFCP` (RFC 8856) and speaking BFCP over TCP (RFC 8855) with
//! the engine's codec. Checked: the SDP answer, Hello, grant, queue (the second requester is
//! granted at the first one's release), release, revocation at the maximum talk time, a
//! holder leaving, garbage on a connection (Error, and the conference goes on), and that only
//! the holder is heard (Goertzel on what each participant receives).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use cpm_engine::conference::floor::bfcp::{
    Attribute, ErrorCode, Framer, Message as Bfcp, Primitive, RequestStatus,
};
use cpm_tests::dialog::{uri_of, Dialog};
use cpm_tests::http::request;
use cpm_tests::mixing::{self, assert_hears};
use cpm_tests::sdp::{self, Sdp, Stream};
use cpm_tests::{assert_status, header, Cpmd, Ua};

const WAIT: Duration = Duration::from_secs(5);
const ADMIN: &str = "admin-secret-token";
const SDP: &str = "application/sdp";

fn spawn() -> Cpmd {
    Cpmd::spawn(&["--api-admin-token", ADMIN])
}

/// A participant: SIP agent, RTP socket, dialog, the focus's RTP address, and its BFCP
/// parameters from the answer (`None`: listen-only).
struct Party {
    ua: Ua,
    rtp: UdpSocket,
    dialog: Dialog,
    focus_media: SocketAddr,
    bfcp: Option<BfcpParams>,
}

#[derive(Debug, Clone, Copy)]
struct BfcpParams {
    addr: SocketAddr,
    conf: u32,
    user: u16,
}

/// The BFCP m-section we offer: client role, active TCP (RFC 8856 §5).
const BFCP_OFFER: &str = "m=application 9 TCP/BFCP *\r\na=setup:active\r\na=connection:new\r\n\
                          a=floorctrl:c-only\r\n";

fn attr<'a>(section: &'a str, name: &str) -> Option<&'a str> {
    section
        .lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
}

/// The focus's BFCP stream in its SDP (answer or offer), checked against RFC 8856 as cpmd
/// writes it; `None` when there is none.
#[track_caller]
fn bfcp_params(text: &str, ip: std::net::IpAddr) -> Option<BfcpParams> {
    let at = text.find("m=application ")?;
    let sec = &text[at..];
    let port: u16 = sec["m=application ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(port != 0, "{text}");
    assert!(
        sec.starts_with(&format!("m=application {port} TCP/BFCP *")),
        "{text}"
    );
    assert_eq!(attr(sec, "floorctrl"), Some("s-only"), "{text}");
    assert_eq!(attr(sec, "setup"), Some("passive"), "{text}");
    assert_eq!(attr(sec, "floorid"), Some("1 mstrm:1"), "{text}");
    assert!(text.contains("a=label:1\r\n"), "{text}");
    Some(BfcpParams {
        addr: SocketAddr::new(ip, port),
        conf: attr(sec, "confid").unwrap().parse().unwrap(),
        user: attr(sec, "userid").unwrap().parse().unwrap(),
    })
}

/// INVITEs `uri` (PCMU; with BFCP when `bfcp`), ACKs; the answer's BFCP stream checked.
#[track_caller]
fn join(mut ua: Ua, uri: &str, bfcp: bool) -> (Party, cpm_engine::sip::Message) {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rtp.local_addr().unwrap().port();
    let mut body = sdp::body(1, &[Stream::audio(port).formats(&[0])]);
    if bfcp {
        body.push_str(BFCP_OFFER);
    }
    let invite = ua
        .req("INVITE", uri)
        .header("Contact", format!("<{}>", ua.contact_uri()))
        .body(SDP, body);
    let ok = ua.request(&invite);
    assert_status(&ok, 200);
    let dialog = Dialog::uac(&invite, &ok);
    ua.send_req(&dialog.ack(&ua, invite.cseq().unwrap()));
    let text = String::from_utf8_lossy(&ok.body).into_owned();
    let answer = Sdp::parse(&ok.body);
    let params = bfcp_params(&text, answer.rtp_addr(0).ip());
    assert_eq!(params.is_some(), bfcp, "BFCP in the answer:\n{text}");
    let party = Party {
        ua,
        rtp,
        dialog,
        focus_media: answer.rtp_addr(0),
        bfcp: params,
    };
    (party, ok)
}

#[track_caller]
fn leave(p: &mut Party) {
    let bye = p.dialog.request(&p.ua, "BYE");
    assert_status(&p.ua.request(&bye), 200);
}

/// A BFCP client connection (RFC 8855 over TCP).
struct Client {
    stream: TcpStream,
    framer: Framer,
    p: BfcpParams,
    tid: u16,
}

impl Client {
    #[track_caller]
    fn connect(p: BfcpParams) -> Client {
        let stream = TcpStream::connect(p.addr).expect("connect to BFCP");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            framer: Framer::default(),
            p,
            tid: 0,
        }
    }

    /// Connects and says Hello; HelloAck expected.
    #[track_caller]
    fn hello(p: BfcpParams) -> Client {
        let mut c = Client::connect(p);
        c.send(Primitive::Hello, vec![]);
        let ack = c.recv();
        assert_eq!(ack.primitive, Primitive::HelloAck, "{ack:?}");
        assert_eq!((ack.conference_id, ack.user_id), (p.conf, p.user));
        c
    }

    fn send(&mut self, primitive: Primitive, attrs: Vec<Attribute>) -> u16 {
        self.tid = self.tid.wrapping_add(1).max(1);
        let mut m = Bfcp::new(primitive, self.p.conf, self.tid, self.p.user);
        m.attrs = attrs;
        self.stream.write_all(&m.to_bytes().unwrap()).unwrap();
        self.tid
    }

    #[track_caller]
    fn recv(&mut self) -> Bfcp {
        self.try_recv(WAIT).expect("a BFCP message")
    }

    fn try_recv(&mut self, wait: Duration) -> Option<Bfcp> {
        let end = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        loop {
            if let Some(m) = self.framer.next_message() {
                return Some(m.expect("a BFCP message that decodes"));
            }
            let left = end.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.framer.push(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Sends FloorRequest for floor 1; returns the request id and the first status.
    #[track_caller]
    fn request(&mut self) -> (u16, RequestStatus, u8) {
        let tid = self.send(Primitive::FloorRequest, vec![Attribute::FloorId(1)]);
        let m = self.recv();
        assert_eq!(m.transaction_id, tid, "{m:?}");
        status(&m)
    }

    /// The next FloorRequestStatus (server-initiated: transaction id 0).
    #[track_caller]
    fn next_status(&mut self) -> (u16, RequestStatus, u8) {
        status(&self.recv())
    }

    #[track_caller]
    fn release(&mut self, id: u16) -> (u16, RequestStatus, u8) {
        let tid = self.send(Primitive::FloorRelease, vec![Attribute::FloorRequestId(id)]);
        let m = self.recv();
        assert_eq!(m.transaction_id, tid, "{m:?}");
        status(&m)
    }
}

/// (request id, status, queue position) of a FloorRequestStatus.
#[track_caller]
fn status(m: &Bfcp) -> (u16, RequestStatus, u8) {
    assert_eq!(m.primitive, Primitive::FloorRequestStatus, "{m:?}");
    let Some(Attribute::FloorRequestInformation(g)) = m.attrs.first() else {
        panic!("no FLOOR-REQUEST-INFORMATION: {m:?}");
    };
    let st = g.attrs.iter().find_map(|a| match a {
        Attribute::OverallRequestStatus(o) => o.attrs.iter().find_map(|a| match a {
            Attribute::RequestStatus {
                status,
                queue_position,
            } => Some((*status, *queue_position)),
            _ => None,
        }),
        _ => None,
    });
    let (s, q) = st.unwrap_or_else(|| panic!("no REQUEST-STATUS: {m:?}"));
    (g.id, s, q)
}

fn error_code(m: &Bfcp) -> Option<ErrorCode> {
    m.attrs.iter().find_map(|a| match a {
        Attribute::ErrorCode { code, .. } => Some(*code),
        _ => None,
    })
}

// ---- audio ---------------------------------------------------------------------------------

/// Sends each party's tone (µ-law, 20 ms) for `dur` and returns what each heard.
fn play(parties: &[&Party], freqs: &[f64], dur: Duration) -> Vec<Vec<i16>> {
    let socks: Vec<_> = parties
        .iter()
        .map(|p| (p.rtp.try_clone().unwrap(), p.focus_media))
        .collect();
    let freqs: Vec<_> = freqs.iter().map(|&f| Some(f)).collect();
    mixing::play(&socks, &freqs, dur, 0x2000)
}

fn floor_of(cpmd: &Cpmd, id: &str) -> serde_json::Value {
    let auth = format!("Bearer {ADMIN}");
    let r = request(
        cpmd.http_addr(),
        "GET",
        "/api/v1/conferences",
        &[("Authorization", auth.as_str())],
        b"",
        WAIT,
    )
    .expect("API");
    let list = r.json();
    let conf = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
        .clone();
    conf["floor"].clone()
}

#[track_caller]
fn assert_released(cpmd: &Cpmd) {
    cpmd.wait_metric("cpm_conferences", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_media_pool_ports_in_use", WAIT, |v| v == 0.0);
}

fn registered(cpmd: &Cpmd, user: &str) -> Ua {
    let mut ua = Ua::udp(cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn floor_grant_queue_release_leave_and_only_the_holder_heard() {
    let cpmd = spawn();
    let (mut a, ok) = join(
        registered(&cpmd, "alice"),
        "sip:conf-factory@localhost;floor=half-duplex",
        true,
    );
    let focus = uri_of(&header(&ok, "Contact").unwrap());
    let id = focus[4..focus.find('@').unwrap()].to_string();
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus, true);
    // Carol offers no BFCP: listen-only.
    let (mut c, _) = join(Ua::udp(cpmd.sip_addr()).user("carol"), &focus, false);
    let (pa, pb) = (a.bfcp.unwrap(), b.bfcp.unwrap());
    assert_eq!(pa.conf, pb.conf);
    assert_ne!(pa.user, pb.user);
    let (fa, fb, fc) = (500.0, 800.0, 1300.0);

    // Nobody holds the floor: nobody is heard.
    let heard = play(&[&a, &b, &c], &[fa, fb, fc], Duration::from_millis(1500));
    for (h, who) in heard.iter().zip(["alice", "bob", "carol"]) {
        assert_hears(h, &[], &[fa, fb, fc], who);
    }

    // Alice is granted the floor, bob is queued (position 1).
    let mut ca = Client::hello(pa);
    let mut cb = Client::hello(pb);
    let (ra, st, _) = ca.request();
    assert_eq!(st, RequestStatus::Granted);
    let (rb, st, pos) = cb.request();
    assert_eq!((st, pos), (RequestStatus::Pending, 1));
    assert_eq!(floor_of(&cpmd, &id)["queue"].as_array().unwrap().len(), 1);
    let heard = play(&[&a, &b, &c], &[fa, fb, fc], Duration::from_millis(2000));
    assert_hears(&heard[1], &[fa], &[fb, fc], "bob (alice holds)");
    assert_hears(&heard[2], &[fa], &[fb, fc], "carol (alice holds)");
    assert_hears(&heard[0], &[], &[fa, fb, fc], "alice (holds)");

    // Alice releases: bob is granted at once.
    assert_eq!(ca.release(ra), (ra, RequestStatus::Released, 0));
    assert_eq!(cb.next_status(), (rb, RequestStatus::Granted, 0));
    let heard = play(&[&a, &b, &c], &[fa, fb, fc], Duration::from_millis(2000));
    assert_hears(&heard[0], &[fb], &[fa, fc], "alice (bob holds)");
    assert_hears(&heard[2], &[fb], &[fa, fc], "carol (bob holds)");
    let floor = floor_of(&cpmd, &id);
    assert!(floor["holder"].is_u64(), "{floor}");

    // Garbage that frames but does not decode (an attribute overrunning the message): an
    // Error, and the connection goes on. Garbage that does not frame (version 7) on a second
    // connection: an Error, and that connection is closed. The conference goes on.
    let mut bad = Bfcp::new(Primitive::FloorQuery, pa.conf, 99, pa.user)
        .to_bytes()
        .unwrap()
        .to_vec();
    bad[3] = 1; // one payload word...
    bad.extend_from_slice(&[2 << 1, 40, 0, 1]); // ...holding a FLOOR-ID claiming 40 bytes
    ca.stream.write_all(&bad).unwrap();
    let e = ca.recv();
    assert_eq!(
        (e.primitive, e.transaction_id),
        (Primitive::Error, 99),
        "{e:?}"
    );
    let mut junk = Client::connect(pa);
    junk.stream.write_all(&[0xe0; 16]).unwrap();
    let e = junk.recv();
    assert_eq!(e.primitive, Primitive::Error, "{e:?}");
    assert!(error_code(&e).is_some(), "{e:?}");
    assert!(junk.try_recv(Duration::from_secs(1)).is_none(), "closed");
    // A connection for a conference that does not exist: Error 1.
    let mut stray = Client::connect(BfcpParams {
        conf: pa.conf.wrapping_add(1000),
        ..pa
    });
    stray.send(Primitive::Hello, vec![]);
    let e = stray.recv();
    assert_eq!(
        error_code(&e),
        Some(ErrorCode::CONFERENCE_DOES_NOT_EXIST),
        "{e:?}"
    );
    // A user id that is not ours: Error 2.
    let mut wrong = Client::connect(BfcpParams {
        user: pa.user.wrapping_add(500),
        ..pa
    });
    wrong.send(Primitive::Hello, vec![]);
    assert_eq!(
        error_code(&wrong.recv()),
        Some(ErrorCode::USER_DOES_NOT_EXIST)
    );

    // Alice queues again; bob leaves while holding the floor: alice is granted.
    let (ra2, st, pos) = ca.request();
    assert_eq!((st, pos), (RequestStatus::Pending, 1));
    leave(&mut b);
    assert_eq!(ca.next_status(), (ra2, RequestStatus::Granted, 0));
    let heard = play(&[&a, &c], &[fa, fc], Duration::from_millis(2000));
    assert_hears(&heard[1], &[fa], &[fb, fc], "carol (alice holds again)");
    // Bob's BFCP connection was closed with his leaving.
    assert!(cb.try_recv(Duration::from_secs(1)).is_none());

    leave(&mut c);
    leave(&mut a);
    assert!(
        ca.try_recv(Duration::from_secs(2)).is_none(),
        "closed at the end"
    );
    assert_released(&cpmd);
}

#[test]
fn floor_is_revoked_at_the_max_talk_time() {
    let cpmd = spawn();
    let (mut x, ok) = join(
        registered(&cpmd, "xavier"),
        "sip:conf-factory@localhost;floor=half-duplex;max-talk-time=1",
        true,
    );
    let focus = uri_of(&header(&ok, "Contact").unwrap());
    let (mut y, _) = join(Ua::udp(cpmd.sip_addr()).user("yves"), &focus, true);
    let mut cx = Client::hello(x.bfcp.unwrap());
    let mut cy = Client::hello(y.bfcp.unwrap());
    let t0 = Instant::now();
    let (rx, st, _) = cx.request();
    assert_eq!(st, RequestStatus::Granted);
    let (ry, st, _) = cy.request();
    assert_eq!(st, RequestStatus::Pending);
    // After a second, x's floor is revoked and y granted; a second later y's is revoked.
    assert_eq!(cx.next_status(), (rx, RequestStatus::Revoked, 0));
    assert_eq!(cy.next_status(), (ry, RequestStatus::Granted, 0));
    let held = t0.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_millis(1900),
        "{held:?}"
    );
    let t1 = Instant::now();
    assert_eq!(cy.next_status(), (ry, RequestStatus::Revoked, 0));
    assert!(
        t1.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t1.elapsed()
    );
    // The floor is free again: x is granted at once.
    assert_eq!(cx.request().1, RequestStatus::Granted);
    // FloorQuery: the status of floor 1, x holding it.
    cy.send(Primitive::FloorQuery, vec![Attribute::FloorId(1)]);
    let st = cy.recv();
    assert_eq!(st.primitive, Primitive::FloorStatus, "{st:?}");
    assert!(st
        .attrs
        .iter()
        .any(|a| matches!(a, Attribute::FloorRequestInformation(_))));
    leave(&mut y);
    leave(&mut x);
    assert_released(&cpmd);
}

#[test]
fn predefined_half_duplex_conference_offers_bfcp_when_it_calls() {
    let builder = Cpmd::builder();
    let file = builder.file(
        "conferences.toml",
        "[[conference]]\nname = \"ptt\"\nparticipants = [\"sip:alice@localhost\", \"sip:bob@localhost\"]\n\
         floor = \"half-duplex\"\nmax_talk_time = 20\n",
    );
    let cpmd = builder
        .args(&[
            "--api-admin-token",
            ADMIN,
            "--conferences-file",
            file.to_str().unwrap(),
        ])
        .spawn();
    let mut alice = registered(&cpmd, "alice");
    let mut bob = registered(&cpmd, "bob");
    let auth = format!("Bearer {ADMIN}");
    let r = request(
        cpmd.http_addr(),
        "POST",
        "/api/v1/conferences/ptt/start",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        b"{}",
        WAIT,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // The focus offers BFCP to both; alice accepts it (client, active), bob declines it
    // (port 0) and is listen-only.
    let mut floors = Vec::new();
    for (ua, accept) in [(&mut alice, true), (&mut bob, false)] {
        let inv = ua.recv_request(WAIT).expect("INVITE from the focus");
        assert_eq!(inv.msg.method().map(|m| m.as_str()), Some("INVITE"));
        let offer = String::from_utf8_lossy(&inv.msg.body).into_owned();
        let focus_ip = Sdp::parse(&inv.msg.body).rtp_addr(0).ip();
        floors.push(bfcp_params(&offer, focus_ip).expect("BFCP in the focus's offer"));
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut answer = sdp::body(
            1,
            &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[0])],
        );
        answer.push_str(if accept {
            BFCP_OFFER
        } else {
            "m=application 0 TCP/BFCP *\r\n"
        });
        let contact = format!("<{}>", ua.contact_uri());
        ua.reply_with(
            &inv,
            200,
            "OK",
            &[("Contact", contact.as_str())],
            Some((SDP, answer.as_bytes())),
        );
        let ack = ua.recv_request(WAIT).expect("ACK");
        assert_eq!(ack.msg.method().map(|m| m.as_str()), Some("ACK"));
    }
    // Alice is granted the floor; the API shows her holding it.
    let mut ca = Client::hello(floors[0]);
    assert_eq!(ca.request().1, RequestStatus::Granted);
    let floor = floor_of(&cpmd, "ptt");
    assert_eq!(floor["holder"], u64::from(floors[0].user), "{floor}");
    // Bob's user id names no floor participant: Error 2.
    let mut cb = Client::connect(floors[1]);
    cb.send(Primitive::Hello, vec![]);
    assert_eq!(error_code(&cb.recv()), Some(ErrorCode::USER_DOES_NOT_EXIST));
    // Ended through the API: BYE to both, the BFCP connection closed.
    let r = request(
        cpmd.http_addr(),
        "POST",
        "/api/v1/conferences/ptt/end",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        b"{}",
        WAIT,
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    for ua in [&mut alice, &mut bob] {
        let bye = ua.recv_request(WAIT).expect("BYE");
        ua.reply(&bye, 200, "OK");
    }
    assert!(
        ca.try_recv(Duration::from_secs(2)).is_none(),
        "closed at the end"
    );
    assert_released(&cpmd);
}
