//! The webhook: the replica that holds the `webhook` lease POSTs the
//! outbox's events to `alert_webhook`, one at a time in `seq` order, each
//! as one JSON [`AlertEvent`](crate::protocol::alerts::AlertEvent).
//!
//! An event is in the outbox before anything is sent (it is written with
//! the event). A 2xx answer acknowledges it: the `acked` mark moves to its
//! seq and it leaves the outbox, so it is never sent again. Anything else
//! (an error status, no connection, no answer within [`TIMEOUT`]) is tried
//! again after a pause that doubles from 1 s to 60 s, and the events after
//! it wait: the receiver sees them in order. A replica that dies between a
//! 2xx and its write sends that event once more on the next holder; a
//! receiver deduplicates by `seq`.
//!
//! The URL is the operator's and may carry a secret: it is never logged.

use std::sync::Arc;
use std::time::Duration;

use super::events::{self, Order, ACKED, MAX_OUTBOX, OUTBOX};
use super::{Shared, LEASES};
use crate::cluster::store::{Changed, StoreError};
use crate::protocol::alerts::AlertEvent;

/// How long a POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause after a failed POST, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long the `webhook` lease outlives its holder: longer than a POST,
/// renewed at least every [`RENEW`] through a pause.
const LEASE_TTL: Duration = Duration::from_secs(30);
const RENEW: Duration = Duration::from_secs(10);

/// How often the outbox is read when no change was announced.
const POLL: Duration = Duration::from_secs(2);

/// What one POST came to.
enum Sent {
    Acknowledged,
    Refused(String),
}

pub async fn run(shared: Arc<Shared>) {
    let Some(url) = shared.settings.webhook.clone() else {
        return;
    };
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the alert webhook's HTTP client cannot be built: no webhook");
            return;
        }
    };
    let mut changes = shared.store.changes();
    let mut order: Option<Order> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let wait = match deliver(&shared, &client, &url, &mut order).await {
            Ok(Some(reason)) => {
                tracing::warn!(%reason, retry_in = ?backoff, "the alert webhook did not acknowledge an event");
                crate::metrics::get().alert_webhook_failures.inc();
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause(&shared, wait).await;
                continue;
            }
            Ok(None) => {
                backoff = MIN_BACKOFF;
                POLL
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot deliver alert events now");
                POLL
            }
        };
        let timer = tokio::time::sleep(wait);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                _ = &mut timer => break,
                change = changes.recv() => match change {
                    Ok(Changed::Key { table, .. }) if table == OUTBOX.name() => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        timer.as_mut().await;
                        break;
                    }
                },
            }
        }
    }
}

/// Waits `wait`, keeping the lease.
async fn pause(shared: &Shared, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(RENEW)).await;
        let _ = hold(shared).await;
    }
}

async fn hold(shared: &Shared) -> Result<bool, StoreError> {
    shared
        .store
        .acquire(LEASES, "webhook", &shared.holder, LEASE_TTL)
        .await
}

/// Sends what the outbox holds, in order, while it is acknowledged: why
/// one was not, if one was not. `order` is where this replica is while it
/// holds the lease.
async fn deliver(
    shared: &Shared,
    client: &reqwest::Client,
    url: &reqwest::Url,
    order: &mut Option<Order>,
) -> Result<Option<String>, StoreError> {
    let store = shared.store.as_ref();
    if !hold(shared).await? {
        *order = None;
        return Ok(None);
    }
    if order.is_none() {
        *order = Some(Order::after(events::mark(store, ACKED).await?));
    }
    let order = order.as_mut().expect("set above");
    let mut outbox = events::list(store, OUTBOX).await?;
    let beyond = outbox.len().saturating_sub(MAX_OUTBOX);
    if beyond > 0 {
        tracing::warn!(
            dropped = beyond,
            "the alert webhook's outbox is full: its oldest events are dropped unsent"
        );
        for event in outbox.drain(..beyond) {
            store.delete(OUTBOX, &events::key(event.seq)).await?;
            crate::metrics::get().alert_webhook_dropped.inc();
        }
    }
    for event in outbox {
        if !order.ready(event.seq) {
            return Ok(None);
        }
        if !hold(shared).await? {
            return Ok(None);
        }
        match post(client, url, &event).await {
            Sent::Acknowledged => {
                events::raise(store, ACKED, event.seq).await?;
                store.delete(OUTBOX, &events::key(event.seq)).await?;
                order.done(event.seq);
                crate::metrics::get().alert_webhook_sent.inc();
            }
            Sent::Refused(reason) => return Ok(Some(format!("seq {}: {reason}", event.seq))),
        }
    }
    Ok(None)
}

async fn post(client: &reqwest::Client, url: &reqwest::Url, event: &AlertEvent) -> Sent {
    match client.post(url.clone()).json(event).send().await {
        Ok(answer) if answer.status().is_success() => Sent::Acknowledged,
        Ok(answer) => Sent::Refused(format!("answered {}", answer.status())),
        // Without the URL: it may carry a secret.
        Err(e) if e.is_timeout() => Sent::Refused(format!("no answer within {TIMEOUT:?}")),
        Err(e) if e.is_connect() => Sent::Refused("cannot connect".into()),
        Err(_) => Sent::Refused("the request failed".into()),
    }
}
