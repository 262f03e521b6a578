//! The OpenCode server's HTTP API as this guest reaches it through the host's project-http
//! capability: requests with the right auth and deadline, and failures worded with method,
//! path, status and a body excerpt.

use rdev_sdk::v0_2::SecretRef;
use rdev_sdk::v0_2::project_http::{self, Auth, EventStream, HttpError, Request, Response};
use serde_json::Value;

/// The credential holding the password of a server the operator runs (the `port` option);
/// the user name is OpenCode's default.
const PASSWORD_CREDENTIAL: &str = "OPENCODE_SERVER_PASSWORD";
const USERNAME: &str = "opencode";
/// Deadline of an ordinary API call. The server answers these from memory or its local
/// store; a call taking longer means it is wedged.
const REQUEST_TIMEOUT_MS: u32 = 30_000;
/// Longest excerpt of a response body quoted in an error.
const BODY_EXCERPT_CHARS: usize = 300;

/// Why an HTTP call did not produce a 2xx answer.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The host cancelled the execution during the call.
    Cancelled,
    /// Nothing listens on the port.
    Connect(String),
    /// Any other failure, described with method, path, status and a body excerpt.
    Other(String),
}

/// The server's HTTP API on one port of the workspace.
pub(crate) struct Api {
    pub(crate) port: u16,
    /// The port is the manifest's service: the host runs the server and authenticates.
    pub(crate) host_run: bool,
}

impl Api {
    /// The auth of a server the operator runs; the host adds its own to its service.
    pub(crate) fn auth(&self) -> Option<Auth> {
        (!self.host_run).then(|| {
            Auth::Basic((
                USERNAME.to_owned(),
                SecretRef {
                    name: PASSWORD_CREDENTIAL.to_owned(),
                    required: true,
                },
            ))
        })
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.trim().chars().take(BODY_EXCERPT_CHARS).collect();
    if text.trim().chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

pub(crate) fn describe(method: &str, path: &str, error: HttpError) -> Fail {
    let what = format!("opencode {method} {path}");
    match error {
        HttpError::Cancelled => Fail::Cancelled,
        HttpError::Connect(why) => Fail::Connect(format!("{what}: connection failed: {why}")),
        HttpError::Denied(why) => {
            Fail::Other(format!("{what}: not permitted by the grants: {why}"))
        }
        HttpError::MissingSecret(name) => {
            Fail::Other(format!("{what}: credential {name:?} is not set"))
        }
        HttpError::Timeout => Fail::Other(format!("{what}: timed out")),
        HttpError::Protocol(why) => Fail::Other(format!("{what}: {why}")),
        HttpError::Status(response) => Fail::Other(status_error(method, path, &response)),
    }
}

pub(crate) fn status_error(method: &str, path: &str, response: &Response) -> String {
    format!(
        "opencode {method} {path} answered {}: {}",
        response.status,
        excerpt(&response.body)
    )
}

impl Api {
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: u32,
    ) -> Request {
        let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
        if body.is_some() {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        Request {
            method: method.to_owned(),
            port: self.port,
            path: path.to_owned(),
            headers,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
            auth: self.auth(),
            timeout_ms: Some(timeout),
        }
    }

    /// Sends a request; a non-2xx answer is an error naming method, path and status.
    pub(crate) fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: u32,
    ) -> Result<Vec<u8>, Fail> {
        let response = project_http::send(&self.request(method, path, body, timeout))
            .map_err(|e| describe(method, path, e))?;
        if !(200..300).contains(&response.status) {
            return Err(Fail::Other(status_error(method, path, &response)));
        }
        Ok(response.body)
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, Fail> {
        self.call_with(method, path, body, REQUEST_TIMEOUT_MS)
    }

    /// A call answering JSON.
    pub(crate) fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Fail> {
        let bytes = self.call(method, path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Fail::Other(format!(
                "opencode {method} {path} answered something not JSON ({e}): {}",
                excerpt(&bytes)
            ))
        })
    }

    pub(crate) fn events(&self) -> Result<EventStream, Fail> {
        project_http::open_events(&self.request("GET", "/event", None, REQUEST_TIMEOUT_MS))
            .map_err(|e| describe("GET", "/event", e))
    }
}
