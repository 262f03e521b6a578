//! Provider ABI 0.2.x (`wit/since_v0.2.0`), the newest: its generated bindings, the
//! conversions between its types and the domain's, and the linker every host import is
//! written against (`runtime::host`). Older ABIs adapt into this one; when 0.3 exists, this
//! module freezes and gets an adapter of its own.

use wasmtime::component::{HasSelf, Linker};

use crate::domain::{AgentEvent, AgentResult, Capabilities, OutputStream, ResultStatus, Usage};

use super::{GuestCapabilities, GuestError, GuestOutcome, GuestRequest};
use crate::runtime::manifest::AbiVersion;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    path: "../wit/since_v0.2.0",
    world: "provider",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "rdev:provider/exec.process": crate::runtime::host::exec::ProcessHandle,
        "rdev:provider/project-http.event-stream": crate::runtime::host::http::EventStreamHandle,
    },
});

/// The oldest ABI this module serves; any 0.2.x plugin loads here.
pub const MIN_VERSION: AbiVersion = AbiVersion::new(0, 2, 0);

pub(crate) use self::rdev::provider::types as wit;

/// A linker with WASI (sandboxed by the store's empty context) and every rdev import.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Provider::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
}

pub(crate) fn capabilities_from_guest(caps: wit::ProviderCapabilities) -> GuestCapabilities {
    let flags = caps.capabilities;
    GuestCapabilities {
        description: caps.description,
        capabilities: Capabilities {
            streaming: flags.contains(wit::Capability::STREAMING),
            session_resume: flags.contains(wit::Capability::SESSION_RESUME),
            cancel: flags.contains(wit::Capability::CANCEL),
            tools: flags.contains(wit::Capability::TOOLS),
            cost_reporting: flags.contains(wit::Capability::COST_REPORTING),
            idempotent: flags.contains(wit::Capability::IDEMPOTENT),
        },
    }
}

pub(crate) fn request_to_guest(request: &GuestRequest<'_>) -> wit::AgentRequest {
    let r = request.request;
    wit::AgentRequest {
        command_id: request.command_id.to_owned(),
        project_id: request.project_id.to_owned(),
        prompt: r.prompt.clone(),
        session_id: r.session_id.clone(),
        timeout_ms: u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX),
        model: r.model.clone(),
        working_dir: r.working_dir.clone(),
        options_json: serde_json::Value::Object(r.options.clone()).to_string(),
    }
}

pub(crate) fn cleanup_to_guest(
    command_id: &str,
    project_id: &str,
    session_id: Option<&str>,
) -> wit::CleanupRequest {
    wit::CleanupRequest {
        command_id: command_id.to_owned(),
        project_id: project_id.to_owned(),
        session_id: session_id.map(str::to_owned),
    }
}

pub(crate) fn error_from_guest(error: wit::ProviderError) -> GuestError {
    match error {
        wit::ProviderError::InvalidRequest(m) => GuestError::InvalidRequest(m),
        wit::ProviderError::Unavailable(m) => GuestError::Unavailable(m),
        wit::ProviderError::Cancelled => GuestError::Cancelled,
        wit::ProviderError::Failed(m) => GuestError::Failed(m),
    }
}

fn usage(u: wit::TokenUsage) -> Usage {
    Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
    }
}

/// JSON text from the guest; text that is not JSON is kept as a JSON string, not dropped.
fn json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

pub(crate) fn outcome_from_guest(
    outcome: Result<wit::AgentResult, wit::ProviderError>,
) -> GuestOutcome {
    let r = outcome.map_err(error_from_guest)?;
    Ok(AgentResult {
        status: match r.status {
            wit::ResultStatus::Completed => ResultStatus::Completed,
            wit::ResultStatus::Failed => ResultStatus::Failed,
            wit::ResultStatus::Cancelled => ResultStatus::Cancelled,
        },
        exit_code: r.exit_code,
        session_id: r.session_id,
        final_text: r.final_text,
        error: r.error,
        cost_usd: r.cost_usd,
        usage: r.usage.map(usage),
        num_turns: r.num_turns,
        duration: std::time::Duration::ZERO,
        details: r.details_json.map(json),
    })
}

fn stream(s: wit::OutputStream) -> OutputStream {
    match s {
        wit::OutputStream::Stdout => OutputStream::Stdout,
        wit::OutputStream::Stderr => OutputStream::Stderr,
    }
}

pub(crate) fn event_from_guest(event: wit::AgentEvent) -> AgentEvent {
    match event {
        wit::AgentEvent::Init(i) => AgentEvent::Init {
            session_id: i.session_id,
            model: i.model,
            cwd: i.cwd,
            tools: i.tools,
            version: i.version,
        },
        wit::AgentEvent::Message(t) => AgentEvent::Message {
            text: t.text,
            partial: t.partial,
        },
        wit::AgentEvent::Thinking(t) => AgentEvent::Thinking {
            text: t.text,
            partial: t.partial,
        },
        wit::AgentEvent::ToolUse(t) => AgentEvent::ToolUse {
            id: t.id,
            name: t.name,
            input: json(t.input_json),
        },
        wit::AgentEvent::ToolResult(t) => AgentEvent::ToolResult {
            id: t.id,
            content: t.content,
            is_error: t.is_error,
        },
        wit::AgentEvent::Output(o) => AgentEvent::Output {
            stream: stream(o.stream),
            text: o.text,
        },
        wit::AgentEvent::Warning(message) => AgentEvent::Warning { message },
        wit::AgentEvent::Error(message) => AgentEvent::Error { message },
        wit::AgentEvent::Usage(u) => AgentEvent::Usage {
            usage: usage(u.usage),
            cost_usd: u.cost_usd,
        },
        wit::AgentEvent::Raw(r) => AgentEvent::Raw {
            kind: r.kind,
            data: json(r.json),
        },
    }
}
