//! Per-source limits (issue 7, "Per-source limits"): requests per second per source IP, TCP
//! connections per IP, the incomplete-message timeout on TCP (slowloris). Offenders are cut
//! off and counted in `/metrics`; everyone else is served.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cpm_tests::{assert_status, Cpmd, Ua};

const DROPPED: &str = "cpm_sip_dropped_total{reason=";

fn dropped(cpmd: &Cpmd, reason: &str) -> f64 {
    cpmd.metric(&format!("{DROPPED}\"{reason}\"}}"))
}

/// Whether the peer closed `s` within `timeout` (EOF or reset), reading and discarding what
/// it sent before.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// A source over `--source-rate` has its excess requests dropped (not answered, counted);
/// once its bucket refilled it is served again. Responses are never limited.
#[test]
fn requests_over_the_source_rate_are_dropped() {
    let cpmd = Cpmd::spawn(&["--source-rate", "20", "--source-burst", "10"]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let reqs: Vec<_> = (0..60)
        .map(|_| {
            let r = ua.req("OPTIONS", "sip:localhost");
            ua.send_req(&r);
            r
        })
        .collect();
    let mut answered = 0;
    while ua.recv(Duration::from_millis(300)).is_some() {
        answered += 1;
    }
    // The burst of 10, plus what 20/s refilled while the 60 went out.
    assert!(
        (10..=20).contains(&answered),
        "{answered} of 60 answered at 20/s with a burst of 10"
    );
    let dropped = cpmd.wait_metric(
        &format!("{DROPPED}\"rate_limited\"}}"),
        Duration::from_secs(2),
        |v| v >= 40.0,
    );
    assert!(dropped <= 50.0, "{dropped} dropped");
    drop(reqs);
    // After a second the source is served again.
    std::thread::sleep(Duration::from_millis(1000));
    let req = ua.req("OPTIONS", "sip:localhost");
    assert_status(&ua.request(&req), 200);
    // Another source was never limited.
    let mut other = Ua::udp(cpmd.sip_addr());
    let req = other.req("OPTIONS", "sip:localhost");
    assert_status(&other.request(&req), 200);
}

/// The same over TCP: each framed request counts against the source.
#[test]
fn tcp_requests_over_the_source_rate_are_dropped() {
    let cpmd = Cpmd::spawn(&["--source-rate", "5", "--source-burst", "5"]);
    let mut ua = Ua::tcp(cpmd.sip_addr());
    for _ in 0..15 {
        let r = ua.req("OPTIONS", "sip:localhost");
        ua.send_req(&r);
    }
    let mut answered = 0;
    while ua.recv(Duration::from_millis(300)).is_some() {
        answered += 1;
    }
    assert!((5..=7).contains(&answered), "{answered} of 15 answered");
    assert!(dropped(&cpmd, "rate_limited") >= 8.0);
    assert!(!ua.is_closed(), "a limited TCP source keeps its connection");
}

/// `--tcp-max-per-ip`: the connection over the limit is closed at once and counted; closing
/// one lets a new one in.
#[test]
fn tcp_connections_per_ip_are_capped() {
    let cpmd = Cpmd::spawn(&["--tcp-max-per-ip", "3", "--workers", "1"]);
    let mut uas: Vec<Ua> = (0..3).map(|_| Ua::tcp(cpmd.sip_addr())).collect();
    for ua in &mut uas {
        let r = ua.req("OPTIONS", "sip:localhost");
        assert_status(&ua.request(&r), 200);
    }
    let mut fourth = TcpStream::connect(cpmd.sip_addr()).unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)),
        "the fourth connection from one IP stays open"
    );
    assert_eq!(dropped(&cpmd, "tcp_per_ip"), 1.0);
    drop(uas.pop());
    // The server notices the close, then admits a new one.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut ua = Ua::tcp(cpmd.sip_addr());
        let r = ua.req("OPTIONS", "sip:localhost");
        ua.send_req(&r);
        if ua.recv(Duration::from_millis(500)).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted after one closed"
        );
    }
}

/// Slowloris: a message trickling in a byte at a time (never idle long enough for the idle
/// timeout) is cut off `--tcp-message-timeout` after its first byte; a connection sending
/// whole messages with pauses between them is not.
#[test]
fn incomplete_message_times_out() {
    let cpmd = Cpmd::spawn(&["--tcp-message-timeout", "1", "--tcp-idle-timeout", "30"]);
    let mut slow = TcpStream::connect(cpmd.sip_addr()).unwrap();
    let started = Instant::now();
    let head = b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKslow\r\nX-Slow: ";
    slow.write_all(head).unwrap();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        slow.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match slow.read(&mut b) {
            Ok(0) => closed = true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            _ => closed = true,
        }
        slow.set_nonblocking(false).unwrap();
        if closed {
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "a message trickling for {took:?} was not cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "cut off after {took:?} with a 1 s message timeout"
    );
    assert_eq!(dropped(&cpmd, "incomplete_timeout"), 1.0);

    // Whole messages, 400 ms apart, for longer than the message timeout.
    let mut ua = Ua::tcp(cpmd.sip_addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2200) {
        let req = ua.req("OPTIONS", "sip:localhost");
        assert_status(&ua.request(&req), 200);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(!ua.is_closed());
    assert_eq!(dropped(&cpmd, "incomplete_timeout"), 1.0);
}
