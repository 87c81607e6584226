//! Where the Redis master is, and the connection to it that every task of
//! a node shares.
//!
//! With `redis_url` the master is one fixed server. With `redis_sentinels`
//! it moves: when it fails, the Sentinels promote a replica. The `redis`
//! crate's `ConnectionManager` reconnects to the address it was built
//! with, and its Sentinel client resolves the master only when asked (its
//! issue #1438), so after a failover a node would keep dialling the dead
//! master, or keep writing to the old one once it is back as a read-only
//! replica. [`Master`] asks the Sentinels which server is the master every
//! [`RESOLVE_EVERY`] and whenever a task reports that the connection
//! failed, and swaps in a connection to the server they name. Every task
//! takes the current connection for each request ([`Master::conn`]), so
//! they all follow; the subscriptions reconnect through
//! [`Master::client`] and are woken by [`Master::moved`]. What the node
//! wrote to the old master and the new one lacks is written again by the
//! usual recovery (the link notices the failed writes, then reconciles).
//!
//! The `ConnectionManager` also gives up for good on one failure of its
//! own: it reconnects after an I/O error only, so once a reconnection is
//! refused (`AuthenticationFailed`: the password changed, or a promoted
//! replica's is not set yet) it answers that error to every request for
//! as long as it lives. So every failed request ([`Master::failed`]) makes
//! the node check its connection (a PING) and, when that fails too, build
//! a new one, again and again with a bounded backoff until one works;
//! each one built is counted in `cluster_reconnects`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};
use tokio::sync::Notify;

use crate::cluster::settings::redacted;
use crate::cluster::ClusterError;
use crate::metrics;

/// How often the Sentinels are asked where the master is.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);

/// The first and the longest pause between two attempts to build a new
/// connection once the current one stopped working (with Sentinels, at
/// most [`RESOLVE_EVERY`]: they are asked that often whatever happens).
const REPAIR_FIRST_PAUSE: Duration = Duration::from_millis(100);
const REPAIR_LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// How a node finds its Redis master.
pub enum Endpoint {
    /// One server, always the same.
    Url(String),
    /// Whatever server these Sentinels call the master of `master`.
    Sentinels {
        sentinels: Vec<ConnectionInfo>,
        master: String,
    },
}

impl Endpoint {
    /// `redis_url`, or the `redis_sentinels` (comma-separated HOST:PORT or
    /// redis:// URLs; a password in them is used for the Sentinels and for
    /// the master) and their `redis_sentinel_master`.
    pub fn new(url: &str, sentinels: &str, master: &str) -> Result<Endpoint, ClusterError> {
        if sentinels.is_empty() {
            return Ok(Endpoint::Url(url.to_owned()));
        }
        let sentinels = sentinel_addresses(sentinels).map_err(ClusterError::Unavailable)?;
        Ok(Endpoint::Sentinels {
            sentinels,
            master: master.to_owned(),
        })
    }

    /// For log lines: no password.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Url(url) => redacted(url),
            Endpoint::Sentinels { sentinels, master } => {
                let addrs: Vec<String> = sentinels.iter().map(|s| s.addr().to_string()).collect();
                format!(
                    "the master {master:?} of the Sentinels {}",
                    addrs.join(", ")
                )
            }
        }
    }

    /// A client for the master as it is now: for Sentinels, asked again on
    /// every call (they answer with a server that says it is the master).
    async fn resolve(&self) -> RedisResult<Client> {
        match self {
            Endpoint::Url(url) => Client::open(url.as_str()),
            Endpoint::Sentinels { sentinels, master } => {
                let addrs = sentinels.iter().map(|s| s.addr().clone());
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
                let auth = sentinels
                    .iter()
                    .map(|s| s.redis_settings())
                    .find(|r| r.password().is_some());
                if let Some(auth) = auth {
                    if let Some(password) = auth.password() {
                        builder = builder
                            .set_client_to_sentinel_password(password)
                            .set_client_to_redis_password(password);
                    }
                    if let Some(username) = auth.username() {
                        builder = builder
                            .set_client_to_sentinel_username(username)
                            .set_client_to_redis_username(username);
                    }
                }
                builder.build()?.async_get_client().await
            }
        }
    }
}

/// `redis_sentinels` as connection infos; a message naming the bad entry.
pub fn sentinel_addresses(list: &str) -> Result<Vec<ConnectionInfo>, String> {
    let mut infos = Vec::new();
    for entry in list.split(',').map(str::trim) {
        let shown = redacted(entry);
        let url = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("redis://{entry}")
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("{shown:?} is not HOST:PORT or redis://HOST:PORT: {e}"))?;
        match info.addr() {
            ConnectionAddr::Tcp(host, _) if !host.is_empty() => infos.push(info),
            _ => {
                return Err(format!(
                    "{shown:?} names no host: write HOST:PORT, e.g. 10.0.0.5:26379"
                ))
            }
        }
    }
    Ok(infos)
}

/// The connection to the master, as it is now.
struct Current {
    client: Client,
    conn: ConnectionManager,
    /// The master's address, to notice when the Sentinels name another.
    addr: String,
}

/// The node's way to its Redis master; see the module documentation.
pub struct Master {
    endpoint: Arc<Endpoint>,
    config: ConnectionManagerConfig,
    current: ArcSwap<Current>,
    /// A [`repair`] runs: one at a time.
    repairing: AtomicBool,
    moved: Notify,
}

impl Master {
    /// Resolves the master and connects (once: an error if it does not
    /// answer). With Sentinels, starts following them.
    pub async fn connect(
        endpoint: Arc<Endpoint>,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Arc<Master>> {
        let current = open(&endpoint, &config).await?;
        let master = Arc::new(Master {
            endpoint,
            config,
            current: ArcSwap::from_pointee(current),
            repairing: AtomicBool::new(false),
            moved: Notify::new(),
        });
        if matches!(*master.endpoint, Endpoint::Sentinels { .. }) {
            tokio::spawn(follow(Arc::downgrade(&master)));
        }
        Ok(master)
    }

    /// The connection to use for the next request.
    pub fn conn(&self) -> ConnectionManager {
        self.current.load().conn.clone()
    }

    /// A client for the master, for a connection of its own (a
    /// subscription).
    pub fn client(&self) -> Client {
        self.current.load().client.clone()
    }

    /// Resolves once the master has moved to another server.
    pub async fn moved(&self) {
        self.moved.notified().await
    }

    /// A request failed on the connection: check it (and, with
    /// Sentinels, ask them whether the master moved) now rather than at
    /// the next tick, and replace it until one works if it is broken (see
    /// [`repair`]). One repair at a time.
    pub fn failed(self: &Arc<Self>) {
        if !self.repairing.swap(true, Ordering::AcqRel) {
            tokio::spawn(repair(Arc::downgrade(self)));
        }
    }

    /// One attempt of [`repair`]: whether the connection works now.
    async fn check(&self) -> bool {
        let resolved = match self.endpoint.resolve().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::debug!(error = %e, "the Sentinels do not name a master");
                None
            }
        };
        let current = self.current.load_full();
        let moved = resolved
            .as_ref()
            .is_some_and(|c| c.get_connection_info().addr().to_string() != current.addr);
        if !moved {
            let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut self.conn()).await;
            if pong.is_ok() {
                return true;
            }
        }
        let Some(client) = resolved else {
            return false;
        };
        let addr = client.get_connection_info().addr().to_string();
        match ConnectionManager::new_with_config(client.clone(), self.config.clone()).await {
            Ok(conn) => {
                metrics::get().cluster_reconnects.inc();
                self.current.store(Arc::new(Current {
                    client,
                    conn,
                    addr: addr.clone(),
                }));
                if moved {
                    tracing::warn!(from = %current.addr, to = %addr, "the Redis master moved: following it");
                    self.moved.notify_waiters();
                } else {
                    tracing::warn!(%addr, "replaced a broken connection to Redis");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, %addr, "cannot connect to the Redis master");
                false
            }
        }
    }
}

/// Until the connection works (or the node dropped its [`Master`]): asks
/// where the master is, switches to it if it moved, and replaces a
/// connection that fails a PING; between two failed attempts, a pause that
/// doubles up to [`REPAIR_LONGEST_PAUSE`].
async fn repair(master: Weak<Master>) {
    let mut pause = REPAIR_FIRST_PAUSE;
    loop {
        let Some(this) = master.upgrade() else {
            return;
        };
        if this.check().await {
            this.repairing.store(false, Ordering::Release);
            return;
        }
        let longest = match *this.endpoint {
            Endpoint::Url(_) => REPAIR_LONGEST_PAUSE,
            Endpoint::Sentinels { .. } => RESOLVE_EVERY,
        };
        drop(this);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(longest);
    }
}

async fn open(endpoint: &Endpoint, config: &ConnectionManagerConfig) -> RedisResult<Current> {
    let client = endpoint.resolve().await?;
    let addr = client.get_connection_info().addr().to_string();
    let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
    Ok(Current { client, conn, addr })
}

/// Asks the Sentinels where the master is, every [`RESOLVE_EVERY`], for as
/// long as the node holds its [`Master`].
async fn follow(master: Weak<Master>) {
    let mut tick = tokio::time::interval(RESOLVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(master) = master.upgrade() else {
            return;
        };
        // As after a failed request (nothing more while a repair runs).
        master.failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_host_port_or_urls() {
        let infos =
            sentinel_addresses("10.0.0.1:26379, redis://s2:26380,redis://:pw@s3:1").unwrap();
        let addrs: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:26379", "s2:26380", "s3:1"]);
        assert_eq!(infos[2].redis_settings().password(), Some("pw"));
        for bad in ["", "redis://", "unix:///tmp/s.sock", "a b:1"] {
            let err = sentinel_addresses(bad).unwrap_err();
            assert!(!err.contains("pw"), "{err}");
        }
        let err = sentinel_addresses("redis://:secret@:1").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
