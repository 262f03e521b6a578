//! What happens after a delivery attempt: the retry schedule with jitter and the
//! endpoint's `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};

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

#[cfg(test)]
mod tests {
    use super::*;

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
