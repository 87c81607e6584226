//! The `alerts` service: the replica that holds the `publisher` lease
//! joins the namespace as the gateway's member `alerts` (a name no client
//! may take), creates the service with a history, and broadcasts the
//! stored events in `seq` order, each once: where it is is the store's
//! `published` mark, so a replica that takes over goes on from there. It
//! also prunes the recent events. A gateway joins and creates the service
//! once it has a rule (the configuration's or the API's), so that one
//! without alerts lists no member of its own.
//!
//! Events come from whichever replica evaluated their rule; the publisher
//! reads them from the store, woken by the store's changes (and every
//! [`POLL`] in case one was missed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::events::{self, Order, EVENTS, PUBLISHED};
use super::{lease, Shared};
use crate::auth::now_secs;
use crate::cluster::store::{Changed, StoreError};
use crate::fleet::inbox::{relay, Delivery, Inbox};
use crate::namespace::{Member, Op, Outcome, MAX_HISTORY_TTL_SECS};
use crate::protocol::alerts::ALERTS_SERVICE;
use crate::protocol::{ClientInfo, History, Target};

/// How often the store is read when no change was announced.
const POLL: Duration = Duration::from_secs(2);

/// How often the recent events are pruned.
const PRUNE: Duration = Duration::from_secs(60);

/// The most events the service's history keeps.
const HISTORY: u64 = 1_000;

/// The publisher while it holds the lease.
struct Publishing {
    member: Member,
    inbox: mpsc::Receiver<Delivery>,
    order: Order,
}

pub async fn run(shared: Arc<Shared>) {
    let mut changes = shared.store.changes();
    let mut publishing: Option<Publishing> = None;
    let mut pruned = tokio::time::Instant::now();
    loop {
        match lease(&shared, "publisher").await {
            Ok(true) => {
                // A gateway without rules has nothing to say: no member,
                // no service, until it has one.
                if publishing.is_none() && has_rules(&shared).await {
                    publishing = start(&shared).await;
                }
                if let Some(p) = &mut publishing {
                    if let Err(e) = publish(&shared, p).await {
                        tracing::debug!(error = %e, "cannot publish alert events now");
                    }
                }
                if pruned.elapsed() >= PRUNE {
                    pruned = tokio::time::Instant::now();
                    match events::prune(&shared.store, now_secs()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(events = n, "old alert events pruned"),
                        Err(e) => tracing::debug!(error = %e, "cannot prune alert events now"),
                    }
                }
            }
            Ok(false) => {
                if let Some(p) = publishing.take() {
                    tracing::info!("another replica publishes the alerts now");
                    shared.namespace.leave(p.member.uuid());
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot take the alerts' publisher lease now"),
        }
        // Until an event is written, the lease is to be renewed, or the
        // member is closed.
        let renew = tokio::time::sleep(POLL.min(shared.settings.lease_ttl / 3));
        tokio::pin!(renew);
        loop {
            tokio::select! {
                _ = &mut renew => break,
                change = changes.recv() => match change {
                    Ok(Changed::Key { table, .. }) if table == EVENTS.name() => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        renew.as_mut().await;
                        break;
                    }
                },
                delivery = recv(&mut publishing) => {
                    // Closed (evicted, the gateway stopping): join again.
                    if !matches!(delivery, Some(Delivery::Frame(_))) {
                        publishing = None;
                        break;
                    }
                }
            }
        }
    }
}

async fn has_rules(shared: &Shared) -> bool {
    shared
        .rules
        .all()
        .await
        .is_ok_and(|rules| !rules.is_empty())
}

/// What the publisher's member is sent (nothing it reads), pending for
/// ever when it is not publishing.
async fn recv(publishing: &mut Option<Publishing>) -> Option<Delivery> {
    match publishing {
        Some(p) => p.inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Joins as `alerts` and creates the service; none when the namespace
/// refuses (tried again at the next round).
async fn start(shared: &Shared) -> Option<Publishing> {
    let info = ClientInfo {
        name: ALERTS_SERVICE.to_owned(),
        nickname: None,
        uuid: Uuid::new_v4(),
        tags: vec!["gateway".into()],
        user: None,
        roles: Vec::new(),
    };
    let (sink, inbox) = Inbox::new(64);
    let outbox = crate::transport::outbox::Outbox::new(
        info.uuid,
        sink.clone(),
        sink.control(),
        shared.namespace.overflow_recipient(),
    );
    let member = match shared
        .namespace
        .join(info, outbox, String::new(), false, true, None)
        .await
    {
        Ok(member) => member,
        Err(close) => {
            tracing::debug!(reason = %close.reason, "the alerts' publisher cannot join yet");
            return None;
        }
    };
    let history = History {
        size: HISTORY.min(shared.settings.max_history_size),
        ttl: MAX_HISTORY_TTL_SECS,
    };
    let created = member.request(
        None,
        Op::ServiceCreate {
            service: ALERTS_SERVICE.to_owned(),
            nickname: None,
            history: (history.size > 0).then_some(history),
        },
    );
    if let Outcome::Later { done, .. } = created {
        done.await;
    }
    let last = events::mark(shared.store.as_ref(), PUBLISHED)
        .await
        .ok()
        .flatten();
    tracing::info!("this replica publishes the alerts");
    Some(Publishing {
        member,
        inbox,
        order: Order::after(last),
    })
}

/// Broadcasts the events not published yet, in order.
async fn publish(shared: &Shared, p: &mut Publishing) -> Result<(), StoreError> {
    let store = shared.store.as_ref();
    let mut last = None;
    for event in events::list(store, EVENTS).await? {
        if p.order.next().is_some_and(|next| event.seq < next) {
            continue;
        }
        if !p.order.ready(event.seq) {
            break;
        }
        relay(
            &p.member,
            Target::Service {
                service: ALERTS_SERVICE.to_owned(),
            },
            &serde_json::json!(event),
        );
        p.order.done(event.seq);
        last = Some(event.seq);
    }
    if let Some(last) = last {
        events::raise(store, PUBLISHED, last).await?;
    }
    Ok(())
}
