//! `application/conference-info+xml` (RFC 4575 §5): the hand-written writer of a roster's full
//! and partial documents, and a tolerant reader for NOTIFY bodies.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::{
    ChangeSet, DisconnectionMethod, EndpointStatus, JoiningMethod, MediaStatus, Participant, Roster,
};

/// The XML namespace of conference-info documents (RFC 4575 §5.1).
pub const CONFERENCE_INFO_NS: &str = "urn:ietf:params:xml:ns:conference-info";

/// The Content-Type of a NOTIFY body of the conference event package (RFC 4575 §3.4).
pub const CONFERENCE_INFO_CONTENT_TYPE: &str = "application/conference-info+xml";

/// Deepest element nesting the reader accepts.
const MAX_DEPTH: usize = 32;

/// Most users (and endpoints per user, media per endpoint) the reader keeps.
const MAX_ITEMS: usize = 10_000;

/// One subscription's view of the conference (RFC 4575 §4.6): the version of the last
/// document sent. Version 0 means nothing was sent yet, so the next document is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberView {
    version: u32,
}

impl SubscriberView {
    /// The version of the last document rendered for this subscriber (0: none yet).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn next(&mut self) -> u32 {
        self.version = self.version.wrapping_add(1).max(1);
        self.version
    }
}

impl Roster {
    /// The full document (`state="full"`, RFC 4575 §4.6.1) for `view`, whose version it
    /// increments.
    pub fn render_full(&self, view: &mut SubscriberView) -> String {
        let version = view.next();
        let mut out = self.open_document(version, DocState::Full);
        self.write_description(&mut out);
        self.write_state(&mut out);
        out.push_str("<users>");
        let mut done: Vec<&str> = Vec::new();
        for p in &self.participants {
            if !done.contains(&p.uri.as_str()) {
                done.push(&p.uri);
                self.write_user(&mut out, &p.uri);
            }
        }
        out.push_str("</users></conference-info>\n");
        out
    }

    /// The partial document (`state="partial"`, RFC 4575 §4.6.2) carrying `changes` for
    /// `view`: each changed user in full, a user with no endpoint left as `state="deleted"`.
    /// A view that has seen nothing yet gets the full document instead.
    pub fn render_partial(&self, view: &mut SubscriberView, changes: &ChangeSet) -> String {
        if view.version == 0 {
            return self.render_full(view);
        }
        let version = view.next();
        let mut out = self.open_document(version, DocState::Partial);
        if changes.description {
            self.write_description(&mut out);
        }
        if changes.state {
            self.write_state(&mut out);
        }
        let mut users: Vec<&str> = Vec::new();
        let updated = changes
            .updated
            .iter()
            .filter_map(|id| self.get(*id))
            .map(|p| p.uri.as_str());
        let removed = changes.removed.iter().map(|(_, uri, _)| uri.as_str());
        for uri in updated.chain(removed) {
            if !users.contains(&uri) {
                users.push(uri);
            }
        }
        if !users.is_empty() {
            out.push_str("<users state=\"partial\">");
            for uri in users {
                if self.participants.iter().any(|p| p.uri == uri) {
                    self.write_user(&mut out, uri);
                } else {
                    out.push_str("<user entity=\"");
                    escape_into(uri, &mut out);
                    out.push_str("\" state=\"deleted\"/>");
                }
            }
            out.push_str("</users>");
        }
        out.push_str("</conference-info>\n");
        out
    }

    fn open_document(&self, version: u32, state: DocState) -> String {
        let mut out = String::with_capacity(256 + 256 * self.participants.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<conference-info xmlns=\"");
        out.push_str(CONFERENCE_INFO_NS);
        out.push_str("\" entity=\"");
        escape_into(&self.entity, &mut out);
        let _ = write!(
            out,
            "\" state=\"{}\" version=\"{version}\">",
            state.as_str()
        );
        out
    }

    fn write_description(&self, out: &mut String) {
        out.push_str("<conference-description>");
        if let Some(s) = &self.subject {
            element(out, "subject", s);
        }
        if let Some(max) = self.max_participants {
            let _ = write!(out, "<maximum-user-count>{max}</maximum-user-count>");
        }
        out.push_str("</conference-description>");
    }

    fn write_state(&self, out: &mut String) {
        let _ = write!(
            out,
            "<conference-state><user-count>{}</user-count><active>{}</active>\
             <locked>{}</locked></conference-state>",
            self.participants.len(),
            !self.participants.is_empty(),
            self.locked
        );
    }

    /// `<user>` in full with all the endpoints of `uri` (RFC 4575 §5.6).
    fn write_user(&self, out: &mut String, uri: &str) {
        out.push_str("<user entity=\"");
        escape_into(uri, out);
        out.push_str("\" state=\"full\">");
        let mut endpoints = self.participants.iter().filter(|p| p.uri == uri);
        if let Some(name) = endpoints.clone().find_map(|p| p.display_name.as_deref()) {
            element(out, "display-text", name);
        }
        for p in endpoints.by_ref() {
            write_endpoint(out, p);
        }
        out.push_str("</user>");
    }
}

/// `<endpoint>` in full (RFC 4575 §5.7), children in schema order.
fn write_endpoint(out: &mut String, p: &Participant) {
    out.push_str("<endpoint entity=\"");
    escape_into(&p.endpoint, out);
    out.push_str("\" state=\"full\">");
    element(out, "status", p.shown_status().as_str());
    element(out, "joining-method", p.joining.as_str());
    for m in &p.media {
        let _ = write!(out, "<media id=\"{}\">", m.id);
        element(out, "type", m.kind.as_str());
        if let Some(label) = &m.label {
            element(out, "label", label);
        }
        if let Some(src) = m.src_id {
            let _ = write!(out, "<src-id>{src}</src-id>");
        }
        element(out, "status", m.status.as_str());
        out.push_str("</media>");
    }
    out.push_str("</endpoint>");
}

fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>");
    escape_into(text, out);
    let _ = write!(out, "</{name}>");
}

/// Escapes the five XML special characters; characters XML 1.0 cannot carry (controls other
/// than tab, LF, CR) become U+FFFD, so any user-provided string yields a well-formed document.
fn escape_into(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// The `state` attribute of a document or element (RFC 4575 §5.1, §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DocState {
    /// Complete: replaces what the subscriber had.
    #[default]
    Full,
    /// Only changes, merged into what the subscriber had.
    Partial,
    /// The element was removed.
    Deleted,
}

impl DocState {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            DocState::Full => "full",
            DocState::Partial => "partial",
            DocState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<DocState> {
        match s.trim() {
            "full" => Some(DocState::Full),
            "partial" => Some(DocState::Partial),
            "deleted" => Some(DocState::Deleted),
            _ => None,
        }
    }
}

/// Why a conference-info document could not be read or applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConferenceInfoError {
    /// Not well-formed XML (the parser's message).
    Xml(String),
    /// The root is not `<conference-info>` in the RFC 4575 namespace.
    NotConferenceInfo,
    /// A required attribute (`entity`, `version`) is missing or invalid.
    BadAttribute(&'static str),
    /// Nesting deeper than the reader accepts, or too many items.
    TooLarge,
    /// A partial document whose version does not follow the one applied (RFC 4575 §4.6.2:
    /// the subscriber refreshes the subscription).
    VersionGap {
        /// The version the subscriber expected.
        expected: u32,
        /// The version received.
        got: u32,
    },
    /// A partial document for another conference.
    EntityMismatch,
}

impl ConferenceInfoError {
    /// A reason phrase.
    pub fn reason(&self) -> &str {
        match self {
            ConferenceInfoError::Xml(m) => m,
            ConferenceInfoError::NotConferenceInfo => "not a conference-info document",
            ConferenceInfoError::BadAttribute(a) => a,
            ConferenceInfoError::TooLarge => "document too deep or too large",
            ConferenceInfoError::VersionGap { .. } => "version gap",
            ConferenceInfoError::EntityMismatch => "document for another conference",
        }
    }
}

impl std::fmt::Display for ConferenceInfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ConferenceInfoError {}

/// A media stream read from a document (RFC 4575 §5.7.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// The `id` attribute.
    pub id: String,
    /// `<type>` as written (`audio`, `video`, `message`, ...).
    pub kind: Option<String>,
    /// `<label>`.
    pub label: Option<String>,
    /// `<src-id>`.
    pub src_id: Option<String>,
    /// `<status>`, if a known token.
    pub status: Option<MediaStatus>,
}

/// An endpoint read from a document (RFC 4575 §5.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The `entity` attribute.
    pub entity: String,
    /// The `state` attribute.
    pub state: DocState,
    /// `<display-text>`.
    pub display_text: Option<String>,
    /// `<status>`, if a known token.
    pub status: Option<EndpointStatus>,
    /// `<joining-method>`, if a known token.
    pub joining: Option<JoiningMethod>,
    /// `<disconnection-method>`, if a known token.
    pub disconnection: Option<DisconnectionMethod>,
    /// `<media>` streams.
    pub media: Vec<MediaInfo>,
}

/// A user read from a document (RFC 4575 §5.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The `entity` attribute.
    pub entity: String,
    /// The `state` attribute.
    pub state: DocState,
    /// `<display-text>`.
    pub display_text: Option<String>,
    /// `<endpoint>`s.
    pub endpoints: Vec<EndpointInfo>,
}

/// A `conference-info` document as read (RFC 4575 §5), or the state a subscriber built by
/// applying partial documents to a full one. Unknown elements are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceInfo {
    /// The conference URI (`entity`).
    pub entity: String,
    /// The document's `version`.
    pub version: u32,
    /// The document's `state`.
    pub state: DocState,
    /// `<conference-description><subject>`.
    pub subject: Option<String>,
    /// `<conference-description><maximum-user-count>`.
    pub max_user_count: Option<u32>,
    /// `<conference-state><user-count>`.
    pub user_count: Option<u32>,
    /// `<conference-state><active>`.
    pub active: Option<bool>,
    /// `<conference-state><locked>`.
    pub locked: Option<bool>,
    /// The `state` of `<users>`.
    pub users_state: DocState,
    /// `<users><user>`s.
    pub users: Vec<UserInfo>,
}

impl ConferenceInfo {
    /// Reads a document; never panics, whatever the bytes.
    pub fn parse(xml: &[u8]) -> Result<ConferenceInfo, ConferenceInfoError> {
        let mut reader = NsReader::from_reader(xml);
        reader.config_mut().trim_text(true);
        reader.config_mut().expand_empty_elements = true;
        let mut doc: Option<ConferenceInfo> = None;
        // Each open element: its local name, or empty for a foreign namespace.
        let mut path: Vec<Vec<u8>> = Vec::new();
        let mut user: Option<UserInfo> = None;
        let mut endpoint: Option<EndpointInfo> = None;
        let mut media: Option<MediaInfo> = None;
        let xml_err = |e: &dyn std::fmt::Display| ConferenceInfoError::Xml(e.to_string());
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|e| xml_err(&e))?;
            match event {
                Event::Start(e) => {
                    let ours = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == CONFERENCE_INFO_NS.as_bytes());
                    let local = if ours {
                        e.local_name().as_ref().to_vec()
                    } else {
                        Vec::new()
                    };
                    let p = path.as_slice();
                    match local.as_slice() {
                        b"conference-info" if p.is_empty() && doc.is_none() => {
                            doc = Some(ConferenceInfo::from_root(&e)?);
                        }
                        _ if p.is_empty() => return Err(ConferenceInfoError::NotConferenceInfo),
                        b"users" if at(p, &[b"conference-info"]) => {
                            if let Some(d) = doc.as_mut() {
                                d.users_state = state_attr(&e)?;
                            }
                        }
                        b"user" if at(p, USERS) => {
                            user = Some(UserInfo {
                                entity: attr(&e, b"entity")?.unwrap_or_default(),
                                state: state_attr(&e)?,
                                ..UserInfo::default()
                            });
                        }
                        b"endpoint" if at(p, USER) => {
                            endpoint = Some(EndpointInfo {
                                entity: attr(&e, b"entity")?.unwrap_or_default(),
                                state: state_attr(&e)?,
                                ..EndpointInfo::default()
                            });
                        }
                        b"media" if at(p, ENDPOINT) => {
                            media = Some(MediaInfo {
                                id: attr(&e, b"id")?.unwrap_or_default(),
                                ..MediaInfo::default()
                            });
                        }
                        _ => {}
                    }
                    path.push(local);
                    if path.len() > MAX_DEPTH {
                        return Err(ConferenceInfoError::TooLarge);
                    }
                }
                Event::End(_) => {
                    let closed = path.pop().unwrap_or_default();
                    let p = path.as_slice();
                    match closed.as_slice() {
                        b"media" if at(p, ENDPOINT) => {
                            if let (Some(m), Some(ep)) = (media.take(), endpoint.as_mut()) {
                                push_bounded(&mut ep.media, m)?;
                            }
                        }
                        b"endpoint" if at(p, USER) => {
                            if let (Some(ep), Some(u)) = (endpoint.take(), user.as_mut()) {
                                push_bounded(&mut u.endpoints, ep)?;
                            }
                        }
                        b"user" if at(p, USERS) => {
                            if let (Some(u), Some(d)) = (user.take(), doc.as_mut()) {
                                push_bounded(&mut d.users, u)?;
                            }
                        }
                        _ => {}
                    }
                }
                Event::Text(t) => {
                    let text = t.unescape().map_err(|e| xml_err(&e))?;
                    if let Some(d) = doc.as_mut() {
                        d.on_text(&path, &text, &mut user, &mut endpoint, &mut media);
                    }
                }
                Event::CData(t) => {
                    let text = String::from_utf8_lossy(&t).into_owned();
                    if let Some(d) = doc.as_mut() {
                        d.on_text(&path, &text, &mut user, &mut endpoint, &mut media);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if !path.is_empty() {
            return Err(ConferenceInfoError::Xml("unclosed element".into()));
        }
        doc.ok_or(ConferenceInfoError::NotConferenceInfo)
    }

    fn from_root(e: &BytesStart<'_>) -> Result<ConferenceInfo, ConferenceInfoError> {
        let entity = attr(e, b"entity")?.ok_or(ConferenceInfoError::BadAttribute(
            "conference-info without entity",
        ))?;
        let version = attr(e, b"version")?
            .and_then(|v| v.trim().parse().ok())
            .ok_or(ConferenceInfoError::BadAttribute(
                "conference-info without a valid version",
            ))?;
        Ok(ConferenceInfo {
            entity,
            version,
            state: state_attr(e)?,
            ..ConferenceInfo::default()
        })
    }

    fn on_text(
        &mut self,
        path: &[Vec<u8>],
        text: &str,
        user: &mut Option<UserInfo>,
        endpoint: &mut Option<EndpointInfo>,
        media: &mut Option<MediaInfo>,
    ) {
        let owned = || Some(text.trim().to_owned());
        let Some((leaf, parent)) = path.split_last() else {
            return;
        };
        if at(parent, &[b"conference-info", b"conference-description"]) {
            match leaf.as_slice() {
                b"subject" => self.subject = owned(),
                b"maximum-user-count" => self.max_user_count = text.trim().parse().ok(),
                _ => {}
            }
        } else if at(parent, &[b"conference-info", b"conference-state"]) {
            match leaf.as_slice() {
                b"user-count" => self.user_count = text.trim().parse().ok(),
                b"active" => self.active = parse_bool(text),
                b"locked" => self.locked = parse_bool(text),
                _ => {}
            }
        } else if at(parent, USER) {
            if let (b"display-text", Some(u)) = (leaf.as_slice(), user.as_mut()) {
                u.display_text = owned();
            }
        } else if at(parent, ENDPOINT) {
            if let Some(ep) = endpoint.as_mut() {
                match leaf.as_slice() {
                    b"display-text" => ep.display_text = owned(),
                    b"status" => ep.status = EndpointStatus::parse(text),
                    b"joining-method" => ep.joining = JoiningMethod::parse(text),
                    b"disconnection-method" => {
                        ep.disconnection = DisconnectionMethod::parse(text);
                    }
                    _ => {}
                }
            }
        } else if at(parent, MEDIA) {
            if let Some(m) = media.as_mut() {
                match leaf.as_slice() {
                    b"type" => m.kind = owned(),
                    b"label" => m.label = owned(),
                    b"src-id" => m.src_id = owned(),
                    b"status" => m.status = MediaStatus::parse(text),
                    _ => {}
                }
            }
        }
    }

    /// The user with entity `uri`.
    pub fn user(&self, uri: &str) -> Option<&UserInfo> {
        self.users.iter().find(|u| u.entity == uri)
    }

    /// Folds the next document of the subscription into this state (RFC 4575 §4.6): a full
    /// one replaces it; a partial one must carry the next version and the same entity, its
    /// users replace, merge into, or (`deleted`) remove the known ones.
    pub fn apply(&mut self, next: ConferenceInfo) -> Result<(), ConferenceInfoError> {
        if next.state == DocState::Full {
            *self = next;
            return Ok(());
        }
        let expected = self.version.wrapping_add(1);
        if next.version != expected {
            return Err(ConferenceInfoError::VersionGap {
                expected,
                got: next.version,
            });
        }
        if next.entity != self.entity {
            return Err(ConferenceInfoError::EntityMismatch);
        }
        self.version = next.version;
        self.subject = next.subject.or(self.subject.take());
        self.max_user_count = next.max_user_count.or(self.max_user_count);
        self.user_count = next.user_count.or(self.user_count);
        self.active = next.active.or(self.active);
        self.locked = next.locked.or(self.locked);
        if next.users_state == DocState::Full {
            self.users.clear();
        }
        for u in next.users {
            let known = self.users.iter().position(|k| k.entity == u.entity);
            match (u.state, known) {
                (DocState::Deleted, Some(i)) => {
                    self.users.remove(i);
                }
                (DocState::Deleted, None) => {}
                (DocState::Partial, Some(i)) => {
                    if let Some(k) = self.users.get_mut(i) {
                        merge_user(k, u);
                    }
                }
                (_, Some(i)) => {
                    if let Some(k) = self.users.get_mut(i) {
                        *k = u;
                    }
                }
                (_, None) => push_bounded(&mut self.users, u)?,
            }
        }
        Ok(())
    }
}

/// Merges a partial `<user>` into the known one: endpoints replaced or removed by entity.
fn merge_user(known: &mut UserInfo, u: UserInfo) {
    if u.display_text.is_some() {
        known.display_text = u.display_text;
    }
    for ep in u.endpoints {
        let i = known.endpoints.iter().position(|k| k.entity == ep.entity);
        match (ep.state, i) {
            (DocState::Deleted, Some(i)) => {
                known.endpoints.remove(i);
            }
            (DocState::Deleted, None) => {}
            (_, Some(i)) => {
                if let Some(k) = known.endpoints.get_mut(i) {
                    *k = ep;
                }
            }
            (_, None) if known.endpoints.len() < MAX_ITEMS => known.endpoints.push(ep),
            (_, None) => {}
        }
    }
}

const USERS: &[&[u8]] = &[b"conference-info", b"users"];
const USER: &[&[u8]] = &[b"conference-info", b"users", b"user"];
const ENDPOINT: &[&[u8]] = &[b"conference-info", b"users", b"user", b"endpoint"];
const MEDIA: &[&[u8]] = &[b"conference-info", b"users", b"user", b"endpoint", b"media"];

/// Whether the open elements are exactly `names` (all in the conference-info namespace).
fn at(path: &[Vec<u8>], names: &[&[u8]]) -> bool {
    path.len() == names.len() && path.iter().zip(names).all(|(p, n)| p.as_slice() == *n)
}

fn push_bounded<T>(v: &mut Vec<T>, item: T) -> Result<(), ConferenceInfoError> {
    if v.len() >= MAX_ITEMS {
        return Err(ConferenceInfoError::TooLarge);
    }
    v.push(item);
    Ok(())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The unescaped value of the unprefixed attribute `name`.
fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, ConferenceInfoError> {
    for a in e.attributes() {
        let a = a.map_err(|e| ConferenceInfoError::Xml(e.to_string()))?;
        if a.key.prefix().is_none() && a.key.local_name().as_ref() == name {
            let v = a
                .unescape_value()
                .map_err(|e| ConferenceInfoError::Xml(e.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn state_attr(e: &BytesStart<'_>) -> Result<DocState, ConferenceInfoError> {
    match attr(e, b"state")? {
        None => Ok(DocState::Full),
        Some(s) => DocState::parse(&s).ok_or(ConferenceInfoError::BadAttribute("unknown state")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Media, MediaKind, ParticipantId};
    use super::*;

    fn roster() -> (Roster, ParticipantId, ParticipantId) {
        let mut r = Roster::new("sip:conf1@example.com");
        r.set_subject(Some("Weekly <sync> & \"plans\"".into()));
        let (a, _) = r
            .join(
                "sip:alice@example.com",
                Some("sip:alice@10.0.0.1:5060".into()),
                Some("Alice & 'Co' <x>".into()),
                JoiningMethod::FocusOwner,
                EndpointStatus::Connected,
            )
            .unwrap();
        r.set_media(
            a,
            Media {
                id: 1,
                kind: MediaKind::Audio,
                label: Some("a1".into()),
                src_id: Some(1234),
                status: MediaStatus::SendRecv,
            },
        )
        .unwrap();
        let (b, _) = r
            .join(
                "sip:bob@example.com",
                None,
                None,
                JoiningMethod::DialedIn,
                EndpointStatus::Connected,
            )
            .unwrap();
        (r, a, b)
    }

    #[test]
    fn full_document_is_exact() {
        let mut r = Roster::new("sip:c@example.com");
        r.join(
            "sip:a@example.com",
            None,
            Some("A".into()),
            JoiningMethod::DialedIn,
            EndpointStatus::Connected,
        )
        .unwrap();
        let mut v = SubscriberView::default();
        assert_eq!(
            r.render_full(&mut v),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <conference-info xmlns=\"urn:ietf:params:xml:ns:conference-info\" \
             entity=\"sip:c@example.com\" state=\"full\" version=\"1\">\
             <conference-description></conference-description>\
             <conference-state><user-count>1</user-count><active>true</active>\
             <locked>false</locked></conference-state>\
             <users><user entity=\"sip:a@example.com\" state=\"full\">\
             <display-text>A</display-text>\
             <endpoint entity=\"sip:a@example.com\" state=\"full\"><status>connected</status>\
             <joining-method>dialed-in</joining-method></endpoint></user></users>\
             </conference-info>\n"
        );
        assert_eq!(v.version(), 1);
    }

    #[test]
    fn user_strings_are_escaped_and_parse_back() {
        let (mut r, _, _) = roster();
        r.set_subject(Some("ctl\u{1}char".into()));
        let mut v = SubscriberView::default();
        let xml = r.render_full(&mut v);
        assert!(
            xml.contains("Alice &amp; &apos;Co&apos; &lt;x&gt;"),
            "{xml}"
        );
        assert!(!xml.contains('\u{1}'));
        let doc = ConferenceInfo::parse(xml.as_bytes()).unwrap();
        assert_eq!(doc.subject.as_deref(), Some("ctl\u{fffd}char"));
        let alice = doc.user("sip:alice@example.com").unwrap();
        assert_eq!(alice.display_text.as_deref(), Some("Alice & 'Co' <x>"));
    }

    #[test]
    fn parse_round_trip_of_a_full_document() {
        let (r, _, _) = roster();
        let mut v = SubscriberView::default();
        let doc = ConferenceInfo::parse(r.render_full(&mut v).as_bytes()).unwrap();
        assert_eq!(doc.entity, "sip:conf1@example.com");
        assert_eq!((doc.version, doc.state), (1, DocState::Full));
        assert_eq!(doc.subject.as_deref(), Some("Weekly <sync> & \"plans\""));
        assert_eq!((doc.user_count, doc.active), (Some(2), Some(true)));
        assert_eq!(doc.users.len(), 2);
        let ep = &doc.users[0].endpoints[0];
        assert_eq!(ep.entity, "sip:alice@10.0.0.1:5060");
        assert_eq!(ep.status, Some(EndpointStatus::Connected));
        assert_eq!(ep.joining, Some(JoiningMethod::FocusOwner));
        assert_eq!(
            ep.media,
            vec![MediaInfo {
                id: "1".into(),
                kind: Some("audio".into()),
                label: Some("a1".into()),
                src_id: Some("1234".into()),
                status: Some(MediaStatus::SendRecv),
            }]
        );
    }

    #[test]
    fn partials_carry_only_changes_and_versions_count_per_view() {
        let (mut r, a, b) = roster();
        let mut early = SubscriberView::default();
        let mut state = ConferenceInfo::parse(r.render_full(&mut early).as_bytes()).unwrap();

        let changes = r.set_muted(a, true).unwrap();
        let xml = r.render_partial(&mut early, &changes);
        assert!(xml.contains("state=\"partial\" version=\"2\""), "{xml}");
        assert!(!xml.contains("bob"), "only the changed user: {xml}");
        assert!(!xml.contains("conference-state"), "{xml}");
        state
            .apply(ConferenceInfo::parse(xml.as_bytes()).unwrap())
            .unwrap();
        let alice = &state.user("sip:alice@example.com").unwrap().endpoints[0];
        assert_eq!(alice.status, Some(EndpointStatus::MutedViaFocus));

        // A subscriber arriving now starts with a full document at version 1.
        let mut late = SubscriberView::default();
        let xml = r.render_partial(&mut late, &changes);
        assert!(xml.contains("state=\"full\" version=\"1\""), "{xml}");

        let changes = r.leave(b).unwrap();
        let xml = r.render_partial(&mut early, &changes);
        assert!(xml.contains("version=\"3\""));
        assert!(
            xml.contains("<user entity=\"sip:bob@example.com\" state=\"deleted\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<user-count>1</user-count>"));
        state
            .apply(ConferenceInfo::parse(xml.as_bytes()).unwrap())
            .unwrap();
        assert!(state.user("sip:bob@example.com").is_none());
        assert_eq!((state.version, state.user_count), (3, Some(1)));
        assert!(r
            .render_partial(&mut late, &changes)
            .contains("version=\"2\""));
    }

    #[test]
    fn second_endpoint_of_a_user_leaving_keeps_the_user() {
        let (mut r, _, _) = roster();
        let (a2, _) = r
            .join(
                "sip:alice@example.com",
                Some("sip:alice@phone".into()),
                None,
                JoiningMethod::DialedIn,
                EndpointStatus::Connected,
            )
            .unwrap();
        let mut v = SubscriberView::default();
        let mut state = ConferenceInfo::parse(r.render_full(&mut v).as_bytes()).unwrap();
        assert_eq!(
            state.user("sip:alice@example.com").unwrap().endpoints.len(),
            2
        );
        let changes = r.leave(a2).unwrap();
        let xml = r.render_partial(&mut v, &changes);
        assert!(!xml.contains("deleted"), "the user stays, in full: {xml}");
        state
            .apply(ConferenceInfo::parse(xml.as_bytes()).unwrap())
            .unwrap();
        let alice = state.user("sip:alice@example.com").unwrap();
        assert_eq!(alice.endpoints.len(), 1);
        assert_eq!(alice.endpoints[0].entity, "sip:alice@10.0.0.1:5060");
    }

    #[test]
    fn apply_detects_gaps_and_other_conferences() {
        let (mut r, a, _) = roster();
        let mut v = SubscriberView::default();
        let mut state = ConferenceInfo::parse(r.render_full(&mut v).as_bytes()).unwrap();
        let c = r.set_status(a, EndpointStatus::OnHold).unwrap();
        let _lost = r.render_partial(&mut v, &c);
        let c = r.set_status(a, EndpointStatus::Connected).unwrap();
        let xml = r.render_partial(&mut v, &c);
        assert_eq!(
            state.apply(ConferenceInfo::parse(xml.as_bytes()).unwrap()),
            Err(ConferenceInfoError::VersionGap {
                expected: 2,
                got: 3
            })
        );
        let mut other = ConferenceInfo::parse(xml.as_bytes()).unwrap();
        other.version = 2;
        other.entity = "sip:other@example.com".into();
        assert_eq!(state.apply(other), Err(ConferenceInfoError::EntityMismatch));
    }

    #[test]
    fn reader_rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"<",
            b"<conference-info/>",
            b"<x xmlns=\"urn:ietf:params:xml:ns:conference-info\"/>",
            b"<conference-info xmlns=\"urn:ietf:params:xml:ns:conference-info\" entity=\"e\"/>",
            b"<conference-info xmlns=\"urn:ietf:params:xml:ns:conference-info\" entity=\"e\" version=\"1\"><users>",
            b"<conference-info xmlns=\"urn:ietf:params:xml:ns:conference-info\" entity=\"e\" version=\"1\" state=\"weird\"/>",
        ] {
            assert!(ConferenceInfo::parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!(
            "<conference-info xmlns=\"{CONFERENCE_INFO_NS}\" entity=\"e\" version=\"1\">{}{}</conference-info>",
            "<x>".repeat(100),
            "</x>".repeat(100)
        );
        assert_eq!(
            ConferenceInfo::parse(deep.as_bytes()),
            Err(ConferenceInfoError::TooLarge)
        );
    }

    #[test]
    fn reader_tolerates_prefixes_and_unknown_elements() {
        let xml = br#"<?xml version="1.0"?>
<ci:conference-info xmlns:ci="urn:ietf:params:xml:ns:conference-info" xmlns:x="urn:x"
    entity="sip:c@x" state="partial" version="7">
  <x:extra><ci:users><ci:user entity="sip:no@x"/></ci:users></x:extra>
  <ci:users state="partial">
    <ci:user entity="sip:u@x" state="partial">
      <ci:endpoint entity="sip:u@host" state="deleted"/>
    </ci:user>
  </ci:users>
</ci:conference-info>"#;
        let doc = ConferenceInfo::parse(xml).unwrap();
        assert_eq!((doc.version, doc.state), (7, DocState::Partial));
        assert_eq!(doc.users.len(), 1, "foreign subtree ignored");
        assert_eq!(doc.users[0].endpoints[0].state, DocState::Deleted);
    }
}
