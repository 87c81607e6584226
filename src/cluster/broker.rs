//! The broker: how what one node sends reaches the others.
//!
//! It carries namespace events and client frames (to one client, to every
//! client, to a service's subscribers on the nodes that watch it). Calls
//! that only send never wait: they are queued, in order, on one link, so what one node sends another arrives in the order
//! it was sent, whatever its kind. Those that carry a client's frame say
//! whether it left ([`Handoff`]), so the sender is never told `OK` for a
//! frame that was lost. What arrives comes out of the cluster's
//! [`Inbound`](super::Inbound) stream.

use uuid::Uuid;

use super::{Event, Handoff, NodeId, Pending};

/// How this node reaches the other nodes of its cluster (see the module
/// documentation). A frame is given as its JSON payload, which the broker
/// copies once onto its link.
pub trait Broker: Send + Sync + 'static {
    /// This node's id.
    fn node(&self) -> NodeId;
    /// Whether the link to the other nodes works (for `/readyz`), or why
    /// not.
    fn health(&self) -> Result<(), &'static str>;
    /// Tells every other node about a change.
    fn announce(&self, event: &Event);
    /// A frame for every client of every other node (MESSAGE to ALL).
    fn send_to_all(&self, payload: &[u8], except: Option<Uuid>) -> Handoff;
    /// A frame for the client `to`, connected to `node`.
    fn send_to_node(&self, node: NodeId, to: Uuid, payload: &[u8]) -> Handoff;
    /// A broadcast of a service owned here, for its subscribers on every
    /// node that [`watch`](Broker::watch)es it.
    fn publish_service(&self, name: &str, except: Option<Uuid>, payload: &[u8]) -> Handoff;
    /// From now on, deliver the broadcasts of the service `name` (owned on
    /// another node) to this node. Resolves once a broadcast published
    /// anywhere after it resolved is certain to arrive (or the link is down,
    /// and the watch will be renewed when it is back).
    fn watch(&self, name: &str) -> Pending<()>;
    /// Stop delivering that service's broadcasts here.
    fn unwatch(&self, name: &str);
}
