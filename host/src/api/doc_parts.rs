//! The OpenAPI pieces many routes share, documented once: the project id in the path, and
//! the error responses of the access checks every project route makes (a route lists its
//! own answers beside one of these sets; [`super::openapi::document`] gives each error the
//! problem+json body).

use utoipa::{IntoParams, IntoResponses};

use crate::domain::{CommandId, ProjectId};

/// The `{id}` of a `/projects/{id}/…` route. Documentation only: handlers read the id with
/// `ApiPath<ProjectId>`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectPath {
    /// Project id
    #[allow(dead_code)]
    id: ProjectId,
}

/// A route on one project that any token with access to the project may call.
#[derive(IntoResponses)]
pub enum ProjectAccess {
    #[response(status = 400, description = "Malformed id")]
    MalformedId,
    #[response(status = 403, description = "The token may not access this project")]
    Forbidden,
    #[response(status = 404, description = "No such project")]
    NoProject,
}

/// A route on one project that only an admin may call.
#[derive(IntoResponses)]
pub enum AdminOnProject {
    #[response(status = 400, description = "Malformed id")]
    MalformedId,
    #[response(status = 403, description = "Not an admin")]
    NotAdmin,
    #[response(status = 404, description = "No such project")]
    NoProject,
}

/// A route on one project, for any token with access to it, whose 400 the route documents
/// itself (it also refuses a bad body or query).
#[derive(IntoResponses)]
pub enum ProjectAccessChecked {
    #[response(status = 403, description = "The token may not access this project")]
    Forbidden,
    #[response(status = 404, description = "No such project")]
    NoProject,
}

/// An admin's route on one project whose 400 the route documents itself.
#[derive(IntoResponses)]
pub enum AdminOnProjectChecked {
    #[response(status = 403, description = "Not an admin")]
    NotAdmin,
    #[response(status = 404, description = "No such project")]
    NoProject,
}

/// A route on the server (not on one project) that only an admin may call: taken with
/// [`super::auth::Admin`].
#[derive(IntoResponses)]
pub enum AdminOnly {
    #[response(status = 403, description = "Not an admin")]
    NotAdmin,
}

/// The `{id}` of a `/commands/{id}/…` route. Documentation only: handlers read it as text
/// and parse it with the access check ([`super::commands::accessible_command`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CommandPath {
    /// Command id
    #[allow(dead_code)]
    id: CommandId,
}

/// A route on one command, for any token with access to the command's project.
#[derive(IntoResponses)]
pub enum CommandAccess {
    #[response(
        status = 403,
        description = "The token may not access the command's project"
    )]
    Forbidden,
    #[response(status = 404, description = "No such command")]
    NoCommand,
}
