//! The [`Broker`] of replicas sharing one Redis: Redis pub/sub.
//!
//! Every node follows the events channel, its inbox and the channel of
//! each service owned elsewhere that has subscribers on it, so it receives
//! a frame only if one of its clients is a recipient. A watch resolves only
//! once Redis has confirmed the node's subscription to that service's
//! channel, so a broadcast sent after a subscriber learnt it is subscribed
//! reaches it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use super::link::{Link, WatchCommand};
use super::wire::{self, Route, EVENTS};
use crate::cluster::{Broker, Event, Handoff, NodeId, Pending};

/// How long a watch waits for Redis to confirm the node's subscription to
/// the service's channel before it resolves anyway.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// One replica's broker.
pub struct RedisBroker {
    pub(super) link: Arc<Link>,
}

impl Broker for RedisBroker {
    fn node(&self) -> NodeId {
        self.link.node
    }
    fn health(&self) -> Result<(), &'static str> {
        if self.link.is_up() {
            Ok(())
        } else {
            Err("the link to Redis is down")
        }
    }
    fn announce(&self, event: &Event) {
        let route = Route::Event {
            event: event.clone(),
        };
        self.link
            .publish(EVENTS.to_owned(), wire::encode(self.link.node, route, None));
    }

    fn send_to_all(&self, payload: &[u8], except: Option<Uuid>) -> Handoff {
        let payload = wire::encode(self.link.node, Route::All { except }, Some(payload));
        self.link.hand_off(EVENTS.to_owned(), payload, false)
    }

    fn send_to_node(&self, node: NodeId, to: Uuid, payload: &[u8]) -> Handoff {
        let payload = wire::encode(self.link.node, Route::Client { to }, Some(payload));
        self.link.hand_off(wire::inbox(node), payload, true)
    }

    fn publish_service(&self, name: &str, except: Option<Uuid>, payload: &[u8]) -> Handoff {
        let route = Route::Service {
            name: name.to_owned(),
            except,
        };
        let payload = wire::encode(self.link.node, route, Some(payload));
        self.link
            .hand_off(wire::service_channel(name), payload, false)
    }

    fn watch(&self, name: &str) -> Pending<()> {
        let (confirmed, done) = oneshot::channel();
        self.link.send_watch(WatchCommand::Watch {
            name: name.to_owned(),
            confirmed,
        });
        if !self.link.subscribed.load(Ordering::Relaxed) {
            // The watch starts with the next subscription; nothing can be
            // confirmed now.
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            let _ = tokio::time::timeout(WATCH_TIMEOUT, done).await;
        })
    }

    fn unwatch(&self, name: &str) {
        self.link.send_watch(WatchCommand::Unwatch(name.to_owned()));
    }
}
