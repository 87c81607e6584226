//! The agent's settings: defaults, then a TOML file, then `CONCIERGE_AGENT_*`
//! variables, then flags (the flags and variables cover the settings a
//! host's unit file or a person at a terminal sets; the rules are in the
//! file). `config/agent.toml` documents every key; a test keeps it in step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::policy::{ExecRule, ExecSettings, Policy, SignalRule};
use super::systemd::Manager;
use concierge_client::context::{Contexts, GatewayUrl};
use concierge_protocol::Role;

/// The documented file, every key at its default.
pub const DOCUMENTED: &str = include_str!("../../../config/agent.toml");

/// The settings file's keys, every one optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    pub url: String,
    pub name: String,
    pub token: String,
    pub token_file: PathBuf,
    pub work_dir: PathBuf,
    pub audit_log: PathBuf,
    pub systemd: String,
    pub anonymous_role: String,
    pub telemetry_interval_ms: u64,
    pub output_limit: usize,
    pub keep_exited: usize,
    pub max_running: usize,
    pub max_follows: usize,
    pub max_follows_per_requester: usize,
    pub max_follows_per_process: usize,
    pub exec_timeout_secs: u64,
    pub job_output_bytes: usize,
    pub max_reply_bytes: usize,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub take_over: bool,
    pub retry_refused: bool,
    pub vpn: bool,
    pub vpn_interface: String,
    pub vpn_key_file: PathBuf,
    pub vpn_userspace: String,
    pub signal_allow: Vec<SignalRule>,
    pub exec_allow: Vec<ExecRule>,
    pub exec_env_allow: Vec<String>,
    pub exec_cwd_allow: Vec<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            url: "ws://127.0.0.1:8080/ws".into(),
            name: String::new(),
            token: String::new(),
            token_file: PathBuf::new(),
            work_dir: PathBuf::from("."),
            audit_log: PathBuf::from("audit.log"),
            systemd: "system".into(),
            anonymous_role: "none".into(),
            telemetry_interval_ms: 2000,
            output_limit: 1024 * 1024,
            keep_exited: 64,
            max_running: 64,
            max_follows: 64,
            max_follows_per_requester: 8,
            max_follows_per_process: 16,
            exec_timeout_secs: 60,
            job_output_bytes: 8192,
            max_reply_bytes: 60_000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            take_over: false,
            retry_refused: false,
            vpn: false,
            vpn_interface: "wg0".into(),
            vpn_key_file: PathBuf::from("vpn.key"),
            vpn_userspace: String::new(),
            signal_allow: Vec::new(),
            exec_allow: Vec::new(),
            exec_env_allow: ["LANG", "LC_*", "TZ", "TERM", "NO_COLOR"]
                .map(String::from)
                .to_vec(),
            exec_cwd_allow: Vec::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// The flags (each with its variable) of `concierge agent`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// TOML settings file (see config/agent.toml).
    #[arg(long, env = "CONCIERGE_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The gateway: ws://HOST:PORT/ws, wss://…, http://HOST:PORT or HOST:PORT
    /// [default: ws://127.0.0.1:8080/ws].
    #[arg(long, env = "CONCIERGE_AGENT_URL")]
    pub url: Option<String>,
    /// Take the gateway and the token from this context of `concierge
    /// login` (flags and variables still win over it).
    #[arg(long, env = "CONCIERGE_AGENT_CONTEXT")]
    pub context: Option<String>,
    /// The token to identify with (`concierge token issue --role agent`);
    /// prefer the variable or --token-file: a flag shows in `ps`.
    #[arg(long, env = "CONCIERGE_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token.
    #[arg(long, env = "CONCIERGE_AGENT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The name to identify as [default: the host name].
    #[arg(long, env = "CONCIERGE_AGENT_NAME")]
    pub name: Option<String>,
    /// The folder processes start in and `obtain_user_usages` measures [default: .].
    #[arg(long, env = "CONCIERGE_AGENT_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The audit log (JSON lines), relative to the work folder [default: audit.log].
    #[arg(long, env = "CONCIERGE_AGENT_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// The systemd manager units are driven on: system, user or off [default: system].
    #[arg(long, env = "CONCIERGE_AGENT_SYSTEMD")]
    pub systemd: Option<String>,
    /// What clients without a token may do: none, viewer or operator [default: none].
    #[arg(long, env = "CONCIERGE_AGENT_ANONYMOUS_ROLE")]
    pub anonymous_role: Option<String>,
    /// Milliseconds between telemetry samples [default: 2000].
    #[arg(long, env = "CONCIERGE_AGENT_TELEMETRY_INTERVAL_MS")]
    pub telemetry_interval_ms: Option<u64>,
    /// Take the name over from another agent connected with it (of the same
    /// token's user) instead of being refused.
    #[arg(long, env = "CONCIERGE_AGENT_TAKE_OVER", num_args = 0..=1, default_missing_value = "true")]
    pub take_over: Option<bool>,
    /// When the gateway refuses the token or the name, retry every few
    /// minutes instead of exiting (for a service manager that would restart
    /// it at once).
    #[arg(long, env = "CONCIERGE_AGENT_RETRY_REFUSED", num_args = 0..=1, default_missing_value = "true")]
    pub retry_refused: Option<bool>,
    /// Fetch this host's WireGuard config from the gateway and keep the tunnel up.
    #[arg(long, env = "CONCIERGE_AGENT_VPN", num_args = 0..=1, default_missing_value = "true")]
    pub vpn: Option<bool>,
    /// The tunnel's interface [default: wg0].
    #[arg(long, env = "CONCIERGE_AGENT_VPN_INTERFACE")]
    pub vpn_interface: Option<String>,
    /// A label for the inventory and target expressions, KEY=VALUE (repeat
    /// it, or separate with commas); over the file's `labels`.
    #[arg(
        long = "label",
        env = "CONCIERGE_AGENT_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// `__job-wrap`, which the agent runs its jobs' processes under.
    #[command(subcommand)]
    pub hidden: Option<super::job_wrap::Hidden>,
}

/// The settings, resolved and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub url: String,
    pub name: String,
    pub token: Option<String>,
    pub work_dir: PathBuf,
    pub audit_log: PathBuf,
    pub systemd: Option<Manager>,
    pub anonymous_role: Option<Role>,
    pub telemetry_interval: Duration,
    pub output_limit: usize,
    pub keep_exited: usize,
    pub max_running: usize,
    pub max_follows: usize,
    pub max_follows_per_requester: usize,
    pub max_follows_per_process: usize,
    pub exec_timeout: Duration,
    pub job_output_bytes: usize,
    pub max_reply_bytes: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub take_over: bool,
    pub retry_refused: bool,
    pub policy: Policy,
    /// `--vpn`: the interface, the key file, the userspace implementation.
    pub vpn: Option<(String, PathBuf, Option<String>)>,
    /// The labels it reports with its facts.
    pub labels: BTreeMap<String, String>,
}

impl AgentSettings {
    /// The file (if any), then the flags and variables over it.
    pub fn load(args: AgentArgs) -> Result<Resolved, String> {
        let mut s = match &args.config {
            Some(path) => AgentSettings::from_file(path)?,
            None => AgentSettings::default(),
        };
        if let Some(name) = &args.context {
            let contexts = Contexts::load().map_err(|e| e.to_string())?;
            let context = contexts.get(name).map_err(|e| e.to_string())?;
            s.url = context.url.clone();
            if args.token.is_none() && args.token_file.is_none() {
                s.token = context.token.clone();
            }
        }
        macro_rules! over {
            ($($field:ident),+) => { $( if let Some(v) = args.$field { s.$field = v; } )+ };
        }
        over!(
            url,
            token,
            token_file,
            name,
            work_dir,
            audit_log,
            systemd,
            anonymous_role,
            telemetry_interval_ms,
            take_over,
            retry_refused,
            vpn,
            vpn_interface
        );
        let flags = concierge_protocol::fleet::parse_labels(&args.labels.join(","))
            .map_err(|e| format!("--label: {e}"))?;
        s.labels.extend(flags);
        s.resolve()
    }

    pub fn from_file(path: &Path) -> Result<AgentSettings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid settings file {}: {e}", path.display()))
    }

    fn resolve(self) -> Result<Resolved, String> {
        let url = GatewayUrl::parse(&self.url)
            .map_err(|e| format!("url: {e}"))?
            .ws();
        let token = if !self.token.is_empty() {
            Some(self.token.trim().to_owned())
        } else if !self.token_file.as_os_str().is_empty() {
            let text = std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("token_file {}: {e}", self.token_file.display()))?;
            Some(text.trim().to_owned())
        } else {
            None
        };
        let name = if self.name.is_empty() {
            host_name()?
        } else {
            self.name
        };
        let systemd = match self.systemd.as_str() {
            "off" => None,
            other => Some(
                other
                    .parse::<Manager>()
                    .map_err(|_| format!("systemd {other:?}: must be system, user or off"))?,
            ),
        };
        let anonymous_role = match self.anonymous_role.as_str() {
            "none" | "" => None,
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            other => {
                return Err(format!(
                    "anonymous_role {other:?}: must be none, viewer or operator"
                ))
            }
        };
        for (key, value) in [
            ("telemetry_interval_ms", self.telemetry_interval_ms),
            ("exec_timeout_secs", self.exec_timeout_secs),
            ("reconnect_min_ms", self.reconnect_min_ms),
            ("reconnect_max_ms", self.reconnect_max_ms),
        ] {
            if value == 0 {
                return Err(format!("{key}: must be positive"));
            }
        }
        for (key, value) in &self.labels {
            concierge_protocol::fleet::check_label(key, value)
                .map_err(|e| format!("labels: {e}"))?;
        }
        if self.labels.len() > concierge_protocol::fleet::MAX_LABELS {
            return Err(format!(
                "labels: at most {} labels",
                concierge_protocol::fleet::MAX_LABELS
            ));
        }
        if self.max_reply_bytes < 4096 {
            return Err("max_reply_bytes: must be at least 4096".into());
        }
        if self.job_output_bytes > self.max_reply_bytes / 4 {
            return Err(format!(
                "job_output_bytes: at most a quarter of max_reply_bytes ({}): a job's reply \
                 carries its stdout and its stderr",
                self.max_reply_bytes / 4
            ));
        }
        let audit_log = self.work_dir.join(&self.audit_log);
        let vpn = self.vpn.then(|| {
            let userspace = (!self.vpn_userspace.is_empty()).then(|| self.vpn_userspace.clone());
            (
                self.vpn_interface.clone(),
                self.work_dir.join(&self.vpn_key_file),
                userspace,
            )
        });
        let policy = Policy::new(
            &self.signal_allow,
            ExecSettings {
                rules: &self.exec_allow,
                env_allow: &self.exec_env_allow,
                cwd_allow: &self.exec_cwd_allow,
                work_dir: &self.work_dir,
            },
        )?;
        Ok(Resolved {
            url,
            name,
            token,
            work_dir: self.work_dir,
            audit_log,
            systemd,
            anonymous_role,
            telemetry_interval: Duration::from_millis(self.telemetry_interval_ms),
            output_limit: self.output_limit.max(CHUNK_FLOOR),
            keep_exited: self.keep_exited,
            max_running: self.max_running.max(1),
            max_follows: self.max_follows.max(1),
            max_follows_per_requester: self.max_follows_per_requester.max(1),
            max_follows_per_process: self.max_follows_per_process.max(1),
            exec_timeout: Duration::from_secs(self.exec_timeout_secs),
            job_output_bytes: self.job_output_bytes,
            max_reply_bytes: self.max_reply_bytes,
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms.max(self.reconnect_min_ms)),
            take_over: self.take_over,
            retry_refused: self.retry_refused,
            policy,
            vpn,
            labels: self.labels,
        })
    }
}

/// The smallest output log: one event's worth.
const CHUNK_FLOOR: usize = super::procs::CHUNK_MAX;

/// This host's name, as `hostname` prints it.
fn host_name() -> Result<String, String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the host name ({e}): set name"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err("this host has no name: set name".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented file parses and says exactly the defaults.
    #[test]
    fn the_documented_file_is_the_defaults() {
        let documented: AgentSettings =
            toml::from_str(DOCUMENTED).expect("config/agent.toml parses");
        let defaults = AgentSettings::default();
        assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn wrong_values_are_named() {
        let s = AgentSettings {
            url: "ftp://x".into(),
            ..AgentSettings::default()
        };
        assert!(s.resolve().expect_err("url").contains("ws://HOST:PORT/ws"));
        let s = AgentSettings {
            name: "h".into(),
            anonymous_role: "admin".into(),
            ..AgentSettings::default()
        };
        assert!(s.resolve().expect_err("role").contains("anonymous_role"));
    }
}
