//! What the cluster is told by the settings, and the checks of the
//! settings that name a Redis.
//!
//! The settings hold plain text (`redis_url`, `redis_sentinels`); what it
//! means is decided here, beside the code that connects: the config module
//! calls these checks by name, and builds a [`ClusterSettings`] for
//! [`join`](super::join), knowing nothing of Redis itself.

use std::path::PathBuf;
use std::time::Duration;

use super::redis::master::{sentinel_addresses, Endpoint};
use super::ClusterError;

/// The settings the cluster is built from.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// One Redis's URL; empty for none.
    pub redis_url: String,
    /// Sentinels that name the Redis master (comma-separated); empty for
    /// none.
    pub redis_sentinels: String,
    /// The name the Sentinels monitor the master under.
    pub redis_sentinel_master: String,
    /// How long a node's lease lasts without being renewed.
    pub node_lease: Duration,
    /// Where a gateway alone keeps its store.
    pub data_dir: PathBuf,
}

impl ClusterSettings {
    /// Where these settings put Redis: `redis_url`, or `redis_sentinels`;
    /// none for a gateway alone.
    pub(super) fn redis_endpoint(&self) -> Result<Option<Endpoint>, ClusterError> {
        if self.redis_url.is_empty() && self.redis_sentinels.is_empty() {
            return Ok(None);
        }
        Endpoint::new(
            &self.redis_url,
            &self.redis_sentinels,
            &self.redis_sentinel_master,
        )
        .map(Some)
    }
}

/// `redis_url`: empty, or a URL the Redis client can connect to.
pub fn redis_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    let Some(parsed) = redis::parse_redis_url(url) else {
        return Err(
            "not a Redis URL: write redis://HOST:PORT, e.g. redis://127.0.0.1:6379, \
                    or leave it empty to run a single node"
                .to_owned(),
        );
    };
    match parsed.scheme() {
        "rediss" | "valkeys" => {
            return Err("TLS (rediss://) is not built into this gateway: use redis://".to_owned())
        }
        "redis" | "valkey" if parsed.host_str().is_none_or(str::is_empty) => {
            return Err("names no host: write redis://HOST:PORT".to_owned())
        }
        _ => {}
    }
    redis::IntoConnectionInfo::into_connection_info(parsed)
        .map(drop)
        .map_err(|e| format!("the Redis client refuses it: {e}"))
}

/// `redis_sentinels`: empty, or HOST:PORT entries.
pub fn redis_sentinels(list: &str) -> Result<(), String> {
    if list.is_empty() {
        return Ok(());
    }
    sentinel_addresses(list).map(drop)
}

/// A setting's value as it may be shown in a message or a log: a Redis URL
/// (or each of a comma-separated list) without its password, even one that
/// does not parse; any other value as it is.
pub fn redacted(value: &str) -> String {
    value
        .split(',')
        .map(|part| match redis::parse_redis_url(part) {
            Some(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("REDACTED"));
                parsed.to_string()
            }
            Some(_) => part.to_owned(),
            None => match part.split_once("://") {
                Some((scheme, rest)) if rest.contains('@') => {
                    let host = rest.rsplit_once('@').map_or("", |(_, host)| host);
                    format!("{scheme}://REDACTED@{host}")
                }
                _ => part.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_never_shown() {
        let shown = redacted("redis://:hunter2@10.0.0.1:6380/2");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:6380"), "{shown}");
        assert_eq!(redacted("redis://redis:6379"), "redis://redis:6379");
        // Lists, and URLs the client cannot parse, lose their passwords too.
        let shown = redacted("s1:26379,redis://:hunter2@s2:26379,redis://:hunter2@:1");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.starts_with("s1:26379,") && shown.contains("s2:26379"),
            "{shown}"
        );
    }

    #[test]
    fn redis_urls_are_checked_in_plain_words() {
        for good in [
            "",
            "redis://127.0.0.1:6379",
            "redis://redis",
            "redis://:secret@10.0.0.1:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert_eq!(redis_url(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("foo", "not a Redis URL"),
            ("http://127.0.0.1:6379", "not a Redis URL"),
            ("rediss://127.0.0.1:6379", "TLS"),
            ("redis://127.0.0.1:6379/zero", "the Redis client refuses it"),
        ] {
            let err = redis_url(bad).unwrap_err();
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }
}
