//! Settings: built-in defaults, overridden by a TOML file, overridden by
//! environment variables, overridden by command-line flags.
//!
//! Every setting has one name in three spellings: the config key `max_frame_size`,
//! the variable `CONCIERGE_MAX_FRAME_SIZE` and the flag `--max-frame-size`. The
//! list lives once, in the `settings!` invocation below, which generates the
//! resolved [`Settings`], the all-optional [`SettingsLayer`] that a file or the
//! command line fills in, and the documented `config/concierge.toml`
//! (checked by a test to stay in step).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:expr, env $env:literal;
    )+) => {
        /// The gateway's resolved settings. See the module docs for how they
        /// are layered.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )+ }
            }
        }

        /// One layer of settings (a config file, or the environment and
        /// command line); absent values fall through to the layer below.
        #[derive(Debug, Clone, Default, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct SettingsLayer {
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env)]
                pub $field: Option<$ty>,
            )+
        }

        impl Settings {
            /// Applies a layer on top of these settings.
            pub fn apply(&mut self, layer: SettingsLayer) {
                $( if let Some(value) = layer.$field { self.$field = value; } )+
            }

            /// The documented TOML file with every key at its default.
            pub fn default_toml() -> String {
                let defaults = Settings::default();
                let mut out = String::from(
                    "# Concierge gateway settings. Every key is optional and shown with its default.\n\
                     # Each key can also be set with an environment variable (named beside it) or a\n\
                     # command-line flag (--key-with-dashes); flags beat variables, variables beat this file.\n",
                );
                $(
                    out.push('\n');
                    $( out.push_str(&format!("#{}\n", $doc)); )+
                    out.push_str(&format!("# env: {}\n", $env));
                    out.push_str(&toml_line(stringify!($field), &defaults.$field));
                )+
                out
            }
        }
    };
}

/// Formats `key = value` for the generated config file.
fn toml_line<T: TomlValue>(key: &str, value: &T) -> String {
    format!("{key} = {}\n", value.toml())
}

trait TomlValue {
    fn toml(&self) -> String;
}

impl TomlValue for String {
    fn toml(&self) -> String {
        format!("{self:?}")
    }
}

impl TomlValue for u64 {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for usize {
    fn toml(&self) -> String {
        self.to_string()
    }
}

impl TomlValue for PathBuf {
    fn toml(&self) -> String {
        format!("{:?}", self.display().to_string())
    }
}

settings! {
    /// Address and port the gateway listens on (WebSocket at /ws, files at /fs, health and metrics).
    bind: String = "127.0.0.1:8080".into(), env "CONCIERGE_BIND";
    /// Redis URL (redis://host:port) to run as one replica of a cluster; empty runs a single node with the in-process broker.
    redis_url: String = String::new(), env "CONCIERGE_REDIS_URL";
    /// Milliseconds a replica's lease lasts; a replica that stops renewing it is declared dead, its clients leave.
    node_lease_ms: u64 = 10_000, env "CONCIERGE_NODE_LEASE_MS";
    /// HTTP worker threads; 0 means one per CPU core.
    workers: usize = 0, env "CONCIERGE_WORKERS";
    /// Shared secret clients must send in IDENTIFY; empty means no secret is required.
    secret: String = String::new(), env "CONCIERGE_SECRET";
    /// Folder for gateway data; uploaded files live under <data_dir>/fs/<client name>/.
    data_dir: PathBuf = PathBuf::from("data"), env "CONCIERGE_DATA_DIR";
    /// Milliseconds a new connection has to send IDENTIFY before it is closed with 4004.
    identify_timeout_ms: u64 = 5_000, env "CONCIERGE_IDENTIFY_TIMEOUT_MS";
    /// Milliseconds between the gateway's pings.
    heartbeat_interval_ms: u64 = 5_000, env "CONCIERGE_HEARTBEAT_INTERVAL_MS";
    /// Milliseconds a client may stay silent (no frame, no pong) before it is closed with 4009; a ping waiting behind frames the client is still reading counts from when it reaches the socket.
    heartbeat_timeout_ms: u64 = 10_000, env "CONCIERGE_HEARTBEAT_TIMEOUT_MS";
    /// Largest WebSocket frame accepted from a client, in bytes; larger ones close the socket with 1009.
    max_frame_size: usize = 65_536, env "CONCIERGE_MAX_FRAME_SIZE";
    /// Frames that may wait for a slow client before it is closed with 1008.
    max_outgoing_queue: usize = 1_024, env "CONCIERGE_MAX_OUTGOING_QUEUE";
    /// Longest client or service name, in bytes.
    max_name_len: usize = 64, env "CONCIERGE_MAX_NAME_LEN";
    /// Longest client or service nickname, in bytes.
    max_nickname_len: usize = 128, env "CONCIERGE_MAX_NICKNAME_LEN";
    /// Most tags a client may identify with.
    max_tags: usize = 32, env "CONCIERGE_MAX_TAGS";
    /// Longest tag, in bytes.
    max_tag_len: usize = 64, env "CONCIERGE_MAX_TAG_LEN";
    /// Most services one client may own at once.
    max_services_per_client: usize = 64, env "CONCIERGE_MAX_SERVICES_PER_CLIENT";
    /// Most services one client may be subscribed to at once.
    max_subscriptions_per_client: usize = 256, env "CONCIERGE_MAX_SUBSCRIPTIONS_PER_CLIENT";
    /// Largest file accepted by PUT /fs, in bytes; larger uploads get 413.
    max_file_size: u64 = 104_857_600, env "CONCIERGE_MAX_FILE_SIZE";
    /// Seconds to wait for connections to finish after SIGTERM or SIGINT.
    shutdown_timeout_secs: u64 = 5, env "CONCIERGE_SHUTDOWN_TIMEOUT_SECS";
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then the file at `path` (if any), then `overrides`.
    pub fn load(path: Option<&Path>, overrides: SettingsLayer) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let layer: SettingsLayer =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
            settings.apply(layer);
        }
        settings.apply(overrides);
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values the gateway cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        let positive = [
            ("identify_timeout_ms", self.identify_timeout_ms as usize),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms as usize),
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms as usize),
            ("max_frame_size", self.max_frame_size),
            ("max_outgoing_queue", self.max_outgoing_queue),
            ("max_name_len", self.max_name_len),
            ("node_lease_ms", self.node_lease_ms as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be greater than 0"
                )));
            }
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "heartbeat_timeout_ms must be greater than heartbeat_interval_ms".into(),
            ));
        }
        Ok(())
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind.parse().map_err(|e| {
            ConfigError::Invalid(format!("bind {:?} is not HOST:PORT: {e}", self.bind))
        })
    }

    pub fn identify_timeout(&self) -> Duration {
        Duration::from_millis(self.identify_timeout_ms)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn node_lease(&self) -> Duration {
        Duration::from_millis(self.node_lease_ms)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    /// Where uploaded files live.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("fs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_is_the_generated_one() {
        let shipped = include_str!("../../config/concierge.toml");
        assert_eq!(
            shipped,
            Settings::default_toml(),
            "config/concierge.toml is stale: regenerate it with `concierge config`"
        );
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../README.md");
        for line in Settings::default_toml().lines() {
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            let env = format!("CONCIERGE_{}", key.to_uppercase());
            let flag = format!("--{}", key.replace('_', "-"));
            let value = match value.trim_matches('"') {
                "" => "empty".to_owned(),
                v => format!("`{v}`"),
            };
            let row = format!("| `{key}` | `{env}` | `{flag}` | {value} |");
            assert!(
                readme.contains(&row),
                "README.md lacks the row starting {row}"
            );
        }
    }

    #[test]
    fn shipped_config_parses_to_the_defaults() {
        let layer: SettingsLayer = toml::from_str(&Settings::default_toml()).expect("parses");
        let mut settings = Settings::default();
        settings.apply(layer);
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("concierge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, "bind = \"0.0.0.0:9000\"\nmax_tags = 3\n").expect("write");
        let overrides = SettingsLayer {
            max_tags: Some(5),
            ..Default::default()
        };
        let settings = Settings::load(Some(&path), overrides).expect("loads");
        assert_eq!(settings.bind, "0.0.0.0:9000");
        assert_eq!(settings.max_tags, 5);
        assert_eq!(settings.max_frame_size, 65_536);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_files_and_values_are_reported() {
        let dir = std::env::temp_dir().join(format!("concierge-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, "bnid = \"x\"\n").expect("write");
        let err = Settings::load(Some(&path), SettingsLayer::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = Settings::load(
            None,
            SettingsLayer {
                bind: Some("nowhere".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        assert!(Settings::load(Some(&dir.join("missing.toml")), SettingsLayer::default()).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
