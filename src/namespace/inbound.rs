//! Applies what other nodes send, in the order it arrives.
//!
//! Frames go straight to the local recipients' outboxes from the views.
//! Changes go to the actor that owns them, and the next item waits until
//! that actor has applied the change (and told its clients): a remote
//! sender's subscription, then its MESSAGE, reach a local client in that
//! order, as they would on one node.

use super::registry::{self, Evict, Reap, Reconcile, Remote};
use super::service;
use super::Namespace;
use crate::cluster::{Event, Inbound, InboundStream, Payload};
use crate::transport::outbox::Frame;

pub(super) async fn dispatch(mut inbound: InboundStream, ns: Namespace) {
    while let Some(item) = inbound.recv().await {
        let delivered = match item {
            Inbound::Event(Event::Subscribed { service, uuid }) => {
                to_service(&ns, &service, service::Remote::Subscribed(uuid)).await
            }
            Inbound::Event(Event::Unsubscribed { service, uuid }) => {
                to_service(&ns, &service, service::Remote::Unsubscribed(uuid)).await
            }
            Inbound::Event(event) => ns.registry.send(Remote(event)).await.is_ok(),
            Inbound::Snapshot(snapshot) => ns.registry.send(Reconcile(snapshot)).await.is_ok(),
            Inbound::Reap(node) => ns.registry.send(Reap(node)).await.is_ok(),
            Inbound::NameLost { uuid, close } => {
                ns.registry.send(Evict { uuid, close }).await.is_ok()
            }
            Inbound::TakenOver { uuid } => {
                let close = registry::taken_over();
                ns.registry.send(Evict { uuid, close }).await.is_ok()
            }
            Inbound::All { except, payload } => {
                if let Some(frame) = framed(&payload) {
                    ns.directory().publish(&frame, except);
                }
                true
            }
            Inbound::Client { to, payload } => {
                let outbox = ns.directory().client(&to).and_then(|c| c.outbox.clone());
                if let (Some(outbox), Some(frame)) = (outbox, framed(&payload)) {
                    outbox.send(frame);
                }
                true
            }
            Inbound::Service {
                name,
                except,
                payload,
            } => {
                let service = ns.directory().service(&name).cloned();
                if let (Some(service), Some(frame)) = (service, framed(&payload)) {
                    match &service.history {
                        // Under the gate: to the view's subscribers, or
                        // held for those whose history is being read.
                        Some(gate) => {
                            let mut taps = gate.hold();
                            if !taps.repeated(&frame) {
                                service.view.load().publish(&frame, except);
                                taps.feed(&frame, except);
                            }
                        }
                        None => service.view.load().publish(&frame, except),
                    }
                }
                true
            }
        };
        if !delivered {
            // The registry is gone: the gateway is stopping.
            return;
        }
    }
}

/// The frame of a payload from another node, copied once into its
/// transport's framing; `None` (logged) for one that is not text.
fn framed(payload: &Payload) -> Option<Frame> {
    match payload.json() {
        Some(json) => Some(Frame::new(json)),
        None => {
            tracing::warn!("dropping a cluster message whose frame is not UTF-8");
            None
        }
    }
}

/// Hands a subscription change to its service's actor and waits for it.
async fn to_service(ns: &Namespace, name: &str, change: service::Remote) -> bool {
    let handle = ns.directory().service(name).cloned();
    match handle {
        Some(handle) => {
            // A service that ended meanwhile has no subscribers to change.
            let _ = handle.addr.send(change).await;
        }
        None => tracing::debug!(service = %name, ?change, "change to an unknown service ignored"),
    }
    true
}
