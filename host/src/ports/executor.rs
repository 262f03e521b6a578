//! Where processes run: a local directory or a Kubernetes pod. Providers never see which.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::domain::ProjectId;

/// An environment value as a provider names it; secrets are resolved by the executor at
/// spawn time, never earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Plain(String),
    Secret { name: String, required: bool },
}

/// What to run. The program has already passed the plugin's allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, EnvValue)>,
    /// Relative to the workspace root; already checked not to leave it.
    pub working_dir: Option<String>,
}

impl SpawnSpec {
    /// A program the host itself runs at the workspace root, with no environment of its own.
    pub fn new(program: &str, args: &[&str]) -> Self {
        Self {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            working_dir: None,
        }
    }

    /// Adds variables whose values are not secret.
    #[must_use]
    pub fn with_plain_env(mut self, vars: &[(&str, &str)]) -> Self {
        let plain = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), EnvValue::Plain((*v).to_owned())));
        self.env.extend(plain);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Delivered to the whole process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("workspace for project {project} is not available: {reason}")]
    WorkspaceUnavailable { project: String, reason: String },
    #[error("could not start {program:?}: {reason}")]
    SpawnFailed { program: String, reason: String },
    #[error("credential {0:?} does not exist")]
    MissingSecret(String),
    #[error("credential store failed: {0}")]
    Secrets(String),
    #[error("could not connect to port {port} in the workspace: {reason}")]
    Connect { port: u16, reason: String },
    #[error("process I/O failed: {0}")]
    Io(String),
}

pub type BoxedReader = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxedWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// Waits for and signals a process; shared between the reader of its exit status and
/// whoever cancels it.
#[async_trait]
pub trait ProcessControl: Send + Sync {
    /// Resolves when the process has exited; may be awaited repeatedly and concurrently.
    async fn wait(&self) -> Result<ExitStatus, ExecError>;
    /// Signals the process group. Signalling a process that already exited is not an error.
    async fn signal(&self, signal: Signal) -> Result<(), ExecError>;
    /// The process (group) id on this machine, for operators; `None` where there is none
    /// (a process in a pod).
    fn id(&self) -> Option<u32> {
        None
    }
}

/// A started process with its standard streams.
pub struct SpawnedProcess {
    pub stdin: BoxedWriter,
    pub stdout: BoxedReader,
    pub stderr: BoxedReader,
    pub control: Arc<dyn ProcessControl>,
    /// Warnings about the process the executor learns while it runs (a confined command's
    /// refused egress), for the command's event stream; `None` when it has none to give.
    pub notices: Option<tokio::sync::broadcast::Receiver<String>>,
}

/// A byte stream to a port inside the workspace (for project HTTP).
pub trait ProjectConnection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ProjectConnection for T {}

#[async_trait]
pub trait Executor: Send + Sync {
    /// Short name for listings and logs (`local`, `kubernetes`).
    fn kind(&self) -> &'static str;

    /// Starts a process in the project's workspace, with PATH, a per-project HOME and
    /// `spec.env`, and nothing else of the host's environment.
    async fn spawn(
        &self,
        project: &ProjectId,
        spec: SpawnSpec,
    ) -> Result<SpawnedProcess, ExecError>;

    /// Opens a connection to `port` inside the project's workspace.
    async fn connect(
        &self,
        project: &ProjectId,
        port: u16,
    ) -> Result<Box<dyn ProjectConnection>, ExecError>;
}
