//! The WebSocket transport under a session actor.
//!
//! actix-web-actors' `WebsocketContext` encodes every outgoing frame into a
//! fresh buffer each time the actor is polled, and the HTTP/1 dispatcher then
//! copies that buffer into its own: two copies per delivery, and a buffer
//! regrown from nothing on every poll (37 % of the gateway's time in a
//! fan-out went to `memmove` and `realloc`, see `docs/BENCHMARKS.md`). It
//! also runs the actor inside the response stream, so the actor learns
//! nothing about how far the socket has got.
//!
//! Here the session is a plain actix actor and the transport is two halves:
//! - [`Incoming`] decodes the request body into WebSocket frames (behind the
//!   [`FrameGuard`](crate::frame_guard::FrameGuard)) for the actor's
//!   `StreamHandler`;
//! - a queue of frames that are already encoded ([`Frame`] is stored
//!   framed): the client's outbox pushes into it directly from the
//!   registry's thread (no actor message, no allocation per delivery), the
//!   session pushes its own control frames through [`Outgoing`], and
//!   [`Body`], the dispatcher's end, hands each frame's shared bytes to the
//!   dispatcher, which copies them once, into its write buffer.
//!
//! Because the queue sits in front of the socket, the session knows when
//! its frames reach it. The heartbeat uses that: a ping queued behind a
//! backlog the client is still reading is not counted against the client.

use std::cell::Cell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame as WsFrame, OpCode, Parser, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::outbox::{Frame, FrameSink, SinkError};
use crate::protocol::{Close, CloseCode};

/// A queue grown past this many entries by a burst is given back once it
/// empties, so an idle connection does not keep its peak.
const KEPT_QUEUE_CAPACITY: usize = 16;

/// Likewise for the buffer incoming frames are decoded from.
const KEPT_READ_CAPACITY: usize = 4096;

/// Longest close reason a WebSocket close frame can carry.
const MAX_CLOSE_REASON: usize = 123;

/// Decodes a request body into WebSocket frames.
pub struct Incoming<S> {
    inner: S,
    codec: Codec,
    buf: BytesMut,
    ended: bool,
}

impl<S> Incoming<S> {
    pub fn new(inner: S, max_frame_size: usize) -> Self {
        Incoming {
            inner,
            codec: Codec::new().max_size(max_frame_size),
            buf: BytesMut::new(),
            ended: false,
        }
    }
}

impl<S> Stream for Incoming<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<WsFrame, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // A frame already buffered comes first: the body may have ended
            // after delivering it.
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(std::io::Error::other(
                        e.to_string(),
                    )))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    if this.buf.is_empty() && this.buf.capacity() > KEPT_READ_CAPACITY {
                        // Give back what a large frame grew while idle.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Where the last ping the session sent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ping {
    /// None outstanding (or answered).
    None,
    /// Still in the queue, behind frames the client has not read yet.
    Queued,
    /// Handed to the socket at this moment.
    Written(Instant),
}

enum Item {
    /// A frame from the outbox: counts towards the client's queue bound.
    Data(Bytes),
    /// A frame the session itself sends (pong, close).
    Control(Bytes),
    /// The session's heartbeat ping.
    Ping(Bytes),
}

/// The queue itself, shared by the outbox (on the registry's thread), the
/// session and the body (both on the connection's worker thread).
struct Queue {
    items: VecDeque<Item>,
    /// How many of `items` are data frames, and how many may be.
    data: usize,
    capacity: usize,
    /// No frame is queued after this; the body ends once the queue drains.
    ended: bool,
    waker: Option<Waker>,
}

impl Queue {
    /// Queues an item and returns the body's waker if it was waiting; wake
    /// it after releasing the lock.
    fn push(&mut self, item: Item) -> Option<Waker> {
        if self.ended {
            return None;
        }
        if let Item::Data(_) = item {
            self.data += 1;
        }
        self.items.push_back(item);
        self.waker.take()
    }

    /// Drops every queued frame.
    fn discard(&mut self) {
        self.items = VecDeque::new();
        self.data = 0;
    }

    /// Queues a close frame and ends the queue there (nothing if it has
    /// ended already). With `drop_backlog` the frames still queued are
    /// dropped first: a client closed for not reading will not read them,
    /// and their memory is freed at once.
    fn close(&mut self, reason: Option<CloseReason>, drop_backlog: bool) -> Option<Waker> {
        if self.ended {
            return None;
        }
        if drop_backlog {
            self.discard();
        }
        let mut wire = BytesMut::new();
        Parser::write_close(&mut wire, reason, false);
        self.items.push_back(Item::Control(wire.freeze()));
        self.end()
    }

    /// Closes with one of the gateway's codes. Clients closed for not
    /// keeping up (1008) or not answering (4009) lose their backlog.
    fn close_with(&mut self, close: &Close) -> Option<Waker> {
        let mut description = close.reason.clone();
        if description.len() > MAX_CLOSE_REASON {
            let mut end = MAX_CLOSE_REASON;
            while !description.is_char_boundary(end) {
                end -= 1;
            }
            description.truncate(end);
        }
        let reason = CloseReason {
            code: close.code.code().into(),
            description: Some(description),
        };
        let drop_backlog = matches!(close.code, CloseCode::Policy | CloseCode::HeartbeatFailed);
        self.close(Some(reason), drop_backlog)
    }

    fn end(&mut self) -> Option<Waker> {
        self.ended = true;
        self.waker.take()
    }
}

type Shared = Arc<Mutex<Queue>>;

fn lock(queue: &Shared) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock leaves the queue consistent (every
    // method finishes its update before anything that could panic).
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// What the session and the body know of the heartbeat, on their thread.
struct Progress {
    ping: Cell<Ping>,
    /// When the dispatcher last took a frame.
    last_taken: Cell<Instant>,
}

/// The outbox's end of a WebSocket: frames go straight into the queue the
/// dispatcher drains, from whatever thread the registry runs on, with no
/// actor message per delivery.
struct Sink(Shared);

impl FrameSink for Sink {
    fn push(&self, frame: &Frame) -> Result<usize, SinkError> {
        let mut queue = lock(&self.0);
        if queue.ended {
            return Err(SinkError::Closed);
        }
        if queue.data >= queue.capacity {
            return Err(SinkError::Full);
        }
        let waker = queue.push(Item::Data(frame.wire()));
        let depth = queue.data;
        drop(queue);
        wake(waker);
        Ok(depth)
    }

    fn close(&self, close: &Close) {
        let waker = lock(&self.0).close_with(close);
        wake(waker);
    }
}

/// The session's end of its socket.
pub struct Outgoing {
    queue: Shared,
    progress: Rc<Progress>,
}

impl Outgoing {
    /// A queue holding at most `capacity` data frames, the sink the
    /// client's outbox pushes them into, and the response body that drains
    /// it.
    pub fn new(capacity: usize) -> (Outgoing, Arc<dyn FrameSink>, Body) {
        let queue = Arc::new(Mutex::new(Queue {
            items: VecDeque::new(),
            data: 0,
            capacity,
            ended: false,
            waker: None,
        }));
        let progress = Rc::new(Progress {
            ping: Cell::new(Ping::None),
            last_taken: Cell::new(Instant::now()),
        });
        let body = Body {
            queue: queue.clone(),
            progress: progress.clone(),
        };
        let sink = Arc::new(Sink(queue.clone()));
        (Outgoing { queue, progress }, sink, body)
    }

    pub fn pong(&self, payload: &[u8]) {
        let waker = lock(&self.queue).push(Item::Control(encode(payload, OpCode::Pong)));
        wake(waker);
    }

    /// Sends a heartbeat ping, unless one is still outstanding.
    pub fn ping(&self) {
        if self.progress.ping.get() != Ping::None {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.ended {
            return;
        }
        if queue.items.is_empty() {
            // The dispatcher was not behind: nothing to wait for.
            self.progress.last_taken.set(Instant::now());
        }
        self.progress.ping.set(Ping::Queued);
        let waker = queue.push(Item::Ping(encode(b"", OpCode::Ping)));
        drop(queue);
        wake(waker);
    }

    /// Forgets the outstanding ping: the client has shown it is alive.
    pub fn heard_from_client(&self) {
        self.progress.ping.set(Ping::None);
    }

    /// Whether the session's own backlog explains why the client has not
    /// answered: frames are still queued and the socket took one within
    /// `limit` (so the client is reading what was sent before the ping), or
    /// the outstanding ping reached the socket less than `limit` ago. A
    /// client that stops reading fills its socket, the queue stops moving,
    /// and this turns false within `limit`.
    pub fn backlog_explains_silence(&self, limit: Duration) -> bool {
        let backlog = !lock(&self.queue).items.is_empty();
        let draining = backlog && self.progress.last_taken.get().elapsed() <= limit;
        draining || matches!(self.progress.ping.get(), Ping::Written(at) if at.elapsed() <= limit)
    }

    /// Queues a close frame echoing the client's, or for a WebSocket
    /// protocol error, after what is queued; nothing more is sent after it.
    pub fn close(&self, reason: Option<CloseReason>) {
        let waker = lock(&self.queue).close(reason, false);
        wake(waker);
    }

    /// Queues the close frame for one of the gateway's close codes.
    pub fn close_with(&self, close: &Close) {
        let waker = lock(&self.queue).close_with(close);
        wake(waker);
    }

    /// Ends the stream after what is queued (the session stopped).
    pub fn end(&self) {
        let waker = lock(&self.queue).end();
        wake(waker);
    }
}

fn encode(payload: &[u8], op: OpCode) -> Bytes {
    let mut wire = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut wire, payload, op, true, false);
    wire.freeze()
}

/// The dispatcher's end: the response body of the upgraded connection.
pub struct Body {
    queue: Shared,
    progress: Rc<Progress>,
}

impl Stream for Body {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = lock(&self.queue);
        let Some(item) = queue.items.pop_front() else {
            if queue.items.capacity() > KEPT_QUEUE_CAPACITY {
                queue.items.shrink_to(KEPT_QUEUE_CAPACITY);
            }
            if queue.ended {
                return Poll::Ready(None);
            }
            queue.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let bytes = match item {
            Item::Data(bytes) => {
                queue.data -= 1;
                bytes
            }
            Item::Control(bytes) => bytes,
            Item::Ping(bytes) => {
                if self.progress.ping.get() == Ping::Queued {
                    self.progress.ping.set(Ping::Written(Instant::now()));
                }
                bytes
            }
        };
        drop(queue);
        self.progress.last_taken.set(Instant::now());
        Poll::Ready(Some(Ok(bytes)))
    }
}

impl Drop for Body {
    /// The connection is gone: nothing queued will be written, and the
    /// outbox learns it is closed.
    fn drop(&mut self) {
        let mut queue = lock(&self.queue);
        queue.discard();
        queue.ended = true;
    }
}
