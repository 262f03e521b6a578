//! `/projects/{id}/usage` and `/projects/{id}/budget`: what a project's commands consumed,
//! per day and provider, and the monthly limit that refuses and stops its commands once the
//! month's cost reaches it (see `services::budgets`).

use std::sync::Arc;

use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, ProjectAdmin, ProjectReader};
use super::doc_parts::{AdminOnProject, ProjectAccess, ProjectPath};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::domain::usage::check_limit;
use crate::domain::{Budget, DayRange, Principal, ProjectId, UsageBucket, UsageError};

/// Query of `GET /projects/{id}/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day (UTC, `YYYY-MM-DD`); default: the first day of `to`'s month.
    pub from: Option<String>,
    /// Last day, included (UTC, `YYYY-MM-DD`); default: today. At most 366 days after `from`.
    pub to: Option<String>,
}

/// The sums of a range.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageTotal {
    pub commands: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// Answer of `GET /projects/{id}/usage`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectUsage {
    pub project_id: ProjectId,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Per day (the UTC day each command finished) and provider, by day then provider;
    /// days without finished commands are left out.
    pub days: Vec<UsageBucket>,
    pub total: UsageTotal,
}

/// A project's budget and this month's spending.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub project_id: ProjectId,
    /// US dollars per calendar month (UTC); absent when the project has no budget.
    pub monthly_limit_usd: Option<f64>,
    /// The month counted, `YYYY-MM`.
    pub month: String,
    /// Cost of the project's commands that finished this month.
    pub spent_usd: f64,
    /// Whether new commands are refused (`budget_exceeded`).
    pub exceeded: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Body of `PUT /projects/{id}/budget`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    /// Dollars per calendar month (UTC), ≥ 0 (0 refuses every command); `null` removes the
    /// budget.
    #[schema(value_type = Option<f64>, required = true, minimum = 0)]
    pub monthly_limit_usd: serde_json::Value,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(read_usage))
        .routes(routes!(read_budget, replace_budget))
}

fn total(days: &[UsageBucket]) -> UsageTotal {
    days.iter().fold(UsageTotal::default(), |mut t, d| {
        t.commands += d.commands;
        t.input_tokens += d.input_tokens;
        t.output_tokens += d.output_tokens;
        t.cache_read_tokens += d.cache_read_tokens;
        t.cache_write_tokens += d.cache_write_tokens;
        t.cost_usd += d.cost_usd;
        t
    })
}

/// The project's tokens and cost per day and provider.
#[utoipa::path(get, path = "/projects/{id}/usage", tag = "projects", security(("bearer" = [])),
    params(ProjectPath, UsageQuery), responses(
    (status = 200, description = "Usage per day and provider, and the range's total", body = ProjectUsage),
    ProjectAccess,
    (status = 422, description = "A date that is not YYYY-MM-DD, from after to, or more than 366 days (`invalid_usage_range`)"),
))]
async fn read_usage(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<ProjectId>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<ProjectUsage>, ApiError> {
    Ok(Json(project_usage(&state, &principal, id, &query).await?))
}

/// The project's usage over the query's range, for a principal that may access it (the
/// route's answer, and the dashboard's usage page).
pub(crate) async fn project_usage(
    state: &AppState,
    principal: &Principal,
    id: ProjectId,
    query: &UsageQuery,
) -> Result<ProjectUsage, ApiError> {
    principal.require_project(&id)?;
    let today = Utc::now().date_naive();
    let range = DayRange::parse(query.from.as_deref(), query.to.as_deref(), today)?;
    state.stores.projects.get(&id).await?;
    let days = state.stores.usage.usage(&id, range).await?;
    Ok(ProjectUsage {
        total: total(&days),
        project_id: id,
        from: range.from,
        to: range.to,
        days,
    })
}

/// The project's budget and this month's spending (the project's existence already checked).
pub(crate) async fn budget_view(state: &AppState, id: ProjectId) -> Result<BudgetView, ApiError> {
    let budget = state.stores.usage.budget(&id).await?;
    view(state, id, budget).await
}

async fn view(
    state: &AppState,
    id: ProjectId,
    budget: Option<Budget>,
) -> Result<BudgetView, ApiError> {
    let month = DayRange::month_of(Utc::now());
    let spent = state.stores.usage.cost(&id, month).await?;
    let limit = budget.as_ref().map(|b| b.monthly_limit_usd);
    Ok(BudgetView {
        project_id: id,
        monthly_limit_usd: limit,
        month: month.month_key(),
        spent_usd: spent,
        exceeded: limit.is_some_and(|l| crate::domain::usage::exhausted(l, spent)),
        updated_at: budget.map(|b| b.updated_at),
    })
}

/// The project's monthly budget and this month's spending.
#[utoipa::path(get, path = "/projects/{id}/budget", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The budget (`monthly_limit_usd` absent: none) and the month's cost", body = BudgetView),
    ProjectAccess,
))]
async fn read_budget(
    ProjectReader { state, project }: ProjectReader,
) -> Result<Json<BudgetView>, ApiError> {
    Ok(Json(budget_view(&state, project.id).await?))
}

/// Sets the project's monthly budget, or removes it with `null` (admin). A new limit can
/// announce `budget.exceeded` again this month.
#[utoipa::path(put, path = "/projects/{id}/budget", tag = "projects", security(("bearer" = [])),
    params(ProjectPath), request_body = SetBudget,
    responses(
    (status = 200, description = "The budget now in force", body = BudgetView),
    AdminOnProject,
    (status = 422, description = "A limit that is negative or not a number (`invalid_budget`)"),
))]
async fn replace_budget(
    ProjectAdmin {
        state,
        principal,
        id,
    }: ProjectAdmin,
    ApiJson(body): ApiJson<SetBudget>,
) -> Result<Json<BudgetView>, ApiError> {
    let limit = match &body.monthly_limit_usd {
        serde_json::Value::Null => None,
        serde_json::Value::Number(n) => Some(check_limit(n.as_f64().unwrap_or(f64::NAN))?),
        other => {
            let shown: String = other.to_string().chars().take(64).collect();
            return Err(ApiError::unprocessable(
                UsageError::InvalidLimit(f64::NAN).code(),
                format!("monthly_limit_usd must be a number of dollars ≥ 0 or null, not {shown}"),
            ));
        }
    };
    let budget = match limit {
        Some(limit) => Some(state.stores.usage.set_budget(&id, limit).await?),
        None => {
            state.stores.projects.get(&id).await?;
            state.stores.usage.clear_budget(&id).await?;
            None
        }
    };
    let action = if limit.is_some() {
        "project.budget_set"
    } else {
        "project.budget_removed"
    };
    let details = serde_json::json!({ "monthly_limit_usd": limit });
    state.audit_project(&principal, action, &id, details).await;
    Ok(Json(view(&state, id, budget).await?))
}
