//! The one error type of the HTTP API. Every failure leaves as RFC 9457 problem+json that also
//! carries `{"error": {"code", "message"}}`, so clients match on a stable `code` whatever the
//! route, and internal details (database messages) are logged, never returned.
//!
//! This is the one place where domain, port and service errors become HTTP statuses and
//! codes: handlers convert with `?` (or [`ApiError::from_store`] where the route gives a
//! store refusal its meaning) and never pick a status for one of those errors themselves.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde::{Deserialize, Serialize};

use crate::domain::approval::InvalidPolicy;
use crate::domain::{
    AccessError, CommandId, IdError, RequestError, SealError, UsageError, WebhookError,
};
use crate::ports::{KeyKeeperError, LookupError, ProvisionError, SeedError, StoreError};
use crate::runtime::manifest::{FixedOption, RequestRefused};
use crate::services::approvals::input::InputError;
use crate::services::master_key::RotationError;
use crate::services::project_setup::SetupError;
use crate::services::templates::TemplateError;

/// An HTTP error: a status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    /// The accepted values, when the error is a choice outside them (an unknown option or
    /// model), so a client can offer them.
    pub valid: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            valid: None,
        }
    }

    /// 400 with a code naming the broken rule.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 with a code naming the rule: well-formed input rdev does not accept.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 401: no credentials or unknown credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `<kind>_not_found`.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Cow::Owned(format!("{}_not_found", kind.replace(' ', "_"))),
            message: format!("{kind} {id} does not exist"),
            valid: None,
        }
    }

    /// 500 for what the client cannot fix; the cause is logged here, not returned.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error while {context}"),
        )
    }
}

/// The body of every error response: RFC 9457 problem details, plus `code` and the
/// `error` object older clients match on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:rdev:error:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Stable machine-readable code, e.g. `project_not_found`.
    pub code: String,
    pub error: ProblemError,
    /// The accepted values, for an error about a choice outside them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Vec<String>>,
}

/// `code` and `detail` again, in the shape the first clients used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProblemError {
    pub code: String,
    pub message: String,
}

impl From<&ApiError> for Problem {
    fn from(error: &ApiError) -> Self {
        Self {
            kind: format!("urn:rdev:error:{}", error.code),
            title: error
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_owned(),
            status: error.status.as_u16(),
            detail: error.message.clone(),
            code: error.code.to_string(),
            error: ProblemError {
                code: error.code.to_string(),
                message: error.message.clone(),
            },
            valid: error.valid.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Problem::from(&self))).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rdev\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { kind, id } => Self::not_found(kind, id),
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::IllegalTransition(e) => {
                Self::new(StatusCode::CONFLICT, "illegal_transition", e.to_string())
            }
            StoreError::Invalid(message) => Self::bad_request("invalid_input", message),
            StoreError::Seal(SealError::InvalidName(name)) => Self::bad_request(
                "invalid_credential_name",
                SealError::InvalidName(name).to_string(),
            ),
            other => Self::internal("accessing the store", other),
        }
    }
}

/// What the route was doing when the store refused, for the refusals whose meaning depends
/// on it: a conflict on delete is a busy project, an illegal transition on cancel is a
/// command that already ended, a missing command on the event stream is a missing stream.
#[derive(Debug, Clone, Copy)]
pub enum StoreContext<'a> {
    DeletingProject,
    CancellingCommand(&'a CommandId),
    ReadingStream(&'a str),
    /// Deciding an approval: a conflict is an approval that is no longer pending.
    DecidingApproval,
}

impl ApiError {
    /// A store error as `context` names it; anything the context does not refine maps as
    /// every other store error does.
    pub fn from_store(error: StoreError, context: StoreContext<'_>) -> Self {
        match (context, error) {
            (StoreContext::DeletingProject, StoreError::Conflict(message)) => {
                Self::new(StatusCode::CONFLICT, "project_busy", message)
            }
            (StoreContext::CancellingCommand(id), StoreError::IllegalTransition(t)) => Self::new(
                StatusCode::CONFLICT,
                "command_not_cancellable",
                format!("command {id} is already {}", t.from),
            ),
            (StoreContext::ReadingStream(id), StoreError::NotFound { .. }) => {
                Self::not_found("stream", id)
            }
            (StoreContext::DecidingApproval, StoreError::Conflict(message)) => {
                Self::new(StatusCode::CONFLICT, "approval_decided", message)
            }
            (_, other) => other.into(),
        }
    }
}

impl From<SetupError> for ApiError {
    fn from(error: SetupError) -> Self {
        use StatusCode as S;
        let (status, code) = match &error {
            SetupError::InvalidId(_) => (S::BAD_REQUEST, "invalid_id"),
            SetupError::Template(TemplateError::NotFound { .. }) => {
                (S::NOT_FOUND, "invalid_template")
            }
            SetupError::Template(TemplateError::Manifest { .. } | TemplateError::Read { .. }) => {
                (S::INTERNAL_SERVER_ERROR, "invalid_template")
            }
            SetupError::Template(_) => (S::BAD_REQUEST, "invalid_template"),
            SetupError::Seed(SeedError::Exists(_)) => (S::CONFLICT, "workspace"),
            SetupError::Seed(SeedError::RepoRefused { .. }) => (S::BAD_REQUEST, "workspace"),
            SetupError::Seed(SeedError::Failed { .. }) => (S::INTERNAL_SERVER_ERROR, "workspace"),
            SetupError::Provision(ProvisionError::Exists(_)) => {
                (S::CONFLICT, "workspace_unavailable")
            }
            SetupError::Provision(_) => (S::SERVICE_UNAVAILABLE, "workspace_unavailable"),
            SetupError::Store(StoreError::NotFound { .. }) => (S::NOT_FOUND, "store"),
            SetupError::Store(StoreError::Conflict(_)) => (S::CONFLICT, "store"),
            SetupError::Store(StoreError::Invalid(_)) => (S::BAD_REQUEST, "store"),
            SetupError::Store(_) => (S::INTERNAL_SERVER_ERROR, "store"),
            SetupError::CiNotConfigured => (S::CONFLICT, "ci_not_configured"),
            SetupError::NoCiRepo(_) => (S::CONFLICT, "no_ci_repo"),
            SetupError::MissingCredential(_) => (S::CONFLICT, "missing_credential"),
            SetupError::Ci { .. } => (S::BAD_GATEWAY, "ci_failed"),
            SetupError::ProjectExists(_) => (S::CONFLICT, "project_exists"),
        };
        // A CI or cluster outage is the caller's to see; any other 5xx is ours, logged.
        if status.is_server_error() && !matches!(status, S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE) {
            return Self::internal("setting up the project", error);
        }
        Self::new(status, code, error.to_string())
    }
}

impl From<UsageError> for ApiError {
    /// A usage range or budget limit the request got wrong: well-formed JSON or query,
    /// but not a value rdev accepts.
    fn from(error: UsageError) -> Self {
        Self::unprocessable(error.code(), error.to_string())
    }
}

impl From<&crate::services::budgets::Exceeded> for ApiError {
    /// 402 `budget_exceeded`: the project's month-to-date cost has reached its budget.
    fn from(exceeded: &crate::services::budgets::Exceeded) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "budget_exceeded",
            exceeded.reason(),
        )
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        // Well-formed, but more than the chosen provider accepts.
        let status = match error {
            RequestError::TimeoutOverCeiling { .. }
            | RequestError::PromptOverProviderLimit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<RotationError> for ApiError {
    fn from(error: RotationError) -> Self {
        match error {
            RotationError::Keeper(KeyKeeperError::FromEnvironment) => Self::new(
                StatusCode::CONFLICT,
                "new_key_required",
                KeyKeeperError::FromEnvironment.to_string(),
            ),
            RotationError::KeyMismatch(reason) => {
                Self::new(StatusCode::CONFLICT, "master_key_mismatch", reason)
            }
            RotationError::Store(store) => store.into(),
            // The operator must know the rotation committed and what the next start does.
            error @ RotationError::Install { .. } => {
                tracing::error!(%error, "master key rotation");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "key_file_not_installed",
                    error.to_string(),
                )
            }
            error @ RotationError::Keeper(KeyKeeperError::Io { .. }) => {
                Self::internal("staging the new master key", error)
            }
        }
    }
}

impl From<FixedOption> for ApiError {
    fn from(error: FixedOption) -> Self {
        Self::unprocessable("option_fixed", error.to_string())
    }
}

impl From<RequestRefused> for ApiError {
    fn from(error: RequestRefused) -> Self {
        let code = match error {
            RequestRefused::UnknownOption { .. } => "unknown_option",
            RequestRefused::InvalidModels { .. } => "invalid_option",
            RequestRefused::UnknownModel { .. } => "unknown_model",
        };
        let mut api = Self::unprocessable(code, error.to_string());
        api.valid = error.valid().map(<[String]>::to_vec);
        api
    }
}

impl From<InvalidPolicy> for ApiError {
    fn from(error: InvalidPolicy) -> Self {
        Self::bad_request("invalid_policy", error.to_string())
    }
}

impl From<InputError> for ApiError {
    fn from(error: InputError) -> Self {
        let code = match error {
            InputError::Store(store) => return store.into(),
            InputError::NotRunning(..) | InputError::Ended(_) => "command_not_running",
            InputError::NotAccepted(_) => "input_not_accepted",
            InputError::Empty | InputError::TooLong => {
                return Self::bad_request("invalid_input_text", error.to_string());
            }
        };
        Self::new(StatusCode::CONFLICT, code, error.to_string())
    }
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        let status = match error {
            WebhookError::TargetForbidden { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", error.to_string())
    }
}

impl From<LookupError> for ApiError {
    fn from(error: LookupError) -> Self {
        match error {
            LookupError::Unknown(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_provider", error.to_string())
            }
            LookupError::NoProviders => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_providers",
                error.to_string(),
            ),
            LookupError::NotServing { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_not_serving",
                error.to_string(),
            ),
        }
    }
}

impl From<IdError> for ApiError {
    fn from(error: IdError) -> Self {
        Self::bad_request("invalid_id", error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = rejection.body_text();
        let code = match rejection {
            // Refused like unknown manifest keys: a misspelt field would otherwise be ignored.
            JsonRejection::JsonDataError(_) if message.contains("unknown field `") => {
                "unknown_field"
            }
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "invalid_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            _ => "invalid_body",
        };
        Self {
            status,
            code: Cow::Borrowed(code),
            message,
            valid: None,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses_without_leaking_backend_details() {
        let missing: ApiError = StoreError::NotFound {
            kind: "project",
            id: "x".into(),
        }
        .into();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.code, "project_not_found");
        let backend: ApiError = StoreError::backend("reading", "password=hunter2").into();
        assert_eq!(backend.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!backend.message.contains("hunter2"));
    }

    #[test]
    fn validation_errors_keep_their_codes() {
        let error: ApiError = RequestError::PromptRequired.into();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "prompt_required");
    }
}
