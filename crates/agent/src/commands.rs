//! What each request the agent serves does. The requests, their arguments
//! and who may send them are the protocol's ([`concierge_protocol::agent`]);
//! here each [`Request`] variant is matched, exhaustively, to its work.

use std::collections::BTreeMap;
use std::rc::Rc;

use actix::Addr;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::audit::Audit;
use super::follows::{End, Follows, Ticket};
use super::jobs::{self, Jobs};
use super::procs::{self, Procs, Spawn, CHUNK_MAX};
use super::settings::Resolved;
use super::signals;
use super::systemd::{Systemd, UnitAction};
use super::telemetry::{self, Snapshot, Telemetry, STAT_TYPES};
use concierge_protocol::agent::args::{ExecCommand, Execute, ProcOutput, Unit};
use concierge_protocol::agent::{authorize, success, Failure, Reason, Request, RequestName};
use concierge_protocol::{Origin, Role};

/// What every request handler shares.
pub struct Host {
    pub settings: Resolved,
    pub procs: Procs,
    pub follows: Follows,
    pub telemetry: Addr<Telemetry>,
    pub snapshots: watch::Receiver<Snapshot>,
    pub systemd: Option<Systemd>,
    pub audit: Audit,
    pub jobs: Jobs,
    /// `--vpn`: the tunnel.
    pub vpn: Option<std::sync::Arc<super::vpn::VpnClient>>,
    /// The health summaries' interval and state, across connections.
    pub summaries: super::summary::Reporter,
}

impl Host {
    /// Whether the sender may make request `name`: its verified roles, or
    /// for a client without a token, the agent's `anonymous_role`.
    pub fn authorize(&self, origin: &Origin, name: RequestName) -> Result<(), Failure> {
        let roles: Vec<Role> = match &origin.client.user {
            None => self
                .settings
                .anonymous_role
                .map(|r| r.implied().to_vec())
                .unwrap_or_default(),
            Some(_) => origin
                .client
                .roles
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
        };
        authorize(origin.client.user.as_deref(), &roles, name.access().role())
    }

    /// Serves one authorized request from `requester`: the reply's `msg`,
    /// and for a followed process, the stream to send after it.
    pub async fn serve(
        self: &Rc<Self>,
        requester: uuid::Uuid,
        request: Request,
    ) -> Result<(Value, Option<Follow>), Failure> {
        let plain = |v: Result<Value, Failure>| v.map(|v| (v, None));
        match request {
            Request::Execute(args) => self.execute(requester, args),
            Request::ProcOutput(args) => self.proc_output(requester, &args),
            Request::ViewRunning(_) => plain(self.view_running().await),
            Request::ListStarted(page) => plain(Ok(self.list_started(page.offset))),
            Request::ProcSignal(args) => {
                let signal = signals::parse(&args.mode)?;
                plain(self.signal(args.pid.0, signal))
            }
            Request::KillProcess(args) => {
                let method = args.method.as_deref().unwrap_or("SIGTERM");
                let signal = match signals::parse(method)? {
                    s @ (libc::SIGKILL | libc::SIGTERM) => s,
                    _ => return Err(Failure::bad_argument("`method` is SIGKILL or SIGTERM")),
                };
                plain(self.signal(args.pid.0, signal))
            }
            Request::PauseProcess(args) => plain(self.signal(args.pid.0, libc::SIGSTOP)),
            Request::ResumeProcess(args) => plain(self.signal(args.pid.0, libc::SIGCONT)),
            Request::Telemetry(args) => plain(self.telemetry(args.stat_types).await),
            Request::ObtainUserUsages(_) => plain(self.user_usages().await),
            Request::ObtainProcessInfo(args) => plain(self.process_info(args.pid.0).await),
            Request::ObtainAllProcessInfo(page) => plain(self.all_process_info(page.offset).await),
            Request::ListServices(page) => {
                let units = self.systemd()?.list_services().await?;
                let units = units.as_array().cloned().unwrap_or_default();
                plain(Ok(self.page("services", units, page.offset)))
            }
            Request::ObtainServiceInfo(unit) => plain(
                self.systemd()?
                    .service_info(&unit.service_name)
                    .await
                    .map(success),
            ),
            Request::StartService(unit) => plain(self.unit(&unit, UnitAction::Start).await),
            Request::StopService(unit) => plain(self.unit(&unit, UnitAction::Stop).await),
            Request::RestartService(unit) => plain(self.unit(&unit, UnitAction::Restart).await),
            Request::ReloadService(unit) => plain(self.unit(&unit, UnitAction::Reload).await),
            Request::ExecCommand(args) => {
                let spec = self.exec_command_spec(&args)?;
                plain(self.exec_command(spec).await)
            }
            Request::GetPort(_) => plain(free_port()),
            Request::Audit(args) => {
                let limit = args.limit.unwrap_or(50).min(1000) as usize;
                let entries = self.audit.tail(limit)?;
                plain(Ok(self.page("entries", entries, None)))
            }
            Request::GetVpnConf(_) => Err(Failure::new(
                Reason::NotFound,
                "this host has no VPN configuration: VPN configs come from the gateway",
            )),
            // Served by `handle`, which sends its events before the reply.
            Request::RunJob(_) => Err(Failure::bad_argument(
                "a job runs a host request, not run_job",
            )),
            Request::CancelJob(args) => plain(jobs::cancel(self, &args.job).await),
            // With the count of frames it could not read: a sign that
            // something sends data its gateway should have refused.
            Request::Ping(_) => plain(Ok(success(json!({
                "name": self.settings.name,
                "undecodable_frames": concierge_client::undecodable_frames(),
            })))),
        }
    }

    fn systemd(&self) -> Result<&Systemd, Failure> {
        self.systemd.as_ref().ok_or_else(|| {
            Failure::new(
                Reason::NoSystemd,
                "this agent drives no systemd manager (its systemd setting is off)",
            )
        })
    }

    async fn unit(&self, unit: &Unit, action: UnitAction) -> Result<Value, Failure> {
        self.systemd()?
            .control(&unit.service_name, action)
            .await
            .map(success)
    }

    fn spawn_spec(
        &self,
        argv: Vec<String>,
        cwd: Option<&str>,
        env: Option<&BTreeMap<String, String>>,
    ) -> Result<Spawn, Failure> {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(Failure::bad_argument("`cmd` must name a program"));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .flatten()
            .map(|(k, v)| match k.is_empty() || k.contains(['=', '\0']) {
                true => Err(Failure::bad_argument(
                    "`env` maps variable names to string values",
                )),
                false => Ok((k.clone(), v.clone())),
            })
            .collect::<Result<_, _>>()?;
        let launch = self.settings.policy.check_exec(argv, cwd, &env)?;
        Ok(Spawn {
            argv: launch.argv,
            cwd: Some(launch.cwd.display().to_string()),
            env,
        })
    }

    /// What `execute` starts, checked against the policy.
    pub fn execute_spec(&self, args: &Execute) -> Result<Spawn, Failure> {
        // seed 003's argv array, or (for a person typing into the console)
        // a command line split as exec_command splits it.
        let argv = match (&args.cmd, &args.command) {
            (Some(_), Some(_)) => {
                return Err(Failure::bad_argument(
                    "give either `cmd` (an argv array) or `command` (a line), not both",
                ))
            }
            (None, Some(line)) => command_words(line)?,
            (Some(cmd), None) => cmd.clone(),
            (None, None) => return Err(Failure::bad_argument("`cmd` is required")),
        };
        self.spawn_spec(argv, args.cwd.as_deref(), args.env.as_ref())
    }

    /// What `exec_command` starts, checked against the policy.
    pub fn exec_command_spec(&self, args: &ExecCommand) -> Result<Spawn, Failure> {
        let argv = command_words(&args.command)?;
        self.spawn_spec(argv, args.cwd.as_deref(), args.env.as_ref())
    }

    fn execute(
        &self,
        requester: uuid::Uuid,
        args: Execute,
    ) -> Result<(Value, Option<Follow>), Failure> {
        let spec = self.execute_spec(&args)?;
        // Admitted before the process starts: a refused follow starts nothing.
        let ticket = match args.follow {
            true => Some(self.follows.admit(requester, None)?),
            false => None,
        };
        let pid = self.procs.spawn(spec)?;
        let follow = ticket.map(|ticket| {
            ticket.set_pid(pid);
            Follow {
                procs: self.procs.clone(),
                pid,
                offset: 0,
                ticket,
            }
        });
        Ok((success(json!({"proc_id": pid})), follow))
    }

    /// A page of a process's output, or with `follow`, the stream of it.
    fn proc_output(
        &self,
        requester: uuid::Uuid,
        args: &ProcOutput,
    ) -> Result<(Value, Option<Follow>), Failure> {
        let pid = args.proc_id.0;
        let offset = args.offset.unwrap_or(0);
        let adopted = self.procs.adopted(pid);
        if args.follow && adopted {
            return Err(Failure::new(
                Reason::NotFound,
                format!(
                    "process {pid} was started by an earlier run of this agent: its output \
                     went to that run and cannot be followed (it can still be signalled)"
                ),
            ));
        }
        if args.follow {
            // Checks the pid now, so a wrong one is the reply, not an event.
            self.procs.watch(pid)?;
            let follow = Follow {
                procs: self.procs.clone(),
                pid,
                offset,
                ticket: self.follows.admit(requester, Some(pid))?,
            };
            return Ok((
                success(json!({"proc_id": pid, "following": true})),
                Some(follow),
            ));
        }
        let budget = (self.settings.max_reply_bytes / 8).max(CHUNK_MAX);
        let read = self.procs.read(pid, offset, budget)?;
        let chunks: Vec<Value> = read.chunks.iter().map(procs::Chunk::fields).collect();
        let entry = self.procs.entries().into_iter().find(|e| e.pid == pid);
        Ok((
            success(json!({
                "proc_id": pid,
                "chunks": chunks,
                "dropped": read.dropped,
                "next_offset": read.next,
                "running": entry.as_ref().is_some_and(|e| e.exit.is_none()),
                "exit": entry.and_then(|e| e.exit).map(|e| e.fields()),
                "adopted": adopted,
            })),
            None,
        ))
    }

    async fn view_running(&self) -> Result<Value, Failure> {
        let running: Vec<(u32, String)> = self
            .procs
            .entries()
            .into_iter()
            .filter(|e| e.exit.is_none())
            .map(|e| (e.pid, shell_words::join(&e.argv)))
            .collect();
        // seed 003: the reply's msg is the list itself.
        self.telemetry
            .send(telemetry::Running(running))
            .await
            .map(Value::from)
            .map_err(|_| stopped())
    }

    /// Every process the agent started that it still holds, running or
    /// exited, newest first: what a console lists with exit codes.
    fn list_started(&self, offset: Option<u64>) -> Value {
        let mut entries = self.procs.entries();
        entries.sort_by_key(|e| std::cmp::Reverse(e.started));
        let listed = entries
            .into_iter()
            .map(|e| {
                json!({
                    "proc_id": e.pid,
                    "cmd": e.argv,
                    "started": procs::unix_secs(e.started),
                    "running": e.exit.is_none(),
                    "status": match e.exit {
                        None => telemetry::status_of(e.pid),
                        Some(_) => "exited",
                    },
                    "exit": e.exit.map(|x| x.fields()),
                    "output_bytes": e.output_bytes,
                    "dropped": e.dropped,
                    "adopted": e.adopted,
                })
            })
            .collect();
        self.page("processes", listed, offset)
    }

    fn signal(&self, pid: u32, signal: i32) -> Result<Value, Failure> {
        self.settings.policy.check_signal(pid, &self.procs)?;
        // A started process is signalled with its whole tree (its process
        // group), also once it exited and left children behind.
        let group = self.procs.owns_group(pid);
        if group {
            signals::send_group(pid, signal)?;
        } else {
            signals::send(pid, signal)?;
        }
        Ok(success(
            json!({"pid": pid, "signal": signals::name_of(signal), "group": group}),
        ))
    }

    async fn telemetry(&self, stat_types: Option<Vec<String>>) -> Result<Value, Failure> {
        let wanted =
            stat_types.unwrap_or_else(|| STAT_TYPES.iter().map(|s| (*s).to_owned()).collect());
        if let Some(unknown) = wanted.iter().find(|s| !STAT_TYPES.contains(&s.as_str())) {
            return Err(Failure::bad_argument(format!(
                "unknown stat type {unknown:?}: one of {}",
                STAT_TYPES.join(", ")
            )));
        }
        // Right after the agent starts, the first sample is a moment away.
        let snapshot = self
            .snapshots
            .clone()
            .wait_for(|s| !s.is_empty())
            .await
            .map_err(|_| stopped())?
            .clone();
        let data: serde_json::Map<String, Value> = wanted
            .into_iter()
            .filter_map(|stat| snapshot.get(&stat).cloned().map(|v| (stat, v)))
            .collect();
        Ok(json!({"tele_data": data}))
    }

    async fn process_info(&self, pid: u32) -> Result<Value, Failure> {
        let info = self
            .telemetry
            .send(telemetry::ProcessInfo(pid))
            .await
            .map_err(|_| stopped())?
            .ok_or_else(|| Failure::new(Reason::NotFound, format!("no process {pid}")))?;
        Ok(success(self.with_safe_kill(info)))
    }

    async fn all_process_info(&self, offset: Option<u64>) -> Result<Value, Failure> {
        let all = self
            .telemetry
            .send(telemetry::AllProcesses)
            .await
            .map_err(|_| stopped())?;
        let all = all.into_iter().map(|p| self.with_safe_kill(p)).collect();
        Ok(self.page("processes", all, offset))
    }

    fn with_safe_kill(&self, mut info: Value) -> Value {
        let pid = info["pid"].as_u64().unwrap_or(0) as u32;
        let safe = self.settings.policy.check_signal(pid, &self.procs).is_ok();
        if let Some(fields) = info.as_object_mut() {
            fields.insert("safe_kill".into(), Value::from(safe));
        }
        info
    }

    /// `key: items[offset..]` cut to fit a reply, with `total` and
    /// `next_offset` (null on the last page).
    fn page(&self, key: &str, items: Vec<Value>, offset: Option<u64>) -> Value {
        let total = items.len();
        let start = (offset.unwrap_or(0) as usize).min(total);
        let budget = self.settings.max_reply_bytes.saturating_sub(512);
        let mut used = 0;
        let mut page = Vec::new();
        for item in items.into_iter().skip(start) {
            let size = item.to_string().len() + 1;
            if used + size > budget && !page.is_empty() {
                break;
            }
            used += size;
            page.push(item);
        }
        let end = start + page.len();
        let next = (end < total).then_some(end);
        success(json!({key: page, "total": total, "offset": start, "next_offset": next}))
    }

    async fn user_usages(&self) -> Result<Value, Failure> {
        let folder = self.settings.work_dir.clone();
        let entries = tokio::task::spawn_blocking(move || folder_usage(&folder))
            .await
            .map_err(|_| Failure::new(Reason::Failed, "the folder walk failed"))??;
        let running = self.view_running().await?;
        let running = running.as_array().cloned().unwrap_or_default();
        let cpu: f64 = running.iter().filter_map(|p| p["cpu_util"].as_f64()).sum();
        let mem: f64 = running.iter().filter_map(|p| p["mem_util"].as_f64()).sum();
        let total: u64 = entries.values().map(|(bytes, _)| *bytes).sum();
        let mut list: Vec<Value> = entries
            .into_iter()
            .map(|(name, (bytes, kind))| json!({"name": name, "bytes": bytes, "type": kind}))
            .collect();
        list.sort_by(|a, b| b["bytes"].as_u64().cmp(&a["bytes"].as_u64()));
        let mut body = self.page("entries", list, None);
        if let Some(fields) = body.as_object_mut() {
            let folder = std::fs::canonicalize(&self.settings.work_dir)
                .unwrap_or_else(|_| self.settings.work_dir.clone());
            fields.insert("folder".into(), Value::from(folder.display().to_string()));
            fields.insert("total_bytes".into(), Value::from(total));
            fields.insert(
                "resources".into(),
                json!({
                    "processes": running.len(),
                    "cpu_util": (cpu * 10.0).round() / 10.0,
                    "mem_util": (mem * 10.0).round() / 10.0,
                    "mem": self.snapshots.borrow().get("ttl_mem_usage").cloned(),
                }),
            );
        }
        Ok(body)
    }

    async fn exec_command(&self, spec: Spawn) -> Result<Value, Failure> {
        let pid = self.procs.spawn(spec)?;
        let mut changes = self.procs.watch(pid)?;
        let deadline = tokio::time::Instant::now() + self.settings.exec_timeout;
        loop {
            changes.borrow_and_update();
            let exited = self
                .procs
                .entries()
                .into_iter()
                .find(|e| e.pid == pid)
                .and_then(|e| e.exit);
            if let Some(exit) = exited {
                let budget = self.settings.max_reply_bytes / 2 - 1024;
                let read = self.procs.read(pid, 0, usize::MAX)?;
                let (mut out, mut err) = (Vec::new(), Vec::new());
                for chunk in &read.chunks {
                    match chunk.stream {
                        procs::Stream::Stdout => out.extend_from_slice(&chunk.bytes),
                        procs::Stream::Stderr => err.extend_from_slice(&chunk.bytes),
                    }
                }
                let truncated = read.dropped > 0 || out.len() + err.len() > budget;
                let keep = |v: &[u8], n: usize| {
                    String::from_utf8_lossy(&v[v.len().saturating_sub(n)..]).into_owned()
                };
                let mut body = success(json!({
                    "proc_id": pid,
                    "stdout": keep(&out, budget / 2),
                    "stderr": keep(&err, budget / 2),
                    "truncated": truncated,
                }));
                if let (Some(fields), Value::Object(exit)) = (body.as_object_mut(), exit.fields()) {
                    fields.extend(
                        exit.into_iter()
                            .map(|(k, v)| (if k == "code" { "exit_code".into() } else { k }, v)),
                    );
                }
                return Ok(body);
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if matches!(changed, Ok(Err(_))) {
                // Forgotten already (keep_exited): no exit will come.
                return Err(procs::not_started(pid));
            }
            if changed.is_err() {
                let _ = signals::send_group(pid, libc::SIGKILL);
                return Err(Failure::new(
                    Reason::Timeout,
                    format!(
                        "the command did not finish in {} s and was killed (proc_id {pid})",
                        self.settings.exec_timeout.as_secs()
                    ),
                ));
            }
        }
    }
}

/// A process whose output goes to the requester as events after the reply.
pub struct Follow {
    procs: Procs,
    pid: u32,
    offset: u64,
    /// Counts against the caps while the follow lasts.
    ticket: Ticket,
}

impl Follow {
    /// Sends `{"event": "stdout"|"stderr", ...}` for every output chunk and
    /// `{"event": "exit", ...}` at the end, through `send`, which returns
    /// false once the requester cannot be reached. Stops when the
    /// requester is gone, and after a last `exit` event with `lost` when a
    /// newer follow of the same requester replaced it.
    pub async fn run<F, Fut>(mut self, send: F)
    where
        F: Fn(Value) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut ended = self.ticket.end.clone();
        let per_requester = self.ticket.per_requester();
        let end = tokio::select! {
            () = self.stream(&send) => return,
            end = ended.wait_for(Option::is_some) => end.ok().and_then(|e| *e),
        };
        if end == Some(End::Replaced) {
            let desc = format!(
                "no longer followed: a newer follow of the same requester replaced it \
                 (at most {per_requester} at once, max_follows_per_requester)"
            );
            send(
                json!({"event": "exit", "code": null, "signal": null, "lost": true, "desc": desc}),
            )
            .await;
        }
    }

    async fn stream<F, Fut>(&mut self, send: &F)
    where
        F: Fn(Value) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let Ok(mut changes) = self.procs.watch(self.pid) else {
            send(json!({"event": "exit", "code": null, "signal": null, "lost": true})).await;
            return;
        };
        loop {
            changes.borrow_and_update();
            let read = match self.procs.read(self.pid, self.offset, CHUNK_MAX) {
                Ok(read) => read,
                Err(f) => {
                    send(json!({"event": "exit", "code": null, "signal": null, "lost": true, "desc": f.desc}))
                        .await;
                    return;
                }
            };
            let mut dropped = read.dropped;
            for chunk in &read.chunks {
                let mut event = chunk.fields();
                if let Some(fields) = event.as_object_mut() {
                    let stream = fields.remove("stream").unwrap_or(Value::Null);
                    fields.insert("event".into(), stream);
                    if dropped > 0 {
                        fields.insert("dropped".into(), Value::from(dropped));
                        dropped = 0;
                    }
                }
                if !send(event).await {
                    return;
                }
            }
            self.offset = read.next;
            if let Some(exit) = read.exit {
                let mut event = exit.fields();
                if let Some(fields) = event.as_object_mut() {
                    fields.insert("event".into(), Value::from("exit"));
                }
                send(event).await;
                return;
            }
            if read.chunks.is_empty() && changes.changed().await.is_err() {
                return;
            }
        }
    }
}

fn stopped() -> Failure {
    Failure::new(Reason::Failed, "the agent's telemetry actor stopped")
}

/// Bytes under each entry of `folder` (directories walked, symbolic links
/// not followed, other file systems not entered).
fn folder_usage(
    folder: &std::path::Path,
) -> Result<BTreeMap<String, (u64, &'static str)>, Failure> {
    let read = std::fs::read_dir(folder).map_err(|e| {
        Failure::new(
            Reason::OsError,
            format!("cannot read the work folder {}: {e}", folder.display()),
        )
    })?;
    let mut out = BTreeMap::new();
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let (bytes, kind) = if meta.is_dir() {
            let bytes = walkdir::WalkDir::new(entry.path())
                .same_file_system(true)
                .into_iter()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            (bytes, "dir")
        } else if meta.is_file() {
            (meta.len(), "file")
        } else {
            (0, "other")
        };
        out.insert(name, (bytes, kind));
    }
    Ok(out)
}

/// `command`: a line split into words as a POSIX shell would (quotes,
/// escapes), but never run by one.
fn command_words(line: &str) -> Result<Vec<String>, Failure> {
    shell_words::split(line)
        .map_err(|e| Failure::bad_argument(format!("`command` does not split into words: {e}")))
}

/// `get_port`: a TCP port free on every address of this host, as the Nest
/// client's `nest get_port` hands one out: the system picks it for a
/// listener that is closed at once, so it stays free until something else
/// binds it.
fn free_port() -> Result<Value, Failure> {
    let listener = std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
        .or_else(|_| std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)))
        .map_err(|e| Failure::new(Reason::OsError, format!("cannot find a free port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::new(Reason::OsError, format!("cannot find a free port: {e}")))?
        .port();
    Ok(success(json!({"port": port})))
}
