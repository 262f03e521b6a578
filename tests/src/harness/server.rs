//! An in-process `rdev serve` on an ephemeral loopback port, with a temporary data dir, the
//! real plugins and SQLite or a throwaway PostgreSQL database, plus an SSE reader.

use std::time::Duration;

use futures::StreamExt;
use rdev::server::{ServeConfig, Server};

use super::Database;
use super::postgres::TestDatabase;

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    server: Option<Server>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The generated admin token.
    pub admin: String,
    pub http: reqwest::Client,
    data: tempfile::TempDir,
    _database: Option<TestDatabase>,
    /// A plugins directory made for this server, removed with it.
    plugins: Option<tempfile::TempDir>,
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

    /// On `database` with the configuration adjusted by `adjust`, for tests that run once
    /// per database; `None` (after `skip_or_fail`) without a PostgreSQL server.
    pub async fn on(database: Database, adjust: impl FnOnce(&mut ServeConfig)) -> Option<Self> {
        match database {
            Database::Sqlite => Some(Self::sqlite_with(adjust).await),
            Database::Postgres => Self::postgres_with(adjust).await,
        }
    }

    /// [`on`](Self::on) with `plugins` as the plugins directory, kept as long as the server.
    pub async fn with_plugins(
        database: Database,
        plugins: tempfile::TempDir,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Option<Self> {
        let dir = plugins.path().to_owned();
        let mut server = Self::on(database, move |config| {
            config.plugins_dir = Some(dir);
            adjust(config);
        })
        .await?;
        server.plugins = Some(plugins);
        Some(server)
    }

    async fn start(database: Option<TestDatabase>, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        show_server_log();
        let data = tempfile::tempdir().expect("temporary data dir");
        Self::boot(data, database, adjust, None).await
    }

    /// Stops the server and starts another on the same data dir and database, as an
    /// operator restarts one, with `adjust` applied; the admin token stays valid.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let plugins = self.plugins.take();
        let dir = plugins.as_ref().map(|p| p.path().to_owned());
        let adjust = move |config: &mut ServeConfig| {
            if dir.is_some() {
                config.plugins_dir = dir;
            }
            adjust(config);
        };
        let mut restarted = Self::boot(self.data, self._database, adjust, Some(self.admin)).await;
        restarted.plugins = plugins;
        restarted
    }

    /// The data directory (database, `master.key`, workspaces).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The database URL the server uses, for tests that reach rows directly (as a database
    /// writer could) or point the CLI at the same database.
    pub fn database_url(&self) -> String {
        match &self._database {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}", self.data.path().join("rdev.db").display()),
        }
    }

    async fn boot(
        data: tempfile::TempDir,
        database: Option<TestDatabase>,
        adjust: impl FnOnce(&mut ServeConfig),
        admin: Option<String>,
    ) -> Self {
        let mut config = ServeConfig::new();
        config.listen = "127.0.0.1:0".into();
        config.data_dir = data.path().to_owned();
        config.plugins_dir = Some(super::plugins::plugins_dir());
        config.database_url = database.as_ref().map(|db| db.url.clone());
        // Cancels reach a running command at its next heartbeat: keep that short.
        config.queue.heartbeat = Duration::from_millis(200);
        config.queue.poll_fallback = Duration::from_millis(500);
        config.worker.drain_deadline = Duration::from_secs(5);
        // Confined like `rdev serve`: the helper is the one `cargo xtask plugins` installs.
        config.confinement.helper =
            Some(super::bin::rdev().with_file_name(rdev::adapters::local::sandbox::HELPER_NAME));
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let admin = admin.unwrap_or_else(|| {
            server
                .generated_admin_token()
                .expect("a fresh data dir generates an admin token")
                .to_owned()
        });
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
            data,
            _database: database,
            plugins: None,
        }
    }

    /// The running server (its stores, registry and metrics).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The project's workspace directory (local executor, per-project layout), where a
    /// test looks for the effects of the commands it ran.
    pub fn workspace(&self, project: &str) -> std::path::PathBuf {
        self.data.path().join("projects").join(project)
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

    /// Sends `body` as JSON (if any) with `token`; the status and the decoded JSON answer
    /// (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.request(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_of(request.send().await.expect("request sent")).await
    }

    /// [`call`](Self::call) with the admin token.
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(method, path, Some(&self.admin), body).await
    }

    /// The API as the admin, with one status check per request (see [`Caller`]).
    pub fn as_admin(&self) -> Caller<'_> {
        Caller {
            server: self,
            token: Some(&self.admin),
        }
    }

    /// The API as the holder of `token`, with one status check per request.
    pub fn as_token<'a>(&'a self, token: &'a str) -> Caller<'a> {
        Caller {
            server: self,
            token: Some(token),
        }
    }

    /// The API without a token, with one status check per request.
    pub fn anonymous(&self) -> Caller<'_> {
        Caller {
            server: self,
            token: None,
        }
    }

    /// A member token (named `member`) for `projects`, created by the admin through the API.
    pub async fn member_token(&self, projects: &[&str]) -> String {
        let body = serde_json::json!({"name": "member", "role": "member", "projects": projects});
        let created = self
            .as_admin()
            .post("/tokens", body, reqwest::StatusCode::CREATED)
            .await;
        created["token"]
            .as_str()
            .expect("the secret, returned once")
            .to_owned()
    }

    /// The `rdev` binary as a client of this server, holding `token`: `RDEV_URL` and
    /// `RDEV_TOKEN` set as users set them and no `RDEV_DATA_DIR`; the caller adds the
    /// arguments. Run it off the test's runtime thread (`output().await`) so the in-process
    /// server keeps answering.
    pub fn client(&self, token: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(super::bin::rdev());
        command
            .env("RDEV_URL", &self.base)
            .env("RDEV_TOKEN", token)
            .env_remove("RDEV_DATA_DIR");
        command
    }

    /// Subscribes `url` to `types` of `project`'s events as the admin, expecting 201; the
    /// webhook's id and its signing secret (shown this once).
    pub async fn subscribe(&self, project: &str, url: &str, types: &[&str]) -> (String, String) {
        let path = format!("/projects/{project}/webhooks");
        let body = serde_json::json!({"url": url, "event_types": types});
        let created = self
            .as_admin()
            .post(&path, body, reqwest::StatusCode::CREATED)
            .await;
        let secret = created["secret"].as_str().expect("secret shown once");
        assert!(secret.starts_with("whsec_"), "{created}");
        let id = created["id"].as_str().expect("id");
        (id.to_owned(), secret.to_owned())
    }

    /// The Prometheus text `GET /metrics` serves.
    pub async fn metrics(&self) -> String {
        self.request(reqwest::Method::GET, "/metrics", None)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    }

    /// Asks to cancel command `id` as the admin; the status and the answer.
    pub async fn cancel(&self, id: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let path = format!("/commands/{id}/cancel");
        self.admin_call(reqwest::Method::POST, &path, None).await
    }

    /// Decides approval `id` with `body` (`{"decision": …}`) as the admin, expecting 200;
    /// the decided approval.
    pub async fn decide(&self, id: &str, body: serde_json::Value) -> serde_json::Value {
        let path = format!("/approvals/{id}");
        self.as_admin()
            .post(&path, body, reqwest::StatusCode::OK)
            .await
    }

    /// Creates project `id` as the admin, expecting 201.
    pub async fn create_project(&self, id: &str) {
        let body = serde_json::json!({ "id": id });
        self.as_admin()
            .post("/projects", body, reqwest::StatusCode::CREATED)
            .await;
    }

    /// Sets `project`'s approval policy as the admin, expecting 200.
    pub async fn put_policy(&self, project: &str, policy: serde_json::Value) {
        let path = format!("/projects/{project}/policy");
        self.as_admin()
            .put(&path, policy, reqwest::StatusCode::OK)
            .await;
    }

    /// Sends `text` as follow-up input to running command `id` as the admin, expecting 202.
    pub async fn send_input(&self, id: &str, text: &str) {
        let path = format!("/commands/{id}/input");
        let body = serde_json::json!({ "text": text });
        self.as_admin()
            .post(&path, body, reqwest::StatusCode::ACCEPTED)
            .await;
    }

    /// Stores credential `name` as the admin, expecting 200; the answer (its name, never
    /// its value).
    pub async fn put_credential(&self, name: &str, value: &str) -> serde_json::Value {
        let path = format!("/credentials/{name}");
        let body = serde_json::json!({ "value": value });
        self.as_admin()
            .put(&path, body, reqwest::StatusCode::OK)
            .await
    }

    /// `GET path` as the admin, expecting 200; the items of the answer's array `field`.
    pub async fn list(&self, path: &str, field: &str) -> Vec<serde_json::Value> {
        let answer = self.as_admin().get(path, reqwest::StatusCode::OK).await;
        let items = answer[field].as_array().cloned();
        items.unwrap_or_else(|| panic!("no {field} in {answer}"))
    }

    /// The command `id` as `GET /commands/{id}` reports it to the admin, expecting 200.
    pub async fn command(&self, id: &str) -> serde_json::Value {
        let (status, body) = self
            .admin_call(reqwest::Method::GET, &format!("/commands/{id}"), None)
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        body
    }

    /// Polls the command `id` until it ends (completed, failed or cancelled), at most `wait`;
    /// its view then.
    pub async fn finished_within(&self, id: &str, wait: std::time::Duration) -> serde_json::Value {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let command = self.command(id).await;
            if matches!(
                command["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return command;
            }
            assert!(std::time::Instant::now() < deadline, "{command}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Submits `prompt` to `provider` of `project` as the admin, expecting 202; the answer
    /// (with `id` and `stream_url`).
    pub async fn submit(&self, project: &str, provider: &str, prompt: &str) -> serde_json::Value {
        let (status, body) = self
            .admin_call(
                reqwest::Method::POST,
                &format!("/projects/{project}/{provider}"),
                Some(serde_json::json!({ "prompt": prompt })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
        body
    }

    /// Submits `body` to `provider` of `project` as the admin, expecting 202, and opens the
    /// command's event stream.
    pub async fn run(&self, project: &str, provider: &str, body: serde_json::Value) -> Running {
        let (status, answer) = self
            .admin_call(
                reqwest::Method::POST,
                &format!("/projects/{project}/{provider}"),
                Some(body),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{answer}");
        let id = answer["command_id"]
            .as_str()
            .expect("command id")
            .to_owned();
        let stream = answer["stream_url"].as_str().expect("stream url");
        Running {
            id,
            events: self.open_stream(stream).await,
        }
    }

    /// Opens the event stream at `stream_url` (as a submit answers it) as the admin,
    /// expecting 200.
    pub async fn open_stream(&self, stream_url: &str) -> SseReader {
        let response = self
            .request(reqwest::Method::GET, stream_url, Some(&self.admin))
            // A stream may rightly stay open longer than the client's default deadline for
            // a whole response; waits for its events have their own deadlines.
            .timeout(STREAM_DEADLINE)
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{stream_url}");
        SseReader::new(response)
    }

    /// Every event of a submitted command's stream (`submitted` is the answer of a submit)
    /// until the server closes it, at most `wait`.
    pub async fn events_within(
        &self,
        submitted: &serde_json::Value,
        wait: Duration,
    ) -> Vec<SseEvent> {
        let stream_url = submitted["stream_url"].as_str().expect("stream_url");
        let events = self.open_stream(stream_url).await.collect();
        tokio::time::timeout(wait, events)
            .await
            .unwrap_or_else(|_| panic!("{stream_url} did not end within {wait:?}"))
    }

    /// Follows a submitted command's stream (the answer of a submit) until the server closes
    /// it; the events received and the command as `GET /commands/{id}` then reports it.
    pub async fn follow(
        &self,
        submitted: &serde_json::Value,
    ) -> (Vec<SseEvent>, serde_json::Value) {
        let stream_url = submitted["stream_url"].as_str().expect("stream_url");
        let events = self.open_stream(stream_url).await.collect().await;
        let id = submitted["command_id"].as_str().expect("command_id");
        (events, self.command(id).await)
    }

    /// Submits `prompt` and follows the stream to its end, at most `wait`; the events and the
    /// command as `GET /commands/{id}` then shows it.
    pub async fn run_within(
        &self,
        project: &str,
        provider: &str,
        prompt: &str,
        wait: Duration,
    ) -> (Vec<SseEvent>, serde_json::Value) {
        let submitted = self.submit(project, provider, prompt).await;
        tokio::time::timeout(wait, self.follow(&submitted))
            .await
            .unwrap_or_else(|_| panic!("{prompt:?} did not end within {wait:?}"))
    }

    /// The rest of `run`'s events (at most `wait`, see [`Running::rest`]) and then its
    /// command once it has ended (see [`finished_within`](Self::finished_within)).
    pub async fn finish(
        &self,
        run: Running,
        wait: Duration,
    ) -> (Vec<(String, serde_json::Value)>, serde_json::Value) {
        let id = run.id.clone();
        let events = run.rest(wait).await;
        (events, self.finished_within(&id, wait).await)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Requests to a [`TestServer`] with one token (or none), each asserting the answer's
/// status: the request-and-status check tests make over and over, written once. Each
/// returns the decoded answer (`Null` when it is not JSON); a failed check names the
/// method, the path and the answer.
pub struct Caller<'a> {
    server: &'a TestServer,
    token: Option<&'a str>,
}

impl Caller<'_> {
    /// Sends `body` (if any) with `method` to `path`, expecting `status`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        status: reqwest::StatusCode,
    ) -> serde_json::Value {
        let (actual, answer) = self
            .server
            .call(method.clone(), path, self.token, body)
            .await;
        assert_eq!(actual, status, "{method} {path}: {answer}");
        answer
    }

    /// `GET path`, expecting `status`.
    pub async fn get(&self, path: &str, status: reqwest::StatusCode) -> serde_json::Value {
        self.send(reqwest::Method::GET, path, None, status).await
    }

    /// `POST path` with `body` (a JSON value, or `None` for none), expecting `status`.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Option<serde_json::Value>>,
        status: reqwest::StatusCode,
    ) -> serde_json::Value {
        self.send(reqwest::Method::POST, path, body.into(), status)
            .await
    }

    /// `PUT path` with `body`, expecting `status`.
    pub async fn put(
        &self,
        path: &str,
        body: serde_json::Value,
        status: reqwest::StatusCode,
    ) -> serde_json::Value {
        self.send(reqwest::Method::PUT, path, Some(body), status)
            .await
    }

    /// `DELETE path`, expecting `status`.
    pub async fn delete(&self, path: &str, status: reqwest::StatusCode) -> serde_json::Value {
        self.send(reqwest::Method::DELETE, path, None, status).await
    }
}

/// With `RDEV_TEST_LOG` set to a filter (`rdev=debug`), the log of the servers a test
/// starts in its own process goes to the test's output, which the runner shows when the
/// test fails: how a hang that happens only under load is diagnosed.
fn show_server_log() {
    if let Ok(filter) = std::env::var("RDEV_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// How long a test may keep one event stream open.
const STREAM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// A submitted command and its open event stream.
pub struct Running {
    pub id: String,
    pub events: SseReader,
}

impl Running {
    /// The data of the next event of `kind`, skipping others; panics after `wait` or when
    /// the stream ends first.
    pub async fn next(&mut self, kind: &str, wait: std::time::Duration) -> serde_json::Value {
        let found = tokio::time::timeout(wait, async {
            while let Some(event) = self.events.next().await {
                if event.event.as_deref() == Some(kind) {
                    return Some(event.json());
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} event within {wait:?}"));
        found.unwrap_or_else(|| panic!("the stream ended without a {kind} event"))
    }

    /// The approval of the next `approval_requested` event (see [`next`](Self::next)).
    pub async fn approval(&mut self, wait: std::time::Duration) -> serde_json::Value {
        self.next("approval_requested", wait).await["approval"].clone()
    }

    /// The id of the approval the next `approval_requested` event asks for.
    pub async fn approval_id(&mut self, wait: std::time::Duration) -> String {
        let approval = self.approval(wait).await;
        approval["id"].as_str().expect("approval id").to_owned()
    }

    /// Waits for the `running` status event.
    pub async fn running(&mut self, wait: std::time::Duration) {
        while self.next("status", wait).await["status"] != "running" {}
    }

    /// Every remaining event (kind and data) until the server closes the stream, at most
    /// `wait`.
    pub async fn rest(self, wait: std::time::Duration) -> Vec<(String, serde_json::Value)> {
        tokio::time::timeout(wait, self.events.collect())
            .await
            .expect("the stream ends")
            .into_iter()
            .map(|e| (e.event.clone().unwrap_or_default(), e.json()))
            .collect()
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
        self.try_next()
            .await
            .unwrap_or_else(|error| panic!("SSE body failed: {error}"))
    }

    /// The next complete event, `None` when the server closed the stream, or the error of
    /// a connection that broke (a partly received frame is dropped, as a client would).
    pub async fn try_next(&mut self) -> reqwest::Result<Option<SseEvent>> {
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
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(error)) => return Err(error),
                None => return Ok(None),
            }
        }
    }

    /// Every complete event before the server cut the connection (or closed the stream).
    pub async fn collect_until_cut(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Ok(Some(event)) = self.try_next().await {
            events.push(event);
        }
        events
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

/// `rdev serve` as a child process (the real binary, as operators run it), for tests that
/// need what only a process has: its stdout/stderr logs and its signal handling. SQLite in a
/// temporary data dir; logs go to files there. Dropping it sends SIGTERM, then SIGKILL.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin token printed on first start.
    pub admin: String,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
    plugins_dir: std::path::PathBuf,
    env: Vec<(String, String)>,
}

/// Starts `rdev serve` with its data, logs and ready file in `dir` and waits until it
/// accepts requests; the child and its base URL.
async fn spawn_serve(
    dir: &std::path::Path,
    plugins_dir: &std::path::Path,
    env: &[(String, String)],
) -> (std::process::Child, String) {
    let data = dir.join("data");
    let ready = dir.join("ready");
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .expect("log file")
    };
    let mut child = std::process::Command::new(super::bin::rdev())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .arg("--ready-file")
        .arg(&ready)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("RDEV_LOG", "info,rdev=debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .expect("spawn rdev serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&ready) {
            break addr;
        }
        if let Some(status) = child.try_wait().expect("poll rdev serve") {
            panic!(
                "rdev serve exited ({status}) before it was ready:\n{}",
                read_logs(dir)
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rdev serve not ready after 120 s:\n{}",
            read_logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (child, format!("http://{}", addr.trim()))
}

impl ServeProcess {
    /// Starts `rdev serve` on an ephemeral port with `plugins_dir`, the test's PATH and
    /// `env`, and waits until it accepts requests.
    pub async fn start(plugins_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, base) = spawn_serve(dir.path(), plugins_dir, &env).await;
        let printed = std::fs::read_to_string(dir.path().join("stdout.log")).expect("stdout");
        let admin = printed_admin_token(&printed).expect("a fresh data dir prints an admin token");
        Self {
            child,
            base,
            admin,
            http: super::http_client(),
            dir,
            plugins_dir: plugins_dir.to_owned(),
            env,
        }
    }

    /// Kills the server with SIGKILL (a crash: nothing of it runs any more) and starts it
    /// again on the same data directory, plugins and environment; the admin token stays.
    pub async fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("ready"));
        let (child, base) = spawn_serve(self.dir.path(), &self.plugins_dir, &self.env).await;
        self.child = child;
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.admin)
    }

    /// Sends `body` as JSON (if any) with bearer `token`; the status and the decoded JSON
    /// answer (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let request = self.http.request(method.clone(), self.url(path));
        let mut request = request.bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await;
        json_of(response.unwrap_or_else(|e| panic!("{method} {path}: {e}"))).await
    }

    /// [`call`](Self::call) with the admin token.
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call(method, path, &self.admin, body).await
    }

    /// `GET path` as the admin, expecting 200; the decoded answer.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let (status, answer) = self.admin_call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, reqwest::StatusCode::OK, "GET {path}: {answer}");
        answer
    }

    /// Stores credential `name` as the admin, expecting 200.
    pub async fn put_credential(&self, name: &str, value: &str) {
        let path = format!("/credentials/{name}");
        let body = serde_json::json!({ "value": value });
        let (status, answer) = self
            .admin_call(reqwest::Method::PUT, &path, Some(body))
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "PUT {path}: {answer}");
    }

    /// Submits `body` to `provider` of `project` as the admin, expecting 202; the answer
    /// (with `command_id` and `stream_url`).
    pub async fn submit(
        &self,
        project: &str,
        provider: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let path = format!("/projects/{project}/{provider}");
        let (status, submitted) = self
            .admin_call(reqwest::Method::POST, &path, Some(body))
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{submitted}");
        submitted
    }

    /// Opens the event stream at `stream_url` as the admin, expecting 200.
    pub async fn open_stream(&self, stream_url: &str) -> SseReader {
        let response = self.admin(reqwest::Method::GET, stream_url).send().await;
        let response = response.expect("the stream opens");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{stream_url}");
        SseReader::new(response)
    }

    /// Submits `prompt` to `provider` of `project` as the admin (expecting 202) and returns
    /// the command once it has ended, as `GET /commands/{id}` shows it.
    pub async fn run_to_end(
        &self,
        project: &str,
        provider: &str,
        prompt: &str,
    ) -> serde_json::Value {
        let body = serde_json::json!({ "prompt": prompt });
        let submitted = self.submit(project, provider, body).await;
        let id = submitted["command_id"].as_str().expect("command id");
        self.finished(id).await
    }

    /// Command `id` once it has ended (completed, failed or cancelled), polled within 60 s.
    pub async fn finished(&self, id: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let command = self.get(&format!("/commands/{id}")).await;
            if matches!(
                command["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return command;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never finished: {command}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The serving version of `provider` in `GET /providers`, if it serves.
    pub async fn served_version(&self, provider: &str) -> Option<String> {
        let listing = self.get("/providers").await;
        listing["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .find(|p| p["name"] == provider)
            .and_then(|p| p["version"].as_str().map(str::to_owned))
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the server.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }
}

/// The admin token `rdev serve` prints on its first start (`admin token (shown once, …):
/// <token>`), found in its output `log`.
pub fn printed_admin_token(log: &str) -> Option<String> {
    log.lines()
        .find_map(|line| line.strip_prefix("admin token (shown once"))
        .and_then(|rest| rest.rsplit(": ").next())
        .map(|token| token.trim().to_owned())
}

fn read_logs(dir: &std::path::Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        read("stdout.log"),
        read("stderr.log")
    )
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and the decoded JSON body of `response` (`Null` when it is not JSON).
pub async fn json_of(response: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = response.status();
    let body = response
        .json::<serde_json::Value>()
        .await
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Asserts that `command` (as `GET /commands/{id}` shows it) completed with `final_text`.
pub fn assert_completed(command: &serde_json::Value, final_text: &str) {
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(command["result"]["final_text"], final_text, "{command}");
}

/// Asserts that none of `events` (as [`Running::rest`] returns them) asked a person for an
/// approval: the policy decided alone.
pub fn assert_nobody_asked(events: &[(String, serde_json::Value)]) {
    let asked = events.iter().any(|(kind, _)| kind == "approval_requested");
    assert!(!asked, "{events:?}");
}

/// The `field` strings of the items of the JSON array `list` (items without one are left
/// out), for assertions on what a listing holds; panics when `list` is not an array.
pub fn field_strings<'a>(list: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .filter_map(|item| item[field].as_str())
        .collect()
}
