//! The `local` executor: processes on this machine, each in its project's directory with a
//! per-project HOME, the host's PATH and nothing else of the host's environment.

pub mod confine;
mod env_secrets;
mod process;
pub mod sandbox;
pub mod seed;
pub mod tracking;
mod workspace;

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::ProjectId;
use crate::ports::{
    ExecError, Executor, ProjectConnection, SecretResolver, SpawnSpec, SpawnedProcess, resolve_env,
};

pub use confine::{ConfineError, ConfinementConfig, build_local_executor};
pub use env_secrets::EnvSecrets;
pub use process::{LocalProcess, Reaping};
pub use sandbox::{Sandbox, SandboxConfig, SandboxStatus};
pub use tracking::ProcessTracker;
pub use workspace::{STATE_DIR, Workspace, WorkspaceLayout};

/// Refused-egress notices of a confined command's project.
type Notices = tokio::sync::broadcast::Receiver<String>;

/// Runs processes as children of the rdev host, one process group per spawn.
pub struct LocalExecutor {
    layout: WorkspaceLayout,
    secrets: Arc<dyn SecretResolver>,
    /// The host's PATH when the executor was built; the only host variable a child sees.
    path: Option<OsString>,
    /// Confinement of every spawn; `None` runs commands as rdev's own user, unconfined.
    sandbox: Option<Arc<Sandbox>>,
    /// Tracks every process of an unconfined spawn (the sandbox's PID namespace and cgroup
    /// do it when confined); `None` leaves only the process-group kill.
    tracker: Option<Arc<ProcessTracker>>,
}

impl LocalExecutor {
    /// Each project's workspace is `<root>/<project-id>`, created on first use.
    pub fn per_project(
        root: impl Into<std::path::PathBuf>,
        secrets: Arc<dyn SecretResolver>,
    ) -> Self {
        Self::new(WorkspaceLayout::PerProject { root: root.into() }, secrets)
    }

    /// Every project runs in `dir` (the CLI's `--dir`).
    pub fn fixed_dir(dir: impl Into<std::path::PathBuf>, secrets: Arc<dyn SecretResolver>) -> Self {
        Self::new(WorkspaceLayout::Fixed { dir: dir.into() }, secrets)
    }

    /// An executor with the given layout, passing the host's current PATH to children.
    pub fn new(layout: WorkspaceLayout, secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            layout,
            secrets,
            path: std::env::var_os("PATH"),
            sandbox: None,
            tracker: None,
        }
    }

    /// Tracks the whole process tree of every unconfined spawn with `tracker`, so escapes
    /// from the process group die with their command and a dead host's leftovers die
    /// before the project's next spawn.
    pub fn tracked(mut self, tracker: Arc<ProcessTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Confines every spawn (and `connect`) with `sandbox`.
    pub fn confined(mut self, sandbox: Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The sandbox in use, if any.
    pub fn sandbox(&self) -> Option<&Arc<Sandbox>> {
        self.sandbox.as_ref()
    }

    /// How project ids map to directories.
    pub fn layout(&self) -> &WorkspaceLayout {
        &self.layout
    }

    /// Inside the sandbox a missing program only shows as exit 127: say it at spawn.
    fn check_program(
        &self,
        target: &sandbox::Target<'_>,
        env: &[(String, String)],
    ) -> Result<(), ExecError> {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| self.path.clone());
        if !sandbox::program_exists(target.program, target.cwd, path.as_deref()) {
            return Err(ExecError::SpawnFailed {
                program: target.program.to_owned(),
                reason: "no such program on PATH".to_owned(),
            });
        }
        Ok(())
    }

    /// A child's whole environment, in order (a later entry replaces an earlier one): HOME,
    /// the host's PATH, the egress proxy when confined, the spec's own variables (a provider
    /// may set its own PATH or HOME deliberately), and last the tracking tag (a provider
    /// cannot choose its processes' tag).
    fn child_env(
        &self,
        home: &std::path::Path,
        env: Vec<(String, String)>,
        tag: Option<String>,
    ) -> Vec<(String, OsString)> {
        let mut all: Vec<(String, OsString)> = vec![("HOME".to_owned(), home.into())];
        if let Some(path) = &self.path {
            all.push(("PATH".to_owned(), path.clone()));
        }
        if let Some(sandbox) = &self.sandbox {
            all.extend(
                sandbox
                    .proxy_env()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into())),
            );
        }
        all.extend(env.into_iter().map(|(k, v)| (k, v.into())));
        if let Some(tag) = tag {
            all.push((tracking::TAG_VAR.to_owned(), tag.into()));
        }
        all
    }

    /// The sandboxed command for `target`, what to do once its leader exits, and the
    /// project's egress notices.
    async fn confined_command(
        &self,
        sandbox: &Sandbox,
        target: &sandbox::Target<'_>,
        env: &[(String, String)],
    ) -> Result<(tokio::process::Command, Reaping, Notices), ExecError> {
        self.check_program(target, env)?;
        let prepared = sandbox.prepare(target).await?;
        let group = prepared.group;
        let reaping = Reaping {
            signal_codes: true,
            cleanup: group.map(|g| Box::new(move || g.finish()) as Box<_>),
        };
        Ok((prepared.command, reaping, prepared.notices))
    }

    /// Sets up tracking of the spawn's process tree (after killing the project's leftovers
    /// of dead hosts): the child joins its cgroup before exec; returns what kills the tree
    /// once the program exits, and the tag its environment must carry.
    async fn track(
        &self,
        project: &ProjectId,
        command: &mut tokio::process::Command,
    ) -> Result<(Reaping, Option<String>), ExecError> {
        let Some(tracker) = self.tracker.clone() else {
            return Ok((Reaping::default(), None));
        };
        let project = project.as_str().to_owned();
        let tracked = tokio::task::spawn_blocking(move || tracker.track(&project))
            .await
            .map_err(|e| ExecError::Io(format!("tracking the command's processes: {e}")))?
            .map_err(|e| ExecError::Io(format!("the command's cgroup: {e}")))?;
        let fds = tracked.join_fds();
        if !fds.is_empty() {
            // SAFETY: joining writes to descriptors opened before the fork, nothing else.
            unsafe {
                command.pre_exec(move || tracking::join(&fds));
            }
        }
        let tag = tracked.env().1.to_owned();
        let reaping = Reaping {
            signal_codes: false,
            cleanup: Some(Box::new(move || tracked.finish())),
        };
        Ok((reaping, Some(tag)))
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn spawn(
        &self,
        project: &ProjectId,
        spec: SpawnSpec,
    ) -> Result<SpawnedProcess, ExecError> {
        let workspace = self.layout.prepare(project)?;
        let cwd = workspace.working_dir(&spec.program, spec.working_dir.as_deref())?;
        let env = resolve_env(self.secrets.as_ref(), spec.env).await?;

        let mut tag = None;
        let (mut command, reaping, notices) = match &self.sandbox {
            Some(sandbox) => {
                let target = sandbox::Target {
                    project: project.as_str(),
                    workspace: &workspace.root,
                    cwd: &cwd,
                    program: &spec.program,
                    args: &spec.args,
                };
                if sandbox.shared() {
                    self.check_program(&target, &env)?;
                    let env = self.child_env(&workspace.home, env, None);
                    return sandbox.spawn_shared(&target, env).await;
                }
                let (command, reaping, notices) =
                    self.confined_command(sandbox, &target, &env).await?;
                (command, reaping, Some(notices))
            }
            None => {
                let mut command = tokio::process::Command::new(&spec.program);
                command.args(&spec.args).current_dir(&cwd);
                let reaping;
                (reaping, tag) = self.track(project, &mut command).await?;
                (command, reaping, None)
            }
        };
        command
            .env_clear()
            .envs(self.child_env(&workspace.home, env, tag))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a signal reaches everything the program started.
            .process_group(0);

        let mut child = command.spawn().map_err(|e| ExecError::SpawnFailed {
            program: spec.program.clone(),
            reason: e.to_string(),
        })?;
        let io_missing =
            || ExecError::Io(format!("{:?} started without piped stdio", spec.program));
        let stdin = child.stdin.take().ok_or_else(io_missing)?;
        let stdout = child.stdout.take().ok_or_else(io_missing)?;
        let stderr = child.stderr.take().ok_or_else(io_missing)?;
        let control = LocalProcess::start_with(child, &spec.program, reaping)?;
        Ok(SpawnedProcess {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            control: Arc::new(control),
            notices,
        })
    }

    async fn connect(
        &self,
        project: &ProjectId,
        port: u16,
    ) -> Result<Box<dyn ProjectConnection>, ExecError> {
        if let Some(sandbox) = &self.sandbox {
            // The project's own loopback, which no other project can reach.
            let stream =
                sandbox
                    .connect(project.as_str(), port)
                    .await
                    .map_err(|e| ExecError::Connect {
                        port,
                        reason: e.to_string(),
                    })?;
            return Ok(Box::new(stream));
        }
        // Unconfined, every project's services listen on this machine's loopback.
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| ExecError::Connect {
                port,
                reason: e.to_string(),
            })?;
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests;
