//! Typed views of the headers the server reads.
//!
//! Each type parses one header *value* (one element of a list header) and keeps its parts as
//! slices of that value. Typed accessors on [`Message`] find the header and
//! parse it on demand; nothing is parsed that the server does not read.
//!
//! Accessors of mandatory headers (`from()`, `to()`, `cseq()`) return
//! [`HeaderError::Missing`] when the header is absent; the others return `Ok(None)` or an
//! empty list. Single-valued headers read their first line; whether a message carries several
//! lines of one is judged by [`crate::sip::validate`].

pub mod accept_contact;
pub mod contact;
pub mod content_type;
pub mod cseq;
pub mod event;
pub mod expires;
pub mod max_forwards;
pub mod name_addr;
pub mod option_tags;
pub mod params;
pub mod refer_to;
pub mod via;

pub use accept_contact::{AcceptContact, RejectContact};
pub use contact::{parse_qvalue, Contact};
pub use content_type::ContentType;
pub use cseq::CSeq;
pub use event::Event;
pub use expires::{parse_delta_seconds, parse_expires};
pub use max_forwards::parse_max_forwards;
pub use name_addr::NameAddr;
pub use option_tags::OptionTags;
pub use params::Params;
pub use refer_to::ReferTo;
pub use via::Via;

use bytes::Bytes;

use super::{HeaderName, Message};

/// Why a header value could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is required here but absent.
    Missing(&'static str),
    /// The header is present but its value does not follow the grammar.
    Malformed(&'static str),
}

impl HeaderError {
    /// A reason phrase naming the problem, for a 400 response.
    pub fn reason(&self) -> String {
        match self {
            HeaderError::Missing(h) => format!("Missing {h} Header"),
            HeaderError::Malformed(h) => format!("Malformed {h} Header"),
        }
    }
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for HeaderError {}

impl Message {
    /// The topmost Via (the one a response is routed by, and the transaction key).
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let v = self
            .headers
            .values(&HeaderName::Via)
            .next()
            .ok_or(HeaderError::Missing("Via"))?;
        Via::parse(&v)
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        self.headers
            .values(&HeaderName::Via)
            .map(|v| Via::parse(&v))
            .collect()
    }

    /// The From header (RFC 3261 §20.20).
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        let v = self
            .headers
            .get(&HeaderName::From)
            .ok_or(HeaderError::Missing("From"))?;
        NameAddr::parse(v, "From")
    }

    /// The To header (RFC 3261 §20.39).
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        let v = self
            .headers
            .get(&HeaderName::To)
            .ok_or(HeaderError::Missing("To"))?;
        NameAddr::parse(v, "To")
    }

    /// The CSeq header (RFC 3261 §20.16).
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        let v = self
            .headers
            .get(&HeaderName::CSeq)
            .ok_or(HeaderError::Missing("CSeq"))?;
        CSeq::parse(v)
    }

    /// Max-Forwards (RFC 3261 §20.22), `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.headers
            .get(&HeaderName::MaxForwards)
            .map(|v| parse_max_forwards(v))
            .transpose()
    }

    /// Every Contact value in order (RFC 3261 §20.10). A `*` must stand alone.
    pub fn contacts(&self) -> Result<Vec<Contact>, HeaderError> {
        let contacts = self
            .headers
            .values(&HeaderName::Contact)
            .map(|v| Contact::parse(&v))
            .collect::<Result<Vec<_>, _>>()?;
        if contacts.len() > 1 && contacts.iter().any(Contact::is_wildcard) {
            return Err(HeaderError::Malformed("Contact"));
        }
        Ok(contacts)
    }

    /// Expires in seconds (RFC 3261 §20.19), `None` when absent.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        self.single(HeaderName::Expires, |v| parse_expires(v, "Expires"))
    }

    /// Min-Expires in seconds (RFC 3261 §20.23), `None` when absent.
    pub fn min_expires(&self) -> Result<Option<u32>, HeaderError> {
        self.single(HeaderName::MinExpires, |v| parse_expires(v, "Min-Expires"))
    }

    /// Content-Type (RFC 3261 §20.15), `None` when absent.
    pub fn content_type(&self) -> Result<Option<ContentType>, HeaderError> {
        self.single(HeaderName::ContentType, ContentType::parse)
    }

    /// Require option tags (RFC 3261 §20.32), empty when absent.
    pub fn require(&self) -> Result<OptionTags, HeaderError> {
        OptionTags::parse(self.headers.values(&HeaderName::Require), "Require")
    }

    /// Proxy-Require option tags (RFC 3261 §20.29), empty when absent.
    pub fn proxy_require(&self) -> Result<OptionTags, HeaderError> {
        OptionTags::parse(
            self.headers.values(&HeaderName::ProxyRequire),
            "Proxy-Require",
        )
    }

    /// Supported option tags (RFC 3261 §20.37), empty when absent.
    pub fn supported(&self) -> Result<OptionTags, HeaderError> {
        OptionTags::parse(self.headers.values(&HeaderName::Supported), "Supported")
    }

    /// Unsupported option tags (RFC 3261 §20.40), empty when absent.
    pub fn unsupported(&self) -> Result<OptionTags, HeaderError> {
        OptionTags::parse(self.headers.values(&HeaderName::Unsupported), "Unsupported")
    }

    /// Event (RFC 6665 §8.2.1), `None` when absent.
    pub fn event(&self) -> Result<Option<Event>, HeaderError> {
        self.single(HeaderName::Event, Event::parse)
    }

    /// Refer-To (RFC 3515 §2.1), `None` when absent.
    pub fn refer_to(&self) -> Result<Option<ReferTo>, HeaderError> {
        self.single(HeaderName::ReferTo, ReferTo::parse)
    }

    /// Referred-By (RFC 3892 §3), `None` when absent.
    pub fn referred_by(&self) -> Result<Option<NameAddr>, HeaderError> {
        self.single(HeaderName::ReferredBy, |v| {
            NameAddr::parse(v, "Referred-By")
        })
    }

    /// Every Accept-Contact value (RFC 3841 §10), empty when absent.
    pub fn accept_contacts(&self) -> Result<Vec<AcceptContact>, HeaderError> {
        self.headers
            .values(&HeaderName::AcceptContact)
            .map(|v| AcceptContact::parse(&v, "Accept-Contact"))
            .collect()
    }

    /// Every Reject-Contact value (RFC 3841 §10), empty when absent.
    pub fn reject_contacts(&self) -> Result<Vec<RejectContact>, HeaderError> {
        self.headers
            .values(&HeaderName::RejectContact)
            .map(|v| AcceptContact::parse(&v, "Reject-Contact"))
            .collect()
    }

    /// Every Route value, top first (RFC 3261 §20.34).
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(HeaderName::Route, "Route")
    }

    /// Every Record-Route value, top first (RFC 3261 §20.30).
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(HeaderName::RecordRoute, "Record-Route")
    }

    fn name_addrs(
        &self,
        name: HeaderName,
        label: &'static str,
    ) -> Result<Vec<NameAddr>, HeaderError> {
        self.headers
            .values(&name)
            .map(|v| NameAddr::parse(&v, label))
            .collect()
    }

    /// Parses the first line of an optional single-valued header.
    fn single<T>(
        &self,
        name: HeaderName,
        parse: impl FnOnce(&Bytes) -> Result<T, HeaderError>,
    ) -> Result<Option<T>, HeaderError> {
        self.headers.get(&name).map(parse).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse, Method};

    const REQ: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
f: \"Bob\" <sip:bob@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
m: <sip:bob@192.0.2.4;transport=tcp>;expires=7200;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n\
Contact: <sip:bob@198.51.100.2>;q=0.5\r\n\
Expires: 3600\r\n\
Require: path\r\nSupported: gruu, outbound\r\nk: 100rel\r\n\
Event: reg;id=3\r\n\
a: *;+g.oma.sip-im;explicit\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Record-Route: <sip:rr.example.com;lr>\r\n\
Refer-To: <sip:carol@example.com;method=SUBSCRIBE>\r\n\
Referred-By: <sip:alice@example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn typed_accessors() {
        let m = parse(Bytes::from_static(REQ)).unwrap();
        assert_eq!(&m.from().unwrap().tag().unwrap()[..], b"456248");
        assert!(m.to().unwrap().tag().is_none());
        assert_eq!(m.cseq().unwrap().seq, 1826);
        assert_eq!(m.cseq().unwrap().method, Method::Register);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        let contacts = m.contacts().unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].expires(), Some(7200));
        assert_eq!(contacts[0].reg_id(), Some(1));
        assert_eq!(contacts[1].q(), Some(500));
        assert_eq!(m.expires().unwrap(), Some(3600));
        assert_eq!(m.min_expires().unwrap(), None);
        assert!(m.content_type().unwrap().unwrap().is("application/sdp"));
        assert!(m.require().unwrap().contains("path"));
        assert!(m.proxy_require().unwrap().is_empty());
        assert_eq!(m.supported().unwrap().0.len(), 3);
        assert!(m.unsupported().unwrap().is_empty());
        assert_eq!(&m.event().unwrap().unwrap().id().unwrap()[..], b"3");
        assert_eq!(
            m.refer_to().unwrap().unwrap().method(),
            Some(Method::Subscribe)
        );
        assert!(m.referred_by().unwrap().is_some());
        assert!(m.accept_contacts().unwrap()[0].explicit());
        assert!(m.reject_contacts().unwrap().is_empty());
        assert_eq!(m.routes().unwrap().len(), 2);
        assert!(m.routes().unwrap()[1].uri.as_sip().unwrap().lr());
        assert_eq!(m.record_routes().unwrap().len(), 1);
        assert_eq!(m.top_via().unwrap().port, Some(5060));
    }

    #[test]
    fn missing_and_malformed() {
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b\r\nCSeq: x\r\nMax-Forwards: 300\r\nContact: *, <sip:c@d>\r\nExpires: soon\r\nRequire: a b\r\nContent-Type: text\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.from(), Err(HeaderError::Missing("From")));
        assert_eq!(m.to(), Err(HeaderError::Malformed("To")));
        assert_eq!(m.cseq(), Err(HeaderError::Malformed("CSeq")));
        assert_eq!(
            m.max_forwards(),
            Err(HeaderError::Malformed("Max-Forwards"))
        );
        assert_eq!(m.contacts(), Err(HeaderError::Malformed("Contact")));
        assert_eq!(m.expires(), Err(HeaderError::Malformed("Expires")));
        assert_eq!(m.require(), Err(HeaderError::Malformed("Require")));
        assert_eq!(
            m.content_type(),
            Err(HeaderError::Malformed("Content-Type"))
        );
        assert_eq!(m.event(), Ok(None));
        assert_eq!(m.top_via(), Err(HeaderError::Missing("Via")));
        assert_eq!(
            HeaderError::Missing("Call-ID").reason(),
            "Missing Call-ID Header"
        );
    }

    #[test]
    fn garbage_headers_never_panic() {
        let mut seed = 0xdead_beefu32;
        let alphabet = b"\"\\<>;=,* sip:@ab1.%/?\t+";
        let names = [
            "From",
            "To",
            "CSeq",
            "Max-Forwards",
            "Contact",
            "Expires",
            "Content-Type",
            "Require",
            "Event",
            "Refer-To",
            "Accept-Contact",
            "Route",
            "Via",
        ];
        for round in 0..5_000 {
            let len = (seed % 24) as usize;
            let v: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[seed as usize % alphabet.len()] as char
                })
                .collect();
            let raw = format!(
                "OPTIONS sip:a@b SIP/2.0\r\n{}: {}\r\n\r\n",
                names[round % names.len()],
                v
            );
            if let Ok(m) = parse(Bytes::from(raw)) {
                let _ = (
                    m.from(),
                    m.to(),
                    m.cseq(),
                    m.max_forwards(),
                    m.contacts(),
                    m.expires(),
                );
                let _ = (m.content_type(), m.require(), m.event(), m.refer_to());
                let _ = (m.accept_contacts(), m.routes(), m.vias());
            }
        }
    }
}
