//! A webhook receiver for tests: an HTTP endpoint on 127.0.0.1 that records every request
//! and answers from a script (e.g. 500, then 503 with `Retry-After`, then 200, or only after
//! a while, as a hanging endpoint would), plus a
//! Standard Webhooks verifier written here, independently of rdev's signer, so a test
//! checks the signature as a real receiver would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::doubles::thread_server::ThreadServer;

/// One answer of the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// How long the endpoint holds the request before answering.
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: None,
        }
    }

    pub fn retry_after(status: u16, value: &str) -> Self {
        Self {
            retry_after: Some(value.to_owned()),
            ..Self::status(status)
        }
    }

    /// `status`, once `delay` has passed (a slow or hanging endpoint).
    pub fn after(delay: Duration, status: u16) -> Self {
        Self {
            delay: Some(delay),
            ..Self::status(status)
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    /// Answer once the script is used up.
    fallback: Option<Reply>,
}

type Shared = Arc<Mutex<Inner>>;

/// The receiver; stops when dropped.
pub struct WebhookReceiver {
    server: ThreadServer,
    inner: Shared,
}

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn receive(
    State(inner): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = lock(&inner);
        inner.received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
        });
        inner
            .script
            .pop_front()
            .or_else(|| inner.fallback.clone())
            .unwrap_or(Reply::status(204))
    };
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = status.into_response();
    if let Some(value) = reply.retry_after
        && let Ok(value) = value.parse()
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

impl WebhookReceiver {
    /// Starts on an ephemeral loopback port; answers 204 unless scripted otherwise.
    pub fn start() -> std::io::Result<Self> {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(inner.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server = ThreadServer::start("webhook-receiver", app, runtime)?;
        Ok(Self { server, inner })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    /// The next answers, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.inner).script.extend(replies);
    }

    /// The answer once the script is used up (204 unless set).
    pub fn always(&self, reply: Reply) {
        lock(&self.inner).fallback = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner).received.clone()
    }

    /// Waits until at least `count` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} webhook requests within {timeout:?}, got {}: {:?}",
                received.len(),
                received.iter().map(|r| r.json()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Verifies a request per Standard Webhooks with `secret` (`whsec_…`): the
/// `webhook-signature` header must hold `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`
/// where the key is the base64-decoded part after `whsec_`. Returns why not, if not.
pub fn verify(secret: &str, received: &Received) -> Result<(), String> {
    let id = received.header("webhook-id");
    let timestamp = received.header("webhook-timestamp");
    if id.is_empty() || timestamp.parse::<i64>().is_err() {
        return Err(format!("missing id or timestamp: {id:?} {timestamp:?}"));
    }
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("the secret lacks the whsec_ prefix")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let header = received.header("webhook-signature");
    // Several space-separated signatures may be sent (during key rotation); one must match.
    if header
        .split(' ')
        .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
    {
        Ok(())
    } else {
        Err(format!("no signature in {header:?} matches"))
    }
}
