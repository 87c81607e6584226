//! The [`Ledger`] of a gateway running alone: jobs and their hosts in
//! `jobs.db`, an SQLite file of their own beside the store's
//! `concierge.db` in the data folder.
//!
//! # Why a file of its own
//!
//! A job writes thousands of rows in bursts and is pruned whole once it is
//! old; the store's file holds accounts and keys, small and precious, that
//! commands beside the gateway read and write. Apart, a burst of a job's
//! rows never holds the store's write lock while a user logs in, and the
//! ledger can be deleted (losing the jobs' history, nothing else) without
//! touching accounts.
//!
//! # The file
//!
//! Opened and kept like the store's (see [`disk`](super::disk)): a
//! write-ahead log synced by every commit (`synchronous = FULL`: no
//! acknowledged row is lost on a crash), mode 0600, created with its folder
//! by the first write that changes something (reads answer as if the
//! ledger were empty while there is none), and one thread of its own that
//! owns the connection ([`FileThread`]). It says what it is with
//! `PRAGMA application_id` `Cjob` and `user_version` [`SCHEMA`]: any other
//! SQLite file (the store's among them) is refused as
//! [`StoreError::Corrupt`], naming it, and left as it was.
//!
//! Schema 1:
//!
//! * `jobs (id, created_ms, active, record)`, with an index on
//!   `(created_ms, id)` for [`jobs`](Ledger::jobs)' pages, newest first;
//! * `job_hosts (job, host, final, row, output)`, keyed by job and host
//!   (`WITHOUT ROWID`: one job's rows lie together, in host order, which
//!   SQLite compares as bytes).
//!
//! # The rules, in SQL
//!
//! Every write is one `BEGIN IMMEDIATE` transaction. A host row is written
//! with `INSERT … ON CONFLICT (job, host) DO UPDATE … WHERE
//! job_hosts.final = 0`: a final row stays as it is, whoever writes, and
//! SQLite's count of changed rows says which hosts were written. Writing
//! a job's rows or record when the ledger has no such job (never created,
//! or pruned) writes nothing, so a late writer cannot bring back a pruned
//! job's rows. [`create`](Ledger::create) of a job the ledger has already
//! changes nothing: a retry after an error is harmless.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::ledger::{HostRow, Ledger, StoredHost};
use super::sqlite::{ms_sql, FileThread, Schema, Worker};
use super::store::{StoreError, StoreFuture};

/// What names the file in errors.
const WHAT: &str = "the jobs ledger";

/// `PRAGMA application_id` of a jobs ledger: "Cjob" in ASCII.
const APPLICATION_ID: i64 = 0x436a_6f62;

/// The schema version (`PRAGMA user_version`) this code reads and writes.
pub const SCHEMA: i64 = 1;

/// What a new file gets in its first write transaction, marked with
/// [`APPLICATION_ID`] and [`SCHEMA`]. `STRICT` keeps every value of the
/// type it was written with.
const CREATE: &str = "CREATE TABLE jobs (
  id TEXT PRIMARY KEY NOT NULL,
  created_ms INTEGER NOT NULL,
  active INTEGER NOT NULL,
  record BLOB NOT NULL
) STRICT;
CREATE INDEX jobs_by_creation ON jobs (created_ms, id);
CREATE TABLE job_hosts (
  job TEXT NOT NULL,
  host TEXT NOT NULL,
  final INTEGER NOT NULL,
  row BLOB NOT NULL,
  output BLOB,
  PRIMARY KEY (job, host)
) STRICT, WITHOUT ROWID;";

const NEW_JOB: &str = "INSERT INTO jobs (id, created_ms, active, record) VALUES (?1, ?2, 1, ?3)
  ON CONFLICT (id) DO NOTHING";
const UPDATE_JOB: &str = "UPDATE jobs SET record = ?2, active = ?3 WHERE id = ?1";
const HAS_JOB: &str = "SELECT 1 FROM jobs WHERE id = ?1";
/// A host's row, unless its stored one is final.
const WRITE_HOST: &str = "INSERT INTO job_hosts (job, host, final, row, output)
  VALUES (?1, ?2, ?3, ?4, ?5)
  ON CONFLICT (job, host) DO UPDATE
  SET final = excluded.final, row = excluded.row, output = excluded.output
  WHERE job_hosts.final = 0";
const JOB: &str = "SELECT record FROM jobs WHERE id = ?1";
const JOBS: &str = "SELECT record FROM jobs ORDER BY created_ms DESC, id DESC LIMIT ?1";
const JOBS_BEFORE: &str = "SELECT record FROM jobs WHERE created_ms < ?2
  ORDER BY created_ms DESC, id DESC LIMIT ?1";
const ACTIVE: &str = "SELECT id FROM jobs WHERE active = 1 ORDER BY id";
const HOSTS: &str = "SELECT host, row FROM job_hosts WHERE job = ?1 ORDER BY host";
const HOST: &str = "SELECT row, output FROM job_hosts WHERE job = ?1 AND host = ?2";
const PRUNE_HOSTS: &str = "DELETE FROM job_hosts WHERE job IN
  (SELECT id FROM jobs WHERE active = 0 AND created_ms < ?1)";
const PRUNE_JOBS: &str = "DELETE FROM jobs WHERE active = 0 AND created_ms < ?1";

/// The standalone [`Ledger`]: see the module documentation.
pub struct DiskLedger {
    thread: FileThread<Worker>,
}

/// What the file is.
static FILE: Schema = Schema {
    what: WHAT,
    noun: "jobs ledger",
    application_id: APPLICATION_ID,
    version: SCHEMA,
    create: CREATE,
};

/// A count or a bound as SQLite takes it.
fn count_sql(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes `row` of `job` unless the stored one is final; whether it did.
fn write_host(conn: &Connection, job: &str, row: &HostRow) -> rusqlite::Result<bool> {
    let changed = conn.prepare_cached(WRITE_HOST)?.execute((
        job,
        &row.host,
        row.is_final,
        &row.row,
        &row.output,
    ))?;
    Ok(changed == 1)
}

fn has_job(conn: &Connection, job: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(HAS_JOB)?
        .query_row([job], |_| Ok(()))
        .optional()?
        .is_some())
}

impl DiskLedger {
    /// A ledger on the file at `path`, which need not exist, nor its
    /// folder: nothing is created until the first write. Blocks while an
    /// existing file is opened and checked: call it from a thread that may
    /// block. Fails, naming the path, if the file is not a jobs ledger this
    /// version can use, or cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<DiskLedger, StoreError> {
        let path = path.as_ref().to_owned();
        let worker = Worker::open(&FILE, &path)?;
        let thread = FileThread::spawn("concierge-ledger", &path, WHAT, worker, None)?;
        Ok(DiskLedger { thread })
    }
}

impl Ledger for DiskLedger {
    fn create(
        &self,
        job: &str,
        created_ms: u64,
        record: Vec<u8>,
        hosts: Vec<HostRow>,
    ) -> StoreFuture<'_, ()> {
        let job = job.to_owned();
        self.thread.run(move |worker| {
            worker.write(None, |txn| {
                let new =
                    txn.prepare_cached(NEW_JOB)?
                        .execute((&job, ms_sql(created_ms), &record))?;
                if new == 1 {
                    for row in &hosts {
                        write_host(txn, &job, row)?;
                    }
                }
                Ok(())
            })
        })
    }

    fn update(&self, job: &str, record: Vec<u8>, active: bool) -> StoreFuture<'_, ()> {
        let job = job.to_owned();
        self.thread.run(move |worker| {
            worker.write(Some(()), |txn| {
                txn.prepare_cached(UPDATE_JOB)?
                    .execute((&job, &record, active))?;
                Ok(())
            })
        })
    }

    fn write_hosts(&self, job: &str, rows: Vec<HostRow>) -> StoreFuture<'_, Vec<String>> {
        let job = job.to_owned();
        self.thread.run(move |worker| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            worker.write(Some(Vec::new()), |txn| {
                let mut written = Vec::new();
                if has_job(txn, &job)? {
                    for row in rows {
                        if write_host(txn, &job, &row)? {
                            written.push(row.host);
                        }
                    }
                }
                Ok(written)
            })
        })
    }

    fn job(&self, job: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let job = job.to_owned();
        self.thread.run(move |worker| {
            worker.read(None, |conn| {
                conn.prepare_cached(JOB)?
                    .query_row([&job], |row| row.get(0))
                    .optional()
            })
        })
    }

    fn jobs(&self, before_ms: Option<u64>, limit: usize) -> StoreFuture<'_, Vec<Vec<u8>>> {
        self.thread.run(move |worker| {
            worker.read(Vec::new(), |conn| {
                let limit = count_sql(limit);
                let record = |row: &rusqlite::Row<'_>| row.get(0);
                let mut statement;
                let rows = match before_ms {
                    None => {
                        statement = conn.prepare_cached(JOBS)?;
                        statement.query_map([limit], record)?
                    }
                    Some(before) => {
                        statement = conn.prepare_cached(JOBS_BEFORE)?;
                        statement.query_map([limit, ms_sql(before)], record)?
                    }
                };
                rows.collect()
            })
        })
    }

    fn active(&self) -> StoreFuture<'_, Vec<String>> {
        self.thread.run(move |worker| {
            worker.read(Vec::new(), |conn| {
                let mut statement = conn.prepare_cached(ACTIVE)?;
                let ids = statement.query_map([], |row| row.get(0))?;
                ids.collect()
            })
        })
    }

    fn hosts(&self, job: &str) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        let job = job.to_owned();
        self.thread.run(move |worker| {
            worker.read(Vec::new(), |conn| {
                let mut statement = conn.prepare_cached(HOSTS)?;
                let rows = statement.query_map([&job], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect()
            })
        })
    }

    fn host(&self, job: &str, host: &str) -> StoreFuture<'_, Option<StoredHost>> {
        let (job, host) = (job.to_owned(), host.to_owned());
        self.thread.run(move |worker| {
            worker.read(None, |conn| {
                conn.prepare_cached(HOST)?
                    .query_row([&job, &host], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
        })
    }

    fn prune(&self, before_ms: u64) -> StoreFuture<'_, usize> {
        self.thread.run(move |worker| {
            worker.write(Some(0), |txn| {
                let before = ms_sql(before_ms);
                txn.prepare_cached(PRUNE_HOSTS)?.execute([before])?;
                txn.prepare_cached(PRUNE_JOBS)?.execute([before])
            })
        })
    }
}
