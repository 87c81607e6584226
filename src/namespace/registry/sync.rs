//! How the registry keeps its copy of the namespace in line with the other
//! nodes': their changes, the shared namespace read after an outage, and
//! the clean-up after a node that died.

use std::collections::{BTreeSet, HashMap};

use actix::prelude::*;
use uuid::Uuid;

use super::{atomic, done, Departure, Reap, Reconcile, Registry, Remote, Step};
use crate::cluster::{Event, NodeId, Snapshot};
use crate::namespace::service;
use crate::protocol::{ClientInfo, ServiceInfo};

impl Registry {
    /// Applies a change another node made.
    pub(super) fn apply(&mut self, event: Event) -> Step {
        match event {
            Event::Joined { client, node } => {
                self.join(client, node, None);
                done()
            }
            Event::Left { uuid } => self.leave(uuid, Departure::Remote),
            Event::ServiceCreated { service } => {
                self.service_created(service, None);
                done()
            }
            Event::ServiceDeleted { name, .. } => self.service_deleted_remotely(&name),
            // The services apply their own events (see `inbound`).
            Event::Subscribed { .. } | Event::Unsubscribed { .. } => done(),
            Event::NodeDown { node } if node == self.node => {
                // Another node believed this one dead (its lease lapsed
                // while Redis was unreachable): put this node's clients back.
                tracing::warn!("this node was declared down; re-registering its clients");
                self.reregister_local();
                done()
            }
            Event::NodeDown { node } => self.node_down(node, Departure::Remote),
        }
    }

    /// Removes every client of a departed node.
    pub(super) fn node_down(&mut self, node: NodeId, departure: Departure) -> Step {
        let gone: Vec<Uuid> = self
            .dir
            .clients
            .values()
            .filter(|c| c.node == node)
            .map(|c| c.info.uuid)
            .collect();
        tracing::warn!(%node, clients = gone.len(), "node down: removing its clients");
        self.leave_all(gone, departure)
    }

    /// Writes this node's clients, services and subscriptions back to the
    /// shared namespace and announces them, after an outage (which may
    /// have erased them, or lost what the node wrote meanwhile). Every
    /// write and every announcement is idempotent: what is there already
    /// stays as it is.
    pub(super) fn reregister_local(&self) {
        let mut names = Vec::new();
        for client in self.dir.local.values() {
            self.share(&Event::Joined {
                client: client.info.clone(),
                node: self.node,
            });
            names.push((client.info.name.clone(), client.info.uuid));
        }
        for service in self.dir.services.values() {
            let view = service.view.load();
            if self.dir.local.contains_key(&view.receipt.owner_uuid) {
                self.share(&Event::ServiceCreated {
                    service: view.receipt.clone(),
                });
            }
        }
        for (name, service) in self.dir.services.iter() {
            for (uuid, _) in &service.view.load().local {
                self.share(&Event::Subscribed {
                    service: name.clone(),
                    uuid: *uuid,
                });
            }
        }
        self.cluster.claims().reclaim_names(names);
    }

    /// Brings the copy in line with the shared namespace.
    pub(super) fn reconcile(&mut self, snapshot: Snapshot) -> Step {
        let (local, remote): (Vec<_>, Vec<_>) = snapshot
            .clients
            .into_iter()
            .partition(|(_, node)| *node == self.node);
        let local_known: BTreeSet<Uuid> = local.into_iter().map(|(info, _)| info.uuid).collect();
        // This node's clients that left while their departure could not be
        // written (Redis was unreachable, too briefly for this node to be
        // reaped) are still recorded, their names still claimed: write
        // their departure now and tell the other replicas, which still
        // list them.
        // (Recording a departure releases the services it owned.)
        let departed: Vec<Uuid> = local_known
            .iter()
            .filter(|uuid| !self.dir.local.contains_key(*uuid) && !self.joining.contains(*uuid))
            .copied()
            .collect();
        for uuid in departed {
            self.share(&Event::Left { uuid });
        }
        let remote_now: HashMap<Uuid, (ClientInfo, NodeId)> = remote
            .into_iter()
            .map(|(info, node)| (info.uuid, (info, node)))
            .collect();
        // Remote clients that are gone.
        let stale: Vec<Uuid> = self
            .dir
            .clients
            .values()
            .filter(|c| c.outbox.is_none() && !remote_now.contains_key(&c.info.uuid))
            .map(|c| c.info.uuid)
            .collect();
        let mut step = self.leave_all(stale, Departure::Remote);
        step = Box::pin(step.then(move |(), act: &mut Self, _| {
            // Remote clients this node has not heard of.
            for (info, node) in remote_now.into_values() {
                act.join(info, node, None);
            }
            // Services that vanished (owned elsewhere), then new ones.
            let names: BTreeSet<String> =
                snapshot.services.iter().map(|s| s.name.clone()).collect();
            let vanished: Vec<String> = act
                .dir
                .services
                .iter()
                .filter(|(name, s)| {
                    !names.contains(*name)
                        && !act
                            .dir
                            .local
                            .contains_key(&s.view.load().receipt.owner_uuid)
                })
                .map(|(name, _)| name.clone())
                .collect();
            let mut step = done();
            for name in vanished {
                step = Box::pin(
                    step.then(move |(), act: &mut Self, _| act.service_deleted_remotely(&name)),
                );
            }
            Box::pin(step.map(move |(), act: &mut Self, _| {
                for service in snapshot.services {
                    let remote: BTreeSet<Uuid> = service
                        .subscribers
                        .iter()
                        .filter(|u| act.dir.client(u).is_some_and(|c| c.outbox.is_none()))
                        .copied()
                        .collect();
                    let name = service.name.clone();
                    act.service_created(
                        ServiceInfo {
                            subscribers: Vec::new(),
                            ..service
                        },
                        None,
                    );
                    if let Some(handle) = act.dir.service(&name) {
                        handle.addr.do_send(service::Reconcile { remote });
                    }
                }
                // What this node did while the link was down (a client,
                // a subscription) may be missing from the shared namespace
                // and unknown to the other nodes: write its whole state
                // back, which is idempotent. That checks its names too: one
                // may have been taken over meanwhile by a connection that
                // proved it owns it, and the word to close the old one
                // lost with the link.
                act.reregister_local();
            }))
        }));
        step
    }
}

impl Handler<Remote> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Remote, _: &mut Context<Self>) -> Self::Result {
        atomic(self.apply(msg.0))
    }
}

impl Handler<Reconcile> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) -> Self::Result {
        atomic(self.reconcile(msg.0))
    }
}

impl Handler<Reap> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Reap, _: &mut Context<Self>) -> Self::Result {
        let node = msg.0;
        let step = self.node_down(node, Departure::Reaped);
        atomic(Box::pin(step.map(move |(), act: &mut Self, _| {
            let event = Event::NodeDown { node };
            act.cluster.broker().announce(&event);
            act.cluster.claims().record(&event);
        })))
    }
}
