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
use cpm_engine::conference::roster::{ConferenceInfo, DocState, EndpointStatus, MediaStatus};
use cpm_engine::sip::Message;
use cpm_tests::dialog::{uri_of, Dialog};
use cpm_tests::http::request;
use cpm_tests::mixing::{self, assert_hears, level, tone_loop};
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
    let socks: Vec<_> = parties
        .iter()
        .map(|p| (p.rtp.try_clone().unwrap(), p.focus_media))
        .collect();
    mixing::play(&socks, freqs, dur, 0x1000)
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
    cpmd.wait_metric("cpm_media_relay_sockets", WAIT, |v| v == 0.0);
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

/// Folds a conference-info NOTIFY body into what the subscriber knows (RFC 4575 §4.6: a full
/// document replaces it, a partial one must carry the next version); returns the document's
/// state.
#[track_caller]
fn apply(info: &mut ConferenceInfo, doc: &str) -> DocState {
    let next = ConferenceInfo::parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let state = next.state;
    info.apply(next).unwrap_or_else(|e| panic!("{e}: {doc}"));
    state
}

/// The users a subscriber knows, sorted.
fn users(info: &ConferenceInfo) -> Vec<&str> {
    let mut u: Vec<&str> = info.users.iter().map(|u| u.entity.as_str()).collect();
    u.sort_unstable();
    u
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
    let mut info = ConferenceInfo::default();
    assert_eq!(apply(&mut info, &doc), DocState::Full, "{doc}");
    assert_eq!(info.entity, format!("sip:{id}@localhost"));
    assert_eq!(users(&info), ["sip:alice@localhost"]);
    assert_eq!(info.user_count, Some(1));

    // Bob and carol join at the focus URI; the watcher gets a partial NOTIFY for each, with
    // only the newcomer in it.
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus);
    let (_, doc) = notify(&mut watcher);
    assert_eq!(apply(&mut info, &doc), DocState::Partial, "{doc}");
    assert!(!doc.contains("sip:alice@"), "{doc}");
    assert_eq!(users(&info), ["sip:alice@localhost", "sip:bob@localhost"]);
    let (mut c, _) = join(Ua::udp(cpmd.sip_addr()).user("carol"), &focus);
    let (_, doc) = notify(&mut watcher);
    assert_eq!(apply(&mut info, &doc), DocState::Partial, "{doc}");
    assert!(!doc.contains("sip:bob@"), "{doc}");
    assert_eq!(users(&info).len(), 3);
    assert_eq!(info.user_count, Some(3));
    // The participants' sockets count in the relay's descriptor budget (no relay leg here).
    let ports = cpmd.wait_metric("cpm_media_ports_in_use", WAIT, |v| v >= 3.0);
    cpmd.wait_metric("cpm_media_relay_sockets", WAIT, |v| v == ports);

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
    assert_eq!(apply(&mut info, &doc), DocState::Partial, "{doc}");
    let bob_ep = &info.user("sip:bob@localhost").unwrap().endpoints[0];
    assert_eq!(bob_ep.status, Some(EndpointStatus::MutedViaFocus), "{doc}");
    assert_eq!(bob_ep.media[0].status, Some(MediaStatus::RecvOnly), "{doc}");
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
    assert_eq!(apply(&mut info, &doc), DocState::Partial, "{doc}");
    assert_eq!(users(&info), ["sip:alice@localhost", "sip:bob@localhost"]);
    let heard = play(
        &[&a, &b],
        &[Some(fa), Some(fb)],
        Duration::from_millis(1500),
    );
    assert_hears(&heard[1], &[fa], &[fb, fc], "bob after carol left");

    // The last ones leave: the conference ends, the subscription is terminated.
    leave(&mut b);
    let (_, doc) = notify(&mut watcher);
    apply(&mut info, &doc);
    leave(&mut a);
    let (_, doc) = notify(&mut watcher);
    apply(&mut info, &doc);
    assert!(info.users.is_empty(), "{info:?}");
    let (state, doc) = notify(&mut watcher);
    assert!(state.starts_with("terminated"), "{state}");
    apply(&mut info, &doc);
    assert_eq!(info.user_count, Some(0));
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
fn a_panicking_conference_byes_everyone_and_releases_everything() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let (mut a, _) = join(alice, "sip:conf-factory@localhost");
    let (mut b, _) = join(
        Ua::udp(cpmd.sip_addr()).user("bob"),
        &a.dialog.target.clone(),
    );
    let info = a
        .dialog
        .request(&a.ua, "INFO")
        .header("X-Cpm-Test", "panic-conference");
    a.ua.send_req(&info);
    // Everyone gets a BYE of their dialog with the focus.
    for p in [&mut a, &mut b] {
        let bye = loop {
            let got =
                p.ua.recv_request(WAIT)
                    .unwrap_or_else(|| panic!("{} got no BYE", p.ua.contact_uri()));
            if method(&got.msg) == "BYE" {
                break got;
            }
        };
        assert!(
            p.dialog.owns(&bye.msg),
            "BYE of another dialog:\n{}",
            bye.msg
        );
        p.ua.reply(&bye, 200, "OK");
    }
    assert_released(&cpmd);
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
    // The new participant is refused during the drain: once it has begun.
    cpmd.wait_draining(WAIT);
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

// ---- video ---------------------------------------------------------------------------------

/// A participant with audio and video: its video socket (RTP and RTCP multiplexed) and where
/// the focus wants its video.
struct VideoParty {
    party: Party,
    video: UdpSocket,
    focus_video: SocketAddr,
}

/// An offer of PCMU audio and `video` (an `m=video` section, `a=rtcp-mux` added) from ports
/// of fresh sockets.
fn av_offer(audio: &UdpSocket, video_port: u16, video: &str) -> String {
    let mut body = sdp::body(
        1,
        &[Stream::audio(audio.local_addr().unwrap().port()).formats(&[0])],
    );
    body.push_str(&format!(
        "m=video {video_port} RTP/AVP {video}a=rtcp-mux\r\n"
    ));
    body
}

/// INVITEs `uri` with audio and H.264 video (PT 96); returns the party and the answer.
#[track_caller]
fn join_av(mut ua: Ua, uri: &str, video_sdp: &str) -> (VideoParty, Sdp, Message) {
    let rtp = rtp_socket();
    let video = rtp_socket();
    let body = av_offer(&rtp, video.local_addr().unwrap().port(), video_sdp);
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
    let focus_video = if answer.media[1].port != 0 {
        answer.rtp_addr(1)
    } else {
        focus_media
    };
    (
        VideoParty {
            party: Party {
                ua,
                rtp,
                dialog,
                focus_media,
            },
            video,
            focus_video,
        },
        answer,
        ok,
    )
}

const H264: &str = "96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";

/// What a participant's video socket received: RTP (arrival, seq, ts, ssrc, the sender's
/// tag in the payload) and RTCP feedback (arrival, packet type, FMT, FIR sequence number).
#[derive(Default)]
struct VideoLog {
    rtp: Vec<(Duration, u16, u32, u32, u8)>,
    feedback: Vec<(Duration, u8, u8, Option<u8>)>,
}

/// Plays audio (a tone while `talk` says so, else silence) and 30 fps video (two packets a
/// frame, the marker on the second; payload starts with `tag`) from `p` for `dur`; at
/// `pli_at` it sends the focus a PLI on its video port. Records what its video port gets.
fn av_loop(
    p: &VideoParty,
    tag: u8,
    freq: f64,
    talk: (Duration, Duration),
    pli_at: Option<Duration>,
    dur: Duration,
) -> thread::JoinHandle<VideoLog> {
    let (audio, video) = (
        p.party.rtp.try_clone().unwrap(),
        p.video.try_clone().unwrap(),
    );
    let (adest, vdest) = (p.party.focus_media, p.focus_video);
    thread::spawn(move || {
        audio.set_nonblocking(true).unwrap();
        video
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let ssrc = 0x5000 + u32::from(tag);
        let mut sine = tone::Sine::new(freq, -15.0);
        let start = Instant::now();
        let (mut next_a, mut next_v) = (start, start);
        let (mut aseq, mut vseq, mut vts, mut frame) = (0u16, 300u16 * u16::from(tag), 0u32, 0u32);
        let mut pli_sent = false;
        let mut log = VideoLog::default();
        let mut buf = [0u8; 2048];
        while start.elapsed() < dur {
            let t = start.elapsed();
            if Instant::now() >= next_a {
                let mut pcm = [0i16; 160];
                let s = sine.frame();
                if t >= talk.0 && t < talk.1 {
                    pcm.copy_from_slice(&s);
                }
                let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                pkt[2..4].copy_from_slice(&aseq.to_be_bytes());
                pkt[4..8].copy_from_slice(&(u32::from(aseq) * 160).to_be_bytes());
                pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let mut payload = [0u8; 160];
                g711::ulaw_encode(&pcm, &mut payload);
                pkt.extend_from_slice(&payload);
                let _ = audio.send_to(&pkt, adest);
                aseq = aseq.wrapping_add(1);
                next_a += Duration::from_millis(20);
            }
            if Instant::now() >= next_v {
                for last in [false, true] {
                    let mut pkt = vec![0x80, 96 | if last { 0x80 } else { 0 }];
                    pkt.extend_from_slice(&vseq.to_be_bytes());
                    pkt.extend_from_slice(&vts.to_be_bytes());
                    pkt.extend_from_slice(&(ssrc + 0x100).to_be_bytes());
                    pkt.push(tag);
                    pkt.extend_from_slice(&frame.to_be_bytes());
                    pkt.extend_from_slice(&[0xab; 600]);
                    let _ = video.send_to(&pkt, vdest);
                    vseq = vseq.wrapping_add(1);
                }
                vts = vts.wrapping_add(3000);
                frame += 1;
                next_v += Duration::from_micros(33_333);
            }
            if let Some(at) = pli_at.filter(|at| !pli_sent && t >= *at) {
                let _ = at;
                pli_sent = true;
                let mut pli = vec![0x81, 206, 0, 2];
                pli.extend_from_slice(&(ssrc + 0x100).to_be_bytes());
                pli.extend_from_slice(&[0, 0, 0, 0]);
                let _ = video.send_to(&pli, vdest);
            }
            while audio.recv_from(&mut buf).is_ok() {}
            if let Ok((n, _)) = video.recv_from(&mut buf) {
                let at = start.elapsed();
                let d = &buf[..n];
                if n >= 8 && (192..=223).contains(&d[1]) {
                    // RTCP: walk the compound, note feedback.
                    let mut rest = d;
                    while rest.len() >= 4 {
                        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
                        let Some(pkt) = rest.get(..len) else { break };
                        let fir_seq = (pkt[1] == 206 && pkt[0] & 0x1f == 4)
                            .then(|| pkt.get(16).copied())
                            .flatten();
                        log.feedback.push((at, pkt[1], pkt[0] & 0x1f, fir_seq));
                        rest = &rest[len..];
                    }
                } else if n > 12 {
                    log.rtp.push((
                        at,
                        u16::from_be_bytes([d[2], d[3]]),
                        u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
                        u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
                        d[12],
                    ));
                }
            }
        }
        log
    })
}

/// The sender tags a participant saw from `after` on.
fn tags_after(log: &VideoLog, after: Duration) -> Vec<u8> {
    let mut tags: Vec<u8> = log
        .rtp
        .iter()
        .filter(|r| r.0 >= after)
        .map(|r| r.4)
        .collect();
    tags.dedup();
    tags
}

#[track_caller]
fn assert_one_continuous_stream(log: &VideoLog, who: &str) {
    assert!(
        log.rtp.len() > 100,
        "{who} got {} video packets",
        log.rtp.len()
    );
    let ssrc = log.rtp[0].3;
    for w in log.rtp.windows(2) {
        assert_eq!(w[1].3, ssrc, "{who}: one SSRC");
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "{who}: sequence continues");
        assert!(
            w[1].2.wrapping_sub(w[0].2) < 1 << 31,
            "{who}: timestamps go forward ({} then {})",
            w[0].2,
            w[1].2
        );
    }
}

/// PLI and FIR received (from `after` on): FIR sequence numbers.
fn keyframe_requests(log: &VideoLog, after: Duration) -> (usize, Vec<u8>) {
    let f = log.feedback.iter().filter(|f| f.0 >= after);
    let plis = f.clone().filter(|f| (f.1, f.2) == (206, 1)).count();
    let firs = f.filter_map(|f| f.3).collect();
    (plis, firs)
}

#[test]
fn active_speaker_video_is_forwarded_and_switched() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let (a, answer, ok) = join_av(alice, "sip:conf-factory@localhost", H264);
    // The answer mirrors the offer's video format, and offers feedback (RFC 4585, 5104).
    let v = &answer.media[1];
    assert_eq!(
        (v.kind.as_str(), v.formats.clone()),
        ("video", vec!["96".to_string()])
    );
    assert_ne!(v.port, 0);
    assert!(
        v.attributes.iter().any(|a| a == "rtpmap:96 H264/90000"),
        "{v:?}"
    );
    assert!(
        v.attributes
            .iter()
            .any(|a| a == "fmtp:96 packetization-mode=1"),
        "{v:?}"
    );
    assert!(
        v.attributes.iter().any(|a| a == "rtcp-fb:96 ccm fir"),
        "{v:?}"
    );
    let focus = uri_of(&header(&ok, "Contact").unwrap());
    // Bob offers H.264 under another payload type: accepted, his number mirrored.
    let (b, answer, _) = join_av(
        Ua::udp(cpmd.sip_addr()).user("bob"),
        &focus,
        "98 96\r\na=rtpmap:98 VP8/90000\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n",
    );
    assert_eq!(answer.media[1].formats, ["96"], "{:?}", answer.media[1]);
    assert_ne!(answer.media[1].port, 0);
    let (c, _, _) = join_av(Ua::udp(cpmd.sip_addr()).user("carol"), &focus, H264);
    // Dave has only VP8: the conference forwards H.264, so his video is declined.
    let (mut d, answer, _) = join_av(
        Ua::udp(cpmd.sip_addr()).user("dave"),
        &focus,
        "97\r\na=rtpmap:97 VP8/90000\r\n",
    );
    assert_eq!(answer.media[1].port, 0, "{:?}", answer.media[1]);
    assert_ne!(answer.media[0].port, 0);
    leave(&mut d.party);

    // Alice talks for 2.5 s, then bob; carol never does and asks for a key frame at 5 s.
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let dur = ms(6500);
    let ha = av_loop(&a, b'A', 500.0, (s(0), ms(2500)), None, dur);
    let hb = av_loop(&b, b'B', 800.0, (ms(2500), dur), None, dur);
    let hc = av_loop(&c, b'C', 1300.0, (dur, dur), Some(s(5)), dur);
    let (la, lb, lc) = (ha.join().unwrap(), hb.join().unwrap(), hc.join().unwrap());

    eprintln!(
        "video packets received: alice {}, bob {}, carol {}; bob's feedback {:?}",
        la.rtp.len(),
        lb.rtp.len(),
        lc.rtp.len(),
        lb.feedback
    );
    // Carol sees alice, then bob, as one stream: one SSRC, the sequence going on by one.
    assert_one_continuous_stream(&lc, "carol");
    let early = tags_after(&lc, ms(1500));
    assert_eq!(
        early.first(),
        Some(&b'A'),
        "carol sees alice first: {early:?}"
    );
    assert_eq!(
        tags_after(&lc, ms(5500)),
        [b'B'],
        "carol sees bob at the end"
    );
    let late: Vec<u8> = tags_after(&lc, ms(1500));
    assert_eq!(
        late,
        [b'A', b'B'],
        "one switch, at a frame boundary: {late:?}"
    );
    // Alice (no longer the speaker) sees bob; bob (the speaker) sees the previous one, alice.
    assert_one_continuous_stream(&la, "alice");
    assert_eq!(tags_after(&la, ms(5500)), [b'B']);
    assert_one_continuous_stream(&lb, "bob");
    assert_eq!(tags_after(&lb, ms(5500)), [b'A']);
    // Everyone got their own SSRC.
    assert!(la.rtp[0].3 != lb.rtp[0].3 && lb.rtp[0].3 != lc.rtp[0].3);
    // Bob was asked for a key frame (PLI + FIR) when he became the speaker, and again for
    // carol's PLI (a new FIR sequence number).
    let (plis, firs) = keyframe_requests(&lb, ms(2500));
    assert!(
        plis >= 2 && firs.len() >= 2,
        "bob: {plis} PLI, FIRs {firs:?}"
    );
    assert!(
        firs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{firs:?}"
    );
    let (plis, _) = keyframe_requests(&la, Duration::ZERO);
    assert!(
        plis >= 1,
        "alice was asked for a key frame when first shown"
    );

    let (mut a, mut b, mut c) = (a, b, c);
    leave(&mut a.party);
    leave(&mut b.party);
    leave(&mut c.party);
    assert_released(&cpmd);
}

// ---- scheduled start -----------------------------------------------------------------------

/// The RFC 3339 UTC time `d` from now (H. Hinnant's `civil_from_days`).
fn rfc3339_in(d: Duration, back: bool) -> String {
    let now = std::time::SystemTime::now();
    let t = if back { now - d } else { now + d };
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn predefined_conference_starts_and_ends_at_its_times() {
    let builder = Cpmd::builder();
    let start = rfc3339_in(Duration::from_secs(2), false);
    let end = rfc3339_in(Duration::from_secs(5), false);
    let past = rfc3339_in(Duration::from_secs(60), true);
    let file = builder.file(
        "conferences.toml",
        &format!(
            "[[conference]]\nname = \"standup\"\nparticipants = [\"sip:alice@localhost\", \"sip:bob@localhost\"]\n\
             start = \"{start}\"\nend = \"{end}\"\n\
             [[conference]]\nname = \"yesterday\"\nparticipants = [\"sip:alice@localhost\"]\nstart = \"{past}\"\n"
        ),
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
    let t0 = Instant::now();
    // Nothing runs before the start time.
    let list = api(&cpmd, "GET", "/api/v1/conferences", "").json();
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
    // At its start the focus calls both (waiting up to the start plus WAIT).
    for ua in [&mut alice, &mut bob] {
        let inv = ua
            .recv_request(Duration::from_secs(8))
            .expect("the scheduled conference calls");
        assert_eq!(method(&inv.msg), "INVITE");
        assert!(
            inv.msg
                .headers
                .iter()
                .any(|h| h.value.starts_with(b"<sip:standup@")),
            "from the focus: {}",
            inv.msg
        );
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
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "not started early"
    );
    let list = api(&cpmd, "GET", "/api/v1/conferences", "").json();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only standup runs: {list}"
    );
    assert_eq!(list[0]["id"], "standup");
    // At its end time the focus BYEs everyone.
    for ua in [&mut alice, &mut bob] {
        let bye = ua
            .recv_request(Duration::from_secs(8))
            .expect("the conference ends at its end time");
        assert_eq!(method(&bye.msg), "BYE");
        ua.reply(&bye, 200, "OK");
    }
    assert_released(&cpmd);
    // The one whose start was already past when cpmd started was never started.
    let body = sdp::body(1, &[Stream::audio(4000).formats(&[0])]);
    let inv = alice
        .req("INVITE", "sip:yesterday@localhost")
        .body(SDP, body);
    let r = alice.request(&inv);
    assert_status(&r, 480);
    alice.ack(&inv, &r);
}

// ---- removal by REFER ----------------------------------------------------------------------

#[test]
fn the_creator_removes_a_participant_by_refer() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    let (mut a, ok) = join(alice, "sip:conf-factory@localhost");
    let focus = uri_of(&header(&ok, "Contact").unwrap());
    let (mut b, _) = join(Ua::udp(cpmd.sip_addr()).user("bob"), &focus);
    let (mut c, _) = join(Ua::udp(cpmd.sip_addr()).user("carol"), &focus);
    let remove_bob = "<sip:bob@localhost;method=BYE>";
    // Carol did not create the conference: 403.
    let refer = c
        .dialog
        .request(&c.ua, "REFER")
        .header("Refer-To", remove_bob);
    assert_status(&c.ua.request(&refer), 403);
    // Nor may anyone outside the conference's dialogs, whatever its From says.
    let mut eve = Ua::udp(cpmd.sip_addr()).user("alice");
    let refer = eve
        .req("REFER", &focus)
        .header("Refer-To", remove_bob)
        .header("Contact", format!("<{}>", eve.contact_uri()));
    assert_status(&eve.request(&refer), 403);
    // Alice (the creator) may; someone not in the conference is 404.
    let refer = a
        .dialog
        .request(&a.ua, "REFER")
        .header("Refer-To", "<sip:dave@localhost;method=BYE>");
    assert_status(&a.ua.request(&refer), 404);
    let refer = a
        .dialog
        .request(&a.ua, "REFER")
        .header("Refer-To", remove_bob);
    assert_status(&a.ua.request(&refer), 202);
    let (_, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 100"), "{frag}");
    // The focus BYEs bob in his dialog; his 200 is reported to alice.
    let bye = expect_request(&mut b.ua, "BYE");
    assert_eq!(
        header(&bye.msg, "Call-ID").as_deref(),
        Some(b.dialog.call_id.as_str()),
        "in bob's dialog"
    );
    b.ua.reply(&bye, 200, "OK");
    let (state, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 200"), "{frag}");
    assert!(state.starts_with("terminated"), "{state}");
    // Bob is gone from the API's list; alice and carol remain.
    let list = api(&cpmd, "GET", "/api/v1/conferences", "").json();
    let uris: Vec<&str> = list[0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        ["sip:alice@localhost", "sip:carol@localhost"],
        "{list}"
    );
    leave(&mut c);
    leave(&mut a);
    assert_released(&cpmd);
}

// ---- 2xx retransmission, dial-out to contacts in turn ---------------------------------------

#[test]
fn the_focus_repeats_its_2xx_until_the_ack_over_udp() {
    let cpmd = spawn(&[]);
    let mut alice = registered(&cpmd, "alice");
    let rtp = rtp_socket();
    let body = sdp::body(
        1,
        &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[0])],
    );
    let invite = alice
        .req("INVITE", "sip:conf-factory@localhost")
        .header("Contact", format!("<{}>", alice.contact_uri()))
        .body(SDP, body);
    let ok = alice.request(&invite);
    assert_status(&ok, 200);
    // No ACK: the 200 comes again at T1, 2·T1, ... (RFC 3261 §13.3.1.4).
    let t0 = Instant::now();
    let mut again = Vec::new();
    while t0.elapsed() < Duration::from_millis(1900) {
        if let Some(m) = alice.recv(Duration::from_millis(100)) {
            assert_eq!(m.status(), Some(200), "{m}");
            assert_eq!(header(&m, "To"), header(&ok, "To"), "the same 2xx");
            again.push(t0.elapsed());
        }
    }
    assert!(again.len() >= 2, "retransmissions at {again:?}");
    assert!(
        again[1] - again[0] >= Duration::from_millis(700),
        "doubling: {again:?}"
    );
    // The ACK stops them.
    let mut dialog = Dialog::uac(&invite, &ok);
    alice.send_req(&dialog.ack(&alice, invite.cseq().unwrap()));
    alice.expect_silence(Duration::from_millis(2500), "no 2xx after the ACK");
    let bye = dialog.request(&alice, "BYE");
    assert_status(&alice.request(&bye), 200);
    assert_released(&cpmd);
}

#[test]
fn dial_out_tries_the_users_contacts_in_turn() {
    let cpmd = spawn(&[]);
    let alice = registered(&cpmd, "alice");
    // Bob has two devices.
    let mut phones = [registered(&cpmd, "bob"), registered(&cpmd, "bob")];
    let (mut a, _) = join(alice, "sip:conf-factory@localhost");
    let refer = a
        .dialog
        .request(&a.ua, "REFER")
        .header("Refer-To", "<sip:bob@localhost>");
    assert_status(&a.ua.request(&refer), 202);
    let (_, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 100"), "{frag}");
    // Whichever device is called first is unavailable (480): the focus calls the other.
    let (first, inv) = wait_invite(&mut phones);
    assert_eq!(method(&inv.msg), "INVITE");
    phones[first].reply(&inv, 480, "Temporarily Unavailable");
    expect_request(&mut phones[first], "ACK");
    let second = 1 - first;
    let inv = expect_request(&mut phones[second], "INVITE");
    let rtp = rtp_socket();
    let answer = sdp::body(
        1,
        &[Stream::audio(rtp.local_addr().unwrap().port()).formats(&[0])],
    );
    let contact = format!("<{}>", phones[second].contact_uri());
    phones[second].reply_with(
        &inv,
        200,
        "OK",
        &[("Contact", contact.as_str())],
        Some((SDP, answer.as_bytes())),
    );
    expect_request(&mut phones[second], "ACK");
    // The referrer hears only the outcome: 200.
    let (state, frag) = notify(&mut a.ua);
    assert!(frag.starts_with("SIP/2.0 200"), "{frag}");
    assert!(state.starts_with("terminated"), "{state}");
    let mut b = Party {
        dialog: Dialog::uas(&inv.msg, phones[second].tag()),
        ua: phones.into_iter().nth(second).unwrap(),
        rtp,
        focus_media: Sdp::parse(&inv.msg.body).rtp_addr(0),
    };
    leave(&mut b);
    leave(&mut a);
    assert_released(&cpmd);
}

/// The first request either UA gets, and which got it.
fn wait_invite(uas: &mut [Ua; 2]) -> (usize, Received) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        for (i, ua) in uas.iter_mut().enumerate() {
            if let Some(r) = ua.recv_request(Duration::from_millis(50)) {
                return (i, r);
            }
        }
    }
    panic!("no device was called");
}
