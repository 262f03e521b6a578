//! Prometheus metrics of the server. Counters are bumped where things happen; queue gauges
//! are refreshed from the store when `/metrics` is scraped, so they are right on every
//! replica without any bookkeeping.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::{CommandFilter, CommandStatus};
use crate::ports::{CommandQueue, StoreError};
use crate::webhooks::OutcomeLabel;

/// Label of the per-status gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// The most commands of one status the scrape counts (the queue's listing cap); above it
/// the gauge saturates rather than making a scrape expensive.
pub const STATUS_COUNT_CAP: u32 = 1000;

/// Every metric the API exports.
pub struct Metrics {
    registry: Registry,
    /// Open SSE connections.
    pub sse_subscribers: Gauge,
    /// Explicit plugin reloads through the API.
    pub plugin_reloads: Counter,
    /// Commands accepted by the API (idempotent repeats excluded).
    pub commands_enqueued: Counter,
    /// Pending commands, refreshed at scrape time.
    pub queue_depth: Gauge,
    /// Commands per status, refreshed at scrape time (saturating at [`STATUS_COUNT_CAP`]).
    pub commands: Family<StatusLabel, Gauge>,
    /// Webhook delivery attempts by outcome (delivered, retrying, failed, disabled).
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rdev");
        let sse_subscribers = Gauge::default();
        let plugin_reloads = Counter::default();
        let commands_enqueued = Counter::default();
        let queue_depth = Gauge::default();
        let commands = Family::<StatusLabel, Gauge>::default();
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            webhook_deliveries.clone(),
        );
        registry.register(
            "sse_subscribers",
            "Open server-sent event connections",
            sse_subscribers.clone(),
        );
        registry.register(
            "plugin_reloads",
            "Plugin reloads requested through the API",
            plugin_reloads.clone(),
        );
        registry.register(
            "commands_enqueued",
            "Commands accepted by the API",
            commands_enqueued.clone(),
        );
        registry.register("queue_depth", "Pending commands", queue_depth.clone());
        registry.register(
            "commands",
            "Commands by status (saturates at 1000)",
            commands.clone(),
        );
        Self {
            registry,
            sse_subscribers,
            plugin_reloads,
            commands_enqueued,
            queue_depth,
            commands,
            webhook_deliveries,
        }
    }
}

impl Metrics {
    /// Refreshes the queue gauges and renders the text exposition format.
    pub async fn render(&self, queue: &dyn CommandQueue) -> Result<String, StoreError> {
        for status in CommandStatus::ALL {
            let filter = CommandFilter {
                project_id: None,
                status: Some(status),
                limit: Some(STATUS_COUNT_CAP),
            };
            let count = i64::try_from(queue.list(&filter).await?.len()).unwrap_or(i64::MAX);
            self.commands
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_owned(),
                })
                .set(count);
            if status == CommandStatus::Pending {
                self.queue_depth.set(count);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| StoreError::Invalid(format!("encoding metrics: {e}")))?;
        Ok(text)
    }
}
