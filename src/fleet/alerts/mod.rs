//! Alerts (PROTOCOL §21): rules over the inventory's hosts, evaluated once
//! per cluster, whose events are kept, broadcast on the `alerts` service
//! and POSTed to the operator's webhook.
//!
//! Every replica runs the same loop; the store's leases decide who does
//! what, so that a cluster does each thing once and a replica that dies
//! is taken over after its lease:
//!
//! * each rule is evaluated by the holder of its lease (`rule-NAME`),
//!   every `alert_interval_secs` ([`evaluate`]), with its per-host state
//!   in the store;
//! * the holder of `publisher` is the namespace member `alerts` that
//!   broadcasts the stored events in `seq` order ([`publish`]);
//! * the holder of `webhook` POSTs the outbox's events in `seq` order
//!   ([`webhook`]).
//!
//! The rules are the configuration's and the API's ([`rules`]); the events
//! and their order are [`events`]'.

mod evaluate;
mod events;
mod publish;
pub mod rules;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle};

use self::evaluate::{HostState, Stored, STATE};
use self::rules::Rules;
use crate::auth::now_secs;
use crate::cluster::store::{Store, StoreError, Table};
use crate::config::Settings;
use crate::fleet::Inventory;
use crate::namespace::Namespace;
use crate::protocol::agent::{Failure, Reason};
use crate::protocol::alerts::{AlertRule, AlertsPage, AlertsQuery, RuleInfo, MAX_ALERTS_PAGE};
use crate::protocol::selector::Selector;

/// The leases: `rule-NAME` per rule, `publisher`, `webhook`.
const LEASES: Table = Table::new("alert_leases");

/// What the alerts run with.
pub(crate) struct AlertSettings {
    /// Between two evaluations of a rule.
    interval: Duration,
    /// The hosts' summary interval, in seconds: a summary older than three
    /// is no reading.
    summary_interval: u64,
    webhook: Option<reqwest::Url>,
    /// How long a rule's lease, and the publisher's, outlive their holder.
    lease_ttl: Duration,
    max_history_size: u64,
}

/// What the alerts' tasks share.
pub(crate) struct Shared {
    store: Arc<dyn Store>,
    namespace: Namespace,
    inventory: Arc<Inventory>,
    rules: Rules,
    settings: AlertSettings,
    /// This process's name as a lease holder.
    holder: String,
}

/// The alerts of this gateway (see the module documentation).
pub struct Alerts {
    shared: Arc<Shared>,
    /// Where the alerts' tasks run: off the sessions' threads.
    _arbiter: ArbiterHandle,
}

impl Alerts {
    /// Starts evaluating, publishing and (with a webhook) delivering. Must
    /// run inside an actix system; `settings`' rules were checked when they
    /// were loaded.
    pub fn start(
        settings: &Settings,
        namespace: Namespace,
        inventory: Arc<Inventory>,
        store: Arc<dyn Store>,
    ) -> Arc<Alerts> {
        let interval = Duration::from_secs(settings.alert_interval_secs.max(1));
        let shared = Arc::new(Shared {
            rules: Rules::new(settings.alerts.clone(), store.clone()),
            store,
            namespace,
            inventory,
            settings: AlertSettings {
                interval,
                summary_interval: settings.summary_interval_secs,
                webhook: reqwest::Url::parse(&settings.alert_webhook).ok(),
                lease_ttl: (3 * interval).max(Duration::from_secs(3)),
                max_history_size: settings.max_history_size,
            },
            holder: uuid::Uuid::new_v4().to_string(),
        });
        let arbiter = Arbiter::new().handle();
        let tasks = shared.clone();
        arbiter.spawn_fn(move || {
            actix::spawn(evaluator(tasks.clone()));
            actix::spawn(publish::run(tasks.clone()));
            if tasks.settings.webhook.is_some() {
                actix::spawn(webhook::run(tasks));
            }
        });
        Arc::new(Alerts {
            shared,
            _arbiter: arbiter,
        })
    }

    /// Every rule.
    pub async fn rules(&self) -> Result<Vec<RuleInfo>, Failure> {
        self.shared.rules.all().await.map_err(unavailable)
    }

    /// Adds or replaces an API rule.
    pub async fn set(&self, rule: AlertRule, by: &str) -> Result<RuleInfo, Failure> {
        let info = self.shared.rules.set(rule).await?;
        tracing::info!(target: "audit", rule = %info.rule.name, when = %info.rule.when,
            target_expression = ?info.rule.target, %by, "alert rule set");
        Ok(info)
    }

    /// Deletes an API rule; its firing alerts resolve at the next
    /// evaluation.
    pub async fn delete(&self, name: &str, by: &str) -> Result<(), Failure> {
        self.shared.rules.delete(name).await?;
        tracing::info!(target: "audit", rule = %name, %by, "alert rule deleted");
        Ok(())
    }

    /// The alerts firing now and the latest events.
    pub async fn page(&self, query: &AlertsQuery) -> Result<AlertsPage, Failure> {
        let store = self.shared.store.as_ref();
        let mut active: Vec<_> = store
            .list(STATE)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice::<HostState>(&bytes).ok()?.firing)
            .collect();
        active.sort_by(|a, b| (&a.host, &a.rule).cmp(&(&b.host, &b.rule)));
        let limit = query
            .limit
            .map_or(MAX_ALERTS_PAGE, |l| l.min(MAX_ALERTS_PAGE as u64) as usize);
        let mut recent = events::list(store, events::EVENTS)
            .await
            .map_err(unavailable)?;
        recent.retain(|e| query.before.is_none_or(|before| e.seq < before));
        recent.reverse();
        let more = recent.len() > limit;
        recent.truncate(limit);
        Ok(AlertsPage {
            active,
            recent,
            more,
        })
    }
}

/// Evaluates, every interval, the rules whose lease this replica holds or
/// takes, and resolves the alerts of deleted rules.
async fn evaluator(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = evaluate_all(&shared).await {
            tracing::warn!(error = %e, "the alert rules cannot be evaluated now");
        }
    }
}

async fn evaluate_all(shared: &Shared) -> Result<(), StoreError> {
    let rules = shared.rules.all().await?;
    let mut states: BTreeMap<String, BTreeMap<String, Stored>> = BTreeMap::new();
    for (key, bytes) in shared.store.list(STATE).await? {
        let Some((rule, host)) = key.split_once('/') else {
            continue;
        };
        if let Ok(state) = serde_json::from_slice::<HostState>(&bytes) {
            states
                .entry(rule.to_owned())
                .or_default()
                .insert(host.to_owned(), (bytes, state));
        }
    }
    let mut mine = Vec::new();
    for rule in &rules {
        if lease(shared, &format!("rule-{}", rule.rule.name)).await? {
            mine.push(&rule.rule);
        }
    }
    let deleted: Vec<String> = states
        .keys()
        .filter(|name| !rules.iter().any(|r| &r.rule.name == *name))
        .cloned()
        .collect();
    for name in deleted {
        if lease(shared, &format!("rule-{name}")).await? {
            let states = states.remove(&name).unwrap_or_default();
            evaluate::rule(shared, &name, None, &BTreeMap::new(), states, now_secs()).await?;
        }
    }
    if mine.is_empty() {
        return Ok(());
    }
    let directory = Arc::clone(&shared.namespace.directory());
    let mut hosts = shared
        .inventory
        .matching(
            None,
            false,
            None,
            &|name| directory.named(name).is_some(),
            usize::MAX,
        )
        .await?;
    shared.inventory.add_health(&mut hosts).await?;
    let now = now_secs();
    for rule in mine {
        let selector = match rule.target.as_deref().map(Selector::parse) {
            Some(Ok(selector)) => Some(selector),
            Some(Err(_)) => continue, // checked when it was set
            None => None,
        };
        let matched = hosts
            .iter()
            .filter(|h| selector.as_ref().is_none_or(|s| s.matches(*h)))
            .map(|h| (h.name.as_str(), h))
            .collect();
        let states = states.remove(&rule.name).unwrap_or_default();
        evaluate::rule(shared, &rule.name, Some(&rule.when), &matched, states, now).await?;
    }
    Ok(())
}

/// Takes or renews this replica's lease `key`.
async fn lease(shared: &Shared, key: &str) -> Result<bool, StoreError> {
    shared
        .store
        .acquire(LEASES, key, &shared.holder, shared.settings.lease_ttl)
        .await
}

fn unavailable(e: StoreError) -> Failure {
    Failure::new(Reason::Unavailable, e.to_string())
}
