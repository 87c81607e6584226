//! The registry: the one actor that owns the namespace of a gateway node.
//!
//! It maps names and uuids to clients, keeps every service with its owner
//! and subscribers, answers requests, routes MESSAGEs and publishes
//! broadcasts through the [`Broker`].
//!
//! Services are records inside the registry rather than actors of their own,
//! for one reason: ordering. A sender's frames to one receiver must arrive in
//! the order they were sent, whether they went by NAME, through a service or
//! to ALL. With a separate actor per service, a service broadcast would take
//! one more mailbox hop than a direct message sent right after it and could be
//! overtaken. One sequencer per node makes the guarantee hold by construction,
//! and costs nothing measurable: routing is a hash lookup, and fan-out is one
//! `try_send` of a shared buffer per recipient.
//!
//! Every reply to a client, including the ones its session could have
//! written itself (SELF_SET_SEQ's OK, decode errors), passes through here so
//! that replies leave in the order the requests came in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use indexmap::IndexSet;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::broker::{Broker, Publication, Topic};
use crate::config::Settings;
use crate::files;
use crate::metrics;
use crate::outbox::{Frame, Outbox, Overflowed};
use crate::protocol::{
    ClientInfo, Close, CloseCode, MessageOut, OriginRef, PayloadOut, ServiceInfo, Target,
    PROTOCOL_VERSION,
};

/// A client whose IDENTIFY was validated by its transport.
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

/// Closes every session with this code (graceful shutdown) and answers with
/// how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub close: Close,
}

struct Client {
    info: ClientInfo,
    outbox: Outbox,
    /// Names of services this client is subscribed to.
    subscriptions: BTreeSet<String>,
    /// Names of services this client owns.
    owned: BTreeSet<String>,
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

/// The namespace of one node.
pub struct Registry {
    settings: Arc<Settings>,
    files_dir: PathBuf,
    broker: Box<dyn Broker>,
    clients: HashMap<Uuid, Client>,
    names: HashMap<String, Uuid>,
    services: BTreeMap<String, Service>,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Registry {
    pub fn new(settings: Arc<Settings>, broker: Box<dyn Broker>) -> Self {
        Registry {
            files_dir: settings.files_dir(),
            settings,
            broker,
            clients: HashMap::new(),
            names: HashMap::new(),
            services: BTreeMap::new(),
        }
    }

    fn reply(&self, uuid: Uuid, seq: Option<u64>, payload: PayloadOut) {
        if let Some(client) = self.clients.get(&uuid) {
            client.outbox.send(Frame::from(payload.encode(seq)));
        }
    }

    /// Sends `payload` to everyone subscribed to `topic`: with `seq` to the
    /// client that caused it (when it is subscribed), without to the others.
    fn broadcast(
        &mut self,
        topic: &Topic,
        payload: PayloadOut,
        cause: Option<(Uuid, Option<u64>)>,
    ) {
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
        publish(
            &mut *self.broker,
            topic,
            Frame::from(payload.encode(None)),
            cause_uuid,
        );
    }

    fn client_info(&self, uuid: &Uuid) -> Option<&ClientInfo> {
        self.clients.get(uuid).map(|c| &c.info)
    }

    fn subscriptions_of(&self, client: &Client) -> Vec<ServiceInfo> {
        client
            .subscriptions
            .iter()
            .filter_map(|name| self.services.get(name).map(Service::info))
            .collect()
    }

    /// Removes a client and everything it leaves behind: its subscriptions
    /// (announced to each service), its services (deleted for everyone), its
    /// files, and finally CLIENT_LEFT for everyone else.
    fn remove_client(&mut self, uuid: Uuid) -> Option<Client> {
        let client = self.clients.remove(&uuid)?;
        metrics::get().clients_identified.dec();
        self.names.remove(&client.info.name);
        self.broker.unsubscribe(&Topic::Everyone, uuid);
        for name in &client.subscriptions {
            self.unsubscribe(uuid, &client.info, name);
        }
        for name in &client.owned {
            self.delete_service(name, None);
        }
        files::discard_client_dir(&self.files_dir, &client.info.name, uuid);
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ClientLeft {
                client: client.info.clone(),
            },
            None,
        );
        tracing::info!(%uuid, name = %client.info.name, "client left");
        Some(client)
    }

    /// Removes `uuid` from a service's subscribers and tells the remaining
    /// ones. Returns the service as it is after the change.
    fn unsubscribe(&mut self, uuid: Uuid, info: &ClientInfo, name: &str) -> Option<ServiceInfo> {
        let service = self.services.get_mut(name)?;
        if !service.subscribers.shift_remove(&uuid) {
            return None;
        }
        metrics::get().subscriptions.dec();
        let topic = Topic::Service(name.to_owned());
        self.broker.unsubscribe(&topic, uuid);
        let after = service.info();
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
    fn delete_service(&mut self, name: &str, cause: Option<(Uuid, Option<u64>)>) {
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
        self.broker.drop_topic(&Topic::Service(name.to_owned()));
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ServiceDeleteResult { service: info },
            cause,
        );
    }

    fn handle_op(&mut self, uuid: Uuid, seq: Option<u64>, op: Op) {
        let Some(client) = self.clients.get(&uuid) else {
            // Evicted or gone: its last requests have no one to answer to.
            return;
        };
        match op {
            Op::Reply(payload) => self.reply(uuid, seq, payload),
            Op::Message { target, data } => {
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
                self.create_service(uuid, seq, service, nickname)
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
                Some(_) => self.delete_service(&name, Some((uuid, seq))),
            },
            Op::SelfSubscribe(name) => self.subscribe(uuid, seq, name),
            Op::SelfUnsubscribe(name) => {
                let Some(service) = self.services.get(&name) else {
                    self.reply(uuid, seq, PayloadOut::InvalidService { service: name });
                    return;
                };
                let before = service.info();
                let info = client.info.clone();
                let payload = match self.unsubscribe(uuid, &info, &name) {
                    Some(after) => {
                        if let Some(client) = self.clients.get_mut(&uuid) {
                            client.subscriptions.remove(&name);
                        }
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
    ) {
        if let Some(existing) = self.services.get(&name) {
            let service = existing.info();
            self.reply(
                uuid,
                seq,
                PayloadOut::ServiceCreateResult {
                    successful: false,
                    service,
                },
            );
            return;
        }
        if let Err(desc) = self.check_service_fields(&name, nickname.as_deref()) {
            self.reply(uuid, seq, PayloadOut::Bad { desc: Some(desc) });
            return;
        }
        let Some(owner) = self.clients.get_mut(&uuid) else {
            return;
        };
        let max = self.settings.max_services_per_client;
        if owner.owned.len() >= max {
            let desc = format!("a client may own at most {max} services");
            self.reply(uuid, seq, PayloadOut::Bad { desc: Some(desc) });
            return;
        }
        owner.owned.insert(name.clone());
        metrics::get().services.inc();
        let receipt = ServiceInfo {
            name: name.clone(),
            nickname,
            owner_uuid: uuid,
            subscribers: Vec::new(),
        };
        self.services.insert(
            name,
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
            Some((uuid, seq)),
        );
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

    fn subscribe(&mut self, uuid: Uuid, seq: Option<u64>, name: String) {
        let Some(service) = self.services.get_mut(&name) else {
            self.reply(uuid, seq, PayloadOut::InvalidService { service: name });
            return;
        };
        let Some(client) = self.clients.get_mut(&uuid) else {
            return;
        };
        if service.subscribers.contains(&uuid) {
            let service = service.info();
            let payload = PayloadOut::SelfSubscribeResult {
                successful: false,
                service,
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
        client.subscriptions.insert(name.clone());
        service.subscribers.insert(uuid);
        metrics::get().subscriptions.inc();
        let after = service.info();
        let info = client.info.clone();
        let outbox = client.outbox.clone();
        let topic = Topic::Service(name);
        self.reply(
            uuid,
            seq,
            PayloadOut::SelfSubscribeResult {
                successful: true,
                service: after.clone(),
            },
        );
        // Announce to the subscribers already there, then join the topic.
        self.broadcast(
            &topic,
            PayloadOut::ServiceClientSubscribed {
                client: info,
                service: after,
            },
            None,
        );
        self.broker.subscribe(topic, outbox);
    }

    /// Relays a MESSAGE and returns the sender's answer.
    fn route(&mut self, from: Uuid, target: &Target, data: &RawValue) -> PayloadOut {
        let Some(sender) = self.clients.get(&from) else {
            return PayloadOut::ErrorInternal {
                desc: "sender is not registered".into(),
            };
        };
        let origin = OriginRef {
            client: &sender.info,
            service: None,
        };
        match target {
            Target::Name { name } => match self.names.get(name) {
                Some(to) => {
                    self.deliver(
                        *to,
                        MessageOut {
                            target,
                            origin,
                            data,
                        },
                    );
                    PayloadOut::Ok
                }
                None => PayloadOut::InvalidName { name: name.clone() },
            },
            Target::Uuid { uuid } => {
                match uuid.parse().ok().filter(|u| self.clients.contains_key(u)) {
                    Some(to) => {
                        self.deliver(
                            to,
                            MessageOut {
                                target,
                                origin,
                                data,
                            },
                        );
                        PayloadOut::Ok
                    }
                    None => PayloadOut::InvalidUuid { uuid: uuid.clone() },
                }
            }
            Target::All => {
                let frame = Frame::from(
                    MessageOut {
                        target,
                        origin,
                        data,
                    }
                    .encode(),
                );
                publish(&mut *self.broker, &Topic::Everyone, frame, None);
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
                    let frame = Frame::from(
                        MessageOut {
                            target,
                            origin,
                            data,
                        }
                        .encode(),
                    );
                    let topic = Topic::Service(service.clone());
                    publish(&mut *self.broker, &topic, frame, Some(owner));
                    PayloadOut::Ok
                } else if entry.subscribers.contains(&from) {
                    self.deliver(
                        owner,
                        MessageOut {
                            target,
                            origin,
                            data,
                        },
                    );
                    PayloadOut::Ok
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
                        );
                        PayloadOut::Ok
                    }
                    None => PayloadOut::InvalidUuid { uuid: uuid.clone() },
                }
            }
        }
    }

    fn deliver(&self, to: Uuid, message: MessageOut<'_>) {
        if let Some(client) = self.clients.get(&to) {
            client.outbox.send(Frame::from(message.encode()));
        }
    }
}

/// Hands a publication to the broker, timing it. (A function rather than a
/// method so that callers can keep borrowing other fields of the registry.)
fn publish(broker: &mut dyn Broker, topic: &Topic, frame: Frame, except: Option<Uuid>) {
    let started = Instant::now();
    broker.publish(topic, Publication { frame, except });
    metrics::get().published(started.elapsed());
}

impl Handler<Register> for Registry {
    type Result = Result<(), Close>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let Register { info, outbox } = msg;
        if self.names.contains_key(&info.name) {
            return Err(Close::new(
                CloseCode::DuplicateAuth,
                format!("the name {:?} is taken", info.name),
            ));
        }
        let uuid = info.uuid;
        outbox.send(Frame::from(
            PayloadOut::Hello {
                uuid,
                version: PROTOCOL_VERSION.to_owned(),
            }
            .encode(None),
        ));
        self.broadcast(
            &Topic::Everyone,
            PayloadOut::ClientJoined {
                client: info.clone(),
            },
            None,
        );
        self.broker.subscribe(Topic::Everyone, outbox.clone());
        self.names.insert(info.name.clone(), uuid);
        metrics::get().clients_identified.inc();
        tracing::info!(%uuid, name = %info.name, "client identified");
        self.clients.insert(
            uuid,
            Client {
                info,
                outbox,
                subscriptions: BTreeSet::new(),
                owned: BTreeSet::new(),
            },
        );
        Ok(())
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.remove_client(msg.uuid);
    }
}

impl Handler<Request> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Request, _: &mut Context<Self>) {
        self.handle_op(msg.uuid, msg.seq, msg.op);
    }
}

impl Handler<Overflowed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Overflowed, _: &mut Context<Self>) {
        let max = self.settings.max_outgoing_queue;
        if let Some(client) = self.remove_client(msg.uuid) {
            tracing::warn!(uuid = %msg.uuid, "evicting a client that does not read its frames");
            client.outbox.close(Close::new(
                CloseCode::Policy,
                format!("too slow: more than {max} frames waiting to be sent"),
            ));
        }
    }
}

impl Handler<Lookup> for Registry {
    type Result = Option<ClientInfo>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.client_info(&msg.uuid).cloned()
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        for client in self.clients.values() {
            client.outbox.close(msg.close.clone());
        }
        self.clients.len()
    }
}
