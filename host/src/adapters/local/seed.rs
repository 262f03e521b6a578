//! Seeding a new local workspace: an empty directory that becomes a git repository (fresh or
//! cloned), receives a template's files through cap-std and records them in a first commit by
//! a fixed author.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::adapters::workspace_files::write_files;
use crate::domain::{ProjectId, RenderReport, RenderedFile, WorkspaceSpec};
use crate::ports::project_setup::{SEED_AUTHOR_EMAIL, SEED_AUTHOR_NAME, check_repo_url};
use crate::ports::{ProvisionError, SeedError, WorkspaceProvisioner, WorkspaceSeeder};

use super::STATE_DIR;

/// Seeds workspaces laid out as `<root>/<project-id>`, the local executor's server layout.
#[derive(Debug, Clone)]
pub struct LocalSeeder {
    root: PathBuf,
    allow_local_repos: bool,
}

impl LocalSeeder {
    /// Seeds under `root`. Clones only from network URLs (`https://`, `ssh://`, `git@host:`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            allow_local_repos: false,
        }
    }

    /// Also clones from `file://` URLs and absolute paths. Off by default: an API caller
    /// could otherwise copy any repository on the host (another project's, for one).
    pub fn allow_local_repos(mut self, allow: bool) -> Self {
        self.allow_local_repos = allow;
        self
    }

    fn dir(&self, project: &ProjectId) -> PathBuf {
        // A ProjectId is a DNS label: one harmless path segment.
        self.root.join(project.as_str())
    }
}

/// Runs git with the user's and the system's configuration ignored, prompts off and the
/// fixed author, so seeding behaves the same on every host.
async fn git(
    dir: &Path,
    step: &'static str,
    project: &ProjectId,
    args: &[&str],
) -> Result<String, SeedError> {
    let output = tokio::process::Command::new("git")
        .args([
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", SEED_AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", SEED_AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", SEED_AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", SEED_AUTHOR_EMAIL)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| SeedError::failed(project, step, format!("running git: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr: String = stderr.chars().take(512).collect();
        let reason = format!("git exited with {}: {}", output.status, stderr.trim());
        return Err(SeedError::failed(project, step, reason));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[async_trait]
impl WorkspaceSeeder for LocalSeeder {
    async fn create(
        &self,
        project: &ProjectId,
        repo: Option<&str>,
        branch: &str,
    ) -> Result<(), SeedError> {
        if let Some(url) = repo {
            check_repo_url(url, self.allow_local_repos)?;
        }
        let failed = |step, reason: String| SeedError::failed(project, step, reason);
        std::fs::create_dir_all(&self.root)
            .map_err(|e| failed("creating the workspace root", e.to_string()))?;
        let dir = self.dir(project);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SeedError::Exists(project.to_string()));
            }
            Err(e) => return Err(failed("creating the workspace", e.to_string())),
        }
        match repo {
            Some(url) => {
                git(
                    &dir,
                    "git clone",
                    project,
                    &["clone", "--quiet", "--", url, "."],
                )
                .await?;
            }
            None => {
                let initial = format!("--initial-branch={branch}");
                git(&dir, "git init", project, &["init", "--quiet", &initial]).await?;
            }
        }
        // rdev's per-project state (HOME and so on) lives in the workspace but not in git.
        let info = dir.join(".git").join("info");
        std::fs::create_dir_all(&info)
            .and_then(|()| {
                use std::io::Write;
                let mut exclude = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(info.join("exclude"))?;
                writeln!(exclude, "/{STATE_DIR}/")
            })
            .map_err(|e| failed("excluding the state dir from git", e.to_string()))?;
        Ok(())
    }

    async fn write(
        &self,
        project: &ProjectId,
        files: Vec<RenderedFile>,
    ) -> Result<RenderReport, SeedError> {
        const STEP: &str = "writing the template";
        let dir = self.dir(project);
        tokio::task::spawn_blocking(move || write_files(&dir, files))
            .await
            .map_err(|e| SeedError::failed(project, STEP, e.to_string()))?
            .map_err(|(file, reason)| SeedError::failed(project, STEP, format!("{file}: {reason}")))
    }

    async fn commit(
        &self,
        project: &ProjectId,
        message: &str,
    ) -> Result<Option<String>, SeedError> {
        let dir = self.dir(project);
        git(&dir, "git add", project, &["add", "--all"]).await?;
        let status = git(&dir, "git status", project, &["status", "--porcelain"]).await?;
        if status.trim().is_empty() {
            return Ok(None);
        }
        git(
            &dir,
            "git commit",
            project,
            &["commit", "--quiet", "-m", message],
        )
        .await?;
        let head = git(&dir, "git rev-parse", project, &["rev-parse", "HEAD"]).await?;
        Ok(Some(head.trim().to_owned()))
    }

    async fn discard(&self, project: &ProjectId) -> Result<(), SeedError> {
        match std::fs::remove_dir_all(self.dir(project)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SeedError::failed(
                project,
                "removing a half-created workspace",
                e.to_string(),
            )),
        }
    }
}

/// Local workspaces need no compute of their own: the seeder or the first command creates
/// the directory. Deleting a project leaves its directory, as before provisioning existed.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalProvisioner;

#[async_trait]
impl WorkspaceProvisioner for LocalProvisioner {
    async fn provision(
        &self,
        _project: &ProjectId,
        _spec: &WorkspaceSpec,
    ) -> Result<(), ProvisionError> {
        Ok(())
    }

    async fn deprovision(&self, _project: &ProjectId) -> Result<(), ProvisionError> {
        Ok(())
    }
}
