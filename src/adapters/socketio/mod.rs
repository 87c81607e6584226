//! Socket.IO v5 over Engine.IO v4 on `/socket.io/`, speaking seed 002's
//! Altoponix events: the users and monitors written for python-socketio's
//! server connect to the gateway unmodified, and become clients of the
//! namespace.
//!
//! Both of Engine.IO's transports are served: a WebSocket
//! (`?EIO=4&transport=websocket`), and long-polling
//! (`?EIO=4&transport=polling`, socket.io.js's default) with its upgrade to
//! a WebSocket ([`engine`]); either is the same session. The session
//! sends the open packet, pings every `heartbeat_interval_ms`, answers
//! CONNECT on the default namespace at once, and reads EVENTs:
//!
//! * a user's `query {monitor_id}` makes it a client named `sio_` and a
//!   random suffix (tag `altoponix-user`) that commands that monitor;
//!   `command send {command}` is a MESSAGE `{"command"}` to the monitor's
//!   name, answered `command ok` once routed (or `command failed` when no
//!   monitor has the name, on any replica);
//! * a monitor's `con {monitor_id}` makes it the client named `monitor_id`
//!   (tag `altoponix-monitor`, a name nobody else holds); a MESSAGE whose
//!   `data.command` is a string, from a user or any native client, is sent
//!   to it as `command do {command}`, and its `command done` / `command
//!   error {reason}` answer the oldest command in flight, to its sender
//!   only, as a MESSAGE `{"event": "command finish"}` / `{"event": "command
//!   failed", "reason"}` (which a user session emits as that event).
//!
//! Who may command a monitor: a client with a token needs the operator
//! role; an anonymous one is allowed only while the gateway requires no
//! token. Any packet that makes no sense is a CONNECT_ERROR (before
//! CONNECT) or a DISCONNECT, then a close; nothing a client sends panics.

pub mod engine;
pub mod packet;

use std::collections::VecDeque;
use std::sync::Arc;

use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::CloseCode as WsCloseCode;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use uuid::Uuid;

use self::packet::{Engine, Kind, Packet};
use crate::auth::{Claims, Role};
use crate::namespace::{Member, Outcome};
use crate::protocol::fleet::Facts;
use crate::protocol::{
    ClientInfo, Close, CloseCode, HostKind, Origin, PayloadOut, Sequenced, Target, GATEWAY_NAME,
};
use crate::session::{Ctx, Heard, Session, Translator};
use crate::transport::outbox::{Frame, FrameSink};

/// Commands a monitor may have in flight; more are refused.
pub const MAX_IN_FLIGHT: usize = 64;

pub const USER_TAG: &str = "altoponix-user";
pub const MONITOR_TAG: &str = HostKind::Monitor.tag();

/// Why a WebSocket upgrade on `/socket.io/` is refused, from its query
/// string; `None` when it is Engine.IO v4 over WebSocket.
pub fn refused_query(query: Option<&str>) -> Option<&'static str> {
    let query = engine::Query::parse(query);
    if query.eio != Some("4") {
        return Some(OLD_ENGINE);
    }
    if query.transport != Some("websocket") {
        return Some("a WebSocket upgrade on /socket.io/ takes transport=websocket");
    }
    None
}

/// Why a request of another Engine.IO version is refused.
pub const OLD_ENGINE: &str = "only Engine.IO v4 is supported (EIO=4: Socket.IO v5 clients)";

/// What the client is, once it said.
enum Part {
    /// Connected to the namespace `/`, neither `query` nor `con` yet.
    Undecided,
    /// Its `query` or `con` is being answered.
    Joining,
    User {
        member: Member,
        monitor: String,
        /// Numbers its MESSAGEs, so their answers are told from broadcasts.
        next_seq: u64,
    },
    Monitor {
        member: Member,
        /// The commands in flight, oldest first (the monitor answers them
        /// in order).
        in_flight: VecDeque<InFlight>,
        /// Numbers the commands, for their timers.
        next_id: u64,
    },
}

/// A command a monitor was sent and has not answered.
struct InFlight {
    id: u64,
    /// Who sent it.
    sender: Uuid,
    /// Its timer, until the sender was told it timed out (the monitor's
    /// late answer is then dropped when it comes).
    timer: Option<SpawnHandle>,
}

/// The Socket.IO format's state of one connection.
pub struct SocketIo {
    /// Engine.IO's session id.
    sid: String,
    /// Whether the client polls (and may upgrade to a WebSocket).
    polling: bool,
    /// CONNECT was answered: the token's claims, if it had one.
    connected: Option<Option<Claims>>,
    role: Part,
}

impl Translator for SocketIo {
    const PATHS: &'static [&'static str] = &["/socket.io/", "/socket.io"];
    const CLIENTS: &'static str = "Socket.IO clients";

    fn new(peer: &str) -> (Self, tracing::Span) {
        let sio = SocketIo {
            sid: Uuid::new_v4().simple().to_string(),
            polling: false,
            connected: None,
            role: Part::Undecided,
        };
        (
            sio,
            tracing::info_span!("socketio", %peer, name = tracing::field::Empty),
        )
    }

    fn refused(query: Option<&str>) -> Option<&'static str> {
        refused_query(query)
    }

    /// The Engine.IO open packet.
    fn started(session: &mut Session<Self>, _ctx: &mut Ctx<Self>) {
        let s = &session.settings;
        let interval = s.heartbeat_interval_ms;
        let upgrades: &[&str] = if session.format.polling {
            &["websocket"]
        } else {
            &[]
        };
        let open = packet::open(
            &session.format.sid,
            upgrades,
            interval,
            s.heartbeat_timeout_ms - interval,
            s.max_frame_size,
        );
        session.send(&open);
    }

    fn identified(&self) -> bool {
        self.connected.is_some() || !matches!(self.role, Part::Undecided)
    }

    fn registered(&self) -> Option<Uuid> {
        match &self.role {
            Part::User { member, .. } | Part::Monitor { member, .. } => Some(member.uuid()),
            Part::Undecided | Part::Joining => None,
        }
    }

    fn identify_late(session: &mut Session<Self>, timeout: Duration, ctx: &mut Ctx<Self>) {
        let why = format!("no CONNECT within {} ms", timeout.as_millis());
        session.violation(&why, ctx);
    }

    fn heard(session: &mut Session<Self>, heard: Heard, ctx: &mut Ctx<Self>) {
        match super::text(heard) {
            Ok(text) => session.on_text(&text, ctx),
            Err(why) => session.violation(why, ctx),
        }
    }

    /// Engine.IO's own ping, a text packet.
    fn ping(session: &mut Session<Self>) {
        session.out.ping_text(packet::PING);
    }

    fn silent(session: &mut Session<Self>, _limit: Duration, ctx: &mut Ctx<Self>) {
        session.hang_up(WsCloseCode::Away, "no pong", ctx);
    }

    fn closing(session: &mut Session<Self>, _close: &Close) {
        session.send(packet::DISCONNECT);
    }

    /// A monitor that goes away answers its commands in flight: each
    /// sender is told it is gone.
    fn stopped(session: &mut Session<Self>) {
        let Part::Monitor {
            member, in_flight, ..
        } = &mut session.format.role
        else {
            return;
        };
        let why = format!("gone: the monitor {} disconnected", member.info().name);
        let data = raw(&json!({"event": "command failed", "reason": why}));
        for command in in_flight.drain(..).filter(|c| c.timer.is_some()) {
            let target = Target::Uuid {
                uuid: command.sender.to_string(),
            };
            if let Outcome::Later { done, .. } = member.message(None, &target, &data) {
                actix::spawn(done);
            }
        }
    }

    fn sink(session: &Session<Self>, ctx: &mut Ctx<Self>) -> Arc<dyn FrameSink> {
        super::to_actor(session, ctx)
    }

    fn delivered(session: &mut Session<Self>, frame: Frame, ctx: &mut Ctx<Self>) {
        let Ok(sequenced) = serde_json::from_slice::<Sequenced>(frame.payload()) else {
            return;
        };
        match (&session.format.role, sequenced) {
            (Part::User { .. }, sequenced) => session.user_hears(sequenced),
            (
                Part::Monitor { .. },
                Sequenced {
                    payload: PayloadOut::Message { origin, data, .. },
                    ..
                },
            ) => session.monitor_hears(origin, &data, ctx),
            _ => {}
        }
    }
}

impl SocketIo {
    /// The client polls, as session `sid` (see [`engine`]).
    fn polled(&mut self, sid: String) {
        self.sid = sid;
        self.polling = true;
    }
}

impl Session<SocketIo> {
    fn send(&self, text: &str) {
        self.push(text);
    }

    fn emit(&self, name: &str, data: Option<Value>) {
        self.send(&packet::event(name, data));
    }

    /// Ends the session: the Socket.IO goodbye (CONNECT_ERROR before
    /// CONNECT, DISCONNECT after), then the WebSocket close.
    fn hang_up(&mut self, code: WsCloseCode, why: &str, ctx: &mut Ctx<SocketIo>) {
        tracing::info!(reason = why, "Socket.IO session closed");
        if self.format.connected.is_some() {
            self.send(packet::DISCONNECT);
        } else {
            self.send(&packet::connect_error("/", why));
        }
        self.close_after(ctx, code, why.to_owned());
    }

    fn violation(&mut self, why: &str, ctx: &mut Ctx<SocketIo>) {
        self.hang_up(WsCloseCode::Policy, why, ctx);
    }

    /// An event of the seed's that ends in failure: emitted with its
    /// reason, then the connection closes.
    fn fail(&mut self, event: &str, why: &str, ctx: &mut Ctx<SocketIo>) {
        self.emit(event, Some(json!({ "reason": why })));
        self.hang_up(WsCloseCode::Normal, why, ctx);
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx<SocketIo>) {
        match packet::engine(text) {
            Ok(Engine::Message(message)) => match packet::socket(message) {
                Ok(packet) => self.on_packet(packet, ctx),
                Err(why) => self.violation(&why, ctx),
            },
            Ok(Engine::Pong | Engine::Noop | Engine::Upgrade) => {}
            Ok(Engine::Ping(data)) => self.send(&packet::pong(data)),
            Ok(Engine::Close) => self.hang_up(WsCloseCode::Normal, "the client closed", ctx),
            Err(why) => self.violation(&why, ctx),
        }
    }

    fn on_packet(&mut self, packet: Packet, ctx: &mut Ctx<SocketIo>) {
        if packet.nsp != "/" {
            // Refused without ending the session on `/`.
            self.send(&packet::connect_error(
                &packet.nsp,
                "only the default namespace / is served",
            ));
            return;
        }
        match (packet.kind, self.format.connected.is_some()) {
            (Kind::Connect, false) => self.connect(packet.data.as_ref(), ctx),
            (Kind::Connect, true) => self.violation("CONNECT twice", ctx),
            (Kind::Disconnect, _) => {
                self.hang_up(WsCloseCode::Normal, "the client disconnected", ctx)
            }
            (_, false) => self.violation("CONNECT to the namespace / first", ctx),
            (Kind::Event, true) => {
                if let Some(id) = packet.id {
                    self.send(&packet::ack(id));
                }
                let (name, data) = packet.event().expect("checked by packet::socket");
                let (name, data) = (name.to_owned(), data.clone());
                self.on_event(&name, &data, ctx);
            }
            // The server asks for no acks: nothing to match one with.
            (Kind::Ack, true) => {}
            (Kind::ConnectError, true) => self.violation("CONNECT_ERROR is the server's", ctx),
        }
    }

    fn connect(&mut self, data: Option<&Value>, ctx: &mut Ctx<SocketIo>) {
        let token = data.and_then(|d| d.get("token"));
        let claims = match token {
            None | Some(Value::Null) if self.auth.required() => {
                return self.hang_up(
                    WsCloseCode::Policy,
                    "this gateway requires a token: connect with auth={\"token\": TOKEN}",
                    ctx,
                )
            }
            None | Some(Value::Null) => None,
            Some(Value::String(token)) => match self.auth.verify(token) {
                Ok(claims) => Some(claims),
                Err(why) => {
                    let why = format!("the token was refused: {}", why.reason());
                    return self.hang_up(WsCloseCode::Policy, &why, ctx);
                }
            },
            Some(_) => return self.violation("auth.token is a string", ctx),
        };
        self.format.connected = Some(claims.clone());
        self.send(&packet::connected(
            "/",
            &Uuid::new_v4().simple().to_string(),
        ));
        if let Some(claims) = claims {
            self.watch_token(claims, ctx);
        }
    }

    fn claims(&self) -> Option<&Claims> {
        self.format.connected.as_ref().and_then(Option::as_ref)
    }

    fn on_event(&mut self, name: &str, data: &Value, ctx: &mut Ctx<SocketIo>) {
        match (&self.format.role, name) {
            (Part::Undecided, "query") => self.query(data, ctx),
            (Part::Undecided, "con") => self.con(data, ctx),
            (Part::Undecided, _) => {
                self.violation(&format!("emit query or con first, not {name:?}"), ctx)
            }
            (Part::Joining, _) => {}
            (Part::User { .. }, "command send") => self.command_send(data, ctx),
            (Part::Monitor { .. }, "command done") => {
                self.answer(json!({"event": "command finish"}), ctx)
            }
            (Part::Monitor { .. }, "command error") => {
                let reason = data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("the monitor reported an error");
                self.answer(json!({"event": "command failed", "reason": reason}), ctx)
            }
            (Part::User { .. }, _) => {
                self.violation(&format!("a user emits command send, not {name:?}"), ctx)
            }
            (Part::Monitor { .. }, _) => self.violation(
                &format!("a monitor emits command done or command error, not {name:?}"),
                ctx,
            ),
        }
    }

    fn monitor_id<'a>(&self, data: &'a Value) -> Result<&'a str, String> {
        let Some(id) = data.get("monitor_id").and_then(Value::as_str) else {
            return Err("monitor_id (a string) is required".to_owned());
        };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "monitor_id {id:?} must be letters, digits and underscores"
            ));
        }
        if id.len() > self.settings.max_name_len {
            return Err(format!(
                "monitor_id is longer than {} bytes",
                self.settings.max_name_len
            ));
        }
        if id == GATEWAY_NAME {
            return Err(format!("{id:?} is the gateway's own name"));
        }
        Ok(id)
    }

    /// A user: it may command `monitor_id` (whether that monitor is
    /// connected is found out per command: it may come and go).
    fn query(&mut self, data: &Value, ctx: &mut Ctx<SocketIo>) {
        let monitor = match self.monitor_id(data) {
            Ok(id) => id.to_owned(),
            Err(why) => return self.fail("query failed", &why, ctx),
        };
        if let Err(why) = may_command(
            self.auth.required(),
            self.claims().map(|c| c.role.implied()),
        ) {
            return self.fail("query failed", &why, ctx);
        }
        let name = format!("sio_{}", &Uuid::new_v4().simple().to_string()[..10]);
        self.join(name, USER_TAG, "query", ctx, move |member| Part::User {
            member,
            monitor,
            next_seq: 0,
        });
    }

    /// A monitor: it becomes the client named `monitor_id`.
    fn con(&mut self, data: &Value, ctx: &mut Ctx<SocketIo>) {
        let id = match self.monitor_id(data) {
            Ok(id) => id.to_owned(),
            Err(why) => return self.fail("con failed", &why, ctx),
        };
        if let Some(claims) = self.claims() {
            if !claims.allows_name(&id) {
                let why = format!(
                    "the token allows {} as monitor_id, not {id:?}",
                    claims.allowed_names()
                );
                return self.fail("con failed", &why, ctx);
            }
        }
        self.join(id, MONITOR_TAG, "con", ctx, |member| Part::Monitor {
            member,
            in_flight: VecDeque::new(),
            next_id: 0,
        });
    }

    /// Joins the namespace as `name`, then emits `EVENT ok` (or `EVENT
    /// failed` and closes).
    fn join(
        &mut self,
        name: String,
        tag: &str,
        event: &'static str,
        ctx: &mut Ctx<SocketIo>,
        role: impl FnOnce(Member) -> Part + 'static,
    ) {
        self.format.role = Part::Joining;
        let claims = self.claims().cloned();
        let joining = self.joining(ctx);
        let info = ClientInfo {
            name,
            nickname: None,
            uuid: joining.uuid(),
            tags: vec![tag.to_owned()],
            user: claims.as_ref().map(|c| c.sub.clone()),
            roles: claims.as_ref().map_or_else(Vec::new, |c| {
                c.role.implied().iter().map(|r| r.to_string()).collect()
            }),
        };
        // A monitor is a host of the fleet: the inventory lists it (its
        // dialect tells nothing of its machine).
        let inventory = (tag == MONITOR_TAG).then(|| self.inventory.clone());
        async move {
            let name = info.name.clone();
            let member = joining
                .join(info, false, false, None)
                .await
                .map_err(|close| match close.code {
                    CloseCode::DuplicateAuth => "already connected".to_owned(),
                    _ => close.reason,
                })?;
            if let Some(inventory) = inventory {
                inventory.file(&name, HostKind::Monitor, Facts::default()).await;
            }
            Ok::<_, String>(member)
        }
        .into_actor(self)
        .map(move |joined, act, ctx| match joined {
            Ok(member) => {
                act.span.record("name", member.info().name.as_str());
                tracing::info!(name = %member.info().name, tag = %member.info().tags[0], "Socket.IO client joined");
                act.format.role = role(member);
                act.emit(&format!("{event} ok"), None);
            }
            Err(why) => act.fail(&format!("{event} failed"), &why, ctx),
        })
        .wait(ctx);
    }

    fn command_send(&mut self, data: &Value, ctx: &mut Ctx<SocketIo>) {
        let command = match data.get("command") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            _ => {
                return self.emit(
                    "command failed",
                    Some(json!({"reason": "command (a non-empty string) is required"})),
                )
            }
        };
        let required = self.auth.required();
        let roles = self.claims().map(|c| c.role.implied());
        if let Err(why) = may_command(required, roles) {
            return self.emit("command failed", Some(json!({ "reason": why })));
        }
        let Part::User {
            member,
            monitor,
            next_seq,
        } = &mut self.format.role
        else {
            return;
        };
        let seq = *next_seq;
        *next_seq += 1;
        let raw = raw(&json!({ "command": command }));
        let outcome = member.message(
            Some(seq),
            &Target::Name {
                name: monitor.clone(),
            },
            &raw,
        );
        self.wait_for(outcome, ctx);
    }

    /// Holds the session's next frames until a MESSAGE is routed, so its
    /// messages keep their order.
    fn wait_for(&mut self, outcome: Outcome, ctx: &mut Ctx<SocketIo>) {
        if let Outcome::Later { done, .. } = outcome {
            ctx.wait(actix::fut::wrap_future(done));
        }
    }

    /// The monitor's answer to its oldest command in flight, to its sender
    /// (unless that command timed out already).
    fn answer(&mut self, data: Value, ctx: &mut Ctx<SocketIo>) {
        let Part::Monitor { in_flight, .. } = &mut self.format.role else {
            return;
        };
        let Some(command) = in_flight.pop_front() else {
            tracing::info!("a monitor answered no command: dropped");
            return;
        };
        let Some(timer) = command.timer else {
            tracing::info!("a monitor answered a command that had timed out: dropped");
            return;
        };
        ctx.cancel_future(timer);
        self.tell(command.sender, &data, ctx);
    }

    /// A MESSAGE from the monitor to `sender` (a command's answer).
    fn tell(&mut self, sender: Uuid, data: &Value, ctx: &mut Ctx<SocketIo>) {
        let Part::Monitor { member, .. } = &self.format.role else {
            return;
        };
        let target = Target::Uuid {
            uuid: sender.to_string(),
        };
        let outcome = member.message(None, &target, &raw(data));
        self.wait_for(outcome, ctx);
    }

    /// A command `adapter_command_timeout_secs` old: its sender is told.
    fn timed_out(&mut self, id: u64, ctx: &mut Ctx<SocketIo>) {
        let Part::Monitor { in_flight, .. } = &mut self.format.role else {
            return;
        };
        let Some(command) = in_flight.iter_mut().find(|c| c.id == id) else {
            return;
        };
        command.timer = None;
        let sender = command.sender;
        let why = format!(
            "timeout: the monitor did not answer within {} s",
            self.settings.adapter_command_timeout_secs
        );
        let data = json!({"event": "command failed", "reason": why});
        self.tell(sender, &data, ctx);
    }

    /// What the namespace sent a user: the answers to its MESSAGEs, and
    /// its monitor's reports.
    fn user_hears(&mut self, sequenced: Sequenced) {
        let Part::User { monitor, .. } = &self.format.role else {
            return;
        };
        match (sequenced.seq, sequenced.payload) {
            (Some(_), PayloadOut::Ok) => self.emit("command ok", None),
            (Some(_), PayloadOut::InvalidName { name }) => {
                let why = format!("monitor {name:?} is not connected");
                self.emit("command failed", Some(json!({ "reason": why })));
            }
            (Some(_), other) => {
                let why = format!("the gateway refused the command: {other:?}");
                self.emit("command failed", Some(json!({ "reason": why })));
            }
            (None, PayloadOut::Message { origin, data, .. }) if origin.client.name == *monitor => {
                match data.get("event").and_then(Value::as_str) {
                    Some("command finish") => self.emit("command finish", None),
                    Some("command failed") => {
                        let reason = data.get("reason").cloned().unwrap_or(Value::Null);
                        self.emit("command failed", Some(json!({ "reason": reason })));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// A MESSAGE to a monitor: a command (`data.command`, a string) from a
    /// user or a native client.
    fn monitor_hears(&mut self, origin: Origin, data: &Value, ctx: &mut Ctx<SocketIo>) {
        let refusal = match data.get("command") {
            Some(Value::String(command)) if !command.is_empty() => {
                let anonymous = origin.client.user.is_none();
                let roles: Vec<Role> = origin
                    .client
                    .roles
                    .iter()
                    .filter_map(|r| r.parse().ok())
                    .collect();
                let in_flight = match &self.format.role {
                    Part::Monitor { in_flight, .. } => in_flight.len(),
                    _ => return,
                };
                match may_command(self.auth.required(), (!anonymous).then_some(&roles[..])) {
                    Err(why) => why,
                    Ok(()) if in_flight >= MAX_IN_FLIGHT => {
                        format!("the monitor has {MAX_IN_FLIGHT} commands in flight")
                    }
                    Ok(()) => {
                        let patience =
                            Duration::from_secs(self.settings.adapter_command_timeout_secs);
                        if let Part::Monitor {
                            in_flight, next_id, ..
                        } = &mut self.format.role
                        {
                            let id = *next_id;
                            *next_id += 1;
                            let timer =
                                ctx.run_later(patience, move |act, ctx| act.timed_out(id, ctx));
                            in_flight.push_back(InFlight {
                                id,
                                sender: origin.client.uuid,
                                timer: Some(timer),
                            });
                        }
                        self.emit("command do", Some(json!({ "command": command })));
                        return;
                    }
                }
            }
            _ => "a monitor takes {\"command\": a non-empty string}".to_owned(),
        };
        let Part::Monitor { member, .. } = &self.format.role else {
            return;
        };
        let target = Target::Uuid {
            uuid: origin.client.uuid.to_string(),
        };
        let data = json!({"event": "command failed", "reason": refusal});
        let outcome = member.message(None, &target, &raw(&data));
        self.wait_for(outcome, ctx);
    }
}

/// Whether a client may command a monitor: with a token (`roles`, the
/// roles it implies), the operator role; without, only while the gateway
/// requires no token.
fn may_command(required: bool, roles: Option<&[Role]>) -> Result<(), String> {
    match roles {
        None if required => Err("commanding a monitor needs a token".to_owned()),
        None => Ok(()),
        Some(roles) if roles.contains(&Role::Operator) => Ok(()),
        Some(_) => Err(format!(
            "commanding a monitor needs the {} role",
            Role::Operator
        )),
    }
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("a Value encodes as JSON")
}
