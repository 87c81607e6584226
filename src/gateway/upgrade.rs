//! Taking a WebSocket over from the HTTP server.
//!
//! A WebSocket upgrade request never reaches the actix-web application: the
//! HTTP/1 service hands it, with its socket, to [`take_over`], which answers
//! the handshake (RFC 6455, the subprotocol when offered, refusals as HTTP
//! errors that say why) and gives the socket to a session of the format its
//! path names (see [`super::formats`]), with its reader and writer (see
//! [`crate::transport::websocket`] for why the gateway owns its sockets).
//! The socket is plain TCP or TLS: everything here is generic over
//! [`Socket`], compiled once for each.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_http::{h1, ConnectionType, Request, RequestHead, Response, StatusCode};
use actix_web::web;
use bytes::Bytes;
use futures_util::SinkExt;

use super::formats::{self, Format, Start};
use super::origin;
use super::AppState;
use crate::adapters::socketio::{engine, SocketIo};
use crate::config::Settings;
use crate::protocol::SUBPROTOCOL;
use crate::session::Translator;
use crate::transport::frame_guard::{FrameGuard, FrameLimit};
use crate::transport::linger::{lend, linger, Returned};
use crate::transport::socket::Socket;
use crate::transport::websocket::{Incoming, SocketInput};

/// Answers a request that asked for a WebSocket upgrade and, once the
/// client has its 101, gives the socket to a new session. Refusals are
/// plain HTTP responses that say why (the status line's reason, or a body),
/// after which the connection is closed.
///
/// The returned future lives, inside the connection's task, as long as the
/// connection: the handshake, which needs the HTTP codec and its buffers,
/// runs in a future of its own that is freed once it is done.
pub(super) fn take_over<S: Socket>(
    state: web::Data<AppState>,
    req: Request,
    framed: Framed<S, h1::Codec>,
) -> impl Future<Output = Result<(), Infallible>> {
    let handshake = Box::pin(handshake(state.clone(), req, framed));
    async move {
        match handshake.await {
            Some((io, early, peer, Then::Start(format))) => {
                serve(&state, io, early, peer, format.start).await
            }
            Some((io, early, _, Then::Upgrade(entry))) => {
                let polling = state.polling.clone();
                engine::upgrade(polling, entry, state.settings.clone(), io, early).await
            }
            None => {}
        }
        Ok(())
    }
}

/// What an answered upgrade goes on with.
enum Then<S: Socket> {
    /// A new session of this format.
    Start(Format<S>),
    /// The Engine.IO polling session the query's `sid` names, moving to
    /// this WebSocket.
    Upgrade(Arc<engine::Entry>),
}

/// Answers the upgrade request. Once the 101 is sent: the socket, the
/// bytes read past the request, the peer's address and the format its
/// path names.
async fn handshake<S: Socket>(
    state: web::Data<AppState>,
    req: Request,
    mut framed: Framed<S, h1::Codec>,
) -> Option<(S, Bytes, String, Then<S>)> {
    let format = formats::of_path::<S>(req.path());
    // An Engine.IO upgrade names the polling session it moves.
    let sid = format
        .as_ref()
        .filter(|f| f.paths == SocketIo::PATHS)
        .and_then(|_| engine::Query::parse(req.uri().query()).sid);
    let upgrading = sid.map(|sid| state.polling.get(sid));
    let response = match &format {
        None => Err(refusal(
            StatusCode::NOT_FOUND,
            formats::paths_refusal::<S>(),
        )),
        Some(_) if !origin::allowed(&req.head().headers, &state.settings) => {
            Err(refusal(StatusCode::FORBIDDEN, origin::REFUSED))
        }
        Some(format) => match (format.refused)(req.uri().query()) {
            Some(why) => Err(refusal(StatusCode::BAD_REQUEST, why)),
            None if matches!(upgrading, Some(None)) => {
                Err(refusal(StatusCode::BAD_REQUEST, engine::UNKNOWN_SID))
            }
            None => accept(req.head()),
        },
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
    let then = match upgrading {
        Some(entry) => Then::Upgrade(entry?),
        None => Then::Start(format?),
    };
    Some((io, early, peer, then))
}

/// Runs a WebSocket connection: a session of its format reading from the
/// socket, and its writer, until both are done.
async fn serve<S: Socket>(state: &AppState, io: S, early: Bytes, peer: String, start: Start<S>) {
    // A frame is written as soon as it is queued, and frames queued
    // together already leave in one write: Nagle's algorithm would only
    // hold small frames back until the previous ones are acknowledged.
    if let Err(e) = io.tcp().set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (input, output) = io.split();

    // Every client starts at max_frame_size; an adapter's session raises
    // its host's limit once it is in. The decoder's own bound is the
    // highest either can be: the guard holds each frame to the limit of
    // the moment.
    let settings = &state.settings;
    let limit = FrameLimit::new(settings.max_frame_size);
    let input = Incoming::new(
        FrameGuard::new(SocketInput::<S>::new(input, early), limit.clone()),
        settings.max_frame_size.max(settings.adapter_max_frame_size),
    );
    let (input, returned) = lend(input);
    let writer = start(state, input, peer, limit);
    writer.write_to(output).await;
    // Boxed: this future lives in the connection's task, which is sized for
    // its largest state, so the close's timeout inline would make every idle
    // connection pay for it (see docs/BENCHMARKS.md, "Idle connections").
    Box::pin(close_lingering(&state.settings, returned)).await;
}

/// Once the writer is done (the close frame and a FIN are sent), reads
/// what the client still sends until it answers or closes, for at most
/// `close_linger_ms`, so that dropping the socket does not reset the
/// connection under the close frame (see [`crate::transport::linger`]).
async fn close_lingering<S: Socket>(
    settings: &Settings,
    returned: Returned<Incoming<FrameGuard<SocketInput<S>>>>,
) {
    let limit = settings.close_linger();
    // One bound for both: the session drops its input as it stops, right
    // after its close, and then the client has what is left to answer.
    let lingering = async {
        if let Ok(input) = returned.await {
            linger(*input).await;
        }
    };
    if tokio::time::timeout(limit, lingering).await.is_err() {
        tracing::debug!(
            limit_ms = limit.as_millis() as u64,
            "the client neither answered the close frame nor closed: closing the socket"
        );
    }
}

/// The socket of an answered upgrade, and the bytes the dispatcher read
/// past the request (frames the client sent without waiting for the 101).
/// The dispatcher's two buffers are freed here.
fn into_socket<S: Socket>(framed: Framed<S, h1::Codec>) -> (S, Bytes) {
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
async fn refuse<S: Socket>(
    mut framed: Framed<S, h1::Codec>,
    mut response: Response<()>,
    body: &'static str,
) {
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    // Head and body in one write: a WebSocket client that reads the
    // refusal's head may not wait for a body sent after it.
    let sent = async {
        let size = BodySize::Sized(body.len() as u64);
        framed.feed((response, size).into()).await?;
        if !body.is_empty() {
            framed
                .feed(h1::Message::Chunk(Some(Bytes::from_static(
                    body.as_bytes(),
                ))))
                .await?;
        }
        framed.feed(h1::Message::Chunk(None)).await?;
        framed.flush().await
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "cannot refuse a WebSocket upgrade");
    }
}
