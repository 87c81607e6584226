//! The [`Claims`] of replicas sharing one Redis: keys claimed with
//! `SET NX` / `HSETNX` (a name taken over with a script that compares its
//! holder), records written through the node's one writer, in
//! order with what its broker sends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::link::Link;
use super::wire::{self, key, Route, StoredClient, PREFIX};
use crate::cluster::{Claims, ClusterError, Event, Inbound, NodeId, Pending};
use crate::protocol::{ClientInfo, Close, CloseCode, ServiceInfo};

/// How long [`Claims::locate`] waits for the record of a client whose name
/// is claimed (or whose uuid was given) to appear: 20 × 5 ms.
const LOCATE_ATTEMPTS: usize = 20;
const LOCATE_PAUSE: Duration = Duration::from_millis(5);

/// How often, and how far apart, a name is claimed again after the link
/// came back when Redis answers with an error (it may be failing over).
const RECLAIM_ATTEMPTS: u32 = 10;
const RECLAIM_PAUSE: Duration = Duration::from_millis(500);

/// How many names one look at their holders asks Redis for at once.
const HOLDERS_BATCH: usize = 1_000;

/// How long a graceful stop waits for queued writes to reach Redis.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Deletes a departed client's records; the name, and the proof kept with
/// it, only if they are still this uuid's (it may have been claimed again
/// already). The services it claimed (`owned:{uuid}`) go too, with their
/// histories, each only if it still names it as the owner: a departure is
/// written back after an outage even when the delete of its services was
/// lost.
const LEFT_SCRIPT: &str = r#"
local owned_key = ARGV[2] .. ':owned:' .. ARGV[1]
local services_key = ARGV[2] .. ':services'
for _, name in ipairs(redis.call('SMEMBERS', owned_key)) do
  local s = redis.call('HGET', services_key, name)
  if s then
    local ok, svc = pcall(cjson.decode, s)
    if ok and svc.owner_uuid == ARGV[1] then
      redis.call('HDEL', services_key, name)
      redis.call('DEL', ARGV[2] .. ':subs:' .. name)
      redis.call('DEL', ARGV[2] .. ':history:' .. name, ARGV[2] .. ':history-head:' .. name)
    end
  end
end
redis.call('DEL', owned_key)
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local ok, c = pcall(cjson.decode, stored)
if ok and c.client and c.client.name then
  local name_key = ARGV[2] .. ':name:' .. c.client.name
  if redis.call('GET', name_key) == ARGV[1] then redis.call('DEL', name_key) end
  local proof_key = ARGV[2] .. ':resume:' .. c.client.name
  local proof = redis.call('GET', proof_key)
  if proof and string.sub(proof, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then redis.call('DEL', proof_key) end
  if c.node then redis.call('SREM', ARGV[2] .. ':node-clients:' .. c.node, ARGV[1]) end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// Deletes a service (`ARGV[1]`): its record, its subscribers and its
/// history (`KEYS[4]`, `KEYS[5]`), only if
/// the record still names `ARGV[2]` as the owner (and the name from that
/// owner's `owned:{uuid}` in any case): a late delete from an old owner
/// (its departure written after another replica reaped it and a new owner
/// claimed the name) leaves the newer claim alone.
const SERVICE_DELETED_SCRIPT: &str = r#"
redis.call('SREM', KEYS[3], ARGV[1])
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local ok, s = pcall(cjson.decode, stored)
if ok and s.owner_uuid ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
return 1
"#;

/// Claims a service name: records the service (`ARGV[2]`) unless the name
/// is taken, and adds it to its owner's `owned:{uuid}` (`KEYS[2]`). Returns
/// nil when claimed, the record holding the name otherwise.
const CLAIM_SERVICE_SCRIPT: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  return nil
end
return redis.call('HGET', KEYS[1], ARGV[1])
"#;

/// Writes a service's record back (after an outage) unless another owner
/// claimed the name meanwhile: the claim stays with whoever holds it.
const SERVICE_WRITTEN_BACK_SCRIPT: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local ok, s = pcall(cjson.decode, stored)
  if ok and s.owner_uuid ~= ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"#;

/// Moves the client name KEYS[1] to ARGV[1] if ARGV[2] (or nobody, or
/// ARGV[1] already) holds it and, when ARGV[3] is not empty, the proof
/// KEYS[2] kept for the holder is ARGV[3]: 1 when it did, else 0.
const CLAIM_FROM_SCRIPT: &str = r#"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  if held ~= ARGV[2] then return 0 end
  if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) ~= held .. ':' .. ARGV[3] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Keeps the proof ARGV[1]:ARGV[2] in KEYS[2] while ARGV[1] holds the name
/// KEYS[1].
const VOUCH_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
end
return 0
"#;

fn unavailable(e: redis::RedisError) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// One replica's claims.
pub struct RedisClaims {
    pub(super) link: Arc<Link>,
}

impl RedisClaims {
    async fn holder(link: &Link, name: &str) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = link.master.conn();
        let holder: Option<String> = redis::cmd("GET")
            .arg(key(&["name", name]))
            .query_async(&mut conn)
            .await?;
        Ok(holder.and_then(|h| h.parse().ok()))
    }

    /// The holders of `names`, in order, in batches of [`HOLDERS_BATCH`].
    async fn holders(
        link: &Link,
        names: &[(String, Uuid)],
    ) -> redis::RedisResult<Vec<Option<Uuid>>> {
        let mut conn = link.master.conn();
        let mut holders = Vec::with_capacity(names.len());
        for batch in names.chunks(HOLDERS_BATCH) {
            let mut mget = redis::cmd("MGET");
            for (name, _) in batch {
                mget.arg(key(&["name", name]));
            }
            let held: Vec<Option<String>> = mget.query_async(&mut conn).await?;
            holders.extend(held.into_iter().map(|h| h.and_then(|h| h.parse().ok())));
        }
        Ok(holders)
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

impl Claims for RedisClaims {
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
            // Recorded only when written back: a service is created by
            // [`Claims::claim_service`].
            Event::ServiceCreated { service } => {
                cmd = redis::cmd("EVAL");
                cmd.arg(SERVICE_WRITTEN_BACK_SCRIPT)
                    .arg(2)
                    .arg(key(&["services"]))
                    .arg(key(&["owned", &service.owner_uuid.to_string()]))
                    .arg(&service.name)
                    .arg(service.owner_uuid.to_string())
                    .arg(serde_json::to_string(service).unwrap_or_default());
            }
            Event::ServiceDeleted { name, owner } => {
                cmd = redis::cmd("EVAL");
                cmd.arg(SERVICE_DELETED_SCRIPT)
                    .arg(5)
                    .arg(key(&["services"]))
                    .arg(key(&["subs", name]))
                    .arg(key(&["owned", &owner.to_string()]))
                    .arg(key(&["history", name]))
                    .arg(key(&["history-head", name]))
                    .arg(name)
                    .arg(owner.to_string());
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

    fn take_over(&self, node: NodeId, uuid: Uuid) {
        let payload = wire::encode(self.link.node, Route::TakeOver { uuid }, None);
        self.link.publish(wire::inbox(node), payload);
    }

    fn claim_name(&self, name: &str, uuid: Uuid) -> Pending<Result<bool, ClusterError>> {
        let link = self.link.clone();
        let name = name.to_owned();
        Box::pin(async move {
            RedisClaims::claim(&link, &name, uuid)
                .await
                .map_err(unavailable)
        })
    }

    fn claim_name_from(
        &self,
        name: &str,
        uuid: Uuid,
        holder: Uuid,
        proof: Option<&str>,
    ) -> Pending<Result<bool, ClusterError>> {
        let link = self.link.clone();
        let name = name.to_owned();
        let proof = proof.unwrap_or_default().to_owned();
        Box::pin(async move {
            link.flushed().await;
            let mut conn = link.master.conn();
            let moved: i64 = redis::cmd("EVAL")
                .arg(CLAIM_FROM_SCRIPT)
                .arg(2)
                .arg(key(&["name", &name]))
                .arg(key(&["resume", &name]))
                .arg(uuid.to_string())
                .arg(holder.to_string())
                .arg(proof)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(moved == 1)
        })
    }

    fn vouch(&self, name: &str, uuid: Uuid, hash: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(VOUCH_SCRIPT)
            .arg(2)
            .arg(key(&["name", name]))
            .arg(key(&["resume", name]))
            .arg(uuid.to_string())
            .arg(hash);
        self.link.write(cmd);
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
            let existing: Option<String> = redis::cmd("EVAL")
                .arg(CLAIM_SERVICE_SCRIPT)
                .arg(2)
                .arg(key(&["services"]))
                .arg(key(&["owned", &service.owner_uuid.to_string()]))
                .arg(&service.name)
                .arg(json)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            // Taken: by the service recorded, or (a record this node cannot
            // read) by someone.
            Ok(existing.map(|json| serde_json::from_str(&json).unwrap_or(service)))
        })
    }

    fn reclaim_names(&self, names: Vec<(String, Uuid)>) {
        let link = self.link.clone();
        tokio::spawn(async move {
            // Most are still this node's: one look at them all first.
            let held = RedisClaims::holders(&link, &names)
                .await
                .unwrap_or_default();
            for (i, (name, uuid)) in names.into_iter().enumerate() {
                if held.get(i).copied().flatten() == Some(uuid) {
                    continue;
                }
                // An error is not an answer: Redis may be failing over.
                // Try again a few times; only another holder loses the name.
                for attempt in 1..=RECLAIM_ATTEMPTS {
                    let holder = match RedisClaims::claim(&link, &name, uuid).await {
                        Ok(true) => break,
                        Ok(false) => RedisClaims::holder(&link, &name).await,
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
                            })
                            .await;
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
                (None, Some(name)) => match RedisClaims::holder(&link, &name)
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
}
