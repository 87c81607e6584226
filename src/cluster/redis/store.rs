//! The [`Store`] of replicas sharing one Redis.
//!
//! Keys (`{prefix}` is given to [`RedisStore::new`], `concierge` in a
//! gateway):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:store:{table}` | hash | key → value, a table's records |
//! | `{prefix}:count:{table}:{key}` | string with TTL | a counter |
//! | `{prefix}:lease:{table}:{key}` | string with TTL | a lease's holder |
//!
//! Table names hold no `:` (see [`Table`]), so no two of these keys meet,
//! nor do they meet the keys of the broker ([`crate::cluster::redis`]) under
//! the same prefix: its `lease:{node}` has no second `:`.
//!
//! Records are as durable as the Redis behind them: they survive a Redis
//! restart only with its persistence on (`appendonly yes`; with
//! `appendfsync always` no acknowledged write is lost, with `everysec` the
//! last second may be). Counters and leases expire by Redis TTLs.
//!
//! Every write is one Lua script, so it is atomic on the server: a
//! compare-and-swap reads and writes with nothing in between, a counter gets
//! its expiry in the same step as its first count, a lease is renewed or
//! released only by its holder. Each record write also publishes
//! `{table}:{key}` on `{prefix}:store-changes` from inside its script, so a
//! write and its announcement happen together or not at all. A background task subscribes to
//! that channel on a connection of its own, reconnecting with backoff, and
//! feeds [`Store::changes`]; it sends [`Changed::Missed`] each time its
//! subscription is (re)established, since what was published while it was
//! away is lost.
//!
//! Every request is bounded by [`TIMEOUT`], whatever the connection's own
//! configuration: when Redis is unreachable an operation fails with
//! [`StoreError::Unavailable`] instead of holding its caller.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{RedisError, Script, ScriptInvocation};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::master::Master;
use crate::cluster::store::{Changed, Store, StoreError, StoreFuture, Table, Taken};

/// The longest a request waits for Redis.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// How many changes a slow [`Store::changes`] receiver may fall behind
/// before it lags.
const CHANGES: usize = 1024;

/// The first and the longest pause between two attempts to subscribe.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// KEYS[1] hash; ARGV: field, value, channel, notification.
const PUT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// KEYS[1] hash; ARGV: field, channel, notification. Whether it existed.
const DELETE: &str = r"
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
if existed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return existed
";

/// KEYS[1] hash; ARGV: field, expected ('' absent, '=' followed by the
/// value), new (likewise), channel, notification. Whether it wrote.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
elseif current ~= string.sub(ARGV[2], 2) then
  return 0
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], string.sub(ARGV[3], 2))
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// KEYS[1] counter; ARGV: limit, window in ms. `{1, count}` when counted,
/// `{0, ms left}` (-1: no expiry) at the limit. A counter found without an
/// expiry (written by something else) gets one too.
const TAKE: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, count}
";

/// KEYS[1] counter. DECR keeps its expiry; an expired counter is gone and
/// stays so.
const UNCOUNT: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
";

/// KEYS[1] lease; ARGV: holder, ttl in ms. Whether the holder holds it.
const ACQUIRE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// KEYS[1] lease; ARGV: holder.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// The scripts, loaded once per store (each is sent as EVALSHA, and its
/// text only when Redis does not know it yet).
struct Scripts {
    put: Script,
    delete: Script,
    compare_and_swap: Script,
    take: Script,
    uncount: Script,
    acquire: Script,
    release: Script,
}

/// The shared [`Store`]: see the module documentation.
pub struct RedisStore {
    master: Arc<Master>,
    prefix: String,
    channel: String,
    scripts: Scripts,
    changes: broadcast::Sender<Changed>,
    listener: AbortHandle,
}

impl RedisStore {
    /// A store on the master's connection, with keys under `prefix`; the
    /// subscription to changes takes a connection of its own. Must be
    /// called within a Tokio runtime: it spawns the task that follows the
    /// changes (stopped when the store is dropped).
    pub fn new(master: Arc<Master>, prefix: &str) -> RedisStore {
        let channel = format!("{prefix}:store-changes");
        let changes = broadcast::channel(CHANGES).0;
        let listener = tokio::spawn(listen(master.clone(), channel.clone(), changes.clone()));
        RedisStore {
            master,
            prefix: prefix.to_owned(),
            channel,
            scripts: Scripts {
                put: Script::new(PUT),
                delete: Script::new(DELETE),
                compare_and_swap: Script::new(COMPARE_AND_SWAP),
                take: Script::new(TAKE),
                uncount: Script::new(UNCOUNT),
                acquire: Script::new(ACQUIRE),
                release: Script::new(RELEASE),
            },
            changes,
            listener: listener.abort_handle(),
        }
    }

    fn records(&self, table: Table) -> String {
        format!("{}:store:{}", self.prefix, table.name())
    }

    fn counter(&self, table: Table, key: &str) -> String {
        format!("{}:count:{}:{key}", self.prefix, table.name())
    }

    fn lease(&self, table: Table, key: &str) -> String {
        format!("{}:lease:{}:{key}", self.prefix, table.name())
    }
}

/// The requests of the store, the ledger and the health store, each
/// bounded by [`TIMEOUT`].
impl Master {
    /// Runs one script.
    pub(super) fn script<'a, T: redis::FromRedisValue + Send + 'a>(
        &self,
        script: ScriptInvocation<'a>,
    ) -> StoreFuture<'a, T> {
        let mut conn = self.conn();
        Box::pin(bounded(async move { script.invoke_async(&mut conn).await }))
    }

    /// Runs one command.
    pub(super) fn query<'a, T: redis::FromRedisValue + Send + 'a>(
        &self,
        cmd: redis::Cmd,
    ) -> StoreFuture<'a, T> {
        let mut conn = self.conn();
        Box::pin(bounded(async move { cmd.query_async(&mut conn).await }))
    }
}

/// `future`, failing as [`StoreError::Unavailable`] after [`TIMEOUT`].
pub(super) async fn bounded<T>(
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(result) => result.map_err(failure),
        Err(_) => Err(StoreError::Unavailable(format!(
            "Redis did not answer within {TIMEOUT:?}"
        ))),
    }
}

/// A Redis error as a [`StoreError`]: `Corrupt` for a reply this code
/// cannot read, or a key of another type met by any command (a pipeline's
/// too).
pub(super) fn failure(error: RedisError) -> StoreError {
    let kind = error.kind();
    let wrong_type = error
        .clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "WRONGTYPE"));
    if matches!(
        kind,
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) || wrong_type
    {
        StoreError::Corrupt(format!("Redis: {error}"))
    } else {
        StoreError::Unavailable(format!("Redis: {error}"))
    }
}

/// A duration as Redis milliseconds: at least 1 (0 is refused), and no more
/// than Redis accepts.
fn millis(duration: Duration) -> u64 {
    const MAX: u128 = (i64::MAX / 4) as u128;
    // The clamp keeps it within u64.
    duration.as_millis().clamp(1, MAX) as u64
}

/// An optional value as a script argument: empty for none, `=` and the
/// value otherwise (so an empty value is not taken for none).
pub(super) fn optional(value: Option<Vec<u8>>) -> Vec<u8> {
    match value {
        None => Vec::new(),
        Some(value) => {
            let mut arg = Vec::with_capacity(value.len() + 1);
            arg.push(b'=');
            arg.extend_from_slice(&value);
            arg
        }
    }
}

/// What is published for a change: `{table}:{key}`.
fn notification(table: Table, key: &str) -> String {
    format!("{}:{key}", table.name())
}

/// A published notification, if it is one.
fn decode(payload: &[u8]) -> Option<Changed> {
    let text = std::str::from_utf8(payload).ok()?;
    let (table, key) = text.split_once(':')?;
    if table.is_empty() {
        return None;
    }
    Some(Changed::Key {
        table: table.to_owned(),
        key: key.to_owned(),
    })
}

/// Follows the changes channel on a connection of its own, forever.
async fn listen(master: Arc<Master>, channel: String, changes: broadcast::Sender<Changed>) {
    let mut delay = FIRST_RETRY;
    loop {
        let subscribed = bounded(async {
            let mut pubsub = master.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok(pubsub)
        })
        .await;
        match subscribed {
            Ok(pubsub) => {
                delay = FIRST_RETRY;
                tracing::debug!(%channel, "following store changes");
                let _ = changes.send(Changed::Missed);
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        // A failover: follow the changes on the new master.
                        _ = master.moved() => None,
                    };
                    let Some(message) = message else { break };
                    match decode(message.get_payload_bytes()) {
                        Some(change) => {
                            let _ = changes.send(change);
                        }
                        None => tracing::warn!(
                            %channel,
                            payload = %String::from_utf8_lossy(message.get_payload_bytes()),
                            "dropped a malformed store change notification"
                        ),
                    }
                }
                tracing::warn!(%channel, "lost the Redis subscription to store changes; reconnecting");
            }
            Err(e) => tracing::warn!(%channel, error = %e, "cannot follow store changes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = master.moved() => {}
        }
        delay = (delay * 2).min(LAST_RETRY);
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Store for RedisStore {
    fn get(&self, table: Table, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let mut conn = self.master.conn();
        let cmd = redis::cmd("HGET").arg(self.records(table)).arg(key).clone();
        Box::pin(bounded(async move { cmd.query_async(&mut conn).await }))
    }

    fn list(&self, table: Table) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        let mut conn = self.master.conn();
        let cmd = redis::cmd("HGETALL").arg(self.records(table)).clone();
        Box::pin(async move {
            let all: BTreeMap<String, Vec<u8>> =
                bounded(async move { cmd.query_async(&mut conn).await }).await?;
            Ok(all.into_iter().collect())
        })
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> StoreFuture<'_, ()> {
        let mut script = self.scripts.put.key(self.records(table));
        script
            .arg(key)
            .arg(value)
            .arg(&self.channel)
            .arg(notification(table, key));
        let written: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { written.await.map(|_| ()) })
    }

    fn delete(&self, table: Table, key: &str) -> StoreFuture<'_, bool> {
        let mut script = self.scripts.delete.key(self.records(table));
        script
            .arg(key)
            .arg(&self.channel)
            .arg(notification(table, key));
        self.master.script(script)
    }

    fn compare_and_swap(
        &self,
        table: Table,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> StoreFuture<'_, bool> {
        let mut script = self.scripts.compare_and_swap.key(self.records(table));
        script
            .arg(key)
            .arg(optional(expected))
            .arg(optional(new))
            .arg(&self.channel)
            .arg(notification(table, key));
        self.master.script(script)
    }

    fn take(
        &self,
        table: Table,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> StoreFuture<'_, Taken> {
        let mut script = self.scripts.take.key(self.counter(table, key));
        script.arg(limit).arg(millis(window));
        let answer: StoreFuture<'_, (i64, i64)> = self.master.script(script);
        Box::pin(async move {
            Ok(match answer.await? {
                (1, count) => Taken::Counted(count.try_into().unwrap_or(u64::MAX)),
                (_, left) => Taken::Full(u64::try_from(left).ok().map(Duration::from_millis)),
            })
        })
    }

    fn uncount(&self, table: Table, key: &str) -> StoreFuture<'_, ()> {
        let script = self.scripts.uncount.key(self.counter(table, key));
        let done: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { done.await.map(drop) })
    }

    fn acquire(
        &self,
        table: Table,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool> {
        let mut script = self.scripts.acquire.key(self.lease(table, key));
        script.arg(holder).arg(millis(ttl));
        self.master.script(script)
    }

    fn release(&self, table: Table, key: &str, holder: &str) -> StoreFuture<'_, ()> {
        let mut script = self.scripts.release.key(self.lease(table, key));
        script.arg(holder);
        self.master.script(script)
    }

    fn changes(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }
}
