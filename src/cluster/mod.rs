//! Fan-out, on one node and across nodes.
//!
//! Two pieces, after the Hub/Broker split of centrifuge:
//!
//! * [`Hub`]: this node's topics and the local outboxes subscribed to them.
//!   Publishing is a loop of non-blocking pushes sharing one buffer, done
//!   synchronously inside the registry, so a publication reaches local clients
//!   in the same order as the direct frames the registry sends around it.
//! * [`Broker`]: how this node reaches the others. [`Standalone`] is the
//!   in-process implementation for a gateway running alone: there is nobody
//!   else to tell, so every call is a no-op. The Redis broker
//!   ([`crate::cluster::redis`]) publishes namespace events to every replica and
//!   frames to the replicas that have recipients for them.
//!
//! Every node keeps a replica of the whole namespace (clients, services,
//! subscriptions), kept current by [`Event`]s, so routing and fetches never
//! wait on the network.

pub mod redis;

pub mod disk;
pub mod redis_store;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{ClientInfo, ServiceInfo};
use crate::transport::outbox::{Frame, Outbox};

/// Identifies one gateway process in a cluster.
pub type NodeId = Uuid;

/// What a local publication is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every identified client.
    Everyone,
    /// The subscribers of one service.
    Service(String),
}

/// This node's topics and their local subscribers.
#[derive(Default)]
pub struct Hub {
    topics: HashMap<Topic, IndexMap<Uuid, Outbox>>,
}

impl Hub {
    /// Adds `outbox` to the topic's subscribers (a no-op when it is there).
    pub fn subscribe(&mut self, topic: Topic, outbox: Outbox) {
        self.topics
            .entry(topic)
            .or_default()
            .insert(outbox.uuid(), outbox);
    }

    /// Removes a client from the topic's subscribers.
    pub fn unsubscribe(&mut self, topic: &Topic, uuid: Uuid) {
        if let Some(subscribers) = self.topics.get_mut(topic) {
            subscribers.swap_remove(&uuid);
            if subscribers.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Whether any local client follows `topic`.
    pub fn has_subscribers(&self, topic: &Topic) -> bool {
        self.topics.contains_key(topic)
    }

    /// Removes a topic and all its subscriptions.
    pub fn drop_topic(&mut self, topic: &Topic) {
        self.topics.remove(topic);
    }

    /// Delivers `frame` to every local subscriber of `topic` but `except`.
    pub fn publish(&self, topic: &Topic, frame: &Frame, except: Option<Uuid>) {
        let Some(subscribers) = self.topics.get(topic) else {
            return;
        };
        for (uuid, outbox) in subscribers {
            if except != Some(*uuid) {
                outbox.send(frame.clone());
            }
        }
    }
}

/// A change to the namespace. The node where it happens applies it, records
/// it (in Redis) and announces it; every other node applies it to its replica
/// and tells its own clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Joined {
        client: ClientInfo,
        node: NodeId,
    },
    /// The client left; its subscriptions and services go with it on every
    /// node (each node derives that cascade from its replica).
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

/// A frame from another node for some of this node's clients.
#[derive(Debug, Clone)]
pub enum Remote {
    /// For one client.
    Client { to: Uuid, frame: Frame },
    /// A service's broadcast, for this node's local subscribers but `except`.
    Service {
        name: String,
        except: Option<Uuid>,
        frame: Frame,
    },
}

/// Resolves once a [`Broker::watch`] has taken effect.
pub type Watching = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How this node reaches the other nodes of its cluster.
pub trait Broker: Send + 'static {
    /// This node's id.
    fn node(&self) -> NodeId;
    /// Whether the link to the other nodes works (for `/readyz`).
    fn is_up(&self) -> bool;
    /// Tells every other node about a change to the namespace.
    fn announce(&self, event: &Event);
    /// Records one atomic change in the shared namespace (the cascades of
    /// `Left` and `NodeDown` are recorded change by change).
    fn record(&self, change: &Event);
    /// A frame for every client of every other node (MESSAGE to ALL).
    fn broadcast(&self, frame: &Frame, except: Option<Uuid>);
    /// A frame for the client `to`, connected to `node`.
    fn forward(&self, node: NodeId, to: Uuid, frame: &Frame);
    /// A broadcast of a service owned here, for its subscribers on every
    /// node that [`watch`](Broker::watch)es it.
    fn publish_service(&self, name: &str, except: Option<Uuid>, frame: &Frame);
    /// From now on, deliver the broadcasts of the service `name` (owned on
    /// another node) to this node. The future resolves once a broadcast
    /// published anywhere after it resolved is certain to arrive (or the
    /// link is down, and the watch will be renewed when it is back).
    fn watch(&self, name: &str) -> Watching;
    /// Stop delivering that service's broadcasts here.
    fn unwatch(&self, name: &str);
}

/// The broker of a gateway running alone: there are no other nodes.
pub struct Standalone {
    node: NodeId,
}

impl Default for Standalone {
    fn default() -> Self {
        Standalone {
            node: Uuid::new_v4(),
        }
    }
}

impl Broker for Standalone {
    fn node(&self) -> NodeId {
        self.node
    }

    fn is_up(&self) -> bool {
        true
    }

    fn announce(&self, _: &Event) {}

    fn record(&self, _: &Event) {}

    fn broadcast(&self, _: &Frame, _: Option<Uuid>) {}

    fn forward(&self, node: NodeId, _: Uuid, _: &Frame) {
        // Every client of a standalone gateway is local.
        tracing::error!(%node, "a standalone gateway was asked to forward to another node");
    }

    fn publish_service(&self, _: &str, _: Option<Uuid>, _: &Frame) {}

    fn watch(&self, _: &str) -> Watching {
        Box::pin(std::future::ready(()))
    }

    fn unwatch(&self, _: &str) {}
}
