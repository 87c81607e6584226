//! How the gateway reaches one connected client, whatever carries it.
//!
//! An [`Outbox`] is the only thing the registry and the broker know about a
//! connection: a [`FrameSink`] that takes serialized frames (from any
//! thread, without waiting), an actix recipient for control requests such as
//! "close with this code", and a flag. The WebSocket transport
//! ([`crate::transport::websocket`]) is one sink, for the native format;
//! the adapters (Quix, Nest, Socket.IO) translate what they are sent, and
//! their sink ([`crate::session::ToActor`]) hands it to their session.
//!
//! Every client's queue is bounded: a sink holds at most
//! `max_outgoing_queue` frames not yet handed to the socket, and once it is
//! full (a client that does not read) the outbox drops the frame and asks
//! the registry, once, to evict the client. Nothing grows without bound, and
//! the other clients never wait for a slow one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use uuid::Uuid;

use crate::metrics;
use crate::protocol::{Close, MessageOut};

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

/// The longest header of a frame the gateway sends: 2 bytes and 8 of
/// extended length (server frames are not masked, RFC 6455 5.1).
const MAX_HEADER: usize = 10;

impl Frame {
    /// Serializes a payload straight into its frame: the JSON is written
    /// once, behind room for the longest header, and the header is put just
    /// in front of it. No copy of the JSON is made.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Frame {
        Frame::json_sized(value, 256)
    }

    /// [`Frame::json`] for a payload of about `size` bytes, so that the
    /// buffer is not grown (and copied) while it is written.
    pub fn json_sized<T: Serialize + ?Sized>(value: &T, size: usize) -> Frame {
        Frame::written(size, |buf| {
            // Every payload type is made of strings, numbers, uuids, vectors
            // and already validated raw JSON: writing it to memory cannot fail.
            serde_json::to_writer(buf, value).expect("protocol payloads always serialize")
        })
    }

    /// A relayed MESSAGE.
    pub fn message(message: &MessageOut<'_>) -> Frame {
        Frame::written(message.size_hint(), |buf| message.write(buf))
    }

    /// The frame of the JSON text that `write` puts in the buffer, about
    /// `size` bytes of it.
    fn written(size: usize, write: impl FnOnce(&mut Vec<u8>)) -> Frame {
        let mut buf = Vec::with_capacity(MAX_HEADER + size);
        buf.resize(MAX_HEADER, 0);
        write(&mut buf);
        let (header, n) = text_header(buf.len() - MAX_HEADER);
        let start = MAX_HEADER - n;
        buf[start..MAX_HEADER].copy_from_slice(&header[..n]);
        // Advancing (not slicing) keeps the bytes the vector's own: a frame
        // for one recipient is never turned into shared, counted bytes.
        let mut wire = Bytes::from(buf);
        wire.advance(start);
        Frame {
            wire,
            payload_at: n,
        }
    }

    /// Frames JSON that is already text (a frame relayed by another
    /// replica).
    pub fn new(json: &str) -> Frame {
        let (header, n) = text_header(json.len());
        let mut wire = BytesMut::with_capacity(n + json.len());
        wire.extend_from_slice(&header[..n]);
        wire.extend_from_slice(json.as_bytes());
        Frame {
            wire: wire.freeze(),
            payload_at: n,
        }
    }

    /// The JSON payload, for transports that frame it themselves and for
    /// the cluster's channels.
    pub fn payload(&self) -> &[u8] {
        &self.wire[self.payload_at..]
    }

    /// The JSON payload, sharing the frame's bytes (to keep it).
    pub fn payload_bytes(&self) -> Bytes {
        self.wire.slice(self.payload_at..)
    }

    /// The whole WebSocket frame, header included.
    pub fn wire(&self) -> Bytes {
        self.wire.clone()
    }

    /// The whole WebSocket frame, without sharing it.
    pub fn into_wire(self) -> Bytes {
        self.wire
    }
}

/// The header of a final, unmasked text frame carrying `len` bytes, and its
/// length (RFC 6455 5.2).
fn text_header(len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut header = [0u8; MAX_HEADER];
    header[0] = 0x81; // FIN, text
    let n = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, n)
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
    fn push(&self, frame: Frame) -> Result<usize, SinkError>;

    /// Queues the close, after the frames already queued (so the client
    /// gets nothing the registry sent after deciding to close it), and
    /// takes no frame after it. A held queue is released.
    fn close(&self, close: &Close);

    /// Queues frames without sending them until [`release`](FrameSink::release)
    /// (or a close): a client's first frame can be queued before anyone
    /// can send it anything, and go out first.
    fn hold(&self);

    /// Sends what was queued while held, and what comes after.
    fn release(&self);
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

/// A handle on one connected client's outgoing queue: cheap to clone (one
/// reference count), since every reply and every view holds one.
#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    uuid: Uuid,
    sink: Arc<dyn FrameSink>,
    control: Recipient<Control>,
    on_overflow: Recipient<Overflowed>,
    overflowed: AtomicBool,
}

impl Outbox {
    pub fn new(
        uuid: Uuid,
        sink: Arc<dyn FrameSink>,
        control: Recipient<Control>,
        on_overflow: Recipient<Overflowed>,
    ) -> Self {
        Outbox(Arc::new(Inner {
            uuid,
            sink,
            control,
            on_overflow,
            overflowed: AtomicBool::new(false),
        }))
    }

    pub fn uuid(&self) -> Uuid {
        self.0.uuid
    }

    /// Queues a frame. A full queue drops it and reports the client for
    /// eviction (once); a closed one drops it silently, since the transport's
    /// own shutdown already removes the client.
    pub fn send(&self, frame: Frame) {
        let this = &self.0;
        if this.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let bytes = frame.payload().len();
        match this.sink.push(frame) {
            Ok(depth) => metrics::get().frame_out(bytes, depth),
            Err(SinkError::Full) => {
                if !this.overflowed.swap(true, Ordering::Relaxed) {
                    this.on_overflow.do_send(Overflowed { uuid: this.uuid });
                }
            }
            Err(SinkError::Closed) => {}
        }
    }

    /// Holds the frames queued from now on until [`release`](Outbox::release).
    pub fn hold(&self) {
        self.0.sink.hold();
    }

    pub fn release(&self) {
        self.0.sink.release();
    }

    /// Closes the connection: the close goes into the queue in order with
    /// the frames (bypassing the bound: it is the one frame a stuck client
    /// must still get), and the transport's actor is told to stop.
    pub fn close(&self, close: Close) {
        self.0.sink.close(&close);
        self.0.control.do_send(Control::Close(close));
    }
}

#[cfg(test)]
mod tests {
    use actix_http::ws::{OpCode, Parser};
    use bytes::BytesMut;

    use super::Frame;

    /// Both constructors frame exactly as actix-http's encoder does, at
    /// every header size.
    #[test]
    fn frames_match_actix_http_at_every_length() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "x".repeat(len.saturating_sub(2));
            let json = serde_json::to_string(&text).unwrap();
            assert_eq!(json.len(), len.max(2));
            let mut expected = BytesMut::new();
            Parser::write_message(&mut expected, json.as_str(), OpCode::Text, true, false);
            for frame in [Frame::json(&text), Frame::new(&json)] {
                assert_eq!(frame.wire(), expected.as_ref(), "length {len}");
                assert_eq!(frame.payload(), json.as_bytes(), "length {len}");
            }
        }
    }
}
