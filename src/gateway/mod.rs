//! Wiring: the HTTP server, its routes, and graceful shutdown.
//!
//! `/ws` is where every WebSocket transport plugs in (today the concierge
//! protocol; the adapters of later issues get paths beside it), `/fs` is the
//! file server, and `/healthz`, `/readyz`, `/version` and `/metrics` are for
//! operators and load balancers.
//!
//! A WebSocket upgrade request never reaches the actix-web application: the
//! HTTP/1 service hands it, with its socket, to [`take_over`], which answers
//! the handshake and gives the socket to a session (see
//! [`crate::transport::websocket`] for why the gateway owns its sockets). Every other
//! request, including a plain GET of `/ws`, is routed by the application.

pub mod session;
pub mod start_error;

pub use start_error::StartError;

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_http::{h1, ConnectionType, HttpService, Request, RequestHead, Response, StatusCode};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{fn_factory, fn_service, AppConfig, Server, ServerHandle};
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::Bytes;
use futures_util::SinkExt;

use crate::cluster::redis::{self as cluster, Claims};
use crate::cluster::{Broker, Standalone};
use crate::config::Settings;
use crate::files;
use crate::gateway::session::Session;
use crate::metrics as gateway_metrics;
use crate::namespace::registry::{CloseAll, Ready, Registry};
use crate::protocol::{Close, CloseCode, PROTOCOL_VERSION, SUBPROTOCOL};
use crate::transport::frame_guard::FrameGuard;
use crate::transport::websocket::{Incoming, SocketInput};

/// What every request handler can reach.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub registry: Addr<Registry>,
    /// Name claims in the shared namespace; `None` when standalone.
    pub claims: Option<Claims>,
}

/// A started gateway: await `server` to run it.
pub struct Gateway {
    /// The addresses actually bound (useful with port 0).
    pub addrs: Vec<SocketAddr>,
    pub server: Server,
    pub registry: Addr<Registry>,
    pub settings: Arc<Settings>,
    pub claims: Option<Claims>,
}

impl Gateway {
    /// Checks the settings, reserves the address, connects to Redis when
    /// `redis_url` is set (waiting until it answers), starts the registry
    /// and listens. Must run inside an actix `System`; the server does
    /// nothing until `server` is awaited.
    pub async fn start(settings: Settings) -> Result<Gateway, StartError> {
        settings.validate()?;
        let settings = Arc::new(settings);
        let bind = settings.bind_addr()?;
        let cannot_listen = |source| StartError::Listen { addr: bind, source };
        // The address is taken before the files folder is touched: a second
        // gateway started by mistake on a running one's address must not
        // clear the files they share. It listens only once ready, below.
        let socket = bind_socket(bind).map_err(cannot_listen)?;
        let files_dir = settings.files_dir();
        let prepare = |discard| {
            files::prepare(&files_dir, discard).map_err(|source| StartError::DataFolder {
                path: files_dir.clone(),
                source,
            })
        };
        let (broker, claims): (Box<dyn Broker>, Option<Claims>) = if settings.redis_url.is_empty() {
            // Standalone, clients do not outlive the process: start clean.
            prepare(true)?;
            (Box::new(Standalone::default()), None)
        } else {
            // The files folder is shared by the replicas: keep it.
            prepare(false)?;
            let (broker, claims) = cluster::connect(&settings.redis_url, settings.node_lease())
                .await
                .map_err(|source| StartError::Redis {
                    url: settings.redis_url.clone(),
                    source,
                })?;
            (Box::new(broker), Some(claims))
        };

        let registry = {
            let settings = settings.clone();
            let claims = claims.clone();
            Registry::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                Registry::new(settings, broker, claims)
            })
        };
        if let Some(claims) = &claims {
            cluster::start(claims, registry.clone());
        }
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            registry: registry.clone(),
            claims: claims.clone(),
        });
        let app_state = state.clone();
        let app = move || {
            actix_web::App::new()
                .app_data(app_state.clone())
                .route("/ws", web::route().to(websocket_without_upgrade))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/version", web::get().to(version))
                .route("/metrics", web::get().to(metrics))
                .configure(files::routes)
        };
        let mut server = Server::build()
            .disable_signals()
            .shutdown_timeout(settings.shutdown_timeout_secs);
        // Told when a graceful stop begins, so idle keep-alive HTTP
        // connections close at once instead of holding the stop for their
        // keep-alive timeout (what actix-web's own `HttpServer` does).
        let stopping = server.graceful_shutdown_signal();
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        let listener = listen(socket).map_err(cannot_listen)?;
        let addrs = vec![listener.local_addr().map_err(cannot_listen)?];
        let server = server
            .listen("concierge", listener, move || {
                let state = state.clone();
                let stopping = stopping.clone();
                let user_timeout = state.settings.heartbeat_timeout();
                HttpService::build()
                    .on_connect_ext(move |io: &TcpStream, _| set_user_timeout(io, user_timeout))
                    .graceful_shutdown_signal(move || {
                        let stopping = stopping.clone();
                        async move { stopping.notified().await }
                    })
                    .upgrade(fn_factory(move || {
                        let state = state.clone();
                        async move {
                            Ok::<_, Infallible>(fn_service(move |(req, framed)| {
                                take_over(state.clone(), req, framed)
                            }))
                        }
                    }))
                    // actix-web's `HttpServer` default: a second to shut a
                    // connection down cleanly once its response is done.
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .finish(map_config(
                        app()
                            .into_factory()
                            .map_err(|e: actix_web::Error| e.error_response()),
                        // The application derives no URL from it.
                        |_| AppConfig::default(),
                    ))
                    .tcp()
            })
            .map_err(cannot_listen)?;
        Ok(Gateway {
            addrs,
            server: server.run(),
            registry,
            settings,
            claims,
        })
    }

    /// Installs the SIGINT and SIGTERM handlers at once and returns the
    /// server to await: it runs until one of them, then shuts down
    /// gracefully. Report the gateway ready only after calling this, or a
    /// signal sent as soon as it is reported kills the process outright.
    pub fn run_until_signalled(self) -> Server {
        let signal = wait_for_signal();
        let handle = self.server.handle();
        let registry = self.registry.clone();
        let claims = self.claims.clone();
        actix_web::rt::spawn(async move {
            signal.await;
            shutdown(handle, registry, claims).await;
        });
        self.server
    }
}

/// The listening socket's address taken, as actix-web's own `HttpServer`
/// takes it: with address reuse, so a restarted gateway can bind at once.
fn bind_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Starts listening on a socket from [`bind_socket`], with a backlog of
/// 1,024 pending connections (as `HttpServer`) for the reconnect storm after
/// a replica restarts.
fn listen(socket: socket2::Socket) -> io::Result<std::net::TcpListener> {
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Stops accepting, closes every session (1001 standalone; 1012 in a
/// cluster, so clients reconnect through the load balancer to another
/// replica), deregisters from the cluster at once, and waits (up to
/// `shutdown_timeout_secs`) for connections to finish.
pub async fn shutdown(handle: ServerHandle, registry: Addr<Registry>, claims: Option<Claims>) {
    handle.pause().await;
    let close = match claims {
        None => Close::new(CloseCode::GoingAway, "the gateway is shutting down"),
        Some(_) => Close::new(
            CloseCode::ServiceRestart,
            "this replica is restarting: reconnect to another",
        ),
    };
    match registry.send(CloseAll { close }).await {
        Ok(n) => tracing::info!(sessions = n, "closing sessions"),
        Err(e) => tracing::error!(error = %e, "cannot reach the registry to close sessions"),
    }
    if let Some(claims) = claims {
        // Let the sessions' departures reach Redis before the lease goes.
        let _ = registry.send(Ready).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        claims.deregister().await;
    }
    handle.stop(true).await;
}

/// Listens for SIGINT and SIGTERM from the moment it is called (not from
/// the first poll), and resolves on the first of them.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                .ok()
        };
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        async fn recv(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                _ = recv(&mut int) => tracing::info!("SIGINT received, shutting down"),
                _ = recv(&mut term) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupted, shutting down");
        }
    }
}

/// Answers a request that asked for a WebSocket upgrade and, once the
/// client has its 101, gives the socket to a new session. Refusals are
/// plain HTTP responses that say why (the status line's reason, or a body),
/// after which the connection is closed.
///
/// The returned future lives, inside the connection's task, as long as the
/// connection: the handshake, which needs the HTTP codec and its buffers,
/// runs in a future of its own that is freed once it is done.
fn take_over(
    state: web::Data<AppState>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> impl Future<Output = Result<(), Infallible>> {
    let handshake = Box::pin(handshake(req, framed));
    async move {
        if let Some((io, early, peer)) = handshake.await {
            serve(&state, io, early, peer).await;
        }
        Ok(())
    }
}

/// Answers the upgrade request. Once the 101 is sent: the socket, the
/// bytes read past the request, and the peer's address.
async fn handshake(
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Option<(TcpStream, Bytes, String)> {
    let response = if req.path() != "/ws" {
        Err(refusal(
            StatusCode::NOT_FOUND,
            "WebSocket connections are accepted on /ws only",
        ))
    } else {
        accept(req.head())
    };
    let response = match response {
        Ok(response) => response,
        Err((response, body)) => {
            refuse(framed, response, body).await;
            return None;
        }
    };
    if let Err(e) = framed.send((response, BodySize::None).into()).await {
        tracing::debug!(error = %e, "cannot answer a WebSocket upgrade");
        return None;
    }
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let (io, early) = into_socket(framed);
    Some((io, early, peer))
}

/// Runs a WebSocket connection: a session reading from the socket, and its
/// writer, until both are done.
async fn serve(state: &AppState, io: TcpStream, early: Bytes, peer: String) {
    // A frame is written as soon as it is queued, and frames queued
    // together already leave in one write: Nagle's algorithm would only
    // hold small frames back until the previous ones are acknowledged.
    if let Err(e) = io.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (input, output) = io.into_split();

    let oversized = Rc::new(Cell::new(false));
    let (session, writer) = Session::new(
        state.settings.clone(),
        state.registry.clone(),
        state.claims.clone(),
        peer,
        oversized.clone(),
    );
    let max = state.settings.max_frame_size;
    let input = Incoming::new(
        FrameGuard::new(SocketInput::new(input, early), max, oversized),
        max,
    );
    Session::create(move |ctx| {
        ctx.add_stream(input);
        session
    });
    writer.write_to(output).await;
}

/// The socket of an answered upgrade, and the bytes the dispatcher read
/// past the request (frames the client sent without waiting for the 101).
/// The dispatcher's two buffers are freed here.
fn into_socket(framed: Framed<TcpStream, h1::Codec>) -> (TcpStream, Bytes) {
    let parts = framed.into_parts();
    (parts.io, Bytes::copy_from_slice(&parts.read_buf))
}

/// The handshake's 101 response, with the concierge subprotocol when the
/// client offers it (it is optional); or why the request is refused.
fn accept(head: &RequestHead) -> Result<Response<()>, (Response<()>, &'static str)> {
    let mut response = match actix_http::ws::handshake(head) {
        Ok(response) => response,
        Err(e) => return Err((Response::from(e).drop_body(), "")),
    };
    let offered = head
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL);
    if offered {
        response.insert_header((
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        ));
    }
    response.message_body(()).map_err(|e| {
        tracing::error!(error = %e, "cannot build the handshake response");
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the handshake response",
        )
    })
}

fn refusal(status: StatusCode, body: &'static str) -> (Response<()>, &'static str) {
    (Response::with_body(status, ()), body)
}

/// Sends a refusal with its body and closes the connection.
async fn refuse(
    mut framed: Framed<TcpStream, h1::Codec>,
    mut response: Response<()>,
    body: &'static str,
) {
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    let sent = async {
        let size = BodySize::Sized(body.len() as u64);
        framed.send((response, size).into()).await?;
        if !body.is_empty() {
            framed
                .send(h1::Message::Chunk(Some(Bytes::from_static(
                    body.as_bytes(),
                ))))
                .await?;
        }
        framed.send(h1::Message::Chunk(None)).await
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "cannot refuse a WebSocket upgrade");
    }
}

/// Lets the kernel drop a connection whose peer stops acknowledging data
/// (dead, or alive but not reading) after the heartbeat timeout, so a stuck
/// session or download cannot hold its socket forever. Set on every
/// accepted connection.
fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Reached only by requests that did not ask for a WebSocket upgrade (those
/// that do are taken over before routing): the handshake's check says what
/// is missing, with the status and reason a WebSocket client expects.
async fn websocket_without_upgrade(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    ws::handshake_with_protocols(&req, &[SUBPROTOCOL])?;
    Ok(HttpResponse::BadRequest().body("send the WebSocket upgrade headers"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the registry answers within a second and, in a cluster, its
/// link to Redis works.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let probe = state.registry.send(Ready);
    let reason = match tokio::time::timeout(Duration::from_secs(1), probe).await {
        Ok(Ok(true)) => {
            return HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }));
        }
        Ok(Ok(false)) => "the link to Redis is down",
        _ => "the registry does not answer",
    };
    HttpResponse::ServiceUnavailable()
        .json(serde_json::json!({ "status": "not ready", "reason": reason }))
}

async fn version() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": PROTOCOL_VERSION,
    }))
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(gateway_metrics::get().render())
}
