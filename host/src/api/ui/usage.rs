//! `GET /ui/projects/{id}/usage`: a project's usage per day and provider over a range (what
//! `GET /projects/{id}/usage` returns) and its monthly budget with this month's spending;
//! admins set or remove the budget with forms the script sends to
//! `PUT /projects/{id}/budget`, with the session's CSRF token.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;

use super::html::{csrf_field, esc, page};
use super::{PageError, Viewer};
use crate::api::state::AppState;
use crate::api::usage::{BudgetView, ProjectUsage, UsageQuery, budget_view, project_usage};
use crate::domain::ProjectId;

/// The usage page of a project.
pub async fn usage_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Html<String>, PageError> {
    let id = ProjectId::parse(id).map_err(crate::api::ApiError::from)?;
    let usage = project_usage(&state, &viewer.principal, id.clone(), &query).await?;
    let budget = budget_view(&state, id.clone()).await?;
    let project = esc(id.as_str());
    let form = if viewer.principal.is_admin() {
        budget_forms(&viewer.csrf, &id, &budget)
    } else {
        String::new()
    };
    let body = format!(
        "<p><a href=\"/ui/projects/{project}\">← {project}</a></p>\
         <h1>Usage of {project}</h1>{budget}{form}\
         <h2>From {from} to {to}</h2>\
         <form class=\"row\" method=\"get\"><label>From <input type=\"date\" name=\"from\" value=\"{from}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{to}\"></label><button type=\"submit\">Show</button></form>\
         {table}",
        budget = budget_facts(&budget),
        from = usage.from,
        to = usage.to,
        table = usage_table(&usage),
    );
    Ok(Html(page(
        &format!("Usage {project}"),
        Some(&viewer.csrf),
        &body,
    )))
}

fn budget_facts(budget: &BudgetView) -> String {
    let limit = budget
        .monthly_limit_usd
        .map_or_else(|| "none".to_owned(), |l| format!("${l:.2} a month"));
    let state = if budget.exceeded {
        "<span class=\"status failed\">exceeded: new commands are refused</span>"
    } else {
        "<span class=\"status completed\">within budget</span>"
    };
    format!(
        "<dl class=\"facts\" id=\"budget\"><dt>Budget</dt><dd id=\"budget-limit\">{limit}</dd>\
         <dt>Spent in {month}</dt><dd id=\"budget-spent\">${spent:.4}</dd>\
         <dt>State</dt><dd id=\"budget-state\">{state}</dd></dl>",
        month = esc(&budget.month),
        spent = budget.spent_usd,
    )
}

fn budget_forms(csrf: &str, project: &ProjectId, budget: &BudgetView) -> String {
    let path = format!("/projects/{}/budget", project.as_str());
    let clear = if budget.monthly_limit_usd.is_some() {
        format!(
            "<form id=\"clear-budget\" class=\"inline\" data-api=\"{path}\" data-method=\"PUT\" \
             data-then=\"reload\">{csrf}<input type=\"hidden\" name=\"monthly_limit_usd\" \
             value=\"null\" data-json><button type=\"submit\">Remove budget</button>\
             <span class=\"error\" data-error></span></form>",
            path = esc(&path),
            csrf = csrf_field(csrf),
        )
    } else {
        String::new()
    };
    format!(
        "<form id=\"set-budget\" class=\"card\" data-api=\"{path}\" data-method=\"PUT\" \
         data-then=\"reload\">{csrf}<div class=\"row\"><label>Monthly limit (USD; 0 refuses \
         every command) <input name=\"monthly_limit_usd\" type=\"number\" min=\"0\" \
         step=\"0.01\" required data-json></label><button type=\"submit\">Set budget</button>\
         </div><p class=\"error\" data-error></p></form>{clear}",
        path = esc(&path),
        csrf = csrf_field(csrf),
    )
}

fn usage_table(usage: &ProjectUsage) -> String {
    let mut rows = String::new();
    for day in &usage.days {
        let _ = write!(
            rows,
            "<tr><td>{day}</td><td>{provider}</td><td>{commands}</td><td>{input}</td>\
             <td>{output}</td><td>${cost:.4}</td></tr>",
            day = day.day,
            provider = esc(&day.provider),
            commands = day.commands,
            input = day.input_tokens,
            output = day.output_tokens,
            cost = day.cost_usd,
        );
    }
    if usage.days.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No finished commands.</td></tr>");
    }
    let t = &usage.total;
    format!(
        "<table id=\"usage\"><thead><tr><th>Day</th><th>Provider</th><th>Commands</th>\
         <th>Input tokens</th><th>Output tokens</th><th>Cost</th></tr></thead><tbody>{rows}</tbody>\
         <tfoot><tr id=\"usage-total\"><th>Total</th><th></th><th>{commands}</th><th>{input}</th>\
         <th>{output}</th><th>${cost:.4}</th></tr></tfoot></table>",
        commands = t.commands,
        input = t.input_tokens,
        output = t.output_tokens,
        cost = t.cost_usd,
    )
}
