//! A provider that misbehaves on request, so the host's sandbox can be tested against a
//! real component. The prompt selects the behaviour:
//!
//! - `loop`: spins forever without calling the host.
//! - `alloc`: allocates 1 GiB.
//! - `panic`: panics.
//! - `exec <program>`: tries to spawn `program`; the result's text says what happened.
//! - `fs`: tries to read host files, list `/`, read the environment and open a socket; the
//!   result's text reports each outcome as JSON.
//! - `flood <n>`: emits `n` numbered message events in batches of 100.
//! - `wait-cancel`: sleeps until cancelled, emits `cleanup`, and returns `cancelled`.
//! - `cancel-once`: emits until an emit returns `cancelled`, then emits `cleanup` (which
//!   must work) and returns `cancelled`.
//! - `ignore-cancel`: keeps running after a cancel, calling the host.
//! - `hold-process <seconds>`: spawns `sleep <seconds>` (the grant must allow `sleep`),
//!   emits `spawned` (or why not), then keeps running after a cancel with the process held.
//! - `http <port> <path>`: GETs the path with project-http (bearer auth from the
//!   credential `TOKEN` when the path contains `auth`); the text is `<status> <body>`.
//! - `sse <port> <path>`: opens an event stream and returns every event's data, joined
//!   by `,`, once the server closes it.
//! - `parse <file>`: runs `cat <file>` (the grant must allow `cat`), parses every line as
//!   JSON, and returns `<lines> <objects with a "type">`: the benchmark's guest side.
//! - `log-flood <n>`: writes `n` numbered info lines with the `log` import.
//! - `log-forge <text>`: logs `<text>` with `\n` written as a line break, e.g. to look like a
//!   server line of its own.
//! - `leak`: reads the credential `TOKEN` with `printenv` (the test grants both) and hands
//!   it back every way a provider can: split across two output events, hex-encoded in a
//!   message, in a log line, and in the result's text, error, session id and details.
//! - `big-event <n>`: emits one message event of `n` bytes.
//! - `big-result <n>`: returns a final text of `n` bytes and details holding as many.
//! - `spend <usd> <steps> <ms>`: emits `steps` usage events of 100 input and 10 output
//!   tokens costing `usd` each, `ms` apart, and reports their sum in its result; stops with
//!   `cancelled` when the host cancels it (a budget's test double).
//! - anything else: returns the prompt as the final text.

use rdev_sdk::exec::ExecError;
use rdev_sdk::process::CommandBuilder;
use rdev_sdk::project_http::{self, Auth, EventsRead, HttpError, Request};
use rdev_sdk::bindings::rdev::provider::types::UsageInfo;
use rdev_sdk::{
    AgentEvent, AgentRequest, AgentResult, Capability, CleanupRequest, OutputStream, Provider,
    ProviderCapabilities, ProviderError, ResultStatus, TokenUsage, event, execution, log,
};

struct Hostile;

fn result(status: ResultStatus, text: impl Into<String>) -> AgentResult {
    AgentResult {
        status,
        exit_code: None,
        session_id: None,
        final_text: Some(text.into()),
        error: None,
        cost_usd: None,
        usage: None,
        num_turns: None,
        details_json: None,
    }
}

fn probe_sandbox() -> String {
    let read = std::fs::read_to_string("/etc/passwd")
        .map(|s| format!("read {} bytes", s.len()))
        .unwrap_or_else(|e| format!("error: {e}"));
    let cwd_file = std::fs::read_to_string("Cargo.toml")
        .map(|s| format!("read {} bytes", s.len()))
        .unwrap_or_else(|e| format!("error: {e}"));
    let list = std::fs::read_dir("/")
        .map(|d| format!("listed {} entries", d.count()))
        .unwrap_or_else(|e| format!("error: {e}"));
    let env = std::env::vars().count();
    let args = std::env::args().count();
    let socket = std::net::TcpStream::connect("127.0.0.1:22")
        .map(|_| "connected".to_owned())
        .unwrap_or_else(|e| format!("error: {e}"));
    serde_json::json!({
        "read": read,
        "cwd_file": cwd_file,
        "list": list,
        "env": env,
        "args": args,
        "socket": socket,
    })
    .to_string()
}

fn http_error(error: &HttpError) -> String {
    match error {
        HttpError::Denied(reason) => format!("denied: {reason}"),
        other => format!("error: {other:?}"),
    }
}

impl Provider for Hostile {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "misbehaves on request".into(),
            capabilities: Capability::STREAMING | Capability::CANCEL,
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        let prompt = request.prompt.trim();
        let (mode, arg) = prompt.split_once(' ').unwrap_or((prompt, ""));
        match mode {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let block = vec![1u8; 1 << 30];
                let sum: u64 = std::hint::black_box(&block)
                    .iter()
                    .map(|b| u64::from(*b))
                    .sum();
                Ok(result(ResultStatus::Completed, format!("allocated {sum}")))
            }
            "panic" => panic!("the hostile plugin panics on purpose"),
            "exec" => {
                let text = match CommandBuilder::new(arg).spawn() {
                    Ok(_) => "spawned".to_owned(),
                    Err(ExecError::Denied(reason)) => format!("denied: {reason}"),
                    Err(other) => format!("other error: {other:?}"),
                };
                Ok(result(ResultStatus::Completed, text))
            }
            "fs" => Ok(result(ResultStatus::Completed, probe_sandbox())),
            "flood" => {
                let n: usize = arg.parse().unwrap_or(10_000);
                let mut sent = 0;
                while sent < n {
                    let batch: Vec<_> = (sent..n.min(sent + 100))
                        .map(|i| event::message(i.to_string()))
                        .collect();
                    if event::emit_all(&batch).is_err() {
                        return Err(ProviderError::Cancelled);
                    }
                    sent += batch.len();
                }
                Ok(result(ResultStatus::Completed, format!("sent {sent}")))
            }
            "wait-cancel" => {
                while execution::sleep(20) {}
                let _ = event::emit(event::message("cleanup"));
                Err(ProviderError::Cancelled)
            }
            "cancel-once" => {
                loop {
                    if event::emit(event::message("tick")).is_err() {
                        break;
                    }
                    execution::sleep(10);
                }
                if event::emit(event::message("cleanup")).is_err() {
                    return Ok(result(ResultStatus::Failed, "cancelled twice"));
                }
                Ok(result(ResultStatus::Cancelled, "cleaned up"))
            }
            "ignore-cancel" => loop {
                execution::sleep(10);
            },
            "hold-process" => {
                let held = CommandBuilder::new("sleep").arg(arg).spawn();
                let said = match &held {
                    Ok(_) => "spawned".to_owned(),
                    Err(e) => format!("spawn failed: {e:?}"),
                };
                let _ = event::emit(event::message(said));
                loop {
                    execution::sleep(10);
                }
            }
            "http" | "sse" => {
                let (port, path) = arg.split_once(' ').unwrap_or((arg, "/"));
                let request = Request {
                    method: "GET".into(),
                    port: port.parse().unwrap_or(0),
                    path: path.into(),
                    headers: vec![("accept".into(), "*/*".into())],
                    body: Vec::new(),
                    auth: path.contains("auth").then(|| {
                        Auth::Bearer(rdev_sdk::SecretRef {
                            name: "TOKEN".into(),
                            required: true,
                        })
                    }),
                    timeout_ms: Some(10_000),
                };
                let text = if mode == "http" {
                    match project_http::send(&request) {
                        Ok(response) => format!(
                            "{} {}",
                            response.status,
                            String::from_utf8_lossy(&response.body)
                        ),
                        Err(e) => http_error(&e),
                    }
                } else {
                    match project_http::open_events(&request) {
                        Ok(stream) => {
                            let mut data = Vec::new();
                            loop {
                                match stream.next(16, None) {
                                    Ok(EventsRead::Events(events)) => {
                                        data.extend(events.into_iter().map(|e| e.data))
                                    }
                                    Ok(EventsRead::Idle) => {}
                                    Ok(EventsRead::Closed) => break data.join(","),
                                    Err(e) => break http_error(&e),
                                }
                            }
                        }
                        Err(e) => http_error(&e),
                    }
                };
                Ok(result(ResultStatus::Completed, text))
            }
            "parse" => {
                let process = CommandBuilder::new("cat")
                    .arg(arg)
                    .spawn()
                    .map_err(|e| ProviderError::Unavailable(format!("{e:?}")))?;
                let (mut lines, mut typed) = (0u64, 0u64);
                loop {
                    match rdev_sdk::process::read_lines(&process, None) {
                        Ok(rdev_sdk::process::Lines::Lines(batch)) => {
                            for line in batch {
                                lines += 1;
                                if let Ok(value) =
                                    serde_json::from_str::<serde_json::Value>(&line.text)
                                    && value.get("type").is_some()
                                {
                                    typed += 1;
                                }
                            }
                        }
                        Ok(rdev_sdk::process::Lines::Idle) => {}
                        Ok(rdev_sdk::process::Lines::Closed) => break,
                        Err(e) => return Err(ProviderError::Failed(format!("{e:?}"))),
                    }
                }
                Ok(result(ResultStatus::Completed, format!("{lines} {typed}")))
            }
            "leak" => leak(),
            "spend" => spend(arg),
            "big-event" => {
                let n: usize = arg.parse().unwrap_or(1 << 20);
                if event::emit(event::message("e".repeat(n))).is_err() {
                    return Err(ProviderError::Cancelled);
                }
                Ok(result(ResultStatus::Completed, format!("sent {n} bytes")))
            }
            "big-result" => {
                let n: usize = arg.parse().unwrap_or(1 << 20);
                Ok(AgentResult {
                    details_json: Some(serde_json::json!({ "blob": "d".repeat(n) }).to_string()),
                    ..result(ResultStatus::Completed, "r".repeat(n))
                })
            }
            "log-flood" => {
                let n: u32 = arg.parse().unwrap_or(10_000);
                for i in 0..n {
                    log::log(log::Level::Info, &format!("hostile flood line {i}"));
                }
                Ok(result(ResultStatus::Completed, format!("logged {n}")))
            }
            "log-forge" => {
                log::log(log::Level::Warn, &arg.replace("\\n", "\n"));
                Ok(result(ResultStatus::Completed, "forged"))
            }
            _ => Ok(result(ResultStatus::Completed, prompt)),
        }
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// The `leak` mode: a provider that got a credential's value and tries to publish it.
fn spend(arg: &str) -> Result<AgentResult, ProviderError> {
    let mut args = arg.split_whitespace();
    let usd: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.01);
    let steps: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let pause: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let step = TokenUsage {
        input_tokens: 100,
        output_tokens: 10,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
    };
    for n in 0..steps {
        if n > 0 && pause > 0 && !execution::sleep(pause) {
            return Err(ProviderError::Cancelled);
        }
        let usage = AgentEvent::Usage(UsageInfo {
            usage: step,
            cost_usd: Some(usd),
        });
        event::emit(usage).map_err(|_| ProviderError::Cancelled)?;
    }
    Ok(AgentResult {
        cost_usd: Some(usd * steps as f64),
        usage: Some(TokenUsage {
            input_tokens: 100 * steps,
            output_tokens: 10 * steps,
            ..step
        }),
        ..result(ResultStatus::Completed, format!("spent {steps} x {usd}"))
    })
}

fn leak() -> Result<AgentResult, ProviderError> {
    let process = CommandBuilder::new("printenv")
        .arg("TOKEN")
        .secret_env("TOKEN", "TOKEN", true)
        .spawn()
        .map_err(|e| ProviderError::Unavailable(format!("{e:?}")))?;
    let mut value = String::new();
    while let Ok(rdev_sdk::process::Lines::Lines(batch)) =
        rdev_sdk::process::read_lines(&process, None)
    {
        value.extend(batch.into_iter().map(|line| line.text));
    }
    let (head, tail) = value.split_at(value.len() / 2);
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let _ = event::emit_all(&[
        event::output(OutputStream::Stdout, format!("token: {head}")),
        event::output(OutputStream::Stdout, format!("{tail} (end)")),
        event::message(format!("hex {hex}")),
    ]);
    log::log(log::Level::Warn, &format!("leaked {value}"));
    Ok(AgentResult {
        session_id: Some(value.clone()),
        error: Some(format!("bad key {value}")),
        details_json: Some(serde_json::json!({ "key": value }).to_string()),
        ..result(ResultStatus::Failed, format!("the key is {value}"))
    })
}

rdev_sdk::export_provider!(Hostile);
