//! The VPN's shared state: the server's key pair, one record per peer
//! (its public key, its tunnel addresses, the token it was issued for), and
//! the addresses taken, all in the cluster's [`Store`] so every replica
//! issues the same configs.
//!
//! An address is taken with `compare_and_swap` on its own record before
//! the peer record that names it is written, so two replicas allocating at
//! once never hand out one address; a replica that loses the race for a
//! peer's record gives back what it took and uses the winner's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wireguard_control::{Key, KeyPair};

use super::VpnError;
use crate::auth::Claims;
use crate::cluster::store::{Store, Table};

/// Peer records by client name.
pub const PEERS: Table = Table::new("vpn-peers");
/// Taken addresses: the address → the peer's name.
pub const ADDRESSES: Table = Table::new("vpn-addresses");
/// The server's key pair.
pub const SERVER: Table = Table::new("vpn-server");
const KEYPAIR: &str = "keypair";

/// A peer: who it is, its key and its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Base64, as WireGuard writes keys.
    pub public_key: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The token the config was last fetched with: the peer is valid while
    /// it is.
    pub claims: Claims,
    /// When the config was last fetched, seconds since the Unix epoch.
    pub fetched: u64,
}

impl Peer {
    pub fn key(&self) -> Option<Key> {
        Key::from_base64(&self.public_key).ok()
    }

    /// The peer's addresses as networks of one address each.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        let v4 = self.ipv4.map(|a| IpNet::from(IpAddr::V4(a)));
        let v6 = self.ipv6.map(|a| IpNet::from(IpAddr::V6(a)));
        v4.into_iter().chain(v6).collect()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKeyPair {
    private: String,
}

fn unavailable(e: impl std::fmt::Display) -> VpnError {
    VpnError::Unavailable(e.to_string())
}

/// The server's key pair, made by the first replica that needs it.
pub async fn server_keypair(store: &Arc<dyn Store>) -> Result<KeyPair, VpnError> {
    loop {
        if let Some(bytes) = store.get(SERVER, KEYPAIR).await.map_err(unavailable)? {
            let stored: StoredKeyPair = serde_json::from_slice(&bytes)
                .map_err(|e| VpnError::Unavailable(format!("the server key is unreadable: {e}")))?;
            let private = Key::from_base64(&stored.private)
                .map_err(|_| VpnError::Unavailable("the server key is unreadable".into()))?;
            return Ok(KeyPair::from_private(private));
        }
        let fresh = StoredKeyPair {
            private: KeyPair::generate().private.to_base64(),
        };
        let bytes = serde_json::to_vec(&fresh).map_err(unavailable)?;
        // Of two replicas making one at once, one wins; both read it back.
        store
            .compare_and_swap(SERVER, KEYPAIR, None, Some(bytes))
            .await
            .map_err(unavailable)?;
    }
}

pub async fn get(store: &Arc<dyn Store>, name: &str) -> Result<Option<Peer>, VpnError> {
    match store.get(PEERS, name).await.map_err(unavailable)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            VpnError::Unavailable(format!("the record of peer {name} is unreadable: {e}"))
        }),
        None => Ok(None),
    }
}

/// Every peer record.
pub async fn list(store: &Arc<dyn Store>) -> Result<Vec<Peer>, VpnError> {
    let records = store.list(PEERS).await.map_err(unavailable)?;
    Ok(records
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect())
}

/// The peer record of `name` with this key and token: the one it has
/// (its addresses kept), or a new one with addresses from the pools.
pub async fn claim(
    store: &Arc<dyn Store>,
    name: &str,
    public_key: &Key,
    claims: &Claims,
    pools: &Pools,
    now: u64,
) -> Result<Peer, VpnError> {
    loop {
        if let Some(existing) = store.get(PEERS, name).await.map_err(unavailable)? {
            let mut peer: Peer = serde_json::from_slice(&existing).map_err(unavailable)?;
            peer.public_key = public_key.to_base64();
            peer.claims = claims.clone();
            peer.fetched = now;
            let updated = serde_json::to_vec(&peer).map_err(unavailable)?;
            if store
                .compare_and_swap(PEERS, name, Some(existing), Some(updated))
                .await
                .map_err(unavailable)?
            {
                return Ok(peer);
            }
            continue; // changed meanwhile: read it again
        }
        let ipv4 = match pools.ipv4 {
            Some(pool) => match take_address(store, pool, name).await? {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            },
            None => None,
        };
        let ipv6 = match pools.ipv6 {
            Some(pool) => match take_address(store, pool, name).await {
                Ok(IpAddr::V6(a)) => Some(a),
                Ok(IpAddr::V4(_)) => None,
                Err(e) => {
                    give_back(store, ipv4.map(IpAddr::V4), name).await;
                    return Err(e);
                }
            },
            None => None,
        };
        let peer = Peer {
            name: name.to_owned(),
            public_key: public_key.to_base64(),
            ipv4,
            ipv6,
            claims: claims.clone(),
            fetched: now,
        };
        let bytes = serde_json::to_vec(&peer).map_err(unavailable)?;
        if store
            .compare_and_swap(PEERS, name, None, Some(bytes))
            .await
            .map_err(unavailable)?
        {
            return Ok(peer);
        }
        // Another replica recorded this peer first: use its addresses.
        give_back(store, ipv4.map(IpAddr::V4), name).await;
        give_back(store, ipv6.map(IpAddr::V6), name).await;
    }
}

/// Removes a peer and frees its addresses; whether there was one.
pub async fn remove(store: &Arc<dyn Store>, name: &str) -> Result<Option<Peer>, VpnError> {
    let Some(peer) = get(store, name).await? else {
        return Ok(None);
    };
    store.delete(PEERS, name).await.map_err(unavailable)?;
    give_back(store, peer.ipv4.map(IpAddr::V4), name).await;
    give_back(store, peer.ipv6.map(IpAddr::V6), name).await;
    Ok(Some(peer))
}

/// The pools addresses come from; the first address of each is the
/// server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pools {
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
}

impl Pools {
    /// The server's own tunnel addresses.
    pub fn server(&self) -> Vec<IpAddr> {
        [self.ipv4, self.ipv6]
            .into_iter()
            .flatten()
            .filter_map(|net| usable(net).next())
            .collect()
    }
}

/// The addresses of `pool` a host may have: not the network's own (IPv4's
/// broadcast is already left out by `hosts`), the first being the
/// server's.
fn usable(pool: IpNet) -> impl Iterator<Item = IpAddr> {
    let network = pool.network();
    pool.hosts().filter(move |a| *a != network)
}

/// Takes the lowest free address of `pool` (the server's excluded) for
/// `name`.
async fn take_address(store: &Arc<dyn Store>, pool: IpNet, name: &str) -> Result<IpAddr, VpnError> {
    loop {
        let taken: std::collections::HashSet<String> = store
            .list(ADDRESSES)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|(address, _)| address)
            .collect();
        let free = usable(pool)
            .skip(1)
            .find(|a| !taken.contains(&a.to_string()))
            .ok_or_else(|| VpnError::PoolExhausted(pool.to_string()))?;
        if store
            .compare_and_swap(
                ADDRESSES,
                &free.to_string(),
                None,
                Some(name.as_bytes().to_vec()),
            )
            .await
            .map_err(unavailable)?
        {
            return Ok(free);
        }
        // Taken by someone else meanwhile: look again.
    }
}

/// Frees `address` if `name` holds it.
async fn give_back(store: &Arc<dyn Store>, address: Option<IpAddr>, name: &str) {
    if let Some(address) = address {
        let _ = store
            .compare_and_swap(
                ADDRESSES,
                &address.to_string(),
                Some(name.as_bytes().to_vec()),
                None,
            )
            .await;
    }
}
