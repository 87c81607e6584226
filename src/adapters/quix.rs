//! Quix WSI (seed 003) on `/wsi`: a Quix backend, unmodified, becomes a
//! client of the namespace that operators command like an agent.
//!
//! Every frame is `{"auth", "req", "rid", "msg"}`, every answer `{"rid",
//! "msg"}`. The backend first authenticates, with its account's username
//! and password (answered with a token and its validity) or later with
//! `"auth": TOKEN` and an empty `msg` (answered with the remaining
//! validity), or with `token_authentication` and `msg.token_id` (Quix's
//! own test client's spelling, answered the same); it then is the client
//! named after its account, and a second
//! socket of the same account takes the name over (the older is closed,
//! 4015, on whichever replica it is). An operator's request (`execute`,
//! `view_running`, `proc_signal`, `telemetry`) is sent to the backend in
//! its own envelope under a rid the adapter picks, so two operators'
//! rids never collide; the backend's answer goes back to the operator under
//! the operator's rid. The backend's own `get_vpn_conf` is answered by the
//! VPN actor. When the backend goes, every request it still owes an answer
//! is answered `gone`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::CloseCode as WsCloseCode;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::auth::{now_secs, Claims, LoginError};
use crate::namespace::Member;
use crate::protocol::agent::args::{GetVpnConf, VpnConf};
use crate::protocol::agent::{reply, success, Envelope, Failure, Reason, RequestName, Rid};
use crate::protocol::fleet::Facts;
use crate::protocol::{Close, CloseCode, HostKind};
use crate::session::{Ctx, Heard, Session, Translator};
use crate::transport::outbox::{Frame, FrameSink};
use crate::vpn::Fetch;

/// The requests a Quix backend serves (seed 003).
const SERVED: [RequestName; 4] = [
    RequestName::Execute,
    RequestName::ViewRunning,
    RequestName::ProcSignal,
    RequestName::Telemetry,
];

enum State {
    Waiting,
    Joining,
    Joined { member: Member, claims: Box<Claims> },
}

/// The Quix format's state of one connection.
pub struct Quix {
    peer: Option<std::net::IpAddr>,
    state: State,
    /// The rids this adapter gave operators' requests: → who asked, under
    /// which rid of theirs.
    pending: HashMap<u64, (Uuid, Rid, SpawnHandle)>,
    next_rid: u64,
}

impl Translator for Quix {
    const PATHS: &'static [&'static str] = &["/wsi"];
    const CLIENTS: &'static str = "Quix backends";

    fn new(peer: &str) -> (Self, tracing::Span) {
        let quix = Quix {
            peer: peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()),
            state: State::Waiting,
            pending: HashMap::new(),
            next_rid: 1,
        };
        (
            quix,
            tracing::info_span!("wsi", %peer, name = tracing::field::Empty),
        )
    }

    fn identified(&self) -> bool {
        matches!(self.state, State::Joined { .. })
    }

    fn registered(&self) -> Option<Uuid> {
        match &self.state {
            State::Joined { member, .. } => Some(member.uuid()),
            State::Waiting | State::Joining => None,
        }
    }

    fn identify_late(session: &mut Session<Self>, timeout: Duration, ctx: &mut Ctx<Self>) {
        session.answer(
            &Value::Null,
            json!({"success": false, "reason": "not_authenticated",
            "desc": format!("no authenticate within {} ms", timeout.as_millis())}),
        );
        session.close_after(ctx, WsCloseCode::Policy, "no authenticate in time".into());
    }

    fn heard(session: &mut Session<Self>, heard: Heard, ctx: &mut Ctx<Self>) {
        match super::text(heard) {
            Ok(text) => session.on_text(&text, ctx),
            Err(why) => session.close_after(ctx, WsCloseCode::Policy, why.into()),
        }
    }

    fn silent(session: &mut Session<Self>, _limit: Duration, ctx: &mut Ctx<Self>) {
        session.close(ctx, Close::new(CloseCode::HeartbeatFailed, "no pong"));
    }

    fn sink(session: &Session<Self>, ctx: &mut Ctx<Self>) -> Arc<dyn FrameSink> {
        super::to_actor(session, ctx)
    }

    /// The requests still waiting for the backend are answered `gone`.
    fn stopped(session: &mut Session<Self>) {
        let Quix { state, pending, .. } = &mut session.format;
        let State::Joined { member, .. } = state else {
            return;
        };
        let owed = pending.drain().map(|(_, (origin, rid, _))| (origin, rid));
        super::gone(member, "Quix backend", owed);
    }

    fn delivered(session: &mut Session<Self>, frame: Frame, ctx: &mut Ctx<Self>) {
        if let Some((origin, data)) = super::message(&frame) {
            session.request(&origin, &data, ctx);
        }
    }
}

impl Session<Quix> {
    fn send(&self, frame: &Value) {
        self.push(&frame.to_string());
    }

    fn answer(&self, rid: &Value, msg: Value) {
        self.send(&json!({"rid": rid, "msg": msg}));
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx<Quix>) {
        let frame: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(frame)) => frame,
            _ => {
                let failure = Failure::new(
                    Reason::Malformed,
                    "a frame is a JSON object {\"auth\", \"req\", \"rid\", \"msg\"}",
                );
                return self.answer(&Value::Null, failure.to_msg());
            }
        };
        let rid = frame.get("rid").cloned().unwrap_or(Value::Null);
        match frame.get("req").and_then(Value::as_str) {
            Some("authenticate") => {
                let token = frame.get("auth").and_then(Value::as_str);
                self.authenticate(token, frame.get("msg"), rid, ctx)
            }
            // Quix's test client: `{"req": "token_authentication", "msg":
            // {"token_id": T}}`, as `authenticate` with a token.
            Some("token_authentication") => {
                let msg = frame.get("msg");
                let token = msg.and_then(|m| m.get("token_id")).and_then(Value::as_str);
                let token = token.or_else(|| frame.get("auth").and_then(Value::as_str));
                self.authenticate(Some(token.unwrap_or_default()), None, rid, ctx)
            }
            Some("get_vpn_conf") => self.vpn_conf(&frame, rid, ctx),
            Some(other) => {
                let desc = format!(
                    "the gateway answers authenticate, token_authentication and get_vpn_conf, \
                     not {other:?}"
                );
                self.answer(&rid, Failure::new(Reason::UnknownRequest, desc).to_msg());
            }
            // No `req`: the backend's answer to an operator's request.
            None => self.answered(&frame, rid, ctx),
        }
    }

    /// `authenticate` with `token`, or else with the account in `msg`.
    fn authenticate(
        &mut self,
        token: Option<&str>,
        msg: Option<&Value>,
        rid: Value,
        ctx: &mut Ctx<Quix>,
    ) {
        if !matches!(self.format.state, State::Waiting) {
            // seed 003: authenticating again on a live socket reports the
            // token's remaining validity.
            if let State::Joined { claims, .. } = &self.format.state {
                let left = claims.exp.saturating_sub(now_secs());
                return self.answer(&rid, json!({"success": true, "validity": left}));
            }
            return;
        }
        let token = token.map(str::to_owned);
        let field = |name: &str| {
            msg.and_then(|m| m.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (username, password) = (field("username"), field("password"));
        self.format.state = State::Joining;
        let auth = self.auth.clone();
        let joining = self.joining(ctx);
        let inventory = self.inventory.clone();
        let source = self.format.peer;
        async move {
            let (claims, issued) = match (token, username, password) {
                (Some(token), _, _) => (
                    auth.verify(&token)
                        .map_err(|_| "token_invalid".to_owned())?,
                    None,
                ),
                (None, Some(user), Some(pass)) => {
                    // Refusals read user_invalid, password_invalid or
                    // locked_out: seed 003's reasons.
                    let issued = auth
                        .login(&user, &pass, source)
                        .await
                        .map_err(|e: LoginError| e.to_string())?;
                    (issued.claims.clone(), Some(issued.token))
                }
                _ => return Err("user_invalid".to_owned()),
            };
            // A Quix backend tells nothing of its host.
            let member = super::join(
                joining,
                &claims,
                HostKind::Quix,
                true,
                (&inventory, Facts::default()),
            )
            .await
            .map_err(|close| close.reason)?;
            Ok((member, claims, issued))
        }
        .into_actor(self)
        .map(move |joined, act, ctx| match joined {
            Ok((member, claims, issued)) => {
                act.span.record("name", member.info().name.as_str());
                tracing::info!(name = %member.info().name, "Quix backend joined");
                let validity = claims.exp.saturating_sub(now_secs());
                let msg = match issued {
                    Some(token) => json!({"success": true, "token": token, "validity": validity}),
                    None => json!({"success": true, "validity": validity}),
                };
                act.format.state = State::Joined {
                    member,
                    claims: Box::new(claims.clone()),
                };
                // Its answers (a process list) may outgrow max_frame_size.
                act.frame_limit.set(act.settings.adapter_max_frame_size);
                act.answer(&rid, msg);
                act.watch_token(claims, ctx);
            }
            Err(reason) => {
                tracing::info!(%reason, "Quix backend refused");
                act.answer(&rid, json!({"success": false, "reason": reason}));
                act.format.state = State::Waiting;
            }
        })
        .wait(ctx);
    }

    fn vpn_conf(&mut self, frame: &Map<String, Value>, rid: Value, ctx: &mut Ctx<Quix>) {
        let State::Joined { claims, .. } = &self.format.state else {
            let failure = Failure::new(Reason::NotAuthenticated, "authenticate first");
            return self.answer(&rid, failure.to_msg());
        };
        let msg = frame.get("msg").cloned().unwrap_or_default();
        // seed 003's fields, each a string when present; another shape is
        // as good as absent, as the backend expects.
        let text = |k: &str| msg.get(k).and_then(Value::as_str).map(str::to_owned);
        let args = GetVpnConf {
            name: None,
            conf_type: text("conf_type"),
            tun_mode: text("tun_mode"),
            public_key: text("public_key"),
        };
        let fetch = Fetch::new(claims.name.clone(), Some(Claims::clone(claims)), &args);
        let vpn = self.vpn.clone();
        let conf_type = fetch.conf_type.clone();
        async move { vpn.fetch(fetch).await }
            .into_actor(self)
            .map(move |outcome, act, _| {
                let msg = match outcome {
                    Ok(conf_data) => success(json!(VpnConf {
                        conf_type,
                        conf_data
                    })),
                    Err(e) => Failure::from(e).to_msg(),
                };
                act.answer(&rid, msg);
            })
            .spawn(ctx);
    }

    /// The backend's answer under one of the adapter's rids.
    fn answered(&mut self, frame: &Map<String, Value>, rid: Value, ctx: &mut Ctx<Quix>) {
        let Some((origin, their_rid, timer)) =
            rid.as_u64().and_then(|r| self.format.pending.remove(&r))
        else {
            tracing::debug!(%rid, "an answer to no pending request");
            return;
        };
        ctx.cancel_future(timer);
        let msg = frame.get("msg").cloned().unwrap_or(Value::Null);
        self.tell_operator(origin, &json!({"rid": their_rid, "msg": msg}), ctx);
    }

    fn tell_operator(&mut self, origin: Uuid, data: &Value, ctx: &mut Ctx<Quix>) {
        let State::Joined { member, .. } = &self.format.state else {
            return;
        };
        if let Some(done) = super::send_to(member, origin, data) {
            ctx.spawn(done.into_actor(self));
        }
    }

    /// An operator's request, by MESSAGE.
    fn request(&mut self, origin: &crate::protocol::Origin, data: &Value, ctx: &mut Ctx<Quix>) {
        if Envelope::is_answer(data) {
            return;
        }
        let sender = origin.client.uuid;
        let request = match Envelope::decode(data) {
            Ok(request) => request,
            Err((rid, failure)) => {
                return self.tell_operator(sender, &reply(rid.as_ref(), Err(failure)), ctx)
            }
        };
        let served = if SERVED.iter().any(|name| name.as_str() == request.req) {
            super::authorized(origin, &request).map(drop)
        } else {
            let names: Vec<&str> = SERVED.iter().map(|name| name.as_str()).collect();
            Err(Failure::new(
                Reason::UnknownRequest,
                format!(
                    "a Quix backend serves {}, not {:?}",
                    names.join(", "),
                    request.req
                ),
            ))
        };
        let limit = self.settings.max_outgoing_queue;
        let served = served.and_then(|()| {
            (self.format.pending.len() < limit)
                .then_some(())
                .ok_or_else(|| super::too_many(limit))
        });
        if let Err(failure) = served {
            return self.tell_operator(sender, &reply(Some(&request.rid), Err(failure)), ctx);
        }
        let ours = self.format.next_rid;
        self.format.next_rid += 1;
        let patience = Duration::from_secs(self.settings.adapter_command_timeout_secs);
        let timer = ctx.run_later(patience, move |act, ctx| {
            if let Some((origin, rid, _)) = act.format.pending.remove(&ours) {
                let why = format!(
                    "the Quix backend did not answer within {} s",
                    patience.as_secs()
                );
                act.tell_operator(
                    origin,
                    &reply(Some(&rid), Err(Failure::new(Reason::Timeout, why))),
                    ctx,
                );
            }
        });
        self.format
            .pending
            .insert(ours, (sender, request.rid.clone(), timer));
        self.send(&json!({"req": request.req, "rid": ours, "msg": Value::Object(request.msg)}));
    }
}
