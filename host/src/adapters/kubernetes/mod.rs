//! The `kubernetes` executor: processes run by exec in the project's pod, found by label,
//! through the API server with kube-rs.
//!
//! Exec does not forward signals and closing its stream leaves the remote process running,
//! so every command runs under a small shell wrapper (see `wrapper`) that records its
//! process group; signals and cancellation kill that group with a second exec. The pod image
//! needs `sh` and util-linux `setsid`.
//!
//! Secrets are resolved at spawn and written to the wrapper's stdin, never onto the exec
//! command line: that line is part of the request URL (API server audit logs record it) and
//! of the pod's process list. Inside the pod the values sit in the program's environment,
//! exactly as with the local executor.

mod forward;
mod policy;
mod process;
mod provision;
mod seed;
mod template;
mod wrapper;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::domain::ProjectId;
use crate::ports::{
    EnvValue, ExecError, Executor, ProcessControl, ProjectConnection, SecretResolver, SpawnSpec,
    SpawnedProcess, resolve_env,
};

use forward::ForwardedStream;
pub use policy::{EgressRule, EgressRuleError};
use process::{KubeProcess, Target};
pub use provision::KubernetesProvisioner;
pub use seed::KubernetesSeeder;
pub use template::{DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_POD_UID, DEFAULT_TMP_SIZE, PodTemplate};
use wrapper::Handshake;

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The pod's service account (rdev running inside the cluster).
    InCluster,
    /// A kubeconfig file (`None`: `$KUBECONFIG` or `~/.kube/config`) and context (`None`:
    /// the current one).
    Kubeconfig {
        path: Option<PathBuf>,
        context: Option<String>,
    },
    /// An API server URL used without credentials, as behind `kubectl proxy`.
    Url(String),
}

/// Where project pods are and how commands run in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// The namespace holding the installation's project pods.
    pub namespace: String,
    /// Label that marks a pod as a project workspace; it must have the value `true`.
    pub project_label: String,
    /// Label whose value is the project id.
    pub project_id_label: String,
    /// The container to exec into; `None` for a pod's only container.
    pub container: Option<String>,
    /// The workspace root inside the pod; working directories are relative to it.
    pub workspace_dir: String,
    /// HOME for every command (agent sessions live there, so it belongs on the volume).
    pub home_dir: String,
    /// Where the wrapper keeps process-group files inside the pod.
    pub state_dir: String,
    /// Before each command, kill what other executors' commands (of an rdev that died) left
    /// in the pod. Safe only while at most one command per project runs at a time across
    /// every replica (`max_running_per_project = 1`, the default); else another replica's
    /// live command would be killed.
    pub reap_leftovers: bool,
}

impl KubernetesConfig {
    /// Defaults: the `rdev.orchard9.ai/project` and `rdev.orchard9.ai/project-id` labels,
    /// workspace `/workspace`, HOME `/workspace/.rdev/home`, state in `/tmp`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            project_label: "rdev.orchard9.ai/project".to_owned(),
            project_id_label: "rdev.orchard9.ai/project-id".to_owned(),
            container: None,
            workspace_dir: "/workspace".to_owned(),
            home_dir: "/workspace/.rdev/home".to_owned(),
            state_dir: "/tmp".to_owned(),
            reap_leftovers: true,
        }
    }
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSetupError {
    #[error("in-cluster credentials are not available: {0}")]
    InCluster(String),
    #[error("kubeconfig could not be loaded: {0}")]
    Kubeconfig(String),
    #[error("API server URL {url:?} is invalid: {reason}")]
    Url { url: String, reason: String },
    #[error("Kubernetes client could not be built: {0}")]
    Client(String),
    #[error("listing pods in namespace {namespace} failed: {reason}")]
    Access { namespace: String, reason: String },
}

/// How long the start-up access check waits for the API server.
const ACCESS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs processes in project pods through the API server's exec and port-forward.
pub struct KubernetesExecutor {
    pods: Api<Pod>,
    config: KubernetesConfig,
    secrets: Arc<dyn SecretResolver>,
    /// This executor's id in its processes' tags: other ids in a pod are leftovers.
    boot: String,
}

impl KubernetesExecutor {
    /// An executor over an existing client.
    pub fn new(client: Client, config: KubernetesConfig, secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            pods: Api::namespaced(client, &config.namespace),
            config,
            secrets,
            boot: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Builds the client from `credentials`, then the executor.
    pub async fn connect(
        credentials: Credentials,
        config: KubernetesConfig,
        secrets: Arc<dyn SecretResolver>,
    ) -> Result<Self, KubernetesSetupError> {
        let kube_config = match credentials {
            Credentials::InCluster => kube::Config::incluster()
                .map_err(|e| KubernetesSetupError::InCluster(e.to_string()))?,
            Credentials::Kubeconfig { path, context } => {
                let options = kube::config::KubeConfigOptions {
                    context,
                    ..Default::default()
                };
                match path {
                    Some(path) => {
                        let file = kube::config::Kubeconfig::read_from(&path).map_err(|e| {
                            KubernetesSetupError::Kubeconfig(format!("{}: {e}", path.display()))
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &options).await
                    }
                    None => kube::Config::from_kubeconfig(&options).await,
                }
                .map_err(|e| KubernetesSetupError::Kubeconfig(e.to_string()))?
            }
            Credentials::Url(url) => {
                let uri =
                    url.parse()
                        .map_err(|e: http::uri::InvalidUri| KubernetesSetupError::Url {
                            url: url.clone(),
                            reason: e.to_string(),
                        })?;
                kube::Config::new(uri)
            }
        };
        let client = Client::try_from(kube_config)
            .map_err(|e| KubernetesSetupError::Client(e.to_string()))?;
        Ok(Self::new(client, config, secrets))
    }

    /// Lists at most one pod in the namespace, so a server with an unreachable cluster, bad
    /// credentials or a missing namespace fails at start-up rather than on the first command.
    pub async fn check_access(&self) -> Result<(), KubernetesSetupError> {
        let access = |reason: String| KubernetesSetupError::Access {
            namespace: self.config.namespace.clone(),
            reason,
        };
        let listed = tokio::time::timeout(
            ACCESS_CHECK_TIMEOUT,
            self.pods.list(&ListParams::default().limit(1)),
        )
        .await
        .map_err(|_| access(format!("no answer within {ACCESS_CHECK_TIMEOUT:?}")))?;
        listed.map(drop).map_err(|e| access(e.to_string()))
    }

    /// The settings this executor runs with.
    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }

    fn unavailable(project: &ProjectId, reason: String) -> ExecError {
        ExecError::WorkspaceUnavailable {
            project: project.to_string(),
            reason,
        }
    }

    /// The project's one pod, which must be Running and Ready: its name and uid.
    async fn find_pod(&self, project: &ProjectId) -> Result<(String, String), ExecError> {
        let selector = format!(
            "{}=true,{}={}",
            self.config.project_label,
            self.config.project_id_label,
            project.as_str()
        );
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                Self::unavailable(
                    project,
                    format!(
                        "listing pods in namespace {} failed: {e}",
                        self.config.namespace
                    ),
                )
            })?;
        let live: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect();
        let pod = match live.as_slice() {
            [] => {
                return Err(Self::unavailable(
                    project,
                    format!(
                        "no pod labelled {selector} in namespace {}",
                        self.config.namespace
                    ),
                ));
            }
            [pod] => *pod,
            several => {
                let names: Vec<&str> = several
                    .iter()
                    .filter_map(|pod| pod.metadata.name.as_deref())
                    .collect();
                return Err(Self::unavailable(
                    project,
                    format!(
                        "{} pods labelled {selector}, expected one: {}",
                        several.len(),
                        names.join(", ")
                    ),
                ));
            }
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_else(|| name.clone());
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
        if phase != "Running" {
            return Err(Self::unavailable(
                project,
                format!("pod {name} is {phase}, not Running"),
            ));
        }
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if !ready {
            return Err(Self::unavailable(
                project,
                format!("pod {name} is Running but not Ready"),
            ));
        }
        Ok((name, uid))
    }

    /// HOME first, then the spec's values with secrets resolved now; errors name the
    /// credential or variable, never a value.
    async fn resolve_env(
        &self,
        env: Vec<(String, EnvValue)>,
    ) -> Result<Vec<(String, String)>, ExecError> {
        if let Some((key, _)) = env.iter().find(|(key, _)| !wrapper::valid_key(key)) {
            return Err(ExecError::SpawnFailed {
                program: String::new(),
                reason: format!("environment variable name {key:?} is not valid"),
            });
        }
        let mut resolved = vec![("HOME".to_owned(), self.config.home_dir.clone())];
        resolved.extend(resolve_env(self.secrets.as_ref(), env).await?);
        Ok(resolved)
    }

    fn attach_params(&self) -> AttachParams {
        let params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(true);
        match &self.config.container {
            Some(container) => params.container(container),
            None => params,
        }
    }
}

/// Reads the wrapper's one-byte answer: `Ok(Ok(()))` once the program runs, `Ok(Err(reason))`
/// when the wrapper refused to start it, `Err` when the stream itself broke.
async fn handshake(
    stdout: &mut (impl tokio::io::AsyncRead + Unpin),
    control: &dyn ProcessControl,
    pod: &str,
    dir: &str,
) -> Result<Result<(), String>, ExecError> {
    let mut answer = [0u8; 1];
    let read = stdout
        .read(&mut answer)
        .await
        .map_err(|e| ExecError::Io(format!("reading from pod {pod}: {e}")))?;
    Ok(match (read, Handshake::from_byte(answer[0])) {
        (1, Some(Handshake::Started)) => Ok(()),
        (1, Some(Handshake::NotFound)) => Err(format!("not found in pod {pod}")),
        (1, Some(Handshake::NoDirectory)) => Err(format!(
            "working directory {dir} does not exist in pod {pod}"
        )),
        _ => {
            let status = match control.wait().await {
                Ok(status) => format!("exit code {:?}", status.code),
                Err(e) => e.to_string(),
            };
            Err(format!(
                "the wrapper in pod {pod} ended before starting the program ({status}); \
                 the image needs sh and util-linux setsid"
            ))
        }
    })
}

#[async_trait]
impl Executor for KubernetesExecutor {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn spawn(
        &self,
        project: &ProjectId,
        spec: SpawnSpec,
    ) -> Result<SpawnedProcess, ExecError> {
        let spawn_failed = |reason: String| ExecError::SpawnFailed {
            program: spec.program.clone(),
            reason,
        };
        let dir = wrapper::working_dir(&self.config.workspace_dir, spec.working_dir.as_deref())
            .map_err(spawn_failed)?;
        let env = self
            .resolve_env(spec.env.clone())
            .await
            .map_err(|e| match e {
                ExecError::SpawnFailed { reason, .. } => spawn_failed(reason),
                other => other,
            })?;
        let (pod, uid) = self.find_pod(project).await?;
        let spawn = uuid::Uuid::now_v7().simple();
        let pidfile = format!(
            "{}/rdev-{spawn}.pgid",
            self.config.state_dir.trim_end_matches('/'),
        );
        // Fixed-length parts, so no tag is a prefix of another.
        let scope = format!("k8s:{uid}:");
        let tag = format!("{scope}{}:{spawn}", self.boot);
        let reap = if self.config.reap_leftovers {
            scope
        } else {
            String::new()
        };
        let mut command = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            wrapper::SCRIPT.to_owned(),
            "rdev-exec".to_owned(),
            pidfile.clone(),
            dir.clone(),
            tag.clone(),
            reap,
            spec.program.clone(),
        ];
        command.extend(spec.args.iter().cloned());

        let mut attached = self
            .pods
            .exec(&pod, command, &self.attach_params())
            .await
            .map_err(|e| spawn_failed(format!("exec in pod {pod}: {e}")))?;
        let io_missing = || ExecError::Io(format!("exec in pod {pod} has no stdio"));
        let mut stdin = attached.stdin().ok_or_else(io_missing)?;
        let mut stdout = attached.stdout().ok_or_else(io_missing)?;
        let stderr = attached.stderr().ok_or_else(io_missing)?;
        let target = Target {
            pods: self.pods.clone(),
            pod: pod.clone(),
            container: self.config.container.clone(),
            pidfile,
            tag,
        };
        let control = KubeProcess::start(target, attached);

        stdin
            .write_all(&wrapper::env_header(&env))
            .await
            .map_err(|e| ExecError::Io(format!("writing the environment to pod {pod}: {e}")))?;
        drop(env);
        handshake(&mut stdout, control.as_ref(), &pod, &dir)
            .await?
            .map_err(spawn_failed)?;
        Ok(SpawnedProcess {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            control,
            notices: None,
        })
    }

    async fn connect(
        &self,
        project: &ProjectId,
        port: u16,
    ) -> Result<Box<dyn ProjectConnection>, ExecError> {
        let (pod, _) = self.find_pod(project).await?;
        let connect_failed = |reason: String| ExecError::Connect { port, reason };
        let mut forwarder = self
            .pods
            .portforward(&pod, &[port])
            .await
            .map_err(|e| connect_failed(format!("port-forward to pod {pod}: {e}")))?;
        let stream = forwarder
            .take_stream(port)
            .ok_or_else(|| connect_failed(format!("port-forward to pod {pod} has no stream")))?;
        let error = forwarder.take_error(port).ok_or_else(|| {
            connect_failed(format!("port-forward to pod {pod} has no error channel"))
        })?;
        // The forwarder's task keeps running until the connection closes.
        drop(forwarder);
        Ok(Box::new(ForwardedStream::new(stream, error)))
    }
}
