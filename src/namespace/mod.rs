//! The namespace: who is connected, which services exist, and how a
//! MESSAGE finds its recipients.
//!
//! Two kinds of actors own it, as the product's design card has it, and
//! are the only ones that change it:
//!
//! * the [`Registry`](registry::Registry) owns the clients and the list of
//!   services (joins, departures, creations, deletions);
//! * one [`Service`](service::Service) actor per service owns its
//!   subscribers. They run on a pool of arbiters, one per worker.
//!
//! Both publish what they own as read-only [`view`]s. A client's requests
//! come through its [`Member`] handle, on the client's own thread: a
//! MESSAGE is routed and fanned out right there from the views
//! ([`router`]), fetches are answered from them, and only requests that
//! change something go to the actor that owns it. What other nodes send is
//! applied in order by [`inbound`].
//!
//! Data flows one way: transport → [`Member`] → registry/service actors →
//! [`Cluster`] → the recipients' outboxes. Whatever reacts to a change
//! (files, metrics) is an [`Observer`] given at start-up.

mod gate;
mod inbound;
mod member;
pub mod observe;
pub mod registry;
mod router;
pub mod service;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::{ArcSwap, Guard};
use uuid::Uuid;

pub use self::member::{Member, Op, Outcome, ReplyTo, MAX_HISTORY_TTL_SECS};
pub use self::observe::{Change, Observer, Observers};
pub use self::registry::Resume;
use self::registry::{CloseAll, Join, Leave, Local, Ready, Registry};
pub use self::router::Relayed;
use self::view::Directory;
use crate::cluster::{Cluster, InboundStream};
use crate::config::Settings;
use crate::metrics;
use crate::protocol::{ClientInfo, Close, CloseCode};
use crate::transport::outbox::{Frame, Outbox};

/// A handle on the namespace: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Namespace {
    registry: Addr<Registry>,
    view: Arc<ArcSwap<Directory>>,
    cluster: Arc<Cluster>,
    settings: Arc<Settings>,
}

impl Namespace {
    /// Starts the registry, the service arbiters and the consumer of what
    /// other nodes send. Must run inside an actix system.
    pub fn start(
        settings: Arc<Settings>,
        cluster: Cluster,
        inbound: InboundStream,
        observers: Observers,
    ) -> Namespace {
        let cluster = Arc::new(cluster);
        let view = Arc::new(ArcSwap::from_pointee(Directory::default()));
        let threads = match settings.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let home = Arbiter::new().handle();
        let registry = {
            let (settings, cluster, view) = (settings.clone(), cluster.clone(), view.clone());
            Registry::start_in_arbiter(&home, move |_| {
                Registry::new(settings, cluster, view, observers, pool)
            })
        };
        let namespace = Namespace {
            registry,
            view,
            cluster,
            settings,
        };
        home.spawn(inbound::dispatch(inbound, namespace.clone()));
        namespace
    }

    /// The directory as last published.
    pub fn directory(&self) -> Guard<Arc<Directory>> {
        self.view.load()
    }

    /// Who holds this uuid, anywhere in the cluster.
    pub fn client(&self, uuid: &Uuid) -> Option<ClientInfo> {
        self.view.load().client(uuid).map(|c| c.info.clone())
    }

    /// Registers a client whose IDENTIFY its transport accepted: claims its
    /// name, sends it HELLO (with its file server key) through `outbox` and
    /// announces it. With `presence`, it is told of every client that
    /// joins or leaves from then on. With `take_over`, a name held by a
    /// client of the same user, or by the session whose `resume` secret
    /// the client gave, is taken from it (seed 003); without, the join is
    /// refused as for anyone else's name (4005).
    pub async fn join(
        &self,
        info: ClientInfo,
        outbox: Outbox,
        fs_key: String,
        presence: bool,
        take_over: bool,
        resume: Option<Resume>,
    ) -> Result<Member, Close> {
        let joining = Join {
            info,
            local: Local {
                outbox: outbox.clone(),
                fs_key,
                presence,
                take_over,
                resume,
            },
        };
        let record = self
            .registry
            .send(joining)
            .await
            .map_err(|e| Close::new(CloseCode::Unknown, format!("internal error: {e}")))??;
        Ok(Member::new(record, outbox, self.clone()))
    }

    /// The client's connection is gone.
    pub fn leave(&self, uuid: Uuid) {
        self.registry.do_send(Leave { uuid });
    }

    /// Where a client's outbox reports that it overflowed.
    pub fn overflow_recipient(&self) -> Recipient<crate::transport::outbox::Overflowed> {
        self.registry.clone().recipient()
    }

    /// Whether this node can serve: the registry answers within a second
    /// and the cluster link works. `Err` says why not.
    pub async fn ready(&self) -> Result<(), &'static str> {
        let probe = self.registry.send(Ready);
        match tokio::time::timeout(Duration::from_secs(1), probe).await {
            Ok(Ok(health)) => health,
            _ => Err("the registry does not answer"),
        }
    }

    /// Closes every local client with the cluster's departure code, and
    /// waits (up to `patience`) until their departures are processed.
    pub async fn close_all(&self, patience: Duration) -> usize {
        let close = self.cluster.departure();
        let closed = match self.registry.send(CloseAll { close }).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the registry to close sessions");
                return 0;
            }
        };
        let deadline = Instant::now() + patience;
        while self.view.load().local_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        closed
    }

    /// Leaves the cluster once this node's departures are written.
    pub async fn deregister(&self) {
        self.cluster.claims().deregister().await;
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// Hands `frame` to every outbox, timing the whole fan-out.
fn fan_out<'a>(outboxes: impl Iterator<Item = &'a Outbox>, frame: &Frame) {
    let started = Instant::now();
    for outbox in outboxes {
        outbox.send(frame.clone());
    }
    metrics::get().published(started.elapsed());
}
