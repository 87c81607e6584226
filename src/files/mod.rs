//! The file server: `PUT`, `GET` and `DELETE` on `/fs/{client_name}/{path}`,
//! and the multipart `POST` uploads of seed 004's clients: one file at
//! `/fs/{client_name}/{path}`, several at `/fs/{client_name}/` (each named by
//! its part's filename, sanitized: a part's name never leaves the folder).
//!
//! Every request carries a key, in `Authorization` (`Bearer KEY` or the key
//! alone) or `x-fs-key`: the `fs_key` of a connected session's HELLO, or a
//! token. Anyone with a key may read any client's files; only the session
//! whose name is in the URL (by its `fs_key`), or the bearer of a token for
//! that name while a client of its user holds it, may write or delete
//! there. The HELLO uuid, which every client sees, is a read key while the
//! gateway requires no token, and a write key only with `fs_uuid_write`
//! (seed 004's clients), never while tokens are required. A browser page
//! calls it across origins only from the origins the gateway allows (the
//! same `Origin` check as its WebSockets, 403 otherwise; CORS is answered
//! around these routes, see `gateway::origin::cors`).
//!
//! Uploads, raw (`PUT`) or multipart (`POST`), are streamed to a temporary
//! file under `<files>/.tmp` and renamed into place once complete, so a
//! reader never sees half a file and a failed or oversized upload leaves
//! nothing behind; a body that delivers less than
//! 64 KiB in `upload_idle_timeout_ms` fails the upload (408), so a client
//! sending a byte a second cannot hold an upload and its file open forever. The
//! bytes a client and all clients may store are bounded ([`quota`]).
//!
//! Files are served as downloads (`Content-Disposition: attachment`) under
//! a sandboxing `Content-Security-Policy` and `nosniff`: an uploaded `.html`
//! or `.svg` must never run as a page of the console's origin. A client's folder is moved to
//! `<files>/.trash` when it leaves (a rename: the namespace never waits on
//! disk) and deleted from there in the background, by the [`Janitor`] the
//! namespace tells of departures.

mod multipart;
pub mod quota;

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::auth::{self, Auth, Claims};
use crate::config::Settings;
use crate::gateway::origin;
use crate::namespace::{Change, Namespace, Observer};
use crate::protocol::files::{Deleted, FileError, Stored, FS_KEY_HEADER};
use crate::protocol::ClientInfo;
use quota::Exceeded;
pub use quota::Quota;

const TMP: &str = ".tmp";
/// Bytes an upload must deliver within each `upload_idle_timeout_ms` (or
/// end): 64 KiB in the default 30 s asks no more than 2.2 kB/s of a link.
const UPLOAD_PROGRESS: u64 = 65_536;
/// The policy of every served file: no script, no plugin, no request of
/// its own, a unique origin, should a browser render it anyway.
const FILE_CSP: &str = "sandbox; default-src 'none'";
const TRASH: &str = ".trash";

/// A refused file request: an HTTP status and the reason, sent as
/// `{"error": reason}`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct FsError {
    status: StatusCode,
    reason: String,
}

impl FsError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        FsError {
            status,
            reason: reason.into(),
        }
    }

    fn io(context: &str, e: io::Error) -> Self {
        tracing::error!(error = %e, "{context}");
        FsError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{context}: {e}"))
    }
}

impl ResponseError for FsError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(FileError {
            error: self.reason.clone(),
        })
    }
}

/// What the file handlers need.
pub struct Files {
    dir: PathBuf,
    idle_timeout: Duration,
    /// `max_file_size`, `fs_uuid_write` and the allowed origins.
    settings: Arc<Settings>,
    quota: Arc<Quota>,
    namespace: Namespace,
    auth: Arc<Auth>,
    /// The lock [`prepare`] took, held as long as the server runs.
    _lock: Option<std::fs::File>,
}

impl Files {
    pub fn new(
        settings: &Arc<Settings>,
        namespace: Namespace,
        auth: Arc<Auth>,
        quota: Arc<Quota>,
        lock: Option<std::fs::File>,
    ) -> Self {
        Files {
            dir: settings.files_dir(),
            idle_timeout: Duration::from_millis(settings.upload_idle_timeout_ms),
            settings: Arc::clone(settings),
            quota,
            namespace,
            auth,
            _lock: lock,
        }
    }

    /// The connected client a session key belongs to.
    fn holder(&self, key: &Uuid) -> Option<ClientInfo> {
        self.namespace.client(key)
    }
}

/// Removes the folder of a client that left, on the node that cleans up
/// after it; every node stops counting that folder's bytes.
pub struct Janitor {
    dir: PathBuf,
    quota: Arc<Quota>,
}

impl Janitor {
    pub fn new(dir: PathBuf, quota: Arc<Quota>) -> Self {
        Janitor { dir, quota }
    }
}

impl Observer for Janitor {
    fn observe(&self, change: &Change<'_>) {
        if let Change::Left {
            client, cleanup, ..
        } = change
        {
            if *cleanup {
                discard_client_dir(&self.dir, &client.name, client.uuid);
            }
            self.quota.forget(&client.name);
        }
    }
}

/// Registers the file routes, under `/fs`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/{client}/{path:.*}")
            .route(web::put().to(put_file))
            .route(web::post().to(multipart::post_files))
            .route(web::get().to(get_file))
            .route(web::head().to(get_file))
            .route(web::delete().to(delete_file)),
    );
}

/// Prepares the files folder at start-up. Replicas of a cluster share the
/// folder and keep it. A gateway that does not share it owns it: it locks
/// the folder itself (held as long as the returned handle is open), so that
/// a second gateway started on the same data folder by mistake is refused
/// instead of throwing the first one's files away; and since its clients do
/// not outlive it, the files of a previous run are thrown away (moved out
/// at once, deleted in the background).
pub fn prepare(files_dir: &Path, shared: bool) -> io::Result<Option<std::fs::File>> {
    std::fs::create_dir_all(files_dir)?;
    let lock = if shared {
        None
    } else {
        let lock = take_lock(files_dir)?;
        let stale = files_dir.with_extension(format!("stale-{}", Uuid::new_v4()));
        for entry in std::fs::read_dir(files_dir)? {
            let entry = entry?;
            std::fs::create_dir_all(&stale)?;
            std::fs::rename(entry.path(), stale.join(entry.file_name()))?;
        }
        if stale.exists() {
            std::thread::spawn(move || std::fs::remove_dir_all(stale));
        }
        Some(lock)
    };
    std::fs::create_dir_all(files_dir.join(TMP))?;
    std::fs::create_dir_all(files_dir.join(TRASH))?;
    Ok(lock)
}

/// Takes the exclusive lock on a folder (an advisory lock on the folder
/// itself: nothing is written for it).
fn take_lock(folder: &Path) -> io::Result<std::fs::File> {
    let handle = std::fs::File::open(folder)?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::other(
            "another gateway runs on this data folder (it holds the folder's lock)",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Discards a departed client's folder: renamed at once, deleted later.
fn discard_client_dir(files_dir: &Path, name: &str, uuid: Uuid) {
    let folder = files_dir.join(name);
    let trash = files_dir.join(TRASH).join(uuid.to_string());
    match std::fs::rename(&folder, &trash) {
        Ok(()) => {
            std::thread::spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(path = %trash.display(), error = %e, "cannot delete a departed client's files");
                }
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %folder.display(), error = %e, "cannot discard a departed client's files")
        }
    }
}

/// Who a file request comes from.
enum Caller {
    /// A connected session, by its `fs_key` (or its uuid, where that is
    /// accepted).
    Session(ClientInfo),
    /// The bearer of a token.
    Token(Claims),
}

/// Who the request's key belongs to; `write` for PUT, POST and DELETE. A
/// browser page of an origin the gateway does not allow is refused first.
fn authenticate(req: &HttpRequest, files: &Files, write: bool) -> Result<Caller, FsError> {
    if !origin::allowed(req.headers(), &files.settings) {
        return Err(FsError::new(StatusCode::FORBIDDEN, origin::REFUSED));
    }
    let refused = |reason: &str| FsError::new(StatusCode::UNAUTHORIZED, reason);
    // Either header may carry the key (a proxy may set its own Authorization).
    let mut keys = [header::AUTHORIZATION.as_str(), FS_KEY_HEADER]
        .into_iter()
        .filter_map(|name| req.headers().get(name))
        .filter_map(|value| value.to_str().ok())
        .map(|value| auth::bearer(value).unwrap_or(value.trim()))
        .peekable();
    if keys.peek().is_none() {
        return Err(refused(
            "missing key: send the fs_key from HELLO, or a token, in the Authorization or x-fs-key header",
        ));
    }
    let required = files.auth.required();
    let mut why = "the key is neither a session's fs_key nor a valid token";
    for key in keys {
        if let Some(uuid) = files.auth.check_fs_key(key) {
            return files
                .holder(&uuid)
                .map(Caller::Session)
                .ok_or_else(|| refused("the fs_key belongs to no connected client"));
        }
        if let Ok(uuid) = key.parse::<Uuid>() {
            let accepted = !required && (!write || files.settings.fs_uuid_write);
            if !accepted {
                why = if required {
                    "a client uuid is no key while this gateway requires tokens: use the fs_key from HELLO"
                } else {
                    "a client uuid is public: write with the fs_key from HELLO (or set fs_uuid_write)"
                };
                continue;
            }
            return files
                .holder(&uuid)
                .map(Caller::Session)
                .ok_or_else(|| refused("the key belongs to no connected client"));
        }
        match files.auth.verify(key) {
            Ok(claims) => return Ok(Caller::Token(claims)),
            Err(e) => why = e.reason(),
        }
    }
    Err(refused(why))
}

/// Resolves `{client}/{path}` under the files folder, refusing anything that
/// could leave the client's folder.
fn resolve(files_dir: &Path, client: &str, path: &str) -> Result<PathBuf, FsError> {
    let bad = |reason: &str| FsError::new(StatusCode::BAD_REQUEST, reason);
    check_client(client)?;
    if path.is_empty() {
        return Err(bad("a file path is required after the client name"));
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(bad("the path must be relative, with / as separator"));
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(bad("the path may not contain empty, '.' or '..' segments"));
    }
    let relative = Path::new(path);
    // Belt and braces: after the checks above, only plain names remain.
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(bad("the path must be relative"));
    }
    Ok(files_dir.join(client).join(relative))
}

/// Refuses a client name that is not one (a client's folder is named after
/// it).
fn check_client(client: &str) -> Result<(), FsError> {
    if client.is_empty()
        || !client
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(FsError::new(
            StatusCode::BAD_REQUEST,
            "the client name must be letters, digits and underscores",
        ));
    }
    Ok(())
}

/// The `{client}` and `{path}` of a file URL, fully percent-decoded.
#[derive(serde::Deserialize)]
struct FileUrl {
    client: String,
    path: String,
}

impl FileUrl {
    fn of(req: &HttpRequest) -> Result<FileUrl, FsError> {
        // `match_info().get` keeps `%2F` (and `%25`) encoded, so a name like
        // `..%2F..%2Fx` would be stored literally and `a%2Fb` would not be
        // `a/b`. Decode everything first, then check the decoded path.
        req.match_info()
            .load()
            .map_err(|e| FsError::new(StatusCode::BAD_REQUEST, format!("bad file URL: {e}")))
    }
}

fn target(req: &HttpRequest, files: &Files) -> Result<(String, PathBuf), FsError> {
    let FileUrl { client, path } = FileUrl::of(req)?;
    let file = resolve(&files.dir, &client, &path)?;
    Ok((client, file))
}

/// Refuses a write to `client`'s folder by anyone but that client.
fn require_owner(who: &Caller, client: &str, files: &Files) -> Result<(), FsError> {
    let forbidden = |reason: String| Err(FsError::new(StatusCode::FORBIDDEN, reason));
    match who {
        Caller::Session(info) if info.name == client => Ok(()),
        Caller::Session(info) => forbidden(format!(
            "only {client:?} may change its files; this key belongs to {:?}",
            info.name
        )),
        Caller::Token(claims) if !claims.allows_name(client) => forbidden(format!(
            "only {client:?} may change its files; this token is for {:?}",
            claims.name
        )),
        Caller::Token(claims) => {
            let held = files
                .namespace
                .directory()
                .named(client)
                .is_some_and(|c| c.info.user.as_deref() == Some(claims.sub.as_str()));
            if held {
                Ok(())
            } else {
                forbidden(format!(
                    "no client of {:?} is connected as {client:?}",
                    claims.sub
                ))
            }
        }
    }
}

async fn put_file(
    req: HttpRequest,
    mut body: web::Payload,
    files: web::Data<Files>,
) -> Result<HttpResponse, FsError> {
    let (client, file) = target(&req, &files)?;
    let who = authenticate(&req, &files, true)?;
    require_owner(&who, &client, &files)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > files.settings.max_file_size) {
        return Err(too_big(&files));
    }
    // The file this upload replaces is freed when it is stored: it leaves
    // room for the new one.
    let replaced = file_size(&file).await;
    if let Some(len) = declared {
        files
            .quota
            .fits(&client, len, replaced)
            .map_err(over_quota)?;
    }
    let mut upload = Upload::start(&files, &client, replaced).await?;
    let mut pace = Pace::new(files.idle_timeout);
    while let Some(chunk) = pace.next(&mut body).await? {
        let chunk = chunk.map_err(|e| {
            FsError::new(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"))
        })?;
        upload.write(&chunk).await?;
        pace.advanced(chunk.len());
    }
    still_there(&who, &client, &files)?;
    let size = upload.store(&file).await?;
    Ok(HttpResponse::Created().json(Stored { size }))
}

fn too_big(files: &Files) -> FsError {
    FsError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "files are limited to {} bytes",
            files.settings.max_file_size
        ),
    )
}

/// Refuses to store an upload whose client left while it was streaming
/// in: its folder is gone and must not come back.
fn still_there(who: &Caller, client: &str, files: &Files) -> Result<(), FsError> {
    let there = match who {
        Caller::Session(info) => files.holder(&info.uuid).is_some(),
        Caller::Token(_) => require_owner(who, client, files).is_ok(),
    };
    if there {
        Ok(())
    } else {
        Err(FsError::new(
            StatusCode::GONE,
            "the client disconnected during the upload",
        ))
    }
}

/// The deadline an upload's body must keep ahead of. It moves on only with
/// real progress: a body trickling in a byte at a time is as stalled as
/// one sending nothing.
struct Pace {
    idle: Duration,
    deadline: tokio::time::Instant,
    progress: u64,
}

impl Pace {
    fn new(idle: Duration) -> Pace {
        Pace {
            idle,
            deadline: tokio::time::Instant::now() + idle,
            progress: 0,
        }
    }

    /// The next item of a body's stream; 408 once it has stalled.
    async fn next<S: Stream + Unpin>(&self, stream: &mut S) -> Result<Option<S::Item>, FsError> {
        tokio::time::timeout_at(self.deadline, stream.next())
            .await
            .map_err(|_| {
                FsError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the upload sent less than {UPLOAD_PROGRESS} bytes in {} ms",
                        self.idle.as_millis()
                    ),
                )
            })
    }

    /// Counts `bytes` received.
    fn advanced(&mut self, bytes: usize) {
        self.progress += bytes as u64;
        if self.progress >= UPLOAD_PROGRESS {
            self.progress = 0;
            self.deadline = tokio::time::Instant::now() + self.idle;
        }
    }
}

/// The size of the file at `path`; 0 when there is none.
async fn file_size(path: &Path) -> u64 {
    tokio::fs::metadata(path)
        .await
        .ok()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len())
}

/// A file under a path component that is itself a file is a conflict, not
/// an internal error.
fn conflict_or_io(context: &str, e: io::Error) -> FsError {
    if matches!(
        e.kind(),
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists | io::ErrorKind::IsADirectory
    ) {
        FsError::new(
            StatusCode::CONFLICT,
            format!("{context}: a file or folder is in the way"),
        )
    } else {
        FsError::io(context, e)
    }
}

/// Why an upload does not fit: 413 for the client's own limit, 507 when
/// the file server as a whole is full.
fn over_quota(exceeded: Exceeded) -> FsError {
    match exceeded {
        Exceeded::Client(max) => FsError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a client's files may take at most {max} bytes (max_client_files_bytes)"),
        ),
        Exceeded::Total(max) => FsError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the file server holds at most {max} bytes (max_files_bytes)"),
        ),
    }
}

/// A file being received into `<files>/.tmp`. Its bytes count against the
/// quotas as they arrive; unless it was stored, its temporary file is
/// deleted and the bytes it reserved no longer count.
struct Upload<'a> {
    path: PathBuf,
    out: tokio::fs::File,
    kept: bool,
    files: &'a Files,
    client: &'a str,
    /// The bytes of the file it replaces: freed when it is stored, they
    /// leave room for it.
    replaced: u64,
    reserved: u64,
}

impl<'a> Upload<'a> {
    async fn start(
        files: &'a Files,
        client: &'a str,
        replaced: u64,
    ) -> Result<Upload<'a>, FsError> {
        let path = files.dir.join(TMP).join(Uuid::new_v4().to_string());
        let out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| FsError::io("cannot create the upload file", e))?;
        Ok(Upload {
            path,
            out,
            kept: false,
            files,
            client,
            replaced,
            reserved: 0,
        })
    }

    /// Appends `chunk`, within `max_file_size` and the quotas.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), FsError> {
        let len = chunk.len() as u64;
        if self.reserved + len > self.files.settings.max_file_size {
            return Err(too_big(self.files));
        }
        self.files
            .quota
            .reserve(self.client, len, self.replaced)
            .map_err(over_quota)?;
        self.reserved += len;
        self.out
            .write_all(chunk)
            .await
            .map_err(|e| FsError::io("cannot write the upload", e))
    }

    /// Moves the complete file to `file`, replacing what was there; its size.
    async fn store(mut self, file: &Path) -> Result<u64, FsError> {
        self.out
            .flush()
            .await
            .map_err(|e| FsError::io("cannot write the upload", e))?;
        if let Some(parent) = file.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| conflict_or_io("cannot create the folder", e))?;
        }
        if tokio::fs::metadata(file).await.is_ok_and(|m| m.is_dir()) {
            return Err(FsError::new(
                StatusCode::CONFLICT,
                "a folder exists at that path",
            ));
        }
        // The file it replaces (as it is now) no longer counts.
        let replaced = file_size(file).await;
        tokio::fs::rename(&self.path, file)
            .await
            .map_err(|e| conflict_or_io("cannot store the upload", e))?;
        self.kept = true;
        self.files.quota.release(self.client, replaced);
        tracing::debug!(client = %self.client, path = %file.display(), bytes = self.reserved, "file stored");
        Ok(self.reserved)
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
            self.files.quota.release(self.client, self.reserved);
        }
    }
}

async fn get_file(req: HttpRequest, files: web::Data<Files>) -> Result<HttpResponse, FsError> {
    let (_, file) = target(&req, &files)?;
    authenticate(&req, &files, false)?;
    let named = actix_files::NamedFile::open_async(&file)
        .await
        .map_err(|_| FsError::new(StatusCode::NOT_FOUND, "no such file"))?;
    if named.metadata().is_dir() {
        return Err(FsError::new(
            StatusCode::NOT_FOUND,
            "that path is a folder, not a file",
        ));
    }
    // A download, never a page: an uploaded .html or .svg served inline
    // would run on the console's origin.
    let mut disposition = named.content_disposition().clone();
    disposition.disposition = header::DispositionType::Attachment;
    let mut response = named
        .set_content_disposition(disposition)
        .into_response(&req);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(FILE_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

async fn delete_file(req: HttpRequest, files: web::Data<Files>) -> Result<HttpResponse, FsError> {
    let (client, file) = target(&req, &files)?;
    let who = authenticate(&req, &files, true)?;
    require_owner(&who, &client, &files)?;
    let meta = tokio::fs::metadata(&file)
        .await
        .map_err(|_| FsError::new(StatusCode::NOT_FOUND, "no such file"))?;
    let bytes = if meta.is_dir() {
        let folder = file.clone();
        tokio::task::spawn_blocking(move || quota::size_of(&folder))
            .await
            .unwrap_or(0)
    } else {
        meta.len()
    };
    let removed = if meta.is_dir() {
        tokio::fs::remove_dir_all(&file).await
    } else {
        tokio::fs::remove_file(&file).await
    };
    removed.map_err(|e| FsError::io("cannot delete", e))?;
    files.quota.release(&client, bytes);
    Ok(HttpResponse::Ok().json(Deleted {
        deleted: req.match_info().get("path").unwrap_or_default().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escapes() {
        let root = Path::new("/srv/fs");
        assert_eq!(
            resolve(root, "bob", "a/b.txt").ok(),
            Some(PathBuf::from("/srv/fs/bob/a/b.txt"))
        );
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            ".",
        ] {
            assert!(resolve(root, "bob", path).is_err(), "{path:?} was accepted");
        }
        for client in ["", "..", "a/b", "bob!"] {
            assert!(
                resolve(root, client, "f").is_err(),
                "{client:?} was accepted"
            );
        }
    }
}
