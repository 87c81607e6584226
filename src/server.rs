//! Wiring: the HTTP server, its routes, and graceful shutdown.
//!
//! `/ws` is where every WebSocket transport plugs in (today the concierge
//! protocol; the adapters of later issues get routes beside it), `/fs` is the
//! file server, and `/healthz`, `/readyz` and `/version` are for operators
//! and load balancers.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::broker::{Broker, Standalone};
use crate::cluster::{self, Claims};
use crate::config::Settings;
use crate::files;
use crate::frame_guard::FrameGuard;
use crate::metrics as gateway_metrics;
use crate::protocol::{Close, CloseCode, PROTOCOL_VERSION, SUBPROTOCOL};
use crate::registry::{CloseAll, Ready, Registry};
use crate::session::Session;
use crate::websocket::Incoming;

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
    /// Connects to Redis when `redis_url` is set (waiting until it answers),
    /// starts the registry and binds the listener. Must run inside an actix
    /// `System`; the server does nothing until `server` is awaited.
    pub async fn start(settings: Settings) -> io::Result<Gateway> {
        let settings = Arc::new(settings);
        let bind = settings
            .bind_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (broker, claims): (Box<dyn Broker>, Option<Claims>) = if settings.redis_url.is_empty() {
            // Standalone, clients do not outlive the process: start clean.
            files::prepare(&settings.files_dir(), true)?;
            (Box::new(Standalone::default()), None)
        } else {
            // The files folder is shared by the replicas: keep it.
            files::prepare(&settings.files_dir(), false)?;
            let (broker, claims) = cluster::connect(&settings.redis_url, settings.node_lease())
                .await
                .map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("redis_url: {e}"))
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
        let user_timeout = settings.heartbeat_timeout();
        let mut http = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(state.clone())
                .route("/ws", web::get().to(websocket))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/version", web::get().to(version))
                .route("/metrics", web::get().to(metrics))
                .configure(files::routes)
        })
        .on_connect(move |conn, _| set_user_timeout(conn, user_timeout))
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout_secs);
        if settings.workers > 0 {
            http = http.workers(settings.workers);
        }
        let http = http.bind(bind)?;
        let addrs = http.addrs();
        Ok(Gateway {
            addrs,
            server: http.run(),
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

/// Lets the kernel drop a connection whose peer stops acknowledging data
/// (dead, or alive but not reading), so a stuck session cannot hold its
/// socket forever.
fn set_user_timeout(conn: &dyn std::any::Any, timeout: Duration) {
    if let Some(stream) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let sock = socket2::SockRef::from(stream);
        if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }
}

async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut response = ws::handshake_with_protocols(&req, &[SUBPROTOCOL])?;
    let oversized = Rc::new(Cell::new(false));
    let (session, body) = Session::new(
        state.settings.clone(),
        state.registry.clone(),
        state.claims.clone(),
        peer,
        oversized.clone(),
    );
    let max = state.settings.max_frame_size;
    let input = Incoming::new(FrameGuard::new(stream, max, oversized), max);
    Session::create(move |ctx| {
        ctx.add_stream(input);
        session
    });
    Ok(response.streaming(body))
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
