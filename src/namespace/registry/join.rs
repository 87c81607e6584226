//! A client joins: its name is claimed cluster-wide (taken over from an
//! older connection of the same user when it asks to, at once when that
//! connection is on another node, even a dead one), then it is
//! registered and told HELLO, unless it left or the node began to stop
//! meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Evict, Registry};
use crate::cluster::{Cluster, ClusterError, Event};
use crate::namespace::view::ClientRecord;
use crate::protocol::{ClientInfo, Close, CloseCode};
use crate::transport::outbox::Outbox;

/// A client whose IDENTIFY its transport accepted: claim its name and
/// register it. Answered once it has its HELLO.
#[derive(Message)]
#[rtype(result = "Result<Arc<ClientRecord>, Close>")]
pub struct Join {
    pub info: ClientInfo,
    pub local: Local,
}

/// What only this node knows of one of its clients.
pub struct Local {
    pub outbox: Outbox,
    /// The session's private file server key, for its HELLO.
    pub fs_key: String,
    /// Whether it is told of the clients that join and leave.
    pub presence: bool,
    /// Whether it takes its name over from a client of the same user, or
    /// from the session whose `resume` secret it gave.
    pub take_over: bool,
    /// The proof of owning its name of a client without a token.
    pub resume: Option<Resume>,
}

/// A session's `resume` secret (for its HELLO, shown to nobody else and
/// never logged) with what the name's claim keeps of it, and the proof
/// the client gave of owning its name: an earlier session's secret.
pub struct Resume {
    secret: String,
    hash: String,
    presented: Option<String>,
}

impl Resume {
    /// A new secret for a session whose IDENTIFY gave `presented`.
    pub fn new(presented: Option<&str>) -> Result<Resume, Close> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Close::new(
                CloseCode::TryAgainLater,
                format!("cannot make a resume secret now: {e}"),
            )
        })?;
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        Ok(Resume {
            hash: digest(&secret),
            secret,
            presented: presented.map(digest),
        })
    }

    /// The secret, for HELLO.
    pub(super) fn into_secret(self) -> String {
        self.secret
    }
}

/// What is kept of a secret: its SHA-256 (a secret of 256 random bits
/// needs no slow hash).
fn digest(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

/// How a client whose name a newer connection of its user took is closed.
pub(in crate::namespace) fn taken_over() -> Close {
    Close::new(
        CloseCode::TakenOver,
        "a newer connection of the same user took this name over",
    )
}

/// How long a takeover waits for the old client's departure.
const TAKEOVER_PATIENCE: Duration = Duration::from_secs(3);

/// How long a takeover waits between two claims.
const TAKEOVER_PAUSE: Duration = Duration::from_millis(20);

/// The outcome of claiming a name: won, held by another, or not known.
type Claimed = Result<bool, ClusterError>;

/// A claim still being made.
type Claiming = Pin<Box<dyn Future<Output = Claimed>>>;

/// Claims `name` again and again while the client taken over leaves.
async fn claim_until_free(cluster: Arc<Cluster>, name: String, uuid: Uuid) -> Claimed {
    let deadline = Instant::now() + TAKEOVER_PATIENCE;
    loop {
        match cluster.claims().claim_name(&name, uuid).await {
            Ok(false) if Instant::now() < deadline => tokio::time::sleep(TAKEOVER_PAUSE).await,
            claimed => return claimed,
        }
    }
}

impl Handler<Join> for Registry {
    type Result = ResponseActFuture<Self, Result<Arc<ClientRecord>, Close>>;

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> Self::Result {
        if let Some(close) = &self.departing {
            return Box::pin(fut::ready(Err(close.clone())));
        }
        let Join { info, local } = msg;
        self.joining.insert(info.uuid);
        let claim = self.cluster.claims().claim_name(&info.name, info.uuid);
        Box::pin(
            fut::wrap_future::<_, Self>(claim).then(|claimed, act, ctx| {
                fut::wrap_future(act.take_over(claimed, &info, &local, ctx))
                    .map(move |claimed, act: &mut Self, _| act.admit(claimed, info, local))
            }),
        )
    }
}

impl Registry {
    /// After a claim the name's holder won: the holder is taken over
    /// (seed 003) when the newcomer asks to and proves it owns the name:
    /// its token is of the holder's user, or it gave the holder's `resume`
    /// secret. A holder of the same user on this node is closed, and the
    /// name claimed again once its departure frees it. Otherwise the claim
    /// is moved at once in the shared store, comparing the holder (and the
    /// secret), then the holder's node, alive or not, is told to close it:
    /// a dead node's client costs the newcomer no wait for the lease. Any
    /// other outcome stands.
    fn take_over(
        &mut self,
        claimed: Claimed,
        info: &ClientInfo,
        local: &Local,
        ctx: &mut Context<Self>,
    ) -> Claiming {
        let holder = match &claimed {
            Ok(false) if local.take_over => self.dir.named(&info.name),
            _ => None,
        };
        let Some(holder) = holder else {
            return Box::pin(std::future::ready(claimed));
        };
        let (old, node) = (holder.info.uuid, holder.node);
        let by_user = info.user.is_some() && holder.info.user == info.user;
        let proof = match local.resume.as_ref().and_then(|r| r.presented.clone()) {
            _ if by_user => None,
            Some(proof) => Some(proof),
            None => return Box::pin(std::future::ready(claimed)),
        };
        tracing::info!(%old, name = %info.name, %node, "a connection that owns the name takes it over");
        let cluster = self.cluster.clone();
        let (name, uuid) = (info.name.clone(), info.uuid);
        let here = node == self.node;
        if here && by_user {
            ctx.notify(Evict {
                uuid: old,
                close: taken_over(),
            });
            return Box::pin(claim_until_free(cluster, name, uuid));
        }
        let registry = ctx.address();
        Box::pin(async move {
            let moved = cluster
                .claims()
                .claim_name_from(&name, uuid, old, proof.as_deref())
                .await;
            match moved {
                Ok(true) if here => registry.do_send(Evict {
                    uuid: old,
                    close: taken_over(),
                }),
                Ok(true) => cluster.claims().take_over(node, old),
                _ => {}
            }
            moved
        })
    }

    /// Registers a client once its claim is settled, or says why not.
    fn admit(
        &mut self,
        claimed: Claimed,
        info: ClientInfo,
        local: Local,
    ) -> Result<Arc<ClientRecord>, Close> {
        let uuid = info.uuid;
        // Whatever the outcome, the client is no longer joining; whether it
        // still was says whether it left meanwhile.
        let still_wanted = self.joining.remove(&uuid);
        match claimed {
            // It did not leave while its name was being claimed, and the
            // node is not stopping.
            Ok(true) if still_wanted && self.departing.is_none() => {
                tracing::info!(%uuid, name = %info.name, "client identified");
                if let Some(resume) = &local.resume {
                    self.cluster.claims().vouch(&info.name, uuid, &resume.hash);
                }
                let event = Event::Joined {
                    client: info.clone(),
                    node: self.node,
                };
                self.join(info, self.node, Some(local));
                self.share(&event);
                self.dir.client(&uuid).cloned().ok_or_else(|| {
                    Close::new(CloseCode::Unknown, "internal error: the client vanished")
                })
            }
            Ok(true) => {
                // It left, or the node began to stop, while its name was
                // being claimed: give the name back (a departure releases
                // the names it holds) and close it like the rest.
                let claims = self.cluster.claims();
                claims.record(&Event::Joined {
                    client: info,
                    node: self.node,
                });
                claims.record(&Event::Left { uuid });
                Err(self.departing.clone().unwrap_or_else(|| {
                    Close::new(
                        CloseCode::Unknown,
                        "the connection closed while identifying",
                    )
                }))
            }
            Ok(false) => Err(Close::new(
                CloseCode::DuplicateAuth,
                format!("the name {:?} is taken", info.name),
            )),
            Err(e) => Err(Close::new(
                CloseCode::TryAgainLater,
                format!("the cluster cannot register clients now: {e}"),
            )),
        }
    }
}
