//! `/projects/{id}/webhooks`: subscriptions of a project and their delivery history. Any
//! token with access to the project manages its webhooks; the signing secret is returned
//! once, by the create call, and never again.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, accessible_project_id};
use super::doc_parts::ProjectPath;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::paging::next_cursor;
use super::state::AppState;
use crate::domain::webhook::{SECRET_BYTES, normalize_event_types};
use crate::domain::{Delivery, NewWebhook, ProjectId, Webhook, WebhookSecret};
use crate::ports::DeliveryPage;
use crate::services::webhooks::check_target_url;

/// Longest accepted description.
const MAX_DESCRIPTION: usize = 512;

/// Body of `POST /projects/{id}/webhooks`. Its `Debug` hides the secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http` or `https`; internal addresses are refused unless the operator allows them.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Event types to receive; empty or `["*"]` for all.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 512)]
    pub description: Option<String>,
    /// The signing secret to use (`whsec_` + base64 of at least 24 bytes), for a receiver that
    /// already has one; a fresh one is generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("description", &self.description)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Answer to the create call: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// `whsec_…`: verify deliveries with it (see docs/webhooks.md).
    pub secret: String,
    #[serde(flatten)]
    pub webhook: Webhook,
}

/// Query of the deliveries listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Page size, 1 to 100 [default: 20].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only deliveries older than this id (`next_before` of the previous page).
    pub before: Option<i64>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveriesPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub next_before: Option<i64>,
}

/// Answer of `GET /projects/{id}/webhooks`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, remove))
        .routes(routes!(deliveries))
}

/// The `{id}` and `{webhook_id}` of a route on one webhook. Documentation only: handlers
/// read both as text.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct WebhookPath {
    /// Project id
    id: ProjectId,
    /// Webhook id
    webhook_id: String,
}

/// The errors of a route on one webhook of a project the token may access.
#[derive(IntoResponses)]
#[allow(dead_code)]
enum WebhookAccess {
    #[response(status = 403, description = "The token may not access this project")]
    Forbidden,
    #[response(
        status = 404,
        description = "No such webhook in this project (`webhook_not_found`)"
    )]
    NoWebhook,
}

/// Subscribes a URL to the project's events; the signing secret is in this answer only.
#[utoipa::path(post, path = "/projects/{id}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("id" = ProjectId, Path, description = "Project id; it need not exist yet")),
    request_body = CreateWebhook, responses(
    (status = 201, description = "Created", body = CreatedWebhook),
    (status = 400, description = "Invalid URL (`invalid_webhook_url`), event type, description or secret (`invalid_webhook_secret`)"),
    (status = 403, description = "The token may not access this project"),
    (status = 422, description = "The target is an internal address (`webhook_target_forbidden`)"),
))]
async fn create(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let project = accessible_project_id(&principal, id)?;
    let url = body.url.trim().to_owned();
    check_target_url(&url, state.webhooks.allow_private).await?;
    let event_types = normalize_event_types(&body.event_types)?;
    let description = body
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::bad_request(
            "invalid_description",
            format!("a description has at most {MAX_DESCRIPTION} characters"),
        ));
    }
    let secret = match body.secret {
        Some(given) => WebhookSecret::parse(given)?,
        None => {
            let mut bytes = [0u8; SECRET_BYTES];
            rand::fill(&mut bytes);
            WebhookSecret::from_random(&bytes)
        }
    };
    let webhook = state
        .stores
        .webhooks
        .create_webhook(NewWebhook {
            id: format!("wh-{}", uuid::Uuid::now_v7().simple()),
            project_id: project.clone(),
            url,
            event_types,
            description,
            secret: secret.clone(),
        })
        .await?;
    let details = serde_json::json!({
        "webhook_id": webhook.id,
        "url": webhook.url,
        "event_types": webhook.event_types,
    });
    state
        .audit_project(&principal, "webhook.created", &project, details)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            secret: secret.expose().to_owned(),
            webhook,
        }),
    ))
}

/// The project's webhooks, never their secrets.
#[utoipa::path(get, path = "/projects/{id}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(ProjectPath), responses(
    (status = 200, description = "The webhooks", body = WebhookList),
    (status = 400, description = "Malformed id"),
    (status = 403, description = "The token may not access this project"),
))]
async fn list(
    Caller { state, principal }: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookList>, ApiError> {
    let project = accessible_project_id(&principal, id)?;
    let webhooks = state.stores.webhooks.list_webhooks(&project).await?;
    Ok(Json(WebhookList { webhooks }))
}

/// One webhook; `enabled` is false once its endpoint answered 410 Gone.
#[utoipa::path(get, path = "/projects/{id}/webhooks/{webhook_id}", tag = "webhooks",
    security(("bearer" = [])),
    params(WebhookPath), responses(
    (status = 200, description = "The webhook", body = Webhook),
    WebhookAccess,
))]
async fn read(
    Caller { state, principal }: Caller,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
) -> Result<Json<Webhook>, ApiError> {
    let project = accessible_project_id(&principal, id)?;
    let webhook = state
        .stores
        .webhooks
        .get_webhook(&project, &webhook_id)
        .await?;
    Ok(Json(webhook))
}

/// Removes a webhook and its queued deliveries.
#[utoipa::path(delete, path = "/projects/{id}/webhooks/{webhook_id}", tag = "webhooks",
    security(("bearer" = [])),
    params(WebhookPath), responses(
    (status = 204, description = "Removed"),
    WebhookAccess,
))]
async fn remove(
    Caller { state, principal }: Caller,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = accessible_project_id(&principal, id)?;
    state
        .stores
        .webhooks
        .delete_webhook(&project, &webhook_id)
        .await?;
    let details = serde_json::json!({ "webhook_id": webhook_id });
    state
        .audit_project(&principal, "webhook.deleted", &project, details)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/projects/{id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    security(("bearer" = [])),
    params(WebhookPath, DeliveriesQuery), responses(
    (status = 200, description = "A page of deliveries", body = DeliveriesPage),
    (status = 400, description = "Invalid query"),
    WebhookAccess,
))]
async fn deliveries(
    Caller { state, principal }: Caller,
    ApiPath((id, webhook_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveriesPage>, ApiError> {
    let project = accessible_project_id(&principal, id)?;
    let limit = query
        .limit
        .unwrap_or(20)
        .clamp(1, crate::ports::MAX_DELIVERY_PAGE);
    let deliveries = state
        .stores
        .webhooks
        .list_deliveries(
            &project,
            &webhook_id,
            DeliveryPage {
                before: query.before,
                limit,
            },
        )
        .await?;
    let next_before = next_cursor(&deliveries, limit, |d| d.id);
    Ok(Json(DeliveriesPage {
        deliveries,
        next_before,
    }))
}
