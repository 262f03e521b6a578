//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`. It is generated from
//! the handlers' `#[utoipa::path]` attributes and the request and response types: every
//! route is registered through `utoipa_axum::routes!`, which adds the route and its
//! documentation together, so the document cannot list a route the router lacks.

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::Problem;
use super::state::AppState;
use crate::domain::StreamEvent;

/// Media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What is not tied to one route: metadata, tags, security schemes and shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "rdev",
        description = "Runs coding agents as sandboxed WebAssembly providers against project workspaces. Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, StreamEvent)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "health", description = "Probes and metrics; no token needed"),
        (name = "projects", description = "Projects and their workspaces"),
        (name = "commands", description = "Submitting, following and cancelling commands"),
        (name = "providers", description = "Registered provider plugins"),
        (name = "credentials", description = "Write-only secrets for providers"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "tokens", description = "API tokens"),
        (name = "templates", description = "Project templates and CI"),
        (name = "webhooks", description = "Signed event deliveries to subscribed URLs"),
        (name = "approvals", description = "Tool-permission approvals and the policies that decide them"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// `bearer` (the `Authorization` header) for every secured route; `access_token` (the query
/// parameter) is accepted by the SSE route only.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from `rdev serve`'s first start or `POST /tokens`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The bearer token as a query parameter, for EventSource clients",
            ))),
        );
    }
}

/// Every route with its documentation, before the state is attached.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(super::health::routes())
        .merge(super::projects::routes())
        .merge(super::commands::routes())
        .merge(super::changes::routes())
        .merge(super::events::routes())
        .merge(super::providers::routes())
        .merge(super::plugin_install::routes())
        .merge(super::credentials::routes())
        .merge(super::audit::routes())
        .merge(super::templates::routes())
        .merge(super::tokens::routes())
        .merge(super::webhooks::routes())
        .merge(super::network::routes())
        .merge(super::mcp::routes())
        .merge(super::usage::routes())
        .merge(super::approvals::routes())
        .merge(super::policy::routes())
        .routes(routes!(openapi_json))
}

/// The finished document: every route of [`api`], with unique operation ids, problem+json
/// bodies on every error response and the 401 and body errors that the extractors add to
/// every route that has them.
pub fn document() -> Document {
    let mut doc = api().into_openapi();
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            // Handlers are named per module (`list`, `read`); the tag makes the id unique.
            if let (Some(tag), Some(id)) = (
                operation.tags.as_ref().and_then(|t| t.first()),
                operation.operation_id.as_mut(),
            ) {
                *id = format!("{tag}_{id}");
            }
            let responses = &mut operation.responses.responses;
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                responses
                    .entry("401".into())
                    .or_insert_with(|| problem("Missing, unknown or revoked token"));
            }
            if operation.request_body.is_some() {
                for (status, description) in [
                    ("400", "The body is not valid JSON"),
                    ("422", "The JSON does not have the documented shape"),
                    ("413", "The body is larger than 2 MiB"),
                    ("415", "The body is not application/json"),
                ] {
                    responses
                        .entry(status.into())
                        .or_insert_with(|| problem(description));
                }
            }
            for (status, response) in responses.iter_mut() {
                if status.starts_with(['4', '5']) {
                    attach_problem_body(response);
                }
            }
        }
    }
    doc
}

/// An error response with a problem+json body.
fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, problem_content())
            .build(),
    )
}

fn problem_content() -> Content {
    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
        Problem::name(),
    ))))
}

/// Error responses documented by status and description only get the problem+json body
/// every [`super::ApiError`] has.
fn attach_problem_body(response: &mut RefOr<utoipa::openapi::Response>) {
    if let RefOr::T(response) = response
        && response.content.is_empty()
    {
        response
            .content
            .insert(PROBLEM_JSON.to_owned(), problem_content());
    }
}

/// The document as served, rendered once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"rendering the document: {e}\"}}"))
    })
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}
