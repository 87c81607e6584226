//! The WebSocket session: one actor per socket.
//!
//! It owns everything that belongs to the connection itself: the IDENTIFY
//! handshake and its timeout, validation of the identity, the heartbeat, the
//! sequence counter, frame size limits and reassembly of fragmented
//! messages. Once identified, each request goes to the client's
//! [`Member`] handle on this actor's thread: MESSAGEs are routed and
//! fetches answered right here; a request whose answer comes later (a
//! subscription, a lookup) holds the client's next requests until it is
//! in, so replies leave in request order. Everything the client receives
//! arrives as a [`Frame`](crate::transport::outbox::Frame) through the
//! session's [`Outbox`] and leaves through its [`Outgoing`] queue (see
//! [`crate::transport::websocket`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::{CloseReason, Frame as WsFrame, Item, ProtocolError};
use actix_web::web::Bytes;
use bytestring::ByteString;
use uuid::Uuid;

use crate::auth::{user_settings, Auth, Claims, TokenRefused};
use crate::config::Settings;
use crate::metrics;
use crate::namespace::{Member, Namespace, Op, Outcome, Relayed};
use crate::protocol::{self, ClientInfo, Close, CloseCode, DecodeError, PayloadIn, PayloadOut};
use crate::transport::outbox::{Control, FrameSink, Outbox};
use crate::transport::websocket::{Outgoing, Writer};
use crate::vpn::Vpn;

use super::answers;

enum State {
    /// Connected, waiting for IDENTIFY.
    Anonymous,
    /// IDENTIFY accepted by the session, waiting for the registry.
    Identifying { uuid: Uuid },
    Identified {
        member: Member,
        /// The sequence number of the next counted payload.
        next_seq: u64,
        /// The verified token it identified with (boxed: most sessions of
        /// an open gateway have none).
        claims: Option<Box<Claims>>,
    },
}

/// What a request asks of the session once it is its turn.
enum Request {
    Op(Op),
    /// USER_SETTINGS_FETCH (`None`) or USER_SETTINGS_SET.
    Settings(Option<(String, String)>),
    /// A MESSAGE to the gateway itself ([`protocol::GATEWAY_NAME`]).
    Gateway(Box<serde_json::value::RawValue>),
    /// A reply the session decided on by itself (SELF_SET_SEQ's OK, a
    /// decode error), queued behind the replies to earlier requests.
    Reply(Box<PayloadOut>),
}

/// The client's requests that wait for an earlier one to be answered.
#[derive(Default)]
struct Held {
    /// What the request being answered waits for; `None` when nothing is
    /// pending and requests are answered as they come.
    waiting_for: Option<&'static str>,
    queue: VecDeque<(Option<u64>, Request)>,
}

/// The answers to MESSAGEs relayed at once while earlier ones are still
/// on their way to the cluster, in request order. A sender's MESSAGEs need
/// not wait for each other's hand-off (their frames leave in order on one
/// link), but no reply may overtake an earlier one.
#[derive(Default)]
struct Acks {
    /// Oldest first: each request's `seq` and, once known, its answer.
    slots: VecDeque<(Option<u64>, Option<PayloadOut>)>,
    /// How many slots have been answered and removed (the ticket of the
    /// front one).
    done: u64,
}

impl Acks {
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queues an answer (`None` while unknown); returns its ticket.
    fn push(&mut self, seq: Option<u64>, answer: Option<PayloadOut>) -> u64 {
        self.slots.push_back((seq, answer));
        self.done + self.slots.len() as u64 - 1
    }

    fn fill(&mut self, ticket: u64, answer: PayloadOut) {
        if let Some(slot) = ticket
            .checked_sub(self.done)
            .and_then(|i| self.slots.get_mut(i as usize))
        {
            slot.1 = Some(answer);
        }
    }

    /// The next answer that may be sent, if the oldest is known.
    fn pop_ready(&mut self) -> Option<(Option<u64>, PayloadOut)> {
        if !matches!(self.slots.front(), Some((_, Some(_)))) {
            return None;
        }
        let (seq, answer) = self.slots.pop_front()?;
        self.done += 1;
        Some((seq, answer?))
    }
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    bytes: Vec<u8>,
}

pub struct Session {
    settings: Arc<Settings>,
    namespace: Namespace,
    auth: Arc<Auth>,
    vpn: Vpn,
    span: tracing::Span,
    state: State,
    held: Held,
    acks: Acks,
    fragments: Option<Fragments>,
    out: Outgoing,
    /// Where the client's outbox puts its frames (see [`Outbox`]).
    sink: Arc<dyn FrameSink>,
    /// The close code sent or received, for metrics; none means the
    /// connection was lost.
    close_code: Option<u16>,
    /// Set by the [`FrameGuard`](crate::transport::frame_guard::FrameGuard) in front of
    /// this session's input when it refuses an oversized frame.
    oversized: Rc<Cell<bool>>,
}

impl Session {
    /// A session and the writer that carries what it sends to the socket.
    pub fn new(
        settings: Arc<Settings>,
        namespace: Namespace,
        auth: Arc<Auth>,
        vpn: Vpn,
        peer: String,
        oversized: Rc<Cell<bool>>,
    ) -> (Self, Writer) {
        let span = tracing::info_span!(
            "conn",
            %peer,
            uuid = tracing::field::Empty,
            name = tracing::field::Empty
        );
        let (out, sink, writer) =
            Outgoing::new(settings.max_outgoing_queue, settings.heartbeat_timeout());
        let session = Session {
            settings,
            namespace,
            auth,
            vpn,
            span,
            state: State::Anonymous,
            held: Held::default(),
            acks: Acks::default(),
            fragments: None,
            out,
            sink,
            close_code: None,
            oversized,
        };
        (session, writer)
    }

    fn close(&mut self, ctx: &mut Context<Self>, close: Close) {
        tracing::info!(code = close.code.code(), reason = %close.reason, "closing connection");
        self.close_code = Some(close.code.code());
        self.out.close_with(&close);
        ctx.stop();
    }

    /// Closes with 1002 for a WebSocket protocol violation.
    fn protocol_error(&mut self, e: impl std::fmt::Display, ctx: &mut Context<Self>) {
        tracing::debug!(error = %e, "websocket protocol error");
        self.close_code = Some(1002);
        self.out.close(Some(CloseReason {
            code: actix_http::ws::CloseCode::Protocol,
            description: Some(format!("websocket protocol error: {e}")),
        }));
        ctx.stop();
    }

    fn on_text(&mut self, text: ByteString, ctx: &mut Context<Self>) {
        let decoded = PayloadIn::decode(&text);
        metrics::get().payload_in(decoded.as_ref().ok().map(PayloadIn::kind), text.len());
        let State::Identified {
            ref member,
            ref mut next_seq,
            ..
        } = self.state
        else {
            if let State::Anonymous = self.state {
                self.on_first_text(decoded, ctx);
            }
            // While identifying, `ctx.wait` holds frames back.
            return;
        };
        let mut seq = *next_seq;
        *next_seq = seq.wrapping_add(1);
        let request = match decoded {
            Ok(PayloadIn::Message {
                target: protocol::Target::Name { ref name },
                data,
            }) if name == protocol::GATEWAY_NAME => Request::Gateway(data.to_owned()),
            // The common case, answered from the borrowed frame without
            // copying its data.
            Ok(PayloadIn::Message { target, data })
                if self.held.waiting_for.is_none() && self.held.queue.is_empty() =>
            {
                let relayed = member.relay(&target, data);
                return self.answer_relayed(Some(seq), relayed, ctx);
            }
            Ok(PayloadIn::SelfSetSeq { seq: n }) => {
                seq = n;
                *next_seq = n.wrapping_add(1);
                Request::Reply(Box::new(PayloadOut::Ok))
            }
            Ok(payload) => request_for(payload),
            Err(DecodeError::Malformed(desc)) => {
                Request::Reply(Box::new(PayloadOut::ErrorProtocol { desc }))
            }
            Err(DecodeError::Unsupported(kind)) => {
                tracing::debug!(%kind, "unsupported payload type");
                Request::Reply(Box::new(PayloadOut::ErrorUnsupported))
            }
        };
        self.submit(Some(seq), request, ctx);
    }

    /// Answers a relayed MESSAGE, after the answers still owed to earlier
    /// ones.
    fn answer_relayed(&mut self, seq: Option<u64>, relayed: Relayed, ctx: &mut Context<Self>) {
        let (answer, lookup) = match relayed {
            Relayed::Now(payload) if self.acks.is_empty() => return self.reply(seq, payload),
            Relayed::Now(payload) => {
                self.acks.push(seq, Some(payload));
                return;
            }
            Relayed::HandedOff(answer) => (answer, false),
            Relayed::LookingUp(answer) => {
                // Its frame is not sent yet: what comes next waits.
                self.held.waiting_for = Some("a lookup");
                (answer, true)
            }
        };
        let max = self.settings.max_outgoing_queue;
        if self.acks.slots.len() >= max {
            let reason =
                format!("too fast: more than {max} messages waiting to leave for the cluster");
            return self.evict(Close::new(CloseCode::Policy, reason), ctx);
        }
        let ticket = self.acks.push(seq, None);
        ctx.spawn(answer.into_actor(self).map(move |payload, act, ctx| {
            if lookup {
                act.held.waiting_for = None;
            }
            act.acks.fill(ticket, payload);
            while let Some((seq, payload)) = act.acks.pop_ready() {
                act.reply(seq, payload);
            }
            act.release(ctx);
        }));
    }

    fn reply(&self, seq: Option<u64>, payload: PayloadOut) {
        if let State::Identified { member, .. } = &self.state {
            member.reply(seq, payload);
        }
    }

    /// What the next request must wait for, if anything: an earlier
    /// request, or the answers still owed to relayed MESSAGEs (its reply
    /// must come after theirs).
    fn waiting_for(&self) -> Option<&'static str> {
        self.held
            .waiting_for
            .or_else(|| (!self.acks.is_empty()).then_some("messages leaving for the cluster"))
    }

    /// Answers a request now, or queues it behind the one being answered.
    fn submit(&mut self, seq: Option<u64>, request: Request, ctx: &mut Context<Self>) {
        if let Some(what) = self.waiting_for() {
            let max = self.settings.max_outgoing_queue;
            if self.held.queue.len() >= max {
                // Their answers could not be queued either: the same bound.
                let reason = format!("too fast: more than {max} requests waiting for {what}");
                return self.evict(Close::new(CloseCode::Policy, reason), ctx);
            }
            self.held.queue.push_back((seq, request));
            return;
        }
        self.execute(seq, request, ctx);
    }

    fn execute(&mut self, seq: Option<u64>, request: Request, ctx: &mut Context<Self>) {
        let State::Identified { member, claims, .. } = &self.state else {
            return;
        };
        let outcome = match request {
            Request::Gateway(data) => {
                // Accepted like any MESSAGE; the answer comes as a MESSAGE.
                member.reply(seq, PayloadOut::Ok);
                let answer = answers::answer(
                    self.vpn.clone(),
                    member.info().clone(),
                    claims.as_deref().cloned(),
                    data,
                    member.reply_to(None),
                );
                ctx.spawn(answer.into_actor(self));
                Outcome::Answered
            }
            Request::Reply(payload) => {
                member.reply(seq, *payload);
                Outcome::Answered
            }
            Request::Op(op) => member.request(seq, op),
            Request::Settings(change) => self.user_settings(seq, change, member),
        };
        self.wait_for(outcome, ctx);
    }

    /// Reads or writes the identified user's settings, in the store.
    fn user_settings(
        &self,
        seq: Option<u64>,
        change: Option<(String, String)>,
        member: &Member,
    ) -> Outcome {
        let Some(user) = member.info().user.clone() else {
            member.reply(
                seq,
                PayloadOut::Bad {
                    desc: Some("settings belong to a user: identify with a token".into()),
                },
            );
            return Outcome::Answered;
        };
        let store = self.auth.store().clone();
        let reply = member.reply_to(seq);
        let done = async move {
            let result = match change {
                None => user_settings::get(&store, &user)
                    .await
                    .map(|settings| PayloadOut::UserSettingsFetchResult { settings }),
                Some((name, value)) => user_settings::set(&store, &user, &name, &value)
                    .await
                    .map(|settings| PayloadOut::UserSettingsSetResult { settings }),
            };
            reply.send(result.unwrap_or_else(|e| PayloadOut::Bad {
                desc: Some(e.to_string()),
            }));
        };
        Outcome::Later {
            done: Box::pin(done),
            waiting_for: "the user's settings",
        }
    }

    /// Holds the next requests until a request answered later is done,
    /// then handles what was held.
    fn wait_for(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        if let Outcome::Later { done, waiting_for } = outcome {
            self.held.waiting_for = Some(waiting_for);
            ctx.spawn(done.into_actor(self).map(|(), act, ctx| {
                act.held.waiting_for = None;
                act.release(ctx);
            }));
        }
    }

    /// Handles, in order, the requests that waited, until one waits again.
    fn release(&mut self, ctx: &mut Context<Self>) {
        while self.waiting_for().is_none() {
            let Some((seq, request)) = self.held.queue.pop_front() else {
                return;
            };
            self.execute(seq, request, ctx);
        }
    }

    /// Removes the client at once (it broke a limit) and closes it.
    fn evict(&mut self, close: Close, ctx: &mut Context<Self>) {
        if let State::Identified { member, .. } = &self.state {
            self.namespace.leave(member.uuid());
        }
        self.close(ctx, close);
    }

    fn on_first_text(
        &mut self,
        decoded: Result<PayloadIn<'_>, DecodeError>,
        ctx: &mut Context<Self>,
    ) {
        let payload = match decoded {
            Ok(payload) => payload,
            Err(e) => {
                return self.close(
                    ctx,
                    Close::new(
                        CloseCode::FatalDecode,
                        format!("cannot decode IDENTIFY: {e}"),
                    ),
                );
            }
        };
        let PayloadIn::Identify {
            name,
            nickname,
            version,
            tags,
            secret,
            token,
            presence,
        } = payload
        else {
            let kind = payload.kind();
            return self.close(
                ctx,
                Close::new(
                    CloseCode::NoAuth,
                    format!("IDENTIFY must come first, got {kind}"),
                ),
            );
        };
        if let Err(close) = self.check_identity(
            &name,
            nickname.as_deref(),
            &version,
            &tags,
            secret.as_deref(),
        ) {
            return self.close(ctx, close);
        }
        let claims = match self.check_token(&name, token.as_deref()) {
            Ok(claims) => claims,
            Err(close) => return self.close(ctx, close),
        };
        let info = ClientInfo {
            name: name.into_owned(),
            nickname: nickname.map(|n| n.into_owned()),
            uuid: Uuid::new_v4(),
            tags: tags.into_iter().map(|t| t.into_owned()).collect(),
            user: claims.as_ref().map(|c| c.sub.clone()),
            roles: claims.as_ref().map_or_else(Vec::new, |c| {
                c.role.implied().iter().map(|r| r.to_string()).collect()
            }),
        };
        let uuid = info.uuid;
        self.span.record("uuid", tracing::field::display(uuid));
        self.span.record("name", info.name.as_str());
        let outbox = Outbox::new(
            uuid,
            self.sink.clone(),
            ctx.address().recipient(),
            self.namespace.overflow_recipient(),
        );
        self.state = State::Identifying { uuid };
        let namespace = self.namespace.clone();
        let auth = self.auth.clone();
        async move {
            let fs_key = auth.fs_key(uuid).await.map_err(|e| {
                Close::new(
                    CloseCode::TryAgainLater,
                    format!("cannot make a file server key now: {e}"),
                )
            })?;
            namespace
                .join(info, outbox, fs_key, presence.unwrap_or(true), true)
                .await
        }
        .into_actor(self)
        .map(move |result, act, ctx| match result {
            Ok(member) => {
                act.state = State::Identified {
                    member,
                    next_seq: 0,
                    claims: claims.clone().map(Box::new),
                };
                if let Some(claims) = claims {
                    act.watch_token(claims, ctx);
                }
            }
            Err(close) => {
                act.state = State::Anonymous;
                act.close(ctx, close);
            }
        })
        .wait(ctx);
    }

    /// The verified claims of IDENTIFY's token, if it has one; a close when
    /// it has a bad one, or none where one is required, or when it does not
    /// allow `name`.
    fn check_token(&self, name: &str, token: Option<&str>) -> Result<Option<Claims>, Close> {
        let Some(token) = token else {
            if self.auth.required() {
                return Err(Close::new(
                    CloseCode::AuthRequired,
                    "this gateway requires a token in IDENTIFY (POST /auth/token)",
                ));
            }
            return Ok(None);
        };
        let claims = self.auth.verify(token).map_err(refused)?;
        if !claims.allows_name(name) {
            return Err(Close::new(
                CloseCode::NameNotAllowed,
                format!("the token allows {}, not {name:?}", claims.allowed_names()),
            ));
        }
        Ok(Some(claims))
    }

    /// Closes the session when its token expires or is revoked.
    fn watch_token(&mut self, claims: Claims, ctx: &mut Context<Self>) {
        let left = claims.exp.saturating_sub(crate::auth::now_secs());
        ctx.run_later(std::time::Duration::from_secs(left), |act, ctx| {
            act.evict(refused(TokenRefused::Expired), ctx);
        });
        let changes = futures_util::stream::unfold(
            (self.auth.changes(), claims.clone()),
            |(mut rx, claims)| async move {
                use tokio::sync::broadcast::error::RecvError;
                match rx.recv().await {
                    Ok(()) | Err(RecvError::Lagged(_)) => {
                        Some((TokenCheck(claims.clone()), (rx, claims)))
                    }
                    Err(RecvError::Closed) => None,
                }
            },
        );
        ctx.add_stream(changes);
        // A revocation that came between the token's check and this watch
        // (IDENTIFY waits on the namespace in between) was announced before
        // anyone listened: check once more, now that changes are followed,
        // so that none falls between the two.
        if let Err(why) = self.auth.check(&claims) {
            self.evict(refused(why), ctx);
        }
    }

    /// Validates an IDENTIFY against the gateway's secret, version and limits.
    fn check_identity(
        &self,
        name: &str,
        nickname: Option<&str>,
        version: &str,
        tags: &[std::borrow::Cow<'_, str>],
        secret: Option<&str>,
    ) -> Result<(), Close> {
        let s = &self.settings;
        if !s.secret.is_empty()
            && !constant_time_eq(secret.unwrap_or("").as_bytes(), s.secret.as_bytes())
        {
            return Err(Close::new(
                CloseCode::BadSecret,
                "the secret does not match the gateway's",
            ));
        }
        protocol::version_compatible(version).map_err(|e| Close::new(CloseCode::BadVersion, e))?;
        let bad = |reason: String| Err(Close::new(CloseCode::BadAuth, reason));
        if name == protocol::GATEWAY_NAME {
            return bad(format!("the name {name:?} is the gateway's own"));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return bad(format!(
                "name {name:?} must be letters, digits and underscores"
            ));
        }
        if name.len() > s.max_name_len {
            return bad(format!("name is longer than {} bytes", s.max_name_len));
        }
        if nickname.is_some_and(|n| n.len() > s.max_nickname_len) {
            return bad(format!(
                "nickname is longer than {} bytes",
                s.max_nickname_len
            ));
        }
        if tags.len() > s.max_tags {
            return bad(format!("more than {} tags", s.max_tags));
        }
        if tags.iter().any(|t| t.len() > s.max_tag_len) {
            return bad(format!("a tag is longer than {} bytes", s.max_tag_len));
        }
        Ok(())
    }

    fn on_binary(&mut self, ctx: &mut Context<Self>) {
        match self.state {
            State::Anonymous => self.close(
                ctx,
                Close::new(
                    CloseCode::FatalDecode,
                    "binary frames are not supported: send IDENTIFY as text",
                ),
            ),
            State::Identifying { .. } => {}
            State::Identified { .. } => {
                let desc = "binary frames are not supported: payloads are JSON text frames";
                let reply =
                    Request::Reply(Box::new(PayloadOut::ErrorProtocol { desc: desc.into() }));
                self.submit(None, reply, ctx);
            }
        }
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut Context<Self>) {
        let (first, chunk, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(text) = first {
            self.fragments = Some(Fragments {
                text,
                bytes: Vec::new(),
            });
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return self.close(
                ctx,
                Close::new(
                    CloseCode::FatalDecode,
                    "continuation frame without a first fragment",
                ),
            );
        };
        if fragments.bytes.len() + chunk.len() > self.settings.max_frame_size {
            let max = self.settings.max_frame_size;
            return self.close(
                ctx,
                Close::new(CloseCode::TooBig, format!("message exceeds {max} bytes")),
            );
        }
        fragments.bytes.extend_from_slice(&chunk);
        if !last {
            return;
        }
        let Some(Fragments { text, bytes }) = self.fragments.take() else {
            return;
        };
        if !text {
            return self.on_binary(ctx);
        }
        self.on_utf8(Bytes::from(bytes), ctx);
    }

    /// A reassembled fragmented text message: it must be UTF-8 (4002,
    /// PROTOCOL.md 3; a single text frame is checked as it arrives).
    fn on_utf8(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        match ByteString::try_from(bytes) {
            Ok(text) => self.on_text(text, ctx),
            Err(_) => self.close(
                ctx,
                Close::new(CloseCode::FatalDecode, "text message is not valid UTF-8"),
            ),
        }
    }

    /// Every heartbeat interval: pings the client and closes it when it has
    /// not answered in time. A ping only counts from when it reaches the
    /// socket: while it waits behind frames the client is still reading (the
    /// queue keeps draining), the client is not late.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let limit = self.settings.heartbeat_timeout();
        // Before IDENTIFY the identify timeout is the one that applies.
        let identified = matches!(self.state, State::Identified { .. });
        if !identified || self.out.silent_for() <= limit {
            return self.out.ping();
        }
        if self.out.backlog_explains_silence() {
            return;
        }
        let _entered = self.span.clone().entered();
        self.close(
            ctx,
            Close::new(
                CloseCode::HeartbeatFailed,
                format!("no frame or pong for {} ms", limit.as_millis()),
            ),
        );
    }
}

/// Turns a payload from an identified client into an owned request.
/// (SELF_SET_SEQ is handled by the caller, which owns the counter.)
fn request_for(payload: PayloadIn<'_>) -> Request {
    Request::Op(match payload {
        PayloadIn::Identify { .. } => {
            return Request::Reply(Box::new(PayloadOut::ErrorProtocol {
                desc: "already identified".into(),
            }))
        }
        PayloadIn::SelfSetSeq { .. } => return Request::Reply(Box::new(PayloadOut::Ok)),
        PayloadIn::Message { target, data } => Op::Message {
            target,
            data: data.to_owned(),
        },
        PayloadIn::SelfSubscribe { service } => Op::SelfSubscribe(service.into_owned()),
        PayloadIn::SelfUnsubscribe { service } => Op::SelfUnsubscribe(service.into_owned()),
        PayloadIn::SelfFetch => Op::SelfFetch,
        PayloadIn::ServiceCreate { service, nickname } => Op::ServiceCreate {
            service: service.into_owned(),
            nickname: nickname.map(|n| n.into_owned()),
        },
        PayloadIn::ServiceDelete { service } => Op::ServiceDelete(service.into_owned()),
        PayloadIn::ServiceFetch { service } => Op::ServiceFetch(service.into_owned()),
        PayloadIn::ServiceFetchAll => Op::ServiceFetchAll,
        PayloadIn::ClientFetch { uuid } => Op::ClientFetch(uuid.into_owned()),
        PayloadIn::ClientFetchAll => Op::ClientFetchAll,
        PayloadIn::UserSettingsFetch => return Request::Settings(None),
        PayloadIn::UserSettingsSet { setting, value } => {
            return Request::Settings(Some((setting.into_owned(), value.into_owned())))
        }
    })
}

/// How a refused token closes the socket.
fn refused(why: TokenRefused) -> Close {
    match why {
        TokenRefused::Invalid => Close::new(
            CloseCode::TokenInvalid,
            "the token is not valid on this gateway",
        ),
        TokenRefused::Expired => Close::new(CloseCode::TokenExpired, "the token has expired"),
        TokenRefused::Revoked => Close::new(CloseCode::TokenRevoked, "the token was revoked"),
    }
}

/// Revocations or keys changed: whether the session's token still holds.
struct TokenCheck(Claims);

impl StreamHandler<TokenCheck> for Session {
    fn handle(&mut self, TokenCheck(claims): TokenCheck, ctx: &mut Self::Context) {
        if let Err(why) = self.auth.check(&claims) {
            let _entered = self.span.clone().entered();
            self.evict(refused(why), ctx);
        }
    }

    /// The token's watch ends with the session; its end must not stop it.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// Compares secrets without leaking how long a matching prefix was.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        tracing::debug!("connected");
        metrics::get().connections_open.inc();
        let timeout = self.settings.identify_timeout();
        ctx.run_later(timeout, move |act, ctx| {
            if !matches!(act.state, State::Identified { .. }) {
                act.close(
                    ctx,
                    Close::new(
                        CloseCode::AuthFailed,
                        format!("no IDENTIFY within {} ms", timeout.as_millis()),
                    ),
                );
            }
        });
        ctx.run_interval(self.settings.heartbeat_interval(), Self::heartbeat);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        self.out.end();
        match &self.state {
            State::Identifying { uuid } => self.namespace.leave(*uuid),
            State::Identified { member, .. } => self.namespace.leave(member.uuid()),
            State::Anonymous => {}
        }
        let m = metrics::get();
        m.connections_open.dec();
        m.session_closed(self.close_code.unwrap_or(1006));
        tracing::debug!("disconnected");
    }
}

impl StreamHandler<Result<WsFrame, ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<WsFrame, ProtocolError>, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        if let Ok(WsFrame::Ping(bytes)) = &msg {
            // Answered, but not taken for an answer to the gateway's ping.
            if let Err(close) = self.out.pong(bytes) {
                self.evict(close, ctx);
            }
            return;
        }
        self.out.heard_from_client();
        match msg {
            // A text frame that is not UTF-8 breaks the WebSocket protocol
            // (RFC 6455 §5.6), and PROTOCOL.md 2.3 promises 1002 for it; only a
            // reassembled fragmented message is the gateway's 4002.
            Ok(WsFrame::Text(bytes)) => match ByteString::try_from(bytes) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.protocol_error("a text frame that is not UTF-8", ctx),
            },
            Ok(WsFrame::Binary(_)) => self.on_binary(ctx),
            Ok(WsFrame::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(WsFrame::Ping(_) | WsFrame::Pong(_)) => {}
            Ok(WsFrame::Close(reason)) => {
                tracing::debug!(?reason, "client closed");
                self.close_code = Some(reason.as_ref().map_or(1005, |r| u16::from(r.code)));
                self.out.close(reason);
                ctx.stop();
            }
            Err(e) if self.oversized.get() || matches!(e, ProtocolError::Overflow) => {
                let max = self.settings.max_frame_size;
                self.close(
                    ctx,
                    Close::new(CloseCode::TooBig, format!("frame exceeds {max} bytes")),
                );
            }
            Err(e) => self.protocol_error(e, ctx),
        }
    }
}

impl Handler<Control> for Session {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        match msg {
            // `stopped` still sends Leave: a no-op for an evicted client, the
            // normal clean-up for one closed by a shutdown.
            Control::Close(close) => self.close(ctx, close),
        }
    }
}
