//! The arguments (`msg`) of each request, one type per shape, read with
//! serde as socketioxide's `Data<T>` reads an event's: a missing or
//! mistyped argument is a `bad_argument` naming it, never a field read
//! from a raw map.
//!
//! Arguments no request knows are ignored, as they always were; `null`
//! stands for an absent optional argument.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A process id: a positive integer that fits a pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Pid(pub u32);

impl<'de> Deserialize<'de> for Pid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => Ok(Pid(pid)),
            _ => Err(serde::de::Error::custom(format!(
                "must be a process id (1..{}), not {n}",
                i32::MAX
            ))),
        }
    }
}

/// `false` for an absent or `null` flag.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// No arguments (any given are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoArgs {}

/// A page of a list: from `offset` (default 0), as far as a reply holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// `execute`: `cmd` (an argv) or `command` (a line split into words), in
/// `cwd` with `env` added; with `follow`, the output comes as events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Execute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub follow: bool,
}

/// `view_running`: seed 003's `verb`, ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<Value>,
}

/// `proc_signal`: signal `mode` (`SIGTERM`, `TERM`, any case) to `pid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcSignal {
    pub pid: Pid,
    pub mode: String,
}

/// `kill_process`: `SIGTERM` (default) or `SIGKILL` to `pid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillProcess {
    pub pid: Pid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A request about one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PidArg {
    pub pid: Pid,
}

/// `proc_output`: a started process's output from `offset`, or with
/// `follow` its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcOutput {
    pub proc_id: Pid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub follow: bool,
}

/// `telemetry`: the stat types wanted (default all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_types: Option<Vec<String>>,
}

/// A request about one systemd unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub service_name: String,
}

/// `exec_command`: a command line, run (in `cwd`, with `env` added, as
/// `execute` runs one) and waited for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecCommand {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
}

/// `audit`: the last `limit` entries (default 50, at most 1000).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `get_vpn_conf` (seed 003, §14): the config of `name` (default the
/// asker's own) with `public_key`, or with a key pair the gateway makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GetVpnConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl GetVpnConf {
    /// `conf_type`, by default the one there is.
    pub fn conf_type(&self) -> &str {
        self.conf_type.as_deref().unwrap_or("wireguard")
    }

    /// `tun_mode`, by default the one WireGuard has.
    pub fn tun_mode(&self) -> &str {
        self.tun_mode.as_deref().unwrap_or("udp")
    }
}

/// The success reply to `get_vpn_conf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnConf {
    pub conf_type: String,
    pub conf_data: String,
}

/// `vpn_revoke`: the peer of `name` goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnRevoke {
    pub name: String,
}
