//! In-process wake-ups: workers waiting for work, subscribers waiting for events, running
//! commands whose cancel was requested, webhook dispatchers waiting for deliveries and
//! approval brokers waiting for decisions.
//! PostgreSQL's listener feeds them from every replica's notifications; SQLite's writes
//! feed them directly (`Write::commit`).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::db::Notice;
use crate::adapters::event_fanout::{EventHub, FetchEvents};
use crate::domain::CommandId;

/// Capacity of the in-process cancel fan-out; a receiver that lags relies on its heartbeat.
pub const CANCEL_FANOUT_CAPACITY: usize = 256;

/// The wake-ups of one store.
pub struct Signals {
    pub work: watch::Sender<u64>,
    pub deliveries: watch::Sender<u64>,
    pub events: Arc<EventHub>,
    pub cancels: broadcast::Sender<CommandId>,
    /// Ids of approvals decided on any replica.
    pub decisions: broadcast::Sender<String>,
}

impl Signals {
    /// `fetch` reads a stream's events for the hub when another replica announced some.
    pub fn new(fetch: FetchEvents) -> Arc<Self> {
        Arc::new(Self {
            work: watch::channel(0).0,
            deliveries: watch::channel(0).0,
            events: EventHub::new(fetch),
            cancels: broadcast::channel(CANCEL_FANOUT_CAPACITY).0,
            decisions: broadcast::channel(CANCEL_FANOUT_CAPACITY).0,
        })
    }

    /// Wakes whoever waits for `notice`.
    pub fn wake(&self, notice: Notice) {
        match notice {
            Notice::Work => self.wake_workers(),
            Notice::Deliveries => self.wake_dispatchers(),
            Notice::Cancel(id) => self.announce_cancel(id),
            Notice::Decided(id) => self.announce_decision(id),
        }
    }

    /// Never blocks: with no running worker listening the notice is dropped.
    pub fn announce_cancel(&self, id: CommandId) {
        let _ = self.cancels.send(id);
    }

    /// Never blocks: with no broker waiting the notice is dropped.
    pub fn announce_decision(&self, id: String) {
        let _ = self.decisions.send(id);
    }

    pub fn wake_workers(&self) {
        self.work
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Outbox rows were written (or may have been, after a listener reconnect).
    pub fn wake_dispatchers(&self) {
        self.deliveries
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}
