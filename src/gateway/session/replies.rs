//! Replies in request order.
//!
//! A native client numbers nothing: its replies must come in the order of
//! its requests. MESSAGEs are routed and fetches answered at once, but a
//! request whose answer comes later (a subscription, a lookup, the user's
//! settings in the store) holds the client's next requests until it is in,
//! and the answers to MESSAGEs still on their way to the cluster are sent
//! oldest first. Both queues are bounded by `max_outgoing_queue`.

use std::collections::VecDeque;

use actix::prelude::*;

use super::{Native, State};
use crate::auth::user_settings;
use crate::namespace::{Member, Op, Outcome, Relayed};
use crate::protocol::{Close, CloseCode, PayloadIn, PayloadOut};
use crate::session::{Ctx, Session};

use super::super::answers;

/// What a request asks of the session once it is its turn.
pub(super) enum Request {
    Op(Op),
    /// USER_SETTINGS_FETCH (`None`) or USER_SETTINGS_SET.
    Settings(Option<(String, String)>),
    /// A MESSAGE to the gateway itself ([`protocol::GATEWAY_NAME`]).
    Gateway(Box<serde_json::value::RawValue>),
    /// A reply the session decided on by itself (SELF_SET_SEQ's OK, a
    /// decode error), queued behind the replies to earlier requests.
    Reply(Box<PayloadOut>),
}

/// The client's requests that wait for an earlier one to be answered.
#[derive(Default)]
pub(super) struct Held {
    /// What the request being answered waits for; `None` when nothing is
    /// pending and requests are answered as they come.
    pub(super) waiting_for: Option<&'static str>,
    pub(super) queue: VecDeque<(Option<u64>, Request)>,
}

/// The answers to MESSAGEs relayed at once while earlier ones are still
/// on their way to the cluster, in request order. A sender's MESSAGEs need
/// not wait for each other's hand-off (their frames leave in order on one
/// link), but no reply may overtake an earlier one.
#[derive(Default)]
pub(super) struct Acks {
    /// Oldest first: each request's `seq` and, once known, its answer.
    slots: VecDeque<(Option<u64>, Option<PayloadOut>)>,
    /// How many slots have been answered and removed (the ticket of the
    /// front one).
    done: u64,
}

impl Acks {
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queues an answer (`None` while unknown); returns its ticket.
    fn push(&mut self, seq: Option<u64>, answer: Option<PayloadOut>) -> u64 {
        self.slots.push_back((seq, answer));
        self.done + self.slots.len() as u64 - 1
    }

    fn fill(&mut self, ticket: u64, answer: PayloadOut) {
        if let Some(slot) = ticket
            .checked_sub(self.done)
            .and_then(|i| self.slots.get_mut(i as usize))
        {
            slot.1 = Some(answer);
        }
    }

    /// The next answer that may be sent, if the oldest is known.
    fn pop_ready(&mut self) -> Option<(Option<u64>, PayloadOut)> {
        if !matches!(self.slots.front(), Some((_, Some(_)))) {
            return None;
        }
        let (seq, answer) = self.slots.pop_front()?;
        self.done += 1;
        Some((seq, answer?))
    }
}

impl Session<Native> {
    /// Answers a relayed MESSAGE, after the answers still owed to earlier
    /// ones.
    pub(super) fn answer_relayed(
        &mut self,
        seq: Option<u64>,
        relayed: Relayed,
        ctx: &mut Ctx<Native>,
    ) {
        let (answer, lookup) = match relayed {
            Relayed::Now(payload) if self.format.acks.is_empty() => {
                return self.reply(seq, payload)
            }
            Relayed::Now(payload) => {
                self.format.acks.push(seq, Some(payload));
                return;
            }
            Relayed::HandedOff(answer) => (answer, false),
            Relayed::LookingUp(answer) => {
                // Its frame is not sent yet: what comes next waits.
                self.format.held.waiting_for = Some("a lookup");
                (answer, true)
            }
        };
        let max = self.settings.max_outgoing_queue;
        if self.format.acks.slots.len() >= max {
            let reason =
                format!("too fast: more than {max} messages waiting to leave for the cluster");
            return self.evict(Close::new(CloseCode::Policy, reason), ctx);
        }
        let ticket = self.format.acks.push(seq, None);
        ctx.spawn(answer.into_actor(self).map(move |payload, act, ctx| {
            if lookup {
                act.format.held.waiting_for = None;
            }
            act.format.acks.fill(ticket, payload);
            while let Some((seq, payload)) = act.format.acks.pop_ready() {
                act.reply(seq, payload);
            }
            act.release(ctx);
        }));
    }

    fn reply(&self, seq: Option<u64>, payload: PayloadOut) {
        if let State::Identified { member, .. } = &self.format.state {
            member.reply(seq, payload);
        }
    }

    /// What the next request must wait for, if anything: an earlier
    /// request, or the answers still owed to relayed MESSAGEs (its reply
    /// must come after theirs).
    fn waiting_for(&self) -> Option<&'static str> {
        self.format.held.waiting_for.or_else(|| {
            (!self.format.acks.is_empty()).then_some("messages leaving for the cluster")
        })
    }

    /// Answers a request now, or queues it behind the one being answered.
    pub(super) fn submit(&mut self, seq: Option<u64>, request: Request, ctx: &mut Ctx<Native>) {
        if let Some(what) = self.waiting_for() {
            let max = self.settings.max_outgoing_queue;
            if self.format.held.queue.len() >= max {
                // Their answers could not be queued either: the same bound.
                let reason = format!("too fast: more than {max} requests waiting for {what}");
                return self.evict(Close::new(CloseCode::Policy, reason), ctx);
            }
            self.format.held.queue.push_back((seq, request));
            return;
        }
        self.execute(seq, request, ctx);
    }

    fn execute(&mut self, seq: Option<u64>, request: Request, ctx: &mut Ctx<Native>) {
        let State::Identified { member, claims, .. } = &self.format.state else {
            return;
        };
        let outcome = match request {
            Request::Gateway(data) => {
                // Accepted like any MESSAGE; the answer comes as a MESSAGE.
                member.reply(seq, PayloadOut::Ok);
                let desk = answers::Desk {
                    vpn: self.vpn.clone(),
                    inventory: self.inventory.clone(),
                    jobs: self.jobs.clone(),
                    alerts: self.alerts.clone(),
                    namespace: self.namespace.clone(),
                    auth: self.auth.clone(),
                };
                let answer = answers::answer(
                    desk,
                    member.info().clone(),
                    claims.as_deref().cloned(),
                    data,
                    member.reply_to(None),
                );
                ctx.spawn(answer.into_actor(self));
                Outcome::Answered
            }
            Request::Reply(payload) => {
                member.reply(seq, *payload);
                Outcome::Answered
            }
            Request::Op(op) => member.request(seq, op),
            Request::Settings(change) => self.user_settings(seq, change, member),
        };
        self.wait_for(outcome, ctx);
    }

    /// Reads or writes the identified user's settings, in the store.
    fn user_settings(
        &self,
        seq: Option<u64>,
        change: Option<(String, String)>,
        member: &Member,
    ) -> Outcome {
        let Some(user) = member.info().user.clone() else {
            member.reply(
                seq,
                PayloadOut::Bad {
                    desc: Some("settings belong to a user: identify with a token".into()),
                },
            );
            return Outcome::Answered;
        };
        let store = self.auth.store().clone();
        let reply = member.reply_to(seq);
        let done = async move {
            let result = match change {
                None => user_settings::get(&store, &user)
                    .await
                    .map(|settings| PayloadOut::UserSettingsFetchResult { settings }),
                Some((name, value)) => user_settings::set(&store, &user, &name, &value)
                    .await
                    .map(|settings| PayloadOut::UserSettingsSetResult { settings }),
            };
            reply.send(result.unwrap_or_else(|e| PayloadOut::Bad {
                desc: Some(e.to_string()),
            }));
        };
        Outcome::Later {
            done: Box::pin(done),
            waiting_for: "the user's settings",
        }
    }

    /// Holds the next requests until a request answered later is done,
    /// then handles what was held.
    fn wait_for(&mut self, outcome: Outcome, ctx: &mut Ctx<Native>) {
        if let Outcome::Later { done, waiting_for } = outcome {
            self.format.held.waiting_for = Some(waiting_for);
            ctx.spawn(done.into_actor(self).map(|(), act, ctx| {
                act.format.held.waiting_for = None;
                act.release(ctx);
            }));
        }
    }

    /// Handles, in order, the requests that waited, until one waits again.
    fn release(&mut self, ctx: &mut Ctx<Native>) {
        while self.waiting_for().is_none() {
            let Some((seq, request)) = self.format.held.queue.pop_front() else {
                return;
            };
            self.execute(seq, request, ctx);
        }
    }
}

/// Turns a payload from an identified client into an owned request.
/// (SELF_SET_SEQ is handled by the caller, which owns the counter.)
pub(super) fn request_for(payload: PayloadIn<'_>) -> Request {
    Request::Op(match payload {
        PayloadIn::Identify { .. } => {
            return Request::Reply(Box::new(PayloadOut::ErrorProtocol {
                desc: "already identified".into(),
            }))
        }
        PayloadIn::SelfSetSeq { .. } => return Request::Reply(Box::new(PayloadOut::Ok)),
        PayloadIn::Message { target, data } => Op::Message {
            target,
            data: data.to_owned(),
        },
        PayloadIn::SelfSubscribe { service, position } => Op::SelfSubscribe {
            service: service.into_owned(),
            position,
        },
        PayloadIn::SelfUnsubscribe { service } => Op::SelfUnsubscribe(service.into_owned()),
        PayloadIn::SelfFetch => Op::SelfFetch,
        PayloadIn::ServiceCreate {
            service,
            nickname,
            history,
        } => Op::ServiceCreate {
            service: service.into_owned(),
            nickname: nickname.map(|n| n.into_owned()),
            history,
        },
        PayloadIn::ServiceDelete { service } => Op::ServiceDelete(service.into_owned()),
        PayloadIn::ServiceFetch { service } => Op::ServiceFetch(service.into_owned()),
        PayloadIn::ServiceFetchAll => Op::ServiceFetchAll,
        PayloadIn::ClientFetch { uuid } => Op::ClientFetch(uuid.into_owned()),
        PayloadIn::ClientFetchAll => Op::ClientFetchAll,
        PayloadIn::UserSettingsFetch => return Request::Settings(None),
        PayloadIn::UserSettingsSet { setting, value } => {
            return Request::Settings(Some((setting.into_owned(), value.into_owned())))
        }
    })
}
