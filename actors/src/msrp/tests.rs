//! The plane on loopback with two raw TCP peers: relaying with rewritten paths, and the tap.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::*;

struct Recorder(Mutex<Vec<TapEvent>>);

impl Tap for Recorder {
    fn on_send(&self, event: TapEvent) {
        self.0.lock().push(event);
    }
}

/// Reads until `needle` was seen (or 5 s passed); returns what was read.
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if String::from_utf8_lossy(&got).contains(needle) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A plane with one leg between `a.test` (side A) and `b.test` (side B), neither connected.
fn plane_with_leg() -> (MsrpPlane, MsrpLeg, Arc<MsrpMetrics>, u16) {
    let metrics = Arc::new(MsrpMetrics::default());
    let plane = MsrpPlane::start(
        MsrpSettings::new("127.0.0.1:0".parse().unwrap()),
        [5; 32],
        1,
        metrics.clone(),
    )
    .unwrap();
    let port = plane.local_addr().port();
    let a_uri = Bytes::from(format!("msrp://127.0.0.1:{port}/aaa;tcp"));
    let b_uri = Bytes::from(format!("msrp://127.0.0.1:{port}/bbb;tcp"));
    let leg = plane.open_leg(&a_uri, &b_uri).unwrap();
    for (side, path) in [
        (Side::A, "msrp://a.test:9/pa;tcp"),
        (Side::B, "msrp://b.test:9/pb;tcp"),
    ] {
        let peer = cpm_engine::media::MsrpPeer {
            path: Bytes::from(path),
            we_connect: false,
        };
        leg.set_peer(side, peer);
    }
    (plane, leg, metrics, port)
}

/// Connects as `side` (`aaa` or `bbb` is our URI facing it) with an empty SEND, answered 200.
fn connect(plane: &MsrpPlane, port: u16, ours: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(plane.local_addr()).unwrap();
    s.write_all(
        format!(
            "MSRP tx00 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/{ours};tcp\r\n\
             From-Path: {path}\r\nMessage-ID: msg00\r\nByte-Range: 1-0/0\r\n\
             -------tx00$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let ok = read_until(&mut s, "-------tx00$");
    assert!(ok.starts_with("MSRP tx00 200 OK\r\n"), "{ok:?}");
    s
}

#[test]
fn relays_with_rewritten_paths_and_taps_each_send() {
    let (plane, leg, metrics, port) = plane_with_leg();
    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    leg.set_tap(Some(recorder.clone()));
    assert_eq!((plane.leg_count(), metrics.legs.load(Relaxed)), (1, 1));

    let mut b = connect(&plane, port, "bbb", "msrp://b.test:9/pb;tcp");
    let mut a = TcpStream::connect(plane.local_addr()).unwrap();
    a.write_all(
        format!(
            "MSRP tx01 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/aaa;tcp\r\n\
             From-Path: msrp://a.test:9/pa;tcp\r\nMessage-ID: msg01\r\nByte-Range: 1-5/5\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n-------tx01$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let at_b = read_until(&mut b, "$\r\n");
    assert!(
        at_b.contains("To-Path: msrp://b.test:9/pb;tcp\r\n"),
        "{at_b}"
    );
    assert!(at_b.contains(&format!("From-Path: msrp://127.0.0.1:{port}/bbb;tcp\r\n")));
    assert!(at_b.contains("Message-ID: msg01\r\n") && at_b.contains("\r\n\r\nhello\r\n-------"));
    assert!(read_until(&mut a, "-------tx01$").starts_with("MSRP tx01 200 OK\r\n"));

    let taps = recorder.0.lock().clone();
    assert_eq!(taps.len(), 1);
    assert_eq!(taps[0].from, Side::A);
    assert_eq!(taps[0].message_id.as_deref(), Some(&b"msg01"[..]));
    assert_eq!(taps[0].content_type.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(taps[0].body.concat(), b"hello");
    let stats = leg.stats();
    assert_eq!((stats.messages, stats.bytes), ([1, 0], [5, 0]));

    drop(leg);
    assert_eq!(plane.leg_count(), 0);
    assert_eq!(read_until(&mut a, "never"), "", "closed with the leg");
    assert_eq!(metrics.legs.load(Relaxed), 0);
}

/// A's chunk stalls half way: B's SEND still gets its 200 at once, because the stalled chunk is
/// interrupted with `+` (RFC 4975 §7.1.1) and its rest follows in a new chunk.
#[test]
fn a_stalled_chunk_does_not_hold_back_responses() {
    let (plane, _leg, _, port) = plane_with_leg();
    let mut b = connect(&plane, port, "bbb", "msrp://b.test:9/pb;tcp");
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    a.write_all(
        format!(
            "MSRP tx01 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/aaa;tcp\r\n\
             From-Path: msrp://a.test:9/pa;tcp\r\nMessage-ID: msg01\r\nByte-Range: 1-10/10\r\n\
             Content-Type: text/plain\r\n\r\nhel"
        )
        .as_bytes(),
    )
    .unwrap();
    let first = read_until(&mut b, "hel");
    assert!(first.contains("Byte-Range: 1-10/10\r\n"), "{first}");
    b.write_all(
        format!(
            "MSRP tx02 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/bbb;tcp\r\n\
             From-Path: msrp://b.test:9/pb;tcp\r\nMessage-ID: msg02\r\nByte-Range: 1-2/2\r\n\
             Content-Type: text/plain\r\n\r\nhi\r\n-------tx02$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = read_until(&mut b, "-------tx02$");
    let ok = got.find("MSRP tx02 200 OK\r\n").expect(&got);
    let cut = got.find("+\r\n").expect("the chunk is interrupted");
    assert!(cut < ok, "{got}");
    assert!(read_until(&mut a, "hi\r\n-------").contains("Message-ID: msg02\r\n"));

    // The rest of A's chunk follows in a new chunk of ours, from byte 4.
    a.write_all(b"loworld\r\n-------tx01$\r\n").unwrap();
    let rest = read_until(&mut b, "$\r\n");
    assert!(rest.contains("Byte-Range: 4-10/10\r\n"), "{rest}");
    assert!(rest.contains("\r\n\r\nloworld\r\n-------"), "{rest}");
    assert!(read_until(&mut a, "-------tx01$").contains("MSRP tx01 200 OK\r\n"));
}
