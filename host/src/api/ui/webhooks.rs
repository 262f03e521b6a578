//! A project's webhooks page (`/ui/projects/{id}/webhooks`, its members): each subscription
//! with its recent deliveries (event, status, the endpoint's answer, attempts, times), a
//! delete button, and a form creating one. The forms are the API's own routes
//! (`POST` and `DELETE /projects/{id}/webhooks…`, sent by the script with the CSRF token);
//! a signing secret is shown once, by the script, from the create call's answer, and never
//! rendered by the server.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;

use super::html::{action_button, csrf_field, esc, page};
use super::{PageError, Viewer};
use crate::api::auth::accessible_project_id;
use crate::api::state::AppState;
use crate::domain::{Delivery, ProjectId, Webhook};
use crate::ports::DeliveryPage;

/// Deliveries shown per subscription (the newest); older ones stay with the API.
const RECENT_DELIVERIES: u32 = 10;

/// `GET /ui/projects/{id}/webhooks`.
pub async fn webhooks_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let id = accessible_project_id(&viewer.principal, id)?;
    state.stores.projects.get(&id).await?;
    let webhooks = state.stores.webhooks.list_webhooks(&id).await?;
    let mut rows = String::new();
    let mut histories = String::new();
    for webhook in &webhooks {
        rows.push_str(&webhook_row(&viewer.csrf, webhook));
        let page_of = DeliveryPage {
            before: None,
            limit: RECENT_DELIVERIES,
        };
        let deliveries = state
            .stores
            .webhooks
            .list_deliveries(&id, &webhook.id, page_of)
            .await?;
        histories.push_str(&deliveries_table(&webhook.id, &deliveries));
    }
    if webhooks.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No webhooks.</td></tr>");
    }
    let project = esc(id.as_str());
    let body = format!(
        "<p><a href=\"/ui/projects/{project}\">← {project}</a></p><h1>Webhooks of {project}</h1>\
         <table id=\"webhooks\"><thead><tr><th>Id</th><th>URL</th><th>Events</th><th>State</th>\
         <th>Description</th><th></th></tr></thead><tbody>{rows}</tbody></table>\
         {histories}{create}",
        create = create_form(&viewer.csrf, &id),
    );
    Ok(Html(page(
        &format!("Webhooks {project}"),
        Some(&viewer.csrf),
        &body,
    )))
}

fn webhook_row(csrf: &str, w: &Webhook) -> String {
    let events = if w.event_types.is_empty() {
        "every event".to_owned()
    } else {
        w.event_types.join(", ")
    };
    let state = if w.enabled {
        "<span class=\"status completed\">enabled</span>".to_owned()
    } else {
        format!(
            "<span class=\"status failed\">disabled</span> {}",
            esc(w.disabled_reason.as_deref().unwrap_or(""))
        )
    };
    let delete = action_button(
        csrf,
        "DELETE",
        &format!("/projects/{}/webhooks/{}", w.project_id.as_str(), w.id),
        "Delete",
        "reload",
    );
    format!(
        "<tr data-webhook=\"{wid}\"><td><code>{wid}</code></td><td>{url}</td><td>{events}</td>\
         <td>{state}</td><td>{description}</td><td>{delete}</td></tr>",
        wid = esc(&w.id),
        url = esc(&w.url),
        events = esc(&events),
        description = esc(w.description.as_deref().unwrap_or("")),
    )
}

/// One subscription's recent deliveries; the answer shown is the last attempt's HTTP status,
/// or its error when no answer came.
fn deliveries_table(webhook: &str, deliveries: &[Delivery]) -> String {
    let mut rows = String::new();
    for d in deliveries {
        let answer = d.attempts.last().map_or_else(String::new, |a| {
            a.status_code
                .map(|code| code.to_string())
                .or_else(|| a.error.clone())
                .unwrap_or_default()
        });
        let _ = write!(
            rows,
            "<tr data-delivery=\"{id}\"><td><code>{event}</code></td>\
             <td><span class=\"status {status}\">{status}</span></td><td class=\"answer\">{answer}</td>\
             <td class=\"attempts\">{attempts}</td><td>{created}</td><td>{finished}</td></tr>",
            id = d.id,
            event = esc(&d.event_type),
            status = d.status.as_str(),
            answer = esc(&answer),
            attempts = d.attempts.len(),
            created = d.created_at.format("%Y-%m-%d %H:%M:%S"),
            finished = d
                .finished_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
        );
    }
    if deliveries.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No deliveries yet.</td></tr>");
    }
    format!(
        "<h2>Deliveries of <code>{wid}</code></h2><table class=\"deliveries\" \
         data-deliveries=\"{wid}\"><thead><tr><th>Event</th><th>Status</th><th>Answer</th>\
         <th>Attempts</th><th>Created (UTC)</th><th>Finished</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        wid = esc(webhook),
    )
}

fn create_form(csrf: &str, project: &ProjectId) -> String {
    format!(
        "<h2>New webhook</h2><form id=\"create-webhook\" class=\"card\" \
         data-api=\"/projects/{project}/webhooks\" data-method=\"POST\" data-then=\"secret\">{csrf}\
         <label>URL <input name=\"url\" type=\"url\" required placeholder=\"https://…\"></label>\
         <label>Events (comma-separated; empty for every event) <input name=\"event_types\" \
         data-list placeholder=\"command.completed, command.failed\"></label>\
         <label>Description <input name=\"description\"></label>\
         <label>Signing secret (optional: whsec_…; one is generated when empty) \
         <input name=\"secret\" type=\"password\" autocomplete=\"new-password\"></label>\
         <button type=\"submit\">Create</button><p class=\"error\" data-error></p>\
         <p id=\"new-secret\" class=\"hint\" data-secret hidden></p></form>",
        project = esc(project.as_str()),
        csrf = csrf_field(csrf),
    )
}
