//! The processes the agent started, kept in a file in its work folder
//! (`started.json`), so that an agent that restarts (an upgrade, a crash)
//! still lists the ones that run and may still signal them: without it a
//! process it started, now a child of PID 1, was "not started by this
//! agent". Each is recorded with its start time as the kernel counts it
//! (`/proc/PID/stat`), so a pid the kernel handed to another process since
//! is never taken for it. Their output went to the earlier agent's pipes:
//! it cannot be read or followed again (a process that writes after its
//! agent stopped gets SIGPIPE, as under ssh when the connection drops).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The file's name in the work folder.
pub const FILE: &str = "started.json";

/// How often an adopted process is checked for its exit (it is not the
/// agent's child: no exit status comes).
pub const CHECK: Duration = Duration::from_secs(1);

/// One started process, as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its pid, which is also its process group's id.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`).
    pub ticks: u64,
    pub argv: Vec<String>,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
}

impl Record {
    pub fn started_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.started)
    }
}

/// The file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn in_folder(work_dir: &Path) -> StateFile {
        StateFile {
            path: work_dir.join(FILE),
        }
    }

    /// The records of the processes that still run (the same pid, started
    /// at the same tick). A missing file is none; an unreadable one is
    /// logged and counts as none: it must not keep the agent from starting.
    pub fn load(&self) -> Vec<Record> {
        // A record makes its process one the agent may signal: only a file
        // the agent wrote counts, not one somebody else could have.
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(&self.path) {
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me || meta.mode() & 0o022 != 0 {
                tracing::warn!(path = %self.path.display(), "ignored the started processes file: \
                    not the agent's own, or writable by others");
                return Vec::new();
            }
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the started processes");
                return Vec::new();
            }
        };
        match serde_json::from_str::<Vec<Record>>(&text) {
            Ok(records) => records.into_iter().filter(Record::alive).collect(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignored the started processes file");
                Vec::new()
            }
        }
    }

    /// Replaces the file with `records`, atomically (a new file renamed
    /// over it): a crash leaves the old list or the new one.
    pub fn save(&self, records: &[Record]) {
        let written = serde_json::to_vec(records)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&self.path, &bytes));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the started processes");
        }
    }
}

/// Replaces `path` with `bytes` (mode 0600) so that a crash, even of the
/// machine, leaves the old content or the new: a temporary file written and
/// synced, renamed over it, and the folder synced so the rename lasts.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(folder.unwrap_or(Path::new(".")))?.sync_all()
}

impl Record {
    /// Whether the process still runs: its pid is alive (not a zombie),
    /// started at the recorded tick and still leads its process group.
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.ticks)
    }
}

/// The start time (clock ticks since boot) of live process `pid`, which
/// leads its process group as every process the agent starts does.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    let leads = u32::try_from(stat.pgrp) == Ok(pid);
    (leads && !matches!(stat.state, 'Z' | 'X')).then_some(stat.starttime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_kept_only_while_its_process_runs_with_its_start_time() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = StateFile::in_folder(dir.path());
        assert!(file.load().is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let ticks = start_ticks(pid).expect("it runs");
        let running = Record {
            pid,
            ticks,
            argv: vec!["sleep".into(), "30".into()],
            started: 1,
        };
        let reused = Record {
            ticks: ticks + 1,
            ..running.clone()
        };
        file.save(&[running.clone(), reused]);
        assert_eq!(file.load(), vec![running]);
        child.kill().expect("killed");
        child.wait().expect("reaped");
        assert!(file.load().is_empty());
    }
}
