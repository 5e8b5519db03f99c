//! The daemon as a process: management endpoints, garbage on the wire, an injected worker
//! panic, and graceful shutdown on SIGTERM/SIGINT.

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use cpm_tests::http::has_family;
use cpm_tests::{assert_status, Cpmd, Transport, Ua};

const METRICS: [&str; 7] = [
    "cpm_sip_requests_total",
    "cpm_sip_responses_sent_total",
    "cpm_sip_dropped_total",
    "cpm_sip_parse_errors_total",
    "cpm_sip_transactions_in_flight",
    "cpm_registered_contacts",
    "cpm_actor_restarts_total",
];

/// OPTIONS from a fresh agent gets 200.
#[track_caller]
fn answers_options(cpmd: &Cpmd, t: Transport) {
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost");
    assert_status(&ua.request(&req), 200);
}

#[test]
fn health_and_metrics() {
    let cpmd = Cpmd::spawn(&[]);
    let health = cpmd.http_get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body.trim(), "ok");

    let mut ua = Ua::udp(cpmd.sip_addr());
    assert_status(&ua.register(300), 200);
    let text = cpmd.metrics();
    for family in METRICS {
        assert!(
            has_family(&text, family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    cpmd.wait_metric(
        "cpm_sip_requests_total{method=\"REGISTER\"}",
        Duration::from_secs(2),
        |v| v >= 1.0,
    );
    cpmd.wait_metric(
        "cpm_sip_responses_sent_total{class=\"2xx\"}",
        Duration::from_secs(2),
        |v| v >= 1.0,
    );
    cpmd.wait_metric("cpm_registered_contacts", Duration::from_secs(2), |v| {
        v == 1.0
    });
    assert_status(&ua.register(0), 200);
    cpmd.wait_metric("cpm_registered_contacts", Duration::from_secs(2), |v| {
        v == 0.0
    });
    assert_eq!(cpmd.http_get("/nonexistent").status, 404);
}

/// Datagrams that are not SIP, and malformed or stray responses, are dropped without an answer
/// and counted; the server keeps serving.
#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let cpmd = Cpmd::spawn(&[]);
    let unparsable_before = cpmd.metric("cpm_sip_dropped_total{reason=\"unparsable\"}");
    let dropped_before = cpmd.metric("cpm_sip_dropped_total");
    let parse_errors_before = cpmd.metric("cpm_sip_parse_errors_total");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let random: Vec<u8> = (0..1200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let unparsable: [&[u8]; 4] = [
        b"\x00\x01\x02\x03garbage\xff\xfe",
        b"hello world\r\n\r\n",
        &random,
        b"SIP/2.0 9999 Way Too Big\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n",
    ];
    let port = s.local_addr().unwrap().port();
    let malformed_response = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKnotours\r\nContent-Length: 0\r\n\r\n"
    );
    for g in unparsable {
        s.send_to(g, cpmd.sip_addr()).unwrap();
    }
    s.send_to(malformed_response.as_bytes(), cpmd.sip_addr())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, _)) = s.recv_from(&mut buf) {
        panic!(
            "garbage was answered:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    cpmd.wait_metric(
        "cpm_sip_dropped_total{reason=\"unparsable\"}",
        Duration::from_secs(2),
        |v| v >= unparsable_before + 4.0,
    );
    cpmd.wait_metric("cpm_sip_dropped_total", Duration::from_secs(2), |v| {
        v >= dropped_before + 5.0
    });
    cpmd.wait_metric("cpm_sip_parse_errors_total", Duration::from_secs(2), |v| {
        v >= parse_errors_before + 4.0
    });
    answers_options(&cpmd, Transport::Udp);
    answers_options(&cpmd, Transport::Tcp);
}

/// Garbage on a TCP connection gets no SIP answer; other connections are unaffected.
#[test]
fn garbage_on_tcp_is_not_answered() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::tcp(cpmd.sip_addr());
    ua.send(b"\x00\x01\x02 this is not SIP \xff\r\n\r\n");
    if let Some(m) = ua.recv(Duration::from_secs(1)) {
        panic!("garbage was answered:\n{m}");
    }
    answers_options(&cpmd, Transport::Tcp);
    assert!(
        cpmd.metric("cpm_sip_dropped_total") >= 1.0,
        "TCP garbage not counted"
    );
}

/// A request carrying `X-Cpm-Test: panic` kills the worker handling it; its supervisor restarts
/// it and later requests are still answered.
#[test]
fn injected_panic_is_survived() {
    let mut cpmd = Cpmd::spawn(&["--test-hooks", "true"]);
    for _ in 0..2 {
        let mut ua = Ua::udp(cpmd.sip_addr());
        let req = ua
            .req("OPTIONS", "sip:localhost")
            .header("X-Cpm-Test", "panic");
        let _ = ua.try_request(&req, Duration::from_secs(2));
    }
    cpmd.wait_metric("cpm_actor_restarts_total", Duration::from_secs(5), |v| {
        v >= 1.0
    });
    for _ in 0..4 {
        answers_options(&cpmd, Transport::Udp);
        answers_options(&cpmd, Transport::Tcp);
    }
    let mut ua = Ua::udp(cpmd.sip_addr());
    assert_status(&ua.register(300), 200);
    assert!(cpmd.is_running());
}

/// Without `--test-hooks`, the header is ignored.
#[test]
fn panic_header_ignored_without_test_hooks() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let req = ua
        .req("OPTIONS", "sip:localhost")
        .header("X-Cpm-Test", "panic");
    assert_status(&ua.request(&req), 200);
    assert_eq!(cpmd.metric("cpm_actor_restarts_total"), 0.0);
}

#[test]
fn sigterm_exits_zero() {
    let mut cpmd = Cpmd::spawn(&[]);
    answers_options(&cpmd, Transport::Udp);
    cpmd.terminate();
    let status = cpmd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn sigint_exits_zero() {
    let mut cpmd = Cpmd::spawn(&[]);
    answers_options(&cpmd, Transport::Tcp);
    cpmd.signal(libc::SIGINT);
    let status = cpmd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// During shutdown new requests get 503 while an in-flight MESSAGE transaction still completes;
/// then the process exits 0.
#[test]
fn graceful_shutdown_finishes_in_flight_transactions() {
    let mut cpmd = Cpmd::spawn(&[]);
    let mut bob = Ua::tcp(cpmd.sip_addr()).user("bob");
    assert_status(&bob.register(300), 200);
    let mut alice = Ua::tcp(cpmd.sip_addr()).user("alice");
    let req = alice
        .req("MESSAGE", "sip:bob@localhost")
        .body("text/plain", "last words");
    alice.send_req(&req);
    let got = bob
        .recv_request(Duration::from_secs(5))
        .expect("bob receives the MESSAGE");

    cpmd.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cpmd.is_running(),
        "cpmd exited with a transaction in flight"
    );
    let mut late = Ua::udp(cpmd.sip_addr());
    let probe = late.req("OPTIONS", "sip:localhost");
    let resp = late
        .try_request(&probe, Duration::from_secs(3))
        .expect("a late request is answered");
    assert_status(&resp, 503);

    bob.reply(&got, 200, "OK");
    let resp = alice
        .await_final(&req, Duration::from_secs(5))
        .expect("alice gets the final response");
    assert_status(&resp, 200);
    let status = cpmd.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// `--sip-listen 127.0.0.1:0` picks a port free for both UDP and TCP: with many TCP ports
/// taken, cpmd starts every time (the harness's retry of a lost bind race is off here).
#[test]
fn port_zero_picks_a_port_free_on_udp_and_tcp() {
    let held: Vec<TcpListener> = (0..8000)
        .map_while(|_| TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    assert!(
        held.len() >= 1000,
        "could hold only {} TCP ports",
        held.len()
    );
    for _ in 0..15 {
        let cpmd = Cpmd::builder().strict_bind().spawn();
        answers_options(&cpmd, Transport::Tcp);
    }
}
