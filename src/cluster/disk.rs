//! The [`Store`] of a gateway running alone: records and counters in one
//! SQLite file, leases in memory.
//!
//! # Why SQLite
//!
//! The gateway is not the only process that changes its store: commands run
//! on the same host while it runs (adding a user, issuing a token) open the
//! same file and write to it. SQLite lets several processes use one file at
//! once, each with its own connection, and keeps the file consistent through
//! its own locks.
//!
//! # The file
//!
//! * **Journal**: write-ahead log (`journal_mode = WAL`), so readers never
//!   wait for a writer, with `synchronous = FULL`: the log is synced to disk
//!   by every commit, before the write is acknowledged, so no acknowledged
//!   write is lost on a crash or power cut. A commit cut short is rolled back
//!   when the file is next opened.
//! * **Schema**: `records (tbl, key, value)`, keyed by store table and key,
//!   whose keys SQLite compares as bytes (the order [`list`](Store::list)
//!   promises), and `counters (tbl, key, count, until)`, `until` in Unix
//!   milliseconds (`NULL`: never), so that failed logins still count after
//!   a restart. A file of schema 1 (records only) gets its counters table in
//!   its next write. The file says what it is with
//!   `PRAGMA application_id` (`Conc`) and which schema it has with
//!   `PRAGMA user_version` ([`SCHEMA`]); a file that holds anything else (an
//!   SQLite database of another program, or of a newer Concierge) is refused
//!   as [`StoreError::Corrupt`], naming it, rather than written to.
//! * **Writes** run in `BEGIN IMMEDIATE` transactions, which take the file's
//!   write lock before reading: [`compare_and_swap`](Store::compare_and_swap)
//!   reads, compares and writes with no other process's write in between. A
//!   write waits up to 5 s (`BUSY`) for another process's transaction to end
//!   before it fails as [`StoreError::Unavailable`].
//!
//! # Created lazily
//!
//! [`DiskStore::open`] creates nothing: a store that is never written leaves
//! no trace in the data folder. Reads answer as if the store were empty
//! while there is no file, and writes that would change nothing (deleting a
//! missing record, a refused swap) answer without creating one; the first
//! write that changes a record creates the folder, the file and its schema,
//! in the same transaction as the record. Another process may be the one
//! that creates the file: each operation looks for it again until it is
//! there.
//!
//! # One thread per store
//!
//! SQLite calls block (a commit waits for the disk, a write for another
//! process's transaction), so none runs on an async runtime's thread. Each
//! store has one thread of its own that owns its connection and runs the
//! operations sent to it over a channel, one at a time, in order, each
//! answering through a oneshot channel; the futures only wait for the
//! answer. A dedicated thread rather than Tokio's blocking pool because:
//!
//! * the connection is used from one thread only, so it needs no lock, and
//!   a write waiting for a lock holds up one thread, not one blocking-pool
//!   thread per waiting operation;
//! * the same thread also follows other processes' changes (below), which
//!   needs a timer that works without a Tokio runtime (commands and tests
//!   open stores from plain threads) and that stops with the store.
//!
//! The thread ends once the store is dropped and what was sent to it is
//! done. [`DiskStore::open`] itself blocks (it opens and checks an existing
//! file): from async code, call it through `spawn_blocking`.
//!
//! # Changes
//!
//! A change made through this store is announced as [`Changed::Key`] as
//! soon as it is committed (a swap of absent for absent writes nothing and
//! announces nothing). SQLite does not tell one connection what another
//! changed, so for the changes of other processes (or of another
//! `DiskStore` on the same file) the thread polls `PRAGMA data_version`
//! every [`POLL`], whose value changes when another connection has
//! committed, and looks for the file while there is none; when either
//! changed, it sends [`Changed::Missed`], and whoever caches records
//! reloads them. Another process's write is thus reported within `POLL`,
//! or once the operation running at that moment is done.
//!
//! # Counters
//!
//! Each count is a write transaction on the `counters` table, run on the
//! store's thread like the records' writes (and as durable): reading,
//! comparing with the limit and counting happen with no other process's
//! write in between. Expired counters are deleted now and then, by the next
//! count. They are not announced as changes.
//!
//! # Leases
//!
//! They are volatile and live in this process's memory, a few map
//! operations under a mutex (never held across an await), done in place:
//! each process using the file (a command, a second gateway started by
//! mistake) has its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::sqlite::{
    configure, connect, create_folder, exists, failure, marks, ms_sql, FileThread, Marks,
};
use crate::cluster::store::{Changed, Store, StoreError, StoreFuture, Table, Taken};

/// What names the file in errors.
const WHAT: &str = "the store";

/// How many changes a slow [`Store::changes`] receiver may fall behind
/// before it lags.
const CHANGES: usize = 1024;

/// How often expired leases are dropped from memory, and expired counters
/// from the file, at most.
const SWEEP: Duration = Duration::from_secs(1);

/// How often the store's thread looks for other processes' changes.
pub const POLL: Duration = Duration::from_millis(250);

/// `PRAGMA application_id` of a Concierge store: "Conc" in ASCII.
const APPLICATION_ID: i64 = 0x436f_6e63;

/// The schema version (`PRAGMA user_version`) this code reads and writes.
/// A file with a greater one was written by a newer Concierge.
pub const SCHEMA: i64 = 2;

/// What a new file gets, in its first write transaction (then marked with
/// [`APPLICATION_ID`] and [`SCHEMA`]). `STRICT` keeps every value of the
/// type it was written with.
const CREATE_TABLE: &str = "CREATE TABLE records (
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (tbl, key)
) STRICT, WITHOUT ROWID";

/// What schema 2 added: the counters (see the module documentation).
const CREATE_COUNTERS: &str = "CREATE TABLE counters (
  tbl TEXT NOT NULL,
  key TEXT NOT NULL,
  count INTEGER NOT NULL,
  until INTEGER,
  PRIMARY KEY (tbl, key)
) STRICT, WITHOUT ROWID";

const COUNTER: &str = "SELECT count, until FROM counters WHERE tbl = ?1 AND key = ?2";
const SET_COUNTER: &str = "INSERT INTO counters (tbl, key, count, until) VALUES (?1, ?2, ?3, ?4)
  ON CONFLICT (tbl, key) DO UPDATE SET count = excluded.count, until = excluded.until";
const SWEEP_COUNTERS: &str = "DELETE FROM counters WHERE until <= ?1";

const GET: &str = "SELECT value FROM records WHERE tbl = ?1 AND key = ?2";
const LIST: &str = "SELECT key, value FROM records WHERE tbl = ?1 ORDER BY key";
const PUT: &str = "INSERT INTO records (tbl, key, value) VALUES (?1, ?2, ?3)
  ON CONFLICT (tbl, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM records WHERE tbl = ?1 AND key = ?2";

/// The standalone [`Store`]: see the module documentation.
pub struct DiskStore {
    /// The store's thread; dropping it ends the thread.
    thread: FileThread<Worker>,
    volatile: Mutex<Volatile>,
    changes: broadcast::Sender<Changed>,
}

/// The store's thread: the file's connection, once there is a file.
struct Worker {
    path: PathBuf,
    db: Option<Db>,
    changes: broadcast::Sender<Changed>,
    /// Whether the last look for other processes' changes failed (it is
    /// logged once, not every [`POLL`]).
    poll_failing: bool,
}

/// An open connection to the file.
struct Db {
    conn: Connection,
    /// Whether the file has its records: false for a file another process
    /// has just created and not written yet.
    ready: bool,
    /// Whether the file has all of [`SCHEMA`] (a file of an older one gets
    /// the rest in its next write).
    current: bool,
    /// The last `PRAGMA data_version` seen.
    version: i64,
}

/// What a file holds, as far as this code is concerned.
enum Contents {
    /// Nothing yet: the first write gives it the schema.
    Empty,
    /// A Concierge store of [`SCHEMA`].
    Store,
    /// A Concierge store of an older schema this code upgrades, in its next
    /// write.
    Older,
}

/// What a write does to a record, decided from its current value.
enum Write {
    Put(Vec<u8>),
    Delete,
    Swap {
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

/// What happens to the record.
enum Change<'a> {
    Keep,
    Set(&'a [u8]),
    Remove,
}

impl Write {
    /// What the write answers, and what it does, for a record whose value
    /// is `current`.
    fn decide(&self, current: Option<&[u8]>) -> (bool, Change<'_>) {
        match self {
            Write::Put(value) => (true, Change::Set(value)),
            Write::Delete if current.is_some() => (true, Change::Remove),
            Write::Delete => (false, Change::Keep),
            Write::Swap { expected, .. } if expected.as_deref() != current => (false, Change::Keep),
            Write::Swap {
                new: Some(value), ..
            } => (true, Change::Set(value)),
            Write::Swap { new: None, .. } if current.is_some() => (true, Change::Remove),
            // Absent, and to stay absent.
            Write::Swap { new: None, .. } => (true, Change::Keep),
        }
    }
}

/// Leases, keyed by table and key, and when expired counters are next
/// dropped from the file.
struct Volatile {
    leases: HashMap<(Table, String), Expiring<String>>,
    next_sweep: Instant,
    next_counter_sweep: Instant,
}

/// A value and when it stops counting.
struct Expiring<T> {
    value: T,
    /// `None`: a duration too long for the clock, so never.
    until: Option<Instant>,
}

impl<T> Expiring<T> {
    fn new(value: T, now: Instant, lifetime: Duration) -> Self {
        Expiring {
            value,
            until: now.checked_add(lifetime),
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

impl Volatile {
    /// Drops what has expired, at most once per [`SWEEP`], so keys that are
    /// never touched again (a rate limit per address) do not pile up.
    fn sweep(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.leases.retain(|_, lease| lease.live(now));
            self.next_sweep = now + SWEEP;
        }
    }
}

/// What the file at `path`, open on `conn`, holds; an error if it is not
/// a Concierge store this code can read.
fn inspect(conn: &Connection, path: &Path) -> Result<Contents, StoreError> {
    let Marks {
        application,
        version,
        objects,
    } = marks(conn, path)?;
    let path = path.display();
    match (application, version) {
        (APPLICATION_ID, SCHEMA) => Ok(Contents::Store),
        (APPLICATION_ID, 1) => Ok(Contents::Older),
        (APPLICATION_ID, version) if version > SCHEMA => Err(StoreError::Corrupt(format!(
            "{path} was written by a newer version of Concierge (store schema {version}, \
             this one knows schema {SCHEMA}): run that version, or a newer one"
        ))),
        (APPLICATION_ID, version) => Err(StoreError::Corrupt(format!(
            "{path} has store schema {version}, which this version of Concierge does not know"
        ))),
        (0, 0) if objects == 0 => Ok(Contents::Empty),
        _ => Err(StoreError::Corrupt(format!(
            "{path} is an SQLite database but not a Concierge store \
             (application id {application:#x}, user version {version})"
        ))),
    }
}

impl Db {
    /// Opens the file at `path`, creating it if `create`, and checks what
    /// it holds before changing anything in it.
    fn open(path: &Path, create: bool) -> Result<Db, StoreError> {
        let conn = connect(path, create, WHAT)?;
        let contents = inspect(&conn, path)?;
        let ready = !matches!(contents, Contents::Empty);
        let current = matches!(contents, Contents::Store);
        configure(&conn, path, WHAT)?;
        let version = data_version(&conn).map_err(failure(path, "read"))?;
        Ok(Db {
            conn,
            ready,
            current,
            version,
        })
    }
}

/// The connection's `PRAGMA data_version`: it changes when another
/// connection commits.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

impl Worker {
    /// Sends [`Changed::Missed`] if another process has committed to the
    /// file since the last look (opening a file that has appeared sends it
    /// too, see [`Worker::open`]).
    fn poll(&mut self) {
        let looked = match &mut self.db {
            Some(db) => data_version(&db.conn)
                .map(|version| std::mem::replace(&mut db.version, version) != version)
                .map_err(failure(&self.path, "read")),
            None => self.existing().map(|_| false),
        };
        match looked {
            Ok(changed) => {
                if self.poll_failing {
                    tracing::info!(path = %self.path.display(), "following the store's changes again");
                    self.poll_failing = false;
                }
                if changed {
                    // Nobody listening is not an error.
                    let _ = self.changes.send(Changed::Missed);
                }
            }
            Err(error) => {
                if !self.poll_failing {
                    tracing::warn!(%error, "cannot follow the store's changes; trying again");
                    self.poll_failing = true;
                }
            }
        }
    }

    /// Opens the file, creating it (and its folder) if `create`. A file
    /// that already has records was written by another process since this
    /// store found none: that is announced as [`Changed::Missed`] (later
    /// commits are caught by [`Worker::poll`]).
    fn open(&self, create: bool) -> Result<Db, StoreError> {
        if create {
            create_folder(&self.path, WHAT)?;
        }
        let db = Db::open(&self.path, create)?;
        if db.ready {
            let _ = self.changes.send(Changed::Missed);
        }
        Ok(db)
    }

    /// The connection, opening the file if there is one now; `None` if
    /// there is none.
    fn existing(&mut self) -> Result<Option<&mut Db>, StoreError> {
        if self.db.is_none() && exists(&self.path, WHAT)? {
            self.db = Some(self.open(false)?);
        }
        Ok(self.db.as_mut())
    }

    /// The connection, for a read: `None` while the store has no records
    /// because it has no file, or one that nobody has written yet.
    fn readable(&mut self) -> Result<Option<&Connection>, StoreError> {
        let path = self.path.clone();
        let Some(db) = self.existing()? else {
            return Ok(None);
        };
        if !db.ready {
            db.ready = !matches!(inspect(&db.conn, &path)?, Contents::Empty);
        }
        Ok(db.ready.then_some(&db.conn))
    }

    fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path.clone();
        let Some(conn) = self.readable()? else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<Option<Vec<u8>>> {
            conn.prepare_cached(GET)?
                .query_row((table.name(), key), |row| row.get(0))
                .optional()
        };
        read().map_err(failure(&path, "read"))
    }

    fn list(&mut self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let path = self.path.clone();
        let Some(conn) = self.readable()? else {
            return Ok(Vec::new());
        };
        let read = || -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
            let mut statement = conn.prepare_cached(LIST)?;
            let rows = statement.query_map([table.name()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        };
        read().map_err(failure(&path, "read"))
    }

    /// One `BEGIN IMMEDIATE` transaction on the record `key` of `table`:
    /// reads it, lets `write` decide, writes, commits, and then announces
    /// the change if there was one. Without a file, a write that would
    /// change nothing answers at once; any other creates the file, and the
    /// schema in the same transaction as the record.
    fn write(&mut self, table: Table, key: &str, write: Write) -> Result<bool, StoreError> {
        if self.db.is_none() && !exists(&self.path, WHAT)? {
            if let (answer, Change::Keep) = write.decide(None) {
                return Ok(answer);
            }
        }
        let (answer, changed) = self.transaction(|txn| {
            let current: Option<Vec<u8>> = txn
                .prepare_cached(GET)?
                .query_row((table.name(), key), |row| row.get(0))
                .optional()?;
            let (answer, change) = write.decide(current.as_deref());
            let changed = match change {
                Change::Keep => false,
                Change::Set(value) => {
                    txn.prepare_cached(PUT)?
                        .execute((table.name(), key, value))?;
                    true
                }
                Change::Remove => {
                    txn.prepare_cached(DELETE)?.execute((table.name(), key))?;
                    true
                }
            };
            Ok((answer, changed))
        })?;
        if changed {
            // Nobody listening is not an error.
            let _ = self.changes.send(Changed::Key {
                table: table.name().to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(answer)
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction and commits it,
    /// creating the file (and its folder) if there is none, and giving the
    /// file the schema it lacks (all of it, or what an older one lacks) in
    /// the same transaction.
    fn transaction<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let db = match self.db.take() {
            Some(db) => db,
            None => self.open(true)?,
        };
        let db = self.db.insert(db);
        let path = &self.path;
        let txn = db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failure(path, "write to"))?;
        if !db.current {
            let missing = match inspect(&txn, path)? {
                Contents::Empty => format!(
                    "{CREATE_TABLE}; {CREATE_COUNTERS};
                     PRAGMA application_id = {APPLICATION_ID};"
                ),
                Contents::Older => format!("{CREATE_COUNTERS};"),
                Contents::Store => String::new(),
            };
            txn.execute_batch(&format!("{missing} PRAGMA user_version = {SCHEMA};"))
                .map_err(failure(path, "create the schema of"))?;
        }
        let answer = work(&txn).map_err(failure(path, "write to"))?;
        txn.commit().map_err(failure(path, "write to"))?;
        db.ready = true;
        db.current = true;
        Ok(answer)
    }

    /// [`Store::take`]: reads the counter, and counts unless it is at
    /// `limit`, in one transaction; drops expired counters at most once per
    /// [`SWEEP`].
    fn take(
        &mut self,
        table: Table,
        key: &str,
        limit: u64,
        window: Duration,
        sweep: bool,
    ) -> Result<Taken, StoreError> {
        let now = unix_ms();
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.transaction(|txn| {
            if sweep {
                txn.prepare_cached(SWEEP_COUNTERS)?.execute([ms_sql(now)])?;
            }
            let (count, until) = match live_counter(txn, table, key, now)? {
                Some(live) => live,
                None => (0, now.checked_add(window).map(ms_sql)),
            };
            if count >= limit {
                let left = until.map(|until| Duration::from_millis(until.abs_diff(ms_sql(now))));
                return Ok(Taken::Full(left));
            }
            let count = count + 1;
            txn.prepare_cached(SET_COUNTER)?.execute((
                table.name(),
                key,
                i64::try_from(count).unwrap_or(i64::MAX),
                until,
            ))?;
            Ok(Taken::Counted(count))
        })
    }

    /// [`Store::uncount`], in one transaction.
    fn uncount(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        if self.db.is_none() && !exists(&self.path, WHAT)? {
            return Ok(());
        }
        let now = unix_ms();
        self.transaction(|txn| {
            if let Some((count, until)) = live_counter(txn, table, key, now)? {
                txn.prepare_cached(SET_COUNTER)?.execute((
                    table.name(),
                    key,
                    i64::try_from(count.saturating_sub(1)).unwrap_or(i64::MAX),
                    until,
                ))?;
            }
            Ok(())
        })
    }
}

/// The counter `key` of `table` and its end, if it has not expired.
fn live_counter(
    conn: &Connection,
    table: Table,
    key: &str,
    now: u64,
) -> rusqlite::Result<Option<(u64, Option<i64>)>> {
    let row: Option<(i64, Option<i64>)> = conn
        .prepare_cached(COUNTER)?
        .query_row((table.name(), key), |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(row
        .filter(|(_, until)| until.is_none_or(|until| until > ms_sql(now)))
        .map(|(count, until)| (u64::try_from(count).unwrap_or(0), until)))
}

/// Milliseconds since the Unix epoch: counters outlive the process, so
/// they are dated by the wall clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl DiskStore {
    /// A store on the file at `path`, which need not exist, nor its
    /// folder: nothing is created until the first write (see the module
    /// documentation). Blocks while an existing file is opened, recovered
    /// if the last process writing it crashed, and checked: call it at
    /// startup, from a thread that may block. Fails, naming the path, if
    /// the file is not a Concierge store this version can use, or cannot be
    /// opened.
    pub fn open(path: impl AsRef<Path>) -> Result<DiskStore, StoreError> {
        let path = path.as_ref().to_owned();
        let changes = broadcast::channel(CHANGES).0;
        let worker = Worker {
            path: path.clone(),
            db: if exists(&path, WHAT)? {
                Some(Db::open(&path, false)?)
            } else {
                None
            },
            changes: changes.clone(),
            poll_failing: false,
        };
        let thread = FileThread::spawn(
            "concierge-store",
            &path,
            WHAT,
            worker,
            Some((POLL, Worker::poll)),
        )?;
        Ok(DiskStore {
            thread,
            volatile: Mutex::new(Volatile {
                leases: HashMap::new(),
                next_sweep: Instant::now() + SWEEP,
                next_counter_sweep: Instant::now(),
            }),
            changes,
        })
    }

    /// Runs `job` on the store's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.thread.run(job)
    }

    fn write(&self, table: Table, key: &str, write: Write) -> StoreFuture<'_, bool> {
        let key = key.to_owned();
        self.run(move |worker| worker.write(table, &key, write))
    }

    fn volatile(&self) -> MutexGuard<'_, Volatile> {
        self.volatile.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for DiskStore {
    fn get(&self, table: Table, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let key = key.to_owned();
        self.run(move |worker| worker.get(table, &key))
    }

    fn list(&self, table: Table) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        self.run(move |worker| worker.list(table))
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> StoreFuture<'_, ()> {
        let write = self.write(table, key, Write::Put(value));
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn delete(&self, table: Table, key: &str) -> StoreFuture<'_, bool> {
        self.write(table, key, Write::Delete)
    }

    fn compare_and_swap(
        &self,
        table: Table,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> StoreFuture<'_, bool> {
        self.write(table, key, Write::Swap { expected, new })
    }

    fn take(
        &self,
        table: Table,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> StoreFuture<'_, Taken> {
        let key = key.to_owned();
        let sweep = {
            let now = Instant::now();
            let mut volatile = self.volatile();
            let due = now >= volatile.next_counter_sweep;
            if due {
                volatile.next_counter_sweep = now + SWEEP;
            }
            due
        };
        self.run(move |worker| worker.take(table, &key, limit, window, sweep))
    }

    fn uncount(&self, table: Table, key: &str) -> StoreFuture<'_, ()> {
        let key = key.to_owned();
        self.run(move |worker| worker.uncount(table, &key))
    }

    fn acquire(
        &self,
        table: Table,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        Box::pin(async move {
            let now = Instant::now();
            let mut volatile = self.volatile();
            volatile.sweep(now);
            let lease = volatile
                .leases
                .entry((table, key))
                .or_insert_with(|| Expiring::new(holder.clone(), now, ttl));
            if lease.live(now) && lease.value != holder {
                return Ok(false);
            }
            *lease = Expiring::new(holder, now, ttl);
            Ok(true)
        })
    }

    fn release(&self, table: Table, key: &str, holder: &str) -> StoreFuture<'_, ()> {
        let (id, holder) = ((table, key.to_owned()), holder.to_owned());
        Box::pin(async move {
            let mut volatile = self.volatile();
            if volatile
                .leases
                .get(&id)
                .is_some_and(|lease| lease.value == holder)
            {
                volatile.leases.remove(&id);
            }
            Ok(())
        })
    }

    fn changes(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }
}
