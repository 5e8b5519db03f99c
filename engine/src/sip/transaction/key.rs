//! Matching messages to transactions: client keys (RFC 3261 §17.1.3) and server keys (§17.2.3,
//! with the RFC 2543 fallback for branches without the magic cookie).

use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::TxError;
use crate::sip::builder::tag_of;
use crate::sip::hdr::{HeaderError, Via};
use crate::sip::{HeaderName, Message, Method};

/// A response matches a client transaction when the branch of its top Via and the method of its
/// CSeq equal those of the request (§17.1.3; the method separates a CANCEL from its INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    branch: Bytes,
    method: Method,
}

impl ClientKey {
    /// The key of a request about to be sent; its top Via must carry an RFC 3261 branch.
    pub(crate) fn of_request(req: &Message, via: &Via) -> Result<ClientKey, TxError> {
        let method = req.method().ok_or(TxError::NotARequest)?.clone();
        if !via.is_rfc3261_branch() {
            return Err(TxError::MissingBranch);
        }
        let branch = via.branch().cloned().ok_or(TxError::MissingBranch)?;
        Ok(ClientKey { branch, method })
    }

    /// The key a received response names, and its top Via; `None` if it names none.
    pub(crate) fn of_response(resp: &Message) -> Option<(ClientKey, Via)> {
        let via = resp.top_via().ok()?;
        let branch = via.branch()?.clone();
        let method = resp.cseq().ok()?.method;
        Some((ClientKey { branch, method }, via))
    }
}

/// A host name or address compared without regard to case, hashed alike.
#[derive(Debug, Clone)]
pub(crate) struct Host(pub(crate) Bytes);

impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Host {}

impl Hash for Host {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for c in self.0.iter() {
            state.write_u8(c.to_ascii_lowercase());
        }
    }
}

/// The identity of a server transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ServerKey {
    /// §17.2.3: branch (with the magic cookie), sent-by of the top Via, and method (INVITE for
    /// an ACK).
    Rfc3261 {
        branch: Bytes,
        host: Host,
        port: Option<u16>,
        method: Method,
    },
    /// §17.2.3 fallback for RFC 2543 peers: Request-URI, To tag, From tag, Call-ID, CSeq number,
    /// the whole top Via, and method. The To tag of an ACK is checked apart (it carries the tag
    /// of the response, not that of the INVITE).
    Rfc2543 {
        uri: Bytes,
        to_tag: Option<Bytes>,
        from_tag: Option<Bytes>,
        call_id: Bytes,
        cseq: u32,
        top_via: Bytes,
        method: Method,
    },
}

impl ServerKey {
    /// The key of a received request, looking for a transaction of `method` (INVITE for an ACK,
    /// the INVITE for a CANCEL's target, or the request's own method).
    pub(crate) fn of_request(req: &Message, method: Method) -> Result<ServerKey, TxError> {
        let raw_via = req
            .headers
            .values(&HeaderName::Via)
            .next()
            .ok_or(HeaderError::Missing("Via"))?;
        let via = Via::parse(&raw_via)?;
        if via.is_rfc3261_branch() {
            let branch = via.branch().cloned().unwrap_or_default();
            return Ok(ServerKey::Rfc3261 {
                branch,
                host: Host(via.host),
                port: via.port,
                method,
            });
        }
        let call_id = req
            .call_id()
            .cloned()
            .ok_or(HeaderError::Missing("Call-ID"))?;
        let cseq = req.cseq()?.seq;
        let uri = req.request_uri().cloned().ok_or(TxError::NotARequest)?;
        Ok(ServerKey::Rfc2543 {
            uri,
            to_tag: req.headers.get(&HeaderName::To).and_then(tag_of),
            from_tag: req.headers.get(&HeaderName::From).and_then(tag_of),
            call_id,
            cseq,
            top_via: raw_via,
            method,
        })
    }

    /// The same key for another method.
    pub(crate) fn with_method(&self, m: Method) -> ServerKey {
        let mut k = self.clone();
        match &mut k {
            ServerKey::Rfc3261 { method, .. } | ServerKey::Rfc2543 { method, .. } => *method = m,
        }
        k
    }

    /// An RFC 2543 key with another To tag (an RFC 3261 key is returned unchanged).
    pub(crate) fn with_to_tag(&self, tag: Option<Bytes>) -> ServerKey {
        let mut k = self.clone();
        if let ServerKey::Rfc2543 { to_tag, .. } = &mut k {
            *to_tag = tag;
        }
        k
    }

    /// The To tag in an RFC 2543 key.
    pub(crate) fn to_tag(&self) -> Option<&Bytes> {
        match self {
            ServerKey::Rfc2543 { to_tag, .. } => to_tag.as_ref(),
            ServerKey::Rfc3261 { .. } => None,
        }
    }

    /// Whether this is the RFC 2543 fallback key.
    pub(crate) fn is_rfc2543(&self) -> bool {
        matches!(self, ServerKey::Rfc2543 { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn req(via: &str, to: &str) -> Message {
        let raw = format!(
            "INVITE sip:b@h SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@h>;tag=f\r\nTo: {to}\r\n\
             Call-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        parse(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn rfc3261_key_compares_host_without_case_and_keeps_port() {
        let a = ServerKey::of_request(
            &req("SIP/2.0/UDP Host.Example;branch=z9hG4bK1", "<sip:b@h>"),
            Method::Invite,
        );
        let b = ServerKey::of_request(
            &req("SIP/2.0/UDP host.example;branch=z9hG4bK1", "<sip:b@h>"),
            Method::Invite,
        );
        let c = ServerKey::of_request(
            &req("SIP/2.0/UDP host.example:5060;branch=z9hG4bK1", "<sip:b@h>"),
            Method::Invite,
        );
        let d = ServerKey::of_request(
            &req("SIP/2.0/UDP host.example;branch=z9hG4bK2", "<sip:b@h>"),
            Method::Invite,
        );
        let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
        assert_eq!(a, b);
        let mut set = std::collections::HashSet::new();
        set.insert(a.clone());
        assert!(set.contains(&b));
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, a.with_method(Method::Cancel));
        assert!(!a.is_rfc2543());
    }

    #[test]
    fn rfc2543_key_uses_dialog_fields() {
        let k = ServerKey::of_request(
            &req("SIP/2.0/UDP host;branch=old1", "<sip:b@h>"),
            Method::Invite,
        )
        .unwrap();
        assert!(k.is_rfc2543());
        assert_eq!(k.to_tag(), None);
        let k2 = ServerKey::of_request(&req("SIP/2.0/UDP host", "<sip:b@h>;tag=t"), Method::Invite)
            .unwrap();
        assert_eq!(k2.to_tag().map(|t| &t[..]), Some(&b"t"[..]));
        assert_ne!(k.with_to_tag(Some(Bytes::from_static(b"t"))), k2); // the Via differs
        let k3 = ServerKey::of_request(
            &req("SIP/2.0/UDP host;branch=old1", "<sip:b@h>;tag=t"),
            Method::Invite,
        )
        .unwrap();
        assert_eq!(k.with_to_tag(Some(Bytes::from_static(b"t"))), k3);
        let mut no_cseq = req("SIP/2.0/UDP host", "<sip:b@h>");
        no_cseq.headers.remove(&HeaderName::CSeq);
        assert_eq!(
            ServerKey::of_request(&no_cseq, Method::Invite),
            Err(TxError::Header(HeaderError::Missing("CSeq")))
        );
    }
}
