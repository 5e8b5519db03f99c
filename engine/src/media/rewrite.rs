//! What the controller reads from and writes into a session description: which streams it
//! relays, the codec policy, the peer addresses, the `c=`/`m=`/`a=rtcp` rewrite toward our
//! ports, and a fingerprint of what was sent (for the `o=` version, RFC 3264 §8). Every line
//! not named here passes through as received.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::LocalPorts;
use crate::hash::{fnv1a_extend, FNV1A_OFFSET};
use crate::sdp::{Codec, Line, MediaSection, SessionDescription};

/// The RTP profiles relayed as opaque UDP datagrams (RFC 3551, RFC 4585, RFC 3711, RFC 5124,
/// RFC 5764). RTP over TCP (RFC 4571) and everything else passes through.
const RELAYED_PROTOS: [&[u8]; 6] = [
    b"RTP/AVP",
    b"RTP/AVPF",
    b"RTP/SAVP",
    b"RTP/SAVPF",
    b"UDP/TLS/RTP/SAVP",
    b"UDP/TLS/RTP/SAVPF",
];

/// What the controller does with one offered `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// Not ours to relay (port 0, MSRP when not anchored, MSRP over TLS, RTP over TCP, ...):
    /// passed through as received.
    Pass,
    /// An MSRP stream anchored on our MSRP listener ([`super::msrp`]).
    Msrp,
    /// An RTP stream the codec policy leaves without a media codec, or one spread over
    /// several ports (`m=video 49170/2`, RFC 8866 §5.14), which a leg cannot relay: sent on
    /// with port 0 (RFC 3264 §6, §8.2), so both sides see it rejected.
    Reject,
    /// Relayed: the formats the policy removes, and whether one port is enough
    /// (`a=rtcp-mux-only`, RFC 8858 §3).
    Relay {
        /// The formats to remove from the `m=` line (with their `rtpmap`/`fmtp`/`rtcp-fb`).
        removed: Vec<Bytes>,
        /// RTCP is only ever multiplexed: a single port per side.
        single: bool,
    },
}

/// The plan for `m` under the codec policy `allowed` (`None`: every format is allowed);
/// `msrp`: whether `TCP/MSRP` streams are anchored (one without `a=path` is then rejected,
/// RFC 4975 §8.1 requires it).
///
/// With a policy, a format is kept when it resolves to a codec (by `rtpmap`, else the static
/// table of RFC 3551) that has the same format as an allowed one (RFC 3264 §6.1); DTMF and
/// comfort noise (RFC 4733, RFC 3389) need to be allowed too. A stream left without a format
/// other than those two is rejected. Without a policy nothing is removed or judged.
pub(super) fn plan(m: &MediaSection, allowed: Option<&[Codec]>, msrp: bool) -> Plan {
    if msrp && m.port() != 0 && super::msrp::anchorable(m) {
        return match super::msrp::path_of(m) {
            Some(_) => Plan::Msrp,
            None => Plan::Reject,
        };
    }
    let relayed = RELAYED_PROTOS
        .iter()
        .any(|p| m.media_line().proto.as_bytes().eq_ignore_ascii_case(p));
    if m.port() == 0 || !relayed {
        return Plan::Pass;
    }
    if m.media_line().port_count.is_some_and(|n| n > 1) {
        return Plan::Reject;
    }
    let single = m.attribute("rtcp-mux-only").is_some();
    let Some(allowed) = allowed else {
        return Plan::Relay {
            removed: Vec::new(),
            single,
        };
    };
    let mut removed = Vec::new();
    let mut media_codec = false;
    for f in &m.media_line().formats {
        let codec = payload_type(f).and_then(|pt| m.codec(pt));
        match codec.filter(|c| allowed.iter().any(|a| a.same_format(c))) {
            Some(c) => media_codec |= !c.is_auxiliary(),
            None => removed.push(f.clone()),
        }
    }
    if media_codec {
        Plan::Relay { removed, single }
    } else {
        Plan::Reject
    }
}

/// A format that is an RTP payload type: 1-3 ASCII digits below 128.
fn payload_type(f: &[u8]) -> Option<u8> {
    if f.is_empty() || f.len() > 3 || !f.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = f.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    u8::try_from(n).ok().filter(|&pt| pt < 128)
}

/// Where a side receives one stream, from its SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Peer {
    /// The connection address and `m=` port.
    pub(super) rtp: SocketAddr,
    /// `a=rtcp` (RFC 3605: port, and address when given), else RTP port + 1 (RFC 3550 §11).
    pub(super) rtcp: SocketAddr,
}

/// The address `m` of `d` receives on. `None` for port 0, a host name, or the unspecified
/// address (`c=IN IP4 0.0.0.0`, the RFC 2543 hold): the last known address then stays.
pub(super) fn peer_of(d: &SessionDescription, m: &MediaSection) -> Option<Peer> {
    let rtp = d.media_address(m)?;
    if rtp.ip().is_unspecified() {
        return None;
    }
    let rtcp = match m.rtcp() {
        Some(r) => {
            let ip = r.connection.and_then(|c| c.ip()).unwrap_or(rtp.ip());
            SocketAddr::new(ip, r.port)
        }
        None => SocketAddr::new(rtp.ip(), rtp.port().checked_add(1).unwrap_or(rtp.port())),
    };
    Some(Peer { rtp, rtcp })
}

/// Points a relayed stream at our `ports` on `ip`: the `m=` port, the media-level `c=` (added
/// when the session has none to inherit), and `a=rtcp` when present (RFC 3605; the RTP port
/// when RTCP has none of its own, RFC 5761 §5.1.3). `a=rtcp-mux` and the rest stay.
pub(super) fn point_stream(m: &mut MediaSection, ports: LocalPorts, ip: IpAddr, session_c: bool) {
    m.set_port(ports.rtp);
    if m.connection().is_some() || !session_c {
        m.set_connection(ip);
    }
    if m.attribute("rtcp").is_some() {
        let with_ip = m.rtcp().is_some_and(|r| r.connection.is_some());
        m.set_rtcp(ports.rtcp.unwrap_or(ports.rtp), with_ip.then_some(ip));
    }
}

/// Points the session-level `c=` at `ip` when any stream is relayed. Active streams passed
/// through without their own `c=` (MSRP, ...) keep the address they had: the old session
/// `c=` is copied into their section first.
pub(super) fn point_session(d: &mut SessionDescription, relayed: &[bool], ip: IpAddr) {
    if !relayed.contains(&true) {
        return;
    }
    if let Some(c) = d.connection() {
        let own = Line::new(b'c', c.to_bytes()).ok();
        for (m, &r) in d.media_mut().iter_mut().zip(relayed) {
            if let (false, true, None, Some(line)) =
                (r, m.port() != 0, m.connection(), own.as_ref())
            {
                m.push_line(line.clone());
            }
        }
        d.set_connection(ip);
    }
}

/// A hash of everything `d` says except its `o=` line: equal fingerprints mean the same
/// description, so the `o=` version stays (RFC 3264 §8).
pub(super) fn fingerprint(d: &SessionDescription) -> u64 {
    let line = |h: u64, kind: u8, value: &[u8]| {
        let h = fnv1a_extend(h, &[kind, b'=']);
        fnv1a_extend(fnv1a_extend(h, value), b"\r\n")
    };
    let mut h = FNV1A_OFFSET;
    for l in d.lines().iter().filter(|l| l.kind() != b'o') {
        h = line(h, l.kind(), l.value());
    }
    for m in d.media() {
        h = line(h, b'm', &m.media_line().to_bytes());
        for l in m.lines() {
            h = line(h, l.kind(), l.value());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(lines: &str) -> SessionDescription {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n{lines}"
        );
        SessionDescription::parse(&Bytes::from(body)).unwrap()
    }

    #[test]
    fn payload_types_are_small_decimals() {
        assert_eq!(payload_type(b"0"), Some(0));
        assert_eq!(payload_type(b"127"), Some(127));
        for bad in [&b"128"[..], b"", b"1000", b"+1", b"*", b"9a"] {
            assert_eq!(payload_type(bad), None);
        }
    }

    #[test]
    fn plans_by_proto_port_and_policy() {
        let d = section(concat!(
            "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
            "m=audio 4002 RTP/AVP/TCP 0\r\n",
            "m=audio 0 RTP/AVP 0\r\n",
            "m=video 4004 udp/tls/rtp/savpf 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp-mux-only\r\n",
            "m=message 9 TCP/MSRP *\r\n",
            "m=video 4006/2 RTP/AVP 31\r\n",
            "m=video 4010/1 RTP/AVP 31\r\n",
        ));
        let m = d.media();
        assert_eq!(plan(&m[1], None, false), Plan::Pass, "RTP over TCP");
        assert_eq!(plan(&m[2], None, false), Plan::Pass, "port 0");
        assert_eq!(plan(&m[4], None, false), Plan::Pass, "MSRP, not anchored");
        assert_eq!(
            plan(&m[4], None, true),
            Plan::Reject,
            "anchored MSRP without a=path"
        );
        assert_eq!(plan(&m[1], None, true), Plan::Pass, "RTP over TCP still");
        assert_eq!(plan(&m[5], None, false), Plan::Reject, "two port pairs");
        assert!(matches!(plan(&m[6], None, false), Plan::Relay { .. }));
        let vp8_only = plan(&m[3], None, false);
        assert_eq!(
            vp8_only,
            Plan::Relay {
                removed: vec![],
                single: true
            }
        );
        let pcma_dtmf = [Codec::PCMA, Codec::telephone_event(96).unwrap()];
        assert_eq!(
            plan(&m[0], Some(&pcma_dtmf), false),
            Plan::Relay {
                removed: vec![Bytes::from("0")],
                single: false
            }
        );
        assert_eq!(plan(&m[3], Some(&pcma_dtmf), false), Plan::Reject);
        let dtmf_only = [Codec::telephone_event(101).unwrap()];
        assert_eq!(
            plan(&m[0], Some(&dtmf_only), false),
            Plan::Reject,
            "DTMF alone is no media"
        );
    }

    #[test]
    fn peers_come_from_c_m_and_a_rtcp() {
        let d = section(concat!(
            "m=audio 4000 RTP/AVP 0\r\n",
            "m=audio 4002 RTP/AVP 0\r\na=rtcp:5000\r\n",
            "m=audio 4004 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\na=rtcp:5002 IN IP4 192.0.2.9\r\n",
            "m=audio 4006 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n",
            "m=audio 4008 RTP/AVP 0\r\nc=IN IP4 host.example\r\n",
        ));
        let got: Vec<Option<(String, String)>> = d
            .media()
            .iter()
            .map(|m| peer_of(&d, m).map(|p| (p.rtp.to_string(), p.rtcp.to_string())))
            .collect();
        let s = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            got,
            vec![
                s("192.0.2.1:4000", "192.0.2.1:4001"),
                s("192.0.2.1:4002", "192.0.2.1:5000"),
                s("[2001:db8::7]:4004", "192.0.2.9:5002"),
                None,
                None
            ]
        );
    }

    #[test]
    fn fingerprints_ignore_the_origin_only() {
        let a = section("m=audio 4000 RTP/AVP 0\r\n");
        let mut b = a.clone();
        b.bump_version();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.media_mut()[0].set_port(4002);
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
