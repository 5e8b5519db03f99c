//! Whole-description tests: round trips of realistic offers, rewrites, offer/answer, the
//! torture vectors' bodies, and garbage.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::*;

/// CRLF-joins `lines` (each test SDP is written one line per element).
fn sdp(lines: &[&str]) -> Bytes {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    Bytes::from(s)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parse(body: &Bytes) -> SessionDescription {
    SessionDescription::parse(body).unwrap()
}

/// SIPp's built-in `uac` scenario offer.
fn sipp_offer() -> Bytes {
    sdp(&[
        "v=0",
        "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        "m=audio 6000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ])
}

/// A baresip offer: audio and video, session and media attributes of every kind.
fn baresip_offer() -> Bytes {
    sdp(&[
        "v=0",
        "o=- 1826476513 2813337520 IN IP4 192.168.1.10",
        "s=-",
        "c=IN IP4 192.168.1.10",
        "t=0 0",
        "a=tool:baresip 1.1.0",
        "a=ice-lite",
        "m=audio 10204 RTP/AVP 96 97 0 8 9 101",
        "b=AS:96",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 stereo=1;sprop-stereo=1",
        "a=rtpmap:97 G7221/32000",
        "a=fmtp:97 bitrate=48000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=rtcp:10205",
        "a=rtcp-rsize",
        "a=sendrecv",
        "a=label:1",
        "a=ssrc:2581961340 cname:b8a5e0c8-cbb7-4d9d-9ac9-8a4c2b7cc3ed",
        "a=mid:1",
        "a=ptime:20",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "m=video 10206 RTP/AVP 100 102",
        "b=AS:1000",
        "a=rtpmap:100 H264/90000",
        "a=fmtp:100 packetization-mode=0;profile-level-id=42e01f",
        "a=rtpmap:102 VP8/90000",
        "a=rtcp-fb:* nack pli",
        "a=rtcp-fb:100 ccm fir",
        "a=rtcp-mux",
        "a=sendrecv",
        "x=an unknown line type",
    ])
}

/// An RCS 1-to-1 chat offer (MSRP, RFC 4975 §8, RFC 6135 `setup`).
fn rcs_chat_offer() -> Bytes {
    sdp(&[
        "v=0",
        "o=- 3740371870 3740371870 IN IP4 10.0.0.5",
        "s=-",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=message 9 TCP/MSRP *",
        "a=accept-types:message/cpim application/im-iscomposing+xml",
        "a=accept-wrapped-types:text/plain message/imdn+xml",
        "a=path:msrp://10.0.0.5:9/s7Kd93jx;tcp",
        "a=setup:active",
        "a=connection:new",
        "a=sendrecv",
    ])
}

/// IPv6 everywhere, with an RTCP address (RFC 3605) and an IPv6 media-level c=.
fn ipv6_offer() -> Bytes {
    sdp(&[
        "v=0",
        "o=carol 2890844526 2890842807 IN IP6 2001:db8::1",
        "s=Call",
        "i=A talk",
        "c=IN IP6 2001:db8::1",
        "t=0 0",
        "m=audio 53020 RTP/SAVP 8",
        "c=IN IP6 2001:db8::2",
        "a=rtcp:53021 IN IP6 2001:db8::5",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "a=recvonly",
    ])
}

/// The realistic offers above, for other modules' tests (the media controller's corpus).
pub(crate) fn all_offers() -> Vec<Bytes> {
    vec![
        sipp_offer(),
        baresip_offer(),
        rcs_chat_offer(),
        ipv6_offer(),
    ]
}

#[test]
fn realistic_offers_round_trip_byte_exact() {
    for body in all_offers() {
        let d = parse(&body);
        assert_eq!(d.to_bytes(), body);
    }
}

#[test]
fn sipp_offer_accessors() {
    let d = parse(&sipp_offer());
    assert_eq!(d.origin().username, "user1");
    assert_eq!(d.origin().session_version, 2_353_687_637);
    assert_eq!(d.session_name().unwrap(), "-");
    assert_eq!(d.timing().unwrap(), "0 0");
    assert_eq!(d.connection().unwrap().ip(), Some(ip("127.0.0.1")));
    let m = &d.media()[0];
    assert_eq!(m.kind(), "audio");
    assert_eq!(m.media_line().proto, Proto::RTP_AVP);
    assert_eq!(m.codecs(), vec![Codec::PCMU]);
    assert_eq!(d.direction_of(m), Direction::SendRecv);
    assert_eq!(
        d.media_address(m),
        Some(SocketAddr::new(ip("127.0.0.1"), 6000))
    );
}

#[test]
fn baresip_offer_accessors() {
    let d = parse(&baresip_offer());
    assert_eq!(
        d.attribute("tool").unwrap().value().unwrap(),
        "baresip 1.1.0"
    );
    assert!(d.attribute("ice-lite").is_some_and(|a| a.value().is_none()));
    let [audio, video] = d.media() else {
        panic!("two media sections expected")
    };
    let opus = audio.rtpmap(96).unwrap();
    assert_eq!((opus.clock_rate, opus.channels()), (48000, 2));
    assert_eq!(audio.fmtp(b"96").unwrap(), "stereo=1;sprop-stereo=1");
    assert_eq!(audio.fmtp(b"101").unwrap(), "0-15");
    assert_eq!(audio.ptime(), Some(20));
    assert_eq!(audio.rtcp(), Some(Rtcp::new(10205, None)));
    assert!(!audio.rtcp_mux() && video.rtcp_mux());
    assert_eq!(audio.direction(), Some(Direction::SendRecv));
    let names: Vec<Bytes> = audio.codecs().iter().map(|c| c.name().clone()).collect();
    assert_eq!(
        names,
        ["opus", "G7221", "PCMU", "PCMA", "G722", "telephone-event"].map(Bytes::from_static_str)
    );
    assert_eq!(audio.codec(101).unwrap().fmtp().unwrap(), "0-15");
    assert_eq!(video.attribute_values("rtcp-fb").count(), 2);
    let unknown = video.lines().last().unwrap();
    assert_eq!(
        (unknown.kind(), unknown.value().as_ref()),
        (b'x', &b"an unknown line type"[..])
    );
    // Lines of the video section, not the audio one.
    assert_eq!(video.lines().iter().filter(|l| l.kind() == b'b').count(), 1);
}

/// `Bytes::from_static` for `&'static str` (keeps the assertions short).
trait FromStaticStr {
    fn from_static_str(s: &'static str) -> Bytes;
}

impl FromStaticStr for Bytes {
    fn from_static_str(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }
}

#[test]
fn msrp_attributes_pass_as_plain_attributes() {
    let d = parse(&rcs_chat_offer());
    let m = &d.media()[0];
    let line = m.media_line();
    assert_eq!((line.port, line.formats.len()), (9, 1));
    assert_eq!(line.formats[0], "*");
    assert!(line.proto.is_msrp());
    assert_eq!(line.proto, Proto::TCP_MSRP);
    assert_eq!(
        m.attribute("path").unwrap().value().unwrap(),
        "msrp://10.0.0.5:9/s7Kd93jx;tcp"
    );
    assert_eq!(
        m.attribute("accept-types").unwrap().value().unwrap(),
        "message/cpim application/im-iscomposing+xml"
    );
    assert_eq!(m.attribute("setup").unwrap().value().unwrap(), "active");
    assert!(m.codecs().is_empty());
}

#[test]
fn ipv6_offer_accessors() {
    let d = parse(&ipv6_offer());
    assert_eq!(d.origin().addrtype, AddrType::Ip6);
    let m = &d.media()[0];
    assert_eq!(m.connection().unwrap().ip(), Some(ip("2001:db8::2")));
    assert_eq!(
        d.media_address(m),
        Some(SocketAddr::new(ip("2001:db8::2"), 53020))
    );
    let rtcp = m.rtcp().unwrap();
    assert_eq!(rtcp.port, 53021);
    assert_eq!(rtcp.connection.unwrap().ip(), Some(ip("2001:db8::5")));
    assert!(m.media_line().proto.is_srtp());
    assert_eq!(d.direction_of(m), Direction::RecvOnly);
}

#[test]
fn line_ends_and_blank_lines_are_normalised() {
    let lf =
        Bytes::from_static(b"v=0\no=- 1 1 IN IP4 192.0.2.1\n\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0");
    let d = parse(&lf);
    assert_eq!(
        d.to_bytes(),
        sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0"
        ])
    );
    // No t= and an empty s= are accepted (real endpoints send both).
    let loose = sdp(&["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s="]);
    assert_eq!(parse(&loose).to_bytes(), loose);
}

#[test]
fn errors_name_the_line() {
    let cases: [(&[&str], SdpError); 11] = [
        (&[], SdpError::Empty),
        (&["o=- 1 1 IN IP4 h", "s=-"], SdpError::Missing("v=")),
        (
            &["v=1", "o=- 1 1 IN IP4 h", "s=-"],
            SdpError::UnsupportedVersion,
        ),
        (&["v=0", "s=-"], SdpError::Missing("o=")),
        (&["v=0", "o=- 1 1 IN IP4 h"], SdpError::Missing("s=")),
        // o= and s= only count at session level.
        (
            &["v=0", "o=- 1 1 IN IP4 h", "m=audio 0 RTP/AVP 0", "s=-"],
            SdpError::Missing("s="),
        ),
        (
            &["v=0", "o=- 1 x IN IP4 h", "s=-"],
            SdpError::Malformed("o="),
        ),
        (
            &["v=0", "o=- 1 1 IN IP4 h", "s=-", "c=IN IP4"],
            SdpError::Malformed("c="),
        ),
        (
            &["v=0", "o=- 1 1 IN IP4 h", "s=-", "m=audio 99999 RTP/AVP 0"],
            SdpError::Malformed("m="),
        ),
        (
            &["v=0", "o=- 1 1 IN IP4 h", "s=-", "garbage"],
            SdpError::MalformedLine,
        ),
        (
            &["v=0", "o=- 1 1 IN IP4 h", "s=-", "a =x"],
            SdpError::MalformedLine,
        ),
    ];
    for (lines, err) in cases {
        let body = if lines.is_empty() {
            Bytes::from_static(b"\r\n")
        } else {
            sdp(lines)
        };
        assert_eq!(SessionDescription::parse(&body), Err(err), "{lines:?}");
    }
    assert_eq!(SdpError::Missing("o=").reason(), "Missing o= Line in SDP");
    assert_eq!(
        SdpError::Malformed("m=").to_string(),
        "Malformed m= Line in SDP"
    );
}

#[test]
fn b2bua_rewrites_keep_every_other_line() {
    let mut d = parse(&baresip_offer());
    let relay = ip("203.0.113.9");
    d.set_all_connections(relay);
    d.set_origin_address(relay);
    {
        let [audio, video] = d.media_mut() else {
            panic!("two media sections expected")
        };
        audio.set_port(30000);
        audio.set_rtcp(30001, Some(relay));
        video.set_port(30002);
    }
    let want = String::from_utf8(baresip_offer().to_vec())
        .unwrap()
        .replace("IN IP4 192.168.1.10", "IN IP4 203.0.113.9")
        .replace("m=audio 10204", "m=audio 30000")
        .replace("a=rtcp:10205", "a=rtcp:30001 IN IP4 203.0.113.9")
        .replace("m=video 10206", "m=video 30002");
    assert_eq!(d.to_bytes(), want);
    // A media-level c= is rewritten only where present; one can be added or removed.
    let mut v6 = parse(&ipv6_offer());
    v6.set_all_connections(ip("2001:db8::99"));
    let m = &mut v6.media_mut()[0];
    assert_eq!(m.connection().unwrap().ip(), Some(ip("2001:db8::99")));
    assert_eq!(m.remove_connection(), 1);
    let m = &v6.media()[0];
    assert_eq!(v6.connection_of(m).unwrap().ip(), Some(ip("2001:db8::99")));
}

#[test]
fn set_connection_inserts_in_grammar_order() {
    let mut d = parse(&sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "i=voice",
        "a=sendrecv",
    ]));
    d.set_connection(ip("192.0.2.2"));
    d.media_mut()[0].set_connection(ip("2001:db8::7"));
    assert_eq!(
        d.to_bytes(),
        sdp(&[
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.2",
            "t=0 0",
            "m=audio 4000 RTP/AVP 0",
            "i=voice",
            "c=IN IP6 2001:db8::7",
            "a=sendrecv",
        ])
    );
}

#[test]
fn attributes_set_push_remove() {
    let mut d = parse(&baresip_offer());
    let audio = &mut d.media_mut()[0];
    audio.set_attribute(Attribute::new("ptime", "30").unwrap());
    audio.push_attribute(Attribute::flag("rtcp-mux").unwrap());
    audio.set_direction(Direction::SendOnly);
    assert_eq!(audio.remove_attribute("extmap"), 1);
    assert_eq!(audio.remove_attribute("nothing"), 0);
    let values: Vec<Bytes> = audio.lines().iter().map(|l| l.value().clone()).collect();
    let pos = |v: &str| values.iter().position(|x| x == v);
    assert_eq!(audio.ptime(), Some(30));
    assert!(pos("ptime:30") > pos("mid:1"), "replaced in place");
    assert_eq!(pos("rtcp-mux"), Some(values.len() - 1), "pushed last");
    assert_eq!(pos("sendonly"), Some(12), "direction replaced in place");
    assert_eq!(d.direction_of(&d.media()[0]), Direction::SendOnly);
    d.set_attribute(Attribute::new("tool", "cpm").unwrap());
    d.push_attribute(Attribute::new("group", "BUNDLE 1").unwrap());
    assert_eq!(d.attribute("tool").unwrap().value().unwrap(), "cpm");
    assert_eq!(d.attributes().last().unwrap().name(), "group");
    assert_eq!(d.remove_attribute("ice-lite"), 1);
    d.push_line(Line::new(b'b', "AS:128").unwrap()).unwrap();
    let kinds: Vec<u8> = d.lines().iter().map(Line::kind).collect();
    assert_eq!(kinds, b"voscbtaa");
    assert_eq!(
        d.push_line(Line::new(b'o', "- 1 1 IN IP4 h").unwrap()),
        Err(SdpError::InvalidValue)
    );
}

#[test]
fn remove_formats_drops_their_attributes() {
    let mut d = parse(&baresip_offer());
    let [audio, video] = d.media_mut() else {
        panic!("two media sections expected")
    };
    assert_eq!(audio.remove_formats(|f| f == b"96" || f == b"101"), 2);
    assert_eq!(audio.remove_formats(|f| f == b"55"), 0);
    assert_eq!(
        audio.media_line().to_bytes(),
        "audio 10204 RTP/AVP 97 0 8 9"
    );
    assert!(audio.rtpmap(96).is_none() && audio.fmtp(b"101").is_none());
    assert!(audio.rtpmap(97).is_some() && audio.fmtp(b"97").is_some());
    assert_eq!(video.remove_formats(|f| f == b"100"), 1);
    let fb: Vec<Bytes> = video.attribute_values("rtcp-fb").collect();
    assert_eq!(fb, vec![Bytes::from_static(b"* nack pli")]);
    assert!(video.fmtp(b"100").is_none());
}

#[test]
fn media_sections_are_built_checked() {
    let ok = MediaSection::new(MediaLine {
        media: Bytes::from_static(b"audio"),
        port: 5004,
        port_count: Some(2),
        proto: Proto::RTP_AVP,
        formats: vec![Bytes::from_static(b"0")],
    })
    .unwrap();
    assert_eq!(ok.media_line().to_bytes(), "audio 5004/2 RTP/AVP 0");
    let mut bad = ok.media_line().clone();
    bad.formats = vec![Bytes::from_static(b"0 8")];
    assert_eq!(MediaSection::new(bad), Err(SdpError::InvalidValue));
    let mut bad = ok.media_line().clone();
    bad.proto = Proto::new("RTP/AVP\r\nx=y");
    assert_eq!(MediaSection::new(bad), Err(SdpError::InvalidValue));
    let mut d = parse(&sipp_offer());
    d.push_media(ok);
    assert_eq!(parse(&d.to_bytes()), d);
    let mut o = d.origin().clone();
    o.username = Bytes::from_static(b"two words");
    assert_eq!(d.set_origin(o), Err(SdpError::InvalidValue));
}

// ---- offer/answer (RFC 3264) -------------------------------------------------------------

fn te101() -> Codec {
    Codec::telephone_event(101).unwrap()
}

#[test]
fn audio_offer_is_a_complete_description() {
    let d = SessionDescription::audio_offer(
        ip("192.0.2.20"),
        40000,
        &[Codec::PCMA, Codec::PCMU, te101()],
        Some(20),
    );
    let body = d.to_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let id = &d.origin().session_id;
    let id = std::str::from_utf8(id).unwrap();
    assert_eq!(
        text,
        format!(
            "v=0\r\no=- {id} 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
             m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
             a=sendrecv\r\n"
        )
    );
    assert_eq!(parse(&body), d);
    let other = SessionDescription::audio_offer(ip("192.0.2.20"), 40002, &[Codec::PCMU], None);
    assert_ne!(other.origin().session_id, d.origin().session_id);
    assert!(other.media()[0].ptime().is_none());
    let v6 = SessionDescription::audio_offer(ip("2001:db8::3"), 4000, &[Codec::PCMU], None);
    assert_eq!(v6.connection().unwrap().addrtype, AddrType::Ip6);
    assert_eq!(v6.origin().addrtype, AddrType::Ip6);
}

/// Answers `offer` as an endpoint at 192.0.2.99 with ports 20000, 20002, ...
fn answer_at(offer: &Bytes, supported: &[Codec]) -> Result<SessionDescription, NoCommonCodec> {
    answer(
        &parse(offer),
        ip("192.0.2.99"),
        |i, _| 20000 + 2 * i as u16,
        supported,
    )
}

#[test]
fn answer_intersects_in_offer_order_with_offer_payload_types() {
    let supported = [
        Codec::PCMU,
        Codec::PCMA,
        Codec::dynamic(120, "OPUS", 48000).unwrap().with_channels(2),
        te101(),
    ];
    let a = answer_at(&baresip_offer(), &supported).unwrap();
    let [audio, video] = a.media() else {
        panic!("two media sections expected")
    };
    assert_eq!(
        audio.media_line().to_bytes(),
        "audio 20000 RTP/AVP 96 0 8 101"
    );
    assert_eq!(
        audio.rtpmap(96).unwrap().encoding,
        "opus",
        "offer's name and payload type"
    );
    assert_eq!(audio.fmtp(b"96").unwrap(), "stereo=1;sprop-stereo=1");
    assert_eq!(audio.fmtp(b"101").unwrap(), "0-15", "offer's fmtp");
    assert_eq!(audio.ptime(), Some(20));
    assert_eq!(audio.direction(), Some(Direction::SendRecv));
    // No video codec in common: rejected, m-line kept with port 0 and the offered formats.
    assert_eq!(video.media_line().to_bytes(), "video 0 RTP/AVP 100 102");
    assert!(video.lines().is_empty());
    assert_eq!(a.timing().unwrap(), "0 0");
    assert_eq!(a.connection().unwrap().ip(), Some(ip("192.0.2.99")));
    assert_eq!(
        a.media_address(audio),
        Some(SocketAddr::new(ip("192.0.2.99"), 20000))
    );
    assert_eq!(a.media_address(video), None);
    assert_eq!(parse(&a.to_bytes()), a);
}

#[test]
fn answer_matches_static_types_without_rtpmap_and_checks_rates() {
    let offer = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=3338481189 3370017201",
        "m=audio 5000 RTP/AVP 8 96 97",
        "a=rtpmap:96 pcmu/16000",
        "a=rtpmap:97 Telephone-Event/8000",
    ]);
    let a = answer_at(&offer, &[Codec::PCMU, Codec::PCMA, te101()]).unwrap();
    let m = &a.media()[0];
    assert_eq!(
        m.media_line().formats,
        vec!["8", "97"],
        "PCMU at 16 kHz is another format"
    );
    assert_eq!(m.rtpmap(8).unwrap().encoding, "PCMA");
    assert_eq!(a.timing().unwrap(), "3338481189 3370017201", "t= echoed");
}

#[test]
fn answer_mirrors_directions() {
    for (session, media, expected) in [
        (None, None, Direction::SendRecv),
        (None, Some("sendonly"), Direction::RecvOnly),
        (None, Some("recvonly"), Direction::SendOnly),
        (None, Some("inactive"), Direction::Inactive),
        (Some("sendonly"), None, Direction::RecvOnly),
        (Some("inactive"), Some("sendrecv"), Direction::SendRecv),
    ] {
        let mut lines = vec![
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
        ];
        let s_attr = session.map(|s| format!("a={s}"));
        let m_attr = media.map(|s| format!("a={s}"));
        lines.extend(s_attr.as_deref());
        lines.push("m=audio 5000 RTP/AVP 0");
        lines.extend(m_attr.as_deref());
        let a = answer_at(&sdp(&lines), &[Codec::PCMU]).unwrap();
        assert_eq!(
            a.direction_of(&a.media()[0]),
            expected,
            "{session:?} {media:?}"
        );
        assert_eq!(
            a.media()[0].direction(),
            Some(expected),
            "written at media level"
        );
    }
}

#[test]
fn answer_rejections() {
    let only_dtmf = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 5000 RTP/AVP 18 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_eq!(
        answer_at(&only_dtmf, &[Codec::PCMU, te101()]),
        Err(NoCommonCodec)
    );
    assert_eq!(
        answer_at(&rcs_chat_offer(), &[Codec::PCMU]),
        Err(NoCommonCodec)
    );
    assert_eq!(NoCommonCodec::STATUS, 488);
    // Secure RTP needs keys this endpoint does not negotiate.
    assert_eq!(answer_at(&ipv6_offer(), &[Codec::PCMA]), Err(NoCommonCodec));
    let plain = String::from_utf8(ipv6_offer().to_vec())
        .unwrap()
        .replace("RTP/SAVP", "RTP/AVP");
    assert!(answer_at(&Bytes::from(plain), &[Codec::PCMA]).is_ok());
    // A stream the offer disabled stays disabled even when its codec is supported.
    let disabled = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 0 RTP/AVP 0",
        "m=audio 5002 RTP/AVP 0",
    ]);
    let mut asked = Vec::new();
    let a = answer(
        &parse(&disabled),
        ip("192.0.2.99"),
        |i, _| {
            asked.push(i);
            7000
        },
        &[Codec::PCMU],
    )
    .unwrap();
    assert_eq!(asked, vec![1], "ports asked only for accepted streams");
    let ports: Vec<u16> = a.media().iter().map(MediaSection::port).collect();
    assert_eq!(ports, vec![0, 7000]);
    assert_eq!(a.media()[0].media_line().formats, vec!["0"]);
}

#[test]
fn versions_follow_rfc3264_section8() {
    let addr = ip("192.0.2.20");
    let first = SessionDescription::audio_offer(addr, 40000, &[Codec::PCMU], Some(20));
    // Same content, e.g. a session refresh: the version stays.
    let mut same = SessionDescription::audio_offer(addr, 40000, &[Codec::PCMU], Some(20));
    same.follow(&first);
    assert_eq!(same, first);
    // Hold: direction changes, version increments, session id and address stay.
    let mut hold = first.clone();
    hold.media_mut()[0].set_direction(Direction::SendOnly);
    hold.follow(&first);
    assert_eq!(
        hold.origin().session_version,
        first.origin().session_version + 1
    );
    assert_eq!(hold.origin().session_id, first.origin().session_id);
    // An answer in a re-INVITE follows the previous answer the same way.
    let offer = parse(&sipp_offer());
    let a1 = answer(&offer, addr, |_, _| 9000, &[Codec::PCMU]).unwrap();
    let mut a2 = answer(&offer, addr, |_, _| 9002, &[Codec::PCMU]).unwrap();
    a2.follow(&a1);
    assert_eq!(a2.origin().session_version, a1.origin().session_version + 1);
    assert_eq!(a2.origin().session_id, a1.origin().session_id);
    let mut b = a2.clone();
    assert_eq!(b.bump_version(), a2.origin().session_version + 1);
    assert_eq!(
        parse(&b.to_bytes()).origin().session_version,
        b.origin().session_version
    );
}

// ---- torture vectors (RFC 4475, RFC 5118) ------------------------------------------------

/// The SDP of torture message `rel`: the body as SIP delivers it (cut to Content-Length) and
/// every byte after the blank line. Found like `engine/tests/torture.rs` finds them:
/// `$CPM_VECTORS/sip-torture`, `<workspace>/../shared/...` or `<workspace>/../../shared/...`.
fn vector_bodies(rel: &str) -> (Bytes, Bytes) {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("CPM_VECTORS")
        .map(|v| std::path::PathBuf::from(v).join("sip-torture"))
        .into_iter()
        .collect();
    dirs.push(workspace.join("../shared/vectors/sip-torture"));
    dirs.push(workspace.join("../../shared/vectors/sip-torture"));
    let file = dirs.iter().map(|d| d.join(rel)).find(|f| f.is_file());
    let file = file.unwrap_or_else(|| panic!("{rel} not found in {dirs:?}"));
    let raw = Bytes::from(std::fs::read(file).unwrap());
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        crate::sip::parse(raw.clone()).unwrap().body,
        raw.slice(at + 4..),
    )
}

#[test]
#[ignore = "needs ../shared/vectors"]
fn rfc4475_sdp01_body() {
    let (body, wire) = vector_bodies("rfc4475/sdp01.dat");
    assert_eq!(body, wire, "Content-Length is right");
    let d = parse(&body);
    assert_eq!(d.to_bytes(), body);
    let [audio, video] = d.media() else {
        panic!("two media sections expected")
    };
    assert_eq!(audio.media_line().formats, vec!["0", "12"]);
    // `a=rtpmap:31 LPC` lacks a clock rate: kept as a line, not read as an rtpmap.
    assert!(video.rtpmap(31).is_none());
    assert_eq!(
        video.attribute("rtpmap").unwrap().value().unwrap(),
        "31 LPC"
    );
    assert_eq!(
        video.codecs()[0].name(),
        "H261",
        "falls back to the static table"
    );
}

#[test]
#[ignore = "needs ../shared/vectors"]
fn rfc5118_ipv6_in_sdp_body() {
    let (body, wire) = vector_bodies("rfc5118/ipv6-in-sdp");
    let d = parse(&wire);
    assert_eq!(d.to_bytes(), wire);
    // The message's Content-Length (241) is short of its body: SIP cuts the last rtpmap, which
    // parses as an attribute that is no rtpmap, and gets a line end when printed.
    let cut = parse(&body);
    assert_eq!(cut.to_bytes(), [&body[..], b"\r\n"].concat());
    assert!(cut.media()[1].rtpmap(107).is_none());
    assert_eq!(d.media()[1].rtpmap(107).unwrap().encoding, "H263-1998");
    assert_eq!(d.origin().session_id, "971731711378798081");
    assert_eq!(d.connection().unwrap().ip(), Some(ip("2001:db8::20")));
    let addrs: Vec<Option<SocketAddr>> = d.media().iter().map(|m| d.media_address(m)).collect();
    assert_eq!(
        addrs,
        vec![
            Some(SocketAddr::new(ip("2001:db8::20"), 6000)),
            Some(SocketAddr::new(ip("2001:db8::20"), 6024))
        ]
    );
    assert_eq!(d.media()[0].rtpmap(2).unwrap().encoding, "G726-32");
}

#[test]
#[ignore = "needs ../shared/vectors"]
fn rfc5118_mult_ip_in_sdp_body() {
    let (body, wire) = vector_bodies("rfc5118/mult-ip-in-sdp");
    let d = parse(&wire);
    assert_eq!(d.to_bytes(), wire);
    // Content-Length (181) is short here too: the cut body still parses.
    assert_eq!(parse(&body).media().len(), 2);
    assert_eq!(d.session_name().unwrap(), "");
    assert_eq!(d.origin().ip(), None, "host name origin");
    assert!(d.connection().is_none());
    let addrs: Vec<Option<SocketAddr>> = d.media().iter().map(|m| d.media_address(m)).collect();
    assert_eq!(
        addrs,
        vec![
            Some(SocketAddr::new(ip("192.0.2.1"), 22334)),
            Some(SocketAddr::new(ip("2001:db8::1"), 6024))
        ]
    );
}

// ---- garbage never panics ----------------------------------------------------------------

/// xorshift64*: a fixed pseudo-random sequence for the mutation loop.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Everything a parsed description offers, exercised; and printing is a fixed point.
fn exercise(d: &SessionDescription) {
    let printed = d.to_bytes();
    let again = SessionDescription::parse(&printed).expect("printed output parses");
    assert_eq!(&again, d, "printing loses nothing");
    assert_eq!(again.to_bytes(), printed, "printing is a fixed point");
    let _ = (d.connection(), d.direction(), d.timing(), d.session_name());
    for m in d.media() {
        let _ = (
            m.codecs(),
            m.rtcp(),
            m.ptime(),
            m.rtcp_mux(),
            m.connection(),
        );
        let _ = (d.media_address(m), d.direction_of(m));
        let _ = m.rtpmaps().count() + m.attributes().count();
    }
    let _ = answer(d, ip("192.0.2.1"), |_, _| 4000, &[Codec::PCMU, Codec::PCMA]);
    let mut r = d.clone();
    r.set_all_connections(ip("2001:db8::1"));
    r.bump_version();
    for m in r.media_mut() {
        m.set_port(1);
        m.set_rtcp(2, None);
        m.remove_formats(|f| f == b"0");
    }
    let printed = r.to_bytes();
    assert_eq!(
        parse(&printed).to_bytes(),
        printed,
        "rewritten output parses"
    );
}

/// Bytes that matter to the SDP grammar, for the mutations.
const ALPHABET: &[u8] = b"vosmcat= :/\r\n0123456789*-IP46\0\xff";

/// `body` with 1-4 random byte edits: replace, insert, delete.
pub(crate) fn mutate(rng: &mut Rng, body: &[u8]) -> Bytes {
    let mut v = body.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len());
        let byte = if rng.below(2) == 0 {
            ALPHABET[rng.below(ALPHABET.len())]
        } else {
            rng.next() as u8
        };
        match rng.below(3) {
            0 if at < v.len() => v[at] = byte,
            1 => v.insert(at, byte),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => {}
        }
    }
    Bytes::from(v)
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for body in all_offers() {
        // Every truncation.
        for end in 0..=body.len() {
            if let Ok(d) = SessionDescription::parse(&body.slice(..end)) {
                exercise(&d);
                parsed += 1;
            }
        }
        for _ in 0..1500 {
            if let Ok(d) = SessionDescription::parse(&mutate(&mut rng, &body)) {
                exercise(&d);
                parsed += 1;
            }
        }
    }
    // Pure noise.
    for _ in 0..2000 {
        let len = rng.below(200);
        let v: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        if let Ok(d) = SessionDescription::parse(&Bytes::from(v)) {
            exercise(&d);
        }
    }
    assert!(
        parsed > 1000,
        "the mutations should mostly still parse ({parsed})"
    );
}
