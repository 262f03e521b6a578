//! What a manifest says about the options and models a request may carry, so that a typo
//! or a model the configured backend does not offer is refused at submit (422 with the valid
//! ones) instead of being queued and failing when it runs.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[request_options]` table and `models_option` key of a manifest, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Option name → what it means. `None`: the manifest declares none, any option passes
    /// (the provider alone judges them when it runs).
    pub declared: Option<BTreeMap<String, String>>,
    /// The option that lists the models the configured backend offers; when a request (with
    /// the manifest's fixed options) sets it, the request's model must be one of them.
    pub models_option: Option<String>,
}

/// A request the manifest's declarations refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    #[error(
        "provider {provider:?} has no option {}; its options are: {}",
        quoted(unknown),
        quoted(valid)
    )]
    UnknownOption {
        provider: String,
        unknown: Vec<String>,
        valid: Vec<String>,
    },
    #[error("option `{option}` of provider {provider:?} must be a list of model names: {reason}")]
    InvalidModels {
        provider: String,
        option: String,
        reason: String,
    },
    #[error(
        "model {model:?} is not offered by the configured backend of provider {provider:?} (option `{option}`); valid models: {}",
        quoted(valid)
    )]
    UnknownModel {
        provider: String,
        model: String,
        option: String,
        valid: Vec<String>,
    },
}

impl RequestRefused {
    /// The valid names (options or models), for clients that offer a choice.
    pub fn valid(&self) -> Option<&[String]> {
        match self {
            Self::UnknownOption { valid, .. } | Self::UnknownModel { valid, .. } => Some(valid),
            Self::InvalidModels { .. } => None,
        }
    }
}

fn quoted(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// The manifest's `[request_options]` as written: option name → description.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct RawRequestOptions(BTreeMap<String, String>);

impl RequestOptions {
    /// Validates the declarations; `fixed` are the manifest's `[options]`, always valid.
    pub(crate) fn check(
        raw: Option<RawRequestOptions>,
        models_option: Option<String>,
        fixed: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, (&'static str, String)> {
        let declared = raw.map(|r| r.0);
        if let Some(declared) = &declared {
            if let Some(name) = declared.keys().find(|k| !is_option_name(k)) {
                return Err(("request_options", format!("{name:?} is not an option name")));
            }
            if let Some(name) = fixed.keys().find(|k| !declared.contains_key(*k)) {
                let reason = format!("the fixed option `{name}` is not declared");
                return Err(("request_options", reason));
            }
        }
        if let Some(option) = &models_option {
            let known = declared.as_ref().is_none_or(|d| d.contains_key(option));
            if !is_option_name(option) || !known {
                let reason = format!("{option:?} is not a declared option");
                return Err(("models_option", reason));
            }
        }
        Ok(Self {
            declared,
            models_option,
        })
    }

    /// Checks a request's options (with the manifest's fixed ones merged in) and its model.
    pub fn check_request(
        &self,
        provider: &str,
        options: &serde_json::Map<String, serde_json::Value>,
        model: Option<&str>,
    ) -> Result<(), RequestRefused> {
        if let Some(declared) = &self.declared {
            let unknown: Vec<String> = options
                .keys()
                .filter(|k| !declared.contains_key(*k))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(RequestRefused::UnknownOption {
                    provider: provider.to_owned(),
                    unknown,
                    valid: declared.keys().cloned().collect(),
                });
            }
        }
        let Some(option) = &self.models_option else {
            return Ok(());
        };
        let Some(listed) = options.get(option) else {
            return Ok(());
        };
        let valid = model_list(listed).map_err(|reason| RequestRefused::InvalidModels {
            provider: provider.to_owned(),
            option: option.clone(),
            reason,
        })?;
        match model {
            Some(model) if !valid.iter().any(|v| v == model) => Err(RequestRefused::UnknownModel {
                provider: provider.to_owned(),
                model: model.to_owned(),
                option: option.clone(),
                valid,
            }),
            _ => Ok(()),
        }
    }
}

/// A non-empty JSON list of non-empty strings.
fn model_list(value: &serde_json::Value) -> Result<Vec<String>, String> {
    let list = value.as_array().ok_or("not a list")?;
    if list.is_empty() {
        return Err("the list is empty".to_owned());
    }
    list.iter()
        .map(|m| match m.as_str() {
            Some(m) if !m.trim().is_empty() => Ok(m.to_owned()),
            _ => Err(format!("{m} is not a model name")),
        })
        .collect()
}

fn is_option_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    fn declared(names: &[&str]) -> RequestOptions {
        let raw = RawRequestOptions(
            names
                .iter()
                .map(|n| ((*n).to_owned(), "x".to_owned()))
                .collect(),
        );
        RequestOptions::check(Some(raw), Some("models".to_owned()), &Map::new()).expect("valid")
    }

    fn options(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn unknown_options_are_refused_with_the_valid_ones() {
        let decl = declared(&["agent", "models"]);
        let err = decl
            .check_request("opencode", &options(json!({"agnet": "plan"})), None)
            .expect_err("typo");
        assert_eq!(
            err.valid(),
            Some(&["agent".to_owned(), "models".to_owned()][..])
        );
        assert!(err.to_string().contains("`agnet`"), "{err}");
        assert!(
            decl.check_request("opencode", &options(json!({"agent": "plan"})), None)
                .is_ok()
        );
        let open = RequestOptions::default();
        assert!(
            open.check_request("x", &options(json!({"any": 1})), Some("m"))
                .is_ok()
        );
    }

    #[test]
    fn the_model_must_be_one_the_backend_offers() {
        let decl = declared(&["models"]);
        let listed = options(json!({"models": ["fake/a", "fake/b"]}));
        assert!(decl.check_request("p", &listed, Some("fake/b")).is_ok());
        assert!(decl.check_request("p", &listed, None).is_ok());
        let err = decl
            .check_request("p", &listed, Some("fake/c"))
            .expect_err("not offered");
        assert_eq!(
            err.valid(),
            Some(&["fake/a".to_owned(), "fake/b".to_owned()][..])
        );
        assert!(
            decl.check_request("p", &Map::new(), Some("any/model"))
                .is_ok()
        );
        for bad in [json!([]), json!("fake/a"), json!([""]), json!([1])] {
            let err = decl
                .check_request("p", &options(json!({"models": bad})), None)
                .expect_err("not a list of names");
            assert!(matches!(err, RequestRefused::InvalidModels { .. }), "{err}");
        }
    }

    #[test]
    fn declarations_are_checked() {
        let fixed = options(json!({"command": "x"}));
        let raw = || RawRequestOptions(BTreeMap::from([("agent".to_owned(), "x".to_owned())]));
        assert_eq!(
            RequestOptions::check(Some(raw()), None, &fixed)
                .unwrap_err()
                .0,
            "request_options"
        );
        let models = Some("models".to_owned());
        assert_eq!(
            RequestOptions::check(Some(raw()), models, &Map::new())
                .unwrap_err()
                .0,
            "models_option"
        );
        let bad = RawRequestOptions(BTreeMap::from([("a b".to_owned(), "x".to_owned())]));
        assert!(RequestOptions::check(Some(bad), None, &Map::new()).is_err());
    }
}
