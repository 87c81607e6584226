//! One client of a run: its [`Plan`] (who it is, where it connects, what
//! it sets up, whose messages it receives and whom it sends to), and the
//! task that carries it out: set up, read until the run stops, send when
//! it goes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::run::Shared;
use super::{GO, STOP};
use crate::bench::clients::{classify, Client, Incoming, MessageFrames};
use crate::bench::stats::{Receipts, Tracker};
use crate::bench::{BenchError, MessageArgs};
use crate::protocol::{History, PayloadIn, PayloadOut, Sequenced, Target};

/// What a relayed benchmark MESSAGE must look like.
#[derive(Clone)]
pub(super) struct Expect {
    pub(super) target: Target,
    pub(super) origin: String,
    pub(super) service: Option<String>,
}

impl Expect {
    fn check(&self, text: &str) -> Result<(), String> {
        let parsed: Sequenced =
            serde_json::from_str(text).map_err(|e| format!("undecodable MESSAGE ({e}): {text}"))?;
        match parsed.payload {
            PayloadOut::Message { target, origin, .. }
                if target == self.target
                    && origin.client.name == self.origin
                    && origin.service.as_ref().map(|s| s.name.as_str())
                        == self.service.as_deref() =>
            {
                Ok(())
            }
            _ => Err(format!("unexpected MESSAGE envelope: {text}")),
        }
    }
}

pub(super) struct Receive {
    pub(super) tracker: Arc<Tracker>,
    pub(super) messages: u64,
    pub(super) expect: Expect,
}

pub(super) struct Send {
    pub(super) tracker: Arc<Tracker>,
    pub(super) target: Target,
    pub(super) args: MessageArgs,
    /// Where in the rate interval this sender's messages fall (0..1), so
    /// that paced senders do not all send at the same instant.
    pub(super) offset: f64,
    pub(super) done: mpsc::UnboundedSender<Sent>,
}

/// One client of a scenario.
pub(super) struct Plan {
    pub(super) index: usize,
    pub(super) endpoint: usize,
    pub(super) name: String,
    /// IDENTIFY's `presence`: whether it is told of joins and leaves.
    pub(super) presence: bool,
    /// Services it creates, in order.
    pub(super) create: Vec<String>,
    /// The history each service it creates keeps.
    pub(super) history: Option<History>,
    pub(super) subscribe: Option<String>,
    pub(super) receive: Option<Receive>,
    pub(super) send: Option<Send>,
}

/// A client's report on its setup.
pub(super) struct Ready {
    pub(super) index: usize,
    pub(super) ok: bool,
}

/// What a sender did.
#[derive(Default)]
pub(super) struct Sent {
    pub(super) sent: u64,
    pub(super) first_ns: Option<u64>,
    pub(super) stalled: bool,
    pub(super) error: Option<String>,
    pub(super) tracker: Option<Arc<Tracker>>,
}

/// Everything a client task counted.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) setup_error: Option<String>,
    /// When setup began and ended, on the run's clock.
    pub(super) setup_ns: Option<(u64, u64)>,
    pub(super) receipts: Option<Receipts>,
    pub(super) malformed: u64,
    pub(super) acked: u64,
    pub(super) rejected: u64,
    pub(super) frame_bytes: Option<u64>,
    pub(super) error: Option<String>,
}

/// Connects, identifies and does the setup requests of `plan`.
async fn set_up(shared: &Shared, plan: &Plan) -> Result<Client, BenchError> {
    let ws = shared.spread.connect(plan.index, plan.endpoint).await?;
    let mut client =
        Client::identify(ws, &plan.name, &shared.secret, &shared.token, plan.presence).await?;
    for service in &plan.create {
        let create = PayloadIn::ServiceCreate {
            service: service.into(),
            nickname: None,
            history: plan.history,
        };
        succeed(&mut client, &create).await?;
    }
    if let Some(service) = &plan.subscribe {
        let subscribe = PayloadIn::SelfSubscribe {
            service: service.into(),
            position: None,
        };
        succeed(&mut client, &subscribe).await?;
    }
    Ok(client)
}

/// Sends a setup request that must succeed.
async fn succeed(client: &mut Client, request: &PayloadIn<'_>) -> Result<(), BenchError> {
    match client.request(request).await? {
        PayloadOut::ServiceCreateResult {
            successful: true, ..
        }
        | PayloadOut::SelfSubscribeResult {
            successful: true, ..
        } => Ok(()),
        reply => Err(BenchError::Protocol(format!(
            "{}: {reply:?}",
            request.kind()
        ))),
    }
}

pub(super) async fn client_task(
    shared: Arc<Shared>,
    mut plan: Plan,
    semaphore: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let permit = semaphore.acquire_owned().await;
    let begun = shared.now_ns();
    let setup = set_up(&shared, &plan).await;
    let ended = shared.now_ns();
    drop(permit);
    let client = match setup {
        Ok(client) => client,
        Err(e) => {
            outcome.setup_error = Some(e.to_string());
            let _ = ready.send(Ready {
                index: plan.index,
                ok: false,
            });
            return outcome;
        }
    };
    outcome.setup_ns = Some((begun, ended));
    shared
        .broadcasts
        .fetch_add(client.skipped, Ordering::Relaxed);
    let mut inbox = Inbox {
        shared: &shared,
        receive: plan.receive.take(),
        sending: plan.send.as_ref().map(|s| s.tracker.clone()),
        receipts: None,
        verified: false,
        replies_from: client.next_seq,
        outcome,
    };
    if let Some(r) = &inbox.receive {
        inbox.receipts = Some(Receipts::new(r.messages));
    }
    // Subscribe before reporting ready: the phase may change right after.
    let phase = shared.phase.subscribe();
    let _ = ready.send(Ready {
        index: plan.index,
        ok: true,
    });
    match plan.send.take() {
        None => {
            let mut ws = client.ws;
            read_loop(&mut ws, &mut inbox, phase).await;
        }
        Some(send) => {
            let (mut sink, mut stream) = client.ws.split();
            let reading = read_loop(&mut stream, &mut inbox, phase.clone());
            // The sender reports as soon as it is done; the reader goes on
            // until the run stops.
            let sending = async {
                let sent = send_loop(&mut sink, &shared, &send, phase).await;
                let _ = send.done.send(sent);
            };
            tokio::join!(reading, sending);
        }
    }
    let Inbox {
        mut outcome,
        receipts,
        ..
    } = inbox;
    outcome.receipts = receipts;
    outcome
}

/// The receiving side of one client.
struct Inbox<'a> {
    pub(super) shared: &'a Shared,
    receive: Option<Receive>,
    /// The client's own messages, when it sends.
    sending: Option<Arc<Tracker>>,
    pub(super) receipts: Option<Receipts>,
    verified: bool,
    /// Replies with this `seq` or later answer the client's MESSAGEs.
    replies_from: u64,
    outcome: Outcome,
}

impl Inbox<'_> {
    fn on_text(&mut self, text: &str) {
        match classify(text) {
            Incoming::Bench { seq, sent_ns } => {
                let now = self.shared.now_ns();
                let (Some(receive), Some(receipts)) = (&self.receive, &mut self.receipts) else {
                    self.outcome.malformed += 1;
                    return;
                };
                if !self.verified {
                    self.verified = true;
                    self.outcome.frame_bytes = Some(text.len() as u64);
                    if let Err(e) = receive.expect.check(text) {
                        self.outcome.malformed += 1;
                        self.outcome.error.get_or_insert(e);
                    }
                }
                if receipts.record(seq, sent_ns, now) {
                    receive.tracker.delivered(seq);
                }
            }
            Incoming::ForeignMessage => self.outcome.malformed += 1,
            Incoming::Reply { seq, ok } if seq >= self.replies_from => {
                if let Some(t) = &self.sending {
                    t.replied();
                }
                if ok {
                    self.outcome.acked += 1;
                } else {
                    self.outcome.rejected += 1;
                    self.outcome
                        .error
                        .get_or_insert_with(|| format!("request refused: {text}"));
                }
            }
            Incoming::Reply { .. } | Incoming::Other => {
                self.shared.broadcasts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn read_loop<S>(stream: &mut S, inbox: &mut Inbox<'_>, mut phase: watch::Receiver<u8>)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let stop = phase.wait_for(|p| *p >= STOP);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(Message::Text(text))) => inbox.on_text(&text),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    inbox.outcome.error.get_or_insert(format!("closed by the gateway: {why}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    inbox.outcome.error.get_or_insert(format!("connection failed: {e}"));
                    break;
                }
                None => {
                    inbox.outcome.error.get_or_insert("connection ended".into());
                    break;
                }
            },
            _ = &mut stop => break,
        }
    }
}

async fn send_loop<K>(
    sink: &mut K,
    shared: &Shared,
    send: &Send,
    mut phase: watch::Receiver<u8>,
) -> Sent
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    let mut out = Sent {
        tracker: Some(send.tracker.clone()),
        ..Sent::default()
    };
    if !matches!(phase.wait_for(|p| *p >= GO).await.map(|p| *p), Ok(GO)) {
        return out;
    }
    let frames = match MessageFrames::new(send.target.clone(), send.args.size) {
        Ok(frames) => frames,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let tracker = &send.tracker;
    let window = send.args.window.max(1);
    let interval_ns = (send.args.rate > 0.0).then(|| 1e9 / send.args.rate);
    let t0 = shared.now_ns() + interval_ns.map_or(0, |d| (d * send.offset) as u64);
    for i in 0..send.args.messages {
        let due = interval_ns.map(|d| t0 + (d * i as f64) as u64);
        if let Some(due) = due {
            let now = shared.now_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            }
        }
        let mut held = false;
        let mode = send.args.window_mode;
        if i >= window && tracker.done(mode) < i + 1 - window {
            held = true;
            if !tracker.wait(mode, i + 1 - window, shared.patience).await {
                out.stalled = true;
                break;
            }
        }
        let now = shared.now_ns();
        let sent_ns = match due {
            Some(due) if held && now > due => due,
            _ => now,
        };
        out.first_ns.get_or_insert(sent_ns);
        if let Err(e) = sink.send(Message::Text(frames.frame(i, sent_ns))).await {
            out.error = Some(format!("send failed: {e}"));
            break;
        }
        out.sent += 1;
    }
    out
}
