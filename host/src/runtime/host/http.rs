//! `project-http`: HTTP/1.1 and server-sent events to a granted port inside the project's
//! workspace, over a connection the [`Executor`] opens (localhost or a pod port-forward).
//! Credentials named for auth are resolved here, on the host, and only the header leaves.
//!
//! [`Executor`]: crate::ports::Executor

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use wasmtime::component::Resource;

use super::interaction::or_input;
use super::sse::SseParser;
use crate::ports::EnvValue;
use crate::runtime::abi::latest::rdev::provider::project_http::{
    Auth, EventsRead, Host, HostEventStream, HttpError, Request, Response, ServiceConfig, SseEvent,
};
use crate::runtime::abi::latest::wit::SecretRef;
use crate::runtime::service::Lease;
use crate::runtime::state::{ExecCtx, HostState};

/// Largest response body handed to a guest; bigger ones are a protocol error.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// An open SSE response, as a resource in the guest's store.
pub struct EventStreamHandle {
    body: Incoming,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    closed: bool,
    connection: JoinHandle<()>,
    /// The service the stream comes from is in use while the stream is open.
    _lease: Option<Lease>,
}

impl Drop for EventStreamHandle {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl EventStreamHandle {
    async fn next(&mut self, max: usize, idle: Option<Duration>) -> Result<EventsRead, HttpError> {
        loop {
            if !self.queue.is_empty() {
                let n = max.min(self.queue.len());
                return Ok(EventsRead::Events(self.queue.drain(..n).collect()));
            }
            if self.closed {
                return Ok(EventsRead::Closed);
            }
            let frame = match idle {
                Some(idle) => match tokio::time::timeout(idle, self.body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => return Ok(EventsRead::Idle),
                },
                None => self.body.frame().await,
            };
            match frame {
                None => {
                    self.parser.finish();
                    self.closed = true;
                }
                Some(Err(e)) => {
                    self.closed = true;
                    return Err(HttpError::Protocol(format!("event stream broke: {e}")));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.queue
                            .extend(self.parser.feed(&data).into_iter().map(|e| SseEvent {
                                id: e.id,
                                event: e.event,
                                data: e.data,
                            }));
                    }
                }
            }
        }
    }
}

async fn secret(exec: &ExecCtx, secret: &SecretRef) -> Result<String, HttpError> {
    exec.check_credential(&secret.name)
        .map_err(|d| HttpError::Denied(d.0))?;
    match exec.secrets.resolve(&secret.name).await {
        Ok(Some(value)) => Ok(value.expose().to_owned()),
        Ok(None) => Err(HttpError::MissingSecret(secret.name.clone())),
        Err(e) => Err(HttpError::Connect(format!("credential store: {e}"))),
    }
}

/// Where a request goes: a port in the workspace and its `Authorization` header, with the
/// lease of the host-run service it addresses, held as long as the request or stream.
struct Target {
    port: u16,
    authorization: Option<String>,
    lease: Option<Lease>,
}

/// Checks the request against the grants and finds its target. A request to the port of
/// the plugin's declared service goes to the project's service (started now when none
/// runs) with the host's own secret; the guest's auth is not used for it.
async fn target(exec: &ExecCtx, req: &Request) -> Result<Target, HttpError> {
    exec.manifest
        .grants
        .check_port(req.port)
        .map_err(|d| HttpError::Denied(d.0))?;
    if !req.path.starts_with('/') {
        return Err(HttpError::Protocol(format!(
            "path {:?} must start with '/'",
            req.path
        )));
    }
    let service = exec
        .manifest
        .service
        .as_ref()
        .filter(|s| s.port == req.port);
    let lease = match (service, &exec.services) {
        (Some(spec), Some(services)) => {
            let project = exec.project().map_err(HttpError::Connect)?.clone();
            let (services, spec, plugin) = (services.clone(), spec.clone(), exec.plugin.clone());
            let env = exec.service_env.lock().ok().and_then(|env| env.clone());
            // Its own task: a cancel while the service starts leaves it starting, so the
            // project's next command finds it warm instead of paying the start again.
            let start = tokio::spawn(async move {
                services
                    .lease(&plugin, &spec, &project, env.as_deref())
                    .await
            });
            let leased = start
                .await
                .map_err(|e| HttpError::Connect(format!("starting the service: {e}")))?;
            Some(leased.map_err(|e| HttpError::Connect(e.to_string()))?)
        }
        _ => None,
    };
    let port = lease.as_ref().map_or(req.port, Lease::port);
    let authorization = match lease.as_ref().and_then(Lease::authorization) {
        Some(value) => Some(value),
        None => guest_authorization(exec, req.auth.as_ref()).await?,
    };
    Ok(Target {
        port,
        authorization,
        lease,
    })
}

/// The header for the auth the guest asked for, with the credential resolved here.
async fn guest_authorization(
    exec: &ExecCtx,
    auth: Option<&Auth>,
) -> Result<Option<String>, HttpError> {
    Ok(match auth {
        None => None,
        Some(Auth::Bearer(s)) => Some(format!("Bearer {}", secret(exec, s).await?)),
        Some(Auth::Basic((user, s))) => {
            let password = secret(exec, s).await?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {encoded}"))
        }
    })
}

/// Finds the target (outside the request's own deadline: a service's start may take
/// longer than one request), cancellably.
async fn resolve(exec: &ExecCtx, req: &Request) -> Result<Target, HttpError> {
    exec.cancellable(target(exec, req))
        .await
        .unwrap_or(Err(HttpError::Cancelled))
}

/// Sends the request and returns the response head with its still-unread body.
async fn start(
    exec: &ExecCtx,
    req: Request,
    target: &Target,
) -> Result<(hyper::Response<Incoming>, JoinHandle<()>), HttpError> {
    let project = exec.project().map_err(HttpError::Connect)?;
    let stream = exec
        .executor
        .connect(project, target.port)
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Connect(format!("HTTP handshake: {e}")))?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str())
        .header(hyper::header::HOST, format!("localhost:{}", target.port));
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("authorization") && target.authorization.is_some() {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(value) = &target.authorization {
        builder = builder.header(hyper::header::AUTHORIZATION, value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| HttpError::Protocol(format!("invalid request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Protocol(e.to_string()))?;
    Ok((response, connection))
}

async fn read_whole(response: hyper::Response<Incoming>) -> Result<Response, HttpError> {
    let status = response.status().as_u16();
    let headers = headers(response.headers());
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| HttpError::Protocol(format!("reading the response body: {e}")))?
        .to_bytes()
        .to_vec();
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn headers(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Applies the request's own deadline and the execution's cancel to an HTTP operation.
async fn guarded<T>(
    exec: &ExecCtx,
    timeout_ms: Option<u32>,
    op: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    let op = async {
        match timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(u64::from(ms)), op)
                .await
                .unwrap_or(Err(HttpError::Timeout)),
            None => op.await,
        }
    };
    exec.cancellable(op)
        .await
        .unwrap_or(Err(HttpError::Cancelled))
}

/// The environment a `configure-service` call asks for, checked against the manifest: the
/// port is its service's, every variable the guest's to set, every credential granted.
fn service_env(
    exec: &ExecCtx,
    port: u16,
    config: ServiceConfig,
) -> Result<Vec<(String, EnvValue)>, HttpError> {
    let spec = exec
        .manifest
        .service
        .as_ref()
        .filter(|s| s.port == port)
        .ok_or_else(|| {
            HttpError::Denied(format!(
                "port {port} is no service of this plugin's manifest"
            ))
        })?;
    let names = config
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(config.credentials.iter().map(|(k, _)| k.as_str()));
    spec.check_guest_env(names).map_err(HttpError::Denied)?;
    let mut env: Vec<(String, EnvValue)> = config
        .env
        .into_iter()
        .map(|(k, v)| (k, EnvValue::Plain(v)))
        .collect();
    for (key, secret) in config.credentials {
        exec.check_credential(&secret.name)
            .map_err(|d| HttpError::Denied(d.0))?;
        env.push((
            key,
            EnvValue::Secret {
                name: secret.name,
                required: secret.required,
            },
        ));
    }
    Ok(env)
}

impl Host for HostState {
    async fn configure_service(
        &mut self,
        port: u16,
        config: ServiceConfig,
    ) -> wasmtime::Result<Result<(), HttpError>> {
        let env = match service_env(&self.exec, port, config) {
            Ok(env) => env,
            Err(e) => return Ok(Err(e)),
        };
        if let Ok(mut current) = self.exec.service_env.lock() {
            *current = Some(env);
        }
        Ok(Ok(()))
    }

    async fn send(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let exec = self.exec.clone();
        let timeout = req.timeout_ms;
        let target = match resolve(&exec, &req).await {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        Ok(guarded(&exec, timeout, async {
            let (response, connection) = start(&exec, req, &target).await?;
            let result = read_whole(response).await;
            connection.abort();
            result
        })
        .await)
    }

    async fn open_events(
        &mut self,
        req: Request,
    ) -> wasmtime::Result<Result<Resource<EventStreamHandle>, HttpError>> {
        let exec = self.exec.clone();
        let timeout = req.timeout_ms;
        let target = match resolve(&exec, &req).await {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let opened = guarded(&exec, timeout, async {
            let (response, connection) = start(&exec, req, &target).await?;
            if !response.status().is_success() {
                let whole = read_whole(response).await;
                connection.abort();
                return Err(HttpError::Status(whole?));
            }
            Ok(EventStreamHandle {
                body: response.into_body(),
                parser: SseParser::new(),
                queue: VecDeque::new(),
                closed: false,
                connection,
                _lease: None,
            })
        })
        .await;
        Ok(match opened {
            Ok(mut handle) => {
                handle._lease = target.lease;
                Ok(self.table.push(handle)?)
            }
            Err(e) => Err(e),
        })
    }
}

impl HostEventStream for HostState {
    async fn next(
        &mut self,
        rep: Resource<EventStreamHandle>,
        max_events: u32,
        idle_timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<EventsRead, HttpError>> {
        let exec = self.exec.clone();
        let HostState { table, input, .. } = self;
        let stream = table.get_mut(&rep)?;
        let max = usize::try_from(max_events.max(1)).unwrap_or(usize::MAX);
        let idle = idle_timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
        Ok(
            match exec
                .cancellable(or_input(input.as_mut(), stream.next(max, idle)))
                .await
            {
                Ok(Some(read)) => read,
                Ok(None) => Ok(EventsRead::Idle),
                Err(_) => Err(HttpError::Cancelled),
            },
        )
    }

    async fn drop(&mut self, rep: Resource<EventStreamHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
