//! The requests hosts and the gateway serve (PROTOCOL §13 and §14), typed
//! once for everybody: the agent serves [`Request`], `ctl` and the console
//! send it, the Nest and Quix adapters translate it, the gateway serves
//! [`GatewayRequest`] and the agent sends it one.
//!
//! Each request is a variant carrying its arguments' type ([`args`]), and
//! its name, who may send it ([`Access`]) and the console's table all come
//! from that enum: renaming or removing a request breaks the build of every
//! side that matches on it, not a production conversation.
//!
//! Beside it: [`Reason`] and [`Failure`], the one error reply every side
//! sends; the envelope ([`Envelope`], [`reply`], [`success`]); [`authorize`],
//! the one role check; [`signals`], the signal names a request may use.

pub mod args;
mod envelope;
mod failure;
pub mod signals;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use envelope::{envelope, outcome, reply, success, Envelope, Rid};
pub use failure::{Failure, Reason};

use crate::alerts::{AlertRule, AlertsQuery, RuleName};
use crate::fleet::{Facts, ForgetHost, HostsQuery};
use crate::health::{HistoryQuery, Summary};
use crate::jobs::{CancelJob, HostRef, JobQuery, JobRef, JobSpec, JobsQuery, RunJob};
use crate::Role;
use args::{
    Audit, ExecCommand, Execute, GetVpnConf, KillProcess, NoArgs, Page, PidArg, ProcOutput,
    ProcSignal, Telemetry, Unit, ViewRunning, VpnRevoke,
};

/// A request an agent serves, with its arguments: `{"req": NAME, "msg":
/// ARGS}` on the wire (plus the envelope's `rid`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[serde(tag = "req", content = "msg", rename_all = "snake_case")]
#[strum_discriminants(
    name(RequestName),
    derive(
        strum::EnumString,
        strum::IntoStaticStr,
        strum::EnumIter,
        strum::VariantNames,
        Hash
    ),
    strum(serialize_all = "snake_case")
)]
pub enum Request {
    Execute(Execute),
    ViewRunning(ViewRunning),
    ListStarted(Page),
    ProcSignal(ProcSignal),
    ProcOutput(ProcOutput),
    Telemetry(Telemetry),
    ObtainUserUsages(NoArgs),
    ObtainAllProcessInfo(Page),
    ObtainProcessInfo(PidArg),
    KillProcess(KillProcess),
    PauseProcess(PidArg),
    ResumeProcess(PidArg),
    ListServices(Page),
    ObtainServiceInfo(Unit),
    StartService(Unit),
    StopService(Unit),
    RestartService(Unit),
    ReloadService(Unit),
    ExecCommand(ExecCommand),
    /// A free TCP port for the sender to use (the Nest client's `nest
    /// get_port`).
    GetPort(NoArgs),
    Audit(Audit),
    GetVpnConf(GetVpnConf),
    Ping(NoArgs),
    /// Run a request once for a job (§19.4): sent by the gateway's job
    /// coordinator.
    RunJob(RunJob),
    CancelJob(CancelJob),
}

/// Who may send a request (§13.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// `viewer` and above.
    Read,
    /// `operator` and above; audited.
    Command,
}

impl Access {
    /// The role a sender needs.
    pub fn role(self) -> Role {
        match self {
            Access::Read => Role::Viewer,
            Access::Command => Role::Operator,
        }
    }
}

impl RequestName {
    /// Every request's name.
    pub const NAMES: &'static [&'static str] = <RequestName as strum::VariantNames>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The request `req` names, or `unknown_request`.
    pub fn parse(req: &str) -> Result<RequestName, Failure> {
        req.parse().map_err(|_| unknown(req))
    }

    /// Who may send it.
    pub fn access(self) -> Access {
        use RequestName::*;
        match self {
            ViewRunning | ListStarted | ProcOutput | Telemetry | ObtainUserUsages
            | ObtainAllProcessInfo | ObtainProcessInfo | ListServices | ObtainServiceInfo
            | GetPort | GetVpnConf | Ping => Access::Read,
            Execute | ProcSignal | KillProcess | PauseProcess | ResumeProcess | StartService
            | StopService | RestartService | ReloadService | ExecCommand | Audit | RunJob
            | CancelJob => Access::Command,
        }
    }

    /// Every request with its access, `{"execute": "command", ...}`: the
    /// table the console offers requests from.
    pub fn table() -> Value {
        use strum::IntoEnumIterator;
        RequestName::iter()
            .map(|name| (name.as_str().to_owned(), json!(name.access())))
            .collect::<Map<String, Value>>()
            .into()
    }
}

impl Request {
    /// The request an envelope carries, its arguments read into their type:
    /// an unknown name is `unknown_request`, a wrong argument
    /// `bad_argument` naming it.
    pub fn parse(envelope: &Envelope) -> Result<Request, Failure> {
        RequestName::parse(&envelope.req)?;
        arguments(envelope)
    }

    pub fn name(&self) -> RequestName {
        self.into()
    }
}

/// A request the gateway answers itself, sent to its reserved name
/// ([`crate::GATEWAY_NAME`], §14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[serde(tag = "req", content = "msg", rename_all = "snake_case")]
#[strum_discriminants(
    name(GatewayRequestName),
    derive(strum::EnumString, strum::IntoStaticStr, strum::EnumIter),
    strum(serialize_all = "snake_case")
)]
pub enum GatewayRequest {
    /// Any client with a token, for its own name (an admin for any).
    GetVpnConf(GetVpnConf),
    /// Operators.
    VpnPeers(NoArgs),
    /// Admins.
    VpnRevoke(VpnRevoke),
    /// A host, of itself: its facts and labels for the inventory.
    Facts(Facts),
    /// Viewers: the inventory (§18).
    Hosts(HostsQuery),
    /// Admins: the inventory forgets a host.
    ForgetHost(ForgetHost),
    /// Operators: a job (§19), or with `dry_run` what its target resolves
    /// to.
    JobCreate(JobSpec),
    /// Viewers: a job and its hosts.
    JobGet(JobQuery),
    /// Viewers: the latest jobs.
    Jobs(JobsQuery),
    /// Operators: stop a job.
    JobCancel(JobRef),
    /// Viewers: one host's result and output.
    JobOutput(HostRef),
    /// A host, of itself: its health now (§20), every `summary_interval`.
    Summary(Summary),
    /// Viewers: a host's stored summaries (§20).
    History(HistoryQuery),
    /// Viewers: the alerts firing now and the latest events (§21).
    Alerts(AlertsQuery),
    /// Viewers: every alert rule.
    AlertRules(NoArgs),
    /// Admins: add or replace an alert rule (not one of the configuration's).
    AlertRuleSet(AlertRule),
    /// Admins: remove an alert rule added over the API.
    AlertRuleDelete(RuleName),
}

impl GatewayRequest {
    /// The request an envelope to the gateway carries.
    pub fn parse(envelope: &Envelope) -> Result<GatewayRequest, Failure> {
        envelope.req.parse::<GatewayRequestName>().map_err(|_| {
            use strum::IntoEnumIterator;
            let known: Vec<&str> = GatewayRequestName::iter().map(<&str>::from).collect();
            Failure::new(
                Reason::UnknownRequest,
                format!(
                    "the gateway answers no request {:?}: {}",
                    envelope.req,
                    known.join(", ")
                ),
            )
        })?;
        arguments(envelope)
    }

    /// The role a sender needs, beyond a token (`get_vpn_conf`'s rule is
    /// the VPN's: one's own name; `facts` and `summary` are about the
    /// sender itself, and the gateway's rule is that it be a host).
    pub fn role(&self) -> Option<Role> {
        match self {
            GatewayRequest::GetVpnConf(_)
            | GatewayRequest::Facts(_)
            | GatewayRequest::Summary(_) => None,
            GatewayRequest::Hosts(_)
            | GatewayRequest::JobGet(_)
            | GatewayRequest::Jobs(_)
            | GatewayRequest::JobOutput(_)
            | GatewayRequest::History(_)
            | GatewayRequest::Alerts(_)
            | GatewayRequest::AlertRules(_) => Some(Role::Viewer),
            GatewayRequest::VpnPeers(_)
            | GatewayRequest::JobCreate(_)
            | GatewayRequest::JobCancel(_) => Some(Role::Operator),
            GatewayRequest::VpnRevoke(_)
            | GatewayRequest::ForgetHost(_)
            | GatewayRequest::AlertRuleSet(_)
            | GatewayRequest::AlertRuleDelete(_) => Some(Role::Admin),
        }
    }
}

fn unknown(req: &str) -> Failure {
    Failure::new(
        Reason::UnknownRequest,
        format!("there is no request {req:?}"),
    )
}

/// The envelope's `req` and `msg` read into `T`, an enum tagged by `req`
/// whose name is known to be one of `T`'s.
fn arguments<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, Failure> {
    // `req` first: serde then reads `msg` straight into the variant's
    // type, and the error's path names the argument.
    let tagged = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
        [
            ("req", Value::String(envelope.req.clone())),
            ("msg", Value::Object(envelope.msg.clone())),
        ]
        .into_iter(),
    );
    serde_path_to_error::deserialize(tagged).map_err(|e| {
        let path = e.path().to_string();
        let field = path.strip_prefix("msg.").unwrap_or("");
        let inner = e.into_inner();
        Failure::bad_argument(match field {
            "" => format!("{inner}"),
            field => format!("`{field}`: {inner}"),
        })
    })
}

/// Whether a sender may make a request that needs `needed`: `user` (none
/// for a client without a token) holding `roles`, each role with those
/// it implies. The one role check of every side.
pub fn authorize(user: Option<&str>, roles: &[Role], needed: Role) -> Result<(), Failure> {
    if roles.contains(&needed) {
        return Ok(());
    }
    let who = match user {
        Some(user) if roles.is_empty() => format!("{user} (roles: none)"),
        Some(user) => {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            format!("{user} (roles: {})", names.join(", "))
        }
        None => "a client without a token".into(),
    };
    Err(Failure::new(
        Reason::Forbidden,
        format!("{who} may not do this: it needs the {needed} role"),
    ))
}

#[cfg(test)]
mod tests;
