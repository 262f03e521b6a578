//! What a workspace receives when a project is created: the pod's image and resources a
//! template asks for, the files rendered for it, and the rule every written path obeys. The
//! templates produce these values and the seeders and provisioners (adapters) consume them,
//! so they live here, below both.

use serde::{Deserialize, Serialize};

/// Image and resources of the project's pod when the Kubernetes executor is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    pub image: Option<String>,
    /// Kubernetes quantities, e.g. `"2"`, `"4Gi"`.
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub storage: Option<String>,
    /// `false` for images that must write outside the workspace and `/tmp` (the image's
    /// filesystem is read-only by default).
    #[serde(default)]
    pub read_only_root: Option<bool>,
    /// Where the pod may connect besides DNS: CIDRs with an optional port
    /// (`10.0.0.0/8:443`); replaces the operator's list.
    #[serde(default)]
    pub egress: Option<Vec<String>>,
}

/// One output file, in memory: what the Kubernetes executor copies into a pod and what the
/// local one writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Workspace-relative, checked path.
    pub path: String,
    pub contents: Vec<u8>,
}

/// What rendering into a workspace did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RenderReport {
    pub written: Vec<String>,
    /// Files left alone because the workspace already had them (e.g. from a cloned repo).
    pub skipped: Vec<String>,
}

/// Checks a template-relative path: not empty, not absolute, `/`-separated, no empty, `.`
/// or `..` segments, no backslash or NUL, and not inside `.git`.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the path is empty");
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    if path.contains('\\') || path.contains('\0') {
        return Err("backslashes and NUL are not allowed in paths");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("the path has an empty segment"),
            "." | ".." => return Err("'.' and '..' segments are not allowed"),
            _ => {}
        }
    }
    if path == ".git" || path.starts_with(".git/") {
        return Err("templates cannot write into .git");
    }
    Ok(())
}
