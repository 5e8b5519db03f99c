//! Attributes (`a=`, RFC 8866 §5.13, §6) and typed views of the ones offer/answer reads:
//! `rtpmap`, `fmtp`, `ptime`, `rtcp` (RFC 3605), `rtcp-mux` (RFC 5761) and the direction flags.
//! Every other attribute (MSRP `path`, `accept-types`, `setup`, ICE, crypto, ...) is a plain
//! name/value pair that passes through unchanged.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use super::fields::Connection;
use super::line::{decimal, fields, split_at_byte, split_field, valid_value, Line};
use super::SdpError;
use crate::sip::message::is_token_char;

/// `a=<name>` or `a=<name>:<value>` (RFC 8866 §5.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    name: Bytes,
    value: Option<Bytes>,
}

impl Attribute {
    /// Splits an `a=` value at its first `:`. Never fails: any value is an attribute.
    pub fn parse(raw: &Bytes) -> Attribute {
        let (name, value) = split_at_byte(raw, b':');
        Attribute { name, value }
    }

    /// A value attribute `name:value`; the name must be a token and the value free of CR, LF
    /// and NUL (RFC 8866 §9 `att-field`, `att-value`).
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<Attribute, SdpError> {
        let value = value.into();
        if !valid_value(&value) {
            return Err(SdpError::InvalidValue);
        }
        Ok(Attribute {
            name: checked_name(name.into())?,
            value: Some(value),
        })
    }

    /// A property attribute without value, such as `rtcp-mux` or `sendonly`.
    pub fn flag(name: impl Into<Bytes>) -> Result<Attribute, SdpError> {
        Ok(Attribute {
            name: checked_name(name.into())?,
            value: None,
        })
    }

    /// An attribute built by this module from parts known to be valid.
    pub(crate) fn known(name: &'static str, value: Option<Bytes>) -> Attribute {
        Attribute {
            name: Bytes::from_static(name.as_bytes()),
            value,
        }
    }

    /// The name (`att-field`).
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// The value after `:`, `None` for a property attribute.
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// Whether the attribute is called `name` (ASCII case-insensitively).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The `a=` line value: `name` or `name:value`.
    pub fn to_bytes(&self) -> Bytes {
        match &self.value {
            None => self.name.clone(),
            Some(v) => {
                let mut out = BytesMut::with_capacity(self.name.len() + 1 + v.len());
                out.extend_from_slice(&self.name);
                out.extend_from_slice(b":");
                out.extend_from_slice(v);
                out.freeze()
            }
        }
    }

    /// The `a=` line.
    pub(crate) fn into_line(self) -> Line {
        Line::known(b'a', self.to_bytes())
    }
}

fn checked_name(name: Bytes) -> Result<Bytes, SdpError> {
    if name.is_empty() || !name.iter().all(|&c| is_token_char(c)) {
        return Err(SdpError::InvalidValue);
    }
    Ok(name)
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`
/// (RFC 8866 §6.6): what a dynamic RTP payload type means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type (0-127).
    pub payload_type: u8,
    /// The encoding name, as written (`PCMU`, `opus`, `telephone-event`, ...).
    pub encoding: Bytes,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The encoding parameters: the channel count for audio.
    pub params: Option<Bytes>,
}

impl RtpMap {
    /// Parses an `rtpmap` value; `None` when it does not follow the grammar.
    pub fn parse(value: &Bytes) -> Option<RtpMap> {
        let mut f = fields(value);
        let (Some(pt), Some(enc), None) = (f.next(), f.next(), f.next()) else {
            return None;
        };
        let (encoding, rest) = split_at_byte(&enc, b'/');
        let (rate, params) = split_at_byte(&rest?, b'/');
        Some(RtpMap {
            payload_type: decimal::<u8>(&pt).filter(|&p| p < 128)?,
            encoding: Some(encoding).filter(|e| !e.is_empty())?,
            clock_rate: decimal(&rate)?,
            params,
        })
    }

    /// The channel count: the encoding parameters, 1 when absent (RFC 8866 §6.6).
    pub fn channels(&self) -> u16 {
        self.params.as_ref().and_then(|p| decimal(p)).unwrap_or(1)
    }

    /// The attribute value.
    pub fn to_bytes(&self) -> Bytes {
        let mut s = format!("{} ", self.payload_type).into_bytes();
        s.extend_from_slice(&self.encoding);
        s.extend_from_slice(format!("/{}", self.clock_rate).as_bytes());
        if let Some(p) = &self.params {
            s.push(b'/');
            s.extend_from_slice(p);
        }
        Bytes::from(s)
    }
}

/// `a=fmtp:<format> <format specific parameters>` (RFC 8866 §6.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The format (payload type) the parameters apply to.
    pub format: Bytes,
    /// The parameters, as written.
    pub params: Bytes,
}

impl Fmtp {
    /// Splits an `fmtp` value at its first space; `None` without a format.
    pub fn parse(value: &Bytes) -> Option<Fmtp> {
        let (format, params) = split_field(value);
        (!format.is_empty()).then_some(Fmtp { format, params })
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605 §2.1): where RTCP goes when it
/// is not on the RTP port + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's connection address.
    pub connection: Option<Connection>,
}

impl Rtcp {
    /// Parses an `rtcp` value; `None` when it does not follow the grammar.
    pub fn parse(value: &Bytes) -> Option<Rtcp> {
        let (port, rest) = split_field(value);
        let connection = if rest.is_empty() {
            None
        } else {
            Some(Connection::parse(&rest).ok()?)
        };
        Some(Rtcp {
            port: decimal(&port)?,
            connection,
        })
    }

    /// `rtcp:<port>` or `rtcp:<port> IN IP4|IP6 <ip>`.
    pub fn new(port: u16, ip: Option<IpAddr>) -> Rtcp {
        Rtcp {
            port,
            connection: ip.map(Connection::from_ip),
        }
    }

    /// The attribute.
    pub fn to_attribute(&self) -> Attribute {
        let mut v = self.port.to_string().into_bytes();
        if let Some(c) = &self.connection {
            v.push(b' ');
            v.extend_from_slice(&c.to_bytes());
        }
        Attribute::known("rtcp", Some(Bytes::from(v)))
    }
}

/// The media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1): which way media flows,
/// seen from the side that wrote the description. Absent means `sendrecv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`: send and receive (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`: send only (e.g. a party putting the other on hold).
    SendOnly,
    /// `a=recvonly`: receive only.
    RecvOnly,
    /// `a=inactive`: neither.
    Inactive,
}

impl Direction {
    /// All four, for matching attribute names.
    pub const ALL: [Direction; 4] = [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ];

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute names, if it is a direction attribute.
    pub fn from_attribute(a: &Attribute) -> Option<Direction> {
        Direction::ALL.into_iter().find(|d| a.is(d.as_str()))
    }

    /// The direction an answer gives to a stream offered with this one (RFC 3264 §6.1):
    /// sendonly ↔ recvonly, sendrecv and inactive unchanged.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether the writer of the description sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of the description receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The attribute.
    pub fn to_attribute(self) -> Attribute {
        Attribute::known(self.as_str(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn attribute_splits_at_the_first_colon() {
        let a = Attribute::parse(&b("path:msrp://10.0.0.5:9/s7Kd93jx;tcp"));
        assert!(a.is("PATH"));
        assert_eq!(a.value().unwrap(), "msrp://10.0.0.5:9/s7Kd93jx;tcp");
        assert_eq!(a.to_bytes(), "path:msrp://10.0.0.5:9/s7Kd93jx;tcp");
        let f = Attribute::parse(&b("rtcp-mux"));
        assert_eq!((f.name().as_ref(), f.value()), (&b"rtcp-mux"[..], None));
        assert_eq!(Attribute::parse(&b("x:")).value().unwrap(), "");
    }

    #[test]
    fn new_attributes_are_checked() {
        assert_eq!(
            Attribute::new("ptime", "20").unwrap().to_bytes(),
            "ptime:20"
        );
        assert_eq!(Attribute::flag("rtcp-mux").unwrap().to_bytes(), "rtcp-mux");
        assert_eq!(Attribute::flag("a b"), Err(SdpError::InvalidValue));
        assert_eq!(Attribute::flag(""), Err(SdpError::InvalidValue));
        assert_eq!(Attribute::new("x", "1\r\n"), Err(SdpError::InvalidValue));
    }

    #[test]
    fn rtpmap_grammar() {
        let r = RtpMap::parse(&b("96 opus/48000/2")).unwrap();
        assert_eq!(
            (
                r.payload_type,
                r.encoding.as_ref(),
                r.clock_rate,
                r.channels()
            ),
            (96, &b"opus"[..], 48000, 2)
        );
        assert_eq!(r.to_bytes(), "96 opus/48000/2");
        assert_eq!(RtpMap::parse(&b("0 PCMU/8000")).unwrap().channels(), 1);
        for bad in [
            "31 LPC",
            "128 X/8000",
            "x PCMU/8000",
            "0 /8000",
            "0 PCMU/",
            "0",
        ] {
            assert_eq!(RtpMap::parse(&b(bad)), None, "{bad}");
        }
    }

    #[test]
    fn fmtp_and_rtcp() {
        let f = Fmtp::parse(&b("100 packetization-mode=0; profile-level-id=42e01f")).unwrap();
        assert_eq!(f.format, "100");
        assert_eq!(f.params, "packetization-mode=0; profile-level-id=42e01f");
        let r = Rtcp::parse(&b("53021 IN IP6 2001:db8::5")).unwrap();
        assert_eq!(r.port, 53021);
        assert_eq!(
            r.connection.unwrap().ip(),
            Some("2001:db8::5".parse().unwrap())
        );
        assert_eq!(Rtcp::parse(&b("9")), Some(Rtcp::new(9, None)));
        assert_eq!(Rtcp::parse(&b("9 IN IP4")), None);
        assert_eq!(Rtcp::parse(&b("x")), None);
        let ip = "192.0.2.7".parse().ok();
        assert_eq!(
            Rtcp::new(5001, ip).to_attribute().to_bytes(),
            "rtcp:5001 IN IP4 192.0.2.7"
        );
    }

    #[test]
    fn directions_answer_and_flow() {
        use Direction::*;
        assert_eq!(
            [SendRecv, SendOnly, RecvOnly, Inactive].map(Direction::answer),
            [SendRecv, RecvOnly, SendOnly, Inactive]
        );
        assert!(SendOnly.sends() && !SendOnly.receives());
        assert!(!Inactive.sends() && !Inactive.receives());
        let a = Attribute::parse(&b("RecvOnly"));
        assert_eq!(Direction::from_attribute(&a), Some(RecvOnly));
        assert_eq!(Direction::from_attribute(&Attribute::parse(&b("x"))), None);
    }
}
