//! Conferences through the real cpmd (issue 6): ad-hoc conferences created at the factory URI
//! (RFC 4579), joined at the focus URI, dial-out by REFER, the conference event package
//! (RFC 4575), mute through the HTTP API, predefined conferences started and ended through
//! the API, and the policy's refusals. Participants are scripted UAs; their audio is G.711
//! µ-law tones (a different frequency each), and what each hears is checked with Goertzel: the
//! others' tones present, its own absent. Every test ends with the conference gone and its
//! ports released (`/metrics`).

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use cpm_engine::conference::audio::{g711, tone};
use cpm_engine::sip::Message;
use cpm_tests::dialog::{uri_of, Dialog};
use cpm_tests::http::request;
use cpm_tests::sdp::{self, Sdp, Stream};
use cpm_tests::{assert_status, header, Cpmd, Received, Ua};

const WAIT: Duration = Duration::from_secs(5);
const ADMIN: &str = "admin-secret-token";
const SDP: &str = "application/sdp";

fn spawn(extra: &[&str]) -> Cpmd {
    let mut args = vec!["--test-hooks", "true", "--api-admin-token", ADMIN];
    args.extend_from_slice(extra);
    Cpmd::spawn(&args)
}

fn registered(cpmd: &Cpmd, user: &str) -> Ua {
    let mut ua = Ua::udp(cpmd.sip_addr()).user(user);
    assert_status(&ua.register(300), 200);
    ua
}

/// A participant: its SIP agent, its RTP socket, its dialog with the focus and where the
/// focus wants its RTP.
struct Party {
    ua: Ua,
    rtp: UdpSocket,
    dialog: Dialog,
    focus_media: SocketAddr,
}

fn rtp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind RTP")
}

fn method(m: &Message) -> &str {
    m.method().map(|m| m.as_str()).unwrap_or("")
}

#[track_caller]
fn expect_request(ua: &mut Ua, want: &str) -> Received {
    let got = ua
        .recv_request(WAIT)
        .unwrap_or_else(|| panic!("{} got no {want}", ua.contact_uri()));
    assert_eq!(method(&got.msg), want, "expected {want}, got:\n{}", got.msg);
    got
}

/// INVITEs `uri` with a PCMU offer from `ua`, ACKs the 2xx, returns the party and the 2xx.
#[track_caller]
fn join(mut ua: Ua, uri: &str) -> (Party, Message) {
    let rtp = rtp_socket();
    let port = rtp.local_addr().unwrap().port();
    let body = sdp::body(1, &[Stream::audio(port).formats(&[0])]);
    let invite = ua
        .req("INVITE", uri)
        .header("Contact", format!("<{}>", ua.contact_uri()))
        .body(SDP, body);
    let ok = ua.request(&invite);
    assert_status(&ok, 200);
    let dialog = Dialog::uac(&invite, &ok);
    let ack = dialog.ack(&ua, invite.cseq().unwrap());
    ua.send_req(&ack);
    let answer = Sdp::parse(&ok.body);
    let focus_media = answer.rtp_addr(0);
    (
        Party {
            ua,
            rtp,
            dialog,
            focus_media,
        },
        ok,
    )
}

/// Leaves with BYE (200 expected).
#[track_caller]
fn leave(p: &mut Party) {
    let bye = p.dialog.request(&p.ua, "BYE");
    assert_status(&p.ua.request(&bye), 200);
}

/// Sends a tone at `freq` (None: silence) from every party for `dur` while recording what
/// each receives; returns each party's received samples (decoded µ-law).
fn play(parties: &[&Party], freqs: &[Option<f64>], dur: Duration) -> Vec<Vec<i16>> {
    let handles: Vec<_> = parties
        .iter()
        .zip(freqs)
        .enumerate()
        .map(|(i, (p, f))| {
            let sock = p.rtp.try_clone().unwrap();
            let dest = p.focus_media;
            let f = *f;
            thread::spawn(move || tone_loop(sock, dest, f, dur, 0x1000 + i as u32))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn tone_loop(
    sock: UdpSocket,
    dest: SocketAddr,
    freq: Option<f64>,
    dur: Duration,
    ssrc: u32,
) -> Vec<i16> {
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let mut sine = freq.map(|f| tone::Sine::new(f, -15.0));
    let start = Instant::now();
    let mut next = start;
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut heard = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < dur {
        if Instant::now() >= next {
            let mut frame = [0i16; 160];
            if let Some(s) = sine.as_mut() {
                s.fill(&mut frame);
            }
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&ts.to_be_bytes());
            pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let mut payload = [0u8; 160];
            g711::ulaw_encode(&frame, &mut payload);
            pkt.extend_from_slice(&payload);
            let _ = sock.send_to(&pkt, dest);
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            next += Duration::from_millis(20);
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[1] & 0x7f == 0 {
                let mut out = vec![0i16; n - 12];
                g711::ulaw_decode(&buf[12..n], &mut out);
                heard.extend_from_slice(&out);
            }
        }
    }
    heard
}

/// The level (dBov) of `freq` in the last second of `heard`.
fn level(heard: &[i16], freq: f64) -> f64 {
    let n = heard.len().min(8000);
    tone::goertzel_dbov(&heard[heard.len() - n..], freq)
}

#[track_caller]
fn assert_hears(heard: &[i16], present: &[f64], absent: &[f64], who: &str) {
    assert!(
        heard.len() >= 8000,
        "{who} heard only {} samples",
        heard.len()
    );
    eprintln!(
        "{who}: present {:?} absent {:?}",
        present
            .iter()
            .map(|&f| level(heard, f) as i32)
            .collect::<Vec<_>>(),
        absent
            .iter()
            .map(|&f| level(heard, f) as i32)
            .collect::<Vec<_>>()
    );
    for &f in present {
        let l = level(heard, f);
        assert!(l > -35.0, "{who} should hear {f} Hz, level {l:.1} dBov");
    }
    for &f in absent {
        let l = level(heard, f);
        assert!(l < -45.0, "{who} should not hear {f} Hz, level {l:.1} dBov");
    }
}

fn api(cpmd: &Cpmd, method: &str, path: &str, body: &str) -> cpm_tests::http::Response {
    // HTTP/1.0 (the client's) needs a Content-Length on a POST: never an empty one.
    let body = if method == "POST" && body.is_empty() {
        "{}"
    } else {
        body
    };
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(
        cpmd.http_addr(),
        method,
        path,
        &headers,
        body.as_bytes(),
        WAIT,
    )
    .expect("API request")
}

/// Waits until no conference runs and no port is held.
#[track_caller]
fn assert_released(cpmd: &Cpmd) {
    cpmd.wait_metric("cpm_conferences", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_conference_participants", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_media_pool_ports_in_use", WAIT, |v| v == 0.0);
    cpmd.wait_metric("cpm_media_ports_in_use", WAIT, |v| v == 0.0);
}

/// Answers a NOTIFY 200 and returns its body.
#[track_caller]
fn notify(ua: &mut Ua) -> (String, String) {
    let n = expect_request(ua, "NOTIFY");
    ua.reply(&n, 200, "OK");
    (
        header(&n.msg, "Subscription-State").unwrap_or_default(),
        String::from_utf8_lossy(&n.msg.body).into_owned(),
    )
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn adhoc_conference_of_three_mixes_minus_own_with_events_and_mute() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let (mut a, ok) = join(alice, "sip:conf-factory@localhost");
    // RFC 4579 §4.1: the focus URI in the Contact, with isfocus.
    let contact = header(&ok, "Contact").expect("Contact");
    assert!(contact.contains(";isfocus"), "{contact}");
    let focus = uri_of(&contact);
    assert!(focus.starts_with("sip:conf-"), "{focus}");
    let id = focus[4..focus.find('@').unwrap()].to_string();

    // A watcher subscribes to the conference event package: 200, then a full NOTIFY.
    let mut watcher = Ua::udp(cpmd.sip_addr()).user("watcher");
    let sub = watcher
        .req("SUBSCRIBE", &focus)
        .header("Event", "conference")
        .header("Expires", "600")
        .header("Accept", "application/conference-info+xml")
        .header("Contact", format!("<{}>", watcher.contact_uri()));
    assert_status(&watcher.request(&sub), 200);
    let (state, doc) = notify(&mut watcher);
    assert!(state.starts_with("active"), "{state}");
    assert!(doc.contains("state=\"full\""), "{doc}");
    assert!(doc.contains("sip:alice@localhost"), "{doc}");

    // Bob and carol join at the focus URI; the watcher gets a partial NOTIFY for each.
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus);
    let (_, doc) = notify(&mut watcher);
    assert!(
        doc.contains("state=\"partial\"") && doc.contains("sip:bob@localhost"),
        "{doc}"
    );
    let (mut c, _) = join(Ua::udp(cpmd.sip_addr()).user("carol"), &focus);
    let (_, doc) = notify(&mut watcher);
    assert!(
        doc.contains("sip:carol@localhost") && !doc.contains("sip:bob@"),
        "{doc}"
    );

    // Each hears the other two tones and not its own.
    let (fa, fb, fc) = (500.0, 800.0, 1300.0);
    let heard = play(
        &[&a, &b, &c],
        &[Some(fa), Some(fb), Some(fc)],
        Duration::from_millis(2500),
    );
    assert_hears(&heard[0], &[fb, fc], &[fa], "alice");
    assert_hears(&heard[1], &[fa, fc], &[fb], "bob");
    assert_hears(&heard[2], &[fa, fb], &[fc], "carol");

    // Mute bob through the API: a partial NOTIFY (recvonly), and nobody hears him.
    let list = api(&cpmd, "GET", "/api/v1/conferences", "").json();
    let conf = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert_eq!(conf["participants"].as_array().unwrap().len(), 3, "{conf}");
    let bob_id = conf["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["uri"] == "sip:bob@localhost")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let r = api(
        &cpmd,
        "POST",
        &format!("/api/v1/conferences/{id}/participants/{bob_id}/mute"),
        "{\"muted\": true}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, doc) = notify(&mut watcher);
    assert!(doc.contains("<status>recvonly</status>"), "{doc}");
    let heard = play(
        &[&a, &b, &c],
        &[Some(fa), Some(fb), Some(fc)],
        Duration::from_millis(2000),
    );
    assert_hears(&heard[0], &[fc], &[fa, fb], "alice (bob muted)");
    assert_hears(&heard[2], &[fa], &[fb, fc], "carol (bob muted)");
    assert_hears(&heard[1], &[fa, fc], &[], "bob (muted, still hears)");

    // Carol leaves mid-conference: a partial NOTIFY with her deleted; the others go on.
    leave(&mut c);
    let (_, doc) = notify(&mut watcher);
    assert!(
        doc.contains("state=\"deleted\"") && doc.contains("sip:carol@"),
        "{doc}"
    );
    let heard = play(
        &[&a, &b],
        &[Some(fa), Some(fb)],
        Duration::from_millis(1500),
    );
    assert_hears(&heard[1], &[fa], &[fb, fc], "bob after carol left");

    // The last ones leave: the conference ends, the subscription is terminated.
    leave(&mut b);
    let _ = notify(&mut watcher);
    leave(&mut a);
    let _ = notify(&mut watcher);
    let (state, _) = notify(&mut watcher);
    assert!(state.starts_with("terminated"), "{state}");
    assert_released(&cpmd);
}

#[test]
fn refer_dials_out_and_reports_progress() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let mut bob = registered(&cpmd, "bob");
    let (mut a, ok) = join(alice, "sip:conf-factory@localhost");
    let focus = uri_of(&header(&ok, "Contact").unwrap());
    let refer = a
        .dialog
        .request(&a.ua, "REFER")
        .header("Refer-To", "<sip:bob@localhost>");
    assert_status(&a.ua.request(&refer), 202);
    let (_, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 100"), "{frag}");
    // The focus calls bob: its INVITE comes from the focus, with isfocus.
    let inv = expect_request(&mut bob, "INVITE");
    let contact = header(&inv.msg, "Contact").unwrap();
    assert!(
        contact.contains("isfocus")
            && uri_of(&contact).starts_with(&focus[..focus.find('@').unwrap()]),
        "{contact}"
    );
    let offer = Sdp::parse(&inv.msg.body);
    let rtp = rtp_socket();
    let answer = sdp::body(
        1,
        &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[8])],
    );
    let bob_contact = format!("<{}>", bob.contact_uri());
    bob.reply_with(
        &inv,
        200,
        "OK",
        &[("Contact", bob_contact.as_str())],
        Some((SDP, answer.as_bytes())),
    );
    expect_request(&mut bob, "ACK");
    let (state, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 200"), "{frag}");
    assert!(state.starts_with("terminated"), "{state}");
    // Bob hears alice (PCMA on his side).
    let b = Party {
        dialog: Dialog::uas(&inv.msg, bob.tag()),
        ua: bob,
        rtp,
        focus_media: offer.rtp_addr(0),
    };
    let (fa, fb) = (600.0, 1000.0);
    let heard = play_pcma_check(&a, &b, fa, fb);
    assert!(heard > -35.0, "bob hears alice at {heard:.1} dBov");
    // Bob hangs up, then alice: the conference ends.
    let mut b = b;
    leave(&mut b);
    leave(&mut a);
    assert_released(&cpmd);
}

/// Alice sends `fa` in PCMU, bob `fb` in PCMA; returns the level of `fa` in what bob hears.
fn play_pcma_check(a: &Party, b: &Party, fa: f64, fb: f64) -> f64 {
    let sa = a.rtp.try_clone().unwrap();
    let da = a.focus_media;
    let ta = thread::spawn(move || tone_loop(sa, da, Some(fa), Duration::from_millis(2000), 7));
    // Bob's side speaks A-law: encode and decode with A-law.
    let sock = b.rtp.try_clone().unwrap();
    let dest = b.focus_media;
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .unwrap();
    let mut sine = tone::Sine::new(fb, -15.0);
    let start = Instant::now();
    let mut next = start;
    let (mut seq, mut heard, mut buf) = (0u16, Vec::new(), [0u8; 2048]);
    while start.elapsed() < Duration::from_millis(2000) {
        if Instant::now() >= next {
            let frame = sine.frame();
            let mut pkt = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            let mut payload = [0u8; 160];
            g711::alaw_encode(&frame, &mut payload);
            pkt.extend_from_slice(&payload);
            let _ = sock.send_to(&pkt, dest);
            seq += 1;
            next += Duration::from_millis(20);
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 12 && buf[1] & 0x7f == 8 {
                let mut out = vec![0i16; n - 12];
                g711::alaw_decode(&buf[12..n], &mut out);
                heard.extend_from_slice(&out);
            }
        }
    }
    let _ = ta.join();
    if heard.len() < 8000 {
        return -127.0;
    }
    level(&heard, fa)
}

#[test]
fn no_g711_or_l16_is_488_and_policy_refuses() {
    let cpmd = spawn(&["--conference-max", "1"]);
    let mut alice = registered(&cpmd, "alice");
    // An offer without PCMU, PCMA or L16/8000: 488.
    let body = sdp::body(1, &[Stream::audio(4000).formats(&[18])]);
    let invite = alice
        .req("INVITE", "sip:conf-factory@localhost")
        .header("Contact", format!("<{}>", alice.contact_uri()))
        .body(SDP, body);
    let r = alice.request(&invite);
    assert_status(&r, 488);
    alice.ack(&invite, &r);
    // Someone not registered here may not create a conference: 403.
    let mut eve = Ua::udp(cpmd.sip_addr()).user("eve");
    let body = sdp::body(1, &[Stream::audio(4000).formats(&[0])]);
    let invite = eve
        .req("INVITE", "sip:conf-factory@localhost")
        .header("Contact", format!("<{}>", eve.contact_uri()))
        .body(SDP, body);
    let r = eve.request(&invite);
    assert_status(&r, 403);
    eve.ack(&invite, &r);
    // --conference-max 1: a second conference gets 503.
    let (mut a, _) = join(alice, "sip:conf-factory@localhost");
    let mut bob = registered(&cpmd, "bob");
    let body = sdp::body(1, &[Stream::audio(4002).formats(&[0])]);
    let invite = bob
        .req("INVITE", "sip:conf-factory@localhost")
        .header("Contact", format!("<{}>", bob.contact_uri()))
        .body(SDP, body);
    let r = bob.request(&invite);
    assert_status(&r, 503);
    bob.ack(&invite, &r);
    // A conference that does not exist: 404.
    let body = sdp::body(1, &[Stream::audio(4002).formats(&[0])]);
    let invite = bob
        .req("INVITE", "sip:conf-000000000000@localhost")
        .body(SDP, body);
    let r = bob.request(&invite);
    assert_status(&r, 404);
    bob.ack(&invite, &r);
    leave(&mut a);
    assert_released(&cpmd);
}

#[test]
fn predefined_conference_started_and_ended_through_the_api() {
    let builder = Cpmd::builder();
    let file = builder.file(
        "conferences.toml",
        "[[conference]]\nname = \"weekly\"\nparticipants = [\"sip:alice@localhost\", \"sip:bob@localhost\"]\n",
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
    // Not started yet: 480. Without the admin token: 401.
    let body = sdp::body(1, &[Stream::audio(4000).formats(&[0])]);
    let early = alice.req("INVITE", "sip:weekly@localhost").body(SDP, body);
    let r = alice.request(&early);
    assert_status(&r, 480);
    alice.ack(&early, &r);
    let r = request(
        cpmd.http_addr(),
        "POST",
        "/api/v1/conferences/weekly/start",
        &[("Content-Type", "application/json")],
        b"{}",
        WAIT,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    // Started: the focus calls alice and bob.
    let r = api(&cpmd, "POST", "/api/v1/conferences/weekly/start", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["focus"], "sip:weekly@localhost");
    let mut parties = Vec::new();
    for ua in [&mut alice, &mut bob] {
        let inv = expect_request(ua, "INVITE");
        let rtp = rtp_socket();
        let answer = sdp::body(
            1,
            &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[0])],
        );
        let contact = format!("<{}>", ua.contact_uri());
        ua.reply_with(
            &inv,
            200,
            "OK",
            &[("Contact", contact.as_str())],
            Some((SDP, answer.as_bytes())),
        );
        expect_request(ua, "ACK");
        parties.push((inv, rtp));
    }
    // Carol was not invited: 403.
    let mut carol = Ua::udp(cpmd.sip_addr()).user("carol");
    let body = sdp::body(1, &[Stream::audio(4004).formats(&[0])]);
    let inv = carol.req("INVITE", "sip:weekly@localhost").body(SDP, body);
    let r = carol.request(&inv);
    assert_status(&r, 403);
    carol.ack(&inv, &r);
    let list = api(&cpmd, "GET", "/api/v1/conferences", "").json();
    assert_eq!(list[0]["id"], "weekly", "{list}");
    assert_eq!(
        list[0]["participants"].as_array().unwrap().len(),
        2,
        "{list}"
    );
    // Ended through the API: BYE to both.
    let r = api(&cpmd, "POST", "/api/v1/conferences/weekly/end", "");
    assert_eq!(r.status, 204, "{}", r.text());
    for ua in [&mut alice, &mut bob] {
        let bye = expect_request(ua, "BYE");
        ua.reply(&bye, 200, "OK");
    }
    assert_released(&cpmd);
    let r = api(&cpmd, "POST", "/api/v1/conferences/weekly/end", "");
    assert_eq!(r.status, 404);
}

#[test]
fn a_panicking_conference_releases_everything() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let (mut a, _) = join(alice, "sip:conf-factory@localhost");
    let (b, _) = join(
        Ua::udp(cpmd.sip_addr()).user("bob"),
        &a.dialog.target.clone(),
    );
    let info = a
        .dialog
        .request(&a.ua, "INFO")
        .header("X-Cpm-Test", "panic-conference");
    a.ua.send_req(&info);
    assert_released(&cpmd);
    drop(b);
}

/// SIGTERM (issue 7, graceful shutdown): a running conference goes on for `--drain-time` while
/// a new participant gets 503; then the focus BYEs everyone and cpmd exits 0.
#[test]
fn sigterm_drains_then_ends_the_conference() {
    let mut cpmd = spawn(&["--drain-time", "1"]);
    let alice = registered(&cpmd, "alice");
    let (mut a, _) = join(alice, "sip:conf-factory@localhost");
    let focus = a.dialog.target.clone();
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus);
    let since = Instant::now();
    cpmd.terminate();
    let mut carol = Ua::udp(cpmd.sip_addr()).user("carol");
    let rtp = rtp_socket();
    let body = sdp::body(
        1,
        &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[0])],
    );
    let invite = carol
        .req("INVITE", &focus)
        .header("Contact", format!("<{}>", carol.contact_uri()))
        .body(SDP, body);
    let resp = carol.request(&invite);
    assert_status(&resp, 503);
    for p in [&mut a, &mut b] {
        let bye = expect_request(&mut p.ua, "BYE");
        assert!(
            p.dialog.owns(&bye.msg),
            "BYE of another dialog:\n{}",
            bye.msg
        );
        p.ua.reply(&bye, 200, "OK");
    }
    assert!(
        since.elapsed() >= Duration::from_millis(900),
        "BYE after {:?}, before the drain time",
        since.elapsed()
    );
    let status = cpmd.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
