//! An in-process `rdev serve` on an ephemeral loopback port, with a temporary data dir, the
//! real plugins and SQLite or a throwaway PostgreSQL database, plus an SSE reader.

use std::time::Duration;

use futures::StreamExt;
use rdev::server::{ServeConfig, Server};

use super::postgres::TestDatabase;

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    server: Option<Server>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The generated admin token.
    pub admin: String,
    pub http: reqwest::Client,
    _data: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

impl TestServer {
    /// With the embedded defaults: SQLite in a temporary data dir.
    pub async fn sqlite() -> Self {
        Self::start(None, |_| {}).await
    }

    /// On a fresh PostgreSQL database; `None` (after `skip_or_fail`) without a server.
    pub async fn postgres() -> Option<Self> {
        let database = TestDatabase::create().await?;
        Some(Self::start(Some(database), |_| {}).await)
    }

    /// A fresh PostgreSQL database with the configuration adjusted by `adjust`.
    pub async fn postgres_with(adjust: impl FnOnce(&mut ServeConfig)) -> Option<Self> {
        let database = TestDatabase::create().await?;
        Some(Self::start(Some(database), adjust).await)
    }

    /// SQLite with the configuration adjusted by `adjust`.
    pub async fn sqlite_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start(None, adjust).await
    }

    async fn start(database: Option<TestDatabase>, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let data = tempfile::tempdir().expect("temporary data dir");
        let mut config = ServeConfig::new();
        config.listen = "127.0.0.1:0".into();
        config.data_dir = data.path().to_owned();
        config.plugins_dir = Some(super::plugins::plugins_dir());
        config.database_url = database.as_ref().map(|db| db.url.clone());
        // Cancels reach a running command at its next heartbeat: keep that short.
        config.queue.heartbeat = Duration::from_millis(200);
        config.queue.poll_fallback = Duration::from_millis(500);
        config.worker.drain_deadline = Duration::from_secs(5);
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let admin = server
            .generated_admin_token()
            .expect("a fresh data dir generates an admin token")
            .to_owned();
        // reqwest is built without a default TLS crypto provider; install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        Self {
            base: format!("http://{}", server.local_addr()),
            server: Some(server),
            admin,
            http,
            _data: data,
            _database: database,
        }
    }

    /// The running server (its stores, registry and metrics).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the given bearer token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// One server-sent event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .expect("events carry numeric ids")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// Reads an SSE response frame by frame; comments (keep-alives) are skipped.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut data_lines = Vec::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data_lines.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data_lines.is_empty() && event.id.is_none() {
                    continue;
                }
                event.data = data_lines.join("\n");
                return Some(event);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(error)) => panic!("SSE body failed: {error}"),
                None => return None,
            }
        }
    }

    /// Every remaining event until the server closes the stream.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
