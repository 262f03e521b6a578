//! The model backend a request configures through rdev's options (`base_url`,
//! `api_key_credential`, `models`), turned into OpenCode's configuration for the host-run
//! server: `OPENCODE_CONFIG_CONTENT` in its environment, with the API key referenced as
//! `{env:…}` and put there by the host from the credential store. Nothing is written into
//! the workspace. Pure, so it is unit tested natively.

use serde_json::{Map, Value, json};

use crate::options::{Model, Options};

/// The variable OpenCode reads inline configuration from.
pub const CONFIG_ENV: &str = "OPENCODE_CONFIG_CONTENT";
/// The variable the host puts the API key into; the configuration refers to it.
pub const API_KEY_ENV: &str = "RDEV_OPENCODE_API_KEY";

/// What the server is to run with, and the model the prompt names.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// Plain environment of the server (the configuration); empty for OpenCode's defaults.
    pub env: Vec<(String, String)>,
    /// The credential to export as [`API_KEY_ENV`], by name.
    pub api_key_credential: Option<String>,
    /// `(variable, credential)` the project's MCP servers refer to as `{env:variable}`.
    pub mcp_credentials: Vec<(String, String)>,
    /// The request's model, else the first of `models`.
    pub model: Option<Model>,
}

/// The backend of `options` for a request naming `model`. With none of the backend options
/// the server runs with OpenCode's own configuration (and the model as given).
pub fn backend(options: &Options, model: Option<Model>) -> Result<Backend, String> {
    let models = options
        .models
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|m| Model::parse(m).and_then(|m| plain(&m.model_id, "model").map(|()| m)))
        .collect::<Result<Vec<Model>, String>>()?;
    if options.models.is_some() && models.is_empty() {
        return Err("option models is empty".to_owned());
    }
    if let Some(m) = &model
        && !models.is_empty()
        && !models.contains(m)
    {
        return Err(format!(
            "model {}/{} is not among the option models",
            m.provider_id, m.model_id
        ));
    }
    let model = model.or_else(|| models.first().cloned());
    let configures = options.base_url.is_some() || options.api_key_credential.is_some();
    let mcp = rdev_sdk::mcp::opencode(&options.mcp_servers);
    let with_mcp = |mut config: Value| {
        if !options.mcp_servers.is_empty() {
            config["mcp"] = mcp.config.clone();
        }
        vec![(CONFIG_ENV.to_owned(), config.to_string())]
    };
    if !configures {
        return Ok(Backend {
            env: if options.mcp_servers.is_empty() {
                Vec::new()
            } else {
                with_mcp(json!({}))
            },
            api_key_credential: None,
            mcp_credentials: mcp.secret_env.clone(),
            model,
        });
    }
    let Some(chosen) = &model else {
        return Err(
            "base_url and api_key_credential configure the provider of the model: name a model \
             (provider/model) or the option models"
                .to_owned(),
        );
    };
    let provider = chosen.provider_id.clone();
    plain(&provider, "provider")?;
    plain(&chosen.model_id, "model")?;
    let mut offered = if models.is_empty() {
        vec![chosen.clone()]
    } else {
        models
    };
    offered.retain(|m| m.provider_id == provider);
    let config = config(options, &provider, &offered)?;
    Ok(Backend {
        env: with_mcp(config),
        api_key_credential: options.api_key_credential.clone(),
        mcp_credentials: mcp.secret_env.clone(),
        model,
    })
}

/// OpenCode's configuration of the provider: an OpenAI-compatible one at `base_url` with
/// its models, or OpenCode's bundled provider of that id with the key.
fn config(options: &Options, provider: &str, models: &[Model]) -> Result<Value, String> {
    let mut settings = Map::new();
    if options.api_key_credential.is_some() {
        settings.insert("apiKey".into(), json!(format!("{{env:{API_KEY_ENV}}}")));
    }
    let mut entry = Map::new();
    if let Some(url) = &options.base_url {
        check_url(url)?;
        settings.insert("baseURL".into(), json!(url));
        entry.insert("npm".into(), json!("@ai-sdk/openai-compatible"));
        entry.insert("name".into(), json!(provider));
        let listed: Map<String, Value> = models
            .iter()
            .map(|m| (m.model_id.clone(), json!({})))
            .collect();
        entry.insert("models".into(), Value::Object(listed));
    }
    entry.insert("options".into(), Value::Object(settings));
    let mut config = json!({"provider": {provider: entry}});
    if let Some(first) = models.first() {
        config["model"] = json!(format!("{}/{}", first.provider_id, first.model_id));
    }
    Ok(config)
}

/// OpenCode replaces `{env:…}` and `{file:…}` in configuration text, so values from a
/// request must not carry braces; URLs must be http(s).
fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.starts_with("http://") || url.starts_with("https://");
    if !scheme || url.contains(['{', '}']) || url.chars().any(char::is_whitespace) {
        return Err(format!("option base_url {url:?} is not an http(s) URL"));
    }
    Ok(())
}

fn plain(value: &str, what: &str) -> Result<(), String> {
    if value.contains(['{', '}']) || value.chars().any(char::is_control) {
        return Err(format!(
            "{what} {value:?} may not contain braces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> Options {
        Options::parse(json).expect("valid options")
    }

    fn model(m: &str) -> Option<Model> {
        Some(Model::parse(m).expect("model"))
    }

    #[test]
    fn no_backend_options_leave_opencode_alone() {
        let b = backend(&options("{}"), model("a/b")).unwrap();
        assert!(b.env.is_empty());
        assert_eq!(b.model, model("a/b"));
        let b = backend(&options(r#"{"models":["x/y","x/z"]}"#), None).unwrap();
        assert_eq!(b.model, model("x/y"));
        assert!(b.env.is_empty());
    }

    #[test]
    fn an_openai_compatible_backend_is_configured_with_its_models() {
        let o = options(
            r#"{"base_url":"http://127.0.0.1:9/v1","api_key_credential":"FAKE_KEY",
                "models":["fake/m1","fake/m2"]}"#,
        );
        let b = backend(&o, model("fake/m2")).unwrap();
        assert_eq!(b.api_key_credential.as_deref(), Some("FAKE_KEY"));
        assert_eq!(b.model, model("fake/m2"));
        let (name, text) = &b.env[0];
        assert_eq!(name, CONFIG_ENV);
        let config: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            config,
            json!({"model": "fake/m1", "provider": {"fake": {
                "npm": "@ai-sdk/openai-compatible", "name": "fake",
                "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "{env:RDEV_OPENCODE_API_KEY}"},
                "models": {"m1": {}, "m2": {}}}}})
        );
        let key_only = backend(
            &options(r#"{"api_key_credential":"K"}"#),
            model("anthropic/c"),
        )
        .unwrap();
        let config: Value = serde_json::from_str(&key_only.env[0].1).unwrap();
        assert_eq!(
            config["provider"]["anthropic"],
            json!({"options": {"apiKey": "{env:RDEV_OPENCODE_API_KEY}"}})
        );
    }

    #[test]
    fn bad_backends_are_refused() {
        let url = |u: &str| options(&format!(r#"{{"base_url":{u:?}}}"#));
        assert!(backend(&url("http://h/v1"), None).is_err(), "no model");
        assert!(backend(&url("ftp://h"), model("a/b")).is_err());
        assert!(backend(&url("http://h/{file:/etc/passwd}"), model("a/b")).is_err());
        assert!(backend(&options(r#"{"models":[]}"#), None).is_err());
        assert!(backend(&options(r#"{"models":["nomodel"]}"#), None).is_err());
        assert!(backend(&options(r#"{"models":["a/b"]}"#), model("a/c")).is_err());
        assert!(backend(&url("http://h"), model("a/{env:X}")).is_err());
    }

    #[test]
    fn mcp_servers_join_the_configuration_with_their_secrets_as_variables() {
        let b = backend(
            &options(
                r#"{"mcp_servers":[{"type":"stdio","name":"files","command":"node",
                    "args":["s.js"],"env":[{"name":"T","credential":"GH"}]}]}"#,
            ),
            None,
        )
        .expect("backend");
        let config: Value = serde_json::from_str(&b.env[0].1).expect("json");
        assert_eq!(
            config["mcp"]["files"],
            json!({"type": "local", "command": ["node", "s.js"], "enabled": true,
                   "environment": {"T": "{env:RDEV_MCP_SECRET_0}"}})
        );
        assert_eq!(
            b.mcp_credentials,
            [("RDEV_MCP_SECRET_0".to_owned(), "GH".to_owned())]
        );
        assert!(backend(&options("{}"), None).expect("none").env.is_empty());
    }
}
