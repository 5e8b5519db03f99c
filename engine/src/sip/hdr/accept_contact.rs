//! Accept-Contact and Reject-Contact (RFC 3841 §10): caller preferences as feature parameters,
//! e.g. `a: *;+g.oma.sip-im;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg";explicit;require`.

use bytes::Bytes;

use super::contact::is_feature_tag;
use super::{HeaderError, Params};
use crate::sip::message::trim;

/// One Accept-Contact (or Reject-Contact) value: `*` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptContact {
    /// Every parameter in order: feature parameters, `require`, `explicit`, others.
    pub params: Params,
}

/// A Reject-Contact value has the same shape (RFC 3841 §10: `rc-value`).
pub type RejectContact = AcceptContact;

impl AcceptContact {
    /// Parses `"*" *(SEMI ac-params)`; errors name `header`.
    pub fn parse(raw: &Bytes, header: &'static str) -> Result<AcceptContact, HeaderError> {
        let v = trim(raw);
        if v.first() != Some(&b'*') {
            return Err(HeaderError::Malformed(header));
        }
        let params = Params::parse_strict(&v.slice(1..), header)?;
        Ok(AcceptContact { params })
    }

    /// The `require` flag: a contact lacking the features must not be chosen (§7.2.4).
    pub fn require(&self) -> bool {
        self.params.has("require")
    }

    /// The `explicit` flag: only contacts that *explicitly* list the features match (§7.2.4).
    pub fn explicit(&self) -> bool {
        self.params.has("explicit")
    }

    /// The feature parameters (`+`-prefixed or RFC 3840 base tags), value quotes kept.
    pub fn features(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        self.params.iter().filter(|(n, _)| is_feature_tag(n))
    }

    /// Whether feature `name` (e.g. `+g.oma.sip-im`) is listed.
    pub fn has_feature(&self, name: &str) -> bool {
        is_feature_tag(name.as_bytes()) && self.params.has(name)
    }

    /// The value of feature `name` with its quotes removed (`None` if absent or valueless).
    pub fn feature_value(&self, name: &str) -> Option<Bytes> {
        self.params.unquoted(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caller_prefs() {
        let a = AcceptContact::parse(
            &Bytes::from_static(
                b"*;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\";+g.oma.sip-im;explicit;require",
            ),
            "Accept-Contact",
        )
        .unwrap();
        assert!(a.require());
        assert!(a.explicit());
        assert!(a.has_feature("+g.oma.sip-im"));
        assert!(!a.has_feature("explicit"));
        assert_eq!(
            &a.feature_value("+g.3gpp.icsi-ref").unwrap()[..],
            b"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"
        );
        assert_eq!(a.features().count(), 2);
        let plain = AcceptContact::parse(&Bytes::from_static(b"*"), "Accept-Contact").unwrap();
        assert!(plain.params.is_empty() && !plain.require());
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &b""[..],
            b"+g.cpm",
            b"*;",
            b"*;;x",
            b"<sip:a@b>;+g.cpm",
            b"*x",
        ] {
            assert_eq!(
                AcceptContact::parse(&Bytes::copy_from_slice(bad), "Accept-Contact"),
                Err(HeaderError::Malformed("Accept-Contact")),
                "{bad:?}"
            );
        }
    }
}
