//! What a node shares with the other nodes of its cluster: the one seam.
//!
//! A gateway runs alone or as one replica among several sharing a Redis.
//! Everything that differs between the two lives behind [`Cluster`], after
//! centrifuge's Broker/PresenceManager split, and nothing outside this folder
//! knows which one it runs on:
//!
//! * namespace [`Event`]s: recorded in the shared namespace and announced to
//!   the other nodes, which apply them to their own copy;
//! * frames for clients of other nodes: to one client, to everyone, or to a
//!   service's subscribers wherever they are ([`Cluster::watch`]);
//! * claims and lookups: client and service names are unique cluster-wide,
//!   and a client that joined elsewhere a moment ago can be found;
//! * liveness: dead nodes are detected and cleaned up after ([`Inbound::Reap`]);
//! * the small state the nodes share (accounts, revocations, counters,
//!   leases, allocations): the [`Store`].
//!
//! What arrives from the other nodes comes out of one ordered channel of
//! [`Inbound`] items that the namespace consumes: the cluster never calls up
//! into the layers above it.
//!
//! [`Standalone`](standalone::Standalone) keeps it all in-process (there are
//! no other nodes, so frames and events go nowhere and claims are a map);
//! [`redis`] keeps it in Redis.

pub mod disk;
pub mod redis;
mod standalone;
pub mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use self::store::Store;
use crate::config::Settings;
use crate::protocol::{ClientInfo, Close, ServiceInfo};
use crate::transport::outbox::Frame;

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
    ServiceDeleted {
        name: String,
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
    All { except: Option<Uuid>, frame: Frame },
    /// A frame for one client of this node.
    Client { to: Uuid, frame: Frame },
    /// A broadcast of a service owned elsewhere, for this node's subscribers
    /// of it but `except`.
    Service {
        name: String,
        except: Option<Uuid>,
        frame: Frame,
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

/// What became of a frame handed to the cluster for other nodes. A sender
/// is told `OK` only for a frame that left: one the cluster could not take
/// is answered with an error instead (see `docs/PROTOCOL.md` §12).
pub enum Handoff {
    /// Nothing to wait for: the frame left, or there is no other node.
    Sent,
    /// It did not leave: the link to the other nodes is down.
    Refused,
    /// Queued on the link: resolves to whether it left (Redis took it).
    Queued(Pending<bool>),
}

/// How this node reaches the other nodes of its cluster and the state they
/// share. Calls that only send never wait: they are queued, in order, on
/// one link, so what one node sends another arrives in the order it was
/// sent, whatever its kind. Those that carry a client's frame say whether
/// it left ([`Handoff`]), so the sender is never told `OK` for a frame that
/// was lost.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node(&self) -> NodeId;
    /// Whether the link to the other nodes works (for `/readyz`), or why
    /// not.
    fn health(&self) -> Result<(), &'static str>;
    /// How this node's clients are closed when it stops: alone, the
    /// gateway is going away (1001); in a cluster, they should reconnect to
    /// another replica (1012).
    fn departure(&self) -> Close;
    /// Whether the files folder is shared with other nodes, whose clients'
    /// files must outlive this process.
    fn shares_files(&self) -> bool;

    /// Records one atomic change in the shared namespace (the cascades of
    /// `Left` and `NodeDown` are recorded change by change).
    fn record(&self, event: &Event);
    /// Tells every other node about a change.
    fn announce(&self, event: &Event);
    /// A frame for every client of every other node (MESSAGE to ALL).
    fn send_to_all(&self, frame: &Frame, except: Option<Uuid>) -> Handoff;
    /// A frame for the client `to`, connected to `node`.
    fn send_to_node(&self, node: NodeId, to: Uuid, frame: &Frame) -> Handoff;
    /// Asks `node` to close its client `uuid`, whose name a newer
    /// connection of the same user takes over; the name is free once the
    /// client's `Left` is recorded.
    fn take_over(&self, node: NodeId, uuid: Uuid);
    /// A broadcast of a service owned here, for its subscribers on every
    /// node that [`watch`](Cluster::watch)es it.
    fn publish_service(&self, name: &str, except: Option<Uuid>, frame: &Frame) -> Handoff;
    /// From now on, deliver the broadcasts of the service `name` (owned on
    /// another node) to this node. Resolves once a broadcast published
    /// anywhere after it resolved is certain to arrive (or the link is down,
    /// and the watch will be renewed when it is back).
    fn watch(&self, name: &str) -> Pending<()>;
    /// Stop delivering that service's broadcasts here.
    fn unwatch(&self, name: &str);

    /// Claims a client name for `uuid`: false when another client holds it.
    /// The claim ends when the client's `Left` is recorded.
    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>>;
    /// Claims a service name (and records the service): `Some(existing)`
    /// when it is taken. The claim ends when `ServiceDeleted` is recorded.
    fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> Pending<Result<Option<ServiceInfo>, ClusterError>>;
    /// Claims this node's names again after the link came back; a client
    /// whose name was given away meanwhile comes back as
    /// [`Inbound::NameLost`].
    fn reclaim_names(&self, names: Vec<(String, Uuid)>);
    /// Finds a client this node has not heard of, by name or by uuid: its
    /// record and its node. `None` when it exists nowhere (at once when
    /// there are no other nodes, or the link is down).
    fn locate(
        &self,
        name: Option<&str>,
        uuid: Option<Uuid>,
    ) -> Pending<Result<Option<(ClientInfo, NodeId)>, ClusterError>>;

    /// Leaves the cluster at once (graceful stop), after what was queued has
    /// been written, so nobody waits for this node's lease to lapse.
    fn deregister(&self) -> Pending<()>;

    /// The state every node shares: on disk alone, in Redis in a cluster.
    fn store(&self) -> &Arc<dyn Store>;
}

/// The receiving end of what the other nodes send (see [`Inbound`]).
pub type InboundStream = mpsc::UnboundedReceiver<Inbound>;

/// The file of a standalone gateway's [`Store`], in its data folder: the
/// one that commands run beside the gateway open too.
pub const STORE_FILE: &str = "concierge.db";

/// The store the settings name, without joining the cluster as a node:
/// for commands (`concierge user`, `token`, `settings`) that run beside a
/// gateway, on the same file alone or the same Redis in a cluster.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, ClusterError> {
    match redis_endpoint(settings)? {
        Some(endpoint) => redis::open_store(endpoint).await,
        None => {
            let path = settings.data_dir.join(STORE_FILE);
            let shown = path.display().to_string();
            let store = tokio::task::spawn_blocking(move || disk::DiskStore::open(path))
                .await
                .map_err(|e| {
                    ClusterError::Unavailable(format!(
                        "opening the store {shown} did not finish: {e}"
                    ))
                })?
                .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Where the settings put Redis: `redis_url`, or `redis_sentinels`; none
/// for a gateway alone.
fn redis_endpoint(settings: &Settings) -> Result<Option<redis::master::Endpoint>, ClusterError> {
    if settings.redis_url.is_empty() && settings.redis_sentinels.is_empty() {
        return Ok(None);
    }
    redis::master::Endpoint::new(
        &settings.redis_url,
        &settings.redis_sentinels,
        &settings.redis_sentinel_master,
    )
    .map(Some)
}

/// Joins the cluster the settings describe: Redis replicas when `redis_url`
/// or `redis_sentinels` is set (waiting until Redis answers), this process
/// alone otherwise.
pub async fn join(settings: &Settings) -> Result<(Arc<dyn Cluster>, InboundStream), ClusterError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(endpoint) = redis_endpoint(settings)? else {
        // Created on its first write, with the folder: nothing is left in
        // the data folder before something is stored.
        let store = open_store(settings).await?;
        return Ok((Arc::new(standalone::Standalone::new(store)), rx));
    };
    let lease = Duration::from_millis(settings.node_lease_ms);
    let cluster = redis::connect(endpoint, lease, tx).await?;
    Ok((Arc::new(cluster), rx))
}
