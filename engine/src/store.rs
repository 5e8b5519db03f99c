//! Network storage (CPM.md §7 CM-5, §5 fig. 12): the records, the operations and the [`Store`]
//! trait shared by the message controller, the storage backends and the HTTP API.
//!
//! Sans-IO like the rest of the crate: the types and the trait only. A backend (SQLite in
//! `cpm-actors`) implements [`Store`] as blocking calls on its own thread; every write batch is one
//! transaction, and every read is scoped by the owner, so one user never reads another's data.
//! All times are unix milliseconds ([`UnixMs`]) given by the caller.

use std::fmt;

use bytes::Bytes;

/// A wall-clock time in milliseconds since the unix epoch (read by the caller, never here).
pub type UnixMs = i64;

/// Where a stored message stands (RFC 5438 §7: the dispositions an IMDN reports, plus the
/// server's own "stored" for a message it holds for an offline recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Accepted and held by the server (202 sent), not yet delivered.
    Stored,
    /// A device of the recipient answered 2xx, or a positive delivery IMDN arrived.
    Delivered,
    /// A display IMDN arrived (the user saw it).
    Displayed,
    /// Given up: expired, refused by every device, or a negative IMDN arrived.
    Failed,
}

impl DeliveryState {
    /// Every state, in order.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Stored,
        DeliveryState::Delivered,
        DeliveryState::Displayed,
        DeliveryState::Failed,
    ];

    /// The lower-case name used in storage and in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Stored => "stored",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Displayed => "displayed",
            DeliveryState::Failed => "failed",
        }
    }

    /// The state named `s` (as [`DeliveryState::as_str`] writes it).
    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether a message in this state may move to `to` (the moves of `deferred::Delivery`):
    /// only forward, and Displayed and Failed are final, so a late or duplicate IMDN changes
    /// nothing (RFC 5438 §7).
    pub fn can_move_to(self, to: DeliveryState) -> bool {
        matches!(self, DeliveryState::Stored | DeliveryState::Delivered) && to > self
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a row-id newtype (a database key handed out by [`Store::write`]).
macro_rules! row_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}

row_id! {
    /// The key of a [`DeferredMessage`]: increasing in arrival order.
    DeferredId,
    /// The key of a [`StoredMessage`] in network storage: increasing in storing order.
    StoredId,
    /// The key of a [`SessionRecord`].
    HistoryId,
    /// The key of a [`StoredFile`].
    FileId,
}

/// A record together with its key, as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<I, T> {
    /// The key.
    pub id: I,
    /// The record.
    pub record: T,
}

/// A pager-mode MESSAGE held for an offline recipient (ISSUE 5 store-and-forward): delivered
/// in arrival order when the user registers, deleted after a device's 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredMessage {
    /// The recipient's AOR (the queue it waits in).
    pub recipient: String,
    /// The sender's AOR (who gets a failure IMDN on expiry).
    pub sender: String,
    /// When it was accepted (202 sent).
    pub received_at: UnixMs,
    /// When it is given up.
    pub expires_at: UnixMs,
    /// The complete original SIP request; re-parsed and forwarded on delivery.
    pub request: Bytes,
    /// The IMDN Message-ID (RFC 5438 §6.3), if the message carries one.
    pub imdn_message_id: Option<String>,
    /// The requested dispositions (`Disposition-Notification`, RFC 5438 §6.3), if any.
    pub dispositions: Option<String>,
    /// Size in bytes counted against the per-user cap (normally `request.len()`).
    pub size: u64,
}

/// Whether a stored message was received or sent by the storage's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the owner.
    In,
    /// Sent by the owner.
    Out,
}

/// Declares `as_str`/`parse` for a field-less enum stored by name.
macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The lower-case name used in storage and in the HTTP API.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// The value named `s` (as `as_str` writes it).
            pub fn parse(s: &str) -> Option<$ty> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

named!(Direction { In => "in", Out => "out" });

/// The user's flags on a stored message (a small bit set: [`Flags::SEEN`], [`Flags::FLAGGED`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Read by the user on some device.
    pub const SEEN: Flags = Flags(1);
    /// Marked by the user.
    pub const FLAGGED: Flags = Flags(2);
    /// Every known flag.
    pub const ALL: Flags = Flags(3);

    /// The raw bits (as stored).
    pub fn bits(self) -> u8 {
        self.0
    }
    /// The flags of `bits`, unknown bits dropped.
    pub fn from_bits_truncate(bits: u8) -> Flags {
        Flags(bits & Flags::ALL.0)
    }
    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with `clear` removed, then `set` added.
    pub fn update(self, set: Flags, clear: Flags) -> Flags {
        Flags((self.0 & !clear.0) | set.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// A message in network storage (CM-5): a pager MESSAGE or an MSRP SEND, one copy per owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Whose storage it is in (an AOR).
    pub owner: String,
    /// The conversation: the peer's AOR for 1-to-1, else a Contribution-ID or conference URI.
    pub conversation: String,
    /// Received or sent by the owner.
    pub direction: Direction,
    /// The other party (an AOR or a conference URI).
    pub peer: String,
    /// The sender's AOR.
    pub sender: String,
    /// The recipient's AOR (or the conference URI).
    pub recipient: String,
    /// When it was sent or received.
    pub time: UnixMs,
    /// The content type (the inner one for CPIM).
    pub content_type: String,
    /// The content.
    pub body: Bytes,
    /// The IMDN Message-ID (RFC 5438 §6.3) or the server's own id; state updates match it.
    pub message_id: String,
    /// Where its delivery stands.
    pub state: DeliveryState,
    /// The owner's flags.
    pub flags: Flags,
    /// The MSRP session it was sent in, if any (session mode, fig. 12).
    pub session_id: Option<String>,
    /// The media file it carries, if any.
    pub file: Option<FileId>,
}

/// What kind of session a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// An MSRP chat (or file transfer) session.
    Chat,
    /// A voice or video call.
    Call,
    /// A conference.
    Conference,
}

named!(SessionKind { Chat => "chat", Call => "call", Conference => "conference" });

/// One entry of a user's session history (CM-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose history it is in.
    pub owner: String,
    /// The conversation it belongs to (as in [`StoredMessage::conversation`]).
    pub conversation: String,
    /// The other party.
    pub peer: String,
    /// Chat, call or conference.
    pub kind: SessionKind,
    /// When it started.
    pub started_at: UnixMs,
    /// When it ended, once it has.
    pub ended_at: Option<UnixMs>,
    /// Why it ended (e.g. "bye-callee"), once it has.
    pub end_reason: Option<String>,
}

/// A media file in network storage: the bytes live on disk, the row references them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Whose storage it is in.
    pub owner: String,
    /// The file name as sent (RFC 5547 `a=file-selector` name).
    pub name: String,
    /// Its content type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is, relative to the data directory.
    pub path: String,
    /// SHA-256 of the content, lower-case hex, if known.
    pub sha256: Option<String>,
}

/// One entry of the user's unified contact list (CM-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEntry {
    /// Whose list it is in.
    pub owner: String,
    /// The contact's URI (the key within the owner's list).
    pub uri: String,
    /// The name to show, if any.
    pub display_name: Option<String>,
}

/// Which messages go to the user's network storage (ISSUE 5 message policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StoragePolicy {
    /// A copy of every message.
    #[default]
    All,
    /// None.
    None,
    /// Only those the user asks to store.
    OnRequest,
}

named!(StoragePolicy { All => "all", None => "none", OnRequest => "on-request" });

/// A user's storage settings (the defaults apply to a user who never set any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSettings {
    /// Which messages are stored.
    pub storage: StoragePolicy,
    /// Whether sessions are recorded from their start (fig. 12 without the REFER).
    pub record_sessions: bool,
}

/// One write; a batch of them is applied as one transaction by [`Store::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Holds a message for an offline recipient → [`WriteResult::Deferred`].
    Defer(DeferredMessage),
    /// Holds a message unless its recipient has `cap` messages held already, counted in the
    /// same transaction (so the cap holds under concurrency) → [`WriteResult::Deferred`], or
    /// [`WriteResult::CapReached`].
    DeferCapped {
        /// The message.
        message: DeferredMessage,
        /// The most messages one recipient may have held.
        cap: u64,
    },
    /// Drops a held message (delivered: a device answered 2xx) → [`WriteResult::Affected`].
    DeleteDeferred {
        /// Its key.
        id: DeferredId,
    },
    /// Deletes and returns every held message expired at `now` (at most `limit`), so the
    /// caller can send the failure IMDNs → [`WriteResult::Expired`].
    ExpireDeferred {
        /// The current time.
        now: UnixMs,
        /// At most this many per op.
        limit: u32,
    },
    /// Stores a copy in network storage → [`WriteResult::Stored`].
    StoreMessage(StoredMessage),
    /// Moves the state of every copy with this message id (of one owner, or of all when
    /// `owner` is `None`) forward as [`DeliveryState::can_move_to`] allows → `Affected`.
    SetState {
        /// Only this owner's copy, or every copy.
        owner: Option<String>,
        /// The IMDN (or our own) message id.
        message_id: String,
        /// The new state.
        state: DeliveryState,
    },
    /// Changes the flags of one of the owner's messages: `clear` removed, then `set` added.
    SetFlags {
        /// The owner.
        owner: String,
        /// The message.
        id: StoredId,
        /// Flags to add.
        set: Flags,
        /// Flags to remove.
        clear: Flags,
    },
    /// Deletes one of the owner's messages → `Affected`.
    DeleteMessage {
        /// The owner.
        owner: String,
        /// The message.
        id: StoredId,
    },
    /// Opens a history entry → [`WriteResult::History`].
    StartSession(SessionRecord),
    /// Closes a history entry → `Affected`.
    EndSession {
        /// The owner.
        owner: String,
        /// The entry.
        id: HistoryId,
        /// When it ended.
        ended_at: UnixMs,
        /// Why.
        reason: String,
    },
    /// Writes a file to disk (durably) and then its row → [`WriteResult::File`].
    AddFile {
        /// The owner.
        owner: String,
        /// The file name as sent.
        name: String,
        /// Its content type.
        content_type: String,
        /// The content.
        data: Bytes,
    },
    /// Deletes one of the owner's files (its row, then the file once committed) → `Affected`.
    DeleteFile {
        /// The owner.
        owner: String,
        /// The file.
        id: FileId,
    },
    /// Adds or replaces a contact (keyed by owner and URI) → `Affected`.
    PutContact(ContactEntry),
    /// Removes a contact → `Affected`.
    DeleteContact {
        /// The owner.
        owner: String,
        /// The contact's URI.
        uri: String,
    },
    /// Sets the owner's settings → `Affected`.
    PutSettings {
        /// The owner.
        owner: String,
        /// The settings.
        settings: UserSettings,
    },
}

/// What one [`WriteOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// The key of a held message.
    Deferred(DeferredId),
    /// The key of a stored message.
    Stored(StoredId),
    /// The key of a history entry.
    History(HistoryId),
    /// The key and the record of a stored file.
    File(Row<FileId, StoredFile>),
    /// Rows changed (0: nothing matched, e.g. another owner's id).
    Affected(u64),
    /// The expired messages, deleted.
    Expired(Vec<Row<DeferredId, DeferredMessage>>),
    /// Not held: the recipient has this many messages held, the cap.
    CapReached {
        /// Messages held for the recipient.
        queued: u64,
    },
}

/// A page of a listing, newest first: entries with a key below `before` (all when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The cursor: the smallest key of the previous page.
    pub before: Option<i64>,
    /// At most this many entries.
    pub limit: u32,
}

/// One read; every query names its owner and sees only that owner's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadQuery {
    /// Held messages of a recipient in arrival order, after a key → [`ReadResult::Deferred`].
    Deferred {
        /// The recipient's AOR.
        recipient: String,
        /// Only those after this key (the last of the previous read).
        after: Option<DeferredId>,
        /// At most this many.
        limit: u32,
    },
    /// How many messages and bytes are held for a recipient → [`ReadResult::Count`].
    DeferredCount {
        /// The recipient's AOR.
        recipient: String,
    },
    /// The owner's conversations, most recent first → [`ReadResult::Conversations`].
    Conversations {
        /// The owner.
        owner: String,
    },
    /// Messages of one conversation, newest first → [`ReadResult::Messages`].
    History {
        /// The owner.
        owner: String,
        /// The conversation.
        conversation: String,
        /// Only messages with `from <= time < to` (open ends when `None`).
        from: Option<UnixMs>,
        /// See `from`.
        to: Option<UnixMs>,
        /// The page (cursor: a [`StoredId`]).
        page: Page,
    },
    /// One message → [`ReadResult::Message`].
    Message {
        /// The owner.
        owner: String,
        /// The message.
        id: StoredId,
    },
    /// One file's record → [`ReadResult::File`].
    File {
        /// The owner.
        owner: String,
        /// The file.
        id: FileId,
    },
    /// The owner's contact list, by URI → [`ReadResult::Contacts`].
    Contacts {
        /// The owner.
        owner: String,
    },
    /// The owner's settings (defaults if never set) → [`ReadResult::Settings`].
    Settings {
        /// The owner.
        owner: String,
    },
    /// Every user's explicit settings (for the server's cache at startup; not owner-scoped,
    /// never exposed through the API) → [`ReadResult::AllSettings`].
    AllSettings,
    /// The owner's session history, newest first → [`ReadResult::Sessions`].
    Sessions {
        /// The owner.
        owner: String,
        /// The page (cursor: a [`HistoryId`]).
        page: Page,
    },
}

/// One conversation in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation id.
    pub id: String,
    /// The peer of its latest message.
    pub peer: String,
    /// The time of its latest message.
    pub last_time: UnixMs,
    /// Its messages.
    pub count: u64,
    /// Its received messages not flagged [`Flags::SEEN`].
    pub unread: u64,
}

/// What a [`ReadQuery`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// Held messages in arrival order.
    Deferred(Vec<Row<DeferredId, DeferredMessage>>),
    /// Held messages and their total size.
    Count {
        /// Messages.
        messages: u64,
        /// Sum of their sizes.
        bytes: u64,
    },
    /// Conversations, most recent first.
    Conversations(Vec<ConversationSummary>),
    /// Messages, newest first.
    Messages(Vec<Row<StoredId, StoredMessage>>),
    /// One message, if the owner has it.
    Message(Option<Row<StoredId, StoredMessage>>),
    /// One file, if the owner has it.
    File(Option<Row<FileId, StoredFile>>),
    /// Contacts by URI.
    Contacts(Vec<ContactEntry>),
    /// Settings.
    Settings(UserSettings),
    /// Every user's explicit settings, by owner.
    AllSettings(Vec<(String, UserSettings)>),
    /// History entries, newest first.
    Sessions(Vec<Row<HistoryId, SessionRecord>>),
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The writer's queue is full: answer 503 and let the client retry.
    QueueFull,
    /// The storage was shut down.
    Closed,
    /// The database refused or failed the operation (the backend's message).
    Backend(String),
    /// A file could not be written or removed.
    Io(String),
    /// A stored value is not what this version writes (e.g. an unknown state name).
    Corrupt(String),
    /// The database was written by a newer version (its schema version, ours).
    SchemaTooNew(u32, u32),
    /// The operation is not valid (e.g. a limit of 0, or not supported by this backend).
    Invalid(&'static str),
}

impl StoreError {
    /// A short reason phrase (for logs and HTTP error bodies).
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::QueueFull => "storage queue full",
            StoreError::Closed => "storage shut down",
            StoreError::Backend(_) => "database error",
            StoreError::Io(_) => "file error",
            StoreError::Corrupt(_) => "corrupt stored value",
            StoreError::SchemaTooNew(..) => "database schema newer than this version",
            StoreError::Invalid(_) => "invalid storage operation",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend(m) | StoreError::Io(m) | StoreError::Corrupt(m) => {
                write!(f, "{}: {m}", self.reason())
            }
            StoreError::SchemaTooNew(found, ours) => {
                write!(f, "{} ({found} > {ours})", self.reason())
            }
            StoreError::Invalid(what) => write!(f, "{}: {what}", self.reason()),
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for StoreError {}

/// A storage backend (CM-5): blocking calls, made from one thread per instance.
pub trait Store: Send {
    /// Applies `ops` atomically as one transaction: all take effect or none; one result per op,
    /// in order.
    fn write(&mut self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, StoreError>;
    /// Answers one query, seeing only the rows of the owner it names.
    fn read(&mut self, q: &ReadQuery) -> Result<ReadResult, StoreError>;
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryState::parse("Stored"), None);
        for d in [Direction::In, Direction::Out] {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
        }
        for k in [
            SessionKind::Chat,
            SessionKind::Call,
            SessionKind::Conference,
        ] {
            assert_eq!(SessionKind::parse(k.as_str()), Some(k));
        }
        for p in [
            StoragePolicy::All,
            StoragePolicy::None,
            StoragePolicy::OnRequest,
        ] {
            assert_eq!(StoragePolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(StoragePolicy::parse("some"), None);
    }

    #[test]
    fn states_only_move_forward() {
        use DeliveryState::*;
        assert!(Stored.can_move_to(Delivered));
        assert!(Stored.can_move_to(Displayed));
        assert!(Delivered.can_move_to(Displayed));
        assert!(Stored.can_move_to(Failed));
        assert!(!Displayed.can_move_to(Delivered), "a late delivery IMDN");
        assert!(
            Delivered.can_move_to(Failed),
            "a negative IMDN after the device's 2xx"
        );
        assert!(!Displayed.can_move_to(Failed));
        assert!(!Failed.can_move_to(Delivered));
        assert!(!Delivered.can_move_to(Delivered));
    }

    #[test]
    fn flags_set_and_clear() {
        let f = Flags::NONE.update(Flags::SEEN | Flags::FLAGGED, Flags::NONE);
        assert!(f.contains(Flags::SEEN) && f.contains(Flags::FLAGGED));
        let f = f.update(Flags::NONE, Flags::FLAGGED);
        assert_eq!(f, Flags::SEEN);
        // Clear first, then set: the same flag in both ends up set.
        assert_eq!(Flags::NONE.update(Flags::SEEN, Flags::SEEN), Flags::SEEN);
        assert_eq!(Flags::from_bits_truncate(0xff), Flags::ALL);
    }

    #[test]
    fn errors_have_reasons() {
        let e = StoreError::SchemaTooNew(3, 2);
        assert_eq!(
            e.to_string(),
            "database schema newer than this version (3 > 2)"
        );
        assert_eq!(StoreError::QueueFull.reason(), "storage queue full");
    }
}
