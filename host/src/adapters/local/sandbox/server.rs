//! One project's sandbox server seen from the host: the bubblewrap process whose command is
//! `rdev-sandbox-exec --serve`, the control socket to it, and the handshake that starts one
//! command (protocol in `rdev_sandbox_exec::protocol`).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rdev_sandbox_exec::protocol::{Exit, GO, HELLO, READY};
use rdev_sandbox_exec::unix::{Received, pass_credentials, receive, send_fds};
use tokio::io::AsyncReadExt;

use crate::ports::{ExecError, ExitStatus};

/// How long a server may take to greet the host or to fork a command before it counts as
/// wedged (and is replaced).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a command was not started.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server is dead or does not answer: start a new one and try again.
    Gone(String),
    /// The request itself failed.
    Refused(String),
}

/// A running server; dropping it kills its sandbox (and every command still in it).
pub(super) struct Server {
    control: OwnedFd,
    bwrap: std::sync::Mutex<std::process::Child>,
    /// The server's pid on the host.
    pid: i32,
}

/// A forked command waiting for [`Pending::go`].
pub(super) struct Pending {
    /// The command's pid (and process group) on the host.
    pub pid: i32,
    socket: UnixStream,
}

impl Server {
    /// Waits for the greeting of the server `bwrap` runs; `control` is the host's end of its
    /// control socket, with credentials passing on.
    pub fn new(bwrap: std::process::Child, control: OwnedFd) -> std::io::Result<Self> {
        // Built first, so a server that never greets is killed on the way out.
        let mut server = Self {
            control,
            bwrap: std::sync::Mutex::new(bwrap),
            pid: 0,
        };
        let mut poll = libc::pollfd {
            fd: server.control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = ANSWER_TIMEOUT.as_millis() as libc::c_int;
        // SAFETY: poll over one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, millis) } != 1 {
            return Err(std::io::Error::other(
                "the sandbox server did not start in time",
            ));
        }
        match receive(server.control.as_raw_fd())? {
            Received {
                byte: Some(HELLO),
                pid: Some(pid),
                ..
            } => {
                server.pid = pid;
                Ok(server)
            }
            _ => Err(std::io::Error::other(
                "the sandbox server ended before it was ready (its reason is in the log)",
            )),
        }
    }

    /// The server's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether its bubblewrap still runs (the sandbox ends with the server).
    pub fn alive(&self) -> bool {
        self.bwrap
            .lock()
            .ok()
            .is_some_and(|mut child| matches!(child.try_wait(), Ok(None)))
    }

    /// Has the server fork `message`'s command with `stdio` (the child's ends of its stdin,
    /// stdout and stderr) and waits until it is forked. Blocking.
    pub fn request(&self, message: &[u8], stdio: [OwnedFd; 3]) -> Result<Pending, Failure> {
        let gone = |what: &str, e: std::io::Error| Failure::Gone(format!("{what}: {e}"));
        let (mut ours, theirs) =
            UnixStream::pair().map_err(|e| Failure::Refused(format!("a socket pair: {e}")))?;
        pass_credentials(&ours).map_err(|e| Failure::Refused(format!("SO_PASSCRED: {e}")))?;
        let fds = [
            theirs.as_raw_fd(),
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ];
        send_fds(self.control.as_raw_fd(), b'C', &fds)
            .map_err(|e| gone("sending to the sandbox server", e))?;
        drop((theirs, stdio));
        ours.set_write_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| ours.set_read_timeout(Some(ANSWER_TIMEOUT)))
            .map_err(|e| Failure::Refused(format!("socket timeouts: {e}")))?;
        ours.write_all(message)
            .map_err(|e| gone("writing the request to the sandbox server", e))?;
        let answer = receive(ours.as_raw_fd())
            .map_err(|e| gone("waiting for the sandbox server to fork", e))?;
        match (answer.byte, answer.pid) {
            (Some(READY), Some(pid)) if pid > 0 => {
                ours.set_read_timeout(None)
                    .map_err(|e| Failure::Refused(format!("socket timeouts: {e}")))?;
                Ok(Pending { pid, socket: ours })
            }
            (None, _) => Err(Failure::Gone(
                "the sandbox server ended before forking".to_owned(),
            )),
            _ => Err(Failure::Refused(
                "the sandbox server could not start the command (its reason is on the \
                 command's stderr)"
                    .to_owned(),
            )),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(child) = self.bwrap.get_mut() {
            // Already gone is fine; the namespace dies with bubblewrap.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pending {
    /// Lets the command exec (it is in its cgroups now); the socket then carries its end.
    pub fn go(mut self) -> std::io::Result<tokio::net::UnixStream> {
        self.socket.write_all(&[GO])?;
        self.socket.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(self.socket)
    }
}

/// The command's end as the server reports it on its socket.
pub(super) async fn exit(mut socket: tokio::net::UnixStream) -> Result<ExitStatus, ExecError> {
    let mut report = [0u8; Exit::LEN];
    match socket.read_exact(&mut report).await {
        Ok(_) => match Exit::decode(&report) {
            Some(Exit::Code(code)) => Ok(ExitStatus {
                code: Some(code),
                signal: None,
            }),
            Some(Exit::Signal(signal)) => Ok(ExitStatus {
                code: None,
                signal: Some(signal),
            }),
            None => Err(ExecError::Io(
                "the sandbox server sent a malformed exit report".to_owned(),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ExecError::Io(
            "the project's sandbox ended before the command did (its server was killed or \
             replaced)"
                .to_owned(),
        )),
        Err(e) => Err(ExecError::Io(format!(
            "reading the command's exit from the sandbox server: {e}"
        ))),
    }
}
