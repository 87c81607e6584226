//! The Redis cluster: what makes N replicas behave like one gateway.
//!
//! The shared namespace lives in Redis keys ([`wire`] lists them); each
//! replica keeps a copy of it current from the events on a shared channel.
//! The three parts of the seam share one [`link`] to Redis (one writer, one
//! subscription, one lease keeper), so that what a node records and what it
//! sends reach the others in the order it did them:
//! [`RedisBroker`](broker::RedisBroker) (pub/sub),
//! [`RedisClaims`](claims::RedisClaims) (names, records, the node's lease),
//! [`RedisStore`] (the features' state) and
//! [`RedisHistory`](history::RedisHistory) (services' histories, in
//! streams). The jobs' [`RedisLedger`] and hosts' [`RedisHealth`] use the
//! same master's connection, under the same prefix (their keys are in
//! [`ledger`] and [`health`]).

mod broker;
mod claims;
pub mod health;
mod history;
pub mod ledger;
mod link;
pub mod master;
pub mod store;
mod wire;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use self::broker::RedisBroker;
use self::claims::RedisClaims;
use self::health::RedisHealth;
use self::history::RedisHistory;
use self::ledger::RedisLedger;
use self::link::Link;
use self::master::{Endpoint, Master};
use self::store::RedisStore;
use self::wire::PREFIX;
use super::health::HealthStore;
use super::ledger::Ledger;
use super::store::Store;
use super::{ClusterError, Inbound};

/// The parts of a replica's seam, on one link, and the ledger and the
/// health store on the same master.
pub struct Parts {
    pub broker: RedisBroker,
    pub claims: RedisClaims,
    pub store: Arc<dyn Store>,
    pub history: Arc<RedisHistory>,
    pub ledger: Arc<dyn Ledger>,
    pub health: Arc<dyn HealthStore>,
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
    inbound: mpsc::Sender<Inbound>,
) -> Result<Parts, ClusterError> {
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
    let ledger: Arc<dyn Ledger> = Arc::new(RedisLedger::new(master.clone(), PREFIX));
    let health: Arc<dyn HealthStore> = Arc::new(RedisHealth::new(master.clone(), PREFIX));
    let (writes, write_rx) = mpsc::channel(link::WRITES);
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
    let history = Arc::new(RedisHistory::new(link.clone()));
    tokio::spawn(link::writer(link.clone(), write_rx));
    tokio::spawn(link::subscriber(link.clone(), watch_rx, history.clone()));
    tokio::spawn(link::lease_keeper(link.clone()));
    tracing::info!(node = %link.node, "connected to Redis at {shown}");
    Ok(Parts {
        broker: RedisBroker { link: link.clone() },
        claims: RedisClaims { link },
        store,
        history,
        ledger,
        health,
    })
}
