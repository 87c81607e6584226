//! A service: one actor per service, the only writer of its subscribers.
//!
//! It decides every change to its subscriber list (local requests, events
//! from other nodes, departures), announces it to its subscribers
//! (SERVICE_CLIENT_SUBSCRIBED/UNSUBSCRIBED), records it in the cluster,
//! follows the service's cluster channel while it has subscribers here and
//! an owner elsewhere, and publishes a [`ServiceView`] after each change.
//! Its broadcasts are not its business: the owner's session fans them out
//! from the view, on its own thread. Services are spread over a pool of
//! arbiters, so subscriptions to different services are handled in
//! parallel.
//!
//! A change is announced to the local subscribers on this actor's thread
//! before the request that caused it is answered; the requester waits for
//! that answer before anything else it sent is handled, so its frames keep
//! their order whichever actor or thread carries them.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use bytes::Bytes;
use indexmap::IndexMap;
use uuid::Uuid;

use super::gate::{self, HistoryGate};
use super::member::ReplyTo;
use super::observe::{Change, Observers};
use super::view::{ClientRecord, Directory, LedgerRefusal, ServiceView};
use crate::cluster::history::{Read, Recovery};
use crate::cluster::{Cluster, ClusterError, Event};
use crate::protocol::{PayloadOut, Position, Sequenced, ServiceInfo};
use crate::transport::outbox::Frame;

/// Who hears of a change made here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Recorded in the cluster and announced to the other nodes: a client
    /// of this node asked for it.
    Everyone,
    /// Recorded only: part of a departure that the other nodes derive
    /// themselves from the client's `Left`.
    Record,
    /// Neither: another node made the change.
    Nobody,
}

/// A client of this node asks to subscribe; answered into `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub client: Arc<ClientRecord>,
    /// Where to resume the service's history from.
    pub position: Option<Position>,
    pub reply: ReplyTo,
}

/// A client of this node asks to unsubscribe; answered into `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub client: Arc<ClientRecord>,
    pub reply: ReplyTo,
}

/// A subscriber left the namespace.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Departed {
    pub uuid: Uuid,
    pub share: Share,
}

/// A change another node made to the subscribers.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Remote {
    Subscribed(Uuid),
    Unsubscribed(Uuid),
}

/// The service is deleted: the actor stops and answers with the service as
/// it was, subscribers included.
#[derive(Message)]
#[rtype(result = "ServiceInfo")]
pub struct End;

/// The other nodes' subscribers, as the shared namespace lists them after
/// an outage: bring the list in line.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    pub remote: BTreeSet<Uuid>,
}

pub struct Service {
    name: String,
    /// The service as it appears in MESSAGE receipts: no subscribers.
    receipt: ServiceInfo,
    /// Whether its owner is a client of this node.
    owned_here: bool,
    subscribers: IndexMap<Uuid, Arc<ClientRecord>>,
    view: Arc<ArcSwap<ServiceView>>,
    directory: Arc<ArcSwap<Directory>>,
    cluster: Arc<Cluster>,
    observers: Observers,
    max_subscriptions: usize,
    /// Whether this node follows the service's cluster channel.
    watched: bool,
    /// Its history's gate, when it keeps one.
    history: Option<Arc<HistoryGate>>,
    /// The most messages one subscriber is replayed.
    max_replay: usize,
    /// Subscribers whose history is being read from the store: their
    /// broadcasts are held, so the view does not list them yet (see
    /// `gate`).
    tapped: HashSet<Uuid>,
}

impl Actor for Service {
    type Context = Context<Self>;
}

/// What a service actor is started with.
pub struct Setup {
    pub receipt: ServiceInfo,
    pub owned_here: bool,
    pub view: Arc<ArcSwap<ServiceView>>,
    pub directory: Arc<ArcSwap<Directory>>,
    pub cluster: Arc<Cluster>,
    pub observers: Observers,
    pub max_subscriptions: usize,
    pub history: Option<Arc<HistoryGate>>,
    pub max_replay: usize,
}

impl Service {
    pub fn new(setup: Setup) -> Self {
        Service {
            name: setup.receipt.name.clone(),
            receipt: setup.receipt,
            owned_here: setup.owned_here,
            subscribers: IndexMap::new(),
            view: setup.view,
            directory: setup.directory,
            cluster: setup.cluster,
            observers: setup.observers,
            max_subscriptions: setup.max_subscriptions,
            watched: false,
            history: setup.history,
            max_replay: setup.max_replay,
            tapped: HashSet::new(),
        }
    }

    fn info(&self) -> ServiceInfo {
        ServiceInfo {
            subscribers: self.subscribers.keys().copied().collect(),
            ..self.receipt.clone()
        }
    }

    fn publish(&self) {
        let receipt_json = self.view.load().receipt_json.clone();
        self.view.store(Arc::new(ServiceView {
            receipt: self.receipt.clone(),
            receipt_json,
            subscribers: self.subscribers.keys().copied().collect(),
            local: self
                .subscribers
                .iter()
                .filter(|(uuid, _)| !self.tapped.contains(*uuid))
                .filter_map(|(uuid, c)| c.outbox.clone().map(|o| (*uuid, o)))
                .collect(),
        }));
    }

    /// Tells this node's subscribers, as the published view lists them.
    fn tell_subscribers(&self, payload: PayloadOut) {
        let frame = Frame::json(&Sequenced { seq: None, payload });
        self.view.load().publish(&frame, None);
    }

    fn share(&self, event: Event, share: Share) {
        if share != Share::Nobody {
            self.cluster.claims().record(&event);
        }
        if share == Share::Everyone {
            self.cluster.broker().announce(&event);
        }
    }

    /// Makes this node receive the service's broadcasts exactly when it
    /// needs them: the owner is elsewhere and a subscriber is here. Returns
    /// the watch to wait for when one started.
    fn sync_watch(&mut self) -> Option<crate::cluster::Pending<()>> {
        let needed = !self.owned_here && self.subscribers.values().any(|c| c.outbox.is_some());
        if needed && !self.watched {
            self.watched = true;
            return Some(self.cluster.broker().watch(&self.name));
        }
        if !needed && self.watched {
            self.watched = false;
            self.cluster.broker().unwatch(&self.name);
        }
        None
    }

    /// Adds a subscriber and tells the ones that were there before.
    fn add(&mut self, client: Arc<ClientRecord>, max: usize) -> Result<ServiceInfo, LedgerRefusal> {
        client.ledger.add(&self.name, max)?;
        let uuid = client.info.uuid;
        let info = client.info.clone();
        self.subscribers.insert(uuid, client);
        let after = self.info();
        // The view still lists the subscribers from before.
        self.tell_subscribers(PayloadOut::ServiceClientSubscribed {
            client: info.clone(),
            service: after.clone(),
        });
        self.publish();
        self.observers.tell(Change::Subscribed {
            service: &self.name,
            client: &info,
        });
        Ok(after)
    }

    /// Removes a subscriber and tells the remaining ones. Returns the
    /// service as it is after the change.
    fn remove(&mut self, uuid: Uuid, share: Share) -> Option<ServiceInfo> {
        let client = self.subscribers.shift_remove(&uuid)?;
        client.ledger.remove(&self.name);
        self.publish();
        let after = self.info();
        // Stop receiving the service's broadcasts if that was the last
        // subscriber here of a service owned elsewhere.
        drop(self.sync_watch());
        let event = Event::Unsubscribed {
            service: self.name.clone(),
            uuid,
        };
        self.share(event, share);
        self.tell_subscribers(PayloadOut::ServiceClientUnsubscribed {
            client: client.info.clone(),
            service: after.clone(),
        });
        self.observers.tell(Change::Unsubscribed {
            service: &self.name,
            client: &client.info,
        });
        Some(after)
    }

    /// The history's last position and, when the subscriber gave one that
    /// is still in it, the messages after it (`None` when it cannot be
    /// recovered, or more than can be queued for one client at once).
    /// Called under the gate.
    fn recover(&self, after: Option<&Position>) -> (Option<Position>, Option<Vec<Bytes>>) {
        if self.history.is_none() {
            return (None, None);
        }
        let histories = self.cluster.history();
        let last = histories.last(&self.name);
        let replay = after.and_then(|after| match histories.since(&self.name, after) {
            Recovery::Recovered(replay) if replay.len() <= self.max_replay => Some(replay),
            _ => None,
        });
        (last, replay)
    }

    /// Subscribes a client of this node to a service whose history another
    /// node keeps: tapped before this node follows the service's channel,
    /// answered once the history is read (see `gate`). The actor handles
    /// nothing else meanwhile (one Redis round trip, two for the first
    /// subscriber here).
    fn resume_elsewhere(
        &mut self,
        gate: Arc<HistoryGate>,
        client: Arc<ClientRecord>,
        position: Option<Position>,
        reply: ReplyTo,
    ) -> AtomicResponse<Self, ()> {
        let uuid = client.info.uuid;
        let outbox = client.outbox.clone();
        let max = self.max_subscriptions;
        self.tapped.insert(uuid);
        gate.hold().open(uuid, self.max_replay);
        let after = match self.add(client, max) {
            Ok(after) => after,
            Err(refusal) => {
                self.tapped.remove(&uuid);
                gate.hold().close(uuid);
                let desc = match refusal {
                    LedgerRefusal::Full => {
                        format!("a client may subscribe to at most {max} services")
                    }
                    LedgerRefusal::Closed => "the client has left".into(),
                };
                reply.send(PayloadOut::Bad { desc: Some(desc) });
                return AtomicResponse::new(Box::pin(fut::ready(())));
            }
        };
        self.share(
            Event::Subscribed {
                service: self.name.clone(),
                uuid,
            },
            Share::Everyone,
        );
        let watching = self.sync_watch();
        let histories = self.cluster.history().clone();
        let (name, limits, most) = (self.name.clone(), gate.limits, self.max_replay);
        let asked = position.is_some();
        let read = async move {
            if let Some(watching) = watching {
                watching.await;
            }
            histories.read(&name, position.as_ref(), limits, most).await
        };
        AtomicResponse::new(Box::pin(fut::wrap_future::<_, Self>(read).map(
            move |read: Result<Read, ClusterError>, act, _| {
                let mut taps = gate.hold();
                let resumed = gate::resume(read, taps.close(uuid));
                act.tapped.remove(&uuid);
                reply.send(PayloadOut::SelfSubscribeResult {
                    successful: true,
                    service: after,
                    position: resumed.position,
                    recovered: asked.then_some(resumed.replay.is_some()),
                });
                if let Some(outbox) = outbox {
                    for message in resumed.replay.into_iter().flatten() {
                        if let Ok(json) = std::str::from_utf8(&message) {
                            outbox.send(Frame::new(json));
                        }
                    }
                    for frame in resumed.live {
                        outbox.send(frame);
                    }
                }
                // Listed from now on: the next broadcast, delivered under
                // the gate, reaches it directly.
                act.publish();
                drop(taps);
            },
        )))
    }

    /// A subscription another node made: its client is in the directory.
    fn add_remote(&mut self, uuid: Uuid) {
        if self.subscribers.contains_key(&uuid) {
            return;
        }
        let Some(client) = self.directory.load().client(&uuid).cloned() else {
            tracing::debug!(service = %self.name, %uuid, "subscription of an unknown client ignored");
            return;
        };
        // Limits were enforced where the client is connected.
        if let Err(e) = self.add(client, usize::MAX) {
            tracing::debug!(service = %self.name, %uuid, ?e, "subscription of a departed client ignored");
        }
    }
}

impl Handler<Subscribe> for Service {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let Subscribe {
            client,
            position,
            reply,
        } = msg;
        let uuid = client.info.uuid;
        let answer = |payload: PayloadOut| {
            reply.send(payload);
            AtomicResponse::new(Box::pin(fut::ready(())))
        };
        if self.subscribers.contains_key(&uuid) {
            return answer(PayloadOut::SelfSubscribeResult {
                successful: false,
                service: self.info(),
                position: None,
                recovered: None,
            });
        }
        if let Some(gate) = self.history.clone().filter(|_| !self.owned_here) {
            return self.resume_elsewhere(gate, client, position, reply);
        }
        // Held until the reply and the replay are in the client's outbox:
        // the broadcasts wait, so none reaches it before them, and each is
        // either in the replay or sent to it live (see `HistoryGate`).
        let gate = self.history.clone();
        let _order = gate.as_ref().map(|gate| gate.hold());
        let outbox = client.outbox.clone();
        let max = self.max_subscriptions;
        let after = match self.add(client, max) {
            Ok(after) => after,
            Err(LedgerRefusal::Full) => {
                let desc = format!("a client may subscribe to at most {max} services");
                return answer(PayloadOut::Bad { desc: Some(desc) });
            }
            // Nobody is left to read the answer.
            Err(LedgerRefusal::Closed) => {
                return answer(PayloadOut::Bad {
                    desc: Some("the client has left".into()),
                })
            }
        };
        let event = Event::Subscribed {
            service: self.name.clone(),
            uuid,
        };
        self.share(event, Share::Everyone);
        let (last, recovery) = self.recover(position.as_ref());
        let result = PayloadOut::SelfSubscribeResult {
            successful: true,
            service: after,
            position: last,
            recovered: position.map(|_| recovery.is_some()),
        };
        if let Some(replay) = recovery {
            reply.send(result);
            for message in replay {
                if let (Ok(json), Some(outbox)) = (std::str::from_utf8(&message), &outbox) {
                    outbox.send(Frame::new(json));
                }
            }
            return AtomicResponse::new(Box::pin(fut::ready(())));
        }
        // The first subscriber here of a service owned elsewhere is
        // answered only once this node receives its broadcasts, so a
        // broadcast the owner sends after the client learnt it is
        // subscribed cannot miss it. The actor handles nothing else
        // meanwhile (one Redis round trip, once per service and node).
        match self.sync_watch() {
            Some(watching) => AtomicResponse::new(Box::pin(
                fut::wrap_future::<_, Self>(watching).map(move |(), _, _| reply.send(result)),
            )),
            None => answer(result),
        }
    }
}

impl Handler<Unsubscribe> for Service {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let payload = match self.remove(msg.client.info.uuid, Share::Everyone) {
            Some(after) => PayloadOut::SelfUnsubscribeResult {
                successful: true,
                service: after,
            },
            None => PayloadOut::SelfUnsubscribeResult {
                successful: false,
                service: self.info(),
            },
        };
        msg.reply.send(payload);
    }
}

impl Handler<Departed> for Service {
    type Result = ();

    fn handle(&mut self, msg: Departed, _: &mut Context<Self>) {
        self.remove(msg.uuid, msg.share);
    }
}

impl Handler<Remote> for Service {
    type Result = ();

    fn handle(&mut self, msg: Remote, _: &mut Context<Self>) {
        match msg {
            Remote::Subscribed(uuid) => self.add_remote(uuid),
            Remote::Unsubscribed(uuid) => {
                self.remove(uuid, Share::Nobody);
            }
        }
    }
}

impl Handler<End> for Service {
    type Result = MessageResult<End>;

    fn handle(&mut self, _: End, ctx: &mut Context<Self>) -> Self::Result {
        let info = self.info();
        for client in self.subscribers.values() {
            client.ledger.remove(&self.name);
        }
        if self.watched {
            self.watched = false;
            self.cluster.broker().unwatch(&self.name);
        }
        ctx.stop();
        MessageResult(info)
    }
}

impl Handler<Reconcile> for Service {
    type Result = ();

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) {
        let gone: Vec<Uuid> = self
            .subscribers
            .iter()
            .filter(|(uuid, c)| c.outbox.is_none() && !msg.remote.contains(uuid))
            .map(|(uuid, _)| *uuid)
            .collect();
        for uuid in gone {
            self.remove(uuid, Share::Nobody);
        }
        for uuid in msg.remote {
            self.add_remote(uuid);
        }
        // The need for the channel may have changed while the link was
        // down; nobody waits on this watch.
        drop(self.sync_watch());
    }
}
