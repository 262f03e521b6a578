//! The helper's server mode: one long-lived process per project inside its bubblewrap
//! sandbox, already confined by Landlock and seccomp, that forks every command of the project
//! (so the namespaces are made once per project, not once per spawn). Single-threaded: a
//! `poll` over the control socket and a signalfd for SIGCHLD.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Error, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::protocol::{CONTROL_FD, Exit, GO, HELLO, MAX_REQUEST, READY, Request};
use crate::unix::{Received, receive, send_fds};

/// How long the server waits for a request body the host announced.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until the host closes the control socket; returns the reason when it cannot.
pub fn serve() -> String {
    // SAFETY: close_range on descriptors the server never uses (bubblewrap's leftovers).
    unsafe {
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    let signals = match child_signals() {
        Ok(fd) => fd,
        Err(e) => return format!("signalfd: {e}"),
    };
    if let Err(e) = send_fds(CONTROL_FD, HELLO, &[]) {
        return format!("greeting the host: {e}");
    }
    let mut running: HashMap<libc::pid_t, OwnedFd> = HashMap::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: CONTROL_FD,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll over two valid pollfd entries.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let error = Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return format!("poll: {error}");
        }
        if fds[1].revents != 0 {
            drain(&signals);
            reap(&mut running);
        }
        if fds[0].revents & libc::POLLIN != 0 {
            match receive(CONTROL_FD) {
                Ok(Received { byte: None, .. }) => return String::new(),
                Ok(Received { fds, .. }) => start(fds, &mut running),
                Err(e) => return format!("the control socket: {e}"),
            }
        } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return String::new();
        }
    }
}

/// SIGCHLD blocked and readable from a descriptor.
fn child_signals() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local set, then signalfd on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) < 0 {
            return Err(Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn drain(signals: &OwnedFd) {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    // SAFETY: reads into a buffer of the size given, until the non-blocking fd is empty.
    while unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// Reports every command that ended to the host and forgets it.
fn reap(running: &mut HashMap<libc::pid_t, OwnedFd>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(socket) = running.remove(&pid) {
            report(&socket, Exit::from_wait_status(status));
        }
    }
}

fn report(socket: &OwnedFd, exit: Exit) {
    let bytes = exit.encode();
    // SAFETY: send of a local buffer; a host that went away is not an error here.
    unsafe {
        libc::send(
            socket.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        );
    }
}

/// Reads the request from the command socket and forks the command.
fn start(fds: Vec<OwnedFd>, running: &mut HashMap<libc::pid_t, OwnedFd>) {
    let Ok([socket, stdin, stdout, stderr]) = <[OwnedFd; 4]>::try_from(fds) else {
        eprintln!("rdev sandbox: a request without its four descriptors");
        return;
    };
    let stdio = [stdin, stdout, stderr];
    let request = match read_request(&socket) {
        Ok(request) => request,
        Err(e) => {
            fail(&socket, &stdio[2], &format!("the request: {e}"));
            return;
        }
    };
    let mut command = std::process::Command::new(&request.program);
    command
        .args(&request.args)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&request.cwd);
    // SAFETY: this process is single-threaded, so the child may do anything before exec.
    match unsafe { libc::fork() } {
        -1 => fail(
            &socket,
            &stdio[2],
            &format!("fork: {}", Error::last_os_error()),
        ),
        0 => child(&socket, &stdio, command, &request.program),
        pid => {
            running.insert(pid, socket);
        }
    }
}

/// Tells the host the command could not start (exit 127, the reason on its stderr).
fn fail(socket: &OwnedFd, stderr: &OwnedFd, reason: &str) {
    let line = format!("rdev sandbox: {reason}\n");
    // SAFETY: write of a local buffer to the command's stderr.
    unsafe {
        libc::write(stderr.as_raw_fd(), line.as_ptr().cast(), line.len());
    }
    report(socket, Exit::Code(crate::FAILED));
}

fn read_request(socket: &OwnedFd) -> Result<Request, String> {
    let mut stream = UnixStream::from(socket.try_clone().map_err(|e| e.to_string())?);
    stream
        .set_read_timeout(Some(BODY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).map_err(|e| e.to_string())?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_REQUEST {
        return Err(format!("{length} bytes is too large"));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Request::decode(&body)
}

/// The forked child: its own session and standard streams, its own Landlock domain (it can
/// signal and trace only its own descendants, not the server or the project's other
/// commands), nothing else open; it waits until the host has put it in its cgroups.
fn child(
    socket: &OwnedFd,
    stdio: &[OwnedFd; 3],
    mut command: std::process::Command,
    program: &OsString,
) -> ! {
    // SAFETY: descriptor and session calls in the single-threaded child before exec.
    unsafe {
        libc::setsid();
        for (target, fd) in stdio.iter().enumerate() {
            libc::dup2(fd.as_raw_fd(), target as RawFd);
        }
        libc::dup2(socket.as_raw_fd(), CONTROL_FD);
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let error = match crate::own_domain() {
        Ok(()) => {
            crate::restore_signals();
            unblock_signals();
            let mut answer = [0u8; 1];
            // SAFETY: one-byte write and read on the command socket.
            let go = unsafe {
                libc::write(CONTROL_FD, [READY].as_ptr().cast(), 1) == 1
                    && libc::read(CONTROL_FD, answer.as_mut_ptr().cast(), 1) == 1
            };
            if !go || answer[0] != GO {
                // The host could not place the command in its cgroups: it never runs.
                // SAFETY: _exit without running the parent's exit handlers.
                unsafe { libc::_exit(crate::FAILED) }
            }
            format!("cannot run {program:?}: {}", command.exec())
        }
        Err(e) => format!("landlock: {e}"),
    };
    eprintln!("rdev sandbox: {error}");
    // SAFETY: as above.
    unsafe { libc::_exit(crate::FAILED) }
}

fn unblock_signals() {
    // SAFETY: emptying the mask of this single-threaded child.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
