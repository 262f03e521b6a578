//! ABI 0.1's imports, each served by the newest ABI's host import: arguments are converted
//! into the newest types, results back. The two versions' interfaces are identical here, so
//! every conversion is field for field; a future change of an interface shows up as a
//! compile error in this file, where the adaptation then belongs.

use wasmtime::component::Resource;

use super::rdev::provider::{events, exec, execution, log, project_http};
use crate::runtime::abi::latest::rdev::provider as latest;
use crate::runtime::abi::latest::wit::AgentEvent;
use crate::runtime::host::exec::ProcessHandle;
use crate::runtime::host::http::EventStreamHandle;
use crate::runtime::state::HostState;

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => latest::log::Level::Trace,
            log::Level::Debug => latest::log::Level::Debug,
            log::Level::Info => latest::log::Level::Info,
            log::Level::Warn => latest::log::Level::Warn,
            log::Level::Error => latest::log::Level::Error,
        };
        latest::log::Host::log(self, level, message).await
    }
}

impl events::Host for HostState {
    async fn emit(
        &mut self,
        batch: Vec<AgentEvent>,
    ) -> wasmtime::Result<Result<(), events::EmitError>> {
        let emitted = latest::events::Host::emit(self, batch).await?;
        Ok(emitted.map_err(|latest::events::EmitError::Cancelled| events::EmitError::Cancelled))
    }
}

impl execution::Host for HostState {
    async fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        latest::execution::Host::is_cancelled(self).await
    }

    async fn sleep(&mut self, duration_ms: u32) -> wasmtime::Result<bool> {
        latest::execution::Host::sleep(self, duration_ms).await
    }
}

impl From<exec::Command> for latest::exec::Command {
    fn from(c: exec::Command) -> Self {
        let env = c.env.into_iter().map(|(key, value)| {
            let value = match value {
                exec::EnvValue::Plain(v) => latest::exec::EnvValue::Plain(v),
                exec::EnvValue::Secret(s) => latest::exec::EnvValue::Secret(s),
            };
            (key, value)
        });
        Self {
            program: c.program,
            args: c.args,
            env: env.collect(),
            working_dir: c.working_dir,
        }
    }
}

impl From<latest::exec::ExecError> for exec::ExecError {
    fn from(e: latest::exec::ExecError) -> Self {
        use latest::exec::ExecError as L;
        match e {
            L::Denied(m) => Self::Denied(m),
            L::MissingSecret(m) => Self::MissingSecret(m),
            L::Cancelled => Self::Cancelled,
            L::SpawnFailed(m) => Self::SpawnFailed(m),
            L::Io(m) => Self::Io(m),
        }
    }
}

impl From<latest::exec::LinesRead> for exec::LinesRead {
    fn from(read: latest::exec::LinesRead) -> Self {
        match read {
            latest::exec::LinesRead::Lines(lines) => Self::Lines(
                lines
                    .into_iter()
                    .map(|l| exec::OutputLine {
                        stream: l.stream,
                        text: l.text,
                        partial: l.partial,
                    })
                    .collect(),
            ),
            latest::exec::LinesRead::Idle => Self::Idle,
            latest::exec::LinesRead::Closed => Self::Closed,
        }
    }
}

impl From<latest::exec::ChunksRead> for exec::ChunksRead {
    fn from(read: latest::exec::ChunksRead) -> Self {
        match read {
            latest::exec::ChunksRead::Chunks(chunks) => Self::Chunks(
                chunks
                    .into_iter()
                    .map(|c| exec::OutputBytes {
                        stream: c.stream,
                        bytes: c.bytes,
                    })
                    .collect(),
            ),
            latest::exec::ChunksRead::Idle => Self::Idle,
            latest::exec::ChunksRead::Closed => Self::Closed,
        }
    }
}

impl exec::Host for HostState {
    async fn spawn(
        &mut self,
        cmd: exec::Command,
    ) -> wasmtime::Result<Result<Resource<ProcessHandle>, exec::ExecError>> {
        let spawned = latest::exec::Host::spawn(self, cmd.into()).await?;
        Ok(spawned.map_err(Into::into))
    }
}

impl exec::HostProcess for HostState {
    async fn read_lines(
        &mut self,
        rep: Resource<ProcessHandle>,
        max_lines: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<exec::LinesRead, exec::ExecError>> {
        let read =
            latest::exec::HostProcess::read_lines(self, rep, max_lines, idle_timeout_ms).await?;
        Ok(read.map(Into::into).map_err(Into::into))
    }

    async fn read_chunks(
        &mut self,
        rep: Resource<ProcessHandle>,
        max_bytes: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<exec::ChunksRead, exec::ExecError>> {
        let read =
            latest::exec::HostProcess::read_chunks(self, rep, max_bytes, idle_timeout_ms).await?;
        Ok(read.map(Into::into).map_err(Into::into))
    }

    async fn write_stdin(
        &mut self,
        rep: Resource<ProcessHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), exec::ExecError>> {
        let written = latest::exec::HostProcess::write_stdin(self, rep, data).await?;
        Ok(written.map_err(Into::into))
    }

    async fn close_stdin(&mut self, rep: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        latest::exec::HostProcess::close_stdin(self, rep).await
    }

    async fn signal(
        &mut self,
        rep: Resource<ProcessHandle>,
        sig: exec::Signal,
    ) -> wasmtime::Result<Result<(), exec::ExecError>> {
        let sig = match sig {
            exec::Signal::Interrupt => latest::exec::Signal::Interrupt,
            exec::Signal::Terminate => latest::exec::Signal::Terminate,
            exec::Signal::Kill => latest::exec::Signal::Kill,
        };
        let signalled = latest::exec::HostProcess::signal(self, rep, sig).await?;
        Ok(signalled.map_err(Into::into))
    }

    async fn wait(
        &mut self,
        rep: Resource<ProcessHandle>,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<Option<exec::ExitStatus>, exec::ExecError>> {
        let waited = latest::exec::HostProcess::wait(self, rep, timeout_ms).await?;
        Ok(waited
            .map(|status| {
                status.map(|s| exec::ExitStatus {
                    code: s.code,
                    signal: s.signal,
                })
            })
            .map_err(Into::into))
    }

    async fn drop(&mut self, rep: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        latest::exec::HostProcess::drop(self, rep).await
    }
}

impl From<project_http::Request> for latest::project_http::Request {
    fn from(r: project_http::Request) -> Self {
        let auth = r.auth.map(|auth| match auth {
            project_http::Auth::Basic(pair) => latest::project_http::Auth::Basic(pair),
            project_http::Auth::Bearer(secret) => latest::project_http::Auth::Bearer(secret),
        });
        Self {
            method: r.method,
            port: r.port,
            path: r.path,
            headers: r.headers,
            body: r.body,
            auth,
            timeout_ms: r.timeout_ms,
        }
    }
}

impl From<latest::project_http::Response> for project_http::Response {
    fn from(r: latest::project_http::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<latest::project_http::HttpError> for project_http::HttpError {
    fn from(e: latest::project_http::HttpError) -> Self {
        use latest::project_http::HttpError as L;
        match e {
            L::Denied(m) => Self::Denied(m),
            L::MissingSecret(m) => Self::MissingSecret(m),
            L::Cancelled => Self::Cancelled,
            L::Connect(m) => Self::Connect(m),
            L::Timeout => Self::Timeout,
            L::Protocol(m) => Self::Protocol(m),
            L::Status(response) => Self::Status(response.into()),
        }
    }
}

impl From<latest::project_http::EventsRead> for project_http::EventsRead {
    fn from(read: latest::project_http::EventsRead) -> Self {
        match read {
            latest::project_http::EventsRead::Events(events) => Self::Events(
                events
                    .into_iter()
                    .map(|e| project_http::SseEvent {
                        id: e.id,
                        event: e.event,
                        data: e.data,
                    })
                    .collect(),
            ),
            latest::project_http::EventsRead::Idle => Self::Idle,
            latest::project_http::EventsRead::Closed => Self::Closed,
        }
    }
}

impl project_http::Host for HostState {
    async fn send(
        &mut self,
        req: project_http::Request,
    ) -> wasmtime::Result<Result<project_http::Response, project_http::HttpError>> {
        let sent = latest::project_http::Host::send(self, req.into()).await?;
        Ok(sent.map(Into::into).map_err(Into::into))
    }

    async fn open_events(
        &mut self,
        req: project_http::Request,
    ) -> wasmtime::Result<Result<Resource<EventStreamHandle>, project_http::HttpError>> {
        let opened = latest::project_http::Host::open_events(self, req.into()).await?;
        Ok(opened.map_err(Into::into))
    }
}

impl project_http::HostEventStream for HostState {
    async fn next(
        &mut self,
        rep: Resource<EventStreamHandle>,
        max_events: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<project_http::EventsRead, project_http::HttpError>> {
        let read =
            latest::project_http::HostEventStream::next(self, rep, max_events, idle_timeout_ms)
                .await?;
        Ok(read.map(Into::into).map_err(Into::into))
    }

    async fn drop(&mut self, rep: Resource<EventStreamHandle>) -> wasmtime::Result<()> {
        latest::project_http::HostEventStream::drop(self, rep).await
    }
}
