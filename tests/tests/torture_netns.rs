//! Every RFC 4475 / RFC 5118 torture message sent to a real cpmd, with cpmd and the sender alone
//! in a private network namespace (only loopback up): the sender can bind the ports the vectors'
//! Via headers name (5060, ...) and cpmd's answers to the vectors' made-up hosts go nowhere.
//!
//! The outer test creates the namespace, starts cpmd in it, and re-runs this test binary inside
//! it as the sender (`torture_sender`, selected by `CPM_TORTURE_TARGET`). Expectations come from
//! the shared table [`cpm_tests::torture::EXPECTATIONS`].
//!
//! `sudo -E cargo test -p cpm-tests --test torture_netns -- --include-ignored --nocapture`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::{parse, Message};
use cpm_tests::netns::Netns;
use cpm_tests::torture::{expectation, Expect};
use cpm_tests::wire::header;
use cpm_tests::{assert_status, vectors, Cpmd, Transport, Ua};

const TARGET_ENV: &str = "CPM_TORTURE_TARGET";
const INNER_TEST: &str = "torture_sender";

/// How long the sender waits for an answer that should come, and for one that should not.
const ANSWER_WAIT: Duration = Duration::from_secs(3);
const SILENCE_WAIT: Duration = Duration::from_millis(800);

/// Statuses that reject a request for its syntax (RFC 3261 §21.4.1, §21.4.16, §21.5.6).
const SYNTAX_REJECTIONS: [u16; 3] = [400, 416, 505];

#[test]
#[ignore = "needs root and ../shared/vectors"]
fn torture_vectors_in_netns() {
    let dir =
        vectors::dir().expect("torture vectors: set CPM_VECTORS or provide ../shared/vectors");
    let ns = Netns::create()
        .unwrap_or_else(|e| panic!("cannot create a network namespace (needs root): {e}"));
    let mut cpmd = Cpmd::builder().wrapper(&ns.wrapper()).spawn();
    let exe = std::env::current_exe().expect("current_exe");
    let out = ns
        .command(&exe)
        .args([
            INNER_TEST,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(TARGET_ENV, cpmd.sip_addr().to_string())
        .env("CPM_VECTORS", &dir)
        .output()
        .expect("run the sender inside the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the sender failed ({}); see its output above",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the sender did not run:\n{stdout}"
    );
    assert!(cpmd.is_running(), "cpmd died during the torture run");
    cpmd.terminate();
    let status = cpmd.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "cpmd exit status {status} after the torture run"
    );
}

/// What came back for one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No answer within the wait.
    Nothing,
    /// Only a provisional response (the request is being served).
    Provisional(u16),
    /// A final response, with its reason phrase.
    Final(u16, String),
}

/// The sender: runs inside the namespace when [`torture_vectors_in_netns`] sets
/// `CPM_TORTURE_TARGET`; run directly it has nothing to send to and returns at once.
#[test]
#[ignore = "entry point of torture_vectors_in_netns, run inside its namespace"]
fn torture_sender() {
    let Ok(target) = std::env::var(TARGET_ENV) else {
        eprintln!("{TARGET_ENV} not set: run torture_vectors_in_netns instead");
        return;
    };
    let target: SocketAddr = target.parse().expect("CPM_TORTURE_TARGET is IP:PORT");
    let mut failures = Vec::new();
    let mut seen_call_ids = Vec::new();
    println!("{:<42} {:<12} outcome", "vector", "expected");
    for v in vectors::load() {
        let expect =
            expectation(&v.name).unwrap_or_else(|| panic!("no expectation for {}", v.name));
        let parsed = parse(Bytes::from(v.bytes.clone())).ok();
        let outcome = send_vector(target, &v.bytes, parsed.as_ref(), &seen_call_ids, expect);
        if let Some(cid) = parsed.as_ref().and_then(|m| header(m, "Call-ID")) {
            seen_call_ids.push(cid);
        }
        let is_request = parsed
            .as_ref()
            .map_or(!v.bytes.starts_with(b"SIP/"), Message::is_request);
        let verdict = judge(expect, is_request, parsed.as_ref(), &outcome);
        println!(
            "{:<42} {:<12} {outcome:?}{}",
            v.name,
            format!("{expect:?}"),
            verdict
                .as_ref()
                .map_or(String::new(), |e| format!("  <-- {e}"))
        );
        if let Some(e) = verdict {
            failures.push(format!(
                "{}: expected {expect:?}, got {outcome:?}: {e}",
                v.name
            ));
        }
    }
    // Still alive and serving, over both transports.
    for t in [Transport::Udp, Transport::Tcp] {
        let mut ua = Ua::new(t, target);
        let req = ua.req("OPTIONS", "sip:localhost");
        assert_status(&ua.request(&req), 200);
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) handled wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Why `outcome` is wrong for `expect`, or `None` when it is right.
fn judge(
    expect: Expect,
    is_request: bool,
    msg: Option<&Message>,
    outcome: &Outcome,
) -> Option<String> {
    let is_ack = msg
        .and_then(|m| m.method())
        .is_some_and(|m| m.as_str() == "ACK");
    match (expect, outcome) {
        // Responses are never answered (RFC 3261 §18.1.2, §16.7).
        (_, Outcome::Final(..) | Outcome::Provisional(_)) if !is_request => {
            Some("a response was answered".into())
        }
        (_, Outcome::Nothing) if !is_request => None,
        (Expect::Drop, Outcome::Nothing) => None,
        (Expect::Drop, _) => Some("should have been dropped".into()),
        (Expect::Reject(code), Outcome::Final(got, _)) if *got == code => None,
        (Expect::Reject(_), _) => Some("wrong or no rejection".into()),
        (Expect::Accept | Expect::Later(_), Outcome::Nothing) if is_ack => None,
        (Expect::Accept | Expect::Later(_), Outcome::Nothing) => {
            Some("a valid request was not answered".into())
        }
        (Expect::Accept | Expect::Later(_), Outcome::Provisional(_)) => None,
        (Expect::Later(code), Outcome::Final(got, _)) if *got == code => None,
        (Expect::Accept | Expect::Later(_), Outcome::Final(got, reason))
            if SYNTAX_REJECTIONS.contains(got) =>
        {
            Some(format!(
                "a valid request was refused for its syntax ({got} {reason})"
            ))
        }
        (Expect::Accept | Expect::Later(_), Outcome::Final(..)) => None,
    }
}

/// Sends one vector from 127.0.0.1:<its top Via's port, or 5060> (where RFC 3261 §18.2.2 sends
/// the response of a UDP request whose sent-by is not us) and collects the answer to it.
fn send_vector(
    target: SocketAddr,
    bytes: &[u8],
    parsed: Option<&Message>,
    seen: &[String],
    expect: Expect,
) -> Outcome {
    let port = parsed
        .filter(|m| m.is_request())
        .and_then(|m| m.top_via().ok())
        .and_then(|v| v.port)
        .unwrap_or(5060);
    let sock = bind_retrying(port);
    sock.send_to(bytes, target).expect("send vector");
    let call_id = parsed.and_then(|m| header(m, "Call-ID"));
    let wait = match expect {
        Expect::Drop => SILENCE_WAIT,
        _ if parsed.is_some_and(|m| !m.is_request()) => SILENCE_WAIT,
        _ => ANSWER_WAIT,
    };
    let deadline = Instant::now() + wait;
    let mut outcome = Outcome::Nothing;
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        sock.set_read_timeout(Some(left)).expect("set_read_timeout");
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            break;
        };
        let Ok(resp) = parse(Bytes::copy_from_slice(&buf[..n])) else {
            return Outcome::Final(
                0,
                format!(
                    "unparsable answer: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            );
        };
        let Some(code) = resp.status() else { continue };
        let resp_cid = header(&resp, "Call-ID");
        let ours = match (&call_id, &resp_cid) {
            (Some(a), Some(b)) => a == b,
            (None, Some(b)) => !seen.contains(b),
            (_, None) => true,
        };
        if !ours {
            continue;
        }
        if code < 200 {
            outcome = Outcome::Provisional(code);
            continue;
        }
        if let Some(req) = parsed.filter(|m| m.method().is_some_and(|m| m.as_str() == "INVITE")) {
            if let Some(ack) = ack_for(req, &resp) {
                let _ = sock.send_to(&ack, from);
            }
        }
        return Outcome::Final(code, cpm_tests::reason(&resp));
    }
    outcome
}

/// Binds 127.0.0.1:port, retrying briefly (the previous vector's socket may still be closing).
fn bind_retrying(port: u16) -> UdpSocket {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() >= deadline => panic!("bind 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The ACK of a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3).
fn ack_for(invite: &Message, resp: &Message) -> Option<Vec<u8>> {
    let uri = String::from_utf8_lossy(invite.request_uri()?).into_owned();
    let via = header(invite, "Via")?;
    let from = header(invite, "From")?;
    let call_id = header(invite, "Call-ID")?;
    let to = header(resp, "To")?;
    let num = header(invite, "CSeq")?
        .split_whitespace()
        .next()?
        .to_string();
    Some(
        format!(
            "ACK {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {num} ACK\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    )
}
