//! `concierge agent`: the program on every host that operators command
//! through the gateway.
//!
//! It identifies with tag `agent` (and `presence: false`: a fleet's hosts
//! need no news of each other), creates the services `telemetry_<host>` and
//! `audit_<host>`, reports its host's facts to the gateway's inventory
//! ([`facts`]) and its health every `summary_interval` ([`summary`]), and
//! serves the requests that arrive by MESSAGE (the protocol's
//! [`concierge_protocol::agent`] vocabulary, served by [`commands`]), each
//! in a task of its own so a slow one never holds up the others. When the
//! connection ends it reconnects after a jittered, doubling wait, and sets
//! its services up again; a refusal that retrying does not cure (its
//! token, its name: [`refusal`]) stops it instead. It never takes its name
//! from another agent connected with it unless told to (`take_over`).

pub mod audit;
pub mod commands;
pub mod facts;
pub mod follows;
pub mod job_store;
pub mod job_wrap;
pub mod jobs;
pub mod policy;
pub mod procs;
pub mod refusal;
pub mod settings;
pub mod signals;
pub mod state;
pub mod summary;
pub mod systemd;
pub mod telemetry;
pub mod vpn;

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use commands::Host;
use concierge_client::resume::Resume;
use concierge_client::{self as client, ClientError, Identity, Sender};
use concierge_protocol::agent::args::{GetVpnConf, VpnConf};
use concierge_protocol::agent::{
    envelope, outcome, reply, Access, Envelope, GatewayRequest, Reason, Request, RequestName,
};
use concierge_protocol::{
    CloseCode, HostService, Origin, PayloadIn, PayloadOut, Target, GATEWAY_NAME,
};
use settings::{AgentArgs, AgentSettings, Resolved};

/// A connection that lasted this long was a working one: the next
/// reconnect starts from the shortest wait again.
const STABLE: Duration = Duration::from_secs(10);

/// How often the agent asks whether the requesters of its follows are
/// still connected: a follow of a quiet process sends nothing that would
/// tell it.
const FOLLOWER_CHECK: Duration = Duration::from_secs(5);

/// The `rid`s of the agent's requests to the gateway, which tell their
/// answers apart (a summary's is [`summary::SUMMARY_RID`]).
const VPN_RID: u64 = 0;
const FACTS_RID: u64 = 1;

/// Runs the agent until SIGTERM or SIGINT.
pub fn main(mut args: AgentArgs) -> ExitCode {
    if let Some(job_wrap::Hidden::JobWrap { dir, argv }) = args.hidden.take() {
        return job_wrap::main(&dir, &argv);
    }
    let settings = match AgentSettings::load(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("concierge agent: {e}");
            return ExitCode::from(2);
        }
    };
    actix::System::new().block_on(async move {
        match Agent::start(settings) {
            Ok(agent) => agent.run().await,
            Err(e) => {
                eprintln!("concierge agent: {e}");
                ExitCode::from(3)
            }
        }
    })
}

struct Agent {
    host: Rc<Host>,
}

impl Agent {
    fn start(settings: Resolved) -> Result<Agent, String> {
        let vpn = match &settings.vpn {
            Some((interface, key_file, userspace)) => Some(std::sync::Arc::new(
                vpn::VpnClient::load(interface, key_file, userspace.clone())?,
            )),
            None => None,
        };
        let (telemetry, snapshots) =
            telemetry::Telemetry::start(settings.telemetry_interval, vpn.clone())?;
        let audit = audit::Audit::open(&settings.audit_log)?;
        let systemd = settings.systemd.map(systemd::Systemd::new);
        let procs = procs::Procs::new(
            procs::Limits {
                output: settings.output_limit,
                exited: settings.keep_exited,
                running: settings.max_running,
            },
            Some(state::StateFile::in_folder(&settings.work_dir)),
        );
        procs.adopt();
        let (jobs, unfinished) = jobs::Jobs::open(&settings.work_dir)?;
        let host = Rc::new(Host {
            procs,
            follows: follows::Follows::new(follows::Caps {
                total: settings.max_follows,
                per_requester: settings.max_follows_per_requester,
                per_process: settings.max_follows_per_process,
            }),
            settings,
            telemetry,
            snapshots,
            systemd,
            audit,
            jobs,
            vpn,
            summaries: summary::Reporter::default(),
        });
        jobs::recover(&host, unfinished);
        Ok(Agent { host })
    }

    async fn run(self) -> ExitCode {
        let mut sigterm =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("concierge agent: cannot handle SIGTERM: {e}");
                    return ExitCode::from(3);
                }
            };
        let settings = &self.host.settings;
        let agent = refusal::Agent {
            name: &settings.name,
            has_token: settings.token.is_some(),
        };
        let mut wait = settings.reconnect_min;
        let mut refused_wait = refusal::RETRY_FIRST;
        // The last refusal said, so that retrying says it once.
        let mut said: Option<u16> = None;
        // Once it held its name, a reconnection takes it back from its own
        // earlier connection, which the gateway may not have noticed is gone.
        let mut held = false;
        // Its last HELLO's secret: on a gateway without tokens, what proves
        // the name is its own, so that a reconnection takes it back at once
        // rather than after the old connection's heartbeat runs out.
        let mut resume = Resume::default();
        loop {
            let began = Instant::now();
            let take_over = settings.take_over || held;
            let mut joined = false;
            let ended = tokio::select! {
                ended = session(&self.host, take_over, &mut joined, &mut resume) => ended,
                _ = sigterm.recv() => return ExitCode::SUCCESS,
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            };
            if joined {
                // Accepted: a later refusal is news, said and waited for afresh.
                (held, said, refused_wait) = (true, None, refusal::RETRY_FIRST);
            }
            if began.elapsed() >= STABLE {
                wait = settings.reconnect_min;
            }
            let refused = match &ended {
                // Its own earlier connection, which the gateway has not yet
                // seen go (without a token, nothing proves it is its own).
                Err(ClientError::Closed { code, .. })
                    if held && *code == CloseCode::DuplicateAuth.code() =>
                {
                    None
                }
                Err(ClientError::Closed { code, reason }) => {
                    refusal::Refusal::of(*code, reason, &agent)
                }
                _ => None,
            };
            let pause = match refused {
                Some(refused) => {
                    // Taken over: the name is another's now, not to be taken back.
                    held = false;
                    if !settings.retry_refused {
                        eprintln!("concierge agent: {}", refused.message);
                        return ExitCode::from(refused.status);
                    }
                    let pause = jittered(refused_wait);
                    if said != Some(refused.code) {
                        tracing::error!(
                            code = refused.code,
                            "{}; retrying in {pause:?}, then less often, up to every {:?} \
                             (retry_refused), without saying so again",
                            refused.message,
                            refusal::RETRY_MAX
                        );
                        said = Some(refused.code);
                    } else {
                        tracing::debug!(
                            code = refused.code,
                            "refused again; retrying in {pause:?}"
                        );
                    }
                    refused_wait = (refused_wait * 2).min(refusal::RETRY_MAX);
                    pause
                }
                None => {
                    let pause = jittered(wait);
                    match &ended {
                        Err(e) => {
                            tracing::warn!(error = %e, "disconnected; reconnecting in {pause:?}")
                        }
                        Ok(()) => tracing::warn!("disconnected; reconnecting in {pause:?}"),
                    }
                    wait = (wait * 2).min(settings.reconnect_max);
                    pause
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = sigterm.recv() => return ExitCode::SUCCESS,
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
        }
    }
}

/// A wait between half of `wait` and all of it, so a fleet that lost its
/// gateway at once does not come back at once.
fn jittered(wait: Duration) -> Duration {
    let unit = getrandom::u64().unwrap_or(u64::MAX / 2) as f64 / u64::MAX as f64;
    wait.mul_f64(0.5 + unit / 2.0)
}

/// One connection: identify (taking the name over from another
/// connection of the same user, or of the last HELLO's `resume` secret,
/// only with `take_over`), set up the services, serve until it ends.
/// `joined` is set once the gateway accepted it (the name is this agent's).
async fn session(
    host: &Rc<Host>,
    take_over: bool,
    joined: &mut bool,
    resume: &mut Resume,
) -> Result<(), ClientError> {
    let settings = &host.settings;
    let identity = Identity {
        name: settings.name.clone(),
        tags: vec![concierge_protocol::HostKind::Agent.tag().into()],
        token: settings.token.clone(),
        presence: false,
        take_over,
    };
    let client::Connection {
        uuid,
        sender,
        mut receiver,
    } = resume.connect(&settings.url, &identity).await?;
    *joined = true;
    tracing::info!(name = %settings.name, %uuid, url = %settings.url, "connected");
    let telemetry_service = HostService::Telemetry.of(&settings.name);
    let audit_service = HostService::Audit.of(&settings.name);
    // Telemetry is resent every tick: only the audit trail is kept.
    for (service, history) in [
        (&telemetry_service, None),
        (&audit_service, Some(audit::HISTORY)),
    ] {
        sender
            .send(&PayloadIn::ServiceCreate {
                service: service.into(),
                nickname: None,
                history,
            })
            .await?;
    }
    // The owner hears of subscriptions only as a subscriber itself.
    sender
        .send(&PayloadIn::SelfSubscribe {
            service: telemetry_service.as_str().into(),
            position: None,
        })
        .await?;
    if let Some(vpn) = &host.vpn {
        let fetch = envelope(
            &GatewayRequest::GetVpnConf(GetVpnConf {
                conf_type: Some("wireguard".into()),
                tun_mode: Some("udp".into()),
                public_key: Some(vpn.public_key()),
                name: None,
            }),
            VPN_RID,
        );
        sender
            .message(
                Target::Name {
                    name: GATEWAY_NAME.into(),
                },
                &fetch,
            )
            .await?;
    }
    let subscribers = Rc::new(Cell::new(0usize));
    let publisher = actix::spawn(publish_telemetry(
        host.clone(),
        sender.clone(),
        telemetry_service.clone(),
        subscribers.clone(),
    ));
    let checker = actix::spawn(check_followers(host.clone(), sender.clone()));
    let reporter = actix::spawn(report_facts(host.clone(), sender.clone()));
    let summaries = actix::spawn(summary::report(host.clone(), sender.clone()));
    let ended = loop {
        let payload = match receiver.next().await {
            Ok(sequenced) => sequenced.payload,
            Err(e) => break Err(e),
        };
        match payload {
            PayloadOut::Message { origin, data, .. } if origin.client.name == GATEWAY_NAME => {
                let rid = data.get("rid").and_then(Value::as_u64);
                let msg = || data.get("msg").cloned().unwrap_or_default();
                if rid == Some(FACTS_RID) {
                    match outcome(msg()) {
                        Ok(filed) => host.summaries.learn(&filed),
                        Err(failure) => tracing::warn!(reason = failure.reason.as_str(),
                            desc = %failure.desc, "the gateway did not file this host's facts"),
                    }
                } else if rid == Some(summary::SUMMARY_RID) {
                    host.summaries.answered(msg());
                } else if let Some(vpn) = host.vpn.clone() {
                    actix::spawn(bring_up(vpn, data));
                }
            }
            PayloadOut::Message { origin, data, .. } => {
                let host = host.clone();
                let sender = sender.clone();
                let audit_service = audit_service.clone();
                actix::spawn(async move {
                    handle(&host, &sender, origin, data, &audit_service).await;
                });
            }
            PayloadOut::SelfSubscribeResult { service, .. }
            | PayloadOut::ServiceClientSubscribed { service, .. }
            | PayloadOut::ServiceClientUnsubscribed { service, .. }
                if service.name == telemetry_service =>
            {
                let others = service.subscribers.iter().filter(|s| **s != uuid).count();
                subscribers.set(others);
            }
            PayloadOut::ServiceCreateResult {
                successful: false,
                service,
            } if service.owner_uuid != uuid
                && [&telemetry_service, &audit_service].contains(&&service.name) =>
            {
                tracing::warn!(service = %service.name, owner = %service.owner_uuid,
                    "another client owns this agent's service; it is not published");
            }
            // A MESSAGE to a client that left: a requester of follows,
            // whose streams end here (see `follows`).
            PayloadOut::InvalidUuid { uuid } => {
                if let Ok(uuid) = uuid.parse() {
                    host.follows.gone(uuid);
                }
            }
            PayloadOut::ErrorProtocol { desc } => {
                tracing::warn!(%desc, "the gateway refused a payload");
            }
            _ => {}
        }
    };
    publisher.abort();
    checker.abort();
    reporter.abort();
    summaries.abort();
    ended
}

/// Reports the host's facts now, then again whenever they change (see
/// [`facts`]).
async fn report_facts(host: Rc<Host>, sender: Sender) {
    let mut sent = None;
    let mut looks = tokio::time::interval(facts::LOOK_EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        looks.tick().await;
        let labels = host.settings.labels.clone();
        let vpn_address = host.vpn.as_ref().and_then(|vpn| vpn.address());
        let Ok(now) =
            tokio::task::spawn_blocking(move || facts::collect(&labels, vpn_address)).await
        else {
            continue;
        };
        if sent.as_ref() == Some(&now) {
            continue;
        }
        let report = envelope(&GatewayRequest::Facts(now.clone()), FACTS_RID);
        let to = Target::Name {
            name: GATEWAY_NAME.into(),
        };
        if sender.message(to, &report).await.is_err() {
            return;
        }
        sent = Some(now);
    }
}

/// Asks the gateway for each requester of a follow, every
/// [`FOLLOWER_CHECK`]: one that left is answered `INVALID_UUID`, which ends
/// its follows.
async fn check_followers(host: Rc<Host>, sender: Sender) {
    let mut ticks = tokio::time::interval(FOLLOWER_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for uuid in host.follows.requesters() {
            let fetch = PayloadIn::ClientFetch {
                uuid: uuid.to_string().into(),
            };
            if sender.send(&fetch).await.is_err() {
                return;
            }
        }
    }
}

/// Applies the gateway's answer to `get_vpn_conf`.
async fn bring_up(vpn: std::sync::Arc<vpn::VpnClient>, answer: Value) {
    let msg = answer.get("msg").cloned().unwrap_or_default();
    let conf = outcome(msg).and_then(|body| {
        serde_json::from_value::<VpnConf>(body).map_err(|e| {
            concierge_protocol::agent::Failure::new(
                Reason::Failed,
                format!("an answer of no known shape: {e}"),
            )
        })
    });
    let conf = match conf {
        Ok(conf) => conf.conf_data,
        Err(failure) => {
            let why = format!("the gateway refused the VPN config: {failure}");
            tracing::error!("{why}");
            vpn.refused(why);
            return;
        }
    };
    // `ip` and the interface's socket block: not on the agent's thread.
    let applied = tokio::task::spawn_blocking(move || vpn.apply(&conf)).await;
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot bring the VPN tunnel up"),
        Err(e) => tracing::error!(error = %e, "the VPN task failed"),
    }
}

/// Publishes each telemetry snapshot on the service while it has
/// subscribers.
async fn publish_telemetry(
    host: Rc<Host>,
    sender: Sender,
    service: String,
    subscribers: Rc<Cell<usize>>,
) {
    let mut snapshots = host.snapshots.clone();
    while snapshots.changed().await.is_ok() {
        if subscribers.get() == 0 {
            continue;
        }
        let data = snapshots.borrow_and_update().clone();
        let event = json!({"event": "telemetry", "host": host.settings.name, "tele_data": *data});
        if sender
            .message(
                Target::Service {
                    service: service.clone(),
                },
                &event,
            )
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Serves one MESSAGE: decode, authorize, run, reply, audit, and stream a
/// followed process's output.
async fn handle(
    host: &Rc<Host>,
    sender: &Sender,
    origin: Origin,
    data: Value,
    audit_service: &str,
) {
    // Replies and events (of another agent, or answers to a requester that
    // wrote to us by mistake) are not requests: answering them could start
    // two agents answering each other forever.
    if Envelope::is_answer(&data) {
        tracing::debug!(from = %origin.client.name, "ignored a reply or event sent to the agent");
        return;
    }
    let reply_to = Target::Uuid {
        uuid: origin.client.uuid.to_string(),
    };
    let request = match Envelope::decode(&data) {
        Ok(request) => request,
        Err((rid, failure)) => {
            let _ = sender
                .message(reply_to, &reply(rid.as_ref(), Err(failure)))
                .await;
            return;
        }
    };
    let name = RequestName::parse(&request.req);
    let access = name.as_ref().ok().map(|n| n.access());
    let outcome = match name {
        Ok(name) => match host.authorize(&origin, name) {
            Ok(()) => match Request::parse(&request) {
                Ok(Request::RunJob(run)) => {
                    let to = jobs::Requester {
                        sender: sender.clone(),
                        target: reply_to,
                        rid: request.rid.clone(),
                    };
                    return jobs::run_job(host, to, origin, run, audit_service).await;
                }
                Ok(typed) => host.serve(origin.client.uuid, typed).await,
                Err(bad) => Err(bad),
            },
            Err(refused) => Err(refused),
        },
        Err(unknown) => Err(unknown),
    };
    let audited = access == Some(Access::Command)
        || matches!(&outcome, Err(f) if f.reason == Reason::Forbidden);
    let (body, follow) = match outcome {
        Ok((body, follow)) => (Ok(body), follow),
        Err(failure) => (Err(failure), None),
    };
    if audited {
        let entry = audit::Audit::entry(&origin, &request, &body);
        publish_audit(host, sender, audit_service, entry).await;
    }
    let rid = request.rid.clone();
    if sender
        .message(reply_to.clone(), &reply(Some(&rid), body))
        .await
        .is_err()
    {
        return;
    }
    if let Some(follow) = follow {
        follow
            .run(|mut event| {
                if let Some(fields) = event.as_object_mut() {
                    fields.insert("rid".into(), Value::Number(rid.clone()));
                }
                let sender = sender.clone();
                let target = reply_to.clone();
                async move { sender.message(target, &event).await.is_ok() }
            })
            .await;
    }
}

/// Writes an audit entry to the log and publishes it on the host's audit
/// service.
async fn publish_audit(host: &Host, sender: &Sender, audit_service: &str, entry: Value) {
    host.audit.write(&entry);
    let _ = sender
        .message(
            Target::Service {
                service: audit_service.to_owned(),
            },
            &json!({"event": "audit", "host": host.settings.name, "entry": entry}),
        )
        .await;
}
