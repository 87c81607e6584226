//! The VPN actor: WireGuard configs for the fleet's hosts, and the server
//! interface kept equal to them.
//!
//! A fetch for a client NAME (seed 003's `get_vpn_conf`) records a peer in
//! the cluster's store (its public key, tunnel addresses from the pools,
//! the token it came with; see [`peers`]) and answers a config `wg-quick`
//! reads ([`conf`]). Every replica answers fetches; a replica with
//! `vpn_interface` set also keeps that interface's peers equal to the
//! records of peers whose token is still valid ([`device`]), at start, when
//! any replica changes a record, a token is revoked or a peer's token
//! expires (within a second), and every `vpn_resync_secs` whatever happened
//! (the interface edited by hand, a change missed). Without an interface, or
//! without the right to drive it, configs are still issued and the status
//! says why no interface is managed.

pub mod conf;
pub mod device;
pub mod peers;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use ipnet::IpNet;
use serde::Serialize;
use wireguard_control::{Key, KeyPair};

use crate::auth::{Auth, Claims, Role};
use crate::cluster::store::{Changed, Store};
use crate::metrics;
use crate::protocol::agent::args::GetVpnConf;
use crate::protocol::agent::{Failure, Reason};
use peers::Peer;
pub use settings::VpnSettings;

/// How soon after a reported change the interface is synced.
const SOON: Duration = Duration::from_millis(200);
/// How often the interface's counters are read for the metrics.
const STATS: Duration = Duration::from_secs(1);

/// Why a fetch (or a revoke) failed: the `reason` of seed 003's error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpnError {
    #[error("this gateway issues no VPN configs (its vpn_endpoint is not set)")]
    Disabled,
    #[error("{0}")]
    Forbidden(String),
    #[error("public_key {0:?} is not a WireGuard public key (32 bytes in base64)")]
    BadPublicKey(String),
    #[error("conf_type {0:?} is not offered: only \"wireguard\"")]
    BadConfType(String),
    #[error("tun_mode {0:?} is not offered: WireGuard runs over \"udp\"")]
    BadTunMode(String),
    #[error("the address pool {0} has no free address")]
    PoolExhausted(String),
    #[error("no VPN peer named {0:?}")]
    NoSuchPeer(String),
    #[error("{0}")]
    BadArgument(String),
    #[error("{0}")]
    Unavailable(String),
}

impl VpnError {
    /// The stable `reason` code.
    pub fn reason(&self) -> Reason {
        match self {
            VpnError::Disabled => Reason::VpnDisabled,
            VpnError::Forbidden(_) => Reason::Forbidden,
            VpnError::BadPublicKey(_) => Reason::BadPublicKey,
            VpnError::BadConfType(_) => Reason::BadConfType,
            VpnError::BadTunMode(_) => Reason::BadTunMode,
            VpnError::PoolExhausted(_) => Reason::PoolExhausted,
            VpnError::NoSuchPeer(_) => Reason::NotFound,
            VpnError::BadArgument(_) => Reason::BadArgument,
            VpnError::Unavailable(_) => Reason::Unavailable,
        }
    }
}

/// seed 003's error reply.
impl From<VpnError> for Failure {
    fn from(e: VpnError) -> Failure {
        Failure::new(e.reason(), e.to_string())
    }
}

/// One peer as `ctl vpn peers` and `/metrics` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub name: String,
    pub public_key: String,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// Whether its token is still valid (an invalid one is kept off the
    /// interface).
    pub valid: bool,
    /// On the managed interface now.
    pub active: bool,
    pub endpoint: Option<String>,
    /// Seconds since the Unix epoch; 0 means never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The interface's state as of the last sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub interface: Option<String>,
    /// Why no interface is managed, or why the last sync failed.
    pub problem: Option<String>,
    pub server_public_key: Option<String>,
    /// The server's tunnel addresses (the first of each pool), which the
    /// managed interface should have.
    pub server_addresses: Vec<String>,
    pub peers: Vec<PeerView>,
}

/// What the HTTP handlers and sessions hold to reach the VPN.
#[derive(Clone)]
pub struct Vpn {
    addr: Addr<VpnActor>,
    /// It issues configs (its `vpn_endpoint` is set).
    enabled: bool,
}

impl Vpn {
    pub fn start(settings: VpnSettings, store: Arc<dyn Store>, auth: Arc<Auth>) -> Vpn {
        let enabled = settings.endpoint.is_some();
        let actor = VpnActor {
            settings: Arc::new(settings),
            store,
            auth,
            keypair: None,
            records: Vec::new(),
            stats_at: Instant::now(),
            dirty: true,
            syncing: false,
            next_expiry: None,
            logged_problem: None,
        };
        Vpn {
            addr: actor.start(),
            enabled,
        }
    }

    /// Whether this gateway issues VPN configs at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The config for `name`, asked by the holder of `claims`.
    pub async fn fetch(&self, fetch: Fetch) -> Result<String, VpnError> {
        self.addr
            .send(fetch)
            .await
            .map_err(|_| VpnError::Unavailable("the VPN actor stopped".into()))?
    }

    /// Removes `name`'s peer and frees its addresses.
    pub async fn revoke(&self, name: String) -> Result<(), VpnError> {
        self.addr
            .send(Revoke(name))
            .await
            .map_err(|_| VpnError::Unavailable("the VPN actor stopped".into()))?
    }

    /// Every peer with its state (records joined with the interface's).
    pub async fn peers(&self) -> Result<Status, VpnError> {
        self.addr
            .send(Peers)
            .await
            .map_err(|_| VpnError::Unavailable("the VPN actor stopped".into()))?
    }
}

struct VpnActor {
    settings: Arc<VpnSettings>,
    store: Arc<dyn Store>,
    auth: Arc<Auth>,
    keypair: Option<KeyPair>,
    /// The records as of the last full sync.
    records: Vec<Peer>,
    /// When the interface's counters were last read.
    stats_at: Instant,
    /// Something changed since the last sync.
    dirty: bool,
    syncing: bool,
    /// The earliest expiry (Unix seconds) of the tokens of the records as of
    /// the last full sync that had not expired when it began: that peer
    /// leaves the interface at the first tick from then on. Nothing else
    /// reports an expiry, and the resync may be far off (README: "a revoked
    /// or expired token takes its peer off the interface within a second").
    next_expiry: Option<u64>,
    /// The managed interface's problem last logged: a problem that lasts
    /// (no such interface, no right to drive it) is logged once, then
    /// again when it changes or ends, not at every sync.
    logged_problem: Option<String>,
}

impl Actor for VpnActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let changes = futures_util::stream::unfold(self.store.changes(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(Changed::Key { table, .. }) if table != peers::PEERS.name() => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => return Some((Touched, rx)),
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        ctx.add_stream(changes);
        let revocations = futures_util::stream::unfold(self.auth.changes(), |mut rx| async move {
            match rx.recv().await {
                Ok(()) | Err(RecvError::Lagged(_)) => Some((Touched, rx)),
                Err(RecvError::Closed) => None,
            }
        });
        ctx.add_stream(revocations);
        ctx.run_interval(SOON, |act, ctx| act.tick(ctx));
        ctx.run_interval(self.settings.resync, |act, _| act.dirty = true);
    }
}

/// Something the interface may have to follow.
struct Touched;

impl StreamHandler<Touched> for VpnActor {
    fn handle(&mut self, _: Touched, _: &mut Context<Self>) {
        self.dirty = true;
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl VpnActor {
    /// Every tick: a full sync (records read, interface changed) when
    /// something changed, else, every [`STATS`], the interface's counters
    /// for the metrics from the records read last.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            return;
        }
        if self
            .next_expiry
            .is_some_and(|exp| exp <= crate::auth::now_secs())
        {
            // Set again by the sync this starts; should that fail, it is
            // tried again as any failed sync is (within `resync`), not on
            // every tick.
            self.next_expiry = None;
            self.dirty = true;
        }
        let full = self.dirty;
        if !full && self.stats_at.elapsed() < STATS {
            return;
        }
        self.dirty = false;
        self.syncing = true;
        self.stats_at = Instant::now();
        // Before a full sync checks the tokens: one that expires meanwhile is
        // still waited for, and its peer removed by one more sync.
        let started = crate::auth::now_secs();
        let settings = self.settings.clone();
        let store = self.store.clone();
        let auth = self.auth.clone();
        let keypair = self.keypair.clone();
        let cached = self.records.clone();
        let work = async move {
            let keypair = match keypair {
                Some(k) => k,
                None => peers::server_keypair(&store).await?,
            };
            let records = if full {
                peers::list(&store).await?
            } else {
                cached
            };
            let (status, keypair) = sync(settings, auth, records.clone(), keypair, full).await;
            Ok::<_, VpnError>((status, keypair, records))
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, act, _| {
            act.syncing = false;
            match outcome {
                Ok((status, keypair, records)) => {
                    act.keypair = Some(keypair);
                    if act.settings.interface.is_some() {
                        act.log_problem(status.problem.as_deref());
                    }
                    if full {
                        act.next_expiry = records
                            .iter()
                            .map(|p| p.claims.exp)
                            .filter(|exp| *exp > started)
                            .min();
                    }
                    act.records = records;
                    let shown: Vec<metrics::VpnPeer<'_>> = status
                        .peers
                        .iter()
                        .map(|p| metrics::VpnPeer {
                            name: &p.name,
                            active: p.active,
                            latest_handshake: p.latest_handshake,
                            rx_bytes: p.rx_bytes,
                            tx_bytes: p.tx_bytes,
                        })
                        .collect();
                    metrics::get().vpn(&shown);
                }
                // Tried again within `resync`.
                Err(e) => tracing::warn!(error = %e, "cannot sync the VPN peers"),
            }
        }));
    }
}

impl VpnActor {
    /// Logs the managed interface's problem when it is not the one logged
    /// last, and its end.
    fn log_problem(&mut self, problem: Option<&str>) {
        if self.logged_problem.as_deref() == problem {
            return;
        }
        match problem {
            Some(e) => tracing::warn!(
                error = %e,
                "VPN interface not managed (said once; again when this changes)"
            ),
            None => tracing::info!("VPN interface managed"),
        }
        self.logged_problem = problem.map(str::to_owned);
    }
}

/// Syncs the interface (if any, and if `apply`) with the valid records,
/// and reports the state of every record.
async fn sync(
    settings: Arc<VpnSettings>,
    auth: Arc<Auth>,
    records: Vec<Peer>,
    keypair: KeyPair,
    apply: bool,
) -> (Status, KeyPair) {
    let valid: Vec<(Peer, bool)> = records
        .into_iter()
        .map(|p| {
            let ok = auth.check(&p.claims).is_ok();
            (p, ok)
        })
        .collect();
    let desired: Vec<(Key, Vec<IpNet>)> = valid
        .iter()
        .filter(|(_, ok)| *ok)
        .filter_map(|(p, _)| p.key().map(|k| (k, p.allowed_ips())))
        .collect();
    let mut problem = None;
    let mut live: HashMap<String, device::PeerState> = HashMap::new();
    if let Some(name) = settings.interface.clone() {
        let backend = settings.backend.clone();
        let port = settings.listen_port;
        let pair = keypair.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let iface = device::Interface::open(&name, &backend)?;
            let diff = if apply {
                iface
                    .sync(&pair, port, &desired)
                    .map_err(|e| format!("cannot update {name}: {e}"))?
            } else {
                device::Diff::default()
            };
            let peers = iface
                .peers()
                .map_err(|e| format!("cannot read {name}: {e}"))?;
            Ok::<_, String>((diff, peers))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the interface task failed: {e}")));
        match outcome {
            Ok((diff, peers)) => {
                if diff != device::Diff::default() {
                    tracing::info!(
                        added = diff.added,
                        updated = diff.updated,
                        removed = diff.removed,
                        "VPN peers applied"
                    );
                }
                live = peers
                    .into_iter()
                    .map(|p| (p.public_key.clone(), p))
                    .collect();
            }
            // Logged by the actor when it changes, not at every sync.
            Err(e) => problem = Some(e),
        }
    } else {
        problem = Some("no interface is managed: vpn_interface is not set".into());
    }
    let peers = valid
        .into_iter()
        .map(|(p, ok)| {
            let state = live.get(&p.public_key);
            PeerView {
                name: p.name.clone(),
                public_key: p.public_key.clone(),
                ipv4: p.ipv4.map(|a| a.to_string()),
                ipv6: p.ipv6.map(|a| a.to_string()),
                valid: ok,
                active: state.is_some(),
                endpoint: state.and_then(|s| s.endpoint).map(|e| e.to_string()),
                latest_handshake: state
                    .and_then(|s| s.latest_handshake)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
                rx_bytes: state.map_or(0, |s| s.rx_bytes),
                tx_bytes: state.map_or(0, |s| s.tx_bytes),
            }
        })
        .collect();
    let status = Status {
        interface: settings.interface.clone(),
        problem,
        server_public_key: Some(keypair.public.to_base64()),
        server_addresses: settings
            .pools
            .server()
            .iter()
            .map(|a| a.to_string())
            .collect(),
        peers,
    };
    (status, keypair)
}

/// A config fetch (seed 003's `get_vpn_conf`, also `GET /vpn/conf`).
#[derive(Message)]
#[rtype(result = "Result<String, VpnError>")]
pub struct Fetch {
    /// The client the config is for.
    pub name: String,
    /// The verified token of who asks.
    pub claims: Option<Claims>,
    pub conf_type: String,
    pub tun_mode: String,
    /// The client's own public key; `None`: the gateway makes a pair.
    pub public_key: Option<String>,
}

impl Fetch {
    /// The fetch of `name`'s config, for the holder of `claims`, as `args`
    /// ask it (its `name` is the caller's to apply).
    pub fn new(name: String, claims: Option<Claims>, args: &GetVpnConf) -> Fetch {
        Fetch {
            name,
            claims,
            conf_type: args.conf_type().to_owned(),
            tun_mode: args.tun_mode().to_owned(),
            public_key: args.public_key.clone(),
        }
    }
}

impl Handler<Fetch> for VpnActor {
    type Result = ResponseFuture<Result<String, VpnError>>;

    fn handle(&mut self, fetch: Fetch, _: &mut Context<Self>) -> Self::Result {
        let settings = self.settings.clone();
        let store = self.store.clone();
        let keypair = self.keypair.clone();
        // Applied to the interface within SOON.
        self.dirty = true;
        Box::pin(async move {
            let endpoint = settings.endpoint.clone().ok_or(VpnError::Disabled)?;
            if fetch.conf_type != "wireguard" {
                return Err(VpnError::BadConfType(fetch.conf_type));
            }
            if fetch.tun_mode != "udp" {
                return Err(VpnError::BadTunMode(fetch.tun_mode));
            }
            let claims = fetch.claims.ok_or_else(|| {
                VpnError::Forbidden("a VPN config is for a client with a token".into())
            })?;
            if claims.name != fetch.name && claims.role != Role::Admin {
                return Err(VpnError::Forbidden(format!(
                    "{} may fetch only its own config ({}), not {:?}",
                    claims.sub, claims.name, fetch.name
                )));
            }
            let (public, private) = match &fetch.public_key {
                Some(text) => {
                    let key = Key::from_base64(text.trim())
                        .map_err(|_| VpnError::BadPublicKey(text.clone()))?;
                    (key, None)
                }
                None => {
                    let pair = KeyPair::generate();
                    (pair.public, Some(pair.private.to_base64()))
                }
            };
            let server = match keypair {
                Some(k) => k,
                None => peers::server_keypair(&store).await?,
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let peer =
                peers::claim(&store, &fetch.name, &public, &claims, &settings.pools, now).await?;
            tracing::info!(name = %fetch.name, ipv4 = ?peer.ipv4, ipv6 = ?peer.ipv6, "VPN config issued");
            let server_public = server.public.to_base64();
            Ok(conf::render(
                &peer,
                private.as_deref(),
                &conf::Server {
                    public_key: &server_public,
                    endpoint: &endpoint,
                    routes: &settings.routes,
                    dns: &settings.dns,
                    keepalive: settings.keepalive,
                },
            ))
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), VpnError>")]
struct Revoke(String);

impl Handler<Revoke> for VpnActor {
    type Result = ResponseFuture<Result<(), VpnError>>;

    fn handle(&mut self, Revoke(name): Revoke, _: &mut Context<Self>) -> Self::Result {
        self.dirty = true;
        let store = self.store.clone();
        Box::pin(async move {
            match peers::remove(&store, &name).await? {
                Some(_) => Ok(()),
                None => Err(VpnError::NoSuchPeer(name)),
            }
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<Status, VpnError>")]
struct Peers;

impl Handler<Peers> for VpnActor {
    type Result = ResponseFuture<Result<Status, VpnError>>;

    fn handle(&mut self, _: Peers, _: &mut Context<Self>) -> Self::Result {
        let settings = self.settings.clone();
        let store = self.store.clone();
        let auth = self.auth.clone();
        let keypair = self.keypair.clone();
        Box::pin(async move {
            let keypair = match keypair {
                Some(k) => k,
                None => peers::server_keypair(&store).await?,
            };
            let records = peers::list(&store).await?;
            // The interface is read, not changed.
            Ok(sync(settings, auth, records, keypair, false).await.0)
        })
    }
}
