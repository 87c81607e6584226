//! Settings: built-in defaults, overridden by a TOML file, overridden by
//! environment variables, overridden by command-line flags.
//!
//! Every setting has one name in three spellings: the config key `max_frame_size`,
//! the variable `CONCIERGE_MAX_FRAME_SIZE` and the flag `--max-frame-size`. The
//! list lives once, in the `settings!` invocation below, which generates the
//! resolved [`Settings`], the all-optional [`SettingsLayer`] that a file, the
//! environment or the command line fills in, the flags with their `--help`
//! (default and variable included), and the documented `config/concierge.toml`
//! (checked by a test to stay in step).
//!
//! Variables are read here rather than by clap, so that a wrong value is
//! reported under the name it was given by: `CONCIERGE_WORKERS=lots: ...`, not
//! `--workers`. A value's type is checked where it was given (a flag by clap,
//! a variable here, the file by its parser); a value of the right type that
//! the gateway still cannot run with is checked once the layers are merged,
//! so a later layer can correct an earlier one, and reported as its layer
//! gave it ([`values`]).
//!
//! The settings are plain values: what a Redis URL or a VPN pool means is
//! decided beside the code that uses it (`cluster::settings`,
//! `vpn::settings`), whose checks the list below names; the cluster and
//! the VPN are handed what they need ([`Settings::cluster`],
//! [`Settings::vpn`]) and know nothing of this module.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use self::values::{read_var, setting_arg, Origin, SettingValue};
use crate::cluster::settings::{redis_sentinels, redis_url};
use crate::cluster::ClusterSettings;
use crate::vpn::settings::{
    cidr_list, ip_list, udp_port, vpn_backend, vpn_endpoint, vpn_interface, VpnSettings, VpnText,
};

mod values;

/// The variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "CONCIERGE_CONFIG";

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:expr, env $env:literal $(, check $check:path)?;
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

        /// One layer of settings (the config file, the environment or the
        /// command line); absent values fall through to the layer below.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct SettingsLayer {
            $( $(#[doc = $doc])+ pub $field: Option<$ty>, )+
        }

        /// Where each of the resolved settings came from, to name it when
        /// its value is wrong.
        #[derive(Debug, Default)]
        struct Origins {
            $( $field: Origin, )+
        }

        impl Origins {
            /// Records `layer` as the origin of every value it sets;
            /// `origin` is given the setting's variable name.
            fn note(&mut self, layer: &SettingsLayer, origin: impl Fn(&'static str) -> Origin) {
                $( if layer.$field.is_some() { self.$field = origin($env); } )+
            }
        }

        impl SettingsLayer {
            /// The `CONCIERGE_*` variables, as `var` reads them (it is
            /// `std::env::var_os` but for tests); a value that is not of its
            /// setting's type is reported under the variable's name.
            pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
                Ok(SettingsLayer {
                    $( $field: read_var(&var, stringify!($field), $env)?, )+
                })
            }
        }

        /// The flags, without `env`: the variables are read by
        /// [`SettingsLayer::from_vars`]. Each flag's help ends with its
        /// default and its variable.
        impl clap::Args for SettingsLayer {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                let defaults = Settings::default();
                cmd $( .arg(setting_arg(
                    stringify!($field),
                    $env,
                    concat!($($doc),+),
                    &defaults.$field,
                )) )+
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        impl clap::FromArgMatches for SettingsLayer {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut layer = SettingsLayer::default();
                layer.update_from_arg_matches(matches)?;
                Ok(layer)
            }

            fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
                $(
                    if let Some(value) = matches.get_one::<$ty>(stringify!($field)) {
                        self.$field = Some(value.clone());
                    }
                )+
                Ok(())
            }
        }

        impl Settings {
            /// Applies a layer on top of these settings.
            pub fn apply(&mut self, layer: SettingsLayer) {
                $( if let Some(value) = layer.$field { self.$field = value; } )+
            }

            /// Checks every setting that has a rule of its own, naming a
            /// wrong value as its origin gave it.
            fn check_each(&self, origins: &Origins) -> Result<(), ConfigError> {
                $($(
                    if let Err(reason) = $check(&self.$field) {
                        return Err(origins.$field.invalid(stringify!($field), &self.$field, &reason));
                    }
                )?)+
                Ok(())
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
                    out.push_str(&format!("{} = {}\n", stringify!($field), defaults.$field.toml()));
                )+
                out
            }
        }
    };
}

/// `adapter_max_frame_size`: positive, and at most 64 MiB (one host's
/// frame is buffered whole before it is read).
fn adapter_frame_size(max: &usize) -> Result<(), String> {
    const CEILING: usize = 64 << 20;
    match *max {
        0 => Err("must be positive".into()),
        max if max > CEILING => Err(format!("must be at most {CEILING} (64 MiB)")),
        _ => Ok(()),
    }
}

/// `bind`: an IP address and a port (the gateway resolves no host name).
fn host_port(bind: &str) -> Result<SocketAddr, String> {
    bind.parse().map_err(|_| {
        "not HOST:PORT with HOST an IP address, e.g. 127.0.0.1:8080 or [::]:8080".to_owned()
    })
}

/// A number setting that 0 would break.
fn positive<T: PartialEq + Default>(value: &T) -> Result<(), String> {
    if *value == T::default() {
        return Err("must be greater than 0".to_owned());
    }
    Ok(())
}

/// `data_dir`: an empty path would scatter the files in the working folder.
fn named_folder(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must name a folder".to_owned());
    }
    Ok(())
}

settings! {
    /// Address and port the gateway listens on (WebSocket at /ws, files at /fs, health and metrics).
    bind: String = "127.0.0.1:8080".into(), env "CONCIERGE_BIND", check host_port;
    /// PEM file with the TLS certificate chain, the server's own certificate first: with tls_key, the gateway serves wss:// and https:// (rustls) instead of ws:// and http://; empty serves plain TCP. Read again on SIGHUP and when the file changes.
    tls_cert: PathBuf = PathBuf::new(), env "CONCIERGE_TLS_CERT";
    /// PEM file with the private key of tls_cert (PKCS#8, RSA or SEC1 EC); set both or neither.
    tls_key: PathBuf = PathBuf::new(), env "CONCIERGE_TLS_KEY";
    /// Redis URL (redis://host:port) to run as one replica of a cluster; empty runs a single node with the in-process broker.
    redis_url: String = String::new(), env "CONCIERGE_REDIS_URL", check redis_url;
    /// Redis Sentinels to run as one replica of a cluster whose Redis fails over: comma-separated HOST:PORT (or redis://[:PASSWORD@]HOST:PORT; a password is used for the Sentinels and the master). The gateway asks them for the master of redis_sentinel_master, again every second and after every failed request, and follows a failover. Set this or redis_url, not both.
    redis_sentinels: String = String::new(), env "CONCIERGE_REDIS_SENTINELS", check redis_sentinels;
    /// The name the Sentinels monitor the master under (`sentinel monitor NAME ...`).
    redis_sentinel_master: String = "concierge".into(), env "CONCIERGE_REDIS_SENTINEL_MASTER";
    /// Milliseconds a replica's lease lasts; a replica that stops renewing it is declared dead, its clients leave.
    node_lease_ms: u64 = 10_000, env "CONCIERGE_NODE_LEASE_MS", check positive;
    /// HTTP worker threads; 0 means one per CPU core.
    workers: usize = 0, env "CONCIERGE_WORKERS";
    /// Shared secret clients must send in IDENTIFY; empty means no secret is required.
    secret: String = String::new(), env "CONCIERGE_SECRET";
    /// Require a token in every IDENTIFY, and on /metrics and the file server, even before any account exists (once one exists, they are required anyway).
    require_auth: bool = false, env "CONCIERGE_REQUIRE_AUTH";
    /// Seconds a token from POST /auth/token (a login or a refresh) is valid.
    token_validity_secs: u64 = 86_400, env "CONCIERGE_TOKEN_VALIDITY_SECS", check positive;
    /// Failed logins, per username and per source address, that lock it out.
    max_failed_logins: u64 = 5, env "CONCIERGE_MAX_FAILED_LOGINS", check positive;
    /// Seconds a lock-out lasts, and the window in which failed logins are counted.
    login_lockout_secs: u64 = 300, env "CONCIERGE_LOGIN_LOCKOUT_SECS", check positive;
    /// Seconds a login's tokens live at most, counted from the login: a refresh gives a new token of the same family, never valid past that; then the user logs in again.
    token_lifetime_secs: u64 = 604_800, env "CONCIERGE_TOKEN_LIFETIME_SECS", check positive;
    /// Reverse proxies (comma-separated IP addresses or CIDR networks) whose X-Forwarded-For or Forwarded header names a login's source address for lock-outs; from any other peer those headers are ignored and the peer's own address counts. Empty: trust none.
    trusted_proxies: String = String::new(), env "CONCIERGE_TRUSTED_PROXIES", check trusted_proxies;
    /// Browser origins (comma-separated, e.g. https://app.example.com) allowed besides the gateway's own to open a WebSocket (every path), to log in (POST /auth/token) and to call the file server and Engine.IO polling across origins (CORS); a request with any other Origin header is refused with 403. "*" allows every origin, as the seeds' servers did (not for an exposed gateway). Programs send no Origin and are not affected.
    allowed_origins: String = String::new(), env "CONCIERGE_ALLOWED_ORIGINS", check allowed_origins;
    /// Accept a client's public uuid as its file server key, as seed 004 clients use it: anyone who saw the uuid can then write and delete that client's files. Off whenever tokens are required.
    fs_uuid_write: bool = false, env "CONCIERGE_FS_UUID_WRITE";
    /// Folder for gateway data: uploaded files under <data_dir>/fs/<client name>/ (locked by a gateway running alone); a gateway running alone keeps its accounts and other shared state in <data_dir>/concierge.db.
    data_dir: PathBuf = PathBuf::from("data"), env "CONCIERGE_DATA_DIR", check named_folder;
    /// Milliseconds a new connection has to send IDENTIFY before it is closed with 4004.
    identify_timeout_ms: u64 = 5_000, env "CONCIERGE_IDENTIFY_TIMEOUT_MS", check positive;
    /// Milliseconds between the gateway's pings.
    heartbeat_interval_ms: u64 = 5_000, env "CONCIERGE_HEARTBEAT_INTERVAL_MS", check positive;
    /// Milliseconds a client may stay silent (no frame, no pong) before it is closed with 4009; a ping waiting behind frames the client is still reading counts from when it reaches the socket.
    heartbeat_timeout_ms: u64 = 10_000, env "CONCIERGE_HEARTBEAT_TIMEOUT_MS", check positive;
    /// Largest WebSocket frame accepted from a client, in bytes; larger ones close the socket with 1009.
    max_frame_size: usize = 65_536, env "CONCIERGE_MAX_FRAME_SIZE", check positive;
    /// Milliseconds the gateway keeps reading (and dropping) what a client sends after the gateway sent it a close frame, until the client answers it or closes: closing sooner would reset the connection and destroy the close frame, code and reason, before a client that kept sending read it.
    close_linger_ms: u64 = 2_000, env "CONCIERGE_CLOSE_LINGER_MS";
    /// Frames (pongs to the client's pings included) that may wait for a slow client before it is closed with 1008.
    max_outgoing_queue: usize = 1_024, env "CONCIERGE_MAX_OUTGOING_QUEUE", check positive;
    /// Longest client or service name, in bytes.
    max_name_len: usize = 64, env "CONCIERGE_MAX_NAME_LEN", check positive;
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
    /// Messages a service keeps of its broadcasts for subscribers that come back (docs/PROTOCOL.md section 17) when its SERVICE_CREATE asks for no history; 0 keeps none.
    history_size: u64 = 0, env "CONCIERGE_HISTORY_SIZE";
    /// Seconds a service's history keeps a message when its SERVICE_CREATE asks for no history.
    history_ttl_secs: u64 = 300, env "CONCIERGE_HISTORY_TTL_SECS", check positive;
    /// Most messages a SERVICE_CREATE may ask its history to keep.
    max_history_size: u64 = 10_000, env "CONCIERGE_MAX_HISTORY_SIZE";
    /// Most bytes one service's history keeps: beyond, its oldest messages go.
    max_history_bytes: usize = 16_777_216, env "CONCIERGE_MAX_HISTORY_BYTES", check positive;
    /// Most jobs (docs/PROTOCOL.md section 19) one gateway process coordinates at once; a job_create beyond gets `limit`.
    max_jobs: usize = 32, env "CONCIERGE_MAX_JOBS", check positive;
    /// Most hosts one job may resolve to.
    max_job_hosts: usize = 20_000, env "CONCIERGE_MAX_JOB_HOSTS", check positive;
    /// Most hosts of one job sent their request and not yet answered at once (a job's batch may ask for fewer).
    job_window: usize = 1_000, env "CONCIERGE_JOB_WINDOW", check positive;
    /// Seconds a host may stay disconnected in the middle of a job before it is failed (`gone`).
    job_host_gone_secs: u64 = 300, env "CONCIERGE_JOB_HOST_GONE_SECS", check positive;
    /// Days a finished job's record, hosts and outputs are kept.
    job_retention_days: u64 = 30, env "CONCIERGE_JOB_RETENTION_DAYS", check positive;
    /// Seconds between the health summaries every host sends (docs/PROTOCOL.md section 20); the gateway tells its agents in its answer to their facts, and refuses a host's summary that comes sooner than half of it after the last.
    summary_interval_secs: u64 = 10, env "CONCIERGE_SUMMARY_INTERVAL_SECS", check positive;
    /// Hours a host's summaries are kept as they came (one point per summary_interval).
    history_hours: u64 = 24, env "CONCIERGE_HISTORY_HOURS", check positive;
    /// Days a host's summaries are kept at all: older than history_hours, as averages of history_step_secs.
    history_days: u64 = 30, env "CONCIERGE_HISTORY_DAYS", check positive;
    /// Seconds each averaged point stands for, once a summary is older than history_hours.
    history_step_secs: u64 = 300, env "CONCIERGE_HISTORY_STEP_SECS", check positive;
    /// Largest file accepted by PUT /fs, in bytes; larger uploads get 413.
    max_file_size: u64 = 104_857_600, env "CONCIERGE_MAX_FILE_SIZE";
    /// Most bytes one client's files may take on the file server, uploads still streaming in included; an upload beyond gets 413. In a cluster each replica counts the uploads it received.
    max_client_files_bytes: u64 = 1_073_741_824, env "CONCIERGE_MAX_CLIENT_FILES_BYTES", check positive;
    /// Most bytes all clients' files together may take on the file server, uploads still streaming in included; an upload beyond gets 507. In a cluster each replica counts the uploads it received.
    max_files_bytes: u64 = 10_737_418_240, env "CONCIERGE_MAX_FILES_BYTES", check positive;
    /// Milliseconds within which an upload's body must deliver 64 KiB more (or end); a body that stalls or trickles is refused with 408 and its temporary file deleted.
    upload_idle_timeout_ms: u64 = 30_000, env "CONCIERGE_UPLOAD_IDLE_TIMEOUT_MS", check positive;
    /// Seconds to wait for connections to finish after SIGTERM or SIGINT.
    shutdown_timeout_secs: u64 = 5, env "CONCIERGE_SHUTDOWN_TIMEOUT_SECS";
    /// Seconds a host behind an adapter (a Nest host on /nest, a Quix backend on /wsi) has to answer a command before the operator is told it timed out.
    adapter_command_timeout_secs: u64 = 30, env "CONCIERGE_ADAPTER_COMMAND_TIMEOUT_SECS", check positive;
    /// Largest WebSocket frame, in bytes (at most 64 MiB), a Nest host (/nest) or a Quix backend (/wsi) may send once it is in; before, max_frame_size holds. Larger ones close the socket with 1009. A Nest host sends its whole process list in one frame, about 40 bytes a process.
    adapter_max_frame_size: usize = 4_194_304, env "CONCIERGE_ADAPTER_MAX_FRAME_SIZE", check adapter_frame_size;
    /// Nest client versions a host may announce on /nest: comma-separated semver requirements, any of which admits it (the Nest client writes a pre-release without its hyphen: 0.1.0a is read as 0.1.0-a). The default admits the versions the Nest client shipped, 0.1.0a and 1.0.0, and their later 0.1 and 1.x releases.
    nest_versions: String = "~0.1.0-a, ^1.0.0".into(), env "CONCIERGE_NEST_VERSIONS", check crate::adapters::nest::versions;
    /// HOST[:PORT] that VPN clients dial (the WireGuard server's public address; the port defaults to vpn_listen_port); empty: this gateway issues no VPN configs.
    vpn_endpoint: String = String::new(), env "CONCIERGE_VPN_ENDPOINT", check vpn_endpoint;
    /// WireGuard interface this gateway manages (it keeps the interface's peers equal to the issued configs, changing only what differs); empty: configs are issued, no interface is managed.
    vpn_interface: String = String::new(), env "CONCIERGE_VPN_INTERFACE", check vpn_interface;
    /// How vpn_interface is driven: kernel (netlink), userspace (the UAPI socket under /var/run/wireguard, e.g. boringtun) or auto (kernel when the interface is a kernel one, else userspace).
    vpn_backend: String = "auto".into(), env "CONCIERGE_VPN_BACKEND", check vpn_backend;
    /// UDP port of the WireGuard server (set on vpn_interface, and the port of a vpn_endpoint without one).
    vpn_listen_port: u64 = 51_820, env "CONCIERGE_VPN_LISTEN_PORT", check udp_port;
    /// IPv4 pool of tunnel addresses (CIDR); its first address is the server's; empty: no IPv4 in the tunnel.
    vpn_ipv4_pool: String = "10.8.0.0/24".into(), env "CONCIERGE_VPN_IPV4_POOL", check cidr_list;
    /// IPv6 pool of tunnel addresses (CIDR); its first address is the server's; empty: no IPv6 in the tunnel.
    vpn_ipv6_pool: String = "fd00:8::/64".into(), env "CONCIERGE_VPN_IPV6_POOL", check cidr_list;
    /// DNS servers handed to clients, comma-separated; empty: none.
    vpn_dns: String = String::new(), env "CONCIERGE_VPN_DNS", check ip_list;
    /// Seconds between keepalives a client sends (PersistentKeepalive); 0: none.
    vpn_keepalive_secs: u64 = 25, env "CONCIERGE_VPN_KEEPALIVE_SECS";
    /// Networks clients route through the tunnel (AllowedIPs), comma-separated CIDRs; empty: the pools.
    vpn_routes: String = String::new(), env "CONCIERGE_VPN_ROUTES", check cidr_list;
    /// Seconds between the comparisons of vpn_interface with the issued configs that are made even when nothing was reported changed (the interface edited by hand, a change missed); a change, a revocation or a token's expiry is applied within a second anyway.
    vpn_resync_secs: u64 = 5, env "CONCIERGE_VPN_RESYNC_SECS", check positive;
}

/// `trusted_proxies`: comma-separated IP addresses or networks in CIDR
/// notation (an address alone is a network of one); empty is none.
pub fn trusted_proxies(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(ipnet::IpNet::from(ip)),
            Err(_) => s
                .parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| {
                    format!("{s:?} is not an IP address or a network, e.g. 10.0.0.5 or 10.0.0.0/24")
                }),
        })
        .collect()
}

/// The entry of `allowed_origins` that allows every origin.
pub const ANY_ORIGIN: &str = "*";

/// `allowed_origins`: comma-separated origins as a browser sends them
/// (`scheme://host[:port]`, no path), lowercased; empty is none, and `*`
/// is every origin (what the seeds' servers allowed: never the default).
pub fn allowed_origins(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s == ANY_ORIGIN {
                return Ok(s.to_owned());
            }
            let bad = || format!("{s:?} is not an origin: write scheme://host[:port], e.g. https://app.example.com");
            let (scheme, authority) = s.split_once("://").ok_or_else(bad)?;
            let fine = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
            if scheme.is_empty() || authority.is_empty() || !authority.chars().all(fine) {
                return Err(bad());
            }
            Ok(s.to_ascii_lowercase())
        })
        .collect()
}

/// Why settings could not be loaded. Every message names what it is about:
/// the file, the variable, the flag or the key.
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
    /// A value the gateway cannot run with, in the words of where it was
    /// given.
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// The settings of a command line: the file named by `--config`
    /// (`config`) or else by `CONCIERGE_CONFIG`, then the `CONCIERGE_*`
    /// variables as `var` reads them (`std::env::var_os` but for tests),
    /// then `flags`.
    /// [`from_command_line`](Settings::from_command_line) with this
    /// process's environment.
    pub fn from_process(
        config: Option<PathBuf>,
        flags: SettingsLayer,
    ) -> Result<Self, ConfigError> {
        Self::from_command_line(config, flags, |name| std::env::var_os(name))
    }

    pub fn from_command_line(
        config: Option<PathBuf>,
        flags: SettingsLayer,
        var: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let config = match (config, var(CONFIG_ENV)) {
            (Some(path), _) => Some(path),
            (None, Some(path)) if path.is_empty() => {
                return Err(ConfigError::Invalid(format!(
                    "{CONFIG_ENV}=: must name a TOML file, or be unset"
                )))
            }
            (None, path) => path.map(PathBuf::from),
        };
        let env = SettingsLayer::from_vars(var)?;
        Settings::load(config.as_deref(), env, flags)
    }

    /// Defaults, then the file at `path` (if any), then `env`, then
    /// `flags`; a wrong value is reported as the layer that set it gave it.
    pub fn load(
        path: Option<&Path>,
        env: SettingsLayer,
        flags: SettingsLayer,
    ) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        let mut origins = Origins::default();
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
            origins.note(&layer, |_| Origin::File(path.to_owned()));
            settings.apply(layer);
        }
        origins.note(&env, Origin::Env);
        settings.apply(env);
        origins.note(&flags, |_| Origin::Flag);
        settings.apply(flags);
        settings.check(&origins)?;
        Ok(settings)
    }

    /// Rejects values the gateway cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(&Origins::default())
    }

    /// [`Settings::validate`], naming each wrong value by its origin.
    fn check(&self, origins: &Origins) -> Result<(), ConfigError> {
        self.check_each(origins)?;
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "invalid settings: heartbeat_timeout_ms = {} ({}) must be greater than \
                 heartbeat_interval_ms = {} ({})",
                self.heartbeat_timeout_ms,
                origins.heartbeat_timeout_ms.set_by("heartbeat_timeout_ms"),
                self.heartbeat_interval_ms,
                origins
                    .heartbeat_interval_ms
                    .set_by("heartbeat_interval_ms"),
            )));
        }
        if !self.redis_url.is_empty() && !self.redis_sentinels.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "invalid settings: redis_url ({}) and redis_sentinels ({}) are both set: \
                 use redis_url for one Redis, redis_sentinels for a Redis that fails over",
                origins.redis_url.set_by("redis_url"),
                origins.redis_sentinels.set_by("redis_sentinels"),
            )));
        }
        let (cert, key) = (&self.tls_cert, &self.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            let ((set, value, origin), missing) = if key.as_os_str().is_empty() {
                (("tls_cert", cert, &origins.tls_cert), "tls_key")
            } else {
                (("tls_key", key, &origins.tls_key), "tls_cert")
            };
            return Err(ConfigError::Invalid(format!(
                "invalid settings: {set} = {} ({}) needs {missing} as well: \
                 set both for TLS, or neither",
                value.toml(),
                origin.set_by(set),
            )));
        }
        Ok(())
    }

    /// The certificate and key files, when TLS is configured.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        if self.tls_cert.as_os_str().is_empty() {
            return None;
        }
        Some((&self.tls_cert, &self.tls_key))
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        host_port(&self.bind).map_err(|reason| Origin::Default.invalid("bind", &self.bind, &reason))
    }

    pub fn identify_timeout(&self) -> Duration {
        Duration::from_millis(self.identify_timeout_ms)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    pub fn close_linger(&self) -> Duration {
        Duration::from_millis(self.close_linger_ms)
    }

    /// Where uploaded files live.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("fs")
    }

    /// The VPN's settings, checked.
    pub fn vpn(&self) -> Result<VpnSettings, String> {
        VpnSettings::parse(&VpnText {
            endpoint: &self.vpn_endpoint,
            interface: &self.vpn_interface,
            backend: &self.vpn_backend,
            listen_port: self.vpn_listen_port,
            ipv4_pool: &self.vpn_ipv4_pool,
            ipv6_pool: &self.vpn_ipv6_pool,
            dns: &self.vpn_dns,
            keepalive_secs: self.vpn_keepalive_secs,
            routes: &self.vpn_routes,
            resync_secs: self.vpn_resync_secs,
        })
    }

    /// What the cluster is built from.
    pub fn cluster(&self) -> ClusterSettings {
        ClusterSettings {
            redis_url: self.redis_url.clone(),
            redis_sentinels: self.redis_sentinels.clone(),
            redis_sentinel_master: self.redis_sentinel_master.clone(),
            node_lease: Duration::from_millis(self.node_lease_ms),
            data_dir: self.data_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
