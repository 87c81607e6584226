//! How many bytes the file server holds, per client and in all, so that no
//! client can fill the disk (one stored 8 × 50 MB in half a second).
//!
//! The count is kept in memory and covers the files stored and the uploads
//! still streaming in: an upload reserves its bytes chunk by chunk as they
//! arrive, before they are written, so uploads running at once cannot each
//! pass a check made before any of them was written. It starts from what
//! the files folder holds at start-up (a folder shared by replicas keeps
//! their clients' files), grows with uploads, and shrinks with deletions
//! and when a departed client's folder is discarded. Each replica counts
//! what it received: in a cluster, the limits hold per replica.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use walkdir::WalkDir;

/// Which limit an upload would pass, and that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// `max_client_files_bytes`.
    Client(u64),
    /// `max_files_bytes`.
    Total(u64),
}

#[derive(Default)]
struct Used {
    total: u64,
    clients: HashMap<String, u64>,
}

/// The byte counts and their limits.
pub struct Quota {
    per_client: u64,
    total: u64,
    used: Mutex<Used>,
}

impl Quota {
    /// Limits of `per_client` and `total` bytes, counting from what the
    /// client folders under `files_dir` hold (its `.`-folders, temporary
    /// uploads and trash, are no client's).
    pub fn new(per_client: u64, total: u64, files_dir: &Path) -> Quota {
        let mut used = Used::default();
        for entry in std::fs::read_dir(files_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let bytes = size_of(&entry.path());
            used.total += bytes;
            used.clients.insert(name, bytes);
        }
        Quota {
            per_client,
            total,
            used: Mutex::new(used),
        }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Used> {
        // The counts stay consistent whatever panicked while holding them.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `bytes` more for `client` would stay within the limits,
    /// once `credit` bytes it already counts are freed (the file an upload
    /// replaces: a client at its limit may still overwrite a file).
    pub fn fits(&self, client: &str, bytes: u64, credit: u64) -> Result<(), Exceeded> {
        self.check(&self.used(), client, bytes, credit)
    }

    fn check(&self, used: &Used, client: &str, bytes: u64, credit: u64) -> Result<(), Exceeded> {
        let mine = used.clients.get(client).copied().unwrap_or(0);
        if mine.saturating_sub(credit).saturating_add(bytes) > self.per_client {
            return Err(Exceeded::Client(self.per_client));
        }
        if used.total.saturating_sub(credit).saturating_add(bytes) > self.total {
            return Err(Exceeded::Total(self.total));
        }
        Ok(())
    }

    /// Counts `bytes` more for `client` if they fit (see [`fits`](Quota::fits)
    /// for `credit`).
    pub fn reserve(&self, client: &str, bytes: u64, credit: u64) -> Result<(), Exceeded> {
        let mut used = self.used();
        self.check(&used, client, bytes, credit)?;
        used.total += bytes;
        *used.clients.entry(client.to_owned()).or_default() += bytes;
        Ok(())
    }

    /// Counts `bytes` fewer for `client` (deleted, replaced, or an upload
    /// that failed).
    pub fn release(&self, client: &str, bytes: u64) {
        let mut used = self.used();
        let Some(mine) = used.clients.get_mut(client) else {
            return;
        };
        let freed = bytes.min(*mine);
        *mine -= freed;
        if *mine == 0 {
            used.clients.remove(client);
        }
        used.total = used.total.saturating_sub(freed);
    }

    /// Forgets `client`'s bytes: its folder was discarded.
    pub fn forget(&self, client: &str) {
        let mut used = self.used();
        if let Some(bytes) = used.clients.remove(client) {
            used.total = used.total.saturating_sub(bytes);
        }
    }
}

/// Bytes of the files under `path` (or of `path`, a file).
pub fn size_of(path: &Path) -> u64 {
    WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_against_both_limits_until_released() {
        let empty = tempfile::tempdir().unwrap();
        let quota = Quota::new(10, 15, empty.path());
        assert_eq!(quota.reserve("a", 8, 0), Ok(()));
        assert_eq!(quota.reserve("a", 3, 0), Err(Exceeded::Client(10)));
        // Replacing 5 of its bytes, it has room for 3 more.
        assert_eq!(quota.fits("a", 3, 5), Ok(()));
        assert_eq!(quota.reserve("b", 8, 0), Err(Exceeded::Total(15)));
        assert_eq!(quota.fits("b", 7, 0), Ok(()));
        quota.release("a", 5);
        assert_eq!(quota.reserve("b", 10, 0), Ok(()));
        quota.forget("b");
        assert_eq!(quota.reserve("c", 10, 0), Ok(()));
    }
}
