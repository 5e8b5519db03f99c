//! cpm-loadgen through the Kamailio + rtpengine reference (`perf/reference/kamailio-rtpengine`,
//! started on SIP 5270, ng 22422, RTP 32000-32999 and always stopped):
//!
//! - calls: a `uas --rtp echo` registered as user0000..user0004, 10 calls from `call`. Every
//!   call succeeds, RTP is counted exactly (received == sent, lost 0), and rtpengine anchored
//!   the media: 10 offers, answers and deletes, `relayedpackets` == what the client sent plus
//!   what came back, and the answer the caller got (seen by a SIP tap, `support::relay`, in
//!   front of Kamailio) names an rtpengine port with rtpengine's `a=rtcp`, and Kamailio's
//!   Record-Route;
//! - `register` at Kamailio, and `options` and `message` routed by Kamailio to a registered
//!   `uas`, every one succeeding and counted at the uas (message delivery measured there).
//!
//! The two tests take turns (fixed ports); each starts and stops its own reference (stopping
//! takes ctl.sh about 4 s).
//!
//! Ignored in the plain run; CI installs kamailio and rtpengine-daemon and runs them with
//! `--include-ignored`. Without either program they fail.

mod support;

use std::time::Duration;

use cpm_engine::sdp::SessionDescription;
use cpm_engine::sip::{HeaderName, Method};
use support::reference::{Reference, RTP_MAX, RTP_MIN};
use support::relay::{Dir, Relay};
use support::{assert_all_succeeded, json, quantity, run, TempDir, Uas};

const T: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs kamailio and rtpengine"]
fn calls_through_kamailio_have_their_media_anchored_by_rtpengine() {
    let reference = Reference::start();
    let dir = TempDir::new();
    let report = dir.path().join("call.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &reference.sip_addr(),
        "--users",
        "5",
        "--rtp",
        "echo",
        "--duration",
        "60",
    ]);
    let tap = Relay::tap(reference.sip_addr().parse().unwrap());
    let target = tap.addr().to_string();
    let out = run(
        &[
            "call",
            "--target",
            &target,
            "--domain",
            &reference.sip_addr(),
            "--users",
            "5",
            "--rate",
            "5",
            "--count",
            "10",
            "--hold",
            "1",
            "--json",
            report.to_str().unwrap(),
            "--max-loss",
            "0",
        ],
        T,
    );
    let stats = reference.stats_when(|s| s.get("deletecount") == Some(&10));
    let u = uas.stop();
    let log = tap.stop();

    // The answers the caller got: Kamailio's Record-Route and rtpengine's media address.
    let answers: Vec<_> = log
        .messages(Dir::ToCaller)
        .filter(|m| m.status() == Some(200) && m.cseq().is_ok_and(|c| c.method == Method::Invite))
        .collect();
    assert!(answers.len() >= 10, "{} 200s to INVITE", answers.len());
    for ok in &answers {
        let sdp = SessionDescription::parse(&ok.body).expect("SDP answer");
        let m = &sdp.media()[0];
        let media = sdp.media_address(m).expect("answer's media address");
        assert!(
            (RTP_MIN..=RTP_MAX).contains(&media.port()),
            "answer names {media}, not an rtpengine port"
        );
        // rtpengine writes a=rtcp (port + 1); the uas's own answers have none.
        assert_eq!(
            m.rtcp().map(|r| r.port),
            Some(media.port() + 1),
            "{:?}",
            ok.body
        );
        // Without Kamailio's Record-Route in the 200 (RFC 3261 §12.1.1) the caller's ACK and
        // BYE carry no Route and Kamailio answers the BYE "404 Not here".
        assert!(
            ok.headers
                .get(&HeaderName::RecordRoute)
                .is_some_and(|rr| rr.starts_with(b"<sip:127.0.0.1:5270;lr")),
            "the 200 carries no Record-Route of Kamailio's (the uas must copy it, RFC 3261 \
             §12.1.1):\n{:?}",
            ok.to_bytes()
        );
    }

    assert_eq!(out.code, 0, "{out:?}\n{}", reference.logs());
    let v = json(&report);
    assert_all_succeeded(&v, "call", 10);
    assert_eq!(quantity(&v, "call_setup"), 10);
    let rtp = &v["rtp"];
    let sent = rtp["sent"].as_u64().expect("rtp.sent");
    assert!((10 * 49..=10 * 52).contains(&sent), "sent {sent}: {v:#}");
    assert_eq!(rtp["received"], sent, "{v:#}");
    assert_eq!(rtp["lost"], 0, "{v:#}");
    assert_eq!(rtp["duplicates"], 0, "{v:#}");
    assert!(v["counters"]["rtp_from_elsewhere"].is_null(), "{v:#}");

    // rtpengine anchored every call, and relayed every packet both ways.
    for k in ["offercount", "answercount", "deletecount"] {
        assert_eq!(stats.get(k), Some(&10), "{k}: {stats:?}");
    }
    assert_eq!(stats.get("errorcount"), Some(&0), "{stats:?}");
    let both_ways = (sent + rtp["received"].as_u64().unwrap()) as i64;
    assert_eq!(stats.get("relayedpackets"), Some(&both_ways), "{stats:?}");

    assert_eq!(u.code, 0, "{u:?}");
    assert!(
        u.stdout
            .contains("registered at 127.0.0.1:5270: 5 ok, 0 failed"),
        "{u:?}"
    );
    assert!(
        u.stdout.contains("calls: 10 ended by BYE, 0 still up"),
        "{u:?}"
    );
}

#[test]
#[ignore = "needs kamailio and rtpengine"]
fn register_options_and_message_through_kamailio() {
    let reference = Reference::start();
    let dir = TempDir::new();
    // Registrations at Kamailio's registrar.
    let report = dir.path().join("register.json");
    let out = run(
        &[
            "register",
            "--target",
            &reference.sip_addr(),
            "--users",
            "20",
            "--rate",
            "50",
            "--count",
            "20",
            "--expires",
            "60",
            "--json",
            report.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(out.code, 0, "{out:?}\n{}", reference.logs());
    let v = json(&report);
    assert_all_succeeded(&v, "register", 20);
    assert_eq!(quantity(&v, "registration"), 20);
    // OPTIONS and MESSAGE to users of a registered uas, routed by Kamailio.
    let receiver = dir.path().join("uas.json");
    let uas = Uas::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--register-to",
        &reference.sip_addr(),
        "--users",
        "3",
        "--duration",
        "60",
        "--json",
        receiver.to_str().unwrap(),
    ]);
    for scenario in ["options", "message"] {
        let report = dir.path().join(format!("{scenario}.json"));
        let out = run(
            &[
                scenario,
                "--target",
                &reference.sip_addr(),
                "--users",
                "3",
                "--rate",
                "50",
                "--count",
                "30",
                "--json",
                report.to_str().unwrap(),
            ],
            T,
        );
        assert_eq!(out.code, 0, "{out:?}\n{}", reference.logs());
        let v = json(&report);
        assert_all_succeeded(&v, scenario, 30);
        assert_eq!(quantity(&v, &format!("request_{scenario}")), 30);
    }
    let u = uas.stop();
    assert_eq!(u.code, 0, "{u:?}");
    assert!(
        u.stdout.contains("received: MESSAGE 30, OPTIONS 30"),
        "{u:?}"
    );
    // Delivered by Kamailio, measured at the receiving side.
    let s = json(&receiver);
    assert_eq!(quantity(&s, "message_delivery"), 30, "{s:#}");
}
