//! What every handler shares, behind one `Arc`.

use std::time::Duration;

use super::metrics::Metrics;
use crate::domain::{NewAuditEntry, Principal, ProjectId};
use crate::ports::Stores;
use crate::registry::Registry;
use crate::services::project_setup::ProjectSetupService;

/// How SSE connections behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseConfig {
    /// Interval of keep-alive comments, so proxies do not close an idle stream.
    pub keep_alive: Duration,
    /// How long a connection's socket may accept no bytes before the connection is closed
    /// (see [`super::listener`]): a client that stops reading is dropped instead of being
    /// held open; it may resume with `Last-Event-ID`, so dropping loses nothing.
    pub write_timeout: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Shared state of the HTTP API.
pub struct AppState {
    pub stores: Stores,
    pub registry: Registry,
    pub metrics: Metrics,
    /// Creates projects from templates and registers them with CI.
    pub setup: ProjectSetupService,
    pub sse: SseConfig,
    /// Dashboard sessions: cookie flags and lifetime.
    pub ui: super::session::UiConfig,
    /// How webhooks are checked and delivered (the API checks targets at creation).
    pub webhooks: crate::services::webhooks::WebhookConfig,
    /// Cancelled when the server shuts down, so open SSE streams end and the graceful
    /// shutdown does not wait for clients that never disconnect.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How commands are confined, for `/readyz` and `GET /providers`.
    pub confinement: crate::ports::Confinement,
    /// Installs plugins from OCI registries into the plugins directory
    /// (`POST /providers/install`).
    pub plugins: crate::services::plugins::PluginInstaller,
    /// Rotates the master key (`POST /credentials/rotate-key`).
    pub master_key: crate::services::master_key::KeyRotation,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("sse", &self.sse)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Appends an audit entry for an administrative action. A failed append is logged and
    /// does not undo the action, which has already happened.
    pub async fn audit(
        &self,
        principal: &Principal,
        action: &str,
        project_id: Option<String>,
        command_id: Option<String>,
        details: serde_json::Value,
    ) {
        self.audit_as(principal.actor(), action, project_id, command_id, details)
            .await;
    }

    /// [`AppState::audit`] of an action on `project` as a whole.
    pub async fn audit_project(
        &self,
        principal: &Principal,
        action: &str,
        project: &ProjectId,
        details: serde_json::Value,
    ) {
        self.audit(principal, action, Some(project.to_string()), None, details)
            .await;
    }

    /// [`AppState::audit`] of an action on the server, not on one project.
    pub async fn audit_server(
        &self,
        principal: &Principal,
        action: &str,
        details: serde_json::Value,
    ) {
        self.audit(principal, action, None, None, details).await;
    }

    /// [`AppState::audit`] for an action no API caller made (a signal, a background task),
    /// named by `actor`.
    pub async fn audit_as(
        &self,
        actor: String,
        action: &str,
        project_id: Option<String>,
        command_id: Option<String>,
        details: serde_json::Value,
    ) {
        let entry = NewAuditEntry {
            actor,
            action: action.to_owned(),
            project_id,
            command_id,
            details,
        };
        if let Err(error) = self.stores.audit.append(entry).await {
            tracing::error!(%error, action, "could not append to the audit log");
        }
    }
}
