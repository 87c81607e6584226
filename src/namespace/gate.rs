//! What orders a service's broadcasts against its subscriptions when it
//! keeps a history, so that a subscriber that resumes gets every message
//! once: replayed or live, never both, never neither (`docs/PROTOCOL.md`
//! §17.4 and §17.5).
//!
//! On the owner's node, a broadcast is appended and delivered under the
//! gate, and a subscriber reads the history and joins the published view
//! under it: every message is either in what it read or delivered to it
//! live.
//!
//! On another node the history is read from the store, which takes a
//! while, and the broadcasts keep arriving meanwhile: the subscriber is
//! *tapped* (its broadcasts are held, bounded, instead of delivered) from
//! before the node follows the service's channel until its read is back.
//! Then, under the gate, [`resume`] keeps of the held broadcasts only those
//! beyond what was read; if the first of them does not follow the last one
//! read, what came between is missing and the subscriber is told it could
//! not recover, from the position before that first one. The view lists the
//! subscriber (and the broadcasts reach it directly) only from then on:
//! each broadcast is delivered under the gate, so it was either held or
//! finds it in the view.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use uuid::Uuid;

use crate::cluster::history::{Limits, Read, Recovery};
use crate::cluster::ClusterError;
use crate::protocol::Position;
use crate::transport::outbox::Frame;

/// A service's history gate (see the module documentation).
pub struct HistoryGate {
    /// The epoch of the history this node started for the service (its
    /// owner is a client of this node): appends to a history of the same
    /// name started since (the service was deleted and created again) are
    /// refused. `None` on the other nodes.
    pub epoch: Option<String>,
    /// What the history keeps at most.
    pub limits: Limits,
    taps: Mutex<Taps>,
}

/// The subscribers whose broadcasts are being held, with what was held;
/// and the position of the last broadcast that came from the owner's node.
#[derive(Default)]
pub struct Taps(Vec<Tap>, Option<Position>);

struct Tap {
    uuid: Uuid,
    frames: VecDeque<Frame>,
    bound: usize,
}

impl HistoryGate {
    /// The gate of a history started here, under `epoch`.
    pub fn owned(epoch: String, limits: Limits) -> Self {
        HistoryGate {
            epoch: Some(epoch),
            limits,
            taps: Mutex::default(),
        }
    }

    /// The gate of a history another node keeps.
    pub fn kept_elsewhere(limits: Limits) -> Self {
        HistoryGate {
            epoch: None,
            limits,
            taps: Mutex::default(),
        }
    }

    /// Holds the gate until the guard is dropped.
    pub fn hold(&self) -> MutexGuard<'_, Taps> {
        // Each change to the taps is one push or removal: a panic while it
        // was held leaves nothing half-changed.
        self.taps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Taps {
    /// Holds the broadcasts for `uuid` from now on, the newest `bound` of
    /// them (the older are dropped: [`resume`] sees the hole).
    pub fn open(&mut self, uuid: Uuid, bound: usize) {
        self.0.push(Tap {
            uuid,
            frames: VecDeque::new(),
            bound: bound.max(1),
        });
    }

    /// A broadcast delivered to the view's subscribers but `except`: the
    /// tapped ones get it held.
    pub fn feed(&mut self, frame: &Frame, except: Option<Uuid>) {
        for tap in self.0.iter_mut().filter(|tap| except != Some(tap.uuid)) {
            if tap.frames.len() == tap.bound {
                tap.frames.pop_front();
            }
            tap.frames.push_back(frame.clone());
        }
    }

    /// Whether a broadcast from the owner's node is one this node already
    /// had: its offset is not beyond the last one's, under the same epoch.
    /// The owner's node publishes its broadcasts once each, in offset
    /// order, but a copy that came twice (seen once in a full test run
    /// under heavy load, cause not found) must not reach anyone twice.
    pub fn repeated(&mut self, frame: &Frame) -> bool {
        let Some(stamp) = stamp(frame) else {
            return false;
        };
        if self
            .1
            .as_ref()
            .is_some_and(|last| last.epoch == stamp.epoch && stamp.offset <= last.offset)
        {
            tracing::warn!(
                offset = stamp.offset,
                "a broadcast came twice from the owner's node; dropped"
            );
            return true;
        }
        self.1 = Some(stamp);
        false
    }

    /// Stops holding the broadcasts for `uuid`; returns what was held, in
    /// order.
    pub fn close(&mut self, uuid: Uuid) -> Vec<Frame> {
        match self.0.iter().position(|tap| tap.uuid == uuid) {
            Some(i) => self.0.swap_remove(i).frames.into(),
            None => Vec::new(),
        }
    }
}

/// What a subscriber resuming on a node that does not keep the history is
/// sent, in this order.
pub struct Resumption {
    /// The result's position: the live broadcasts have greater offsets.
    pub position: Option<Position>,
    /// The messages after the position it gave; `None` when they could not
    /// be recovered.
    pub replay: Option<Vec<Bytes>>,
    /// The broadcasts held while the history was read that it has not seen.
    pub live: Vec<Frame>,
}

/// The position a broadcast carries.
///
/// It is the frame's last member (§17.2), read from the end rather than by
/// parsing the whole frame, whose `data` may be large: this runs once per
/// broadcast on every node but the owner's. A `"position"` key inside
/// `data` is not taken for it: the member must close the frame.
fn stamp(frame: &Frame) -> Option<Position> {
    const MEMBER: &[u8] = br#","position":"#;
    let json = frame.payload();
    let at = json.windows(MEMBER.len()).rposition(|w| w == MEMBER)?;
    let tail = &json[at + MEMBER.len()..];
    let mut values = serde_json::Deserializer::from_slice(tail).into_iter::<Position>();
    let position = values.next()?.ok()?;
    (tail[values.byte_offset()..].trim_ascii() == b"}").then_some(position)
}

/// Puts a subscriber's `read` of the history and its `held` broadcasts
/// together (see the module documentation).
pub fn resume(read: Result<Read, ClusterError>, held: Vec<Frame>) -> Resumption {
    let (mut position, recovery) = match read {
        Ok(read) => (read.last, read.recovery),
        Err(e) => {
            tracing::warn!(error = %e, "a subscriber's history could not be read");
            (None, Some(Recovery::Lost))
        }
    };
    let mut replay = match recovery {
        Some(Recovery::Recovered(replay)) => Some(replay),
        _ => None,
    };
    let mut live = Vec::with_capacity(held.len());
    for frame in held {
        if let Some(stamp) = stamp(&frame) {
            let same_epoch = position.as_ref().filter(|p| p.epoch == stamp.epoch);
            if same_epoch.is_some_and(|p| stamp.offset <= p.offset) {
                // Read already, or before the position.
                continue;
            }
            let follows = same_epoch.is_some_and(|p| stamp.offset == p.offset + 1);
            if live.is_empty() && !follows {
                // What came between was neither read nor held.
                replay = None;
                position = Some(Position {
                    offset: stamp.offset.saturating_sub(1),
                    epoch: stamp.epoch,
                });
            }
        }
        live.push(frame);
    }
    Resumption {
        position,
        replay,
        live,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: Limits = Limits {
        size: 100,
        ttl: Duration::from_secs(60),
        bytes: 1 << 20,
    };

    fn at(offset: u64) -> Position {
        Position {
            epoch: "e".into(),
            offset,
        }
    }

    /// A broadcast at `offset`, as the owner's node stamps it.
    fn broadcast(offset: u64) -> Frame {
        Frame::new(&format!(
            r#"{{"type":"MESSAGE","data":{offset},"position":{{"epoch":"e","offset":{offset}}}}}"#
        ))
    }

    fn offsets(frames: &[Frame]) -> Vec<u64> {
        frames.iter().map(|f| stamp(f).unwrap().offset).collect()
    }

    fn messages(offsets: std::ops::RangeInclusive<u64>) -> Vec<Bytes> {
        offsets.map(|o| Bytes::from(o.to_string())).collect()
    }

    /// The owner's broadcasts `held_from..=n` reach a node where a
    /// subscriber is tapped, each fed under the gate; the store had the
    /// history up to `read_after` when the subscriber read it (from 2).
    fn interleave(n: u64, read_after: u64, held_from: u64) -> Resumption {
        let gate = HistoryGate::kept_elsewhere(LIMITS);
        let uuid = Uuid::new_v4();
        gate.hold().open(uuid, 512);
        for offset in held_from..=n {
            gate.hold().feed(&broadcast(offset), None);
        }
        let held = gate.hold().close(uuid);
        let read = Read {
            last: Some(at(read_after)),
            recovery: Some(Recovery::Recovered(messages(3..=read_after))),
        };
        resume(Ok(read), held)
    }

    /// Every interleaving of a resumption with broadcasts `1..=N` on a node
    /// that does not keep the history: the tap opens before broadcast
    /// `tap`, the store is read after broadcast `read` (it has every
    /// broadcast sent before: each is written there before it is
    /// published), the subscriber joins the view after broadcast `joined`;
    /// it resumes from `after`, a position it saw, so one in the store.
    /// Whatever the order, it gets `after + 1..=N` once each, in order.
    /// A broadcast that comes twice from the owner's node is let through
    /// once; another epoch starts again.
    #[test]
    fn a_broadcast_that_comes_twice_is_dropped() {
        let gate = HistoryGate::kept_elsewhere(LIMITS);
        let mut taps = gate.hold();
        assert!(!taps.repeated(&broadcast(28)));
        assert!(!taps.repeated(&broadcast(29)));
        assert!(taps.repeated(&broadcast(29)));
        assert!(taps.repeated(&broadcast(3)));
        assert!(!taps.repeated(&broadcast(30)));
        let other = Frame::new(r#"{"type":"MESSAGE","position":{"epoch":"f","offset":1}}"#);
        assert!(!taps.repeated(&other));
        // A "position" key inside data is not the broadcast's.
        let nested =
            Frame::new(r#"{"type":"MESSAGE","data":{"position":{"epoch":"e","offset":1}}}"#);
        assert_eq!(stamp(&nested), None);
        // A frame without a position is never a repeat.
        assert!(!taps.repeated(&Frame::new(r#"{"type":"MESSAGE"}"#)));
    }

    #[test]
    fn every_interleaving_gives_each_broadcast_once_in_order() {
        const N: u64 = 6;
        for tap in 1..=N + 1 {
            // The read comes after the tap opened.
            for read in tap - 1..=N {
                for joined in read..=N {
                    for after in 0..=read {
                        let gate = HistoryGate::kept_elsewhere(LIMITS);
                        let uuid = Uuid::new_v4();
                        gate.hold().open(uuid, 512);
                        for offset in tap..=joined {
                            gate.hold().feed(&broadcast(offset), None);
                        }
                        let stored = Read {
                            last: Some(at(read)),
                            recovery: Some(Recovery::Recovered(messages(after + 1..=read))),
                        };
                        let case =
                            format!("after {after}, tap {tap}, read {read}, joined {joined}");
                        let resumed = resume(Ok(stored), gate.hold().close(uuid));
                        assert_eq!(resumed.position, Some(at(read)), "{case}");
                        let mut got: Vec<u64> = resumed
                            .replay
                            .unwrap_or_else(|| panic!("not recovered: {case}"))
                            .iter()
                            .map(|m| std::str::from_utf8(m).unwrap().parse().unwrap())
                            .collect();
                        got.extend(offsets(&resumed.live));
                        // Then directly from the view.
                        got.extend(joined + 1..=N);
                        let expected: Vec<u64> = (after + 1..=N).collect();
                        assert_eq!(got, expected, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn held_broadcasts_that_were_read_are_not_sent_again() {
        // Held from 4, read up to 6: 4 to 6 came both ways.
        let resumption = interleave(8, 6, 4);
        assert_eq!(resumption.position, Some(at(6)));
        assert_eq!(resumption.replay, Some(messages(3..=6)));
        assert_eq!(offsets(&resumption.live), [7, 8]);
    }

    #[test]
    fn a_read_that_saw_nothing_held_goes_on_with_the_held() {
        // Held from 7, read up to 6: they join up exactly.
        let resumption = interleave(9, 6, 7);
        assert_eq!(resumption.position, Some(at(6)));
        assert!(resumption.replay.is_some());
        assert_eq!(offsets(&resumption.live), [7, 8, 9]);
    }

    #[test]
    fn a_hole_between_the_read_and_the_held_is_not_silent() {
        // Held from 9, read up to 6: 7 and 8 are nowhere.
        let resumption = interleave(10, 6, 9);
        assert_eq!(resumption.position, Some(at(8)));
        assert_eq!(resumption.replay, None);
        assert_eq!(offsets(&resumption.live), [9, 10]);
    }

    #[test]
    fn a_tap_keeps_the_newest_within_its_bound() {
        let gate = HistoryGate::kept_elsewhere(LIMITS);
        let (tapped, other) = (Uuid::new_v4(), Uuid::new_v4());
        gate.hold().open(tapped, 2);
        for offset in 1..=4 {
            gate.hold().feed(&broadcast(offset), Some(other));
        }
        // Not held for the one the broadcast is not for.
        gate.hold().feed(&broadcast(5), Some(tapped));
        let held = gate.hold().close(tapped);
        assert_eq!(offsets(&held), [3, 4]);
        assert!(gate.hold().close(tapped).is_empty());
        // Read up to 1: 2 was dropped from the tap, the answer says so.
        let read = Read {
            last: Some(at(1)),
            recovery: Some(Recovery::Recovered(vec![])),
        };
        let resumption = resume(Ok(read), held);
        assert_eq!(resumption.position, Some(at(2)));
        assert_eq!(resumption.replay, None);
        assert_eq!(offsets(&resumption.live), [3, 4]);
    }

    #[test]
    fn an_unreadable_history_is_not_recovered_but_the_live_go_on() {
        let read = Err(ClusterError::Unavailable("down".into()));
        let resumption = resume(read, vec![broadcast(5), broadcast(6)]);
        assert_eq!(resumption.position, Some(at(4)));
        assert_eq!(resumption.replay, None);
        assert_eq!(offsets(&resumption.live), [5, 6]);
        let nothing = resume(Err(ClusterError::Unavailable("down".into())), vec![]);
        assert_eq!(nothing.position, None);
        assert!(nothing.live.is_empty());
    }
}
