//! The client scenarios against the `cpm-loadgen uas` (two processes on loopback): exact
//! counts, the JSON contract fields, delivery latency at the receiving side.

mod support;

use std::time::Duration;

use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(60);

#[test]
fn options_to_uas() {
    let dir = TempDir::new();
    let report = dir.path().join("options.json");
    let html = dir.path().join("options.html");
    let uas = Uas::spawn(&["--listen", "127.0.0.1:0", "--duration", "60"]);
    let target = uas.addr.to_string();
    let out = run(
        &[
            "options",
            "--target",
            &target,
            "--rate",
            "200",
            "--count",
            "400",
            "--json",
            report.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            "--max-p99-ms",
            "1000",
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&report);
    assert_all_succeeded(&v, "options", 400);
    assert_eq!(quantity(&v, "request_options"), 400);
    let rate = v["rate_achieved"].as_f64().unwrap();
    assert!((rate - 200.0).abs() < 1.0, "rate {rate}");
    assert!(v["rtp"].is_null());
    assert_eq!(v["thresholds"]["passed"], true);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && !page.contains("<script"));
    assert!(out
        .stdout
        .contains("400 attempted, 400 succeeded, 0 failed"));
    // The uas counted the same 400 requests.
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    assert!(u.stdout.contains("received: OPTIONS 400"), "{u:?}");
}

#[test]
fn message_to_uas_reports_delivery_latency_at_the_receiver() {
    let dir = TempDir::new();
    let sender = dir.path().join("sender.json");
    let receiver = dir.path().join("receiver.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--users",
        "3",
        "--duration",
        "60",
        "--json",
        receiver.to_str().unwrap(),
    ]);
    let target = uas.addr.to_string();
    let out = run(
        &[
            "message",
            "--target",
            &target,
            "--rate",
            "300",
            "--count",
            "300",
            "--body-size",
            "400",
            "--content-type",
            "text/plain;charset=utf-8",
            "--json",
            sender.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&sender);
    assert_all_succeeded(&v, "message", 300);
    assert_eq!(quantity(&v, "request_message"), 300);
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    let r = json(&receiver);
    assert_eq!(r["scenario"], "uas");
    assert_all_succeeded(&r, "uas", 300);
    assert_eq!(quantity(&r, "message_delivery"), 300);
    assert_eq!(r["counters"].get("messages_without_stamp"), None);
}

#[test]
fn message_with_an_in_process_receiver() {
    let dir = TempDir::new();
    let report = dir.path().join("message.json");
    let out = run(
        &[
            "message",
            "--receiver",
            "127.0.0.1:0",
            "--rate",
            "200",
            "--count",
            "200",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = json(&report);
    assert_all_succeeded(&v, "message", 200);
    // One run reports both sides.
    assert_eq!(quantity(&v, "request_message"), 200);
    assert_eq!(quantity(&v, "message_delivery"), 200);
    assert!(
        out.stdout.contains("receiver received: MESSAGE 200"),
        "{out:?}"
    );
}

#[test]
fn thresholds_set_the_exit_code() {
    // Nobody listens: every OPTIONS fails (bounded by --drain), exit 1 with the reason.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sock.local_addr().unwrap().to_string();
    drop(sock);
    let out = run(
        &[
            "options", "--target", &target, "--rate", "50", "--count", "5", "--drain", "1",
        ],
        T,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("threshold not met: success 0.00 % < --min-success 100 %"),
        "{out:?}"
    );
    assert!(out.stdout.contains("failures: unfinished: 5"), "{out:?}");
    // A usage error is exit 2.
    let out = run(&["options", "--target", &target, "--count", "5"], T);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--rate"), "{out:?}");
}

#[test]
fn a_second_signal_ends_the_drain() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    // Nobody answers; the drain would last 60 s.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sock.local_addr().unwrap().to_string();
    let mut child = Command::new(support::bin())
        .args([
            "options",
            "--target",
            &target,
            "--rate",
            "100",
            "--duration",
            "60",
            "--drain",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sigint = |c: &std::process::Child| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
    };
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    std::thread::sleep(Duration::from_millis(300));
    // Still draining after the first signal.
    assert!(child.try_wait().unwrap().is_none());
    sigint(&child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after the second SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("failures: interrupted: "), "{out}");
    drop(sock);
}

/// A refresh in flight when the uas stops (the soak's rounds stop on a refresh's time): the
/// uas unregisters once it is answered, so no binding outlives it. A registrar of our own
/// grants 2 s (a refresh after 1 s) and answers the refresh only 1 s late; the uas gets its
/// SIGTERM in between.
#[test]
fn a_refresh_in_flight_at_the_stop_is_followed_by_the_unregistration() {
    use cpm_engine::sip::{builder, HeaderName};
    use std::net::UdpSocket;
    use std::sync::mpsc;
    use std::time::Instant;

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let registrar = sock.local_addr().unwrap().to_string();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The expiry each REGISTER asked for (retransmissions of the late refresh left out).
    let (seen_tx, seen) = mpsc::channel::<u32>();
    let (stop_tx, stop) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut late: Vec<(Instant, Vec<u8>, std::net::SocketAddr)> = Vec::new();
        let mut refreshes = 0;
        while stop.try_recv().is_err() {
            let now = Instant::now();
            for (_, r, to) in late.iter().filter(|(at, ..)| *at <= now) {
                sock.send_to(r, to).unwrap();
            }
            late.retain(|(at, ..)| *at > now);
            let mut buf = [0u8; 4096];
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let req = cpm_engine::sip::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
            let asked = req.expires().unwrap().unwrap_or(3600);
            let granted = if asked == 0 { 0 } else { 2 };
            let mut ok = builder::local_response(&req, 200, "OK");
            if let Some(c) = req.headers.get(&HeaderName::Contact) {
                let c = String::from_utf8_lossy(c).into_owned();
                ok.headers
                    .push(HeaderName::Contact, format!("{c};expires={granted}"));
            }
            let wire = ok.to_bytes().to_vec();
            if late.iter().any(|(_, r, _)| *r == wire) {
                continue;
            }
            let _ = seen_tx.send(asked);
            if asked > 0 {
                refreshes += 1;
            }
            if asked > 0 && refreshes > 1 {
                // The refresh: answered a second late.
                late.push((now + Duration::from_secs(1), wire, from));
            } else {
                sock.send_to(&wire, from).unwrap();
            }
        }
    });
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &registrar,
        "--users",
        "1",
        "--expires",
        "2",
        "--duration",
        "60",
    ]);
    let first = seen.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, 2);
    // The refresh arrives after 1 s; stop while it waits for its answer.
    assert_eq!(seen.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(200));
    let out = uas.stop();
    assert_eq!(out.code, 0, "{out:?}");
    let _ = stop_tx.send(());
    server.join().unwrap();
    let after: Vec<u32> = seen.try_iter().collect();
    assert_eq!(after, [0], "the REGISTERs after the refresh");
}
