//! Prometheus metrics of the server. Counters are bumped where things happen; queue gauges
//! are refreshed from the store when `/metrics` is scraped, so they are right on every
//! replica without any bookkeeping.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{CommandFilter, CommandStatus, ProviderName};
use crate::ports::FinishObserver;
use crate::ports::{CommandQueue, StoreError};
use crate::services::webhooks::OutcomeLabel;

/// Label of the per-status gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// Labels of the run-duration histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub provider: String,
    /// The final status: `completed`, `failed` or `cancelled`.
    pub status: String,
}

/// Upper bounds, in seconds, of the run-duration buckets: from a quick shell command to the
/// 30-minute default timeout and beyond.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Run durations by provider and final status; a cheap handle the worker observes into.
#[derive(Clone)]
pub struct CommandDurations(Family<RunLabels, Histogram, fn() -> Histogram>);

impl FinishObserver for CommandDurations {
    fn finished(&self, provider: &ProviderName, status: CommandStatus, duration: Duration) {
        self.0
            .get_or_create(&RunLabels {
                provider: provider.to_string(),
                status: status.as_str().to_owned(),
            })
            .observe(duration.as_secs_f64());
    }
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
    /// `rdev_command_duration_seconds`: how long the commands this process ran took.
    pub command_durations: CommandDurations,
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
        let command_durations = CommandDurations(Family::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        ));
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
        registry.register_with_unit(
            "command_duration",
            "Wall time of commands run by this process, from claim to result, by provider and final status",
            Unit::Seconds,
            command_durations.0.clone(),
        );
        Self {
            registry,
            command_durations,
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
    /// What the server's worker reports finished commands to.
    pub fn finish_observer(&self) -> Arc<dyn FinishObserver> {
        Arc::new(self.command_durations.clone())
    }

    /// Refreshes the queue gauges and renders the text exposition format.
    pub async fn render(&self, queue: &dyn CommandQueue) -> Result<String, StoreError> {
        for status in CommandStatus::ALL {
            let filter = CommandFilter {
                project_id: None,
                status: Some(status),
                limit: Some(STATUS_COUNT_CAP),
                before: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_commands_land_in_the_histogram_by_provider_and_status() {
        let metrics = Metrics::default();
        let observer = metrics.finish_observer();
        let shell = ProviderName::parse("shell").expect("valid name");
        observer.finished(&shell, CommandStatus::Completed, Duration::from_millis(30));
        observer.finished(&shell, CommandStatus::Completed, Duration::from_secs(3));
        observer.finished(&shell, CommandStatus::Failed, Duration::from_secs(20));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encodes");
        assert!(
            text.contains("# TYPE rdev_command_duration_seconds histogram"),
            "{text}"
        );
        let completed = r#"provider="shell",status="completed""#;
        let failed = r#"provider="shell",status="failed""#;
        for (line, value) in [
            (
                format!("rdev_command_duration_seconds_count{{{completed}}}"),
                "2",
            ),
            (
                format!("rdev_command_duration_seconds_bucket{{le=\"0.05\",{completed}}}"),
                "1",
            ),
            (
                format!("rdev_command_duration_seconds_bucket{{le=\"2.5\",{completed}}}"),
                "1",
            ),
            (
                format!("rdev_command_duration_seconds_bucket{{le=\"5.0\",{completed}}}"),
                "2",
            ),
            (
                format!("rdev_command_duration_seconds_count{{{failed}}}"),
                "1",
            ),
            (
                format!("rdev_command_duration_seconds_bucket{{le=\"15.0\",{failed}}}"),
                "0",
            ),
        ] {
            let found = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{line} ")))
                .unwrap_or_else(|| panic!("no {line} in\n{text}"));
            assert_eq!(found, value, "{line}");
        }
    }
}
