//! The JSON shapes of the API (described in `docs/api/openapi.yaml`, schema names in brackets).

use base64::Engine as _;
use cpm_engine::store::{
    ContactEntry, ConversationSummary, FileId, Flags, HistoryId, Row, SessionRecord, StoredFile,
    StoredId, StoredMessage, UserSettings,
};
use serde::{Deserialize, Serialize};

/// [Error] `{"error": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorOut<'a> {
    /// What went wrong.
    pub error: &'a str,
}

/// [Conversation]
#[derive(Debug, Serialize)]
pub struct ConversationOut<'a> {
    id: &'a str,
    peer: &'a str,
    last_time: i64,
    count: u64,
    unread: u64,
}

impl<'a> From<&'a ConversationSummary> for ConversationOut<'a> {
    fn from(c: &'a ConversationSummary) -> Self {
        ConversationOut {
            id: &c.id,
            peer: &c.peer,
            last_time: c.last_time,
            count: c.count,
            unread: c.unread,
        }
    }
}

/// How a body is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// The body is the text itself (a textual content type holding valid UTF-8).
    Utf8,
    /// The body is standard base64 (RFC 4648 §4) of the bytes.
    Base64,
}

/// Whether a content type is text: `text/*`, JSON, XML, CPIM and their `+json`/`+xml` kinds.
pub fn is_textual(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.ends_with("+xml")
        || mime.ends_with("+json")
        || matches!(
            mime.as_str(),
            "application/json" | "application/xml" | "message/cpim"
        )
}

/// A body as JSON text and how it is encoded.
pub fn encode_body(content_type: &str, body: &[u8]) -> (String, BodyEncoding) {
    match std::str::from_utf8(body) {
        Ok(s) if is_textual(content_type) => (s.to_string(), BodyEncoding::Utf8),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(body),
            BodyEncoding::Base64,
        ),
    }
}

/// [Message]
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    id: i64,
    conversation: &'a str,
    direction: &'static str,
    peer: &'a str,
    sender: &'a str,
    recipient: &'a str,
    time: i64,
    content_type: &'a str,
    body: String,
    body_encoding: BodyEncoding,
    message_id: &'a str,
    state: &'static str,
    seen: bool,
    flagged: bool,
    session_id: Option<&'a str>,
    file_id: Option<i64>,
}

impl<'a> From<&'a Row<StoredId, StoredMessage>> for MessageOut<'a> {
    fn from(r: &'a Row<StoredId, StoredMessage>) -> Self {
        let m = &r.record;
        let (body, body_encoding) = encode_body(&m.content_type, &m.body);
        MessageOut {
            id: r.id.0,
            conversation: &m.conversation,
            direction: m.direction.as_str(),
            peer: &m.peer,
            sender: &m.sender,
            recipient: &m.recipient,
            time: m.time,
            content_type: &m.content_type,
            body,
            body_encoding,
            message_id: &m.message_id,
            state: m.state.as_str(),
            seen: m.flags.contains(Flags::SEEN),
            flagged: m.flags.contains(Flags::FLAGGED),
            session_id: m.session_id.as_deref(),
            file_id: m.file.map(|f| f.0),
        }
    }
}

/// [MessagePage]
#[derive(Debug, Serialize)]
pub struct MessagePage<'a> {
    /// Newest first.
    pub messages: Vec<MessageOut<'a>>,
    /// The `before` of the next page, present when more may exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// [Session]
#[derive(Debug, Serialize)]
pub struct SessionOut<'a> {
    id: i64,
    conversation: &'a str,
    peer: &'a str,
    kind: &'static str,
    started_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<&'a str>,
}

impl<'a> From<&'a Row<HistoryId, SessionRecord>> for SessionOut<'a> {
    fn from(r: &'a Row<HistoryId, SessionRecord>) -> Self {
        let s = &r.record;
        SessionOut {
            id: r.id.0,
            conversation: &s.conversation,
            peer: &s.peer,
            kind: s.kind.as_str(),
            started_at: s.started_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason.as_deref(),
        }
    }
}

/// [SessionPage]
#[derive(Debug, Serialize)]
pub struct SessionPage<'a> {
    /// Newest first.
    pub sessions: Vec<SessionOut<'a>>,
    /// The `before` of the next page, present when more may exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// [Contact] in and out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactIo {
    /// The contact's URI.
    pub uri: String,
    /// The name to show.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl From<&ContactEntry> for ContactIo {
    fn from(c: &ContactEntry) -> Self {
        ContactIo {
            uri: c.uri.clone(),
            display_name: c.display_name.clone(),
        }
    }
}

/// [Settings] in and out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsIo {
    /// `all`, `none` or `on-request`.
    pub storage: String,
    /// Record sessions from their start.
    pub record_sessions: bool,
}

impl From<UserSettings> for SettingsIo {
    fn from(s: UserSettings) -> Self {
        SettingsIo {
            storage: s.storage.as_str().into(),
            record_sessions: s.record_sessions,
        }
    }
}

/// [FlagsPatch] the body of `PATCH /messages/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsPatch {
    /// Set or clear SEEN.
    pub seen: Option<bool>,
    /// Set or clear FLAGGED.
    pub flagged: Option<bool>,
}

impl FlagsPatch {
    /// The flags to set and to clear; `None` when the patch changes nothing.
    pub fn to_update(&self) -> Option<(Flags, Flags)> {
        let mut set = Flags::NONE;
        let mut clear = Flags::NONE;
        for (want, flag) in [(self.seen, Flags::SEEN), (self.flagged, Flags::FLAGGED)] {
            match want {
                Some(true) => set = set | flag,
                Some(false) => clear = clear | flag,
                None => {}
            }
        }
        (self.seen.is_some() || self.flagged.is_some()).then_some((set, clear))
    }
}

/// [File] a stored file's record (test hook answer).
#[derive(Debug, Serialize)]
pub struct FileOut<'a> {
    id: i64,
    name: &'a str,
    content_type: &'a str,
    size: u64,
    sha256: Option<&'a str>,
}

impl<'a> From<&'a Row<FileId, StoredFile>> for FileOut<'a> {
    fn from(r: &'a Row<FileId, StoredFile>) -> Self {
        FileOut {
            id: r.id.0,
            name: &r.record.name,
            content_type: &r.record.content_type,
            size: r.record.size,
            sha256: r.record.sha256.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_text_or_base64() {
        assert_eq!(
            encode_body("text/plain;charset=utf-8", "héllo".as_bytes()),
            ("héllo".into(), BodyEncoding::Utf8)
        );
        assert_eq!(
            encode_body("application/im-iscomposing+xml", b"<x/>").1,
            BodyEncoding::Utf8
        );
        assert_eq!(
            encode_body("image/png", b"\x89PNG"),
            ("iVBORw==".into(), BodyEncoding::Base64)
        );
        // Declared text but not UTF-8: base64, so JSON carries the exact bytes.
        assert_eq!(encode_body("text/plain", b"\xff").1, BodyEncoding::Base64);
    }

    #[test]
    fn patches_set_and_clear() {
        let p = FlagsPatch {
            seen: Some(true),
            flagged: Some(false),
        };
        assert_eq!(p.to_update(), Some((Flags::SEEN, Flags::FLAGGED)));
        let p = FlagsPatch {
            seen: None,
            flagged: None,
        };
        assert_eq!(p.to_update(), None);
    }
}
