//! What rdev and a project's sandbox server say to each other. The host sends, on the
//! server's control socket (a `SOCK_SEQPACKET` inherited as [`CONTROL_FD`]), one message per
//! command carrying four descriptors: the command's own stream socket, then its stdin, stdout
//! and stderr. On the command socket the host writes the [`Request`]; the forked child writes
//! [`READY`] (the host reads its pid from `SCM_CREDENTIALS`, translated by the kernel into the
//! host's PID namespace, and moves it into the command's cgroups), waits for [`GO`] and execs;
//! the server reports the command's end as [`Exit`].

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The argument after [`crate::COMMAND`] that starts the server instead of one command.
pub const SERVE: &str = "--serve";
/// Where the server finds its control socket.
pub const CONTROL_FD: RawFd = 3;
/// The server's first message on the control socket: it runs, confined.
pub const HELLO: u8 = b'H';
/// The child's message: it is forked and waits to be placed in its cgroups.
pub const READY: u8 = b'R';
/// The host's answer to [`READY`]: the child may exec.
pub const GO: u8 = b'G';
/// The first byte of an [`Exit`] report.
pub const EXITED: u8 = b'X';
/// The largest request accepted (argv and environment together; Linux allows ~2 MiB).
pub const MAX_REQUEST: usize = 8 << 20;

/// One command for the server to start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub cwd: OsString,
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The command's whole environment, in order (a later duplicate replaces an earlier one).
    pub env: Vec<(OsString, OsString)>,
}

impl Request {
    /// The request as written on the command socket: a little-endian `u32` length, then
    /// NUL-terminated fields (cwd, program, argument count, arguments, `KEY=VALUE`s).
    /// `Err` names a field that cannot be passed to `execve` (a NUL byte, `=` in a key).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        let mut field = |bytes: &[u8], what: &str| {
            if bytes.contains(&0) {
                return Err(format!("{what} contains a NUL byte"));
            }
            body.extend_from_slice(bytes);
            body.push(0);
            Ok(())
        };
        field(self.cwd.as_bytes(), "the working directory")?;
        field(self.program.as_bytes(), "the program")?;
        field(self.args.len().to_string().as_bytes(), "the argument count")?;
        for arg in &self.args {
            field(arg.as_bytes(), "an argument")?;
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(format!("the environment variable name {key:?} is invalid"));
            }
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            field(&pair, "an environment variable")?;
        }
        if body.len() > MAX_REQUEST {
            return Err(format!(
                "arguments and environment exceed {MAX_REQUEST} bytes"
            ));
        }
        let length = u32::try_from(body.len()).map_err(|_| "the request is too large")?;
        let mut message = length.to_le_bytes().to_vec();
        message.append(&mut body);
        Ok(message)
    }

    /// Parses a request's body (without its length).
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let body = body
            .strip_suffix(&[0])
            .ok_or("the request is not terminated")?;
        let mut fields = body
            .split(|b| *b == 0)
            .map(|f| OsString::from_vec(f.to_vec()));
        let mut next = |what: &str| fields.next().ok_or(format!("{what} is missing"));
        let cwd = next("the working directory")?;
        let program = next("the program")?;
        let count: usize = next("the argument count")?
            .to_str()
            .and_then(|c| c.parse().ok())
            .ok_or("the argument count is not a number")?;
        let args = (0..count)
            .map(|_| next("an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let env = fields
            .map(|pair| {
                let bytes = pair.into_vec();
                let at = bytes
                    .iter()
                    .position(|b| *b == b'=')
                    .ok_or("an environment entry has no '='")?;
                let (key, value) = bytes.split_at(at);
                Ok((
                    OsString::from_vec(key.to_vec()),
                    OsString::from_vec(value[1..].to_vec()),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            cwd,
            program,
            args,
            env,
        })
    }
}

/// How a command ended, as the server's `waitpid` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The report's length on the wire.
    pub const LEN: usize = 9;

    /// From a `waitpid` status.
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signal(libc::WTERMSIG(status))
        } else {
            Self::Code(libc::WEXITSTATUS(status))
        }
    }

    /// [`EXITED`], the kind (0 code, 1 signal) in the low byte of a `u32`, then the value.
    pub fn encode(self) -> [u8; Self::LEN] {
        let (kind, value) = match self {
            Self::Code(code) => (0u32, code),
            Self::Signal(signal) => (1u32, signal),
        };
        let mut out = [0u8; Self::LEN];
        out[0] = EXITED;
        out[1..5].copy_from_slice(&kind.to_le_bytes());
        out[5..9].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// `None` for anything but a report.
    pub fn decode(bytes: &[u8; Self::LEN]) -> Option<Self> {
        if bytes[0] != EXITED {
            return None;
        }
        let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        let value = i32::from_le_bytes(word(5));
        match u32::from_le_bytes(word(1)) {
            0 => Some(Self::Code(value)),
            1 => Some(Self::Signal(value)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_fields_are_refused() {
        let request = Request {
            cwd: "/ws".into(),
            program: "sh".into(),
            args: vec!["-c".into(), String::new().into(), "a=b".into()],
            env: vec![("A".into(), "x=y".into()), ("EMPTY".into(), "".into())],
        };
        let wire = request.encode().expect("encodes");
        let length = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        assert_eq!(length, wire.len() - 4);
        assert_eq!(Request::decode(&wire[4..]).expect("decodes"), request);
        let nul = Request {
            args: vec!["a\0b".into()],
            ..Request::default()
        };
        assert!(nul.encode().is_err());
        let key = Request {
            env: vec![("A=B".into(), "c".into())],
            ..Request::default()
        };
        assert!(key.encode().is_err());
        for bad in [
            &b""[..],
            b"/ws\0sh\0",
            b"/ws\0sh\0two\0",
            b"/ws\0sh\x002\0a\0",
        ] {
            assert!(Request::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exits_round_trip() {
        for exit in [Exit::Code(0), Exit::Code(130), Exit::Signal(9)] {
            assert_eq!(Exit::decode(&exit.encode()), Some(exit));
        }
        assert_eq!(Exit::decode(&[b'R'; Exit::LEN]), None);
    }
}
