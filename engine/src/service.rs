//! The signaling manager's decision \[30\]: which controller serves a request (CPM.md §3 step 2,
//! §4), as a pure function of the message and the configuration.
//!
//! [`classify`] looks at the method, the Request-URI, the To tag, and the Event, Refer-To,
//! Accept-Contact and Contact headers; it never fails (a header it cannot read counts as absent;
//! whether the request is acceptable at all is [`crate::sip::validate`]'s call). The rules, first
//! match wins:
//!
//! 1. a response → [`ServiceType::Other`] (responses follow their transaction);
//! 2. REGISTER, or SUBSCRIBE to the `reg` event (RFC 3680) → [`ServiceType::Registration`];
//! 3. by Request-URI: the storage URI → `Storage`; an application URI →
//!    `ThirdPartyApplication`; the conference factory or a focus (local user with a focus
//!    prefix) → `Conference`; a `tel:` URI, a SIP URI with `user=phone`, an interworking domain
//!    or user prefix → `Interworking`;
//! 4. by method: OPTIONS to a local domain without user → `Options`; REFER whose Refer-To is the
//!    storage URI (`method=INVITE` starts recording, `method=BYE` stops it, CPM.md §5 fig. 12) →
//!    `Storage`, other REFER → `Session`; SUBSCRIBE/PUBLISH/NOTIFY by Event: `conference` →
//!    `Conference`, `presence`, `presence.winfo`, `xcap-diff` → `Presence`, `refer` →
//!    `Session`; MESSAGE in a dialog or to a session URI → `SessionMessage`, else
//!    `PagerMessage`; an initial INVITE asking for the large-message feature → `LargeMessage`;
//!    INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO → `Session`;
//! 5. anything else → `Other`.

use std::fmt;

use bytes::Bytes;

use crate::sip::hdr::Params;
use crate::sip::uri::{unescape, Uri, UriError};
use crate::sip::{Message, Method};

/// The service a request belongs to (CPM.md §3 step 2), naming the controller that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceType {
    /// REGISTER, and `reg` event subscriptions: the registrar (CM-1).
    Registration,
    /// A pager-mode MESSAGE (RFC 3428): the message controller \[31\].
    PagerMessage,
    /// A MESSAGE within a session: the session controller \[32\] passes it to \[31\].
    SessionMessage,
    /// An INVITE setting up an MSRP session for one large message (OMA SIMPLE IM / CPM "large
    /// message mode", feature tag `+g.oma.sip-im.large-message`): \[31\] over a session.
    LargeMessage,
    /// A 1-to-1 session: INVITE, re-INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER: \[32\].
    Session,
    /// The conference factory, a conference focus, or the `conference` event package.
    Conference,
    /// Network-side storage: requests to the storage URI, REFER to record a session: \[33\].
    Storage,
    /// A third-party application's address: the application controller \[34\].
    ThirdPartyApplication,
    /// A non-CPM system (SMS, MMS, e-mail, PSTN) through an interworking function \[19\].
    Interworking,
    /// Presence and XDM change notification: PUBLISH/SUBSCRIBE/NOTIFY for `presence`,
    /// `presence.winfo`, `xcap-diff` (PRS-1/2, CM-2).
    Presence,
    /// OPTIONS addressed to the server itself (RFC 3261 §11).
    Options,
    /// None of the above.
    Other,
}

impl ServiceType {
    /// A short lowercase name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ServiceType::Registration => "registration",
            ServiceType::PagerMessage => "pager_message",
            ServiceType::SessionMessage => "session_message",
            ServiceType::LargeMessage => "large_message",
            ServiceType::Session => "session",
            ServiceType::Conference => "conference",
            ServiceType::Storage => "storage",
            ServiceType::ThirdPartyApplication => "third_party_application",
            ServiceType::Interworking => "interworking",
            ServiceType::Presence => "presence",
            ServiceType::Options => "options",
            ServiceType::Other => "other",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the signaling manager needs to know about the services this server offers. URIs are
/// kept as canonical AORs ([`Uri::aor`]) so that parameters and host case do not matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Host names and addresses this server is responsible for, lowercase.
    pub local_domains: Vec<String>,
    /// The conference factory (ad-hoc conference creation), canonical AOR.
    pub factory: String,
    /// User-part prefixes of conference focus URIs in the local domains (e.g. `conf-`).
    pub focus_prefixes: Vec<String>,
    /// The network storage's URI, canonical AOR.
    pub storage: Option<String>,
    /// Third-party application URIs, canonical AORs.
    pub applications: Vec<String>,
    /// Domains of interworking functions (e.g. `sms.example.com`, `mail.example.com`).
    pub interworking_domains: Vec<String>,
    /// User-part (or tel number) prefixes routed to an interworking function.
    pub interworking_prefixes: Vec<String>,
    /// User-part prefixes of the URIs this server gives its sessions (its B2BUA Contact), so a
    /// MESSAGE sent to one belongs to that session.
    pub session_prefixes: Vec<String>,
    /// Methods served in this phase: the Allow header of 405 and of the OPTIONS answer.
    pub served_methods: Vec<Method>,
    /// Event packages served: the Allow-Events header of 489.
    pub served_events: Vec<String>,
}

impl ServiceConfig {
    /// A configuration for one domain: factory `sip:conf-factory@<domain>`, focus prefix
    /// `conf-`, session prefix `sess-`, no storage, applications or interworking; REGISTER and
    /// OPTIONS served.
    pub fn new(domain: &str) -> ServiceConfig {
        let domain = domain.to_ascii_lowercase();
        ServiceConfig {
            factory: format!("sip:conf-factory@{domain}"),
            local_domains: vec![domain],
            focus_prefixes: vec!["conf-".into()],
            storage: None,
            applications: Vec::new(),
            interworking_domains: Vec::new(),
            interworking_prefixes: Vec::new(),
            session_prefixes: vec!["sess-".into()],
            served_methods: vec![Method::Register, Method::Options],
            served_events: Vec::new(),
        }
    }

    /// The canonical AOR of a configured URI, for the URI fields.
    pub fn canonical(uri: &str) -> Result<String, UriError> {
        Uri::parse(&Bytes::copy_from_slice(uri.as_bytes()))?
            .aor()
            .ok_or(UriError::BadScheme)
    }

    /// Sets the conference factory URI.
    pub fn with_factory(mut self, uri: &str) -> Result<ServiceConfig, UriError> {
        self.factory = ServiceConfig::canonical(uri)?;
        Ok(self)
    }

    /// Sets the network storage URI.
    pub fn with_storage(mut self, uri: &str) -> Result<ServiceConfig, UriError> {
        self.storage = Some(ServiceConfig::canonical(uri)?);
        Ok(self)
    }

    /// Adds a third-party application URI.
    pub fn with_application(mut self, uri: &str) -> Result<ServiceConfig, UriError> {
        self.applications.push(ServiceConfig::canonical(uri)?);
        Ok(self)
    }

    /// Adds an interworking domain.
    pub fn with_interworking_domain(mut self, domain: &str) -> ServiceConfig {
        self.interworking_domains.push(domain.to_ascii_lowercase());
        self
    }

    fn is_local(&self, host: &str) -> bool {
        self.local_domains.iter().any(|d| d == host)
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The service.
    pub service: ServiceType,
    /// Whether the request carries a CPM feature tag (CPM.md §6: `+g.cpm...` in Accept-Contact
    /// or Contact, or a 3GPP ICSI of an OMA CPM service), i.e. it is a CPM request.
    pub cpm_feature_tag: bool,
    /// Whether it is sent within a dialog (the To header has a tag).
    pub in_dialog: bool,
    /// The request's method (`None` for a response).
    pub method: Option<Method>,
}

/// Decides the service of a message (rules in the module documentation).
pub fn classify(msg: &Message, cfg: &ServiceConfig) -> Classified {
    let in_dialog = msg.to().is_ok_and(|t| t.tag().is_some());
    Classified {
        service: service_of(msg, cfg, in_dialog),
        cpm_feature_tag: has_cpm_tag(msg),
        in_dialog,
        method: msg.method().cloned(),
    }
}

fn service_of(msg: &Message, cfg: &ServiceConfig, in_dialog: bool) -> ServiceType {
    let Some(method) = msg.method() else {
        return ServiceType::Other;
    };
    let event = msg.event().ok().flatten();
    let event_is = |names: &[&str]| {
        event
            .as_ref()
            .is_some_and(|e| names.iter().any(|n| e.is(n)))
    };
    if *method == Method::Register || (*method == Method::Subscribe && event_is(&["reg"])) {
        return ServiceType::Registration;
    }
    let ruri = msg.request_uri().and_then(|u| Uri::parse(u).ok());
    if let Some(t) = ruri.as_ref().and_then(|u| by_target(u, cfg)) {
        return t;
    }
    match method {
        Method::Options => match ruri.as_ref().and_then(Uri::as_sip) {
            Some(u) if u.user.is_none() && cfg.is_local(&u.host.to_lowercase()) => {
                ServiceType::Options
            }
            _ => ServiceType::Other,
        },
        Method::Refer => {
            let target = msg.refer_to().ok().flatten().and_then(|r| r.addr.uri.aor());
            if target.is_some() && target == cfg.storage {
                ServiceType::Storage
            } else {
                ServiceType::Session
            }
        }
        Method::Subscribe | Method::Publish | Method::Notify => {
            if event_is(&["conference"]) {
                ServiceType::Conference
            } else if event_is(&["presence", "presence.winfo", "xcap-diff"]) {
                ServiceType::Presence
            } else if *method == Method::Notify && event_is(&["refer"]) {
                ServiceType::Session
            } else {
                ServiceType::Other
            }
        }
        Method::Message => {
            let to_session = ruri
                .as_ref()
                .and_then(|u| local_user(u, cfg))
                .is_some_and(|user| starts_with_any(&user, &cfg.session_prefixes));
            if in_dialog || to_session {
                ServiceType::SessionMessage
            } else {
                ServiceType::PagerMessage
            }
        }
        Method::Invite if !in_dialog && wants_large_message(msg) => ServiceType::LargeMessage,
        Method::Invite
        | Method::Ack
        | Method::Bye
        | Method::Cancel
        | Method::Update
        | Method::Prack
        | Method::Info => ServiceType::Session,
        _ => ServiceType::Other,
    }
}

/// Rule 3: services recognised by the Request-URI alone.
fn by_target(uri: &Uri, cfg: &ServiceConfig) -> Option<ServiceType> {
    let aor = uri.aor();
    let is = |s: &String| aor.as_ref() == Some(s);
    if cfg.storage.as_ref().is_some_and(is) {
        return Some(ServiceType::Storage);
    }
    if cfg.applications.iter().any(is) {
        return Some(ServiceType::ThirdPartyApplication);
    }
    if is(&cfg.factory)
        || local_user(uri, cfg).is_some_and(|u| starts_with_any(&u, &cfg.focus_prefixes))
    {
        return Some(ServiceType::Conference);
    }
    let interworking = match uri {
        Uri::Tel(_) => true,
        Uri::Sip(s) => {
            let user = s
                .user
                .as_ref()
                .map(|u| unescape(u).into_owned())
                .unwrap_or_default();
            s.user_param()
                .is_some_and(|p| p.eq_ignore_ascii_case(b"phone"))
                || cfg.interworking_domains.contains(&s.host.to_lowercase())
                || (!user.is_empty() && starts_with_any(&user, &cfg.interworking_prefixes))
        }
        Uri::Other(_) => false,
    };
    interworking.then_some(ServiceType::Interworking)
}

/// The decoded user part of a SIP URI whose host is local.
fn local_user(uri: &Uri, cfg: &ServiceConfig) -> Option<Vec<u8>> {
    let s = uri.as_sip()?;
    if !cfg.is_local(&s.host.to_lowercase()) {
        return None;
    }
    s.user.as_ref().map(|u| unescape(u).into_owned())
}

fn starts_with_any(user: &[u8], prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .any(|p| !p.is_empty() && user.starts_with(p.as_bytes()))
}

/// The feature parameters of every Accept-Contact and Contact value; unreadable headers are
/// skipped.
fn feature_params(msg: &Message) -> Vec<Params> {
    let mut out: Vec<Params> = msg
        .accept_contacts()
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.params)
        .collect();
    out.extend(
        msg.contacts()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.params().cloned()),
    );
    out
}

/// The 3GPP ICSI feature tag (`+g.3gpp.icsi-ref`, RFC 3840 §9 syntax) values, decoded.
fn icsi_refs(p: &Params) -> Option<Vec<u8>> {
    p.unquoted("+g.3gpp.icsi-ref")
        .map(|v| unescape(&v).into_owned())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// CPM.md §6: `+g.cpm...` tags (`+g.cpm`, `+g.cpmnim`, `+g.cpmnopoc`), or an OMA CPM ICSI
/// (`urn:urn-7:3gpp-service.ims.icsi.oma.cpm.*`).
fn has_cpm_tag(msg: &Message) -> bool {
    feature_params(msg).iter().any(|p| {
        p.iter()
            .any(|(n, _)| n.len() >= 6 && n[..6].eq_ignore_ascii_case(b"+g.cpm"))
            || icsi_refs(p).is_some_and(|v| contains(&v, b".oma.cpm."))
    })
}

/// OMA SIMPLE IM `+g.oma.sip-im.large-message`, or the OMA CPM large-message ICSI.
fn wants_large_message(msg: &Message) -> bool {
    feature_params(msg).iter().any(|p| {
        p.has("+g.oma.sip-im.large-message")
            || icsi_refs(p).is_some_and(|v| contains(&v, b".oma.cpm.largemsg"))
    })
}

/// A final response to send while a service is not (yet) served, with the headers its status
/// requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'static str,
    /// The Allow value, for 405 (RFC 3261 §21.4.6: MUST) and the 200 to OPTIONS (§11.2).
    pub allow: Option<String>,
    /// The Allow-Events value, for 489 (RFC 6665 §8.3.2); `None` when no package is served.
    pub allow_events: Option<String>,
}

impl Answer {
    fn new(status: u16, reason: &'static str) -> Answer {
        Answer {
            status,
            reason,
            allow: None,
            allow_events: None,
        }
    }
}

impl Classified {
    /// The answer while this service is not served (RFC 3261 §21), `None` for ACK, which is
    /// never answered (§17.1.1.3). In order:
    ///
    /// | case | answer |
    /// |---|---|
    /// | unknown method | 501 Not Implemented (§21.5.2: not supported for any user) |
    /// | OPTIONS to the server | 200 OK with Allow (§11.2) |
    /// | in a dialog; CANCEL; NOTIFY; SessionMessage | 481 Call/Transaction Does Not Exist (§12.2.2, §9.2; RFC 6665 §4.1.3) |
    /// | SUBSCRIBE/PUBLISH (reg, presence, conference, other events) | 489 Bad Event with Allow-Events (RFC 6665 §8.3.2, RFC 3903 §6) |
    /// | a known method this server does not serve (INVITE, REFER, ... in this phase; REGISTER when off) | 405 Method Not Allowed with Allow (§21.4.6: the method is understood but not allowed here) |
    /// | a served method whose service is not (pager/large message, session, conference, storage, application, interworking, OPTIONS to a user) | 480 Temporarily Unavailable with a reason naming the service (§21.4.18) |
    ///
    /// 503 is avoided on purpose: RFC 3263 clients take it as "server down" and fail over.
    pub fn not_served(&self, cfg: &ServiceConfig) -> Option<Answer> {
        let method = self.method.as_ref()?;
        let allow = || {
            let names: Vec<&str> = cfg.served_methods.iter().map(Method::as_str).collect();
            names.join(", ")
        };
        let with_allow = |status, reason| Answer {
            allow: Some(allow()),
            ..Answer::new(status, reason)
        };
        Some(match (method, self.service) {
            (Method::Ack, _) => return None,
            (Method::Other(_), _) => Answer::new(501, "Not Implemented"),
            (_, ServiceType::Options) => with_allow(200, "OK"),
            (Method::Cancel | Method::Notify, _) | (_, ServiceType::SessionMessage) => {
                Answer::new(481, "Call/Transaction Does Not Exist")
            }
            _ if self.in_dialog => Answer::new(481, "Call/Transaction Does Not Exist"),
            (Method::Subscribe | Method::Publish, _) => Answer {
                allow_events: (!cfg.served_events.is_empty()).then(|| cfg.served_events.join(", ")),
                ..Answer::new(489, "Bad Event")
            },
            (m, _) if !cfg.served_methods.contains(m) => with_allow(405, "Method Not Allowed"),
            (Method::Register, _) => with_allow(405, "Method Not Allowed"),
            (_, ServiceType::Other) if *method != Method::Options => {
                with_allow(405, "Method Not Allowed")
            }
            (_, s) => Answer::new(480, unavailable_reason(s)),
        })
    }
}

fn unavailable_reason(s: ServiceType) -> &'static str {
    match s {
        ServiceType::Conference => "Conferencing Unavailable",
        ServiceType::Storage => "Network Storage Unavailable",
        ServiceType::ThirdPartyApplication => "Application Unavailable",
        ServiceType::Interworking => "Interworking Unavailable",
        _ => "Temporarily Unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    /// The configuration of this phase: REGISTER, OPTIONS and MESSAGE served.
    fn cfg() -> ServiceConfig {
        let mut c = ServiceConfig::new("Example.com")
            .with_storage("sip:storage@example.com;transport=tcp")
            .unwrap()
            .with_application("sip:weather@apps.example.com")
            .unwrap()
            .with_interworking_domain("sms.example.com");
        c.served_methods.push(Method::Message);
        c
    }

    /// A request with the usual headers; `extra` are more header lines (each ending CRLF).
    fn request(method: &str, ruri: &str, to_tag: bool, extra: &str) -> Message {
        let tag = if to_tag { ";tag=b1" } else { "" };
        let raw = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <{ruri}>{tag}\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 1 {method}\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        parse(Bytes::from(raw)).unwrap()
    }

    fn service(method: &str, ruri: &str, to_tag: bool, extra: &str) -> ServiceType {
        classify(&request(method, ruri, to_tag, extra), &cfg()).service
    }

    fn answer(method: &str, ruri: &str, to_tag: bool, extra: &str) -> Option<(u16, &'static str)> {
        classify(&request(method, ruri, to_tag, extra), &cfg())
            .not_served(&cfg())
            .map(|a| (a.status, a.reason))
    }

    #[test]
    fn registration() {
        assert_eq!(
            service(
                "REGISTER",
                "sip:example.com",
                false,
                "Contact: <sip:alice@192.0.2.1>\r\n"
            ),
            ServiceType::Registration
        );
        assert_eq!(
            service(
                "SUBSCRIBE",
                "sip:alice@example.com",
                false,
                "Event: reg\r\n"
            ),
            ServiceType::Registration
        );
        let c = classify(&request("REGISTER", "sip:example.com", false, ""), &cfg());
        let a = c.not_served(&cfg()).unwrap();
        assert_eq!(
            (a.status, a.allow.as_deref()),
            (405, Some("REGISTER, OPTIONS, MESSAGE"))
        );
    }

    #[test]
    fn pager_message() {
        let c = classify(
            &request(
                "MESSAGE",
                "sip:bob@example.com",
                false,
                "Accept-Contact: *;+g.cpm\r\n",
            ),
            &cfg(),
        );
        assert_eq!(
            (c.service, c.cpm_feature_tag, c.in_dialog),
            (ServiceType::PagerMessage, true, false)
        );
        // Pager mode to another network is still message delivery (routed on by [31]).
        assert_eq!(
            service("MESSAGE", "sip:carol@other.net", false, ""),
            ServiceType::PagerMessage
        );
        assert_eq!(
            answer("MESSAGE", "sip:bob@example.com", false, ""),
            Some((480, "Temporarily Unavailable"))
        );
    }

    #[test]
    fn session_message() {
        assert_eq!(
            service("MESSAGE", "sip:bob@192.0.2.9", true, ""),
            ServiceType::SessionMessage
        );
        assert_eq!(
            service("MESSAGE", "sip:sess-42@example.com", false, ""),
            ServiceType::SessionMessage
        );
        assert_eq!(
            service("MESSAGE", "sip:sess-42@other.net", false, ""),
            ServiceType::PagerMessage
        );
        assert_eq!(
            answer("MESSAGE", "sip:sess-42@example.com", false, "")
                .unwrap()
                .0,
            481
        );
    }

    #[test]
    fn large_message() {
        let tag = "Accept-Contact: *;+g.oma.sip-im.large-message\r\n";
        assert_eq!(
            service("INVITE", "sip:bob@example.com", false, tag),
            ServiceType::LargeMessage
        );
        let icsi = "Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.largemsg\"\r\n";
        let c = classify(
            &request("INVITE", "sip:bob@example.com", false, icsi),
            &cfg(),
        );
        assert_eq!(
            (c.service, c.cpm_feature_tag),
            (ServiceType::LargeMessage, true)
        );
        // A re-INVITE is the session's whatever it carries.
        assert_eq!(
            service("INVITE", "sip:bob@example.com", true, tag),
            ServiceType::Session
        );
        // INVITE is not served in this phase: 405, whatever the session would carry.
        assert_eq!(
            answer("INVITE", "sip:bob@example.com", false, tag)
                .unwrap()
                .0,
            405
        );
    }

    #[test]
    fn session() {
        for m in ["INVITE", "BYE", "ACK", "CANCEL", "UPDATE", "PRACK", "INFO"] {
            assert_eq!(
                service(m, "sip:bob@example.com", m != "INVITE" && m != "CANCEL", ""),
                ServiceType::Session,
                "{m}"
            );
        }
        let c = classify(&request("INVITE", "sip:bob@example.com", false, ""), &cfg());
        assert!(!c.cpm_feature_tag);
        assert_eq!(
            answer("INVITE", "sip:bob@example.com", false, ""),
            Some((405, "Method Not Allowed"))
        );
        assert_eq!(
            answer("BYE", "sip:bob@example.com", true, "").unwrap().0,
            481
        );
        assert_eq!(
            answer("CANCEL", "sip:bob@example.com", false, "")
                .unwrap()
                .0,
            481
        );
        assert_eq!(answer("ACK", "sip:bob@example.com", true, ""), None);
        // A transfer (REFER to someone else) and its NOTIFYs stay with the session.
        let refer = "Refer-To: <sip:carol@example.com;method=INVITE>\r\n";
        assert_eq!(
            service("REFER", "sip:bob@example.com", true, refer),
            ServiceType::Session
        );
        assert_eq!(
            service("NOTIFY", "sip:alice@192.0.2.1", true, "Event: refer\r\n"),
            ServiceType::Session
        );
    }

    #[test]
    fn conference() {
        assert_eq!(
            service(
                "INVITE",
                "sip:conf-factory@EXAMPLE.COM;transport=udp",
                false,
                ""
            ),
            ServiceType::Conference
        );
        assert_eq!(
            service("BYE", "sip:conf-7f3a@example.com", true, ""),
            ServiceType::Conference
        );
        assert_eq!(
            service("INVITE", "sip:conf-7f3a@other.net", false, ""),
            ServiceType::Session
        );
        let ev = "Event: conference\r\n";
        assert_eq!(
            service("SUBSCRIBE", "sip:bob@example.com", false, ev),
            ServiceType::Conference
        );
        assert_eq!(
            answer("MESSAGE", "sip:conf-factory@example.com", false, ""),
            Some((480, "Conferencing Unavailable"))
        );
        assert_eq!(
            answer("SUBSCRIBE", "sip:conf-1@example.com", false, ev),
            Some((489, "Bad Event"))
        );
        let other = cfg().with_factory("sip:adhoc@example.com").unwrap();
        let m = request("INVITE", "sip:adhoc@example.com", false, "");
        assert_eq!(classify(&m, &other).service, ServiceType::Conference);
    }

    #[test]
    fn storage() {
        let start = "Refer-To: <sip:storage@example.com;method=INVITE>\r\n";
        let stop = "Refer-To: <sip:storage@example.com;method=BYE>\r\n";
        assert_eq!(
            service("REFER", "sip:bob@192.0.2.9", true, start),
            ServiceType::Storage
        );
        assert_eq!(
            service("REFER", "sip:bob@192.0.2.9", true, stop),
            ServiceType::Storage
        );
        assert_eq!(
            service("MESSAGE", "sip:storage@example.com", false, ""),
            ServiceType::Storage
        );
        assert_eq!(
            answer("MESSAGE", "sip:storage@example.com", false, ""),
            Some((480, "Network Storage Unavailable"))
        );
        // Without a storage URI configured nothing is storage.
        let none = ServiceConfig::new("example.com");
        assert_eq!(
            classify(&request("REFER", "sip:bob@192.0.2.9", true, start), &none).service,
            ServiceType::Session
        );
    }

    #[test]
    fn third_party_application() {
        assert_eq!(
            service("INVITE", "sip:weather@apps.example.com", false, ""),
            ServiceType::ThirdPartyApplication
        );
        assert_eq!(
            service("MESSAGE", "sip:weather@APPS.example.com;x=1", false, ""),
            ServiceType::ThirdPartyApplication
        );
        assert_eq!(
            service("MESSAGE", "sip:Weather@apps.example.com", false, ""),
            ServiceType::PagerMessage,
            "user part is case-sensitive"
        );
        assert_eq!(
            answer("MESSAGE", "sip:weather@apps.example.com", false, ""),
            Some((480, "Application Unavailable"))
        );
    }

    #[test]
    fn interworking() {
        assert_eq!(
            service("MESSAGE", "tel:+1-201-555-0123", false, ""),
            ServiceType::Interworking
        );
        assert_eq!(
            service(
                "INVITE",
                "sip:+12015550123@example.com;user=phone",
                false,
                ""
            ),
            ServiceType::Interworking
        );
        assert_eq!(
            service("MESSAGE", "sip:+12015550123@sms.example.com", false, ""),
            ServiceType::Interworking
        );
        let mut c = cfg();
        c.interworking_prefixes.push("mail-".into());
        let m = request(
            "MESSAGE",
            "sip:mail-bob%40corp.example@example.com",
            false,
            "",
        );
        assert_eq!(classify(&m, &c).service, ServiceType::Interworking);
        assert_eq!(
            answer("MESSAGE", "tel:+12015550123", false, ""),
            Some((480, "Interworking Unavailable"))
        );
    }

    #[test]
    fn presence() {
        for ev in ["presence", "presence.winfo", "xcap-diff"] {
            let h = format!("Event: {ev};id=1\r\n");
            assert_eq!(
                service("SUBSCRIBE", "sip:bob@example.com", false, &h),
                ServiceType::Presence,
                "{ev}"
            );
            assert_eq!(
                service("PUBLISH", "sip:alice@example.com", false, &h),
                ServiceType::Presence,
                "{ev}"
            );
        }
        let h = "Event: presence\r\n";
        assert_eq!(
            service("NOTIFY", "sip:alice@192.0.2.1", true, h),
            ServiceType::Presence
        );
        let c = classify(
            &request("PUBLISH", "sip:alice@example.com", false, h),
            &cfg(),
        );
        let mut served = cfg();
        served.served_events = vec!["reg".into(), "conference".into()];
        let a = c.not_served(&served).unwrap();
        assert_eq!(
            (a.status, a.allow_events.as_deref()),
            (489, Some("reg, conference"))
        );
        assert_eq!(c.not_served(&cfg()).unwrap().allow_events, None);
        assert_eq!(
            answer("NOTIFY", "sip:alice@192.0.2.1", true, h).unwrap().0,
            481
        );
    }

    #[test]
    fn options() {
        let c = classify(
            &request(
                "OPTIONS",
                "sip:example.com",
                false,
                "Accept: application/sdp\r\n",
            ),
            &cfg(),
        );
        assert_eq!(c.service, ServiceType::Options);
        let a = c.not_served(&cfg()).unwrap();
        assert_eq!(
            (a.status, a.allow.as_deref()),
            (200, Some("REGISTER, OPTIONS, MESSAGE"))
        );
        // OPTIONS to a user, or to a foreign host, is not addressed to us.
        assert_eq!(
            service("OPTIONS", "sip:bob@example.com", false, ""),
            ServiceType::Other
        );
        assert_eq!(
            service("OPTIONS", "sip:other.net", false, ""),
            ServiceType::Other
        );
        assert_eq!(
            answer("OPTIONS", "sip:bob@example.com", false, ""),
            Some((480, "Temporarily Unavailable"))
        );
    }

    #[test]
    fn other() {
        assert_eq!(
            service("FOO", "sip:bob@example.com", false, ""),
            ServiceType::Other
        );
        assert_eq!(
            answer("FOO", "sip:bob@example.com", false, ""),
            Some((501, "Not Implemented"))
        );
        assert_eq!(
            service(
                "SUBSCRIBE",
                "sip:bob@example.com",
                false,
                "Event: message-summary\r\n"
            ),
            ServiceType::Other
        );
        assert_eq!(
            answer(
                "SUBSCRIBE",
                "sip:bob@example.com",
                false,
                "Event: dialog\r\n"
            )
            .unwrap()
            .0,
            489
        );
        assert_eq!(
            answer("PUBLISH", "sip:bob@example.com", false, "")
                .unwrap()
                .0,
            489
        );
        // A response follows its transaction.
        let resp = parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        let c = classify(&resp, &cfg());
        assert_eq!((c.service, c.method.clone()), (ServiceType::Other, None));
        assert_eq!(c.not_served(&cfg()), None);
        // Unreadable headers count as absent; nothing panics.
        let junk = request(
            "MESSAGE",
            "sip:bob@example.com",
            false,
            "Accept-Contact: <junk\r\nContact: ;;\r\nEvent: ;\r\n",
        );
        assert_eq!(classify(&junk, &cfg()).service, ServiceType::PagerMessage);
        assert!(ServiceConfig::canonical("not a uri").is_err());
    }

    #[test]
    fn cpm_tag_in_contact_and_icsi() {
        let contact = "Contact: <sip:alice@192.0.2.1>;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session\"\r\n";
        assert!(
            classify(
                &request("INVITE", "sip:bob@example.com", false, contact),
                &cfg()
            )
            .cpm_feature_tag
        );
        let nim = "Accept-Contact: *;+g.cpmnim;explicit\r\n";
        assert!(
            classify(
                &request("INVITE", "sip:bob@example.com", false, nim),
                &cfg()
            )
            .cpm_feature_tag
        );
        let im = "Accept-Contact: *;+g.oma.sip-im\r\n";
        assert!(
            !classify(&request("INVITE", "sip:bob@example.com", false, im), &cfg()).cpm_feature_tag
        );
    }
}
