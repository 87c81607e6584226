//! The [`Ledger`] of replicas sharing one Redis: any replica reads the
//! jobs another coordinated, and takes over those a dead replica left.
//!
//! Keys (`{prefix}` is given to [`RedisLedger::new`], `concierge` in a
//! gateway, the store's):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:job:{id}` | string | a job's record |
//! | `{prefix}:jobs` | sorted set | every job's id, scored by its creation (Unix ms) |
//! | `{prefix}:jobs:active` | set | the ids of the jobs that are not over |
//! | `{prefix}:job:{id}:hosts` | hash | host → `1` (final) or `0`, then the row |
//! | `{prefix}:job:{id}:output` | hash | host → its output, for hosts that have one |
//!
//! Job ids are [`JobId`](crate::protocol::jobs::JobId)s (12 hex digits, no
//! `:`), so these keys meet neither each other nor the store's and the
//! broker's under the same prefix.
//!
//! Every write is one Lua script, atomic on the server, so the rules hold
//! whichever replica writes: [`write_hosts`](Ledger::write_hosts) reads
//! each host's finality byte and skips a final row; rows and records of a
//! job the ledger does not have (never created, or pruned) are not
//! written; [`create`](Ledger::create) of a job that exists changes
//! nothing (a retry after an error is harmless), and writes all its hosts
//! in that one script, `HSET`'s of [`CHUNK`] fields each: a job of 10,000
//! hosts is one round trip.
//!
//! Records and rows are as durable as the Redis behind them (see
//! [`store`](super::store)), and every request is bounded by the store's
//! [`TIMEOUT`](super::store::TIMEOUT).

use std::sync::Arc;

use redis::{Script, ScriptInvocation};

use super::master::Master;
use super::store::{bounded, optional};
use crate::cluster::ledger::{HostRow, Ledger, StoredHost};
use crate::cluster::store::{StoreError, StoreFuture};

/// How many hosts one `HSET` of [`CREATE`] writes (Lua's `unpack` takes a
/// few thousand values at most).
const CHUNK: usize = 1000;

/// A final row's first byte; `0` marks the others.
const FINAL: u8 = b'1';
const PENDING: u8 = b'0';

/// KEYS: record, jobs, active, hosts, output. ARGV: id, created_ms,
/// record, CHUNK, then per host: host, marked row, output (`''` none, `=`
/// and the bytes). 1 if created, 0 if the job existed.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
local chunk = tonumber(ARGV[4])
local rows, outputs = {}, {}
local function flush(key, fields)
  if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  return {}
end
for i = 5, #ARGV, 3 do
  rows[#rows + 1] = ARGV[i]
  rows[#rows + 1] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    outputs[#outputs + 1] = ARGV[i]
    outputs[#outputs + 1] = string.sub(ARGV[i + 2], 2)
  end
  if #rows >= 2 * chunk then rows = flush(KEYS[4], rows) end
  if #outputs >= 2 * chunk then outputs = flush(KEYS[5], outputs) end
end
flush(KEYS[4], rows)
flush(KEYS[5], outputs)
return 1
";

/// KEYS: record, active. ARGV: id, record, active (`1` or `0`).
const UPDATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
";

/// KEYS: record, hosts, output. ARGV per host: host, marked row, output
/// (as in CREATE). The hosts written, in order.
const WRITE_HOSTS: &str = r"
local written = {}
if redis.call('EXISTS', KEYS[1]) == 0 then return written end
for i = 1, #ARGV, 3 do
  local host = ARGV[i]
  local current = redis.call('HGET', KEYS[2], host)
  if not current or string.byte(current, 1) ~= 49 then
    redis.call('HSET', KEYS[2], host, ARGV[i + 1])
    if ARGV[i + 2] == '' then
      redis.call('HDEL', KEYS[3], host)
    else
      redis.call('HSET', KEYS[3], host, string.sub(ARGV[i + 2], 2))
    end
    written[#written + 1] = host
  end
end
return written
";

/// KEYS: jobs. ARGV: the greatest score (`+inf` or `(ms`), limit, the
/// records' key prefix (`{prefix}:job:`). The records, newest first.
const JOBS: &str = r"
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, ARGV[2])
local records = {}
for _, id in ipairs(ids) do
  local record = redis.call('GET', ARGV[3] .. id)
  if record then records[#records + 1] = record end
end
return records
";

/// KEYS: jobs, active. ARGV: the records' key prefix, before_ms. How many
/// jobs went.
const PRUNE: &str = r"
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local gone = 0
for _, id in ipairs(old) do
  if redis.call('SISMEMBER', KEYS[2], id) == 0 then
    local key = ARGV[1] .. id
    redis.call('UNLINK', key, key .. ':hosts', key .. ':output')
    redis.call('ZREM', KEYS[1], id)
    gone = gone + 1
  end
end
return gone
";

/// The scripts, loaded once per ledger (sent as EVALSHA).
struct Scripts {
    create: Script,
    update: Script,
    write_hosts: Script,
    jobs: Script,
    prune: Script,
}

/// The shared [`Ledger`]: see the module documentation.
pub struct RedisLedger {
    master: Arc<Master>,
    prefix: String,
    scripts: Scripts,
}

/// A row as stored: its finality byte, then the row.
fn marked(row: &HostRow) -> Vec<u8> {
    let mut stored = Vec::with_capacity(row.row.len() + 1);
    stored.push(if row.is_final { FINAL } else { PENDING });
    stored.extend_from_slice(&row.row);
    stored
}

/// A stored row without its finality byte; an error for bytes this ledger
/// never writes.
fn unmarked(host: &str, mut stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    match stored.first() {
        Some(&FINAL | &PENDING) => {
            stored.remove(0);
            Ok(stored)
        }
        _ => Err(StoreError::Corrupt(format!(
            "Redis: the row of host {host:?} has no finality mark"
        ))),
    }
}

/// A host's name or a job's id as stored; an error if it is not UTF-8.
fn text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "Redis: the ledger holds a name that is not UTF-8: {:?}",
            String::from_utf8_lossy(e.as_bytes())
        ))
    })
}

/// Adds each row's host, marked row and output to a script's arguments.
fn row_args(script: &mut ScriptInvocation<'_>, rows: &[HostRow]) {
    for row in rows {
        script
            .arg(&row.host)
            .arg(marked(row))
            .arg(optional(row.output.clone()));
    }
}

impl RedisLedger {
    /// A ledger on the master's connection, with keys under `prefix`.
    pub fn new(master: Arc<Master>, prefix: &str) -> RedisLedger {
        RedisLedger {
            master,
            prefix: prefix.to_owned(),
            scripts: Scripts {
                create: Script::new(CREATE),
                update: Script::new(UPDATE),
                write_hosts: Script::new(WRITE_HOSTS),
                jobs: Script::new(JOBS),
                prune: Script::new(PRUNE),
            },
        }
    }

    /// What every job's record key starts with.
    fn records(&self) -> String {
        format!("{}:job:", self.prefix)
    }

    fn record(&self, job: &str) -> String {
        format!("{}:job:{job}", self.prefix)
    }

    fn hosts_key(&self, job: &str) -> String {
        format!("{}:job:{job}:hosts", self.prefix)
    }

    fn output_key(&self, job: &str) -> String {
        format!("{}:job:{job}:output", self.prefix)
    }

    fn jobs_key(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    fn active_key(&self) -> String {
        format!("{}:jobs:active", self.prefix)
    }
}

impl Ledger for RedisLedger {
    fn create(
        &self,
        job: &str,
        created_ms: u64,
        record: Vec<u8>,
        hosts: Vec<HostRow>,
    ) -> StoreFuture<'_, ()> {
        let mut script = self.scripts.create.prepare_invoke();
        script
            .key(self.record(job))
            .key(self.jobs_key())
            .key(self.active_key())
            .key(self.hosts_key(job))
            .key(self.output_key(job))
            .arg(job)
            .arg(created_ms)
            .arg(record)
            .arg(CHUNK);
        row_args(&mut script, &hosts);
        let created: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { created.await.map(drop) })
    }

    fn update(&self, job: &str, record: Vec<u8>, active: bool) -> StoreFuture<'_, ()> {
        let mut script = self.scripts.update.prepare_invoke();
        script
            .key(self.record(job))
            .key(self.active_key())
            .arg(job)
            .arg(record)
            .arg(if active { "1" } else { "0" });
        let updated: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { updated.await.map(drop) })
    }

    fn write_hosts(&self, job: &str, rows: Vec<HostRow>) -> StoreFuture<'_, Vec<String>> {
        if rows.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let mut script = self.scripts.write_hosts.prepare_invoke();
        script
            .key(self.record(job))
            .key(self.hosts_key(job))
            .key(self.output_key(job));
        row_args(&mut script, &rows);
        let written: StoreFuture<'_, Vec<Vec<u8>>> = self.master.script(script);
        Box::pin(async move { written.await?.into_iter().map(text).collect() })
    }

    fn job(&self, job: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.master
            .query(redis::cmd("GET").arg(self.record(job)).clone())
    }

    fn jobs(&self, before_ms: Option<u64>, limit: usize) -> StoreFuture<'_, Vec<Vec<u8>>> {
        if limit == 0 {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let mut script = self.scripts.jobs.prepare_invoke();
        script
            .key(self.jobs_key())
            .arg(before_ms.map_or_else(|| "+inf".to_owned(), |ms| format!("({ms}")))
            .arg(i64::try_from(limit).unwrap_or(i64::MAX))
            .arg(self.records());
        self.master.script(script)
    }

    fn active(&self) -> StoreFuture<'_, Vec<String>> {
        let members: StoreFuture<'_, Vec<Vec<u8>>> = self
            .master
            .query(redis::cmd("SMEMBERS").arg(self.active_key()).clone());
        Box::pin(async move {
            let mut ids = members
                .await?
                .into_iter()
                .map(text)
                .collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            Ok(ids)
        })
    }

    fn hosts(&self, job: &str) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        let all: StoreFuture<'_, Vec<(Vec<u8>, Vec<u8>)>> = self
            .master
            .query(redis::cmd("HGETALL").arg(self.hosts_key(job)).clone());
        Box::pin(async move {
            let mut rows = all
                .await?
                .into_iter()
                .map(|(host, stored)| {
                    let host = text(host)?;
                    let row = unmarked(&host, stored)?;
                    Ok((host, row))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            Ok(rows)
        })
    }

    fn host(&self, job: &str, host: &str) -> StoreFuture<'_, Option<StoredHost>> {
        let mut conn = self.master.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hget(self.hosts_key(job), host)
            .hget(self.output_key(job), host);
        let host = host.to_owned();
        Box::pin(async move {
            let (row, output): (Option<Vec<u8>>, Option<Vec<u8>>) =
                bounded(async move { pipe.query_async(&mut conn).await }).await?;
            match row {
                None => Ok(None),
                Some(stored) => Ok(Some((unmarked(&host, stored)?, output))),
            }
        })
    }

    fn prune(&self, before_ms: u64) -> StoreFuture<'_, usize> {
        let mut script = self.scripts.prune.prepare_invoke();
        script
            .key(self.jobs_key())
            .key(self.active_key())
            .arg(self.records())
            .arg(before_ms);
        let gone: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { Ok(usize::try_from(gone.await?).unwrap_or(0)) })
    }
}
