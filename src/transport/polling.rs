//! A socket for a session whose client has no socket: HTTP long-polling.
//!
//! A session writes WebSocket frames through its [`Writer`](super::websocket::Writer)
//! to a [`SocketOutput`]; a long-polling client (Engine.IO's first
//! transport, which socket.io.js starts with) has no connection that lasts:
//! it fetches what the session wrote with one `GET` after another, and may
//! later move to a real WebSocket. A [`Pipe`] stands for the socket until
//! then: the writer writes into it as into a socket (the session core is
//! the same for both, its heartbeat and queue bound included), and a
//! `GET` takes the frames' payloads out of it ([`Pipe::frames`]), or, once
//! the client has moved to a WebSocket, that socket takes the frames as
//! they are ([`Pipe::bytes`]), so that nothing written before the move is
//! lost or sent twice.
//!
//! The pipe holds about `capacity` bytes: past that the writer waits as
//! on a full socket, the session's queue fills, and a client that stops
//! fetching is closed as one that stops reading is.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::socket::SocketOutput;

/// A socket's stand-in for a long-polling client: the writer's end is
/// [`Pipe::output`], the reader's the pipe itself (one reader at a time).
#[derive(Clone)]
pub struct Pipe(Arc<Mutex<State>>);

struct State {
    /// Frames written and not taken yet.
    bytes: BytesMut,
    capacity: usize,
    /// The writer is done: nothing more comes.
    ended: bool,
    /// A reader should stop waiting (see [`Pipe::interrupt`]).
    interrupted: bool,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

/// What a reader of frames got.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// The text payloads of the frames taken (at least one).
    Frames(Vec<Bytes>),
    /// Nothing to take, and the pipe was interrupted.
    Interrupted,
    /// Everything is taken and the writer is done (or its close frame was
    /// taken).
    Ended,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipe {
    pub fn new(capacity: usize) -> Pipe {
        Pipe(Arc::new(Mutex::new(State {
            bytes: BytesMut::new(),
            capacity,
            ended: false,
            interrupted: false,
            writer: None,
            reader: None,
        })))
    }

    /// The writer's end, for [`Writer::write_to`](super::websocket::Writer::write_to).
    pub fn output(&self) -> PipeOutput {
        PipeOutput(self.clone())
    }

    /// Makes a reader waiting for frames return [`Read::Interrupted`] if
    /// there are none, now and from now on.
    pub fn interrupt(&self) {
        let mut state = lock(&self.0);
        state.interrupted = true;
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Undoes [`Pipe::interrupt`]: readers wait for frames again.
    pub fn resume(&self) {
        lock(&self.0).interrupted = false;
    }

    /// Waits for frames and takes the payloads of the complete ones there,
    /// whose payloads add up to about `budget` bytes (at least one frame).
    /// Control frames are skipped; the close frame ends the pipe.
    pub async fn frames(&self, budget: usize) -> Read {
        std::future::poll_fn(|cx| self.poll_frames(cx, budget)).await
    }

    fn poll_frames(&self, cx: &mut Context<'_>, budget: usize) -> Poll<Read> {
        let mut state = lock(&self.0);
        let mut frames = Vec::new();
        let mut size = 0;
        while size < budget {
            // The writer writes frames the gateway encoded itself: they
            // parse (and an unparsable rest is dropped, not looped on).
            match Parser::parse(&mut state.bytes, false, usize::MAX) {
                Ok(Some((_, OpCode::Text, payload))) => {
                    let payload = payload.unwrap_or_default().freeze();
                    size += payload.len();
                    frames.push(payload);
                }
                Ok(Some((_, OpCode::Close, _))) => {
                    state.bytes.clear();
                    state.ended = true;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => state.bytes.clear(),
            }
        }
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        if !frames.is_empty() {
            return Poll::Ready(Read::Frames(frames));
        }
        if state.ended {
            return Poll::Ready(Read::Ended);
        }
        if state.interrupted {
            return Poll::Ready(Read::Interrupted);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for bytes and takes all there are, frames as they were
    /// written (for a socket); `None` once the writer is done and
    /// everything is taken.
    pub async fn bytes(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            let mut state = lock(&self.0);
            if !state.bytes.is_empty() {
                let bytes = state.bytes.split().freeze();
                if let Some(writer) = state.writer.take() {
                    writer.wake();
                }
                return Poll::Ready(Some(bytes));
            }
            if state.ended {
                return Poll::Ready(None);
            }
            state.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn end(&self) {
        let mut state = lock(&self.0);
        state.ended = true;
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// The writer's end of a [`Pipe`].
pub struct PipeOutput(Pipe);

impl AsyncWrite for PipeOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = lock(&(self.0).0);
        if state.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Whole writes only (the writer writes a frame at a time), so the
        // pipe never holds part of a frame; one bigger than the capacity
        // goes in alone.
        let room = state.capacity.saturating_sub(state.bytes.len());
        if room < buf.len() && !state.bytes.is_empty() {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len();
        state.bytes.extend_from_slice(buf);
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.end();
        Poll::Ready(Ok(()))
    }
}

impl SocketOutput for PipeOutput {
    fn cut_off(&self) -> io::Result<()> {
        self.0.end();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn text(payload: &str) -> BytesMut {
        let mut wire = BytesMut::new();
        Parser::write_message(&mut wire, payload, OpCode::Text, true, false);
        wire
    }

    #[tokio::test]
    async fn frames_come_out_as_payloads_and_the_close_ends_the_pipe() {
        let pipe = Pipe::new(1024);
        let mut out = pipe.output();
        out.write_all(&text("0{}")).await.unwrap();
        out.write_all(&text("2")).await.unwrap();
        let mut close = BytesMut::new();
        Parser::write_close(&mut close, None, false);
        out.write_all(&close).await.unwrap();
        // About `budget` bytes: one frame at least, then as many as fit.
        assert_eq!(pipe.frames(1).await, Read::Frames(vec![Bytes::from("0{}")]));
        assert_eq!(
            pipe.frames(1024).await,
            Read::Frames(vec![Bytes::from("2")])
        );
        assert_eq!(pipe.frames(1024).await, Read::Ended);
    }

    #[tokio::test]
    async fn a_full_pipe_holds_the_writer_and_an_interrupt_releases_readers_until_resumed() {
        let pipe = Pipe::new(4);
        let mut out = pipe.output();
        pipe.interrupt();
        assert_eq!(pipe.frames(100).await, Read::Interrupted);
        pipe.resume();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(pipe.poll_frames(&mut cx, 100).is_pending());
        let frame = text("4hello");
        assert_eq!(out.write(&frame).await.unwrap(), frame.len());
        assert!(Pin::new(&mut out).poll_write(&mut cx, &frame).is_pending());
        assert_eq!(pipe.bytes().await, Some(frame.freeze()));
        out.shutdown().await.unwrap();
        assert_eq!(pipe.bytes().await, None);
    }
}
