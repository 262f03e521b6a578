//! Delivers the outbox: claims due deliveries (leased, so replicas share the work) as soon as
//! the store signals new rows, opens the sealed secret and signs each per Standard Webhooks,
//! POSTs it and records the attempt with what follows from it:
//! delivered on 2xx, the webhook disabled on 410 Gone, a retry with exponential backoff and
//! jitter (or the endpoint's `Retry-After`) otherwise, until the attempts run out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::WebhookConfig;
use super::guard::GuardedResolver;
use crate::domain::webhook::{UrlHost, check_target, check_url, parse_retry_after};
use crate::domain::{DeliveryAttempt, DueDelivery, NextStep, WebhookError};
use crate::ports::{StoreError, WebhookStore};

/// How one attempt ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed with no attempts left.
    Failed,
    /// The endpoint answered 410 Gone and its webhook was disabled.
    Disabled,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }

    fn of(next: NextStep) -> Self {
        match next {
            NextStep::Delivered => Self::Delivered,
            NextStep::RetryAt(_) => Self::Retrying,
            NextStep::GiveUp => Self::Failed,
            NextStep::Disable => Self::Disabled,
        }
    }
}

/// Label of the `rdev_webhook_deliveries_total` counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// The outbox consumer of one process.
pub struct Dispatcher {
    store: Arc<dyn WebhookStore>,
    config: WebhookConfig,
    http: reqwest::Client,
    owner: String,
    outcomes: Family<OutcomeLabel, Counter>,
    /// When the retries this dispatcher scheduled fall due, earliest first: it claims again
    /// then instead of at its next poll. Another replica may claim them first; the claim
    /// then finds nothing, which costs one query.
    retries_due: Mutex<BinaryHeap<Reverse<DateTime<Utc>>>>,
    /// Wakes an idle `run` to shorten its wait when a retry is scheduled.
    retry_scheduled: Notify,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A random number in [0, 1) for the backoff jitter.
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The error and its causes on one line: reqwest's own message says little ("error
/// sending request") and the reason (a refused target, a refused connection) is a source.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How one attempt went.
struct Sent {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    /// The SSRF guard or the URL's syntax refused the target: no retry can succeed.
    refused: bool,
}

impl Sent {
    fn failed(error: String) -> Self {
        Self {
            status: None,
            error: Some(error),
            retry_after: None,
            refused: false,
        }
    }

    fn refused(error: String) -> Self {
        Self {
            refused: true,
            ..Self::failed(error)
        }
    }
}

/// True when the connection failed because the guarded resolver refused the target.
fn refused_by_guard(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<WebhookError>().is_some() {
            return true;
        }
        source = cause.source();
    }
    false
}

impl Dispatcher {
    /// `owner` names this dispatcher in leases (unique per process); `outcomes` counts
    /// attempts by outcome for `/metrics`.
    pub fn new(
        store: Arc<dyn WebhookStore>,
        config: WebhookConfig,
        owner: String,
        outcomes: Family<OutcomeLabel, Counter>,
    ) -> Result<Self, reqwest::Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .user_agent(concat!("rdev-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            config,
            http,
            owner,
            outcomes,
            retries_due: Mutex::new(BinaryHeap::new()),
            retry_scheduled: Notify::new(),
        })
    }

    /// Delivers until `shutdown`: up to `concurrency` attempts in flight, each holding a slot
    /// only for itself, so a slow or hanging endpoint (bounded by the per-attempt timeout)
    /// delays no other delivery while slots are free. Claims again as soon as the store
    /// signals new outbox rows, when a full claim suggests more are due, when a retry it
    /// scheduled falls due, and at least every `poll_interval` (retries scheduled by another
    /// replica, missed signals). Attempts in flight at shutdown are abandoned; their leases
    /// expire and another dispatcher (or the next start) sends them again.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(owner = %self.owner, "webhook dispatcher started");
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut wake = self.store.delivery_signal();
        let mut signal_open = true;
        let mut tasks = JoinSet::new();
        while !shutdown.is_cancelled() {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            // Signals from here on are for rows this claim may not see.
            wake.borrow_and_update();
            self.forget_retries_due_by(Utc::now());
            let wanted = permits.len();
            let claimed = tokio::select! {
                () = shutdown.cancelled() => break,
                claimed = self.claim(wanted) => claimed,
            };
            let full = match claimed {
                Ok(due) => {
                    let count = due.len();
                    for (delivery, permit) in due.into_iter().zip(permits.drain(..)) {
                        let this = self.clone();
                        tasks.spawn(async move {
                            this.deliver(delivery).await;
                            drop(permit);
                        });
                    }
                    count >= wanted
                }
                Err(error) => {
                    tracing::warn!(%error, "claiming webhook deliveries failed");
                    false
                }
            };
            drop(permits);
            while let Some(joined) = tasks.try_join_next() {
                if let Err(error) = joined {
                    tracing::error!(%error, "a webhook delivery task panicked");
                }
            }
            if full {
                continue;
            }
            // Idle until a signal, the earliest retry of ours or the poll; a retry scheduled
            // meanwhile by a delivery task only shortens the wait.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = wake.changed(), if signal_open => {
                        signal_open = changed.is_ok();
                        break;
                    }
                    () = self.retry_scheduled.notified() => {}
                    () = tokio::time::sleep(self.idle_wait(Utc::now())) => break,
                }
            }
        }
    }

    /// Drops the retries this claim will see.
    fn forget_retries_due_by(&self, now: DateTime<Utc>) {
        let mut due = self
            .retries_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while due.peek().is_some_and(|Reverse(at)| *at <= now) {
            due.pop();
        }
    }

    /// How long to wait for a signal before claiming again: the poll interval, or until the
    /// earliest retry this dispatcher scheduled, if that is sooner.
    fn idle_wait(&self, now: DateTime<Utc>) -> Duration {
        let due = self
            .retries_due
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let until_retry = due
            .peek()
            .map(|Reverse(at)| (*at - now).to_std().unwrap_or(Duration::ZERO));
        until_retry.map_or(self.config.poll_interval, |wait| {
            wait.min(self.config.poll_interval)
        })
    }

    /// Claims up to `limit` due deliveries under this dispatcher's lease.
    async fn claim(&self, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.store
            .claim_deliveries(&self.owner, limit, self.config.lease)
            .await
    }

    async fn deliver(self: Arc<Self>, delivery: DueDelivery) {
        let started_at = Utc::now();
        let clock = Instant::now();
        let sent = if delivery.attempt > self.config.retry.max_attempts {
            // Earlier attempts were claimed and never recorded (a dispatcher stopped).
            Sent::refused("no attempts left".to_owned())
        } else {
            self.send(&delivery).await
        };
        let Sent {
            status,
            error,
            retry_after,
            refused,
        } = sent;
        let attempt = DeliveryAttempt {
            attempt: delivery.attempt,
            started_at,
            duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
            status_code: status,
            error,
        };
        let policy = &self.config.retry;
        let delay = policy.delay(delivery.attempt, unit_random(), retry_after);
        let next = policy.next(delivery.attempt, status, Utc::now(), delay);
        let next = if refused { NextStep::GiveUp } else { next };
        match self.store.record_attempt(&delivery, &attempt, next).await {
            Ok(()) => {
                if let NextStep::RetryAt(at) = next {
                    self.retries_due
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Reverse(at));
                    self.retry_scheduled.notify_one();
                }
                let outcome = DeliveryOutcome::of(next);
                self.outcomes
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.as_str().to_owned(),
                    })
                    .inc();
                if outcome != DeliveryOutcome::Delivered {
                    tracing::info!(
                        delivery = delivery.id,
                        webhook = %delivery.webhook_id,
                        attempt = delivery.attempt,
                        status = ?attempt.status_code,
                        error = ?attempt.error,
                        outcome = outcome.as_str(),
                        "webhook attempt did not succeed"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(delivery = delivery.id, %error, "recording a webhook attempt failed");
            }
        }
    }

    /// One signed POST: the status (if an answer came), why it is not a success and the
    /// endpoint's `Retry-After`, or a refusal that no retry can change.
    async fn send(&self, delivery: &DueDelivery) -> Sent {
        // An IP literal never reaches the resolver, so it is checked here.
        match check_url(&delivery.url) {
            Ok(UrlHost::Ip(ip)) => {
                if let Err(refused) = check_target(ip, self.config.allow_private) {
                    return Sent::refused(refused.to_string());
                }
            }
            Ok(UrlHost::Name(_)) => {}
            Err(invalid) => return Sent::refused(invalid.to_string()),
        }
        // Opened only here, for this one signature.
        let secret = match self.store.open_secret(delivery) {
            Ok(secret) => secret,
            Err(error) => return Sent::failed(error.to_string()),
        };
        let timestamp = Utc::now().timestamp();
        let signature = secret.sign(&delivery.event_id, timestamp, delivery.payload.as_bytes());
        drop(secret);
        let sent = self
            .http
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()));
                let error = (!response.status().is_success()).then(|| format!("HTTP {status}"));
                Sent {
                    status: Some(status),
                    error,
                    retry_after,
                    refused: false,
                }
            }
            // The guarded resolver refused every address of the name.
            Err(error) if refused_by_guard(&error) => Sent::refused(describe(&error.without_url())),
            Err(error) => Sent::failed(describe(&error.without_url())),
        }
    }
}
