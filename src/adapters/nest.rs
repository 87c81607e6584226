//! The Nest bot protocol (seeds 000/001) on `/nest`: a Nest host, unmodified,
//! becomes a client of the namespace that operators command like an agent.
//!
//! Every frame is `{"status", "message", "payload"}`. The host's first frame
//! must be `let_me_in_pls` with `payload.version` (one `nest_versions`
//! admits: by default those the Nest client shipped) and
//! `payload.client_token` (a token from `concierge token issue --format
//! nest`), within `identify_timeout_ms`; success is `{"status": "info", "message":
//! "Authenticated :D"}`, any failure `{"status": "error", "message": WHY}`
//! and a close. Once in, the host is the client named by its token (tag
//! `nest`). A request an operator sends it (the agent's envelope, section 13
//! of docs/PROTOCOL.md) goes to the host as `{"status": "command", "message":
//! NAME, "payload": ...}`, and the host's next `command_response` or
//! `command_response_error` is the reply. Only the commands the Nest
//! client's handler implements are sent (it exits on any other); the rest
//! are refused here. The protocol has no request id,
//! so one command is in flight per host and the others wait their turn; a
//! command unanswered in `adapter_command_timeout_secs` is answered with a
//! timeout, and the host's late answer to it is dropped rather than given to
//! the next command; when the host goes, every command it still owes an
//! answer is answered `gone`.
//!
//! After `Authenticated :D` the Nest client takes any frame but `command`
//! and `error` for an illegal message and exits: nothing else is sent to a
//! host that is in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::CloseCode as WsCloseCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::auth::nest as nest_tokens;
use crate::namespace::Member;
use crate::protocol::agent::{
    reply, success, Envelope, Failure, Reason, Request, RequestName, Rid,
};
use crate::protocol::fleet::Facts;
use crate::protocol::{Close, CloseCode, HostKind};
use crate::session::{Ctx, Heard, Session, Translator};
use crate::transport::outbox::{Frame, FrameSink};

/// The commands the Nest client's handler implements, the same in every
/// version it shipped (0.1.0a as it last was, and 1.0.0): only these are
/// sent to a host, which exits on any other. Seed 001's `exec_command`
/// is not among them: the client dropped it before it shipped.
const COMMANDS: [RequestName; 13] = [
    RequestName::ObtainUserUsages,
    RequestName::ObtainAllProcessInfo,
    RequestName::ObtainProcessInfo,
    RequestName::KillProcess,
    RequestName::PauseProcess,
    RequestName::ResumeProcess,
    RequestName::ListServices,
    RequestName::ObtainServiceInfo,
    RequestName::StartService,
    RequestName::StopService,
    RequestName::RestartService,
    RequestName::ReloadService,
    RequestName::GetPort,
];

/// `nest_versions`: comma-separated semver requirements (one comparator
/// each), any of which admits a version.
pub fn versions(text: &str) -> Result<Vec<semver::VersionReq>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            semver::VersionReq::parse(s)
                .map_err(|e| format!("{s:?} is not a semver requirement (e.g. ^1.0.0): {e}"))
        })
        .collect()
}

/// A version as the Nest client writes it: semver, or with a pre-release
/// written without its hyphen (`0.1.0a` is 0.1.0-a).
fn version(text: &str) -> Option<semver::Version> {
    semver::Version::parse(text).ok().or_else(|| {
        let numbers = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|&at| text[at..].starts_with(|c: char| c.is_ascii_alphabetic()))?;
        semver::Version::parse(&format!("{}-{}", &text[..numbers], &text[numbers..])).ok()
    })
}

enum State {
    /// Waiting for `let_me_in_pls`.
    Waiting,
    /// Its token is being checked and its name claimed.
    Joining,
    Joined(Member),
}

/// A request waiting for the host.
struct Pending {
    origin: Uuid,
    rid: Rid,
    command: String,
    payload: Value,
    /// Asked as seed 003's `view_running`: the answer is turned into its
    /// list.
    as_view_running: bool,
}

/// The Nest format's state of one connection.
pub struct Nest {
    state: State,
    queue: VecDeque<Pending>,
    in_flight: Option<(Pending, SpawnHandle)>,
    /// A command timed out: the host's next answer is its, late.
    late: bool,
}

impl Translator for Nest {
    const PATHS: &'static [&'static str] = &["/nest"];
    const CLIENTS: &'static str = "Nest hosts";

    fn new(peer: &str) -> (Self, tracing::Span) {
        let nest = Nest {
            state: State::Waiting,
            queue: VecDeque::new(),
            in_flight: None,
            late: false,
        };
        (
            nest,
            tracing::info_span!("nest", %peer, name = tracing::field::Empty),
        )
    }

    fn identified(&self) -> bool {
        !matches!(self.state, State::Waiting)
    }

    fn registered(&self) -> Option<Uuid> {
        match &self.state {
            State::Joined(member) => Some(member.uuid()),
            State::Waiting | State::Joining => None,
        }
    }

    fn identify_late(session: &mut Session<Self>, timeout: Duration, ctx: &mut Ctx<Self>) {
        session.refuse(
            &format!("no let_me_in_pls within {} ms", timeout.as_millis()),
            ctx,
        );
    }

    fn heard(session: &mut Session<Self>, heard: Heard, ctx: &mut Ctx<Self>) {
        match super::text(heard) {
            Ok(text) => session.on_text(&text, ctx),
            Err(why) => session.complain(why, ctx),
        }
    }

    fn silent(session: &mut Session<Self>, _limit: Duration, ctx: &mut Ctx<Self>) {
        tracing::info!("Nest host silent: closing");
        session.close(ctx, Close::new(CloseCode::HeartbeatFailed, "no pong"));
    }

    /// The reason, as an error frame.
    fn closing(session: &mut Session<Self>, close: &Close) {
        session.send("error", &close.reason, None);
    }

    fn sink(session: &Session<Self>, ctx: &mut Ctx<Self>) -> Arc<dyn FrameSink> {
        super::to_actor(session, ctx)
    }

    /// The command in flight and those waiting are answered `gone`.
    fn stopped(session: &mut Session<Self>) {
        let Nest {
            state,
            queue,
            in_flight,
            ..
        } = &mut session.format;
        let State::Joined(member) = state else {
            return;
        };
        let owed = in_flight.take().map(|(pending, _)| pending);
        let owed = owed.into_iter().chain(queue.drain(..));
        super::gone(member, "Nest host", owed.map(|p| (p.origin, p.rid)));
    }

    fn delivered(session: &mut Session<Self>, frame: Frame, ctx: &mut Ctx<Self>) {
        if let Some((origin, data)) = super::message(&frame) {
            session.request(&origin, &data, ctx);
        }
    }
}

impl Session<Nest> {
    fn send(&self, status: &str, message: &str, payload: Option<Value>) {
        let mut frame = json!({"status": status, "message": message});
        if let Some(payload) = payload {
            frame["payload"] = payload;
        }
        self.push(&frame.to_string());
    }

    /// Tells the host why, then closes.
    fn refuse(&mut self, why: &str, ctx: &mut Ctx<Nest>) {
        tracing::info!(reason = why, "Nest host refused");
        self.send("error", why, None);
        // After the error frame (a Policy close_with would drop it).
        self.close_after(ctx, WsCloseCode::Policy, why.to_owned());
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx<Nest>) {
        let frame: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(frame)) => frame,
            Ok(_) => {
                return self.complain(
                    "a frame is a JSON object {\"status\", \"message\", \"payload\"}",
                    ctx,
                )
            }
            Err(e) => return self.complain(&format!("not JSON: {e}"), ctx),
        };
        let status = frame.get("status").and_then(Value::as_str).unwrap_or("");
        match (&self.format.state, status) {
            (State::Waiting, "let_me_in_pls") => self.let_in(&frame, ctx),
            (State::Waiting, _) => self.refuse("the first message must be let_me_in_pls", ctx),
            // The Nest client would take a warning for its welcome: what
            // it sends before it is in is dropped.
            (State::Joining, _) => {
                tracing::info!(status, "dropped a Nest host's frame sent before it was in")
            }
            (State::Joined(_), "command_response") => {
                // A bare success still says what it did in its message
                // ("Started service ..."): that is its answer.
                let answer = frame.get("payload").cloned().or_else(|| {
                    let message = frame.get("message").filter(|m| m.is_string())?;
                    Some(json!({ "message": message }))
                });
                self.answered(Ok(answer), ctx)
            }
            (State::Joined(_), "command_response_error") => {
                let payload = frame.get("payload");
                let why = payload
                    .and_then(|p| p.get("error"))
                    .and_then(Value::as_str)
                    .or_else(|| frame.get("message").and_then(Value::as_str))
                    .unwrap_or("the host reported an error")
                    .to_owned();
                self.answered(Err(why), ctx)
            }
            (State::Joined(_), "info") => {
                let message = frame
                    .get("message")
                    .map(Value::to_string)
                    .unwrap_or_default();
                tracing::info!(%message, "from the Nest host")
            }
            (State::Joined(_), "warning" | "error") => {
                let message = frame
                    .get("message")
                    .map(Value::to_string)
                    .unwrap_or_default();
                tracing::warn!(status, %message, "from the Nest host")
            }
            (State::Joined(_), other) => self.complain(&format!("unknown status {other:?}"), ctx),
        }
    }

    /// A frame that makes no sense: an error frame; before authentication,
    /// a close.
    fn complain(&mut self, why: &str, ctx: &mut Ctx<Nest>) {
        match self.format.state {
            State::Joined(_) => self.send("error", why, None),
            _ => self.refuse(why, ctx),
        }
    }

    fn let_in(&mut self, frame: &Map<String, Value>, ctx: &mut Ctx<Nest>) {
        let payload = frame.get("payload");
        let version = payload
            .and_then(|p| p.get("version"))
            .and_then(Value::as_str);
        let accepted = versions(&self.settings.nest_versions).unwrap_or_default();
        match version {
            Some(v) if version_ok(v, &accepted) => {}
            Some(v) => {
                let wanted = self.settings.nest_versions.clone();
                return self.refuse(&format!("version {v:?} is not accepted: {wanted}"), ctx);
            }
            None => return self.refuse("payload.version is missing", ctx),
        }
        let Some(token) = payload
            .and_then(|p| p.get("client_token"))
            .and_then(Value::as_str)
        else {
            return self.refuse(&nest_tokens::NestRefused::Missing.to_string(), ctx);
        };
        let token = token.to_owned();
        self.format.state = State::Joining;
        let auth = self.auth.clone();
        let joining = self.joining(ctx);
        let inventory = self.inventory.clone();
        // All a Nest client tells of its host is its version.
        let facts = Facts {
            agent_version: version.map(str::to_owned),
            ..Facts::default()
        };
        async move {
            let claims = nest_tokens::lookup(auth.store(), &token)
                .await
                .map_err(|e| e.to_string())?;
            auth.check(&claims)
                .map_err(|_| nest_tokens::NestRefused::Revoked.to_string())?;
            let member = super::join(joining, &claims, HostKind::Nest, false, (&inventory, facts))
                .await
                .map_err(|close| match close.code {
                    CloseCode::DuplicateAuth => "already connected".to_owned(),
                    _ => close.reason,
                })?;
            Ok::<_, String>((member, claims))
        }
        .into_actor(self)
        .map(|joined, act, ctx| match joined {
            Ok((member, claims)) => {
                act.span.record("name", member.info().name.as_str());
                tracing::info!(name = %member.info().name, "Nest host joined");
                act.format.state = State::Joined(member);
                // Its process list comes in one frame.
                act.frame_limit.set(act.settings.adapter_max_frame_size);
                act.send("info", "Authenticated :D", None);
                act.watch_token(claims, ctx);
            }
            Err(why) => act.refuse(&why, ctx),
        })
        .wait(ctx);
    }

    /// The host answered the command in flight.
    fn answered(&mut self, outcome: Result<Option<Value>, String>, ctx: &mut Ctx<Nest>) {
        if self.format.late {
            self.format.late = false;
            tracing::info!("dropped the Nest host's late answer to a command that timed out");
            return self.pump(ctx);
        }
        let Some((pending, timer)) = self.format.in_flight.take() else {
            return tracing::info!("dropped a Nest host's answer to no command");
        };
        ctx.cancel_future(timer);
        let view = pending.as_view_running;
        let msg = outcome
            .map(|payload| match payload {
                _ if view => view_running(payload.as_ref()),
                Some(fields @ Value::Object(_)) => success(fields),
                Some(other) => success(json!({"data": other})),
                None => success(Value::Null),
            })
            .map_err(|why| Failure::new(Reason::Failed, why));
        self.reply_to(pending.origin, &pending.rid, msg, ctx);
        self.pump(ctx);
    }

    /// Sends the next command if none is in flight.
    fn pump(&mut self, ctx: &mut Ctx<Nest>) {
        if self.format.in_flight.is_some() || self.format.late {
            return;
        }
        let Some(next) = self.format.queue.pop_front() else {
            return;
        };
        self.send("command", &next.command, Some(next.payload.clone()));
        let patience = Duration::from_secs(self.settings.adapter_command_timeout_secs);
        let timer = ctx.run_later(patience, move |act, ctx| {
            if let Some((pending, _)) = act.format.in_flight.take() {
                act.format.late = true;
                let why = format!(
                    "the Nest host did not answer {} within {} s",
                    pending.command,
                    patience.as_secs()
                );
                act.reply_to(
                    pending.origin,
                    &pending.rid,
                    Err(Failure::new(Reason::Timeout, why)),
                    ctx,
                );
                // A host that never answers late would hold the queue:
                // after as long again, stop waiting for it.
                ctx.run_later(patience, |act, ctx| {
                    act.format.late = false;
                    act.pump(ctx);
                });
            }
        });
        self.format.in_flight = Some((next, timer));
    }

    fn reply_to(
        &mut self,
        origin: Uuid,
        rid: &Rid,
        msg: Result<Value, Failure>,
        ctx: &mut Ctx<Nest>,
    ) {
        self.answer(origin, &reply(Some(rid), msg), ctx);
    }

    fn answer(&mut self, origin: Uuid, data: &Value, ctx: &mut Ctx<Nest>) {
        let State::Joined(member) = &self.format.state else {
            return;
        };
        if let Some(done) = super::send_to(member, origin, data) {
            ctx.spawn(done.into_actor(self));
        }
    }

    /// A request from an operator, by MESSAGE.
    fn request(&mut self, origin: &crate::protocol::Origin, data: &Value, ctx: &mut Ctx<Nest>) {
        // Replies and events are not requests (as the agent does).
        if Envelope::is_answer(data) {
            return;
        }
        let sender = origin.client.uuid;
        let request = match Envelope::decode(data) {
            Ok(request) => request,
            Err((rid, failure)) => {
                self.answer(sender, &reply(rid.as_ref(), Err(failure)), ctx);
                return;
            }
        };
        let limit = self.settings.max_outgoing_queue;
        let waiting = self.format.queue.len() + usize::from(self.format.in_flight.is_some());
        let accepted = super::authorized(origin, &request)
            .and_then(|typed| command_for(&typed, &request))
            .and_then(|command| {
                (waiting < limit)
                    .then_some(command)
                    .ok_or_else(|| super::too_many(limit))
            });
        match accepted {
            Ok((command, payload)) => {
                self.format.queue.push_back(Pending {
                    origin: sender,
                    rid: request.rid.clone(),
                    command,
                    payload,
                    as_view_running: request.req == RequestName::ViewRunning.as_str(),
                });
                self.pump(ctx);
            }
            Err(failure) => self.reply_to(sender, &request.rid, Err(failure), ctx),
        }
    }
}

/// Whether the Nest client's `version` is one `accepted` admits.
fn version_ok(text: &str, accepted: &[semver::VersionReq]) -> bool {
    version(text).is_some_and(|v| accepted.iter().any(|req| req.matches(&v)))
}

/// seed 003's `view_running` list from a Nest process list (the payload
/// itself or its `processes`): `title`, `pid`, `cpu_util`, `mem_util` (MB),
/// `reqc`, `port_util` from what each entry has.
fn view_running(payload: Option<&Value>) -> Value {
    let list = match payload {
        Some(Value::Array(list)) => list.clone(),
        Some(other) => other["processes"].as_array().cloned().unwrap_or_default(),
        None => Vec::new(),
    };
    list.iter()
        .map(|p| {
            let rss = p["memory"]["rss"].as_f64().or_else(|| p["mem_util"].as_f64());
            json!({
                "title": p.get("name").or_else(|| p.get("title")).cloned().unwrap_or(Value::Null),
                "pid": p["pid"],
                "cpu_util": p.get("cpu_usage").or_else(|| p.get("cpu_util")).cloned().unwrap_or(Value::from(0)),
                "mem_util": rss.map_or(Value::from(0), |b| {
                    if p["memory"]["rss"].is_number() {
                        Value::from((b / 100_000.0).round() / 10.0)
                    } else {
                        Value::from(b)
                    }
                }),
                "reqc": p.get("cmd").or_else(|| p.get("reqc")).cloned().unwrap_or(Value::Null),
                "port_util": p.get("port_util").cloned().unwrap_or(json!([])),
            })
        })
        .collect()
}

/// The Nest command for an agent request: the seeds' own names pass as
/// they are, with their arguments as sent; seed 003's are mapped where Nest
/// has the same thing.
fn command_for(request: &Request, sent: &Envelope) -> Result<(String, Value), Failure> {
    let name = request.name().as_str();
    let unserved = || {
        let served: Vec<&str> = COMMANDS.iter().map(|c| c.as_str()).collect();
        Failure::new(
            Reason::UnknownRequest,
            format!(
                "a Nest host does not serve {name:?}: it serves {}, and view_running and \
                 proc_signal in their terms",
                served.join(", ")
            ),
        )
    };
    Ok(match request {
        // The Nest client ignores a method other than these two, and says
        // it killed the process.
        Request::KillProcess(args) => {
            let method = args.method.as_deref().unwrap_or("SIGTERM");
            if !matches!(method, "SIGTERM" | "SIGKILL") {
                return Err(Failure::bad_argument(
                    "`method`: a Nest host takes SIGTERM or SIGKILL",
                ));
            }
            (name.to_owned(), json!({"pid": args.pid, "method": method}))
        }
        _ if COMMANDS.contains(&request.name()) => {
            (name.to_owned(), Value::Object(sent.msg.clone()))
        }
        // `ctl ps`: the host's processes, as Nest lists them.
        Request::ViewRunning(_) => ("obtain_all_process_info".to_owned(), json!({})),
        Request::ProcSignal(args) => {
            let pid = args.pid;
            match args.mode.as_str() {
                "SIGTERM" | "SIGKILL" => (
                    "kill_process".to_owned(),
                    json!({"pid": pid, "method": args.mode}),
                ),
                "SIGSTOP" => ("pause_process".to_owned(), json!({"pid": pid})),
                "SIGCONT" => ("resume_process".to_owned(), json!({"pid": pid})),
                other => {
                    return Err(Failure::new(
                        Reason::BadArgument,
                        format!(
                            "a Nest host takes SIGTERM, SIGKILL, SIGSTOP or SIGCONT, not {other}"
                        ),
                    ))
                }
            }
        }
        _ => return Err(unserved()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_running_gives_memory_in_mb_as_seed_003_says() {
        let list = json!([
            {"name": "python3", "pid": 7, "cpu_usage": 1.5, "memory": {"rss": 104_857_600}, "cmd": ["python3"]},
            {"title": "old", "pid": 8, "mem_util": 12.5},
        ]);
        let view = view_running(Some(&list));
        assert_eq!(view[0]["mem_util"], json!(104.9));
        assert_eq!(view[0]["title"], "python3");
        assert_eq!(view[1]["mem_util"], json!(12.5));
    }
}
