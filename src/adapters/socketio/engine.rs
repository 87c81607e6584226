//! Engine.IO v4's long-polling transport, and its upgrade to a WebSocket.
//!
//! socket.io.js (the Altoponix pages' client) connects with long-polling
//! first: `GET /socket.io/?EIO=4&transport=polling` opens a session and
//! answers its open packet with a `sid`; then each `GET ...&sid=` waits for
//! what the server has to send, and each `POST ...&sid=` carries what the
//! client sends, several packets separated by `\x1e`. Once connected it
//! opens `ws...&transport=websocket&sid=`, probes it (`2probe`, answered
//! `3probe`), stops polling (a `GET` still waiting is answered `6`, noop)
//! and sends `5`: from then on the session speaks over the WebSocket.
//!
//! There is one Socket.IO translator ([`super::SocketIo`]) on the one
//! session core: a polling client is a `Session<SocketIo>` like a
//! WebSocket client, whose input is a bounded channel the `POST`s feed and
//! whose output is a [`Pipe`] the `GET`s drain. The upgrade hands the same
//! session the WebSocket: its input goes into the same channel, and what
//! the session wrote and no `GET` took goes to the socket first, so the
//! client keeps its sid and its place in the namespace, and nothing is
//! lost or sent twice. The session's heartbeat (Engine.IO's ping `2`, the
//! client's `3`) closes a client that stops polling, as it closes a
//! WebSocket client that stops answering, and it leaves the namespace.
//!
//! Bounded: at most [`MAX_SESSIONS`] polling sessions, [`MAX_PER_PEER`]
//! from one address; a `POST` body at most `max_frame_size` bytes (the
//! open packet's `maxPayload`: more is a 413 and the session's end); the
//! input channel [`INPUT_QUEUE`] packets (a `POST` waits for room); the
//! pipe a few frames' worth of bytes, then the session's own bounded queue.
//! Requests that break the transport's rules end the session as the
//! reference server (engine.io) does: a second `GET` or `POST` while one
//! is pending, a body too large.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use actix_http::ws::{Frame as WsFrame, OpCode, ProtocolError};
use actix_web::http::header::HeaderName;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::SocketIo;
use crate::config::Settings;
use crate::session::Session;
use crate::transport::frame_guard::{FrameGuard, FrameLimit};
use crate::transport::polling::{Pipe, Read};
use crate::transport::socket::{Socket, SocketOutput};
use crate::transport::websocket::{encode, Incoming, SocketInput};

/// Most polling sessions at once, on this replica.
pub const MAX_SESSIONS: usize = 10_000;

/// Most polling sessions from one address (the client's, through
/// `trusted_proxies`).
pub const MAX_PER_PEER: usize = 64;

/// Packets the client sent that the session has not read yet.
pub const INPUT_QUEUE: usize = 64;

/// A header on the handshake's answer naming the new session's sid, for a
/// load balancer in front of several replicas: it learns which replica
/// holds the sid from it and sends every later request naming that sid
/// (`?sid=`, polling or the upgrade) there (deploy/haproxy.cfg). Engine.IO
/// clients ignore it.
pub const SID_HEADER: &str = "x-concierge-sid";

/// What a session reads: the client's packets as WebSocket frames.
type Input = Result<WsFrame, ProtocolError>;

/// The polling sessions, by sid.
#[derive(Default)]
pub struct Polling(Mutex<Sessions>);

#[derive(Default)]
struct Sessions {
    by_sid: HashMap<String, Arc<Entry>>,
    per_peer: HashMap<IpAddr, usize>,
}

/// One polling session's transport.
pub struct Entry {
    sid: String,
    peer: IpAddr,
    input: mpsc::Sender<Input>,
    pipe: Pipe,
    /// A `GET` is waiting.
    getting: AtomicBool,
    /// A `POST` is being read.
    posting: AtomicBool,
    /// A WebSocket is probing to take over (one at a time).
    upgrading: AtomicBool,
}

/// A request's Engine.IO query.
#[derive(Default)]
pub struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    pub fn parse(query: Option<&'a str>) -> Query<'a> {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("EIO", v)) => q.eio = Some(v),
                Some(("transport", v)) => q.transport = Some(v),
                Some(("sid", v)) => q.sid = Some(v),
                _ => {}
            }
        }
        q
    }
}

/// Engine.IO's error answer: `{"code", "message"}`.
pub fn error(status: StatusCode, code: u8, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "code": code, "message": message }))
}

fn unknown_sid() -> HttpResponse {
    error(StatusCode::BAD_REQUEST, 1, "Session ID unknown")
}

/// The body of a `400` to a WebSocket upgrade naming no polling session.
pub const UNKNOWN_SID: &str = "{\"code\":1,\"message\":\"Session ID unknown\"}";

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Polling {
    pub fn get(&self, sid: &str) -> Option<Arc<Entry>> {
        guard(&self.0).by_sid.get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        let mut sessions = guard(&self.0);
        if let Some(entry) = sessions.by_sid.remove(sid) {
            if let Some(n) = sessions.per_peer.get_mut(&entry.peer) {
                *n -= 1;
                if *n == 0 {
                    sessions.per_peer.remove(&entry.peer);
                }
            }
        }
    }

    /// A `GET` or `POST` on `/socket.io/` that is not a WebSocket upgrade
    /// (the query is checked already: `EIO=4&transport=polling`).
    pub async fn request(
        self: &Arc<Self>,
        state: &crate::gateway::AppState,
        method: &Method,
        sid: Option<&str>,
        peer: IpAddr,
        body: web::Payload,
    ) -> HttpResponse {
        let settings = &state.settings;
        let Some(sid) = sid else {
            if method != Method::GET {
                return error(StatusCode::BAD_REQUEST, 2, "Bad handshake method");
            }
            return match self.open(state, peer) {
                Ok(entry) => {
                    let mut answer = entry.poll(settings, self).await;
                    if let Ok(sid) = entry.sid.parse() {
                        answer
                            .headers_mut()
                            .insert(HeaderName::from_static(SID_HEADER), sid);
                    }
                    answer
                }
                Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, 3, &why),
            };
        };
        let Some(entry) = self.get(sid) else {
            return unknown_sid();
        };
        match *method {
            Method::GET => entry.poll(settings, self).await,
            Method::POST => entry.post(settings, body).await,
            _ => error(StatusCode::BAD_REQUEST, 3, "Bad request"),
        }
    }

    /// Starts a session for a handshake; or why not (too many).
    fn open(
        self: &Arc<Self>,
        state: &crate::gateway::AppState,
        peer: IpAddr,
    ) -> Result<Arc<Entry>, String> {
        let settings = &state.settings;
        let sid = Uuid::new_v4().simple().to_string();
        let (input, received) = mpsc::channel(INPUT_QUEUE);
        // Room for a few of the largest frames: the writer waits past it.
        let pipe = Pipe::new(4 * settings.max_frame_size.max(16 * 1024));
        let entry = Arc::new(Entry {
            sid: sid.clone(),
            peer,
            input,
            pipe: pipe.clone(),
            getting: AtomicBool::new(false),
            posting: AtomicBool::new(false),
            upgrading: AtomicBool::new(false),
        });
        {
            let mut sessions = guard(&self.0);
            let from_peer = sessions.per_peer.get(&peer).copied().unwrap_or(0);
            if sessions.by_sid.len() >= MAX_SESSIONS || from_peer >= MAX_PER_PEER {
                return Err(format!(
                    "too many polling sessions ({MAX_SESSIONS} in all, {MAX_PER_PEER} from one \
                     address): try again later, or connect with the websocket transport"
                ));
            }
            sessions.by_sid.insert(sid.clone(), entry.clone());
            *sessions.per_peer.entry(peer).or_insert(0) += 1;
        }
        let (mut session, writer) = Session::<SocketIo>::new(
            settings.clone(),
            state.namespace.clone(),
            state.auth.clone(),
            state.vpn.clone(),
            (
                state.inventory.clone(),
                state.jobs.clone(),
                state.alerts.clone(),
            ),
            &peer.to_string(),
            FrameLimit::new(settings.max_frame_size),
        );
        session.format.polled(sid.clone());
        let received = futures_util::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|input| (input, received))
        });
        Session::create(move |ctx| {
            ctx.add_stream(received);
            session
        });
        // Once the session is done and its last packets had a moment to be
        // fetched, the sid is forgotten.
        let polling = self.clone();
        let grace = settings.heartbeat_interval();
        actix_web::rt::spawn(async move {
            writer.write_to(pipe.output()).await;
            actix_web::rt::time::sleep(grace).await;
            polling.remove(&sid);
        });
        Ok(entry)
    }
}

/// Clears a flag when a request is done (or dropped).
struct Pending<'a>(&'a AtomicBool);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Entry {
    /// Ends the session for breaking the transport's rules (`error` is
    /// what its input reports).
    fn break_off(&self, error: ProtocolError) {
        // A full channel is a session still busy with the client's packets:
        // the interrupt below still ends a waiting GET, and the heartbeat
        // the session.
        let _ = self.input.try_send(Err(error));
        self.pipe.interrupt();
    }

    /// A `GET`: what the session has to send, once it has something.
    async fn poll(&self, settings: &Settings, polling: &Polling) -> HttpResponse {
        if self.getting.swap(true, Ordering::AcqRel) {
            self.break_off(ProtocolError::Io(io::Error::other(
                "a second GET while one was pending",
            )));
            return error(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        let _pending = Pending(&self.getting);
        let body = match self.pipe.frames(settings.max_frame_size).await {
            Read::Frames(frames) => {
                let mut body = BytesMut::new();
                for (i, frame) in frames.iter().enumerate() {
                    if i > 0 {
                        body.extend_from_slice(b"\x1e");
                    }
                    body.extend_from_slice(frame);
                }
                body.freeze()
            }
            Read::Interrupted => Bytes::from_static(b"6"),
            Read::Ended => {
                polling.remove(&self.sid);
                Bytes::from_static(b"1")
            }
        };
        HttpResponse::Ok()
            .content_type("text/plain; charset=UTF-8")
            .body(body)
    }

    /// A `POST`: the client's packets, for the session.
    async fn post(&self, settings: &Settings, mut body: web::Payload) -> HttpResponse {
        if self.posting.swap(true, Ordering::AcqRel) {
            self.break_off(ProtocolError::Io(io::Error::other(
                "a second POST while one was pending",
            )));
            return error(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        let _pending = Pending(&self.posting);
        let max = settings.max_frame_size;
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else {
                return error(StatusCode::BAD_REQUEST, 3, "Bad request");
            };
            if data.len() + chunk.len() > max {
                self.break_off(ProtocolError::Overflow);
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    3,
                    &format!("a POST carries at most maxPayload ({max}) bytes"),
                );
            }
            data.extend_from_slice(&chunk);
        }
        let data = data.freeze();
        for packet in data.split(|b| *b == 0x1e) {
            let frame = WsFrame::Text(data.slice_ref(packet));
            if self.input.send(Ok(frame)).await.is_err() {
                return unknown_sid();
            }
        }
        HttpResponse::Ok().content_type("text/html").body("ok")
    }
}

/// A WebSocket that upgrades a polling session: probed (`2probe`,
/// `3probe`) while the client still polls, then, at the client's `5`, the
/// session's transport. A client that does not finish the upgrade within
/// the heartbeat timeout keeps polling, and this socket is closed.
pub async fn upgrade<S: Socket>(
    polling: Arc<Polling>,
    entry: Arc<Entry>,
    settings: Arc<Settings>,
    io: S,
    early: Bytes,
) {
    if let Err(e) = io.tcp().set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (input, mut output) = io.split();
    if entry.upgrading.swap(true, Ordering::AcqRel) {
        tracing::debug!(sid = %entry.sid, "a second upgrade of one session: closed");
        let _ = output.shutdown().await;
        return;
    }
    let max = settings.max_frame_size;
    let limit = FrameLimit::new(max);
    let mut incoming = Incoming::new(
        FrameGuard::new(SocketInput::<S>::new(input, early), limit.clone()),
        max,
    );
    let probed = async {
        let mut probed = false;
        while let Some(frame) = incoming.next().await {
            let answer = match frame {
                Ok(WsFrame::Text(text)) if &text[..] == b"2probe" => {
                    probed = true;
                    // A GET still waiting is answered (noop), so the client
                    // can pause polling.
                    entry.pipe.interrupt();
                    encode(b"3probe", OpCode::Text)
                }
                Ok(WsFrame::Text(text)) if &text[..] == b"5" && probed => return true,
                Ok(WsFrame::Ping(data)) => encode(&data, OpCode::Pong),
                _ => return false,
            };
            if output.write_all(&answer).await.is_err() {
                return false;
            }
        }
        false
    };
    let upgraded = matches!(
        actix_web::rt::time::timeout(settings.heartbeat_timeout(), probed).await,
        Ok(true)
    );
    if !upgraded {
        tracing::debug!(sid = %entry.sid, "an upgrade was not completed: polling goes on");
        entry.pipe.resume();
        entry.upgrading.store(false, Ordering::Release);
        let _ = output.shutdown().await;
        return;
    }
    // The registry lets go of the session's input: once this socket's
    // input ends, the session's does.
    polling.remove(&entry.sid);
    let sender = entry.input.clone();
    let pipe = entry.pipe.clone();
    drop(entry);
    tracing::debug!("a polling session moved to a WebSocket");
    let copying = async {
        while let Some(bytes) = pipe.bytes().await {
            if output.write_all(&bytes).await.is_err() {
                let _ = output.cut_off();
                return;
            }
        }
        let _ = output.shutdown().await;
    };
    let reading = async move {
        while let Some(frame) = incoming.next().await {
            let frame = match frame {
                Err(_) if limit.oversized() => Err(ProtocolError::Overflow),
                other => other,
            };
            let last = frame.is_err();
            if sender.send(frame).await.is_err() || last {
                break;
            }
        }
    };
    futures_util::pin_mut!(copying, reading);
    match select(copying, reading).await {
        // The session is done: its close is written; the client's answer
        // is read for a moment, so the socket is not reset under it.
        Either::Left(((), reading)) => {
            let _ = actix_web::rt::time::timeout(settings.close_linger(), reading).await;
        }
        // The client is gone: the session's input has ended, it stops and
        // its writer ends the pipe.
        Either::Right(((), copying)) => copying.await,
    }
}
