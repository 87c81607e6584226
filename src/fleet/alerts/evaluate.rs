//! One evaluation of one rule over the inventory: which hosts' alerts
//! begin to hold, fire, or resolve.
//!
//! The state of each (rule, host) whose condition holds is a record of
//! the store's [`STATE`] table (since when it holds; its firing event once
//! it fired), not this process's memory: a replica that takes a rule over
//! from one that died neither fires an alert again nor misses its resolve.
//! A host whose condition does not hold has no record.
//!
//! An event is committed by writing it into the host's state record as
//! `pending` (the one write that decides it happened), then written to the
//! outbox and the recent events, then the state is settled. A replica that
//! finds a `pending` event (its writer died in between) writes it again:
//! the writes are keyed by `seq`, so doing them twice is doing them once.
//!
//! What holds: `offline` holds from the host's `last_seen` while it is
//! offline (a host that never connected is not offline); a comparison
//! holds while the host is online and its latest summary, fresher than
//! three summary intervals, compares so, measured from the first such
//! summary. An alert fires once it has held for the rule's `for`, and
//! resolves when it stops holding, when the host leaves the rule's target
//! or the inventory, and when its rule is deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::events;
use super::Shared;
use crate::cluster::store::{StoreError, Table};
use crate::protocol::alerts::{AlertEvent, AlertState, Condition};
use crate::protocol::fleet::HostRecord;
use crate::protocol::health::{Presence, STALE_INTERVALS};

/// A record per (rule, host) whose condition holds, by [`state_key`].
pub const STATE: Table = Table::new("alert_state");

/// The key of a (rule, host) state: rule names have no `/`.
pub fn state_key(rule: &str, host: &str) -> String {
    format!("{rule}/{host}")
}

/// A (rule, host) whose condition holds, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    /// When the condition began to hold.
    pub since: u64,
    /// The firing event, once the alert fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing: Option<AlertEvent>,
    /// An event decided and perhaps not written yet where it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<AlertEvent>,
}

/// A state as read: its bytes (to compare and swap) and what they say.
pub type Stored = (Vec<u8>, HostState);

/// What one look at a host says of a condition.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    /// It holds, as of `at`, and has since `start` (as far as this look
    /// tells).
    Holds {
        start: u64,
        at: u64,
        value: Option<f64>,
    },
    NotHolds {
        value: Option<f64>,
    },
}

/// Looks at `host` (none: it left the target or the inventory) for
/// `when`, at `now`; a summary older than `stale` seconds is no reading.
fn look(when: &Condition, host: Option<&HostRecord>, now: u64, stale: u64) -> Seen {
    let Some(host) = host else {
        return Seen::NotHolds { value: None };
    };
    match *when {
        Condition::Offline { .. } => match (host.presence, host.last_seen) {
            (Presence::Offline, Some(last_seen)) => Seen::Holds {
                start: last_seen,
                at: now,
                value: None,
            },
            _ => Seen::NotHolds { value: None },
        },
        Condition::Compare {
            field, op, value, ..
        } => {
            let fresh = host
                .health
                .as_ref()
                .filter(|h| host.online && now.saturating_sub(h.at) <= stale);
            let Some(health) = fresh else {
                return Seen::NotHolds { value: None };
            };
            match health.summary.get(field) {
                Some(reading) if op.holds(reading, value) => Seen::Holds {
                    start: health.at,
                    at: health.at,
                    value: Some(reading),
                },
                reading => Seen::NotHolds { value: reading },
            }
        }
    }
}

/// What a look changes of a (rule, host)'s state.
#[derive(Debug, PartialEq)]
enum Step {
    Nothing,
    /// Holds now, not long enough yet: (re)write the state.
    Pending(u64),
    /// Stopped holding before it fired: the state goes.
    Forget,
    Fire {
        since: u64,
        value: Option<f64>,
    },
    Resolve {
        since: u64,
        value: Option<f64>,
    },
}

fn step(when: &Condition, state: Option<&HostState>, seen: Seen) -> Step {
    match (seen, state) {
        (Seen::Holds { start, at, value }, state) => {
            if state.is_some_and(|s| s.firing.is_some()) {
                return Step::Nothing;
            }
            // Offline holds since the host left; a comparison since the
            // first summary that held, continuously.
            let since = match (when, state) {
                (Condition::Compare { .. }, Some(s)) => s.since.min(start),
                _ => start,
            };
            if at.saturating_sub(since) >= when.for_secs() {
                Step::Fire { since, value }
            } else if state.is_some_and(|s| s.since == since) {
                Step::Nothing
            } else {
                Step::Pending(since)
            }
        }
        (Seen::NotHolds { value }, Some(state)) => match &state.firing {
            Some(firing) => Step::Resolve {
                since: firing.since,
                value,
            },
            None => Step::Forget,
        },
        (Seen::NotHolds { .. }, None) => Step::Nothing,
    }
}

/// Evaluates rule `name` (`when` none: the rule was deleted) over `hosts`
/// (those its target selects), given the states the store has for it.
pub async fn rule(
    shared: &Shared,
    name: &str,
    when: Option<&Condition>,
    hosts: &BTreeMap<&str, &HostRecord>,
    states: BTreeMap<String, Stored>,
    now: u64,
) -> Result<(), StoreError> {
    let stale = STALE_INTERVALS * shared.settings.summary_interval;
    // Hosts with a state first (an alert to resolve), then the others.
    let fresh: Vec<_> = hosts
        .keys()
        .filter(|h| !states.contains_key(**h))
        .map(|h| (h.to_string(), None))
        .collect();
    let known: Vec<(String, Option<Stored>)> = states
        .into_iter()
        .map(|(host, state)| (host, Some(state)))
        .chain(fresh)
        .collect();
    for (host, stored) in known {
        let key = state_key(name, &host);
        let (old, mut state) = match stored {
            Some((bytes, state)) => (Some(bytes), Some(state)),
            None => (None, None),
        };
        // Finish what a replica that died began.
        if let Some(event) = state.as_ref().and_then(|s| s.pending.clone()) {
            settle(shared, &key, old.clone(), state.take(), &event).await?;
            continue;
        }
        let Some(when) = when.or(state
            .as_ref()
            .and_then(|s| s.firing.as_ref().map(|f| &f.when)))
        else {
            shared.store.delete(STATE, &key).await?;
            continue;
        };
        let seen = look(when, hosts.get(host.as_str()).copied(), now, stale);
        let (kind, since, value) = match step(when, state.as_ref(), seen) {
            Step::Nothing => continue,
            Step::Pending(since) => {
                let new = HostState {
                    since,
                    firing: None,
                    pending: None,
                };
                shared
                    .store
                    .compare_and_swap(STATE, &key, old, Some(encode(&new)))
                    .await?;
                continue;
            }
            Step::Forget => {
                shared
                    .store
                    .compare_and_swap(STATE, &key, old, None)
                    .await?;
                continue;
            }
            Step::Fire { since, value } => (AlertState::Firing, since, value),
            Step::Resolve { since, value } => (AlertState::Resolved, since, value),
        };
        let event = AlertEvent {
            seq: events::next_seq(shared.store.as_ref()).await?,
            state: kind,
            rule: name.to_owned(),
            host: host.clone(),
            when: *when,
            at: now,
            since,
            value,
        };
        let new = HostState {
            since,
            firing: (kind == AlertState::Firing).then(|| event.clone()),
            pending: Some(event.clone()),
        };
        let bytes = encode(&new);
        // Lost to another evaluator (a lease that changed hands meanwhile):
        // its word stands, and this seq is never used.
        if shared
            .store
            .compare_and_swap(STATE, &key, old, Some(bytes.clone()))
            .await?
        {
            settle(shared, &key, Some(bytes), Some(new), &event).await?;
        }
    }
    Ok(())
}

/// Writes a committed `event` where it goes, then settles the state it is
/// pending in (stored as `old`): a firing alert keeps its state, a
/// resolved one's goes.
async fn settle(
    shared: &Shared,
    key: &str,
    old: Option<Vec<u8>>,
    state: Option<HostState>,
    event: &AlertEvent,
) -> Result<(), StoreError> {
    events::record(
        shared.store.as_ref(),
        event,
        shared.settings.webhook.is_some(),
    )
    .await?;
    tracing::info!(target: "audit", seq = event.seq, rule = %event.rule, host = %event.host,
        state = ?event.state, "alert");
    let new = match (event.state, state) {
        (AlertState::Firing, Some(state)) => Some(encode(&HostState {
            pending: None,
            ..state
        })),
        _ => None,
    };
    shared.store.compare_and_swap(STATE, key, old, new).await?;
    Ok(())
}

fn encode(state: &HostState) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(text: &str) -> Condition {
        text.parse().unwrap()
    }

    fn pending(since: u64) -> HostState {
        HostState {
            since,
            firing: None,
            pending: None,
        }
    }

    #[test]
    fn an_alert_fires_once_it_held_for_its_for_and_resolves_once() {
        let when = cond("cpu > 50 for 20s");
        let holds = |start, at| Seen::Holds {
            start,
            at,
            value: Some(60.0),
        };
        assert_eq!(step(&when, None, holds(100, 100)), Step::Pending(100));
        // Later summaries that hold keep the first one's start.
        assert_eq!(
            step(&when, Some(&pending(100)), holds(110, 110)),
            Step::Nothing
        );
        assert_eq!(
            step(&when, Some(&pending(100)), holds(120, 120)),
            Step::Fire {
                since: 100,
                value: Some(60.0)
            }
        );
        let not = Seen::NotHolds { value: Some(3.0) };
        assert_eq!(step(&when, Some(&pending(100)), not), Step::Forget);
        assert_eq!(step(&when, None, not), Step::Nothing);
        let firing = HostState {
            since: 100,
            firing: Some(AlertEvent {
                seq: 1,
                state: AlertState::Firing,
                rule: "r".into(),
                host: "h".into(),
                when,
                at: 121,
                since: 100,
                value: Some(60.0),
            }),
            pending: None,
        };
        assert_eq!(step(&when, Some(&firing), holds(130, 130)), Step::Nothing);
        assert_eq!(
            step(&when, Some(&firing), not),
            Step::Resolve {
                since: 100,
                value: Some(3.0)
            }
        );
        // Without `for`, at once.
        assert!(matches!(
            step(&cond("disk > 95"), None, holds(5, 5)),
            Step::Fire { since: 5, .. }
        ));
    }

    #[test]
    fn offline_holds_from_the_latest_departure() {
        let when = cond("offline for 2m");
        let gone = |last_seen| Seen::Holds {
            start: last_seen,
            at: 1_000,
            value: None,
        };
        assert_eq!(step(&when, None, gone(950)), Step::Pending(950));
        // Back and gone again in between: from the latest departure.
        assert_eq!(
            step(&when, Some(&pending(800)), gone(950)),
            Step::Pending(950)
        );
        assert!(matches!(
            step(&when, Some(&pending(850)), gone(850)),
            Step::Fire { since: 850, .. }
        ));
    }
}
