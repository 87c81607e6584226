//! What the agent tells the gateway's inventory about its host: the
//! system (name, OS, kernel, architecture, CPUs, memory, boot time), the
//! agent's version, the addresses and the labels of its settings.
//!
//! Sent as the gateway request `facts` once connected, then again whenever
//! a later look finds something changed (an address came or went, the
//! tunnel came up, the OS was upgraded under it): every
//! [`LOOK_EVERY`], and nothing is sent while nothing changed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use sysinfo::{MemoryRefreshKind, Networks, RefreshKind, System};

use concierge_protocol::fleet::{Facts, MAX_ADDRESSES};

/// How often the agent looks whether its facts changed.
pub const LOOK_EVERY: Duration = Duration::from_secs(60);

/// The host's facts now, with `labels` and the tunnel's `vpn_address`.
pub fn collect(labels: &BTreeMap<String, String>, vpn_address: Option<String>) -> Facts {
    let memory = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .map(|system| system.total_memory());
    let cpus = std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok());
    Facts {
        hostname: System::host_name().ok(),
        os: Some(System::distribution_id()).filter(|id| !id.is_empty()),
        os_version: System::os_version().ok(),
        kernel: System::kernel_version().ok(),
        arch: Some(System::cpu_arch()).filter(|arch| !arch.is_empty()),
        cpus,
        memory_bytes: memory.ok().filter(|m| *m > 0),
        boot_time: System::boot_time().ok().filter(|t| *t > 0),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        addresses: addresses(),
        vpn_address,
        labels: labels.clone(),
    }
}

/// The interfaces' addresses, loopback and link-local ones left out,
/// sorted, at most [`MAX_ADDRESSES`].
fn addresses() -> Vec<String> {
    let Ok(networks) = Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut found: Vec<IpAddr> = networks
        .values()
        .flat_map(|data| data.ip_networks().iter().map(|n| n.addr))
        .filter(|addr| !addr.is_loopback() && !link_local(addr))
        .collect();
    found.sort();
    found.dedup();
    found.truncate(MAX_ADDRESSES);
    found.into_iter().map(|a| a.to_string()).collect()
}

fn link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this very machine: what every Linux host has is there, and what
    /// is reported passes the gateway's checks.
    #[test]
    fn this_host_has_its_facts() {
        let labels = BTreeMap::from([("role".to_owned(), "web".to_owned())]);
        let facts = collect(&labels, Some("10.8.0.2".into()));
        assert!(
            facts.hostname.is_some() && facts.kernel.is_some(),
            "{facts:?}"
        );
        assert!(facts.arch.is_some() && facts.cpus.is_some_and(|c| c >= 1));
        assert!(facts.memory_bytes.is_some_and(|m| m > 1 << 20));
        assert!(facts.boot_time.is_some());
        assert_eq!(
            facts.agent_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(facts.labels, labels);
        assert!(facts
            .addresses
            .iter()
            .all(|a| a != "127.0.0.1" && a != "::1"));
        facts.check().expect("the gateway accepts them");
        // Nothing changes between two looks: nothing would be resent.
        assert_eq!(collect(&labels, Some("10.8.0.2".into())).os, facts.os);
    }
}
