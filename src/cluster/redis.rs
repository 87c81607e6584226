//! The Redis broker: what makes N replicas behave like one gateway.
//!
//! Shared namespace (Redis keys, prefix `concierge:`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `name:{name}` | string | the uuid that claimed the name (`SET NX`) |
//! | `clients` | hash | uuid → `{client, node}` |
//! | `node-clients:{node}` | set | the uuids of a node's clients |
//! | `services` | hash | name → service (claimed with `HSETNX`) |
//! | `subs:{name}` | sorted set | subscriber uuids, scored by subscription time |
//! | `nodes` | set | every node that registered |
//! | `lease:{node}` | string with TTL | present while the node is alive |
//! | `reap:{node}` | string with TTL | who is cleaning up after a dead node |
//!
//! Channels: `concierge:events` carries namespace [`Event`]s and MESSAGEs to
//! ALL (every node needs both); `concierge:node:{node}` is a node's inbox for
//! frames to one of its clients; `concierge:service:{name}` carries the
//! broadcasts of a service from its owner's node. A node subscribes to the
//! events, its inbox and the channel of each service owned elsewhere that
//! has subscribers on it, so it receives a frame only if one of its clients
//! is a recipient. A node answers a client's SELF_SUBSCRIBE only once Redis
//! has confirmed the node's subscription to that service's channel: a
//! broadcast sent after the client learnt it is subscribed reaches it.
//!
//! Ordering: each node writes through one task and one connection, and reads
//! through one subscription connection into its registry's mailbox, so what
//! one node sends another arrives in the order it was sent, whatever the
//! channel.
//!
//! Liveness: every node renews `lease:{node}` every third of the lease. A
//! node that finds another's lease gone takes `reap:{node}`, removes that
//! node's clients (recording each departure) and announces `NodeDown`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Addr;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use uuid::Uuid;

use crate::cluster::{Broker, Event, NodeId, Remote, Watching};
use crate::metrics;
use crate::namespace::registry::{Evict, Inbound, Reap, Reconcile, Registry};
use crate::protocol::{ClientInfo, Close, CloseCode, ServiceInfo};
use crate::transport::outbox::Frame;

const PREFIX: &str = "concierge";
const EVENTS: &str = "concierge:events";

fn key(parts: &[&str]) -> String {
    let mut key = String::from(PREFIX);
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
}

fn inbox(node: NodeId) -> String {
    key(&["node", &node.to_string()])
}

fn service_channel(name: &str) -> String {
    key(&["service", name])
}

/// How long a SELF_SUBSCRIBE waits for Redis to confirm the node's
/// subscription to the service's channel before it is answered anyway.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Claims::locate`] waits for the record of a client whose name
/// is claimed (or whose uuid was given) to appear: 20 × 5 ms.
const LOCATE_ATTEMPTS: usize = 20;
const LOCATE_PAUSE: Duration = Duration::from_millis(5);

/// Changes to the set of service channels this node follows, applied in
/// order by the subscriber task (the one owner of the subscription).
enum WatchCommand {
    /// Subscribe; `confirmed` is answered once Redis confirmed (or failed).
    Watch {
        name: String,
        confirmed: oneshot::Sender<()>,
    },
    Unwatch(String),
}

/// The shared namespace as read from Redis.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub clients: Vec<(ClientInfo, NodeId)>,
    /// Services with their subscribers, in subscription order.
    pub services: Vec<ServiceInfo>,
}

/// A client as stored in the `clients` hash.
#[derive(Serialize, Deserialize)]
struct StoredClient {
    client: ClientInfo,
    node: NodeId,
}

/// The first line of every message on a channel; a frame, when the route
/// carries one, follows after a newline, byte for byte.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    from: NodeId,
    route: Route,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Route {
    Event { event: Event },
    All { except: Option<Uuid> },
    Client { to: Uuid },
    Service { name: String, except: Option<Uuid> },
}

fn encode(from: NodeId, route: Route, frame: Option<&Frame>) -> Vec<u8> {
    let header = Header { from, route };
    // A header is plain data: serializing it cannot fail.
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    if let Some(frame) = frame {
        out.extend_from_slice(frame.payload());
    }
    out
}

/// Parses a channel message; `None` (logged) for anything malformed.
fn decode(payload: &[u8]) -> Option<(NodeId, Inbound)> {
    let split = payload.iter().position(|b| *b == b'\n');
    let (head, body) = match split {
        Some(i) => (&payload[..i], &payload[i + 1..]),
        None => (payload, &[][..]),
    };
    let header: Header = match serde_json::from_slice(head) {
        Ok(header) => header,
        Err(e) => {
            tracing::warn!(error = %e, "dropping a malformed cluster message");
            return None;
        }
    };
    let frame = || match std::str::from_utf8(body) {
        Ok(text) => Some(Frame::new(text)),
        Err(_) => {
            tracing::warn!("dropping a cluster message whose frame is not UTF-8");
            None
        }
    };
    let inbound = match header.route {
        Route::Event { event } => Inbound::Event(event),
        Route::All { except } => Inbound::All {
            except,
            frame: frame()?,
        },
        Route::Client { to } => Inbound::Remote(Remote::Client {
            to,
            frame: frame()?,
        }),
        Route::Service { name, except } => Inbound::Remote(Remote::Service {
            name,
            except,
            frame: frame()?,
        }),
    };
    Some((header.from, inbound))
}

/// Deletes a departed client's records; the name only if it still maps to
/// this uuid (it may have been claimed again already).
const LEFT_SCRIPT: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local ok, c = pcall(cjson.decode, stored)
if ok and c.client and c.client.name then
  local name_key = ARGV[2] .. ':name:' .. c.client.name
  if redis.call('GET', name_key) == ARGV[1] then redis.call('DEL', name_key) end
  if c.node then redis.call('SREM', ARGV[2] .. ':node-clients:' .. c.node, ARGV[1]) end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// State shared by the broker handle and its background tasks.
struct Link {
    node: NodeId,
    lease: Duration,
    client: redis::Client,
    conn: ConnectionManager,
    writes: mpsc::UnboundedSender<redis::Cmd>,
    watches: mpsc::UnboundedSender<WatchCommand>,
    /// Taken by the subscriber task when it starts.
    watch_commands: Mutex<Option<mpsc::UnboundedReceiver<WatchCommand>>>,
    /// The subscription connection is up.
    subscribed: AtomicBool,
    /// The last write (or lease renewal) succeeded.
    writing: AtomicBool,
    /// Set when the shared namespace may have missed this node's writes.
    resync: Notify,
    /// Set once the node deregistered: its lease must not come back.
    leaving: AtomicBool,
    registry: OnceLock<Addr<Registry>>,
}

impl Link {
    fn publish(&self, channel: String, payload: Vec<u8>) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.write(cmd);
    }

    fn write(&self, cmd: redis::Cmd) {
        if self.writes.send(cmd).is_err() {
            tracing::error!("the Redis writer has stopped");
        }
    }

    /// Hands a watch command to the subscriber task.
    fn send_watch(&self, command: WatchCommand) {
        if self.watches.send(command).is_err() {
            tracing::error!("the Redis subscriber has stopped");
        }
    }

    fn registry(&self) -> Option<&Addr<Registry>> {
        self.registry.get()
    }
}

/// The Redis implementation of [`Broker`].
pub struct RedisBroker {
    link: Arc<Link>,
}

/// Claims in the shared namespace, made by sessions (names) and the
/// registry (service names) before they act.
#[derive(Clone)]
pub struct Claims {
    link: Arc<Link>,
}

/// Connects to Redis (retrying until it answers) and returns the broker and
/// the claims handle. Call [`start`] once the registry exists.
pub async fn connect(
    url: &str,
    lease: Duration,
) -> Result<(RedisBroker, Claims), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut delay = Duration::from_millis(100);
    // Bounded timeouts: a request made while Redis is unreachable fails in
    // seconds instead of holding a session (or the registry) indefinitely.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2)
        .set_max_delay(1_000);
    let conn = loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(conn) => break conn,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for Redis at {url}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let (writes, rx) = mpsc::unbounded_channel();
    let (watches, watch_commands) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        node: Uuid::new_v4(),
        lease,
        client,
        conn,
        writes,
        watches,
        watch_commands: Mutex::new(Some(watch_commands)),
        subscribed: AtomicBool::new(false),
        writing: AtomicBool::new(true),
        resync: Notify::new(),
        leaving: AtomicBool::new(false),
        registry: OnceLock::new(),
    });
    actix_web::rt::spawn(writer(link.clone(), rx));
    tracing::info!(node = %link.node, "connected to Redis");
    Ok((RedisBroker { link: link.clone() }, Claims { link }))
}

/// Starts the subscription and lease tasks, which feed `registry`.
pub fn start(claims: &Claims, registry: Addr<Registry>) {
    let link = claims.link.clone();
    if link.registry.set(registry).is_err() {
        tracing::error!("the cluster link was started twice");
        return;
    }
    let commands = link
        .watch_commands
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(commands) = commands else {
        tracing::error!("the cluster link was started twice");
        return;
    };
    actix_web::rt::spawn(subscriber(link.clone(), commands));
    actix_web::rt::spawn(lease_keeper(link));
}

/// Writes commands in order, batching whatever is queued into one pipeline.
async fn writer(link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<redis::Cmd>) {
    let mut conn = link.conn.clone();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        let mut pipe = redis::pipe();
        for cmd in batch.drain(..) {
            pipe.add_command(cmd).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if !link.writing.swap(true, Ordering::Relaxed) {
                    link.resync.notify_one();
                }
            }
            Err(e) => {
                if link.writing.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "Redis write failed: cluster updates are being lost");
                }
                metrics::get().redis_errors.inc();
            }
        }
    }
}

/// Follows this node's channels; after every (re)connection, reconciles the
/// registry with the shared namespace before forwarding anything else, so an
/// event and the snapshot cannot be applied in the wrong order. It also owns
/// the set of watched service channels, so subscribing and unsubscribing
/// happen in the order the registry asked for them.
async fn subscriber(link: Arc<Link>, mut commands: mpsc::UnboundedReceiver<WatchCommand>) {
    let Some(registry) = link.registry().cloned() else {
        return;
    };
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
                delay = Duration::from_millis(100);
                if let Err(e) = resync(&link, &registry).await {
                    tracing::warn!(error = %e, "cannot read the shared namespace");
                    continue;
                }
                link.subscribed.store(true, Ordering::Relaxed);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            if let Some((from, inbound)) = decode(msg.get_payload_bytes()) {
                                if from != link.node {
                                    registry.do_send(inbound);
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
                            if let Err(e) = resync(&link, &registry).await {
                                tracing::warn!(error = %e, "cannot read the shared namespace");
                                break;
                            }
                        }
                    }
                }
                link.subscribed.store(false, Ordering::Relaxed);
                metrics::get().redis_reconnects.inc();
                tracing::error!("lost the Redis subscription; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to Redis");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Subscribes to the events, the node's inbox and the watched services.
async fn subscribe(
    link: &Link,
    watched: &BTreeSet<String>,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let (mut sink, stream) = link.client.get_async_pubsub().await?.split();
    sink.subscribe(EVENTS).await?;
    sink.subscribe(inbox(link.node)).await?;
    if !watched.is_empty() {
        let channels: Vec<String> = watched.iter().map(|name| service_channel(name)).collect();
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
            let channel = service_channel(&name);
            watched.insert(name);
            let result = sink.subscribe(channel).await;
            // The registry waits for this, whatever the outcome.
            let _ = confirmed.send(());
            result
        }
        WatchCommand::Unwatch(name) => {
            watched.remove(&name);
            sink.unsubscribe(service_channel(&name)).await
        }
    }
}

async fn resync(link: &Link, registry: &Addr<Registry>) -> redis::RedisResult<()> {
    let snapshot = load_snapshot(link).await?;
    registry.do_send(Reconcile(snapshot));
    Ok(())
}

async fn load_snapshot(link: &Link) -> redis::RedisResult<Snapshot> {
    let mut conn = link.conn.clone();
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
async fn lease_keeper(link: Arc<Link>) {
    let mut tick = tokio::time::interval(link.lease / 3);
    let mut conn = link.conn.clone();
    let node = link.node.to_string();
    loop {
        tick.tick().await;
        if link.leaving.load(Ordering::Relaxed) {
            return;
        }
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
            if let Some(registry) = link.registry() {
                registry.do_send(Reap { node: other_id });
            }
        }
    }
    Ok(())
}

impl Broker for RedisBroker {
    fn node(&self) -> NodeId {
        self.link.node
    }

    fn is_up(&self) -> bool {
        self.link.subscribed.load(Ordering::Relaxed) && self.link.writing.load(Ordering::Relaxed)
    }

    fn announce(&self, event: &Event) {
        let route = Route::Event {
            event: event.clone(),
        };
        self.link
            .publish(EVENTS.to_owned(), encode(self.link.node, route, None));
    }

    fn record(&self, change: &Event) {
        let mut cmd;
        match change {
            Event::Joined { client, node } => {
                let stored = StoredClient {
                    client: client.clone(),
                    node: *node,
                };
                cmd = redis::cmd("HSET");
                cmd.arg(key(&["clients"]))
                    .arg(client.uuid.to_string())
                    .arg(serde_json::to_string(&stored).unwrap_or_default());
                self.link.write(cmd);
                cmd = redis::cmd("SADD");
                cmd.arg(key(&["node-clients", &node.to_string()]))
                    .arg(client.uuid.to_string());
            }
            Event::Left { uuid } => {
                cmd = redis::cmd("EVAL");
                cmd.arg(LEFT_SCRIPT)
                    .arg(1)
                    .arg(key(&["clients"]))
                    .arg(uuid.to_string())
                    .arg(PREFIX);
            }
            Event::ServiceCreated { service } => {
                cmd = redis::cmd("HSET");
                cmd.arg(key(&["services"]))
                    .arg(&service.name)
                    .arg(serde_json::to_string(service).unwrap_or_default());
            }
            Event::ServiceDeleted { name } => {
                cmd = redis::cmd("HDEL");
                cmd.arg(key(&["services"])).arg(name);
                self.link.write(cmd);
                cmd = redis::cmd("DEL");
                cmd.arg(key(&["subs", name]));
            }
            Event::Subscribed { service, uuid } => {
                let micros = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                cmd = redis::cmd("ZADD");
                cmd.arg(key(&["subs", service]))
                    .arg("NX")
                    .arg(micros)
                    .arg(uuid.to_string());
            }
            Event::Unsubscribed { service, uuid } => {
                cmd = redis::cmd("ZREM");
                cmd.arg(key(&["subs", service])).arg(uuid.to_string());
            }
            Event::NodeDown { node } => {
                cmd = redis::cmd("SREM");
                cmd.arg(key(&["nodes"])).arg(node.to_string());
                self.link.write(cmd);
                cmd = redis::cmd("DEL");
                cmd.arg(key(&["node-clients", &node.to_string()]));
            }
        }
        self.link.write(cmd);
    }

    fn broadcast(&self, frame: &Frame, except: Option<Uuid>) {
        let payload = encode(self.link.node, Route::All { except }, Some(frame));
        self.link.publish(EVENTS.to_owned(), payload);
    }

    fn forward(&self, node: NodeId, to: Uuid, frame: &Frame) {
        let payload = encode(self.link.node, Route::Client { to }, Some(frame));
        self.link.publish(inbox(node), payload);
    }

    fn publish_service(&self, name: &str, except: Option<Uuid>, frame: &Frame) {
        let route = Route::Service {
            name: name.to_owned(),
            except,
        };
        let payload = encode(self.link.node, route, Some(frame));
        self.link.publish(service_channel(name), payload);
    }

    fn watch(&self, name: &str) -> Watching {
        let (confirmed, done) = oneshot::channel();
        let command = WatchCommand::Watch {
            name: name.to_owned(),
            confirmed,
        };
        self.link.send_watch(command);
        if !self.link.subscribed.load(Ordering::Relaxed) {
            // The watch starts with the next subscription; nothing can be
            // confirmed now.
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let _ = tokio::time::timeout(WATCH_TIMEOUT, done).await;
        })
    }

    fn unwatch(&self, name: &str) {
        self.link.send_watch(WatchCommand::Unwatch(name.to_owned()));
    }
}

impl Claims {
    /// Claims a client name for `uuid`; false when another client holds it.
    pub async fn claim_name(&self, name: &str, uuid: Uuid) -> redis::RedisResult<bool> {
        let mut conn = self.link.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key(&["name", name]))
            .arg(uuid.to_string())
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Claims a service name; `Some(existing)` when it already exists.
    pub async fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> redis::RedisResult<Option<ServiceInfo>> {
        let mut conn = self.link.conn.clone();
        let json = serde_json::to_string(service).unwrap_or_default();
        let created: bool = redis::cmd("HSETNX")
            .arg(key(&["services"]))
            .arg(&service.name)
            .arg(json)
            .query_async(&mut conn)
            .await?;
        if created {
            return Ok(None);
        }
        let existing: Option<String> = redis::cmd("HGET")
            .arg(key(&["services"]))
            .arg(&service.name)
            .query_async(&mut conn)
            .await?;
        Ok(Some(
            existing
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_else(|| service.clone()),
        ))
    }

    /// Claims this node's names again after an outage; a client whose name
    /// was taken meanwhile by someone else is closed with 4005.
    pub fn reclaim_names(&self, names: Vec<(String, Uuid)>) {
        let claims = self.clone();
        actix_web::rt::spawn(async move {
            for (name, uuid) in names {
                let holder = match claims.claim_name(&name, uuid).await {
                    Ok(true) => continue,
                    Ok(false) => claims.holder(&name).await,
                    Err(e) => {
                        tracing::warn!(error = %e, %name, "cannot reclaim a name");
                        continue;
                    }
                };
                if holder == Ok(Some(uuid)) {
                    continue;
                }
                tracing::warn!(%name, %uuid, "the name was claimed elsewhere during an outage");
                if let Some(registry) = claims.link.registry() {
                    registry.do_send(Evict {
                        uuid,
                        close: Close::new(
                            CloseCode::DuplicateAuth,
                            format!("the name {name:?} was claimed on another replica while this one was cut off"),
                        ),
                    });
                }
            }
        });
    }

    /// Finds a client in the shared namespace, by name or by uuid: its
    /// record and its node. For a target this node has not heard of yet.
    pub async fn locate(
        &self,
        name: Option<&str>,
        uuid: Option<Uuid>,
    ) -> redis::RedisResult<Option<(ClientInfo, NodeId)>> {
        let uuid = match (uuid, name) {
            (Some(uuid), _) => uuid,
            (None, Some(name)) => match self.holder(name).await? {
                Some(uuid) => uuid,
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        let mut conn = self.link.conn.clone();
        // A name is claimed before its client is registered, and the record
        // is written just after the client got HELLO: give it a moment.
        for _ in 0..LOCATE_ATTEMPTS {
            let stored: Option<String> = redis::cmd("HGET")
                .arg(key(&["clients"]))
                .arg(uuid.to_string())
                .query_async(&mut conn)
                .await?;
            if let Some(stored) = stored {
                return Ok(serde_json::from_str::<StoredClient>(&stored)
                    .ok()
                    .map(|s| (s.client, s.node)));
            }
            tokio::time::sleep(LOCATE_PAUSE).await;
        }
        Ok(None)
    }

    async fn holder(&self, name: &str) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = self.link.conn.clone();
        let holder: Option<String> = redis::cmd("GET")
            .arg(key(&["name", name]))
            .query_async(&mut conn)
            .await?;
        Ok(holder.and_then(|h| h.parse().ok()))
    }

    /// Removes this node from the cluster at once (graceful shutdown): its
    /// lease and its membership, so nobody waits for the lease to expire.
    pub async fn deregister(&self) {
        let link = &self.link;
        link.leaving.store(true, Ordering::Relaxed);
        let node = link.node.to_string();
        let mut conn = link.conn.clone();
        let result: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(key(&["lease", &node]))
            .ignore()
            .cmd("SREM")
            .arg(key(&["nodes"]))
            .arg(&node)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot deregister from Redis");
        }
    }
}
