//! The CI poller: a background task of `rdev serve` that watches every pipeline rdev
//! triggered until it finishes, so `ci.pipeline.finished` is recorded without anyone reading
//! `GET /projects/{id}/ci`. Woodpecker has no push channel rdev can rely on (its webhooks go
//! to the forge), so polling is the one path that works for every deployment.
//!
//! Several replicas may poll the same database: each status change is recorded by whichever
//! observer wins the store's compare-and-set, so the audit entry is written once (see
//! [`ProjectSetupService::observe_pipeline`]); the others only repeat a cheap GET.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ProjectSetupService;

/// The actor the poller's audit entries name.
pub const POLLER_ACTOR: &str = "rdev (CI poller)";

/// How often to poll, and how far to back off while CI or the database fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerConfig {
    /// Pause between passes while everything works.
    pub interval: Duration,
    /// Upper bound of the pause, which doubles after every pass that saw an error.
    pub max_backoff: Duration,
}

impl Default for PollerConfig {
    /// Every 15 s; up to 5 min while CI is failing.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl PollerConfig {
    /// The pause after a pass: `interval` after a clean one, else double the previous
    /// pause (at least `interval`), capped at `max_backoff`.
    pub fn next_pause(&self, previous: Duration, failed: bool) -> Duration {
        if !failed {
            return self.interval;
        }
        previous
            .max(self.interval)
            .saturating_mul(2)
            .min(self.max_backoff.max(self.interval))
    }
}

/// Polls until `shutdown` is cancelled. A pass that fails (the database, or CI for any
/// project) is logged without secrets (CI errors are redacted) and backs off.
pub async fn run(service: ProjectSetupService, config: PollerConfig, shutdown: CancellationToken) {
    let mut pause = config.interval;
    loop {
        let failed = match service.poll_unfinished(POLLER_ACTOR).await {
            Ok(report) => {
                for (project, error) in &report.errors {
                    tracing::warn!(%project, %error, "polling a CI pipeline failed");
                }
                if report.finished > 0 {
                    tracing::info!(finished = report.finished, "CI pipelines finished");
                }
                !report.errors.is_empty()
            }
            Err(error) => {
                tracing::warn!(%error, "listing CI pipelines to poll failed");
                true
            }
        };
        pause = config.next_pause(pause, failed);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_double_the_pause_up_to_the_cap_and_success_resets_it() {
        let config = PollerConfig {
            interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        };
        let mut pause = config.interval;
        let mut seen = Vec::new();
        for _ in 0..4 {
            pause = config.next_pause(pause, true);
            seen.push(pause.as_secs());
        }
        assert_eq!(seen, [20, 40, 60, 60]);
        assert_eq!(config.next_pause(pause, false), config.interval);
    }
}
