//! Failed logins, counted per username and per source address on every
//! replica (the store's expiring counters), and the lock-outs they lead to.
//!
//! A login takes one of the `max_failed_logins` places of its username's
//! and of its address's counter before its password is checked, in one
//! atomic step each ([`Store::take`]), and gives them back if the password
//! was right: however many logins arrive at once, on however many replicas,
//! no more than `max_failed_logins` passwords are checked per username or
//! address within `login_lockout_secs`. The counters are kept in the store
//! (the file of a gateway running alone, Redis in a cluster), so a restart
//! does not reset them.
//!
//! The failure that fills a counter also writes a lock-out record with its
//! end, so every replica refuses the locked user or address at once for the
//! whole `login_lockout_secs`; it ends by itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{now_secs, AuthError};
use crate::cluster::store::{Store, Table, Taken};
use crate::metrics;

const FAILURES: Table = Table::new("auth-failures");
const LOCKED: Table = Table::new("auth-locked");

#[derive(Serialize, Deserialize)]
struct Locked {
    until: u64,
}

/// What is locked out: a username or a source address.
fn keys(username: &str, source: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!("user:{username}")];
    keys.extend(source.map(|ip| format!("addr:{ip}")));
    keys
}

/// How many failures lock out, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_failures: u64,
    pub lockout: Duration,
}

/// Seconds until the username or the address may try again, if one of them
/// is locked out.
pub async fn locked(
    store: &Arc<dyn Store>,
    username: &str,
    source: Option<IpAddr>,
) -> Result<Option<u64>, AuthError> {
    let now = now_secs();
    let mut longest = None;
    for key in keys(username, source) {
        if let Some(bytes) = store.get(LOCKED, &key).await? {
            match serde_json::from_slice::<Locked>(&bytes) {
                Ok(l) if l.until > now => {
                    longest = longest.max(Some(l.until - now));
                }
                _ => {
                    store.delete(LOCKED, &key).await?;
                }
            }
        }
    }
    Ok(longest)
}

/// A login whose password may be checked: it holds a place in each of its
/// counters until [`Attempt::succeeded`] gives them back or
/// [`Attempt::failed`] keeps them.
pub struct Attempt {
    /// The counters' keys and the count each had with this attempt.
    counted: Vec<(String, u64)>,
    policy: Policy,
}

/// Takes a place for this login in the username's and the address's
/// counters: the attempt, or the seconds until one of them has a place
/// again (the others are given back).
pub async fn attempt(
    store: &Arc<dyn Store>,
    policy: Policy,
    username: &str,
    source: Option<IpAddr>,
) -> Result<Result<Attempt, u64>, AuthError> {
    let mut attempt = Attempt {
        counted: Vec::new(),
        policy,
    };
    for key in keys(username, source) {
        match store
            .take(FAILURES, &key, policy.max_failures, policy.lockout)
            .await
        {
            Ok(Taken::Counted(count)) => attempt.counted.push((key, count)),
            Ok(Taken::Full(left)) => {
                attempt.give_back(store).await?;
                return Ok(Err(whole_seconds_up(left.unwrap_or(policy.lockout))));
            }
            Err(e) => {
                attempt.give_back(store).await?;
                return Err(e.into());
            }
        }
    }
    Ok(Ok(attempt))
}

/// Whole seconds, rounded up: a refusal never says "try again in 0 s"
/// while the counter is still full.
fn whole_seconds_up(left: Duration) -> u64 {
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

impl Attempt {
    async fn give_back(&self, store: &Arc<dyn Store>) -> Result<(), AuthError> {
        for (key, _) in &self.counted {
            store.uncount(FAILURES, key).await?;
        }
        Ok(())
    }

    /// The password was right: the places are given back.
    pub async fn succeeded(self, store: &Arc<dyn Store>) -> Result<(), AuthError> {
        self.give_back(store).await
    }

    /// The password was wrong: the places stay counted, and a counter this
    /// filled locks its username or address out for `lockout`.
    pub async fn failed(self, store: &Arc<dyn Store>) -> Result<(), AuthError> {
        metrics::get().logins_failed.inc();
        for (key, count) in self.counted {
            if count < self.policy.max_failures {
                continue;
            }
            let until = now_secs() + self.policy.lockout.as_secs().max(1);
            let record = serde_json::to_vec(&Locked { until }).unwrap_or_default();
            store.put(LOCKED, &key, record).await?;
            metrics::get().lockouts.inc();
            tracing::warn!(
                locked = %key,
                failures = count,
                seconds = self.policy.lockout.as_secs(),
                "too many failed logins: locked out"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_rounded_up_to_whole_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds_up(Duration::from_millis(2_001)), 3);
        assert_eq!(whole_seconds_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }
}
