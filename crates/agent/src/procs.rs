//! The processes the agent started: their command lines, their captured
//! output and, after they exit, their exit status and duration.
//!
//! Output is read from the pipes as soon as it is written, whoever is
//! watching, into a bounded log per process (oldest bytes dropped and
//! counted), so nothing a process prints can block it or the agent. Bytes
//! are addressed by their offset in the process's combined output since it
//! started, which is what lets a reader resume where it stopped and a slow
//! follower catch up from the log instead of holding a queue of its own.
//! Every change bumps a [`watch`] counter that followers wait on.
//!
//! The running ones are also kept in [`state`](super::state)'s file, and
//! those an earlier run of the agent started are adopted at start: listed,
//! signalled, their exit noticed, their output gone.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use super::state::{self, Record, StateFile};
use concierge_protocol::agent::{Failure, Reason};

/// The most bytes one output event carries: even escaped six-fold as JSON
/// (control characters) it stays inside the gateway's default 64 KiB frame.
pub const CHUNK_MAX: usize = 8 * 1024;

/// How long after a process exits its output pipes may stay open (held by a
/// child it left behind) before the exit is reported anyway.
const PIPE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A run of bytes from one stream, at `offset` in the combined output.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: Stream,
    pub offset: u64,
    pub bytes: Bytes,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }

    /// The chunk as an event's fields: `data` when the bytes are UTF-8
    /// (reads are cut at character boundaries, so they nearly always are),
    /// else `data_b64`.
    pub fn fields(&self) -> Value {
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => {
                json!({"stream": self.stream.as_str(), "offset": self.offset, "data": text})
            }
            Err(_) => {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
                json!({"stream": self.stream.as_str(), "offset": self.offset, "data_b64": b64})
            }
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
}

impl Exit {
    pub fn fields(&self) -> Value {
        json!({
            "code": self.code,
            "signal": self.signal.map(super::signals::name_of),
            "duration_ms": self.duration.as_millis() as u64,
        })
    }
}

/// One process's output log: the kept chunks, the bytes dropped before
/// them, and where the next byte goes.
#[derive(Debug, Default)]
struct Log {
    chunks: VecDeque<Chunk>,
    kept: usize,
    dropped: u64,
    end: u64,
}

impl Log {
    fn push(&mut self, stream: Stream, bytes: Bytes, limit: usize) {
        if bytes.is_empty() {
            return;
        }
        let chunk = Chunk {
            stream,
            offset: self.end,
            bytes,
        };
        self.end = chunk.end();
        self.kept += chunk.bytes.len();
        self.chunks.push_back(chunk);
        while self.kept > limit {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= old.bytes.len();
            self.dropped += old.bytes.len() as u64;
        }
    }

    /// The offset of the oldest byte still kept.
    fn start(&self) -> u64 {
        self.chunks.front().map_or(self.end, |c| c.offset)
    }

    /// Up to `max` bytes from `offset`, and how many bytes before the first
    /// returned one were dropped (asked for but no longer kept).
    fn read(&self, offset: u64, max: usize) -> (Vec<Chunk>, u64) {
        let start = self.start();
        let (from, gap) = if offset < start {
            (start, start - offset)
        } else {
            (offset, 0)
        };
        let mut out = Vec::new();
        let mut budget = max;
        for chunk in &self.chunks {
            if budget == 0 {
                break;
            }
            if chunk.end() <= from {
                continue;
            }
            let skip = (from.saturating_sub(chunk.offset)) as usize;
            let take = (chunk.bytes.len() - skip).min(budget);
            out.push(Chunk {
                stream: chunk.stream,
                offset: chunk.offset + skip as u64,
                bytes: chunk.bytes.slice(skip..skip + take),
            });
            budget -= take;
        }
        (out, gap)
    }
}

/// A started process.
#[derive(Debug)]
struct Proc {
    argv: Vec<String>,
    started: SystemTime,
    /// Its start time in clock ticks since boot, to tell it from a later
    /// process with its pid (see `state`).
    ticks: Option<u64>,
    /// Started by an earlier run of the agent: its output is not here.
    adopted: bool,
    log: Log,
    exit: Option<Exit>,
    changed: watch::Sender<u64>,
}

/// What a read of a process's output returns.
#[derive(Debug)]
pub struct Read {
    pub chunks: Vec<Chunk>,
    /// Bytes asked for that were dropped from the log.
    pub dropped: u64,
    /// Where the next read continues.
    pub next: u64,
    /// Set once the process has exited and every byte up to `next` is read.
    pub exit: Option<Exit>,
}

/// A summary of one started process.
#[derive(Debug, Clone)]
pub struct Entry {
    pub pid: u32,
    pub argv: Vec<String>,
    pub started: SystemTime,
    pub exit: Option<Exit>,
    pub output_bytes: u64,
    pub dropped: u64,
    pub adopted: bool,
}

#[derive(Debug, Default)]
struct Inner {
    procs: BTreeMap<u32, Proc>,
    /// Exited pids, oldest exit first, for eviction.
    exited: VecDeque<u32>,
}

/// The table of started processes. Cheap to clone; shared by every request.
#[derive(Clone)]
pub struct Procs {
    inner: Arc<Mutex<Inner>>,
    limits: Limits,
    /// Where the running ones are kept across the agent's restarts.
    state: Option<StateFile>,
}

/// How much the table keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Output bytes kept per process.
    pub output: usize,
    /// Exited processes kept (with their output) for reading.
    pub exited: usize,
    /// Processes that may run at once.
    pub running: usize,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Procs {
    pub fn new(limits: Limits, state: Option<StateFile>) -> Procs {
        Procs {
            inner: Arc::default(),
            limits,
            state,
        }
    }

    /// Takes in the processes an earlier run of the agent started that
    /// still run (from the state file), and watches for their exit. Must
    /// run inside a Tokio runtime.
    pub fn adopt(&self) {
        let Some(file) = &self.state else {
            return;
        };
        let records = file.load();
        for record in &records {
            let (changed, _) = watch::channel(0);
            self.lock().procs.insert(
                record.pid,
                Proc {
                    argv: record.argv.clone(),
                    started: record.started_at(),
                    ticks: Some(record.ticks),
                    log: Log::default(),
                    exit: None,
                    adopted: true,
                    changed,
                },
            );
            tokio::spawn(self.clone().watch_adopted(record.clone()));
        }
        if !records.is_empty() {
            let pids: Vec<u32> = records.iter().map(|r| r.pid).collect();
            tracing::info!(
                ?pids,
                "adopted the processes an earlier run started (their output is not kept)"
            );
        }
        // Those that no longer run leave the file.
        self.save(&self.lock());
    }

    /// Waits for an adopted process to end: it is not the agent's child,
    /// so no exit status comes, only its absence.
    async fn watch_adopted(self, record: Record) {
        let mut ticks = tokio::time::interval(state::CHECK);
        while record.alive() {
            ticks.tick().await;
        }
        let duration = SystemTime::now()
            .duration_since(record.started_at())
            .unwrap_or_default();
        self.exited(
            record.pid,
            Exit {
                code: None,
                signal: None,
                duration,
            },
        );
    }

    /// Writes the running processes to the state file (under the table's
    /// lock, so that writes follow the changes in order).
    fn save(&self, inner: &Inner) {
        let Some(file) = &self.state else {
            return;
        };
        let records: Vec<Record> = inner
            .procs
            .iter()
            .filter(|(_, p)| p.exit.is_none())
            .filter_map(|(pid, p)| {
                Some(Record {
                    pid: *pid,
                    ticks: p.ticks?,
                    argv: p.argv.clone(),
                    started: unix_secs(p.started),
                })
            })
            .collect();
        file.save(&records);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a process with its output captured, in a process group of
    /// its own (its id is the process's pid); returns its pid.
    pub fn spawn(&self, spec: Spawn) -> Result<u32, Failure> {
        let groups: HashSet<u32> = self.lock().procs.keys().copied().collect();
        let running = count_in_groups(&groups);
        if running >= self.limits.running {
            return Err(Failure::new(
                Reason::Limit,
                format!(
                    "{running} processes started by the agent (with their children) are running, \
                     the most it runs at once (max_running)"
                ),
            ));
        }
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| Failure::bad_argument("`cmd` must name a program"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its children and theirs stay in its group unless they leave
            // it: counted, and signalled with it.
            .process_group(0)
            // The agent's own credential is not the started process's.
            .env_remove(TOKEN_VARIABLE)
            .envs(spec.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => Reason::NotFound,
                std::io::ErrorKind::PermissionDenied => Reason::OsError,
                _ => Reason::Failed,
            };
            let place = spec
                .cwd
                .as_deref()
                .map(|c| format!(" in {c}"))
                .unwrap_or_default();
            Failure::new(reason, format!("cannot start {program:?}{place}: {e}"))
        })?;
        let pid = child
            .id()
            .ok_or_else(|| Failure::new(Reason::Failed, "the process exited before it started"))?;
        let began = Instant::now();
        let (changed, _) = watch::channel(0);
        let ticks = state::start_ticks(pid);
        {
            let mut inner = self.lock();
            // A pid the kernel handed out again: the old entry is of an
            // exited process (a running one still holds its pid).
            if inner.procs.remove(&pid).is_some() {
                inner.exited.retain(|p| *p != pid);
            }
            inner.procs.insert(
                pid,
                Proc {
                    argv: spec.argv.clone(),
                    started: SystemTime::now(),
                    ticks,
                    log: Log::default(),
                    exit: None,
                    adopted: false,
                    changed,
                },
            );
            self.save(&inner);
        }
        let readers: Vec<_> = [
            child.stdout.take().map(|r| {
                (
                    Stream::Stdout,
                    Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                )
            }),
            child.stderr.take().map(|r| {
                (
                    Stream::Stderr,
                    Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .map(|(stream, reader)| tokio::spawn(self.clone().pump(pid, stream, reader)))
        .collect();
        let table = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let duration = began.elapsed();
            let _ = tokio::time::timeout(PIPE_GRACE, futures_util::future::join_all(readers)).await;
            let exit = match status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    Exit {
                        code: status.code(),
                        signal: status.signal(),
                        duration,
                    }
                }
                Err(e) => {
                    tracing::warn!(pid, error = %e, "cannot wait for a started process");
                    Exit {
                        code: None,
                        signal: None,
                        duration,
                    }
                }
            };
            table.exited(pid, exit);
        });
        Ok(pid)
    }

    /// Copies one pipe into the log until it closes.
    async fn pump(
        self,
        pid: u32,
        stream: Stream,
        mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    ) {
        let mut buf = vec![0u8; CHUNK_MAX];
        let mut held = 0;
        loop {
            let n = match reader.read(&mut buf[held..]).await {
                Ok(0) | Err(_) => {
                    // Whatever was held back for a character that never
                    // completed goes out as it is.
                    self.append(pid, stream, &buf[..held]);
                    return;
                }
                Ok(n) => n,
            };
            let filled = held + n;
            let cut = utf8_boundary(&buf[..filled]);
            self.append(pid, stream, &buf[..cut]);
            buf.copy_within(cut..filled, 0);
            held = filled - cut;
        }
    }

    fn append(&self, pid: u32, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if let Some(proc) = inner.procs.get_mut(&pid) {
            proc.log
                .push(stream, Bytes::copy_from_slice(bytes), self.limits.output);
            proc.changed.send_modify(|v| *v += 1);
        }
    }

    fn exited(&self, pid: u32, exit: Exit) {
        let mut inner = self.lock();
        let Some(proc) = inner.procs.get_mut(&pid) else {
            return;
        };
        proc.exit = Some(exit);
        proc.changed.send_modify(|v| *v += 1);
        inner.exited.push_back(pid);
        self.save(&inner);
        // The oldest go first, but not one whose children still run (it is
        // how they are counted and signalled; they count against
        // max_running, which bounds how many are kept past the limit), nor
        // the one that just exited (its follower or exec_command reads it).
        while inner.exited.len() > self.limits.exited {
            let newest = inner.exited.len() - 1;
            let Some(at) = inner
                .exited
                .iter()
                .take(newest)
                .position(|p| !group_alive(*p))
            else {
                break;
            };
            if let Some(old) = inner.exited.remove(at) {
                inner.procs.remove(&old);
            }
        }
    }

    /// Whether `pid` leads a process group the agent started that still
    /// has a process in it: the process itself, or children it left
    /// behind when it exited.
    pub fn owns_group(&self, pid: u32) -> bool {
        let Some(running) = self.lock().procs.get(&pid).map(|p| p.exit.is_none()) else {
            return false;
        };
        running || group_alive(pid)
    }

    /// Whether `pid` was started by an earlier run of the agent (its
    /// output is not here).
    pub fn adopted(&self, pid: u32) -> bool {
        self.lock().procs.get(&pid).is_some_and(|p| p.adopted)
    }

    /// Every started process the table still holds.
    pub fn entries(&self) -> Vec<Entry> {
        self.lock()
            .procs
            .iter()
            .map(|(pid, p)| Entry {
                pid: *pid,
                argv: p.argv.clone(),
                started: p.started,
                exit: p.exit,
                output_bytes: p.log.end,
                dropped: p.log.dropped,
                adopted: p.adopted,
            })
            .collect()
    }

    /// Up to `max` bytes of `pid`'s output from `offset`.
    pub fn read(&self, pid: u32, offset: u64, max: usize) -> Result<Read, Failure> {
        let inner = self.lock();
        let proc = inner.procs.get(&pid).ok_or_else(|| not_started(pid))?;
        let (chunks, dropped) = proc.log.read(offset, max);
        let next = chunks
            .last()
            .map_or(offset.max(proc.log.start()), Chunk::end);
        let exit = if next >= proc.log.end {
            proc.exit
        } else {
            None
        };
        Ok(Read {
            chunks,
            dropped,
            next,
            exit,
        })
    }

    /// A receiver that changes whenever `pid` prints or exits.
    pub fn watch(&self, pid: u32) -> Result<watch::Receiver<u64>, Failure> {
        let inner = self.lock();
        let proc = inner.procs.get(&pid).ok_or_else(|| not_started(pid))?;
        Ok(proc.changed.subscribe())
    }
}

/// The variable the agent's token may come in, removed from what started
/// processes inherit.
pub const TOKEN_VARIABLE: &str = "CONCIERGE_AGENT_TOKEN";

/// Whether process group `pgid` has a process in it.
fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the group exists.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// The live processes (zombies not counted) whose process group is one of
/// `groups`. A process that left its group (`setsid`, a daemon) is not
/// counted: only a cgroup would follow it.
fn count_in_groups(groups: &HashSet<u32>) -> usize {
    if groups.is_empty() {
        return 0;
    }
    let Ok(all) = procfs::process::all_processes() else {
        return 0;
    };
    all.flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|stat| {
            u32::try_from(stat.pgrp).is_ok_and(|g| groups.contains(&g))
                && !matches!(stat.state, 'Z' | 'X')
        })
        .count()
}

pub fn not_started(pid: u32) -> Failure {
    Failure::new(
        Reason::NotFound,
        format!(
            "no process {pid} started by this agent (it may have been forgotten after it exited)"
        ),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The length of the longest prefix of `bytes` that does not end inside a
/// UTF-8 character (invalid bytes count as complete: they are not waited
/// for).
pub fn utf8_boundary(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => {
            // Invalid somewhere: only hold back a trailing partial character.
            let tail = bytes.len().saturating_sub(3);
            (tail..bytes.len())
                .find(|&i| {
                    let b = bytes[i];
                    b >= 0xC0
                        && std::str::from_utf8(&bytes[i..]).is_err_and(|e| e.error_len().is_none())
                })
                .unwrap_or(bytes.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_drops_the_oldest_bytes_and_counts_them() {
        let mut log = Log::default();
        log.push(Stream::Stdout, Bytes::from_static(b"aaaa"), 6);
        log.push(Stream::Stderr, Bytes::from_static(b"bbbb"), 6);
        assert_eq!((log.dropped, log.start(), log.end), (4, 4, 8));
        let (chunks, gap) = log.read(0, 100);
        assert_eq!(gap, 4);
        assert_eq!(chunks.len(), 1);
        assert_eq!(&chunks[0].bytes[..], b"bbbb");
        let (chunks, gap) = log.read(6, 1);
        assert_eq!(
            (gap, chunks[0].offset, &chunks[0].bytes[..]),
            (0, 6, &b"b"[..])
        );
    }

    #[test]
    fn reads_stop_at_character_boundaries() {
        let euro = "€".as_bytes();
        assert_eq!(utf8_boundary(b"abc"), 3);
        assert_eq!(utf8_boundary(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(utf8_boundary(&[0xff, b'a']), 2);
        assert_eq!(utf8_boundary(&[0xff, euro[0]]), 1);
    }
}
