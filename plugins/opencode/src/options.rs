//! The provider's options, the model name and the prompt body. Pure, so it is unit tested
//! natively.

use serde::Deserialize;
use serde_json::{Value, json};

/// The port the plugin addresses the host-run server on: the manifest's `[service] port`.
/// The host maps it to the project's own server, on a port the host picked.
pub const DEFAULT_PORT: u16 = 4096;
/// Pause between health checks while a server settles: short enough that a recovered
/// server is noticed at once, long enough not to busy-wait.
pub const HEALTH_POLL_MS: u32 = 200;
/// Time an aborted session gets to report `session.idle` before the provider stops
/// waiting for it and returns what it has.
pub const DEFAULT_ABORT_GRACE_MS: u32 = 5_000;
/// Retries of a failing model call before the turn fails: OpenCode's own retries back off
/// for minutes, so a broken backend would hold a command that long.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Options a request may set (`options_json`); unknown keys are refused so that a typo does
/// not silently run with defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The port of a server the operator runs in the workspace instead of the host's (it
    /// must be granted in the manifest; its password is the `OPENCODE_SERVER_PASSWORD`
    /// credential).
    pub port: Option<u16>,
    /// OpenCode agent to run the prompt with (`build`, `plan` …).
    pub agent: Option<String>,
    /// See [`DEFAULT_ABORT_GRACE_MS`].
    pub abort_grace_ms: Option<u32>,
    /// See [`DEFAULT_MAX_RETRIES`].
    pub max_retries: Option<u32>,
    /// Base URL of an OpenAI-compatible chat-completions API: the models' provider is
    /// configured as an `@ai-sdk/openai-compatible` provider at this URL.
    pub base_url: Option<String>,
    /// Name of the credential in rdev's store holding the backend's API key; the host hands
    /// it to the server's environment, never to this guest.
    pub api_key_credential: Option<String>,
    /// The models the backend offers, in `provider/model` form; the first is the default and
    /// a request's model must be one of them (the host checks at submit).
    pub models: Option<Vec<String>>,
    /// The project's MCP servers, set by the host (the manifest grants `mcp_servers`): the
    /// `mcp` section of the server's configuration.
    pub mcp_servers: Vec<rdev_sdk::mcp::McpServer>,
}

impl Options {
    /// Parses the request's options (`{}` for none).
    pub fn parse(json: &str) -> Result<Self, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let options: Self =
            serde_json::from_str(json).map_err(|e| format!("invalid opencode options: {e}"))?;
        if options.port == Some(0) || options.port == Some(DEFAULT_PORT) {
            return Err(format!(
                "invalid opencode option port {}: 0 is no port, and {DEFAULT_PORT} is the \
                 host-run server's (leave port out to use it)",
                options.port.unwrap_or_default()
            ));
        }
        if let Some(agent) = &options.agent
            && (agent.is_empty() || agent.contains(['/', '?', '#']))
        {
            return Err(format!("invalid opencode agent {agent:?}"));
        }
        Ok(options)
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// A model in OpenCode's `provider/model` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub provider_id: String,
    pub model_id: String,
}

impl Model {
    /// Splits at the first `/` (model ids may contain more, e.g. `openrouter/meta/llama`).
    pub fn parse(model: &str) -> Result<Self, String> {
        match model.split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Ok(Self {
                provider_id: provider.to_owned(),
                model_id: model.to_owned(),
            }),
            _ => Err(format!(
                "model {model:?} is not in OpenCode's provider/model form"
            )),
        }
    }
}

/// The body of `POST /session/{id}/prompt_async`.
pub fn prompt_body(prompt: &str, model: Option<&Model>, agent: Option<&str>) -> Value {
    let mut body = json!({"parts": [{"type": "text", "text": prompt}]});
    if let Some(model) = model {
        body["model"] = json!({"providerID": model.provider_id, "modelID": model.model_id});
    }
    if let Some(agent) = agent {
        body["agent"] = json!(agent);
    }
    body
}

/// A session id safe to put into a path segment (OpenCode's ids are `ses_` + base62).
pub fn check_session_id(id: &str) -> Result<(), String> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!("invalid opencode session id {id:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse_typos() {
        assert_eq!(Options::parse("").unwrap(), Options::default());
        assert_eq!(Options::parse("{}").unwrap().port(), DEFAULT_PORT);
        assert_eq!(Options::parse(r#"{"port":5000}"#).unwrap().port(), 5000);
        assert!(Options::parse(r#"{"port":4096}"#).is_err());
        assert!(Options::parse(r#"{"disable_models_fetch":true}"#).is_err());
        assert!(Options::parse(r#"{"prot":5000}"#).is_err());
        assert!(Options::parse(r#"{"port":0}"#).is_err());
        assert!(Options::parse(r#"{"agent":"../x"}"#).is_err());
        assert!(Options::parse("\"x\"").is_err());
    }

    #[test]
    fn model_splits_at_the_first_slash() {
        let m = Model::parse("openrouter/meta/llama").unwrap();
        assert_eq!(m.provider_id, "openrouter");
        assert_eq!(m.model_id, "meta/llama");
        assert!(Model::parse("gpt-4").is_err());
        assert!(Model::parse("/x").is_err());
        assert!(Model::parse("x/").is_err());
    }

    #[test]
    fn prompt_body_carries_model_and_agent() {
        let m = Model::parse("fake/fake-model").unwrap();
        let body = prompt_body("hi", Some(&m), Some("plan"));
        assert_eq!(
            body,
            json!({"parts":[{"type":"text","text":"hi"}],
                   "model":{"providerID":"fake","modelID":"fake-model"},"agent":"plan"})
        );
        assert_eq!(
            prompt_body("hi", None, None),
            json!({"parts":[{"type":"text","text":"hi"}]})
        );
    }

    #[test]
    fn session_ids_are_path_safe() {
        assert!(check_session_id("ses_df0f1c3e9ffeQ2gafQsTwGDLmW").is_ok());
        assert!(check_session_id("../etc").is_err());
        assert!(check_session_id("a/b").is_err());
        assert!(check_session_id("").is_err());
    }
}
