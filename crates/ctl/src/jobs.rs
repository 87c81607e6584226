//! The operator's side of jobs (docs/PROTOCOL.md §19): `ctl run` creates
//! one and follows it to its end, `ctl jobs` and `ctl job` read, cancel
//! and rerun them. A job outlives `ctl`: following it is subscribing to
//! its events (`job_<id>`), reading `job_get` for a baseline and applying
//! the events on top, and reading it again whenever events may have been
//! missed (a reconnection that did not recover the history, the service
//! gone while another replica takes the job over), so that the end's
//! summary is the gateway's record, not what happened to reach `ctl`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use super::args::{JobArgs, JobCommand, RunArgs};
use super::conn::decode;
use super::error::{CtlError, SOME_HOSTS_FAILED};
use super::interrupt::Interrupts;
use super::render::table;
use super::summary::{self, Prefixer, Tally};
use super::{unit_request, Ctl};
use concierge_protocol::agent::args::Execute;
use concierge_protocol::agent::{GatewayRequest, Request};
use concierge_protocol::jobs::{
    HostRef, JobDetail, JobEvent, JobHost, JobId, JobInfo, JobPreview, JobQuery, JobRef, JobSpec,
    JobState, JobsQuery, MAX_JOBS_PAGE,
};
use concierge_protocol::selector::Selector;
use concierge_protocol::{PayloadOut, GATEWAY_NAME};

/// How long after its event service went away (another replica taking
/// the job over) it is subscribed to again.
const SUBSCRIBE_AGAIN: Duration = Duration::from_millis(500);

/// A job being followed: the gateway's record, as the baseline and the
/// events since make it.
struct Followed {
    info: JobInfo,
    rows: BTreeMap<String, JobHost>,
}

impl Followed {
    /// A host's row, unless it would replace a final state with one that
    /// is not (an event older than the baseline).
    fn update(&mut self, host: JobHost) {
        match self.rows.get(&host.host) {
            Some(known) if known.state.is_final() && !host.state.is_final() => {}
            _ => {
                self.rows.insert(host.host.clone(), host);
            }
        }
    }

    fn progress(&self) -> String {
        Tally::of(self.rows.values()).line(self.info.hosts)
    }
}

impl Ctl {
    /// `ctl run`.
    pub(crate) async fn run_job(&mut self, args: RunArgs) -> Result<ExitCode, CtlError> {
        let spec = spec(&args)?;
        if spec.dry_run {
            return self.preview(spec).await;
        }
        self.start(spec, args.detach).await
    }

    /// `ctl run --dry-run`: the hosts the target names.
    async fn preview(&mut self, spec: JobSpec) -> Result<ExitCode, CtlError> {
        let reply = self
            .request(GATEWAY_NAME, &GatewayRequest::JobCreate(spec))
            .await?;
        let preview: JobPreview = decode("preview", reply)?;
        if self.json {
            println!("{}", json!(preview));
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = table(["HOST", "STATE"]);
        for h in &preview.hosts {
            t.add_row([h.name.as_str(), if h.online { "online" } else { "offline" }]);
        }
        let online = preview.hosts.iter().filter(|h| h.online).count();
        println!(
            "{t}\n{} hosts, {online} online: nothing was run (--dry-run)",
            preview.hosts.len()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Creates the job, then follows it to its end (or, with `detach`,
    /// prints its id).
    async fn start(&mut self, spec: JobSpec, detach: bool) -> Result<ExitCode, CtlError> {
        // Caught before the job exists: Ctrl-C is about it from then on.
        let interrupts = match detach {
            true => None,
            false => Some(Interrupts::catch()?),
        };
        let stream = spec.stream;
        let reply = self
            .request(GATEWAY_NAME, &GatewayRequest::JobCreate(spec))
            .await?;
        let info: JobInfo = decode("job", reply["job"].clone())?;
        let Some(interrupts) = interrupts else {
            match self.json {
                true => println!("{}", json!(info)),
                false => println!("{}", info.id),
            }
            return Ok(ExitCode::SUCCESS);
        };
        if !self.json {
            eprintln!(
                "job {} on {} hosts (ctl job {}; Ctrl-C to cancel or leave it)",
                info.id, info.hosts, info.id
            );
        }
        self.watch(info, stream, interrupts).await
    }

    /// Follows a job until every host is in a final state, then shows the
    /// end (see `finish`).
    async fn watch(
        &mut self,
        info: JobInfo,
        stream: bool,
        mut interrupts: Interrupts,
    ) -> Result<ExitCode, CtlError> {
        let service = info.service();
        let id = info.id.clone();
        let mut job = Followed {
            info,
            rows: BTreeMap::new(),
        };
        let mut lines = Prefixer::new([]);
        let bar = (!self.json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let say = |bar: &Option<indicatif::ProgressBar>, out: Vec<(bool, String)>| {
            let print = || {
                for (stderr, line) in &out {
                    match stderr {
                        true => eprintln!("{line}"),
                        false => println!("{line}"),
                    }
                }
            };
            match bar {
                Some(bar) => bar.suspend(print),
                None => print(),
            }
        };
        self.subscribe(&service).await?;
        let mut subscribed = false;
        // The job_get under way: its rid, and whether the service must be
        // subscribed to again once it says the job still runs.
        let mut baseline = Some((self.job_page(&id, 0).await?, false));
        loop {
            if let Some(bar) = &bar {
                bar.set_message(job.progress());
            }
            let payload = tokio::select! {
                next = self.next_followed() => next?,
                caught = interrupts.next() => {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    if !self.cancel_asked(&id, &mut interrupts).await? {
                        eprintln!(
                            "concierge ctl: detached: job {id} keeps running \
                             (ctl job {id} shows it, ctl job cancel {id} stops it)"
                        );
                        return Ok(ExitCode::from(128 + caught as u8));
                    }
                    continue;
                }
            };
            match payload {
                PayloadOut::Message { origin, data, .. }
                    if origin.client.name == service
                        && origin.service.as_ref().is_some_and(|s| s.name == service) =>
                {
                    // An event of no known shape is skipped, not fatal.
                    let Ok(event) = serde_json::from_value::<JobEvent>(data.clone()) else {
                        continue;
                    };
                    if self.json {
                        println!("{data}");
                    }
                    match event {
                        JobEvent::Hosts { hosts, .. } => {
                            for host in hosts {
                                if stream && !self.json && host.state.is_final() {
                                    say(&bar, lines.finish(&host.host));
                                }
                                job.update(host);
                            }
                        }
                        JobEvent::Output {
                            host,
                            stream: which,
                            data,
                            ..
                        } if stream && !self.json => say(&bar, lines.push(&host, which, &data)),
                        JobEvent::End { job: info } => {
                            job.info = *info;
                            break;
                        }
                        JobEvent::Output { .. } | JobEvent::Progress { .. } => {}
                    }
                }
                PayloadOut::Message { origin, data, .. }
                    if origin.client.name == GATEWAY_NAME
                        && baseline.is_some_and(|(rid, _)| data["rid"].as_u64() == Some(rid))
                        && data.get("msg").is_some() =>
                {
                    let page: JobDetail =
                        decode("job", self.checked(GATEWAY_NAME, data["msg"].clone())?)?;
                    let next = page.offset + page.hosts.len() as u64;
                    let more = !page.hosts.is_empty() && next < page.total;
                    for host in page.hosts {
                        lines.widen(&host.host);
                        job.update(host);
                    }
                    let running = page.job.state == JobState::Running;
                    job.info = page.job;
                    if !running {
                        break;
                    }
                    let again = baseline.is_some_and(|(_, again)| again);
                    baseline = match more {
                        true => Some((self.job_page(&id, next).await?, again)),
                        false => None,
                    };
                    if baseline.is_none() && again {
                        tokio::time::sleep(SUBSCRIBE_AGAIN).await;
                        self.subscribe(&service).await?;
                    }
                }
                PayloadOut::SelfSubscribeResult {
                    service: s,
                    recovered,
                    ..
                } if s.name == service => {
                    // The first is the baseline's; a later one that did not
                    // replay what was missed asks for the record again.
                    if subscribed && recovered != Some(true) && baseline.is_none() {
                        baseline = Some((self.job_page(&id, 0).await?, false));
                    }
                    subscribed = true;
                }
                PayloadOut::InvalidService { service: s } if s == service => {
                    // Gone: the job is over, or another replica is taking
                    // it over and will create the service again.
                    baseline = Some((self.job_page(&id, 0).await?, true));
                }
                PayloadOut::ServiceDeleteResult { service: s } if s.name == service => {
                    baseline = Some((self.job_page(&id, 0).await?, true));
                }
                _ => {}
            }
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        for host in job.rows.keys() {
            say(&None, lines.finish(host));
        }
        let end = self.detail(&id).await?;
        self.finish(&end, !stream).await
    }

    /// Asks whether to cancel job `id` (on a terminal), and does: whether
    /// it was asked to stop. A second Ctrl-C is a no.
    async fn cancel_asked(
        &mut self,
        id: &JobId,
        interrupts: &mut Interrupts,
    ) -> Result<bool, CtlError> {
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Ok(false);
        }
        eprint!("cancel job {id}? [y/N] ");
        // A thread of its own: a read of the terminal cannot be abandoned,
        // and must not keep ctl from exiting.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(line);
        });
        let yes = tokio::select! {
            line = rx => line.is_ok_and(|l| l.trim().eq_ignore_ascii_case("y")),
            _ = interrupts.next() => {
                eprintln!();
                false
            }
        };
        if yes {
            let reply = self
                .request(
                    GATEWAY_NAME,
                    &GatewayRequest::JobCancel(JobRef { job: id.clone() }),
                )
                .await?;
            let _: JobInfo = decode("job", reply["job"].clone())?;
            eprintln!(
                "concierge ctl: cancelling job {id}: the hosts that have not run it will not"
            );
        }
        Ok(yes)
    }

    /// Sends a `job_get` for the hosts from `offset`: its rid.
    async fn job_page(&mut self, id: &JobId, offset: u64) -> Result<u64, CtlError> {
        self.send_request(GATEWAY_NAME, &GatewayRequest::JobGet(query(id, offset)))
            .await
    }

    /// A job and all its hosts, every page of them.
    async fn detail(&mut self, id: &JobId) -> Result<JobDetail, CtlError> {
        let mut all: Option<JobDetail> = None;
        loop {
            let offset = all.as_ref().map_or(0, |d| d.hosts.len() as u64);
            let reply = self
                .request(GATEWAY_NAME, &GatewayRequest::JobGet(query(id, offset)))
                .await?;
            let page: JobDetail = decode("job", reply)?;
            let last = page.hosts.is_empty() || offset + page.hosts.len() as u64 >= page.total;
            match &mut all {
                Some(all) => {
                    all.hosts.extend(page.hosts);
                    all.job = page.job;
                }
                None => all = Some(page),
            }
            if last {
                return Ok(all.expect("a page was read"));
            }
        }
    }

    /// The end of a job: each group of hosts with the same output once
    /// (with `outputs`), the counts, and the exit status; with `--json`,
    /// the final [`JobDetail`].
    async fn finish(&mut self, end: &JobDetail, outputs: bool) -> Result<ExitCode, CtlError> {
        let failed = end.hosts.iter().any(JobHost::unsuccessful);
        if self.json {
            println!("{}", json!(end));
        } else {
            if outputs {
                for group in summary::groups(&end.hosts) {
                    let shown = self.host_result(&end.job.id, &group[0].host).await?;
                    println!(
                        "{}\n{}",
                        summary::group_header(&group),
                        summary::host_output(&shown)
                    );
                }
            }
            for line in summary::outcomes(&end.hosts) {
                println!("{line}");
            }
            if let Some(by) = &end.job.stopped_by {
                println!("stopped by {by}");
            }
        }
        Ok(match failed {
            true => ExitCode::from(SOME_HOSTS_FAILED),
            false => ExitCode::SUCCESS,
        })
    }

    /// One host's result with its output (`job_output`).
    async fn host_result(&mut self, id: &JobId, host: &str) -> Result<JobHost, CtlError> {
        let request = GatewayRequest::JobOutput(HostRef {
            job: id.clone(),
            host: host.to_owned(),
        });
        let reply = self.request(GATEWAY_NAME, &request).await?;
        decode("host", reply["host"].clone())
    }

    /// `ctl jobs`.
    pub(crate) async fn jobs(&mut self, limit: u64) -> Result<ExitCode, CtlError> {
        let mut jobs: Vec<JobInfo> = Vec::new();
        while (jobs.len() as u64) < limit {
            let query = JobsQuery {
                limit: Some((limit - jobs.len() as u64).min(MAX_JOBS_PAGE as u64)),
                before_ms: jobs.last().map(|j| j.created_ms),
            };
            let reply = self
                .request(GATEWAY_NAME, &GatewayRequest::Jobs(query))
                .await?;
            let page: Vec<JobInfo> = decode("jobs", reply["jobs"].clone())?;
            if page.is_empty() {
                break;
            }
            jobs.extend(page);
        }
        match (self.json, jobs.is_empty()) {
            (true, _) => println!("{}", json!({ "jobs": jobs })),
            (false, true) => println!("no job yet"),
            (false, false) => println!("{}", summary::jobs_table(&jobs)),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `ctl job ...`.
    pub(crate) async fn job(&mut self, args: JobArgs) -> Result<ExitCode, CtlError> {
        match (args.action, args.id) {
            (Some(JobCommand::Cancel { id }), _) => {
                let reply = self
                    .request(GATEWAY_NAME, &GatewayRequest::JobCancel(JobRef { job: id }))
                    .await?;
                let info: JobInfo = decode("job", reply["job"].clone())?;
                self.show(&json!(info), |_, _| {
                    format!(
                        "cancelled job {}: the hosts that had not run it will not \
                         (`ctl job {}` shows where it stopped)",
                        info.id, info.id
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
            (Some(JobCommand::Rerun { id, failed, detach }), _) => {
                let before = self.detail(&id).await?;
                let mut spec = JobSpec {
                    dry_run: false,
                    ..before.job.spec
                };
                if failed {
                    let hosts: Vec<&str> = before
                        .hosts
                        .iter()
                        .filter(|h| h.unsuccessful())
                        .map(|h| h.host.as_str())
                        .collect();
                    if hosts.is_empty() {
                        if !self.json {
                            println!("job {id} did not fail on any host: nothing to run again");
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    spec.target = hosts.join(",");
                }
                self.start(spec, detach).await
            }
            (None, Some(id)) => match args.output {
                Some(host) => {
                    let result = self.host_result(&id, &host).await?;
                    if self.json {
                        println!("{}", json!(result));
                    } else {
                        print!("{}", summary::host_output(&result));
                        eprintln!(
                            "{}",
                            summary::outcomes(std::slice::from_ref(&result)).join("\n")
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    let detail = self.detail(&id).await?;
                    let value = json!(detail);
                    self.show(&value, |_, _| summary::job_detail(&detail));
                    Ok(ExitCode::SUCCESS)
                }
            },
            (None, None) => Err(CtlError::Usage("which job? `ctl jobs` lists them".into())),
        }
    }
}

/// The job `ctl run` asks for, or the usage error that makes none: an
/// action `--unit` does not take, a `--request` that is no agent request,
/// a target with a mistake (with the caret under it), what
/// [`JobSpec::check`] refuses. Checked before connecting.
pub(crate) fn spec(args: &RunArgs) -> Result<JobSpec, CtlError> {
    let request = match (&args.unit, &args.request) {
        (Some(unit), _) => match unit.as_slice() {
            [action, name] if ["start", "stop", "restart", "reload"].contains(&action.as_str()) => {
                unit_request(action, name)
            }
            _ => {
                return Err(CtlError::Usage(
                    "--unit takes an action (start, stop, restart or reload) and a unit".into(),
                ))
            }
        },
        (None, Some(request)) => serde_json::from_str::<Request>(request).map_err(|e| {
            CtlError::Usage(format!(
                "--request is not an agent request ({{\"req\": NAME, \"msg\": {{...}}}}): {e}"
            ))
        })?,
        (None, None) => Request::Execute(Execute {
            cmd: Some(args.cmd.clone()),
            ..Execute::default()
        }),
    };
    Selector::parse(&args.target).map_err(|e| CtlError::Usage(e.to_string()))?;
    let spec = JobSpec {
        online: args.online,
        wait_secs: args.wait,
        batch: args.batch,
        max_failures: args.max_failures,
        canary: args.canary,
        timeout_secs: args.host_timeout,
        stream: args.stream,
        dry_run: args.dry_run,
        ..JobSpec::new(args.target.clone(), request)
    };
    spec.check().map_err(CtlError::Usage)?;
    Ok(spec)
}

/// `job_get` for every host of job `id` from `offset`, without output.
fn query(id: &JobId, offset: u64) -> JobQuery {
    JobQuery {
        job: id.clone(),
        offset: Some(offset),
        limit: None,
        state: None,
        output: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concierge_protocol::jobs::HostState;
    use serde_json::Value;

    fn run(words: &[&str]) -> Result<JobSpec, CtlError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: crate::CtlCommand,
        }
        let cli = Cli::try_parse_from([&["ctl", "run"], words].concat()).expect("parses");
        match cli.command {
            crate::CtlCommand::Run(args) => spec(&args),
            _ => unreachable!("a run"),
        }
    }

    #[test]
    fn a_run_is_a_job_spec_or_a_usage_error() {
        let spec = run(&[
            "role=web", "--batch", "10%", "--wait", "5m", "--", "sh", "-c", "x",
        ])
        .expect("a spec");
        assert_eq!(spec.wait_secs, Some(300));
        assert_eq!(
            spec.batch,
            Some(concierge_protocol::jobs::Amount::Percent(10))
        );
        assert_eq!(
            json!(spec.request),
            json!({"req": "execute", "msg": {"cmd": ["sh", "-c", "x"]}})
        );
        let unit = run(&["a", "--unit", "restart", "nginx.service"]).expect("a unit");
        assert_eq!(unit.request.name().as_str(), "restart_service");
        let any = run(&["a", "--request", r#"{"req": "ping", "msg": {}}"#]).expect("a request");
        assert_eq!(any.request, Request::Ping(Default::default()));
        for (words, says) in [
            (&["a", "--unit", "status", "x"][..], "--unit takes"),
            (
                &["a", "--request", r#"{"req": "pnig"}"#],
                "--request is not",
            ),
            (&["a", "--batch", "0", "--", "true"], "batch"),
            (&["role=web,dc in (fra", "--", "true"], "^"),
            (
                &[
                    "a",
                    "--request",
                    r#"{"req": "execute", "msg": {"cmd": ["x"], "follow": true}}"#,
                ],
                "follow",
            ),
        ] {
            match run(words) {
                Err(e @ CtlError::Usage(_)) => assert!(e.to_string().contains(says), "{e}"),
                other => panic!("{words:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_final_state_is_never_replaced_by_an_older_one() {
        let spec = JobSpec::new("a", Request::Ping(Default::default()));
        let mut job = Followed {
            info: JobInfo {
                id: "0123456789ab".parse().unwrap(),
                spec,
                user: None,
                client: "ctl_1".into(),
                created_ms: 0,
                finished_ms: None,
                state: JobState::Running,
                stopped_by: None,
                hosts: 1,
                counts: BTreeMap::new(),
            },
            rows: BTreeMap::new(),
        };
        let mut done = JobHost::queued("a", 1);
        done.state = HostState::Done;
        job.update(done);
        let mut late = JobHost::queued("a", 0);
        late.state = HostState::Running;
        job.update(late);
        assert_eq!(job.rows["a"].state, HostState::Done);
        assert_eq!(
            job.progress(),
            "1 done, 0 failed, 0 running, 0 waiting, of 1"
        );
        let event: Value =
            json!({"event": "progress", "job": "0123456789ab", "counts": {"done": 1}});
        assert!(serde_json::from_value::<JobEvent>(event).is_ok());
    }
}
