//! The gateway's own connections to the namespace (a job's coordinator,
//! the alerts' publisher): an in-process [`FrameSink`] that hands what the
//! namespace sends such a member (the agents' replies and events, the
//! answers to its own requests) to its task, the recipient of its
//! [`Control`]s, and [`relay`], how it sends.
//!
//! Such a member is a namespace member like any client, so that agents
//! anywhere in the cluster reach it by its uuid, authorize its creator's
//! roles and audit them, and so that its events go out on a service with a
//! history. It is not a socket: nothing to frame or write.
//!
//! Its queue is bounded like every client's, but a full queue drops the
//! frame and counts it instead of having the client evicted: what a
//! coordinator receives are replies it asks for again (a host that has
//! not answered is sent its `run_job` again, and the agent answers from
//! its record), so losing one costs time, not a result; an evicted
//! coordinator would cost every reply in flight. The alerts' publisher
//! reads nothing it is sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::namespace::{Member, Relayed};
use crate::protocol::{Close, Target};
use crate::transport::outbox::{Control, Frame, FrameSink, SinkError};

/// What reaches the coordinator through its member.
pub enum Delivery {
    Frame(Frame),
    /// The namespace closed the member (a takeover, an eviction, the
    /// gateway stopping).
    Closed(Close),
}

/// The sink half, given to the member's outbox.
pub struct Inbox {
    tx: mpsc::Sender<Delivery>,
    closed: AtomicBool,
    /// Frames dropped because the coordinator fell behind.
    dropped: AtomicU64,
}

impl Inbox {
    /// A sink holding at most `bound` frames, and the receiving end.
    pub fn new(bound: usize) -> (Arc<Inbox>, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(bound.max(1));
        let inbox = Inbox {
            tx,
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        };
        (Arc::new(inbox), rx)
    }

    /// The recipient of the member's [`Control`]s (a close).
    pub fn control(self: &Arc<Inbox>) -> Recipient<Control> {
        Doorbell {
            inbox: self.clone(),
        }
        .start()
        .recipient()
    }
}

impl FrameSink for Inbox {
    fn push(&self, frame: Frame) -> Result<usize, SinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SinkError::Closed);
        }
        match self.tx.try_send(Delivery::Frame(frame)) {
            Ok(()) => Ok(self.tx.max_capacity() - self.tx.capacity()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self
                    .dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
                {
                    tracing::warn!(
                        dropped = self.dropped.load(Ordering::Relaxed),
                        "a gateway member (a job's coordinator) fell behind what it is sent; its hosts will be asked again"
                    );
                }
                Ok(self.tx.max_capacity())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SinkError::Closed),
        }
    }

    fn close(&self, close: &Close) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            // A close must arrive even in a full queue: wait for room from
            // a task rather than drop it.
            let tx = self.tx.clone();
            let close = close.clone();
            actix::spawn(async move {
                let _ = tx.send(Delivery::Closed(close)).await;
            });
        }
    }

    // A coordinator reads its replies as they come; nothing to hold.
    fn hold(&self) {}

    fn release(&self) {}
}

/// Receives the member's [`Control`]s; the close itself already reached
/// the sink.
struct Doorbell {
    inbox: Arc<Inbox>,
}

impl Actor for Doorbell {
    type Context = Context<Self>;
}

impl Handler<Control> for Doorbell {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        let Control::Close(close) = msg;
        self.inbox.close(&close);
        ctx.stop();
    }
}

/// Sends a MESSAGE from `member`, without waiting for it to leave: a job's
/// host that does not answer is asked again, and an alert event is in the
/// store for whoever missed it.
pub fn relay(member: &Member, target: Target, data: &Value) {
    let Ok(raw) = RawValue::from_string(data.to_string()) else {
        return;
    };
    match member.relay(&target, &raw) {
        Relayed::Now(_) => {}
        Relayed::HandedOff(answer) | Relayed::LookingUp(answer) => {
            actix::spawn(async move {
                answer.await;
            });
        }
    }
}
