//! `concierge ctl`: the operator's side of the agent.
//!
//! Every command is one connection to the gateway: identify (with the
//! token from `--token`, `CONCIERGE_TOKEN` or `concierge login`), send one
//! request to a host's agent (seed 003's envelope inside a MESSAGE), wait
//! for the reply with the same `rid`, print it as a table (or the reply's
//! `msg` as JSON with `--json`), and exit non-zero when it failed. `exec
//! --follow`, `top` and `audit --follow` stay and print what streams in.

mod render;
mod top;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use concierge_client::{self as client, ClientError, Connection, Identity};
use concierge_protocol::{CtlName, HostService, Origin, PayloadIn, PayloadOut, Target};
use render::{table, Units};

/// Exit status: the request was answered with an error, or the process
/// `exec --follow` ran failed without an exit code.
const FAILED: u8 = 1;
/// Exit status: the command line is wrong.
const USAGE: u8 = 2;
/// Exit status: the gateway or the host could not be reached, or did not
/// answer in time.
const UNREACHABLE: u8 = 3;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, env = "CONCIERGE_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// The token to identify with [default: the one `concierge login` kept].
    #[arg(long, env = "CONCIERGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print replies as JSON (the reply's `msg`), one document per line.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The connected clients.
    Clients,
    /// The services.
    Services,
    /// Send a MESSAGE: TARGET is a client name, uuid:UUID, service:NAME or all.
    Send {
        target: String,
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Send any request to a host's agent and print the reply.
    Request {
        host: String,
        req: String,
        /// The request's `msg`, a JSON object.
        #[arg(default_value = "{}")]
        msg: String,
    },
    /// Start a process on a host; prints its proc id.
    Exec {
        host: String,
        /// Stream its output and exit with its exit code.
        #[arg(long)]
        follow: bool,
        /// The folder to start it in, a relative one under the agent's work folder
        /// [default: the work folder].
        #[arg(long)]
        cwd: Option<String>,
        /// The program and its arguments (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// The output of a process the agent started.
    Output {
        host: String,
        proc_id: u32,
        /// Keep printing until it exits.
        #[arg(long)]
        follow: bool,
    },
    /// The processes the agent started that run (--all: every process).
    Ps {
        host: String,
        #[arg(long)]
        all: bool,
    },
    /// One process in detail.
    Proc { host: String, pid: u32 },
    /// Send a signal (SIGTERM, SIGKILL, SIGHUP, SIGINT, SIGSTOP, SIGCONT, SIGUSR1, SIGUSR2).
    Signal {
        host: String,
        pid: u32,
        signal: String,
    },
    /// Stop a process (SIGSTOP).
    Pause { host: String, pid: u32 },
    /// Continue a stopped process (SIGCONT).
    Resume { host: String, pid: u32 },
    /// The host's systemd services.
    Units { host: String },
    /// Start, stop, restart, reload or show one systemd unit.
    Unit {
        host: String,
        #[arg(value_parser = ["start", "stop", "restart", "reload", "status"])]
        action: String,
        unit: String,
    },
    /// Live CPU, memory and disks of a host.
    Top {
        host: String,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
    /// Disk usage of the agent's work folder and its processes' resources.
    Usage { host: String },
    /// WireGuard: your config, the peers, revoking one.
    #[command(subcommand)]
    Vpn(VpnCommand),
    /// The agent's audit log (--follow: and what it records from now on).
    Audit {
        host: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// Print the WireGuard config of NAME (default: the token's client), as wg-quick reads it.
    Conf {
        name: Option<String>,
        /// Your own public key: the private key then never leaves your host.
        #[arg(long)]
        public_key: Option<String>,
        /// Show it as a QR code (for a phone's WireGuard app).
        #[arg(long)]
        qr: bool,
    },
    /// Every peer: addresses, latest handshake, bytes.
    Peers,
    /// Remove a peer from the server and free its addresses (admin).
    Revoke { name: String },
}

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

/// Why a command failed, with the exit status it gives.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
    /// The agent answered with an error (already printed under --json).
    #[error("{host}: {reason}: {desc}")]
    Refused {
        host: String,
        reason: String,
        desc: String,
    },
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    fn status(&self) -> u8 {
        match self {
            CtlError::Usage(_) => USAGE,
            CtlError::Unreachable(_) => UNREACHABLE,
            CtlError::Refused { .. } | CtlError::Failed(_) => FAILED,
        }
    }
}

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Closed { code, reason } => CtlError::Unreachable(format!(
                "the gateway closed the connection: {code} {reason}"
            )),
            other => CtlError::Unreachable(other.to_string()),
        }
    }
}

/// One connection to the gateway, as `ctl` uses it.
struct Ctl {
    conn: Connection,
    json: bool,
    timeout: Duration,
    next_rid: u64,
    /// How sizes are shown: the user's settings.
    units: Units,
}

async fn run(args: CtlArgs) -> Result<ExitCode, CtlError> {
    let token = args.token.clone().or_else(saved_token);
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
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let conn = tokio::time::timeout(timeout, client::connect(&args.url, &identity))
        .await
        .map_err(|_| {
            CtlError::Unreachable(format!("{}: no answer within {timeout:?}", args.url))
        })??;
    let mut ctl = Ctl {
        conn,
        json: args.json,
        timeout,
        next_rid: 1,
        units: Units::default(),
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

fn saved_token() -> Option<String> {
    let path = concierge_client::token_file()?;
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
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
            CtlCommand::Clients => self.clients().await,
            CtlCommand::Services => self.services().await,
            CtlCommand::Send { target, data } => self.send(&target, &data).await,
            CtlCommand::Request { host, req, msg } => {
                let msg: Value = serde_json::from_str(&msg)
                    .map_err(|e| CtlError::Usage(format!("the request's msg is not JSON: {e}")))?;
                let reply = self.request(&host, &req, msg).await?;
                println!("{reply}");
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Exec {
                host,
                follow,
                cwd,
                cmd,
            } => self.exec(&host, follow, cwd, cmd).await,
            CtlCommand::Output {
                host,
                proc_id,
                follow,
            } => self.output(&host, proc_id, follow).await,
            CtlCommand::Ps { host, all } => self.ps(&host, all).await,
            CtlCommand::Proc { host, pid } => {
                let reply = self
                    .request(&host, "obtain_process_info", json!({"pid": pid}))
                    .await?;
                self.show(&reply, |r, units| {
                    let mut t = render::plain();
                    for (k, v) in r.as_object().into_iter().flatten() {
                        if k == "result" {
                            continue;
                        }
                        let shown = match (k.as_str(), v) {
                            ("memory", Value::Object(m)) => format!(
                                "rss {}, swap {}",
                                units.size(m["rss"].as_u64().unwrap_or(0)),
                                units.size(m["swap"].as_u64().unwrap_or(0))
                            ),
                            ("cmd", Value::Array(a)) => a
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(" "),
                            (_, Value::String(s)) => s.clone(),
                            (_, other) => other.to_string(),
                        };
                        t.add_row([k.clone(), shown]);
                    }
                    t.to_string()
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Signal { host, pid, signal } => {
                let reply = self
                    .request(&host, "proc_signal", json!({"pid": pid, "mode": signal}))
                    .await?;
                self.show(&reply, |r, _| {
                    format!("sent {} to {pid}", r["signal"].as_str().unwrap_or(""))
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Pause { host, pid } => {
                let reply = self
                    .request(&host, "pause_process", json!({"pid": pid}))
                    .await?;
                self.show(&reply, |_, _| format!("paused {pid}"));
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Resume { host, pid } => {
                let reply = self
                    .request(&host, "resume_process", json!({"pid": pid}))
                    .await?;
                self.show(&reply, |_, _| format!("resumed {pid}"));
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Units { host } => {
                let units = self.pages(&host, "list_services", "services").await?;
                self.show(&Value::from(units), |r, _| {
                    let mut t = table(["UNIT", "LOAD", "ACTIVE", "SUB", "DESCRIPTION"]);
                    for u in r.as_array().into_iter().flatten() {
                        t.add_row(
                            [
                                &u["name"],
                                &u["load_state"],
                                &u["active_state"],
                                &u["sub_state"],
                                &u["description"],
                            ]
                            .map(text),
                        );
                    }
                    t.to_string()
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Unit { host, action, unit } => {
                let req = match action.as_str() {
                    "start" => "start_service",
                    "stop" => "stop_service",
                    "restart" => "restart_service",
                    "reload" => "reload_service",
                    _ => "obtain_service_info",
                };
                let reply = self
                    .request(&host, req, json!({"service_name": unit}))
                    .await?;
                self.show(&reply, |r, _| {
                    format!(
                        "{} {} ({}), pid {}, up {} s\n{}\n{}",
                        text(&r["name"]),
                        text(&r["active_state"]),
                        text(&r["sub_state"]),
                        text(&r["pid"]),
                        text(&r["uptime"]),
                        text(&r["description"]),
                        text(&r["file_location"]),
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Top { host, once } => self.top(&host, once).await,
            CtlCommand::Usage { host } => {
                let reply = self.request(&host, "obtain_user_usages", json!({})).await?;
                self.show(&reply, |r, units| {
                    let res = &r["resources"];
                    let mut out = format!(
                        "{}: {} in {} entries; {} running processes, {}% CPU, {} {}\n",
                        text(&r["folder"]),
                        units.size(r["total_bytes"].as_u64().unwrap_or(0)),
                        text(&r["total"]),
                        text(&res["processes"]),
                        text(&res["cpu_util"]),
                        units.size(
                            (res["mem_util"].as_f64().unwrap_or(0.0) * 1024.0 * 1024.0) as u64
                        ),
                        units.mem_label,
                    );
                    let mut t = table(["SIZE", "TYPE", "NAME"]);
                    for e in r["entries"].as_array().into_iter().flatten() {
                        t.add_row([
                            units.size(e["bytes"].as_u64().unwrap_or(0)),
                            text(&e["type"]),
                            text(&e["name"]),
                        ]);
                    }
                    out.push_str(&t.to_string());
                    out
                });
                Ok(ExitCode::SUCCESS)
            }
            CtlCommand::Vpn(command) => self.vpn(command).await,
            CtlCommand::Audit {
                host,
                limit,
                follow,
            } => self.audit(&host, limit, follow).await,
        }
    }

    /// Sends a directory request (CLIENT_FETCH_ALL or SERVICE_FETCH_ALL)
    /// and waits for its result.
    async fn gateway(&mut self, payload: PayloadIn<'_>) -> Result<PayloadOut, CtlError> {
        self.conn.sender.send(&payload).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .map_err(|_| {
                    CtlError::Unreachable("the gateway did not answer in time".into())
                })??;
            match next.payload {
                PayloadOut::ClientFetchAllResult { .. }
                | PayloadOut::ServiceFetchAllResult { .. } => return Ok(next.payload),
                _ => continue,
            }
        }
    }

    async fn clients(&mut self) -> Result<ExitCode, CtlError> {
        let PayloadOut::ClientFetchAllResult { clients } =
            self.gateway(PayloadIn::ClientFetchAll).await?
        else {
            return Err(CtlError::Failed(
                "unexpected answer to CLIENT_FETCH_ALL".into(),
            ));
        };
        let value = serde_json::to_value(&clients).unwrap_or_default();
        self.show(&value, |_, _| {
            let mut t = table(["NAME", "USER", "ROLES", "TAGS", "UUID"]);
            for c in &clients {
                t.add_row([
                    c.name.clone(),
                    c.user.clone().unwrap_or_else(|| "-".into()),
                    c.roles.join(","),
                    c.tags.join(","),
                    c.uuid.to_string(),
                ]);
            }
            t.to_string()
        });
        Ok(ExitCode::SUCCESS)
    }

    async fn services(&mut self) -> Result<ExitCode, CtlError> {
        let PayloadOut::ServiceFetchAllResult { services } =
            self.gateway(PayloadIn::ServiceFetchAll).await?
        else {
            return Err(CtlError::Failed(
                "unexpected answer to SERVICE_FETCH_ALL".into(),
            ));
        };
        let value = serde_json::to_value(&services).unwrap_or_default();
        self.show(&value, |_, _| {
            let mut t = table(["SERVICE", "OWNER", "SUBSCRIBERS"]);
            for s in &services {
                t.add_row([
                    s.name.clone(),
                    s.owner_uuid.to_string(),
                    s.subscribers.len().to_string(),
                ]);
            }
            t.to_string()
        });
        Ok(ExitCode::SUCCESS)
    }

    async fn send(&mut self, target: &str, data: &str) -> Result<ExitCode, CtlError> {
        let data: Value = serde_json::from_str(data)
            .map_err(|e| CtlError::Usage(format!("the message is not JSON: {e}")))?;
        let target = parse_target(target);
        self.conn.sender.message(target.clone(), &data).await?;
        // The gateway answers only a target it cannot find; wait briefly.
        let wait = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                next = self.conn.receiver.next() => match next?.payload {
                    PayloadOut::InvalidName { name } => return Err(CtlError::Failed(format!("no client named {name:?}"))),
                    PayloadOut::InvalidUuid { uuid } => return Err(CtlError::Failed(format!("no client {uuid}"))),
                    PayloadOut::InvalidService { service } => return Err(CtlError::Failed(format!("no service {service:?}"))),
                    PayloadOut::ErrorProtocol { desc } => return Err(CtlError::Failed(desc)),
                    _ => continue,
                }
            }
        }
        if !self.json {
            println!("sent");
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Sends a request to `host`'s agent and waits for its reply: the
    /// reply's `msg` on success, [`CtlError::Refused`] on an error reply.
    async fn request(&mut self, host: &str, req: &str, msg: Value) -> Result<Value, CtlError> {
        let rid = self.send_request(host, req, msg).await?;
        let bar = spinner(&format!("waiting for {host}"));
        let reply = self.wait_reply(host, rid).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        self.checked(host, reply?)
    }

    /// A reply's `msg`, or [`CtlError::Refused`] for an error reply (printed
    /// first under `--json`).
    fn checked(&self, host: &str, reply: Value) -> Result<Value, CtlError> {
        if reply.get("result").and_then(Value::as_str) != Some("error") {
            return Ok(reply);
        }
        if self.json {
            println!("{reply}");
        }
        Err(CtlError::Refused {
            host: host.to_owned(),
            reason: text(&reply["reason"]),
            desc: text(&reply["desc"]),
        })
    }

    async fn send_request(&mut self, host: &str, req: &str, msg: Value) -> Result<u64, CtlError> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.conn
            .sender
            .message(
                Target::Name {
                    name: host.to_owned(),
                },
                &json!({"req": req, "rid": rid, "msg": msg}),
            )
            .await?;
        Ok(rid)
    }

    /// The next MESSAGE from `host` about `rid` (a reply or an event).
    async fn next_from(
        &mut self,
        host: &str,
        rid: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Value, CtlError> {
        loop {
            let next = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, self.conn.receiver.next())
                    .await
                    .map_err(|_| {
                        CtlError::Unreachable(format!(
                            "{host} did not answer within {:?}",
                            self.timeout
                        ))
                    })??,
                None => self.conn.receiver.next().await?,
            };
            match next.payload {
                PayloadOut::Message { origin, data, .. }
                    if origin.client.name == host && data["rid"].as_u64() == Some(rid) =>
                {
                    return Ok(data)
                }
                PayloadOut::InvalidName { name } => {
                    return Err(CtlError::Unreachable(format!(
                        "{name} is not connected to the gateway"
                    )))
                }
                PayloadOut::ClientLeft { client } if client.name == host => {
                    return Err(CtlError::Unreachable(format!(
                        "{host} left the gateway before it answered"
                    )))
                }
                PayloadOut::ErrorProtocol { desc } => return Err(CtlError::Failed(desc)),
                _ => continue,
            }
        }
    }

    async fn wait_reply(&mut self, host: &str, rid: u64) -> Result<Value, CtlError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let data = self.next_from(host, rid, Some(deadline)).await?;
            if let Some(msg) = data.get("msg") {
                return Ok(msg.clone());
            }
        }
    }

    /// Every page of a paged list request.
    async fn pages(&mut self, host: &str, req: &str, key: &str) -> Result<Vec<Value>, CtlError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.request(host, req, json!({"offset": offset})).await?;
            all.extend(page[key].as_array().cloned().unwrap_or_default());
            match page["next_offset"].as_u64() {
                Some(next) if next > offset => offset = next,
                _ => return Ok(all),
            }
        }
    }

    /// Prints a reply: JSON, or what `human` makes of it.
    fn show(&self, reply: &Value, human: impl FnOnce(&Value, &Units) -> String) {
        if self.json {
            println!("{reply}");
        } else {
            println!("{}", human(reply, &self.units));
        }
    }

    /// The identified user's display settings (the defaults without a
    /// user).
    async fn load_units(&mut self) -> Units {
        match self.gateway_settings().await {
            Some(settings) => Units::from_settings(&settings),
            None => Units::default(),
        }
    }

    async fn gateway_settings(&mut self) -> Option<BTreeMap<String, String>> {
        self.conn
            .sender
            .send(&PayloadIn::UserSettingsFetch)
            .await
            .ok()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .ok()?
                .ok()?;
            match next.payload {
                PayloadOut::UserSettingsFetchResult { settings } => return Some(settings),
                // No user (no token): the defaults.
                PayloadOut::Bad { .. }
                | PayloadOut::ErrorProtocol { .. }
                | PayloadOut::ErrorUnsupported => return None,
                _ => continue,
            }
        }
    }

    async fn exec(
        &mut self,
        host: &str,
        follow: bool,
        cwd: Option<String>,
        cmd: Vec<String>,
    ) -> Result<ExitCode, CtlError> {
        let mut msg = json!({"cmd": cmd, "follow": follow});
        if let Some(cwd) = cwd {
            msg["cwd"] = Value::from(cwd);
        }
        let rid = self.send_request(host, "execute", msg).await?;
        let reply = self.wait_reply(host, rid).await?;
        let reply = self.checked(host, reply)?;
        if !follow {
            self.show(&reply, |r, _| text(&r["proc_id"]));
            return Ok(ExitCode::SUCCESS);
        }
        if self.json {
            println!("{reply}");
        }
        self.stream(host, rid).await
    }

    async fn output(
        &mut self,
        host: &str,
        proc_id: u32,
        follow: bool,
    ) -> Result<ExitCode, CtlError> {
        if follow {
            let rid = self
                .send_request(
                    host,
                    "proc_output",
                    json!({"proc_id": proc_id, "follow": true}),
                )
                .await?;
            let reply = self.wait_reply(host, rid).await?;
            self.checked(host, reply)?;
            return self.stream(host, rid).await;
        }
        let mut offset = 0;
        loop {
            let page = self
                .request(
                    host,
                    "proc_output",
                    json!({"proc_id": proc_id, "offset": offset}),
                )
                .await?;
            if self.json {
                println!("{page}");
            } else {
                for chunk in page["chunks"].as_array().into_iter().flatten() {
                    write_chunk(chunk, chunk["stream"].as_str() == Some("stderr"));
                }
            }
            let next = page["next_offset"].as_u64().unwrap_or(offset);
            if next == offset || page["chunks"].as_array().is_none_or(|c| c.is_empty()) {
                return Ok(ExitCode::SUCCESS);
            }
            offset = next;
        }
    }

    /// Prints a followed process's events until its exit; exits as it did.
    async fn stream(&mut self, host: &str, rid: u64) -> Result<ExitCode, CtlError> {
        loop {
            let event = self.next_from(host, rid, None).await?;
            if self.json {
                println!("{event}");
            }
            match event["event"].as_str() {
                Some("stdout") if !self.json => write_chunk(&event, false),
                Some("stderr") if !self.json => write_chunk(&event, true),
                Some("exit") => {
                    if let Some(code) = event["code"].as_i64() {
                        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
                    }
                    let signal = event["signal"].as_str().unwrap_or("an unknown signal");
                    if !self.json {
                        eprintln!("concierge ctl: the process was killed by {signal}");
                    }
                    let number =
                        concierge_protocol::agent::signals::parse(signal).map_or(1, |n| n as u8);
                    return Ok(ExitCode::from(128u8.saturating_add(number)));
                }
                _ => {}
            }
        }
    }

    async fn ps(&mut self, host: &str, all: bool) -> Result<ExitCode, CtlError> {
        let units = self.units.clone();
        if all {
            let procs = self
                .pages(host, "obtain_all_process_info", "processes")
                .await?;
            if self.json {
                println!("{}", Value::from(procs));
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(["PID", "STATUS", "CPU%", "RSS", "SAFE_KILL", "NAME"]);
            for p in &procs {
                t.add_row([
                    text(&p["pid"]),
                    text(&p["status"]),
                    text(&p["cpu_usage"]),
                    units.size(p["memory"]["rss"].as_u64().unwrap_or(0)),
                    text(&p["safe_kill"]),
                    text(&p["name"]),
                ]);
            }
            println!("{t}");
            return Ok(ExitCode::SUCCESS);
        }
        let running = self
            .request(host, "view_running", json!({"verb": 1}))
            .await?;
        if self.json {
            println!("{running}");
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = table(["PID", "CPU%", units.mem_label, "PORTS", "TITLE", "COMMAND"]);
        for p in running.as_array().into_iter().flatten() {
            let ports: Vec<String> = p["port_util"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            t.add_row([
                text(&p["pid"]),
                text(&p["cpu_util"]),
                units.size((p["mem_util"].as_f64().unwrap_or(0.0) * 1024.0 * 1024.0) as u64),
                ports.join(","),
                text(&p["title"]),
                text(&p["reqc"]),
            ]);
        }
        println!("{t}");
        Ok(ExitCode::SUCCESS)
    }

    async fn audit(&mut self, host: &str, limit: u64, follow: bool) -> Result<ExitCode, CtlError> {
        let service = HostService::Audit.of(host);
        if follow {
            self.conn
                .sender
                .send(&PayloadIn::SelfSubscribe {
                    service: service.as_str().into(),
                })
                .await?;
        }
        let reply = self.request(host, "audit", json!({"limit": limit})).await?;
        let entries = reply["entries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            self.audit_line(entry);
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        loop {
            let next = self.conn.receiver.next().await?;
            match next.payload {
                PayloadOut::Message { origin, data, .. } if published(&origin, &service, host) => {
                    self.audit_line(&data["entry"]);
                }
                PayloadOut::InvalidService { service } => {
                    return Err(CtlError::Unreachable(format!(
                        "no service {service}: is the agent connected?"
                    )))
                }
                _ => {}
            }
        }
    }

    async fn vpn(&mut self, command: VpnCommand) -> Result<ExitCode, CtlError> {
        let gateway = concierge_protocol::GATEWAY_NAME;
        match command {
            VpnCommand::Conf {
                name,
                public_key,
                qr,
            } => {
                let mut msg = json!({"conf_type": "wireguard", "tun_mode": "udp"});
                if let Some(name) = name {
                    msg["name"] = Value::from(name);
                }
                if let Some(key) = public_key {
                    msg["public_key"] = Value::from(key);
                }
                let reply = self.request(gateway, "get_vpn_conf", msg).await?;
                let conf = reply["conf_data"].as_str().unwrap_or_default();
                if self.json {
                    println!("{reply}");
                } else if qr {
                    let code = qrcode::QrCode::new(conf.as_bytes())
                        .map_err(|e| CtlError::Failed(format!("cannot make a QR code: {e}")))?;
                    let image = code
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build();
                    println!("{image}");
                } else {
                    print!("{conf}");
                }
            }
            VpnCommand::Peers => {
                let reply = self.request(gateway, "vpn_peers", json!({})).await?;
                self.show(&reply, |r, units| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let mut out = match (r["interface"].as_str(), r["problem"].as_str()) {
                        (_, Some(problem)) => format!("{problem}\n"),
                        (Some(interface), None) => format!("interface {interface}\n"),
                        _ => String::new(),
                    };
                    let mut t = table([
                        "NAME",
                        "IPV4",
                        "IPV6",
                        "STATE",
                        "HANDSHAKE",
                        "RX",
                        "TX",
                        "ENDPOINT",
                    ]);
                    for p in r["peers"].as_array().into_iter().flatten() {
                        let handshake = match p["latest_handshake"].as_u64() {
                            Some(0) | None => "never".to_owned(),
                            Some(t) => format!("{} s ago", now.saturating_sub(t)),
                        };
                        let state = match (p["valid"].as_bool(), p["active"].as_bool()) {
                            (Some(false), _) => "token invalid",
                            (_, Some(true)) => "active",
                            _ => "not on the interface",
                        };
                        t.add_row([
                            text(&p["name"]),
                            text(&p["ipv4"]),
                            text(&p["ipv6"]),
                            state.to_owned(),
                            handshake,
                            units.size(p["rx_bytes"].as_u64().unwrap_or(0)),
                            units.size(p["tx_bytes"].as_u64().unwrap_or(0)),
                            text(&p["endpoint"]),
                        ]);
                    }
                    out.push_str(&t.to_string());
                    out
                });
            }
            VpnCommand::Revoke { name } => {
                let reply = self
                    .request(gateway, "vpn_revoke", json!({"name": name}))
                    .await?;
                self.show(&reply, |_, _| {
                    format!("revoked {name}: its peer is removed and its addresses are free")
                });
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn audit_line(&self, entry: &Value) {
        if self.json {
            println!("{entry}");
            return;
        }
        let outcome = match entry["result"].as_str() {
            Some("success") => "ok".to_owned(),
            _ => format!("{}: {}", text(&entry["reason"]), text(&entry["desc"])),
        };
        println!(
            "{} {} ({}) {} {} -> {}",
            text(&entry["time"]),
            text(&entry["user"]),
            text(&entry["client"]),
            text(&entry["req"]),
            entry["args"],
            outcome
        );
    }

    async fn top(&mut self, host: &str, once: bool) -> Result<ExitCode, CtlError> {
        let units = self.units.clone();
        let first = self.request(host, "telemetry", json!({})).await?;
        let render = |data: &Value| top::frame(host, &data["tele_data"], &units);
        if once {
            if self.json {
                println!("{first}");
            } else {
                println!("{}", render(&first));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let service = HostService::Telemetry.of(host);
        self.conn
            .sender
            .send(&PayloadIn::SelfSubscribe {
                service: service.as_str().into(),
            })
            .await?;
        let interactive = std::io::stdout().is_terminal() && !self.json;
        let draw = |data: &Value, json: bool| {
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(out, "{data}");
            } else if interactive {
                let _ = write!(out, "\x1b[H\x1b[2J{}\n(Ctrl-C to quit)\n", render(data));
            } else {
                let _ = writeln!(out, "{}\n", render(data));
            }
            let _ = out.flush();
        };
        draw(&first, self.json);
        loop {
            let next = tokio::select! {
                next = self.conn.receiver.next() => next?,
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            };
            match next.payload {
                PayloadOut::Message { origin, data, .. } if published(&origin, &service, host) => {
                    draw(&data, self.json)
                }
                PayloadOut::InvalidService { service } => {
                    return Err(CtlError::Unreachable(format!(
                        "no service {service}: is the agent connected?"
                    )))
                }
                PayloadOut::ServiceDeleteResult { service: s } if s.name == service => {
                    return Err(CtlError::Unreachable(format!("{host} disconnected")))
                }
                _ => {}
            }
        }
    }
}

/// A target as typed: `uuid:U`, `service:S`, `all`, or a client name.
fn parse_target(target: &str) -> Target {
    if let Some(uuid) = target.strip_prefix("uuid:") {
        Target::Uuid {
            uuid: uuid.to_owned(),
        }
    } else if let Some(service) = target.strip_prefix("service:") {
        Target::Service {
            service: service.to_owned(),
        }
    } else if target == "all" {
        Target::All
    } else {
        Target::Name {
            name: target.to_owned(),
        }
    }
}

/// Whether a MESSAGE was published on `service` by host `host` itself:
/// what is shown is attributed to the verified publisher in `origin`, never
/// to fields inside `data`.
fn published(origin: &Origin, service: &str, host: &str) -> bool {
    origin.service.as_ref().is_some_and(|s| s.name == service) && origin.client.is_host(host)
}

/// A JSON value as a table cell: strings without quotes, null as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Writes an output event's bytes to standard output or error.
fn write_chunk(event: &Value, stderr: bool) {
    let bytes = match (event["data"].as_str(), event["data_b64"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default()
        }
        _ => return,
    };
    if stderr {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&bytes);
        let _ = err.flush();
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
}
