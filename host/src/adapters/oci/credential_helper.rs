//! Docker credential helpers (`docker-credential-<name>`, named by `credsStore` or
//! `credHelpers` in docker's `config.json`): the program on `PATH` is asked with `get` and the
//! registry on its stdin, and answers `{"ServerURL", "Username", "Secret"}` as JSON (the
//! protocol of docker/docker-credential-helpers). A helper that knows no login for the
//! registry exits non-zero saying `credentials not found`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::ports::{RegistryCredentials, SecretValue};

/// How long a helper may take: long enough for a keychain to unlock, short enough that a
/// helper waiting on a prompt nobody sees does not hang the command.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Docker's marker for an identity token in place of a user name.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// Why a helper gave no usable login. Never carries what the helper printed: its output may
/// hold the secret.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("running the docker credential helper {program}: {reason}")]
    Run { program: String, reason: String },
    #[error("the docker credential helper {program} failed for {registry} ({status})")]
    Failed {
        program: String,
        registry: String,
        status: String,
    },
    #[error("the docker credential helper {program} gave no answer within {} s", HELPER_TIMEOUT.as_secs())]
    TimedOut { program: String },
    #[error(
        "the docker credential helper {program} answered for {registry} with something other than its JSON"
    )]
    Malformed { program: String, registry: String },
    #[error(
        "docker's login for {registry} is an identity token, which rdev does not use: log in with a user name and password"
    )]
    IdentityToken { registry: String },
}

/// The helper's answer to `get`.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The login helper `name` keeps for `registry`; `None` when it has none.
pub fn get(name: &str, registry: &str) -> Result<Option<RegistryCredentials>, HelperError> {
    let program = format!("docker-credential-{name}");
    let run = |reason: String| HelperError::Run {
        program: program.clone(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| run(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| run(format!("writing the registry: {e}")))?;
    }
    let mut stdout = child.stdout.take().ok_or_else(|| run("no stdout".into()))?;
    // Read beside the wait, so a helper that prints much cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| run(e.to_string()))? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelperError::TimedOut { program });
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let out = reader
        .join()
        .map_err(|_| run("reading its answer failed".into()))?
        .map_err(|e| run(format!("reading its answer: {e}")))?;
    if !status.success() {
        if String::from_utf8_lossy(&out).contains("credentials not found") {
            return Ok(None);
        }
        return Err(HelperError::Failed {
            program,
            registry: registry.to_owned(),
            status: status.to_string(),
        });
    }
    let answer: Answer = serde_json::from_slice(&out).map_err(|_| HelperError::Malformed {
        program: program.clone(),
        registry: registry.to_owned(),
    })?;
    if answer.username == IDENTITY_TOKEN_USER {
        return Err(HelperError::IdentityToken {
            registry: registry.to_owned(),
        });
    }
    if answer.username.is_empty() || answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryCredentials {
        username: answer.username,
        password: SecretValue::new(answer.secret),
    }))
}
