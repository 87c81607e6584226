//! MESSAGE routing, done by the sender's own thread from the published
//! views: the target is resolved, the receipt (`origin`) attached, the
//! frame serialized once and pushed into every recipient's outbox (or
//! handed to the cluster for recipients on other nodes), with no actor in
//! between. A target this node has not heard of is looked up in the
//! cluster first: it may have joined another node a moment ago.

use std::sync::Arc;

use serde_json::value::RawValue;
use uuid::Uuid;

use std::future::Future;
use std::pin::Pin;

use super::gate::HistoryGate;
use super::view::{ClientRecord, Directory};
use super::Namespace;
use crate::cluster::Handoff;
use crate::protocol::{MessageOut, PayloadOut, Position, Target};
use crate::transport::outbox::Frame;

/// An answer that comes later.
pub type Answer = Pin<Box<dyn Future<Output = PayloadOut>>>;

/// The sender's answer to a MESSAGE. (Only ever returned and matched at
/// once: its size does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Relayed {
    /// Delivered (or refused) now.
    Now(PayloadOut),
    /// Handed to the cluster: the answer comes once the frame left. The
    /// sender's next frames go out behind it on the same link, so they
    /// need not wait; only its next replies must come after this one.
    HandedOff(Answer),
    /// The target is being looked up in the cluster: the sender's next
    /// requests must wait, or their frames could overtake this one.
    LookingUp(Answer),
}

/// The sender's answer for a frame handed to the cluster (after the copies
/// for this node's clients went out): `OK` only once it left.
fn answer(handoff: Handoff) -> Relayed {
    match handoff {
        Handoff::Sent => Relayed::Now(PayloadOut::Ok),
        Handoff::Refused => Relayed::Now(not_sent()),
        Handoff::Queued(sent) => Relayed::HandedOff(Box::pin(async move {
            if sent.await {
                PayloadOut::Ok
            } else {
                not_sent()
            }
        })),
    }
}

fn not_sent() -> PayloadOut {
    PayloadOut::ErrorUnavailable {
        desc: "the cluster is unreachable: the message did not reach clients of other replicas"
            .into(),
    }
}

/// Relays a MESSAGE from `from`; returns the sender's answer.
pub(super) fn route(
    ns: &Namespace,
    from: &Arc<ClientRecord>,
    target: &Target,
    data: &RawValue,
) -> Relayed {
    let dir = ns.directory();
    let frame = |service: Option<&RawValue>| {
        Frame::message(&MessageOut {
            target,
            origin: &from.origin,
            service,
            data,
            position: None,
        })
    };
    let payload = match target {
        Target::Name { name } => match dir.named(name) {
            Some(to) => return deliver(ns, to, frame(None)),
            None => return look_up(ns, from, target, data),
        },
        Target::Uuid { uuid } => match uuid.parse::<Uuid>() {
            Ok(to) => match dir.client(&to) {
                Some(to) => return deliver(ns, to, frame(None)),
                None => return look_up(ns, from, target, data),
            },
            Err(_) => PayloadOut::InvalidUuid { uuid: uuid.clone() },
        },
        Target::All => {
            let frame = frame(None);
            dir.publish(&frame, None);
            return answer(ns.cluster.broker().send_to_all(frame.payload(), None));
        }
        Target::Service { service } => {
            let Some(handle) = dir.service(service) else {
                return Relayed::Now(PayloadOut::InvalidService {
                    service: service.clone(),
                });
            };
            let view = handle.view.load();
            let owner = view.receipt.owner_uuid;
            let sender = from.info.uuid;
            if sender == owner {
                if let Some(gate) = &handle.history {
                    return broadcast_kept(ns, gate, service, target, from, data);
                }
                let frame = frame(Some(&view.receipt_json));
                view.publish(&frame, Some(owner));
                return answer(ns.cluster.broker().publish_service(
                    service,
                    Some(owner),
                    frame.payload(),
                ));
            } else if view.subscribers.contains(&sender) {
                return deliver_to_uuid(ns, &dir, owner, frame(Some(&view.receipt_json)));
            } else {
                PayloadOut::Bad {
                    desc: Some(format!(
                        "only the owner and subscribers of {service:?} can message it"
                    )),
                }
            }
        }
        Target::ServiceClientUuid { service, uuid } => {
            let Some(handle) = dir.service(service) else {
                return Relayed::Now(PayloadOut::InvalidService {
                    service: service.clone(),
                });
            };
            let view = handle.view.load();
            if view.receipt.owner_uuid != from.info.uuid {
                return Relayed::Now(PayloadOut::Bad {
                    desc: Some(format!(
                        "only the owner of {service:?} can use SERVICE_CLIENT_UUID"
                    )),
                });
            }
            match uuid.parse().ok().filter(|u| view.subscribers.contains(u)) {
                Some(to) => return deliver_to_uuid(ns, &dir, to, frame(Some(&view.receipt_json))),
                None => PayloadOut::InvalidUuid { uuid: uuid.clone() },
            }
        }
    };
    Relayed::Now(payload)
}

/// A broadcast of a service that keeps a history: appended, stamped with
/// its position, and delivered under the service's gate, so that a
/// subscriber joining meanwhile either reads it from the history or is
/// sent it live, never both (see [`HistoryGate`]).
fn broadcast_kept(
    ns: &Namespace,
    gate: &HistoryGate,
    service: &str,
    target: &Target,
    from: &ClientRecord,
    data: &RawValue,
) -> Relayed {
    let _order = gate.hold();
    // Loaded under the gate: the subscribers as they are now.
    let view = ns
        .directory()
        .service(service)
        .map(|handle| handle.view.load_full());
    let Some(view) = view else {
        return Relayed::Now(PayloadOut::InvalidService {
            service: service.to_owned(),
        });
    };
    let write = |position: Option<&Position>| {
        Frame::message(&MessageOut {
            target,
            origin: &from.origin,
            service: Some(&view.receipt_json),
            data,
            position,
        })
    };
    let mut kept = None;
    let appended = gate.epoch.as_ref().and_then(|epoch| {
        ns.cluster
            .history()
            .append(service, epoch, &mut |position| {
                let frame = write(Some(position));
                let bytes = frame.payload_bytes();
                kept = Some(frame);
                bytes
            })
    });
    // Not appended: the service is being replaced by one of the same name.
    let frame = match (appended, kept) {
        (Some(_), Some(frame)) => frame,
        _ => write(None),
    };
    let owner = view.receipt.owner_uuid;
    view.publish(&frame, Some(owner));
    answer(
        ns.cluster
            .broker()
            .publish_service(service, Some(owner), frame.payload()),
    )
}

/// Sends a frame to one client, here or on its node.
fn deliver(ns: &Namespace, to: &ClientRecord, frame: Frame) -> Relayed {
    match &to.outbox {
        Some(outbox) => {
            outbox.send(frame);
            Relayed::Now(PayloadOut::Ok)
        }
        None => answer(
            ns.cluster
                .broker()
                .send_to_node(to.node, to.info.uuid, frame.payload()),
        ),
    }
}

fn deliver_to_uuid(ns: &Namespace, dir: &Directory, to: Uuid, frame: Frame) -> Relayed {
    match dir.client(&to) {
        Some(to) => deliver(ns, to, frame),
        None => Relayed::Now(PayloadOut::InvalidUuid {
            uuid: to.to_string(),
        }),
    }
}

/// The answer once a hand-off is done, for a sender already waiting.
async fn settled(routed: Relayed) -> PayloadOut {
    match routed {
        Relayed::Now(payload) => payload,
        Relayed::HandedOff(answer) | Relayed::LookingUp(answer) => answer.await,
    }
}

/// The NAME or UUID target as this node knows it, if it does.
fn known<'d>(dir: &'d Directory, target: &Target) -> Option<&'d Arc<ClientRecord>> {
    match target {
        Target::Name { name } => dir.named(name),
        Target::Uuid { uuid } => uuid.parse().ok().and_then(|u| dir.client(&u)),
        _ => None,
    }
}

fn invalid(target: &Target) -> PayloadOut {
    match target {
        Target::Name { name } => PayloadOut::InvalidName { name: name.clone() },
        Target::Uuid { uuid } => PayloadOut::InvalidUuid { uuid: uuid.clone() },
        _ => PayloadOut::Bad { desc: None },
    }
}

/// Looks a NAME or UUID target up in the cluster, then relays or refuses.
fn look_up(ns: &Namespace, from: &Arc<ClientRecord>, target: &Target, data: &RawValue) -> Relayed {
    let (name, uuid) = match target {
        Target::Name { name } => (Some(name.as_str()), None),
        Target::Uuid { uuid } => (None, uuid.parse().ok()),
        _ => (None, None),
    };
    let located = ns.cluster.claims().locate(name, uuid);
    let (ns, from, target, data) = (ns.clone(), from.clone(), target.clone(), data.to_owned());
    Relayed::LookingUp(Box::pin(async move {
        let found = located.await;
        let dir = ns.directory();
        let frame = || {
            Frame::message(&MessageOut {
                target: &target,
                origin: &from.origin,
                service: None,
                data: &data,
                position: None,
            })
        };
        // Known by now: its arrival reached this node during the lookup.
        if let Some(to) = known(&dir, &target) {
            let routed = deliver(&ns, to, frame());
            drop(dir);
            return settled(routed).await;
        }
        match found {
            Ok(Some((peer, node))) if node != ns.cluster.node() => {
                drop(dir);
                let frame = frame();
                settled(answer(ns.cluster.broker().send_to_node(
                    node,
                    peer.uuid,
                    frame.payload(),
                )))
                .await
            }
            Ok(_) => invalid(&target),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up a message's target");
                invalid(&target)
            }
        }
    }))
}
