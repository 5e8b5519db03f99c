//! The storage controller's session side (CPM.md §5 "Network storage of a session", fig. 12):
//! [`Recorder`], the MSRP [`Tap`] that stores what a recorded session relays, and
//! [`History`], the session-history entries of every anchored session. Decision 0013.
//!
//! ```text
//!  MSRP plane thread: SEND chunk relayed ─► Recorder::on_send ─► assemble by (side, Message-ID)
//!       ─ complete ($), aborted (#) or over the cap ─► one copy per owner:
//!           text-like, ≤ 64 KiB: WriteOp::StoreMessage
//!           else: WriteOp::AddFile, then (in its done) StoreMessage with the FileId
//! ```
//! Nothing here blocks: storage writes are queued (`Storage::write` never waits), a full
//! storage queue loses that copy (logged and counted in the storage metrics).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use cpm_engine::media::Side;
use cpm_engine::msrp::Flag;
use cpm_engine::store::{
    DeliveryState, Direction, Flags, HistoryId, SessionKind, SessionRecord, StoredMessage, UnixMs,
    WriteOp, WriteResult,
};
use parking_lot::Mutex;

use crate::msrp::{Tap, TapEvent};
use crate::storage::Storage;

/// A message's bytes kept at most (per message being assembled); beyond, the rest is dropped
/// and the stored copy flagged (see [`TRUNCATED_PARAM`]).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Messages assembled at once per recorded session at most; chunks of others are not stored.
pub const MAX_PARTIAL: usize = 8;
/// Bodies above this size (or of a non-text type) are stored as files.
pub const FILE_THRESHOLD: usize = 64 * 1024;
/// The Content-Type parameter that flags an incomplete copy (aborted, over [`MAX_MESSAGE`],
/// or with a gap): `;x-cpm-incomplete=<bytes stored>`.
pub const TRUNCATED_PARAM: &str = "x-cpm-incomplete";

/// The wall clock in milliseconds since the epoch.
pub fn unix_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as UnixMs)
}

/// The two parties of a session (canonical AORs, `[A, B]`) and whose storage gets copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    /// The AORs of A and B.
    pub aor: [String; 2],
    /// Whether each party's storage gets a copy (a party of ours).
    pub local: [bool; 2],
}

/// A message being assembled from its chunks (RFC 4975 §5.1, Byte-Range).
struct Partial {
    /// When assembly began (the oldest gives way when too many are open).
    opened: std::time::Instant,
    content_type: Option<Bytes>,
    /// The position (from 1) of the first byte kept.
    base: u64,
    data: BytesMut,
    incomplete: bool,
}

/// The MSRP tap of a recorded session: every relayed SEND, both directions, into both
/// parties' network storage (fig. 12).
pub struct Recorder {
    storage: Storage,
    parties: Parties,
    session_id: String,
    partial: Mutex<HashMap<(Side, Bytes), Partial>>,
}

impl Recorder {
    /// A recorder of the session `session_id` between `parties`.
    pub fn new(storage: Storage, parties: Parties, session_id: String) -> Arc<Recorder> {
        Arc::new(Recorder {
            storage,
            parties,
            session_id,
            partial: Mutex::new(HashMap::new()),
        })
    }

    /// One chunk: a whole message in one chunk is stored at once; others are assembled.
    fn chunk(&self, ev: TapEvent) {
        let key = (
            ev.from,
            ev.message_id
                .clone()
                .unwrap_or_else(|| Bytes::from_static(b"-")),
        );
        let mut parts = self.partial.lock();
        if !parts.contains_key(&key) {
            if ev.flag == Flag::Complete && ev.byte_range.start == 1 {
                drop(parts);
                let body = concat(&ev.body);
                let incomplete = ev.byte_range.total.is_some_and(|t| t != body.len() as u64);
                return self.store(ev.from, &key.1, ev.content_type, body, incomplete);
            }
            if parts.len() >= MAX_PARTIAL {
                // A sender that never ends its messages must not stop the recording (nor
                // hold more than MAX_PARTIAL of them): the oldest is stored as it is,
                // marked incomplete, and gives way.
                let oldest = parts
                    .iter()
                    .min_by_key(|(_, p)| p.opened)
                    .map(|(k, _)| k.clone());
                if let Some(old) = oldest.and_then(|k| parts.remove_entry(&k)) {
                    let ((from, id), p) = old;
                    tracing::warn!(session = %self.session_id, "recording: an unfinished message stored incomplete");
                    drop(parts);
                    self.store(from, &id, p.content_type, p.data.freeze(), true);
                    parts = self.partial.lock();
                }
            }
            parts.insert(
                key.clone(),
                Partial {
                    opened: std::time::Instant::now(),
                    content_type: ev.content_type.clone(),
                    base: ev.byte_range.start.max(1),
                    data: BytesMut::new(),
                    // Resumed (RFC 5547 §8) or joined mid-message: the start is missing.
                    incomplete: ev.byte_range.start > 1,
                },
            );
        }
        let Some(p) = parts.get_mut(&key) else { return };
        if p.content_type.is_none() {
            p.content_type = ev.content_type.clone();
        }
        append(p, ev.byte_range.start, &ev.body);
        if ev.flag == Flag::Continues {
            return;
        }
        let Some(p) = parts.remove(&key) else { return };
        drop(parts);
        let total = ev.byte_range.total;
        let incomplete = p.incomplete
            || ev.flag == Flag::Aborted
            || total.is_some_and(|t| t != p.base - 1 + p.data.len() as u64);
        self.store(ev.from, &key.1, p.content_type, p.data.freeze(), incomplete);
    }

    /// Writes one copy per local party (see [`store_copies`]).
    fn store(
        &self,
        from: Side,
        message_id: &Bytes,
        content_type: Option<Bytes>,
        body: Bytes,
        incomplete: bool,
    ) {
        let message_id = String::from_utf8_lossy(message_id).into_owned();
        let rows: Vec<StoredMessage> = [Side::A, Side::B]
            .into_iter()
            .filter(|owner| self.parties.local[owner.index()])
            .map(|owner| self.row(owner, from, &message_id))
            .collect();
        store_copies(
            &self.storage,
            &self.session_id,
            content_type,
            body,
            incomplete,
            rows,
        );
    }

    /// `owner`'s copy of a message `from` sent (type, body and file filled in by
    /// [`store_copies`]).
    fn row(&self, owner: Side, from: Side, message_id: &str) -> StoredMessage {
        let aor = |s: Side| self.parties.aor[s.index()].clone();
        let sent = owner == from;
        StoredMessage {
            owner: aor(owner),
            conversation: aor(owner.other()),
            direction: if sent { Direction::Out } else { Direction::In },
            peer: aor(owner.other()),
            sender: aor(from),
            recipient: aor(from.other()),
            time: unix_ms(),
            content_type: String::new(),
            body: Bytes::new(),
            message_id: message_id.to_string(),
            state: DeliveryState::Delivered,
            flags: if sent { Flags::SEEN } else { Flags::NONE },
            session_id: Some(self.session_id.clone()),
            file: None,
        }
    }
}

impl Tap for Recorder {
    fn on_send(&self, event: TapEvent) {
        self.chunk(event);
    }
}

/// Stores one recorded message as `rows` (one per owner: everything but the type, body and
/// file): a `message/cpim` body as its inner type and content (RFC 3862), isComposing (RFC
/// 3994) not at all, text up to [`FILE_THRESHOLD`] inline, anything else as a file
/// (`WriteOp::AddFile`, then the row with its `FileId`), an incomplete one flagged with
/// [`TRUNCATED_PARAM`]. Shared by the 1-to-1 [`Recorder`] and the conference chat recording.
pub fn store_copies(
    storage: &Storage,
    session: &str,
    content_type: Option<Bytes>,
    body: Bytes,
    incomplete: bool,
    rows: Vec<StoredMessage>,
) {
    let (mut ct, body) =
        cpm_engine::cpim::unwrap_content(content_type.as_deref(), body, "application/octet-stream");
    if is_composing(&ct) {
        return; // RFC 3994 state, not a message
    }
    let as_file = body.len() > FILE_THRESHOLD || !is_text_like(&ct);
    if incomplete {
        ct = format!("{ct};{TRUNCATED_PARAM}={}", body.len());
    }
    for row in rows {
        let row = StoredMessage {
            content_type: ct.clone(),
            ..row
        };
        let r = if as_file {
            let op = WriteOp::AddFile {
                owner: row.owner.clone(),
                name: format!("{}.bin", row.message_id),
                content_type: ct.clone(),
                data: body.clone(),
            };
            let st = storage.clone();
            storage.write(op, move |r| match r {
                Ok(WriteResult::File(f)) => {
                    let row = StoredMessage {
                        file: Some(f.id),
                        ..row
                    };
                    queue(&st, WriteOp::StoreMessage(row));
                }
                other => tracing::warn!(result = ?other.err(), "recording: file not stored"),
            })
        } else {
            let row = StoredMessage {
                body: body.clone(),
                ..row
            };
            storage.write(WriteOp::StoreMessage(row), |_| {})
        };
        if let Err(e) = r {
            tracing::warn!(%session, error = %e, "recording: copy not stored");
        }
    }
}

fn queue(storage: &Storage, op: WriteOp) {
    if let Err(e) = storage.write(op, |_| {}) {
        tracing::warn!(error = %e, "recording: write not queued");
    }
}

fn concat(parts: &[Bytes]) -> Bytes {
    match parts {
        [one] => one.clone(),
        _ => {
            let mut b = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in parts {
                b.extend_from_slice(p);
            }
            b.freeze()
        }
    }
}

/// Appends a chunk starting at `start` (from 1): a repeated range is skipped, a gap is
/// flagged, anything beyond [`MAX_MESSAGE`] is dropped and flagged.
fn append(p: &mut Partial, start: u64, body: &[Bytes]) {
    let have_end = p.base + p.data.len() as u64; // next position expected
    let mut skip = have_end.saturating_sub(start) as usize;
    if start > have_end {
        p.incomplete = true;
    }
    for b in body {
        let b = if skip >= b.len() {
            skip -= b.len();
            continue;
        } else {
            let s = &b[skip..];
            skip = 0;
            s
        };
        let room = MAX_MESSAGE.saturating_sub(p.data.len());
        if b.len() > room {
            p.incomplete = true;
        }
        p.data.extend_from_slice(&b[..b.len().min(room)]);
    }
}

/// The content type and content to store: a `message/cpim` body's inner ones (RFC 3862).
fn mime_is(ct: &str, mime: &str) -> bool {
    ct.split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(mime))
}

fn is_composing(ct: &str) -> bool {
    mime_is(ct, "application/im-iscomposing+xml")
}

/// Stored inline: `text/*` and `message/*` (IMDNs) bodies.
fn is_text_like(ct: &str) -> bool {
    let t = ct.trim_start().to_ascii_lowercase();
    t.starts_with("text/") || t.starts_with("message/")
}

/// A session's history entries (CM-5), one per local party: opened at the start, closed with
/// the CDR's end reason. The ids arrive from the writer thread; an end that comes first is
/// applied when they do.
#[derive(Clone)]
pub struct History {
    storage: Storage,
    state: Arc<Mutex<HistoryState>>,
}

#[derive(Default)]
struct HistoryState {
    ids: Vec<(String, HistoryId)>,
    ended: Option<(UnixMs, String)>,
}

impl History {
    /// Opens an entry for each local party of `parties`.
    pub fn start(storage: Storage, parties: &Parties, kind: SessionKind) -> History {
        let h = History {
            storage,
            state: Arc::new(Mutex::new(HistoryState::default())),
        };
        let now = unix_ms();
        for side in [Side::A, Side::B] {
            if !parties.local[side.index()] {
                continue;
            }
            let owner = parties.aor[side.index()].clone();
            let peer = parties.aor[side.other().index()].clone();
            let rec = SessionRecord {
                owner: owner.clone(),
                conversation: peer.clone(),
                peer,
                kind,
                started_at: now,
                ended_at: None,
                end_reason: None,
            };
            let (state, storage) = (h.state.clone(), h.storage.clone());
            let r = h.storage.write(WriteOp::StartSession(rec), move |r| {
                let Ok(WriteResult::History(id)) = r else {
                    return tracing::warn!("session history entry not stored");
                };
                let mut st = state.lock();
                if let Some((at, reason)) = st.ended.clone() {
                    queue(&storage, end_op(&owner, id, at, reason));
                }
                st.ids.push((owner, id));
            });
            if let Err(e) = r {
                tracing::warn!(error = %e, "session history entry not queued");
            }
        }
        h
    }

    /// Closes the entries with `reason` (once).
    pub fn end(&self, reason: &str) {
        let mut st = self.state.lock();
        if st.ended.is_some() {
            return;
        }
        let at = unix_ms();
        st.ended = Some((at, reason.to_string()));
        for (owner, id) in &st.ids {
            queue(&self.storage, end_op(owner, *id, at, reason.to_string()));
        }
    }
}

fn end_op(owner: &str, id: HistoryId, at: UnixMs, reason: String) -> WriteOp {
    WriteOp::EndSession {
        owner: owner.to_string(),
        id,
        ended_at: at,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_engine::msrp::ByteRange;
    use cpm_engine::store::{Page, ReadQuery, ReadResult};

    fn storage(name: &str) -> (Storage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("cpm-record-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (
            Storage::open(&dir, crate::storage::StorageOptions::default()).unwrap(),
            dir,
        )
    }

    fn parties() -> Parties {
        Parties {
            aor: ["sip:alice@x".into(), "sip:bob@x".into()],
            local: [true, true],
        }
    }

    fn ev(from: Side, id: &str, range: (u64, u64, u64), flag: Flag, body: &[u8]) -> TapEvent {
        TapEvent {
            from,
            message_id: Some(Bytes::from(id.to_string())),
            content_type: Some(Bytes::from_static(b"text/plain")),
            byte_range: ByteRange {
                start: range.0,
                end: Some(range.1),
                total: Some(range.2),
            },
            flag,
            body: vec![Bytes::copy_from_slice(body)],
        }
    }

    fn messages(s: &Storage, owner: &str, peer: &str) -> Vec<StoredMessage> {
        let (tx, rx) = std::sync::mpsc::channel();
        s.read(
            ReadQuery::History {
                owner: owner.into(),
                conversation: peer.into(),
                from: None,
                to: None,
                page: Page {
                    before: None,
                    limit: 100,
                },
            },
            move |r| tx.send(r).unwrap(),
        )
        .unwrap();
        match rx.recv().unwrap().unwrap() {
            ReadResult::Messages(rows) => rows.into_iter().map(|r| r.record).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunks_are_assembled_and_both_parties_get_a_copy() {
        let (s, dir) = storage("assemble");
        let r = Recorder::new(s.clone(), parties(), "c1".into());
        r.on_send(ev(Side::A, "m1", (1, 5, 11), Flag::Continues, b"hello"));
        // A repeated range is not stored twice.
        r.on_send(ev(Side::A, "m1", (3, 5, 11), Flag::Continues, b"llo"));
        r.on_send(ev(Side::A, "m1", (6, 11, 11), Flag::Complete, b" world"));
        r.on_send(ev(Side::B, "m2", (1, 2, 2), Flag::Complete, b"hi"));
        s.shutdown();
        let s = Storage::open(&dir, Default::default()).unwrap();
        let mut alice = messages(&s, "sip:alice@x", "sip:bob@x");
        alice.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        assert_eq!(alice.len(), 2);
        assert_eq!(&alice[0].body[..], b"hello world");
        assert_eq!(alice[0].direction, Direction::Out);
        assert_eq!(alice[0].conversation, "sip:bob@x");
        assert_eq!(alice[0].session_id.as_deref(), Some("c1"));
        assert_eq!(alice[1].direction, Direction::In);
        assert_eq!(alice[1].sender, "sip:bob@x");
        let bob = messages(&s, "sip:bob@x", "sip:alice@x");
        assert_eq!(bob.len(), 2);
        assert!(bob
            .iter()
            .any(|m| m.message_id == "m1" && m.direction == Direction::In));
        s.shutdown();
    }

    #[test]
    fn aborted_and_resumed_messages_are_flagged() {
        let (s, dir) = storage("flag");
        let r = Recorder::new(s.clone(), parties(), "c2".into());
        r.on_send(ev(Side::A, "a", (1, 3, 10), Flag::Continues, b"abc"));
        r.on_send(ev(Side::A, "a", (4, 5, 10), Flag::Aborted, b"de"));
        r.on_send(ev(Side::A, "b", (6, 10, 10), Flag::Complete, b"fghij"));
        s.shutdown();
        let s = Storage::open(&dir, Default::default()).unwrap();
        let msgs = messages(&s, "sip:alice@x", "sip:bob@x");
        let a = msgs.iter().find(|m| m.message_id == "a").unwrap();
        assert_eq!(&a.body[..], b"abcde");
        assert_eq!(a.content_type, format!("text/plain;{TRUNCATED_PARAM}=5"));
        let b = msgs.iter().find(|m| m.message_id == "b").unwrap();
        assert_eq!(&b.body[..], b"fghij");
        assert!(b.content_type.contains(TRUNCATED_PARAM));
        s.shutdown();
    }

    #[test]
    fn unfinished_messages_give_way_oldest_first() {
        let (s, dir) = storage("evict");
        let r = Recorder::new(s.clone(), parties(), "c3".into());
        // MAX_PARTIAL + 1 messages that never end: the first is stored incomplete when the
        // last one needs its slot, and the recording goes on.
        for i in 0..=MAX_PARTIAL {
            r.on_send(ev(
                Side::A,
                &format!("u{i}"),
                (1, 3, 9),
                Flag::Continues,
                b"abc",
            ));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        r.on_send(ev(Side::A, "done", (1, 2, 2), Flag::Complete, b"ok"));
        s.shutdown();
        let s = Storage::open(&dir, Default::default()).unwrap();
        let msgs = messages(&s, "sip:alice@x", "sip:bob@x");
        let ids: Vec<&str> = msgs.iter().map(|m| m.message_id.as_str()).collect();
        assert!(ids.contains(&"u0") && ids.contains(&"done"), "{ids:?}");
        assert!(!ids.contains(&"u1"), "{ids:?}");
        let u0 = msgs.iter().find(|m| m.message_id == "u0").unwrap();
        assert!(
            u0.content_type.contains(TRUNCATED_PARAM),
            "{}",
            u0.content_type
        );
        s.shutdown();
    }

    #[test]
    fn append_caps_and_skips() {
        let mut p = Partial {
            opened: std::time::Instant::now(),
            content_type: None,
            base: 1,
            data: BytesMut::new(),
            incomplete: false,
        };
        append(
            &mut p,
            1,
            &[Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
        );
        append(&mut p, 2, &[Bytes::from_static(b"bcdef")]);
        assert_eq!(&p.data[..], b"abcdef");
        assert!(!p.incomplete);
        append(&mut p, 9, &[Bytes::from_static(b"x")]);
        assert!(p.incomplete, "a gap");
    }

    /// CPIM unwrapping is `cpm_engine::cpim::unwrap_content`'s (tested there).
    #[test]
    fn text_is_kept_inline() {
        assert!(is_text_like("text/plain; charset=utf-8"));
        assert!(!is_text_like("application/octet-stream"));
    }
}
