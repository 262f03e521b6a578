//! The projects page, a project's page (its commands, a page at a time, and the prompt
//! box) and a command's page (the live stream the script renders). Reads go through the
//! same access checks as the JSON API; the forms are sent by the script to the JSON API.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Html;

use super::html::{action_button, csrf_field, esc, page};
use super::{PageError, Viewer};
use crate::api::auth::accessible_project_id;
use crate::api::commands::{self, CommandView, ListQuery, accessible_command};
use crate::api::projects::accessible_projects;
use crate::api::state::AppState;
use crate::domain::ProjectId;
use crate::registry::ProviderState;

/// Commands per page of a project's list.
const PAGE_SIZE: u32 = 50;

/// `GET /ui/projects`: the projects the viewer may access; admins also create and delete.
pub async fn projects(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, PageError> {
    let projects = accessible_projects(&state, &viewer.principal).await?;
    let admin = viewer.principal.is_admin();
    let mut rows = String::new();
    for project in &projects {
        let id = project.id.as_str();
        let delete = if admin {
            action_button(
                &viewer.csrf,
                "DELETE",
                &format!("/projects/{id}"),
                "Delete",
                "reload",
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr data-project=\"{id}\"><td><a href=\"/ui/projects/{id}\">{id}</a></td>\
             <td>{name}</td><td>{created}</td><td>{delete}</td></tr>",
            id = esc(id),
            name = esc(project.display_name.as_deref().unwrap_or("")),
            created = project.created_at.format("%Y-%m-%d %H:%M"),
        );
    }
    if projects.is_empty() {
        rows.push_str("<tr><td colspan=\"4\" class=\"empty\">No projects yet.</td></tr>");
    }
    let create = if admin {
        let links = "<p><a id=\"audit-link\" href=\"/ui/audit\">Audit trail</a> · \
                     <a id=\"credentials-link\" href=\"/ui/credentials\">Credentials</a></p>";
        format!("{links}{}", create_form(&state, &viewer.csrf))
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Projects</h1><table id=\"projects\"><thead><tr><th>Id</th><th>Name</th>\
         <th>Created</th><th></th></tr></thead><tbody>{rows}</tbody></table>{create}"
    );
    Ok(Html(page("Projects", Some(&viewer.csrf), &body)))
}

fn create_form(state: &AppState, csrf: &str) -> String {
    let mut templates = String::from("<option value=\"\">(empty workspace)</option>");
    for template in state.setup.templates() {
        let _ = write!(
            templates,
            "<option value=\"{name}\">{name} — {description}</option>",
            name = esc(&template.name),
            description = esc(&template.description),
        );
    }
    format!(
        "<h2>New project</h2><form id=\"create-project\" class=\"card\" data-api=\"/projects\" \
         data-method=\"POST\" data-then=\"/ui/projects/{{id}}\">{csrf}\
         <label>Id <input name=\"id\" required pattern=\"[a-z0-9-]{{1,63}}\"></label>\
         <label>Name <input name=\"display_name\"></label>\
         <label>Template <select name=\"template\">{templates}</select></label>\
         <label>Variables (JSON) <input name=\"vars\" data-json placeholder='{{\"name\": \"demo\"}}'></label>\
         <button type=\"submit\">Create</button><p class=\"error\" data-error></p></form>",
        csrf = csrf_field(csrf),
    )
}

/// Query of a project's page: the commands older than the `before` cursor (the API's).
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    pub before: Option<String>,
}

/// `GET /ui/projects/{id}`: a page of the project's commands, newest first, and the
/// prompt box.
pub async fn project(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let id = accessible_project_id(&viewer.principal, id)?;
    let paged = query.before.is_some();
    let listed = ListQuery {
        status: None,
        limit: Some(PAGE_SIZE),
        offset: None,
        before: query.before,
    };
    let page_of = commands::command_page(&state, &viewer.principal, id.clone(), listed).await?;
    let mut rows = String::new();
    for command in &page_of.commands {
        rows.push_str(&command_row(command));
    }
    if page_of.commands.is_empty() {
        rows.push_str("<tr><td colspan=\"6\" class=\"empty\">No commands yet.</td></tr>");
    }
    let mut pager = String::new();
    if paged {
        pager.push_str("<a href=\"?\" id=\"newest\">← Newest</a> ");
    }
    if let Some(next) = &page_of.next {
        let _ = write!(
            pager,
            "<a href=\"?before={}\" id=\"older\">Older →</a>",
            esc(next)
        );
    }
    let sessions: BTreeSet<&str> = page_of
        .commands
        .iter()
        .filter_map(|c| c.session_id.as_deref())
        .collect();
    let body = format!(
        "<h1>Project {id}</h1><p><a id=\"usage-link\" href=\"/ui/projects/{id}/usage\">Usage and budget</a> · \
         <a id=\"webhooks-link\" href=\"/ui/projects/{id}/webhooks\">Webhooks</a></p>\
         {prompt}<h2>Commands</h2>\
         <table id=\"commands\"><thead><tr><th>Command</th><th>Status</th><th>Provider</th>\
         <th>Prompt</th><th>Duration</th><th>Cost</th></tr></thead><tbody>{rows}</tbody></table>\
         <p class=\"pager\">{pager}</p>",
        id = esc(id.as_str()),
        prompt = prompt_form(&state, &viewer.csrf, &id, &sessions),
    );
    Ok(Html(page(id.as_str(), Some(&viewer.csrf), &body)))
}

fn command_row(command: &CommandView) -> String {
    let duration = command
        .duration_ms
        .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let cost = command
        .result
        .as_ref()
        .and_then(|r| r.cost_usd)
        .map(|c| format!("${c:.4}"))
        .unwrap_or_default();
    let mut prompt: String = command.prompt.chars().take(80).collect();
    if prompt.len() < command.prompt.len() {
        prompt.push('…');
    }
    format!(
        "<tr><td><a href=\"/ui/commands/{id}\">{short}</a></td>\
         <td><span class=\"status {status}\">{status}</span></td><td>{provider}</td>\
         <td><code>{prompt}</code></td><td>{duration}</td><td>{cost}</td></tr>",
        id = esc(command.id.as_str()),
        short = esc(command.id.as_str().get(..12).unwrap_or(command.id.as_str())),
        status = esc(&command.status.to_string()),
        provider = esc(command.provider.as_str()),
        prompt = esc(&prompt),
    )
}

fn prompt_form(
    state: &AppState,
    csrf: &str,
    project: &ProjectId,
    sessions: &BTreeSet<&str>,
) -> String {
    let mut providers = String::new();
    for status in state.registry.statuses() {
        if matches!(status.state, ProviderState::Serving | ProviderState::Stale) {
            let _ = write!(
                providers,
                "<option value=\"{name}\"{selected}>{name}</option>",
                name = esc(&status.name),
                selected = if status.default { " selected" } else { "" },
            );
        }
    }
    let mut session_options = String::from("<option value=\"\">(new session)</option>");
    for session in sessions {
        let _ = write!(
            session_options,
            "<option value=\"{s}\">{s}</option>",
            s = esc(session)
        );
    }
    format!(
        "<form id=\"prompt\" class=\"card\" data-api=\"/projects/{project}/commands\" \
         data-method=\"POST\" data-then=\"/ui/commands/{{command_id}}\">{csrf}\
         <label>Prompt <textarea name=\"prompt\" rows=\"3\" required></textarea></label>\
         <div class=\"row\"><label>Provider <select name=\"provider\">{providers}</select></label>\
         <label>Model <input name=\"model\" placeholder=\"provider default\"></label>\
         <label>Continue session <select name=\"session_id\">{session_options}</select></label>\
         <button type=\"submit\">Run</button></div><p class=\"error\" data-error></p></form>",
        project = esc(project.as_str()),
        csrf = csrf_field(csrf),
    )
}

/// `GET /ui/commands/{id}`: the command's details and its live stream, which the script
/// renders event by event from the SSE route (the session cookie authenticates it).
pub async fn command(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let record = accessible_command(&state, &viewer.principal, &id).await?;
    let view = CommandView::from(record);
    let csrf = &viewer.csrf;
    let id = esc(view.id.as_str());
    let project = esc(view.project_id.as_str());
    let cancel = action_button(
        csrf,
        "POST",
        &format!("/commands/{id}/cancel"),
        "Cancel",
        "none",
    );
    let body = format!(
        "<p><a href=\"/ui/projects/{project}\">← {project}</a></p>\
         <h1>Command <code>{id}</code></h1>\
         <dl class=\"facts\"><dt>Status</dt><dd><span id=\"status\" class=\"status {status}\">{status}</span></dd>\
         <dt>Provider</dt><dd>{provider}</dd><dt>Submitted by</dt><dd>{by}</dd>\
         <dt>Session</dt><dd id=\"session\">{session}</dd>\
         <dt>Workspace</dt><dd><a id=\"changes-link\" href=\"/ui/commands/{id}/changes\">changes</a></dd></dl>\
         <div id=\"controls\" class=\"controls\">{cancel}</div>\
         <pre class=\"prompt\">{prompt}</pre>\
         <section id=\"events\" data-stream=\"{stream}\" data-csrf=\"{csrf_attr}\"></section>\
         <form id=\"follow-up\" class=\"card\" data-api=\"/commands/{id}/input\" data-method=\"POST\" \
         data-then=\"clear\">{csrf_field}<label>Follow-up <input name=\"text\" required></label>\
         <button type=\"submit\">Send</button><span class=\"error\" data-error></span></form>",
        status = esc(&view.status.to_string()),
        provider = esc(view.provider.as_str()),
        by = esc(&view.submitted_by),
        session = esc(view.session_id.as_deref().unwrap_or("")),
        prompt = esc(&view.prompt),
        stream = esc(&view.stream_url),
        csrf_attr = esc(csrf),
        csrf_field = csrf_field(csrf),
    );
    Ok(Html(page(&format!("Command {id}"), Some(csrf), &body)))
}
