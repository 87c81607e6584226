//! Alert events in the store: their `seq` (one counter for the cluster,
//! taken by compare-and-swap), the recent ones ([`EVENTS`], what `alerts`
//! lists and the publisher broadcasts) and the webhook's outbox
//! ([`OUTBOX`], what is still to be POSTed), both keyed by `seq` so that a
//! table's byte order is the events' order and a write is idempotent.

use std::sync::Arc;

use crate::cluster::store::{Store, StoreError, Table};
use crate::protocol::alerts::AlertEvent;

/// The latest events, by [`key`].
pub const EVENTS: Table = Table::new("alert_events");

/// The events the webhook has not acknowledged yet, by [`key`].
pub const OUTBOX: Table = Table::new("alert_outbox");

/// Small records: the `seq` counter, the publisher's and the webhook's
/// marks.
pub const META: Table = Table::new("alert_meta");

/// The last `seq` given out.
const SEQ: &str = "seq";

/// The last `seq` the webhook acknowledged.
pub const ACKED: &str = "acked";

/// The last `seq` broadcast on the `alerts` service.
pub const PUBLISHED: &str = "published";

/// How many events [`EVENTS`] keeps at most.
pub const KEEP_EVENTS: usize = 1_000;

/// How long [`EVENTS`] keeps an event at most.
pub const KEEP_SECS: u64 = 30 * 86_400;

/// How many events the outbox holds at most: beyond (a webhook down for
/// days), its oldest are dropped, logged and counted.
pub const MAX_OUTBOX: usize = 10_000;

/// How many times a compare-and-swap that lost a race is tried again.
const RACES: usize = 32;

/// A table key for `seq`: fixed width, so byte order is numeric order.
pub fn key(seq: u64) -> String {
    format!("{seq:020}")
}

/// A number record of [`META`].
pub async fn mark(store: &dyn Store, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(store
        .get(META, name)
        .await?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok()))
}

/// Moves the mark `name` up to `seq` (never down).
pub async fn raise(store: &dyn Store, name: &str, seq: u64) -> Result<(), StoreError> {
    for _ in 0..RACES {
        let old = store.get(META, name).await?;
        let now = old
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.parse::<u64>().ok());
        if now.is_some_and(|n| n >= seq) {
            return Ok(());
        }
        let new = seq.to_string().into_bytes();
        if store.compare_and_swap(META, name, old, Some(new)).await? {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(format!(
        "the alerts' mark {name} kept changing while it was written"
    )))
}

/// The next `seq`: greater than every one given out before, on any
/// replica.
pub async fn next_seq(store: &dyn Store) -> Result<u64, StoreError> {
    for _ in 0..RACES {
        let old = store.get(META, SEQ).await?;
        let last = old
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        let new = (last + 1).to_string().into_bytes();
        if store.compare_and_swap(META, SEQ, old, Some(new)).await? {
            return Ok(last + 1);
        }
    }
    Err(StoreError::Unavailable(
        "the alerts' seq kept changing while it was taken".into(),
    ))
}

/// Writes `event` where it goes: the outbox first when there is a webhook
/// (unless it acknowledged this seq already: a write done again after a
/// replica died half-way), then the recent events.
pub async fn record(
    store: &dyn Store,
    event: &AlertEvent,
    webhook: bool,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(event).unwrap_or_default();
    if webhook
        && mark(store, ACKED)
            .await?
            .is_none_or(|acked| event.seq > acked)
    {
        store.put(OUTBOX, &key(event.seq), bytes.clone()).await?;
    }
    store.put(EVENTS, &key(event.seq), bytes).await?;
    crate::metrics::get().alert_events.inc();
    Ok(())
}

/// The events of `table`, in `seq` order (unreadable records left out).
pub async fn list(store: &dyn Store, table: Table) -> Result<Vec<AlertEvent>, StoreError> {
    Ok(store
        .list(table)
        .await?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect())
}

/// Deletes the events beyond the newest [`KEEP_EVENTS`] and those older
/// than [`KEEP_SECS`].
pub async fn prune(store: &Arc<dyn Store>, now: u64) -> Result<usize, StoreError> {
    let events = list(store.as_ref(), EVENTS).await?;
    let beyond = events.len().saturating_sub(KEEP_EVENTS);
    let mut pruned = 0;
    for (i, event) in events.iter().enumerate() {
        if i < beyond || event.at + KEEP_SECS < now {
            store.delete(EVENTS, &key(event.seq)).await?;
            pruned += 1;
        }
    }
    Ok(pruned)
}

/// Where a reader of the events in `seq` order is: the next seq it
/// expects, and since when a later one has been waiting for a missing one.
/// Seqs are taken before their events are written, by any replica: a
/// reader that sees 7 before 6 was written waits [`GAP_WAIT`] for 6 (a seq
/// whose writer lost its race, or died, never comes).
#[derive(Default)]
pub struct Order {
    next: Option<u64>,
    gap_since: Option<tokio::time::Instant>,
}

/// How long a reader waits for a missing seq.
pub const GAP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Order {
    /// A reader whose last event was `last`.
    pub fn after(last: Option<u64>) -> Order {
        Order {
            next: last.map(|l| l + 1),
            gap_since: None,
        }
    }

    /// The seq expected next, once one was read.
    pub fn next(&self) -> Option<u64> {
        self.next
    }

    /// Whether the event `seq` (the lowest one not read yet) may be read
    /// now.
    pub fn ready(&mut self, seq: u64) -> bool {
        match self.next {
            Some(next) if seq > next => {
                let since = *self.gap_since.get_or_insert_with(tokio::time::Instant::now);
                since.elapsed() >= GAP_WAIT
            }
            _ => true,
        }
    }

    /// `seq` was read.
    pub fn done(&mut self, seq: u64) {
        self.next = Some(seq + 1);
        self.gap_since = None;
    }
}
