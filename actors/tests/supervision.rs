//! Supervision, in-process over real loopback sockets: a panic in one worker's actor restarts
//! that actor and leaves the work owned by the other worker untouched.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_actors::transport::Router;
use cpm_actors::{Config, Engine};
use cpm_engine::sip::{parse, HeaderName, Message};

/// A Call-ID owned by worker `want` of `n`.
fn call_id_for(want: usize, n: usize, tag: &str) -> String {
    (0..10_000)
        .map(|i| format!("{tag}-{i}@test"))
        .find(|c| Router::owner(Some(&Bytes::from(c.clone())), n) == want)
        .expect("some Call-ID hashes to every worker")
}

struct Peer {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Peer {
    fn new(server: SocketAddr) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Peer { sock, server }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// The next message that is not a 1xx, within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let m = parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
                if m.status().is_none_or(|c| c >= 200) {
                    return Some(m);
                }
            }
        }
        None
    }

    fn request(&self, method: &str, ruri: &str, call_id: &str, extra: &str, body: &str) -> String {
        let p = self.port();
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};rport;branch=z9hG4bK{call_id}{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{p}@localhost>;tag=f{p}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\nContact: <sip:u{p}@127.0.0.1:{p}>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

#[test]
fn a_panicking_worker_is_restarted_and_the_other_worker_goes_on() {
    let config = Config {
        sip_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        test_hooks: true,
        data_dir: std::env::temp_dir().join(format!("cpm-supervision-{}", std::process::id())),
        ..Config::default()
    };
    let engine = Engine::start(config).expect("engine starts");
    let server = engine.sip_addr();

    // Bob registers; Alice's MESSAGE to him is owned by worker 1 and waits for Bob's answer.
    let bob = Peer::new(server);
    bob.send(&bob.request(
        "REGISTER",
        "sip:bob@localhost",
        "reg-bob",
        "Expires: 300\r\n",
        "",
    ));
    assert_eq!(
        bob.recv(Duration::from_secs(5)).and_then(|m| m.status()),
        Some(200)
    );
    let alice = Peer::new(server);
    let cid = call_id_for(1, 2, "msg");
    alice.send(&alice.request(
        "MESSAGE",
        "sip:bob@localhost",
        &cid,
        "Content-Type: text/plain\r\n",
        "hello",
    ));
    let fwd = bob
        .recv(Duration::from_secs(5))
        .expect("bob gets the MESSAGE");
    assert_eq!(&fwd.body[..], b"hello");

    // Worker 0 panics on a request it owns.
    let carol = Peer::new(server);
    let boom = call_id_for(0, 2, "boom");
    carol.send(&carol.request(
        "OPTIONS",
        "sip:localhost",
        &boom,
        "X-Cpm-Test: panic\r\n",
        "",
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.shared().metrics[0]
        .restarts
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(Instant::now() < deadline, "worker 0 was not restarted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        engine.shared().metrics[1]
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Bob answers: worker 1 still holds the delivery and relays the 200 to Alice.
    let mut ok = cpm_engine::sip::builder::local_response(&fwd, 200, "OK");
    ok.headers.remove(&HeaderName::Server);
    bob.sock.send_to(&ok.to_bytes(), server).unwrap();
    let relayed = alice
        .recv(Duration::from_secs(5))
        .expect("alice gets the relayed 200");
    assert_eq!(relayed.status(), Some(200));
    assert_eq!(
        relayed.call_id().map(|c| c.to_vec()),
        Some(cid.into_bytes())
    );

    // The restarted worker 0 serves again.
    let again = call_id_for(0, 2, "again");
    carol.send(&carol.request("OPTIONS", "sip:localhost", &again, "", ""));
    assert_eq!(
        carol.recv(Duration::from_secs(5)).and_then(|m| m.status()),
        Some(200)
    );
    engine.shutdown(Duration::ZERO, Duration::from_secs(1));
}
