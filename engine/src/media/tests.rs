//! Whole-session tests of the media controller: offers and answers through both sides with the
//! exact SDP each side is sent, the leg changes for the user plane, and the pool afterwards.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::sdp::{Codec, SessionDescription};

const RELAY: &str = "203.0.113.1";

/// CRLF-joins `lines` (one SDP line per element).
fn sdp(lines: &[&str]) -> Bytes {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    Bytes::from(s)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn pair(rtp: u16) -> LocalPorts {
    LocalPorts {
        rtp,
        rtcp: Some(rtp + 1),
    }
}

/// A session relaying on [`RELAY`] with `codecs` allowed, and a 100-port pool.
fn setup(codecs: Option<Vec<Codec>>) -> (MediaSession, PortPool) {
    let config = MediaConfig {
        codecs,
        ..MediaConfig::new(ip(RELAY))
    };
    (
        MediaSession::new(Arc::new(config)),
        PortPool::new(30000, 30099),
    )
}

fn drain(s: &mut MediaSession) -> Vec<LegChange> {
    std::iter::from_fn(|| s.poll_change()).collect()
}

/// Our origin line in `body`, checked to be ours: `o=- <id> <version> IN IP4 <relay>`.
fn our_origin(body: &Bytes) -> (String, u64) {
    let d = SessionDescription::parse(body).unwrap();
    let o = d.origin();
    assert_eq!(o.username, "-");
    assert_eq!(o.address, RELAY);
    (text(&o.session_id), o.session_version)
}

/// `lines` as the SDP we send: line 1 (the `o=` line) is `o=- <id> <version> IN IP4 RELAY`
/// with the id read from `got`.
fn expect(got: &Bytes, version: u64, lines: &[&str]) {
    let (id, _) = our_origin(got);
    let origin = format!("o=- {id} {version} IN IP4 {RELAY}");
    let mut all: Vec<&str> = lines.to_vec();
    all.insert(1, &origin);
    assert_eq!(text(got), text(&sdp(&all)));
}

fn set_peer(stream: usize, side: Side, rtp: &str, rtcp: Option<&str>) -> LegChange {
    LegChange::SetPeer {
        stream: StreamId(stream),
        side,
        rtp: addr(rtp),
        rtcp: rtcp.map(addr),
    }
}

fn open(stream: usize, kind: MediaKind, a: u16, b: u16, rtcp_mux: bool) -> LegChange {
    LegChange::Open {
        stream: StreamId(stream),
        kind,
        a_facing: pair(a),
        b_facing: pair(b),
        rtcp_mux,
    }
}

fn close(stream: usize) -> LegChange {
    LegChange::Close {
        stream: StreamId(stream),
    }
}

fn alice_audio() -> Bytes {
    sdp(&[
        "v=0",
        "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ])
}

fn bob_audio_answer() -> Bytes {
    sdp(&[
        "v=0",
        "o=bob 2808844564 2808844564 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
    ])
}

/// An established audio call: A-facing 30000/30001, B-facing 30002/30003; changes drained.
fn audio_call() -> (MediaSession, PortPool) {
    let (mut s, mut pool) = setup(None);
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    s.answer(&mut pool, Side::B, &bob_audio_answer()).unwrap();
    drain(&mut s);
    (s, pool)
}

#[test]
fn audio_offer_and_answer_are_rewritten_both_ways() {
    let (mut s, mut pool) = setup(None);
    let to_b = s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    expect(
        &to_b,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30002 RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ],
    );
    assert!(s.offer_pending());
    assert_eq!(
        drain(&mut s),
        vec![
            open(0, MediaKind::Audio, 30000, 30002, false),
            set_peer(0, Side::A, "192.0.2.10:49170", Some("192.0.2.10:49171")),
        ]
    );
    assert_eq!(pool.in_use(), 4);
    let to_a = s.answer(&mut pool, Side::B, &bob_audio_answer()).unwrap();
    expect(
        &to_a,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=sendrecv",
        ],
    );
    assert_ne!(
        our_origin(&to_a).0,
        our_origin(&to_b).0,
        "one origin per side"
    );
    assert_eq!(
        drain(&mut s),
        vec![set_peer(
            0,
            Side::B,
            "198.51.100.20:6000",
            Some("198.51.100.20:6001")
        )]
    );
    assert!(!s.offer_pending());
    assert_eq!(s.ports(StreamId(0)), Some((pair(30000), pair(30002))));
    assert_eq!((s.leg_count(), pool.in_use()), (1, 4));
}

/// A baresip-like offer: audio with `a=rtcp`, video with its own `c=` and rtcp-mux, session and
/// media attributes of every kind, an unknown line type.
fn alice_av() -> Bytes {
    sdp(&[
        "v=0",
        "o=- 1826476513 2813337520 IN IP4 192.168.1.10",
        "s=-",
        "c=IN IP4 192.168.1.10",
        "t=0 0",
        "a=tool:baresip 1.1.0",
        "a=x-unknown-session:1",
        "m=audio 10204 RTP/AVP 96 0 101",
        "b=AS:96",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 stereo=1;sprop-stereo=1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtcp:10205",
        "a=ssrc:2581961340 cname:b8a5e0c8",
        "a=x-unknown-media",
        "a=sendrecv",
        "m=video 10206 RTP/AVPF 100 102",
        "c=IN IP4 192.168.1.11",
        "a=rtpmap:100 H264/90000",
        "a=fmtp:100 packetization-mode=0;profile-level-id=42e01f",
        "a=rtpmap:102 VP8/90000",
        "a=rtcp-fb:* nack pli",
        "a=rtcp-fb:100 ccm fir",
        "a=rtcp:10207 IN IP4 192.168.1.12",
        "a=rtcp-mux",
        "a=sendrecv",
        "x=an unknown line type",
    ])
}

#[test]
fn audio_and_video_with_unknown_lines_pass_through() {
    let (mut s, mut pool) = setup(None);
    let to_b = s.offer(&mut pool, Side::A, &alice_av()).unwrap();
    // Only c=, m= ports, a=rtcp and o= change; every other line is as received.
    let want = text(&alice_av())
        .replace("o=- 1826476513 2813337520 IN IP4 192.168.1.10\r\n", "")
        .replace("IN IP4 192.168.1.10", "IN IP4 203.0.113.1")
        .replace("IN IP4 192.168.1.11", "IN IP4 203.0.113.1")
        .replace("m=audio 10204", "m=audio 30002")
        .replace("a=rtcp:10205", "a=rtcp:30003")
        .replace("m=video 10206", "m=video 30006")
        .replace(
            "a=rtcp:10207 IN IP4 192.168.1.12",
            "a=rtcp:30007 IN IP4 203.0.113.1",
        );
    let lines: Vec<&str> = want.trim_end().split("\r\n").collect();
    expect(&to_b, 1, &lines);
    assert_eq!(
        drain(&mut s),
        vec![
            open(0, MediaKind::Audio, 30000, 30002, false),
            set_peer(0, Side::A, "192.168.1.10:10204", Some("192.168.1.10:10205")),
            open(1, MediaKind::Video, 30004, 30006, true),
            set_peer(1, Side::A, "192.168.1.11:10206", None),
        ]
    );
    let answer = sdp(&[
        "v=0",
        "o=- 99 1 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 7000 RTP/AVP 96 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        "a=x-answer-thing:7",
        "m=video 7002 RTP/AVPF 100",
        "a=rtpmap:100 H264/90000",
        "a=rtcp-mux",
    ]);
    let to_a = s.answer(&mut pool, Side::B, &answer).unwrap();
    expect(
        &to_a,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 96 101",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
            "a=x-answer-thing:7",
            "m=video 30004 RTP/AVPF 100",
            "a=rtpmap:100 H264/90000",
            "a=rtcp-mux",
        ],
    );
    assert_eq!(
        drain(&mut s),
        vec![
            set_peer(0, Side::B, "198.51.100.20:7000", Some("198.51.100.20:7001")),
            set_peer(1, Side::B, "198.51.100.20:7002", None),
        ]
    );
    assert_eq!(pool.in_use(), 8);
}

#[test]
fn rtcp_mux_not_answered_falls_back_to_rtcp_ports() {
    let (mut s, mut pool) = setup(None);
    let offer = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 5000 RTP/AVP 0",
        "a=rtcp:5000",
        "a=rtcp-mux",
    ]);
    let to_b = s.offer(&mut pool, Side::A, &offer).unwrap();
    assert!(text(&to_b).contains("m=audio 30002 RTP/AVP 0\r\na=rtcp:30003\r\na=rtcp-mux\r\n"));
    assert_eq!(
        drain(&mut s),
        vec![
            open(0, MediaKind::Audio, 30000, 30002, true),
            set_peer(0, Side::A, "192.0.2.10:5000", None),
        ]
    );
    let answer = sdp(&[
        "v=0",
        "o=- 2 1 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
    ]);
    let to_a = s.answer(&mut pool, Side::B, &answer).unwrap();
    assert!(text(&to_a).contains("m=audio 30000 RTP/AVP 0\r\n"));
    assert!(!text(&to_a).contains("rtcp"));
    // Not negotiated: A's RTCP goes to its a=rtcp port (here the RTP port, as it wrote).
    assert_eq!(
        drain(&mut s),
        vec![
            set_peer(0, Side::A, "192.0.2.10:5000", Some("192.0.2.10:5000")),
            set_peer(0, Side::B, "198.51.100.20:6000", Some("198.51.100.20:6001")),
        ]
    );
}

#[test]
fn rtcp_mux_only_takes_single_ports() {
    let (mut s, mut pool) = setup(None);
    let offer = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 5000 UDP/TLS/RTP/SAVPF 111",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp:5000",
        "a=rtcp-mux",
        "a=rtcp-mux-only",
        "a=fingerprint:sha-256 AB:CD",
        "a=setup:actpass",
    ]);
    let to_b = s.offer(&mut pool, Side::A, &offer).unwrap();
    let t = text(&to_b);
    assert!(t.contains("m=audio 30001 UDP/TLS/RTP/SAVPF 111\r\n"), "{t}");
    assert!(t.contains("a=rtcp:30001\r\n"), "a=rtcp names the RTP port");
    assert!(t.contains("a=fingerprint:sha-256 AB:CD\r\na=setup:actpass\r\n"));
    let single = |rtp| LocalPorts { rtp, rtcp: None };
    assert_eq!(s.ports(StreamId(0)), Some((single(30000), single(30001))));
    assert_eq!(pool.in_use(), 2);
    s.release_all(&mut pool);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn dropping_rtcp_mux_only_moves_the_leg_to_a_pair() {
    let offer = |extra: &str| {
        let body = format!("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\n{extra}");
        Bytes::from(body)
    };
    let answer = sdp(&[
        "v=0",
        "o=- 2 1 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
        "a=rtcp-mux",
    ]);
    let (mut s, mut pool) = setup(None);
    s.offer(&mut pool, Side::A, &offer("a=rtcp-mux-only\r\n"))
        .unwrap();
    s.answer(&mut pool, Side::B, &answer).unwrap();
    drain(&mut s);
    assert_eq!(pool.in_use(), 2);
    let to_b = s.offer(&mut pool, Side::A, &offer("")).unwrap();
    assert!(text(&to_b).contains("m=audio 30004 RTP/AVP 0\r\n"));
    let changes = drain(&mut s);
    assert_eq!(
        changes[..2],
        [close(0), open(0, MediaKind::Audio, 30002, 30004, true)]
    );
    assert_eq!(pool.in_use(), 6, "both held until the answer");
    s.rollback(&mut pool);
    assert_eq!(drain(&mut s)[..1], [close(0)]);
    assert_eq!(
        s.ports(StreamId(0)).unwrap().0,
        LocalPorts {
            rtp: 30000,
            rtcp: None
        }
    );
    assert_eq!(pool.in_use(), 2);
    s.offer(&mut pool, Side::A, &offer("")).unwrap();
    s.answer(&mut pool, Side::B, &answer).unwrap();
    assert_eq!(pool.in_use(), 4, "the single ports went back");
}

/// Without an MSRP listener (`MediaConfig::msrp` unset) MSRP is not anchored: its lines pass
/// through byte-exact and the peers connect to each other directly.
#[test]
fn msrp_lines_pass_through_byte_exact_when_not_anchored() {
    let chat = sdp(&[
        "v=0",
        "o=- 3740371870 3740371870 IN IP4 10.0.0.5",
        "s=-",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=message 9 TCP/MSRP *",
        "a=accept-types:message/cpim application/im-iscomposing+xml",
        "a=path:msrp://10.0.0.5:9/s7Kd93jx;tcp",
        "a=setup:active",
        "a=sendrecv",
    ]);
    let (mut s, mut pool) = setup(None);
    let to_b = s.offer(&mut pool, Side::A, &chat).unwrap();
    // Nothing relayed: only the origin is ours.
    let chat_text = text(&chat);
    let mut lines: Vec<&str> = chat_text.trim_end().split("\r\n").collect();
    lines.remove(1);
    expect(&to_b, 1, &lines);
    assert_eq!((drain(&mut s), pool.in_use()), (vec![], 0));

    // Audio and chat: the chat section keeps its lines and its address (the old session c=
    // is copied into it), the audio is relayed.
    let (mut s, mut pool) = setup(None);
    let both = sdp(&[
        "v=0",
        "o=- 3740371870 3740371870 IN IP4 10.0.0.5",
        "s=-",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=audio 4000 RTP/AVP 8",
        "m=message 9 TCP/MSRP *",
        "a=path:msrp://10.0.0.5:9/s7Kd93jx;tcp",
    ]);
    let to_b = s.offer(&mut pool, Side::A, &both).unwrap();
    expect(
        &to_b,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30002 RTP/AVP 8",
            "m=message 9 TCP/MSRP *",
            "c=IN IP4 10.0.0.5",
            "a=path:msrp://10.0.0.5:9/s7Kd93jx;tcp",
        ],
    );
    assert_eq!(s.leg_count(), 1);
}

fn hold_offer(direction: &str) -> Bytes {
    let body = text(&alice_audio())
        .replace("2890844526 IN", "2890844527 IN")
        .replace("a=sendrecv", direction);
    Bytes::from(body)
}

#[test]
fn hold_reoffer_keeps_ports_and_bumps_versions_only_on_change() {
    let (mut s, mut pool) = audio_call();
    let hold = s
        .offer(&mut pool, Side::A, &hold_offer("a=sendonly"))
        .unwrap();
    assert!(text(&hold).contains("m=audio 30002 RTP/AVP 0 8 101\r\n"));
    assert!(
        text(&hold).ends_with("a=sendonly\r\n"),
        "direction passes through"
    );
    assert_eq!(our_origin(&hold).1, 2, "content changed: version 2");
    let held = text(&bob_audio_answer()).replace("a=sendrecv", "a=recvonly");
    let to_a = s.answer(&mut pool, Side::B, &Bytes::from(held)).unwrap();
    assert!(text(&to_a).ends_with("m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=recvonly\r\n"));
    assert_eq!(our_origin(&to_a).1, 2);
    assert_eq!(drain(&mut s), vec![], "same legs, same peers");
    // A session refresh with the same SDP: nothing changed, versions stay.
    let again = s
        .offer(&mut pool, Side::A, &hold_offer("a=sendonly"))
        .unwrap();
    assert_eq!(again, hold);
    let held = text(&bob_audio_answer()).replace("a=sendrecv", "a=recvonly");
    assert_eq!(
        s.answer(&mut pool, Side::B, &Bytes::from(held)).unwrap(),
        to_a
    );
    // Resume, and an old-style hold (c=0.0.0.0) that keeps the known peer.
    let resume = s
        .offer(&mut pool, Side::A, &hold_offer("a=sendrecv"))
        .unwrap();
    assert_eq!(our_origin(&resume).1, 3);
    s.rollback(&mut pool);
    let old_hold = text(&alice_audio()).replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    let out = s.offer(&mut pool, Side::A, &Bytes::from(old_hold)).unwrap();
    assert!(text(&out).contains("c=IN IP4 203.0.113.1\r\n"));
    assert_eq!(
        our_origin(&out).1,
        3,
        "what B last saw (the rolled-back offer): same version"
    );
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(pool.in_use(), 4);
}

fn bob_adds_video() -> Bytes {
    sdp(&[
        "v=0",
        "o=bob 2808844564 2808844565 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=sendrecv",
        "m=video 6002 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
    ])
}

#[test]
fn reinvite_from_b_adding_video_opens_a_new_leg() {
    let (mut s, mut pool) = audio_call();
    let to_a = s.offer(&mut pool, Side::B, &bob_adds_video()).unwrap();
    expect(
        &to_a,
        2,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=sendrecv",
            "m=video 30004 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
        ],
    );
    assert_eq!(
        drain(&mut s),
        vec![
            open(1, MediaKind::Video, 30004, 30006, false),
            set_peer(1, Side::B, "198.51.100.20:6002", Some("198.51.100.20:6003")),
        ],
        "the audio leg is untouched"
    );
    let answer = sdp(&[
        "v=0",
        "o=alice 2890844526 2890844527 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 49170 RTP/AVP 0",
        "m=video 49172 RTP/AVP 96",
    ]);
    let to_b = s.answer(&mut pool, Side::A, &answer).unwrap();
    assert!(text(&to_b).contains("m=audio 30002 RTP/AVP 0\r\nm=video 30006 RTP/AVP 96\r\n"));
    assert_eq!(our_origin(&to_b).1, 2);
    assert_eq!(
        drain(&mut s),
        vec![set_peer(
            1,
            Side::A,
            "192.0.2.10:49172",
            Some("192.0.2.10:49173")
        )]
    );
    assert_eq!((s.leg_count(), pool.in_use()), (2, 8));
}

#[test]
fn stream_set_to_port_zero_releases_its_leg_once_answered() {
    let (mut s, mut pool) = audio_call();
    s.offer(&mut pool, Side::B, &bob_adds_video()).unwrap();
    let answer = text(&alice_audio()) + "m=video 49172 RTP/AVP 96\r\n";
    s.answer(&mut pool, Side::A, &Bytes::from(answer)).unwrap();
    drain(&mut s);
    assert_eq!(pool.in_use(), 8);
    let drop_video = text(&bob_adds_video()).replace("m=video 6002", "m=video 0");
    let to_a = s
        .offer(&mut pool, Side::B, &Bytes::from(drop_video))
        .unwrap();
    assert!(text(&to_a).contains("m=video 0 RTP/AVP 96\r\n"));
    assert_eq!(drain(&mut s), vec![close(1)]);
    assert_eq!(pool.in_use(), 8, "held until the answer");
    let answer = text(&alice_audio()) + "m=video 0 RTP/AVP 96\r\n";
    let to_b = s.answer(&mut pool, Side::A, &Bytes::from(answer)).unwrap();
    assert!(text(&to_b).ends_with("m=video 0 RTP/AVP 96\r\n"));
    assert_eq!((drain(&mut s), pool.in_use()), (vec![], 4));
    // The answerer rejecting a new stream releases it too.
    s.offer(&mut pool, Side::B, &bob_adds_video()).unwrap();
    assert_eq!(pool.in_use(), 8);
    let answer = text(&alice_audio()) + "m=video 0 RTP/AVP 96\r\n";
    s.answer(&mut pool, Side::A, &Bytes::from(answer)).unwrap();
    assert_eq!(drain(&mut s).last(), Some(&close(1)));
    assert_eq!(pool.in_use(), 4);
}

#[test]
fn rollback_undoes_the_offer() {
    // A rejected re-offer: the new leg goes, the audio leg and its peers stay.
    let (mut s, mut pool) = audio_call();
    let moved = text(&bob_adds_video()).replace("198.51.100.20", "198.51.100.99");
    s.offer(&mut pool, Side::B, &Bytes::from(moved)).unwrap();
    assert_eq!(pool.in_use(), 8);
    assert_eq!(
        drain(&mut s)[0],
        set_peer(0, Side::B, "198.51.100.99:6000", Some("198.51.100.99:6001"))
    );
    s.rollback(&mut pool);
    assert_eq!(
        drain(&mut s),
        vec![
            set_peer(0, Side::B, "198.51.100.20:6000", Some("198.51.100.20:6001")),
            close(1)
        ]
    );
    assert_eq!((s.leg_count(), pool.in_use()), (1, 4));
    s.rollback(&mut pool);
    assert_eq!(drain(&mut s), vec![], "nothing pending: no-op");
    // A CANCELled initial offer: nothing left.
    let (mut s, mut pool) = setup(None);
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    drain(&mut s);
    s.with_pool(&mut pool).rollback();
    assert_eq!(drain(&mut s), vec![close(0)]);
    assert_eq!((s.leg_count(), pool.in_use()), (0, 0));
    // A re-offer disabling a stream, rolled back: the leg is reopened on the same ports.
    let (mut s, mut pool) = audio_call();
    let off = text(&alice_audio()).replace("m=audio 49170", "m=audio 0");
    s.offer(&mut pool, Side::A, &Bytes::from(off)).unwrap();
    assert_eq!(drain(&mut s), vec![close(0)]);
    s.rollback(&mut pool);
    let reopened = drain(&mut s);
    assert_eq!(reopened[0], open(0, MediaKind::Audio, 30000, 30002, false));
    assert_eq!(reopened.len(), 3, "and both peers again");
    assert_eq!(pool.in_use(), 4);
}

#[test]
fn codec_policy_removes_formats_and_rejects_streams() {
    let allowed = vec![Codec::PCMA, Codec::telephone_event(101).unwrap()];
    let (mut s, mut pool) = setup(Some(allowed.clone()));
    let offer = text(&alice_audio()) + "m=video 49172 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    let to_b = s.offer(&mut pool, Side::A, &Bytes::from(offer)).unwrap();
    expect(
        &to_b,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=audio 30002 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
            "m=video 0 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
        ],
    );
    assert_eq!(s.leg_count(), 1, "no leg for the rejected video");
    // The answerer may not revive the rejected stream.
    let answer =
        text(&bob_audio_answer()).replace(" 0 101", " 8 101") + "m=video 7000 RTP/AVP 96\r\n";
    let to_a = s.answer(&mut pool, Side::B, &Bytes::from(answer)).unwrap();
    assert!(text(&to_a).contains("m=audio 30000 RTP/AVP 8 101\r\n"));
    assert!(text(&to_a).ends_with("m=video 0 RTP/AVP 96\r\n"));
    assert_eq!(pool.in_use(), 4);

    // Nothing allowed in any stream: 488, nothing allocated.
    let (mut s, mut pool) = setup(Some(vec![Codec::well_known("G722").unwrap()]));
    let err = s.offer(&mut pool, Side::A, &alice_audio()).unwrap_err();
    assert_eq!(
        (err.status, err.reason.as_str()),
        (488, "Incompatible Media Format")
    );
    assert_eq!(
        (pool.in_use(), drain(&mut s), s.offer_pending()),
        (0, vec![], false)
    );
    // DTMF alone is no media either.
    let (mut s, mut pool) = setup(Some(vec![Codec::telephone_event(101).unwrap()]));
    assert_eq!(
        s.offer(&mut pool, Side::A, &alice_audio())
            .unwrap_err()
            .status,
        488
    );
}

#[test]
fn unparsable_sdp_is_a_400_with_the_parser_reason() {
    let (mut s, mut pool) = setup(None);
    for (body, reason) in [
        ("hello", "Malformed SDP Line"),
        ("", "Empty SDP"),
        ("v=0\r\ns=-\r\n", "Missing o= Line in SDP"),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nm=audio x RTP/AVP 0\r\n",
            "Malformed m= Line in SDP",
        ),
    ] {
        let err = s
            .with_pool(&mut pool)
            .offer(Side::A, &Bytes::from(body))
            .unwrap_err();
        assert_eq!(
            err,
            MediaReject {
                status: 400,
                reason: reason.into(),
                retry_after: None
            }
        );
    }
    assert_eq!((pool.in_use(), s.offer_pending()), (0, false));
    // An unparsable or mismatched answer leaves the offer pending for a rollback.
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    assert_eq!(
        s.answer(&mut pool, Side::B, &Bytes::from("x"))
            .unwrap_err()
            .status,
        400
    );
    let two = text(&bob_audio_answer()) + "m=video 0 RTP/AVP 96\r\n";
    let err = s.answer(&mut pool, Side::B, &Bytes::from(two)).unwrap_err();
    assert_eq!(
        (err.status, err.reason.as_str()),
        (400, "SDP Answer Does Not Match Offer")
    );
    assert!(s.offer_pending());
    s.rollback(&mut pool);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_second_answer_to_the_same_offer_revises_it() {
    // 183 with SDP, then the 200 with another port: B's peer moves; what A is sent does not
    // change (the relay hides B's port), so neither does its version.
    let (mut s, mut pool) = audio_call();
    let moved = text(&bob_audio_answer()).replace("m=audio 6000", "m=audio 6100");
    let to_a = s.answer(&mut pool, Side::B, &Bytes::from(moved)).unwrap();
    assert!(text(&to_a).contains("m=audio 30000 RTP/AVP 0 101\r\n"));
    assert_eq!(our_origin(&to_a).1, 1);
    assert_eq!(
        drain(&mut s),
        vec![set_peer(
            0,
            Side::B,
            "198.51.100.20:6100",
            Some("198.51.100.20:6101")
        )]
    );
    // The same answer again changes nothing.
    let moved = text(&bob_audio_answer()).replace("m=audio 6000", "m=audio 6100");
    assert_eq!(
        s.answer(&mut pool, Side::B, &Bytes::from(moved)).unwrap(),
        to_a
    );
    assert_eq!(drain(&mut s), vec![]);
    // A revision rejecting the stream closes it; a later one cannot revive it.
    let off = text(&bob_audio_answer()).replace("m=audio 6000", "m=audio 0");
    s.answer(&mut pool, Side::B, &Bytes::from(off)).unwrap();
    assert_eq!((drain(&mut s), pool.in_use()), (vec![close(0)], 0));
    let back = s.answer(&mut pool, Side::B, &bob_audio_answer()).unwrap();
    assert!(text(&back).contains("m=audio 0 RTP/AVP 0 101\r\n"));
    assert_eq!(our_origin(&back).1, 2, "port 0 was a change");
    assert_eq!((drain(&mut s), pool.in_use()), (vec![], 0));
    // The offerer cannot answer its own offer; a new offer ends the revisions.
    assert_eq!(
        s.answer(&mut pool, Side::A, &alice_audio())
            .unwrap_err()
            .status,
        500
    );
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    s.rollback(&mut pool);
    let err = s
        .answer(&mut pool, Side::B, &bob_audio_answer())
        .unwrap_err();
    assert_eq!(err.status, 500);
}

#[test]
fn offers_and_answers_out_of_turn() {
    let (mut s, mut pool) = setup(None);
    let err = s
        .answer(&mut pool, Side::B, &bob_audio_answer())
        .unwrap_err();
    assert_eq!(err.status, 500);
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    assert_eq!(
        s.offer(&mut pool, Side::B, &bob_audio_answer())
            .unwrap_err()
            .status,
        491
    );
    assert_eq!(
        s.answer(&mut pool, Side::A, &alice_audio())
            .unwrap_err()
            .status,
        500,
        "the offerer cannot answer"
    );
    assert_eq!(pool.in_use(), 4);
}

#[test]
fn exhaustion_is_a_503_that_leaks_nothing() {
    // Room for one leg (two pairs), not for a second.
    let mut pool = PortPool::new(30000, 30005);
    let (mut s, _) = setup(None);
    let offer = text(&alice_audio()) + "m=video 49172 RTP/AVP 96\r\n";
    let err = s
        .offer(&mut pool, Side::A, &Bytes::from(offer))
        .unwrap_err();
    assert_eq!(
        err,
        MediaReject {
            status: 503,
            reason: "Media Ports Exhausted".into(),
            retry_after: Some(MediaConfig::DEFAULT_RETRY_AFTER)
        }
    );
    assert_eq!(
        (pool.in_use(), drain(&mut s), s.offer_pending()),
        (0, vec![], false)
    );
    // A re-offer that needs more ports than are left keeps the agreed leg.
    s.offer(&mut pool, Side::A, &alice_audio()).unwrap();
    s.answer(&mut pool, Side::B, &bob_audio_answer()).unwrap();
    drain(&mut s);
    let err = s.offer(&mut pool, Side::B, &bob_adds_video()).unwrap_err();
    assert_eq!(err.status, 503);
    assert_eq!(
        (pool.in_use(), s.leg_count(), drain(&mut s)),
        (4, 1, vec![])
    );
    // Half a leg's worth: the first side's pair is given back.
    let mut tiny = PortPool::new(30000, 30001);
    let (mut s, _) = setup(None);
    assert_eq!(
        s.offer(&mut tiny, Side::A, &alice_audio())
            .unwrap_err()
            .status,
        503
    );
    assert_eq!(tiny.in_use(), 0);
}

#[test]
fn release_all_closes_every_leg_and_empties_the_pool() {
    let (mut s, mut pool) = audio_call();
    s.offer(&mut pool, Side::B, &bob_adds_video()).unwrap();
    drain(&mut s);
    assert_eq!(pool.in_use(), 8);
    s.release_all(&mut pool);
    assert_eq!(drain(&mut s), vec![close(0), close(1)]);
    assert_eq!(
        (pool.in_use(), s.leg_count(), s.offer_pending()),
        (0, 0, false)
    );
    s.release_all(&mut pool);
    assert_eq!(drain(&mut s), vec![]);
}

#[test]
fn ipv6_connections_are_rewritten() {
    let offer = sdp(&[
        "v=0",
        "o=carol 2890844526 2890842807 IN IP6 2001:db8::1",
        "s=Call",
        "c=IN IP6 2001:db8::1",
        "t=0 0",
        "m=audio 53020 RTP/SAVP 8",
        "c=IN IP6 2001:db8::2",
        "a=rtcp:53021 IN IP6 2001:db8::5",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "a=recvonly",
    ]);
    let config = MediaConfig::new(ip("2001:db8::100"));
    let mut s = MediaSession::new(Arc::new(config));
    let mut pool = PortPool::new(30000, 30099);
    let to_b = s.offer(&mut pool, Side::A, &offer).unwrap();
    let d = SessionDescription::parse(&to_b).unwrap();
    assert_eq!(
        (&d.origin().address[..], d.origin().session_version),
        (&b"2001:db8::100"[..], 1)
    );
    let rest: Vec<&str> = std::str::from_utf8(&to_b)
        .unwrap()
        .split("\r\n")
        .skip(2)
        .collect();
    assert_eq!(
        rest,
        vec![
            "s=Call",
            "c=IN IP6 2001:db8::100",
            "t=0 0",
            "m=audio 30002 RTP/SAVP 8",
            "c=IN IP6 2001:db8::100",
            "a=rtcp:30003 IN IP6 2001:db8::100",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "a=recvonly",
            ""
        ]
    );
    assert_eq!(
        drain(&mut s),
        vec![
            open(0, MediaKind::Audio, 30000, 30002, false),
            set_peer(
                0,
                Side::A,
                "[2001:db8::2]:53020",
                Some("[2001:db8::5]:53021")
            ),
        ]
    );
    // An IPv4 answer through an IPv6 relay.
    let answer = text(&bob_audio_answer()).replace("RTP/AVP 0 101", "RTP/SAVP 8");
    let to_a = s.answer(&mut pool, Side::B, &Bytes::from(answer)).unwrap();
    assert!(text(&to_a).contains("c=IN IP6 2001:db8::100\r\nt=0 0\r\nm=audio 30000 RTP/SAVP 8\r\n"));
}

/// Follows the changes as the user plane would: every stream opened once before it is
/// closed, peers only for open streams. Returns the streams left open.
fn check_changes(s: &mut MediaSession, open: &mut BTreeSet<StreamId>) {
    while let Some(c) = s.poll_change() {
        match c {
            LegChange::Open { stream, .. } | LegChange::OpenMsrp { stream, .. } => {
                assert!(open.insert(stream), "{stream} opened twice")
            }
            LegChange::Close { stream } => assert!(open.remove(&stream), "{stream} not open"),
            LegChange::SetPeer { stream, .. } | LegChange::MsrpPeer { stream, .. } => {
                assert!(open.contains(&stream), "{stream} not open")
            }
        }
    }
}

/// Drives a session through every call with `body` from both sides, out of turn too; the
/// controller must never panic and must end with no port held and no leg open.
fn run_anything(body: &Bytes, pool: &mut PortPool, codecs: Option<Vec<Codec>>, msrp: bool) {
    let mut s = MediaSession::new(Arc::new(MediaConfig {
        codecs,
        msrp: msrp.then(|| MsrpConfig::new(MSRP_PORT, [3; 32])),
        ..MediaConfig::new(ip(RELAY))
    }));
    let mut open = BTreeSet::new();
    let steps: [(bool, Side); 6] = [
        (true, Side::A),
        (false, Side::B),
        (true, Side::B),
        (false, Side::A),
        (true, Side::A),
        (false, Side::A),
    ];
    for (offer, side) in steps {
        let out = if offer {
            s.offer(pool, side, body)
        } else {
            s.answer(pool, side, body)
        };
        if let Ok(out) = out {
            SessionDescription::parse(&out).expect("what we send parses");
        }
        check_changes(&mut s, &mut open);
    }
    s.rollback(pool);
    check_changes(&mut s, &mut open);
    s.offer(pool, Side::B, body).ok();
    s.release_all(pool);
    check_changes(&mut s, &mut open);
    assert!(open.is_empty(), "legs left open: {open:?}");
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn any_parsable_sdp_never_panics_the_controller() {
    use crate::sdp::tests::{all_offers, mutate, Rng};
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut pool = PortPool::new(30000, 30011);
    let mut corpus = all_offers();
    corpus.extend([alice_audio(), alice_av(), bob_adds_video()]);
    corpus.extend([alice_chat(""), bob_chat("a=setup:active")]);
    let mut parsed = 0;
    for body in corpus {
        for end in (0..=body.len()).step_by(3) {
            run_anything(&body.slice(..end), &mut pool, None, end % 2 == 0);
        }
        for _ in 0..300 {
            let m = mutate(&mut rng, &body);
            parsed += usize::from(SessionDescription::parse(&m).is_ok());
            run_anything(&m, &mut pool, None, false);
            run_anything(&m, &mut pool, None, true);
            run_anything(&m, &mut pool, Some(vec![Codec::PCMU, Codec::PCMA]), true);
        }
    }
    assert!(
        parsed > 500,
        "the mutations should mostly still parse ({parsed})"
    );
}

// ---- MSRP anchored on the media plane (RFC 4975 §8.1, RFC 6135) ----

const MSRP_PORT: u16 = 2855;

fn msrp_setup() -> (MediaSession, PortPool) {
    let config = MediaConfig {
        msrp: Some(MsrpConfig::new(MSRP_PORT, [9; 32])),
        ..MediaConfig::new(ip(RELAY))
    };
    (
        MediaSession::new(Arc::new(config)),
        PortPool::new(30000, 30099),
    )
}

fn alice_chat(setup: &str) -> Bytes {
    let mut lines = vec![
        "v=0",
        "o=alice 3740371870 3740371870 IN IP4 10.0.0.5",
        "s=-",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=message 7394 TCP/MSRP *",
        "a=accept-types:message/cpim text/plain",
        "a=accept-wrapped-types:*",
        "a=path:msrp://10.0.0.5:7394/alice1;tcp",
    ];
    if !setup.is_empty() {
        lines.push(setup);
    }
    lines.push("a=sendrecv");
    sdp(&lines)
}

fn bob_chat(setup: &str) -> Bytes {
    let mut lines = vec![
        "v=0",
        "o=bob 1 1 IN IP4 10.0.0.9",
        "s=-",
        "c=IN IP4 10.0.0.9",
        "t=0 0",
        "m=message 8000 TCP/MSRP *",
        "a=accept-types:text/plain",
        "a=path:msrp://10.0.0.9:8000/bob1;tcp",
    ];
    if !setup.is_empty() {
        lines.push(setup);
    }
    sdp(&lines)
}

/// The `a=path` URI of stream `i` in `body`.
fn path_in(body: &Bytes, i: usize) -> String {
    let d = SessionDescription::parse(body).unwrap();
    text(d.media()[i].attribute("path").unwrap().value().unwrap())
}

fn msrp_peer(stream: usize, side: Side, path: &str, we_connect: bool) -> LegChange {
    LegChange::MsrpPeer {
        stream: StreamId(stream),
        side,
        peer: MsrpPeer {
            path: Bytes::from(path.to_string()),
            we_connect,
        },
    }
}

#[test]
fn msrp_chat_is_anchored_on_our_listener_with_fresh_session_ids() {
    let (mut s, mut pool) = msrp_setup();
    let to_b = s
        .offer(&mut pool, Side::A, &alice_chat("a=setup:actpass"))
        .unwrap();
    let (a_uri, b_uri) = s.msrp_uris(StreamId(0)).unwrap();
    let (a_uri, b_uri) = (text(&a_uri), text(&b_uri));
    assert!(a_uri.starts_with("msrp://203.0.113.1:2855/") && a_uri.ends_with(";tcp"));
    assert_ne!(a_uri, b_uri, "one session-id per side");
    let b_path = format!("a=path:{b_uri}");
    expect(
        &to_b,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=message 2855 TCP/MSRP *",
            "a=accept-types:message/cpim text/plain",
            "a=accept-wrapped-types:*",
            &b_path,
            "a=setup:actpass",
            "a=sendrecv",
        ],
    );
    assert_eq!(
        drain(&mut s),
        vec![
            LegChange::OpenMsrp {
                stream: StreamId(0),
                a_facing: Bytes::from(a_uri.clone()),
                b_facing: Bytes::from(b_uri.clone()),
            },
            msrp_peer(0, Side::A, "msrp://10.0.0.5:7394/alice1;tcp", false),
        ]
    );
    let to_a = s
        .answer(&mut pool, Side::B, &bob_chat("a=setup:active"))
        .unwrap();
    let a_path = format!("a=path:{a_uri}");
    expect(
        &to_a,
        1,
        &[
            "v=0",
            "s=-",
            "c=IN IP4 203.0.113.1",
            "t=0 0",
            "m=message 2855 TCP/MSRP *",
            "a=accept-types:text/plain",
            &a_path,
            "a=setup:passive",
        ],
    );
    assert_eq!(
        drain(&mut s),
        vec![msrp_peer(
            0,
            Side::B,
            "msrp://10.0.0.9:8000/bob1;tcp",
            false
        )]
    );
    assert_eq!((s.leg_count(), pool.in_use()), (1, 0), "no RTP port taken");

    // Another session of the same process (the config is shared): other session-ids.
    let mut s2 = MediaSession::new(s.config().clone());
    s2.offer(&mut pool, Side::A, &alice_chat("")).unwrap();
    let (a2, _) = s2.msrp_uris(StreamId(0)).unwrap();
    assert_ne!(text(&a2), a_uri);

    s.release_all(&mut pool);
    assert_eq!(drain(&mut s), vec![close(0)]);
    assert_eq!(s.leg_count(), 0);
}

#[test]
fn msrp_roles_follow_setup_and_rfc4975_defaults() {
    // (A's offer, B's answer) -> (we connect to A, we connect to B, setup sent to A).
    let cases = [
        ("a=setup:actpass", "a=setup:active", false, false, "passive"),
        ("a=setup:active", "a=setup:passive", false, true, "passive"),
        ("a=setup:passive", "", true, false, "active"),
        ("", "", true, false, "active"),
    ];
    for (offer, answer, to_a, to_b, setup_a) in cases {
        let (mut s, mut pool) = msrp_setup();
        s.offer(&mut pool, Side::A, &alice_chat(offer)).unwrap();
        let to_a_sdp = s.answer(&mut pool, Side::B, &bob_chat(answer)).unwrap();
        let changes = drain(&mut s);
        let roles: Vec<(Side, bool)> = changes
            .iter()
            .filter_map(|c| match c {
                LegChange::MsrpPeer { side, peer, .. } => Some((*side, peer.we_connect)),
                _ => None,
            })
            .collect();
        assert_eq!(
            roles,
            vec![(Side::A, to_a), (Side::B, to_b)],
            "{offer:?} {answer:?}"
        );
        assert!(
            text(&to_a_sdp).contains(&format!("a=setup:{setup_a}\r\n")),
            "{offer:?}: {}",
            text(&to_a_sdp)
        );
    }
}

#[test]
fn reinvite_adds_audio_to_a_chat_and_removes_it_again() {
    let (mut s, mut pool) = msrp_setup();
    let first_b = s
        .offer(&mut pool, Side::A, &alice_chat("a=setup:actpass"))
        .unwrap();
    let first_a = s
        .answer(&mut pool, Side::B, &bob_chat("a=setup:active"))
        .unwrap();
    drain(&mut s);
    let chat_and_audio = |version: &str, audio_port: &str| {
        let t = text(&alice_chat("a=setup:actpass"))
            .replace("3740371870 IN", &format!("{version} IN"))
            + &format!("m=audio {audio_port} RTP/AVP 0\r\n");
        Bytes::from(t)
    };
    let to_b = s
        .offer(&mut pool, Side::A, &chat_and_audio("3740371871", "49170"))
        .unwrap();
    assert_eq!(
        path_in(&to_b, 0),
        path_in(&first_b, 0),
        "the chat keeps its URI"
    );
    assert!(
        text(&to_b).contains("a=setup:passive\r\n"),
        "B keeps connecting to us"
    );
    assert!(text(&to_b).contains("m=audio 30002 RTP/AVP 0\r\n"));
    assert_eq!(
        drain(&mut s),
        vec![
            open(1, MediaKind::Audio, 30000, 30002, false),
            set_peer(1, Side::A, "10.0.0.5:49170", Some("10.0.0.5:49171")),
        ],
        "no MSRP change: its connections stay"
    );
    let bob_both = Bytes::from(text(&bob_chat("a=setup:active")) + "m=audio 6000 RTP/AVP 0\r\n");
    let to_a = s.answer(&mut pool, Side::B, &bob_both).unwrap();
    assert_eq!(path_in(&to_a, 0), path_in(&first_a, 0));
    assert!(text(&to_a).contains("m=audio 30000 RTP/AVP 0\r\n"));
    assert_eq!(
        drain(&mut s),
        vec![set_peer(1, Side::B, "10.0.0.9:6000", Some("10.0.0.9:6001"))]
    );
    assert_eq!(s.leg_count(), 2);

    // B takes the audio away again (port 0): the chat stays.
    let bob_offer = Bytes::from(text(&bob_chat("a=setup:active")) + "m=audio 0 RTP/AVP 0\r\n");
    let to_a = s.offer(&mut pool, Side::B, &bob_offer).unwrap();
    assert!(
        text(&to_a).contains("a=setup:passive\r\n"),
        "A keeps its role"
    );
    s.answer(&mut pool, Side::A, &chat_and_audio("3740371872", "0"))
        .unwrap();
    assert_eq!(drain(&mut s), vec![close(1)]);
    assert_eq!((s.leg_count(), pool.in_use()), (1, 0));
    assert!(s.msrp_uris(StreamId(0)).is_some());
}

#[test]
fn msrp_rejected_rolled_back_or_over_tls() {
    // B rejects the chat: the leg closes and A sees port 0.
    let (mut s, mut pool) = msrp_setup();
    s.offer(&mut pool, Side::A, &alice_chat("")).unwrap();
    let rejected = Bytes::from(text(&bob_chat("")).replace("m=message 8000", "m=message 0"));
    let to_a = s.answer(&mut pool, Side::B, &rejected).unwrap();
    assert!(text(&to_a).contains("m=message 0 TCP/MSRP *"));
    let changes = drain(&mut s);
    assert_eq!(changes.last(), Some(&close(0)));
    assert_eq!(s.leg_count(), 0);

    // An answer without a=path cannot be anchored: port 0 to A too.
    let (mut s, mut pool) = msrp_setup();
    s.offer(&mut pool, Side::A, &alice_chat("")).unwrap();
    let no_path =
        Bytes::from(text(&bob_chat("")).replace("a=path:msrp://10.0.0.9:8000/bob1;tcp\r\n", ""));
    let to_a = s.answer(&mut pool, Side::B, &no_path).unwrap();
    assert!(text(&to_a).contains("m=message 0 TCP/MSRP *"));
    assert_eq!(s.leg_count(), 0);

    // An offer rolled back (CANCEL): the leg it opened closes.
    let (mut s, mut pool) = msrp_setup();
    s.offer(&mut pool, Side::A, &alice_chat("")).unwrap();
    drain(&mut s);
    s.rollback(&mut pool);
    assert_eq!(drain(&mut s), vec![close(0)]);

    // msrps is not anchored: it passes through as offered.
    let (mut s, mut pool) = msrp_setup();
    let tls = Bytes::from(
        text(&alice_chat(""))
            .replace("TCP/MSRP", "TCP/TLS/MSRP")
            .replace("msrp://", "msrps://"),
    );
    let to_b = s.offer(&mut pool, Side::A, &tls).unwrap();
    assert!(text(&to_b).contains("m=message 7394 TCP/TLS/MSRP *\r\n"));
    assert_eq!(path_in(&to_b, 0), "msrps://10.0.0.5:7394/alice1;tcp");
    assert_eq!(drain(&mut s), vec![]);
}
