//! The broker and the claims of a gateway running alone: in-process, with
//! no other nodes.
//!
//! Frames and events for other nodes have nowhere to go, so sending them is
//! a no-op; claims are a map in memory, exact because this process is the
//! only one that claims. Its store is a file
//! ([`DiskStore`](super::disk::DiskStore)).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use super::{Broker, Claims, ClusterError, Event, Handoff, NodeId, Pending};
use crate::protocol::{ClientInfo, ServiceInfo};

fn ready<T: Send + 'static>(value: T) -> Pending<T> {
    Box::pin(std::future::ready(value))
}

/// The [`Broker`] of a gateway running alone: there is nobody to send to.
pub struct LocalBroker {
    node: NodeId,
}

impl LocalBroker {
    pub fn new(node: NodeId) -> Self {
        LocalBroker { node }
    }
}

impl Broker for LocalBroker {
    fn node(&self) -> NodeId {
        self.node
    }

    fn health(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn announce(&self, _: &Event) {}

    fn send_to_all(&self, _: &[u8], _: Option<Uuid>) -> Handoff {
        Handoff::Sent
    }

    fn send_to_node(&self, node: NodeId, _: Uuid, _: &[u8]) -> Handoff {
        // Every client of a standalone gateway is local.
        tracing::error!(%node, "a standalone gateway was asked to send to another node");
        Handoff::Refused
    }

    fn publish_service(&self, _: &str, _: Option<Uuid>, _: &[u8]) -> Handoff {
        Handoff::Sent
    }

    fn watch(&self, _: &str) -> Pending<()> {
        ready(())
    }

    fn unwatch(&self, _: &str) {}
}

/// Names claimed in this process.
#[derive(Default)]
struct Names {
    clients: HashMap<String, Uuid>,
    /// The hash of a client name's holder's resume secret, by name.
    proofs: HashMap<String, (Uuid, String)>,
    services: HashMap<String, ServiceInfo>,
}

/// The [`Claims`] of a gateway running alone: a map in memory.
#[derive(Default)]
pub struct LocalClaims {
    names: Mutex<Names>,
}

impl LocalClaims {
    fn names(&self) -> MutexGuard<'_, Names> {
        // Every update below is a single map operation: a panic elsewhere
        // cannot leave the maps half-changed.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Claims for LocalClaims {
    fn record(&self, event: &Event) {
        let mut names = self.names();
        match event {
            Event::Left { uuid } => {
                names.clients.retain(|_, holder| holder != uuid);
                names.proofs.retain(|_, (holder, _)| holder != uuid);
            }
            Event::ServiceDeleted { name, .. } => {
                names.services.remove(name);
            }
            _ => {}
        }
    }

    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>> {
        let mut names = self.names();
        let won = match names.clients.get(name) {
            Some(holder) => *holder == uuid,
            None => {
                names.clients.insert(name.to_owned(), uuid);
                true
            }
        };
        ready(Ok(won))
    }

    fn claim_name_from(
        &self,
        name: &str,
        uuid: Uuid,
        holder: Uuid,
        proof: Option<&str>,
    ) -> Pending<Result<bool, ClusterError>> {
        let mut names = self.names();
        let proven = proof.is_none_or(|proof| {
            names
                .proofs
                .get(name)
                .is_some_and(|(vouched, hash)| *vouched == holder && hash == proof)
        });
        let won = match names.clients.get(name) {
            Some(held) if *held == uuid => true,
            Some(held) if *held != holder || !proven => false,
            _ => {
                names.clients.insert(name.to_owned(), uuid);
                true
            }
        };
        ready(Ok(won))
    }

    fn vouch(&self, name: &str, uuid: Uuid, hash: &str) {
        let mut names = self.names();
        if names.clients.get(name) == Some(&uuid) {
            names
                .proofs
                .insert(name.to_owned(), (uuid, hash.to_owned()));
        }
    }

    fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> Pending<Result<Option<ServiceInfo>, ClusterError>> {
        let mut names = self.names();
        let existing = match names.services.get(&service.name) {
            Some(existing) => Some(existing.clone()),
            None => {
                names.services.insert(service.name.clone(), service.clone());
                None
            }
        };
        ready(Ok(existing))
    }

    fn take_over(&self, node: NodeId, _: Uuid) {
        // Every client of a standalone gateway is local.
        tracing::error!(%node, "a standalone gateway was asked to close a client of another node");
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
}
