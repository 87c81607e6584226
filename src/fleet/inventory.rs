//! Every host the fleet has: one record per host name in the store's
//! [`HOSTS`] table, with when it was first and last seen and the facts it
//! last reported, until an admin forgets it.
//!
//! Written on two occasions, each of which moves `last_seen`: a host's
//! `facts` report (on connecting and whenever they change:
//! [`Inventory::report`]), and its departure ([`Inventory::touch`], from
//! the namespace's changes). Whether a host is online is not stored: it is whether
//! a client holds its name now, which the caller reads from the namespace
//! (every replica's directory lists every replica's clients), so a replica
//! that dies leaves no host marked online behind it.
//!
//! Departures come from the namespace's actors, which must not wait: they
//! go through a bounded queue to one writer task, which folds repeated
//! names together. A touch that finds the queue full is dropped and
//! counted (`last_seen` is then that of the host's last report), never
//! waited for.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::health::Health;
use crate::auth::now_secs;
use crate::cluster::store::{Store, StoreError, Table};
use crate::namespace::{Change, Observer};
use crate::protocol::fleet::{Facts, HostRecord, HostsPage, HostsQuery, MAX_HOSTS_PAGE};
use crate::protocol::health::Presence;
use crate::protocol::selector::Selector;
use crate::protocol::{ClientInfo, CtlName, HostKind};

/// The inventory's table: a record per host name.
pub const HOSTS: Table = Table::new("inventory");

/// Departures that may wait for the writer.
const TOUCHES: usize = 4096;

/// How often a report is retried when another write to the same host got
/// in between (its departure's touch, a report through another replica).
const RACES: usize = 8;

/// A host's record as stored: [`HostRecord`] without what is computed when
/// it is read (its name is the key, `online` is the namespace's, `health`
/// the health store's). A host that is expected and never connected has
/// neither `first_seen` nor `last_seen`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    kind: HostKind,
    #[serde(default)]
    first_seen: Option<u64>,
    #[serde(default)]
    last_seen: Option<u64>,
    facts: Facts,
}

/// The inventory (see the module documentation).
pub struct Inventory {
    store: Arc<dyn Store>,
    health: Arc<Health>,
    touches: mpsc::Sender<String>,
}

impl Inventory {
    /// The inventory kept in `store`, with hosts' `health`, and its writer
    /// task.
    pub fn start(store: Arc<dyn Store>, health: Arc<Health>) -> Arc<Inventory> {
        let (touches, queue) = mpsc::channel(TOUCHES);
        let inventory = Arc::new(Inventory {
            store,
            health,
            touches,
        });
        tokio::spawn(write_touches(Arc::downgrade(&inventory), queue));
        inventory
    }

    /// Hosts' health: their summaries, latest and over time.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Whether the inventory has host `name`.
    pub async fn has(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(HOSTS, name).await?.is_some())
    }

    /// Files what host `name` (served by a `kind`) reports of itself: its
    /// record is created the first time, and its facts replaced after.
    pub async fn report(&self, name: &str, kind: HostKind, facts: Facts) -> Result<(), StoreError> {
        for _ in 0..RACES {
            let old = self.store.get(HOSTS, name).await?;
            let now = now_secs();
            let first_seen = old
                .as_deref()
                .and_then(|bytes| serde_json::from_slice::<Stored>(bytes).ok())
                .and_then(|stored| stored.first_seen)
                .unwrap_or(now);
            let new = Stored {
                kind,
                first_seen: Some(first_seen),
                last_seen: Some(now),
                facts: facts.clone(),
            };
            if self
                .store
                .compare_and_swap(HOSTS, name, old, Some(encode(&new)))
                .await?
            {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "the record of {name} kept changing while it was written"
        )))
    }

    /// [`report`](Inventory::report)s for a host that an adapter let in: a
    /// failure is logged, and the host is in all the same (the inventory
    /// lists it at its next connection).
    pub async fn file(&self, name: &str, kind: HostKind, facts: Facts) {
        if let Err(e) = self.report(name, kind, facts).await {
            tracing::warn!(host = %name, error = %e, "could not file the host in the inventory");
        }
    }

    /// Moves the `last_seen` of `name` to now, if the inventory has it,
    /// without waiting (see the module documentation).
    pub fn touch(&self, name: &str) {
        if self.touches.try_send(name.to_owned()).is_err() {
            crate::metrics::get().inventory_touches_dropped.inc();
        }
    }

    /// The hosts `query` asks for, sorted by name; `online` says whether a
    /// client holds a name now.
    pub async fn hosts(
        &self,
        query: &HostsQuery,
        selector: Option<&Selector>,
        online: &dyn Fn(&str) -> bool,
    ) -> Result<HostsPage, StoreError> {
        let limit = query
            .limit
            .map_or(MAX_HOSTS_PAGE, |l| usize::try_from(l).unwrap_or(usize::MAX))
            .clamp(1, MAX_HOSTS_PAGE);
        let mut hosts = self
            .matching(
                query.after.as_deref(),
                query.online,
                selector,
                online,
                limit + 1,
            )
            .await?;
        let more = hosts.len() > limit;
        hosts.truncate(limit);
        self.add_health(&mut hosts).await?;
        Ok(HostsPage {
            hosts,
            more,
            summary_interval: self.health.interval(),
        })
    }

    /// Fills in the `health` of `hosts` (which [`matching`](Inventory::matching)
    /// leaves out: resolving a job's target needs none).
    pub async fn add_health(&self, hosts: &mut [HostRecord]) -> Result<(), StoreError> {
        let mut latest = self.health.latest().await?;
        for host in hosts {
            host.health = latest.remove(&host.name);
        }
        Ok(())
    }

    /// At most `limit` hosts after `after` that `selector` matches (only
    /// those online with `online_only`), sorted by name, without their
    /// health.
    pub async fn matching(
        &self,
        after: Option<&str>,
        online_only: bool,
        selector: Option<&Selector>,
        online: &dyn Fn(&str) -> bool,
        limit: usize,
    ) -> Result<Vec<HostRecord>, StoreError> {
        let now = now_secs();
        let mut hosts = Vec::new();
        for (name, bytes) in self.store.list(HOSTS).await? {
            if after.is_some_and(|after| name.as_str() <= after) {
                continue;
            }
            let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
                tracing::warn!(host = %name, "an inventory record that cannot be read is left out");
                continue;
            };
            let online = online(&name);
            if online_only && !online {
                continue;
            }
            let presence = match (online, stored.last_seen) {
                (true, _) => Presence::Online,
                (false, Some(_)) => Presence::Offline,
                (false, None) => Presence::Never,
            };
            let record = HostRecord {
                last_seen: if online { Some(now) } else { stored.last_seen },
                name,
                kind: stored.kind,
                first_seen: stored.first_seen,
                online,
                presence,
                facts: stored.facts,
                health: None,
            };
            if selector.is_some_and(|s| !s.matches(&record)) {
                continue;
            }
            if hosts.len() == limit {
                break;
            }
            hosts.push(record);
        }
        Ok(hosts)
    }

    /// Forgets host `name` and its health; whether the inventory had it.
    pub async fn forget(&self, name: &str) -> Result<bool, StoreError> {
        let had = self.store.delete(HOSTS, name).await?;
        self.health.forget(name).await?;
        Ok(had)
    }

    /// Moves the `last_seen` of every host of `names` that the inventory has.
    async fn write_touches(&self, names: BTreeSet<String>) {
        for name in names {
            for _ in 0..RACES {
                let Ok(Some(old)) = self.store.get(HOSTS, &name).await else {
                    break;
                };
                let Ok(mut stored) = serde_json::from_slice::<Stored>(&old) else {
                    break;
                };
                if stored.last_seen.is_none() {
                    // Expected, never connected: a departure of a client
                    // under its name that never reported is no visit.
                    break;
                }
                stored.last_seen = Some(now_secs());
                match self
                    .store
                    .compare_and_swap(HOSTS, &name, Some(old), Some(encode(&stored)))
                    .await
                {
                    Ok(false) => continue,
                    Ok(true) => break,
                    Err(e) => {
                        tracing::warn!(host = %name, error = %e, "could not record when the host was last seen");
                        break;
                    }
                }
            }
        }
    }
}

fn encode(stored: &Stored) -> Vec<u8> {
    // Strings, numbers and maps of strings: serializing cannot fail.
    serde_json::to_vec(stored).unwrap_or_default()
}

/// The writer of departures: takes what has queued up, once
/// per name, until the inventory is dropped.
async fn write_touches(inventory: std::sync::Weak<Inventory>, mut queue: mpsc::Receiver<String>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, TOUCHES).await > 0 {
        let names: BTreeSet<String> = batch.drain(..).collect();
        let Some(inventory) = inventory.upgrade() else {
            return;
        };
        inventory.write_touches(names).await;
    }
}

/// Files `name` in the inventory kept in `store` as a host that is
/// expected (a host token was issued for it), listed as never connected
/// until it reports; nothing if the inventory has it already.
pub async fn expect(store: &dyn Store, name: &str) -> Result<(), StoreError> {
    let new = Stored {
        kind: HostKind::Agent,
        first_seen: None,
        last_seen: None,
        facts: Facts::default(),
    };
    store
        .compare_and_swap(HOSTS, name, None, Some(encode(&new)))
        .await
        .map(drop)
}

/// Whether `client` may be a host of the inventory: not one of `ctl`'s
/// names, and a host by its token where it has one.
pub fn may_be_host(client: &ClientInfo) -> bool {
    CtlName::owner(&client.name).is_none() && client.is_host(&client.name)
}

/// Whether `client` joined as a kind of host: the adapters' tags are the
/// gateway's; a native client's `agent` tag is its own, but a touch only
/// moves the `last_seen` of a record under the very name it holds.
fn is_host_kind(client: &ClientInfo) -> bool {
    HostKind::of(&client.tags).is_some() && CtlName::owner(&client.name).is_none()
}

impl Observer for Inventory {
    fn observe(&self, change: &Change<'_>) {
        // Arrivals need no write: every host files its facts as it joins
        // (the agent's `facts`, an adapter's join), which moves
        // `last_seen`. The node that cleans up after a client writes its
        // departure (its own, or the one that reaped a dead node's).
        if let Change::Left {
            client,
            cleanup: true,
            ..
        } = change
        {
            if is_host_kind(client) {
                self.touch(&client.name);
            }
        }
    }
}
