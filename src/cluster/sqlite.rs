//! What the SQLite files of a gateway running alone have in common: the
//! store's `concierge.db` ([`disk`](super::disk)), the jobs' `jobs.db`
//! ([`disk_ledger`](super::disk_ledger)) and hosts' health's `health.db`
//! ([`disk_health`](super::disk_health)).
//!
//! Both are opened alike (private to the user, write-ahead logged, synced
//! by every commit, waiting [`BUSY`] for another process's lock), say what
//! they are with `PRAGMA application_id` and `user_version`, name their
//! file in every error, are created by their first write, and run every
//! SQLite call on one thread of their own ([`FileThread`]): the reasons are
//! in [`disk`](super::disk)'s documentation. Written once here so that the
//! two files cannot drift apart in how safely they are kept.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::store::{StoreError, StoreFuture};

/// How long a write waits for another process's transaction to end.
const BUSY: Duration = Duration::from_secs(5);

/// Turns an SQLite error into a [`StoreError`] naming the file: damaged or
/// foreign data is corrupt, anything else (locked, no permission, disk
/// full) unavailable.
pub(super) fn failure<'a>(
    path: &'a Path,
    doing: &'a str,
) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |error| {
        let message = format!("cannot {doing} {}: {error}", path.display());
        match &error {
            rusqlite::Error::SqliteFailure(e, _)
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
                ) =>
            {
                StoreError::Corrupt(message)
            }
            // A value of another type than the schema's, or text that is
            // not UTF-8: not written by this code.
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(message),
            _ => StoreError::Unavailable(message),
        }
    }
}

/// Whether there is a file at `path`. A folder on the way that is missing,
/// or is a file, means there is none (and creating it will say why not).
/// `what` names the file in an error ("the store").
pub(super) fn exists(path: &Path, what: &str) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(false),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot look for {what} {}: {e}",
            path.display()
        ))),
    }
}

/// Creates the folder of the file at `path`, and those above it.
pub(super) fn create_folder(path: &Path, what: &str) -> Result<(), StoreError> {
    let Some(folder) = path.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(folder).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot create the folder of {what} {}: {e}",
            path.display()
        ))
    })
}

/// Opens the file at `path` (creating it, private to this user, if
/// `create`) without changing anything in it: the caller checks what it
/// holds ([`marks`]) before [`configure`] sets its journal.
pub(super) fn connect(path: &Path, create: bool, what: &str) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let opening = format!("open {what}");
    let conn = Connection::open_with_flags(path, flags).map_err(failure(path, &opening))?;
    // Password hashes, signing keys, what jobs printed: for this user only.
    // SQLite gives its WAL and shared-memory files the database file's mode.
    if create {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            StoreError::Unavailable(format!("cannot make {} private: {e}", path.display()))
        })?;
    }
    conn.busy_timeout(BUSY).map_err(failure(path, &opening))?;
    Ok(conn)
}

/// Sets the journal to a write-ahead log synced by every commit (see
/// [`disk`](super::disk)'s documentation).
pub(super) fn configure(conn: &Connection, path: &Path, what: &str) -> Result<(), StoreError> {
    let doing = format!("set up {what}");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(failure(path, &doing))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "cannot set up {what} {}: its journal stays in mode {mode}, not WAL",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(failure(path, &doing))
}

/// What a file says it is.
pub(super) struct Marks {
    /// `PRAGMA application_id`.
    pub application: i64,
    /// `PRAGMA user_version`: the schema.
    pub version: i64,
    /// How many tables and indexes it has (0: nobody wrote it yet).
    pub objects: i64,
}

/// Reads the [`Marks`] of the file open on `conn`.
pub(super) fn marks(conn: &Connection, path: &Path) -> Result<Marks, StoreError> {
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id),
                (SELECT user_version FROM pragma_user_version),
                (SELECT count(*) FROM sqlite_schema)",
        [],
        |row| {
            Ok(Marks {
                application: row.get(0)?,
                version: row.get(1)?,
                objects: row.get(2)?,
            })
        },
    )
    .map_err(failure(path, "read"))
}

/// A time in milliseconds as SQLite stores it.
pub(super) fn ms_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// An operation for a [`FileThread`], which answers through a channel of
/// its own.
type Job<W> = Box<dyn FnOnce(&mut W) + Send>;

/// What a [`FileThread`] does every so often between operations.
pub(super) type Poll<W> = (Duration, fn(&mut W));

/// The one thread that owns a file's connection (inside `W`) and runs the
/// operations sent to it, one at a time, in order. It ends once this is
/// dropped and what was sent is done.
pub(super) struct FileThread<W> {
    path: PathBuf,
    what: &'static str,
    /// Dropping it ends the thread.
    jobs: mpsc::Sender<Job<W>>,
}

impl<W: Send + 'static> FileThread<W> {
    /// Starts the thread `name` owning `worker`, which also runs `poll`'s
    /// function at its interval, if given. `path` and `what` name the file
    /// in errors.
    pub fn spawn(
        name: &str,
        path: &Path,
        what: &'static str,
        worker: W,
        poll: Option<Poll<W>>,
    ) -> Result<FileThread<W>, StoreError> {
        let (jobs, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(worker, receiver, poll))
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot start the thread of {what} {}: {e}",
                    path.display()
                ))
            })?;
        Ok(FileThread {
            path: path.to_owned(),
            what,
            jobs,
        })
    }

    /// Runs `job` on the thread and waits for its answer.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut W) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            let job: Job<W> = Box::new(move |worker| {
                // The caller may have given up waiting.
                let _ = answer.send(job(worker));
            });
            let stopped = || {
                StoreError::Unavailable(format!(
                    "the thread of {} {} has stopped",
                    self.what,
                    self.path.display()
                ))
            };
            self.jobs.send(job).map_err(|_| stopped())?;
            answered.await.map_err(|_| stopped())?
        })
    }
}

/// The thread's loop: the jobs sent until its [`FileThread`] is dropped,
/// and `poll` between them.
fn serve<W>(mut worker: W, jobs: mpsc::Receiver<Job<W>>, poll: Option<Poll<W>>) {
    let Some((every, poll)) = poll else {
        for job in jobs {
            job(&mut worker);
        }
        return;
    };
    let mut next_poll = Instant::now() + every;
    loop {
        match jobs.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
            Ok(job) => job(&mut worker),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_poll {
            poll(&mut worker);
            next_poll = Instant::now() + every;
        }
    }
}

/// What a file of one kind is: how it names itself in errors, its marks,
/// and the schema its first write gives it.
pub(super) struct Schema {
    /// "the jobs ledger"
    pub what: &'static str,
    /// "jobs ledger"
    pub noun: &'static str,
    /// `PRAGMA application_id`.
    pub application_id: i64,
    /// `PRAGMA user_version` this code reads and writes.
    pub version: i64,
    /// The tables a new file gets in its first write transaction.
    pub create: &'static str,
}

/// A file's thread's state ([`FileThread`]'s worker): the file's
/// connection, once there is a file.
pub(super) struct Worker {
    schema: &'static Schema,
    path: PathBuf,
    db: Option<Db>,
}

/// An open connection to the file.
struct Db {
    conn: Connection,
    /// Whether the file has its schema: false for a file another process
    /// has just created and not written yet.
    ready: bool,
}

/// Whether the file at `path`, open on `conn`, has `schema` (false: it is
/// empty); an error if it holds anything else.
fn inspect(schema: &Schema, conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    let Marks {
        application,
        version,
        objects,
    } = marks(conn, path)?;
    let path = path.display();
    let (ours, known, noun) = (schema.application_id, schema.version, schema.noun);
    match (application, version) {
        (a, v) if a == ours && v == known => Ok(true),
        (a, version) if a == ours && version > known => Err(StoreError::Corrupt(format!(
            "{path} was written by a newer version of Concierge ({noun} schema {version}, \
             this one knows schema {known}): run that version, or a newer one"
        ))),
        (a, version) if a == ours => Err(StoreError::Corrupt(format!(
            "{path} has {noun} schema {version}, which this version of Concierge does not know"
        ))),
        (0, 0) if objects == 0 => Ok(false),
        _ => Err(StoreError::Corrupt(format!(
            "{path} is an SQLite database but not a Concierge {noun} \
             (application id {application:#x}, user version {version})"
        ))),
    }
}

impl Db {
    /// Opens the file at `path`, creating it if `create`, and checks what
    /// it holds before changing anything in it.
    fn open(schema: &Schema, path: &Path, create: bool) -> Result<Db, StoreError> {
        let conn = connect(path, create, schema.what)?;
        let ready = inspect(schema, &conn, path)?;
        configure(&conn, path, schema.what)?;
        Ok(Db { conn, ready })
    }
}

impl Worker {
    /// The worker of the `schema` file at `path`, which need not exist:
    /// opened and checked now if it does. Blocks.
    pub fn open(schema: &'static Schema, path: &Path) -> Result<Worker, StoreError> {
        Ok(Worker {
            db: if exists(path, schema.what)? {
                Some(Db::open(schema, path, false)?)
            } else {
                None
            },
            path: path.to_owned(),
            schema,
        })
    }

    /// The connection, opening the file if there is one now; `None` if
    /// there is none.
    fn existing(&mut self) -> Result<Option<&mut Db>, StoreError> {
        if self.db.is_none() && exists(&self.path, self.schema.what)? {
            self.db = Some(Db::open(self.schema, &self.path, false)?);
        }
        Ok(self.db.as_mut())
    }

    /// Runs `read` on the connection; `empty` while there is no file, or
    /// one that nobody has written yet.
    pub fn read<T>(
        &mut self,
        empty: T,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let (path, schema) = (self.path.clone(), self.schema);
        let Some(db) = self.existing()? else {
            return Ok(empty);
        };
        if !db.ready {
            db.ready = inspect(schema, &db.conn, &path)?;
        }
        if !db.ready {
            return Ok(empty);
        }
        read(&db.conn).map_err(failure(&path, "read"))
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction and commits it.
    /// Without a file, answers `unchanged` if it has one (a write that
    /// changes nothing in an empty file); otherwise creates the file
    /// (and its folder) and gives it its schema in the same transaction.
    pub fn write<T>(
        &mut self,
        unchanged: Option<T>,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if self.existing()?.is_none() {
            if let Some(answer) = unchanged {
                return Ok(answer);
            }
            create_folder(&self.path, self.schema.what)?;
        }
        let schema = self.schema;
        let db = match self.db.take() {
            Some(db) => db,
            None => Db::open(schema, &self.path, true)?,
        };
        let db = self.db.insert(db);
        let path = &self.path;
        let txn = db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failure(path, "write to"))?;
        if !db.ready && !inspect(schema, &txn, path)? {
            txn.execute_batch(&format!(
                "{}
                 PRAGMA application_id = {};
                 PRAGMA user_version = {};",
                schema.create, schema.application_id, schema.version
            ))
            .map_err(failure(path, "create the schema of"))?;
        }
        let answer = work(&txn).map_err(failure(path, "write to"))?;
        txn.commit().map_err(failure(path, "write to"))?;
        db.ready = true;
        Ok(answer)
    }
}
