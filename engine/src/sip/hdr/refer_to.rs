//! Refer-To (RFC 3515 §2.1) and the `method` URI parameter it may carry (§2.4.2).
//! Referred-By (RFC 3892 §3) is a plain [`NameAddr`].

use bytes::Bytes;

use super::{HeaderError, NameAddr};
use crate::sip::message::Method;
use crate::sip::uri::unescape;

/// A Refer-To value: the URI to contact, with its header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The address (display name, URI, parameters).
    pub addr: NameAddr,
}

impl ReferTo {
    /// Parses `( name-addr / addr-spec ) *(SEMI generic-param)`.
    pub fn parse(raw: &Bytes) -> Result<ReferTo, HeaderError> {
        NameAddr::parse(raw, "Refer-To").map(|addr| ReferTo { addr })
    }

    /// The method the referee should use: the SIP URI's `method` parameter. Absent means
    /// INVITE for a SIP URI (RFC 3515 §2.4.2, RFC 3261 §19.1.1).
    pub fn method(&self) -> Option<Method> {
        let m = self.addr.uri.as_sip()?.params.value("method")?;
        Some(Method::from_bytes(&Bytes::copy_from_slice(&unescape(m))))
    }

    /// An embedded header of the URI (e.g. `Replaces`), decoded.
    pub fn uri_header(&self, name: &str) -> Option<Bytes> {
        let sip = self.addr.uri.as_sip()?;
        sip.header_fields()
            .find(|(n, _)| unescape(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| Bytes::copy_from_slice(&unescape(&v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_method_and_headers() {
        let r = ReferTo::parse(&Bytes::from_static(
            b"<sip:conf@example.com;method=BYE?Replaces=12%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        ))
        .unwrap();
        assert_eq!(r.method(), Some(Method::Bye));
        assert_eq!(
            &r.uri_header("replaces").unwrap()[..],
            b"12@h;to-tag=1;from-tag=2"
        );
        let plain = ReferTo::parse(&Bytes::from_static(b"sip:bob@example.com")).unwrap();
        assert_eq!(plain.method(), None);
        assert!(plain.uri_header("Replaces").is_none());
        assert_eq!(
            ReferTo::parse(&Bytes::from_static(b"<sip:a@b")),
            Err(HeaderError::Malformed("Refer-To"))
        );
    }
}
