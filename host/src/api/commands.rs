//! Commands: submit to a provider (`POST /projects/{id}/{provider}` and the generic
//! `POST /projects/{id}/commands`), read, list and cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::state::AppState;
use crate::domain::{
    AgentRequest, AgentResult, CommandFilter, CommandId, CommandRecord, CommandStatus, NewCommand,
    NewProject, Principal, ProjectId, ProviderName,
};
use crate::ports::{ProviderLookup, StoreError};
use crate::worker::{cancel_command, submit_command};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Body of a submission. Only `prompt` is required.
#[derive(Debug, Default, Deserialize)]
pub struct SubmitBody {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
    /// Generic route only: the provider; the default provider when omitted.
    #[serde(default)]
    pub provider: Option<String>,
}

/// Answer to a submission.
#[derive(Debug, Serialize, Deserialize)]
pub struct Submitted {
    pub command_id: CommandId,
    pub stream_url: String,
    pub status: CommandStatus,
}

/// A command as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandView {
    pub id: CommandId,
    pub project_id: ProjectId,
    pub provider: ProviderName,
    pub status: CommandStatus,
    pub prompt: String,
    pub stream_url: String,
    pub exit_code: Option<i32>,
    pub session_id: Option<String>,
    pub result: Option<AgentResult>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub attempts: u32,
    pub submitted_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

/// Where a command's events stream.
pub fn stream_url(project: &ProjectId, command: &CommandId) -> String {
    format!("/projects/{project}/events/{command}")
}

impl From<CommandRecord> for CommandView {
    fn from(record: CommandRecord) -> Self {
        let duration_ms = record
            .started_at
            .zip(record.finished_at)
            .map(|(start, end)| (end - start).num_milliseconds());
        Self {
            stream_url: stream_url(&record.project_id, &record.id),
            exit_code: record.result.as_ref().and_then(|r| r.exit_code),
            session_id: record
                .result
                .as_ref()
                .and_then(|r| r.session_id.clone())
                .or_else(|| record.request.session_id.clone()),
            id: record.id,
            project_id: record.project_id,
            provider: record.provider,
            status: record.status,
            prompt: record.request.prompt,
            result: record.result,
            error: record.error,
            cancel_requested: record.cancel_requested,
            attempts: record.attempts,
            submitted_by: record.submitted_by,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            duration_ms,
        }
    }
}

/// Query of `GET /projects/{id}/commands`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/projects/{id}/commands",
            get(list_for_project).post(submit_generic),
        )
        .route("/projects/{id}/{provider}", post(submit_to_provider))
        .route("/commands/{id}", get(read))
        .route("/commands/{id}/cancel", post(cancel))
}

async fn submit_to_provider(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath((project, provider)): ApiPath<(ProjectId, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    submit(&state, &principal, project, Some(provider), &headers, body).await
}

async fn submit_generic(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(project): ApiPath<ProjectId>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let provider = body.provider.take();
    submit(&state, &principal, project, provider, &headers, body).await
}

/// Validates everything before writing anything, then registers the project if needed and
/// queues the command.
async fn submit(
    state: &AppState,
    principal: &Principal,
    project: ProjectId,
    provider: Option<String>,
    headers: &HeaderMap,
    body: SubmitBody,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    principal.require_project(&project)?;
    let request = AgentRequest {
        prompt: body.prompt,
        session_id: body.session_id,
        timeout: body
            .timeout_secs
            .map_or(AgentRequest::DEFAULT_TIMEOUT, Duration::from_secs),
        model: body.model,
        working_dir: body.working_dir,
        options: body.options.unwrap_or_default(),
    };
    request.validate()?;
    let provider = match provider {
        Some(name) => Some(ProviderName::parse(&name).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_provider",
                format!("no provider named {name:?} is registered"),
            )
        })?),
        None => None,
    };
    let agent = state.registry.lookup(provider.as_ref())?;
    let provider = agent.provider().name.clone();
    let idempotency_key = idempotency_key(headers)?;
    state
        .stores
        .projects
        .ensure(NewProject {
            id: project.clone(),
            display_name: None,
        })
        .await?;
    let enqueued = submit_command(
        &state.stores,
        NewCommand {
            project_id: project.clone(),
            provider: provider.clone(),
            request,
            idempotency_key,
            submitted_by: principal.actor(),
        },
    )
    .await?;
    let command = enqueued.command;
    if enqueued.created {
        state.metrics.commands_enqueued.inc();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            stream_url: stream_url(&project, &command.id),
            command_id: command.id,
            status: command.status,
        }),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                ),
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn parse_command_id(id: &str) -> Result<CommandId, ApiError> {
    CommandId::parse(id).map_err(|_| ApiError::not_found("command", id))
}

/// Reads a command the caller may access.
pub async fn accessible_command(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<CommandRecord, ApiError> {
    let id = parse_command_id(id)?;
    let command = state.stores.queue.get(&id).await?;
    principal.require_project(&command.project_id)?;
    Ok(command)
}

async fn read(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CommandView>, ApiError> {
    Ok(Json(
        accessible_command(&state, &principal, &id).await?.into(),
    ))
}

async fn list_for_project(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(project): ApiPath<ProjectId>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_project(&project)?;
    state.stores.projects.get(&project).await?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<CommandStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_status", e.to_string()))?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 500",
        ));
    }
    let offset = query.offset.unwrap_or(0);
    let window = offset.saturating_add(limit).saturating_add(1);
    if window > 1000 {
        return Err(ApiError::bad_request(
            "invalid_offset",
            "offset + limit must stay below 1000",
        ));
    }
    let records = state
        .stores
        .queue
        .list(&CommandFilter {
            project_id: Some(project),
            status,
            limit: Some(window),
        })
        .await?;
    let more = records.len() > (offset + limit) as usize;
    let commands: Vec<CommandView> = records
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(CommandView::from)
        .collect();
    Ok(Json(serde_json::json!({
        "commands": commands,
        "next_offset": more.then_some(offset + limit),
    })))
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let command = accessible_command(&state, &principal, &id).await?;
    let cancelled = cancel_command(&state.stores, &command.id, &principal.actor())
        .await
        .map_err(|e| match e {
            StoreError::IllegalTransition(t) => ApiError::new(
                StatusCode::CONFLICT,
                "command_not_cancellable",
                format!("command {} is already {}", command.id, t.from),
            ),
            other => other.into(),
        })?;
    Ok((StatusCode::ACCEPTED, Json(cancelled.into())))
}
