//! The metrics that follow the namespace: clients, services and
//! subscriptions, counted from its changes (the namespace does not know
//! about metrics).

use crate::metrics;
use crate::namespace::{Change, Observer};

/// Keeps the namespace gauges of `/metrics` current.
pub struct Gauges;

impl Observer for Gauges {
    fn observe(&self, change: &Change<'_>) {
        let m = metrics::get();
        match change {
            Change::Joined { local: true, .. } => {
                m.clients_identified.inc();
            }
            Change::Left { local: true, .. } => {
                m.clients_identified.dec();
            }
            Change::Joined { .. } | Change::Left { .. } => {}
            Change::ServiceCreated { .. } => {
                m.services.inc();
            }
            Change::ServiceDeleted { service } => {
                m.services.dec();
                m.subscriptions.dec_by(service.subscribers.len() as i64);
            }
            Change::Subscribed { .. } => {
                m.subscriptions.inc();
            }
            Change::Unsubscribed { .. } => {
                m.subscriptions.dec();
            }
        }
    }
}
