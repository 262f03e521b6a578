//! `template.toml`: what a template declares about itself. Parsing and the checks on the
//! declaration are pure, so a broken operator template is reported before anything renders.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::domain::{CredentialName, WorkspaceSpec};

/// File name of the manifest at a template's root.
pub const MANIFEST_FILE: &str = "template.toml";

/// Longest accepted string value, so a variable cannot bloat every rendered file.
pub const MAX_VALUE_LEN: usize = 256;

/// A template's declaration, as written in `template.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateManifest {
    /// Same syntax as a project id; must match the template's directory name.
    pub name: String,
    pub description: String,
    /// In declaration order, which is the order listings and forms show them in.
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// What the Kubernetes executor provisions for a project made from this template.
    #[serde(default)]
    pub workspace: WorkspaceSpec,
    /// How the project is registered with Woodpecker CI.
    #[serde(default)]
    pub woodpecker: WoodpeckerSettings,
}

/// One typed input of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Variable {
    /// `[a-z_][a-z0-9_]*`: a name minijinja can reference directly.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(flatten)]
    pub kind: VariableKind,
}

/// The type of a variable, its default (none: the caller must supply it) and its validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VariableKind {
    String {
        #[serde(default)]
        default: Option<String>,
        /// A regular expression the whole value must match.
        #[serde(default)]
        pattern: Option<String>,
    },
    Bool {
        #[serde(default)]
        default: Option<bool>,
    },
    Enum {
        choices: Vec<String>,
        #[serde(default)]
        default: Option<String>,
    },
}

/// Woodpecker registration settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WoodpeckerSettings {
    /// False: the project is not registered with CI at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Branch the first pipeline runs on.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Repository secrets to set, each taken from the credential store.
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// Pipeline variables passed when rdev triggers a pipeline; values may use the template's
    /// variables (minijinja).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

impl Default for WoodpeckerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            branch: default_branch(),
            secrets: Vec::new(),
            variables: BTreeMap::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_branch() -> String {
    "main".to_owned()
}

/// A Woodpecker repository secret whose value comes from rdev's credential store, so the
/// template names the secret but never carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The secret's name in Woodpecker (what `from_secret` references).
    pub name: String,
    /// The credential store entry holding the value.
    pub credential: CredentialName,
    /// Pipeline events the secret is available to.
    #[serde(default = "default_secret_events")]
    pub events: Vec<String>,
}

fn default_secret_events() -> Vec<String> {
    vec!["push".to_owned(), "manual".to_owned()]
}

/// True for `[a-z_][a-z0-9_]*`, at most 64 characters.
pub fn is_variable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Names the context reserves, so a variable cannot shadow them.
pub const RESERVED_NAMES: &[&str] = &["project_id", "template"];

/// Compiles a declared pattern so that it must match the whole value.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl TemplateManifest {
    /// Parses `template.toml` text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The declaration's own consistency: names, patterns, defaults that pass their own
    /// validation, choices that are not empty.
    pub fn check(&self) -> Result<(), String> {
        crate::domain::ProjectId::parse(self.name.as_str())
            .map_err(|e| format!("template name: {e}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for var in &self.variables {
            if !is_variable_name(&var.name) {
                return Err(format!(
                    "variable {:?} must match [a-z_][a-z0-9_]* (at most 64 characters)",
                    var.name
                ));
            }
            if RESERVED_NAMES.contains(&var.name.as_str()) {
                return Err(format!("variable {:?} is a reserved name", var.name));
            }
            if !seen.insert(var.name.as_str()) {
                return Err(format!("variable {:?} is declared twice", var.name));
            }
            match &var.kind {
                VariableKind::String { default, pattern } => {
                    let regex = pattern
                        .as_deref()
                        .map(compile_pattern)
                        .transpose()
                        .map_err(|e| format!("variable {:?}: bad pattern: {e}", var.name))?;
                    if let (Some(default), Some(regex)) = (default, regex)
                        && !regex.is_match(default)
                    {
                        return Err(format!(
                            "variable {:?}: default {default:?} does not match its pattern",
                            var.name
                        ));
                    }
                }
                VariableKind::Bool { .. } => {}
                VariableKind::Enum { choices, default } => {
                    if choices.is_empty() {
                        return Err(format!("variable {:?}: enum without choices", var.name));
                    }
                    if let Some(default) = default
                        && !choices.contains(default)
                    {
                        return Err(format!(
                            "variable {:?}: default {default:?} is not one of its choices",
                            var.name
                        ));
                    }
                }
            }
        }
        for secret in &self.woodpecker.secrets {
            CredentialName::parse(secret.name.as_str())
                .map_err(|_| format!("woodpecker secret name {:?} is invalid", secret.name))?;
        }
        if self.woodpecker.branch.is_empty() || self.woodpecker.branch.contains("..") {
            return Err(format!(
                "woodpecker branch {:?} is invalid",
                self.woodpecker.branch
            ));
        }
        Ok(())
    }
}

impl Variable {
    /// True when the caller must supply a value.
    pub fn required(&self) -> bool {
        match &self.kind {
            VariableKind::String { default, .. } | VariableKind::Enum { default, .. } => {
                default.is_none()
            }
            VariableKind::Bool { default } => default.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses() {
        let manifest = TemplateManifest::parse(
            r#"
name = "demo"
description = "d"
[[variables]]
name = "name"
type = "string"
pattern = "[a-z]+"
default = "app"
[[variables]]
name = "fast"
type = "bool"
[[variables]]
name = "flavour"
type = "enum"
choices = ["a", "b"]
default = "b"
[workspace]
image = "rust:1"
memory = "4Gi"
[woodpecker]
branch = "trunk"
secrets = [{ name = "TOKEN", credential = "MY_TOKEN" }]
"#,
        )
        .expect("valid manifest");
        assert_eq!(manifest.variables.len(), 3);
        assert!(manifest.variables[1].required());
        assert!(!manifest.variables[0].required());
        assert_eq!(manifest.woodpecker.secrets[0].events, ["push", "manual"]);
        assert!(manifest.woodpecker.enabled);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        for bad in [
            "name = \"Bad\"\ndescription = \"\"",
            "name = \"a\"\ndescription = \"\"\n[[variables]]\nname = \"x\"\ntype = \"string\"\npattern = \"[a-z]+\"\ndefault = \"1\"",
            "name = \"a\"\ndescription = \"\"\n[[variables]]\nname = \"x\"\ntype = \"enum\"\nchoices = []",
            "name = \"a\"\ndescription = \"\"\n[[variables]]\nname = \"project_id\"\ntype = \"bool\"",
            "name = \"a\"\ndescription = \"\"\n[[variables]]\nname = \"x-y\"\ntype = \"bool\"",
            "name = \"a\"\ndescription = \"\"\nextra = 1",
        ] {
            assert!(TemplateManifest::parse(bad).is_err(), "accepted: {bad}");
        }
    }
}
