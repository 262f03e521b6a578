//! Running a program in the workspace and reading its output.

use super::bindings::rdev::provider::exec::{
    self, ChunksRead, Command, EnvValue, ExecError, ExitStatus, LinesRead, OutputLine, Process,
    Signal,
};
use super::bindings::rdev::provider::types::SecretRef;

/// Lines fetched per host call: one call per line costs about 0.5 µs of overhead, so
/// batching keeps a chatty process cheap without holding much in guest memory.
pub const LINE_BATCH: u32 = 256;
/// Bytes fetched per host call in chunk mode.
pub const CHUNK_BYTES: u32 = 64 * 1024;

/// A command under construction.
#[derive(Debug, Clone)]
pub struct CommandBuilder {
    command: Command,
}

impl CommandBuilder {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            command: Command {
                program: program.into(),
                args: Vec::new(),
                env: Vec::new(),
                working_dir: None,
            },
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.command.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.command
            .env
            .push((key.into(), EnvValue::Plain(value.into())));
        self
    }

    /// Sets `key` to the named credential's value, resolved by the host at spawn time.
    /// When `required` is false and the credential does not exist, `key` is left unset.
    pub fn secret_env(
        mut self,
        key: impl Into<String>,
        credential: impl Into<String>,
        required: bool,
    ) -> Self {
        self.command.env.push((
            key.into(),
            EnvValue::Secret(SecretRef {
                name: credential.into(),
                required,
            }),
        ));
        self
    }

    pub fn working_dir(mut self, dir: Option<String>) -> Self {
        self.command.working_dir = dir;
        self
    }

    pub fn spawn(&self) -> Result<Process, ExecError> {
        exec::spawn(&self.command)
    }
}

/// What one read of a process produced.
#[derive(Debug)]
pub enum Lines {
    Lines(Vec<OutputLine>),
    Idle,
    Closed,
}

/// Reads up to [`LINE_BATCH`] lines, waiting at most `idle_timeout_ms` for the first.
pub fn read_lines(process: &Process, idle_timeout_ms: Option<u32>) -> Result<Lines, ExecError> {
    Ok(match process.read_lines(LINE_BATCH, idle_timeout_ms)? {
        LinesRead::Lines(lines) => Lines::Lines(lines),
        LinesRead::Idle => Lines::Idle,
        LinesRead::Closed => Lines::Closed,
    })
}

/// Reads available output, up to [`CHUNK_BYTES`].
pub fn read_chunks(
    process: &Process,
    idle_timeout_ms: Option<u32>,
) -> Result<ChunksRead, ExecError> {
    process.read_chunks(CHUNK_BYTES, idle_timeout_ms)
}

/// Waits for the exit status with no timeout.
pub fn wait(process: &Process) -> Result<ExitStatus, ExecError> {
    loop {
        if let Some(status) = process.wait(None)? {
            return Ok(status);
        }
    }
}

/// Interrupts, then escalates to terminate and kill if the process is still running after
/// each `step_ms`. Returns the exit status it ended with.
pub fn stop(process: &Process, step_ms: u32) -> Result<ExitStatus, ExecError> {
    for signal in [Signal::Interrupt, Signal::Terminate, Signal::Kill] {
        process.signal(signal)?;
        if let Some(status) = process.wait(Some(step_ms))? {
            return Ok(status);
        }
    }
    wait(process)
}

/// Human words for an exec error, for results and events.
pub fn describe(error: &ExecError) -> String {
    match error {
        ExecError::Denied(what) => format!("not permitted by the plugin's grants: {what}"),
        ExecError::MissingSecret(name) => format!("credential {name:?} is not set"),
        ExecError::Cancelled => "cancelled".to_owned(),
        ExecError::SpawnFailed(why) => format!("could not start the process: {why}"),
        ExecError::Io(why) => format!("process I/O failed: {why}"),
    }
}
