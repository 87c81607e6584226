//! The Redis cluster: what makes N replicas behave like one gateway.
//!
//! The shared namespace lives in Redis keys ([`wire`] lists them); each
//! replica keeps a copy of it current from the events on a shared channel.
//! A node subscribes to the events, its inbox and the channel of each
//! service owned elsewhere that has subscribers on it, so it receives a
//! frame only if one of its clients is a recipient. A watch resolves only
//! once Redis has confirmed the node's subscription to that service's
//! channel, so a broadcast sent after a subscriber learnt it is subscribed
//! reaches it.

mod link;
pub mod master;
pub mod store;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManagerConfig;
use tokio::sync::{mpsc, oneshot, Notify};
use uuid::Uuid;

use self::link::{Link, WatchCommand};
use self::master::{Endpoint, Master};
use self::store::RedisStore;
use self::wire::{key, Route, StoredClient, EVENTS, PREFIX};
use super::store::Store;
use super::{Cluster, ClusterError, Event, Handoff, Inbound, NodeId, Pending};
use crate::protocol::{ClientInfo, Close, CloseCode, ServiceInfo};
use crate::transport::outbox::Frame;

/// How long a watch waits for Redis to confirm the node's subscription to
/// the service's channel before it resolves anyway.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Cluster::locate`] waits for the record of a client whose name
/// is claimed (or whose uuid was given) to appear: 20 × 5 ms.
const LOCATE_ATTEMPTS: usize = 20;
const LOCATE_PAUSE: Duration = Duration::from_millis(5);

/// How often, and how far apart, a name is claimed again after the link
/// came back when Redis answers with an error (it may be failing over).
const RECLAIM_ATTEMPTS: u32 = 10;
const RECLAIM_PAUSE: Duration = Duration::from_millis(500);

/// How long a graceful stop waits for queued writes to reach Redis.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

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

/// One replica's handle on the cluster.
pub struct RedisCluster {
    link: Arc<Link>,
    store: Arc<dyn Store>,
}

fn unavailable(e: redis::RedisError) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// The store in Redis, for a command: no retry, an error at once when Redis
/// does not answer.
pub async fn open_store(endpoint: Endpoint) -> Result<Arc<dyn Store>, ClusterError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1);
    let shown = endpoint.describe();
    let master = Master::connect(Arc::new(endpoint), config)
        .await
        .map_err(|e| ClusterError::Unavailable(format!("Redis at {shown} does not answer: {e}")))?;
    Ok(Arc::new(RedisStore::new(master, PREFIX)))
}

/// Connects to Redis (retrying until it answers) and starts the link's
/// tasks; what they receive goes to `inbound`.
pub async fn connect(
    endpoint: Endpoint,
    lease: Duration,
    inbound: mpsc::UnboundedSender<Inbound>,
) -> Result<RedisCluster, ClusterError> {
    let mut delay = Duration::from_millis(100);
    // Bounded timeouts: a request made while Redis is unreachable fails in
    // seconds instead of holding a client (or an actor) indefinitely.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let shown = endpoint.describe();
    let endpoint = Arc::new(endpoint);
    let master = loop {
        match Master::connect(endpoint.clone(), config.clone()).await {
            Ok(master) => break master,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for Redis at {shown}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let store: Arc<dyn Store> = Arc::new(RedisStore::new(master.clone(), PREFIX));
    let (writes, write_rx) = mpsc::unbounded_channel();
    let (watches, watch_rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        node: Uuid::new_v4(),
        lease,
        master,
        writes,
        watches,
        inbound,
        subscribed: AtomicBool::new(false),
        writing: AtomicBool::new(true),
        resync: Notify::new(),
        leaving: AtomicBool::new(false),
    });
    tokio::spawn(link::writer(link.clone(), write_rx));
    tokio::spawn(link::subscriber(link.clone(), watch_rx));
    tokio::spawn(link::lease_keeper(link.clone()));
    tracing::info!(node = %link.node, "connected to Redis at {shown}");
    Ok(RedisCluster { link, store })
}

impl RedisCluster {
    async fn holder(link: &Link, name: &str) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = link.master.conn();
        let holder: Option<String> = redis::cmd("GET")
            .arg(key(&["name", name]))
            .query_async(&mut conn)
            .await?;
        Ok(holder.and_then(|h| h.parse().ok()))
    }

    async fn claim(link: &Link, name: &str, uuid: Uuid) -> redis::RedisResult<bool> {
        link.flushed().await;
        let mut conn = link.master.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(key(&["name", name]))
            .arg(uuid.to_string())
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }
}

impl Cluster for RedisCluster {
    fn node(&self) -> NodeId {
        self.link.node
    }

    fn health(&self) -> Result<(), &'static str> {
        if self.link.is_up() {
            Ok(())
        } else {
            Err("the link to Redis is down")
        }
    }

    fn departure(&self) -> Close {
        Close::new(
            CloseCode::ServiceRestart,
            "this replica is restarting: reconnect to another",
        )
    }

    fn shares_files(&self) -> bool {
        true
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

    fn announce(&self, event: &Event) {
        let route = Route::Event {
            event: event.clone(),
        };
        self.link
            .publish(EVENTS.to_owned(), wire::encode(self.link.node, route, None));
    }

    fn send_to_all(&self, frame: &Frame, except: Option<Uuid>) -> Handoff {
        let payload = wire::encode(self.link.node, Route::All { except }, Some(frame));
        self.link.hand_off(EVENTS.to_owned(), payload, false)
    }

    fn send_to_node(&self, node: NodeId, to: Uuid, frame: &Frame) -> Handoff {
        let payload = wire::encode(self.link.node, Route::Client { to }, Some(frame));
        self.link.hand_off(wire::inbox(node), payload, true)
    }

    fn take_over(&self, node: NodeId, uuid: Uuid) {
        let payload = wire::encode(self.link.node, Route::TakeOver { uuid }, None);
        self.link.publish(wire::inbox(node), payload);
    }

    fn publish_service(&self, name: &str, except: Option<Uuid>, frame: &Frame) -> Handoff {
        let route = Route::Service {
            name: name.to_owned(),
            except,
        };
        let payload = wire::encode(self.link.node, route, Some(frame));
        self.link
            .hand_off(wire::service_channel(name), payload, false)
    }

    fn watch(&self, name: &str) -> Pending<()> {
        let (confirmed, done) = oneshot::channel();
        self.link.send_watch(WatchCommand::Watch {
            name: name.to_owned(),
            confirmed,
        });
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

    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>> {
        let link = self.link.clone();
        let name = name.to_owned();
        Box::pin(async move {
            RedisCluster::claim(&link, &name, uuid)
                .await
                .map_err(unavailable)
        })
    }

    fn claim_service(
        &self,
        service: &ServiceInfo,
    ) -> Pending<Result<Option<ServiceInfo>, ClusterError>> {
        let link = self.link.clone();
        let service = service.clone();
        Box::pin(async move {
            link.flushed().await;
            let mut conn = link.master.conn();
            let json = serde_json::to_string(&service).unwrap_or_default();
            let created: bool = redis::cmd("HSETNX")
                .arg(key(&["services"]))
                .arg(&service.name)
                .arg(json)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if created {
                return Ok(None);
            }
            let existing: Option<String> = redis::cmd("HGET")
                .arg(key(&["services"]))
                .arg(&service.name)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(Some(
                existing
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or(service),
            ))
        })
    }

    fn reclaim_names(&self, names: Vec<(String, Uuid)>) {
        let link = self.link.clone();
        tokio::spawn(async move {
            for (name, uuid) in names {
                // An error is not an answer: Redis may be failing over.
                // Try again a few times; only another holder loses the name.
                for attempt in 1..=RECLAIM_ATTEMPTS {
                    let holder = match RedisCluster::claim(&link, &name, uuid).await {
                        Ok(true) => break,
                        Ok(false) => RedisCluster::holder(&link, &name).await,
                        Err(e) => Err(e),
                    };
                    match holder {
                        Ok(Some(h)) if h == uuid => break,
                        Ok(Some(_)) => {
                            tracing::warn!(%name, %uuid, "the name was claimed elsewhere during an outage");
                            link.report(Inbound::NameLost {
                                uuid,
                                close: Close::new(
                                    CloseCode::DuplicateAuth,
                                    format!("the name {name:?} was claimed on another replica while this one was cut off"),
                                ),
                            });
                            break;
                        }
                        // Freed between the claim and the look: claim again.
                        Ok(None) => {}
                        Err(e) if attempt == RECLAIM_ATTEMPTS => {
                            tracing::warn!(error = %e, %name, "cannot reclaim a name");
                        }
                        Err(_) => tokio::time::sleep(RECLAIM_PAUSE).await,
                    }
                }
            }
        });
    }

    fn locate(
        &self,
        name: Option<&str>,
        uuid: Option<Uuid>,
    ) -> Pending<Result<Option<(ClientInfo, NodeId)>, ClusterError>> {
        // With Redis down the lookup would only fail, slowly.
        if !self.link.is_up() {
            return Box::pin(std::future::ready(Ok(None)));
        }
        let link = self.link.clone();
        let name = name.map(str::to_owned);
        Box::pin(async move {
            let uuid = match (uuid, name) {
                (Some(uuid), _) => uuid,
                (None, Some(name)) => match RedisCluster::holder(&link, &name)
                    .await
                    .map_err(unavailable)?
                {
                    Some(uuid) => uuid,
                    None => return Ok(None),
                },
                (None, None) => return Ok(None),
            };
            let mut conn = link.master.conn();
            // A name is claimed before its client is registered, and the
            // record is written just after the client got HELLO: give it a
            // moment.
            for _ in 0..LOCATE_ATTEMPTS {
                let stored: Option<String> = redis::cmd("HGET")
                    .arg(key(&["clients"]))
                    .arg(uuid.to_string())
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if let Some(stored) = stored {
                    return Ok(serde_json::from_str::<StoredClient>(&stored)
                        .ok()
                        .map(|s| (s.client, s.node)));
                }
                tokio::time::sleep(LOCATE_PAUSE).await;
            }
            Ok(None)
        })
    }

    fn deregister(&self) -> Pending<()> {
        let link = self.link.clone();
        Box::pin(async move {
            // What this node queued before stopping (its clients'
            // departures) reaches Redis before its lease goes.
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, link.flushed()).await;
            link.leaving.store(true, Ordering::Relaxed);
            let node = link.node.to_string();
            let mut conn = link.master.conn();
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
        })
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
