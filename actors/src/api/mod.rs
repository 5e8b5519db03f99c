//! The network storage HTTP API (CPM.md §7 CM-5, ISSUE 5): `/api/v1/...`, JSON, described in
//! `docs/api/openapi.yaml`.
//!
//! ```text
//!  request ─► Owner extractor (auth.rs: Bearer | Digest → sip:user@first-domain, or 401/503)
//!          ─► handler ─► Storage::read/write(op, done) ── oneshot ──► .await ─► JSON
//! ```
//! Every query names the authenticated owner, never one taken from the request, so a user sees
//! only their rows; a foreign or unknown id answers 404 alike, so ids do not leak.
//! Storage callbacks run on the storage threads; a oneshot channel carries the result back to
//! the handler's task.

pub mod auth;
mod conference;
pub mod json;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use cpm_engine::store::{
    ContactEntry, FileId, HistoryId, Page, ReadQuery, ReadResult, SessionKind, SessionRecord,
    StoragePolicy, StoreError, StoredId, UserSettings, WriteOp, WriteResult,
};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::shared::Shared;
use auth::{ApiAuth, Owner, Refusal, Tokens};
use json::{
    ContactIo, ConversationOut, ErrorOut, FileOut, FlagsPatch, MessageOut, MessagePage, SessionOut,
    SessionPage, SettingsIo,
};

/// The prefix every route is under.
pub const PREFIX: &str = "/api/v1";
/// Entries per page when the request names no `limit`.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 500;

/// The API's state: the server's shared state and the authenticator.
pub struct ApiState {
    shared: Arc<Shared>,
    auth: ApiAuth,
}

impl ApiState {
    /// The state over `shared`; reads `--api-tokens` (an unreadable or bad file is an error).
    pub fn new(shared: Arc<Shared>) -> Result<ApiState, String> {
        let tokens = match &shared.config.api_tokens {
            Some(path) => Tokens::load(path)?,
            None => Tokens::default(),
        };
        let auth = ApiAuth::new(tokens, shared.seed() ^ 0x6170_6976);
        Ok(ApiState { shared, auth })
    }

    /// Runs a read on the storage reader thread and waits for its answer.
    async fn read(&self, q: ReadQuery) -> Result<ReadResult, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.shared.storage.read(q, move |r| {
            let _ = tx.send(r);
        })?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Queues a write, runs `after` on the writer thread once it committed (in commit order),
    /// and waits for its result.
    async fn write_then(
        &self,
        op: WriteOp,
        after: impl FnOnce(&WriteResult) + Send + 'static,
    ) -> Result<WriteResult, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.shared.storage.write(op, move |r| {
            if let Ok(w) = &r {
                after(w);
            }
            let _ = tx.send(r);
        })?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    async fn write(&self, op: WriteOp) -> Result<WriteResult, ApiError> {
        self.write_then(op, |_| {}).await
    }

    /// A write that changes rows: 404 when none matched (not the owner's, or gone).
    async fn change(&self, op: WriteOp, what: &'static str) -> Result<(), ApiError> {
        match self.write(op).await? {
            WriteResult::Affected(0) => Err(ApiError::NotFound(what)),
            WriteResult::Affected(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

/// Why a request failed; the body is always `{"error": "..."}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401 with these `WWW-Authenticate` values.
    Unauthorized(Vec<String>),
    /// 404: unknown, or another user's (the same answer, so ids do not leak).
    NotFound(&'static str),
    /// 409: the resource is in another state (a conference already running).
    Conflict(&'static str),
    /// 503 from the storage (queue full, shut down) or the API being disabled.
    Unavailable(&'static str),
    /// 500.
    Internal(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(m) | ApiError::Internal(m) => f.write_str(m),
            ApiError::Unauthorized(_) => f.write_str("authentication required"),
            ApiError::NotFound(what) => write!(f, "{what} not found"),
            ApiError::Conflict(why) => f.write_str(why),
            ApiError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::QueueFull | StoreError::Closed => ApiError::Unavailable(e.reason()),
            StoreError::Invalid(what) => ApiError::BadRequest(what.into()),
            other => {
                tracing::error!(error = %other, "API storage error");
                ApiError::Internal(other.reason().into())
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(challenges) => {
                for c in challenges {
                    r.append_header((header::WWW_AUTHENTICATE, c.as_str()));
                }
            }
            ApiError::Unavailable(_) => {
                r.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        r.json(ErrorOut {
            error: &self.to_string(),
        })
    }
}

fn unexpected<T: std::fmt::Debug>(r: &T) -> ApiError {
    tracing::error!(result = ?r, "API: unexpected storage result");
    ApiError::Internal("unexpected storage result".into())
}

impl FromRequest for Owner {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Owner, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Owner, ApiError> {
    let api = req
        .app_data::<web::Data<ApiState>>()
        .ok_or_else(|| ApiError::Internal("API state missing".into()))?;
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    api.auth
        .check(&api.shared, authorization, req.method().as_str(), target)
        .map_err(|r| match r {
            Refusal::Disabled => ApiError::Unavailable("API disabled: no users configured"),
            Refusal::Unauthorized(ch) => ApiError::Unauthorized(ch),
        })
}

type Api = web::Data<ApiState>;
type Reply = Result<HttpResponse, ApiError>;

/// Declares the routes once: [`ROUTES`] (checked against the OpenAPI file) and their
/// registration.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:ident),* $(,)?) => {
        /// Every route as (lower-case method, path under [`PREFIX`]).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn register(scope: actix_web::Scope) -> actix_web::Scope {
            scope $(.route($path, web::$method().to($handler)))*
        }
    };
}

routes! {
    get "/conversations" => conversations,
    get "/conversations/{id}/messages" => history,
    get "/messages/{id}" => get_message,
    patch "/messages/{id}" => patch_message,
    delete "/messages/{id}" => delete_message,
    get "/files/{id}" => get_file,
    delete "/files/{id}" => delete_file,
    get "/sessions" => sessions,
    get "/contacts" => contacts,
    put "/contacts" => put_contact,
    delete "/contacts" => delete_contact,
    get "/settings" => get_settings,
    put "/settings" => put_settings,
    post "/test/files" => test_add_file,
    post "/test/sessions" => test_add_session,
    get "/conferences" => conference_list,
    post "/conferences/{name}/start" => conference_start,
    post "/conferences/{id}/end" => conference_end,
    post "/conferences/{id}/participants/{pid}/mute" => conference_mute,
}

use conference::{
    end as conference_end, list as conference_list, mute as conference_mute,
    start as conference_start,
};

/// The `/api/v1` scope with every route, over the API state (shared by the HTTP workers).
pub fn scope(state: web::Data<ApiState>) -> actix_web::Scope {
    let json_err = |e: actix_web::error::JsonPayloadError, _: &HttpRequest| {
        ApiError::BadRequest(format!("bad JSON body: {e}")).into()
    };
    let query_err = |e: actix_web::error::QueryPayloadError, _: &HttpRequest| {
        ApiError::BadRequest(format!("bad query: {e}")).into()
    };
    let scope = web::scope(PREFIX)
        .app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(64 * 1024)
                .error_handler(json_err),
        )
        .app_data(web::QueryConfig::default().error_handler(query_err))
        .default_service(web::to(|| async {
            ApiError::NotFound("endpoint").error_response()
        }));
    register(scope)
}

/// A path id: a number, else nothing can match it (404).
fn id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(what))
}

/// A page from `before` and `limit`, asking one entry more than returned so the answer knows
/// whether another page exists.
fn page(before: Option<i64>, limit: Option<u32>) -> Result<(Page, usize), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    Ok((
        Page {
            before,
            limit: limit + 1,
        },
        limit as usize,
    ))
}

/// Cuts a page read with one extra entry: the entries and the next cursor, if more exist.
fn cut<T>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> i64) -> (Vec<T>, Option<i64>) {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = more.then(|| rows.last().map(&key)).flatten();
    (rows, next)
}

// ---- conversations and messages ----------------------------------------------------------

async fn conversations(api: Api, owner: Owner) -> Reply {
    match api
        .read(ReadQuery::Conversations { owner: owner.0 })
        .await?
    {
        ReadResult::Conversations(list) => {
            let list: Vec<ConversationOut<'_>> = list.iter().map(Into::into).collect();
            Ok(HttpResponse::Ok().json(serde_json::json!({ "conversations": list })))
        }
        other => Err(unexpected(&other)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    before: Option<i64>,
    limit: Option<u32>,
    from: Option<i64>,
    to: Option<i64>,
}

async fn history(
    api: Api,
    owner: Owner,
    path: web::Path<String>,
    q: web::Query<HistoryParams>,
) -> Reply {
    let (page, limit) = page(q.before, q.limit)?;
    let query = ReadQuery::History {
        owner: owner.0,
        conversation: path.into_inner(),
        from: q.from,
        to: q.to,
        page,
    };
    match api.read(query).await? {
        ReadResult::Messages(rows) => {
            let (rows, next_before) = cut(rows, limit, |r| r.id.0);
            Ok(HttpResponse::Ok().json(MessagePage {
                messages: rows.iter().map(Into::into).collect(),
                next_before,
            }))
        }
        other => Err(unexpected(&other)),
    }
}

async fn read_message(api: &ApiState, owner: String, id: i64) -> Reply {
    match api
        .read(ReadQuery::Message {
            owner,
            id: StoredId(id),
        })
        .await?
    {
        ReadResult::Message(Some(row)) => Ok(HttpResponse::Ok().json(MessageOut::from(&row))),
        ReadResult::Message(None) => Err(ApiError::NotFound("message")),
        other => Err(unexpected(&other)),
    }
}

async fn get_message(api: Api, owner: Owner, path: web::Path<String>) -> Reply {
    read_message(&api, owner.0, id(&path, "message")?).await
}

async fn patch_message(
    api: Api,
    owner: Owner,
    path: web::Path<String>,
    body: web::Json<FlagsPatch>,
) -> Reply {
    let id = id(&path, "message")?;
    let (set, clear) = body.to_update().ok_or_else(|| {
        ApiError::BadRequest("nothing to change: give seen and/or flagged".into())
    })?;
    let op = WriteOp::SetFlags {
        owner: owner.0.clone(),
        id: StoredId(id),
        set,
        clear,
    };
    api.change(op, "message").await?;
    read_message(&api, owner.0, id).await
}

async fn delete_message(api: Api, owner: Owner, path: web::Path<String>) -> Reply {
    let op = WriteOp::DeleteMessage {
        owner: owner.0,
        id: StoredId(id(&path, "message")?),
    };
    api.change(op, "message").await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- files ---------------------------------------------------------------------------------

/// The file at `rel` under `data_dir`, refusing a path that could leave it: absolute, with
/// `..`, or resolving (through symlinks) outside it.
fn resolve_in(data_dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let base = data_dir.canonicalize().ok()?;
    let full = base.join(rel).canonicalize().ok()?;
    full.starts_with(&base).then_some(full)
}

/// A file name safe inside a quoted `Content-Disposition` filename (RFC 6266 §4.1).
fn disposition_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn get_file(api: Api, owner: Owner, path: web::Path<String>) -> Reply {
    let query = ReadQuery::File {
        owner: owner.0,
        id: FileId(id(&path, "file")?),
    };
    let row = match api.read(query).await? {
        ReadResult::File(Some(row)) => row,
        ReadResult::File(None) => return Err(ApiError::NotFound("file")),
        other => return Err(unexpected(&other)),
    };
    let f = row.record;
    let Some(full) = resolve_in(&api.shared.config.data_dir, &f.path) else {
        tracing::error!(path = %f.path, "stored file path missing or outside the data dir");
        return Err(ApiError::Internal("stored file unavailable".into()));
    };
    let data = web::block(move || std::fs::read(full))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "reading a stored file");
            ApiError::Internal("stored file unavailable".into())
        })?;
    let content_type = HeaderValue::from_str(&f.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", disposition_name(&f.name)),
        ))
        .body(data))
}

async fn delete_file(api: Api, owner: Owner, path: web::Path<String>) -> Reply {
    let op = WriteOp::DeleteFile {
        owner: owner.0,
        id: FileId(id(&path, "file")?),
    };
    api.change(op, "file").await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- sessions, contacts, settings ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    before: Option<i64>,
    limit: Option<u32>,
}

async fn sessions(api: Api, owner: Owner, q: web::Query<PageParams>) -> Reply {
    let (page, limit) = page(q.before, q.limit)?;
    match api
        .read(ReadQuery::Sessions {
            owner: owner.0,
            page,
        })
        .await?
    {
        ReadResult::Sessions(rows) => {
            let (rows, next_before) = cut(rows, limit, |r| r.id.0);
            Ok(HttpResponse::Ok().json(SessionPage {
                sessions: rows.iter().map(SessionOut::from).collect(),
                next_before,
            }))
        }
        other => Err(unexpected(&other)),
    }
}

async fn contacts(api: Api, owner: Owner) -> Reply {
    match api.read(ReadQuery::Contacts { owner: owner.0 }).await? {
        ReadResult::Contacts(list) => {
            let list: Vec<ContactIo> = list.iter().map(Into::into).collect();
            Ok(HttpResponse::Ok().json(serde_json::json!({ "contacts": list })))
        }
        other => Err(unexpected(&other)),
    }
}

/// Longest contact URI accepted.
const MAX_URI: usize = 1024;
/// Longest display name accepted.
const MAX_NAME: usize = 256;

async fn put_contact(api: Api, owner: Owner, body: web::Json<ContactIo>) -> Reply {
    let c = body.into_inner();
    if c.uri.trim().is_empty() || c.uri.len() > MAX_URI {
        return Err(ApiError::BadRequest(format!(
            "uri must be 1..={MAX_URI} bytes"
        )));
    }
    if c.display_name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
        return Err(ApiError::BadRequest(format!(
            "display_name must be at most {MAX_NAME} bytes"
        )));
    }
    let entry = ContactEntry {
        owner: owner.0,
        uri: c.uri.clone(),
        display_name: c.display_name.clone(),
    };
    api.change(WriteOp::PutContact(entry), "contact").await?;
    Ok(HttpResponse::Ok().json(c))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UriParam {
    uri: String,
}

async fn delete_contact(api: Api, owner: Owner, q: web::Query<UriParam>) -> Reply {
    let op = WriteOp::DeleteContact {
        owner: owner.0,
        uri: q.into_inner().uri,
    };
    api.change(op, "contact").await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The user's settings as in force: `Shared::settings` (loaded from storage at startup and
/// updated after every committed PUT) or, for a user who set none, the server's defaults
/// (`--storage-default`).
async fn get_settings(api: Api, owner: Owner) -> Reply {
    let settings = api
        .shared
        .settings
        .read()
        .get(&owner.0)
        .copied()
        .unwrap_or(UserSettings {
            storage: api.shared.config.storage_default.0,
            record_sessions: false,
        });
    Ok(HttpResponse::Ok().json(SettingsIo::from(settings)))
}

/// Stores the settings, then (on the writer thread, in commit order, so two quick PUTs leave
/// the cache as the database) updates `Shared::settings`, which holds every explicit setting.
async fn put_settings(api: Api, owner: Owner, body: web::Json<SettingsIo>) -> Reply {
    let storage = StoragePolicy::parse(&body.storage).ok_or_else(|| {
        ApiError::BadRequest("storage must be one of all, none, on-request".into())
    })?;
    let settings = UserSettings {
        storage,
        record_sessions: body.record_sessions,
    };
    let shared = api.shared.clone();
    let aor = owner.0.clone();
    let op = WriteOp::PutSettings {
        owner: owner.0,
        settings,
    };
    api.write_then(op, move |_| {
        shared.settings.write().insert(aor, settings);
    })
    .await?;
    Ok(HttpResponse::Ok().json(SettingsIo::from(settings)))
}

// ---- test hooks (`--test-hooks` only) ------------------------------------------------------

fn require_test_hooks(api: &ApiState) -> Result<(), ApiError> {
    if api.shared.config.test_hooks {
        Ok(())
    } else {
        Err(ApiError::NotFound("endpoint"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileParams {
    name: String,
}

/// Test hook: stores the request body as a file of the caller (`?name=`, its Content-Type),
/// as the storage layer does for a file received in a session.
async fn test_add_file(
    api: Api,
    owner: Owner,
    req: HttpRequest,
    q: web::Query<FileParams>,
    body: web::Bytes,
) -> Reply {
    require_test_hooks(&api)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let op = WriteOp::AddFile {
        owner: owner.0,
        name: q.into_inner().name,
        content_type,
        data: body,
    };
    match api.write(op).await? {
        WriteResult::File(row) => Ok(HttpResponse::Created().json(FileOut::from(&row))),
        other => Err(unexpected(&other)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionSeed {
    conversation: String,
    peer: String,
    kind: String,
    started_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
}

/// Test hook: adds a session history entry of the caller.
async fn test_add_session(api: Api, owner: Owner, body: web::Json<SessionSeed>) -> Reply {
    require_test_hooks(&api)?;
    let s = body.into_inner();
    let kind = SessionKind::parse(&s.kind)
        .ok_or_else(|| ApiError::BadRequest("kind must be chat, call or conference".into()))?;
    let op = WriteOp::StartSession(SessionRecord {
        owner: owner.0,
        conversation: s.conversation,
        peer: s.peer,
        kind,
        started_at: s.started_at,
        ended_at: s.ended_at,
        end_reason: s.end_reason,
    });
    match api.write(op).await? {
        WriteResult::History(HistoryId(id)) => {
            Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
        }
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_file() {
        let yaml = include_str!("../../../docs/api/openapi.yaml");
        for (method, path) in ROUTES {
            let full = format!("\n  {PREFIX}{path}:\n");
            let start = yaml
                .find(&full)
                .unwrap_or_else(|| panic!("{PREFIX}{path} missing from openapi.yaml"));
            // The path's block: up to the next path key (two-space indent) or section.
            let block = &yaml[start + full.len()..];
            let end = block
                .find("\n  /")
                .or_else(|| block.find("\n\n"))
                .or_else(|| block.find("\ncomponents:"))
                .unwrap_or(block.len());
            assert!(
                block[..end].contains(&format!("\n    {method}:"))
                    || block.starts_with(&format!("    {method}:")),
                "{method} {PREFIX}{path} missing from openapi.yaml"
            );
        }
    }

    #[test]
    fn pages_ask_one_more() {
        let (p, limit) = page(Some(10), Some(2)).unwrap();
        assert_eq!((p.before, p.limit, limit), (Some(10), 3, 2));
        assert!(page(None, Some(0)).is_err());
        assert!(page(None, Some(MAX_LIMIT + 1)).is_err());
        assert_eq!(cut(vec![9, 8, 7], 2, |x| *x), (vec![9, 8], Some(8)));
        assert_eq!(cut(vec![9, 8], 2, |x| *x), (vec![9, 8], None));
        assert_eq!(cut(Vec::<i64>::new(), 2, |x| *x), (vec![], None));
    }

    #[test]
    fn file_paths_stay_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("cpm-api-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/a"), b"x").unwrap();
        assert!(resolve_in(&dir, "files/a").is_some());
        for bad in ["", "/etc/passwd", "../x", "files/../../x", "./files/a"] {
            assert!(resolve_in(&dir, bad).is_none(), "{bad}");
        }
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink("/etc", dir.join("files/out"));
            assert!(resolve_in(&dir, "files/out/hostname").is_none());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disposition_names_are_quoted_safely() {
        assert_eq!(disposition_name("a b\"c\\d\ne.png"), "a b_c_d_e.png");
    }
}
