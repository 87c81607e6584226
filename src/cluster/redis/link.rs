//! The node's link to Redis and the tasks that keep it: one writer, one
//! subscription, one lease keeper.
//!
//! Ordering: the node writes through one task and one connection, and reads
//! through one subscription connection into one channel of [`Inbound`]
//! items, so what one node sends another arrives in the order it was sent,
//! whatever the Redis channel.
//!
//! Liveness: every node renews `lease:{node}` every third of the lease. A
//! node that finds another's lease gone takes `reap:{node}` and reports
//! [`Inbound::Reap`]: the namespace removes that node's clients, recording
//! each departure, and announces `NodeDown`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Notify};

use super::history::RedisHistory;
use super::master::Master;
use super::wire::{self, key, StoredClient, EVENTS};
use crate::cluster::{Handoff, Inbound, NodeId, Snapshot};
use crate::metrics;
use crate::protocol::ServiceInfo;

/// How many writes may wait for the writer: about a second of a busy
/// node's traffic. Beyond, a client's frame is refused (its sender is
/// answered with an error) and a namespace write fails as if Redis had
/// refused it (see [`Link::write`]).
pub const WRITES: usize = 16_384;

/// What the writer task is given, in order.
pub enum Write {
    Cmd(redis::Cmd),
    /// A client's frame: `sent` is told whether Redis took it (and, for
    /// a frame to one replica's inbox, whether that replica was subscribed:
    /// pub/sub keeps nothing for a replica that is re-subscribing).
    Frame {
        cmd: redis::Cmd,
        to_one: bool,
        sent: oneshot::Sender<bool>,
    },
    /// Answered once every command queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// Changes to the set of service channels this node follows, applied in
/// order by the subscriber task (the one owner of the subscription).
pub enum WatchCommand {
    /// Subscribe; `confirmed` is answered once Redis confirmed (or failed).
    Watch {
        name: String,
        confirmed: oneshot::Sender<()>,
    },
    Unwatch(String),
}

/// State shared by the cluster handle and its background tasks.
pub struct Link {
    pub node: NodeId,
    pub lease: Duration,
    pub master: Arc<Master>,
    pub writes: mpsc::Sender<Write>,
    pub watches: mpsc::UnboundedSender<WatchCommand>,
    pub inbound: mpsc::Sender<Inbound>,
    /// The subscription connection is up.
    pub subscribed: AtomicBool,
    /// The last write (or lease renewal) succeeded.
    pub writing: AtomicBool,
    /// Set when the shared namespace may have missed this node's writes.
    pub resync: Notify,
    /// Set once the node deregistered: its lease must not come back.
    pub leaving: AtomicBool,
}

impl Link {
    pub fn publish(&self, channel: String, payload: Vec<u8>) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.write(cmd);
    }

    /// Publishes a client's frame, unless the link is down or its queue is
    /// full: the sender learns whether it left. Refused at once only while
    /// the subscription is down (Redis is gone) or [`WRITES`] writes wait
    /// already (Redis cannot keep up: the sender is answered with an error
    /// rather than queued behind them); after a failed write the frame is
    /// still tried, and the writer's result answers it, so one failed batch
    /// does not refuse every frame until the next lease renewal.
    /// `to_one`: the channel is one replica's inbox, which must be
    /// followed for the frame to count as handed on.
    pub fn hand_off(&self, channel: String, payload: Vec<u8>, to_one: bool) -> Handoff {
        if !self.subscribed.load(Ordering::Relaxed) {
            metrics::get().cluster_frames_not_sent.inc();
            return Handoff::Refused;
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        let (sent, taken) = oneshot::channel();
        match self.writes.try_send(Write::Frame { cmd, to_one, sent }) {
            Ok(()) => Handoff::Queued(Box::pin(async move { taken.await.unwrap_or(false) })),
            Err(e) => {
                if let TrySendError::Closed(_) = e {
                    tracing::error!("the Redis writer has stopped");
                }
                metrics::get().cluster_frames_not_sent.inc();
                Handoff::Refused
            }
        }
    }

    /// Queues a write of the namespace (a record, an announcement). With
    /// [`WRITES`] writes waiting already, it is not queued but fails as a
    /// batch that Redis refused does: counted, logged, the link reported
    /// down (`/readyz`, new clients refused) until a later write succeeds,
    /// when the node reconciles the shared namespace with its own, which
    /// writes what was lost again.
    pub fn write(&self, cmd: redis::Cmd) {
        match self.writes.try_send(Write::Cmd(cmd)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::get().cluster_write_errors.inc();
                if self.writing.swap(false, Ordering::Relaxed) {
                    tracing::error!(
                        "{WRITES} writes wait for Redis: cluster updates are being lost \
                         until it catches up"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => tracing::error!("the Redis writer has stopped"),
        }
    }

    /// Resolves once every write queued before the call has been sent (or
    /// failed): a claim or a lookup made after it sees this node's own
    /// changes, such as a departure that released the name being claimed.
    /// Waits for room in a full queue.
    pub async fn flushed(&self) {
        let (done, flushed) = oneshot::channel();
        if self.writes.send(Write::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Hands a watch command to the subscriber task.
    pub fn send_watch(&self, command: WatchCommand) {
        if self.watches.send(command).is_err() {
            tracing::error!("the Redis subscriber has stopped");
        }
    }

    /// Reports something to the namespace, waiting while
    /// [`INBOUND`](crate::cluster::INBOUND) items wait for it already (the
    /// subscription is then not read, and Redis holds what comes meanwhile,
    /// or drops the subscription, which the node recovers from as from any
    /// lost subscription). It only fails once the node is shutting down,
    /// when nobody listens any more.
    pub async fn report(&self, inbound: Inbound) {
        let _ = self.inbound.send(inbound).await;
    }

    pub fn is_up(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.writing.load(Ordering::Relaxed)
    }
}

/// Writes commands in order, batching whatever is queued into one pipeline.
pub async fn writer(link: Arc<Link>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    let mut frames = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for write in batch.drain(..) {
            match write {
                Write::Cmd(cmd) => {
                    pipe.add_command(cmd).ignore();
                    commands += 1;
                }
                Write::Frame { cmd, to_one, sent } => {
                    // Its reply, the number of subscribers reached, is kept.
                    pipe.add_command(cmd);
                    commands += 1;
                    frames.push((to_one, sent));
                }
                Write::Flush(done) => flushed.push(done),
            }
        }
        let mut written = true;
        let mut reached = Vec::new();
        if commands > 0 {
            match pipe.query_async::<Vec<i64>>(&mut link.master.conn()).await {
                Ok(counts) => {
                    reached = counts;
                    if !link.writing.swap(true, Ordering::Relaxed) {
                        link.resync.notify_one();
                    }
                }
                Err(e) => {
                    written = false;
                    link.master.failed();
                    if link.writing.swap(false, Ordering::Relaxed) {
                        tracing::error!(error = %e, "Redis write failed: cluster updates are being lost");
                    }
                    metrics::get().cluster_write_errors.inc();
                }
            }
        }
        for (i, (to_one, sent)) in frames.drain(..).enumerate() {
            let left = written && (!to_one || reached.get(i).is_some_and(|&n| n > 0));
            if !left {
                metrics::get().cluster_frames_not_sent.inc();
            }
            let _ = sent.send(left);
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Follows this node's channels; after every (re)connection, reads the
/// shared namespace before forwarding anything else, so an event and the
/// snapshot cannot be applied in the wrong order. It also owns the set of
/// watched service channels, so subscribing and unsubscribing happen in the
/// order they were asked for.
///
/// Each time, before the namespace is read, the histories this node keeps
/// are written back (Redis may have lost them): queued on the link ahead of
/// the writes that follow.
pub async fn subscriber(
    link: Arc<Link>,
    mut commands: mpsc::UnboundedReceiver<WatchCommand>,
    history: Arc<RedisHistory>,
) {
    let mut watched = BTreeSet::new();
    let mut delay = Duration::from_millis(100);
    loop {
        // Watches asked for while the link was down start with it.
        while let Ok(command) = commands.try_recv() {
            match command {
                WatchCommand::Watch { name, .. } => watched.insert(name),
                WatchCommand::Unwatch(name) => watched.remove(&name),
            };
        }
        match subscribe(&link, &watched).await {
            Ok((mut sink, mut stream)) => {
                if let Err(e) = resync(&link, &history).await {
                    tracing::warn!(error = %e, "cannot read the shared namespace");
                    // Again after the delay, like a failed subscription: at
                    // once, a read that keeps failing would open connection
                    // after connection.
                    back_off(&link, &mut delay).await;
                    continue;
                }
                delay = Duration::from_millis(100);
                link.subscribed.store(true, Ordering::Relaxed);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            if let Some((from, inbound)) = wire::decode(msg) {
                                if from != link.node {
                                    link.report(inbound).await;
                                }
                            }
                        }
                        Some(command) = commands.recv() => {
                            if let Err(e) = follow(&mut sink, &mut watched, command).await {
                                tracing::warn!(error = %e, "cannot change the Redis subscription");
                                break;
                            }
                        }
                        _ = link.resync.notified() => {
                            if let Err(e) = resync(&link, &history).await {
                                tracing::warn!(error = %e, "cannot read the shared namespace");
                                break;
                            }
                        }
                        // A failover: subscribe on the new master.
                        _ = link.master.moved() => break,
                    }
                }
                link.subscribed.store(false, Ordering::Relaxed);
                metrics::get().cluster_reconnects.inc();
                tracing::error!("lost the Redis subscription; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to Redis");
            }
        }
        back_off(&link, &mut delay).await;
    }
}

/// Waits for `delay` (cut short when the master has moved: subscribe to
/// the new one at once), then doubles it, up to 5 s.
async fn back_off(link: &Link, delay: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*delay) => {}
        _ = link.master.moved() => {}
    }
    *delay = (*delay * 2).min(Duration::from_secs(5));
}

/// Subscribes to the events, the node's inbox and the watched services.
async fn subscribe(
    link: &Link,
    watched: &BTreeSet<String>,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = link.master.client().get_async_pubsub().await?.split();
    sink.subscribe(EVENTS).await?;
    sink.subscribe(wire::inbox(link.node)).await?;
    if !watched.is_empty() {
        let channels: Vec<String> = watched.iter().map(|n| wire::service_channel(n)).collect();
        sink.subscribe(channels).await?;
    }
    Ok((sink, stream))
}

/// Applies one watch command to the live subscription.
async fn follow(
    sink: &mut PubSubSink,
    watched: &mut BTreeSet<String>,
    command: WatchCommand,
) -> redis::RedisResult<()> {
    match command {
        WatchCommand::Watch { name, confirmed } => {
            let channel = wire::service_channel(&name);
            watched.insert(name);
            let result = sink.subscribe(channel).await;
            // The subscriber waits for this, whatever the outcome.
            let _ = confirmed.send(());
            result
        }
        WatchCommand::Unwatch(name) => {
            watched.remove(&name);
            sink.unsubscribe(wire::service_channel(&name)).await
        }
    }
}

async fn resync(link: &Link, history: &RedisHistory) -> redis::RedisResult<()> {
    history.restore();
    let snapshot = load_snapshot(link).await?;
    link.report(Inbound::Snapshot(snapshot)).await;
    Ok(())
}

async fn load_snapshot(link: &Link) -> redis::RedisResult<Snapshot> {
    let mut conn = link.master.conn();
    let clients: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(key(&["clients"]))
        .query_async(&mut conn)
        .await?;
    let services: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(key(&["services"]))
        .query_async(&mut conn)
        .await?;
    let mut snapshot = Snapshot::default();
    for (_, json) in clients {
        match serde_json::from_str::<StoredClient>(&json) {
            Ok(stored) => snapshot.clients.push((stored.client, stored.node)),
            Err(e) => tracing::warn!(error = %e, "skipping a malformed client record"),
        }
    }
    for (name, json) in services {
        let mut service: ServiceInfo = match serde_json::from_str(&json) {
            Ok(service) => service,
            Err(e) => {
                tracing::warn!(error = %e, %name, "skipping a malformed service record");
                continue;
            }
        };
        let subscribers: Vec<String> = redis::cmd("ZRANGE")
            .arg(key(&["subs", &name]))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        service.subscribers = subscribers.iter().filter_map(|u| u.parse().ok()).collect();
        snapshot.services.push(service);
    }
    Ok(snapshot)
}

/// Renews this node's lease and reaps nodes whose lease is gone.
pub async fn lease_keeper(link: Arc<Link>) {
    let mut tick = tokio::time::interval(link.lease / 3);
    let node = link.node.to_string();
    loop {
        tick.tick().await;
        if link.leaving.load(Ordering::Relaxed) {
            return;
        }
        let mut conn = link.master.conn();
        let renewed: redis::RedisResult<()> = redis::pipe()
            .cmd("SET")
            .arg(key(&["lease", &node]))
            .arg(1)
            .arg("PX")
            .arg(link.lease.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(key(&["nodes"]))
            .arg(&node)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = renewed {
            link.master.failed();
            if link.writing.swap(false, Ordering::Relaxed) {
                tracing::error!(error = %e, "cannot renew this node's lease");
            }
            continue;
        }
        if !link.writing.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis is reachable again");
            link.resync.notify_one();
        }
        if let Err(e) = reap_dead(&link, &mut conn).await {
            tracing::warn!(error = %e, "cannot check the other nodes' leases");
        }
    }
}

async fn reap_dead(link: &Link, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key(&["nodes"]))
        .query_async(conn)
        .await?;
    for other in nodes {
        let Ok(other_id) = other.parse::<NodeId>() else {
            continue;
        };
        if other_id == link.node {
            continue;
        }
        let alive: bool = redis::cmd("EXISTS")
            .arg(key(&["lease", &other]))
            .query_async(conn)
            .await?;
        if alive {
            continue;
        }
        let won: Option<String> = redis::cmd("SET")
            .arg(key(&["reap", &other]))
            .arg(link.node.to_string())
            .arg("NX")
            .arg("PX")
            .arg(link.lease.as_millis() as u64)
            .query_async(conn)
            .await?;
        if won.is_some() {
            tracing::warn!(node = %other, "node lease expired: cleaning up after it");
            link.report(Inbound::Reap(other_id)).await;
        }
    }
    Ok(())
}
