//! The baseline: a minimal fan-out server written directly on tokio and
//! tokio-tungstenite, to measure the gateway against in the same run.
//!
//! It speaks just enough of the concierge protocol for `concierge bench
//! fanout` (and `direct`) to run against it unchanged: IDENTIFY → HELLO,
//! SERVICE_CREATE, SELF_SUBSCRIBE, and MESSAGE to a SERVICE (from its owner)
//! or to a NAME, answered with OK. Relayed MESSAGEs are built with the
//! gateway's own [`MessageOut`], so they have the same shape and size, and
//! one serialized buffer is shared by every subscriber. There is no
//! validation, no limit, no heartbeat, no broadcast of joins.
//!
//! What it does the way a fast server should, so that the comparison is
//! fair to the gateway and not flattering: a 4 KiB read buffer per socket
//! (tungstenite's default 128 KiB would make it a weak baseline), and writes
//! batched per socket: each connection has a writer task that feeds every
//! frame already queued to it and flushes once the queue is empty.
//!
//! Run it with `cargo bench --bench baseline -- --bind 127.0.0.1:9100`
//! (`--threads N` for a multi-threaded runtime; one thread by default).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::Parser;
use concierge::bench::ws_config;
use concierge::protocol::{
    raw_json, ClientInfo, MessageOut, OriginRef, PayloadIn, PayloadOut, ServiceInfo, Target,
    PROTOCOL_VERSION,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

/// The gateway's allocator, so that the comparison measures the servers,
/// not their allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A minimal fan-out server to compare the gateway with.
#[derive(Parser)]
struct Args {
    /// Address to listen on; the WebSocket answers on any path.
    #[arg(long, default_value = "127.0.0.1:9100")]
    bind: String,
    /// Runtime threads: 1 is a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type ConnId = u64;

/// A client as IDENTIFY made it, with its MESSAGE receipt encoded once (as
/// the gateway does).
struct Client {
    info: ClientInfo,
    origin: Box<RawValue>,
}

struct Conn {
    /// Set by IDENTIFY.
    info: Option<Client>,
    out: mpsc::UnboundedSender<Utf8Bytes>,
}

struct Service {
    /// As it appears in MESSAGE receipts: no subscribers.
    receipt: ServiceInfo,
    /// The same, encoded once.
    receipt_json: Box<RawValue>,
    subscribers: Vec<ConnId>,
}

#[derive(Default)]
struct Hub {
    next: ConnId,
    conns: HashMap<ConnId, Conn>,
    names: HashMap<String, ConnId>,
    services: HashMap<String, Service>,
}

type Shared = Arc<Mutex<Hub>>;

fn lock(hub: &Shared) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    fn send(&self, to: ConnId, frame: Utf8Bytes) {
        if let Some(conn) = self.conns.get(&to) {
            // A closed channel means the connection is going away.
            let _ = conn.out.send(frame);
        }
    }

    fn reply(&self, to: ConnId, seq: Option<u64>, payload: PayloadOut) {
        self.send(to, payload.encode(seq).into());
    }

    /// Handles one text frame of connection `id`; `seq` counts its payloads.
    fn handle(&mut self, id: ConnId, text: &str, seq: &mut u64) {
        let identified = self.conns.get(&id).and_then(|c| c.info.as_ref()).is_some();
        let payload = match PayloadIn::decode(text) {
            Ok(payload) => payload,
            Err(e) => {
                let desc = e.to_string();
                return self.reply(id, Some(next(seq)), PayloadOut::ErrorProtocol { desc });
            }
        };
        if !identified {
            if let PayloadIn::Identify { name, tags, .. } = payload {
                self.identify(id, name.into_owned(), tags);
            }
            return;
        }
        let seq = Some(next(seq));
        match payload {
            PayloadIn::ServiceCreate {
                service, nickname, ..
            } => {
                let receipt = ServiceInfo {
                    name: service.clone().into_owned(),
                    nickname: nickname.map(|n| n.into_owned()),
                    owner_uuid: self.uuid(id),
                    subscribers: Vec::new(),
                    history: None,
                };
                self.services.insert(
                    service.into_owned(),
                    Service {
                        receipt_json: raw_json(&receipt),
                        receipt: receipt.clone(),
                        subscribers: Vec::new(),
                    },
                );
                let payload = PayloadOut::ServiceCreateResult {
                    successful: true,
                    service: receipt,
                };
                self.reply(id, seq, payload);
            }
            PayloadIn::SelfSubscribe { service, .. } => {
                let uuids: Vec<Uuid> = self
                    .services
                    .get(service.as_ref())
                    .map(|s| s.subscribers.iter().map(|c| self.uuid(*c)).collect())
                    .unwrap_or_default();
                let payload = match self.services.get_mut(service.as_ref()) {
                    Some(s) => {
                        s.subscribers.push(id);
                        let mut info = s.receipt.clone();
                        info.subscribers = uuids;
                        info.subscribers.push(self.uuid(id));
                        PayloadOut::SelfSubscribeResult {
                            successful: true,
                            service: info,
                            position: None,
                            recovered: None,
                        }
                    }
                    None => PayloadOut::InvalidService {
                        service: service.into_owned(),
                    },
                };
                self.reply(id, seq, payload);
            }
            PayloadIn::Message { target, data } => {
                let answer = self.relay(id, &target, data);
                self.reply(id, seq, answer);
            }
            _ => self.reply(id, seq, PayloadOut::ErrorUnsupported),
        }
    }

    fn identify(&mut self, id: ConnId, name: String, tags: Vec<std::borrow::Cow<'_, str>>) {
        let uuid = Uuid::new_v4();
        let info = ClientInfo {
            name: name.clone(),
            nickname: None,
            uuid,
            tags: tags.into_iter().map(|t| t.into_owned()).collect(),
            user: None,
            roles: Vec::new(),
        };
        let origin = OriginRef {
            client: &info,
            service: None,
        }
        .encode();
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.info = Some(Client { info, origin });
        }
        self.names.insert(name, id);
        let hello = PayloadOut::Hello {
            uuid,
            version: PROTOCOL_VERSION.into(),
            // No file server: no key; no resume secret.
            fs_key: String::new(),
            resume: None,
        };
        self.reply(id, None, hello);
    }

    fn uuid(&self, id: ConnId) -> Uuid {
        self.conns
            .get(&id)
            .and_then(|c| c.info.as_ref())
            .map_or(Uuid::nil(), |c| c.info.uuid)
    }

    /// Relays a MESSAGE: to every subscriber of a service (from its owner,
    /// one buffer for all), or to a client by name.
    fn relay(
        &self,
        from: ConnId,
        target: &Target,
        data: &serde_json::value::RawValue,
    ) -> PayloadOut {
        let Some(sender) = self.conns.get(&from).and_then(|c| c.info.as_ref()) else {
            return PayloadOut::ErrorUnsupported;
        };
        match target {
            Target::Service { service } => {
                let Some(s) = self.services.get(service) else {
                    return PayloadOut::InvalidService {
                        service: service.clone(),
                    };
                };
                let frame: Utf8Bytes = MessageOut {
                    target,
                    origin: &sender.origin,
                    service: Some(&s.receipt_json),
                    data,
                    position: None,
                }
                .encode()
                .into();
                for &to in &s.subscribers {
                    if to != from {
                        self.send(to, frame.clone());
                    }
                }
                PayloadOut::Ok
            }
            Target::Name { name } => match self.names.get(name) {
                Some(&to) => {
                    let frame = MessageOut {
                        target,
                        origin: &sender.origin,
                        service: None,
                        data,
                        position: None,
                    }
                    .encode();
                    self.send(to, frame.into());
                    PayloadOut::Ok
                }
                None => PayloadOut::InvalidName { name: name.clone() },
            },
            _ => PayloadOut::ErrorUnsupported,
        }
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(Conn {
            info: Some(Client { info, .. }),
            ..
        }) = self.conns.remove(&id)
        {
            self.names.remove(&info.name);
            self.services
                .retain(|_, s| s.receipt.owner_uuid != info.uuid);
        }
        for s in self.services.values_mut() {
            s.subscribers.retain(|c| *c != id);
        }
    }
}

fn next(seq: &mut u64) -> u64 {
    let s = *seq;
    *seq += 1;
    s
}

async fn serve(
    stream: TcpStream,
    hub: Shared,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await?;
    let (mut sink, mut source) = ws.split();
    let (out, mut queue) = mpsc::unbounded_channel::<Utf8Bytes>();
    let id = {
        let mut hub = lock(&hub);
        hub.next += 1;
        let id = hub.next;
        hub.conns.insert(id, Conn { info: None, out });
        id
    };
    // Every frame already queued goes into one socket write.
    let writer = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            sink.feed(Message::Text(frame)).await?;
            while let Ok(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    });
    let mut seq = 0;
    let result = loop {
        match source.next().await {
            Some(Ok(Message::Text(text))) => lock(&hub).handle(id, &text, &mut seq),
            Some(Ok(Message::Close(_))) | None => break Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => break Err(e),
        }
    };
    lock(&hub).remove(id);
    writer.abort();
    result
}

async fn run(bind: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&bind).await?;
    eprintln!("baseline: listening on ws://{}/ws", listener.local_addr()?);
    let hub = Shared::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let hub = hub.clone();
        // A load generator drops its connections without a closing
        // handshake: connection errors are not worth reporting.
        tokio::spawn(async move {
            let _ = serve(stream, hub).await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let result = runtime.and_then(|rt| rt.block_on(run(args.bind)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baseline: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
