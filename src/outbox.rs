//! How the gateway reaches one connected client, whatever carries it.
//!
//! An [`Outbox`] is the only thing the registry and the broker know about a
//! connection: two actix recipients (serialized frames, and control requests
//! such as "close with this code") and a flag. The WebSocket session is one
//! transport behind it; the adapters of later issues (Quix, Nest, Socket.IO)
//! register their own actors through the same type.
//!
//! Frames are sent with `try_send`, so a client's queue is bounded by its
//! mailbox capacity (`max_outgoing_queue`). A session whose socket is not
//! being drained stops polling its mailbox; once the mailbox is full the
//! outbox asks the registry, once, to evict the client. Nothing grows without
//! bound, and the other clients never wait for a slow one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use bytestring::ByteString;
use uuid::Uuid;

use crate::metrics;
use crate::protocol::Close;

/// One serialized payload. Cloning it shares the bytes, so a broadcast is
/// serialized once whatever the size of its audience.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Frame(pub ByteString);

impl From<String> for Frame {
    fn from(text: String) -> Self {
        Frame(ByteString::from(text))
    }
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
    frames: Recipient<Frame>,
    control: Recipient<Control>,
    on_overflow: Recipient<Overflowed>,
    overflowed: Arc<AtomicBool>,
    /// Frames queued and not yet written; the transport decrements it.
    pending: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(
        uuid: Uuid,
        frames: Recipient<Frame>,
        control: Recipient<Control>,
        on_overflow: Recipient<Overflowed>,
        pending: Arc<AtomicUsize>,
    ) -> Self {
        Outbox {
            uuid,
            frames,
            control,
            on_overflow,
            overflowed: Arc::new(AtomicBool::new(false)),
            pending,
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
        let bytes = frame.0.len();
        // Count before sending: the transport may write the frame (and
        // decrement) before `try_send` even returns.
        let depth = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        match self.frames.try_send(frame) {
            Ok(()) => metrics::get().frame_out(bytes, depth),
            Err(actix::prelude::SendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    self.on_overflow.do_send(Overflowed { uuid: self.uuid });
                }
            }
            Err(actix::prelude::SendError::Closed(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the transport to close. Bypasses the queue bound: it is the one
    /// message a stuck client must still get once it drains.
    pub fn close(&self, close: Close) {
        self.control.do_send(Control::Close(close));
    }
}
