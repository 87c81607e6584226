//! Failed logins, counted per username and per source address on every
//! replica (the store's expiring counters), and the lock-outs they lead to.
//!
//! A lock-out is a record with its end, so every replica refuses the
//! locked user or address at once; it ends by itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{now_secs, AuthError};
use crate::cluster::store::{Store, Table};
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

/// Counts a failed login; locks the username or the address out once it
/// has failed `max_failures` times within `lockout`.
pub async fn failed(
    store: &Arc<dyn Store>,
    policy: Policy,
    username: &str,
    source: Option<IpAddr>,
) -> Result<(), AuthError> {
    for key in keys(username, source) {
        let count = store.count(FAILURES, &key, policy.lockout).await?;
        if count >= policy.max_failures {
            let until = now_secs() + policy.lockout.as_secs().max(1);
            let record = serde_json::to_vec(&Locked { until }).unwrap_or_default();
            store.put(LOCKED, &key, record).await?;
            metrics::get().lockouts.inc();
            tracing::warn!(
                locked = %key,
                failures = count,
                seconds = policy.lockout.as_secs(),
                "too many failed logins: locked out"
            );
        }
    }
    Ok(())
}
