//! The registry: the one actor that decides who is in the namespace.
//!
//! It owns the [`Directory`]: every client (local or on another node) by
//! uuid and by name, and the list of services with their actors. It claims
//! names in the cluster, registers and removes clients (with everything a
//! departure takes along: subscriptions, services, files), creates and
//! deletes services, announces these changes to every client
//! (CLIENT_JOINED/LEFT, SERVICE_CREATE_RESULT, SERVICE_DELETE_RESULT), and
//! keeps its copy of a cluster's namespace current from the other nodes'
//! events. It publishes the directory after each change; it routes nothing.
//!
//! A handler that needs the service actors (a departure, a deletion) runs
//! to completion before the next message is handled (`AtomicResponse`), so
//! the registry's changes happen one at a time, in the order they were
//! asked for, and a departure's announcements reach every client in the
//! order the protocol gives (unsubscriptions, deleted services, then
//! CLIENT_LEFT).
//!
//! Joining (the name claim and a takeover) is in [`join`]; keeping the copy
//! in line with the other nodes' (their events, the snapshot after an
//! outage, a dead node's clean-up) in [`sync`].

mod join;
mod sync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use indexmap::IndexMap;

use actix::prelude::*;
use arc_swap::ArcSwap;
use uuid::Uuid;

pub(super) use self::join::taken_over;
pub use self::join::{Join, Local, Resume};
use super::gate::HistoryGate;
use super::member::ReplyTo;
use super::observe::{Change, Observers};
use super::service::{self, Service, Setup, Share};
use super::view::{ClientRecord, Directory, ServiceHandle, ServiceView};
use crate::cluster::history::Limits;
use crate::cluster::{Cluster, Event, NodeId, Snapshot};
use crate::config::Settings;
use crate::protocol::{
    ClientInfo, Close, History, PayloadOut, Sequenced, ServiceInfo, PROTOCOL_VERSION,
};
use crate::transport::outbox::{Frame, Outbox, Overflowed};

/// A client's connection is gone (also sent for one still joining).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub uuid: Uuid,
}

/// SERVICE_CREATE from a client of this node, fields already checked;
/// answered into `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CreateService {
    pub owner: Uuid,
    pub name: String,
    pub nickname: Option<String>,
    /// The history it keeps, already checked.
    pub history: Option<History>,
    pub reply: ReplyTo,
}

/// SERVICE_DELETE from a client of this node; answered into `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteService {
    pub by: Uuid,
    pub name: String,
    pub reply: ReplyTo,
}

/// Whether this node can serve: its actors answer and its link to the
/// cluster is up.
#[derive(Message)]
#[rtype(result = "Result<(), &'static str>")]
pub struct Ready;

/// Closes every local session with this code (graceful stop) and answers
/// with how many were closed.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub close: Close,
}

/// Remove a local client and close its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict {
    pub uuid: Uuid,
    pub close: Close,
}

/// A change another node made.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote(pub Event);

/// The shared namespace after (re)connecting: bring the copy in line.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile(pub Snapshot);

/// A node died and this one cleans up after it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reap(pub NodeId);

/// How a client leaves, which decides who else hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    /// A client of this node: recorded and announced.
    Local,
    /// A client of a dead node this one reaped: recorded, and announced to
    /// the others as one `NodeDown`.
    Reaped,
    /// Another node recorded and announced it.
    Remote,
}

impl Departure {
    fn records(self) -> bool {
        self != Departure::Remote
    }

    fn share(self) -> Share {
        if self.records() {
            Share::Record
        } else {
            Share::Nobody
        }
    }
}

/// Work the registry does after awaiting service actors.
type Step = Pin<Box<dyn ActorFuture<Registry, Output = ()>>>;

fn done() -> Step {
    Box::pin(fut::ready(()))
}

/// The namespace of one node.
pub struct Registry {
    settings: Arc<Settings>,
    node: NodeId,
    cluster: Arc<Cluster>,
    observers: Observers,
    /// The master copy; `view` is what was last published of it.
    dir: Directory,
    view: Arc<ArcSwap<Directory>>,
    /// The services each client owns.
    owned: HashMap<Uuid, BTreeSet<String>>,
    /// Clients whose name claim is in flight; a departure meanwhile
    /// cancels the join.
    joining: HashSet<Uuid>,
    /// Where service actors run, in turn.
    pool: Vec<ArbiterHandle>,
    next_arbiter: usize,
    /// The local clients told of joins and leaves (IDENTIFY's `presence`),
    /// in a flat map: every join and leave goes through all of them.
    watchers: IndexMap<Uuid, Outbox>,
    /// Set once the node closes every client to stop: a client identifying
    /// after that gets the same close rather than a name it would hold
    /// past the node's departure.
    departing: Option<Close>,
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Registry {
    pub fn new(
        settings: Arc<Settings>,
        cluster: Arc<Cluster>,
        view: Arc<ArcSwap<Directory>>,
        observers: Observers,
        pool: Vec<ArbiterHandle>,
    ) -> Self {
        Registry {
            node: cluster.node(),
            settings,
            cluster,
            observers,
            dir: Directory::default(),
            view,
            owned: HashMap::new(),
            joining: HashSet::new(),
            pool,
            next_arbiter: 0,
            watchers: IndexMap::new(),
            departing: None,
        }
    }

    fn publish(&self) {
        self.view.store(Arc::new(self.dir.clone()));
    }

    /// CLIENT_JOINED, CLIENT_LEFT and SERVICE_CREATE_RESULT: only for the
    /// clients that follow presence.
    fn tell_watchers(&self, payload: PayloadOut, except: Option<Uuid>) {
        let frame = Frame::json(&Sequenced { seq: None, payload });
        super::fan_out(
            self.watchers
                .iter()
                .filter(|(uuid, _)| except != Some(**uuid))
                .map(|(_, outbox)| outbox),
            &frame,
        );
    }

    fn share(&self, event: &Event) {
        self.cluster.claims().record(event);
        self.cluster.broker().announce(event);
    }

    /// Adds a client, local or remote, and tells the local clients that
    /// follow presence.
    fn join(&mut self, info: ClientInfo, node: NodeId, local: Option<Local>) {
        let uuid = info.uuid;
        if self.dir.clients.contains_key(&uuid) {
            return;
        }
        let presence = local.as_ref().is_some_and(|l| l.presence);
        let (outbox, hello) = local
            .map(|l| (l.outbox, (l.fs_key, l.resume.map(Resume::into_secret))))
            .unzip();
        let local = outbox.is_some();
        if let (Some(outbox), Some((fs_key, resume))) = (&outbox, hello) {
            // HELLO is its first frame: queued before anyone can find the
            // client, and sent once everyone can (the file server included,
            // for the uuid it carries).
            outbox.hold();
            outbox.send(Frame::json(&Sequenced {
                seq: None,
                payload: PayloadOut::Hello {
                    uuid,
                    version: PROTOCOL_VERSION.to_owned(),
                    fs_key,
                    resume,
                },
            }));
        }
        let record = Arc::new(ClientRecord::new(info, node, outbox));
        self.dir.clients.insert(uuid, record.clone());
        // A claim that succeeded in the cluster wins over a stale entry
        // whose departure has not reached this node yet. Not over a client
        // of this node: its claim holds until this node learns otherwise
        // (and closes it, `Inbound::NameLost`). A remote client joining
        // under its name is one that a replica back from being cut off
        // re-registers before it learns it lost the name to this node's
        // client; taking the name for it would leave the holder nameless
        // here once it leaves (INVALID_NAME for a connected client).
        let held_here = !local
            && self
                .dir
                .names
                .get(&record.info.name)
                .is_some_and(|held| self.dir.local.contains_key(&held.info.uuid));
        if !held_here {
            self.dir
                .names
                .insert(record.info.name.clone(), record.clone());
        }
        if local {
            self.dir.local.insert(uuid, record.clone());
        }
        if let (true, Some(outbox)) = (presence, &record.outbox) {
            self.watchers.insert(uuid, outbox.clone());
        }
        // Findable before it is announced: a client told of it may
        // message it at once.
        self.publish();
        if let Some(outbox) = &record.outbox {
            outbox.release();
        }
        self.tell_watchers(
            PayloadOut::ClientJoined {
                client: record.info.clone(),
            },
            Some(uuid),
        );
        self.observers.tell(Change::Joined {
            client: &record.info,
            local,
        });
    }

    /// Removes a client. The returned step finishes the departure once
    /// its services have announced theirs: its subscriptions (in name
    /// order), the services it owned (deleted for everyone), then
    /// CLIENT_LEFT for everyone else.
    fn leave(&mut self, uuid: Uuid, departure: Departure) -> Step {
        let Some(client) = self.dir.clients.remove(&uuid) else {
            return done();
        };
        if self
            .dir
            .names
            .get(&client.info.name)
            .is_some_and(|named| named.info.uuid == uuid)
        {
            self.dir.names.remove(&client.info.name);
        }
        self.dir.local.remove(&uuid);
        self.watchers.swap_remove(&uuid);
        let subscribed: Vec<Arc<ServiceHandle>> = client
            .ledger
            .close()
            .iter()
            .filter_map(|name| self.dir.service(name).cloned())
            .collect();
        let owned: Vec<(String, Arc<ServiceHandle>)> = self
            .owned
            .remove(&uuid)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| self.dir.services.remove(&name).map(|s| (name, s)))
            .collect();
        self.publish();
        if subscribed.is_empty() && owned.is_empty() {
            self.left(&client, departure);
            return done();
        }
        let share = departure.share();
        let services = async move {
            for handle in subscribed {
                let _ = handle.addr.send(service::Departed { uuid, share }).await;
            }
            let mut ended = Vec::with_capacity(owned.len());
            for (_, handle) in owned {
                let fallback = handle.info();
                ended.push(handle.addr.send(service::End).await.unwrap_or(fallback));
            }
            ended
        };
        Box::pin(
            fut::wrap_future::<_, Self>(services).map(move |ended, act, _| {
                for service in &ended {
                    act.service_ended(service, None, departure.records(), false);
                }
                act.left(&client, departure);
            }),
        )
    }

    /// The end of a departure: recorded, announced, CLIENT_LEFT.
    fn left(&self, client: &ClientRecord, departure: Departure) {
        let uuid = client.info.uuid;
        if departure.records() {
            self.cluster.claims().record(&Event::Left { uuid });
        }
        if departure == Departure::Local {
            self.cluster.broker().announce(&Event::Left { uuid });
        }
        self.observers.tell(Change::Left {
            client: &client.info,
            local: client.outbox.is_some(),
            cleanup: departure.records(),
        });
        self.tell_watchers(
            PayloadOut::ClientLeft {
                client: client.info.clone(),
            },
            None,
        );
        tracing::info!(%uuid, name = %client.info.name, node = %client.node, "client left");
    }

    /// Several departures, one after the other.
    fn leave_all(&mut self, uuids: Vec<Uuid>, departure: Departure) -> Step {
        let mut step = done();
        for uuid in uuids {
            step = Box::pin(step.then(move |(), act: &mut Self, _| act.leave(uuid, departure)));
        }
        step
    }

    /// Starts a service's actor and lists it; announces it to everyone but
    /// `except`.
    fn service_created(&mut self, receipt: ServiceInfo, except: Option<Uuid>) {
        if self.dir.services.contains_key(&receipt.name) {
            return;
        }
        let owned_here = self
            .dir
            .client(&receipt.owner_uuid)
            .is_some_and(|owner| owner.node == self.node);
        let view = Arc::new(ArcSwap::from_pointee(ServiceView::new(receipt.clone())));
        // Started before the service is listed: its first broadcast is
        // kept. The owner's node keeps it; the others read it.
        let history = receipt.history.map(|history| {
            let limits = Limits::new(history, self.settings.max_history_bytes);
            Arc::new(if owned_here {
                let start = self.cluster.history().start(&receipt.name, limits);
                HistoryGate::owned(start.epoch, limits)
            } else {
                HistoryGate::kept_elsewhere(limits)
            })
        });
        let setup = Setup {
            receipt: receipt.clone(),
            owned_here,
            view: view.clone(),
            directory: self.view.clone(),
            cluster: self.cluster.clone(),
            observers: self.observers.clone(),
            max_subscriptions: self.settings.max_subscriptions_per_client,
            history: history.clone(),
            max_replay: self.settings.max_outgoing_queue / 2,
        };
        let arbiter = &self.pool[self.next_arbiter % self.pool.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = Service::start_in_arbiter(arbiter, move |_| Service::new(setup));
        self.owned
            .entry(receipt.owner_uuid)
            .or_default()
            .insert(receipt.name.clone());
        self.dir.services.insert(
            receipt.name.clone(),
            Arc::new(ServiceHandle {
                addr,
                view,
                history,
            }),
        );
        self.publish();
        // Directory news, like presence: not for the clients that declined
        // it (a fleet of agents each creating services would otherwise
        // tell every other agent).
        self.tell_watchers(
            PayloadOut::ServiceCreateResult {
                successful: true,
                service: receipt.clone(),
            },
            except,
        );
        self.observers
            .tell(Change::ServiceCreated { service: &receipt });
    }

    /// Takes a service out of the directory; its actor must be ended.
    fn unlist(&mut self, name: &str) -> Option<Arc<ServiceHandle>> {
        let handle = self.dir.services.remove(name)?;
        if handle.history.is_some() {
            self.cluster.history().end(name);
        }
        let owner = handle.view.load().receipt.owner_uuid;
        if let Some(owned) = self.owned.get_mut(&owner) {
            owned.remove(name);
        }
        self.publish();
        Some(handle)
    }

    /// After a service's actor ended: recorded and announced as asked, and
    /// SERVICE_DELETE_RESULT to everyone but `except`.
    fn service_ended(
        &self,
        service: &ServiceInfo,
        except: Option<Uuid>,
        record: bool,
        announce: bool,
    ) {
        let event = Event::ServiceDeleted {
            name: service.name.clone(),
            owner: service.owner_uuid,
        };
        if record {
            self.cluster.claims().record(&event);
        }
        if announce {
            self.cluster.broker().announce(&event);
        }
        self.observers.tell(Change::ServiceDeleted { service });
        let frame = Frame::json(&Sequenced {
            seq: None,
            payload: PayloadOut::ServiceDeleteResult {
                service: service.clone(),
            },
        });
        // The clients that follow the directory, and the service's own
        // subscribers even if they do not: they lose something.
        let subscribers = service
            .subscribers
            .iter()
            .filter(|uuid| except != Some(**uuid) && !self.watchers.contains_key(*uuid))
            .filter_map(|uuid| self.dir.local.get(uuid))
            .filter_map(|record| record.outbox.as_ref());
        super::fan_out(
            self.watchers
                .iter()
                .filter(|(uuid, _)| except != Some(**uuid))
                .map(|(_, outbox)| outbox)
                .chain(subscribers),
            &frame,
        );
    }

    /// Deletes a service another node deleted.
    fn service_deleted_remotely(&mut self, name: &str) -> Step {
        let Some(handle) = self.unlist(name) else {
            return done();
        };
        let fallback = handle.info();
        Box::pin(
            fut::wrap_future::<_, Self>(handle.addr.send(service::End)).map(move |info, act, _| {
                act.service_ended(&info.unwrap_or(fallback), None, false, false);
            }),
        )
    }

    /// Removes a local client at once and closes its connection.
    fn evict(&mut self, uuid: Uuid, close: Close) -> Step {
        let Some(outbox) = self.dir.local.get(&uuid).and_then(|c| c.outbox.clone()) else {
            return done();
        };
        let step = self.leave(uuid, Departure::Local);
        outbox.close(close);
        step
    }
}

/// Runs a step to completion before the registry handles anything else.
fn atomic(step: Step) -> AtomicResponse<Registry, ()> {
    AtomicResponse::new(step)
}

impl Handler<Leave> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) -> Self::Result {
        if self.joining.remove(&msg.uuid) {
            return atomic(done());
        }
        atomic(self.leave(msg.uuid, Departure::Local))
    }
}

impl Handler<CreateService> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: CreateService, _: &mut Context<Self>) -> Self::Result {
        let CreateService {
            owner,
            name,
            nickname,
            history,
            reply,
        } = msg;
        let answer = |payload| -> Self::Result {
            reply.send(payload);
            Box::pin(fut::ready(()))
        };
        if let Some(existing) = self.dir.service(&name) {
            return answer(PayloadOut::ServiceCreateResult {
                successful: false,
                service: existing.info(),
            });
        }
        let max = self.settings.max_services_per_client;
        if self.owned.get(&owner).map_or(0, BTreeSet::len) >= max {
            let desc = format!("a client may own at most {max} services");
            return answer(PayloadOut::Bad { desc: Some(desc) });
        }
        let receipt = ServiceInfo {
            name,
            nickname,
            owner_uuid: owner,
            subscribers: Vec::new(),
            history,
        };
        // The name is claimed cluster-wide; the registry goes on meanwhile.
        let claim = self.cluster.claims().claim_service(&receipt);
        Box::pin(
            fut::wrap_future::<_, Self>(claim).map(move |claimed, act, _| {
                let answer = match claimed {
                    Ok(None) if act.dir.local.contains_key(&owner) => {
                        act.service_created(receipt.clone(), Some(owner));
                        act.cluster.broker().announce(&Event::ServiceCreated {
                            service: receipt.clone(),
                        });
                        PayloadOut::ServiceCreateResult {
                            successful: true,
                            service: receipt,
                        }
                    }
                    Ok(None) => {
                        // The owner left while the name was being claimed.
                        act.cluster.claims().record(&Event::ServiceDeleted {
                            name: receipt.name,
                            owner: receipt.owner_uuid,
                        });
                        PayloadOut::ErrorInternal {
                            desc: "the client left".into(),
                        }
                    }
                    Ok(Some(existing)) => PayloadOut::ServiceCreateResult {
                        successful: false,
                        service: act
                            .dir
                            .service(&existing.name)
                            .map_or(existing, |s| s.info()),
                    },
                    Err(e) => PayloadOut::ErrorInternal {
                        desc: format!("cannot claim the service name: {e}"),
                    },
                };
                reply.send(answer);
            }),
        )
    }
}

impl Handler<DeleteService> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: DeleteService, _: &mut Context<Self>) -> Self::Result {
        let DeleteService { by, name, reply } = msg;
        let answer = |payload| {
            reply.send(payload);
            atomic(done())
        };
        let owner = match self.dir.service(&name) {
            None => return answer(PayloadOut::InvalidService { service: name }),
            Some(service) => service.view.load().receipt.owner_uuid,
        };
        if owner != by {
            return answer(PayloadOut::Bad {
                desc: Some(format!("only the owner can delete service {name:?}")),
            });
        }
        let Some(handle) = self.unlist(&name) else {
            return answer(PayloadOut::InvalidService { service: name });
        };
        let fallback = handle.info();
        AtomicResponse::new(Box::pin(
            fut::wrap_future::<_, Self>(handle.addr.send(service::End)).map(move |info, act, _| {
                let service = info.unwrap_or(fallback);
                act.service_ended(&service, Some(by), true, true);
                reply.send(PayloadOut::ServiceDeleteResult { service });
            }),
        ))
    }
}

impl Handler<Overflowed> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Overflowed, _: &mut Context<Self>) -> Self::Result {
        let max = self.settings.max_outgoing_queue;
        tracing::warn!(uuid = %msg.uuid, "evicting a client that does not read its frames");
        atomic(self.evict(msg.uuid, Close::too_slow(max)))
    }
}

impl Handler<Evict> for Registry {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Evict, _: &mut Context<Self>) -> Self::Result {
        atomic(self.evict(msg.uuid, msg.close))
    }
}

impl Handler<Ready> for Registry {
    type Result = Result<(), &'static str>;

    fn handle(&mut self, _: Ready, _: &mut Context<Self>) -> Self::Result {
        self.cluster.broker().health()
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        self.departing = Some(msg.close.clone());
        let mut closed = 0;
        for outbox in self.dir.local.values().filter_map(|c| c.outbox.as_ref()) {
            outbox.close(msg.close.clone());
            closed += 1;
        }
        closed
    }
}
