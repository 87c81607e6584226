//! What a node shares with the other nodes of its cluster: the seam, in
//! four parts.
//!
//! A gateway runs alone or as one replica among several sharing a Redis.
//! Everything that differs between the two lives behind four traits, after
//! centrifuge's Broker / PresenceManager split, each with an implementation
//! for a node alone ([`standalone`], [`disk`]) and one for Redis
//! ([`redis`]):
//!
//! * the [`Broker`] carries what goes from node to node: namespace
//!   [`Event`]s, frames for clients of other nodes (to one client, to
//!   everyone, or to a service's subscribers wherever they are), and says
//!   whether the link to the other nodes works;
//! * the [`Claims`] keep what must be unique or agreed on cluster-wide:
//!   client and service names, the shared namespace's records, a node's
//!   lease (dead nodes are detected and cleaned up after:
//!   [`Inbound::Reap`]), and the takeover of a name by a newer connection;
//! * the [`Store`] holds the small state features share (accounts,
//!   revocations, counters, leases, allocations);
//! * the [`Histories`] keep what services that ask for it broadcast, for
//!   subscribers that come back: in memory alone; in Redis streams among
//!   replicas, with a copy in the memory of the owner's replica.
//!
//! Beside them, the jobs' [`Ledger`] keeps every job's record and host
//! rows: in a file of its own alone ([`disk_ledger`]), in Redis among
//! replicas ([`redis::ledger`]); and the [`HealthStore`] keeps hosts'
//! summaries, latest and over time: in `health.db` alone
//! ([`disk_health`]), in Redis among replicas ([`redis::health`]).
//!
//! [`join`] builds them from the settings, in this one place, and
//! hands them to the gateway as one [`Cluster`]: nothing outside this
//! folder knows which backend it runs on.
//!
//! What arrives from the other nodes comes out of one ordered channel of
//! [`Inbound`] items that the namespace consumes: the cluster never calls up
//! into the layers above it. A client's frame crosses the seam as its JSON
//! text: the broker takes the bytes it sends and hands up a [`Payload`]
//! that the layer above frames for its transport.

mod broker;
mod claims;
pub mod disk;
pub mod disk_health;
pub mod disk_ledger;
pub mod health;
pub mod history;
pub mod ledger;
mod payload;
pub mod redis;
pub mod settings;
mod sqlite;
mod standalone;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

pub use self::broker::Broker;
pub use self::claims::Claims;
use self::health::HealthStore;
pub use self::history::Histories;
use self::ledger::Ledger;
pub use self::payload::Payload;
pub use self::settings::ClusterSettings;
use self::store::{Store, StoreError};
use crate::protocol::{ClientInfo, Close, CloseCode, ServiceInfo};

/// Identifies one gateway process in a cluster.
pub type NodeId = Uuid;

/// A change to the namespace. The node where it happens applies it, records
/// it in the shared namespace and announces it; every other node applies it
/// to its copy and tells its own clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Joined {
        client: ClientInfo,
        node: NodeId,
    },
    /// The client left; its subscriptions and services go with it on every
    /// node (each node derives that cascade from its copy).
    Left {
        uuid: Uuid,
    },
    /// A new service; `subscribers` is empty.
    ServiceCreated {
        service: ServiceInfo,
    },
    /// `owner` is the client that owned it: the shared namespace deletes
    /// the service only if it still belongs to that client (a newer owner
    /// may have claimed the name since).
    ServiceDeleted {
        name: String,
        owner: Uuid,
    },
    Subscribed {
        service: String,
        uuid: Uuid,
    },
    Unsubscribed {
        service: String,
        uuid: Uuid,
    },
    /// A node stopped renewing its lease: all its clients left.
    NodeDown {
        node: NodeId,
    },
}

/// The shared namespace as the cluster holds it, to bring a node's copy in
/// line (at start-up and after the link to the other nodes comes back).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub clients: Vec<(ClientInfo, NodeId)>,
    /// Services with their subscribers, in subscription order.
    pub services: Vec<ServiceInfo>,
}

/// Something the other nodes sent this one, or that the cluster decided,
/// in the order it happened.
#[derive(Debug)]
pub enum Inbound {
    /// A change another node made.
    Event(Event),
    /// A MESSAGE to ALL, for every client of this node but `except`.
    All {
        except: Option<Uuid>,
        payload: Payload,
    },
    /// A frame for one client of this node.
    Client { to: Uuid, payload: Payload },
    /// A broadcast of a service owned elsewhere, for this node's subscribers
    /// of it but `except`.
    Service {
        name: String,
        except: Option<Uuid>,
        payload: Payload,
    },
    /// The shared namespace, read after (re)connecting: everything before
    /// it is superseded.
    Snapshot(Snapshot),
    /// A node died and this one won the right to clean up after it: remove
    /// its clients, recording each departure.
    Reap(NodeId),
    /// A client of this node lost its name (another node gave it away
    /// while this one was cut off): close it.
    NameLost { uuid: Uuid, close: Close },
    /// A newer connection of the same user on another node takes this
    /// node's client's name: close it with 4015.
    TakenOver { uuid: Uuid },
}

/// Why the cluster could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The shared namespace cannot be reached now.
    #[error("the cluster is unreachable: {0}")]
    Unavailable(String),
}

/// A cluster operation that completes later.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What became of a frame handed to the broker for other nodes. A sender
/// is told `OK` only for a frame that left: one the broker could not take
/// is answered with an error instead (see `docs/PROTOCOL.md` §12).
pub enum Handoff {
    /// Nothing to wait for: the frame left, or there is no other node.
    Sent,
    /// It did not leave: the link to the other nodes is down, or its queue
    /// is full.
    Refused,
    /// Queued on the link: resolves to whether it left.
    Queued(Pending<bool>),
}

/// The receiving end of what the other nodes send (see [`Inbound`]).
pub type InboundStream = mpsc::Receiver<Inbound>;

/// How many [`Inbound`] items may wait for the namespace: beyond, the
/// cluster stops reading from the other nodes until it catches up.
pub const INBOUND: usize = 65_536;

/// The file of a standalone gateway's [`Store`], in its data folder: the
/// one that commands run beside the gateway open too.
pub const STORE_FILE: &str = "concierge.db";

/// The file of a standalone gateway's [`Ledger`], beside [`STORE_FILE`].
pub const JOBS_FILE: &str = "jobs.db";

/// The file of a standalone gateway's [`HealthStore`], beside
/// [`STORE_FILE`].
pub const HEALTH_FILE: &str = "health.db";

/// A node's place in its cluster: the [`Broker`], the [`Claims`], the
/// [`Store`], the [`Histories`], the [`Ledger`] and the [`HealthStore`],
/// built together by [`join`].
pub struct Cluster {
    broker: Box<dyn Broker>,
    claims: Box<dyn Claims>,
    store: Arc<dyn Store>,
    history: Arc<dyn Histories>,
    ledger: Arc<dyn Ledger>,
    health: Arc<dyn HealthStore>,
    /// Whether other nodes may serve this node's clients once it stops.
    replicated: bool,
}

impl Cluster {
    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.broker.node()
    }

    /// Node to node: events, frames, watches, and the link's health.
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Names, the shared namespace's records, leases and takeovers.
    pub fn claims(&self) -> &dyn Claims {
        &*self.claims
    }

    /// The state every node shares.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Services' histories.
    pub fn history(&self) -> &Arc<dyn Histories> {
        &self.history
    }

    /// Jobs and their hosts.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// Hosts' summaries: their latest and their series.
    pub fn health(&self) -> &Arc<dyn HealthStore> {
        &self.health
    }

    /// How this node's clients are closed when it stops: alone, the
    /// gateway is going away (1001); among replicas, they should reconnect
    /// to another (1012).
    pub fn departure(&self) -> Close {
        if self.replicated {
            Close::new(
                CloseCode::ServiceRestart,
                "this replica is restarting: reconnect to another",
            )
        } else {
            Close::new(CloseCode::GoingAway, "the gateway is shutting down")
        }
    }

    /// Whether the files folder is shared with other nodes, whose clients'
    /// files must outlive this process.
    pub fn shares_files(&self) -> bool {
        self.replicated
    }
}

/// The store the settings name, without joining the cluster as a node:
/// for commands (`concierge user`, `token`, `settings`) that run beside a
/// gateway, on the same file alone or the same Redis in a cluster.
pub async fn open_store(settings: &ClusterSettings) -> Result<Arc<dyn Store>, ClusterError> {
    match settings.redis_endpoint()? {
        Some(endpoint) => redis::open_store(endpoint).await,
        None => {
            let path = settings.data_dir.join(STORE_FILE);
            Ok(Arc::new(
                open_file(path, "the store", disk::DiskStore::open).await?,
            ))
        }
    }
}

/// Opens the file at `path` with `open` (which blocks) on a thread that may
/// block; `what` names it in an error.
async fn open_file<T: Send + 'static>(
    path: std::path::PathBuf,
    what: &str,
    open: fn(std::path::PathBuf) -> Result<T, StoreError>,
) -> Result<T, ClusterError> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || open(path))
        .await
        .map_err(|e| {
            ClusterError::Unavailable(format!("opening {what} {shown} did not finish: {e}"))
        })?
        .map_err(|e| ClusterError::Unavailable(e.to_string()))
}

/// Joins the cluster the settings describe: Redis replicas when a Redis is
/// named (waiting until it answers), this process alone otherwise.
pub async fn join(settings: &ClusterSettings) -> Result<(Cluster, InboundStream), ClusterError> {
    let (tx, rx) = mpsc::channel(INBOUND);
    let Some(endpoint) = settings.redis_endpoint()? else {
        // Created on its first write, with the folder: nothing is left in
        // the data folder before something is stored.
        let store = open_store(settings).await?;
        let path = settings.data_dir.join(JOBS_FILE);
        let ledger = open_file(path, "the jobs ledger", disk_ledger::DiskLedger::open).await?;
        let path = settings.data_dir.join(HEALTH_FILE);
        let health = open_file(path, "the health store", disk_health::DiskHealth::open).await?;
        let node = Uuid::new_v4();
        let cluster = Cluster {
            broker: Box::new(standalone::LocalBroker::new(node)),
            claims: Box::new(standalone::LocalClaims::default()),
            store,
            history: Arc::new(history::MemoryHistory::default()),
            ledger: Arc::new(ledger),
            health: Arc::new(health),
            replicated: false,
        };
        return Ok((cluster, rx));
    };
    let parts = redis::connect(endpoint, settings.node_lease, tx).await?;
    let cluster = Cluster {
        broker: Box::new(parts.broker),
        claims: Box::new(parts.claims),
        store: parts.store,
        history: parts.history,
        ledger: parts.ledger,
        health: parts.health,
        replicated: true,
    };
    Ok((cluster, rx))
}
