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
    read_until_for(s, needle, Duration::from_secs(5))
}

/// Reads until `needle` was seen (or `wait` passed); returns what was read.
fn read_until_for(s: &mut TcpStream, needle: &str, wait: Duration) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let until = std::time::Instant::now() + wait;
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
    plane_with_leg_in(MsrpSettings::new("127.0.0.1:0".parse().unwrap()))
}

/// [`plane_with_leg`] with `settings`.
fn plane_with_leg_in(settings: MsrpSettings) -> (MsrpPlane, MsrpLeg, Arc<MsrpMetrics>, u16) {
    let metrics = Arc::new(MsrpMetrics::default());
    let plane = MsrpPlane::start(settings, [5; 32], 1, metrics.clone()).unwrap();
    let port = plane.local_addr().port();
    let leg = open_test_leg(&plane, "");
    (plane, leg, metrics, port)
}

/// A leg whose URIs of ours end in `/aaa{k}` (facing A, at `msrp://a.test:9/pa{k};tcp`) and
/// `/bbb{k}` (facing B, at `msrp://b.test:9/pb{k};tcp`), neither side connected.
fn open_test_leg(plane: &MsrpPlane, k: &str) -> MsrpLeg {
    let port = plane.local_addr().port();
    let a_uri = Bytes::from(format!("msrp://127.0.0.1:{port}/aaa{k};tcp"));
    let b_uri = Bytes::from(format!("msrp://127.0.0.1:{port}/bbb{k};tcp"));
    let leg = plane.open_leg(&a_uri, &b_uri).unwrap();
    for (side, path) in [
        (Side::A, format!("msrp://a.test:9/pa{k};tcp")),
        (Side::B, format!("msrp://b.test:9/pb{k};tcp")),
    ] {
        let peer = cpm_engine::media::MsrpPeer {
            path: Bytes::from(path),
            we_connect: false,
        };
        leg.set_peer(side, peer);
    }
    leg
}

/// Connects as `side` (`aaa` or `bbb` is our URI facing it) with an empty SEND, answered 200.
fn connect(plane: &MsrpPlane, port: u16, ours: &str, path: &str) -> TcpStream {
    bind(
        TcpStream::connect(plane.local_addr()).unwrap(),
        port,
        ours,
        path,
    )
}

/// The empty SEND `tx00` that binds a connection as the side whose URI of ours is `ours`.
fn bind_request(port: u16, ours: &str, path: &str) -> String {
    format!(
        "MSRP tx00 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/{ours};tcp\r\n\
         From-Path: {path}\r\nMessage-ID: msg00\r\nByte-Range: 1-0/0\r\n\
         -------tx00$\r\n"
    )
}

/// Binds the connected `s` as the side whose URI of ours is `ours` (see [`connect`]).
fn bind(mut s: TcpStream, port: u16, ours: &str, path: &str) -> TcpStream {
    s.write_all(bind_request(port, ours, path).as_bytes())
        .unwrap();
    let ok = read_until(&mut s, "-------tx00$");
    assert!(ok.starts_with("MSRP tx00 200 OK\r\n"), "{ok:?}");
    s
}

/// A large-message sink of bob's (100 bytes at most) for a sender at
/// `msrp://a.test:9/pa;tcp`, and our URI.
fn bobs_sink(plane: &MsrpPlane, on_message: OnMessage) -> (MsrpSink, Bytes) {
    let local = plane.fresh_uri("127.0.0.1");
    let sink = plane
        .open_sink(
            &local,
            &Bytes::from_static(b"msrp://a.test:9/pa;tcp"),
            100,
            Bytes::from_static(b"bob"),
            on_message,
        )
        .unwrap();
    (sink, local)
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

fn bare_plane() -> MsrpPlane {
    MsrpPlane::start(
        MsrpSettings::new("127.0.0.1:0".parse().unwrap()),
        [6; 32],
        2,
        Arc::new(MsrpMetrics::default()),
    )
    .unwrap()
}

/// A sink joins the chunks of a message, hands it over whole, and answers the last chunk
/// with what comes back (here when the test says so, as a storage commit would later); a `+`
/// chunk is answered at once.
#[test]
fn sink_answers_the_last_chunk_after_the_reply() {
    let plane = bare_plane();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let pending: Arc<Mutex<Option<Reply>>> = Arc::default();
    let replies = pending.clone();
    let on_message: OnMessage = Box::new(move |m, reply| {
        seen.lock().push(m.body.clone());
        *replies.lock() = Some(reply);
    });
    let (sink, local) = bobs_sink(&plane, on_message);
    assert_eq!(sink.local_uri(), &local);
    assert!(!plane.receiving(b"bob"));
    let mut s = TcpStream::connect(plane.local_addr()).unwrap();
    let to = String::from_utf8_lossy(&local).into_owned();
    let chunk = |tid: &str, range: &str, body: &str, flag: char| {
        format!(
            "MSRP {tid} SEND\r\nTo-Path: {to}\r\nFrom-Path: msrp://a.test:9/pa;tcp\r\n\
             Message-ID: msg1\r\nByte-Range: {range}\r\nContent-Type: text/plain\r\n\r\n\
             {body}\r\n-------{tid}{flag}\r\n"
        )
    };
    s.write_all(chunk("tidt1", "1-3/6", "abc", '+').as_bytes())
        .unwrap();
    let r = read_until(&mut s, "MSRP tidt1 200");
    assert!(r.contains("MSRP tidt1 200"), "{r}");
    assert!(plane.receiving(b"bob"), "a message of bob's is unfinished");
    assert!(!plane.receiving(b"carol"));
    s.write_all(chunk("tidt2", "4-6/6", "def", '$').as_bytes())
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while pending.lock().is_none() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got.lock().as_slice(), [Bytes::from_static(b"abcdef")]);
    // Handed over, not answered yet: no 200 for the last chunk, and bob is still receiving.
    let early = read_until_for(&mut s, "MSRP tidt2", Duration::from_millis(200));
    assert!(!early.contains("MSRP tidt2"), "{early}");
    assert!(plane.receiving(b"bob"), "still, until the storage answered");
    let reply = pending.lock().take().expect("the message was handed over");
    reply.send(200).unwrap();
    assert!(read_until(&mut s, "MSRP tidt2 200").contains("MSRP tidt2 200"));
    assert!(!plane.receiving(b"bob"), "stored and answered");
    // Over the limit: 413, nothing handed over.
    s.write_all(
        chunk("tidt3", "1-3/500", "xyz", '+')
            .replace("msg1", "msg2")
            .as_bytes(),
    )
    .unwrap();
    assert!(read_until(&mut s, "MSRP tidt3 413").contains("MSRP tidt3 413"));
    assert_eq!(got.lock().len(), 1);
    // Dropping the sink closes the connection at once: our FIN does not wait for the
    // peer's (the reader's linger of up to 2 s comes after it).
    drop(sink);
    let mut buf = [0u8; 16];
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(1), 0, "closed");
}

/// A storage that goes away without answering (its reply dropped): the last chunk gets 500,
/// the message no longer counts as being received, and the connection takes the next one.
#[test]
fn sink_answers_500_when_the_storage_never_answers() {
    let plane = bare_plane();
    let (_sink, local) = bobs_sink(&plane, Box::new(|_, reply| drop(reply)));
    let mut s = TcpStream::connect(plane.local_addr()).unwrap();
    let to = String::from_utf8_lossy(&local).into_owned();
    for (tid, id) in [("tide1", "msge1"), ("tide2", "msge2")] {
        s.write_all(
            format!(
                "MSRP {tid} SEND\r\nTo-Path: {to}\r\nFrom-Path: msrp://a.test:9/pa;tcp\r\n\
                 Message-ID: {id}\r\nByte-Range: 1-2/2\r\nContent-Type: text/plain\r\n\r\n\
                 hi\r\n-------{tid}$\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_until(&mut s, &format!("MSRP {tid} 500"));
        assert!(r.contains(&format!("MSRP {tid} 500")), "{r}");
        assert!(!plane.receiving(b"bob"), "not stored, and not waited for");
    }
}

/// A sink whose sender is passive (RFC 6135): cpmd connects to the sender's path, binds the
/// connection with an empty SEND, and receives the message over it.
#[test]
fn active_sink_connects_binds_and_receives() {
    let plane = bare_plane();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sender = format!(
        "msrp://127.0.0.1:{}/snd;tcp",
        listener.local_addr().unwrap().port()
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let on_message: OnMessage = Box::new(move |m, reply| {
        seen.lock().push(m.body.clone());
        let _ = reply.send(200);
    });
    let local = plane.fresh_uri("127.0.0.1");
    let sink = plane
        .open_sink(
            &local,
            &Bytes::from(sender.clone()),
            100,
            Bytes::from_static(b"bob"),
            on_message,
        )
        .unwrap();
    sink.connect();
    let (mut s, _) = listener.accept().unwrap();
    let to = String::from_utf8_lossy(&local).into_owned();
    let bind = read_until(&mut s, "-------");
    assert!(
        bind.starts_with("MSRP ") && bind.contains(" SEND\r\n"),
        "{bind}"
    );
    assert!(bind.contains(&format!("To-Path: {sender}")), "{bind}");
    assert!(bind.contains(&format!("From-Path: {to}")), "{bind}");
    let send = format!(
        "MSRP tidp1 SEND\r\nTo-Path: {to}\r\nFrom-Path: {sender}\r\nMessage-ID: msg1\r\n\
         Byte-Range: 1-2/2\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------tidp1$\r\n"
    );
    s.write_all(send.as_bytes()).unwrap();
    let r = read_until(&mut s, "MSRP tidp1 200");
    assert!(r.contains("MSRP tidp1 200"), "{r}");
    assert_eq!(got.lock().as_slice(), [Bytes::from_static(b"hi")]);
}

/// Delivery as the active party: cpmd connects to the device's path, sends the message in
/// chunks of the re-chunking size, and reports Ok after the 200 to the last chunk; a device
/// that answers 415 fails it with 415; nobody listening is 480.
#[test]
fn deliver_sends_chunks_and_waits_for_the_last_200() {
    let plane = bare_plane();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = format!(
        "msrp://127.0.0.1:{}/dev;tcp",
        listener.local_addr().unwrap().port()
    );
    let body = Bytes::from(vec![b'x'; 150 * 1024]);
    let run = |code: u16| {
        let (tx, rx) = std::sync::mpsc::channel();
        plane.deliver(
            Outgoing {
                local: plane.fresh_uri("127.0.0.1"),
                peer_path: Bytes::from(path.clone()),
                message_id: Bytes::from_static(b"mid1"),
                content_type: Bytes::from_static(b"text/plain"),
                body: body.clone(),
            },
            move |r| tx.send(r).unwrap(),
        );
        let (mut dev, _) = listener.accept().unwrap();
        let mut p = cpm_engine::msrp::Parser::new(cpm_engine::msrp::Limits::default());
        let (mut bytes, mut chunks) = (0usize, 0);
        dev.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut last = None;
        'read: loop {
            let mut buf = vec![0u8; 65536];
            let n = dev.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            buf.truncate(n);
            p.feed(Bytes::from(buf));
            while let Some(ev) = p.poll() {
                match ev.unwrap() {
                    cpm_engine::msrp::Event::Head(h) => last = Some(h),
                    cpm_engine::msrp::Event::Body(b) => bytes += b.len(),
                    cpm_engine::msrp::Event::End(flag) => {
                        chunks += 1;
                        let h: cpm_engine::msrp::Head = *last.take().unwrap();
                        let c = if flag == cpm_engine::msrp::Flag::Complete {
                            code
                        } else {
                            200
                        };
                        let r = cpm_engine::msrp::write::response(&h, c, None).unwrap();
                        dev.write_all(&cpm_engine::msrp::write::bodyless(
                            &r,
                            &mut bytes::BytesMut::new(),
                        ))
                        .unwrap();
                        if flag == cpm_engine::msrp::Flag::Complete {
                            break 'read;
                        }
                    }
                    _ => {}
                }
            }
        }
        assert_eq!((bytes, chunks), (150 * 1024, 3), "64 KiB chunks");
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    };
    assert_eq!(run(200), Ok(()));
    assert_eq!(run(415), Err(415));
    drop(listener);
    let (tx, rx) = std::sync::mpsc::channel();
    plane.deliver(
        Outgoing {
            local: plane.fresh_uri("127.0.0.1"),
            peer_path: Bytes::from(path.clone()),
            message_id: Bytes::from_static(b"mid2"),
            content_type: Bytes::from_static(b"text/plain"),
            body: Bytes::from_static(b"x"),
        },
        move |r| tx.send(r).unwrap(),
    );
    assert_eq!(rx.recv_timeout(Duration::from_secs(15)).unwrap(), Err(480));
}

/// What the relay accepted (and answered 200 hop by hop) before the leg closed still reaches
/// a slow receiver, followed by an orderly close: nothing queued is dropped, nothing reset.
/// The size of each message [`send_until_unanswered`] sends.
const MESSAGE_LEN: usize = 60_000;

/// Side B bound through a 4 KiB receive window, reading nothing.
fn small_window_b(plane: &MsrpPlane, port: u16) -> TcpStream {
    let small = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    small.set_recv_buffer_size(4096).unwrap();
    small.connect(&plane.local_addr().into()).unwrap();
    bind(small.into(), port, "bbb", "msrp://b.test:9/pb;tcp")
}

/// `a` sends 60,000-byte messages `m0000`, `m0001`... (transactions `tx0000`...) until the
/// relay stops answering them within a second (its queue toward a B that reads nothing is
/// full): how many were written whole, and how many answered 200 (asserted 1 to 199).
fn send_until_unanswered(a: &mut TcpStream, port: u16) -> (usize, usize) {
    const LEN: usize = MESSAGE_LEN;
    a.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let body = vec![b'~'; LEN];
    let (mut written, mut answered) = (0, 0);
    for i in 0..200 {
        let msg = send_of_a(port, &format!("tx{i:04}"), &format!("m{i:04}"), &body);
        if a.write_all(&msg).is_err() {
            break;
        }
        written += 1;
        let ok = read_until_for(a, &format!("-------tx{i:04}$"), Duration::from_secs(1));
        if !ok.contains(&format!("MSRP tx{i:04} 200 OK\r\n")) {
            break;
        }
        answered += 1;
    }
    assert!((1..200).contains(&answered), "{answered} answered");
    (written, answered)
}

#[test]
fn a_closed_leg_still_delivers_what_it_accepted() {
    let (plane, leg, _metrics, port) = plane_with_leg();
    // b reads nothing until the leg is gone, through a small receive window.
    let mut b = small_window_b(&plane, port);
    let mut a = TcpStream::connect(plane.local_addr()).unwrap();
    // Every message answered is then in the kernel's buffers or in the queue toward b.
    let (_, answered) = send_until_unanswered(&mut a, port);

    drop(leg);
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let end = loop {
        let mut buf = [0u8; 65536];
        match b.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_ok(), "the relay closed with an error: {end:?}");
    let body_bytes = got.iter().filter(|&&c| c == b'~').count();
    assert!(
        body_bytes >= answered * MESSAGE_LEN,
        "{body_bytes} body bytes reached b, {answered} messages of {MESSAGE_LEN} were answered 200"
    );
}

/// Parses what `s` sends until `n` chunks ended (or 5 s passed): each chunk's Message-ID,
/// Byte-Range start, body and flag.
fn read_chunks(s: &mut TcpStream, n: usize) -> Vec<(Bytes, u64, Vec<u8>, Flag)> {
    use cpm_engine::msrp::{Event, Parser};
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut parser = Parser::new(MsrpSettings::new("127.0.0.1:0".parse().unwrap()).limits);
    let mut chunks = Vec::new();
    let mut cur: Option<(Bytes, u64, Vec<u8>)> = None;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while chunks.len() < n && std::time::Instant::now() < until {
        let mut buf = [0u8; 65536];
        let Ok(k) = s.read(&mut buf) else { continue };
        if k == 0 {
            break;
        }
        parser.feed(Bytes::copy_from_slice(&buf[..k]));
        while let Some(ev) = parser.poll() {
            match ev.expect("what the relay sends parses") {
                Event::Head(h) => {
                    let id = h.message_id.clone().unwrap_or_default();
                    cur = Some((id, h.range().start, Vec::new()));
                }
                Event::Body(b) => cur.as_mut().unwrap().2.extend_from_slice(&b),
                Event::End(flag) => {
                    let (id, start, body) = cur.take().unwrap();
                    chunks.push((id, start, body, flag));
                }
                Event::Reject(r) => panic!("rejected: {}", r.error),
            }
        }
    }
    chunks
}

/// Many chunks in one write, short bodies (staged with their heads) between long ones
/// (queued as read): B gets each once, in order and intact, and A a 200 for each, in order.
#[test]
fn a_burst_of_chunks_is_relayed_in_order_and_answered_once_each() {
    let (plane, _leg, _, port) = plane_with_leg();
    let mut b = connect(&plane, port, "bbb", "msrp://b.test:9/pb;tcp");
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    let body = |i: usize| -> Vec<u8> {
        let len = if i.is_multiple_of(3) {
            5000 + i
        } else {
            10 + i
        };
        (0..len).map(|k| b'a' + ((i + k) % 26) as u8).collect()
    };
    let mut burst = Vec::new();
    for i in 0..60 {
        let body = body(i);
        let len = body.len();
        burst.extend_from_slice(
            format!(
                "MSRP t{i:03} SEND\r\nTo-Path: msrp://127.0.0.1:{port}/aaa;tcp\r\n\
                 From-Path: msrp://a.test:9/pa;tcp\r\nMessage-ID: m{i:03}\r\n\
                 Byte-Range: 1-{len}/{len}\r\nContent-Type: text/plain\r\n\r\n"
            )
            .as_bytes(),
        );
        burst.extend_from_slice(&body);
        burst.extend_from_slice(format!("\r\n-------t{i:03}$\r\n").as_bytes());
    }
    a.write_all(&burst).unwrap();

    let got = read_chunks(&mut b, 60);
    assert_eq!(got.len(), 60);
    for (i, (id, start, data, flag)) in got.iter().enumerate() {
        assert_eq!(&id[..], format!("m{i:03}").as_bytes());
        assert_eq!((*start, *flag), (1, Flag::Complete));
        assert!(*data == body(i), "body {i}");
    }
    let answers = read_until(&mut a, "-------t059$");
    let tids: Vec<&str> = answers
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("MSRP ").filter(|l| l.ends_with(" 200 OK")))
        .map(|l| &l[..4])
        .collect();
    let want: Vec<String> = (0..60).map(|i| format!("t{i:03}")).collect();
    assert_eq!(tids, want);
}

/// A conference's chat copies queued toward a participant whose sink closes (its BYE) still
/// go out before our FIN, as a relay leg's do.
#[test]
fn a_closed_chat_sink_still_sends_what_it_queued() {
    let metrics = Arc::new(MsrpMetrics::default());
    let plane = MsrpPlane::start(
        MsrpSettings::new("127.0.0.1:0".parse().unwrap()),
        [6; 32],
        1,
        metrics,
    )
    .unwrap();
    let port = plane.local_addr().port();
    let local = Bytes::from(format!("msrp://127.0.0.1:{port}/chat1;tcp"));
    let sink = plane
        .open_chat(
            &local,
            &Bytes::from_static(b"msrp://p.test:9/pp;tcp"),
            1 << 20,
            8,
            Box::new(|_, _| {}),
        )
        .unwrap();
    // The participant reads nothing until the sink is gone: the kernel's buffers take about
    // 4 MB of the 8 queued, the rest waits in the sink's queue.
    let mut p = connect(&plane, port, "chat1", "msrp://p.test:9/pp;tcp");
    const LEN: usize = 1 << 20;
    for i in 0..8 {
        let queued = sink.send(ChatMessage {
            message_id: Bytes::from(format!("copy{i}")),
            content_type: Bytes::from_static(b"text/plain"),
            body: Bytes::from(vec![b'~'; LEN]),
        });
        assert!(queued, "copy {i} queued");
    }
    // Let the writer fill the socket's buffers, so that most of it is still queued.
    std::thread::sleep(Duration::from_millis(200));
    drop(sink);

    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body_bytes = 0;
    let end = loop {
        let mut buf = [0u8; 65536];
        match p.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => body_bytes += buf[..n].iter().filter(|&&c| c == b'~').count(),
            Err(e) => break Err(e),
        }
    };
    assert!(end.is_ok(), "closed with an error: {end:?}");
    assert_eq!(
        body_bytes,
        8 * LEN,
        "every queued copy reached the participant"
    );
}

/// Every request and REPORT head `s` sends until `quiet` passes without a byte (or `wait`
/// in all): REPORTs as (Message-ID, status code), responses as (transaction id, code).
fn read_reports(s: &mut TcpStream, quiet: Duration, wait: Duration) -> Vec<(Bytes, u16)> {
    use cpm_engine::msrp::{Event, Method, Parser};
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut parser = Parser::new(MsrpSettings::new("127.0.0.1:0".parse().unwrap()).limits);
    let mut heads = Vec::new();
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        let mut buf = [0u8; 65536];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => parser.feed(Bytes::copy_from_slice(&buf[..k])),
        }
        while let Some(ev) = parser.poll() {
            let Event::Head(h) = ev.expect("what the relay sends parses") else {
                continue;
            };
            if h.method() == Some(&Method::Report) {
                let code = h.status.as_ref().map_or(0, |st| st.code);
                heads.push((h.message_id.clone().unwrap_or_default(), code));
            } else if let Some(code) = h.code() {
                heads.push((h.tid.clone(), code));
            }
        }
    }
    heads
}

/// The receiver resets its connection while the sender's reader waits to queue toward it
/// (the receiver read nothing; the relay's queue toward it is full): the queueing fails,
/// and every message forwarded to the receiver and never answered by it fails back to the
/// sender with a 481 REPORT (RFC 4975 §7.1.2) at once, none left to the transaction
/// timeout, whichever of the two readers (the receiver's at its end, the sender's when its
/// queueing failed) saw it first; the sender's connection stays up.
#[test]
fn a_receiver_reset_while_its_queue_is_full_fails_every_unanswered_message() {
    let (plane, _leg, _metrics, port) = plane_with_leg();
    let b = small_window_b(&plane, port);
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    // a's reader then waits on the full queue toward b, holding what it staged.
    let (written, answered) = send_until_unanswered(&mut a, port);

    // b resets its connection (RST, not FIN): the relay's writer toward b fails.
    let b = socket2::Socket::from(b);
    b.set_linger(Some(Duration::ZERO)).unwrap();
    drop(b);

    let heads = read_reports(&mut a, Duration::from_secs(2), Duration::from_secs(10));
    let failed_481 = |i: usize| {
        let id = format!("m{i:04}");
        let tid = format!("tx{i:04}");
        heads
            .iter()
            .any(|(k, code)| *code == 481 && (k[..] == *id.as_bytes() || k[..] == *tid.as_bytes()))
    };
    for i in 0..answered {
        assert!(
            failed_481(i),
            "m{i:04} (answered 200) got no 481 REPORT: {heads:?}"
        );
    }
    if written > answered {
        assert!(
            failed_481(answered),
            "the message in flight got no 481: {heads:?}"
        );
    }
    assert!(
        heads.iter().all(|(_, code)| [200, 481].contains(code)),
        "only 200s and 481s: {heads:?}"
    );

    // a's connection is still bound: its next SEND is refused 481 at once (b is gone).
    send_from_a(&mut a, port, "late", "late", "hi");
    let late = read_until(&mut a, "-------late$");
    assert!(late.contains("MSRP late 481 "), "{late:?}");
}

/// A whole SEND of `body` as side A writes it (transaction `tid`, Message-ID `mid`).
fn send_of_a(port: u16, tid: &str, mid: &str, body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut msg = format!(
        "MSRP {tid} SEND\r\nTo-Path: msrp://127.0.0.1:{port}/aaa;tcp\r\n\
         From-Path: msrp://a.test:9/pa;tcp\r\nMessage-ID: {mid}\r\nByte-Range: 1-{len}/{len}\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    msg.extend_from_slice(body);
    msg.extend_from_slice(format!("\r\n-------{tid}$\r\n").as_bytes());
    msg
}

/// Writes [`send_of_a`] of a text `body` on `a`.
fn send_from_a(a: &mut TcpStream, port: u16, tid: &str, mid: &str, body: &str) {
    a.write_all(&send_of_a(port, tid, mid, body.as_bytes()))
        .unwrap();
}

/// The receiver reads what is forwarded to it and answers none of it: once the transaction
/// timeout passed, each message fails back to its sender with a 408 REPORT (RFC 4975
/// §7.1.2), the receiver's late 200s are dropped, and the session goes on.
#[test]
fn unanswered_requests_fail_with_a_408_report_after_the_transaction_timeout() {
    let mut settings = MsrpSettings::new("127.0.0.1:0".parse().unwrap());
    settings.tx_timeout = Duration::from_secs(1);
    let (plane, _leg, _metrics, port) = plane_with_leg_in(settings);
    let mut b = connect(&plane, port, "bbb", "msrp://b.test:9/pb;tcp");
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    for i in 0..3 {
        send_from_a(
            &mut a,
            port,
            &format!("tx{i:04}"),
            &format!("m{i:04}"),
            "hello",
        );
    }
    let forwarded = read_until(&mut b, "hello\r\n-------");
    let forwarded = forwarded + &read_until(&mut b, "m0002");
    let forwarded = forwarded + &read_until_for(&mut b, "$\r\n", Duration::from_millis(500));
    // The transaction ids the relay gave them toward b, in order.
    let tids: Vec<String> = forwarded
        .lines()
        .filter_map(|l| {
            l.strip_prefix("MSRP ")?
                .strip_suffix(" SEND")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(tids.len(), 3, "{forwarded:?}");

    let heads = read_reports(&mut a, Duration::from_secs(3), Duration::from_secs(8));
    let reports: Vec<&(Bytes, u16)> = heads.iter().filter(|(_, c)| *c != 200).collect();
    assert_eq!(
        reports,
        [
            &(Bytes::from_static(b"m0000"), 408),
            &(Bytes::from_static(b"m0001"), 408),
            &(Bytes::from_static(b"m0002"), 408),
        ],
        "{heads:?}"
    );

    // b answers now: too late, dropped (nothing reaches a).
    for tid in &tids {
        b.write_all(
            format!(
                "MSRP {tid} 200 OK\r\nTo-Path: msrp://127.0.0.1:{port}/bbb;tcp\r\n\
                 From-Path: msrp://b.test:9/pb;tcp\r\n-------{tid}$\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    }
    // The session goes on: the next message reaches b, its 200 reaches nobody but the relay.
    send_from_a(&mut a, port, "tx0003", "m0003", "again");
    let next = read_until(&mut b, "again");
    assert!(next.contains("Message-ID: m0003"), "{next:?}");
    let rest = read_reports(&mut a, Duration::from_millis(500), Duration::from_secs(2));
    assert!(
        rest.iter().all(|(k, c)| *c == 200 && &k[..] == b"tx0003"),
        "{rest:?}"
    );
}

/// A SEND that arrives before the other side ever connected waits for it (`peer_wait`):
/// forwarded once B connects, and answered 200 then, not before.
#[test]
fn a_send_before_the_other_side_connected_waits_for_it() {
    let (plane, _leg, _metrics, port) = plane_with_leg();
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    send_from_a(&mut a, port, "tx0001", "m0001", "early");
    let before = read_until_for(&mut a, "-------tx0001", Duration::from_millis(300));
    assert_eq!(before, "", "answered before it could be forwarded");
    // B's 200 and the waiting SEND may come in one read: read both together.
    let mut b = TcpStream::connect(plane.local_addr()).unwrap();
    b.write_all(bind_request(port, "bbb", "msrp://b.test:9/pb;tcp").as_bytes())
        .unwrap();
    let at_b = read_until(&mut b, "early");
    assert!(at_b.contains("MSRP tx00 200 OK\r\n"), "{at_b:?}");
    assert!(at_b.contains("Message-ID: m0001\r\n"), "{at_b:?}");
    let answer = read_until(&mut a, "-------tx0001");
    assert!(answer.starts_with("MSRP tx0001 200 OK\r\n"), "{answer:?}");
}

/// When the other side does not connect within `peer_wait`, the SEND fails: 481 to its
/// sender, and the failure REPORT it asked for (Failure-Report absent means yes); the
/// connection stays usable.
#[test]
fn a_send_fails_with_481_when_the_other_side_never_connects() {
    let mut settings = MsrpSettings::new("127.0.0.1:0".parse().unwrap());
    settings.peer_wait = Duration::from_millis(300);
    let (plane, _leg, metrics, port) = plane_with_leg_in(settings);
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    send_from_a(&mut a, port, "tx0001", "m0001", "nobody");
    let heads = read_reports(&mut a, Duration::from_millis(500), Duration::from_secs(5));
    assert!(
        heads.contains(&(Bytes::from_static(b"tx0001"), 481)),
        "{heads:?}"
    );
    assert!(
        heads.contains(&(Bytes::from_static(b"m0001"), 481)),
        "{heads:?}"
    );
    assert_eq!(metrics.reports_generated.load(Relaxed), 1);
    // A later message waits again (the side never connected) and fails the same way.
    send_from_a(&mut a, port, "tx0002", "m0002", "still nobody");
    let heads = read_reports(&mut a, Duration::from_millis(500), Duration::from_secs(5));
    assert!(
        heads.contains(&(Bytes::from_static(b"tx0002"), 481)),
        "{heads:?}"
    );
    assert_eq!(metrics.reports_generated.load(Relaxed), 2);
}

/// The SENDs forwarded to `s` (transaction id, Message-ID) until `quiet` passes without a byte.
fn read_sends(s: &mut TcpStream, quiet: Duration) -> Vec<(String, String)> {
    use cpm_engine::msrp::{Event, Method, Parser};
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut parser = Parser::new(MsrpSettings::new("127.0.0.1:0".parse().unwrap()).limits);
    let mut sends = Vec::new();
    loop {
        let mut buf = [0u8; 65536];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => parser.feed(Bytes::copy_from_slice(&buf[..k])),
        }
        while let Some(ev) = parser.poll() {
            let Event::Head(h) = ev.expect("what the relay sends parses") else {
                continue;
            };
            if h.method() == Some(&Method::Send) {
                let mid = h.message_id.clone().unwrap_or_default();
                sends.push((
                    String::from_utf8_lossy(&h.tid).into_owned(),
                    String::from_utf8_lossy(&mid).into_owned(),
                ));
            }
        }
    }
    sends
}

/// B reads what is forwarded and does not answer: once `max_unanswered` requests toward B
/// wait for their responses, A's connection is no longer read (what A sends waits in TCP,
/// not in our memory); each 200 from B lets more through, and every message arrives once,
/// in order.
#[test]
fn unanswered_requests_toward_a_side_are_capped() {
    const CAP: usize = 8;
    const SENT: usize = 30;
    let mut settings = MsrpSettings::new("127.0.0.1:0".parse().unwrap());
    settings.max_unanswered = CAP;
    let (plane, _leg, _metrics, port) = plane_with_leg_in(settings);
    let mut b = connect(&plane, port, "bbb", "msrp://b.test:9/pb;tcp");
    let mut a = connect(&plane, port, "aaa", "msrp://a.test:9/pa;tcp");
    // One message per read of the relay's: apart in time.
    for i in 0..SENT {
        send_from_a(&mut a, port, &format!("tx{i:04}"), &format!("m{i:04}"), "x");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut got = read_sends(&mut b, Duration::from_millis(500));
    assert!(
        (CAP..=CAP + 2).contains(&got.len()),
        "{} forwarded with none answered: {got:?}",
        got.len()
    );
    let mut answered = 0;
    while answered < got.len() {
        for (tid, _) in &got[answered..] {
            b.write_all(
                format!(
                    "MSRP {tid} 200 OK\r\nTo-Path: msrp://127.0.0.1:{port}/bbb;tcp\r\n\
                     From-Path: msrp://b.test:9/pb;tcp\r\n-------{tid}$\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        }
        answered = got.len();
        got.extend(read_sends(&mut b, Duration::from_millis(500)));
    }
    let mids: Vec<String> = got.into_iter().map(|(_, m)| m).collect();
    let want: Vec<String> = (0..SENT).map(|i| format!("m{i:04}")).collect();
    assert_eq!(mids, want);
}

/// Records the thread each relayed SEND was tapped on.
struct ThreadTap(Mutex<Vec<String>>);

impl Tap for ThreadTap {
    fn on_send(&self, _event: TapEvent) {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.0.lock().push(name);
    }
}

/// `from` (our URI facing it: `ours`, its path: `path`) sends a 5-byte SEND `tid`: it
/// reaches `to` and `from` gets its 200.
fn send_and_relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    port: u16,
    ours: &str,
    path: &str,
    tid: &str,
) {
    from.write_all(
        format!(
            "MSRP {tid} SEND\r\nTo-Path: msrp://127.0.0.1:{port}/{ours};tcp\r\n\
             From-Path: {path}\r\nMessage-ID: m{tid}\r\nByte-Range: 1-5/5\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n-------{tid}$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = read_until(to, "$\r\n");
    assert!(
        got.contains(&format!("Message-ID: m{tid}\r\n")),
        "{ours}: {got}"
    );
    let ok = read_until(from, &format!("-------{tid}$"));
    assert!(
        ok.contains(&format!("MSRP {tid} 200 OK\r\n")),
        "{ours}: {ok}"
    );
}

/// With three threads, legs and sinks are spread round robin and each runs on its own
/// thread: connections accepted by the first thread are moved to their leg's (or sink's)
/// once their first request named it, and relay both ways from there; everything is
/// released when the legs close.
#[test]
fn legs_and_sinks_run_on_the_thread_they_were_given() {
    let metrics = Arc::new(MsrpMetrics::default());
    let settings = MsrpSettings {
        threads: 3,
        ..MsrpSettings::new("127.0.0.1:0".parse().unwrap())
    };
    let plane = MsrpPlane::start(settings, [5; 32], 1, metrics.clone()).unwrap();
    let port = plane.local_addr().port();
    let mut legs = Vec::new();
    for k in 0..4 {
        let leg = open_test_leg(&plane, &k.to_string());
        let tap = Arc::new(ThreadTap(Mutex::new(Vec::new())));
        leg.set_tap(Some(tap.clone()));
        legs.push((leg, tap));
    }
    // The fifth opened: the second thread's.
    let on_sink = Arc::new(Mutex::new(Vec::new()));
    let seen = on_sink.clone();
    let on_message: OnMessage = Box::new(move |_m, reply| {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        seen.lock().push(name);
        let _ = reply.send(200);
    });
    let (sink, local) = bobs_sink(&plane, on_message);

    let mut peers = Vec::new();
    for (k, (_, tap)) in legs.iter().enumerate() {
        let pa = format!("msrp://a.test:9/pa{k};tcp");
        let pb = format!("msrp://b.test:9/pb{k};tcp");
        let mut b = connect(&plane, port, &format!("bbb{k}"), &pb);
        let mut a = connect(&plane, port, &format!("aaa{k}"), &pa);
        send_and_relay(&mut a, &mut b, port, &format!("aaa{k}"), &pa, "tx01");
        send_and_relay(&mut b, &mut a, port, &format!("bbb{k}"), &pb, "tx02");
        let want = format!("cpm-msrp-{}", k % 3);
        assert_eq!(*tap.0.lock(), [want.clone(), want], "leg {k}");
        peers.extend([a, b]);
    }

    let mut s = TcpStream::connect(plane.local_addr()).unwrap();
    let to = String::from_utf8_lossy(&local).into_owned();
    s.write_all(
        format!(
            "MSRP tids SEND\r\nTo-Path: {to}\r\nFrom-Path: msrp://a.test:9/pa;tcp\r\n\
             Message-ID: msgs\r\nByte-Range: 1-3/3\r\nContent-Type: text/plain\r\n\r\n\
             abc\r\n-------tids$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    assert!(read_until(&mut s, "-------tids$").contains("MSRP tids 200 OK\r\n"));
    assert_eq!(*on_sink.lock(), ["cpm-msrp-1"]);

    assert_eq!(metrics.connections.load(Relaxed), 9);
    drop(sink);
    legs.clear();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.connections.load(Relaxed) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        metrics.connections.load(Relaxed),
        0,
        "every connection released"
    );
    assert_eq!((plane.leg_count(), plane.sink_count()), (0, 0));
}

/// Two threads; the second leg opened runs on `cpm-msrp-1`, so every connection to it is
/// accepted on `cpm-msrp-0` and moved. Returns the plane, the leg (tapped) and the metrics.
fn leg_on_the_second_thread() -> (MsrpPlane, MsrpLeg, Arc<ThreadTap>, Arc<MsrpMetrics>, u16) {
    let settings = MsrpSettings {
        threads: 2,
        ..MsrpSettings::new("127.0.0.1:0".parse().unwrap())
    };
    let (plane, first, metrics, port) = plane_with_leg_in(settings);
    let leg = open_test_leg(&plane, "1");
    drop(first);
    let tap = Arc::new(ThreadTap(Mutex::new(Vec::new())));
    leg.set_tap(Some(tap.clone()));
    (plane, leg, tap, metrics, port)
}

/// Waits up to 5 s for the connection gauge to read `n`.
fn wait_connections(metrics: &MsrpMetrics, n: u64) {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.connections.load(Relaxed) != n && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(metrics.connections.load(Relaxed), n);
}

/// A peer that sends its first request and vanishes while its connection is being moved to
/// the leg's thread: the connection is counted once and released; the leg takes the side's
/// next connection and relays on its own thread.
#[test]
fn a_peer_that_vanishes_while_its_connection_moves_leaves_nothing() {
    let (plane, _leg, tap, metrics, port) = leg_on_the_second_thread();
    let (pa, pb) = ("msrp://a.test:9/pa1;tcp", "msrp://b.test:9/pb1;tcp");
    for _ in 0..3 {
        let mut gone = TcpStream::connect(plane.local_addr()).unwrap();
        gone.write_all(bind_request(port, "aaa1", pa).as_bytes())
            .unwrap();
        drop(gone);
    }
    wait_connections(&metrics, 0);

    let mut b = connect(&plane, port, "bbb1", pb);
    let mut a = connect(&plane, port, "aaa1", pa);
    assert_eq!(metrics.connections.load(Relaxed), 2);
    send_and_relay(&mut a, &mut b, port, "aaa1", pa, "tx01");
    assert_eq!(*tap.0.lock(), ["cpm-msrp-1"]);
    drop((a, b));
    wait_connections(&metrics, 0);
}

/// A malformed first request (a SEND without Message-ID, RFC 4975 §7.1) naming a leg of
/// another thread: the connection moves, is bound, gets its 400 there and relays on.
#[test]
fn a_malformed_first_request_is_answered_after_the_move() {
    let (plane, _leg, tap, metrics, port) = leg_on_the_second_thread();
    let (pa, pb) = ("msrp://a.test:9/pa1;tcp", "msrp://b.test:9/pb1;tcp");
    let mut b = connect(&plane, port, "bbb1", pb);
    let mut a = TcpStream::connect(plane.local_addr()).unwrap();
    a.write_all(
        format!(
            "MSRP bad1 SEND\r\nTo-Path: msrp://127.0.0.1:{port}/aaa1;tcp\r\n\
             From-Path: {pa}\r\nByte-Range: 1-2/2\r\n\
             Content-Type: text/plain\r\n\r\nhi\r\n-------bad1$\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = read_until(&mut a, "-------bad1$");
    assert!(got.starts_with("MSRP bad1 400 "), "{got}");
    send_and_relay(&mut a, &mut b, port, "aaa1", pa, "tx02");
    assert_eq!(
        *tap.0.lock(),
        ["cpm-msrp-1"],
        "nothing of the bad request relayed"
    );
    assert_eq!(metrics.connections.load(Relaxed), 2);
}
