//! What a user asks a provider to do, and the rules a request must meet before it is queued.

use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request for one provider execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequest {
    pub prompt: String,
    /// Continue this provider session instead of starting a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Relative to the project's workspace root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Provider-specific options, handed to the provider untouched.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Narrows the project's approval policy for this command (never widens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<super::approval::PolicyMode>,
}

/// Why a request was refused. Each variant maps to a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("a prompt is required")]
    PromptRequired,
    #[error("the prompt is {len} bytes; the limit is {max}")]
    PromptTooLong { len: usize, max: usize },
    #[error("the prompt contains a NUL byte, which no program argument can carry")]
    PromptHasNul,
    #[error(
        "the prompt is {len} bytes; provider {provider} takes at most {max} (its manifest's \
         limits.max_prompt_bytes)"
    )]
    PromptOverProviderLimit {
        len: usize,
        provider: String,
        max: usize,
    },
    #[error("timeout must be between 1 and {max_secs} seconds, got {secs}")]
    InvalidTimeout { secs: u64, max_secs: u64 },
    #[error(
        "timeout of {secs} s exceeds the ceiling of provider {provider} ({ceiling_secs} s, its \
         manifest's limits.max_timeout_secs); ask for at most {ceiling_secs} s"
    )]
    TimeoutOverCeiling {
        secs: u64,
        provider: String,
        ceiling_secs: u64,
    },
    #[error("session id {0:?} is not a valid session id")]
    InvalidSessionId(String),
    #[error("model {0:?} is not a valid model name")]
    InvalidModel(String),
    #[error("working directory {path:?} is invalid: {reason}")]
    InvalidWorkingDir { path: String, reason: &'static str },
    #[error("provider options are {len} bytes of JSON; the limit is {max}")]
    OptionsTooLarge { len: usize, max: usize },
}

impl RequestError {
    /// The stable machine-readable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PromptRequired => "prompt_required",
            Self::PromptTooLong { .. } | Self::PromptOverProviderLimit { .. } => "prompt_too_long",
            Self::PromptHasNul => "invalid_prompt",
            Self::InvalidTimeout { .. } | Self::TimeoutOverCeiling { .. } => "invalid_timeout",
            Self::InvalidSessionId(_) => "invalid_session_id",
            Self::InvalidModel(_) => "invalid_model",
            Self::InvalidWorkingDir { .. } => "invalid_working_dir",
            Self::OptionsTooLarge { .. } => "options_too_large",
        }
    }
}

impl AgentRequest {
    /// Applied when a request names no timeout: long enough for a substantial agent turn.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    /// A day: agent runs longer than that are stuck, and a lease-holding worker should not
    /// be tied up indefinitely by a typo.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
    /// 1 MiB: far beyond any real prompt, small enough that a queue row stays cheap.
    pub const MAX_PROMPT_BYTES: usize = 1024 * 1024;
    /// 64 KiB of JSON for provider options.
    pub const MAX_OPTIONS_BYTES: usize = 64 * 1024;
    const MAX_TOKEN_LEN: usize = 256;

    /// A request with the default timeout and nothing optional set.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            session_id: None,
            timeout: Self::DEFAULT_TIMEOUT,
            model: None,
            working_dir: None,
            options: serde_json::Map::new(),
            permissions: None,
        }
    }

    /// Checks every rule; the first broken one is reported.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.prompt.trim().is_empty() {
            return Err(RequestError::PromptRequired);
        }
        if self.prompt.len() > Self::MAX_PROMPT_BYTES {
            return Err(RequestError::PromptTooLong {
                len: self.prompt.len(),
                max: Self::MAX_PROMPT_BYTES,
            });
        }
        if self.prompt.contains('\0') {
            return Err(RequestError::PromptHasNul);
        }
        if self.timeout.is_zero() || self.timeout > Self::MAX_TIMEOUT {
            return Err(RequestError::InvalidTimeout {
                secs: self.timeout.as_secs(),
                max_secs: Self::MAX_TIMEOUT.as_secs(),
            });
        }
        if let Some(session) = &self.session_id
            && !is_token(session, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(RequestError::InvalidSessionId(session.clone()));
        }
        if let Some(model) = &self.model
            && !is_token(model, |c| {
                c.is_ascii_alphanumeric() || "-_./:@[]".contains(c)
            })
        {
            return Err(RequestError::InvalidModel(model.clone()));
        }
        if let Some(dir) = &self.working_dir {
            check_relative_dir(dir)?;
        }
        let options_len = serde_json::Value::Object(self.options.clone())
            .to_string()
            .len();
        if options_len > Self::MAX_OPTIONS_BYTES {
            return Err(RequestError::OptionsTooLarge {
                len: options_len,
                max: Self::MAX_OPTIONS_BYTES,
            });
        }
        Ok(())
    }

    /// Refuses a prompt longer than the chosen provider takes (`max`, its manifest's
    /// `limits.max_prompt_bytes`) before anything is queued.
    pub fn check_prompt_limit(&self, provider: &str, max: usize) -> Result<(), RequestError> {
        if self.prompt.len() > max {
            return Err(RequestError::PromptOverProviderLimit {
                len: self.prompt.len(),
                provider: provider.to_owned(),
                max,
            });
        }
        Ok(())
    }

    /// Fits the timeout to a provider that accepts at most `ceiling`, before anything is
    /// queued: an unasked timeout (`asked` false, the default was applied) shrinks to the
    /// ceiling; an asked one above it is refused, since a request accepted now would only
    /// fail when the provider starts.
    pub fn fit_timeout(
        &mut self,
        asked: bool,
        provider: &str,
        ceiling: Duration,
    ) -> Result<(), RequestError> {
        if self.timeout <= ceiling {
            return Ok(());
        }
        if asked {
            return Err(RequestError::TimeoutOverCeiling {
                secs: self.timeout.as_secs(),
                provider: provider.to_owned(),
                ceiling_secs: ceiling.as_secs(),
            });
        }
        self.timeout = ceiling;
        Ok(())
    }
}

/// Session ids and model names end up as process arguments and URL segments: a short run
/// of safe characters keeps them from being read as flags or paths.
fn is_token(value: &str, allowed: impl Fn(char) -> bool) -> bool {
    !value.is_empty()
        && value.len() <= AgentRequest::MAX_TOKEN_LEN
        && !value.starts_with('-')
        && value.chars().all(allowed)
}

fn check_relative_dir(dir: &str) -> Result<(), RequestError> {
    let invalid = |reason| RequestError::InvalidWorkingDir {
        path: dir.to_owned(),
        reason,
    };
    if dir.is_empty() {
        return Err(invalid("it is empty"));
    }
    if dir.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    for component in Path::new(dir).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(invalid("it leaves the workspace with '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("it must be relative to the workspace"));
            }
        }
    }
    Ok(())
}

/// Timeouts travel as whole seconds, the unit of the HTTP API.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timeout_yields_to_the_ceiling_and_an_asked_one_over_it_is_refused() {
        let ceiling = Duration::from_secs(600);
        let mut unasked = AgentRequest::new("x");
        unasked.fit_timeout(false, "echo", ceiling).unwrap();
        assert_eq!(unasked.timeout, ceiling);

        let mut within = AgentRequest::new("x");
        within.timeout = Duration::from_secs(600);
        within.fit_timeout(true, "echo", ceiling).unwrap();
        assert_eq!(within.timeout, ceiling);

        let mut over = AgentRequest::new("x");
        over.timeout = Duration::from_secs(601);
        let refused = over.fit_timeout(true, "echo", ceiling).unwrap_err();
        assert_eq!(refused.code(), "invalid_timeout");
        assert!(refused.to_string().contains("600 s"), "{refused}");
        assert_eq!(
            over.timeout,
            Duration::from_secs(601),
            "refusal changes nothing"
        );

        let mut short = AgentRequest::new("x");
        short
            .fit_timeout(false, "echo", AgentRequest::MAX_TIMEOUT)
            .unwrap();
        assert_eq!(short.timeout, AgentRequest::DEFAULT_TIMEOUT);
    }

    fn valid() -> AgentRequest {
        AgentRequest::new("write a hello world")
    }

    #[test]
    fn a_plain_prompt_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn empty_or_blank_prompt_is_refused() {
        for prompt in ["", "   ", "\n\t"] {
            let request = AgentRequest::new(prompt);
            assert_eq!(request.validate(), Err(RequestError::PromptRequired));
            assert_eq!(RequestError::PromptRequired.code(), "prompt_required");
        }
    }

    #[test]
    fn oversized_prompt_is_refused() {
        let request = AgentRequest::new("x".repeat(AgentRequest::MAX_PROMPT_BYTES + 1));
        assert!(matches!(
            request.validate(),
            Err(RequestError::PromptTooLong { .. })
        ));
    }

    #[test]
    fn timeout_must_be_positive_and_at_most_the_maximum() {
        let mut request = valid();
        request.timeout = Duration::ZERO;
        let zero = request.validate().expect_err("zero timeout accepted");
        assert_eq!(zero.code(), "invalid_timeout");

        request.timeout = AgentRequest::MAX_TIMEOUT + Duration::from_secs(1);
        assert!(matches!(
            request.validate(),
            Err(RequestError::InvalidTimeout { .. })
        ));

        request.timeout = AgentRequest::MAX_TIMEOUT;
        assert_eq!(request.validate(), Ok(()));
        request.timeout = Duration::from_secs(1);
        assert_eq!(request.validate(), Ok(()));
    }

    #[test]
    fn session_ids_cannot_smuggle_flags_or_paths() {
        let mut request = valid();
        request.session_id = Some("8d0c7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f".into());
        assert_eq!(request.validate(), Ok(()));
        for bad in ["", "--dangerously-skip-permissions", "../x", "a b", "a/b"] {
            request.session_id = Some(bad.into());
            assert_eq!(
                request.validate(),
                Err(RequestError::InvalidSessionId(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn model_names_allow_provider_prefixes() {
        let mut request = valid();
        for good in [
            "claude-sonnet-4-5",
            "anthropic/claude-3.5",
            "gpt-4o@2024-08-06",
        ] {
            request.model = Some(good.into());
            assert_eq!(request.validate(), Ok(()), "{good}");
        }
        request.model = Some("--model".into());
        assert!(matches!(
            request.validate(),
            Err(RequestError::InvalidModel(_))
        ));
    }

    #[test]
    fn working_dir_stays_inside_the_workspace() {
        let mut request = valid();
        for good in ["src", "./src/lib", "a/b/c"] {
            request.working_dir = Some(good.into());
            assert_eq!(request.validate(), Ok(()), "{good}");
        }
        for bad in ["", "/etc", "../x", "src/../../x", "a\0b"] {
            request.working_dir = Some(bad.into());
            assert!(
                matches!(
                    request.validate(),
                    Err(RequestError::InvalidWorkingDir { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn options_are_size_limited() {
        let mut request = valid();
        request.options.insert(
            "blob".into(),
            serde_json::Value::String("x".repeat(AgentRequest::MAX_OPTIONS_BYTES)),
        );
        assert!(matches!(
            request.validate(),
            Err(RequestError::OptionsTooLarge { .. })
        ));
    }

    #[test]
    fn timeout_serializes_as_seconds() {
        let mut request = valid();
        request.timeout = Duration::from_secs(90);
        let json = serde_json::to_value(&request).expect("serializable");
        assert_eq!(json["timeout"], 90);
        let back: AgentRequest = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, request);
    }
}
