//! The Contact header (RFC 3261 §20.10, §10.2; GRUU/outbound parameters RFC 5626 §4.1,
//! feature tags RFC 3840 §9).
//!
//! `Contact: "Bob" <sip:bob@192.0.2.4>;expires=3600;q=0.7;+sip.instance="<urn:uuid:...>";reg-id=1`
//! or `Contact: *` (remove every binding, with `Expires: 0`).

use bytes::Bytes;

use super::{parse_delta_seconds, HeaderError, NameAddr, Params};
use crate::sip::message::trim;
use crate::sip::uri::Uri;

/// One Contact value.
// The wildcard is rare and short-lived; boxing the address would cost an allocation per
// contact on every REGISTER.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `*`: every binding of the address-of-record (REGISTER only, RFC 3261 §10.2.2).
    Wildcard,
    /// A contact address with its parameters.
    Addr(NameAddr),
}

/// The RFC 3840 §9 base feature tags, which carry no `+` prefix.
const BASE_FEATURE_TAGS: [&str; 20] = [
    "audio",
    "automata",
    "class",
    "duplex",
    "data",
    "control",
    "mobility",
    "description",
    "events",
    "priority",
    "methods",
    "schemes",
    "application",
    "video",
    "language",
    "type",
    "isfocus",
    "actor",
    "text",
    "extensions",
];

impl Contact {
    /// Parses one Contact value (one element of the comma-separated list).
    pub fn parse(raw: &Bytes) -> Result<Contact, HeaderError> {
        let v = trim(raw);
        if &v[..] == b"*" {
            return Ok(Contact::Wildcard);
        }
        let addr = NameAddr::parse(&v, "Contact")?;
        let c = Contact::Addr(addr);
        // Check the values the registrar reads, so a bad one is a 400 and not a surprise later.
        let params = c.params().ok_or(HeaderError::Malformed("Contact"))?;
        if let Some(e) = params.get("expires") {
            e.and_then(|e| parse_delta_seconds(e))
                .ok_or(HeaderError::Malformed("Contact"))?;
        }
        if let Some(q) = params.get("q") {
            q.and_then(|q| parse_qvalue(q))
                .ok_or(HeaderError::Malformed("Contact"))?;
        }
        Ok(c)
    }

    /// Whether this is the `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Contact::Wildcard)
    }

    /// The address, unless this is the wildcard.
    pub fn addr(&self) -> Option<&NameAddr> {
        match self {
            Contact::Addr(a) => Some(a),
            Contact::Wildcard => None,
        }
    }

    /// The contact URI.
    pub fn uri(&self) -> Option<&Uri> {
        self.addr().map(|a| &a.uri)
    }

    /// The header parameters.
    pub fn params(&self) -> Option<&Params> {
        self.addr().map(|a| &a.params)
    }

    /// The `expires` parameter in seconds (saturating at 2^32-1, see [`parse_delta_seconds`]).
    pub fn expires(&self) -> Option<u32> {
        self.params()?
            .value("expires")
            .and_then(|v| parse_delta_seconds(v))
    }

    /// The `q` parameter in thousandths (0..=1000): `q=0.7` is 700.
    pub fn q(&self) -> Option<u16> {
        self.params()?.value("q").and_then(|v| parse_qvalue(v))
    }

    /// The `+sip.instance` parameter with its quotes removed, e.g. `<urn:uuid:...>`
    /// (RFC 5626 §4.1).
    pub fn instance(&self) -> Option<Bytes> {
        self.params()?.unquoted("+sip.instance")
    }

    /// The `reg-id` parameter (RFC 5626 §4.2).
    pub fn reg_id(&self) -> Option<u32> {
        let v = self.params()?.value("reg-id")?;
        std::str::from_utf8(v).ok()?.parse().ok()
    }

    /// The feature parameters (RFC 3840 §9): `+`-prefixed tags and the base tags, as
    /// (name, value) with the value's quotes kept.
    pub fn feature_params(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        self.params()
            .into_iter()
            .flat_map(|p| p.iter())
            .filter(|(n, _)| is_feature_tag(n))
    }
}

/// Whether a parameter name is a feature tag (RFC 3840 §9: `+other-tags` or a base tag).
pub(crate) fn is_feature_tag(name: &[u8]) -> bool {
    name.first() == Some(&b'+')
        || BASE_FEATURE_TAGS
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t.as_bytes()))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
pub fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |a, &c| a * 10 + u16::from(c - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &'static [u8]) -> Result<Contact, HeaderError> {
        Contact::parse(&Bytes::from_static(s))
    }

    #[test]
    fn contact_params() {
        let k = c(b"<sip:alice@192.0.2.4;ob>;expires=3600;q=0.7;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;+g.oma.sip-im;audio")
            .unwrap();
        assert_eq!(k.expires(), Some(3600));
        assert_eq!(k.q(), Some(700));
        assert_eq!(
            &k.instance().unwrap()[..],
            b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        );
        assert_eq!(k.reg_id(), Some(1));
        let tags: Vec<_> = k.feature_params().map(|(n, _)| n.clone()).collect();
        assert_eq!(tags.len(), 3);
        assert_eq!(&tags[1][..], b"+g.oma.sip-im");
        assert!(k.uri().unwrap().as_sip().unwrap().params.has("ob"));
        assert!(!k.is_wildcard());
    }

    #[test]
    fn wildcard_and_errors() {
        assert!(c(b" * ").unwrap().is_wildcard());
        assert_eq!(c(b"*").unwrap().expires(), None);
        assert!(c(b"*;expires=0").is_err());
        assert!(c(b"<sip:a@b>;q=1.5").is_err());
        assert!(c(b"<sip:a@b>;q=0.1234").is_err());
        assert!(c(b"<sip:a@b>;expires=soon").is_err());
        assert!(c(b"<sip:a@b>;expires").is_err());
        assert!(c(b"\"Joe\" <sip:joe@example.org>;;;;").is_err());
        // Overlarge expires saturate (RFC 4475 §3.1.2.4 leaves the choice to the element).
        assert_eq!(
            c(b"<sip:a@b>;expires=280297596632815").unwrap().expires(),
            Some(u32::MAX)
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.33"), Some(330));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b""), None);
        assert_eq!(parse_qvalue(b"2"), None);
        assert_eq!(parse_qvalue(b"0.x"), None);
    }
}
