//! One identified client's handle on the namespace: where a transport turns
//! the client's requests into answers.
//!
//! Everything a request only reads (fetches, MESSAGE routing) is done at
//! once, on the caller's thread, from the published views, and answered
//! into the client's outbox. A request that changes something is sent to
//! the actor that owns it, which answers it into the outbox itself, right
//! after the change and before it handles anything else (so the answer
//! comes before any consequence of later changes). The outcome is then
//! [`Outcome::Later`]: the transport must hold the client's next requests
//! until it is done, which is what keeps replies in request order and one
//! sender's frames in the order they were sent, whichever actor or thread
//! carries them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::value::RawValue;
use uuid::Uuid;

use super::registry::{CreateService, DeleteService};
use super::router::{self, Relayed};
use super::service::{Subscribe, Unsubscribe};
use super::view::ClientRecord;
use super::Namespace;
use crate::protocol::alerts::ALERTS_SERVICE;
use crate::protocol::{ClientInfo, History, HostService, PayloadOut, Position, Sequenced, Target};
use crate::transport::outbox::{Frame, Outbox};

/// The longest a service's history may keep a message: a day.
pub const MAX_HISTORY_TTL_SECS: u64 = 86_400;

/// What an identified client asked for, owned (to wait behind an earlier
/// request).
#[derive(Debug)]
pub enum Op {
    Message {
        target: Target,
        data: Box<RawValue>,
    },
    SelfSubscribe {
        service: String,
        /// Where to resume the service's history from.
        position: Option<Position>,
    },
    SelfUnsubscribe(String),
    SelfFetch,
    ServiceCreate {
        service: String,
        nickname: Option<String>,
        history: Option<History>,
    },
    ServiceDelete(String),
    ServiceFetch(String),
    ServiceFetchAll,
    ClientFetch(String),
    ClientFetchAll,
}

/// Where the answer to one request goes: the requester's outbox, with the
/// request's `seq`.
#[derive(Clone)]
pub struct ReplyTo {
    outbox: Outbox,
    seq: Option<u64>,
}

impl ReplyTo {
    pub fn send(&self, payload: PayloadOut) {
        self.outbox.send(Frame::json(&Sequenced {
            seq: self.seq,
            payload,
        }));
    }
}

/// How a request was answered.
pub enum Outcome {
    Answered,
    /// An actor answers it; the client's next requests wait until `done`.
    Later {
        done: Pin<Box<dyn Future<Output = ()>>>,
        /// What it waits for, to say so when a client floods past it.
        waiting_for: &'static str,
    },
}

impl Outcome {
    fn later(waiting_for: &'static str, done: impl Future<Output = ()> + 'static) -> Outcome {
        Outcome::Later {
            done: Box::pin(done),
            waiting_for,
        }
    }
}

/// Waits for an actor that answers a request itself; if the actor is gone
/// before it could, the request is answered with `fallback`.
async fn answered_by(
    request: impl Future<Output = Result<(), actix::MailboxError>>,
    reply: ReplyTo,
    fallback: PayloadOut,
) {
    if request.await.is_err() {
        reply.send(fallback);
    }
}

/// An identified client, as its transport sees the namespace.
pub struct Member {
    record: Arc<ClientRecord>,
    outbox: Outbox,
    namespace: Namespace,
}

impl Member {
    pub(super) fn new(record: Arc<ClientRecord>, outbox: Outbox, namespace: Namespace) -> Self {
        Member {
            record,
            outbox,
            namespace,
        }
    }

    /// Where the answer to the request `seq` goes.
    pub fn reply_to(&self, seq: Option<u64>) -> ReplyTo {
        ReplyTo {
            outbox: self.outbox.clone(),
            seq,
        }
    }

    /// Answers a request the transport decided on by itself (a decode
    /// error, SELF_SET_SEQ).
    pub fn reply(&self, seq: Option<u64>, payload: PayloadOut) {
        self.outbox.send(Frame::json(&Sequenced { seq, payload }));
    }

    pub fn info(&self) -> &ClientInfo {
        &self.record.info
    }

    pub fn uuid(&self) -> Uuid {
        self.record.info.uuid
    }

    /// Relays a MESSAGE and leaves its answer to the caller, for a
    /// transport that keeps its replies in order itself (and so need not
    /// hold the next requests while a frame is handed to the cluster).
    pub fn relay(&self, target: &Target, data: &RawValue) -> Relayed {
        router::route(&self.namespace, &self.record, target, data)
    }

    /// Relays a MESSAGE and answers it; `data` is relayed byte for byte.
    pub fn message(&self, seq: Option<u64>, target: &Target, data: &RawValue) -> Outcome {
        match router::route(&self.namespace, &self.record, target, data) {
            Relayed::Now(payload) => {
                self.reply(seq, payload);
                Outcome::Answered
            }
            Relayed::HandedOff(answer) | Relayed::LookingUp(answer) => {
                let reply = self.reply_to(seq);
                Outcome::later("a lookup or the cluster", async move {
                    reply.send(answer.await);
                })
            }
        }
    }

    /// Answers a request.
    pub fn request(&self, seq: Option<u64>, op: Op) -> Outcome {
        let reply = self.reply_to(seq);
        let now = |payload| {
            reply.send(payload);
            Outcome::Answered
        };
        let ns = &self.namespace;
        let dir = ns.directory();
        match op {
            Op::Message { target, data } => self.message(seq, &target, &data),
            Op::SelfFetch => now(PayloadOut::SelfFetchResult {
                client: self.record.info.clone(),
                subscriptions: dir.subscriptions_of(&self.record),
            }),
            Op::ClientFetch(raw) => match raw.parse::<Uuid>().ok().and_then(|u| dir.client(&u)) {
                Some(other) => now(PayloadOut::ClientFetchResult {
                    client: other.info.clone(),
                    subscriptions: dir.subscriptions_of(other),
                }),
                None => now(PayloadOut::InvalidUuid { uuid: raw }),
            },
            Op::ClientFetchAll => {
                let mut clients: Vec<ClientInfo> = dir.clients().map(|c| c.info.clone()).collect();
                clients.sort_by(|a, b| a.name.cmp(&b.name));
                now(PayloadOut::ClientFetchAllResult { clients })
            }
            Op::ServiceFetch(name) => now(match dir.service(&name) {
                Some(service) => PayloadOut::ServiceFetchResult {
                    service: service.info(),
                },
                None => PayloadOut::InvalidService { service: name },
            }),
            Op::ServiceFetchAll => now(PayloadOut::ServiceFetchAllResult {
                services: dir.services().map(|s| s.info()).collect(),
            }),
            Op::SelfSubscribe {
                service: name,
                position,
            } => {
                let Some(service) = dir.service(&name) else {
                    return now(PayloadOut::InvalidService { service: name });
                };
                // The client's own subscription changes only by its own
                // requests, answered before this one: the view is exact.
                let view = service.view.load();
                if view.subscribers.contains(&self.uuid()) {
                    return now(PayloadOut::SelfSubscribeResult {
                        successful: false,
                        service: view.info(),
                        position: None,
                        recovered: None,
                    });
                }
                let request = service.addr.send(Subscribe {
                    client: self.record.clone(),
                    position,
                    reply: reply.clone(),
                });
                // A service that ended meanwhile no longer exists.
                let gone = PayloadOut::InvalidService { service: name };
                Outcome::later("a subscription", answered_by(request, reply, gone))
            }
            Op::SelfUnsubscribe(name) => {
                let Some(service) = dir.service(&name) else {
                    return now(PayloadOut::InvalidService { service: name });
                };
                let view = service.view.load();
                if !view.subscribers.contains(&self.uuid()) {
                    return now(PayloadOut::SelfUnsubscribeResult {
                        successful: false,
                        service: view.info(),
                    });
                }
                let request = service.addr.send(Unsubscribe {
                    client: self.record.clone(),
                    reply: reply.clone(),
                });
                let gone = PayloadOut::InvalidService { service: name };
                Outcome::later("an unsubscription", answered_by(request, reply, gone))
            }
            Op::ServiceCreate {
                service,
                nickname,
                history,
            } => {
                if let Some(existing) = dir.service(&service) {
                    return now(PayloadOut::ServiceCreateResult {
                        successful: false,
                        service: existing.info(),
                    });
                }
                if let Err(desc) = self.check_service_fields(&service, nickname.as_deref()) {
                    return now(PayloadOut::Bad { desc: Some(desc) });
                }
                let history = match self.history_to_keep(history) {
                    Ok(history) => history,
                    Err(desc) => return now(PayloadOut::Bad { desc: Some(desc) }),
                };
                let request = ns.registry.send(CreateService {
                    owner: self.uuid(),
                    name: service,
                    nickname,
                    history,
                    reply: reply.clone(),
                });
                Outcome::later(
                    "a service creation",
                    answered_by(request, reply, unreachable()),
                )
            }
            Op::ServiceDelete(name) => {
                let request = ns.registry.send(DeleteService {
                    by: self.uuid(),
                    name,
                    reply: reply.clone(),
                });
                Outcome::later(
                    "a service deletion",
                    answered_by(request, reply, unreachable()),
                )
            }
        }
    }

    /// The history a new service keeps: what it asked for, checked, or the
    /// default; none when it asked for 0 messages.
    fn history_to_keep(&self, asked: Option<History>) -> Result<Option<History>, String> {
        let settings = self.namespace.settings();
        let history = match asked {
            Some(history) => {
                let max = settings.max_history_size;
                if history.size > max {
                    return Err(format!("a service history keeps at most {max} messages"));
                }
                if !(1..=MAX_HISTORY_TTL_SECS).contains(&history.ttl) {
                    return Err(format!(
                        "a service history keeps a message 1 to {MAX_HISTORY_TTL_SECS} seconds"
                    ));
                }
                history
            }
            None => History {
                size: settings.history_size,
                ttl: settings.history_ttl_secs,
            },
        };
        Ok((history.size > 0).then_some(history))
    }

    fn check_service_fields(&self, name: &str, nickname: Option<&str>) -> Result<(), String> {
        let settings = self.namespace.settings();
        let max = settings.max_name_len;
        if name.is_empty() || name.len() > max {
            return Err(format!("a service name must be 1 to {max} bytes long"));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("a service name may not contain spaces or control characters".into());
        }
        if name == ALERTS_SERVICE && self.record.info.name != ALERTS_SERVICE {
            return Err(format!(
                "{name:?} is reserved: the gateway broadcasts alert events there"
            ));
        }
        if let Some(host) = HostService::host_of(name) {
            if !self.record.info.is_host(host) {
                return Err(format!(
                    "{name:?} is reserved for host {host:?}: only that host's agent may create it"
                ));
            }
        }
        let max = settings.max_nickname_len;
        if nickname.is_some_and(|n| n.len() > max) {
            return Err(format!(
                "a service nickname may be at most {max} bytes long"
            ));
        }
        Ok(())
    }
}

fn unreachable() -> PayloadOut {
    PayloadOut::ErrorInternal {
        desc: "the registry cannot be reached".into(),
    }
}
