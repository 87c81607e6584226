//! The jobs' records in the work folder (`jobs/<job>/record.json`), which
//! make a job run at most once on this host: a job is recorded before
//! anything of it starts, and a `run_job` for a recorded job is answered
//! from its record, across the agent's restarts too.
//!
//! Each job has a folder (mode 0700) with its record and, for a process,
//! the wrapper's files ([`super::job_wrap`]): its output and its exit.
//! Records are replaced atomically (a synced temporary file renamed over
//! it, the folder synced). The folders are bounded: past [`KEEP`] jobs, the
//! oldest by record time are deleted (never one still running), so a job
//! older than the last [`KEEP`] would run again if it were sent again.

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::state::write_atomically;
use concierge_protocol::jobs::{Captured, HostOutcome, HostState, JobId};

/// How many jobs' folders are kept.
pub const KEEP: usize = 10_000;

/// The folder of the jobs, in the work folder.
pub const FOLDER: &str = "jobs";

/// The record's file name in a job's folder.
pub const RECORD: &str = "record.json";

/// What the agent knows of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub job: JobId,
    /// When it was first recorded, in Unix milliseconds.
    pub recorded_ms: u64,
    /// The request's name (its arguments are in the audit trail, secrets
    /// masked).
    pub req: String,
    /// When a process that still runs is stopped (`timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The wrapper running the job's process, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapper: Option<Wrapper>,
    /// Set once the agent began stopping the process: why (`timed_out`,
    /// `cancelled`) and when (SIGKILL follows 5 s later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// How it ended; none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<HostOutcome>,
}

/// A wrapper process: its pid (its group's id) and start time in clock
/// ticks since boot, so that a pid handed out again is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapper {
    pub pid: u32,
    pub ticks: u64,
}

impl Wrapper {
    pub fn alive(&self) -> bool {
        super::state::start_ticks(self.pid) == Some(self.ticks)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub state: HostState,
    pub at_ms: u64,
}

/// The records on disk and an index of them by record time. Cheap to
/// clone; its writes block (they sync), so they run off the agent's thread.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    keep: usize,
    index: Arc<Mutex<BTreeSet<(u64, JobId)>>>,
}

impl Store {
    /// Opens (creating) `work_dir/jobs`, keeping `keep` jobs; returns the
    /// records that have no outcome yet (a job that ran when the agent
    /// stopped).
    pub fn open(work_dir: &Path, keep: usize) -> Result<(Store, Vec<Record>), String> {
        use std::os::unix::fs::DirBuilderExt;
        let root = work_dir.join(FOLDER);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| format!("jobs folder {}: {e}", root.display()))?;
        // Absolute: a job's wrapper starts in its command's folder.
        let root = std::fs::canonicalize(&root)
            .map_err(|e| format!("jobs folder {}: {e}", root.display()))?;
        let store = Store {
            root,
            keep: keep.max(1),
            index: Arc::default(),
        };
        let mut unfinished = Vec::new();
        let entries = std::fs::read_dir(&store.root)
            .map_err(|e| format!("jobs folder {}: {e}", store.root.display()))?;
        for entry in entries.flatten() {
            let Some(job) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match store.load(&job) {
                Some(record) => {
                    store.lock().insert((record.recorded_ms, job));
                    if record.outcome.is_none() {
                        unfinished.push(record);
                    }
                }
                // A folder whose record was never written: nothing of it ran.
                None => {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok((store, unfinished))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, JobId)>> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job's folder.
    pub fn dir(&self, job: &JobId) -> PathBuf {
        self.root.join(job.as_str())
    }

    /// The job's record, if it has one.
    pub fn load(&self, job: &JobId) -> Option<Record> {
        let bytes = std::fs::read(self.dir(job).join(RECORD)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(%job, error = %e, "ignored an unreadable job record");
                None
            }
        }
    }

    /// Writes `record` (creating its folder); a new job may delete the
    /// oldest folders past the bound, never one of `running`.
    pub fn save(&self, record: &Record, running: &HashSet<JobId>) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.dir(&record.job);
        let new = !dir.exists();
        if new {
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        }
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        write_atomically(&dir.join(RECORD), &bytes)?;
        if new {
            self.lock().insert((record.recorded_ms, record.job.clone()));
            self.prune(running);
        }
        Ok(())
    }

    /// Deletes the oldest folders until at most `keep` are left (those of
    /// `running` jobs are skipped).
    fn prune(&self, running: &HashSet<JobId>) {
        let mut index = self.lock();
        while index.len() > self.keep {
            let Some(oldest) = index.iter().find(|(_, j)| !running.contains(j)).cloned() else {
                return;
            };
            index.remove(&oldest);
            if let Err(e) = std::fs::remove_dir_all(self.dir(&oldest.1)) {
                tracing::warn!(job = %oldest.1, error = %e, "cannot delete an old job's folder");
            }
        }
    }

    /// How many jobs are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the job's process printed on `file`, kept as
    /// [`Captured::keep`] keeps it within `budget` bytes (a long file is
    /// read at its two ends only).
    pub fn captured(&self, job: &JobId, file: &str, budget: usize) -> Captured {
        let read = || -> std::io::Result<Captured> {
            let mut f = std::fs::File::open(self.dir(job).join(file))?;
            let len = f.metadata()?.len();
            if len <= budget as u64 {
                let mut all = Vec::new();
                f.read_to_end(&mut all)?;
                return Ok(Captured::keep(&all, budget));
            }
            let half = budget / 2;
            let mut head = vec![0; half];
            f.read_exact(&mut head)?;
            f.seek(SeekFrom::End(-(half as i64)))?;
            let mut tail = vec![0; half];
            f.read_exact(&mut tail)?;
            Ok(Captured {
                head: String::from_utf8_lossy(&head).into_owned(),
                tail: String::from_utf8_lossy(&tail).into_owned(),
                omitted: len - 2 * half as u64,
            })
        };
        read().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            job: format!("{n:012x}").parse().expect("an id"),
            recorded_ms: 1_000 + n,
            req: "ping".into(),
            deadline_ms: None,
            wrapper: None,
            stop: None,
            outcome: None,
        }
    }

    #[test]
    fn the_oldest_jobs_go_past_the_bound_but_never_a_running_one() {
        let work = tempfile::tempdir().expect("dir");
        let (store, unfinished) = Store::open(work.path(), 3).expect("opens");
        assert!(store.is_empty() && unfinished.is_empty());
        let running: HashSet<JobId> = [record(0).job].into();
        for n in 0..5 {
            store.save(&record(n), &running).expect("saved");
        }
        assert_eq!(store.len(), 3);
        // The running one stays; 1 and 2, the oldest of the others, went.
        let kept: Vec<bool> = (0..5)
            .map(|n| store.load(&record(n).job).is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, true]);
        // Rewriting a kept record is no new job: nothing more goes.
        store.save(&record(3), &HashSet::new()).expect("saved");
        assert_eq!(store.len(), 3);

        // Opened again: the index comes back from the records, and those
        // without an outcome are the unfinished ones.
        let (again, unfinished) = Store::open(work.path(), 3).expect("opens");
        assert_eq!((again.len(), unfinished.len()), (3, 3));
        again.save(&record(9), &HashSet::new()).expect("saved");
        assert!(again.load(&record(0).job).is_none(), "the oldest went");
    }

    #[test]
    fn long_output_is_kept_by_its_two_ends() {
        let work = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(work.path(), 3).expect("opens");
        let job = record(1).job;
        store.save(&record(1), &HashSet::new()).expect("saved");
        std::fs::write(store.dir(&job).join("stdout"), b"0123456789abcdef").expect("written");
        let cut = store.captured(&job, "stdout", 8);
        assert_eq!(
            (cut.head.as_str(), cut.tail.as_str(), cut.omitted),
            ("0123", "cdef", 8)
        );
        assert_eq!(store.captured(&job, "stdout", 100).head, "0123456789abcdef");
        assert!(store.captured(&job, "missing", 8).is_empty());
    }
}
