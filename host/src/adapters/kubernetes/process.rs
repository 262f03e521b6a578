//! A process started by exec in a pod: its exit status comes from the status channel, and
//! signals go to its recorded process group through a second exec.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::AttachParams;
use tokio::sync::watch;

use super::wrapper::SIGNAL_SCRIPT;
use crate::ports::{ExecError, ExitStatus, ProcessControl, Signal};

type Outcome = Option<Result<ExitStatus, ExecError>>;

/// Where a process lives, enough to reach its group again.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) pods: Api<Pod>,
    pub(super) pod: String,
    pub(super) container: Option<String>,
    pub(super) pidfile: String,
    /// The tag every process of the spawn carries in its environment.
    pub(super) tag: String,
}

impl Target {
    /// Runs the signal script in the pod and waits for it to finish.
    async fn signal(&self, signal: Signal) -> Result<(), ExecError> {
        let name = match signal {
            Signal::Interrupt => "INT",
            Signal::Terminate => "TERM",
            Signal::Kill => "KILL",
        };
        let mut params = AttachParams::default().stdout(false).stderr(true);
        if let Some(container) = &self.container {
            params = params.container(container);
        }
        let command = [
            "sh",
            "-c",
            SIGNAL_SCRIPT,
            "rdev-signal",
            self.pidfile.as_str(),
            name,
            self.tag.as_str(),
        ];
        let mut attached = self
            .pods
            .exec(&self.pod, command, &params)
            .await
            .map_err(|e| ExecError::Io(format!("signal exec in pod {}: {e}", self.pod)))?;
        let status = match attached.take_status() {
            Some(status) => status.await,
            None => None,
        };
        match exit_status(status) {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(ExecError::Io(format!(
                "signal exec in pod {} exited with {:?}",
                self.pod, status.code
            ))),
            Err(e) => Err(e),
        }
    }
}

/// The exit status the status channel reports: `Success`, or `NonZeroExitCode` with the
/// code in `details.causes[reason=ExitCode]`. Anything else is a failure of the exec itself.
pub(super) fn exit_status(status: Option<Status>) -> Result<ExitStatus, ExecError> {
    let Some(status) = status else {
        return Err(ExecError::Io(
            "exec stream ended without an exit status".to_owned(),
        ));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(ExitStatus {
            code: Some(0),
            signal: None,
        });
    }
    let reason = status.reason.as_deref().unwrap_or_default();
    let code = (reason == "NonZeroExitCode")
        .then(|| {
            status
                .details
                .as_ref()
                .and_then(|details| details.causes.as_ref())
                .and_then(|causes| {
                    causes
                        .iter()
                        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
                        .and_then(|cause| cause.message.as_deref())
                        .and_then(|message| message.parse::<i32>().ok())
                })
        })
        .flatten();
    match code {
        Some(code) => Ok(ExitStatus {
            code: Some(code),
            signal: None,
        }),
        None => Err(ExecError::Io(format!(
            "exec failed: {} ({reason})",
            status.message.as_deref().unwrap_or_default()
        ))),
    }
}

/// The control half of a process running in a pod.
pub(super) struct KubeProcess {
    target: Target,
    outcome: watch::Receiver<Outcome>,
    /// Set once a signal was sent: a shell reports a signalled child as 128 + signal.
    signalled: AtomicBool,
}

impl KubeProcess {
    /// Watches the exec's status channel; `attached` stays alive until the status arrives.
    pub(super) fn start(target: Target, mut attached: kube::api::AttachedProcess) -> Arc<Self> {
        let (tx, rx) = watch::channel::<Outcome>(None);
        let status = attached.take_status();
        tokio::spawn(async move {
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            let _ = tx.send(Some(exit_status(status)));
            drop(attached);
        });
        Arc::new(Self {
            target,
            outcome: rx,
            signalled: AtomicBool::new(false),
        })
    }

    fn finished(&self) -> bool {
        self.outcome.borrow().is_some()
    }
}

#[async_trait]
impl ProcessControl for KubeProcess {
    async fn wait(&self) -> Result<ExitStatus, ExecError> {
        let mut outcome = self.outcome.clone();
        let result = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecError::Io("exec status watcher ended".to_owned()))?
            .clone()
            .unwrap_or_else(|| Err(ExecError::Io("exec status missing".to_owned())));
        let status = result?;
        match status.code {
            Some(code)
                if code > 128 && code <= 128 + 64 && self.signalled.load(Ordering::SeqCst) =>
            {
                Ok(ExitStatus {
                    code: None,
                    signal: Some(code - 128),
                })
            }
            _ => Ok(status),
        }
    }

    async fn signal(&self, signal: Signal) -> Result<(), ExecError> {
        if self.finished() {
            return Ok(());
        }
        self.signalled.store(true, Ordering::SeqCst);
        self.target.signal(signal).await
    }
}

impl Drop for KubeProcess {
    /// Nobody can wait for or cancel the process any more: kill its group rather than leave
    /// it running in the pod, as dropping a local process does.
    fn drop(&mut self) {
        if self.finished() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let target = self.target.clone();
            runtime.spawn(async move {
                if let Err(e) = target.signal(Signal::Kill).await {
                    tracing::warn!(pod = %target.pod, error = %e, "could not kill an abandoned process group");
                }
            });
        }
    }
}
