//! Identifiers that reach URLs, file paths and Kubernetes labels, so their syntax is checked
//! once, here, and a value of these types is always safe to use in any of those places.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} characters")]
    TooLong { kind: &'static str, max: usize },
    #[error(
        "{kind} {value:?} may only contain lowercase ASCII letters, digits and '-', and must start and end with a letter or digit"
    )]
    Syntax { kind: &'static str, value: String },
}

/// A DNS-label-shaped name: it is used as a directory name, a URL segment and a Kubernetes
/// label value, and this syntax is valid in all three.
fn check_label(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.iter().all(allowed) || !edge(&bytes[0]) || !edge(&bytes[bytes.len() - 1]) {
        return Err(IdError::Syntax {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// [`check_label`] as a regular expression, for the OpenAPI document: clients and fuzzers
/// generate valid ids from it.
const LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";

/// The OpenAPI schema of an id: a string with its syntax.
pub(crate) fn string_schema(
    pattern: &str,
    max_length: Option<usize>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(max_length)
        .into()
}

macro_rules! label_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value.
            pub const MAX_LEN: usize = $max;

            /// Checks the syntax and wraps the value.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_label($kind, &value, Self::MAX_LEN)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                string_schema(LABEL_PATTERN, Some($max))
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }
    };
}

label_id!(
    /// A project's id, as in `/projects/{id}`. 63 characters is the Kubernetes label limit.
    ProjectId,
    "project id",
    63
);

label_id!(
    /// A provider's registered name, as in `/projects/{id}/{provider}`.
    ProviderName,
    "provider name",
    63
);

/// A command's id: `cmd-` and a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommandId(String);

impl CommandId {
    const PREFIX: &'static str = "cmd-";

    /// Wraps a freshly generated UUIDv7 (the caller owns the randomness and the clock).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid.simple()))
    }

    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let valid = value
            .strip_prefix(Self::PREFIX)
            .is_some_and(|rest| uuid::Uuid::try_parse(rest).is_ok());
        if !valid {
            return Err(IdError::Syntax {
                kind: "command id",
                value,
            });
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommandId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(value)
    }
}

impl From<CommandId> for String {
    fn from(value: CommandId) -> String {
        value.0
    }
}

impl utoipa::PartialSchema for CommandId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema("^cmd-[0-9a-f]{32}$", None)
    }
}

impl utoipa::ToSchema for CommandId {}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_follow_dns_label_rules() {
        assert!(ProjectId::parse("my-project").is_ok());
        assert!(ProjectId::parse("a").is_ok());
        assert!(ProjectId::parse("p1-2-3").is_ok());
        assert_eq!(
            ProjectId::parse(""),
            Err(IdError::Empty { kind: "project id" })
        );
        for bad in ["My-Project", "-a", "a-", "a_b", "a/b", "..", "a b", "é"] {
            assert!(
                matches!(ProjectId::parse(bad), Err(IdError::Syntax { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            ProjectId::parse("a".repeat(64)),
            Err(IdError::TooLong { max: 63, .. })
        ));
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: ProjectId = serde_json::from_str("\"demo\"").expect("valid id");
        assert_eq!(ok.as_str(), "demo");
        assert!(serde_json::from_str::<ProjectId>("\"../etc\"").is_err());
    }

    #[test]
    fn command_ids_round_trip() {
        let id = CommandId::from_uuid(uuid::Uuid::now_v7());
        assert!(id.as_str().starts_with("cmd-"));
        assert_eq!(CommandId::parse(id.as_str()), Ok(id.clone()));
        assert!(CommandId::parse("cmd-nope").is_err());
        assert!(CommandId::parse("0190b6e2-0000-7000-8000-000000000000").is_err());
    }
}
