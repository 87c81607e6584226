//! The claims: what must be unique or agreed on across the cluster.
//!
//! Client and service names are unique cluster-wide; the shared namespace's
//! records say which client is where and who subscribes to what; a node's
//! lease says it is alive (a node whose lease lapsed is cleaned up after by
//! one other, [`Inbound::Reap`](super::Inbound::Reap)); a name held by an
//! older connection of the same user is taken over. Records are written
//! in order on the same link as the broker's messages, so a claim made
//! after a departure was recorded sees the name it freed.

use uuid::Uuid;

use super::{ClusterError, Event, NodeId, Pending};
use crate::protocol::{ClientInfo, ServiceInfo};

/// Names, records and leases (see the module documentation).
pub trait Claims: Send + Sync + 'static {
    /// Records one atomic change in the shared namespace (the cascades of
    /// `Left` and `NodeDown` are recorded change by change).
    fn record(&self, event: &Event);
    /// Claims a client name for `uuid`: false when another client holds it.
    /// The claim ends when the client's `Left` is recorded.
    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>>;
    /// Moves the claim on a client name from `holder` to `uuid` at once,
    /// comparing in the store itself (a replica that died or is cut off
    /// cannot release it): true when `holder` (or nobody) held it, false
    /// when another client does. Only for a newcomer that proved it owns
    /// the name: its token's user is the holder's (`proof` is `None`), or
    /// `proof` is the hash the holder's claim keeps of its resume secret
    /// ([`vouch`](Claims::vouch)), else false.
    fn claim_name_from(
        &self,
        name: &str,
        uuid: Uuid,
        holder: Uuid,
        proof: Option<&str>,
    ) -> Pending<Result<bool, ClusterError>>;
    /// Keeps `hash`, the hash of the resume secret of `uuid`, with its
    /// claim on `name` (only while it holds it); it goes when the client's
    /// `Left` is recorded.
    fn vouch(&self, name: &str, uuid: Uuid, hash: &str);
    /// Claims a service name (and records the service): `Some(existing)`
    /// when it is taken. The claim ends when `ServiceDeleted` or its
    /// owner's `Left` is recorded, not for another owner's.
    fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> Pending<Result<Option<ServiceInfo>, ClusterError>>;
    /// Asks `node` to close its client `uuid`, whose name a newer
    /// connection of the same user took over
    /// ([`claim_name_from`](Claims::claim_name_from)); nobody answers when
    /// that node is dead, and its reaper records the client's `Left`.
    fn take_over(&self, node: NodeId, uuid: Uuid);
    /// Claims this node's names again after the link came back (or checks
    /// it still holds them); a client whose name was given away or taken
    /// over meanwhile comes back as
    /// [`Inbound::NameLost`](super::Inbound::NameLost).
    fn reclaim_names(&self, names: Vec<(String, Uuid)>);
    /// Finds a client this node has not heard of, by name or by uuid: its
    /// record and its node. `None` when it exists nowhere (at once when
    /// there are no other nodes, or the link is down).
    fn locate(
        &self,
        name: Option<&str>,
        uuid: Option<Uuid>,
    ) -> Pending<Result<Option<(ClientInfo, NodeId)>, ClusterError>>;
    /// Gives up this node's lease at once (graceful stop), after what was
    /// queued has been written, so nobody waits for it to lapse.
    fn deregister(&self) -> Pending<()>;
}
