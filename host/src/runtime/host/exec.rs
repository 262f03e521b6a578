//! `exec`: processes in the project's workspace through the [`Executor`] port. argv[0] must
//! be on the manifest's allow-list and every secret reference must name a granted
//! credential; the executor substitutes secret values at spawn time, so they never pass
//! through guest memory.
//!
//! [`Executor`]: crate::ports::Executor

use std::collections::VecDeque;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

use crate::ports::executor::{BoxedReader, BoxedWriter};
use crate::ports::{self, ProcessControl, SpawnSpec};
use crate::runtime::abi::latest::rdev::provider::exec::{
    ChunksRead, Command, EnvValue, ExecError, ExitStatus, Host, HostProcess, LinesRead,
    OutputBytes, OutputLine, Signal,
};
use crate::runtime::abi::latest::wit::OutputStream;
use crate::runtime::state::{ExecCtx, HostState};

use super::interaction::{Inbox, or_input};

/// A line longer than this is handed over in pieces marked `partial`.
pub const LINE_CAP: usize = 1024 * 1024;
/// Bytes read from a pipe per chunk.
const READ_BYTES: usize = 64 * 1024;
/// Chunks buffered per process before the pipe reader stops reading (and the process
/// blocks on a full pipe): bounds host memory per process to about 4 MiB.
const BUFFERED_CHUNKS: usize = 64;

/// A process the guest started, as a resource in its store.
pub struct ProcessHandle {
    stdin: Option<BoxedWriter>,
    output: mpsc::Receiver<(OutputStream, Vec<u8>)>,
    /// Bytes received and not yet handed to the guest, in arrival order.
    pending: VecDeque<(OutputStream, Vec<u8>)>,
    /// Per stream (stdout, stderr): bytes after the last complete line.
    partial: [Vec<u8>; 2],
    closed: bool,
    control: Arc<dyn ProcessControl>,
    readers: Vec<JoinHandle<()>>,
}

fn slot(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

fn spawn_reader(
    stream: OutputStream,
    mut reader: BoxedReader,
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

impl ProcessHandle {
    fn new(process: ports::SpawnedProcess) -> Self {
        let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
        let readers = vec![
            spawn_reader(OutputStream::Stdout, process.stdout, tx.clone()),
            spawn_reader(OutputStream::Stderr, process.stderr, tx),
        ];
        Self {
            stdin: Some(process.stdin),
            output: rx,
            pending: VecDeque::new(),
            partial: [Vec::new(), Vec::new()],
            closed: false,
            control: process.control,
            readers,
        }
    }

    /// Waits for the next chunk; false when the idle timeout passed first.
    async fn receive(&mut self, idle: Option<Duration>) -> bool {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, self.output.recv()).await {
                Ok(next) => next,
                Err(_) => return false,
            },
            None => self.output.recv().await,
        };
        match next {
            Some(chunk) => {
                self.pending.push_back(chunk);
                while let Ok(chunk) = self.output.try_recv() {
                    self.pending.push_back(chunk);
                    if self.pending.len() >= BUFFERED_CHUNKS {
                        break;
                    }
                }
            }
            None => self.closed = true,
        }
        true
    }

    /// Moves received bytes into the line buffers and takes complete lines.
    fn take_lines(&mut self, max: usize, out: &mut Vec<OutputLine>) {
        while let Some((stream, bytes)) = self.pending.pop_front() {
            self.partial[slot(stream)].extend_from_slice(&bytes);
        }
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let buf = &mut self.partial[slot(stream)];
            // Lines are cut at an advancing offset and the consumed prefix is removed once,
            // so a large buffer costs linear time, not one memmove per line.
            let mut start = 0;
            while out.len() < max {
                let rest = &buf[start..];
                if let Some(pos) = rest.iter().position(|b| *b == b'\n') {
                    let mut line = &rest[..pos];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    out.push(OutputLine {
                        stream,
                        text: String::from_utf8_lossy(line).into_owned(),
                        partial: false,
                    });
                    start += pos + 1;
                } else if rest.len() >= LINE_CAP {
                    out.push(OutputLine {
                        stream,
                        text: String::from_utf8_lossy(&rest[..LINE_CAP]).into_owned(),
                        partial: true,
                    });
                    start += LINE_CAP;
                } else {
                    break;
                }
            }
            buf.drain(..start);
        }
    }

    async fn read_lines(&mut self, max: u32, idle: Option<Duration>) -> LinesRead {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        loop {
            let mut lines = Vec::new();
            self.take_lines(max, &mut lines);
            if !lines.is_empty() {
                return LinesRead::Lines(lines);
            }
            if self.closed {
                for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                    let rest = std::mem::take(&mut self.partial[slot(stream)]);
                    if !rest.is_empty() {
                        lines.push(OutputLine {
                            stream,
                            text: String::from_utf8_lossy(&rest).into_owned(),
                            partial: false,
                        });
                    }
                }
                return if lines.is_empty() {
                    LinesRead::Closed
                } else {
                    LinesRead::Lines(lines)
                };
            }
            if !self.receive(idle).await {
                return LinesRead::Idle;
            }
        }
    }

    async fn read_chunks(&mut self, max: u32, idle: Option<Duration>) -> ChunksRead {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        // Bytes a previous `read-lines` buffered come first, so nothing is lost or reordered.
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let rest = std::mem::take(&mut self.partial[slot(stream)]);
            if !rest.is_empty() {
                self.pending.push_front((stream, rest));
            }
        }
        if self.pending.is_empty() && !self.closed && !self.receive(idle).await {
            return ChunksRead::Idle;
        }
        let mut chunks = Vec::new();
        let mut total = 0;
        while total < max {
            let Some((stream, mut bytes)) = self.pending.pop_front() else {
                break;
            };
            if total + bytes.len() > max {
                let rest = bytes.split_off(max - total);
                self.pending.push_front((stream, rest));
            }
            total += bytes.len();
            chunks.push(OutputBytes { stream, bytes });
        }
        if chunks.is_empty() {
            ChunksRead::Closed
        } else {
            ChunksRead::Chunks(chunks)
        }
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

fn exec_error(e: ports::ExecError) -> ExecError {
    match e {
        ports::ExecError::MissingSecret(name) => ExecError::MissingSecret(name),
        ports::ExecError::Io(m) => ExecError::Io(m),
        ports::ExecError::Connect { .. } => ExecError::Io(e.to_string()),
        other => ExecError::SpawnFailed(other.to_string()),
    }
}

/// A working directory from the guest must stay inside the workspace.
fn check_working_dir(dir: &str) -> Result<(), String> {
    if dir.is_empty() || dir.contains('\0') {
        return Err(format!("working directory {dir:?} is invalid"));
    }
    for component in Path::new(dir).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(format!("working directory {dir:?} leaves the workspace")),
        }
    }
    Ok(())
}

fn to_millis(ms: Option<u32>) -> Option<Duration> {
    ms.map(|ms| Duration::from_millis(u64::from(ms)))
}

impl HostState {
    fn process(&mut self, rep: &Resource<ProcessHandle>) -> wasmtime::Result<&mut ProcessHandle> {
        Ok(self.table.get_mut(rep)?)
    }
}

/// A blocking read the guest asked for: it ends early as `idle` when follow-up input
/// arrives, so the guest can take it, and as `Cancelled` when the command is cancelled.
async fn wakeable<T>(
    exec: &ExecCtx,
    inbox: Option<&mut Inbox>,
    read: impl Future<Output = T>,
    idle: T,
) -> Result<T, ExecError> {
    match exec.cancellable(or_input(inbox, read)).await {
        Ok(Some(read)) => Ok(read),
        Ok(None) => Ok(idle),
        Err(_) => Err(ExecError::Cancelled),
    }
}

impl HostProcess for HostState {
    async fn read_lines(
        &mut self,
        rep: Resource<ProcessHandle>,
        max_lines: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<LinesRead, ExecError>> {
        let exec = self.exec.clone();
        let HostState { table, input, .. } = self;
        let read = table
            .get_mut(&rep)?
            .read_lines(max_lines, to_millis(idle_timeout_ms));
        Ok(wakeable(&exec, input.as_mut(), read, LinesRead::Idle).await)
    }

    async fn read_chunks(
        &mut self,
        rep: Resource<ProcessHandle>,
        max_bytes: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<ChunksRead, ExecError>> {
        let exec = self.exec.clone();
        let HostState { table, input, .. } = self;
        let read = table
            .get_mut(&rep)?
            .read_chunks(max_bytes, to_millis(idle_timeout_ms));
        Ok(wakeable(&exec, input.as_mut(), read, ChunksRead::Idle).await)
    }

    async fn write_stdin(
        &mut self,
        rep: Resource<ProcessHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ExecError>> {
        let exec = self.exec.clone();
        let process = self.process(&rep)?;
        let Some(stdin) = process.stdin.as_mut() else {
            return Ok(Err(ExecError::Io("stdin is closed".into())));
        };
        let write = async {
            stdin.write_all(&data).await?;
            stdin.flush().await
        };
        Ok(match exec.cancellable(write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ExecError::Io(format!("writing to stdin: {e}"))),
            Err(_) => Err(ExecError::Cancelled),
        })
    }

    async fn close_stdin(&mut self, rep: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        let process = self.process(&rep)?;
        if let Some(mut stdin) = process.stdin.take() {
            // Best effort: the process may already have closed its end.
            let _ = stdin.shutdown().await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        rep: Resource<ProcessHandle>,
        sig: Signal,
    ) -> wasmtime::Result<Result<(), ExecError>> {
        let control = self.process(&rep)?.control.clone();
        let sig = match sig {
            Signal::Interrupt => ports::Signal::Interrupt,
            Signal::Terminate => ports::Signal::Terminate,
            Signal::Kill => ports::Signal::Kill,
        };
        Ok(control.signal(sig).await.map_err(exec_error))
    }

    async fn wait(
        &mut self,
        rep: Resource<ProcessHandle>,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<Option<ExitStatus>, ExecError>> {
        let control = self.process(&rep)?.control.clone();
        let wait = async {
            match to_millis(timeout_ms) {
                Some(t) => tokio::time::timeout(t, control.wait()).await.ok(),
                None => Some(control.wait().await),
            }
        };
        Ok(match self.exec.cancellable(wait).await {
            Err(_) => Err(ExecError::Cancelled),
            Ok(None) => Ok(None),
            Ok(Some(Ok(status))) => Ok(Some(ExitStatus {
                code: status.code,
                signal: status.signal,
            })),
            Ok(Some(Err(e))) => Err(exec_error(e)),
        })
    }

    async fn drop(&mut self, rep: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        let process = self.table.delete(rep)?;
        let control = process.control.clone();
        drop(process);
        // Dropping the handle kills the process group, as the ABI promises.
        tokio::spawn(async move {
            let _ = control.signal(ports::Signal::Kill).await;
        });
        Ok(())
    }
}

impl Host for HostState {
    async fn spawn(
        &mut self,
        cmd: Command,
    ) -> wasmtime::Result<Result<Resource<ProcessHandle>, ExecError>> {
        let exec = self.exec.clone();
        let grants = &exec.manifest.grants;
        if let Err(denied) = grants.check_exec(&cmd.program) {
            return Ok(Err(ExecError::Denied(denied.0)));
        }
        let mut env = Vec::with_capacity(cmd.env.len());
        for (key, value) in cmd.env {
            let value = match value {
                EnvValue::Plain(v) => ports::EnvValue::Plain(v),
                EnvValue::Secret(secret) => {
                    if let Err(denied) = exec.check_credential(&secret.name) {
                        return Ok(Err(ExecError::Denied(denied.0)));
                    }
                    ports::EnvValue::Secret {
                        name: secret.name,
                        required: secret.required,
                    }
                }
            };
            env.push((key, value));
        }
        if let Some(dir) = &cmd.working_dir
            && let Err(reason) = check_working_dir(dir)
        {
            return Ok(Err(ExecError::SpawnFailed(reason)));
        }
        let project = match exec.project() {
            Ok(p) => p.clone(),
            Err(reason) => return Ok(Err(ExecError::SpawnFailed(reason))),
        };
        let spec = SpawnSpec {
            program: cmd.program,
            args: cmd.args,
            env,
            working_dir: cmd.working_dir,
        };
        let spawned = match exec.cancellable(exec.executor.spawn(&project, spec)).await {
            Err(_) => return Ok(Err(ExecError::Cancelled)),
            Ok(Err(e)) => return Ok(Err(exec_error(e))),
            Ok(Ok(spawned)) => spawned,
        };
        exec.track(spawned.control.clone());
        let mut spawned = spawned;
        if let (Some(notices), Some(sink)) = (spawned.notices.take(), exec.events.clone()) {
            forward_notices(notices, sink, spawned.control.clone());
        }
        let handle = ProcessHandle::new(spawned);
        Ok(Ok(self.table.push(handle)?))
    }
}

/// Streams what the executor says about a running process (a confined command's refused
/// egress) as `warning` events of the command, until the process exits or the command's
/// event channel closes. It holds the channel weakly: a process that outlives its
/// execution must not keep the worker waiting for the command's events to end.
fn forward_notices(
    mut notices: tokio::sync::broadcast::Receiver<String>,
    sink: crate::ports::EventSink,
    control: std::sync::Arc<dyn ports::ProcessControl>,
) {
    let sink = sink.downgrade();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = control.wait() => return,
                notice = notices.recv() => match notice {
                    Ok(message) => {
                        let Some(sink) = sink.upgrade() else { return };
                        let event = crate::domain::AgentEvent::Warning { message };
                        if sink.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::check_working_dir;

    #[test]
    fn working_dir_must_stay_inside() {
        assert!(check_working_dir("src/lib").is_ok());
        assert!(check_working_dir("../x").is_err());
        assert!(check_working_dir("/etc").is_err());
        assert!(check_working_dir("").is_err());
    }
}
