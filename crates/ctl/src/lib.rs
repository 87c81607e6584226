//! `concierge ctl`: the operator's side of the agent.
//!
//! Every command is one connection to the gateway: identify (with the
//! token from `--token`, `CONCIERGE_TOKEN` or the context `concierge login`
//! stored, see `conn`), send one
//! request to a host's agent (seed 003's envelope inside a MESSAGE), wait
//! for the reply with the same `rid`, print it as a table (or the reply's
//! `msg` as JSON with `--json`), and exit non-zero when it failed. `exec
//! --follow`, `top` and `audit --follow` stay and print what streams in.
//!
//! Here are the entry point and the dispatch of each command; `args` is the
//! command line, `error` the failures and exit statuses, `conn` the
//! connection plumbing, `follow` the reconnection of a follow, `commands` the
//! longer commands, `interrupt` what Ctrl-C on `exec --follow` does, `jobs`
//! the jobs (`run`, `jobs`, `job`), `alerts` the alerts and their rules,
//! `fleet` the inventory (`hosts`, `forget`), `health` the hosts' health
//! (`hosts`' columns, `history`), `render`, `replies` (each kind of host's
//! replies), `summary` (a job's) and `top` the output.

mod alerts;
mod args;
mod commands;
mod conn;
mod error;
mod fleet;
mod follow;
mod health;
mod interrupt;
mod jobs;
mod render;
mod replies;
mod summary;
mod top;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

pub use args::{
    documented, AlertsArgs, AlertsCommand, CtlArgs, CtlCommand, JobArgs, JobCommand, RunArgs,
    VpnCommand,
};
use concierge_client::{Connection, Identity};
use concierge_protocol::agent::args::{NoArgs, Pid, PidArg, ProcSignal, Unit};
use concierge_protocol::agent::{signals, Request};
use concierge_protocol::{CtlName, HostKind};
use error::{CtlError, FAILED};
use render::Units;

pub fn main(args: CtlArgs) -> ExitCode {
    // `ctl ps --all | head` ends quietly when head has read enough, as
    // command-line tools do, instead of panicking on a closed pipe.
    // SAFETY: restoring a signal's default action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("concierge ctl: cannot start: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concierge ctl: {e}");
            ExitCode::from(e.status())
        }
    }
}

/// One connection to the gateway, as `ctl` uses it.
struct Ctl {
    conn: Connection,
    /// How to connect again and resume (`follow`).
    link: follow::Link,
    json: bool,
    timeout: Duration,
    next_rid: u64,
    /// How sizes are shown: the user's settings.
    units: Units,
    /// The kind of host that sent the last reply, from the tag the gateway
    /// relays with it (an agent when it carries none): how its replies
    /// read (`replies`).
    kind: HostKind,
}

async fn run(args: CtlArgs) -> Result<ExitCode, CtlError> {
    // A job's mistakes are shown before anything connects.
    if let CtlCommand::Run(run) = &args.command {
        jobs::spec(run)?;
    }
    let (url, token) = conn::gateway(&args)?;
    let name = ctl_name(token.as_deref());
    // A command that streams until the host says it is done must also
    // hear that the host left, or it would wait forever: it follows
    // presence.
    let follows = matches!(
        args.command,
        CtlCommand::Exec { follow: true, .. } | CtlCommand::Output { follow: true, .. }
    );
    let identity = Identity {
        name,
        tags: vec!["ctl".into()],
        token,
        presence: follows,
        take_over: true,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut link = follow::Link::new(url.clone(), identity);
    let conn = tokio::time::timeout(timeout, link.connect())
        .await
        .map_err(|_| CtlError::Unreachable(format!("{url}: no answer within {timeout:?}")))??;
    let mut ctl = Ctl {
        conn,
        link,
        json: args.json,
        timeout,
        next_rid: 1,
        units: Units::default(),
        kind: HostKind::Agent,
    };
    if !ctl.json {
        ctl.units = ctl.load_units().await;
    }
    let code = ctl.command(args.command).await;
    ctl.conn.sender.close().await;
    code
}

/// `NAME_ctl_XXXXXX` for the token's name (a person's token covers
/// NAME_*, a host's these names), `ctl_XXXXXX` without one: unique, so two
/// commands never take each other over.
fn ctl_name(token: Option<&str>) -> String {
    let claimed = token.and_then(|t| {
        use base64::Engine;
        let payload = t.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: Value = serde_json::from_slice(&bytes).ok()?;
        claims["name"].as_str().map(str::to_owned)
    });
    CtlName::make(claimed.as_deref(), getrandom::u32().unwrap_or(0))
}

/// A spinner on standard error while a person waits.
fn spinner(what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

impl Ctl {
    async fn command(&mut self, command: CtlCommand) -> Result<ExitCode, CtlError> {
        match command {
            CtlCommand::Hosts {
                target,
                online,
                sort,
            } => self.hosts(target, online, sort).await,
            CtlCommand::History {
                host,
                since,
                until,
                step,
            } => self.history(host, since, until, step).await,
            CtlCommand::Forget { host } => self.forget(&host).await,
            CtlCommand::Clients => self.clients().await,
            CtlCommand::Services => self.services().await,
            CtlCommand::Send { target, data } => self.send(&target, &data).await,
            CtlCommand::Request { host, req, msg } => {
                let msg: Value = serde_json::from_str(&msg)
                    .map_err(|e| CtlError::Usage(format!("the request's msg is not JSON: {e}")))?;
                // As given: the agent judges a request `ctl` does not know.
                let reply = self
                    .request(&host, &json!({"req": req, "msg": msg}))
                    .await?;
                println!("{reply}");
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Exec {
                host,
                follow,
                detach,
                cwd,
                cmd,
            } => {
                let follow = match (follow, detach) {
                    (false, _) => None,
                    (true, false) => Some(commands::Follow::Stop),
                    (true, true) => Some(commands::Follow::Detach),
                };
                self.exec(&host, follow, cwd, cmd).await
            }
            CtlCommand::Output {
                host,
                proc_id,
                follow,
            } => self.output(&host, proc_id, follow).await,
            CtlCommand::Ps { host, all } => self.ps(&host, all).await,
            CtlCommand::Proc { host, pid } => {
                let reply = self
                    .request(&host, &Request::ObtainProcessInfo(PidArg { pid: Pid(pid) }))
                    .await?;
                self.show(&reply, replies::process);
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Signal { host, pid, signal } => self.signal(&host, pid, signal).await,
            // As proc_signal, which every kind of host serves (a Quix
            // backend has no pause_process).
            CtlCommand::Pause { host, pid } => {
                self.signal(&host, pid, signals::name_of(libc::SIGSTOP))
                    .await
            }
            CtlCommand::Resume { host, pid } => {
                self.signal(&host, pid, signals::name_of(libc::SIGCONT))
                    .await
            }
            CtlCommand::Units { host } => {
                let units = self.pages(&host, Request::ListServices, "services").await?;
                self.show(&Value::from(units), |r, _| {
                    replies::services(r.as_array().map_or(&[], Vec::as_slice), &host)
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Unit { host, action, unit } => {
                let reply = self.request(&host, &unit_request(&action, &unit)).await?;
                self.show(&reply, |r, _| replies::unit(r, &host, &action, &unit));
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Top { host, once } => self.top(&host, once).await,
            CtlCommand::Usage { host } => {
                let reply = self
                    .request(&host, &Request::ObtainUserUsages(NoArgs {}))
                    .await?;
                let kind = self.kind;
                self.show(&reply, |r, units| replies::usage(r, kind, units));
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Vpn(command) => self.vpn(command).await,
            CtlCommand::Run(args) => self.run_job(args).await,
            CtlCommand::Jobs { limit } => self.jobs(limit).await,
            CtlCommand::Job(args) => self.job(args).await,
            CtlCommand::Alerts(args) => self.alerts(args).await,
            CtlCommand::Audit {
                host,
                limit,
                follow,
            } => self.audit(&host, limit, follow).await,
        }
    }

    async fn signal(&mut self, host: &str, pid: u32, signal: String) -> Result<ExitCode, CtlError> {
        let request = Request::ProcSignal(ProcSignal {
            pid: Pid(pid),
            mode: signal.clone(),
        });
        let reply = self.request(host, &request).await?;
        self.show(&reply, |r, _| replies::signal(r, pid, &signal));
        Ok(ExitCode::SUCCESS)
    }
}

/// The request for a systemd unit `action` (`start`, `stop`, `restart`,
/// `reload`; anything else shows the unit): `ctl unit` and `ctl run --unit`.
fn unit_request(action: &str, unit: &str) -> Request {
    let args = Unit {
        service_name: unit.to_owned(),
    };
    match action {
        "start" => Request::StartService(args),
        "stop" => Request::StopService(args),
        "restart" => Request::RestartService(args),
        "reload" => Request::ReloadService(args),
        _ => Request::ObtainServiceInfo(args),
    }
}
