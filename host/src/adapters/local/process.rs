//! A spawned local process group: its exit status, shared by every waiter, and signals to the
//! whole group.

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::ports::{ExecError, ExitStatus, ProcessControl, Signal};

type Outcome = Option<Result<ExitStatus, ExecError>>;

/// Controls one process group whose leader is the spawned program.
///
/// The group's lifetime ends with its leader's: when the leader exits, whatever it left
/// running in its group is killed, so no orphan keeps the output pipes open or outlives the
/// request. Dropping the last handle of a still-running process kills its group too.
pub struct LocalProcess {
    pgid: Pid,
    status: watch::Receiver<Outcome>,
}

impl LocalProcess {
    /// Takes ownership of a child started as the leader of its own process group and reaps it
    /// in the background.
    pub fn start(child: tokio::process::Child, program: &str) -> Result<Self, ExecError> {
        Self::start_with(child, program, Reaping::default())
    }

    /// As [`LocalProcess::start`], with what to do when the leader has exited.
    pub fn start_with(
        mut child: tokio::process::Child,
        program: &str,
        reaping: Reaping,
    ) -> Result<Self, ExecError> {
        let raw = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| ExecError::SpawnFailed {
                program: program.to_owned(),
                reason: "the process exited before its id could be read".to_owned(),
            })?;
        let name = program.to_owned();
        let exit = async move {
            child
                .wait()
                .await
                .map(convert)
                .map_err(|e| ExecError::Io(format!("waiting for {name:?}: {e}")))
        };
        Ok(Self::watch(raw, exit, reaping))
    }

    /// Controls the group led by host pid `pgid`, whose end `exit` reports (a child of
    /// someone else, such as a project's sandbox server).
    pub fn watch(
        pgid: i32,
        exit: impl std::future::Future<Output = Result<ExitStatus, ExecError>> + Send + 'static,
        reaping: Reaping,
    ) -> Self {
        let pgid = Pid::from_raw(pgid);
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let outcome = exit.await.map(|status| match reaping.signal_codes {
                true => decode_signal(status),
                false => status,
            });
            // Leftovers of the group; ESRCH (none left) is the common case.
            let _ = killpg(pgid, NixSignal::SIGKILL);
            if let Some(cleanup) = reaping.cleanup {
                let _ = tokio::task::spawn_blocking(cleanup).await;
            }
            // Nobody listening is fine: every handle was dropped.
            let _ = tx.send(Some(outcome));
        });
        Self { pgid, status: rx }
    }

    fn exited(&self) -> bool {
        self.status.borrow().is_some()
    }
}

/// What happens after a leader exits, besides killing its group.
#[derive(Default)]
pub struct Reaping {
    /// The leader reports a command's death by signal N as exit code 128 + N (bubblewrap
    /// does): report it as the signal.
    pub signal_codes: bool,
    /// Runs (off the async threads) once the group is dead, before waiters hear of it.
    pub cleanup: Option<Box<dyn FnOnce() + Send>>,
}

fn decode_signal(status: ExitStatus) -> ExitStatus {
    match status.code {
        Some(code) if (129..=128 + 64).contains(&code) => ExitStatus {
            code: None,
            signal: Some(code - 128),
        },
        _ => status,
    }
}

fn convert(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus {
        code: status.code(),
        signal: status.signal(),
    }
}

#[async_trait]
impl ProcessControl for LocalProcess {
    async fn wait(&self) -> Result<ExitStatus, ExecError> {
        let mut status = self.status.clone();
        let outcome = status
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ExecError::Io("the process reaper stopped unexpectedly".to_owned()))?;
        match &*outcome {
            Some(result) => result.clone(),
            None => Err(ExecError::Io(
                "the process reaper reported nothing".to_owned(),
            )),
        }
    }

    async fn signal(&self, signal: Signal) -> Result<(), ExecError> {
        let signal = match signal {
            Signal::Interrupt => NixSignal::SIGINT,
            Signal::Terminate => NixSignal::SIGTERM,
            Signal::Kill => NixSignal::SIGKILL,
        };
        match killpg(self.pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            // The leader was reaped and its group is empty: its id may belong to someone else.
            Err(_) if self.exited() => Ok(()),
            Err(e) => Err(ExecError::Io(format!(
                "signalling process group {}: {e}",
                self.pgid
            ))),
        }
    }

    fn id(&self) -> Option<u32> {
        u32::try_from(self.pgid.as_raw()).ok()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = killpg(self.pgid, NixSignal::SIGKILL);
        }
    }
}
