//! The jobs' ledger: every job's record and every host's row in it,
//! written before anything is sent, so that a job outlives the gateway
//! process (alone) and the replica (in a cluster) that coordinates it.
//!
//! Why not the [`Store`](super::store::Store): a job is a record and up to
//! tens of thousands of host rows that change in bursts. The store reads a
//! table whole, announces every write to every node (its caches' change
//! feed) and writes one record per round trip. The ledger writes a batch of
//! rows in one transaction or one round trip, lists one job's rows without
//! touching the others', announces nothing (the coordinator publishes
//! events itself), and keeps the one rule of exactly once in the storage
//! itself: a host's final row is never overwritten, whoever writes.
//!
//! Rows and records are opaque bytes here (the fleet layer's JSON); the
//! ledger knows of each row only whether it is final, and of each job its
//! creation time and whether it is active (not over).

use super::store::StoreFuture;

/// One host's row, to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub host: String,
    /// The row without its output (what lists read).
    pub row: Vec<u8>,
    /// Its output, when it has some (read one host at a time).
    pub output: Option<Vec<u8>>,
    /// A final row is never replaced, by any writer.
    pub is_final: bool,
}

/// One host's stored row and its output, if it has one.
pub type StoredHost = (Vec<u8>, Option<Vec<u8>>);

/// Jobs and their hosts, shared by every node (see the module
/// documentation).
///
/// Like the store's, every method is atomic, and an operation that fails
/// with [`StoreError::Unavailable`](super::store::StoreError) may or may
/// not have taken effect.
pub trait Ledger: Send + Sync + 'static {
    /// Writes a new job's record, active, with every host's first row, in
    /// one transaction.
    fn create(
        &self,
        job: &str,
        created_ms: u64,
        record: Vec<u8>,
        hosts: Vec<HostRow>,
    ) -> StoreFuture<'_, ()>;

    /// Replaces a job's record; with `active` false the job is over and
    /// leaves [`active`](Ledger::active).
    fn update(&self, job: &str, record: Vec<u8>, active: bool) -> StoreFuture<'_, ()>;

    /// Writes host rows in one transaction. A row for a host whose stored
    /// row is final is not written (a final row never changes); answers
    /// the hosts whose rows were written, in the order given.
    fn write_hosts(&self, job: &str, rows: Vec<HostRow>) -> StoreFuture<'_, Vec<String>>;

    /// A job's record.
    fn job(&self, job: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// The records of the latest `limit` jobs created before `before_ms`
    /// (all without), newest first.
    fn jobs(&self, before_ms: Option<u64>, limit: usize) -> StoreFuture<'_, Vec<Vec<u8>>>;

    /// The ids of the jobs that are not over.
    fn active(&self) -> StoreFuture<'_, Vec<String>>;

    /// Every host row of a job (without outputs), sorted by host (byte
    /// order).
    fn hosts(&self, job: &str) -> StoreFuture<'_, Vec<(String, Vec<u8>)>>;

    /// One host's row and its output.
    fn host(&self, job: &str, host: &str) -> StoreFuture<'_, Option<StoredHost>>;

    /// Deletes the jobs that are over and were created before
    /// `before_ms`, with their rows; how many went.
    fn prune(&self, before_ms: u64) -> StoreFuture<'_, usize>;
}
