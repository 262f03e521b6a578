//! Rendering a template's paths and files with minijinja, in memory; the seeders write them.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::BTreeSet;

use super::{RENDER_SUFFIX, ResolvedVars, Template, TemplateError};
use crate::domain::{ProjectId, RenderedFile, check_relative_path};

/// Strict (an undefined variable is an error, so a typo cannot render as empty), no HTML
/// escaping, trailing newlines kept.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env
}

fn context(project: &ProjectId, template: &str, vars: &ResolvedVars) -> minijinja::Value {
    let mut map: std::collections::BTreeMap<String, minijinja::Value> = vars
        .iter()
        .map(|(k, v)| {
            let value = match v {
                super::VarValue::Bool(b) => minijinja::Value::from(*b),
                super::VarValue::String(s) => minijinja::Value::from(s.as_str()),
            };
            (k.clone(), value)
        })
        .collect();
    map.insert("project_id".to_owned(), project.as_str().into());
    map.insert("template".to_owned(), template.into());
    minijinja::Value::from(map)
}

/// Parses every path and every rendered file once, at load time, and returns the variables
/// the paths reference.
pub(super) fn check_syntax(template: &Template) -> Result<BTreeSet<String>, TemplateError> {
    let env = environment();
    let name = template.name();
    let mut path_vars = BTreeSet::new();
    let syntax = |file: &str, e: minijinja::Error| TemplateError::Render {
        template: name.to_owned(),
        file: file.to_owned(),
        reason: e.to_string(),
    };
    for file in &template.files {
        let parsed = env
            .template_from_str(&file.path)
            .map_err(|e| syntax(&file.path, e))?;
        path_vars.extend(parsed.undeclared_variables(false));
        if file.path.ends_with(RENDER_SUFFIX) {
            let text = std::str::from_utf8(&file.contents).map_err(|_| TemplateError::Render {
                template: name.to_owned(),
                file: file.path.clone(),
                reason: "a .jinja file must be UTF-8".to_owned(),
            })?;
            env.template_from_str(text)
                .map_err(|e| syntax(&file.path, e))?;
        }
    }
    for (key, value) in &template.manifest.woodpecker.variables {
        env.template_from_str(value)
            .map_err(|e| syntax(&format!("woodpecker.variables.{key}"), e))?;
    }
    path_vars.retain(|v| v != "project_id" && v != "template");
    for var in &path_vars {
        if !template.manifest.variables.iter().any(|d| &d.name == var) {
            return Err(TemplateError::Render {
                template: name.to_owned(),
                file: "(paths)".to_owned(),
                reason: format!("a path uses the undeclared variable {var:?}"),
            });
        }
    }
    Ok(path_vars)
}

impl Template {
    /// Renders every path and `.jinja` file in memory. Values must come from
    /// [`Template::resolve`].
    pub fn render_files(
        &self,
        project: &ProjectId,
        vars: &ResolvedVars,
    ) -> Result<Vec<RenderedFile>, TemplateError> {
        let env = environment();
        let ctx = context(project, self.name(), vars);
        let render_error = |file: &str, e: minijinja::Error| TemplateError::Render {
            template: self.name().to_owned(),
            file: file.to_owned(),
            reason: e.to_string(),
        };
        let mut out = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let rendered_path = env
                .render_str(&file.path, &ctx)
                .map_err(|e| render_error(&file.path, e))?;
            let (path, contents) = match rendered_path.strip_suffix(RENDER_SUFFIX) {
                Some(stripped) => {
                    let text =
                        std::str::from_utf8(&file.contents).map_err(|_| TemplateError::Render {
                            template: self.name().to_owned(),
                            file: file.path.clone(),
                            reason: "a .jinja file must be UTF-8".to_owned(),
                        })?;
                    let body = env
                        .render_str(text, &ctx)
                        .map_err(|e| render_error(&file.path, e))?;
                    (stripped.to_owned(), body.into_bytes())
                }
                None => (rendered_path, file.contents.clone()),
            };
            check_relative_path(&path).map_err(|reason| TemplateError::UnsafePath {
                template: self.name().to_owned(),
                file: file.path.clone(),
                reason: format!("renders to {path:?}: {reason}"),
            })?;
            out.push(RenderedFile { path, contents });
        }
        Ok(out)
    }

    /// The Woodpecker pipeline variables with the template's variables substituted.
    pub fn pipeline_variables(
        &self,
        project: &ProjectId,
        vars: &ResolvedVars,
    ) -> Result<std::collections::BTreeMap<String, String>, TemplateError> {
        let env = environment();
        let ctx = context(project, self.name(), vars);
        self.manifest
            .woodpecker
            .variables
            .iter()
            .map(|(key, value)| {
                env.render_str(value, &ctx)
                    .map(|v| (key.clone(), v))
                    .map_err(|e| TemplateError::Render {
                        template: self.name().to_owned(),
                        file: format!("woodpecker.variables.{key}"),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }
}
