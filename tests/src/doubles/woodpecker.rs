//! A Woodpecker CI server double: the REST routes rdev calls, with the bearer token, the
//! query strings and the JSON bodies checked, and everything it received kept for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A repository the double's forge user can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRepo {
    pub forge_remote_id: String,
    pub full_name: String,
    /// Woodpecker's id once activated; 0 before.
    pub id: i64,
    pub active: bool,
}

/// A secret as the double stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub repo: i64,
    pub name: String,
    pub value: String,
    pub events: Vec<String>,
}

/// A triggered pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggeredPipeline {
    pub repo: i64,
    pub number: i64,
    pub branch: String,
    pub variables: BTreeMap<String, String>,
    pub status: String,
}

/// What the double holds and saw.
#[derive(Debug, Default)]
pub struct WoodpeckerState {
    pub repos: Vec<ForgeRepo>,
    pub secrets: Vec<StoredSecret>,
    pub pipelines: Vec<TriggeredPipeline>,
    /// `METHOD path?query` of every request, authorized or not.
    pub requests: Vec<String>,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: u32,
    /// Answer the next requests whose path starts with the key with this status.
    pub failures: BTreeMap<String, (u16, u32)>,
    next_repo_id: i64,
}

type Shared = Arc<(String, Mutex<WoodpeckerState>)>;

/// The running double.
pub struct WoodpeckerDouble {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
}

/// Step id of a pipeline's single step, derived from its number.
pub fn step_id(number: i64) -> i64 {
    1000 + number
}

impl WoodpeckerDouble {
    /// Starts on 127.0.0.1 with an OS-chosen port, accepting only `token`.
    pub async fn start(token: &str, repos: Vec<ForgeRepo>) -> std::io::Result<Self> {
        let shared: Shared = Arc::new((
            token.to_owned(),
            Mutex::new(WoodpeckerState {
                repos,
                next_repo_id: 41,
                ..WoodpeckerState::default()
            }),
        ));
        let app = Router::new()
            .route("/api/user/repos", get(user_repos))
            .route("/api/repos", post(activate))
            .route("/api/repos/{repo}/secrets", post(create_secret))
            .route("/api/repos/{repo}/secrets/{name}", patch(update_secret))
            .route("/api/repos/{repo}/pipelines", post(trigger))
            .route("/api/repos/{repo}/pipelines/{number}", get(pipeline))
            .route("/api/repos/{repo}/logs/{number}/{step}", get(logs))
            .layer(middleware::from_fn_with_state(shared.clone(), authorize))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state, for assertions and for changing pipeline statuses.
    pub fn state(&self) -> MutexGuard<'_, WoodpeckerState> {
        self.shared.1.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `times` requests whose path starts with `path_prefix` fail with `status`.
    pub fn fail(&self, path_prefix: &str, status: u16, times: u32) {
        self.state()
            .failures
            .insert(path_prefix.to_owned(), (status, times));
    }

    /// Sets a pipeline's status (as Woodpecker's agents would).
    pub fn set_status(&self, repo: i64, number: i64, status: &str) {
        let mut state = self.state();
        if let Some(p) = state
            .pipelines
            .iter_mut()
            .find(|p| p.repo == repo && p.number == number)
        {
            status.clone_into(&mut p.status);
        }
    }
}

impl Drop for WoodpeckerDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, WoodpeckerState> {
    shared.1.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let expected = format!("Bearer {}", shared.0);
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    {
        let mut state = lock(&shared);
        state.requests.push(line);
        if !authorized {
            state.unauthorized += 1;
            return error(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        let path = request.uri().path().to_owned();
        let failing = state
            .failures
            .iter_mut()
            .find(|(prefix, (_, times))| path.starts_with(prefix.as_str()) && *times > 0);
        if let Some((_, (status, times))) = failing {
            *times -= 1;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "injected failure: forge unreachable");
        }
    }
    next.run(request).await
}

fn repo_json(repo: &ForgeRepo) -> Value {
    let (owner, name) = repo
        .full_name
        .split_once('/')
        .unwrap_or(("", &repo.full_name));
    json!({
        "id": repo.id,
        "forge_remote_id": repo.forge_remote_id,
        "owner": owner,
        "name": name,
        "full_name": repo.full_name,
        "active": repo.active,
    })
}

async fn user_repos(
    State(shared): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if query.get("all").map(String::as_str) != Some("true") {
        return error(StatusCode::BAD_REQUEST, "expected all=true");
    }
    let state = lock(&shared);
    Json(state.repos.iter().map(repo_json).collect::<Vec<_>>()).into_response()
}

async fn activate(
    State(shared): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(remote) = query.get("forge_remote_id") else {
        return error(StatusCode::BAD_REQUEST, "forge_remote_id missing");
    };
    let mut state = lock(&shared);
    let next = state.next_repo_id;
    let Some(repo) = state
        .repos
        .iter_mut()
        .find(|r| &r.forge_remote_id == remote)
    else {
        return error(StatusCode::NOT_FOUND, "forge repo not found");
    };
    if repo.active {
        return error(StatusCode::CONFLICT, "repository is already active");
    }
    repo.active = true;
    repo.id = next;
    let body = repo_json(repo);
    state.next_repo_id += 1;
    Json(body).into_response()
}

/// A request the double refuses: the status and the text it answers with.
type Refusal = (StatusCode, &'static str);

/// The state, locked, when `repo` is an active repository; else the 404 to answer.
fn with_repo(shared: &Shared, repo: i64) -> Result<MutexGuard<'_, WoodpeckerState>, Refusal> {
    let state = lock(shared);
    if state.repos.iter().any(|r| r.active && r.id == repo) {
        Ok(state)
    } else {
        Err((StatusCode::NOT_FOUND, "repo not found"))
    }
}

/// Pipeline `number` of `repo`.
fn find_pipeline(state: &WoodpeckerState, repo: i64, number: i64) -> Option<&TriggeredPipeline> {
    state
        .pipelines
        .iter()
        .find(|p| p.repo == repo && p.number == number)
}

fn secret_from(repo: i64, body: &Value) -> Option<StoredSecret> {
    Some(StoredSecret {
        repo,
        name: body.get("name")?.as_str()?.to_owned(),
        value: body.get("value")?.as_str()?.to_owned(),
        events: body
            .get("events")?
            .as_array()?
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
    })
}

async fn create_secret(
    State(shared): State<Shared>,
    Path(repo): Path<i64>,
    Json(body): Json<Value>,
) -> Result<Response, Refusal> {
    let mut state = with_repo(&shared, repo)?;
    let Some(secret) = secret_from(repo, &body) else {
        return Err((StatusCode::BAD_REQUEST, "name, value and events required"));
    };
    if state
        .secrets
        .iter()
        .any(|s| s.repo == repo && s.name == secret.name)
    {
        return Err((StatusCode::CONFLICT, "secret exists"));
    }
    let answer = json!({"name": secret.name, "events": secret.events});
    state.secrets.push(secret);
    Ok(Json(answer).into_response())
}

async fn update_secret(
    State(shared): State<Shared>,
    Path((repo, name)): Path<(i64, String)>,
    Json(body): Json<Value>,
) -> Response {
    let mut state = lock(&shared);
    let Some(secret) = secret_from(repo, &body) else {
        return error(StatusCode::BAD_REQUEST, "name, value and events required");
    };
    let Some(existing) = state
        .secrets
        .iter_mut()
        .find(|s| s.repo == repo && s.name == name)
    else {
        return error(StatusCode::NOT_FOUND, "secret not found");
    };
    *existing = secret;
    Json(json!({"name": name})).into_response()
}

fn pipeline_json(p: &TriggeredPipeline) -> Value {
    json!({
        "id": p.number + 500,
        "number": p.number,
        "status": p.status,
        "event": "manual",
        "branch": p.branch,
        "created": 1_700_000_000,
        "started": if p.status == "pending" { 0 } else { 1_700_000_001 },
        "finished": if matches!(p.status.as_str(), "success" | "failure") { 1_700_000_060 } else { 0 },
        "workflows": [{
            "id": p.number + 700,
            "name": "woodpecker",
            "state": p.status,
            "children": [{
                "id": step_id(p.number),
                "name": "test",
                "state": p.status,
                "exit_code": if p.status == "failure" { 1 } else { 0 },
            }],
        }],
    })
}

async fn trigger(
    State(shared): State<Shared>,
    Path(repo): Path<i64>,
    Json(body): Json<Value>,
) -> Result<Response, Refusal> {
    let mut state = with_repo(&shared, repo)?;
    let Some(branch) = body.get("branch").and_then(Value::as_str) else {
        return Err((StatusCode::BAD_REQUEST, "branch required"));
    };
    let variables: BTreeMap<String, String> = match body.get("variables") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| (StatusCode::BAD_REQUEST, "variables must map to strings"))?,
    };
    let number = state.pipelines.iter().filter(|p| p.repo == repo).count() as i64 + 1;
    let pipeline = TriggeredPipeline {
        repo,
        number,
        branch: branch.to_owned(),
        variables,
        status: "pending".to_owned(),
    };
    let body = pipeline_json(&pipeline);
    state.pipelines.push(pipeline);
    Ok(Json(body).into_response())
}

async fn pipeline(
    State(shared): State<Shared>,
    Path((repo, number)): Path<(i64, i64)>,
) -> Response {
    let state = lock(&shared);
    match find_pipeline(&state, repo, number) {
        Some(p) => Json(pipeline_json(p)).into_response(),
        None => error(StatusCode::NOT_FOUND, "pipeline not found"),
    }
}

async fn logs(
    State(shared): State<Shared>,
    Path((repo, number, step)): Path<(i64, i64, i64)>,
) -> Response {
    let state = lock(&shared);
    let Some(p) = find_pipeline(&state, repo, number) else {
        return error(StatusCode::NOT_FOUND, "pipeline not found");
    };
    if step != step_id(number) {
        return error(StatusCode::NOT_FOUND, "step not found");
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Json(json!([
        {"id": 1, "step_id": step, "time": 0, "line": 0, "data": b64("+ cargo test"), "type": 0},
        {"id": 2, "step_id": step, "time": 1, "line": 1, "data": b64(&format!("pipeline {} on {}: {}", p.number, p.branch, p.status)), "type": 0},
    ]))
    .into_response()
}
