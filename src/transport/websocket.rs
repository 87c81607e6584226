//! The WebSocket transport under a session actor.
//!
//! The gateway takes the socket over once the upgrade is answered (see
//! `crate::gateway`): actix-http's HTTP/1 dispatcher keeps two 8 KiB buffers
//! per connection for as long as it lives, and it copies every outgoing
//! frame into its write buffer. A connection here owns no buffer while it
//! is idle, and a frame goes from the shared bytes of its broadcast to the
//! kernel without being copied (see `docs/BENCHMARKS.md`).
//!
//! The socket, plain TCP or TLS ([`Socket`]), is split in two halves:
//! - [`SocketInput`] reads what arrives, [`Incoming`] decodes it into
//!   WebSocket frames (behind the [`FrameGuard`](crate::transport::frame_guard::FrameGuard))
//!   for the session actor's `StreamHandler`;
//! - a queue of frames that are already encoded ([`Frame`] is stored
//!   framed): the client's outbox pushes into it directly from the
//!   registry's thread (no actor message, no allocation per delivery), the
//!   session pushes its own control frames through [`Outgoing`], and
//!   [`Writer`] hands batches of them to the socket in one vectored write.
//!
//! Because the queue sits in front of the socket, the session knows when
//! its frames reach it. The heartbeat uses that: a ping queued behind a
//! backlog the client is still reading is not counted against the client.
//!
//! The client's own pings are answered here too, and cost what any frame
//! costs: each pong waits in the queue under the client's bound (a client
//! that pings and does not read is closed with 1008, as one that does not
//! read its data is), and a ping is a sign of life only while the frames
//! to the client keep moving. Otherwise a client that never reads could
//! keep itself alive, and grow the gateway's memory, by pinging.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame as WsFrame, OpCode, Parser, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};

use crate::protocol::{Close, CloseCode};
use crate::transport::outbox::{Frame, FrameSink, SinkError};
use crate::transport::socket::{Socket, SocketOutput};

/// A queue grown past this many entries by a burst is given back once it
/// empties, so an idle connection does not keep its peak.
const KEPT_QUEUE_CAPACITY: usize = 16;

/// Most bytes taken from the socket per read. The buffer is on the stack:
/// what arrives is copied out at once, so an idle connection holds none.
const READ_CHUNK: usize = 4096;

/// Most turns of the thread's run queue a woken writer lets go by before it
/// writes (see `Writing::poll`).
const MAX_TURNS: u8 = 3;

/// Entries of the batch an idle writer keeps.
const KEPT_BATCH_CAPACITY: usize = 4;

/// Most frames handed to the socket per vectored write.
const WRITE_BATCH: usize = 64;

/// Longest close reason a WebSocket close frame can carry.
const MAX_CLOSE_REASON: usize = 123;

/// Decodes the bytes a client sends into WebSocket frames.
pub struct Incoming<S> {
    inner: S,
    codec: Codec,
    buf: BytesMut,
    ended: bool,
    /// The client's close frame has been decoded.
    client_closed: bool,
    /// Decoding failed: what follows is not in step with the frames.
    failed: bool,
}

impl<S> Incoming<S> {
    pub fn new(inner: S, max_frame_size: usize) -> Self {
        Incoming {
            inner,
            codec: Codec::new().max_size(max_frame_size),
            buf: BytesMut::new(),
            ended: false,
            client_closed: false,
            failed: false,
        }
    }

    /// Whether the client's close frame has been read.
    pub fn client_closed(&self) -> bool {
        self.client_closed
    }

    /// Whether decoding failed (and the stream ended there).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The bytes underneath, for a lingering close after a frame the
    /// decoder refused (see [`crate::transport::linger`]).
    pub fn into_raw(self) -> S {
        self.inner
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
            // A frame already buffered comes first: the input may have
            // ended after delivering it.
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => {
                    this.client_closed |= matches!(frame, WsFrame::Close(_));
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                // Usually nothing is left over from the last read: the
                // chunk becomes the buffer without a copy.
                Poll::Ready(Some(Ok(chunk))) if this.buf.is_empty() => {
                    this.buf = BytesMut::from(chunk)
                }
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.failed = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(std::io::Error::other(
                        e.to_string(),
                    )))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    if this.buf.is_empty() {
                        // Hold no memory while waiting for the client.
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The read half of an upgraded connection as a stream of chunks, starting
/// with what the HTTP/1 dispatcher had read past the upgrade request (a
/// client may send frames without waiting for the 101).
pub struct SocketInput<S: Socket> {
    io: S::Input,
    early: Option<Bytes>,
}

impl<S: Socket> SocketInput<S> {
    pub fn new(io: S::Input, early: Bytes) -> Self {
        SocketInput {
            io,
            early: Some(early).filter(|b| !b.is_empty()),
        }
    }
}

impl<S: Socket> Stream for SocketInput<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(early) = self.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where the last ping the session sent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ping {
    /// None outstanding (or answered).
    None,
    /// Still queued, behind frames the client has not read yet.
    Queued,
    /// Written to the socket at this moment.
    Written(Instant),
}

enum Item {
    /// A frame that counts towards the client's queue bound: one from the
    /// outbox, or a pong answering the client's ping.
    Bounded(Bytes),
    /// The close frame: the one frame a stuck client must still get.
    Close(Bytes),
    /// The session's heartbeat ping (one at a time).
    Ping(Bytes),
}

/// What the writer waits for, if anything.
enum Waiting {
    No,
    /// More frames: any push wakes it.
    ForFrames(Waker),
    /// The socket to take more: only a close that gives up on the client
    /// wakes it (a push would only make it try the full socket again).
    OnSocket(Waker),
}

/// The queue itself, shared by the outbox (on the registry's thread), the
/// session and the writer (both on the connection's worker thread).
struct Queue {
    items: VecDeque<Item>,
    /// How many of `items` are [`Item::Bounded`], and how many may be.
    bounded: usize,
    capacity: usize,
    /// No frame is queued after this; the writer stops once it has written
    /// what is queued.
    ended: bool,
    /// The client was closed for not reading (or not answering): the
    /// writer drops the frames it has taken and not started writing, so
    /// the close frame comes next. Cleared once done.
    abandoned: bool,
    /// Frames are queued but not written yet: the client's HELLO is queued
    /// before anyone can find the client, and written only once everyone
    /// can (see [`FrameSink::hold`]).
    held: bool,
    waiting: Waiting,
}

impl Queue {
    /// Queues an item and returns the writer's waker if it was waiting for
    /// frames; wake it after releasing the lock.
    fn push(&mut self, item: Item) -> Option<Waker> {
        if self.ended {
            return None;
        }
        if let Item::Bounded(_) = item {
            self.bounded += 1;
        }
        self.items.push_back(item);
        self.wake_for_frames()
    }

    fn wake_for_frames(&mut self) -> Option<Waker> {
        if self.held {
            return None;
        }
        match std::mem::replace(&mut self.waiting, Waiting::No) {
            Waiting::ForFrames(waker) => Some(waker),
            other => {
                self.waiting = other;
                None
            }
        }
    }

    /// Drops every queued frame.
    fn discard(&mut self) {
        self.items = VecDeque::new();
        self.bounded = 0;
    }

    /// Queues a close frame and ends the queue there (nothing if it has
    /// ended already). With `abandon` the frames still queued, and those
    /// the writer has taken but not started, are dropped first: a client
    /// closed for not reading will not read them, their memory is freed at
    /// once, and the close frame is next on the wire.
    fn close(&mut self, reason: Option<CloseReason>, abandon: bool) -> Option<Waker> {
        if self.ended {
            return None;
        }
        self.held = false;
        if abandon {
            self.discard();
            self.abandoned = true;
        }
        let mut wire = BytesMut::new();
        Parser::write_close(&mut wire, reason, false);
        self.items.push_back(Item::Close(wire.freeze()));
        self.ended = true;
        match std::mem::replace(&mut self.waiting, Waiting::No) {
            Waiting::ForFrames(waker) => Some(waker),
            Waiting::OnSocket(waker) if abandon => Some(waker),
            other => {
                self.waiting = other;
                None
            }
        }
    }

    /// Closes with one of the gateway's codes. Clients closed for not
    /// keeping up (1008) or not answering (4009) are abandoned.
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
        let abandon = matches!(close.code, CloseCode::Policy | CloseCode::HeartbeatFailed);
        self.close(Some(reason), abandon)
    }

    fn end(&mut self) -> Option<Waker> {
        self.ended = true;
        self.held = false;
        self.wake_for_frames()
    }

    /// Whether the queue is at its bound.
    fn full(&self) -> bool {
        self.bounded >= self.capacity
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

/// What the session and the writer know of the heartbeat, on their thread.
struct Progress {
    ping: Cell<Ping>,
    /// When the client last showed it is alive (see
    /// [`Outgoing::heard_from_client`] and [`Outgoing::pong`]).
    last_heard: Cell<Instant>,
    /// When the socket last took bytes, or when the writer last had
    /// nothing to write.
    last_written: Cell<Instant>,
    /// Whether the writer holds frames taken from the queue that the
    /// socket has not taken completely.
    unwritten: Cell<bool>,
}

/// The outbox's end of a WebSocket: frames go straight into the queue the
/// writer drains, from whatever thread the registry runs on, with no actor
/// message per delivery.
struct Sink(Shared);

impl FrameSink for Sink {
    fn push(&self, frame: Frame) -> Result<usize, SinkError> {
        let mut queue = lock(&self.0);
        if queue.ended {
            return Err(SinkError::Closed);
        }
        if queue.full() {
            return Err(SinkError::Full);
        }
        let waker = queue.push(Item::Bounded(frame.into_wire()));
        let depth = queue.bounded;
        drop(queue);
        wake(waker);
        Ok(depth)
    }

    fn hold(&self) {
        lock(&self.0).held = true;
    }

    fn release(&self) {
        let mut queue = lock(&self.0);
        queue.held = false;
        let waker = queue.wake_for_frames();
        drop(queue);
        wake(waker);
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
    /// The heartbeat timeout: how long the socket may take no byte of a
    /// backlog before the output counts as stuck.
    limit: Duration,
}

impl Outgoing {
    /// A queue holding at most `capacity` frames (the outbox's and pongs),
    /// the sink the client's outbox pushes into, and the writer that
    /// drains it. `heartbeat_timeout` is how long the output may be stuck
    /// before the client's pings stop counting as signs of life.
    pub fn new(
        capacity: usize,
        heartbeat_timeout: Duration,
    ) -> (Outgoing, Arc<dyn FrameSink>, Writer) {
        let queue = Arc::new(Mutex::new(Queue {
            items: VecDeque::new(),
            bounded: 0,
            capacity,
            ended: false,
            abandoned: false,
            held: false,
            waiting: Waiting::No,
        }));
        let progress = Rc::new(Progress {
            ping: Cell::new(Ping::None),
            last_heard: Cell::new(Instant::now()),
            last_written: Cell::new(Instant::now()),
            unwritten: Cell::new(false),
        });
        let writer = Writer {
            queue: queue.clone(),
            progress: progress.clone(),
        };
        let sink = Arc::new(Sink(queue.clone()));
        let outgoing = Outgoing {
            queue,
            progress,
            limit: heartbeat_timeout,
        };
        (outgoing, sink, writer)
    }

    /// Whether frames wait for the socket (queued, or taken by the writer
    /// and not all written).
    fn backlog(&self, queue: &Queue) -> bool {
        self.progress.unwritten.get() || !queue.items.is_empty()
    }

    /// Whether frames wait and the socket has taken none of them for the
    /// heartbeat timeout: the client is not reading.
    fn stuck(&self, queue: &Queue) -> bool {
        self.backlog(queue) && self.progress.last_written.get().elapsed() > self.limit
    }

    /// Before queuing a frame: if nothing was waiting, the socket was not
    /// behind, and a backlog starting now is not late.
    fn starting(&self, queue: &Queue) {
        if !self.backlog(queue) {
            self.progress.last_written.set(Instant::now());
        }
    }

    /// Answers the client's ping. The pong waits in the queue like any of
    /// the client's frames, under the same bound: a client whose pongs
    /// cannot leave gets the 1008 close (returned; the caller closes) that
    /// one not reading its frames gets. The ping counts as a sign of life
    /// only while the socket is taking what the gateway sends (a client
    /// that does not read is not kept alive by pinging), and it does not
    /// answer the gateway's own ping.
    pub fn pong(&self, payload: &[u8]) -> Result<(), Close> {
        let mut queue = lock(&self.queue);
        if queue.full() {
            return Err(Close::too_slow(queue.capacity));
        }
        if !self.stuck(&queue) {
            self.progress.last_heard.set(Instant::now());
        }
        self.starting(&queue);
        let waker = queue.push(Item::Bounded(encode(payload, OpCode::Pong)));
        drop(queue);
        wake(waker);
        Ok(())
    }

    /// Sends a heartbeat ping, unless one is still outstanding.
    pub fn ping(&self) {
        self.queue_ping(|| encode(b"", OpCode::Ping));
    }

    /// Sends a wire format's own heartbeat ping, a text frame (Engine.IO's
    /// `2`), unless one is still outstanding; it is followed to the socket
    /// as a WebSocket ping is, so a client reading the frames queued before
    /// it is not late.
    pub fn ping_text(&self, text: &str) {
        self.queue_ping(|| Frame::new(text).into_wire());
    }

    fn queue_ping(&self, wire: impl FnOnce() -> Bytes) {
        if self.progress.ping.get() != Ping::None {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.ended {
            return;
        }
        self.starting(&queue);
        self.progress.ping.set(Ping::Queued);
        let waker = queue.push(Item::Ping(wire()));
        drop(queue);
        wake(waker);
    }

    /// The client sent a frame other than a ping (data, a pong, a close,
    /// or one that cannot be decoded): it is alive, and the outstanding
    /// ping is forgotten.
    pub fn heard_from_client(&self) {
        self.progress.last_heard.set(Instant::now());
        self.progress.ping.set(Ping::None);
    }

    /// How long since the client last showed it is alive.
    pub fn silent_for(&self) -> Duration {
        self.progress.last_heard.get().elapsed()
    }

    /// Whether the session's own backlog explains why the client has not
    /// answered: frames are still waiting and the socket took bytes within
    /// the heartbeat timeout (so the client is reading what was sent before
    /// the ping), or the outstanding ping reached the socket less than that
    /// ago. A client that stops reading fills its socket, the writer stops
    /// moving, and this turns false within the timeout.
    pub fn backlog_explains_silence(&self) -> bool {
        let queue = lock(&self.queue);
        let draining = self.backlog(&queue) && !self.stuck(&queue);
        drop(queue);
        draining
            || matches!(self.progress.ping.get(), Ping::Written(at) if at.elapsed() <= self.limit)
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

    /// Ends the connection after what is queued (the session stopped).
    pub fn end(&self) {
        let waker = lock(&self.queue).end();
        wake(waker);
    }
}

/// One final, unmasked frame (a server's).
pub(crate) fn encode(payload: &[u8], op: OpCode) -> Bytes {
    let mut wire = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut wire, payload, op, true, false);
    wire.freeze()
}

/// The socket's end of the queue, until it is given the socket.
pub struct Writer {
    queue: Shared,
    progress: Rc<Progress>,
}

impl Writer {
    /// Writes what is queued to `io` until the queue ends and is written,
    /// then shuts the socket down for writing (a FIN after the close
    /// frame; with TLS, close_notify first). When the socket fails it is
    /// shut down both ways, which ends the session's input too. A client
    /// that never reads again holds the writer until the kernel drops the
    /// connection (`TCP_USER_TIMEOUT`, see `crate::gateway`).
    pub fn write_to<W: SocketOutput>(self, io: W) -> Writing<W> {
        Writing {
            writer: self,
            io,
            batch: VecDeque::new(),
            partial: false,
            ping: false,
            yielded: None,
            turns: 0,
        }
    }
}

/// The future that writes a connection's frames; see [`Writer::write_to`].
pub struct Writing<W> {
    writer: Writer,
    io: W,
    /// Frames taken from the queue.
    batch: VecDeque<Bytes>,
    /// Whether the socket has taken part of the first frame of `batch`.
    partial: bool,
    /// Whether `batch` carries the heartbeat ping.
    ping: bool,
    /// How many frames were queued when the writer last let the other ready
    /// tasks run, since it was woken for new ones (see [`Future::poll`]).
    yielded: Option<usize>,
    /// How many turns the writer let go by since it was woken.
    turns: u8,
}

impl<W: SocketOutput> Writing<W> {
    /// Moves up to [`WRITE_BATCH`] frames from the queue into the batch.
    /// `Ready(false)` when there is nothing left to write, ever.
    fn refill(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut queue = lock(&self.writer.queue);
        // Whatever the queue held when the client was abandoned is gone.
        queue.abandoned = false;
        while self.batch.len() < WRITE_BATCH && !queue.held {
            let Some(item) = queue.items.pop_front() else {
                break;
            };
            let bytes = match item {
                Item::Bounded(bytes) => {
                    queue.bounded -= 1;
                    bytes
                }
                Item::Close(bytes) => bytes,
                Item::Ping(bytes) => {
                    self.ping = true;
                    bytes
                }
            };
            self.batch.push_back(bytes);
        }
        if !self.batch.is_empty() {
            self.writer.progress.unwritten.set(true);
            return Poll::Ready(true);
        }
        if queue.items.capacity() > KEPT_QUEUE_CAPACITY {
            queue.items.shrink_to(KEPT_QUEUE_CAPACITY);
        }
        if queue.ended {
            return Poll::Ready(false);
        }
        queue.waiting = Waiting::ForFrames(cx.waker().clone());
        drop(queue);
        // Idle: hold little (a few entries, so that the next burst does not
        // allocate again).
        self.batch.shrink_to(KEPT_BATCH_CAPACITY);
        Poll::Pending
    }

    /// The socket took `n` bytes from the front of the batch.
    fn advance(&mut self, mut n: usize) {
        let progress = &self.writer.progress;
        progress.last_written.set(Instant::now());
        while n > 0 {
            let Some(front) = self.batch.front_mut() else {
                break;
            };
            if n < front.len() {
                front.advance(n);
                self.partial = true;
                return;
            }
            n -= front.len();
            self.batch.pop_front();
            self.partial = false;
        }
        if self.batch.is_empty() {
            progress.unwritten.set(false);
            if std::mem::take(&mut self.ping) && progress.ping.get() == Ping::Queued {
                progress.ping.set(Ping::Written(Instant::now()));
            }
        }
    }

    /// Drops the frames of the batch the socket has not started on: the
    /// client was abandoned.
    fn drop_unwritten(&mut self) {
        self.batch.truncate(usize::from(self.partial));
        self.ping = false;
        if self.batch.is_empty() {
            self.writer.progress.unwritten.set(false);
        }
    }

    /// Stops writing and shuts the socket down both ways, so the session's
    /// input ends too.
    fn give_up(&mut self) {
        if let Err(e) = self.io.cut_off() {
            tracing::debug!(error = %e, "cannot shut the socket down");
        }
    }

    /// Before waiting for frames: sends what the stream holds back (TLS
    /// records rustls could not write yet; nothing for plain TCP, where
    /// this is a no-op).
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "cannot write to the socket");
                self.give_up();
                Poll::Ready(())
            }
            // Flushed, or woken once the socket takes more.
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
        }
    }

    /// Everything is written: shuts the socket down for writing.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "cannot shut the socket down");
                self.give_up();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<W: SocketOutput> Future for Writing<W> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.batch.is_empty() {
                // Woken for the first frames of a burst: let the other ready
                // tasks of this thread (sessions handling what their clients
                // sent) run first, so that what they queue for this client
                // leaves in the same write; again while the burst keeps
                // growing (a fan-out in progress), at most a few turns. Half
                // the syscalls, and half the segments for the client to
                // read, under load; one turn of the thread's run queue of
                // delay when idle.
                let queued = lock(&this.writer.queue).items.len();
                let growing = match this.yielded {
                    None => true,
                    Some(before) => queued > before,
                };
                if growing && this.turns < MAX_TURNS {
                    this.yielded = Some(queued);
                    this.turns += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match this.refill(cx) {
                    Poll::Ready(true) => {}
                    Poll::Ready(false) => return this.finish(cx),
                    Poll::Pending => {
                        this.yielded = None;
                        this.turns = 0;
                        return this.flush(cx);
                    }
                }
            }
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let n = this.batch.len().min(WRITE_BATCH);
            for (slice, bytes) in slices.iter_mut().zip(&this.batch) {
                *slice = IoSlice::new(bytes);
            }
            match Pin::new(&mut this.io).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => {
                    this.give_up();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(written)) => this.advance(written),
                Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "cannot write to the socket");
                    this.give_up();
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    let mut queue = lock(&this.writer.queue);
                    if std::mem::take(&mut queue.abandoned) {
                        drop(queue);
                        this.drop_unwritten();
                        continue;
                    }
                    queue.waiting = Waiting::OnSocket(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Writer {
    /// The connection is done: nothing queued will be written, and the
    /// outbox learns it is closed.
    fn drop(&mut self) {
        let mut queue = lock(&self.queue);
        queue.discard();
        queue.ended = true;
        queue.waiting = Waiting::No;
    }
}
