//! A concierge client connection, for the programs that talk to a gateway
//! as clients do: the host agent and `concierge ctl` (and the tests).
//!
//! It does the handshake (IDENTIFY, then HELLO or the close that refuses
//! it), then splits the socket: a [`Sender`] that any task may clone and
//! send through (one writer task owns the socket's sink, so concurrent
//! replies never interleave inside a frame), and a [`Receiver`] that yields
//! the gateway's payloads and turns a close into [`ClientError::Closed`] with
//! the gateway's code and reason.
//!
//! A text frame that is not a payload this client can decode (another
//! client's MESSAGE `data` that a gateway without the checks of
//! [`concierge_protocol::data`] let through, or a payload of a newer protocol)
//! is skipped, logged and counted ([`undecodable_frames`]), never a reason
//! to drop the connection: one such frame sent to `ALL` would otherwise
//! knock every agent and `ctl` off.
//!
//! Senders keep at most [`WINDOW`] requests unanswered. The gateway holds
//! the requests a client sends while an earlier one waits (a target
//! lookup, a Redis round trip) and closes a client with more than
//! `max_outgoing_queue` (1024) of them waiting with 1008 ("too fast"): an
//! agent answering a burst of requests from a client that has just left
//! (every reply then needs a lookup) was thrown off that way. Replies come
//! in request order, so the `seq` of each reply says how many requests
//! have been answered.
//!
//! A long-lived client resumes after a dropped connection with
//! [`resume::Resume`]: its name back at once, its subscriptions with the
//! history it missed.

pub mod context;
pub mod logging;
pub mod resume;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::{SplitStream, StreamExt};
use futures_util::SinkExt;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use concierge_protocol::{PayloadIn, PayloadOut, Sequenced, Target, PROTOCOL_VERSION};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames that may wait for the writer before senders wait too.
const SEND_QUEUE: usize = 256;

/// Most requests a connection keeps unanswered: well under the gateway's
/// default `max_outgoing_queue` (1024), the requests it holds for a client
/// before closing it.
pub const WINDOW: u64 = 256;

/// Text frames from the gateway that this process could not decode and
/// skipped, over all its connections.
static UNDECODABLE: AtomicU64 = AtomicU64::new(0);

/// How many frames from the gateway this process skipped because it could
/// not decode them (the agent reports it in its `ping` reply).
pub fn undecodable_frames() -> u64 {
    UNDECODABLE.load(Ordering::Relaxed)
}

/// Counts a skipped frame, warning on the 1st, 2nd, 4th, 8th...: a flood of
/// them logs a few lines, not one per frame.
fn skipped(error: &serde_json::Error, text: &str) {
    let count = UNDECODABLE.fetch_add(1, Ordering::Relaxed) + 1;
    if count.is_power_of_two() {
        tracing::warn!(%error, count, "skipped a frame from the gateway that is not a payload this client reads");
    }
    // The frame may be anyone's data: only at debug, and only its start.
    tracing::debug!(%error, frame = truncate(text, 200), "skipped frame");
}

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The gateway closed the connection; `code` is its close code.
    #[error("the gateway closed the connection: {code} {reason}")]
    Closed { code: u16, reason: String },
    /// The connection broke without a close frame.
    #[error("the connection to the gateway broke: {0}")]
    Broken(String),
    /// A payload could not be encoded (frames from the gateway that cannot
    /// be decoded are skipped, not errors).
    #[error("cannot encode a payload: {0}")]
    Protocol(String),
}

/// What a client identifies with.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub tags: Vec<String>,
    pub token: Option<String>,
    /// `false`: no CLIENT_JOINED / CLIENT_LEFT for this client.
    pub presence: bool,
    /// `false`: a name another connection holds is refused (`4005`), even
    /// one of the same user, instead of taken over.
    pub take_over: bool,
}

impl Identity {
    /// The IDENTIFY that says it, presenting `resume` (an earlier HELLO's
    /// secret).
    pub fn payload<'a>(&'a self, resume: Option<&'a str>) -> PayloadIn<'a> {
        PayloadIn::Identify {
            name: Cow::Borrowed(&self.name),
            nickname: None,
            version: Cow::Borrowed(PROTOCOL_VERSION),
            tags: self
                .tags
                .iter()
                .map(|t| Cow::Borrowed(t.as_str()))
                .collect(),
            secret: None,
            token: self.token.as_deref().map(Cow::Borrowed),
            presence: (!self.presence).then_some(false),
            resume: resume.map(Cow::Borrowed),
            take_over: (!self.take_over).then_some(false),
        }
    }
}

/// An identified connection, split for concurrent use.
pub struct Connection {
    pub uuid: Uuid,
    pub sender: Sender,
    pub receiver: Receiver,
}

/// Connects to `url` (`ws://` or `wss://`) and identifies. A client that
/// reconnects keeps its name and subscriptions with [`resume::Resume`].
pub async fn connect(url: &str, identity: &Identity) -> Result<Connection, ClientError> {
    Ok(identify(url, identity, None).await?.0)
}

/// Connects and identifies, presenting `resume` (an earlier HELLO's
/// secret): the connection and its HELLO's secret.
async fn identify(
    url: &str,
    identity: &Identity,
    resume: Option<&str>,
) -> Result<(Connection, Option<String>), ClientError> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| ClientError::Connect {
                url: url.to_owned(),
                reason: context::why_unreachable(&e),
            })?;
    let text = serde_json::to_string(&identity.payload(resume))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| ClientError::Broken(e.to_string()))?;
    let (sink, stream) = ws.split();
    let window = Arc::new(Window {
        sent: AtomicU64::new(0),
        answered: watch::Sender::new(0),
    });
    let mut receiver = Receiver {
        stream,
        window: window.clone(),
    };
    let (uuid, secret) = loop {
        match receiver.next().await?.payload {
            PayloadOut::Hello { uuid, resume, .. } => break (uuid, resume),
            // Nothing else comes before HELLO; tolerate it rather than fail.
            _ => continue,
        }
    };
    let (tx, mut rx) = mpsc::channel::<Message>(SEND_QUEUE);
    tokio::spawn(async move {
        let mut sink = sink;
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let connection = Connection {
        uuid,
        sender: Sender { tx, window },
        receiver,
    };
    Ok((connection, secret))
}

/// How many requests went out and how many the gateway answered (see the
/// module's doc).
struct Window {
    sent: AtomicU64,
    /// One more than the `seq` of the last reply read.
    answered: watch::Sender<u64>,
}

/// Sends payloads; clone it for every task that sends.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Message>,
    window: Arc<Window>,
}

impl Sender {
    /// Queues a payload once fewer than [`WINDOW`] requests wait for their
    /// reply; fails once the connection is gone.
    pub async fn send(&self, payload: &PayloadIn<'_>) -> Result<(), ClientError> {
        let text =
            serde_json::to_string(payload).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.take_a_place().await?;
        self.tx
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| ClientError::Broken("the connection is closed".into()))
    }

    /// Counts one more request sent, waiting while [`WINDOW`] are
    /// unanswered (or until the connection is gone).
    async fn take_a_place(&self) -> Result<(), ClientError> {
        let mut answered = self.window.answered.subscribe();
        loop {
            let done = *answered.borrow_and_update();
            let taken = self
                .window
                .sent
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |sent| {
                    (sent.saturating_sub(done) < WINDOW).then_some(sent + 1)
                });
            if taken.is_ok() {
                return Ok(());
            }
            tokio::select! {
                changed = answered.changed() => if changed.is_err() {
                    return Err(ClientError::Broken("the connection is closed".into()));
                },
                _ = self.tx.closed() => {
                    return Err(ClientError::Broken("the connection is closed".into()));
                }
            }
        }
    }

    /// A MESSAGE with `data` to `target`.
    pub async fn message(&self, target: Target, data: &Value) -> Result<(), ClientError> {
        let data: Box<RawValue> = concierge_protocol::raw_json(data);
        self.send(&PayloadIn::Message {
            target,
            data: &data,
        })
        .await
    }

    /// Closes the connection normally.
    pub async fn close(&self) {
        let _ = self.tx.send(Message::Close(None)).await;
    }
}

/// The gateway's payloads, in order.
pub struct Receiver {
    stream: SplitStream<Ws>,
    window: Arc<Window>,
}

impl Receiver {
    /// The next payload; pings are answered by the socket itself, and frames
    /// that are not payloads are skipped (see the module's doc).
    pub async fn next(&mut self) -> Result<Sequenced, ClientError> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Sequenced>(&text) {
                    Ok(payload) => {
                        if let Some(seq) = payload.seq {
                            self.window.answered.send_if_modified(|answered| {
                                let advanced = seq + 1 > *answered;
                                *answered = (*answered).max(seq + 1);
                                advanced
                            });
                        }
                        return Ok(payload);
                    }
                    Err(e) => skipped(&e, &text),
                },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Broken(e.to_string())),
                None => return Err(ClientError::Broken("the connection ended".into())),
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
