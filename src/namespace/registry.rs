//! The registry: the one actor that owns a node's view of the namespace.
//!
//! It maps names and uuids to clients, keeps every service with its owner
//! and subscribers, answers requests, routes MESSAGEs, and keeps its replica
//! of the cluster's namespace current from the [`Event`]s other nodes
//! announce. Standalone, the replica is simply the whole namespace.
//!
//! Services are records inside the registry rather than actors of their own,
//! for one reason: ordering. A sender's frames to one receiver must arrive in
//! the order they were sent, whether they went by NAME, through a service or
//! to ALL. With a separate actor per service, a service broadcast would take
//! one more mailbox hop than a direct message sent right after it and could be
//! overtaken. One sequencer per node makes the guarantee hold by construction
//! (across nodes, everything one node sends another travels over one ordered
//! Redis connection into the receiver's registry), and costs nothing
//! measurable: routing is a hash lookup, and fan-out is one `try_send` of a
//! shared buffer per local recipient.
//!
//! Every reply to a client, including the ones its session could have
//! written itself (SELF_SET_SEQ's OK, decode errors), passes through here so
//! that replies leave in the order the requests came in.
//!
//! Each change is applied through one function whatever its origin: a request
//! of a local client (`record` = true: the change is written to the shared
//! namespace and announced), or an event from another node (`record` = false).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use indexmap::IndexSet;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::cluster::redis::{Claims, Snapshot};
use crate::cluster::{Broker, Event, Hub, NodeId, Remote, Topic, Watching};
use crate::config::Settings;
use crate::files;
use crate::metrics;
use crate::protocol::{
    ClientInfo, Close, CloseCode, MessageOut, OriginRef, PayloadOut, Sequenced, ServiceInfo,
    Target, PROTOCOL_VERSION,
};
use crate::transport::outbox::{Frame, Outbox, Overflowed};

/// A client whose IDENTIFY was validated by its transport (and whose name
/// was claimed in the shared namespace, in a cluster).
#[derive(Message)]
#[rtype(result = "Result<(), Close>")]
pub struct Register {
    pub info: ClientInfo,
    pub outbox: Outbox,
}

/// The client's connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub uuid: Uuid,
}

/// A decoded payload from an identified client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Request {
    pub uuid: Uuid,
    /// The payload's sequence number; `None` for frames that are not counted
    /// (binary frames).
    pub seq: Option<u64>,
    pub op: Op,
}

/// What an identified client asked for.
#[derive(Debug)]
pub enum Op {
    Message {
        target: Target,
        data: Box<RawValue>,
    },
    SelfSubscribe(String),
    SelfUnsubscribe(String),
    SelfFetch,
    ServiceCreate {
        service: String,
        nickname: Option<String>,
    },
    ServiceDelete(String),
    ServiceFetch(String),
    ServiceFetchAll,
    ClientFetch(String),
    ClientFetchAll,
    /// A reply the transport decided on by itself, queued behind the
    /// replies to earlier requests.
    Reply(PayloadOut),
}

/// Who holds this uuid, for the file server.
#[derive(Message)]
#[rtype(result = "Option<ClientInfo>")]
pub struct Lookup {
    pub uuid: Uuid,
}

/// Whether this node can serve: its link to the cluster is up.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Ready;

/// Closes every local session with this code (graceful shutdown) and answers
/// with how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub close: Close,
}

/// Something another node sent this one.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Inbound {
    Event(Event),
    /// A MESSAGE to ALL.
    All {
        except: Option<Uuid>,
        frame: Frame,
    },
    Remote(Remote),
}

/// The shared namespace as read from Redis, to reconcile with the replica
/// (at start-up and after the link to Redis comes back).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile(pub Snapshot);

/// Remove a local client and close its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    pub uuid: Uuid,
    pub close: Close,
}

/// A node stopped renewing its lease and this node won the right to clean
/// up after it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reap {
    pub node: NodeId,
}

struct Client {
    info: ClientInfo,
    node: NodeId,
    /// `None` for clients of other nodes.
    outbox: Option<Outbox>,
    /// Names of services this client is subscribed to.
    subscriptions: BTreeSet<String>,
    /// Names of services this client owns.
    owned: BTreeSet<String>,
    /// While the registry looks up in Redis a target this node has not
    /// heard of, the client's later requests wait here, in order.
    held: Option<VecDeque<(Option<u64>, Op)>>,
}

struct Service {
    /// The service as it appears in MESSAGE receipts: no subscribers.
    receipt: ServiceInfo,
    /// Subscriber uuids in subscription order.
    subscribers: IndexSet<Uuid>,
}

impl Service {
    fn info(&self) -> ServiceInfo {
        ServiceInfo {
            subscribers: self.subscribers.iter().copied().collect(),
            ..self.receipt.clone()
        }
    }
}

/// Who caused a change, to answer it with the request's `seq`.
type Cause = Option<(Uuid, Option<u64>)>;

/// The namespace of one node.
pub struct Registry {
    settings: Arc<Settings>,
    files_dir: PathBuf,
    node: NodeId,
    hub: Hub,
    broker: Box<dyn Broker>,
    /// Claims in the shared namespace; `None` when standalone.
    claims: Option<Claims>,
    clients: HashMap<Uuid, Client>,
    names: HashMap<String, Uuid>,
    services: BTreeMap<String, Service>,
    /// Services owned on other nodes whose broadcasts this node receives
    /// (it has local subscribers of them): see [`Registry::sync_watch`].
    watched: BTreeSet<String>,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Registry {
    pub fn new(settings: Arc<Settings>, broker: Box<dyn Broker>, claims: Option<Claims>) -> Self {
        Registry {
            files_dir: settings.files_dir(),
            settings,
            node: broker.node(),
            hub: Hub::default(),
            broker,
            claims,
            clients: HashMap::new(),
            names: HashMap::new(),
            services: BTreeMap::new(),
            watched: BTreeSet::new(),
        }
    }

    /// Makes this node receive the broadcasts of the service `name` exactly
    /// when it needs them: the service is owned on another node and has
    /// subscribers here. Returns the watch to wait for when one started.
    fn sync_watch(&mut self, name: &str) -> Option<Watching> {
        let needed = self.services.get(name).is_some_and(|s| {
            !self.is_local(&s.receipt.owner_uuid)
                && self.hub.has_subscribers(&Topic::Service(name.to_owned()))
        });
        if needed && !self.watched.contains(name) {
            self.watched.insert(name.to_owned());
            return Some(self.broker.watch(name));
        }
        if !needed && self.watched.remove(name) {
            self.broker.unwatch(name);
        }
        None
    }

    /// Whether `uuid` is a client of this node.
    fn is_local(&self, uuid: &Uuid) -> bool {
        self.clients.get(uuid).is_some_and(|c| c.outbox.is_some())
    }

    fn reply(&self, uuid: Uuid, seq: Option<u64>, payload: PayloadOut) {
        if let Some(outbox) = self.clients.get(&uuid).and_then(|c| c.outbox.as_ref()) {
            outbox.send(Frame::json(&Sequenced { seq, payload }));
        }
    }

    /// Sends `payload` to this node's subscribers of `topic`: with `seq` to
    /// the client that caused it (when it is subscribed), without to the
    /// others.
    fn broadcast(&self, topic: &Topic, payload: PayloadOut, cause: Cause) {
        let cause_uuid = cause.map(|(uuid, _)| uuid);
        if let Some((uuid, seq)) = cause {
            let subscribed = match topic {
                Topic::Everyone => true,
                Topic::Service(name) => self
                    .services
                    .get(name)
                    .is_some_and(|s| s.subscribers.contains(&uuid)),
            };
            if subscribed {
                self.reply(uuid, seq, payload.clone());
            }
        }
        let frame = Frame::json(&Sequenced { seq: None, payload });
        self.publish(topic, &frame, cause_uuid);
    }

    /// Hands a frame to the hub, timing it.
    fn publish(&self, topic: &Topic, frame: &Frame, except: Option<Uuid>) {
        let started = Instant::now();
        self.hub.publish(topic, frame, except);
        metrics::get().published(started.elapsed());
    }

    /// Records a change in the shared namespace and announces it.
    fn share(&self, event: Event) {
        self.broker.record(&event);
        self.broker.announce(&event);
    }

    fn subscriptions_of(&self, client: &Client) -> Vec<ServiceInfo> {
        client
            .subscriptions
            .iter()
            .filter_map(|name| self.services.get(name).map(Service::info))
            .collect()
    }

    /// Adds a client, local (with an outbox) or remote, and tells the local
    /// clients.
    fn join(&mut self, info: ClientInfo, node: NodeId, outbox: Option<Outbox>) {
        let uuid = info.uuid;
        if self.clients.contains_key(&uuid) {
            return;
        }
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ClientJoined {
                client: info.clone(),
            },
            None,
        );
        if let Some(outbox) = &outbox {
            self.hub.subscribe(Topic::Everyone, outbox.clone());
            metrics::get().clients_identified.inc();
        }
        // A claim that succeeded in Redis wins over a stale replica entry
        // whose departure has not reached this node yet.
        self.names.insert(info.name.clone(), uuid);
        self.clients.insert(
            uuid,
            Client {
                info,
                node,
                outbox,
                subscriptions: BTreeSet::new(),
                owned: BTreeSet::new(),
                held: None,
            },
        );
    }

    /// Removes a client and everything it leaves behind: its subscriptions
    /// (announced to each service), its services (deleted for everyone), its
    /// files (when `record`: only the node that records a departure cleans
    /// up after it), and finally CLIENT_LEFT for everyone else.
    fn leave(&mut self, uuid: Uuid, record: bool) -> Option<Client> {
        let client = self.clients.remove(&uuid)?;
        if self.names.get(&client.info.name) == Some(&uuid) {
            self.names.remove(&client.info.name);
        }
        if client.outbox.is_some() {
            self.hub.unsubscribe(&Topic::Everyone, uuid);
            metrics::get().clients_identified.dec();
        }
        for name in &client.subscriptions {
            self.unsubscribed(name, &client.info, client.outbox.is_some(), record);
        }
        for name in &client.owned {
            self.service_deleted(name, None, record);
        }
        if record {
            files::discard_client_dir(&self.files_dir, &client.info.name, uuid);
            self.broker.record(&Event::Left { uuid });
        }
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ClientLeft {
                client: client.info.clone(),
            },
            None,
        );
        tracing::info!(%uuid, name = %client.info.name, node = %client.node, "client left");
        Some(client)
    }

    /// Removes a subscriber from a service and tells the remaining local
    /// subscribers. Returns the service as it is after the change.
    fn unsubscribed(
        &mut self,
        name: &str,
        info: &ClientInfo,
        local: bool,
        record: bool,
    ) -> Option<ServiceInfo> {
        let service = self.services.get_mut(name)?;
        if !service.subscribers.shift_remove(&info.uuid) {
            return None;
        }
        metrics::get().subscriptions.dec();
        let topic = Topic::Service(name.to_owned());
        if local {
            self.hub.unsubscribe(&topic, info.uuid);
        }
        let after = service.info();
        if local {
            // Stop receiving the service's broadcasts if that was the last
            // local subscriber of a service owned elsewhere.
            self.sync_watch(name);
        }
        if record {
            self.broker.record(&Event::Unsubscribed {
                service: name.to_owned(),
                uuid: info.uuid,
            });
        }
        self.broadcast(
            &topic,
            PayloadOut::ServiceClientUnsubscribed {
                client: info.clone(),
                service: after.clone(),
            },
            None,
        );
        Some(after)
    }

    /// Deletes a service and announces it to everyone; `cause` is the owner
    /// when it asked for the deletion.
    fn service_deleted(&mut self, name: &str, cause: Cause, record: bool) {
        let Some(service) = self.services.remove(name) else {
            return;
        };
        let info = service.info();
        let m = metrics::get();
        m.services.dec();
        m.subscriptions.dec_by(service.subscribers.len() as i64);
        for subscriber in &service.subscribers {
            if let Some(client) = self.clients.get_mut(subscriber) {
                client.subscriptions.remove(name);
            }
        }
        if let Some(owner) = self.clients.get_mut(&info.owner_uuid) {
            owner.owned.remove(name);
        }
        self.hub.drop_topic(&Topic::Service(name.to_owned()));
        self.sync_watch(name);
        if record {
            self.broker.record(&Event::ServiceDeleted {
                name: name.to_owned(),
            });
        }
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ServiceDeleteResult { service: info },
            cause,
        );
    }

    /// Adds a service and announces it to everyone.
    fn service_created(&mut self, receipt: ServiceInfo, cause: Cause) {
        if self.services.contains_key(&receipt.name) {
            return;
        }
        if let Some(owner) = self.clients.get_mut(&receipt.owner_uuid) {
            owner.owned.insert(receipt.name.clone());
        }
        metrics::get().services.inc();
        self.services.insert(
            receipt.name.clone(),
            Service {
                receipt: receipt.clone(),
                subscribers: IndexSet::new(),
            },
        );
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ServiceCreateResult {
                successful: true,
                service: receipt,
            },
            cause,
        );
    }

    /// Adds a subscriber to a service and tells the local subscribers that
    /// were there before. Returns the service after the change.
    fn subscribed(&mut self, name: &str, uuid: Uuid) -> Option<ServiceInfo> {
        let service = self.services.get_mut(name)?;
        let client = self.clients.get_mut(&uuid)?;
        if !service.subscribers.insert(uuid) {
            return None;
        }
        client.subscriptions.insert(name.to_owned());
        metrics::get().subscriptions.inc();
        let after = service.info();
        let info = client.info.clone();
        let outbox = client.outbox.clone();
        let topic = Topic::Service(name.to_owned());
        // Announce to the local subscribers already there, then join.
        self.broadcast(
            &topic,
            PayloadOut::ServiceClientSubscribed {
                client: info,
                service: after.clone(),
            },
            None,
        );
        if let Some(outbox) = outbox {
            self.hub.subscribe(topic, outbox);
        }
        Some(after)
    }

    /// Applies an event announced by another node.
    fn apply(&mut self, event: Event) {
        match event {
            Event::Joined { client, node } => self.join(client, node, None),
            Event::Left { uuid } => {
                self.leave(uuid, false);
            }
            Event::ServiceCreated { service } => self.service_created(service, None),
            Event::ServiceDeleted { name } => self.service_deleted(&name, None, false),
            Event::Subscribed { service, uuid } => {
                self.subscribed(&service, uuid);
            }
            Event::Unsubscribed { service, uuid } => {
                if let Some(client) = self.clients.get_mut(&uuid) {
                    client.subscriptions.remove(&service);
                    let info = client.info.clone();
                    self.unsubscribed(&service, &info, false, false);
                }
            }
            Event::NodeDown { node } if node == self.node => {
                // Another node believed this one dead (its lease lapsed
                // while Redis was unreachable): put this node's clients back.
                tracing::warn!("this node was declared down; re-registering its clients");
                self.reregister_local();
            }
            Event::NodeDown { node } => self.node_down(node, false),
        }
    }

    /// Removes every client of a departed node.
    fn node_down(&mut self, node: NodeId, record: bool) {
        let gone: Vec<Uuid> = self
            .clients
            .values()
            .filter(|c| c.node == node)
            .map(|c| c.info.uuid)
            .collect();
        tracing::warn!(%node, clients = gone.len(), "node down: removing its clients");
        for uuid in gone {
            self.leave(uuid, record);
        }
    }

    /// Writes this node's clients, services and subscriptions back to the
    /// shared namespace and announces them, after an outage erased them.
    fn reregister_local(&mut self) {
        let mut events = Vec::new();
        for client in self.clients.values().filter(|c| c.outbox.is_some()) {
            events.push(Event::Joined {
                client: client.info.clone(),
                node: self.node,
            });
        }
        for service in self.services.values() {
            if self.is_local(&service.receipt.owner_uuid) {
                events.push(Event::ServiceCreated {
                    service: service.receipt.clone(),
                });
            }
        }
        for (name, service) in &self.services {
            for uuid in &service.subscribers {
                if self.is_local(uuid) {
                    events.push(Event::Subscribed {
                        service: name.clone(),
                        uuid: *uuid,
                    });
                }
            }
        }
        for event in events {
            self.share(event);
        }
        if let Some(claims) = &self.claims {
            let local: Vec<(String, Uuid)> = self
                .clients
                .values()
                .filter(|c| c.outbox.is_some())
                .map(|c| (c.info.name.clone(), c.info.uuid))
                .collect();
            claims.reclaim_names(local);
        }
    }

    /// Removes a local client at once and closes its connection.
    fn evict(&mut self, uuid: Uuid, close: Close) {
        if let Some(client) = self.leave(uuid, true) {
            self.broker.announce(&Event::Left { uuid });
            if let Some(outbox) = client.outbox {
                outbox.close(close);
            }
        }
    }

    /// Brings the replica in line with the shared namespace.
    fn reconcile(&mut self, snapshot: Snapshot) {
        let (local, remote): (Vec<_>, Vec<_>) = snapshot
            .clients
            .into_iter()
            .partition(|(_, node)| *node == self.node);
        let local_known: BTreeSet<Uuid> = local.into_iter().map(|(info, _)| info.uuid).collect();
        let remote_now: HashMap<Uuid, (ClientInfo, NodeId)> = remote
            .into_iter()
            .map(|(info, node)| (info.uuid, (info, node)))
            .collect();
        // Remote clients that are gone.
        let stale: Vec<Uuid> = self
            .clients
            .values()
            .filter(|c| c.outbox.is_none() && !remote_now.contains_key(&c.info.uuid))
            .map(|c| c.info.uuid)
            .collect();
        for uuid in stale {
            self.leave(uuid, false);
        }
        // Remote clients this node has not heard of.
        for (info, node) in remote_now.into_values() {
            self.join(info, node, None);
        }
        // Services.
        let names: BTreeSet<String> = snapshot.services.iter().map(|s| s.name.clone()).collect();
        let vanished: Vec<String> = self
            .services
            .iter()
            .filter(|(name, s)| !names.contains(*name) && !self.is_local(&s.receipt.owner_uuid))
            .map(|(name, _)| name.clone())
            .collect();
        for name in vanished {
            self.service_deleted(&name, None, false);
        }
        for service in snapshot.services {
            let name = service.name.clone();
            let subscribers = service.subscribers.clone();
            self.service_created(
                ServiceInfo {
                    subscribers: Vec::new(),
                    ..service
                },
                None,
            );
            let remote: BTreeSet<Uuid> = subscribers
                .into_iter()
                .filter(|u| self.clients.contains_key(u) && !self.is_local(u))
                .collect();
            // Remote subscribers that left, then the ones this node missed.
            let gone: Vec<ClientInfo> = self
                .services
                .get(&name)
                .map(|s| {
                    s.subscribers
                        .iter()
                        .filter_map(|u| self.clients.get(u))
                        .filter(|c| c.outbox.is_none() && !remote.contains(&c.info.uuid))
                        .map(|c| c.info.clone())
                        .collect()
                })
                .unwrap_or_default();
            for info in gone {
                if let Some(client) = self.clients.get_mut(&info.uuid) {
                    client.subscriptions.remove(&name);
                }
                self.unsubscribed(&name, &info, false, false);
            }
            for uuid in remote {
                self.subscribed(&name, uuid);
            }
        }
        // This node's own clients missing from the shared namespace.
        let missing = self
            .clients
            .values()
            .any(|c| c.outbox.is_some() && !local_known.contains(&c.info.uuid));
        if missing {
            self.reregister_local();
        }
    }

    fn handle_op(&mut self, uuid: Uuid, seq: Option<u64>, op: Op, ctx: &mut Context<Self>) {
        let max = self.settings.max_outgoing_queue;
        match self.clients.get_mut(&uuid).and_then(|c| c.held.as_mut()) {
            Some(held) if held.len() < max => {
                held.push_back((seq, op));
                return;
            }
            // Their answers could not be queued either: the same bound.
            Some(_) => {
                let reason = format!("too fast: more than {max} requests waiting for a lookup");
                return self.evict(uuid, Close::new(CloseCode::Policy, reason));
            }
            None => {}
        }
        let Some(client) = self.clients.get(&uuid) else {
            // Evicted or gone: its last requests have no one to answer to.
            return;
        };
        match op {
            Op::Reply(payload) => self.reply(uuid, seq, payload),
            Op::Message { target, data } => {
                if let Some(claims) = self.unheard_of(&target) {
                    return self.look_up_and_route(uuid, seq, target, data, claims, ctx);
                }
                let payload = self.route(uuid, &target, &data);
                self.reply(uuid, seq, payload);
            }
            Op::SelfFetch => {
                let payload = PayloadOut::SelfFetchResult {
                    client: client.info.clone(),
                    subscriptions: self.subscriptions_of(client),
                };
                self.reply(uuid, seq, payload);
            }
            Op::ClientFetch(raw) => {
                let found = raw.parse::<Uuid>().ok().and_then(|u| self.clients.get(&u));
                let payload = match found {
                    Some(other) => PayloadOut::ClientFetchResult {
                        client: other.info.clone(),
                        subscriptions: self.subscriptions_of(other),
                    },
                    None => PayloadOut::InvalidUuid { uuid: raw },
                };
                self.reply(uuid, seq, payload);
            }
            Op::ClientFetchAll => {
                let mut clients: Vec<ClientInfo> =
                    self.clients.values().map(|c| c.info.clone()).collect();
                clients.sort_by(|a, b| a.name.cmp(&b.name));
                self.reply(uuid, seq, PayloadOut::ClientFetchAllResult { clients });
            }
            Op::ServiceFetch(name) => {
                let payload = match self.services.get(&name) {
                    Some(service) => PayloadOut::ServiceFetchResult {
                        service: service.info(),
                    },
                    None => PayloadOut::InvalidService { service: name },
                };
                self.reply(uuid, seq, payload);
            }
            Op::ServiceFetchAll => {
                let services = self.services.values().map(Service::info).collect();
                self.reply(uuid, seq, PayloadOut::ServiceFetchAllResult { services });
            }
            Op::ServiceCreate { service, nickname } => {
                self.create_service(uuid, seq, service, nickname, ctx)
            }
            Op::ServiceDelete(name) => match self.services.get(&name) {
                None => self.reply(uuid, seq, PayloadOut::InvalidService { service: name }),
                Some(service) if service.receipt.owner_uuid != uuid => self.reply(
                    uuid,
                    seq,
                    PayloadOut::Bad {
                        desc: Some(format!("only the owner can delete service {name:?}")),
                    },
                ),
                Some(_) => {
                    self.service_deleted(&name, Some((uuid, seq)), true);
                    self.broker.announce(&Event::ServiceDeleted { name });
                }
            },
            Op::SelfSubscribe(name) => self.subscribe(uuid, seq, name, ctx),
            Op::SelfUnsubscribe(name) => {
                let Some(service) = self.services.get(&name) else {
                    self.reply(uuid, seq, PayloadOut::InvalidService { service: name });
                    return;
                };
                let before = service.info();
                let info = client.info.clone();
                let payload = match self.unsubscribed(&name, &info, true, true) {
                    Some(after) => {
                        if let Some(client) = self.clients.get_mut(&uuid) {
                            client.subscriptions.remove(&name);
                        }
                        self.broker.announce(&Event::Unsubscribed {
                            service: name,
                            uuid,
                        });
                        PayloadOut::SelfUnsubscribeResult {
                            successful: true,
                            service: after,
                        }
                    }
                    None => PayloadOut::SelfUnsubscribeResult {
                        successful: false,
                        service: before,
                    },
                };
                self.reply(uuid, seq, payload);
            }
        }
    }

    fn create_service(
        &mut self,
        uuid: Uuid,
        seq: Option<u64>,
        name: String,
        nickname: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(existing) = self.services.get(&name) {
            let service = existing.info();
            let payload = PayloadOut::ServiceCreateResult {
                successful: false,
                service,
            };
            self.reply(uuid, seq, payload);
            return;
        }
        if let Err(desc) = self.check_service_fields(&name, nickname.as_deref()) {
            self.reply(uuid, seq, PayloadOut::Bad { desc: Some(desc) });
            return;
        }
        let Some(owner) = self.clients.get(&uuid) else {
            return;
        };
        let max = self.settings.max_services_per_client;
        if owner.owned.len() >= max {
            let desc = format!("a client may own at most {max} services");
            self.reply(uuid, seq, PayloadOut::Bad { desc: Some(desc) });
            return;
        }
        let receipt = ServiceInfo {
            name,
            nickname,
            owner_uuid: uuid,
            subscribers: Vec::new(),
        };
        let Some(claims) = self.claims.clone() else {
            self.service_created(receipt.clone(), Some((uuid, seq)));
            return;
        };
        // The name must be claimed cluster-wide. Service creation is rare, so
        // the registry waits for the round trip and stays the one sequencer.
        let claim = receipt.clone();
        async move { claims.claim_service(&claim).await }
            .into_actor(self)
            .map(move |result, act, _| match result {
                Ok(None) => {
                    act.service_created(receipt.clone(), Some((uuid, seq)));
                    act.broker
                        .announce(&Event::ServiceCreated { service: receipt });
                }
                Ok(Some(existing)) => act.reply(
                    uuid,
                    seq,
                    PayloadOut::ServiceCreateResult {
                        successful: false,
                        service: existing,
                    },
                ),
                Err(e) => act.reply(
                    uuid,
                    seq,
                    PayloadOut::ErrorInternal {
                        desc: format!("cannot claim the service name: {e}"),
                    },
                ),
            })
            .wait(ctx);
    }

    fn check_service_fields(&self, name: &str, nickname: Option<&str>) -> Result<(), String> {
        let max = self.settings.max_name_len;
        if name.is_empty() || name.len() > max {
            return Err(format!("a service name must be 1 to {max} bytes long"));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("a service name may not contain spaces or control characters".into());
        }
        let max = self.settings.max_nickname_len;
        if nickname.is_some_and(|n| n.len() > max) {
            return Err(format!(
                "a service nickname may be at most {max} bytes long"
            ));
        }
        Ok(())
    }

    fn subscribe(&mut self, uuid: Uuid, seq: Option<u64>, name: String, ctx: &mut Context<Self>) {
        let Some(service) = self.services.get(&name) else {
            self.reply(uuid, seq, PayloadOut::InvalidService { service: name });
            return;
        };
        let Some(client) = self.clients.get(&uuid) else {
            return;
        };
        if service.subscribers.contains(&uuid) {
            let payload = PayloadOut::SelfSubscribeResult {
                successful: false,
                service: service.info(),
            };
            self.reply(uuid, seq, payload);
            return;
        }
        let max = self.settings.max_subscriptions_per_client;
        if client.subscriptions.len() >= max {
            let desc = format!("a client may subscribe to at most {max} services");
            self.reply(uuid, seq, PayloadOut::Bad { desc: Some(desc) });
            return;
        }
        let Some(after) = self.subscribed(&name, uuid) else {
            return;
        };
        self.share(Event::Subscribed {
            service: name.clone(),
            uuid,
        });
        let result = PayloadOut::SelfSubscribeResult {
            successful: true,
            service: after,
        };
        // The first subscriber here of a service owned elsewhere: answer only
        // once this node receives its broadcasts, so a broadcast the owner
        // sends after the client learnt it is subscribed cannot miss it. The
        // registry waits (one Redis round trip, once per service and node),
        // which also keeps every later reply in order.
        match self.sync_watch(&name) {
            Some(watching) => {
                ctx.wait(
                    watching
                        .into_actor(self)
                        .map(move |(), act, _| act.reply(uuid, seq, result)),
                );
            }
            None => self.reply(uuid, seq, result),
        }
    }

    /// In a cluster, the claims to look up a NAME or UUID target this node
    /// has not heard of: it may have joined another replica a moment ago,
    /// and a client must not be able to tell (a peer told of it out of band
    /// would otherwise get INVALID_NAME for a few milliseconds).
    fn unheard_of(&self, target: &Target) -> Option<Claims> {
        let unknown = match target {
            Target::Name { name } => !self.names.contains_key(name),
            Target::Uuid { uuid } => uuid
                .parse::<Uuid>()
                .is_ok_and(|u| !self.clients.contains_key(&u)),
            _ => false,
        };
        // With Redis down the lookup would only fail, slowly.
        if unknown && self.broker.is_up() {
            self.claims.clone()
        } else {
            None
        }
    }

    /// Looks the target up in Redis, holding the sender's later requests
    /// meanwhile (its frames keep their order), then relays or refuses.
    fn look_up_and_route(
        &mut self,
        uuid: Uuid,
        seq: Option<u64>,
        target: Target,
        data: Box<RawValue>,
        claims: Claims,
        ctx: &mut Context<Self>,
    ) {
        if let Some(client) = self.clients.get_mut(&uuid) {
            client.held = Some(VecDeque::new());
        }
        let (name, to) = match &target {
            Target::Name { name } => (Some(name.clone()), None),
            Target::Uuid { uuid } => (None, uuid.parse().ok()),
            _ => (None, None),
        };
        async move { claims.locate(name.as_deref(), to).await }
            .into_actor(self)
            .map(move |found, act, ctx| {
                let payload = match found {
                    // Known by now, or not in the shared namespace either.
                    _ if act.unheard_of(&target).is_none() => act.route(uuid, &target, &data),
                    Ok(Some((peer, node))) if node != act.node => {
                        act.relay_to_unheard_of(uuid, &target, &data, peer.uuid, node)
                    }
                    Ok(_) => act.route(uuid, &target, &data),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look up a message's target in Redis");
                        act.route(uuid, &target, &data)
                    }
                };
                act.reply(uuid, seq, payload);
                act.release(uuid, ctx);
            })
            .spawn(ctx);
    }

    /// Sends a MESSAGE to a client of `node` that this node's replica does
    /// not list yet.
    fn relay_to_unheard_of(
        &self,
        from: Uuid,
        target: &Target,
        data: &RawValue,
        to: Uuid,
        node: NodeId,
    ) -> PayloadOut {
        let Some(sender) = self.clients.get(&from) else {
            return PayloadOut::ErrorInternal {
                desc: "sender is not registered".into(),
            };
        };
        let message = MessageOut {
            target,
            origin: OriginRef {
                client: &sender.info,
                service: None,
            },
            data,
        };
        self.broker.forward(node, to, &Frame::json(&message));
        PayloadOut::Ok
    }

    /// Handles, in order, the requests a client sent while one of its
    /// messages waited for a lookup.
    fn release(&mut self, uuid: Uuid, ctx: &mut Context<Self>) {
        let Some(held) = self.clients.get_mut(&uuid).and_then(|c| c.held.take()) else {
            return;
        };
        // A request below may start another lookup: the rest then waits
        // behind it again (`handle_op` queues them).
        for (seq, op) in held {
            self.handle_op(uuid, seq, op, ctx);
        }
    }

    /// Relays a MESSAGE and returns the sender's answer.
    fn route(&self, from: Uuid, target: &Target, data: &RawValue) -> PayloadOut {
        let Some(sender) = self.clients.get(&from) else {
            return PayloadOut::ErrorInternal {
                desc: "sender is not registered".into(),
            };
        };
        let plain = OriginRef {
            client: &sender.info,
            service: None,
        };
        match target {
            Target::Name { name } => match self.names.get(name) {
                Some(to) => self.deliver(
                    *to,
                    MessageOut {
                        target,
                        origin: plain,
                        data,
                    },
                ),
                None => PayloadOut::InvalidName { name: name.clone() },
            },
            Target::Uuid { uuid } => {
                match uuid.parse().ok().filter(|u| self.clients.contains_key(u)) {
                    Some(to) => self.deliver(
                        to,
                        MessageOut {
                            target,
                            origin: plain,
                            data,
                        },
                    ),
                    None => PayloadOut::InvalidUuid { uuid: uuid.clone() },
                }
            }
            Target::All => {
                let frame = Frame::json(&MessageOut {
                    target,
                    origin: plain,
                    data,
                });
                self.publish(&Topic::Everyone, &frame, None);
                self.broker.broadcast(&frame, None);
                PayloadOut::Ok
            }
            Target::Service { service } => {
                let Some(entry) = self.services.get(service) else {
                    return PayloadOut::InvalidService {
                        service: service.clone(),
                    };
                };
                let origin = OriginRef {
                    client: &sender.info,
                    service: Some(&entry.receipt),
                };
                let owner = entry.receipt.owner_uuid;
                if from == owner {
                    let frame = Frame::json(&MessageOut {
                        target,
                        origin,
                        data,
                    });
                    self.publish(&Topic::Service(service.clone()), &frame, Some(owner));
                    self.broker.publish_service(service, Some(owner), &frame);
                    PayloadOut::Ok
                } else if entry.subscribers.contains(&from) {
                    self.deliver(
                        owner,
                        MessageOut {
                            target,
                            origin,
                            data,
                        },
                    )
                } else {
                    PayloadOut::Bad {
                        desc: Some(format!(
                            "only the owner and subscribers of {service:?} can message it"
                        )),
                    }
                }
            }
            Target::ServiceClientUuid { service, uuid } => {
                let Some(entry) = self.services.get(service) else {
                    return PayloadOut::InvalidService {
                        service: service.clone(),
                    };
                };
                if entry.receipt.owner_uuid != from {
                    return PayloadOut::Bad {
                        desc: Some(format!(
                            "only the owner of {service:?} can use SERVICE_CLIENT_UUID"
                        )),
                    };
                }
                match uuid.parse().ok().filter(|u| entry.subscribers.contains(u)) {
                    Some(to) => {
                        let origin = OriginRef {
                            client: &sender.info,
                            service: Some(&entry.receipt),
                        };
                        self.deliver(
                            to,
                            MessageOut {
                                target,
                                origin,
                                data,
                            },
                        )
                    }
                    None => PayloadOut::InvalidUuid { uuid: uuid.clone() },
                }
            }
        }
    }

    /// Sends a MESSAGE to one client, here or on its node; the sender's answer.
    fn deliver(&self, to: Uuid, message: MessageOut<'_>) -> PayloadOut {
        let Some(client) = self.clients.get(&to) else {
            return PayloadOut::InvalidUuid {
                uuid: to.to_string(),
            };
        };
        let frame = Frame::json(&message);
        match &client.outbox {
            Some(outbox) => outbox.send(frame),
            None => self.broker.forward(client.node, to, &frame),
        }
        PayloadOut::Ok
    }
}

impl Handler<Register> for Registry {
    type Result = Result<(), Close>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let Register { info, outbox } = msg;
        if self.claims.is_none() && self.names.contains_key(&info.name) {
            return Err(Close::new(
                CloseCode::DuplicateAuth,
                format!("the name {:?} is taken", info.name),
            ));
        }
        let uuid = info.uuid;
        outbox.send(Frame::json(&Sequenced {
            seq: None,
            payload: PayloadOut::Hello {
                uuid,
                version: PROTOCOL_VERSION.to_owned(),
            },
        }));
        tracing::info!(%uuid, name = %info.name, "client identified");
        let event = Event::Joined {
            client: info.clone(),
            node: self.node,
        };
        self.join(info, self.node, Some(outbox));
        self.share(event);
        Ok(())
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if self.leave(msg.uuid, true).is_some() {
            self.broker.announce(&Event::Left { uuid: msg.uuid });
        }
    }
}

impl Handler<Request> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Request, ctx: &mut Context<Self>) {
        self.handle_op(msg.uuid, msg.seq, msg.op, ctx);
    }
}

impl Handler<Overflowed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Overflowed, _: &mut Context<Self>) {
        let max = self.settings.max_outgoing_queue;
        tracing::warn!(uuid = %msg.uuid, "evicting a client that does not read its frames");
        self.evict(
            msg.uuid,
            Close::new(
                CloseCode::Policy,
                format!("too slow: more than {max} frames waiting to be sent"),
            ),
        );
    }
}

impl Handler<Evict> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Evict, _: &mut Context<Self>) {
        self.evict(msg.uuid, msg.close);
    }
}

impl Handler<Lookup> for Registry {
    type Result = Option<ClientInfo>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.clients.get(&msg.uuid).map(|c| c.info.clone())
    }
}

impl Handler<Ready> for Registry {
    type Result = bool;

    fn handle(&mut self, _: Ready, _: &mut Context<Self>) -> bool {
        self.broker.is_up()
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let mut closed = 0;
        for outbox in self.clients.values().filter_map(|c| c.outbox.as_ref()) {
            outbox.close(msg.close.clone());
            closed += 1;
        }
        closed
    }
}

impl Handler<Inbound> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Inbound, _: &mut Context<Self>) {
        match msg {
            Inbound::Event(event) => self.apply(event),
            Inbound::All { except, frame } => self.publish(&Topic::Everyone, &frame, except),
            Inbound::Remote(Remote::Client { to, frame }) => {
                if let Some(outbox) = self.clients.get(&to).and_then(|c| c.outbox.as_ref()) {
                    outbox.send(frame);
                }
            }
            Inbound::Remote(Remote::Service {
                name,
                except,
                frame,
            }) => self.publish(&Topic::Service(name), &frame, except),
        }
    }
}

impl Handler<Reconcile> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) {
        self.reconcile(msg.0);
        // Watches whose need changed while this node was not listening. (A
        // reconnected link renews the watches it had by itself.)
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            // Nobody is waiting on these: they start now, unconfirmed.
            drop(self.sync_watch(&name));
        }
    }
}

impl Handler<Reap> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Reap, _: &mut Context<Self>) {
        self.node_down(msg.node, true);
        self.broker.announce(&Event::NodeDown { node: msg.node });
        self.broker.record(&Event::NodeDown { node: msg.node });
    }
}
