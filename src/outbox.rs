//! How the gateway reaches one connected client, whatever carries it.
//!
//! An [`Outbox`] is the only thing the registry and the broker know about a
//! connection: a [`FrameSink`] that takes serialized frames (from any
//! thread, without waiting), an actix recipient for control requests such as
//! "close with this code", and a flag. The WebSocket transport
//! ([`crate::websocket`]) is one sink; the adapters of later issues (Quix,
//! Nest, Socket.IO) bring their own through the same type.
//!
//! Every client's queue is bounded: a sink holds at most
//! `max_outgoing_queue` frames not yet handed to the socket, and once it is
//! full (a client that does not read) the outbox drops the frame and asks
//! the registry, once, to evict the client. Nothing grows without bound, and
//! the other clients never wait for a slow one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use uuid::Uuid;

use crate::metrics;
use crate::protocol::Close;

/// One serialized payload, stored as the WebSocket text frame that carries
/// it. Cloning it shares the bytes, so a broadcast is serialized and framed
/// once whatever the size of its audience, and a WebSocket session hands the
/// same bytes to every socket without encoding anything per delivery.
#[derive(Clone, Debug)]
pub struct Frame {
    wire: Bytes,
    /// Where the payload starts in `wire`, after the frame header.
    payload_at: usize,
}

impl Frame {
    /// Frames a JSON payload (always valid UTF-8: it is a `str`).
    pub fn new(json: &str) -> Frame {
        let mut wire = BytesMut::with_capacity(json.len() + 10);
        // Server frames are not masked (RFC 6455 5.1).
        Parser::write_message(&mut wire, json, OpCode::Text, true, false);
        Frame {
            payload_at: wire.len() - json.len(),
            wire: wire.freeze(),
        }
    }

    /// The JSON payload, for transports that frame it themselves and for
    /// the cluster's channels.
    pub fn payload(&self) -> &[u8] {
        &self.wire[self.payload_at..]
    }

    /// The whole WebSocket frame, header included.
    pub fn wire(&self) -> Bytes {
        self.wire.clone()
    }
}

impl From<String> for Frame {
    fn from(json: String) -> Self {
        Frame::new(&json)
    }
}

/// Why a sink did not take a frame.
#[derive(Debug)]
pub enum SinkError {
    /// The client's queue is at its bound.
    Full,
    /// The connection is gone.
    Closed,
}

/// Where a transport takes a client's frames.
pub trait FrameSink: Send + Sync {
    /// Queues a frame without waiting; returns how many frames are now
    /// queued.
    fn push(&self, frame: &Frame) -> Result<usize, SinkError>;

    /// Queues the close, after the frames already queued (so the client
    /// gets nothing the registry sent after deciding to close it), and
    /// takes no frame after it.
    fn close(&self, close: &Close);
}

/// Requests to a transport other than "deliver this frame".
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Control {
    /// Close the connection with this code and reason; the registry has
    /// already removed the client.
    Close(Close),
}

/// Sent to the registry when a client's queue is full.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Overflowed {
    pub uuid: Uuid,
}

/// A handle on one connected client's outgoing queue.
#[derive(Clone)]
pub struct Outbox {
    uuid: Uuid,
    sink: Arc<dyn FrameSink>,
    control: Recipient<Control>,
    on_overflow: Recipient<Overflowed>,
    overflowed: Arc<AtomicBool>,
}

impl Outbox {
    pub fn new(
        uuid: Uuid,
        sink: Arc<dyn FrameSink>,
        control: Recipient<Control>,
        on_overflow: Recipient<Overflowed>,
    ) -> Self {
        Outbox {
            uuid,
            sink,
            control,
            on_overflow,
            overflowed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Queues a frame. A full queue drops it and reports the client for
    /// eviction (once); a closed one drops it silently, since the transport's
    /// own shutdown already removes the client.
    pub fn send(&self, frame: Frame) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        match self.sink.push(&frame) {
            Ok(depth) => metrics::get().frame_out(frame.payload().len(), depth),
            Err(SinkError::Full) => {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    self.on_overflow.do_send(Overflowed { uuid: self.uuid });
                }
            }
            Err(SinkError::Closed) => {}
        }
    }

    /// Closes the connection: the close goes into the queue in order with
    /// the frames (bypassing the bound: it is the one frame a stuck client
    /// must still get), and the transport's actor is told to stop.
    pub fn close(&self, close: Close) {
        self.sink.close(&close);
        self.control.do_send(Control::Close(close));
    }
}
