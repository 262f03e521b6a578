//! `rdev serve` with the Kubernetes executor against the loopback API-server double: project
//! creation provisions a pod and volume and seeds the template into the pod through exec,
//! commands (the shell provider and the real `claude` CLI against the fake Messages API) run
//! in the pod and stream over SSE, deletion removes the pod; a pod that never becomes Ready
//! leaves nothing behind, and a cluster that cannot be reached stops the server at start-up.
//! `rdev worker --executor kubernetes`, built by the same composition root, runs a queued
//! command in the project's pod.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::process::Stdio;
use std::sync::Arc;

use futures::StreamExt;
use rdev::adapters::kubernetes::{Credentials, KubernetesConfig};
use rdev::adapters::local::EnvSecrets;
use rdev::adapters::store::{MASTER_KEY_ENV, StoreOptions, connect};
use rdev::domain::{
    AgentEvent, CommandStatus, HostEvent, MasterKey, ProjectId, QueueConfig, StreamEvent,
};
use rdev::ports::UnknownProject;
use rdev::server::{ExecutorKind, ServeConfig, Server};
use rdev_tests::doubles::anthropic::{FakeAnthropic, Reply};
use rdev_tests::doubles::kube_api::FakeKubeApi;
use rdev_tests::harness::kubernetes::{KubeProject, NAMESPACE, project_pod};
use rdev_tests::harness::postgres::TestDatabase;
use rdev_tests::harness::queue::new_command;
use rdev_tests::harness::server::{SseEvent, TestServer};
use rdev_tests::harness::{self, claude};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Where the double keeps pod `rdev-<project>`'s files.
fn pod_dir(api: &FakeKubeApi, project: &str) -> PathBuf {
    api.root()
        .canonicalize()
        .expect("double root")
        .join(NAMESPACE)
        .join(format!("rdev-{project}"))
}

/// Points the server at the double. The double runs commands as local processes, so the
/// workspace is a host path: the volume mount of pod `rdev-<project>` (the double creates
/// mount directories under its root).
fn use_double(config: &mut ServeConfig, api: &FakeKubeApi, project: &str, ready: Duration) {
    let workspace = pod_dir(api, project).join("workspace");
    config.executor = ExecutorKind::Kubernetes;
    let kube = &mut config.kubernetes;
    kube.credentials = Some(Credentials::Url(api.url()));
    let mut executor = KubernetesConfig::new(NAMESPACE);
    executor.workspace_dir = workspace.display().to_string();
    executor.home_dir = workspace.join(".rdev/home").display().to_string();
    kube.executor = executor;
    kube.ready_timeout = ready;
    kube.ready_poll = Duration::from_millis(20);
}

/// Submits a prompt and follows its stream to the terminal event.
async fn run_command(
    server: &TestServer,
    project: &str,
    provider: &str,
    prompt: &str,
) -> Vec<SseEvent> {
    let body = server
        .as_admin()
        .post(
            &format!("/projects/{project}/{provider}"),
            json!({"prompt": prompt}),
            StatusCode::ACCEPTED,
        )
        .await;
    let events = server.events_within(&body, Duration::from_secs(180)).await;
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("done"),
        "{events:?}"
    );
    events
}

fn texts(events: &[SseEvent], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some(kind) && e.json()["partial"] != true)
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_template_project_lives_in_its_pod_from_creation_to_deletion() {
    // The double hands exec'd processes this process's PATH.
    if harness::on_path(claude::install()).is_none() {
        return;
    }
    let anthropic = FakeAnthropic::start().expect("fake Messages API");
    anthropic.push(Reply::text("Hello from the pod"));
    let api = FakeKubeApi::start().expect("API double");
    let project = "kube-e2e";
    let server = TestServer::sqlite_with(|config| {
        use_double(config, &api, project, Duration::from_secs(30))
    })
    .await;
    claude::store_credentials(&server, &anthropic, "sk-ant-kube-e2e").await;

    let (status, created) = server
        .admin_call(
            Method::POST,
            "/projects",
            Some(json!({"id": project, "template": "blank", "vars": {"title": "Pod project"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // The pod and its volume, labelled, from the template's image.
    let pod = api.created_pod("rdev-kube-e2e").expect("pod created");
    assert_eq!(
        pod["metadata"]["labels"]["rdev.orchard9.ai/project-id"],
        project
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "buildpack-deps:bookworm-scm"
    );
    let pvc = api.pvc("rdev-kube-e2e-workspace").expect("volume created");
    assert_eq!(
        pvc["metadata"]["labels"]["rdev.orchard9.ai/project"],
        "true"
    );
    // Hardened, and fenced in by its NetworkPolicy (kubernetes_hardening.rs checks the rest).
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    let policy = api
        .network_policy("rdev-kube-e2e")
        .expect("NetworkPolicy created");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["rdev.orchard9.ai/project-id"],
        project
    );

    // The template's files and the first commit are in the pod's workspace, put there
    // through exec.
    let workspace = pod_dir(&api, project).join("workspace");
    let readme = std::fs::read_to_string(workspace.join("README.md")).expect("README in the pod");
    assert!(readme.contains("Pod project"), "{readme}");
    assert!(workspace.join(".woodpecker.yaml").is_file());
    let log = git(&workspace, &["log", "--format=%an|%s"]);
    assert_eq!(log, "rdev|Create project kube-e2e from template blank");
    assert_eq!(
        created["commit"].as_str(),
        Some(git(&workspace, &["rev-parse", "HEAD"]).as_str())
    );
    assert_eq!(git(&workspace, &["status", "--porcelain"]), "");
    let files: Vec<&str> = created["files"]["written"]
        .as_array()
        .expect("written")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(files.contains(&"README.md"), "{files:?}");
    let seeded_by_exec = api
        .execs()
        .iter()
        .any(|e| e.pod == "rdev-kube-e2e" && e.command.iter().any(|a| a == "tar"));
    assert!(seeded_by_exec, "the files went through exec");

    // A shell command runs in the pod and streams its output.
    let events = run_command(
        &server,
        project,
        "shell",
        "echo hello from $HOSTNAME; pwd -P",
    )
    .await;
    assert_eq!(
        texts(&events, "output"),
        format!("hello from rdev-kube-e2e\n{}\n", workspace.display())
    );
    let done = events.last().expect("done").json();
    assert_eq!(done["status"], "completed", "{done}");

    // A command's workspace changes are recorded by git in the pod, through exec.
    run_command(&server, project, "shell", "echo made-in-pod > pod.txt").await;
    let listed = format!("/projects/{project}/commands");
    let (_, page) = server.admin_call(Method::GET, &listed, None).await;
    let id = page["commands"][0]["id"].as_str().expect("newest command");
    let (status, changes) = server
        .admin_call(Method::GET, &format!("/commands/{id}/changes"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    let expected = json!([{"path": "pod.txt", "change": "added", "binary": false, "additions": 1,
        "deletions": 0, "patch": "@@ -0,0 +1 @@\n+made-in-pod\n", "truncated": false}]);
    assert_eq!(changes["files"], expected, "{changes}");
    let diffed_in_pod = api
        .execs()
        .iter()
        .any(|e| e.pod == "rdev-kube-e2e" && e.command.iter().any(|a| a == "diff-tree"));
    assert!(diffed_in_pod, "git diffed in the pod");

    // The real claude CLI runs in the pod against the fake Messages API.
    let events = run_command(&server, project, "claude", "Say hello").await;
    let done = events.last().expect("done").json();
    assert_eq!(done["status"], "completed", "{events:?}");
    assert_eq!(texts(&events, "message"), "Hello from the pod");
    assert_eq!(done["result"]["final_text"], "Hello from the pod", "{done}");
    let requests = anthropic.stream_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers["x-api-key"], "sk-ant-kube-e2e");
    assert!(
        api.execs()
            .iter()
            .any(|e| e.command.iter().any(|a| a == "claude")),
        "claude was exec'd in the pod"
    );

    server
        .as_admin()
        .delete(&format!("/projects/{project}"), StatusCode::NO_CONTENT)
        .await;
    assert!(api.created_pod("rdev-kube-e2e").is_none(), "pod deleted");
    assert!(
        api.pvc("rdev-kube-e2e-workspace").is_none(),
        "volume deleted"
    );
    assert!(
        api.network_policy("rdev-kube-e2e").is_none(),
        "NetworkPolicy deleted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_pod_that_never_becomes_ready_leaves_no_project_and_no_resources() {
    let api = FakeKubeApi::start().expect("API double");
    api.set_start_pending(true);
    let server =
        TestServer::sqlite_with(|config| use_double(config, &api, "stuck", Duration::from_secs(1)))
            .await;
    for body in [
        json!({"id": "stuck", "template": "blank"}),
        json!({"id": "stuck"}),
    ] {
        let error = server
            .as_admin()
            .post("/projects", body, StatusCode::SERVICE_UNAVAILABLE)
            .await;
        assert_eq!(error["error"]["code"], "workspace_unavailable", "{error}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("did not become ready"), "{message}");
        let (status, _) = server
            .admin_call(Method::GET, "/projects/stuck", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no project record");
        assert!(api.created_pod("rdev-stuck").is_none(), "pod removed");
        assert!(api.pvc("rdev-stuck-workspace").is_none(), "volume removed");
    }

    // Retrying once the cluster schedules pods succeeds, without a template too.
    api.set_start_pending(false);
    server
        .as_admin()
        .post("/projects", json!({"id": "stuck"}), StatusCode::CREATED)
        .await;
    assert!(api.created_pod("rdev-stuck").is_some());
    server
        .as_admin()
        .post("/projects", json!({"id": "stuck"}), StatusCode::CONFLICT)
        .await;
    assert!(
        api.created_pod("rdev-stuck").is_some(),
        "the owner's pod stays"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_cluster_stops_the_server_at_start_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let data = tempfile::tempdir().expect("data dir");
    let mut config = ServeConfig::new();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = data.path().to_owned();
    config.plugins_dir = Some(harness::plugins::plugins_dir());
    config.executor = ExecutorKind::Kubernetes;
    config.kubernetes.credentials = Some(Credentials::Url(url.clone()));
    config.kubernetes.executor.namespace = "projects".into();
    let error = Server::start(config)
        .await
        .expect_err("no cluster, no server");
    let message = format!("{error:#}");
    assert!(message.contains("namespace projects"), "{message}");
    assert!(message.contains(&url), "{message}");
}

#[tokio::test]
async fn a_missing_kubeconfig_stops_the_server_and_says_where_it_looked() {
    let data = tempfile::tempdir().expect("data dir");
    let missing = data.path().join("no-such-kubeconfig");
    let mut config = ServeConfig::new();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = data.path().to_owned();
    config.plugins_dir = Some(harness::plugins::plugins_dir());
    config.executor = ExecutorKind::Kubernetes;
    config.kubernetes.credentials = Some(Credentials::Kubeconfig {
        path: Some(missing.clone()),
        context: Some("prod".into()),
    });
    let error = Server::start(config)
        .await
        .expect_err("no kubeconfig, no server");
    let message = format!("{error:#}");
    assert!(message.contains("cannot reach a cluster"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("context prod"), "{message}");
}

/// A configuration file with `top` and a `[kubernetes]` table that lays project pods out as
/// the double keeps them: host directories.
fn pod_layout_file(dir: &Path, pod: &KubeProject, top: &str) -> PathBuf {
    let pod_dir = pod.workspace.parent().expect("pod dir");
    let path = dir.join("rdev.toml");
    let toml = format!(
        "{top}[kubernetes]\nnamespace = {NAMESPACE:?}\nworkspace_dir = {:?}\n\
         home_dir = {:?}\nstate_dir = {:?}\n",
        pod.workspace.display().to_string(),
        pod.workspace.join(".rdev/home").display().to_string(),
        pod_dir.join("tmp").display().to_string(),
    );
    std::fs::write(&path, toml).expect("config file");
    path
}

/// `rdev exec --executor kubernetes --project P` runs the request in P's pod, configured by
/// the same flags and file as `rdev serve` and `rdev worker`.
#[tokio::test]
async fn rdev_exec_runs_in_the_project_pod() {
    let project = "kube-exec";
    let pod = project_pod(project, Arc::new(EnvSecrets::new(Vec::<String>::new()))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pod_layout_file(dir.path(), &pod, "executor = \"kubernetes\"\n");
    let output = tokio::process::Command::new(harness::bin::rdev())
        .args(["exec", "--provider", "shell", "--project", project])
        .args(["--kubernetes-api-url", &pod.api.url()])
        .arg("--config")
        .arg(&config)
        .env("RDEV_PLUGINS_DIR", harness::plugins::plugins_dir())
        .args(["--", "echo exec in $HOSTNAME"])
        .output()
        .await
        .expect("rdev runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains(&format!("exec in ws-{project}")),
        "{stdout}"
    );
    assert!(
        pod.api
            .execs()
            .iter()
            .any(|e| e.pod == format!("ws-{project}")),
        "the request went through exec"
    );
}

/// `rdev worker` reads the cluster from its flag and the pod layout from the file's
/// `[kubernetes]` table (the double's pods are host directories), and its concurrency from
/// the file; it runs a command queued in PostgreSQL in the project's pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdev_worker_runs_a_queued_command_in_the_project_pod() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let key = MasterKey::from_bytes([7; 32]);
    let options = StoreOptions {
        queue: QueueConfig::default(),
        master_key: key.clone(),
    };
    let stores = connect(&db.url, options).await.expect("connect");
    let project = "kube-worker";
    let pod = project_pod(project, stores.credentials.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    harness::runtime::install(
        &harness::plugins::plugins_dir(),
        "shell",
        &plugins,
        "shell",
        None,
    );
    let config = pod_layout_file(dir.path(), &pod, "concurrency = 3\n");

    let mut worker = tokio::process::Command::new(harness::bin::rdev())
        .args(["worker", "--executor", "kubernetes", "--poll-ms", "200"])
        .args([
            "--kubernetes-api-url",
            &pod.api.url(),
            "--database-url",
            &db.url,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--plugins-dir")
        .arg(&plugins)
        .env(MASTER_KEY_ENV, key.to_base64())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rdev worker");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        worker.stdout.take().expect("stdout"),
    ));
    let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the worker starts")
        .expect("stdout")
        .expect("a ready line");
    assert!(
        ready.contains("ready (3 at once, Kubernetes executor)"),
        "{ready}"
    );

    let id = ProjectId::parse(project).expect("project id");
    let submitted = stores
        .queue
        .submit(
            new_command(&id, "echo hello from $HOSTNAME; pwd -P"),
            UnknownProject::Register,
        )
        .await
        .expect("submit");
    let events: Vec<StreamEvent> = tokio::time::timeout(
        Duration::from_secs(120),
        stores
            .events
            .subscribe(&submitted.command.id, 0)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the command ends")
    .into_iter()
    .map(|e| e.expect("event").event.clone())
    .collect();
    let output: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Agent(AgentEvent::Output { text, .. }) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let workspace = pod.workspace.canonicalize().expect("workspace");
    assert_eq!(
        output,
        format!("hello from ws-{project}\n{}\n", workspace.display())
    );
    assert!(
        matches!(
            events.last(),
            Some(StreamEvent::Host(HostEvent::Done {
                status: CommandStatus::Completed,
                ..
            }))
        ),
        "{events:?}"
    );
    assert!(
        pod.api
            .execs()
            .iter()
            .any(|e| e.pod == format!("ws-{project}")),
        "the command went through exec"
    );
    let pid = worker.id().expect("running") as i32;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = worker.wait().await.expect("worker exits");
    assert!(status.success(), "{status}");
}
