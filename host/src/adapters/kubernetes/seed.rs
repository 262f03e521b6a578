//! Seeding a project's workspace inside its pod: git runs there through exec, and rendered
//! template files travel as one tar archive over exec's stdin.
//!
//! Files are rendered into a temporary directory here with the same cap-std writer the local
//! seeder uses, archived by the host's `tar` and unpacked by the pod's; the pod image needs
//! `sh`, `tar` and `git` besides what the executor needs. Everything written stays inside
//! the project's own pod.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KubernetesExecutor;
use crate::adapters::workspace_files::write_files;
use crate::domain::ProjectId;
use crate::domain::{RenderReport, RenderedFile};
use crate::ports::project_setup::{SEED_AUTHOR_EMAIL, SEED_AUTHOR_NAME, check_repo_url};
use crate::ports::{Executor, SeedError, SpawnSpec, WorkspaceSeeder};

/// rdev's per-project state (HOME and so on) in the workspace, kept out of git; a fresh
/// volume's `lost+found` too.
const EXCLUDES: &str = "/.rdev/\n/lost+found/\n";

/// Longest stderr excerpt quoted in an error.
const STDERR_EXCERPT: usize = 512;

/// Seeds workspaces in project pods through a [`KubernetesExecutor`].
pub struct KubernetesSeeder {
    executor: Arc<KubernetesExecutor>,
}

impl KubernetesSeeder {
    pub fn new(executor: Arc<KubernetesExecutor>) -> Self {
        Self { executor }
    }

    /// Runs `program` in the workspace root with `stdin` as its input; its stdout, or an
    /// error quoting the start of its stderr when it fails.
    async fn run(
        &self,
        project: &ProjectId,
        step: &'static str,
        program: &str,
        args: &[&str],
        stdin: Vec<u8>,
    ) -> Result<Vec<u8>, SeedError> {
        let failed = |reason: String| SeedError::failed(project, step, reason);
        // The image's and the user's git configuration must not change what seeding does.
        let spec = SpawnSpec::new(program, args).with_plain_env(&[
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_AUTHOR_NAME", SEED_AUTHOR_NAME),
            ("GIT_AUTHOR_EMAIL", SEED_AUTHOR_EMAIL),
            ("GIT_COMMITTER_NAME", SEED_AUTHOR_NAME),
            ("GIT_COMMITTER_EMAIL", SEED_AUTHOR_EMAIL),
        ]);
        let process = self
            .executor
            .spawn(project, spec)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut input = process.stdin;
        let mut stdout = process.stdout;
        let mut stderr = process.stderr;
        let write = async move {
            let written = input.write_all(&stdin).await;
            let closed = input.shutdown().await;
            written.and(closed)
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        // A program may succeed without reading all of its input, so only its status counts.
        let (_, read_out, read_err) = tokio::join!(
            write,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        read_out.map_err(|e| failed(format!("reading output: {e}")))?;
        read_err.map_err(|e| failed(format!("reading errors: {e}")))?;
        let status = process
            .control
            .wait()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !status.success() {
            let text = String::from_utf8_lossy(&err);
            return Err(failed(format!(
                "{program} exited with {:?}: {}",
                status.code,
                text.chars().take(STDERR_EXCERPT).collect::<String>().trim()
            )));
        }
        Ok(out)
    }

    async fn git(
        &self,
        project: &ProjectId,
        step: &'static str,
        args: &[&str],
    ) -> Result<String, SeedError> {
        let mut full = vec![
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ];
        full.extend_from_slice(args);
        let out = self.run(project, step, "git", &full, Vec::new()).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn sh(
        &self,
        project: &ProjectId,
        step: &'static str,
        script: &str,
        args: &[&str],
        stdin: Vec<u8>,
    ) -> Result<Vec<u8>, SeedError> {
        let mut full = vec!["-c", script, "rdev-seed"];
        full.extend_from_slice(args);
        self.run(project, step, "sh", &full, stdin).await
    }
}

/// Archives `files` (already rendered into `dir`) with the host's tar.
async fn archive(dir: &std::path::Path, files: &[String]) -> Result<Vec<u8>, String> {
    let output = tokio::process::Command::new("tar")
        .arg("-c")
        .arg("-f")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .arg("--")
        .args(files)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("running tar on the host: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "tar on the host exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

#[async_trait]
impl WorkspaceSeeder for KubernetesSeeder {
    async fn create(
        &self,
        project: &ProjectId,
        repo: Option<&str>,
        branch: &str,
    ) -> Result<(), SeedError> {
        if let Some(url) = repo {
            // file:// would read the pod's own filesystem: harmless but never meant.
            check_repo_url(url, false)?;
        }
        let existing = self
            .sh(
                project,
                "checking the workspace",
                "if [ -e .git ]; then echo exists; fi",
                &[],
                Vec::new(),
            )
            .await?;
        if !existing.is_empty() {
            return Err(SeedError::Exists(project.to_string()));
        }
        match repo {
            Some(url) => {
                // A volume's root is not empty (lost+found), so clone beside it and move the
                // repository in.
                self.git(
                    project,
                    "git clone",
                    &[
                        "clone",
                        "--quiet",
                        "--no-checkout",
                        "--",
                        url,
                        ".rdev/clone",
                    ],
                )
                .await?;
                self.sh(
                    project,
                    "git clone",
                    "mv .rdev/clone/.git .git && rm -rf .rdev/clone",
                    &[],
                    Vec::new(),
                )
                .await?;
                self.git(project, "git clone", &["reset", "--quiet", "--hard"])
                    .await?;
            }
            None => {
                let initial = format!("--initial-branch={branch}");
                self.git(project, "git init", &["init", "--quiet", &initial])
                    .await?;
            }
        }
        self.sh(
            project,
            "excluding the state dir from git",
            "mkdir -p .git/info && cat >> .git/info/exclude",
            &[],
            EXCLUDES.as_bytes().to_vec(),
        )
        .await?;
        Ok(())
    }

    async fn write(
        &self,
        project: &ProjectId,
        files: Vec<RenderedFile>,
    ) -> Result<RenderReport, SeedError> {
        const STEP: &str = "writing the template";
        let failed = |reason: String| SeedError::failed(project, STEP, reason);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        // Files the workspace already has (e.g. from the cloned repository) are kept.
        let present = self
            .sh(
                project,
                STEP,
                r#"for p do if [ -e "$p" ] || [ -L "$p" ]; then printf '%s\0' "$p"; fi; done"#,
                &paths,
                Vec::new(),
            )
            .await?;
        let present: std::collections::BTreeSet<&[u8]> = present
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .collect();
        let (skipped, new): (Vec<RenderedFile>, Vec<RenderedFile>) = files
            .into_iter()
            .partition(|f| present.contains(f.path.as_bytes()));
        let mut report = RenderReport {
            written: Vec::new(),
            skipped: skipped.into_iter().map(|f| f.path).collect(),
        };
        if new.is_empty() {
            return Ok(report);
        }
        let staging = tempfile::tempdir().map_err(|e| failed(format!("staging dir: {e}")))?;
        let dir = staging.path().to_owned();
        let rendered = tokio::task::spawn_blocking(move || write_files(&dir, new))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|(file, reason)| failed(format!("{file}: {reason}")))?;
        let tarball = archive(staging.path(), &rendered.written)
            .await
            .map_err(failed)?;
        self.run(
            project,
            STEP,
            "tar",
            &["-x", "-f", "-", "--no-same-owner"],
            tarball,
        )
        .await?;
        report.written = rendered.written;
        Ok(report)
    }

    async fn commit(
        &self,
        project: &ProjectId,
        message: &str,
    ) -> Result<Option<String>, SeedError> {
        self.git(project, "git add", &["add", "--all"]).await?;
        let status = self
            .git(project, "git status", &["status", "--porcelain"])
            .await?;
        if status.trim().is_empty() {
            return Ok(None);
        }
        self.git(project, "git commit", &["commit", "--quiet", "-m", message])
            .await?;
        let head = self
            .git(project, "git rev-parse", &["rev-parse", "HEAD"])
            .await?;
        Ok(Some(head.trim().to_owned()))
    }

    async fn discard(&self, project: &ProjectId) -> Result<(), SeedError> {
        // The provisioner deletes the volume too; emptying it keeps a retried create clean
        // when the pod outlives the failure.
        self.sh(
            project,
            "removing a half-created workspace",
            "find . -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf {} +",
            &[],
            Vec::new(),
        )
        .await
        .map(drop)
    }
}
