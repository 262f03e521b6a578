//! Approvals and follow-up input over HTTP: list a project's approvals, read one, decide a
//! pending one (exactly once), and send text into a running command. An approval of a
//! project the token cannot access answers 404, as if it did not exist.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::commands::accessible_command;
use super::doc_parts::{CommandAccess, ProjectAccessChecked, ProjectPath};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, StoreContext};
use super::paging::page_limit;
use super::state::AppState;
use crate::domain::{Approval, ApprovalStatus, Principal, ProjectId};
use crate::services::approvals::{Choice, decide, input};

/// Longest message given with a decision, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// Query of `GET /projects/{id}/approvals`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApprovalQuery {
    /// Only approvals in this state.
    pub status: Option<ApprovalStatus>,
    /// At most this many, newest first, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Answer of `GET /projects/{id}/approvals`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionWord {
    Allow,
    Deny,
}

/// Body of `POST /approvals/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub decision: DecisionWord,
    /// Told to the agent (with a denial, as the reason); at most 4096 bytes.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub message: Option<String>,
    /// Also decide this tool with this exact input the same way from now on (adds a rule
    /// to the project's policy).
    #[serde(default)]
    pub remember: bool,
}

/// Body of `POST /commands/{id}/input`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// A follow-up message for the agent; at most 256 KiB.
    #[schema(min_length = 1)]
    pub text: String,
}

/// Answer of `POST /commands/{id}/input`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InputAccepted {
    /// The input's id, as the `input` event on the command's stream carries it.
    pub id: String,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read, post_decision))
        .routes(routes!(send_input))
}

/// The project's approvals, newest first (`?status=pending` for those waiting).
#[utoipa::path(get, path = "/projects/{id}/approvals", tag = "approvals",
    security(("bearer" = [])),
    params(ProjectPath, ApprovalQuery), responses(
    (status = 200, description = "The approvals", body = ApprovalList),
    (status = 400, description = "Malformed id, status or limit"),
    ProjectAccessChecked,
))]
async fn list(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<ProjectId>,
    ApiQuery(query): ApiQuery<ApprovalQuery>,
) -> Result<Json<ApprovalList>, ApiError> {
    principal.require_project(&id)?;
    let limit = page_limit(query.limit, 100, 1000)?;
    state.stores.projects.get(&id).await?;
    let approvals = state
        .stores
        .approvals
        .list(&id, query.status, limit)
        .await?;
    Ok(Json(ApprovalList { approvals }))
}

/// An approval the caller may see; another project's is "not found".
async fn accessible(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Approval, ApiError> {
    let approval = state.stores.approvals.get(id).await?;
    if !principal.can_access(&approval.project_id) {
        return Err(ApiError::not_found("approval", id));
    }
    Ok(approval)
}

/// Reads one approval.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Approval id")), responses(
    (status = 200, description = "The approval", body = Approval),
    (status = 404, description = "No such approval the token may see"),
))]
async fn read(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Approval>, ApiError> {
    Ok(Json(accessible(&state, &principal, &id).await?))
}

/// Decides a pending approval; the waiting agent continues at once. Decided once only.
#[utoipa::path(post, path = "/approvals/{id}", tag = "approvals", security(("bearer" = [])),
    params(("id" = String, Path, description = "Approval id")), request_body = DecideBody,
    responses(
    (status = 200, description = "The decided approval", body = Approval),
    (status = 400, description = "The message is too long"),
    (status = 404, description = "No such approval the token may see"),
    (status = 409, description = "Already decided, expired or cancelled (`approval_decided`)"),
))]
async fn post_decision(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecideBody>,
) -> Result<Json<Approval>, ApiError> {
    if body.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE) {
        return Err(ApiError::bad_request(
            "invalid_message",
            format!("the message is longer than {MAX_MESSAGE} bytes"),
        ));
    }
    accessible(&state, &principal, &id).await?;
    let choice = Choice {
        allow: body.decision == DecisionWord::Allow,
        message: body.message,
        remember: body.remember,
    };
    let approval = decide(&*state.stores.approvals, &id, &principal, choice)
        .await
        .map_err(|e| ApiError::from_store(e, StoreContext::DecidingApproval))?;
    Ok(Json(approval))
}

/// Sends follow-up text into a running command; it appears as an `input` event on the
/// command's stream and reaches the agent as a new message in its session.
#[utoipa::path(post, path = "/commands/{id}/input", tag = "commands", security(("bearer" = [])),
    params(("id" = String, Path, description = "Command id")), request_body = InputBody,
    responses(
    (status = 202, description = "Stored for the running command", body = InputAccepted),
    (status = 400, description = "Empty or too long text"),
    CommandAccess,
    (status = 409, description = "The command is not running (`command_not_running`) or its provider takes no input (`input_not_accepted`)"),
))]
async fn send_input(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<InputBody>,
) -> Result<(StatusCode, Json<InputAccepted>), ApiError> {
    let command = accessible_command(&state, &principal, &id).await?;
    let takes_input = state
        .registry
        .agent(command.provider.as_str())
        .is_some_and(|agent| agent.takes_input());
    let text_bytes = body.text.len();
    let accepted = input::accept(&*state.stores.events, &command, takes_input, body.text).await?;
    state
        .audit(
            &principal,
            "command.input",
            Some(command.project_id.to_string()),
            Some(command.id.to_string()),
            serde_json::json!({ "input_id": accepted.id, "bytes": text_bytes }),
        )
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(InputAccepted { id: accepted.id }),
    ))
}
