//! The in-memory history against the contract of [`Histories`].

use std::time::Duration;

use bytes::Bytes;

use super::{Histories, Limits, MemoryHistory, Recovery};
use crate::protocol::Position;

const ROOMY: Limits = Limits {
    size: 100,
    ttl: Duration::from_secs(3600),
    bytes: 1 << 20,
};

/// Appends `n` messages whose text is their offset.
fn append(history: &dyn Histories, service: &str, n: usize) -> Vec<Position> {
    let epoch = history.last(service).expect("a history").epoch;
    (0..n)
        .map(|_| {
            history
                .append(service, &epoch, &mut |p| Bytes::from(p.offset.to_string()))
                .expect("the service keeps a history")
        })
        .collect()
}

fn texts(recovery: Recovery) -> Vec<String> {
    match recovery {
        Recovery::Recovered(messages) => messages
            .iter()
            .map(|m| String::from_utf8(m.to_vec()).unwrap())
            .collect(),
        Recovery::Lost => panic!("expected a recovery"),
    }
}

#[test]
fn offsets_follow_each_other_from_the_start() {
    let history = MemoryHistory::default();
    let start = history.start("s", ROOMY);
    assert_eq!(start.offset, 0);
    let positions = append(&history, "s", 3);
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3]);
    assert!(positions.iter().all(|p| p.epoch == start.epoch));
    assert_eq!(history.last("s"), Some(positions[2].clone()));
}

#[test]
fn a_subscriber_gets_what_follows_its_position_and_nothing_else() {
    let history = MemoryHistory::default();
    let start = history.start("s", ROOMY);
    let positions = append(&history, "s", 5);
    assert_eq!(texts(history.since("s", &start)), ["1", "2", "3", "4", "5"]);
    assert_eq!(texts(history.since("s", &positions[2])), ["4", "5"]);
    assert!(texts(history.since("s", &positions[4])).is_empty());
}

#[test]
fn a_position_out_of_the_history_cannot_be_recovered() {
    let history = MemoryHistory::default();
    let start = history.start("s", Limits { size: 3, ..ROOMY });
    let positions = append(&history, "s", 5);
    // 1 and 2 fell out: after 1, 2 is missing.
    assert_eq!(history.since("s", &positions[0]), Recovery::Lost);
    assert_eq!(history.since("s", &start), Recovery::Lost);
    assert_eq!(texts(history.since("s", &positions[1])), ["3", "4", "5"]);
    // From the future, or of another epoch.
    let ahead = Position {
        offset: 6,
        ..start.clone()
    };
    assert_eq!(history.since("s", &ahead), Recovery::Lost);
    let other = Position {
        epoch: "another".into(),
        offset: 4,
    };
    assert_eq!(history.since("s", &other), Recovery::Lost);
    assert_eq!(history.since("unknown", &positions[4]), Recovery::Lost);
}

#[test]
fn a_history_started_again_has_another_epoch() {
    let history = MemoryHistory::default();
    let first = history.start("s", ROOMY);
    let positions = append(&history, "s", 2);
    history.end("s");
    assert_eq!(history.last("s"), None);
    assert_eq!(
        history.append("s", &first.epoch, &mut |_| Bytes::new()),
        None
    );
    let second = history.start("s", ROOMY);
    assert_ne!(first.epoch, second.epoch);
    // A broadcast of the service that was deleted is not kept by the new one.
    assert_eq!(
        history.append("s", &first.epoch, &mut |_| Bytes::new()),
        None
    );
    assert_eq!(history.since("s", &positions[1]), Recovery::Lost);
}

#[test]
fn messages_expire_after_their_ttl() {
    let history = MemoryHistory::default();
    let ttl = Duration::from_millis(50);
    let start = history.start("s", Limits { ttl, ..ROOMY });
    let positions = append(&history, "s", 2);
    assert_eq!(texts(history.since("s", &start)), ["1", "2"]);
    // Time passing is what is tested: nothing else to wait for.
    std::thread::sleep(ttl * 2);
    assert_eq!(history.since("s", &start), Recovery::Lost);
    // Caught up before they expired: nothing was missed.
    assert!(texts(history.since("s", &positions[1])).is_empty());
    let later = append(&history, "s", 1);
    assert_eq!(texts(history.since("s", &positions[1])), ["3"]);
    assert_eq!(later[0].offset, 3);
}

#[test]
fn the_byte_bound_drops_the_oldest() {
    let history = MemoryHistory::default();
    let start = history.start("s", Limits { bytes: 2, ..ROOMY });
    // "1", "2", "3": one byte each, two fit.
    append(&history, "s", 3);
    assert_eq!(history.since("s", &start), Recovery::Lost);
    let after_one = Position { offset: 1, ..start };
    assert_eq!(texts(history.since("s", &after_one)), ["2", "3"]);
}
