//! The read-only views the namespace's actors publish, and that everyone
//! else reads without asking them.
//!
//! The [`Registry`](super::registry::Registry) is the only writer of the
//! [`Directory`] (clients, names, the list of services); each
//! [`Service`](super::service::Service) actor is the only writer of its
//! [`ServiceView`] (its subscribers). A writer changes its own copy and
//! publishes it whole through an [`ArcSwap`]: readers (sessions routing
//! their MESSAGEs on their own threads, the file server, fetches) load the
//! current copy in a few nanoseconds, never lock, and always see a
//! consistent state. The directory's maps are persistent (`imbl`), so a
//! copy shares everything but the changed path and publishing one change
//! costs O(log n), not a copy of the namespace.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::Addr;
use arc_swap::ArcSwap;
use indexmap::IndexSet;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::gate::HistoryGate;
use super::service::Service;
use crate::cluster::NodeId;
use crate::protocol::{raw_json, ClientInfo, OriginRef, ServiceInfo};
use crate::transport::outbox::{Frame, Outbox};

/// One identified client, local or on another node.
pub struct ClientRecord {
    pub info: ClientInfo,
    /// Its receipt in the MESSAGEs it sends, encoded once.
    pub origin: Box<RawValue>,
    pub node: NodeId,
    /// How to reach it: `Some` for this node's clients; the others are
    /// reached through their node.
    pub outbox: Option<Outbox>,
    /// The services it is subscribed to.
    pub(super) ledger: Ledger,
}

impl ClientRecord {
    pub fn new(info: ClientInfo, node: NodeId, outbox: Option<Outbox>) -> Self {
        let origin = OriginRef {
            client: &info,
            service: None,
        }
        .encode();
        ClientRecord {
            info,
            origin,
            node,
            outbox,
            ledger: Ledger::default(),
        }
    }

    /// The names of the services this client is subscribed to, sorted.
    pub fn subscriptions(&self) -> Vec<String> {
        self.ledger.lock().names.iter().cloned().collect()
    }
}

/// Why a subscription could not be written down.
#[derive(Debug, PartialEq, Eq)]
pub enum LedgerRefusal {
    /// The client has `max` subscriptions already.
    Full,
    /// The client has left.
    Closed,
}

/// The names of the services one client is subscribed to: an index that
/// each [`Service`] actor keeps for its own name, so that a departure, a
/// limit check or a fetch does not have to ask every service. The registry
/// closes it when the client leaves; a service that subscribes a client
/// whose ledger is closed refuses, so no subscription outlives its client.
#[derive(Default)]
pub(super) struct Ledger(Mutex<LedgerState>);

#[derive(Default)]
pub(super) struct LedgerState {
    names: BTreeSet<String>,
    closed: bool,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        // Each update is a single set operation: nothing is left half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes down a subscription to `name`, unless the client already has
    /// `max` or has left.
    pub(super) fn add(&self, name: &str, max: usize) -> Result<(), LedgerRefusal> {
        let mut state = self.lock();
        if state.closed {
            return Err(LedgerRefusal::Closed);
        }
        if state.names.len() >= max {
            return Err(LedgerRefusal::Full);
        }
        state.names.insert(name.to_owned());
        Ok(())
    }

    pub(super) fn remove(&self, name: &str) {
        self.lock().names.remove(name);
    }

    /// Closes the ledger (the client left) and returns what it held.
    pub(super) fn close(&self) -> BTreeSet<String> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.names)
    }
}

/// A service as the directory lists it: its actor, and what the actor
/// publishes.
pub struct ServiceHandle {
    pub addr: Addr<Service>,
    pub view: Arc<ArcSwap<ServiceView>>,
    /// Its history's gate, when it keeps one.
    pub history: Option<Arc<HistoryGate>>,
}

impl ServiceHandle {
    /// The service with its complete subscriber list.
    pub fn info(&self) -> ServiceInfo {
        self.view.load().info()
    }
}

/// What a service's actor publishes about it.
#[derive(Clone)]
pub struct ServiceView {
    /// The service as it appears in MESSAGE receipts: no subscribers.
    pub receipt: ServiceInfo,
    /// The same, encoded once.
    pub receipt_json: Arc<RawValue>,
    /// Every subscriber, here or elsewhere, in subscription order.
    pub subscribers: IndexSet<Uuid>,
    /// The subscribers connected to this node, with their outboxes.
    pub local: Vec<(Uuid, Outbox)>,
}

impl ServiceView {
    pub fn new(receipt: ServiceInfo) -> Self {
        ServiceView {
            receipt_json: raw_json(&receipt).into(),
            receipt,
            subscribers: IndexSet::new(),
            local: Vec::new(),
        }
    }

    /// The service with its complete subscriber list.
    pub fn info(&self) -> ServiceInfo {
        ServiceInfo {
            subscribers: self.subscribers.iter().copied().collect(),
            ..self.receipt.clone()
        }
    }

    /// Delivers `frame` to this node's subscribers but `except`.
    pub fn publish(&self, frame: &Frame, except: Option<Uuid>) {
        super::fan_out(
            self.local
                .iter()
                .filter(|(uuid, _)| except != Some(*uuid))
                .map(|(_, outbox)| outbox),
            frame,
        );
    }
}

/// The namespace as this node knows it: every client of the cluster and
/// every service.
#[derive(Clone, Default)]
pub struct Directory {
    pub(super) clients: imbl::HashMap<Uuid, Arc<ClientRecord>>,
    pub(super) names: imbl::HashMap<String, Arc<ClientRecord>>,
    /// This node's own clients.
    pub(super) local: imbl::HashMap<Uuid, Arc<ClientRecord>>,
    pub(super) services: imbl::OrdMap<String, Arc<ServiceHandle>>,
}

impl Directory {
    pub fn client(&self, uuid: &Uuid) -> Option<&Arc<ClientRecord>> {
        self.clients.get(uuid)
    }

    pub fn named(&self, name: &str) -> Option<&Arc<ClientRecord>> {
        self.names.get(name)
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceHandle>> {
        self.services.get(name)
    }

    /// Every client of the cluster.
    pub fn clients(&self) -> impl Iterator<Item = &Arc<ClientRecord>> {
        self.clients.values()
    }

    /// Every service, sorted by name.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceHandle>> {
        self.services.values()
    }

    /// How many clients this node serves.
    pub fn local_count(&self) -> usize {
        self.local.len()
    }

    /// Delivers `frame` to every client of this node but `except`.
    pub fn publish(&self, frame: &Frame, except: Option<Uuid>) {
        super::fan_out(
            self.local
                .iter()
                .filter(|(uuid, _)| except != Some(**uuid))
                .filter_map(|(_, record)| record.outbox.as_ref()),
            frame,
        );
    }

    /// The subscriptions of a client, with complete subscriber lists.
    pub fn subscriptions_of(&self, record: &ClientRecord) -> Vec<ServiceInfo> {
        record
            .subscriptions()
            .iter()
            .filter_map(|name| self.service(name).map(|s| s.info()))
            .collect()
    }
}
