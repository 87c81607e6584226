//! The outbox sink of a format that does not speak native payloads.
//!
//! The native format's outbox pushes frames straight into the socket's
//! queue (no actor message per delivery). A format that must translate
//! what the namespace sends (the adapters) cannot write it to the socket
//! as it is: its outbox's sink, [`ToActor`], hands each frame to the
//! session's actor instead, bounded like a socket's queue, and the
//! session's [`Translator::delivered`](super::Translator::delivered) writes
//! it out in the format.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::protocol::Close;
use crate::transport::outbox::{Control, Frame, FrameSink, SinkError};

/// A frame from the namespace, for the session to translate.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Delivered {
    frame: Frame,
    /// Counts the frame out of its sink's queue when handled.
    queued: Arc<AtomicUsize>,
}

impl Delivered {
    /// The frame, and its place freed in the queue.
    pub fn take(self) -> Frame {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.frame
    }
}

/// A client's outbox sink that hands frames to its session's actor,
/// bounded like a socket's queue.
pub struct ToActor {
    frames: Recipient<Delivered>,
    control: Recipient<Control>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl ToActor {
    pub fn new(
        frames: Recipient<Delivered>,
        control: Recipient<Control>,
        capacity: usize,
    ) -> ToActor {
        ToActor {
            frames,
            control,
            queued: Arc::default(),
            capacity,
        }
    }
}

impl FrameSink for ToActor {
    fn push(&self, frame: Frame) -> Result<usize, SinkError> {
        let depth = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if depth > self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(SinkError::Full);
        }
        self.frames
            .try_send(Delivered {
                frame,
                queued: self.queued.clone(),
            })
            .map_err(|_| {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                SinkError::Closed
            })?;
        Ok(depth)
    }

    fn close(&self, close: &Close) {
        self.control.do_send(Control::Close(close.clone()));
    }

    // The actor's mailbox keeps the order; nothing to hold.
    fn hold(&self) {}
    fn release(&self) {}
}
