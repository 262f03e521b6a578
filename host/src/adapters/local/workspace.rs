//! Where a project's files live on this machine, and the checks that keep a spawn inside them.

use std::path::{Component, Path, PathBuf};

use crate::domain::ProjectId;
use crate::ports::ExecError;

/// Directory (relative to the workspace) that holds rdev's own per-project state.
pub const STATE_DIR: &str = ".rdev";

/// How project ids map to directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceLayout {
    /// `<root>/<project-id>`: the server's layout, one directory per project under the data dir.
    PerProject { root: PathBuf },
    /// Every project is this one directory: `rdev exec --dir DIR` runs against DIR itself.
    Fixed { dir: PathBuf },
}

/// A project's workspace, created and resolved to its canonical path.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Canonical path of the workspace directory.
    pub root: PathBuf,
    /// Canonical path of the per-project HOME, so agent CLIs keep their sessions per project.
    pub home: PathBuf,
}

impl WorkspaceLayout {
    /// The directory a project's workspace lives in, before it is created.
    pub fn dir_for(&self, project: &ProjectId) -> PathBuf {
        match self {
            // ProjectId's syntax (a DNS label) keeps this a single, harmless path segment.
            Self::PerProject { root } => root.join(project.as_str()),
            Self::Fixed { dir } => dir.clone(),
        }
    }

    /// Creates the workspace and its HOME on demand and returns their canonical paths.
    pub fn prepare(&self, project: &ProjectId) -> Result<Workspace, ExecError> {
        let unavailable = |reason: String| ExecError::WorkspaceUnavailable {
            project: project.to_string(),
            reason,
        };
        let dir = self.dir_for(project);
        std::fs::create_dir_all(&dir)
            .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        let root = dir
            .canonicalize()
            .map_err(|e| unavailable(format!("resolving {}: {e}", dir.display())))?;
        let home_dir = root.join(STATE_DIR).join("home");
        std::fs::create_dir_all(&home_dir)
            .map_err(|e| unavailable(format!("creating {}: {e}", home_dir.display())))?;
        // Agents' session files must not show up as changes in a workspace that is a git
        // checkout: a `.gitignore` of `*` hides the state directory, itself included.
        let ignore = root.join(STATE_DIR).join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n")
                .map_err(|e| unavailable(format!("writing {}: {e}", ignore.display())))?;
        }
        let home = home_dir
            .canonicalize()
            .map_err(|e| unavailable(format!("resolving {}: {e}", home_dir.display())))?;
        if !home.starts_with(&root) {
            // `.rdev` was replaced by a symlink pointing elsewhere.
            return Err(unavailable(format!(
                "{} leaves the workspace",
                home_dir.display()
            )));
        }
        Ok(Workspace { root, home })
    }
}

impl Workspace {
    /// Resolves a spawn's working directory (relative to the workspace) and refuses one that
    /// leaves it: absolute paths, `..` segments and symlinks pointing outside.
    pub fn working_dir(&self, program: &str, relative: Option<&str>) -> Result<PathBuf, ExecError> {
        let Some(relative) = relative.filter(|r| !r.is_empty()) else {
            return Ok(self.root.clone());
        };
        let refused = |reason: &str| ExecError::SpawnFailed {
            program: program.to_owned(),
            reason: format!("working directory {relative:?} {reason}"),
        };
        let path = Path::new(relative);
        for component in path.components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(refused("leaves the workspace (`..`)")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused("must be relative to the workspace"));
                }
            }
        }
        let joined = self.root.join(path);
        let resolved = joined
            .canonicalize()
            .map_err(|e| refused(&format!("cannot be resolved: {e}")))?;
        if !resolved.starts_with(&self.root) {
            return Err(refused("leaves the workspace through a symlink"));
        }
        if !resolved.is_dir() {
            return Err(refused("is not a directory"));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectId {
        ProjectId::parse("demo").expect("valid id")
    }

    #[test]
    fn per_project_layout_creates_workspace_and_home() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = WorkspaceLayout::PerProject {
            root: tmp.path().join("data"),
        };
        let ws = layout.prepare(&project()).expect("prepare");
        let root = tmp.path().canonicalize().expect("canon").join("data/demo");
        assert_eq!(ws.root, root);
        assert_eq!(ws.home, root.join(".rdev/home"));
        assert!(ws.home.is_dir());
        assert_eq!(
            std::fs::read_to_string(root.join(".rdev/.gitignore")).expect("ignore file"),
            "*\n"
        );
    }

    #[test]
    fn working_dir_escapes_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let layout = WorkspaceLayout::Fixed {
            dir: tmp.path().to_owned(),
        };
        let ws = layout.prepare(&project()).expect("prepare");
        std::fs::create_dir(ws.root.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), ws.root.join("out")).expect("symlink");
        std::os::unix::fs::symlink(ws.root.join("sub"), ws.root.join("in")).expect("symlink");

        assert_eq!(ws.working_dir("x", None).expect("none"), ws.root);
        assert_eq!(
            ws.working_dir("x", Some("sub")).expect("sub"),
            ws.root.join("sub")
        );
        assert_eq!(
            ws.working_dir("x", Some("./in")).expect("in"),
            ws.root.join("sub")
        );
        for bad in ["..", "sub/../..", "/tmp", "out", "out/", "missing"] {
            assert!(
                matches!(
                    ws.working_dir("x", Some(bad)),
                    Err(ExecError::SpawnFailed { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_home_symlinked_out_of_the_workspace_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), tmp.path().join(STATE_DIR)).expect("symlink");
        let layout = WorkspaceLayout::Fixed {
            dir: tmp.path().to_owned(),
        };
        assert!(matches!(
            layout.prepare(&project()),
            Err(ExecError::WorkspaceUnavailable { .. })
        ));
    }
}
