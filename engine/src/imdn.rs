//! Instant Message Disposition Notification (RFC 5438): what a message asks for, the IMDN XML
//! document, and the failure notification the server sends when it gives up on a message.
//!
//! - [`ImdnRequest::from_cpim`] reads the `imdn.*` CPIM headers of an instant message (RFC 5438
//!   §6): its Message-ID, DateTime and requested [`Disposition`]s.
//! - [`Notification`] is the `message/imdn+xml` document (RFC 5438 §7.2, schema §7.2.1): parse
//!   and build.
//! - [`notification_in`] / [`relayed_notification`] tell that a CPIM message or a relayed SIP
//!   MESSAGE is an IMDN and extract it, so the server can update its delivery state
//!   ([`Notification::delivery_event`]).
//! - [`failure_notification`] builds the complete CPIM + IMDN body an IMDN-aware store-and-forward
//!   server sends the sender when a message expires or cannot be delivered (RFC 5438 §5.1, §9).

use std::fmt;

use bytes::Bytes;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::cpim::{CpimBuilder, CpimError, CpimMessage, CPIM_HEADERS_NS};
use crate::deferred::DeliveryEvent;
use crate::sip::Message;

/// The CPIM header namespace of the IMDN headers (RFC 5438 §6, `NS: imdn <urn:ietf:params:imdn>`).
pub const IMDN_NS: &str = "urn:ietf:params:imdn";

/// The XML namespace of the IMDN document (RFC 5438 §7.2.1).
pub const IMDN_XML_NS: &str = "urn:ietf:params:xml:ns:imdn";

/// The MIME type of the IMDN document (RFC 5438 §7.2).
pub const IMDN_CONTENT_TYPE: &str = "message/imdn+xml";

/// Deepest element nesting accepted in an IMDN document (the schema needs 4).
const MAX_DEPTH: usize = 32;

/// Why an IMDN request or document was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImdnError {
    /// The CPIM envelope is malformed.
    Cpim(CpimError),
    /// No `imdn.Message-ID` header (RFC 5438 §6.3).
    MissingMessageId,
    /// The XML is not well formed (the reader's message).
    Xml(String),
    /// The root element is not `imdn` in the IMDN namespace (RFC 5438 §7.2.1).
    NotImdn,
    /// A mandatory element is missing: `message-id`, `datetime` or a notification (§7.2.1).
    MissingElement(&'static str),
    /// The status is unknown or not allowed in its notification (e.g. `<displayed/>` in a
    /// delivery notification), RFC 5438 §7.2.1.
    BadStatus,
    /// Nested deeper than any IMDN document needs.
    TooDeep,
}

impl ImdnError {
    /// The reason phrase (for a log line).
    pub fn reason(&self) -> &str {
        match self {
            ImdnError::Cpim(e) => e.reason(),
            ImdnError::MissingMessageId => "imdn.Message-ID missing",
            ImdnError::Xml(m) => m,
            ImdnError::NotImdn => "root element is not urn:ietf:params:xml:ns:imdn imdn",
            ImdnError::MissingElement(e) => e,
            ImdnError::BadStatus => "unknown or misplaced IMDN status",
            ImdnError::TooDeep => "IMDN document nested too deep",
        }
    }
}

impl fmt::Display for ImdnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ImdnError {}

impl From<CpimError> for ImdnError {
    fn from(e: CpimError) -> Self {
        ImdnError::Cpim(e)
    }
}

/// A disposition a sender may request (RFC 5438 §5, §6.2 `Disposition-Notification`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// `positive-delivery`: tell me when it was delivered.
    PositiveDelivery,
    /// `negative-delivery`: tell me when it could not be delivered.
    NegativeDelivery,
    /// `display`: tell me when it was displayed.
    Display,
    /// `processing`: tell me what an intermediary did with it (RFC 5438 §5.3).
    Processing,
}

impl Disposition {
    /// Every disposition, in RFC order.
    pub const ALL: [Disposition; 4] = [
        Disposition::PositiveDelivery,
        Disposition::NegativeDelivery,
        Disposition::Display,
        Disposition::Processing,
    ];

    /// The token as written in `Disposition-Notification`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::PositiveDelivery => "positive-delivery",
            Disposition::NegativeDelivery => "negative-delivery",
            Disposition::Display => "display",
            Disposition::Processing => "processing",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The set of requested dispositions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Dispositions(u8);

impl Dispositions {
    /// Parses a `Disposition-Notification` value: comma-separated tokens, case-insensitive;
    /// unknown tokens are ignored (RFC 5438 §6.2 allows extensions).
    pub fn parse(v: &str) -> Dispositions {
        let mut set = Dispositions::default();
        for tok in v.split(',').map(str::trim) {
            if let Some(d) = Disposition::ALL
                .into_iter()
                .find(|d| d.as_str().eq_ignore_ascii_case(tok))
            {
                set.insert(d);
            }
        }
        set
    }

    /// Adds `d`.
    pub fn insert(&mut self, d: Disposition) {
        self.0 |= d.bit();
    }

    /// Whether `d` was requested.
    pub fn contains(self, d: Disposition) -> bool {
        self.0 & d.bit() != 0
    }

    /// Whether nothing was requested.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The requested dispositions, in RFC order.
    pub fn iter(self) -> impl Iterator<Item = Disposition> {
        Disposition::ALL
            .into_iter()
            .filter(move |d| self.contains(*d))
    }
}

impl fmt::Display for Dispositions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(d.as_str())?;
        }
        Ok(())
    }
}

/// What an instant message asks of IMDN (RFC 5438 §6), kept with the stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdnRequest {
    /// `imdn.Message-ID` (RFC 5438 §6.3): the id every IMDN about this message refers to.
    pub message_id: String,
    /// The CPIM DateTime (RFC 5438 §6.3 requires it with an IMDN request; copied into the
    /// `<datetime>` of every IMDN).
    pub datetime: Option<String>,
    /// The requested dispositions (empty when no `imdn.Disposition-Notification`).
    pub dispositions: Dispositions,
    /// `imdn.Original-To` (RFC 5438 §6.4), set by an intermediary that changed the recipient.
    pub original_to: Option<String>,
    /// `imdn.IMDN-Record-Route` values in order (RFC 5438 §6.5).
    pub record_routes: Vec<String>,
    /// The first CPIM Subject, echoed in `<subject>` (RFC 5438 §7.2.1.4).
    pub subject: Option<String>,
}

impl ImdnRequest {
    /// Reads the IMDN headers of `cpim`; an error if it carries no `imdn.Message-ID`.
    pub fn from_cpim(cpim: &CpimMessage) -> Result<ImdnRequest, ImdnError> {
        let message_id = cpim
            .header(IMDN_NS, "Message-ID")
            .filter(|v| !v.is_empty())
            .ok_or(ImdnError::MissingMessageId)?;
        let mut dispositions = Dispositions::default();
        for h in cpim.headers_ns(IMDN_NS, "Disposition-Notification") {
            dispositions.0 |= Dispositions::parse(h.value_str()).0;
        }
        Ok(ImdnRequest {
            message_id: message_id.to_owned(),
            datetime: cpim.datetime().map(str::to_owned),
            dispositions,
            original_to: cpim
                .header(IMDN_NS, "Original-To")
                .map(|v| uri_of(v).to_owned()),
            record_routes: cpim
                .headers_ns(IMDN_NS, "IMDN-Record-Route")
                .map(|h| uri_of(h.value_str()).to_owned())
                .collect(),
            subject: cpim.header(CPIM_HEADERS_NS, "Subject").map(str::to_owned),
        })
    }

    /// Whether `d` was requested.
    pub fn wants(&self, d: Disposition) -> bool {
        self.dispositions.contains(d)
    }

    /// Where an IMDN about this message goes: the first IMDN-Record-Route if any (RFC 5438
    /// §6.5), else `sender` (the original sender's URI).
    pub fn notify_target<'a>(&'a self, sender: &'a str) -> &'a str {
        self.record_routes.first().map_or(sender, String::as_str)
    }
}

/// The URI inside `<...>` of a name-addr value, or the whole value trimmed.
fn uri_of(v: &str) -> &str {
    match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => v.get(a + 1..b).unwrap_or(v).trim(),
        _ => v.trim(),
    }
}

/// Which notification an IMDN document carries (RFC 5438 §7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// `<delivery-notification>`.
    Delivery,
    /// `<display-notification>`.
    Display,
    /// `<processing-notification>`.
    Processing,
}

impl NotificationKind {
    const ALL: [NotificationKind; 3] = [
        NotificationKind::Delivery,
        NotificationKind::Display,
        NotificationKind::Processing,
    ];

    /// The element name.
    pub fn element(self) -> &'static str {
        match self {
            NotificationKind::Delivery => "delivery-notification",
            NotificationKind::Display => "display-notification",
            NotificationKind::Processing => "processing-notification",
        }
    }
}

/// The status inside a notification (RFC 5438 §7.2.1: `<status>` child elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Delivered to the recipient (delivery).
    Delivered,
    /// Could not be delivered (delivery).
    Failed,
    /// Policy forbids telling (any kind).
    Forbidden,
    /// An error while determining the disposition (any kind).
    Error,
    /// Shown to the user (display).
    Displayed,
    /// Processed by an intermediary (processing).
    Processed,
    /// Stored by an intermediary for later delivery (processing).
    Stored,
}

impl Status {
    const ALL: [Status; 7] = [
        Status::Delivered,
        Status::Failed,
        Status::Forbidden,
        Status::Error,
        Status::Displayed,
        Status::Processed,
        Status::Stored,
    ];

    /// The element name (`<delivered/>`, ...).
    pub fn element(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Forbidden => "forbidden",
            Status::Error => "error",
            Status::Displayed => "displayed",
            Status::Processed => "processed",
            Status::Stored => "stored",
        }
    }

    /// Whether the schema allows this status in a `kind` notification (RFC 5438 §7.2.1).
    pub fn allowed_in(self, kind: NotificationKind) -> bool {
        match self {
            Status::Forbidden | Status::Error => true,
            Status::Delivered | Status::Failed => kind == NotificationKind::Delivery,
            Status::Displayed => kind == NotificationKind::Display,
            Status::Processed | Status::Stored => kind == NotificationKind::Processing,
        }
    }
}

/// An IMDN document (RFC 5438 §7.2): which message, about which recipient, what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The `imdn.Message-ID` of the message this is about.
    pub message_id: String,
    /// The DateTime of the message this is about.
    pub datetime: String,
    /// The recipient the disposition is for.
    pub recipient_uri: Option<String>,
    /// The recipient before any intermediary's change (from `imdn.Original-To`).
    pub original_recipient_uri: Option<String>,
    /// The Subject of the message this is about.
    pub subject: Option<String>,
    /// Which notification.
    pub kind: NotificationKind,
    /// What happened.
    pub status: Status,
}

impl Notification {
    /// Parses an IMDN document. Elements of other namespaces and unknown elements are ignored
    /// (the schema's `xs:any namespace="##other"`); any namespace prefix may be used.
    pub fn parse(xml: &[u8]) -> Result<Notification, ImdnError> {
        let mut reader = NsReader::from_reader(xml);
        reader.config_mut().trim_text(true);
        reader.config_mut().expand_empty_elements = true;
        // Each open element: (in the IMDN namespace, local name).
        let mut path: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut fields: [Option<String>; 5] = Default::default();
        let mut found: Option<(NotificationKind, Option<Status>)> = None;
        let mut seen_root = false;
        loop {
            let (ns, event) = reader
                .read_resolved_event()
                .map_err(|e| ImdnError::Xml(e.to_string()))?;
            match event {
                Event::Start(e) => {
                    let ours = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == IMDN_XML_NS.as_bytes());
                    let local = e.local_name().as_ref().to_vec();
                    if path.is_empty() {
                        if seen_root || !ours || local != b"imdn" {
                            return Err(ImdnError::NotImdn);
                        }
                        seen_root = true;
                    }
                    path.push((ours, local));
                    if path.len() > MAX_DEPTH {
                        return Err(ImdnError::TooDeep);
                    }
                    on_start(&path, &mut found);
                }
                Event::End(_) => {
                    path.pop();
                }
                Event::Text(t) => {
                    let text = t.unescape().map_err(|e| ImdnError::Xml(e.to_string()))?;
                    push_text(&path, &mut fields, &text);
                }
                Event::CData(t) => {
                    let text = String::from_utf8_lossy(&t);
                    push_text(&path, &mut fields, &text);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !path.is_empty() {
            return Err(ImdnError::Xml("unclosed element".into()));
        }
        if !seen_root {
            return Err(ImdnError::NotImdn);
        }
        let [message_id, datetime, recipient_uri, original_recipient_uri, subject] = fields;
        let message_id = message_id.ok_or(ImdnError::MissingElement("message-id missing"))?;
        let datetime = datetime.ok_or(ImdnError::MissingElement("datetime missing"))?;
        let (kind, status) = found.ok_or(ImdnError::MissingElement("notification missing"))?;
        let status = status
            .filter(|s| s.allowed_in(kind))
            .ok_or(ImdnError::BadStatus)?;
        Ok(Notification {
            message_id,
            datetime,
            recipient_uri,
            original_recipient_uri,
            subject,
            kind,
            status,
        })
    }

    /// Writes the document (RFC 5438 §7.2, default namespace, UTF-8).
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(400);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n");
        x.push_str("<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\r\n");
        let mut field = |name: &str, v: Option<&str>| {
            if let Some(v) = v {
                x.push_str(&format!("  <{name}>{}</{name}>\r\n", escape(v)));
            }
        };
        field("message-id", Some(&self.message_id));
        field("datetime", Some(&self.datetime));
        field("recipient-uri", self.recipient_uri.as_deref());
        field(
            "original-recipient-uri",
            self.original_recipient_uri.as_deref(),
        );
        field("subject", self.subject.as_deref());
        let kind = self.kind.element();
        x.push_str(&format!(
            "  <{kind}>\r\n    <status>\r\n      <{}/>\r\n    </status>\r\n  </{kind}>\r\n",
            self.status.element()
        ));
        x.push_str("</imdn>\r\n");
        x
    }

    /// What this notification means for the message's delivery state (RFC 5438 §7.2.1):
    /// `None` for processing notifications and for a refused display notification, which say
    /// nothing about delivery.
    pub fn delivery_event(&self) -> Option<DeliveryEvent> {
        match (self.kind, self.status) {
            (NotificationKind::Delivery, Status::Delivered) => Some(DeliveryEvent::ImdnDelivered),
            (NotificationKind::Delivery, Status::Failed | Status::Forbidden | Status::Error) => {
                Some(DeliveryEvent::ImdnFailed)
            }
            (NotificationKind::Display, Status::Displayed) => Some(DeliveryEvent::ImdnDisplayed),
            _ => None,
        }
    }
}

/// Records what an element start means: a notification, or a status inside one.
fn on_start(path: &[(bool, Vec<u8>)], found: &mut Option<(NotificationKind, Option<Status>)>) {
    match path {
        [_, (true, n)] => {
            if let Some(kind) = NotificationKind::ALL
                .into_iter()
                .find(|k| k.element().as_bytes() == n.as_slice())
            {
                // The schema allows exactly one; later ones are ignored.
                found.get_or_insert((kind, None));
            }
        }
        [_, (true, n), (true, s), (ours, v)] if s == b"status" => {
            let Some((kind, status)) = found else { return };
            if kind.element().as_bytes() != n.as_slice() {
                return;
            }
            // An extension status (other namespace) is legal but means nothing to us; the
            // first known one counts.
            let known = Status::ALL
                .into_iter()
                .find(|st| *ours && st.element().as_bytes() == v.as_slice());
            if status.is_none() {
                *status = known;
            }
        }
        _ => {}
    }
}

/// Appends text to the field whose element is open (`message-id`, `datetime`, ...).
fn push_text(path: &[(bool, Vec<u8>)], fields: &mut [Option<String>; 5], text: &str) {
    const NAMES: [&[u8]; 5] = [
        b"message-id",
        b"datetime",
        b"recipient-uri",
        b"original-recipient-uri",
        b"subject",
    ];
    if let [_, (true, n)] = path {
        if let Some(i) = NAMES.iter().position(|f| *f == n.as_slice()) {
            if let Some(slot) = fields.get_mut(i) {
                slot.get_or_insert_with(String::new).push_str(text.trim());
            }
        }
    }
}

/// Escapes the five XML special characters.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `cpim` carries an IMDN (its content is `message/imdn+xml`, RFC 5438 §7.1).
pub fn is_imdn(cpim: &CpimMessage) -> bool {
    cpim.content_type_is(IMDN_CONTENT_TYPE)
}

/// The IMDN in `cpim`: `None` if it carries none, else the parsed document or why it failed.
pub fn notification_in(cpim: &CpimMessage) -> Option<Result<Notification, ImdnError>> {
    is_imdn(cpim).then(|| Notification::parse(cpim.body()))
}

/// The IMDN carried by a relayed SIP MESSAGE (Content-Type `message/cpim` whose content is
/// `message/imdn+xml`): `None` if it is not one, so the server can update the delivery state
/// of `message_id` from its `status` ([`Notification::delivery_event`]).
pub fn relayed_notification(msg: &Message) -> Option<Result<Notification, ImdnError>> {
    match crate::cpim::of_sip(msg)? {
        Ok(cpim) => notification_in(&cpim),
        Err(e) => Some(Err(e.into())),
    }
}

/// The CPIM body (Content-Type `message/cpim`) of the negative delivery notification the
/// server sends when it gives up on a message (expiry, or refused by every device), RFC 5438
/// §5.1 and §9: only if `negative-delivery` was requested, else `None`.
///
/// `original_to` is the recipient the message could not reach (`<recipient-uri>` and the CPIM
/// From: the server speaks for it); `sender` the original sender (the CPIM To);
/// `new_message_id` a fresh unique id (RFC 5438 §6.3: at least 32 bits of randomness). The
/// `<datetime>` is the original's DateTime, or `now_rfc3339` when it had none. The IMDN itself
/// requests no disposition (RFC 5438 §7: IMDNs are never acknowledged).
pub fn failure_notification(
    original: &ImdnRequest,
    original_to: &str,
    sender: &str,
    now_rfc3339: &str,
    new_message_id: &str,
) -> Option<Bytes> {
    if !original.wants(Disposition::NegativeDelivery) {
        return None;
    }
    let doc = Notification {
        message_id: original.message_id.clone(),
        datetime: original
            .datetime
            .clone()
            .unwrap_or_else(|| now_rfc3339.to_owned()),
        recipient_uri: Some(original_to.to_owned()),
        original_recipient_uri: original.original_to.clone(),
        subject: original.subject.clone(),
        kind: NotificationKind::Delivery,
        status: Status::Failed,
    };
    let mut b = CpimBuilder::new(original_to, sender)
        .ns("imdn", IMDN_NS)
        .header("imdn.Message-ID", new_message_id)
        .header("DateTime", now_rfc3339);
    for route in &original.record_routes {
        b = b.header("imdn.IMDN-Route", &format!("<{route}>"));
    }
    Some(
        b.content_header("Content-Disposition", "notification")
            .build(IMDN_CONTENT_TYPE, doc.to_xml().as_bytes()),
    )
}

#[cfg(test)]
mod tests;
