//! The providers page: each provider's state, version, ABI, capabilities, grants (what its
//! manifest lets it reach outside the sandbox) and last load error, with the reload button
//! for admins.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;

use super::html::{action_button, esc, page as layout};
use super::{PageError, Viewer};
use crate::api::state::AppState;
use crate::registry::{ProviderGrants, ProviderStatus};

/// `GET /ui/providers`. Load errors name plugin files by full path for admins only, as
/// `GET /providers` does.
pub async fn page(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
) -> Result<Html<String>, PageError> {
    let admin = viewer.principal.is_admin();
    let mut rows = String::new();
    for status in state.registry.statuses() {
        let status = if admin {
            status
        } else {
            status.without_paths()
        };
        rows.push_str(&row(&status));
    }
    let reload = if admin {
        action_button(
            &viewer.csrf,
            "POST",
            "/providers/reload",
            "Reload plugins",
            "reload",
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Providers</h1>{reload}<table id=\"providers\"><thead><tr><th>Name</th><th>State</th>\
         <th>Version</th><th>ABI</th><th>Capabilities</th><th>Grants</th><th>Last load error</th></tr></thead>\
         <tbody>{rows}</tbody></table><p class=\"hint\">Confinement: {confinement}</p>",
        confinement = esc(&serde_json::to_string(&state.confinement).unwrap_or_default()),
    );
    Ok(Html(layout("Providers", Some(&viewer.csrf), &body)))
}

fn row(status: &ProviderStatus) -> String {
    let state = serde_json::to_value(status.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut capabilities = String::new();
    if let Some(caps) = &status.capabilities {
        for (name, on) in [
            ("streaming", caps.streaming),
            ("sessions", caps.session_resume),
            ("cancel", caps.cancel),
            ("tools", caps.tools),
            ("cost", caps.cost_reporting),
            ("idempotent", caps.idempotent),
        ] {
            if on {
                let _ = write!(capabilities, "<span class=\"tag\">{name}</span>");
            }
        }
    }
    format!(
        "<tr data-provider=\"{name}\"><td>{name}{default}</td><td><span class=\"state {state}\">{state}</span></td>\
         <td>{version}</td><td>{abi}</td><td>{capabilities}</td><td class=\"grants\">{grants}</td><td class=\"load-error\">{error}</td></tr>",
        name = esc(&status.name),
        default = if status.default {
            " <span class=\"tag\">default</span>"
        } else {
            ""
        },
        state = esc(&state),
        version = esc(status.version.as_deref().unwrap_or("")),
        abi = esc(status.abi.as_deref().unwrap_or("")),
        grants = status.grants.as_ref().map(grants).unwrap_or_default(),
        error = esc(status.last_error.as_deref().unwrap_or("")),
    )
}

/// The grants as one line per kind, `none` when the plugin may reach nothing.
fn grants(grants: &ProviderGrants) -> String {
    let ports: Vec<String> = grants
        .project_http_ports
        .iter()
        .map(u16::to_string)
        .collect();
    let mut lines = String::new();
    for (kind, values) in [
        ("exec", grants.exec.join(", ")),
        ("ports", ports.join(", ")),
        ("credentials", grants.credentials.join(", ")),
        ("service", grants.service.clone().unwrap_or_default()),
    ] {
        if !values.is_empty() {
            let _ = write!(
                lines,
                "<div data-grant=\"{kind}\">{kind}: <code>{}</code></div>",
                esc(&values)
            );
        }
    }
    if grants.mcp_servers {
        lines.push_str("<div data-grant=\"mcp_servers\">MCP servers</div>");
    }
    if lines.is_empty() {
        lines.push_str("<span class=\"empty\">none</span>");
    }
    lines
}
