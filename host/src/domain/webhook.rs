//! Webhooks as pure rules: subscriptions and their event filters, the events rdev emits, the
//! Standard Webhooks signature, the retry schedule, `Retry-After` and which network targets
//! a webhook may reach. The store writes events to its outbox and the dispatcher delivers
//! them (see `crate::webhooks`); everything here is computed without I/O, clocks or
//! randomness, which callers pass in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::credential::{MasterKey, NONCE_LEN, SealError, SealOwner};
use super::ids::ProjectId;
use super::queue::CommandRecord;

/// A command finished successfully.
pub const COMMAND_COMPLETED: &str = "command.completed";
/// A command failed (an error, a non-zero exit, a timeout or a lost host).
pub const COMMAND_FAILED: &str = "command.failed";
/// A command was cancelled.
pub const COMMAND_CANCELLED: &str = "command.cancelled";
/// A project was created from a template.
pub const PROJECT_CREATED: &str = "project.created";
/// A CI pipeline of the project was triggered.
pub const CI_PIPELINE_STARTED: &str = "ci.pipeline.started";
/// A CI pipeline of the project reached a final status.
pub const CI_PIPELINE_FINISHED: &str = "ci.pipeline.finished";

/// Every event type a subscription may name; `*` (or an empty filter) means all of them.
pub const EVENT_TYPES: [&str; 6] = [
    COMMAND_COMPLETED,
    COMMAND_FAILED,
    COMMAND_CANCELLED,
    PROJECT_CREATED,
    CI_PIPELINE_STARTED,
    CI_PIPELINE_FINISHED,
];

/// The filter entry that matches every event type.
pub const ALL_EVENTS: &str = "*";

/// Prefix of a webhook signing secret, as Standard Webhooks libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a generated secret (the spec asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// The `disabled_reason` of a webhook whose endpoint answered 410 Gone.
pub const GONE_REASON: &str = "the endpoint answered 410 Gone";

/// Longest accepted target URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(String),
    #[error("webhook target {target} is a {class} address, which is not allowed")]
    TargetForbidden { target: String, class: TargetClass },
    #[error("unknown event type {0:?}; known: {known}", known = EVENT_TYPES.join(", "))]
    UnknownEventType(String),
    #[error("a webhook secret must be whsec_ followed by base64 of at least 24 bytes")]
    InvalidSecret,
}

impl WebhookError {
    /// The stable API error code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_webhook_url",
            Self::TargetForbidden { .. } => "webhook_target_forbidden",
            Self::UnknownEventType(_) => "invalid_event_type",
            Self::InvalidSecret => "invalid_webhook_secret",
        }
    }
}

/// Checks a subscription's filter: known types or `*`, without duplicates, sorted so that
/// equal filters compare equal. Empty means every event.
pub fn normalize_event_types(types: &[String]) -> Result<Vec<String>, WebhookError> {
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let t = t.trim();
        if t != ALL_EVENTS && !EVENT_TYPES.contains(&t) {
            return Err(WebhookError::UnknownEventType(t.to_owned()));
        }
        out.push(t.to_owned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether a subscription with `filter` receives `event_type`. The adapters evaluate the
/// same rule in SQL when they fan an event out; this is its reference.
pub fn filter_matches(filter: &[String], event_type: &str) -> bool {
    filter.is_empty() || filter.iter().any(|t| t == ALL_EVENTS || t == event_type)
}

/// A webhook signing secret. Its `Debug` never shows the value, so it cannot leak into
/// logs by accident; only [`WebhookSecret::expose`] returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// `whsec_` + base64 of `bytes` (the caller supplies fresh randomness).
    pub fn from_random(bytes: &[u8; SECRET_BYTES]) -> Self {
        Self(format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// A stored secret; refused unless it decodes to a usable key.
    pub fn parse(value: impl Into<String>) -> Result<Self, WebhookError> {
        let secret = Self(value.into());
        match secret.key() {
            Some(key) if key.len() >= 24 => Ok(secret),
            _ => Err(WebhookError::InvalidSecret),
        }
    }

    /// The full `whsec_…` text, shown once at creation and stored for signing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    fn key(&self) -> Option<Vec<u8>> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }

    /// The `webhook-signature` header value for one attempt:
    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = self.key().unwrap_or_default();
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            // HMAC accepts keys of any length; this branch cannot be taken.
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The owner of a webhook's sealed signing secret: the webhook's id. Its associated data is
/// `webhook-secret:<id>` (a credential name never holds `:` or `-`), so a sealed secret opens
/// only in its own row, never in another webhook's nor as a credential.
#[derive(Debug, Clone, Copy)]
pub struct SecretOfWebhook<'a>(pub &'a str);

impl SealOwner for SecretOfWebhook<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!("webhook-secret:{}", self.0).into_bytes()
    }

    fn undecryptable(&self) -> SealError {
        SealError::UndecryptableWebhookSecret(self.0.to_owned())
    }
}

/// A signing secret as stored: `nonce || ciphertext` under the master key. Only the store
/// that holds the key opens it, right before the dispatcher signs; `Debug` shows its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedWebhookSecret(pub Vec<u8>);

impl std::fmt::Debug for SealedWebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedWebhookSecret({} bytes)", self.0.len())
    }
}

impl SealedWebhookSecret {
    /// Seals the text of a secret for webhook `webhook_id` (also a stored plaintext secret
    /// being converted, which is sealed as it is).
    pub fn seal(key: &MasterKey, webhook_id: &str, secret: &str, nonce: [u8; NONCE_LEN]) -> Self {
        Self(key.seal(&SecretOfWebhook(webhook_id), secret, nonce))
    }

    /// The secret, if this was sealed with `key` for `webhook_id`; a typed error naming the
    /// webhook otherwise (wrong key, altered bytes or bytes from another row).
    pub fn open(&self, key: &MasterKey, webhook_id: &str) -> Result<WebhookSecret, SealError> {
        let owner = SecretOfWebhook(webhook_id);
        let text = key.open(&owner, &self.0)?;
        WebhookSecret::parse(text).map_err(|_| owner.undecryptable())
    }
}

/// A subscription as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub project_id: ProjectId,
    pub url: String,
    /// Empty: every event.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// False once the endpoint answered 410 Gone: nothing more is delivered to it.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub id: String,
    pub project_id: ProjectId,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub secret: WebhookSecret,
}

/// One event for the outbox. `id` becomes the `webhook-id` header and stays the same on
/// every retry, so receivers can drop duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub id: String,
    pub event_type: String,
    pub project_id: ProjectId,
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl WebhookEvent {
    /// An event with a fresh id (`msg_` + the caller's UUIDv7).
    pub fn new(
        uuid: uuid::Uuid,
        event_type: &str,
        project_id: ProjectId,
        timestamp: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: format!("msg_{}", uuid.simple()),
            event_type: event_type.to_owned(),
            project_id,
            timestamp,
            data,
        }
    }

    /// The event of a command that reached a terminal status; `None` for any other status.
    pub fn for_command(uuid: uuid::Uuid, command: &CommandRecord) -> Option<Self> {
        use super::command::CommandStatus;
        let event_type = match command.status {
            CommandStatus::Completed => COMMAND_COMPLETED,
            CommandStatus::Failed => COMMAND_FAILED,
            CommandStatus::Cancelled => COMMAND_CANCELLED,
            CommandStatus::Pending | CommandStatus::Running => return None,
        };
        let finished = command.finished_at.unwrap_or(command.created_at);
        let duration_ms = command
            .started_at
            .map(|started| (finished - started).num_milliseconds().max(0));
        let data = serde_json::json!({
            "command_id": command.id,
            "project_id": command.project_id,
            "provider": command.provider,
            "status": command.status,
            "exit_code": command.result.as_ref().and_then(|r| r.exit_code),
            "error": command.error,
            "attempts": command.attempts,
            "created_at": command.created_at,
            "started_at": command.started_at,
            "finished_at": command.finished_at,
            "duration_ms": duration_ms,
        });
        Some(Self::new(
            uuid,
            event_type,
            command.project_id.clone(),
            finished,
            data,
        ))
    }

    /// The exact request body: `{"type", "timestamp", "data"}`. Stored once in the outbox
    /// so that every retry signs and sends the same bytes.
    pub fn body(&self) -> String {
        serde_json::json!({
            "type": self.event_type,
            "timestamp": self.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
        .to_string()
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Gave up after the last attempt, or the endpoint answered 410 Gone.
    Failed,
    /// Not attempted (again) because its webhook was disabled.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(format!("unknown delivery status {other:?}")),
        }
    }
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    /// 1, 2, 3… per delivery.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The endpoint's HTTP status; `None` when no answer arrived.
    pub status_code: Option<u16>,
    /// Why the attempt did not succeed (transport error, non-2xx, refused target).
    pub error: Option<String>,
}

/// One event for one webhook, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Increasing; pages of deliveries are ordered by it.
    pub id: i64,
    /// The `webhook-id` header sent with every attempt.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// The body sent: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// A delivery the dispatcher claimed, with what it needs to send it. Holding it is the
/// right to record attempt number `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: i64,
    pub event_id: String,
    pub webhook_id: String,
    pub project_id: ProjectId,
    pub event_type: String,
    pub payload: String,
    pub url: String,
    /// Opened with `WebhookStore::open_secret` only to sign.
    pub secret: SealedWebhookSecret,
    /// The number of this attempt (1 for the first).
    pub attempt: u32,
    pub owner: String,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Attempt again at this time.
    RetryAt(DateTime<Utc>),
    /// No attempts left: the delivery failed.
    GiveUp,
    /// The endpoint answered 410 Gone: the delivery failed, the webhook is disabled and its
    /// other pending deliveries are cancelled.
    Disable,
}

/// Retries and timeouts of deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles with every further one.
    pub base: Duration,
    /// Cap of the exponential delay.
    pub max_delay: Duration,
    /// Cap of a `Retry-After` the endpoint asks for.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about two hours: 5 s, 10 s, 20 s … capped at 1 h.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Delay after failed attempt number `attempt` (1-based): `base · 2^(attempt-1)`, capped,
    /// then scaled by a jitter factor in [0.5, 1.0] from `unit` (a random number in [0, 1)),
    /// so that endpoints recovering from an outage are not hit by every retry at once. A
    /// `Retry-After` from the endpoint replaces the computed delay (capped).
    pub fn delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        let exponent = attempt.saturating_sub(1).min(30);
        let raw = self
            .base
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        raw.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// The next step after an attempt that got `status` (or no answer).
    pub fn next(
        &self,
        attempt: u32,
        status: Option<u16>,
        now: DateTime<Utc>,
        delay: Duration,
    ) -> NextStep {
        match status {
            Some(code) if (200..300).contains(&code) => NextStep::Delivered,
            Some(410) => NextStep::Disable,
            _ if attempt >= self.max_attempts => NextStep::GiveUp,
            _ => NextStep::RetryAt(
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
            ),
        }
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (relative to `now`; a date in the
/// past means no wait). `None` for anything else.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// What kind of address a webhook target resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetClass {
    Public,
    Private,
    Loopback,
    LinkLocal,
    UniqueLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    Multicast,
    Unspecified,
    /// Broadcast, reserved and documentation ranges: never a real endpoint.
    Reserved,
}

impl std::fmt::Display for TargetClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::SharedAddressSpace => "shared (CGNAT)",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Reserved => "reserved",
        })
    }
}

impl TargetClass {
    /// Classifies an address; IPv4 embedded in IPv6 (mapped, compatible, NAT64) is judged
    /// as the IPv4 address it carries, so `::ffff:10.0.0.1` is private.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, ..] = ip.octets();
        if ip.is_unspecified() || a == 0 {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_private() {
            Self::Private
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if a == 100 && (64..128).contains(&b) {
            Self::SharedAddressSpace
        } else if ip.is_multicast() {
            Self::Multicast
        } else if ip.is_broadcast() || ip.is_documentation() || a >= 240 || (a == 192 && b == 0) {
            Self::Reserved
        } else {
            Self::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let segments = ip.segments();
        // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d).
        if (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0; 4])
            || (segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        {
            let [.., a, b, c, d] = ip.octets();
            return Self::of_v4(Ipv4Addr::new(a, b, c, d));
        }
        if ip.is_unspecified() {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_multicast() {
            Self::Multicast
        } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
            Self::LinkLocal
        } else if segments[0] & 0xfe00 == 0xfc00 {
            Self::UniqueLocal
        } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
            Self::Reserved
        } else {
            Self::Public
        }
    }

    /// Whether a webhook may target this class. `allow_private` (an operator's choice, e.g.
    /// for receivers on the same network) admits private, loopback, link-local,
    /// unique-local and CGNAT addresses; multicast, unspecified and reserved never are.
    pub fn allowed(self, allow_private: bool) -> bool {
        match self {
            Self::Public => true,
            Self::Private
            | Self::Loopback
            | Self::LinkLocal
            | Self::UniqueLocal
            | Self::SharedAddressSpace => allow_private,
            Self::Multicast | Self::Unspecified | Self::Reserved => false,
        }
    }
}

/// Checks one resolved address against the policy.
pub fn check_target(ip: IpAddr, allow_private: bool) -> Result<(), WebhookError> {
    let class = TargetClass::of(ip);
    if class.allowed(allow_private) {
        Ok(())
    } else {
        Err(WebhookError::TargetForbidden {
            target: ip.to_string(),
            class,
        })
    }
}

/// Where a webhook URL points, once its syntax is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// An IP literal: checkable without DNS.
    Ip(IpAddr),
    /// A name: checked after resolution.
    Name(String),
}

/// Checks a target URL's syntax: absolute `http`/`https`, a host, no fragment, at most
/// [`MAX_URL_LEN`]. Returns the host to check against the address policy.
pub fn check_url(url: &str) -> Result<UrlHost, WebhookError> {
    if url.len() > MAX_URL_LEN {
        return Err(WebhookError::InvalidUrl(format!(
            "longer than {MAX_URL_LEN} characters"
        )));
    }
    let parsed = url::Url::parse(url).map_err(|e| WebhookError::InvalidUrl(format!("{e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::InvalidUrl(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.fragment().is_some() {
        return Err(WebhookError::InvalidUrl("a fragment is not allowed".into()));
    }
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Ok(UrlHost::Ip(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(UrlHost::Ip(IpAddr::V6(ip))),
        Some(url::Host::Domain(name)) if !name.is_empty() => Ok(UrlHost::Name(name.to_owned())),
        _ => Err(WebhookError::InvalidUrl("a host is required".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::{CredentialName, KEY_LEN};

    #[test]
    fn sealed_secrets_open_only_for_their_webhook_and_key() {
        let key = MasterKey::from_bytes([5; KEY_LEN]);
        let secret = WebhookSecret::from_random(&[7; SECRET_BYTES]);
        let sealed = SealedWebhookSecret::seal(&key, "wh-1", secret.expose(), [2; NONCE_LEN]);
        let plain = secret.expose().as_bytes();
        assert!(!sealed.0.windows(plain.len()).any(|w| w == plain));
        assert_eq!(sealed.open(&key, "wh-1"), Ok(secret.clone()));
        assert_eq!(
            sealed.open(&key, "wh-2"),
            Err(SealError::UndecryptableWebhookSecret("wh-2".into()))
        );
        let other_key = MasterKey::from_bytes([6; KEY_LEN]);
        assert!(sealed.open(&other_key, "wh-1").is_err());
        // Never opens as a credential, even one named like the webhook.
        let name = CredentialName::parse("wh_1").expect("valid");
        assert!(key.open(&name, &sealed.0).is_err());
        assert!(!format!("{sealed:?}").contains(secret.expose()));
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // Published with the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_carry_enough_key_and_never_print() {
        let secret = WebhookSecret::from_random(&[7; SECRET_BYTES]);
        assert!(secret.expose().starts_with(SECRET_PREFIX));
        assert!(WebhookSecret::parse(secret.expose()).is_ok());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ="),
            Err(WebhookError::InvalidSecret)
        );
    }

    #[test]
    fn filters_match_listed_types_star_or_everything_when_empty() {
        let list = normalize_event_types(&[
            COMMAND_FAILED.into(),
            COMMAND_COMPLETED.into(),
            COMMAND_FAILED.into(),
        ])
        .expect("known");
        assert_eq!(list, vec![COMMAND_COMPLETED, COMMAND_FAILED]);
        assert!(filter_matches(&list, COMMAND_FAILED));
        assert!(!filter_matches(&list, PROJECT_CREATED));
        assert!(filter_matches(&[], PROJECT_CREATED));
        assert!(filter_matches(&["*".into()], CI_PIPELINE_FINISHED));
        assert_eq!(
            normalize_event_types(&["command.exploded".into()]).map_err(|e| e.code()),
            Err("invalid_event_type")
        );
    }

    #[test]
    fn the_classifier_refuses_internal_ranges() {
        let class = |s: &str| TargetClass::of(s.parse().expect("ip"));
        assert_eq!(class("10.1.2.3"), TargetClass::Private);
        assert_eq!(class("172.16.0.1"), TargetClass::Private);
        assert_eq!(class("192.168.1.1"), TargetClass::Private);
        assert_eq!(class("127.0.0.1"), TargetClass::Loopback);
        assert_eq!(class("169.254.169.254"), TargetClass::LinkLocal);
        assert_eq!(class("100.64.0.1"), TargetClass::SharedAddressSpace);
        assert_eq!(class("224.0.0.1"), TargetClass::Multicast);
        assert_eq!(class("0.0.0.0"), TargetClass::Unspecified);
        assert_eq!(class("255.255.255.255"), TargetClass::Reserved);
        assert_eq!(class("::1"), TargetClass::Loopback);
        assert_eq!(class("::"), TargetClass::Unspecified);
        assert_eq!(class("fe80::1"), TargetClass::LinkLocal);
        assert_eq!(class("fd12:3456::1"), TargetClass::UniqueLocal);
        assert_eq!(class("ff02::1"), TargetClass::Multicast);
        assert_eq!(class("::ffff:10.0.0.1"), TargetClass::Private);
        assert_eq!(class("::ffff:127.0.0.1"), TargetClass::Loopback);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), TargetClass::LinkLocal);
        assert_eq!(class("93.184.216.34"), TargetClass::Public);
        assert_eq!(class("2606:4700::1111"), TargetClass::Public);
        assert!(check_target("127.0.0.1".parse().expect("ip"), true).is_ok());
        assert!(check_target("127.0.0.1".parse().expect("ip"), false).is_err());
        assert!(check_target("0.0.0.0".parse().expect("ip"), true).is_err());
        assert!(check_target("8.8.8.8".parse().expect("ip"), false).is_ok());
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert_eq!(
            check_url("https://hooks.example.com/x?y=1"),
            Ok(UrlHost::Name("hooks.example.com".into()))
        );
        assert_eq!(
            check_url("http://[::1]:8080/"),
            Ok(UrlHost::Ip("::1".parse().expect("ip")))
        );
        for bad in [
            "ftp://example.com/",
            "not a url",
            "http://",
            "https://x.example/#f",
        ] {
            assert_eq!(
                check_url(bad).map_err(|e| e.code()),
                Err("invalid_webhook_url"),
                "{bad}"
            );
        }
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_honour_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(120),
        };
        assert_eq!(policy.delay(1, 0.999_999, None).as_secs(), 9);
        assert_eq!(policy.delay(1, 0.0, None), Duration::from_secs(5));
        assert_eq!(policy.delay(3, 0.0, None), Duration::from_secs(20));
        assert_eq!(policy.delay(9, 0.0, None), Duration::from_secs(30));
        assert_eq!(
            policy.delay(1, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            policy.delay(1, 0.5, Some(Duration::from_secs(999))),
            Duration::from_secs(120)
        );
        let now = Utc::now();
        let delay = Duration::from_secs(1);
        assert_eq!(policy.next(1, Some(204), now, delay), NextStep::Delivered);
        assert_eq!(policy.next(1, Some(410), now, delay), NextStep::Disable);
        assert!(matches!(
            policy.next(3, Some(500), now, delay),
            NextStep::RetryAt(_)
        ));
        assert_eq!(policy.next(4, None, now, delay), NextStep::GiveUp);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
