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
//! gave it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::num::IntErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::settings::{redacted, redis_sentinels, redis_url};
use crate::cluster::ClusterSettings;

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

/// A setting's type: read from a flag's or a variable's text, written into
/// the generated file, and shown back to the user as they would type it.
trait SettingValue: Clone + Send + Sync + 'static {
    /// The value `text` spells, or why it spells none, in plain words.
    fn parse(text: &str) -> Result<Self, String>;
    /// As written in the TOML file.
    fn toml(&self) -> String;
    /// As typed on a command line or in a variable.
    fn text(&self) -> String;
}

impl SettingValue for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn toml(&self) -> String {
        format!("{self:?}")
    }

    fn text(&self) -> String {
        self.clone()
    }
}

impl SettingValue for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        }
    }

    fn toml(&self) -> String {
        self.to_string()
    }

    fn text(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn toml(&self) -> String {
        format!("{:?}", self.display().to_string())
    }

    fn text(&self) -> String {
        self.display().to_string()
    }
}

/// Unsigned integers: every number setting is a count or a duration, so a
/// negative value gets the same plain reason as a word.
macro_rules! whole_number {
    ($($ty:ty),+) => {$(
        impl SettingValue for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
                    IntErrorKind::PosOverflow => format!("must be at most {}", <$ty>::MAX),
                    _ => "must be a whole number, 0 or more".to_owned(),
                })
            }

            fn toml(&self) -> String {
                self.to_string()
            }

            fn text(&self) -> String {
                self.to_string()
            }
        }
    )+};
}

whole_number!(u64, usize);

/// The flag of the setting `key`, parsed with its type's reasons and
/// accepting a negative number as a value (to refuse it in those words
/// rather than as an unknown flag).
fn setting_arg<T: SettingValue>(key: &'static str, env: &str, doc: &str, default: &T) -> clap::Arg {
    let default = match default.text() {
        text if text.is_empty() => "empty".to_owned(),
        text => text,
    };
    clap::Arg::new(key)
        .long(flag_name(key))
        .value_name(key.to_uppercase())
        .value_parser(T::parse)
        .allow_negative_numbers(true)
        .help(format!("{} [default: {default}] [env: {env}]", doc.trim()))
}

/// `max_frame_size` as a flag: `max-frame-size`.
fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

/// The variable `name` for the setting `key`, if it is set.
fn read_var<T: SettingValue>(
    var: &impl Fn(&str) -> Option<OsString>,
    key: &str,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(None);
    };
    let text = value.into_string().map_err(|value| {
        ConfigError::Invalid(format!(
            "{name}={}: not valid UTF-8",
            value.to_string_lossy()
        ))
    })?;
    T::parse(&text)
        .map(Some)
        .map_err(|reason| Origin::Env(name).invalid(key, &text, &reason))
}

/// Where a setting's value was given.
#[derive(Debug, Clone, Default)]
enum Origin {
    /// Built in, or set by code that made the [`Settings`] itself.
    #[default]
    Default,
    File(PathBuf),
    /// The variable of that name.
    Env(&'static str),
    Flag,
}

impl Origin {
    /// `value` of `key` is wrong for `reason`, said in the words of where
    /// it was given.
    fn invalid<T: SettingValue>(&self, key: &str, value: &T, reason: &str) -> ConfigError {
        let (toml, text) = match key {
            "secret" => ("\"…\"".to_owned(), "…".to_owned()),
            _ => {
                let text = redacted(&value.text());
                match value.toml() {
                    quoted if quoted.starts_with('"') => (format!("{text:?}"), text),
                    toml => (toml, text),
                }
            }
        };
        ConfigError::Invalid(match self {
            Origin::Default => format!("invalid setting {key} = {toml}: {reason}"),
            Origin::File(path) => format!(
                "invalid config file {}: {key} = {toml}: {reason}",
                path.display()
            ),
            Origin::Env(name) => format!("{name}={text}: {reason}"),
            Origin::Flag => format!("invalid value {toml} for --{}: {reason}", flag_name(key)),
        })
    }

    /// Who set `key`, for a message about two settings.
    fn set_by(&self, key: &str) -> String {
        match self {
            Origin::Default => "the default".to_owned(),
            Origin::File(path) => format!("set in {}", path.display()),
            Origin::Env(name) => format!("set by {name}"),
            Origin::Flag => format!("set by --{}", flag_name(key)),
        }
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
    /// Browser origins (comma-separated, e.g. https://app.example.com) allowed besides the gateway's own to open a WebSocket (every path) and to log in (POST /auth/token); a request with any other Origin header is refused with 403. Programs send no Origin and are not affected.
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

/// `vpn_endpoint`: empty, HOST or HOST:PORT (a name, an IPv4 address or
/// an IPv6 address in brackets).
fn vpn_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.is_empty() || vpn_endpoint_parts(endpoint).is_some() {
        Ok(())
    } else {
        Err(
            "not HOST or HOST:PORT, e.g. vpn.example.com:51820, 203.0.113.7 or [2001:db8::7]:51820"
                .to_owned(),
        )
    }
}

/// `vpn_endpoint`'s host and port (if it has one).
pub fn vpn_endpoint_parts(endpoint: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((&endpoint[..host.len() + 2], None)),
            _ => Some((
                &endpoint[..host.len() + 2],
                Some(port(after.strip_prefix(':')?)?),
            )),
        };
    }
    let fine = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
    };
    match endpoint.split_once(':') {
        None => fine(endpoint).then_some((endpoint, None)),
        Some((host, p)) => (fine(host)).then_some((host, Some(port(p)?))),
    }
}

/// `vpn_interface`: empty, or an interface name (1 to 15 bytes of letters,
/// digits, `_`, `-`, `.`).
fn vpn_interface(name: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if name.is_empty() || (name.len() <= 15 && name.chars().all(fine)) {
        Ok(())
    } else {
        Err("not an interface name: 1 to 15 letters, digits, '_', '-' or '.'".to_owned())
    }
}

fn vpn_backend(backend: &str) -> Result<(), String> {
    match backend {
        "auto" | "kernel" | "userspace" => Ok(()),
        _ => Err("must be auto, kernel or userspace".to_owned()),
    }
}

fn udp_port(port: &u64) -> Result<(), String> {
    if (1..=65_535).contains(port) {
        Ok(())
    } else {
        Err("must be a port, 1 to 65535".to_owned())
    }
}

/// Comma-separated networks in CIDR notation (`10.8.0.0/24`,
/// `fd00:8::/64`); empty is none.
pub fn cidr_list(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| format!("{s:?} is not a network in CIDR notation, e.g. 10.8.0.0/24"))
        })
        .collect()
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

/// `allowed_origins`: comma-separated origins as a browser sends them
/// (`scheme://host[:port]`, no path), lowercased; empty is none.
pub fn allowed_origins(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
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

/// Comma-separated IP addresses; empty is none.
pub fn ip_list(text: &str) -> Result<Vec<std::net::IpAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{s:?} is not an IP address")))
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
        let settings =
            Settings::load(Some(&path), SettingsLayer::default(), overrides).expect("loads");
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
        let err = Settings::load(
            Some(&path),
            SettingsLayer::default(),
            SettingsLayer::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = Settings::load(
            None,
            SettingsLayer::default(),
            SettingsLayer {
                bind: Some("nowhere".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        assert!(Settings::load(
            Some(&dir.join("missing.toml")),
            SettingsLayer::default(),
            SettingsLayer::default()
        )
        .is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A `var` reading from `vars` instead of the environment.
    fn vars(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn variables_are_read_and_reported_under_their_own_names() {
        let layer = SettingsLayer::from_vars(vars(&[
            ("CONCIERGE_MAX_TAGS", "7"),
            ("CONCIERGE_SECRET", ""),
        ]))
        .expect("reads");
        assert_eq!(layer.max_tags, Some(7));
        assert_eq!(layer.secret.as_deref(), Some(""));
        assert_eq!(layer.bind, None);

        let err = SettingsLayer::from_vars(vars(&[("CONCIERGE_WORKERS", "lots")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CONCIERGE_WORKERS=lots: must be a whole number, 0 or more"
        );
        let err = SettingsLayer::from_vars(vars(&[("CONCIERGE_NODE_LEASE_MS", "-5")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CONCIERGE_NODE_LEASE_MS=-5: must be a whole number, 0 or more"
        );
        let err =
            SettingsLayer::from_vars(vars(&[("CONCIERGE_MAX_FILE_SIZE", "99999999999999999999")]))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CONCIERGE_MAX_FILE_SIZE=99999999999999999999: must be at most 18446744073709551615"
        );
    }

    #[test]
    fn a_wrong_value_is_named_as_its_source_gave_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "node_lease_ms = 0\n").expect("write");
        let err = Settings::load(
            Some(&path),
            SettingsLayer::default(),
            SettingsLayer::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid config file {}: node_lease_ms = 0: must be greater than 0",
                path.display()
            )
        );
        // Overridden, the file's value is not checked.
        let env =
            SettingsLayer::from_vars(vars(&[("CONCIERGE_NODE_LEASE_MS", "0")])).expect("reads");
        let flags = SettingsLayer {
            node_lease_ms: Some(1),
            ..Default::default()
        };
        Settings::load(Some(&path), env.clone(), flags).expect("the flag wins");
        let err = Settings::load(Some(&path), env, SettingsLayer::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CONCIERGE_NODE_LEASE_MS=0: must be greater than 0"
        );
        let flags = SettingsLayer {
            bind: Some("nowhere".into()),
            ..Default::default()
        };
        let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value \"nowhere\" for --bind: not HOST:PORT"),
            "{err}"
        );
        let err = Settings {
            data_dir: PathBuf::new(),
            ..Settings::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting data_dir = \"\": must name a folder"
        );

        // Two settings that contradict each other: both are named.
        let flags = SettingsLayer {
            heartbeat_timeout_ms: Some(5_000),
            ..Default::default()
        };
        let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid settings: heartbeat_timeout_ms = 5000 (set by --heartbeat-timeout-ms) \
             must be greater than heartbeat_interval_ms = 5000 (the default)"
        );
    }

    #[test]
    fn a_tls_certificate_needs_its_key() {
        let flags = SettingsLayer {
            tls_cert: Some(PathBuf::from("cert.pem")),
            ..Default::default()
        };
        let err = Settings::load(None, SettingsLayer::default(), flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid settings: tls_cert = \"cert.pem\" (set by --tls-cert) needs tls_key \
             as well: set both for TLS, or neither"
        );
        let env =
            SettingsLayer::from_vars(vars(&[("CONCIERGE_TLS_KEY", "key.pem")])).expect("reads");
        let err = Settings::load(None, env, SettingsLayer::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid settings: tls_key = \"key.pem\" (set by CONCIERGE_TLS_KEY) needs \
             tls_cert as well: set both for TLS, or neither"
        );
        let both = Settings {
            tls_cert: "cert.pem".into(),
            tls_key: "key.pem".into(),
            ..Settings::default()
        };
        both.validate().expect("both set");
        assert_eq!(
            both.tls_files(),
            Some((Path::new("cert.pem"), Path::new("key.pem")))
        );
        assert_eq!(Settings::default().tls_files(), None);
    }

    #[test]
    fn the_config_file_can_be_named_by_its_variable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_tags = 3\nworkers = 2\n").expect("write");
        let file = path.display().to_string();
        let settings = Settings::from_command_line(
            None,
            SettingsLayer {
                workers: Some(4),
                ..Default::default()
            },
            vars(&[("CONCIERGE_CONFIG", &file), ("CONCIERGE_WORKERS", "3")]),
        )
        .expect("loads");
        assert_eq!((settings.max_tags, settings.workers), (3, 4));
        // --config beats the variable.
        let err = Settings::from_command_line(
            Some(dir.path().join("missing.toml")),
            SettingsLayer::default(),
            vars(&[("CONCIERGE_CONFIG", &file)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
        let err = Settings::from_command_line(
            None,
            SettingsLayer::default(),
            vars(&[("CONCIERGE_CONFIG", "")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CONCIERGE_CONFIG=: must name a TOML file, or be unset"
        );
    }

    #[test]
    fn a_redis_password_is_never_shown_in_an_error() {
        let e = Origin::Flag
            .invalid("redis_url", &"redis://:hunter2@h/zero".to_owned(), "bad")
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
