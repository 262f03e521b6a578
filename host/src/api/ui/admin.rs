//! Read-only pages over the JSON API's admin and project listings: the audit trail with its
//! verification (`/ui/audit`, admins), the credentials by name (`/ui/credentials`, admins;
//! values are never shown, deleting one is the API's `DELETE /credentials/{name}`) and a
//! project's webhooks (`/ui/projects/{id}/webhooks`, its members; secrets never shown).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;

use super::html::{action_button, esc, page};
use super::{PageError, Viewer};
use crate::api::state::AppState;
use crate::domain::ProjectId;

/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// Query of the audit page: entries after this sequence number.
#[derive(Debug, serde::Deserialize)]
pub struct AfterQuery {
    pub after: Option<i64>,
}

/// `GET /ui/audit`: whether the hash chain holds, and a page of entries in sequence order.
pub async fn audit_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(query): Query<AfterQuery>,
) -> Result<Html<String>, PageError> {
    viewer.principal.require_admin()?;
    let verified = state.stores.audit.verify().await?;
    let chain = match &verified.first_broken {
        None => format!(
            "<p id=\"chain\" class=\"status completed\">Chain intact: {} entries verified.</p>",
            verified.verified
        ),
        Some(broken) => format!(
            "<p id=\"chain\" class=\"status failed\">Chain broken: {}</p>",
            esc(&broken.to_string())
        ),
    };
    let after = query.after.unwrap_or(0).max(0);
    let entries = state.stores.audit.list(after, AUDIT_PAGE).await?;
    let mut rows = String::new();
    for e in &entries {
        let _ = write!(
            rows,
            "<tr><td>{seq}</td><td>{at}</td><td>{actor}</td><td><code>{action}</code></td>\
             <td>{project}</td><td><code>{details}</code></td></tr>",
            seq = e.seq,
            at = e.at.format("%Y-%m-%d %H:%M:%S"),
            actor = esc(&e.actor),
            action = esc(&e.action),
            project = esc(e.project_id.as_deref().unwrap_or("")),
            details = esc(&e.details.to_string()),
        );
    }
    let mut pager = String::new();
    if entries.len() == AUDIT_PAGE as usize
        && let Some(last) = entries.last()
    {
        let _ = write!(
            pager,
            "<a id=\"later\" href=\"?after={}\">Later →</a>",
            last.seq
        );
    }
    let body = format!(
        "<h1>Audit trail</h1>{chain}<table id=\"audit\"><thead><tr><th>#</th><th>At (UTC)</th>\
         <th>Actor</th><th>Action</th><th>Project</th><th>Details</th></tr></thead>\
         <tbody>{rows}</tbody></table><p class=\"pager\">{pager}</p>"
    );
    Ok(Html(page("Audit", Some(&viewer.csrf), &body)))
}

/// `GET /ui/credentials`: the stored credentials' names and dates, with a delete button.
pub async fn credentials_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, PageError> {
    viewer.principal.require_admin()?;
    let mut rows = String::new();
    for c in state.stores.credentials.list().await? {
        let name = c.name.to_string();
        let delete = action_button(
            &viewer.csrf,
            "DELETE",
            &format!("/credentials/{name}"),
            "Delete",
            "reload",
        );
        let _ = write!(
            rows,
            "<tr data-credential=\"{name}\"><td><code>{name}</code></td><td>{created}</td>\
             <td>{updated}</td><td>{delete}</td></tr>",
            name = esc(&name),
            created = c.created_at.format("%Y-%m-%d %H:%M"),
            updated = c.updated_at.format("%Y-%m-%d %H:%M"),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"4\" class=\"empty\">No credentials.</td></tr>");
    }
    let body = format!(
        "<h1>Credentials</h1><p class=\"hint\">Names only: values are write-only \
         (<code>PUT /credentials/{{name}}</code>, <code>rdev</code> CLI).</p>\
         <table id=\"credentials\"><thead><tr><th>Name</th><th>Created</th><th>Updated</th>\
         <th></th></tr></thead><tbody>{rows}</tbody></table>"
    );
    Ok(Html(page("Credentials", Some(&viewer.csrf), &body)))
}

/// `GET /ui/projects/{id}/webhooks`: the project's subscriptions (never their secrets).
pub async fn webhooks_page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let id = ProjectId::parse(id).map_err(crate::api::ApiError::from)?;
    viewer.principal.require_project(&id)?;
    state.stores.projects.get(&id).await?;
    let mut rows = String::new();
    for w in state.stores.webhooks.list_webhooks(&id).await? {
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
        let _ = write!(
            rows,
            "<tr data-webhook=\"{wid}\"><td><code>{wid}</code></td><td>{url}</td><td>{events}</td>\
             <td>{state}</td><td>{description}</td></tr>",
            wid = esc(&w.id),
            url = esc(&w.url),
            events = esc(&events),
            description = esc(w.description.as_deref().unwrap_or("")),
        );
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=\"5\" class=\"empty\">No webhooks.</td></tr>");
    }
    let project = esc(id.as_str());
    let body = format!(
        "<p><a href=\"/ui/projects/{project}\">← {project}</a></p><h1>Webhooks of {project}</h1>\
         <table id=\"webhooks\"><thead><tr><th>Id</th><th>URL</th><th>Events</th><th>State</th>\
         <th>Description</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    Ok(Html(page(
        &format!("Webhooks {project}"),
        Some(&viewer.csrf),
        &body,
    )))
}
