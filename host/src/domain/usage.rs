//! Usage accounting and budgets: what a command consumed (tokens and cost, as its provider
//! reported them), the per-day totals `GET /projects/{id}/usage` shows, and the monthly
//! budget that refuses new commands and stops running ones once it is used up.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::event::Usage;
use super::ids::ProjectId;
use super::result::AgentResult;

/// What one command consumed. Stored once per finished command, whatever its status, so a
/// cancelled or failed command's spending still counts against its project's budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandUsage {
    pub tokens: Usage,
    /// US dollars; 0 when the provider reports no cost (the shell provider never does).
    pub cost_usd: f64,
}

impl CommandUsage {
    /// Adds one `usage` event. Events count as increments (a provider reporting per step
    /// sends each step's share; one reporting once sends the total once).
    pub fn add_event(&mut self, usage: &Usage, cost_usd: Option<f64>) {
        let t = &mut self.tokens;
        t.input_tokens = t.input_tokens.saturating_add(usage.input_tokens);
        t.output_tokens = t.output_tokens.saturating_add(usage.output_tokens);
        t.cache_read_tokens = t.cache_read_tokens.saturating_add(usage.cache_read_tokens);
        t.cache_write_tokens = t
            .cache_write_tokens
            .saturating_add(usage.cache_write_tokens);
        self.cost_usd += valid_cost(cost_usd);
    }

    /// The command's final usage: what its result reports, where it reports it (a
    /// provider's own total is authoritative), else what its events added up to.
    pub fn settle(self, result: Option<&AgentResult>) -> Self {
        let Some(result) = result else { return self };
        Self {
            tokens: result.usage.unwrap_or(self.tokens),
            cost_usd: match result.cost_usd {
                Some(cost) => valid_cost(Some(cost)),
                None => self.cost_usd,
            },
        }
    }
}

/// A reported cost that can be added up: negative, NaN and infinite costs count as 0.
fn valid_cost(cost: Option<f64>) -> f64 {
    cost.filter(|c| c.is_finite() && *c >= 0.0).unwrap_or(0.0)
}

/// The totals of one provider's commands of one project that finished on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageBucket {
    /// The day the commands finished, UTC.
    pub day: NaiveDate,
    pub provider: String,
    /// Finished commands counted.
    pub commands: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// Longest range `GET /projects/{id}/usage` answers, in days.
pub const MAX_USAGE_DAYS: i64 = 366;

/// Why a usage query or a budget was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageError {
    #[error("{field} must be a date as YYYY-MM-DD, not {value:?}")]
    InvalidDate { field: &'static str, value: String },
    #[error("from ({from}) is after to ({to})")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
    #[error("a usage range spans at most {MAX_USAGE_DAYS} days; {from} to {to} is longer")]
    RangeTooLong { from: NaiveDate, to: NaiveDate },
    #[error("monthly_limit_usd must be a finite number of dollars ≥ 0, not {0}")]
    InvalidLimit(f64),
}

impl UsageError {
    /// The stable `code` of the API's problem answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidDate { .. } | Self::EmptyRange { .. } | Self::RangeTooLong { .. } => {
                "invalid_usage_range"
            }
            Self::InvalidLimit(_) => "invalid_budget",
        }
    }
}

/// An inclusive range of days (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DayRange {
    /// The range of `from` and `to` (`YYYY-MM-DD`, both optional): `to` defaults to
    /// `today`, `from` to the first day of `to`'s month.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        today: NaiveDate,
    ) -> Result<Self, UsageError> {
        let to = to.map(|v| parse_day("to", v)).transpose()?.unwrap_or(today);
        let from = match from {
            Some(v) => parse_day("from", v)?,
            None => month_start(to),
        };
        if from > to {
            return Err(UsageError::EmptyRange { from, to });
        }
        if (to - from).num_days() >= MAX_USAGE_DAYS {
            return Err(UsageError::RangeTooLong { from, to });
        }
        Ok(Self { from, to })
    }

    /// The calendar month (UTC) that `at` falls in, the period a budget covers.
    pub fn month_of(at: DateTime<Utc>) -> Self {
        let from = month_start(at.date_naive());
        let next = from
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX);
        let to = next.pred_opt().unwrap_or(next);
        Self { from, to }
    }

    /// The month as `YYYY-MM`, the key that makes `budget.exceeded` fire once a month.
    pub fn month_key(&self) -> String {
        self.from.format("%Y-%m").to_string()
    }
}

fn parse_day(field: &'static str, value: &str) -> Result<NaiveDate, UsageError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| UsageError::InvalidDate {
        field,
        value: value.chars().take(64).collect(),
    })
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// The day key a usage row is filed under: the UTC date its command finished.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Reads a stored day key back.
pub fn parse_day_key(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

/// A project's monthly spending limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Budget {
    pub project_id: ProjectId,
    /// US dollars per calendar month (UTC); 0 refuses every command.
    pub monthly_limit_usd: f64,
    pub updated_at: DateTime<Utc>,
}

/// Checks a limit from a request: finite and not negative.
pub fn check_limit(limit: f64) -> Result<f64, UsageError> {
    if limit.is_finite() && limit >= 0.0 {
        Ok(limit)
    } else {
        Err(UsageError::InvalidLimit(limit))
    }
}

/// Whether `spent` this month leaves nothing of `limit`: a command is refused, or stopped,
/// once the month's cost reaches the limit.
pub fn exhausted(limit: f64, spent: f64) -> bool {
    spent >= limit
}

/// The words a refused or stopped command carries.
pub fn exceeded_reason(project: &ProjectId, limit: f64, spent: f64) -> String {
    format!(
        "budget_exceeded: project {project} has spent ${spent:.4} of its ${limit:.2} monthly budget"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_range_defaults_to_the_month_so_far_and_refuses_bad_dates() {
        let today = day("2026-12-06");
        let range = DayRange::parse(None, None, today).unwrap();
        assert_eq!((range.from, range.to), (day("2026-12-01"), today));
        let err = DayRange::parse(Some("2026-13-01"), None, today).unwrap_err();
        assert_eq!(err.code(), "invalid_usage_range");
        assert!(matches!(
            DayRange::parse(Some("2026-12-07"), Some("2026-12-06"), today),
            Err(UsageError::EmptyRange { .. })
        ));
        assert!(matches!(
            DayRange::parse(Some("2024-01-01"), Some("2026-01-01"), today),
            Err(UsageError::RangeTooLong { .. })
        ));
    }

    #[test]
    fn a_month_covers_its_calendar_days() {
        let at = "2024-02-10T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let month = DayRange::month_of(at);
        assert_eq!(
            (month.from, month.to),
            (day("2024-02-01"), day("2024-02-29"))
        );
        assert_eq!(month.month_key(), "2024-02");
    }

    #[test]
    fn a_result_total_wins_over_the_events_and_bad_costs_count_nothing() {
        let mut usage = CommandUsage::default();
        let step = Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        };
        usage.add_event(&step, Some(0.25));
        usage.add_event(&step, Some(f64::NAN));
        usage.add_event(&step, Some(-1.0));
        assert_eq!(usage.tokens.input_tokens, 30);
        assert!((usage.cost_usd - 0.25).abs() < 1e-12);
        let mut result = AgentResult::new(crate::domain::ResultStatus::Completed);
        assert_eq!(usage.clone().settle(Some(&result)), usage);
        result.cost_usd = Some(1.5);
        let settled = usage.settle(Some(&result));
        assert!((settled.cost_usd - 1.5).abs() < 1e-12);
        assert_eq!(settled.tokens.input_tokens, 30);
    }

    #[test]
    fn limits_are_finite_and_not_negative() {
        assert_eq!(check_limit(0.0), Ok(0.0));
        assert!(check_limit(-0.01).is_err());
        assert!(check_limit(f64::NAN).is_err());
        assert!(check_limit(f64::INFINITY).is_err());
        assert!(exhausted(0.0, 0.0));
        assert!(!exhausted(1.0, 0.99));
    }
}
