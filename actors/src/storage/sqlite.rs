//! The embedded [`Store`]: SQLite in `<data-dir>/storage.db` (docs/decisions/0011).
//!
//! WAL journal (readers run beside the writer), foreign keys on, a busy timeout, and
//! `synchronous` FULL (durable against power loss) or NORMAL (durable against a process crash).
//! The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] are applied in order at
//! open, each in its own transaction. Media files live under `<data-dir>/files/<owner-hash>/<id>`
//! and are written (temp name, fsync, rename, fsync the directory) inside the transaction that
//! inserts their row, before it commits: a crash never leaves a row pointing at nothing.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cpm_engine::store::{
    ContactEntry, ConversationSummary, DeferredId, DeferredMessage, DeliveryState, Direction,
    FileId, Flags, HistoryId, Page, ReadQuery, ReadResult, Row, SessionKind, SessionRecord,
    StoragePolicy, Store, StoreError, StoredFile, StoredId, StoredMessage, UserSettings, WriteOp,
    WriteResult,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

/// The database file inside the data directory.
pub const DB_FILE: &str = "storage.db";

/// The schema, one entry per version: entry `i` takes a database from version `i` to `i + 1`.
/// Append only; never edit a released entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: held messages, network storage, session history, files.
    "CREATE TABLE deferred (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        request BLOB NOT NULL,
        imdn_id TEXT,
        dispositions TEXT,
        size INTEGER NOT NULL
     );
     CREATE INDEX deferred_by_recipient ON deferred(recipient, id);
     CREATE INDEX deferred_by_expiry ON deferred(expires_at);
     CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT
     );
     CREATE INDEX files_by_owner ON files(owner, id);
     CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        conversation TEXT NOT NULL,
        direction TEXT NOT NULL,
        peer TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        time INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        message_id TEXT NOT NULL,
        state TEXT NOT NULL,
        flags INTEGER NOT NULL DEFAULT 0,
        session_id TEXT,
        file_id INTEGER REFERENCES files(id) ON DELETE SET NULL
     );
     CREATE INDEX messages_by_conversation ON messages(owner, conversation, id);
     CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        conversation TEXT NOT NULL,
        peer TEXT NOT NULL,
        kind TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        end_reason TEXT
     );
     CREATE INDEX sessions_by_owner ON sessions(owner, id);",
    // 2: state updates by message id, the contact list, user settings.
    "CREATE INDEX messages_by_message_id ON messages(message_id);
     CREATE TABLE contacts (
        owner TEXT NOT NULL,
        uri TEXT NOT NULL,
        display_name TEXT,
        PRIMARY KEY (owner, uri)
     ) WITHOUT ROWID;
     CREATE TABLE settings (
        owner TEXT PRIMARY KEY,
        storage TEXT NOT NULL,
        record_sessions INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 3: the per-user cap counts a recipient's unexpired held messages at every hold; with
    // (recipient, id) alone that read a table row per held message. The index carries the
    // expiry too (one index, not a second one to update at every hold).
    "DROP INDEX deferred_by_recipient;
     CREATE INDEX deferred_by_recipient ON deferred(recipient, id, expires_at);",
];

/// How hard a commit waits for the disk (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced: survives power loss and `kill -9`.
    #[default]
    Full,
    /// The WAL is fsynced at checkpoints only: survives `kill -9`, a power loss may lose the
    /// last commits (never corrupts).
    Normal,
}

/// What went wrong inside the backend, turned into a [`StoreError`] at the trait boundary.
#[derive(Debug)]
enum Fail {
    Sql(rusqlite::Error),
    Io(io::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}
impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Io(e)
    }
}
impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}
impl From<Fail> for StoreError {
    fn from(f: Fail) -> StoreError {
        match f {
            Fail::Sql(e) => StoreError::Backend(e.to_string()),
            Fail::Io(e) => StoreError::Io(e.to_string()),
            Fail::Store(e) => e,
        }
    }
}

type Res<T> = Result<T, Fail>;

/// The SQLite backend: one connection. Open one per thread (the writer and each reader).
pub struct SqliteStore {
    conn: Connection,
    data_dir: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and the directory if needed) `<data_dir>/storage.db` and migrates it
    /// to the latest schema.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_at(data_dir, durability, MIGRATIONS.len()).map_err(StoreError::from)
    }

    /// Sets the connection's page cache to at most `kib` KiB (SQLite `cache_size`).
    pub fn set_cache_kib(&self, kib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -i64::from(kib))
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Opens and migrates up to schema version `target` (tests open old versions this way).
    fn open_at(data_dir: &Path, durability: Durability, target: usize) -> Res<SqliteStore> {
        fs::create_dir_all(data_dir)?;
        let mut conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("journal_mode is {mode}, not wal")).into());
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Pages come from SQLite's own cache and a memory map, not a read(2) each (the writer
        // spent a fifth of its time copying pages out of the kernel's page cache): 64 MiB of
        // cache and up to 1 GiB mapped (address space, not memory: the kernel pages it).
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn, target)?;
        Ok(SqliteStore {
            conn,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        version(&self.conn).map_err(StoreError::from)
    }

    /// The data directory (stored file paths are relative to it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl SqliteStore {
    /// The batch in one IMMEDIATE transaction; files of deleted rows are removed after commit.
    fn write_batch(&mut self, ops: &[WriteOp]) -> Res<Vec<WriteResult>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut unlink = Vec::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(apply(&tx, &self.data_dir, op, &mut unlink)?);
        }
        tx.commit()?;
        // The rows are gone for good: their files can go (a crash here leaves an orphan file,
        // never a dangling row).
        for path in unlink {
            if let Err(e) = fs::remove_file(self.data_dir.join(&path)) {
                tracing::warn!(%path, error = %e, "stored file not removed");
            }
        }
        Ok(out)
    }
}

fn version(conn: &Connection) -> Res<u32> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Applies the migrations the database lacks, up to version `target`, each in one transaction.
fn migrate(conn: &mut Connection, target: usize) -> Res<()> {
    let ours = MIGRATIONS.len() as u32;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = version(&tx)?;
        if v > ours {
            return Err(StoreError::SchemaTooNew(v, ours).into());
        }
        let Some(sql) = MIGRATIONS.get(v as usize).filter(|_| (v as usize) < target) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
        tracing::info!(version = v + 1, "storage schema migrated");
    }
}

impl Store for SqliteStore {
    fn write(&mut self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        self.write_batch(ops).map_err(StoreError::from)
    }

    fn read(&mut self, q: &ReadQuery) -> Result<ReadResult, StoreError> {
        query(&self.conn, q).map_err(StoreError::from)
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A recipient's held messages that count toward the cap: those not expired yet (expired ones,
/// not swept yet, will never be sent).
const CAP_COUNT: &str = "SELECT COUNT(*) FROM deferred WHERE recipient = ?1 AND expires_at > ?2";

/// One op inside the batch's transaction.
fn apply(
    tx: &Transaction<'_>,
    dir: &Path,
    op: &WriteOp,
    unlink: &mut Vec<String>,
) -> Res<WriteResult> {
    let affected = |n: usize| Ok(WriteResult::Affected(n as u64));
    match op {
        WriteOp::DeferCapped { message, cap } => {
            let queued: i64 = tx
                .prepare_cached(CAP_COUNT)?
                .query_row(params![message.recipient, message.received_at], |r| {
                    r.get(0)
                })?;
            let queued = u(queued);
            if queued >= *cap {
                return Ok(WriteResult::CapReached { queued });
            }
            apply(tx, dir, &WriteOp::Defer(message.clone()), unlink)
        }
        WriteOp::Defer(m) => {
            tx.prepare_cached(
                "INSERT INTO deferred (recipient, sender, received_at, expires_at, request,
                 imdn_id, dispositions, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                m.recipient,
                m.sender,
                m.received_at,
                m.expires_at,
                &m.request[..],
                m.imdn_message_id,
                m.dispositions,
                i(m.size)
            ])?;
            Ok(WriteResult::Deferred(DeferredId(tx.last_insert_rowid())))
        }
        WriteOp::DeleteDeferred { id } => affected(
            tx.prepare_cached("DELETE FROM deferred WHERE id = ?1")?
                .execute([id.0])?,
        ),
        WriteOp::ExpireDeferred { now, limit } => {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM deferred WHERE id IN (SELECT id FROM deferred
                 WHERE expires_at <= ?1 ORDER BY id LIMIT ?2) RETURNING id, recipient, sender,
                 received_at, expires_at, request, imdn_id, dispositions, size",
            )?;
            let mut rows = stmt
                .query_map(params![now, limit], deferred_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.sort_by_key(|r| r.id);
            Ok(WriteResult::Expired(rows))
        }
        WriteOp::StoreMessage(m) => {
            tx.prepare_cached(
                "INSERT INTO messages (owner, conversation, direction, peer, sender, recipient,
                 time, content_type, body, message_id, state, flags, session_id, file_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                m.owner,
                m.conversation,
                m.direction.as_str(),
                m.peer,
                m.sender,
                m.recipient,
                m.time,
                m.content_type,
                &m.body[..],
                m.message_id,
                m.state.as_str(),
                m.flags.bits(),
                m.session_id,
                m.file.map(|f| f.0)
            ])?;
            Ok(WriteResult::Stored(StoredId(tx.last_insert_rowid())))
        }
        WriteOp::SetState {
            owner,
            message_id,
            state,
        } => {
            // The states it may move from (DeliveryState::can_move_to), padded to three slots.
            let from: Vec<&str> = DeliveryState::ALL
                .into_iter()
                .filter(|s| s.can_move_to(*state))
                .map(DeliveryState::as_str)
                .collect();
            let Some(first) = from.first() else {
                return affected(0);
            };
            let slot = |k: usize| from.get(k).unwrap_or(first);
            affected(
                tx.prepare_cached(
                    "UPDATE messages SET state = ?1 WHERE message_id = ?2
                     AND (?3 IS NULL OR owner = ?3) AND state IN (?4, ?5, ?6)",
                )?
                .execute(params![
                    state.as_str(),
                    message_id,
                    owner,
                    slot(0),
                    slot(1),
                    slot(2)
                ])?,
            )
        }
        WriteOp::SetFlags {
            owner,
            id,
            set,
            clear,
        } => affected(
            tx.prepare_cached(
                "UPDATE messages SET flags = ((flags & ~?1) | ?2) WHERE owner = ?3 AND id = ?4",
            )?
            .execute(params![clear.bits(), set.bits(), owner, id.0])?,
        ),
        WriteOp::DeleteMessage { owner, id } => affected(
            tx.prepare_cached("DELETE FROM messages WHERE owner = ?1 AND id = ?2")?
                .execute(params![owner, id.0])?,
        ),
        WriteOp::StartSession(s) => {
            tx.prepare_cached(
                "INSERT INTO sessions (owner, conversation, peer, kind, started_at, ended_at,
                 end_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                s.owner,
                s.conversation,
                s.peer,
                s.kind.as_str(),
                s.started_at,
                s.ended_at,
                s.end_reason
            ])?;
            Ok(WriteResult::History(HistoryId(tx.last_insert_rowid())))
        }
        WriteOp::EndSession {
            owner,
            id,
            ended_at,
            reason,
        } => affected(
            tx.prepare_cached(
                "UPDATE sessions SET ended_at = ?1, end_reason = ?2 WHERE owner = ?3 AND id = ?4",
            )?
            .execute(params![ended_at, reason, owner, id.0])?,
        ),
        WriteOp::AddFile {
            owner,
            name,
            content_type,
            data,
        } => add_file(tx, dir, owner, name, content_type, data),
        WriteOp::DeleteFile { owner, id } => {
            let path: Option<String> = tx
                .prepare_cached("DELETE FROM files WHERE owner = ?1 AND id = ?2 RETURNING path")?
                .query_row(params![owner, id.0], |r| r.get(0))
                .optional()?;
            let n = usize::from(path.is_some());
            unlink.extend(path);
            affected(n)
        }
        WriteOp::PutContact(c) => affected(
            tx.prepare_cached(
                "INSERT INTO contacts (owner, uri, display_name) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner, uri) DO UPDATE SET display_name = excluded.display_name",
            )?
            .execute(params![c.owner, c.uri, c.display_name])?,
        ),
        WriteOp::DeleteContact { owner, uri } => affected(
            tx.prepare_cached("DELETE FROM contacts WHERE owner = ?1 AND uri = ?2")?
                .execute(params![owner, uri])?,
        ),
        WriteOp::PutSettings { owner, settings } => affected(
            tx.prepare_cached(
                "INSERT OR REPLACE INTO settings (owner, storage, record_sessions)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                owner,
                settings.storage.as_str(),
                settings.record_sessions
            ])?,
        ),
        _ => Err(StoreError::Invalid("operation not supported by the SQLite backend").into()),
    }
}

/// Lower-case hex of SHA-256.
fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The directory of an owner's files, relative to the data dir: `files/<16 hex of SHA-256>`
/// (no user-chosen text in paths).
pub fn owner_dir(owner: &str) -> String {
    let mut h = sha256_hex(owner.as_bytes());
    h.truncate(16);
    format!("files/{h}")
}

/// Inserts the row to get the id, writes `<owner-dir>/<id>` durably, then records the path; the
/// caller commits. A rolled-back id is handed out again and its orphan file replaced.
fn add_file(
    tx: &Transaction<'_>,
    dir: &Path,
    owner: &str,
    name: &str,
    content_type: &str,
    data: &Bytes,
) -> Res<WriteResult> {
    let sha = sha256_hex(data);
    tx.prepare_cached(
        "INSERT INTO files (owner, name, content_type, size, path, sha256)
         VALUES (?1, ?2, ?3, ?4, '', ?5)",
    )?
    .execute(params![
        owner,
        name,
        content_type,
        i(data.len() as u64),
        sha
    ])?;
    let id = FileId(tx.last_insert_rowid());
    let rel = format!("{}/{id}", owner_dir(owner));
    write_durably(dir, &rel, data)?;
    tx.prepare_cached("UPDATE files SET path = ?1 WHERE id = ?2")?
        .execute(params![rel, id.0])?;
    Ok(WriteResult::File(Row {
        id,
        record: StoredFile {
            owner: owner.to_owned(),
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            size: data.len() as u64,
            path: rel,
            sha256: Some(sha),
        },
    }))
}

/// Writes `data_dir/rel` so that once this returns it survives a crash: temp name, fsync,
/// rename, fsync of the directory (and of its parents when they were created).
fn write_durably(data_dir: &Path, rel: &str, data: &[u8]) -> io::Result<()> {
    let path = data_dir.join(rel);
    let dir = path.parent().unwrap_or(data_dir);
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        // A new directory's entry lives in its parent: sync the parents up to the data dir.
        let mut d = dir;
        while let Some(parent) = d.parent() {
            File::open(parent)?.sync_all()?;
            if parent == data_dir {
                break;
            }
            d = parent;
        }
    }
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

fn bad(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unknown {what} {value:?}").into(),
    )
}

fn blob(r: &rusqlite::Row<'_>, k: usize) -> rusqlite::Result<Bytes> {
    Ok(Bytes::from(r.get::<_, Vec<u8>>(k)?))
}

fn deferred_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row<DeferredId, DeferredMessage>> {
    Ok(Row {
        id: DeferredId(r.get(0)?),
        record: DeferredMessage {
            recipient: r.get(1)?,
            sender: r.get(2)?,
            received_at: r.get(3)?,
            expires_at: r.get(4)?,
            request: blob(r, 5)?,
            imdn_message_id: r.get(6)?,
            dispositions: r.get(7)?,
            size: u(r.get(8)?),
        },
    })
}

const MESSAGE_COLUMNS: &str = "id, owner, conversation, direction, peer, sender, recipient, \
     time, content_type, body, message_id, state, flags, session_id, file_id";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row<StoredId, StoredMessage>> {
    let direction: String = r.get(3)?;
    let state: String = r.get(11)?;
    Ok(Row {
        id: StoredId(r.get(0)?),
        record: StoredMessage {
            owner: r.get(1)?,
            conversation: r.get(2)?,
            direction: Direction::parse(&direction).ok_or_else(|| bad("direction", &direction))?,
            peer: r.get(4)?,
            sender: r.get(5)?,
            recipient: r.get(6)?,
            time: r.get(7)?,
            content_type: r.get(8)?,
            body: blob(r, 9)?,
            message_id: r.get(10)?,
            state: DeliveryState::parse(&state).ok_or_else(|| bad("state", &state))?,
            flags: Flags::from_bits_truncate(r.get(12)?),
            session_id: r.get(13)?,
            file: r.get::<_, Option<i64>>(14)?.map(FileId),
        },
    })
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row<HistoryId, SessionRecord>> {
    let kind: String = r.get(4)?;
    Ok(Row {
        id: HistoryId(r.get(0)?),
        record: SessionRecord {
            owner: r.get(1)?,
            conversation: r.get(2)?,
            peer: r.get(3)?,
            kind: SessionKind::parse(&kind).ok_or_else(|| bad("session kind", &kind))?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            end_reason: r.get(7)?,
        },
    })
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row<FileId, StoredFile>> {
    Ok(Row {
        id: FileId(r.get(0)?),
        record: StoredFile {
            owner: r.get(1)?,
            name: r.get(2)?,
            content_type: r.get(3)?,
            size: u(r.get(4)?),
            path: r.get(5)?,
            sha256: r.get(6)?,
        },
    })
}

/// The cursor of a page (`i64::MAX`: from the newest).
fn before(p: &Page) -> i64 {
    p.before.unwrap_or(i64::MAX)
}

fn query(conn: &Connection, q: &ReadQuery) -> Res<ReadResult> {
    Ok(match q {
        ReadQuery::Deferred {
            recipient,
            after,
            limit,
        } => ReadResult::Deferred(
            conn.prepare_cached(
                "SELECT id, recipient, sender, received_at, expires_at, request, imdn_id,
                 dispositions, size FROM deferred WHERE recipient = ?1 AND id > ?2
                 ORDER BY id LIMIT ?3",
            )?
            .query_map(
                params![recipient, after.map_or(0, |a| a.0), limit],
                deferred_row,
            )?
            .collect::<Result<_, _>>()?,
        ),
        ReadQuery::DeferredCount { recipient } => {
            let (messages, bytes): (i64, i64) = conn
                .prepare_cached(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM deferred WHERE recipient = ?1",
                )?
                .query_row([recipient], |r| Ok((r.get(0)?, r.get(1)?)))?;
            ReadResult::Count {
                messages: u(messages),
                bytes: u(bytes),
            }
        }
        ReadQuery::Conversations { owner } => ReadResult::Conversations(
            // SQLite takes the bare `peer` from the row holding MAX(time).
            conn.prepare_cached(
                "SELECT conversation, peer, MAX(time), COUNT(*),
                 SUM(direction = 'in' AND (flags & 1) = 0)
                 FROM messages WHERE owner = ?1 GROUP BY conversation ORDER BY 3 DESC, 1",
            )?
            .query_map([owner], |r| {
                Ok(ConversationSummary {
                    id: r.get(0)?,
                    peer: r.get(1)?,
                    last_time: r.get(2)?,
                    count: u(r.get(3)?),
                    unread: u(r.get(4)?),
                })
            })?
            .collect::<Result<_, _>>()?,
        ),
        ReadQuery::History {
            owner,
            conversation,
            from,
            to,
            page,
        } => ReadResult::Messages(
            conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE owner = ?1 AND conversation = ?2
                 AND time >= ?3 AND time < ?4 AND id < ?5 ORDER BY id DESC LIMIT ?6"
            ))?
            .query_map(
                params![
                    owner,
                    conversation,
                    from.unwrap_or(i64::MIN),
                    to.unwrap_or(i64::MAX),
                    before(page),
                    page.limit
                ],
                message_row,
            )?
            .collect::<Result<_, _>>()?,
        ),
        ReadQuery::Message { owner, id } => ReadResult::Message(
            conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE owner = ?1 AND id = ?2"
            ))?
            .query_row(params![owner, id.0], message_row)
            .optional()?,
        ),
        ReadQuery::File { owner, id } => ReadResult::File(
            conn.prepare_cached(
                "SELECT id, owner, name, content_type, size, path, sha256 FROM files
                 WHERE owner = ?1 AND id = ?2",
            )?
            .query_row(params![owner, id.0], file_row)
            .optional()?,
        ),
        ReadQuery::Contacts { owner } => ReadResult::Contacts(
            conn.prepare_cached(
                "SELECT owner, uri, display_name FROM contacts WHERE owner = ?1 ORDER BY uri",
            )?
            .query_map([owner], |r| {
                Ok(ContactEntry {
                    owner: r.get(0)?,
                    uri: r.get(1)?,
                    display_name: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?,
        ),
        ReadQuery::AllSettings => {
            let mut stmt =
                conn.prepare_cached("SELECT owner, storage, record_sessions FROM settings")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut all = Vec::with_capacity(rows.len());
            for (owner, storage, record_sessions) in rows {
                let storage = StoragePolicy::parse(&storage)
                    .ok_or_else(|| StoreError::Corrupt(format!("storage policy {storage:?}")))?;
                all.push((
                    owner,
                    UserSettings {
                        storage,
                        record_sessions,
                    },
                ));
            }
            ReadResult::AllSettings(all)
        }
        ReadQuery::Settings { owner } => {
            let row: Option<(String, bool)> = conn
                .prepare_cached("SELECT storage, record_sessions FROM settings WHERE owner = ?1")?
                .query_row([owner], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            ReadResult::Settings(match row {
                None => UserSettings::default(),
                Some((storage, record_sessions)) => UserSettings {
                    storage: StoragePolicy::parse(&storage).ok_or_else(|| {
                        StoreError::Corrupt(format!("storage policy {storage:?}"))
                    })?,
                    record_sessions,
                },
            })
        }
        ReadQuery::Sessions { owner, page } => ReadResult::Sessions(
            conn.prepare_cached(
                "SELECT id, owner, conversation, peer, kind, started_at, ended_at, end_reason
                 FROM sessions WHERE owner = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )?
            .query_map(params![owner, before(page), page.limit], session_row)?
            .collect::<Result<_, _>>()?,
        ),
        _ => return Err(StoreError::Invalid("query not supported by the SQLite backend").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpm-sqlite-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn table_exists(s: &SqliteStore, name: &str) -> bool {
        s.conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    }

    #[test]
    fn an_empty_database_gets_the_latest_schema_and_reopens_unchanged() {
        let d = dir("fresh");
        let s = SqliteStore::open(&d, Durability::Full).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert!(table_exists(&s, "settings"));
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = s
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(s);
        let s = SqliteStore::open(&d, Durability::Normal).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let _ = fs::remove_dir_all(&d);
    }

    /// The cap's count at every hold reads the index alone, not a table row per held message.
    #[test]
    fn the_cap_is_counted_from_an_index() {
        let d = dir("plan");
        let s = SqliteStore::open(&d, Durability::Normal).unwrap();
        let plan: Vec<String> = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CAP_COUNT}"))
            .unwrap()
            .query_map(params!["sip:bob@x", 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("COVERING INDEX deferred_by_recipient ")),
            "{plan:?}"
        );
        drop(s);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let d = dir("v1");
        let mut s = SqliteStore::open_at(&d, Durability::Full, 1).unwrap();
        assert_eq!(s.schema_version().unwrap(), 1);
        assert!(!table_exists(&s, "contacts"));
        let op = WriteOp::Defer(DeferredMessage {
            recipient: "sip:bob@x".into(),
            sender: "sip:alice@x".into(),
            received_at: 1,
            expires_at: 2,
            request: Bytes::from_static(b"MESSAGE sip:bob@x SIP/2.0\r\n\r\n"),
            imdn_message_id: None,
            dispositions: None,
            size: 29,
        });
        let r = s.write(std::slice::from_ref(&op)).unwrap();
        assert_eq!(r, vec![WriteResult::Deferred(DeferredId(1))]);
        drop(s);

        let mut s = SqliteStore::open(&d, Durability::Full).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert!(table_exists(&s, "contacts"));
        let q = ReadQuery::DeferredCount {
            recipient: "sip:bob@x".into(),
        };
        assert_eq!(
            s.read(&q).unwrap(),
            ReadResult::Count {
                messages: 1,
                bytes: 29
            }
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let d = dir("newer");
        let s = SqliteStore::open(&d, Durability::Full).unwrap();
        s.conn
            .pragma_update(None, "user_version", MIGRATIONS.len() as u32 + 1)
            .unwrap();
        drop(s);
        let e = SqliteStore::open(&d, Durability::Full).err().unwrap();
        assert_eq!(
            e,
            StoreError::SchemaTooNew(MIGRATIONS.len() as u32 + 1, MIGRATIONS.len() as u32)
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn owner_dirs_hide_the_owner() {
        let a = owner_dir("sip:alice@example.com");
        assert_eq!(a.len(), "files/".len() + 16);
        assert!(!a.contains("alice"));
        assert_ne!(a, owner_dir("sip:bob@example.com"));
    }
}
