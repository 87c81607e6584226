//! The cluster of a gateway running alone: in-process, with no other nodes.
//!
//! Frames and events for other nodes have nowhere to go, so sending them is
//! a no-op; claims are a map in memory, exact because this process is the
//! only one that claims; the shared state is a file
//! ([`DiskStore`](super::disk::DiskStore)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::store::Store;
use super::{Cluster, ClusterError, Event, Handoff, NodeId, Pending};
use crate::protocol::{ClientInfo, Close, CloseCode, ServiceInfo};
use crate::transport::outbox::Frame;

/// Names claimed in this process.
#[derive(Default)]
struct Claims {
    names: HashMap<String, Uuid>,
    services: HashMap<String, ServiceInfo>,
}

/// The [`Cluster`] of a gateway running alone (see the module
/// documentation).
pub struct Standalone {
    node: NodeId,
    claims: Mutex<Claims>,
    store: Arc<dyn Store>,
}

impl Standalone {
    /// A cluster of one node, whose shared state is `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Standalone {
            node: Uuid::new_v4(),
            claims: Mutex::default(),
            store,
        }
    }

    fn claims(&self) -> MutexGuard<'_, Claims> {
        // Every update below is a single map operation: a panic elsewhere
        // cannot leave the maps half-changed.
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn ready<T: Send + 'static>(value: T) -> Pending<T> {
    Box::pin(std::future::ready(value))
}

impl Cluster for Standalone {
    fn node(&self) -> NodeId {
        self.node
    }

    fn health(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn departure(&self) -> Close {
        Close::new(CloseCode::GoingAway, "the gateway is shutting down")
    }

    fn shares_files(&self) -> bool {
        false
    }

    fn record(&self, event: &Event) {
        let mut claims = self.claims();
        match event {
            Event::Left { uuid } => claims.names.retain(|_, holder| holder != uuid),
            Event::ServiceDeleted { name } => {
                claims.services.remove(name);
            }
            _ => {}
        }
    }

    fn announce(&self, _: &Event) {}

    fn send_to_all(&self, _: &Frame, _: Option<Uuid>) -> Handoff {
        Handoff::Sent
    }

    fn send_to_node(&self, node: NodeId, _: Uuid, _: &Frame) -> Handoff {
        // Every client of a standalone gateway is local.
        tracing::error!(%node, "a standalone gateway was asked to send to another node");
        Handoff::Refused
    }

    fn take_over(&self, node: NodeId, _: Uuid) {
        // Every client of a standalone gateway is local.
        tracing::error!(%node, "a standalone gateway was asked to close a client of another node");
    }

    fn publish_service(&self, _: &str, _: Option<Uuid>, _: &Frame) -> Handoff {
        Handoff::Sent
    }

    fn watch(&self, _: &str) -> Pending<()> {
        ready(())
    }

    fn unwatch(&self, _: &str) {}

    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>> {
        let mut claims = self.claims();
        let won = match claims.names.get(name) {
            Some(holder) => *holder == uuid,
            None => {
                claims.names.insert(name.to_owned(), uuid);
                true
            }
        };
        ready(Ok(won))
    }

    fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> Pending<Result<Option<ServiceInfo>, ClusterError>> {
        let mut claims = self.claims();
        let existing = match claims.services.get(&service.name) {
            Some(existing) => Some(existing.clone()),
            None => {
                claims
                    .services
                    .insert(service.name.clone(), service.clone());
                None
            }
        };
        ready(Ok(existing))
    }

    fn reclaim_names(&self, _: Vec<(String, Uuid)>) {
        // Nothing can have taken them: there is no outage without a link.
    }

    fn locate(
        &self,
        _: Option<&str>,
        _: Option<Uuid>,
    ) -> Pending<Result<Option<(ClientInfo, NodeId)>, ClusterError>> {
        ready(Ok(None))
    }

    fn deregister(&self) -> Pending<()> {
        ready(())
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
