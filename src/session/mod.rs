//! One session core for every wire format.
//!
//! A WebSocket speaks concierge's own protocol (`/ws`) or one of the seeds'
//! formats (the adapters: Nest, Quix, Socket.IO), but what a connection
//! needs besides its format is the same for all, and lives here once, so
//! that the formats cannot drift apart: the deadline to identify, the
//! heartbeat (with the check that a backlog the client is still reading
//! explains its silence), bounded output for every kind of frame (the
//! format's own, pongs, the close), the WebSocket's control frames,
//! closing when the namespace says so or a token stops holding, and the
//! client's registration with the namespace, left when the session stops.
//!
//! A format plugs in a [`Translator`]: its state, how it reads a client's
//! frame (its identify step included) and how it writes what the namespace
//! sends it. The actor is [`Session<T>`], generic over it, so a format
//! costs no box and no dynamic call per message; adding one is its file
//! and a line in the gateway's table of formats. Data flows one way: the
//! socket into the session, the session's requests to the namespace (the
//! registry and the services), and what the namespace sends into the
//! client's outbox.

mod to_actor;
mod token;
mod translator;

pub use to_actor::{Delivered, ToActor};
pub(crate) use token::refused;
pub use translator::{Heard, Translator};

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use actix_http::ws::{CloseCode as WsCloseCode, CloseReason, Frame as WsFrame, ProtocolError};
use bytestring::ByteString;
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::Settings;
use crate::fleet::{Alerts, Inventory, Jobs};
use crate::metrics;
use crate::namespace::{Member, Namespace, Resume};
use crate::protocol::{ClientInfo, Close, CloseCode};
use crate::transport::frame_guard::FrameLimit;
use crate::transport::outbox::{Control, Frame, FrameSink, Outbox};
use crate::transport::websocket::{Outgoing, Writer};
use crate::vpn::Vpn;

/// The actor context of a session speaking format `T`.
pub type Ctx<T> = Context<Session<T>>;

/// One WebSocket connection: the core every format shares, and the
/// format's own state in [`Session::format`].
pub struct Session<T: Translator> {
    pub(crate) settings: Arc<Settings>,
    pub(crate) namespace: Namespace,
    pub(crate) auth: Arc<Auth>,
    pub(crate) vpn: Vpn,
    pub(crate) inventory: Arc<Inventory>,
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) alerts: Arc<Alerts>,
    pub(crate) span: tracing::Span,
    /// The session's end of its socket: every frame it sends goes through
    /// this bounded queue.
    pub(crate) out: Outgoing,
    /// Where frames for the client are pushed (see [`Outbox`]).
    pub(crate) sink: Arc<dyn FrameSink>,
    /// The close code sent or received, for metrics; none means the
    /// connection was lost.
    close_code: Option<u16>,
    /// The limit the [`FrameGuard`](crate::transport::frame_guard::FrameGuard) in front
    /// of this session's input holds frames to, and whether it refused one.
    pub(crate) frame_limit: Rc<FrameLimit>,
    pub(crate) format: T,
}

impl<T: Translator> Session<T> {
    /// A session for a client at `peer`, and the writer that carries what
    /// it sends to the socket.
    pub fn new(
        settings: Arc<Settings>,
        namespace: Namespace,
        auth: Arc<Auth>,
        vpn: Vpn,
        (inventory, jobs, alerts): (Arc<Inventory>, Arc<Jobs>, Arc<Alerts>),
        peer: &str,
        frame_limit: Rc<FrameLimit>,
    ) -> (Self, Writer) {
        let (format, span) = T::new(peer);
        let (out, sink, writer) =
            Outgoing::new(settings.max_outgoing_queue, settings.heartbeat_timeout());
        let session = Session {
            settings,
            namespace,
            auth,
            vpn,
            inventory,
            jobs,
            alerts,
            span,
            out,
            sink,
            close_code: None,
            frame_limit,
            format,
        };
        (session, writer)
    }

    /// Closes with one of the gateway's codes (a client closed for not
    /// reading or not answering loses what was still queued for it).
    pub(crate) fn close(&mut self, ctx: &mut Ctx<T>, close: Close) {
        tracing::info!(code = close.code.code(), reason = %close.reason, "closing connection");
        self.close_code = Some(close.code.code());
        self.out.close_with(&close);
        ctx.stop();
    }

    /// Closes after the frames already queued (a format's last word goes
    /// first), with a WebSocket code.
    pub(crate) fn close_after(&mut self, ctx: &mut Ctx<T>, code: WsCloseCode, why: String) {
        self.close_code = Some(code.into());
        self.out.close(Some(CloseReason {
            code,
            description: Some(why),
        }));
        ctx.stop();
    }

    /// Removes the client at once (it broke a limit, or its token stopped
    /// holding) and closes it, after its format's goodbye.
    pub(crate) fn evict(&mut self, close: Close, ctx: &mut Ctx<T>) {
        if let Some(uuid) = self.format.registered() {
            self.namespace.leave(uuid);
        }
        T::closing(self, &close);
        self.close(ctx, close);
    }

    /// Queues one of the format's own frames (a reply, an event, its
    /// format's pong) for the client, under the queue's bound: a client
    /// that does not read what it is sent is closed with 1008, as the
    /// outbox closes it for the namespace's frames, and a frame is never
    /// dropped in silence.
    pub(crate) fn push(&self, text: &str) {
        if let Err(crate::transport::outbox::SinkError::Full) = self.sink.push(Frame::new(text)) {
            let close = Close::too_slow(self.settings.max_outgoing_queue);
            tracing::info!(code = close.code.code(), reason = %close.reason, "closing connection");
            self.sink.close(&close);
        }
    }

    /// What joining the namespace takes, for a new client uuid: its
    /// outbox (frames into the format's sink, control requests to this
    /// actor). The uuid is the client's from here on: until the join is
    /// done, the format should count it as
    /// [`registered`](Translator::registered).
    pub(crate) fn joining(&self, ctx: &mut Ctx<T>) -> Joining {
        Joining {
            outbox: Outbox::new(
                Uuid::new_v4(),
                T::sink(self, ctx),
                ctx.address().recipient(),
                self.namespace.overflow_recipient(),
            ),
            namespace: self.namespace.clone(),
            auth: self.auth.clone(),
        }
    }

    /// Closes with 1002 for a WebSocket protocol violation.
    pub(crate) fn protocol_error(&mut self, e: impl std::fmt::Display, ctx: &mut Ctx<T>) {
        tracing::debug!(error = %e, "websocket protocol error");
        let why = format!("websocket protocol error: {e}");
        self.close_after(ctx, WsCloseCode::Protocol, why);
    }

    /// Every heartbeat interval: pings the client and closes it when it has
    /// not answered in time. A ping only counts from when it reaches the
    /// socket: while it waits behind frames the client is still reading (the
    /// queue keeps draining), the client is not late.
    fn heartbeat(&mut self, ctx: &mut Ctx<T>) {
        let limit = self.settings.heartbeat_timeout();
        if !self.format.heartbeat_due() || self.out.silent_for() <= limit {
            return T::ping(self);
        }
        if self.out.backlog_explains_silence() {
            return;
        }
        let _entered = self.span.clone().entered();
        T::silent(self, limit, ctx);
    }
}

/// A client about to join the namespace (see [`Session::joining`]).
pub struct Joining {
    outbox: Outbox,
    namespace: Namespace,
    auth: Arc<Auth>,
}

impl Joining {
    /// The client's uuid.
    pub fn uuid(&self) -> Uuid {
        self.outbox.uuid()
    }

    /// Joins as `info` (whose uuid is [`Joining::uuid`]); `presence`,
    /// `take_over` and `resume` as [`Namespace::join`] takes them.
    pub async fn join(
        self,
        info: ClientInfo,
        presence: bool,
        take_over: bool,
        resume: Option<Resume>,
    ) -> Result<Member, Close> {
        let uuid = self.uuid();
        let fs_key = self.auth.fs_key(uuid).await.map_err(|e| {
            Close::new(
                CloseCode::TryAgainLater,
                format!("cannot make a file server key now: {e}"),
            )
        })?;
        self.namespace
            .join(info, self.outbox, fs_key, presence, take_over, resume)
            .await
    }
}

impl<T: Translator> Actor for Session<T> {
    type Context = Ctx<T>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        tracing::debug!("connected");
        metrics::get().connections_open.inc();
        let timeout = self.settings.identify_timeout();
        ctx.run_later(timeout, move |act, ctx| {
            if !act.format.identified() {
                let _entered = act.span.clone().entered();
                T::identify_late(act, timeout, ctx);
            }
        });
        ctx.run_interval(self.settings.heartbeat_interval(), Self::heartbeat);
        T::started(self, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        self.out.end();
        T::stopped(self);
        if let Some(uuid) = self.format.registered() {
            self.namespace.leave(uuid);
        }
        let m = metrics::get();
        m.connections_open.dec();
        m.session_closed(self.close_code.unwrap_or(1006));
        tracing::debug!("disconnected");
    }
}

impl<T: Translator> StreamHandler<Result<WsFrame, ProtocolError>> for Session<T> {
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
            // (RFC 6455 §5.6); the format says what that costs.
            Ok(WsFrame::Text(bytes)) => match ByteString::try_from(bytes) {
                Ok(text) => T::heard(self, Heard::Text(text), ctx),
                Err(_) => T::heard(self, Heard::NotUtf8, ctx),
            },
            Ok(WsFrame::Binary(_)) => T::heard(self, Heard::Binary, ctx),
            Ok(WsFrame::Continuation(item)) => T::heard(self, Heard::Fragment(item), ctx),
            Ok(WsFrame::Ping(_) | WsFrame::Pong(_)) => {}
            Ok(WsFrame::Close(reason)) => {
                tracing::debug!(?reason, "client closed");
                self.close_code = Some(reason.as_ref().map_or(1005, |r| u16::from(r.code)));
                self.out.close(reason);
                ctx.stop();
            }
            Err(e) if self.frame_limit.oversized() || matches!(e, ProtocolError::Overflow) => {
                let max = self.frame_limit.max();
                self.close(
                    ctx,
                    Close::new(CloseCode::TooBig, format!("frame exceeds {max} bytes")),
                );
            }
            Err(e) => self.protocol_error(e, ctx),
        }
    }
}

impl<T: Translator> Handler<Control> for Session<T> {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        match msg {
            // The registry has removed the client already; `stopped` still
            // sends Leave: a no-op then, the clean-up after a shutdown.
            Control::Close(close) => {
                T::closing(self, &close);
                self.close(ctx, close);
            }
        }
    }
}

impl<T: Translator> Handler<Delivered> for Session<T> {
    type Result = ();

    fn handle(&mut self, delivered: Delivered, ctx: &mut Self::Context) {
        let _entered = self.span.clone().entered();
        T::delivered(self, delivered.take(), ctx);
    }
}
