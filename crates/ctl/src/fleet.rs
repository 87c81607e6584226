//! The `ctl` commands on the gateway's inventory: `hosts [TARGET]` lists
//! every host the fleet has, connected, offline or never connected,
//! selected by a target expression, with its health (see [`super::health`]);
//! `forget HOST` removes one.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::conn::decode;
use super::error::CtlError;
use super::health::{self, SortBy};
use super::render::table;
use super::Ctl;
use concierge_protocol::agent::GatewayRequest;
use concierge_protocol::fleet::{ForgetHost, HostRecord, HostsPage, HostsQuery};
use concierge_protocol::health::Presence;
use concierge_protocol::selector::Selector;
use concierge_protocol::GATEWAY_NAME;

impl Ctl {
    pub(crate) async fn hosts(
        &mut self,
        target: Option<String>,
        online: bool,
        sort: SortBy,
    ) -> Result<ExitCode, CtlError> {
        // Checked here first: a mistake is shown before anything connects
        // to anything, with the caret under it.
        if let Some(target) = &target {
            Selector::parse(target).map_err(|e| CtlError::Usage(e.to_string()))?;
        }
        let mut hosts: Vec<HostRecord> = Vec::new();
        let mut after = None;
        let interval = loop {
            let query = HostsQuery {
                target: target.clone(),
                online,
                after: after.take(),
                limit: None,
            };
            let reply = self
                .request(GATEWAY_NAME, &GatewayRequest::Hosts(query))
                .await?;
            let page: HostsPage = decode("hosts", reply)?;
            after = page.hosts.last().map(|h| h.name.clone());
            hosts.extend(page.hosts);
            if !page.more || after.is_none() {
                break page.summary_interval;
            }
        };
        health::sort(&mut hosts, sort);
        if self.json {
            println!("{}", json!({ "hosts": hosts }));
        } else if hosts.is_empty() {
            println!(
                "no host{}",
                match &target {
                    Some(t) => format!(" matches {t}"),
                    None => " has connected yet".into(),
                }
            );
        } else {
            println!("{}", self.hosts_table(&hosts, interval));
        }
        Ok(ExitCode::SUCCESS)
    }

    fn hosts_table(&self, hosts: &[HostRecord], interval: u64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mem = self.units.mem_label.to_uppercase();
        let mut t = table([
            "NAME", "KIND", "PRESENCE", "CPU", "LOAD", &mem, "DISK", "VPN", "TREND", "OS", "ARCH",
            "CPUS", "MEMORY", "LABELS", "AGENT",
        ]);
        let dash = || "-".to_owned();
        for h in hosts {
            let f = &h.facts;
            let presence = match (h.presence, h.last_seen) {
                (Presence::Online, _) => "online".to_owned(),
                (Presence::Offline, Some(seen)) => {
                    format!("offline {}", ago(now.saturating_sub(seen)))
                }
                (Presence::Offline, None) => "offline".to_owned(),
                (Presence::Never, _) => "never connected".to_owned(),
            };
            let os = match (&f.os, &f.os_version) {
                (Some(os), Some(version)) => format!("{os} {version}"),
                (Some(os), None) => os.clone(),
                _ => dash(),
            };
            let labels: Vec<String> = f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let [cpu, load, mem, disk, vpn, trend] =
                health::cells(h.health.as_ref(), now, interval);
            t.add_row([
                h.name.clone(),
                h.kind.tag().to_owned(),
                presence,
                cpu,
                load,
                mem,
                disk,
                vpn,
                trend,
                os,
                f.arch.clone().unwrap_or_else(dash),
                f.cpus.map_or_else(dash, |c| c.to_string()),
                f.memory_bytes.map_or_else(dash, |m| self.units.size(m)),
                if labels.is_empty() {
                    dash()
                } else {
                    labels.join(",")
                },
                f.agent_version.clone().unwrap_or_else(dash),
            ]);
        }
        t.to_string()
    }

    pub(crate) async fn forget(&mut self, host: &str) -> Result<ExitCode, CtlError> {
        let request = GatewayRequest::ForgetHost(ForgetHost {
            name: host.to_owned(),
        });
        let reply = self.request(GATEWAY_NAME, &request).await?;
        self.show(&reply, |_, _| {
            format!("forgotten: {host} (listed again if it connects)")
        });
        Ok(ExitCode::SUCCESS)
    }
}

/// A duration in seconds as a person reads it: `40 s ago`, `3 min ago`,
/// `5 h ago`, `2 d ago`.
fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(ago(0), "0 s ago");
        assert_eq!(ago(59), "59 s ago");
        assert_eq!(ago(61), "1 min ago");
        assert_eq!(ago(7200), "2 h ago");
        assert_eq!(ago(3 * 86_400 + 5), "3 d ago");
    }
}
