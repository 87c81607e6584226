//! The Nest bot protocol (seeds 000/001) on `/nest`: a Nest host, unmodified,
//! becomes a client of the namespace that operators command like an agent.
//!
//! Every frame is `{"status", "message", "payload"}`. The host's first frame
//! must be `let_me_in_pls` with `payload.version` and `payload.client_token`
//! (a token from `concierge token issue --format nest`), within
//! `identify_timeout_ms`; success is `{"status": "info", "message":
//! "Authenticated :D"}`, any failure `{"status": "error", "message": WHY}`
//! and a close. Once in, the host is the client named by its token (tag
//! `nest`). A request an operator sends it (the agent's envelope, section 13
//! of docs/PROTOCOL.md) goes to the host as `{"status": "command", "message":
//! NAME, "payload": ...}`, and the host's next `command_response` or
//! `command_response_error` is the reply. The protocol has no request id,
//! so one command is in flight per host and the others wait their turn; a
//! command unanswered in `adapter_command_timeout_secs` is answered with a
//! timeout, and the host's late answer to it is dropped rather than given to
//! the next command.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseCode as WsCloseCode, CloseReason, Frame as WsFrame, ProtocolError};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{Delivered, Heard};
use crate::auth::{nest as nest_tokens, Auth};
use crate::config::Settings;
use crate::namespace::{Member, Namespace};
use crate::protocol::agent::{
    reply, success, Envelope, Failure, Reason, Request, RequestName, Rid,
};
use crate::protocol::{Close, CloseCode};
use crate::transport::outbox::FrameSink;
use crate::transport::websocket::Outgoing;

/// Versions of the Nest client this adapter speaks (seed 000: "0.1.0a").
const VERSIONS: &str = "0.1";

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

pub struct NestSession {
    settings: Arc<Settings>,
    namespace: Namespace,
    auth: Arc<Auth>,
    state: State,
    out: Outgoing,
    socket: Arc<dyn FrameSink>,
    queue: VecDeque<Pending>,
    in_flight: Option<(Pending, SpawnHandle)>,
    /// A command timed out: the host's next answer is its, late.
    late: bool,
    span: tracing::Span,
}

impl NestSession {
    pub fn new(
        settings: Arc<Settings>,
        namespace: Namespace,
        auth: Arc<Auth>,
        peer: String,
        out: Outgoing,
        socket: Arc<dyn FrameSink>,
    ) -> NestSession {
        NestSession {
            settings,
            namespace,
            auth,
            state: State::Waiting,
            out,
            socket,
            queue: VecDeque::new(),
            in_flight: None,
            late: false,
            span: tracing::info_span!("nest", %peer, name = tracing::field::Empty),
        }
    }

    fn send(&self, status: &str, message: &str, payload: Option<Value>) {
        let mut frame = json!({"status": status, "message": message});
        if let Some(payload) = payload {
            frame["payload"] = payload;
        }
        super::push_own(
            &*self.socket,
            &frame.to_string(),
            self.settings.max_outgoing_queue,
        );
    }

    /// Tells the host why, then closes.
    fn refuse(&mut self, why: &str, ctx: &mut Context<Self>) {
        tracing::info!(reason = why, "Nest host refused");
        self.send("error", why, None);
        // After the error frame (a Policy close_with would drop it).
        self.out.close(Some(CloseReason {
            code: WsCloseCode::Policy,
            description: Some(why.to_owned()),
        }));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
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
        match (&self.state, status) {
            (State::Waiting, "let_me_in_pls") => self.let_in(&frame, ctx),
            (State::Waiting, _) => self.refuse("the first message must be let_me_in_pls", ctx),
            (State::Joining, _) => self.send(
                "warning",
                "still authenticating: wait for Authenticated",
                None,
            ),
            (State::Joined(_), "command_response") => {
                self.answered(Ok(frame.get("payload").cloned()), ctx)
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
    fn complain(&mut self, why: &str, ctx: &mut Context<Self>) {
        match self.state {
            State::Joined(_) => self.send("error", why, None),
            _ => self.refuse(why, ctx),
        }
    }

    fn let_in(&mut self, frame: &Map<String, Value>, ctx: &mut Context<Self>) {
        let payload = frame.get("payload");
        let version = payload
            .and_then(|p| p.get("version"))
            .and_then(Value::as_str);
        match version {
            Some(v) if v.starts_with(VERSIONS) => {}
            Some(v) => {
                return self.refuse(&format!("version {v:?} is not accepted: {VERSIONS}.x"), ctx)
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
        self.state = State::Joining;
        let auth = self.auth.clone();
        let namespace = self.namespace.clone();
        let actor = ctx.address();
        let capacity = self.settings.max_outgoing_queue;
        async move {
            let claims = nest_tokens::lookup(auth.store(), &token)
                .await
                .map_err(|e| e.to_string())?;
            auth.check(&claims)
                .map_err(|_| nest_tokens::NestRefused::Revoked.to_string())?;
            let member = super::join(&auth, &namespace, &claims, "nest", actor, capacity, false)
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
                let watch =
                    super::watch_claims(act.auth.clone(), claims, ctx.address().recipient());
                ctx.spawn(watch.into_actor(act));
                act.state = State::Joined(member);
                act.send("info", "Authenticated :D", None);
            }
            Err(why) => act.refuse(&why, ctx),
        })
        .wait(ctx);
    }

    /// The host answered the command in flight.
    fn answered(&mut self, outcome: Result<Option<Value>, String>, ctx: &mut Context<Self>) {
        if self.late {
            self.late = false;
            tracing::info!("dropped the Nest host's late answer to a command that timed out");
            return self.pump(ctx);
        }
        let Some((pending, timer)) = self.in_flight.take() else {
            return self.send("warning", "an answer to no command", None);
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
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() || self.late {
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            return;
        };
        self.send("command", &next.command, Some(next.payload.clone()));
        let patience = Duration::from_secs(self.settings.adapter_command_timeout_secs);
        let timer = ctx.run_later(patience, move |act, ctx| {
            if let Some((pending, _)) = act.in_flight.take() {
                act.late = true;
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
                    act.late = false;
                    act.pump(ctx);
                });
            }
        });
        self.in_flight = Some((next, timer));
    }

    fn reply_to(
        &mut self,
        origin: Uuid,
        rid: &Rid,
        msg: Result<Value, Failure>,
        ctx: &mut Context<Self>,
    ) {
        self.answer(origin, &reply(Some(rid), msg), ctx);
    }

    fn answer(&mut self, origin: Uuid, data: &Value, ctx: &mut Context<Self>) {
        let State::Joined(member) = &self.state else {
            return;
        };
        if let Some(done) = super::send_to(member, origin, data) {
            ctx.spawn(done.into_actor(self));
        }
    }

    /// A request from an operator, by MESSAGE.
    fn request(&mut self, origin: &crate::protocol::Origin, data: &Value, ctx: &mut Context<Self>) {
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
        let waiting = self.queue.len() + usize::from(self.in_flight.is_some());
        let accepted = super::authorized(origin, &request)
            .and_then(|typed| command_for(&typed, &request))
            .and_then(|command| {
                (waiting < limit)
                    .then_some(command)
                    .ok_or_else(|| super::too_many(limit))
            });
        match accepted {
            Ok((command, payload)) => {
                self.queue.push_back(Pending {
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

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.out.silent_for() > self.settings.heartbeat_timeout() {
            tracing::info!("Nest host silent: closing");
            self.out
                .close_with(&Close::new(CloseCode::HeartbeatFailed, "no pong"));
            ctx.stop();
            return;
        }
        self.out.ping();
    }
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
                        Value::from((b / 1_048_576.0 * 10.0).round() / 10.0)
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
        Failure::new(
            Reason::UnknownRequest,
            format!("a Nest host does not serve {name:?}"),
        )
    };
    Ok(match request {
        Request::ObtainAllProcessInfo(_)
        | Request::ObtainProcessInfo(_)
        | Request::KillProcess(_)
        | Request::PauseProcess(_)
        | Request::ResumeProcess(_)
        | Request::ObtainUserUsages(_)
        | Request::ListServices(_)
        | Request::ObtainServiceInfo(_)
        | Request::StartService(_)
        | Request::StopService(_)
        | Request::RestartService(_)
        | Request::ReloadService(_)
        | Request::ExecCommand(_) => (name.to_owned(), Value::Object(sent.msg.clone())),
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
        Request::Execute(_)
        | Request::ListStarted(_)
        | Request::ProcOutput(_)
        | Request::Telemetry(_)
        | Request::Audit(_)
        | Request::GetVpnConf(_)
        | Request::Ping(_) => return Err(unserved()),
    })
}

impl Actor for NestSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.settings.identify_timeout();
        ctx.run_later(timeout, move |act, ctx| {
            if matches!(act.state, State::Waiting) {
                act.refuse(
                    &format!("no let_me_in_pls within {} ms", timeout.as_millis()),
                    ctx,
                );
            }
        });
        ctx.run_interval(self.settings.heartbeat_interval(), Self::heartbeat);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.out.end();
        if let State::Joined(member) = &self.state {
            self.namespace.leave(member.uuid());
        }
    }
}

impl StreamHandler<Result<WsFrame, ProtocolError>> for NestSession {
    fn handle(&mut self, frame: Result<WsFrame, ProtocolError>, ctx: &mut Context<Self>) {
        let _entered = self.span.clone().entered();
        match super::hear(&frame, &self.out) {
            Heard::Text(text) => self.on_text(text, ctx),
            Heard::Unusable(why) => self.complain(why, ctx),
            Heard::Nothing => {}
            Heard::Ended => ctx.stop(),
        }
    }
}

impl Handler<Delivered> for NestSession {
    type Result = ();

    fn handle(&mut self, delivered: Delivered, ctx: &mut Context<Self>) {
        if let Some((origin, data)) = delivered.message() {
            self.request(&origin, &data, ctx);
        }
    }
}

impl Handler<crate::transport::outbox::Control> for NestSession {
    type Result = ();

    fn handle(&mut self, control: crate::transport::outbox::Control, ctx: &mut Context<Self>) {
        let crate::transport::outbox::Control::Close(close) = control;
        self.send("error", &close.reason, None);
        self.out.close_with(&close);
        ctx.stop();
    }
}
