//! TCP connection management: idle timeout and RFC 5626 §4.4.1 CRLF keep-alives.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cpm_tests::wire::Frame;
use cpm_tests::{assert_status, Cpmd, Ua};

/// Reads until EOF/reset; returns how long it took, or `None` if the connection stayed open
/// (or sent data) for `timeout`.
fn time_until_closed(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => Some(start.elapsed()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) =>
        {
            Some(start.elapsed())
        }
        Ok(n) => panic!(
            "unexpected data on an idle connection: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => None,
    }
}

#[test]
fn idle_connection_is_closed() {
    let cpmd = Cpmd::spawn(&["--tcp-idle-timeout", "1"]);
    let mut s = TcpStream::connect(cpmd.sip_addr()).unwrap();
    let took = time_until_closed(&mut s, Duration::from_secs(6))
        .expect("silent connection closed within 6 s");
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1 s idle timeout"
    );
}

/// Traffic keeps a connection open past the idle timeout.
#[test]
fn busy_connection_stays_open() {
    let cpmd = Cpmd::spawn(&["--tcp-idle-timeout", "1"]);
    let mut ua = Ua::tcp(cpmd.sip_addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let req = ua.req("OPTIONS", "sip:localhost");
        assert_status(&ua.request(&req), 200);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(!ua.is_closed());
}

/// A CRLFCRLF ping is answered with a CRLF pong and the connection stays usable.
#[test]
fn crlf_keepalive_gets_pong() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::tcp(cpmd.sip_addr());
    for _ in 0..2 {
        ua.send(b"\r\n\r\n");
        match ua.recv_frame(Duration::from_secs(2)) {
            Some((Frame::KeepAlive, _)) => {}
            other => panic!("expected a CRLF pong, got {other:?}"),
        }
    }
    let req = ua.req("OPTIONS", "sip:localhost");
    assert_status(&ua.request(&req), 200);
}

/// The pong is exactly CRLF (RFC 5626 §4.4.1), checked on the raw stream.
#[test]
fn pong_is_single_crlf() {
    let cpmd = Cpmd::spawn(&[]);
    let mut s = TcpStream::connect(cpmd.sip_addr()).unwrap();
    s.write_all(b"\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).expect("a pong within 2 s");
    assert_eq!(&buf[..n], b"\r\n");
}
