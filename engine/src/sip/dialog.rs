//! Dialogs (RFC 3261 §12): the state two user agents share between an INVITE and its BYE, and
//! the requests built from it.
//!
//! A [`Dialog`] is created by the UAS from a request and the tagged response it sends
//! (§12.1.1), or by the UAC from its request and a tagged response it receives (§12.1.2): a 1xx
//! makes an *early* dialog, a 2xx a *confirmed* one. Requests inside it ([`Dialog::request`],
//! [`Dialog::ack`]) follow §12.2.1.1; requests received in it are checked with
//! [`Dialog::check_request`] (§12.2.2). Finding the dialog of a request (and answering 481 when
//! there is none) is the caller's business: [`DialogId::of_request`] gives the key.
//!
//! Header values are kept as `Bytes` handles of the messages the dialog was made from; the From
//! and To of our requests are those values unchanged (display name and parameters included).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::builder::tag_of;
use super::hdr::{HeaderError, NameAddr};
use super::message::{trim, Unquoted};
use super::{HeaderName, Headers, Message, Method, StartLine};

const SIP_2_0: Bytes = Bytes::from_static(b"SIP/2.0");

/// What identifies a dialog (RFC 3261 §12): Call-ID, local tag and remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID (compared byte for byte, §8.1.1.4).
    pub call_id: Bytes,
    /// Our tag: the From tag of our requests, the To tag of the requests we receive.
    pub local_tag: Bytes,
    /// The peer's tag (empty for an RFC 2543 peer that sent no From tag).
    pub remote_tag: Bytes,
}

impl DialogId {
    /// The id of the dialog a received request belongs to, as its UAS sees it (§12.2.2): local
    /// tag = To tag, remote tag = From tag. `None` when the To has no tag (not in a dialog).
    pub fn of_request(req: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id()?.clone(),
            local_tag: req.headers.get(&HeaderName::To).and_then(tag_of)?,
            remote_tag: req
                .headers
                .get(&HeaderName::From)
                .and_then(tag_of)
                .unwrap_or_default(),
        })
    }

    /// The id of the dialog a received response creates or belongs to, as the UAC sees it
    /// (§12.1.2): local tag = From tag, remote tag = To tag. `None` without a To tag.
    pub fn of_response(resp: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: resp.call_id()?.clone(),
            local_tag: resp
                .headers
                .get(&HeaderName::From)
                .and_then(tag_of)
                .unwrap_or_default(),
            remote_tag: resp.headers.get(&HeaderName::To).and_then(tag_of)?,
        })
    }
}

/// The two states of a dialog (§12): a 1xx with a tag makes it early, a 2xx confirms it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a provisional response.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// Which side of the dialog-creating request we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We sent the request (§12.1.2).
    Uac,
    /// We received it (§12.1.1).
    Uas,
}

/// Why a dialog could not be created, or a request was refused by it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    Header(HeaderError),
    /// The response that would create the dialog has no To tag.
    NoToTag,
    /// A request whose CSeq is lower than the last one received (§12.2.2).
    OutOfOrder {
        /// The request's CSeq number.
        cseq: u32,
        /// The highest number received before.
        last: u32,
    },
}

impl DialogError {
    /// The status to answer a request refused for this reason (§12.2.2: 500 out of order).
    pub fn status(&self) -> u16 {
        match self {
            DialogError::OutOfOrder { .. } => 500,
            DialogError::Header(_) | DialogError::NoToTag => 400,
        }
    }

    /// A reason phrase naming the problem.
    pub fn reason(&self) -> String {
        match self {
            DialogError::Header(e) => e.reason(),
            DialogError::NoToTag => "Missing To Tag".into(),
            DialogError::OutOfOrder { .. } => "CSeq Out Of Order".into(),
        }
    }
}

impl From<HeaderError> for DialogError {
    fn from(e: HeaderError) -> DialogError {
        DialogError::Header(e)
    }
}

impl fmt::Display for DialogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for DialogError {}

/// One dialog (RFC 3261 §12): id, sequence numbers, URIs, remote target and route set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    role: Role,
    local_seq: Option<u32>,
    remote_seq: Option<u32>,
    /// Our From value (name-addr with our tag), as in the dialog-creating message.
    local: Bytes,
    /// The peer's value, our To (with the remote tag).
    remote: Bytes,
    remote_target: Bytes,
    route_set: Vec<Bytes>,
    local_contact: Bytes,
}

impl Dialog {
    /// The dialog a UAS creates when it sends the tagged response `resp` to `req` (§12.1.1):
    /// route set = Record-Route of the request in order, remote target = its Contact, remote
    /// sequence number = its CSeq, local sequence number empty. `local_contact` is the Contact
    /// value we put in our requests and responses.
    pub fn uas(req: &Message, resp: &Message, local_contact: Bytes) -> Result<Dialog, DialogError> {
        let local = resp
            .headers
            .get(&HeaderName::To)
            .ok_or(HeaderError::Missing("To"))?
            .clone();
        let local_tag = tag_of(&local).ok_or(DialogError::NoToTag)?;
        let remote = req
            .headers
            .get(&HeaderName::From)
            .ok_or(HeaderError::Missing("From"))?
            .clone();
        let id = DialogId {
            call_id: req
                .call_id()
                .ok_or(HeaderError::Missing("Call-ID"))?
                .clone(),
            local_tag,
            remote_tag: tag_of(&remote).unwrap_or_default(),
        };
        let remote_target = match contact_uri(req)? {
            Some(uri) => uri,
            None => addr_spec(&remote, "From")?,
        };
        Ok(Dialog {
            id,
            state: state_of(resp),
            role: Role::Uas,
            local_seq: None,
            remote_seq: Some(req.cseq()?.seq),
            local,
            remote,
            remote_target,
            route_set: req.headers.values(&HeaderName::RecordRoute).collect(),
            local_contact,
        })
    }

    /// The dialog a UAC creates from its request `req` and a response `resp` with a To tag
    /// (§12.1.2): route set = Record-Route of the response reversed, remote target = its
    /// Contact, local sequence number = the request's CSeq, remote one empty. A 1xx makes it
    /// early ([`Dialog::confirm`] on the 2xx), a 2xx confirmed.
    pub fn uac(req: &Message, resp: &Message) -> Result<Dialog, DialogError> {
        let local = req
            .headers
            .get(&HeaderName::From)
            .ok_or(HeaderError::Missing("From"))?
            .clone();
        let remote = resp
            .headers
            .get(&HeaderName::To)
            .ok_or(HeaderError::Missing("To"))?
            .clone();
        let id = DialogId {
            call_id: req
                .call_id()
                .ok_or(HeaderError::Missing("Call-ID"))?
                .clone(),
            local_tag: tag_of(&local).unwrap_or_default(),
            remote_tag: tag_of(&remote).ok_or(DialogError::NoToTag)?,
        };
        let remote_target = match contact_uri(resp)? {
            Some(uri) => uri,
            None => req.request_uri().cloned().unwrap_or_default(),
        };
        Ok(Dialog {
            id,
            state: state_of(resp),
            role: Role::Uac,
            local_seq: Some(req.cseq()?.seq),
            remote_seq: None,
            local,
            remote,
            remote_target,
            route_set: reversed_record_route(resp),
            local_contact: req
                .headers
                .get(&HeaderName::Contact)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The dialog's id.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Whether we created it as UAC or UAS.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The CSeq number of the last request we sent in it (`None` before the first).
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// The CSeq number of the last request received in it.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// Our From value (URI, parameters and our tag).
    pub fn local_uri(&self) -> &Bytes {
        &self.local
    }

    /// The peer's value, which is the To of our requests (with the remote tag).
    pub fn remote_uri(&self) -> &Bytes {
        &self.remote
    }

    /// Where our requests go: the peer's last Contact URI (§12.2.1.1).
    pub fn remote_target(&self) -> &Bytes {
        &self.remote_target
    }

    /// The Route values of our requests, in order (before strict-router rewriting).
    pub fn route_set(&self) -> &[Bytes] {
        &self.route_set
    }

    /// The Contact value of our requests.
    pub fn local_contact(&self) -> &Bytes {
        &self.local_contact
    }

    /// Whether a received request belongs to this dialog (Call-ID and both tags, §12.2.2).
    pub fn matches_request(&self, req: &Message) -> bool {
        DialogId::of_request(req).is_some_and(|id| id == self.id)
    }

    /// Whether a response to one of our requests belongs to this dialog (§12.1.2 ids).
    pub fn matches_response(&self, resp: &Message) -> bool {
        DialogId::of_response(resp).is_some_and(|id| id == self.id)
    }

    /// The 2xx `resp` confirms the dialog. As UAC the route set is recomputed from it
    /// (§13.2.2.4) and its Contact becomes the remote target; as UAS (our own 2xx) only the
    /// state changes.
    pub fn confirm(&mut self, resp: &Message) {
        if self.role == Role::Uac && self.state == DialogState::Early {
            self.route_set = reversed_record_route(resp);
            self.refresh_target(resp);
        }
        self.state = DialogState::Confirmed;
    }

    /// Target refresh (§12.2): the Contact of a received target refresh request, of its 2xx,
    /// or of a provisional response in an early dialog, becomes the remote target. A message
    /// without a usable Contact changes nothing.
    pub fn refresh_target(&mut self, msg: &Message) {
        if let Ok(Some(uri)) = contact_uri(msg) {
            self.remote_target = uri;
        }
    }

    /// Checks a request received in this dialog (§12.2.2): a CSeq lower than the last one is
    /// out of order (answer 500); otherwise the remote sequence number advances, and a target
    /// refresh request (INVITE, UPDATE, SUBSCRIBE, NOTIFY, REFER) replaces the remote target
    /// with its Contact. ACK and CANCEL repeat the CSeq of the request they refer to and are
    /// not checked.
    pub fn check_request(&mut self, req: &Message) -> Result<(), DialogError> {
        let cseq = req.cseq()?;
        if matches!(cseq.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        if let Some(last) = self.remote_seq {
            if cseq.seq < last {
                return Err(DialogError::OutOfOrder {
                    cseq: cseq.seq,
                    last,
                });
            }
        }
        self.remote_seq = Some(cseq.seq);
        if is_target_refresh(&cseq.method) {
            self.refresh_target(req);
        }
        Ok(())
    }

    /// A new request in the dialog (§12.2.1.1) with `via` as its top Via (carrying a fresh
    /// branch): Request-URI and Route from the remote target and route set, From/To/Call-ID of
    /// the dialog, the local CSeq number incremented (1 if it was empty), our Contact for a
    /// target refresh request, `Content-Length: 0`. For the ACK of a 2xx use [`Dialog::ack`].
    pub fn request(&mut self, method: Method, via: Bytes) -> Message {
        let seq = self.local_seq.map_or(1, |s| s.wrapping_add(1));
        self.local_seq = Some(seq);
        let contact = is_target_refresh(&method);
        self.build(method, seq, via, contact)
    }

    /// The ACK for a 2xx to the INVITE whose CSeq number was `invite_seq` (§13.2.2.4): built
    /// like any request of the dialog, with the INVITE's CSeq number and method ACK.
    pub fn ack(&self, invite_seq: u32, via: Bytes) -> Message {
        self.build(Method::Ack, invite_seq, via, false)
    }

    fn build(&self, method: Method, seq: u32, via: Bytes, contact: bool) -> Message {
        let (uri, routes) = self.request_target();
        let mut headers = Headers::new();
        headers.push(HeaderName::Via, via);
        headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        for r in routes {
            headers.push(HeaderName::Route, r);
        }
        headers.push(HeaderName::From, self.local.clone());
        headers.push(HeaderName::To, self.remote.clone());
        headers.push(HeaderName::CallId, self.id.call_id.clone());
        headers.push(HeaderName::CSeq, format!("{seq} {method}"));
        if contact && !self.local_contact.is_empty() {
            headers.push(HeaderName::Contact, self.local_contact.clone());
        }
        headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
        Message {
            start: StartLine::Request {
                method,
                uri,
                version: SIP_2_0,
            },
            headers,
            body: Bytes::new(),
        }
    }

    /// Request-URI and Route values (§12.2.1.1): with an empty route set or a loose router
    /// first (`lr`), the remote target and the route set; with a strict router first, its URI,
    /// and the rest of the route set followed by the remote target.
    fn request_target(&self) -> (Bytes, Vec<Bytes>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let first_addr = NameAddr::parse(first, "Route").ok();
        let loose = first_addr
            .as_ref()
            .is_none_or(|na| na.uri.as_sip().is_none_or(|s| s.lr()));
        if loose {
            return (self.remote_target.clone(), self.route_set.clone());
        }
        let uri = addr_spec(first, "Route").unwrap_or_else(|_| first.clone());
        let mut routes: Vec<Bytes> = self.route_set[1..].to_vec();
        let mut target = BytesMut::with_capacity(self.remote_target.len() + 2);
        target.put_u8(b'<');
        target.put_slice(&self.remote_target);
        target.put_u8(b'>');
        routes.push(target.freeze());
        (uri, routes)
    }
}

/// The methods whose Contact updates the remote target (RFC 3261 §12.2, RFC 3311 §5.1,
/// RFC 6665 §4.1.2, RFC 3515).
pub fn is_target_refresh(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// A Via value for a request we send: `SIP/2.0/UDP` (or `TCP` when `reliable`), our
/// `sent_by`, the `branch`, and `rport` (RFC 3581) so answers come back to our socket.
pub fn via_value(reliable: bool, sent_by: &str, branch: &[u8]) -> Bytes {
    let transport = if reliable { "TCP" } else { "UDP" };
    let mut out = BytesMut::with_capacity(24 + sent_by.len() + branch.len());
    out.put_slice(b"SIP/2.0/");
    out.put_slice(transport.as_bytes());
    out.put_u8(b' ');
    out.put_slice(sent_by.as_bytes());
    out.put_slice(b";branch=");
    out.put_slice(branch);
    out.put_slice(b";rport");
    out.freeze()
}

fn state_of(resp: &Message) -> DialogState {
    if resp.status().is_some_and(|c| (200..300).contains(&c)) {
        DialogState::Confirmed
    } else {
        DialogState::Early
    }
}

fn reversed_record_route(resp: &Message) -> Vec<Bytes> {
    let mut routes: Vec<Bytes> = resp.headers.values(&HeaderName::RecordRoute).collect();
    routes.reverse();
    routes
}

/// The URI of the first Contact of `msg`, as written; `Ok(None)` when there is no Contact.
fn contact_uri(msg: &Message) -> Result<Option<Bytes>, HeaderError> {
    match msg.headers.values(&HeaderName::Contact).next() {
        Some(c) => addr_spec(&c, "Contact").map(Some),
        None => Ok(None),
    }
}

/// The URI of a name-addr or addr-spec value (the text inside `<>`, or before the header
/// parameters), as a slice of it. The value must parse as a name-addr.
fn addr_spec(value: &Bytes, header: &'static str) -> Result<Bytes, HeaderError> {
    let na = NameAddr::parse(value, header)?;
    let v = trim(value);
    if na.bracketed {
        let lt = Unquoted::new(&v, b'<', false)
            .next()
            .ok_or(HeaderError::Malformed(header))?;
        let gt = v[lt..]
            .iter()
            .position(|&c| c == b'>')
            .ok_or(HeaderError::Malformed(header))?
            + lt;
        return Ok(trim(&v.slice(lt + 1..gt)));
    }
    let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    Ok(trim(&v.slice(..end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::builder::response_to_with_tag;
    use crate::sip::parse;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
To: Bob <sip:bob@biloxi.example>\r\n\
From: \"Alice\" <sip:alice@atlanta.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example;transport=udp>\r\n\
Content-Length: 0\r\n\r\n";

    fn invite() -> Message {
        parse(Bytes::from_static(INVITE)).unwrap()
    }

    fn ok_from_bob(req: &Message, code: u16) -> Message {
        let mut r = response_to_with_tag(req, code, "OK", Some("bobtag"));
        for rr in req.headers.get_all(&HeaderName::RecordRoute) {
            r.headers.push(HeaderName::RecordRoute, rr.clone());
        }
        r.headers.push(
            HeaderName::Contact,
            "Bob <sip:bob@192.0.2.4:5062>;expires=60",
        );
        r
    }

    fn via(branch: &str) -> Bytes {
        via_value(false, "192.0.2.1:5060", branch.as_bytes())
    }

    fn hdr<'a>(m: &'a Message, h: &HeaderName) -> &'a [u8] {
        m.headers.get(h).map(|v| &v[..]).unwrap_or(b"")
    }

    #[test]
    fn uac_dialog_from_2xx_follows_12_1_2() {
        let req = invite();
        let resp = ok_from_bob(&req, 200);
        let mut d = Dialog::uac(&req, &resp).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.role(), Role::Uac);
        assert_eq!(&d.id().call_id[..], b"a84b4c76e66710");
        assert_eq!(&d.id().local_tag[..], b"1928301774");
        assert_eq!(&d.id().remote_tag[..], b"bobtag");
        assert_eq!(d.local_seq(), Some(314159));
        assert_eq!(d.remote_seq(), None);
        assert_eq!(&d.remote_target()[..], b"sip:bob@192.0.2.4:5062");
        assert_eq!(
            d.route_set(),
            &[
                Bytes::from_static(b"<sip:p2.example;lr>"),
                Bytes::from_static(b"<sip:p1.example;lr>")
            ]
        );
        assert!(d.matches_response(&resp));

        let bye = d.request(Method::Bye, via("z9hG4bKbye1"));
        assert_eq!(bye.method(), Some(&Method::Bye));
        assert_eq!(&bye.request_uri().unwrap()[..], b"sip:bob@192.0.2.4:5062");
        let routes: Vec<_> = bye.headers.values(&HeaderName::Route).collect();
        assert_eq!(routes, d.route_set());
        assert_eq!(
            hdr(&bye, &HeaderName::From),
            b"\"Alice\" <sip:alice@atlanta.example>;tag=1928301774"
        );
        assert_eq!(
            hdr(&bye, &HeaderName::To),
            b"Bob <sip:bob@biloxi.example>;tag=bobtag"
        );
        assert_eq!(hdr(&bye, &HeaderName::CSeq), b"314160 BYE");
        assert!(bye.headers.get(&HeaderName::Contact).is_none());
        assert_eq!(
            &bye.top_via().unwrap().branch().unwrap()[..],
            b"z9hG4bKbye1"
        );
        assert_eq!(d.local_seq(), Some(314160));

        let reinvite = d.request(Method::Invite, via("z9hG4bKre"));
        assert_eq!(hdr(&reinvite, &HeaderName::CSeq), b"314161 INVITE");
        assert_eq!(
            hdr(&reinvite, &HeaderName::Contact),
            b"<sip:alice@pc33.atlanta.example;transport=udp>"
        );

        let ack = d.ack(314159, via("z9hG4bKack"));
        assert_eq!(hdr(&ack, &HeaderName::CSeq), b"314159 ACK");
        assert_eq!(&ack.request_uri().unwrap()[..], b"sip:bob@192.0.2.4:5062");
        assert_eq!(ack.headers.count(&HeaderName::Route), 2);
        // Printed and parsed back, it is the same message.
        assert_eq!(parse(ack.to_bytes()).unwrap(), ack);
    }

    #[test]
    fn early_uac_dialog_is_confirmed_by_the_2xx() {
        let req = invite();
        let mut ringing = response_to_with_tag(&req, 180, "Ringing", Some("bobtag"));
        ringing
            .headers
            .push(HeaderName::Contact, "<sip:bob@198.51.100.9>");
        let mut d = Dialog::uac(&req, &ringing).unwrap();
        assert_eq!(d.state(), DialogState::Early);
        assert!(d.route_set().is_empty());
        assert_eq!(&d.remote_target()[..], b"sip:bob@198.51.100.9");
        d.confirm(&ok_from_bob(&req, 200));
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(d.route_set().len(), 2);
        assert_eq!(&d.remote_target()[..], b"sip:bob@192.0.2.4:5062");

        let untagged = response_to_with_tag(&req, 180, "Ringing", None);
        assert_eq!(Dialog::uac(&req, &untagged), Err(DialogError::NoToTag));
    }

    #[test]
    fn uas_dialog_follows_12_1_1_and_checks_cseq() {
        let req = invite();
        let resp = response_to_with_tag(&req, 200, "OK", Some("ourtag"));
        let mut d = Dialog::uas(&req, &resp, Bytes::from_static(b"<sip:192.0.2.1:5060>")).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        assert_eq!(&d.id().local_tag[..], b"ourtag");
        assert_eq!(&d.id().remote_tag[..], b"1928301774");
        assert_eq!(d.remote_seq(), Some(314159));
        assert_eq!(d.local_seq(), None);
        assert_eq!(
            &d.remote_target()[..],
            b"sip:alice@pc33.atlanta.example;transport=udp"
        );
        // The UAS keeps the Record-Route order.
        assert_eq!(
            d.route_set(),
            &[
                Bytes::from_static(b"<sip:p1.example;lr>"),
                Bytes::from_static(b"<sip:p2.example;lr>")
            ]
        );
        // Our first request: CSeq 1, From = the To we answered with, To = their From.
        let bye = d.request(Method::Bye, via("z9hG4bKb"));
        assert_eq!(hdr(&bye, &HeaderName::CSeq), b"1 BYE");
        assert_eq!(
            hdr(&bye, &HeaderName::From),
            b"Bob <sip:bob@biloxi.example>;tag=ourtag"
        );
        assert_eq!(
            hdr(&bye, &HeaderName::To),
            b"\"Alice\" <sip:alice@atlanta.example>;tag=1928301774"
        );

        // The peer, as UAC of the same dialog, builds requests that match ours.
        let mut peer = Dialog::uac(&req, &resp).unwrap();
        let mut reinvite = peer.request(Method::Invite, via("z9hG4bKr"));
        reinvite
            .headers
            .set(HeaderName::Contact, "<sip:alice@203.0.113.5:5070>");
        assert!(d.matches_request(&reinvite));
        assert_eq!(d.check_request(&reinvite), Ok(()));
        assert_eq!(d.remote_seq(), Some(314160));
        assert_eq!(&d.remote_target()[..], b"sip:alice@203.0.113.5:5070");

        // An older CSeq is refused with 500; ACK and CANCEL are not checked.
        let mut old = reinvite.clone();
        old.headers.set(HeaderName::CSeq, "314159 OPTIONS");
        let err = d.check_request(&old).unwrap_err();
        assert_eq!(
            err,
            DialogError::OutOfOrder {
                cseq: 314159,
                last: 314160
            }
        );
        assert_eq!(err.status(), 500);
        let ack = peer.ack(314159, via("z9hG4bKa"));
        assert_eq!(d.check_request(&ack), Ok(()));
        assert_eq!(d.remote_seq(), Some(314160));

        // A request of another dialog does not match.
        let mut other = reinvite.clone();
        other
            .headers
            .set(HeaderName::From, "<sip:alice@atlanta.example>;tag=zzz");
        assert!(!d.matches_request(&other));
        assert_eq!(DialogId::of_request(&invite()), None);
    }

    #[test]
    fn strict_router_first_rewrites_the_request_uri() {
        let req = invite();
        let mut resp = response_to_with_tag(&req, 200, "OK", Some("b"));
        resp.headers
            .push(HeaderName::RecordRoute, "<sip:loose.example;lr>");
        resp.headers
            .push(HeaderName::RecordRoute, "<sip:strict.example;maddr=x>");
        resp.headers.push(HeaderName::Contact, "sip:bob@192.0.2.4");
        let mut d = Dialog::uac(&req, &resp).unwrap();
        let bye = d.request(Method::Bye, via("z9hG4bKs"));
        assert_eq!(
            &bye.request_uri().unwrap()[..],
            b"sip:strict.example;maddr=x"
        );
        let routes: Vec<_> = bye.headers.values(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            vec![
                Bytes::from_static(b"<sip:loose.example;lr>"),
                Bytes::from_static(b"<sip:bob@192.0.2.4>")
            ]
        );
    }

    #[test]
    fn missing_contact_falls_back_and_bad_headers_fail() {
        let mut req = invite();
        req.headers.remove(&HeaderName::Contact);
        let resp = response_to_with_tag(&req, 180, "Ringing", Some("t"));
        let d = Dialog::uas(&req, &resp, Bytes::new()).unwrap();
        assert_eq!(&d.remote_target()[..], b"sip:alice@atlanta.example");
        let d = Dialog::uac(&req, &resp).unwrap();
        assert_eq!(&d.remote_target()[..], b"sip:bob@biloxi.example");

        let mut bad = invite();
        bad.headers.set(HeaderName::Contact, "<sip:alice@x");
        let resp = response_to_with_tag(&bad, 200, "OK", Some("t"));
        assert_eq!(
            Dialog::uas(&bad, &resp, Bytes::new()),
            Err(DialogError::Header(HeaderError::Malformed("Contact")))
        );
        let mut no_cseq = invite();
        no_cseq.headers.remove(&HeaderName::CSeq);
        let resp = response_to_with_tag(&no_cseq, 200, "OK", Some("t"));
        assert_eq!(
            Dialog::uas(&no_cseq, &resp, Bytes::new())
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn via_value_shape() {
        assert_eq!(
            &via_value(true, "10.0.0.1:5060", b"z9hG4bK1")[..],
            b"SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1;rport"
        );
    }
}
