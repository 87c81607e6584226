//! The inventory's words: what a host says of itself ([`Facts`]), what the
//! gateway keeps of every host it has seen ([`HostRecord`]), and the
//! requests that report and read them (`facts`, `hosts`, `forget_host`,
//! sent to the gateway's reserved name as [`GatewayRequest`]s).
//!
//! Facts and labels are what the host declares; the gateway files them
//! under the name the host verifiably holds (its token's, where tokens are
//! used), never under a name found in the report. A host is matched by
//! [`Selector`](crate::selector::Selector)s on its name, its labels and its
//! facts, under the keys of [`FACT_KEYS`]: a label may not take one of
//! those keys, so `os=debian` always means what the host's system is.
//!
//! [`GatewayRequest`]: crate::agent::GatewayRequest

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::{HostHealth, Presence};
use crate::selector::Attributes;
use crate::HostKind;

/// The most labels a host may have.
pub const MAX_LABELS: usize = 64;

/// The longest label key or value, and the longest fact string.
pub const MAX_FACT_BYTES: usize = 256;

/// The most addresses a host may report.
pub const MAX_ADDRESSES: usize = 64;

/// The most hosts one `hosts` reply lists (`limit`'s ceiling).
pub const MAX_HOSTS_PAGE: usize = 5_000;

/// The keys of facts in target expressions. Labels may not use them.
pub const FACT_KEYS: [&str; 11] = [
    "name",
    "kind",
    "presence",
    "hostname",
    "os",
    "os_version",
    "kernel",
    "arch",
    "cpus",
    "agent_version",
    "vpn_address",
];

/// What a host reports of itself (`facts`): the agent on connecting and
/// whenever something changes. Every field is optional for hosts whose
/// dialect tells less (a Nest or Quix host).
///
/// Fields this gateway does not know are ignored, so that agents can be
/// upgraded before their gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The system's host name (which may differ from the name it connects
    /// with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The operating system's id (`debian`, `ubuntu`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The CPU architecture (`x86_64`, `aarch64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Physical memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// When the system booted, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time: Option<u64>,
    /// The version of the program that serves the host (the agent's, or
    /// the Nest client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Its interfaces' addresses, loopback left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Its address on the gateway's VPN, when it is on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_address: Option<String>,
    /// Its labels, from its configuration (`role = "web"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Facts {
    /// Whether a report is within bounds and its labels are well formed:
    /// the reason it is not, for a `bad_argument`.
    pub fn check(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!("a host has at most {MAX_LABELS} labels"));
        }
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(format!("a host reports at most {MAX_ADDRESSES} addresses"));
        }
        for (key, value) in &self.labels {
            check_label(key, value)?;
        }
        let strings = [
            &self.hostname,
            &self.os,
            &self.os_version,
            &self.kernel,
            &self.arch,
            &self.agent_version,
            &self.vpn_address,
        ];
        let long = strings
            .into_iter()
            .flatten()
            .chain(&self.addresses)
            .find(|s| s.len() > MAX_FACT_BYTES);
        match long {
            Some(s) => Err(format!(
                "a fact has at most {MAX_FACT_BYTES} bytes: {:?}…",
                s.chars().take(32).collect::<String>()
            )),
            None => Ok(()),
        }
    }
}

/// Whether `key = value` may be a label: the rule the agent applies to its
/// configuration and the gateway to every report.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let word = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    };
    if key.is_empty() || key.len() > MAX_FACT_BYTES || !word(key) {
        return Err(format!(
            "label key {key:?}: 1 to {MAX_FACT_BYTES} bytes of letters, digits, '-', '_', '.' and '/'"
        ));
    }
    if FACT_KEYS.contains(&key) {
        return Err(format!(
            "label key {key:?} is a fact's: {} are not labels",
            FACT_KEYS.join(", ")
        ));
    }
    if value.len() > MAX_FACT_BYTES || !word(value) {
        return Err(format!(
            "label {key}'s value {value:?}: at most {MAX_FACT_BYTES} bytes of letters, digits, '-', '_', '.' and '/'"
        ));
    }
    Ok(())
}

/// Labels as the agent's flag and environment give them:
/// `role=web,dc=fra`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?}: expected KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        check_label(key, value)?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    Ok(labels)
}

/// What the gateway keeps of a host, and lists (`hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The name it connects with.
    pub name: String,
    /// What serves it.
    pub kind: HostKind,
    /// When it first reported, in seconds since the Unix epoch; `None` for
    /// a host that is expected and has never connected.
    pub first_seen: Option<u64>,
    /// When it was last seen connected (now, while it is); `None` when it
    /// never connected.
    pub last_seen: Option<u64>,
    /// Whether a client holding its name is connected now.
    pub online: bool,
    /// Online, offline (since `last_seen`) or never connected.
    pub presence: Presence,
    /// Its last facts (kept while it is offline).
    pub facts: Facts,
    /// Its latest summary and trend, if it ever sent one (kept while it is
    /// offline: its `at` says how old it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HostHealth>,
}

impl Attributes for HostRecord {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        fn text(s: &Option<String>) -> Option<Cow<'_, str>> {
            s.as_deref().map(Cow::Borrowed)
        }
        let f = &self.facts;
        match key {
            "name" => Some(Cow::Borrowed(&self.name)),
            "kind" => Some(Cow::Borrowed(self.kind.tag())),
            "presence" => Some(Cow::Borrowed(self.presence.as_str())),
            "hostname" => text(&f.hostname),
            "os" => text(&f.os),
            "os_version" => text(&f.os_version),
            "kernel" => text(&f.kernel),
            "arch" => text(&f.arch),
            "cpus" => f.cpus.map(|c| Cow::Owned(c.to_string())),
            "agent_version" => text(&f.agent_version),
            "vpn_address" => text(&f.vpn_address),
            label => f.labels.get(label).map(|v| Cow::Borrowed(v.as_str())),
        }
    }
}

/// `hosts`: the inventory's hosts that `target` selects (all without
/// one), by name, from after `after`, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostsQuery {
    /// A target expression (`docs/PROTOCOL.md`, "Target expressions").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only the hosts connected now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub online: bool,
    /// The last name of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many (default and ceiling [`MAX_HOSTS_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The answer to `hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostsPage {
    pub hosts: Vec<HostRecord>,
    /// Whether more hosts follow (ask again with `after` the last name).
    pub more: bool,
    /// The gateway's `summary_interval`, in seconds: how old a host's
    /// health may be before it is stale ([`STALE_INTERVALS`] of them).
    ///
    /// [`STALE_INTERVALS`]: crate::health::STALE_INTERVALS
    #[serde(default = "default_interval")]
    pub summary_interval: u64,
}

fn default_interval() -> u64 {
    crate::health::DEFAULT_SUMMARY_INTERVAL_SECS
}

/// `forget_host`: the inventory forgets `name` (it comes back if the host
/// connects again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetHost {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Selector;

    fn record(name: &str, labels: &str) -> HostRecord {
        HostRecord {
            name: name.into(),
            kind: HostKind::Agent,
            first_seen: Some(1),
            last_seen: Some(2),
            online: true,
            presence: Presence::Online,
            health: None,
            facts: Facts {
                os: Some("debian".into()),
                cpus: Some(4),
                labels: parse_labels(labels).unwrap(),
                ..Facts::default()
            },
        }
    }

    #[test]
    fn hosts_are_selected_by_labels_and_facts() {
        let hosts = [
            record("web-1", "role=web,dc=fra"),
            record("db-1", "role=db, dc=fra"),
        ];
        let pick = |e: &str| {
            let s = Selector::parse(e).unwrap();
            hosts
                .iter()
                .filter(|h| s.matches(*h))
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick("role=web"), ["web-1"]);
        assert_eq!(
            pick("os=debian,cpus=4,kind=agent,dc=fra"),
            ["web-1", "db-1"]
        );
        assert_eq!(pick("name=db*"), ["db-1"]);
        assert!(pick("cpus=8").is_empty());
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(
            parse_labels("role=web, dc = fra,").unwrap(),
            BTreeMap::from([("dc".into(), "fra".into()), ("role".into(), "web".into())])
        );
        for (bad, says) in [
            ("role", "expected KEY=VALUE"),
            ("os=debian", "is a fact's"),
            ("=x", "label key \"\""),
            ("ro le=web", "label key"),
            ("role=we b", "value"),
        ] {
            let e = parse_labels(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let mut facts = Facts::default();
        for i in 0..=MAX_LABELS {
            facts.labels.insert(format!("l{i}"), String::new());
        }
        assert!(facts.check().unwrap_err().contains("at most 64 labels"));
        let facts = Facts {
            kernel: Some("x".repeat(MAX_FACT_BYTES + 1)),
            ..Facts::default()
        };
        assert!(facts.check().unwrap_err().contains("at most 256 bytes"));
        // A newer agent's facts are read for what this side knows of them.
        let newer: Facts = serde_json::from_str(r#"{"os": "debian", "gpu": "none"}"#).unwrap();
        assert_eq!(newer.os.as_deref(), Some("debian"));
    }
}
