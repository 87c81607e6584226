//! The seam where wire formats other than concierge's own meet the
//! namespace.
//!
//! A socket is a WebSocket on the shared transport (frames in through
//! [`Incoming`](crate::transport::websocket::Incoming), frames out through
//! [`Outgoing`](crate::transport::websocket::Outgoing)), whatever its path;
//! the path picks the session actor that speaks its format. The native
//! session (`/ws`) is one; each adapter here is another. An adapter's
//! session joins the namespace as a native one does and makes requests of
//! its [`Member`](crate::namespace::Member); what the namespace sends it
//! (native payloads) reaches the actor through a [`ToActor`] sink, and the
//! actor writes it out in its own format. Nothing else in the gateway
//! knows adapters exist.

pub mod nest;
pub mod quix;
pub mod socketio;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::{CloseCode as WsCloseCode, CloseReason, Frame as WsFrame, ProtocolError};

use crate::auth::{Auth, Claims, Role};
use crate::namespace::{Member, Namespace, Outcome};
use crate::protocol::agent::{Envelope, Failure, Reason, Request, RequestName};
use crate::protocol::{ClientInfo, Close, CloseCode, Origin, Target};
use crate::transport::outbox::{Control, Frame, FrameSink, Outbox, SinkError};
use crate::transport::websocket::Outgoing;

/// The session a WebSocket path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// concierge's own protocol, `/ws`.
    Concierge,
    /// The Nest bot protocol (seeds 000/001), `/nest`.
    Nest,
    /// Quix WSI (seed 003), `/wsi`.
    Quix,
    /// Socket.IO v5 with seed 002's Altoponix events, `/socket.io/`.
    SocketIo,
}

impl Dialect {
    pub fn of_path(path: &str) -> Option<Dialect> {
        match path {
            "/ws" => Some(Dialect::Concierge),
            "/nest" => Some(Dialect::Nest),
            "/wsi" => Some(Dialect::Quix),
            "/socket.io/" | "/socket.io" => Some(Dialect::SocketIo),
            _ => None,
        }
    }
}

/// A native payload for an adapter's session to translate.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Delivered {
    pub frame: Frame,
    /// Counts the frame out of its sink's queue when handled.
    pub queued: Arc<AtomicUsize>,
}

impl Delivered {
    /// The frame's JSON, and its place freed in the queue.
    pub fn take(self) -> Frame {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.frame
    }

    /// A MESSAGE another client sent: who sent it and its `data` (a
    /// host's requests come this way); `None` for any other payload.
    pub fn message(self) -> Option<(Origin, serde_json::Value)> {
        let frame = self.take();
        match serde_json::from_slice::<crate::protocol::Sequenced>(frame.payload()) {
            Ok(crate::protocol::Sequenced {
                payload: crate::protocol::PayloadOut::Message { origin, data, .. },
                ..
            }) => Some((origin, data)),
            _ => None,
        }
    }
}

/// A client's outbox sink that hands frames to its adapter's actor, bounded
/// like a socket's queue.
pub struct ToActor {
    frames: Recipient<Delivered>,
    control: Recipient<Control>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl ToActor {
    pub fn new(
        frames: Recipient<Delivered>,
        control: Recipient<Control>,
        capacity: usize,
    ) -> ToActor {
        ToActor {
            frames,
            control,
            queued: Arc::default(),
            capacity,
        }
    }
}

impl FrameSink for ToActor {
    fn push(&self, frame: Frame) -> Result<usize, SinkError> {
        let depth = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if depth > self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(SinkError::Full);
        }
        self.frames
            .try_send(Delivered {
                frame,
                queued: self.queued.clone(),
            })
            .map_err(|_| {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                SinkError::Closed
            })?;
        Ok(depth)
    }

    fn close(&self, close: &Close) {
        self.control.do_send(Control::Close(close.clone()));
    }

    // The actor's mailbox keeps the order; nothing to hold.
    fn hold(&self) {}
    fn release(&self) {}
}

/// Joins the namespace as the host `claims` are for (tag `tag`, no
/// presence), with a [`ToActor`] outbox to `actor`; `take_over` as
/// [`Namespace::join`] takes it.
pub async fn join<A>(
    auth: &Auth,
    namespace: &Namespace,
    claims: &Claims,
    tag: &str,
    actor: Addr<A>,
    capacity: usize,
    take_over: bool,
) -> Result<Member, Close>
where
    A: Actor + Handler<Delivered> + Handler<Control>,
    A::Context: actix::dev::ToEnvelope<A, Delivered> + actix::dev::ToEnvelope<A, Control>,
{
    let uuid = uuid::Uuid::new_v4();
    let info = ClientInfo {
        name: claims.name.clone(),
        nickname: None,
        uuid,
        tags: vec![tag.to_owned()],
        user: Some(claims.sub.clone()),
        roles: claims
            .role
            .implied()
            .iter()
            .map(|r| r.to_string())
            .collect(),
    };
    let sink = Arc::new(ToActor::new(
        actor.clone().recipient(),
        actor.clone().recipient(),
        capacity,
    ));
    let outbox = Outbox::new(
        uuid,
        sink,
        actor.recipient(),
        namespace.overflow_recipient(),
    );
    let fs_key = auth
        .fs_key(uuid)
        .await
        .map_err(|e| Close::new(CloseCode::TryAgainLater, e.to_string()))?;
    namespace.join(info, outbox, fs_key, false, take_over).await
}

/// Queues one of the adapter's own frames (a reply, an event, its format's
/// pong) for its client. A client that does not read what it is sent is
/// closed with 1008, as the outbox closes it for the namespace's frames: a
/// full queue never drops a frame in silence (`capacity` is the queue's
/// bound, `max_outgoing_queue`).
pub fn push_own(socket: &dyn FrameSink, text: &str, capacity: usize) {
    if let Err(SinkError::Full) = socket.push(Frame::new(text)) {
        let close = Close::too_slow(capacity);
        tracing::info!(code = close.code.code(), reason = %close.reason, "closing connection");
        socket.close(&close);
    }
}

/// Sends the reply `data` (`{"rid", "msg"}`) by MESSAGE from `member` to
/// client `to`; a reply whose target must be looked up comes back as a
/// future to run.
///
/// A host's answer is its own JSON: parsed, so free of lone surrogates and
/// numbers no double holds, but possibly nested as deep as its frame
/// allowed. One that not every client could read (see
/// [`crate::protocol::data`]) goes as a `failed` reply under the same rid.
pub fn send_to(
    member: &Member,
    to: uuid::Uuid,
    data: &serde_json::Value,
) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
    let mut raw = crate::protocol::raw_json(data);
    if let Err(e) = crate::protocol::data::check(raw.get()) {
        tracing::warn!(error = %e, "a host's answer cannot be relayed: refused");
        let failure = Failure::new(
            Reason::Failed,
            format!("the host's answer cannot be relayed: {e}"),
        );
        let refusal = serde_json::json!({"rid": data.get("rid"), "msg": failure.to_msg()});
        raw = crate::protocol::raw_json(&refusal);
    }
    let target = Target::Uuid {
        uuid: to.to_string(),
    };
    match member.message(None, &target, &raw) {
        Outcome::Later { done, .. } => Some(done),
        Outcome::Answered => None,
    }
}

/// The request in `envelope`, if its sender has the role it needs (as the
/// agent asks it: viewers read, operators command), with its arguments
/// read into their type.
pub fn authorized(origin: &Origin, envelope: &Envelope) -> Result<Request, Failure> {
    let name = RequestName::parse(&envelope.req)?;
    let roles: Vec<Role> = origin
        .client
        .roles
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    crate::protocol::agent::authorize(origin.client.user.as_deref(), &roles, name.access().role())?;
    Request::parse(envelope)
}

/// The refusal of a request to a host that already has `limit` waiting
/// (requests to a silent host must not grow the gateway's memory).
pub fn too_many(limit: usize) -> Failure {
    Failure::new(
        Reason::Failed,
        format!("{limit} requests already wait for this host: try again later"),
    )
}

/// A frame from an adapter's client, once the WebSocket's own business is
/// done ([`hear`]).
pub enum Heard<'a> {
    /// A text frame: the adapter's format.
    Text(&'a str),
    /// A frame no adapter's format has a place for: why.
    Unusable(&'static str),
    /// A ping (answered) or a pong.
    Nothing,
    /// The client closed, the socket broke, or the client's pongs could
    /// not be queued (it does not read): the session stops.
    Ended,
}

/// Does what every adapter does with a frame: answers pings (see
/// [`Outgoing::pong`]; a client whose pongs cannot leave is closed with
/// 1008), counts the client as heard from for any other frame, returns the
/// close (or a protocol error's) to the client; hands the rest over.
pub fn hear<'a>(frame: &'a Result<WsFrame, ProtocolError>, out: &Outgoing) -> Heard<'a> {
    if let Ok(WsFrame::Ping(bytes)) = frame {
        return match out.pong(bytes) {
            Ok(()) => Heard::Nothing,
            Err(close) => {
                tracing::info!(code = close.code.code(), reason = %close.reason, "closing connection");
                out.close_with(&close);
                Heard::Ended
            }
        };
    }
    out.heard_from_client();
    match frame {
        Ok(WsFrame::Text(bytes)) => match std::str::from_utf8(bytes) {
            Ok(text) => Heard::Text(text),
            Err(_) => Heard::Unusable("a text frame that is not UTF-8"),
        },
        Ok(WsFrame::Binary(_) | WsFrame::Continuation(_)) => {
            Heard::Unusable("binary and fragmented frames are not supported: send text frames")
        }
        Ok(WsFrame::Ping(_) | WsFrame::Pong(_)) => Heard::Nothing,
        Ok(WsFrame::Close(reason)) => {
            out.close(reason.clone());
            Heard::Ended
        }
        Err(e) => {
            out.close(Some(CloseReason {
                code: WsCloseCode::Protocol,
                description: Some(format!("websocket protocol error: {e}")),
            }));
            Heard::Ended
        }
    }
}

/// Tells `control` to close the session when `claims` stop holding: at
/// their expiry (4012), or when a revocation that covers them reaches this
/// replica (4013), as a native session is closed. Spawn it on the
/// session's context, so it ends with the session.
pub async fn watch_claims(auth: Arc<Auth>, claims: Claims, control: Recipient<Control>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = auth.changes();
    let left = claims.exp.saturating_sub(crate::auth::now_secs());
    let expiry = tokio::time::sleep(std::time::Duration::from_secs(left));
    tokio::pin!(expiry);
    let close = loop {
        tokio::select! {
            _ = &mut expiry => break Close::new(CloseCode::TokenExpired, "the token expired"),
            next = changes.recv() => match next {
                Err(RecvError::Closed) => return,
                Ok(()) | Err(RecvError::Lagged(_)) => {
                    if auth.check(&claims).is_err() {
                        break Close::new(CloseCode::TokenRevoked, "the token was revoked");
                    }
                }
            },
        }
    };
    control.do_send(Control::Close(close));
}
