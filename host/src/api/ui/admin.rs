//! Admin pages over the JSON API: the audit trail with its
//! verification (`/ui/audit`, admins), the credentials by name (`/ui/credentials`, admins;
//! values are set through a password field and never shown; setting and deleting are the
//! API's `PUT` and `DELETE /credentials/{name}`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Html;

use super::html::{action_button, csrf_field, esc, page};
use super::{AdminViewer, PageError};
use crate::api::state::AppState;

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
    AdminViewer(viewer): AdminViewer,
    Query(query): Query<AfterQuery>,
) -> Result<Html<String>, PageError> {
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
    AdminViewer(viewer): AdminViewer,
) -> Result<Html<String>, PageError> {
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
        "<h1>Credentials</h1><p class=\"hint\">Names only: values are write-only.</p>\
         <table id=\"credentials\"><thead><tr><th>Name</th><th>Created</th><th>Updated</th>\
         <th></th></tr></thead><tbody>{rows}</tbody></table>{set}",
        set = set_credential_form(&viewer.csrf),
    );
    Ok(Html(page("Credentials", Some(&viewer.csrf), &body)))
}

/// The form that sets a credential (`PUT /credentials/{name}`, sent by the script): the value
/// is a password field, sent once in the request body and never put back in a page.
fn set_credential_form(csrf: &str) -> String {
    format!(
        "<h2>Set a credential</h2><form id=\"set-credential\" class=\"card\" \
         data-api=\"/credentials/{{name}}\" data-method=\"PUT\" data-then=\"reload\">{csrf}\
         <div class=\"row\"><label>Name <input name=\"name\" required data-path \
         pattern=\"[A-Za-z_][A-Za-z0-9_]{{0,127}}\" autocomplete=\"off\"></label>\
         <label>Value <input name=\"value\" type=\"password\" required \
         autocomplete=\"new-password\"></label><button type=\"submit\">Set</button></div>\
         <p class=\"error\" data-error></p></form>",
        csrf = csrf_field(csrf),
    )
}
