//! The [`Store`] of a gateway running alone: records in one file, counters
//! and leases in memory.
//!
//! Records live in a [redb](https://docs.rs/redb) file, an embedded ACID
//! key-value store: every write is one transaction, committed with an fsync
//! (redb's default `Durability::Immediate`) before it is acknowledged, and
//! redb's copy-on-write commits leave the last committed state readable
//! after a crash at any point (power cut, SIGKILL). Each store table is one
//! redb table of `&str` keys and byte values. Writes are serialized by redb
//! (one write transaction at a time), which makes
//! [`compare_and_swap`](Store::compare_and_swap) atomic.
//!
//! redb calls block: a commit waits for the disk, and a write waits for the
//! write before it. Each therefore runs on Tokio's blocking pool
//! (`spawn_blocking`): an actix worker runs many connections on one thread,
//! and none of them should wait for an fsync. Counters and leases are a few
//! map operations under a mutex (never held across an await), done in place.
//!
//! The file is locked while open, so a second gateway process cannot open
//! it: counters and leases live in this process's memory, and a second
//! process would have its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tokio::sync::broadcast;

use crate::cluster::store::{Changed, Store, StoreError, StoreFuture, Table};

/// How many changes a slow [`Store::changes`] receiver may fall behind
/// before it lags.
const CHANGES: usize = 1024;

/// How often expired counters and leases are dropped from memory, at most.
const SWEEP: Duration = Duration::from_secs(1);

/// The standalone [`Store`]: see the module documentation.
pub struct DiskStore {
    file: Arc<File>,
    volatile: Mutex<Volatile>,
    changes: broadcast::Sender<Changed>,
}

/// The open database and its path, for error messages.
struct File {
    db: Database,
    path: PathBuf,
}

/// Counters and leases, keyed by table and key.
struct Volatile {
    counters: HashMap<(Table, String), Expiring<u64>>,
    leases: HashMap<(Table, String), Expiring<String>>,
    next_sweep: Instant,
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
            self.counters.retain(|_, counter| counter.live(now));
            self.leases.retain(|_, lease| lease.live(now));
            self.next_sweep = now + SWEEP;
        }
    }
}

/// The redb table behind a store table.
fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A redb error as a [`StoreError`] naming the file.
fn failure(path: &Path, doing: &str, error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    let message = format!("cannot {doing} {}: {error}", path.display());
    match error {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => StoreError::Corrupt(message),
        // How redb says a file is not one of its databases.
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(message)
        }
        _ => StoreError::Unavailable(message),
    }
}

impl DiskStore {
    /// Opens the database at `path`, creating it if there is none (its
    /// folder must exist). Blocks while the file is opened, and repaired if
    /// the last process using it crashed: call it at startup. Fails, naming
    /// the path, if the file cannot be opened (another process has it open,
    /// no permission, not a database).
    pub fn open(path: impl AsRef<Path>) -> Result<DiskStore, StoreError> {
        let path = path.as_ref().to_owned();
        let db = Database::create(&path).map_err(|e| failure(&path, "open the store", e))?;
        Ok(DiskStore {
            file: Arc::new(File { db, path }),
            volatile: Mutex::new(Volatile {
                counters: HashMap::new(),
                leases: HashMap::new(),
                next_sweep: Instant::now() + SWEEP,
            }),
            changes: broadcast::channel(CHANGES).0,
        })
    }

    /// Runs `op` on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        doing: &'static str,
        op: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let file = self.file.clone();
        Box::pin(async move {
            let path = file.path.clone();
            tokio::task::spawn_blocking(move || {
                op(&file.db).map_err(|e| failure(&file.path, doing, e))
            })
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "a store operation on {} did not finish: {e}",
                    path.display()
                ))
            })?
        })
    }

    /// One write transaction on the record `key` of `table`: `op` changes
    /// the table and says whether it did; the transaction is committed (and
    /// the change announced) only if so.
    fn write(
        &self,
        table: Table,
        key: &str,
        op: impl FnOnce(&mut redb::Table<&'static str, &'static [u8]>, &str) -> Result<bool, redb::Error>
            + Send
            + 'static,
    ) -> StoreFuture<'_, bool> {
        let key = key.to_owned();
        let changes = self.changes.clone();
        self.blocking("write to", move |db| {
            let txn = db.begin_write()?;
            let changed = {
                let mut records = txn.open_table(definition(table))?;
                op(&mut records, &key)?
            };
            if changed {
                txn.commit()?;
                // Nobody listening is not an error.
                let _ = changes.send(Changed::Key {
                    table: table.name().to_owned(),
                    key,
                });
            } else {
                txn.abort()?;
            }
            Ok(changed)
        })
    }

    fn volatile(&self) -> MutexGuard<'_, Volatile> {
        self.volatile.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for DiskStore {
    fn get(&self, table: Table, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let key = key.to_owned();
        self.blocking("read", move |db| {
            let txn = db.begin_read()?;
            let records = match txn.open_table(definition(table)) {
                Ok(records) => records,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(records
                .get(key.as_str())?
                .map(|value| value.value().to_vec()))
        })
    }

    fn list(&self, table: Table) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        self.blocking("read", move |db| {
            let txn = db.begin_read()?;
            let records = match txn.open_table(definition(table)) {
                Ok(records) => records,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            // redb orders `&str` keys by their bytes.
            let mut all = Vec::new();
            for record in records.iter()? {
                let (key, value) = record?;
                all.push((key.value().to_owned(), value.value().to_vec()));
            }
            Ok(all)
        })
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> StoreFuture<'_, ()> {
        let write = self.write(table, key, move |records, key| {
            records.insert(key, value.as_slice())?;
            Ok(true)
        });
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn delete(&self, table: Table, key: &str) -> StoreFuture<'_, bool> {
        self.write(table, key, |records, key| {
            Ok(records.remove(key)?.is_some())
        })
    }

    fn compare_and_swap(
        &self,
        table: Table,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> StoreFuture<'_, bool> {
        self.write(table, key, move |records, key| {
            let matches = match records.get(key)? {
                Some(current) => expected.as_deref() == Some(current.value()),
                None => expected.is_none(),
            };
            if matches {
                match new {
                    Some(value) => records.insert(key, value.as_slice())?,
                    None => records.remove(key)?,
                };
            }
            Ok(matches)
        })
    }

    fn count(&self, table: Table, key: &str, window: Duration) -> StoreFuture<'_, u64> {
        let key = key.to_owned();
        Box::pin(async move {
            let now = Instant::now();
            let mut volatile = self.volatile();
            volatile.sweep(now);
            let counter = volatile
                .counters
                .entry((table, key))
                .or_insert_with(|| Expiring::new(0, now, window));
            if !counter.live(now) {
                *counter = Expiring::new(0, now, window);
            }
            counter.value = counter.value.saturating_add(1);
            Ok(counter.value)
        })
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
