//! Services' histories in a cluster: a Redis stream per service, written by
//! the owner's replica, read by any (`docs/PROTOCOL.md` §17.5).
//!
//! The owner's replica keeps each history it started in memory too (a
//! [`MemoryHistory`], the mirror): offsets are assigned there, synchronously
//! under the service's gate, and its subscribers are replayed from it. Every
//! change is then queued on the node's one ordered link: `start` writes the
//! head (`history-head:{name}`, a hash of the `epoch` and the `last` offset)
//! and drops any old stream; `append` adds the entry to `history:{name}`
//! (id `0-{offset}`, fields `m` the MESSAGE's JSON and `t` when it was kept,
//! in Unix milliseconds), trimmed exactly to the oldest entry the mirror
//! still keeps (`MINID`: the same size, time and byte bounds), and moves the
//! head's `last`. Both keys are deleted with the service's record, by
//! whichever node records the deletion or its owner's departure (see
//! `claims`), so a history outlives neither its service nor a dead owner's
//! replica.
//!
//! Ordering: the namespace appends a broadcast before it hands it to the
//! broker, and both queue their commands on the same link, which one task
//! writes in order on one connection. So Redis has a broadcast's entry
//! before any replica can receive the broadcast: a replica that starts
//! receiving a service's broadcasts, then reads its history, finds every
//! broadcast it did not receive in what it read (see
//! `namespace::service`).
//!
//! What can be lost: a write the link could not make (Redis unreachable,
//! or its queue full), and, across a Sentinel failover, the writes the old
//! master had not replicated yet (replication is asynchronous). A reader
//! never hides that: it checks that the entries it replays follow each
//! other from the position asked about up to the head's `last`, each within
//! its time to live, and answers `Lost` otherwise. After the link comes
//! back (a failover, an outage), the owner's replica writes its mirror back
//! whole ([`RedisHistory::restore`]): the holes close, and a history that
//! Redis lost entirely is there again under the same epoch (unless the
//! head names another epoch: the name went to another owner meanwhile).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::link::Link;
use super::wire::key;
use crate::cluster::history::{Histories, Kept, Limits, MemoryHistory, Read, Recovery};
use crate::cluster::{ClusterError, Pending};
use crate::protocol::Position;

/// The histories of a replica (see the module documentation).
pub struct RedisHistory {
    link: Arc<Link>,
    mirror: MemoryHistory,
    /// Held from a change to the mirror until its commands are queued on
    /// the link, so that Redis receives the changes in the mirror's order
    /// (a restore does not overtake an append, nor the reverse).
    queueing: Mutex<()>,
}

fn stream(service: &str) -> String {
    key(&["history", service])
}

fn head(service: &str) -> String {
    key(&["history-head", service])
}

fn unix_ms(age: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(u64::MAX)
}

/// `XADD` of one entry, trimming everything before `oldest`.
fn add(service: &str, offset: u64, age: Duration, message: &[u8], oldest: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream(service))
        .arg("MINID")
        .arg(format!("0-{oldest}"))
        .arg(format!("0-{offset}"))
        .arg("m")
        .arg(message)
        .arg("t")
        .arg(unix_ms(age));
    cmd
}

fn set_head(service: &str, last: &Position) -> redis::Cmd {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(head(service))
        .arg("epoch")
        .arg(&last.epoch)
        .arg("last")
        .arg(last.offset);
    cmd
}

fn delete(service: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(stream(service)).arg(head(service));
    cmd
}

impl RedisHistory {
    pub(super) fn new(link: Arc<Link>) -> Self {
        RedisHistory {
            link,
            mirror: MemoryHistory::default(),
            queueing: Mutex::new(()),
        }
    }

    fn queueing(&self) -> MutexGuard<'_, ()> {
        // It guards no data.
        self.queueing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes every history this node keeps back to Redis, whole (one
    /// script per history, so a queued write each): after the link came
    /// back, Redis may have lost some or all of it.
    pub fn restore(&self) {
        let _order = self.queueing();
        for Kept {
            service,
            last,
            entries,
        } in self.mirror.logs_kept()
        {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RESTORE)
                .arg(2)
                .arg(stream(&service))
                .arg(head(&service))
                .arg(&last.epoch)
                .arg(last.offset);
            for (offset, age, message) in entries {
                cmd.arg(offset).arg(&message[..]).arg(unix_ms(age));
            }
            self.link.write(cmd);
        }
    }
}

/// Replaces a history: KEYS the stream and the head; ARGV the epoch, the
/// last offset, then offset, message, time for each entry, oldest first.
/// Nothing when the head names another epoch: the service's name went to
/// another owner while this node was cut off, whose history it is.
const RESTORE: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if epoch and epoch ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'last', ARGV[2])
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'm', ARGV[i + 1], 't', ARGV[i + 2])
end
return 0
";

impl Histories for RedisHistory {
    fn start(&self, service: &str, limits: Limits) -> Position {
        let _order = self.queueing();
        let start = self.mirror.start(service, limits);
        self.link.write(delete(service));
        self.link.write(set_head(service, &start));
        start
    }

    fn append(
        &self,
        service: &str,
        epoch: &str,
        write: &mut dyn FnMut(&Position) -> Bytes,
    ) -> Option<Position> {
        let _order = self.queueing();
        let mut kept = Bytes::new();
        let (position, _, oldest) = self.mirror.append_trimmed(service, epoch, &mut |p| {
            kept = write(p);
            kept.clone()
        })?;
        self.link
            .write(add(service, position.offset, Duration::ZERO, &kept, oldest));
        let mut last = redis::cmd("HSET");
        last.arg(head(service)).arg("last").arg(position.offset);
        self.link.write(last);
        Some(position)
    }

    fn last(&self, service: &str) -> Option<Position> {
        self.mirror.last(service)
    }

    fn since(&self, service: &str, after: &Position) -> Recovery {
        self.mirror.since(service, after)
    }

    fn end(&self, service: &str) {
        // Its keys go with the service's record, when the deletion (or the
        // owner's departure) is recorded, only if the record still names
        // that owner: a late delete leaves a newer owner's history alone.
        self.mirror.end(service);
    }

    fn read(
        &self,
        service: &str,
        after: Option<&Position>,
        limits: Limits,
        max: usize,
    ) -> Pending<Result<Read, ClusterError>> {
        let mut conn = self.link.master.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(head(service))
            .arg("epoch")
            .arg("last");
        if let Some(after) = after {
            pipe.cmd("XRANGE")
                .arg(stream(service))
                .arg(format!("0-{}", after.offset.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(max.saturating_add(1));
        }
        let after = after.cloned();
        Box::pin(async move {
            let (head, entries): (Head, Vec<Entry>) = if after.is_some() {
                pipe.query_async(&mut conn).await
            } else {
                pipe.query_async::<(Head,)>(&mut conn)
                    .await
                    .map(|(head,)| (head, Vec::new()))
            }
            .map_err(|e| ClusterError::Unavailable(format!("cannot read a history: {e}")))?;
            Ok(check(
                head,
                entries,
                after.as_ref(),
                limits,
                max,
                unix_ms(Duration::ZERO),
            ))
        })
    }
}

/// The head as `HMGET` answers it: epoch, last offset.
type Head = (Option<String>, Option<u64>);

/// An entry as `XRANGE` answers it: its id, then field, value, ...
type Entry = (String, Vec<Vec<u8>>);

/// What a reader may replay of the `entries` read after `after`, at `now`
/// (Unix milliseconds): see the module documentation.
fn check(
    (epoch, last): Head,
    entries: Vec<Entry>,
    after: Option<&Position>,
    limits: Limits,
    max: usize,
    now: u64,
) -> Read {
    // The head's `last` moves in a write of its own after the entry's: a
    // read between the two sees one entry more than the head says.
    let newest = entries
        .last()
        .and_then(|(id, _)| id.strip_prefix("0-"))
        .and_then(|offset| offset.parse::<u64>().ok());
    let Some(last) = epoch.map(|epoch| Position {
        epoch,
        offset: last.unwrap_or(0).max(newest.unwrap_or(0)),
    }) else {
        return Read {
            last: None,
            recovery: after.map(|_| Recovery::Lost),
        };
    };
    let recovery = after.map(|after| {
        if after.epoch != last.epoch || after.offset > last.offset {
            return Recovery::Lost;
        }
        replay(entries, after.offset, &last, limits, max, now)
            .map_or(Recovery::Lost, Recovery::Recovered)
    });
    Read {
        last: Some(last),
        recovery,
    }
}

/// The messages of `entries`, if they are exactly those after `after` up
/// to `last`, all within `limits`, at most `max`.
fn replay(
    entries: Vec<Entry>,
    after: u64,
    last: &Position,
    limits: Limits,
    max: usize,
    now: u64,
) -> Option<Vec<Bytes>> {
    if entries.len() > max || entries.len() as u64 != last.offset - after {
        return None;
    }
    let ttl = u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut bytes = 0usize;
    let mut messages = Vec::with_capacity(entries.len());
    for (expected, (id, fields)) in (after + 1..).zip(entries) {
        if id != format!("0-{expected}") {
            return None;
        }
        let mut message = None;
        let mut at = None;
        for pair in fields.chunks_exact(2) {
            match pair[0].as_slice() {
                b"m" => message = Some(Bytes::from(pair[1].clone())),
                b"t" => {
                    at = std::str::from_utf8(&pair[1])
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok())
                }
                _ => {}
            }
        }
        let (message, at) = (message?, at?);
        if now.saturating_sub(at) >= ttl {
            return None;
        }
        bytes += message.len();
        messages.push(message);
    }
    (bytes <= limits.bytes && messages.len() <= limits.size).then_some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        size: 10,
        ttl: Duration::from_secs(60),
        bytes: 1000,
    };
    const NOW: u64 = 1_000_000;

    fn entry(offset: u64, at: u64) -> Entry {
        (
            format!("0-{offset}"),
            vec![
                b"m".to_vec(),
                offset.to_string().into_bytes(),
                b"t".to_vec(),
                at.to_string().into_bytes(),
            ],
        )
    }

    fn at(offset: u64) -> Position {
        Position {
            epoch: "e".into(),
            offset,
        }
    }

    fn head(last: u64) -> Head {
        (Some("e".into()), Some(last))
    }

    #[test]
    fn entries_that_follow_the_position_up_to_the_last_are_replayed() {
        let read = check(
            head(3),
            vec![entry(2, NOW), entry(3, NOW)],
            Some(&at(1)),
            LIMITS,
            10,
            NOW,
        );
        assert_eq!(read.last, Some(at(3)));
        let expected = vec![Bytes::from("2"), Bytes::from("3")];
        assert_eq!(read.recovery, Some(Recovery::Recovered(expected)));
        let caught_up = check(head(3), vec![], Some(&at(3)), LIMITS, 10, NOW);
        assert_eq!(caught_up.recovery, Some(Recovery::Recovered(vec![])));
    }

    #[test]
    fn an_entry_read_before_the_head_moved_counts() {
        let read = check(
            head(2),
            vec![entry(2, NOW), entry(3, NOW)],
            Some(&at(1)),
            LIMITS,
            10,
            NOW,
        );
        assert_eq!(read.last, Some(at(3)));
        assert_eq!(
            read.recovery,
            Some(Recovery::Recovered(vec![
                Bytes::from("2"),
                Bytes::from("3")
            ]))
        );
    }

    #[test]
    fn a_hole_a_missing_tail_or_an_expired_entry_is_lost() {
        let hole = check(head(3), vec![entry(3, NOW)], Some(&at(1)), LIMITS, 10, NOW);
        assert_eq!(hole.recovery, Some(Recovery::Lost));
        let tail = check(head(3), vec![entry(2, NOW)], Some(&at(1)), LIMITS, 10, NOW);
        assert_eq!(tail.recovery, Some(Recovery::Lost));
        let old = NOW - 60_000;
        let expired = check(head(2), vec![entry(2, old)], Some(&at(1)), LIMITS, 10, NOW);
        assert_eq!(expired.recovery, Some(Recovery::Lost));
    }

    #[test]
    fn too_many_another_epoch_or_no_head_is_lost() {
        let many = check(
            head(3),
            vec![entry(2, NOW), entry(3, NOW)],
            Some(&at(1)),
            LIMITS,
            1,
            NOW,
        );
        assert_eq!(many.recovery, Some(Recovery::Lost));
        let other = Position {
            epoch: "f".into(),
            offset: 1,
        };
        let epoch = check(head(1), vec![], Some(&other), LIMITS, 10, NOW);
        assert_eq!(epoch.recovery, Some(Recovery::Lost));
        let ahead = check(head(1), vec![], Some(&at(2)), LIMITS, 10, NOW);
        assert_eq!(ahead.recovery, Some(Recovery::Lost));
        let gone = check((None, None), vec![], Some(&at(1)), LIMITS, 10, NOW);
        assert_eq!(
            gone,
            Read {
                last: None,
                recovery: Some(Recovery::Lost)
            }
        );
        let fresh = check((Some("e".into()), None), vec![], None, LIMITS, 10, NOW);
        assert_eq!(
            fresh,
            Read {
                last: Some(at(0)),
                recovery: None
            }
        );
    }
}
