//! Typed views of the structured lines: origin (`o=`, RFC 8866 §5.2), connection data (`c=`,
//! §5.7) and media descriptions (`m=`, §5.14). Parts are slices of the line's value.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use super::line::{decimal, fields, join, split_at_byte};
use super::SdpError;

/// The address type of an origin or connection line (RFC 8866 §5.2, §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
    /// Another registered or unknown type, as received.
    Other(Bytes),
}

impl AddrType {
    /// Reads `IP4` / `IP6` (ASCII case-insensitively); anything else is [`AddrType::Other`].
    pub fn parse(raw: &Bytes) -> AddrType {
        if raw.eq_ignore_ascii_case(b"IP4") {
            AddrType::Ip4
        } else if raw.eq_ignore_ascii_case(b"IP6") {
            AddrType::Ip6
        } else {
            AddrType::Other(raw.clone())
        }
    }

    /// The type of an IP address: `IP4` or `IP6`.
    pub fn of(ip: IpAddr) -> AddrType {
        match ip {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }

    /// The token as written on the line.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            AddrType::Ip4 => b"IP4",
            AddrType::Ip6 => b"IP6",
            AddrType::Other(b) => b,
        }
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`
/// (RFC 8866 §5.2): who created the session, and which version of its description this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The creator's login, `-` when none.
    pub username: Bytes,
    /// The session identifier (a numeric string, kept as received).
    pub session_id: Bytes,
    /// The version, incremented on each modification (RFC 3264 §8).
    pub session_version: u64,
    /// The network type, `IN`.
    pub nettype: Bytes,
    /// The address type.
    pub addrtype: AddrType,
    /// The creator's address or host name.
    pub address: Bytes,
}

impl Origin {
    /// Parses the six fields; the version must be a decimal that fits 64 bits.
    pub fn parse(raw: &Bytes) -> Result<Origin, SdpError> {
        const E: SdpError = SdpError::Malformed("o=");
        let mut f = fields(raw);
        let (Some(username), Some(session_id), Some(version), Some(nettype), Some(addrtype)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(E);
        };
        let (Some(address), None) = (f.next(), f.next()) else {
            return Err(E);
        };
        Ok(Origin {
            username,
            session_id,
            session_version: decimal(&version).ok_or(E)?,
            nettype,
            addrtype: AddrType::parse(&addrtype),
            address,
        })
    }

    /// An origin `<username> <session_id> <version> IN IP4|IP6 <ip>`.
    pub fn new(username: Bytes, session_id: u64, session_version: u64, ip: IpAddr) -> Origin {
        Origin {
            username,
            session_id: Bytes::from(session_id.to_string()),
            session_version,
            nettype: Bytes::from_static(b"IN"),
            addrtype: AddrType::of(ip),
            address: Bytes::from(ip.to_string()),
        }
    }

    /// The address as an IP address; `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        parse_ip(&self.address)
    }

    /// The line value.
    pub fn to_bytes(&self) -> Bytes {
        join(&[
            &self.username,
            &self.session_id,
            self.session_version.to_string().as_bytes(),
            &self.nettype,
            self.addrtype.as_bytes(),
            &self.address,
        ])
    }
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 8866 §5.7): where media is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The network type, `IN`.
    pub nettype: Bytes,
    /// The address type.
    pub addrtype: AddrType,
    /// The address as written, with any multicast `/ttl` and `/count` suffixes.
    pub address: Bytes,
}

impl Connection {
    /// Parses the three fields (the address may be an IP literal or a host name).
    pub fn parse(raw: &Bytes) -> Result<Connection, SdpError> {
        let mut f = fields(raw);
        let (Some(nettype), Some(addrtype), Some(address), None) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(SdpError::Malformed("c="));
        };
        Ok(Connection {
            nettype,
            addrtype: AddrType::parse(&addrtype),
            address,
        })
    }

    /// `IN IP4 <ip>` or `IN IP6 <ip>`.
    pub fn from_ip(ip: IpAddr) -> Connection {
        Connection {
            nettype: Bytes::from_static(b"IN"),
            addrtype: AddrType::of(ip),
            address: Bytes::from(ip.to_string()),
        }
    }

    /// The address without its multicast suffixes.
    pub fn host(&self) -> Bytes {
        split_at_byte(&self.address, b'/').0
    }

    /// The address as an IP address; `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        parse_ip(&self.host())
    }

    /// The multicast TTL (`IP4` only: `<addr>/<ttl>[/<count>]`, RFC 8866 §5.7).
    pub fn ttl(&self) -> Option<u8> {
        if self.addrtype != AddrType::Ip4 {
            return None;
        }
        let ttl = split_at_byte(&self.address, b'/').1?;
        decimal(&split_at_byte(&ttl, b'/').0)
    }

    /// The number of consecutive multicast addresses (`IP4`: the third part, `IP6`: the second).
    pub fn count(&self) -> Option<u32> {
        let rest = split_at_byte(&self.address, b'/').1?;
        let count = match self.addrtype {
            AddrType::Ip4 => split_at_byte(&rest, b'/').1?,
            _ => rest,
        };
        decimal(&count)
    }

    /// The line value.
    pub fn to_bytes(&self) -> Bytes {
        join(&[&self.nettype, self.addrtype.as_bytes(), &self.address])
    }
}

/// The transport protocol of a media description (RFC 8866 §5.14 `<proto>`): `RTP/AVP`,
/// `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `TCP/MSRP`, ... kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proto(Bytes);

impl Proto {
    /// RTP audio/video profile (RFC 3551).
    pub const RTP_AVP: Proto = Proto(Bytes::from_static(b"RTP/AVP"));
    /// Secure RTP (RFC 3711).
    pub const RTP_SAVP: Proto = Proto(Bytes::from_static(b"RTP/SAVP"));
    /// RTP with RTCP feedback (RFC 4585).
    pub const RTP_AVPF: Proto = Proto(Bytes::from_static(b"RTP/AVPF"));
    /// Secure RTP with RTCP feedback (RFC 5124).
    pub const RTP_SAVPF: Proto = Proto(Bytes::from_static(b"RTP/SAVPF"));
    /// DTLS-SRTP with feedback, as WebRTC offers (RFC 5764 §8).
    pub const UDP_TLS_RTP_SAVPF: Proto = Proto(Bytes::from_static(b"UDP/TLS/RTP/SAVPF"));
    /// MSRP over TCP (RFC 4975 §8.1).
    pub const TCP_MSRP: Proto = Proto(Bytes::from_static(b"TCP/MSRP"));
    /// MSRP over TLS (RFC 4975 §8.1).
    pub const TCP_TLS_MSRP: Proto = Proto(Bytes::from_static(b"TCP/TLS/MSRP"));

    /// A protocol token, e.g. from configuration (checked when its media line is built).
    pub fn new(token: impl Into<Bytes>) -> Proto {
        Proto(token.into())
    }

    /// The token as written.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Whether one of the `/`-separated parts is `name` (ASCII case-insensitively).
    fn has_part(&self, name: &[u8]) -> bool {
        self.0
            .split(|&c| c == b'/')
            .any(|p| p.eq_ignore_ascii_case(name))
    }

    /// Whether media is carried in RTP (any RTP profile: `RTP/AVP`, `UDP/TLS/RTP/SAVPF`, ...).
    pub fn is_rtp(&self) -> bool {
        self.has_part(b"RTP")
    }

    /// Whether the profile is secure RTP (`SAVP` or `SAVPF`).
    pub fn is_srtp(&self) -> bool {
        self.has_part(b"SAVP") || self.has_part(b"SAVPF")
    }

    /// Whether the media is an MSRP session (`TCP/MSRP`, `TCP/TLS/MSRP`).
    pub fn is_msrp(&self) -> bool {
        self.has_part(b"MSRP")
    }
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// The media type: `audio`, `video`, `text`, `application`, `message`, ...
    pub media: Bytes,
    /// The transport port; 0 marks a rejected or disabled stream (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The number of ports for hierarchically encoded streams (`/2`), when given.
    pub port_count: Option<u16>,
    /// The transport protocol.
    pub proto: Proto,
    /// The formats: RTP payload types for RTP profiles, `*` for MSRP, ...
    pub formats: Vec<Bytes>,
}

impl MediaLine {
    /// Parses an `m=` value. A line without formats is accepted (RFC 8866 asks for one, but a
    /// rejected stream is sometimes sent without); media and proto must be present.
    pub fn parse(raw: &Bytes) -> Result<MediaLine, SdpError> {
        const E: SdpError = SdpError::Malformed("m=");
        let mut f = fields(raw);
        let (Some(media), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
            return Err(E);
        };
        let (port, count) = split_at_byte(&port, b'/');
        let port_count = match count {
            Some(c) => Some(decimal(&c).ok_or(E)?),
            None => None,
        };
        Ok(MediaLine {
            media,
            port: decimal(&port).ok_or(E)?,
            port_count,
            proto: Proto(proto),
            formats: f.collect(),
        })
    }

    /// The formats that are RTP payload types (0-127), in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| decimal::<u8>(f).filter(|&pt| pt < 128))
    }

    /// The line value.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + 4 * self.formats.len());
        out.extend_from_slice(&self.media);
        out.extend_from_slice(b" ");
        out.extend_from_slice(self.port.to_string().as_bytes());
        if let Some(c) = self.port_count {
            out.extend_from_slice(b"/");
            out.extend_from_slice(c.to_string().as_bytes());
        }
        out.extend_from_slice(b" ");
        out.extend_from_slice(&self.proto.0);
        for f in &self.formats {
            out.extend_from_slice(b" ");
            out.extend_from_slice(f);
        }
        out.freeze()
    }
}

/// An IP literal (no brackets, no zone) as an address.
fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn origin_round_trips_and_checks_the_version() {
        let raw = b("alice 2890844526 2890842807 IN IP4 192.0.2.10");
        let o = Origin::parse(&raw).unwrap();
        assert_eq!(o.username, "alice");
        assert_eq!(o.session_id, "2890844526");
        assert_eq!(o.session_version, 2_890_842_807);
        assert_eq!(o.addrtype, AddrType::Ip4);
        assert_eq!(o.ip(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(o.to_bytes(), raw);
        let host = Origin::parse(&b("bob 1 2 IN IP4 host.example.com")).unwrap();
        assert_eq!(host.ip(), None);
        for bad in ["a 1 x IN IP4 h", "a 1 2 IN IP4", "a 1 2 IN IP4 h extra", ""] {
            assert_eq!(
                Origin::parse(&b(bad)),
                Err(SdpError::Malformed("o=")),
                "{bad}"
            );
        }
    }

    #[test]
    fn connection_reads_ip_ttl_and_count() {
        let c = Connection::parse(&b("IN IP6 2001:db8::20")).unwrap();
        assert_eq!(c.addrtype, AddrType::Ip6);
        assert_eq!(c.ip(), Some("2001:db8::20".parse().unwrap()));
        let m = Connection::parse(&b("IN IP4 224.2.1.1/127/3")).unwrap();
        assert_eq!(m.host(), "224.2.1.1");
        assert_eq!((m.ttl(), m.count()), (Some(127), Some(3)));
        let m6 = Connection::parse(&b("IN IP6 ff15::101/3")).unwrap();
        assert_eq!((m6.ttl(), m6.count()), (None, Some(3)));
        assert_eq!(
            Connection::from_ip("192.0.2.1".parse().unwrap()).to_bytes(),
            "IN IP4 192.0.2.1"
        );
        for bad in ["IN IP4", "IN IP4 a b", ""] {
            assert_eq!(Connection::parse(&b(bad)), Err(SdpError::Malformed("c=")));
        }
    }

    #[test]
    fn media_line_parts() {
        let m = MediaLine::parse(&b("video 49170/2 RTP/AVP 31 96")).unwrap();
        assert_eq!((m.port, m.port_count), (49170, Some(2)));
        assert_eq!(m.proto, Proto::RTP_AVP);
        assert_eq!(m.payload_types().collect::<Vec<_>>(), vec![31, 96]);
        assert_eq!(m.to_bytes(), "video 49170/2 RTP/AVP 31 96");
        let msrp = MediaLine::parse(&b("message 9 TCP/MSRP *")).unwrap();
        assert!(msrp.proto.is_msrp() && !msrp.proto.is_rtp());
        assert_eq!(msrp.payload_types().count(), 0);
        assert!(Proto::UDP_TLS_RTP_SAVPF.is_rtp() && Proto::UDP_TLS_RTP_SAVPF.is_srtp());
        assert!(!Proto::RTP_AVP.is_srtp());
        for bad in [
            "audio x RTP/AVP 0",
            "audio 70000 RTP/AVP 0",
            "audio 0",
            "audio 1/x A 0",
        ] {
            assert_eq!(
                MediaLine::parse(&b(bad)),
                Err(SdpError::Malformed("m=")),
                "{bad}"
            );
        }
    }
}
