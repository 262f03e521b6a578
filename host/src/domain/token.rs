//! API tokens and what they allow. Tokens are stored only as a SHA-256 digest, so a leaked
//! database does not leak working credentials; the rules of who may touch which project live
//! here so the API cannot get them subtly different per route.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ids::ProjectId;

/// Prefix of every token rdev issues, so a leaked one is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "rdev_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// Everything, including providers, credentials, tokens and the audit log.
    Admin,
    /// Projects listed on the token only.
    Member,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

impl std::str::FromStr for TokenRole {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            other => Err(format!("unknown token role {other:?}")),
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// `tok-` and a UUIDv7: what revocation and the audit log name.
    pub id: String,
    /// Who or what holds it, for people reading the audit log.
    pub name: String,
    pub role: TokenRole,
    /// The projects a member token may use; empty for admin tokens.
    pub projects: Vec<ProjectId>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token to store: its digest, never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    pub projects: Vec<ProjectId>,
    /// [`token_digest`] of the secret.
    pub digest: String,
}

/// Hex SHA-256 of a presented token. Tokens carry 256 bits of randomness, so a plain digest
/// (rather than a slow password hash) cannot be brute-forced, and lookups stay one index hit.
pub fn token_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Why a principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("this action needs an admin token")]
    AdminRequired,
    #[error("this token has no access to project {0}")]
    ProjectDenied(String),
}

/// The caller of a request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: TokenRole,
    pub projects: Vec<ProjectId>,
}

impl Principal {
    pub fn from_token(token: &ApiToken) -> Self {
        Self {
            token_id: token.id.clone(),
            name: token.name.clone(),
            role: token.role,
            projects: token.projects.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == TokenRole::Admin
    }

    /// Admins only.
    pub fn require_admin(&self) -> Result<(), AccessError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AccessError::AdminRequired)
        }
    }

    /// Whether the token may read and write `project` (its commands and streams included).
    pub fn can_access(&self, project: &ProjectId) -> bool {
        self.is_admin() || self.projects.contains(project)
    }

    pub fn require_project(&self, project: &ProjectId) -> Result<(), AccessError> {
        if self.can_access(project) {
            Ok(())
        } else {
            Err(AccessError::ProjectDenied(project.to_string()))
        }
    }

    /// How the audit log names this caller: never the secret, always the token id.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.name, self.token_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(projects: &[&str]) -> Principal {
        Principal {
            token_id: "tok-1".into(),
            name: "ci".into(),
            role: TokenRole::Member,
            projects: projects
                .iter()
                .map(|p| ProjectId::parse(*p).expect("valid"))
                .collect(),
        }
    }

    #[test]
    fn members_reach_only_their_projects() {
        let a = ProjectId::parse("a").expect("valid");
        let b = ProjectId::parse("b").expect("valid");
        let principal = member(&["a"]);
        assert_eq!(principal.require_project(&a), Ok(()));
        assert_eq!(
            principal.require_project(&b),
            Err(AccessError::ProjectDenied("b".into()))
        );
        assert_eq!(principal.require_admin(), Err(AccessError::AdminRequired));
    }

    #[test]
    fn admins_reach_everything() {
        let mut principal = member(&[]);
        principal.role = TokenRole::Admin;
        assert!(principal.can_access(&ProjectId::parse("any").expect("valid")));
        assert_eq!(principal.require_admin(), Ok(()));
    }

    #[test]
    fn digests_are_stable_hex_and_hide_the_secret() {
        let digest = token_digest("rdev_secret");
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, token_digest("rdev_secret"));
        assert_ne!(digest, token_digest("rdev_secreT"));
        assert!(!digest.contains("secret"));
        assert_eq!("member".parse::<TokenRole>(), Ok(TokenRole::Member));
    }
}
