//! Project templates: a `template.toml` plus files, rendered with minijinja into a new
//! project's workspace. Built-ins are embedded in the binary; operators add or override
//! templates by dropping directories into the templates dir.
//!
//! Safety rules, enforced when a template loads and again when it renders: template paths are
//! relative, `/`-separated, without `.`/`..` segments; symlinks in a template are refused; a
//! variable that appears in a path must be a single path segment; writes go through cap-std,
//! so nothing (not even a symlink already in the workspace) can redirect them outside it.

mod builtin;
pub mod manifest;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use manifest::{
    MANIFEST_FILE, SecretSpec, TemplateManifest, Variable, VariableKind, WoodpeckerSettings,
};

use crate::domain::{WorkspaceSpec, check_relative_path};

/// Suffix of files whose contents are rendered; others are copied byte for byte.
pub const RENDER_SUFFIX: &str = ".jinja";

/// Most files one template may hold.
pub const MAX_FILES: usize = 2000;
/// Most bytes one template may hold.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Why a template could not be loaded, resolved or rendered. Each case names the template
/// and, where it applies, the file or the variable, so an operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name:?} does not exist")]
    NotFound { name: String },
    #[error("template {template:?}: {MANIFEST_FILE}: {reason}")]
    Manifest { template: String, reason: String },
    #[error("template {template:?}: file {file:?} is refused: {reason}")]
    UnsafePath {
        template: String,
        file: String,
        reason: String,
    },
    #[error("template {template:?}: reading {file:?}: {reason}")]
    Read {
        template: String,
        file: String,
        reason: String,
    },
    #[error("template {template:?} has no variable {variable:?}")]
    UnknownVariable { template: String, variable: String },
    #[error("template {template:?}: variable {variable:?} is required")]
    MissingVariable { template: String, variable: String },
    #[error("template {template:?}: variable {variable:?} {reason}")]
    InvalidValue {
        template: String,
        variable: String,
        reason: String,
    },
    #[error("template {template:?}: rendering {file:?}: {reason}")]
    Render {
        template: String,
        file: String,
        reason: String,
    },
}

/// A resolved variable value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VarValue {
    Bool(bool),
    String(String),
}

impl std::fmt::Display for VarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

/// Every declared variable with its validated value (given or default): what is rendered
/// with and what the project records.
pub type ResolvedVars = BTreeMap<String, VarValue>;

/// Where a template came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    Builtin,
    /// The operator's directory holding this template.
    Operator(PathBuf),
}

#[derive(Debug, Clone)]
struct TemplateFile {
    /// Relative, `/`-separated source path (may contain minijinja expressions).
    path: String,
    contents: Vec<u8>,
}

/// A loaded, checked template.
#[derive(Debug, Clone)]
pub struct Template {
    pub manifest: TemplateManifest,
    pub origin: TemplateOrigin,
    files: Vec<TemplateFile>,
    /// Variables referenced by file paths; their values must be single path segments.
    path_variables: BTreeSet<String>,
}

/// What `GET /templates` shows about a template.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TemplateInfo {
    pub name: String,
    pub description: String,
    /// False for an operator template (which may override a built-in of the same name).
    pub builtin: bool,
    pub variables: Vec<Variable>,
    pub workspace: WorkspaceSpec,
    pub woodpecker: WoodpeckerSettings,
    /// Rendered paths' sources, for previews.
    pub files: Vec<String>,
}

impl Template {
    /// Builds a template from its files (relative path → bytes), checking the manifest, every
    /// path and the syntax of every path and rendered file. `dir_name` is the directory the
    /// template was found under; the manifest's name must equal it.
    pub fn from_files(
        dir_name: &str,
        origin: TemplateOrigin,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, TemplateError> {
        let template = dir_name.to_owned();
        let manifest_error = |reason: String| TemplateError::Manifest {
            template: template.clone(),
            reason,
        };
        let mut manifest = None;
        let mut rest = Vec::new();
        let mut total: u64 = 0;
        if files.len() > MAX_FILES {
            return Err(manifest_error(format!("more than {MAX_FILES} files")));
        }
        for (path, contents) in files {
            check_relative_path(&path).map_err(|reason| TemplateError::UnsafePath {
                template: template.clone(),
                file: path.clone(),
                reason: reason.to_owned(),
            })?;
            total += contents.len() as u64;
            if path == MANIFEST_FILE {
                let text = String::from_utf8(contents)
                    .map_err(|_| manifest_error("not UTF-8".to_owned()))?;
                manifest = Some(TemplateManifest::parse(&text).map_err(manifest_error)?);
            } else {
                rest.push(TemplateFile { path, contents });
            }
        }
        if total > MAX_BYTES {
            return Err(manifest_error(format!("larger than {MAX_BYTES} bytes")));
        }
        let manifest = manifest.ok_or_else(|| manifest_error("missing".to_owned()))?;
        if manifest.name != template {
            return Err(manifest_error(format!(
                "name {:?} differs from the directory name",
                manifest.name
            )));
        }
        rest.sort_by(|a, b| a.path.cmp(&b.path));
        let mut built = Self {
            manifest,
            origin,
            files: rest,
            path_variables: BTreeSet::new(),
        };
        built.path_variables = render::check_syntax(&built)?;
        Ok(built)
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The listing entry.
    pub fn info(&self) -> TemplateInfo {
        TemplateInfo {
            name: self.manifest.name.clone(),
            description: self.manifest.description.clone(),
            builtin: self.origin == TemplateOrigin::Builtin,
            variables: self.manifest.variables.clone(),
            workspace: self.manifest.workspace.clone(),
            woodpecker: self.manifest.woodpecker.clone(),
            files: self.files.iter().map(|f| f.path.clone()).collect(),
        }
    }

    /// Validates the caller's values against the declarations and fills in defaults.
    /// Accepts JSON strings and booleans (`"true"`/`"false"` for a bool, as the CLI sends).
    pub fn resolve(
        &self,
        given: &BTreeMap<String, serde_json::Value>,
    ) -> Result<ResolvedVars, TemplateError> {
        let template = self.name().to_owned();
        let invalid = |variable: &str, reason: String| TemplateError::InvalidValue {
            template: template.clone(),
            variable: variable.to_owned(),
            reason,
        };
        for name in given.keys() {
            if !self.manifest.variables.iter().any(|v| &v.name == name) {
                return Err(TemplateError::UnknownVariable {
                    template: template.clone(),
                    variable: name.clone(),
                });
            }
        }
        let mut resolved = ResolvedVars::new();
        for var in &self.manifest.variables {
            let value = given.get(&var.name).filter(|v| !v.is_null());
            let value = match (&var.kind, value) {
                (VariableKind::Bool { .. }, Some(serde_json::Value::Bool(b))) => VarValue::Bool(*b),
                (VariableKind::Bool { .. }, Some(serde_json::Value::String(s))) => {
                    match s.as_str() {
                        "true" => VarValue::Bool(true),
                        "false" => VarValue::Bool(false),
                        _ => return Err(invalid(&var.name, format!("{s:?} is not true or false"))),
                    }
                }
                (VariableKind::Bool { default }, None) => match default {
                    Some(b) => VarValue::Bool(*b),
                    None => return Err(self.missing(&var.name)),
                },
                (_, Some(serde_json::Value::String(s))) => VarValue::String(s.clone()),
                (
                    VariableKind::String { default, .. } | VariableKind::Enum { default, .. },
                    None,
                ) => match default {
                    Some(s) => VarValue::String(s.clone()),
                    None => return Err(self.missing(&var.name)),
                },
                (_, Some(other)) => {
                    return Err(invalid(
                        &var.name,
                        format!("must be a string or a boolean, not {other}"),
                    ));
                }
            };
            if let VarValue::String(s) = &value {
                self.check_string(var, s)
                    .map_err(|r| invalid(&var.name, r))?;
            }
            resolved.insert(var.name.clone(), value);
        }
        Ok(resolved)
    }

    fn missing(&self, variable: &str) -> TemplateError {
        TemplateError::MissingVariable {
            template: self.name().to_owned(),
            variable: variable.to_owned(),
        }
    }

    fn check_string(&self, var: &Variable, value: &str) -> Result<(), String> {
        if value.len() > MAX_VALUE_LEN {
            return Err(format!("is longer than {MAX_VALUE_LEN} bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err("contains control characters".to_owned());
        }
        match &var.kind {
            VariableKind::String {
                pattern: Some(pattern),
                ..
            } => {
                let regex =
                    manifest::compile_pattern(pattern).map_err(|e| format!("bad pattern: {e}"))?;
                if !regex.is_match(value) {
                    return Err(format!("{value:?} does not match the pattern {pattern:?}"));
                }
            }
            VariableKind::Enum { choices, .. } if !choices.iter().any(|c| c == value) => {
                return Err(format!("{value:?} is not one of {choices:?}"));
            }
            _ => {}
        }
        if self.path_variables.contains(&var.name)
            && (value.is_empty()
                || value == "."
                || value == ".."
                || value.contains('/')
                || value.contains('\\'))
        {
            return Err(format!(
                "{value:?} is used in a file path and must be a single path segment \
                 (not empty, no '/', '\\', '.' or '..')"
            ));
        }
        Ok(())
    }
}

pub use manifest::MAX_VALUE_LEN;

/// Every template available: the built-ins, then the operator's directory, whose templates
/// add to or replace built-ins of the same name.
#[derive(Debug, Clone, Default)]
pub struct TemplateCatalog {
    templates: BTreeMap<String, Template>,
    problems: Vec<TemplateError>,
}

impl TemplateCatalog {
    /// The built-ins alone.
    pub fn builtin() -> Self {
        let mut catalog = Self::default();
        for (name, files) in builtin::BUILTINS {
            let files = files
                .iter()
                .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
                .collect();
            catalog.add(Template::from_files(name, TemplateOrigin::Builtin, files));
        }
        catalog
    }

    /// Built-ins plus every template directory under `operator_dir` (when it exists). A
    /// broken operator template is left out and reported in [`Self::problems`], so one bad
    /// directory does not hide the others.
    pub fn load(operator_dir: Option<&Path>) -> Self {
        let mut catalog = Self::builtin();
        let Some(dir) = operator_dir else {
            return catalog;
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return catalog,
            Err(e) => {
                catalog.problems.push(TemplateError::Read {
                    template: "*".to_owned(),
                    file: dir.display().to_string(),
                    reason: e.to_string(),
                });
                return catalog;
            }
        };
        let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        dirs.sort();
        for path in dirs {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            catalog.add(load_dir(&name, &path));
        }
        catalog
    }

    fn add(&mut self, template: Result<Template, TemplateError>) {
        match template {
            Ok(template) => {
                self.templates
                    .insert(template.manifest.name.clone(), template);
            }
            Err(error) => {
                tracing::warn!(%error, "template left out");
                self.problems.push(error);
            }
        }
    }

    pub fn get(&self, name: &str) -> Result<&Template, TemplateError> {
        self.templates
            .get(name)
            .ok_or_else(|| TemplateError::NotFound {
                name: name.to_owned(),
            })
    }

    /// Templates ordered by name.
    pub fn list(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// Operator templates that failed to load.
    pub fn problems(&self) -> &[TemplateError] {
        &self.problems
    }
}

/// Reads one operator template directory, refusing symlinks and special files anywhere in it.
fn load_dir(name: &str, root: &Path) -> Result<Template, TemplateError> {
    let refuse = |file: String, reason: &str| TemplateError::UnsafePath {
        template: name.to_owned(),
        file,
        reason: reason.to_owned(),
    };
    let read_error = |file: String, e: std::io::Error| TemplateError::Read {
        template: name.to_owned(),
        file,
        reason: e.to_string(),
    };
    let meta = std::fs::symlink_metadata(root).map_err(|e| read_error(".".to_owned(), e))?;
    if meta.file_type().is_symlink() {
        return Err(refuse(
            ".".to_owned(),
            "the template directory is a symlink",
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(".".to_owned(), "not a directory"));
    }
    let mut files = Vec::new();
    let mut pending = vec![String::new()];
    let mut total: u64 = 0;
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let entries = std::fs::read_dir(&dir).map_err(|e| read_error(relative.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_error(relative.clone(), e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                return Err(refuse(
                    format!("{relative}/{}", file_name.to_string_lossy()),
                    "file names must be UTF-8",
                ));
            };
            let path = if relative.is_empty() {
                file_name.to_owned()
            } else {
                format!("{relative}/{file_name}")
            };
            let kind = entry.file_type().map_err(|e| read_error(path.clone(), e))?;
            if kind.is_symlink() {
                return Err(refuse(path, "symlinks are not allowed in templates"));
            } else if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let contents =
                    std::fs::read(entry.path()).map_err(|e| read_error(path.clone(), e))?;
                total += contents.len() as u64;
                if total > MAX_BYTES || files.len() >= MAX_FILES {
                    return Err(TemplateError::Manifest {
                        template: name.to_owned(),
                        reason: format!("more than {MAX_FILES} files or {MAX_BYTES} bytes"),
                    });
                }
                files.push((path, contents));
            } else {
                return Err(refuse(
                    path,
                    "only regular files and directories are allowed",
                ));
            }
        }
    }
    Template::from_files(name, TemplateOrigin::Operator(root.to_path_buf()), files)
}
