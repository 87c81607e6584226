//! Services' histories: the broadcasts a service keeps so that a subscriber
//! that comes back receives what it missed (`docs/PROTOCOL.md` §17).
//!
//! A history is a log per service, bounded by a number of messages, a time
//! to live and a number of bytes; each entry is the broadcast's JSON as its
//! subscribers received it, at an offset that grows by one per message,
//! under an epoch drawn when the history starts (a history that is lost
//! and started again gets another, so a position of the old one can never
//! be mistaken for one of the new). It sits behind the cluster seam like
//! the [`Broker`](super::Broker): [`MemoryHistory`] is the one of a gateway
//! running alone, and the copy that the owner's replica keeps in a cluster,
//! where Redis streams hold it for the other replicas
//! (`redis::history`).
//!
//! Only the node of a service's owner starts, appends to and ends its
//! history, and reads it synchronously ([`Histories::last`],
//! [`Histories::since`]); any node reads it as the store has it with
//! [`Histories::read`]. Appending and reading are not ordered against the
//! broadcasts here: the namespace holds its service's gate around both (see
//! `namespace::service`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use super::{ClusterError, Pending};
use crate::protocol::{History, Position};

/// What a history keeps at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
    /// Bytes of all the messages kept together.
    pub bytes: usize,
}

impl Limits {
    /// The limits of `history`, under a byte bound.
    pub fn new(history: History, bytes: usize) -> Limits {
        Limits {
            size: usize::try_from(history.size).unwrap_or(usize::MAX),
            ttl: Duration::from_secs(history.ttl),
            bytes,
        }
    }
}

/// What a subscriber that gave a position gets back.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the position, in order (none when it was the
    /// last).
    Recovered(Vec<Bytes>),
    /// The position is not in the history (another epoch, fallen out of
    /// it, or never given): the client must resync.
    Lost,
}

/// A history as the store has it, read by a node that does not keep it.
#[derive(Debug, PartialEq, Eq)]
pub struct Read {
    /// Its last position; `None` when the store has no history of that
    /// service (none was started, or the store lost it).
    pub last: Option<Position>,
    /// What follows the position asked about, when one was (`Lost` as well
    /// when more than the most asked for follow).
    pub recovery: Option<Recovery>,
}

/// The histories of services (see the module documentation).
pub trait Histories: Send + Sync + 'static {
    /// Starts the history of a service owned by a client of this node,
    /// replacing any it had; returns its position before the first
    /// message.
    fn start(&self, service: &str, limits: Limits) -> Position;
    /// Appends the message that `write` encodes at the position it is
    /// given; `None` when the service keeps no history of that `epoch`.
    fn append(
        &self,
        service: &str,
        epoch: &str,
        write: &mut dyn FnMut(&Position) -> Bytes,
    ) -> Option<Position>;
    /// The last position of a service's history, if it keeps one.
    fn last(&self, service: &str) -> Option<Position>;
    /// The messages after `after`.
    fn since(&self, service: &str, after: &Position) -> Recovery;
    /// Forgets a service's history (it was deleted); nothing for a
    /// history this node did not start.
    fn end(&self, service: &str);
    /// Reads a service's history as the store has it, from any node: its
    /// last position and, given `after`, the messages after it if they are
    /// all still within `limits` and at most `max`.
    fn read(
        &self,
        service: &str,
        after: Option<&Position>,
        limits: Limits,
        max: usize,
    ) -> Pending<Result<Read, ClusterError>>;
}

/// One service's log in memory.
struct Log {
    epoch: String,
    limits: Limits,
    /// The offset of the last message appended (0 before the first).
    last: u64,
    /// (offset, when, the message), oldest first.
    entries: VecDeque<(u64, Instant, Bytes)>,
    bytes: usize,
}

impl Log {
    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.last,
        }
    }

    /// Drops what the limits no longer allow.
    fn trim(&mut self, now: Instant) {
        while let Some((_, at, message)) = self.entries.front() {
            let expired = now.saturating_duration_since(*at) >= self.limits.ttl;
            if !(expired || self.entries.len() > self.limits.size || self.bytes > self.limits.bytes)
            {
                break;
            }
            self.bytes -= message.len();
            self.entries.pop_front();
        }
    }
}

/// The [`Histories`] of a gateway running alone: in this process's memory,
/// lost when it stops (a gateway started again draws new epochs).
#[derive(Default)]
pub struct MemoryHistory {
    logs: Mutex<HashMap<String, Log>>,
}

impl MemoryHistory {
    fn logs(&self) -> MutexGuard<'_, HashMap<String, Log>> {
        // Every change below leaves the log whole before the next line that
        // could panic (none allocate between the two halves of an update).
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryHistory {
    /// [`Histories::append`], also returning the limits of the history and
    /// the offset of the oldest message it still keeps (the next one's when
    /// it keeps none).
    pub fn append_trimmed(
        &self,
        service: &str,
        epoch: &str,
        write: &mut dyn FnMut(&Position) -> Bytes,
    ) -> Option<(Position, Limits, u64)> {
        let mut logs = self.logs();
        let log = logs.get_mut(service).filter(|log| log.epoch == epoch)?;
        let position = Position {
            epoch: log.epoch.clone(),
            offset: log.last + 1,
        };
        let message = write(&position);
        log.last = position.offset;
        log.bytes += message.len();
        log.entries
            .push_back((position.offset, Instant::now(), message));
        log.trim(Instant::now());
        let oldest = log
            .entries
            .front()
            .map_or(log.last + 1, |(offset, _, _)| *offset);
        Some((position, log.limits, oldest))
    }

    /// Every history this node keeps: its name, last position and the
    /// messages it still has, with their offsets and ages.
    pub fn logs_kept(&self) -> Vec<Kept> {
        let mut logs = self.logs();
        let now = Instant::now();
        logs.iter_mut()
            .map(|(name, log)| {
                log.trim(now);
                Kept {
                    service: name.clone(),
                    last: log.position(),
                    entries: log
                        .entries
                        .iter()
                        .map(|(offset, at, message)| {
                            (*offset, now.saturating_duration_since(*at), message.clone())
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// One history as [`MemoryHistory::logs_kept`] lists it.
pub struct Kept {
    pub service: String,
    pub last: Position,
    /// (offset, age, message), oldest first.
    pub entries: Vec<(u64, Duration, Bytes)>,
}

impl Histories for MemoryHistory {
    fn start(&self, service: &str, limits: Limits) -> Position {
        let log = Log {
            epoch: Uuid::new_v4().simple().to_string(),
            limits,
            last: 0,
            entries: VecDeque::new(),
            bytes: 0,
        };
        let position = log.position();
        self.logs().insert(service.to_owned(), log);
        position
    }

    fn append(
        &self,
        service: &str,
        epoch: &str,
        write: &mut dyn FnMut(&Position) -> Bytes,
    ) -> Option<Position> {
        self.append_trimmed(service, epoch, write)
            .map(|(position, _, _)| position)
    }

    fn last(&self, service: &str) -> Option<Position> {
        self.logs().get(service).map(Log::position)
    }

    fn since(&self, service: &str, after: &Position) -> Recovery {
        let mut logs = self.logs();
        let Some(log) = logs.get_mut(service) else {
            return Recovery::Lost;
        };
        log.trim(Instant::now());
        if after.epoch != log.epoch || after.offset > log.last {
            return Recovery::Lost;
        }
        // The first message kept (or, when none is, the next to come) must
        // be the one right after the position.
        let first = log
            .entries
            .front()
            .map_or(log.last + 1, |(offset, _, _)| *offset);
        if first > after.offset + 1 {
            return Recovery::Lost;
        }
        Recovery::Recovered(
            log.entries
                .iter()
                .filter(|(offset, _, _)| *offset > after.offset)
                .map(|(_, _, message)| message.clone())
                .collect(),
        )
    }

    fn end(&self, service: &str) {
        self.logs().remove(service);
    }

    fn read(
        &self,
        service: &str,
        after: Option<&Position>,
        _: Limits,
        max: usize,
    ) -> Pending<Result<Read, ClusterError>> {
        // The limits the history was started with apply.
        let read = Read {
            last: self.last(service),
            recovery: after.map(|after| match self.since(service, after) {
                Recovery::Recovered(replay) if replay.len() <= max => Recovery::Recovered(replay),
                _ => Recovery::Lost,
            }),
        };
        Box::pin(std::future::ready(Ok(read)))
    }
}

#[cfg(test)]
mod tests;
