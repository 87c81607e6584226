//! The gateway: the HTTP server, its routes, and graceful shutdown, wired to
//! the namespace and the cluster.
//!
//! `/ws` is where the WebSocket transport plugs in ([`upgrade`]; the
//! adapters get paths beside it: `/nest`, `/socket.io/`), `/fs` is the file server,
//! and `/healthz`, `/readyz`, `/version` and `/metrics` ([`http`]) are for
//! operators and load balancers. Every other request, including a plain GET
//! of `/ws`, is routed by the actix-web application. With `tls_cert` and
//! `tls_key` the same server speaks TLS ([`tls`]): `wss://` and `https://`.

mod admin_api;
mod answers;
mod formats;
mod forwarded;
mod http;
mod jobs_api;
mod login;
mod observers;
pub(crate) mod origin;
pub mod session;
mod start_error;
mod tls;
mod upgrade;

pub use start_error::StartError;
pub use tls::CertError;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{HttpService, TlsAcceptorConfig};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{fn_factory, fn_service, AppConfig, Server, ServerHandle};
use actix_web::rt::net::TcpStream;
use actix_web::web;

use crate::adapters::socketio::engine::Polling;
use crate::auth::Auth;
use crate::cluster::{self, ClusterError};
use crate::config::Settings;
use crate::console;
use crate::files;
use crate::fleet::health::HealthSettings;
use crate::fleet::{Health, Inventory, Jobs};
use crate::namespace::{Namespace, Observer, Observers};
use crate::transport::socket::Socket;
use crate::vpn::Vpn;

/// How long a client has to complete its TLS handshake before the
/// connection is dropped (README "TLS", SECURITY.md's limits): a
/// connection that never finishes it would otherwise hold a socket. Set
/// here rather than left to actix-tls's default (the same 3 s today), so
/// that a dependency update cannot change what the documentation says.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// What every request handler can reach.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub namespace: Namespace,
    pub auth: Arc<Auth>,
    pub vpn: Vpn,
    pub inventory: Arc<Inventory>,
    pub jobs: Arc<Jobs>,
    /// Engine.IO's long-polling sessions, by sid.
    pub polling: Arc<Polling>,
}

/// A started gateway: await `server` to run it.
pub struct Gateway {
    /// The addresses actually bound (useful with port 0).
    pub addrs: Vec<SocketAddr>,
    pub server: Server,
    pub namespace: Namespace,
    pub settings: Arc<Settings>,
    /// Whether it speaks TLS (`wss://`, `https://`).
    pub tls: bool,
    /// Whether it requires tokens, for the start-up log.
    auth: Arc<Auth>,
}

/// One worker's HTTP service over connections of type `$io` (plain TCP or
/// TLS over it), to be given its transport with `.tcp()` or
/// `.rustls_0_23(..)`. A macro because the service's type cannot be named.
macro_rules! http_service {
    ($io:ty, $state:expr, $stopping:expr, $app:expr) => {{
        let state = $state.clone();
        let stopping = $stopping.clone();
        let user_timeout = state.settings.heartbeat_timeout();
        HttpService::build()
            .on_connect_ext(move |io: &$io, _| set_user_timeout(io.tcp(), user_timeout))
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            .upgrade(fn_factory(move || {
                let state = state.clone();
                async move {
                    Ok::<_, Infallible>(fn_service(move |(req, framed)| {
                        upgrade::take_over::<$io>(state.clone(), req, framed)
                    }))
                }
            }))
            // actix-web's `HttpServer` default: a second to shut a
            // connection down cleanly once its response is done.
            .client_disconnect_timeout(Duration::from_secs(1))
            .finish(map_config(
                $app()
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response()),
                // The application derives no URL from it.
                |_| AppConfig::default(),
            ))
    }};
}

impl Gateway {
    /// Checks the settings, reserves the address, joins the cluster (with
    /// `redis_url`, waiting until Redis answers), starts the namespace and
    /// listens. Must run inside an actix `System`; the server does nothing
    /// until `server` is awaited.
    pub async fn start(settings: Settings) -> Result<Gateway, StartError> {
        settings.validate()?;
        // Read before anything is touched: a certificate that cannot be
        // used stops the start as a wrong setting does.
        let tls = tls::configure(&settings)?;
        let settings = Arc::new(settings);
        let bind = settings.bind_addr()?;
        let vpn_settings = settings
            .vpn()
            .map_err(|e| StartError::Settings(crate::config::ConfigError::Invalid(e)))?;
        let cannot_listen = |source| StartError::Listen { addr: bind, source };
        // The address is taken before the files folder is touched: a second
        // gateway started by mistake on a running one's address must not
        // clear the files they share. It listens only once ready, below.
        let socket = bind_socket(bind).map_err(cannot_listen)?;
        let (cluster, inbound) = cluster::join(&settings.cluster()).await?;
        let auth = Auth::open(cluster.store().clone(), &settings)
            .await
            .map_err(|e| {
                ClusterError::Unavailable(format!("cannot load accounts and keys: {e}"))
            })?;
        // A folder shared with other replicas keeps their clients' files;
        // otherwise no client outlives the process: start clean.
        let files_dir = settings.files_dir();
        let files_lock = files::prepare(&files_dir, cluster.shares_files()).map_err(|source| {
            StartError::DataFolder {
                path: files_dir.clone(),
                source,
            }
        })?;
        // A signing key from the start: a token `concierge token issue`
        // signs beside a fresh gateway then uses this key, which the gateway
        // knows, not a new one it would learn of only at its next look at
        // the store (a token used at once would be refused meanwhile).
        auth.ensure_key().await.map_err(|e| {
            ClusterError::Unavailable(format!("cannot create the signing key: {e}"))
        })?;
        let quota = Arc::new(files::Quota::new(
            settings.max_client_files_bytes,
            settings.max_files_bytes,
            &files_dir,
        ));
        let health = Health::start(
            cluster.health().clone(),
            cluster.store().clone(),
            HealthSettings::new(&settings),
        );
        let inventory = Inventory::start(cluster.store().clone(), health);
        let (ledger, store) = (cluster.ledger().clone(), cluster.store().clone());
        let observers: Vec<Arc<dyn Observer>> = vec![
            Arc::new(observers::Gauges),
            inventory.clone(),
            Arc::new(files::Janitor::new(settings.files_dir(), quota.clone())),
        ];
        let namespace = Namespace::start(
            settings.clone(),
            cluster,
            inbound,
            Observers::new(observers),
        );
        let vpn = Vpn::start(vpn_settings, auth.store().clone(), auth.clone());
        let jobs = Jobs::start(
            &settings,
            namespace.clone(),
            inventory.clone(),
            ledger,
            store,
        );
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            namespace: namespace.clone(),
            auth: auth.clone(),
            vpn,
            inventory,
            jobs,
            polling: Arc::default(),
        });
        let files = web::Data::new(files::Files::new(
            &settings,
            namespace.clone(),
            auth.clone(),
            quota,
            files_lock,
        ));
        let app_state = state.clone();
        let app = move || {
            actix_web::App::new()
                .app_data(app_state.clone())
                .app_data(files.clone())
                .route("/ws", web::route().to(http::websocket_without_upgrade))
                .service(
                    web::resource(["/socket.io/", "/socket.io"])
                        .wrap(origin::cors(&app_state.settings))
                        .to(http::socketio_without_upgrade),
                )
                .route("/healthz", web::get().to(http::healthz))
                .route("/readyz", web::get().to(http::readyz))
                .route("/version", web::get().to(http::version))
                .route("/metrics", web::get().to(http::metrics))
                .route("/vpn/conf", web::get().to(http::vpn_conf))
                .route("/vpn/peers", web::get().to(http::vpn_peers))
                .configure(login::routes)
                .configure(admin_api::routes)
                .configure(jobs_api::routes)
                .service(
                    web::scope("/fs")
                        .wrap(origin::cors(&app_state.settings))
                        .configure(files::routes),
                )
                .configure(console::routes)
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
        let secure = tls.is_some();
        let server = match tls {
            None => server.listen("concierge", listener, move || {
                http_service!(TcpStream, state, stopping, app).tcp()
            }),
            Some(config) => server.listen("concierge", listener, move || {
                http_service!(TlsStream<TcpStream>, state, stopping, app).rustls_0_23_with_config(
                    config.clone(),
                    TlsAcceptorConfig::default().handshake_timeout(TLS_HANDSHAKE_TIMEOUT),
                )
            }),
        };
        let server = server.map_err(cannot_listen)?;
        Ok(Gateway {
            addrs,
            server: server.run(),
            namespace,
            settings,
            tls: secure,
            auth,
        })
    }

    /// Installs the SIGINT and SIGTERM handlers at once and returns the
    /// server to await: it runs until one of them, then shuts down
    /// gracefully. Report the gateway ready only after calling this, or a
    /// signal sent as soon as it is reported kills the process outright.
    pub fn run_until_signalled(self) -> Server {
        let signal = wait_for_signal();
        self.announce();
        let handle = self.server.handle();
        let namespace = self.namespace.clone();
        actix_web::rt::spawn(async move {
            signal.await;
            shutdown(handle, namespace).await;
        });
        self.server
    }
}

impl Gateway {
    /// The start-up log: where clients, people and Prometheus reach the
    /// gateway, and one warning when anybody may connect. A supervisor (and
    /// the tests) take the first line as the sign that it is ready.
    fn announce(&self) {
        let (ws, http) = match self.tls {
            true => ("wss", "https"),
            false => ("ws", "http"),
        };
        for addr in &self.addrs {
            tracing::info!(%addr, "listening: {ws}://{addr}/ws");
            tracing::info!("console: {http}://{addr}/console/");
            tracing::info!("metrics: {http}://{addr}/metrics");
        }
        if !self.auth.required() {
            tracing::warn!(
                "open gateway: no token is required, so anyone who reaches it may connect, \
                 command agents that allow anonymous clients and read /metrics; create an \
                 account (concierge user add NAME --role admin --local) or set require_auth = true"
            );
        }
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

/// Stops accepting, closes every session with the cluster's departure code
/// (1001 alone; 1012 in a cluster, so clients reconnect through the load
/// balancer to another replica), leaves the cluster at once once their
/// departures are written, and waits (up to `shutdown_timeout_secs`) for
/// connections to finish.
pub async fn shutdown(handle: ServerHandle, namespace: Namespace) {
    handle.pause().await;
    let closed = namespace.close_all(Duration::from_secs(1)).await;
    tracing::info!(sessions = closed, "closed sessions");
    namespace.deregister().await;
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
/// (dead, or alive but not reading) after the heartbeat timeout, so a stuck
/// session or download cannot hold its socket forever. Set on every
/// accepted connection.
fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}
