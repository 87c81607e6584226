//! The small state that every node of a cluster shares: records, counters,
//! leases.
//!
//! Features such as user accounts, token revocations, rate limits on failed
//! logins and VPN address allocation need state that is the same on every
//! replica, and must not care whether the gateway runs alone or beside other
//! replicas. They see only [`Store`]; the cluster folder decides what backs
//! it: [`DiskStore`](crate::cluster::disk::DiskStore) (one file, for a
//! gateway running alone) or [`RedisStore`](crate::cluster::redis::store::RedisStore)
//! (the Redis the replicas share).
//!
//! A store holds three kinds of state, each in named [`Table`]s whose names
//! never collide across kinds:
//!
//! * **Records** ([`get`](Store::get), [`list`](Store::list),
//!   [`put`](Store::put), [`delete`](Store::delete),
//!   [`compare_and_swap`](Store::compare_and_swap)): durable, they survive a
//!   restart. Each write is atomic and, once acknowledged, seen by every later
//!   read on every node. `compare_and_swap` is the one tool for anything that
//!   must never be given out twice.
//! * **Counters** ([`count`](Store::count), [`take`](Store::take),
//!   [`uncount`](Store::uncount)): expiring; for rate limits. Kept where the
//!   records are (a gateway's restart does not reset them), but not
//!   announced as changes.
//! * **Leases** ([`acquire`](Store::acquire), [`release`](Store::release)):
//!   volatile, expiring; for "one node does this at a time".
//!
//! It is meant for small state (a table is read whole by `list`), not for a
//! node's hot path. An operation that fails with
//! [`StoreError::Unavailable`] may or may not have taken effect (the request
//! may have been applied before the answer was lost): a caller that must know
//! reads again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What every [`Store`] method returns: a future independent of the
/// arguments' borrows (it borrows only the store), so callers can hand it to
/// a task together with an `Arc` of the store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The name of a table, fixed in code.
///
/// Table names become parts of Redis keys and of the disk file's table
/// names, so they are restricted to 1–64 bytes of `[a-z0-9_-]`: a name can
/// hold no `:`, which keeps every composed key unambiguous. Declare tables as
/// constants, so that a bad name fails the build:
///
/// ```
/// use concierge::cluster::store::Table;
/// const USERS: Table = Table::new("users");
/// assert_eq!(USERS.name(), "users");
/// ```
///
/// ```compile_fail
/// use concierge::cluster::store::Table;
/// const BAD: Table = Table::new("users:admins");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Table(&'static str);

impl Table {
    /// Names a table. Panics (at compile time, in a `const`) on a name that
    /// is empty, longer than 64 bytes or not of `[a-z0-9_-]`.
    pub const fn new(name: &'static str) -> Table {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 64,
            "a table name has 1 to 64 bytes"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-',
                "a table name is made of a-z, 0-9, '_' and '-'"
            );
            i += 1;
        }
        Table(name)
    }

    /// The name the table was declared with.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

/// What [`Store::changes`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// The record `key` of the table named `table` was written (put, deleted
    /// or swapped), on this node or another. The table is a name rather than
    /// a [`Table`] because it may come from another node.
    Key { table: String, key: String },
    /// Changes may have been missed (the link to the other nodes was down or
    /// has just been (re)established): whoever caches records reloads them.
    /// A receiver that lags behind (`RecvError::Lagged`) must do the same.
    Missed,
}

/// What [`Store::take`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Counted: the count, this call included.
    Counted(u64),
    /// Not counted: the counter is at its limit for this long still
    /// (`None`: for ever).
    Full(Option<Duration>),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing storage cannot be reached or used right now (Redis down
    /// or not answering in time, a file that cannot be opened or written);
    /// the operation may or may not have taken effect. Worth retrying later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backing storage holds or returned something this store never
    /// writes (a damaged file, a Redis key of another type). Retrying will
    /// not help.
    #[error("the store holds unreadable data: {0}")]
    Corrupt(String),
}

/// State shared by every node of the cluster (see the module documentation).
///
/// Every method is atomic: it happens entirely or not at all, at one point
/// in time between its call and its answer, on every node alike.
pub trait Store: Send + Sync + 'static {
    /// The record `key` of `table`, or `None` if there is none.
    fn get(&self, table: Table, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Every record of `table`, sorted by key (byte order).
    fn list(&self, table: Table) -> StoreFuture<'_, Vec<(String, Vec<u8>)>>;

    /// Writes the record `key` of `table`, replacing any value; durable once
    /// it returns `Ok`.
    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> StoreFuture<'_, ()>;

    /// Removes the record `key` of `table`; whether there was one.
    fn delete(&self, table: Table, key: &str) -> StoreFuture<'_, bool>;

    /// Atomic: writes `new` (`None` deletes) only if the current value is
    /// `expected` (`None`: there is no record); true if it did. Of any number
    /// of racers expecting the same value, on any nodes, at most one wins.
    fn compare_and_swap(
        &self,
        table: Table,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> StoreFuture<'_, bool>;

    /// A counter that starts at 0, counts this call, and expires `window`
    /// after its first count (later counts do not extend it); returns the
    /// count including this call.
    fn count(&self, table: Table, key: &str, window: Duration) -> StoreFuture<'_, u64> {
        let taken = self.take(table, key, u64::MAX, window);
        Box::pin(async move {
            Ok(match taken.await? {
                Taken::Counted(count) => count,
                Taken::Full(_) => u64::MAX,
            })
        })
    }

    /// Atomic: [`count`](Store::count)s this call only if the counter is
    /// below `limit`, so that of any number of racers, on any nodes, no
    /// more than `limit` are counted within a window; otherwise counts
    /// nothing and says how long the counter has left.
    fn take(&self, table: Table, key: &str, limit: u64, window: Duration)
        -> StoreFuture<'_, Taken>;

    /// Takes one count back from a live counter (never below 0; its expiry
    /// stays): what was counted did not happen after all. Nothing for a
    /// counter that has expired.
    fn uncount(&self, table: Table, key: &str) -> StoreFuture<'_, ()>;

    /// Takes the lease `key` of `table` for `holder` if nobody holds it, or
    /// renews it if `holder` does, for `ttl` from now; true if `holder`
    /// holds it now. Volatile: a standalone gateway's leases are gone after
    /// a restart.
    fn acquire(
        &self,
        table: Table,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, bool>;

    /// Gives the lease up if `holder` holds it (otherwise does nothing).
    fn release(&self, table: Table, key: &str, holder: &str) -> StoreFuture<'_, ()>;

    /// Every change made through `put`, `delete` (of a record that existed)
    /// and `compare_and_swap` (that wrote), on any node, this one included,
    /// within a second while the nodes are connected; a [`Changed::Missed`]
    /// whenever some may have been lost. For caches such as token
    /// revocations.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Changed>;
}
