//! Commands: submit to a provider (`POST /projects/{id}/{provider}` and the generic
//! `POST /projects/{id}/commands`), read, list and cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::doc_parts::{CommandAccess, CommandPath, ProjectPath};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, StoreContext};
use super::paging::page_limit;
use super::state::AppState;
use crate::domain::{
    AgentRequest, AgentResult, CommandCursor, CommandFilter, CommandId, CommandRecord,
    CommandStatus, NewCommand, Principal, ProjectId, Provenance, ProviderName, json_size,
    request_digest,
};
use crate::ports::{ProviderLookup, UnknownProject};
use crate::services::budgets;

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Body of a submission. Only `prompt` is required.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// What the agent should do (for `shell`: the command line); at most 1 MiB.
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    pub prompt: String,
    /// Continue this agent session.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._][A-Za-z0-9._-]{0,255}$")]
    pub session_id: Option<String>,
    /// Seconds the provider may run; more than the provider's `limits.max_timeout_secs` is
    /// refused (422 `invalid_timeout`). Default: the smaller of 1800 and that ceiling.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._/:@\\[\\]][A-Za-z0-9._/:@\\[\\]-]{0,255}$")]
    pub model: Option<String>,
    /// Relative to the project's workspace, without `..`.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub working_dir: Option<String>,
    /// Provider-specific options.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
    /// Generic route only: the provider; the default provider when omitted.
    #[serde(default)]
    pub provider: Option<String>,
    /// Narrows the project's approval policy for this command: `deny` never asks, `ask`
    /// asks even where the project allows; never wider than the project's mode.
    #[serde(default)]
    pub permissions: Option<crate::domain::PolicyMode>,
}

/// Answer to a submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    pub command_id: CommandId,
    pub stream_url: String,
    pub status: CommandStatus,
}

/// A command as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub id: CommandId,
    pub project_id: ProjectId,
    pub provider: ProviderName,
    pub status: CommandStatus,
    pub prompt: String,
    /// Seconds the command may run: what was asked, or the default fitted to the provider.
    pub timeout_secs: u64,
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
    /// The provider build that ran it (name, version, ABI, component sha256), once started.
    pub provenance: Option<Provenance>,
    /// True in a list answer when a text (prompt, session id, error, final text) was
    /// shortened to a preview of at most 1 KiB or the result's details were left out;
    /// `GET /commands/{id}` has them whole.
    #[serde(default)]
    pub truncated: bool,
}

/// Longest text of a command in a list answer, in bytes: a page of 500 commands stays a few
/// MiB however large their prompts and results are.
pub const LIST_PREVIEW_BYTES: usize = 1024;

/// Cuts `text` to at most `max` bytes at a character boundary; true when it was cut.
fn shorten(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    text.truncate(text.floor_char_boundary(max));
    true
}

impl CommandView {
    /// The view a list shows: texts cut to [`LIST_PREVIEW_BYTES`], details left out when
    /// larger, [`CommandView::truncated`] set when anything was.
    pub fn preview(mut self) -> Self {
        let max = LIST_PREVIEW_BYTES;
        let mut cut = shorten(&mut self.prompt, max);
        for text in [&mut self.session_id, &mut self.error]
            .into_iter()
            .flatten()
        {
            cut |= shorten(text, max);
        }
        if let Some(result) = &mut self.result {
            for text in [
                &mut result.session_id,
                &mut result.error,
                &mut result.final_text,
            ]
            .into_iter()
            .flatten()
            {
                cut |= shorten(text, max);
            }
            if result.details.as_ref().is_some_and(|d| json_size(d) > max) {
                result.details = None;
                cut = true;
            }
        }
        self.truncated = cut;
        self
    }
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
            timeout_secs: record.request.timeout.as_secs(),
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
            provenance: record.provenance,
            truncated: false,
        }
    }
}

/// Query of `GET /projects/{id}/commands`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only commands with this status.
    #[param(value_type = Option<CommandStatus>)]
    pub status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Commands to skip; `offset + limit` must stay below 1000. Past that, page with
    /// `before`.
    #[param(maximum = 998)]
    pub offset: Option<u32>,
    /// Only commands older than this cursor: the `next` of the previous page (opaque).
    /// Reaches every command however many there are; not combined with `offset`.
    pub before: Option<String>,
}

/// Answer of `GET /projects/{id}/commands`: newest first, each command as a preview (see
/// [`CommandView::truncated`]).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandPage {
    pub commands: Vec<CommandView>,
    /// The `offset` of the next page, when there is one within the 1000-command window.
    pub next_offset: Option<u32>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next: Option<String>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_for_project, submit_generic))
        .routes(routes!(submit_to_provider))
        .routes(routes!(read))
        .routes(routes!(cancel))
}

/// The errors both submission routes answer, documented once. Documentation only: the
/// handlers answer [`ApiError`]s.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum SubmitErrors {
    #[response(status = 400, description = "Invalid request")]
    Invalid,
    #[response(
        status = 402,
        description = "The project's monthly budget is used up (`budget_exceeded`); nothing was queued"
    )]
    OverBudget,
    #[response(
        status = 422,
        description = "The timeout exceeds the provider's ceiling (`invalid_timeout`), an unknown field, an option the provider does not declare (`unknown_option`, with `valid`), a model its configured backend does not offer (`unknown_model`, with `valid`), or an Idempotency-Key reused with another request (`idempotency_key_reused`)"
    )]
    Unprocessable,
    #[response(status = 403, description = "The token may not access this project")]
    Forbidden,
    #[response(status = 404, description = "No such provider")]
    NoProvider,
    #[response(
        status = 409,
        description = "The Idempotency-Key was used for another request"
    )]
    KeyInUse,
    #[response(status = 503, description = "No provider is serving")]
    NotServing,
}

/// The `Idempotency-Key` header both submission routes take. Documentation only: the
/// handlers read it from the headers ([`idempotency_key`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct IdempotencyKey {
    /// Repeat a submission without queueing it twice
    #[param(rename = "Idempotency-Key")]
    #[allow(dead_code)]
    key: Option<String>,
}

/// Queues a command for a provider (the project is registered on first use).
#[utoipa::path(post, path = "/projects/{id}/{provider}", tag = "commands",
    security(("bearer" = [])), request_body = SubmitBody,
    params(
        ProjectPath,
        ("provider" = ProviderName, Path, description = "Registered provider name"),
        IdempotencyKey,
    ), responses(
    (status = 202, description = "Queued (or the earlier command of this Idempotency-Key)", body = Submitted),
    SubmitErrors,
))]
async fn submit_to_provider(
    Caller { state, principal }: Caller,
    ApiPath((project, provider)): ApiPath<(ProjectId, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    submit(&state, &principal, project, Some(provider), &headers, body).await
}

/// Queues a command for `provider` in the body, or the default provider.
#[utoipa::path(post, path = "/projects/{id}/commands", tag = "commands",
    security(("bearer" = [])), request_body = SubmitBody,
    params(ProjectPath, IdempotencyKey), responses(
    (status = 202, description = "Queued (or the earlier command of this Idempotency-Key)", body = Submitted),
    SubmitErrors,
))]
async fn submit_generic(
    Caller { state, principal }: Caller,
    ApiPath(project): ApiPath<ProjectId>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let provider = body.provider.take();
    submit(&state, &principal, project, provider, &headers, body).await
}

/// Validates everything before writing anything, then registers the project if needed and
/// queues the command, in one transaction.
async fn submit(
    state: &AppState,
    principal: &Principal,
    project: ProjectId,
    provider: Option<String>,
    headers: &HeaderMap,
    body: SubmitBody,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    principal.require_project(&project)?;
    let asked_timeout = body.timeout_secs.is_some();
    let mut request = AgentRequest {
        prompt: body.prompt,
        session_id: body.session_id,
        timeout: body
            .timeout_secs
            .map_or(AgentRequest::DEFAULT_TIMEOUT, Duration::from_secs),
        model: body.model,
        working_dir: body.working_dir,
        options: body.options.unwrap_or_default(),
        permissions: body.permissions,
    };
    request.validate()?;
    let provider = checked_provider(state, provider, &mut request, asked_timeout)?;
    let idempotency_key = idempotency_key(headers)?;
    refuse_over_budget(state, principal, &project).await?;
    let digest = request_digest(&request);
    let enqueued = state
        .stores
        .queue
        .submit(
            NewCommand {
                project_id: project.clone(),
                provider: provider.clone(),
                request,
                idempotency_key,
                submitted_by: principal.actor(),
            },
            UnknownProject::Register,
        )
        .await?;
    let command = enqueued.command;
    if enqueued.created {
        state.metrics.commands_enqueued.inc();
    } else if command.provider != provider || request_digest(&command.request) != digest {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key was used for command {} with a different request",
                command.id
            ),
        ));
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

/// The provider a submission runs on (the named one, else the default), with the request
/// checked and fitted against its manifest: prompt size, timeout, fixed and declared options,
/// the model.
fn checked_provider(
    state: &AppState,
    provider: Option<String>,
    request: &mut AgentRequest,
    asked_timeout: bool,
) -> Result<ProviderName, ApiError> {
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
    if let Some(loaded) = state.registry.agent(provider.as_str()) {
        let limits = loaded.manifest().limits;
        request.check_prompt_limit(provider.as_str(), limits.max_prompt_bytes)?;
        request.fit_timeout(asked_timeout, provider.as_str(), limits.max_timeout)?;
        let manifest = loaded.manifest();
        let options = manifest.apply_options(&request.options)?;
        manifest.request_options.check_request(
            provider.as_str(),
            &options,
            request.model.as_deref(),
        )?;
    }
    Ok(provider)
}

/// 402 `budget_exceeded` when the project's month-to-date cost has reached its budget
/// (announced as `budget.exceeded` once a month); nothing is queued then.
async fn refuse_over_budget(
    state: &AppState,
    principal: &Principal,
    project: &ProjectId,
) -> Result<(), ApiError> {
    let usage = &*state.stores.usage;
    let Some(exceeded) = budgets::check(usage, project, 0.0, Utc::now()).await? else {
        return Ok(());
    };
    if let Err(error) = budgets::announce(usage, &exceeded, &principal.actor(), None).await {
        tracing::warn!(%project, %error, "announcing the exceeded budget failed");
    }
    Err(ApiError::from(&exceeded))
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

/// Reads a command.
#[utoipa::path(get, path = "/commands/{id}", tag = "commands", security(("bearer" = [])),
    params(CommandPath), responses(
    (status = 200, description = "The command", body = CommandView),
    CommandAccess,
))]
async fn read(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CommandView>, ApiError> {
    Ok(Json(
        accessible_command(&state, &principal, &id).await?.into(),
    ))
}

/// Lists a project's commands, newest first, as previews: long texts cut to 1 KiB and large
/// details left out (`truncated` says so); `GET /commands/{id}` has each whole.
#[utoipa::path(get, path = "/projects/{id}/commands", tag = "commands",
    security(("bearer" = [])),
    params(ProjectPath, ListQuery), responses(
    (status = 200, description = "A page of commands, long texts cut to previews", body = CommandPage),
    (status = 400, description = "Invalid id, status, limit, offset or cursor (`invalid_cursor`)"),
    (status = 403, description = "The token may not access this project"),
    (status = 404, description = "No such project"),
))]
async fn list_for_project(
    Caller { state, principal }: Caller,
    ApiPath(project): ApiPath<ProjectId>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<CommandPage>, ApiError> {
    command_page(&state, &principal, project, query)
        .await
        .map(Json)
}

/// A page of a project's commands as `GET /projects/{id}/commands` answers it, for the
/// dashboard too: the same access check, limits and previews.
pub async fn command_page(
    state: &AppState,
    principal: &Principal,
    project: ProjectId,
    query: ListQuery,
) -> Result<CommandPage, ApiError> {
    principal.require_project(&project)?;
    state.stores.projects.get(&project).await?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<CommandStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_status", e.to_string()))?;
    let limit = page_limit(query.limit, 50, 500)?;
    let offset = query.offset.unwrap_or(0);
    let before = query
        .before
        .as_deref()
        .map(CommandCursor::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?;
    if before.is_some() && offset > 0 {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "page with either `before` or `offset`, not both",
        ));
    }
    let window = offset.saturating_add(limit).saturating_add(1);
    if window > 1000 {
        return Err(ApiError::bad_request(
            "invalid_offset",
            "offset + limit must stay below 1000 (page further with `before`)",
        ));
    }
    let records = state
        .stores
        .queue
        .list_page(&CommandFilter {
            project_id: Some(project),
            status,
            limit: Some(window),
            before,
        })
        .await?;
    let more = records.len() > (offset + limit) as usize;
    let shown: Vec<_> = records
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    let next = more
        .then(|| shown.last().map(|(_, cursor)| cursor.encode()))
        .flatten();
    let next_offset =
        (more && before.is_none() && offset + 2 * limit < 1000).then_some(offset + limit);
    Ok(CommandPage {
        commands: shown
            .into_iter()
            .map(|(record, _)| CommandView::from(record).preview())
            .collect(),
        next_offset,
        next,
    })
}

/// Requests a cancel; a running command stops at its next heartbeat.
#[utoipa::path(post, path = "/commands/{id}/cancel", tag = "commands",
    security(("bearer" = [])),
    params(CommandPath), responses(
    (status = 202, description = "Cancel requested (pending commands are cancelled at once)", body = CommandView),
    CommandAccess,
    (status = 409, description = "The command already finished"),
))]
async fn cancel(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    let command = accessible_command(&state, &principal, &id).await?;
    let cancelled = state
        .stores
        .queue
        .cancel(&command.id, &principal.actor())
        .await
        .map_err(|e| ApiError::from_store(e, StoreContext::CancellingCommand(&command.id)))?;
    Ok((StatusCode::ACCEPTED, Json(cancelled.into())))
}
