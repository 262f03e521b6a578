//! Spawns through a long-lived sandbox per project: one bubblewrap (its namespaces and
//! mounts made once) whose server forks each command, already under the project's Landlock
//! and seccomp. Each command still gets its own cgroup (joined before it execs), session and
//! Landlock domain; a dead or wedged server is replaced at the next spawn.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;

use rdev_sandbox_exec::protocol::{CONTROL_FD, Request};
use rdev_sandbox_exec::unix::{pass_credentials, seqpacket_pair};
use tokio::net::unix::pipe;

use super::server::{self, Failure, Pending, Server};
use super::{ProjectNet, Sandbox, Target};
use crate::adapters::local::{LocalProcess, Reaping};
use crate::ports::{ExecError, SpawnedProcess};

/// A thread that outlives every server it starts: bubblewrap's `--die-with-parent` watches
/// the thread that forked it, so servers must not be forked from pooled threads that end.
pub(super) struct Spawner {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Spawner {
    /// Starts the thread; it ends (and the servers with it) when the sandbox is dropped.
    pub fn new() -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("rdev-sandbox-servers".to_owned())
            .spawn(move || queue.into_iter().for_each(|job| job()))?;
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .map_err(|_| std::io::Error::other("the sandbox's server thread ended"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the sandbox's server thread ended"))
    }
}

/// A pipe as `(read, write)`, both ends close-on-exec.
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors, owned here from then on.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// The command's standard streams: the child's ends, and the host's.
fn stdio() -> std::io::Result<([OwnedFd; 3], (OwnedFd, OwnedFd, OwnedFd))> {
    let (stdin_read, stdin_write) = pipe_pair()?;
    let (stdout_read, stdout_write) = pipe_pair()?;
    let (stderr_read, stderr_write) = pipe_pair()?;
    Ok((
        [stdin_read, stdout_write, stderr_write],
        (stdin_write, stdout_read, stderr_read),
    ))
}

/// Puts the control socket where the server looks for it, without close-on-exec. Runs in
/// the forked child: async-signal-safe calls only.
fn hand_over(fd: i32) -> std::io::Result<()> {
    // SAFETY: descriptor calls on descriptors this child owns.
    let result = unsafe {
        if fd == CONTROL_FD {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, CONTROL_FD)
        }
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Sandbox {
    /// The project's server's pid on the host, if one runs (for diagnostics and tests).
    pub async fn server_pid(&self, project: &str) -> Option<i32> {
        let servers = self.servers.lock().await;
        servers.get(project).filter(|s| s.alive()).map(|s| s.pid())
    }

    /// Starts `target`'s command through the project's server, with exactly `env`.
    pub(in crate::adapters::local) async fn spawn_shared(
        &self,
        target: &Target<'_>,
        env: Vec<(String, OsString)>,
    ) -> Result<SpawnedProcess, ExecError> {
        let failed = |reason: String| ExecError::SpawnFailed {
            program: target.program.to_owned(),
            reason,
        };
        self.adopt(target.workspace)
            .map_err(|e| failed(format!("giving the workspace to the sandbox user: {e}")))?;
        self.refresh_policy(target.project).await.map_err(failed)?;
        let net = self
            .network(target.project)
            .await
            .map_err(|e| failed(format!("the project's network: {e}")))?;
        let cgroups = self.cgroups.as_ref().ok_or_else(|| {
            failed("a shared sandbox needs a cgroup per command, and there is none".to_owned())
        })?;
        cgroups.reap_leftovers(target.project);
        let group = cgroups
            .create(target.project, &self.config.limits)
            .map_err(|e| failed(format!("the command's cgroup: {e}")))?;
        let message = Request {
            cwd: target.cwd.into(),
            program: target.program.into(),
            args: target.args.iter().map(OsString::from).collect(),
            env: env.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
        .encode()
        .map_err(&failed);
        let message = match message {
            Ok(message) => Arc::new(message),
            Err(e) => {
                group.finish();
                return Err(e);
            }
        };
        let mut restarted = false;
        let (pending, host_ends) = loop {
            let attempt = self.fork(target, &net, message.clone()).await;
            match attempt {
                Ok(started) => break started,
                Err(Failure::Gone(reason)) if !restarted => {
                    tracing::warn!(project = target.project, %reason, "replacing the project's sandbox server");
                    self.forget(target.project).await;
                    restarted = true;
                }
                Err(Failure::Gone(reason) | Failure::Refused(reason)) => {
                    group.finish();
                    return Err(failed(reason));
                }
            }
        };
        if let Err(e) = group.place(pending.pid) {
            // The child never gets its go-ahead: it exits without running anything.
            drop(pending);
            group.finish();
            return Err(failed(format!("the command's cgroup: {e}")));
        }
        let pid = pending.pid;
        let io = |e: std::io::Error| ExecError::Io(format!("the command's streams: {e}"));
        let socket = pending.go().map_err(io)?;
        let (stdin, stdout, stderr) = host_ends;
        let control = LocalProcess::watch(
            pid,
            server::exit(socket),
            Reaping {
                signal_codes: false,
                cleanup: Some(Box::new(move || group.finish())),
            },
        );
        Ok(SpawnedProcess {
            stdin: Box::pin(pipe::Sender::from_owned_fd(stdin).map_err(io)?),
            stdout: Box::pin(pipe::Receiver::from_owned_fd(stdout).map_err(io)?),
            stderr: Box::pin(pipe::Receiver::from_owned_fd(stderr).map_err(io)?),
            control: Arc::new(control),
            notices: Some(net.egress.subscribe()),
        })
    }

    /// One attempt: the project's server (started if needed) forks the command.
    async fn fork(
        &self,
        target: &Target<'_>,
        net: &Arc<ProjectNet>,
        message: Arc<Vec<u8>>,
    ) -> Result<(Pending, (OwnedFd, OwnedFd, OwnedFd)), Failure> {
        let server = self.server(target, net).await.map_err(Failure::Gone)?;
        let (child_ends, host_ends) =
            stdio().map_err(|e| Failure::Refused(format!("the command's pipes: {e}")))?;
        let pending = tokio::task::spawn_blocking(move || server.request(&message, child_ends))
            .await
            .map_err(|e| Failure::Refused(format!("the spawn thread: {e}")))??;
        Ok((pending, host_ends))
    }

    /// The project's running server, started when there is none or it died.
    async fn server(
        &self,
        target: &Target<'_>,
        net: &Arc<ProjectNet>,
    ) -> Result<Arc<Server>, String> {
        let mut servers = self.servers.lock().await;
        if let Some(server) = servers.get(target.project) {
            if server.alive() {
                return Ok(server.clone());
            }
            tracing::warn!(
                project = target.project,
                "the project's sandbox server died; starting a new one"
            );
            servers.remove(target.project);
        }
        let server = Arc::new(self.start_server(target, net).await?);
        servers.insert(target.project.to_owned(), server.clone());
        Ok(server)
    }

    /// Drops the project's server (killing its sandbox) so the next spawn starts another.
    async fn forget(&self, project: &str) {
        let server = self.servers.lock().await.remove(project);
        if let Some(server) = server {
            let _ = tokio::task::spawn_blocking(move || drop(server)).await;
        }
    }

    async fn start_server(
        &self,
        target: &Target<'_>,
        net: &Arc<ProjectNet>,
    ) -> Result<Server, String> {
        let spawner = self
            .spawner
            .as_ref()
            .ok_or("this sandbox spawns every command on its own")?;
        let home = Target {
            cwd: target.workspace,
            program: "",
            args: &[],
            ..*target
        };
        let (arguments, setup) = self
            .invocation(&home, Some(&net.netns), None, true)
            .map_err(|e| e.to_string())?;
        let (ours, theirs) = seqpacket_pair().map_err(|e| format!("a socket pair: {e}"))?;
        pass_credentials(&ours).map_err(|e| format!("SO_PASSCRED: {e}"))?;
        let mut command = std::process::Command::new(&self.bwrap);
        command
            .args(arguments)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        // The namespace descriptor must stay open until the child has joined it.
        let keep = net.clone();
        let raw = theirs.as_raw_fd();
        // SAFETY: the setup and the hand-over only make async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                let _ = &keep;
                setup.run()?;
                hand_over(raw)
            });
        }
        let mut child = spawner
            .run(move || command.spawn())
            .await
            .and_then(|spawned| spawned)
            .map_err(|e| format!("running {}: {e}", self.bwrap.display()))?;
        drop(theirs);
        if let Some(stderr) = child.stderr.take() {
            let project = target.project.to_owned();
            // Its messages (a failed confinement, a bad request) go to rdev's log.
            let _ = std::thread::Builder::new()
                .name("rdev-sandbox-log".to_owned())
                .spawn(move || {
                    for line in std::io::BufReader::new(stderr)
                        .lines()
                        .map_while(Result::ok)
                    {
                        tracing::warn!(project, "sandbox server: {line}");
                    }
                });
        }
        tokio::task::spawn_blocking(move || Server::new(child, ours))
            .await
            .map_err(|e| format!("the sandbox server's start: {e}"))?
            .map_err(|e| format!("the sandbox server: {e}"))
    }
}
