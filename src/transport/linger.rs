//! The lingering close: what the gateway does between sending its close
//! frame and closing the socket.
//!
//! A session that decides to close a client queues the close frame, stops
//! handling the client's frames and drops its input; the writer sends the
//! close frame and a FIN. If the socket were closed there, whatever the
//! client sent in the meantime (a client that keeps sending does not know
//! yet) would still be unread in the kernel, and closing a TCP socket with
//! unread data makes the kernel reset the connection: the client's copy of
//! the close frame, with its code and reason, is destroyed before the client
//! reads it. So the input is handed back when the session drops it
//! ([`lend`]), and [`linger`] keeps reading and discarding until the
//! client's close frame or EOF, for a bounded time, before the socket is
//! closed (RFC 6455 §7.1.1: the server closes the TCP connection after the
//! closing handshake, not in the middle of it).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::Frame;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

use crate::transport::websocket::Incoming;

/// A stream lent to a session actor: when the actor drops it (it stopped),
/// the stream goes back to whoever holds the [`Returned`] end.
pub struct Lent<St> {
    stream: Option<St>,
    home: Option<oneshot::Sender<Box<St>>>,
}

/// Resolves to the lent stream once the session has dropped it (an error
/// if it was dropped without being handed back, which does not happen).
/// Boxed on the way back: the channel holds a slot for what it carries for
/// the connection's whole life, and a pointer costs an idle connection 8
/// bytes where the stream would cost its full size.
pub type Returned<St> = oneshot::Receiver<Box<St>>;

/// Lends `stream`: the first half goes to the session, the second waits
/// for it to come back.
pub fn lend<St>(stream: St) -> (Lent<St>, Returned<St>) {
    let (home, returned) = oneshot::channel();
    (
        Lent {
            stream: Some(stream),
            home: Some(home),
        },
        returned,
    )
}

impl<St: Stream + Unpin> Stream for Lent<St> {
    type Item = St::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<St::Item>> {
        match self.stream.as_mut() {
            Some(stream) => stream.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

impl<St> Drop for Lent<St> {
    fn drop(&mut self) {
        if let (Some(stream), Some(home)) = (self.stream.take(), self.home.take()) {
            // Nobody waiting (the connection is gone): the stream is dropped.
            let _ = home.send(Box::new(stream));
        }
    }
}

/// Reads and drops what the client still sends, until its close frame,
/// EOF or an error; the caller bounds it in time. Returns at once when the
/// client's close frame has already been read (the client started the
/// closing handshake, or answered ours while the session was still
/// reading). What was read past a frame the decoder refused (an oversized
/// one) is drained as raw bytes.
pub async fn linger<S>(mut input: Incoming<S>)
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    if input.client_closed() {
        return;
    }
    let mut frames = 0u64;
    // After an error (the one that made the session close, or one
    // here) the frames are out of step: only bytes are read then.
    while !input.failed() {
        match input.next().await {
            Some(Ok(Frame::Close(_))) => {
                tracing::debug!(frames, "the client answered the close frame");
                return;
            }
            Some(Ok(_)) => frames += 1,
            Some(Err(_)) => {}
            None => return,
        }
    }
    let mut raw = input.into_raw();
    loop {
        match raw.next().await {
            // An oversized frame is refused once; what follows passes.
            Some(Ok(_)) | Some(Err(PayloadError::Overflow)) => {}
            Some(Err(_)) | None => return,
        }
    }
}
