//! The escape suite through the product: an in-process `rdev serve` (confined by default, as
//! operators run it), the real shell provider, and hostile commands submitted as prompts.
//! Every attempt fails, the server and the other project are unaffected, the same commands
//! inside their own workspace work, and the per-project network policy set through the API
//! applies from the project's next command.

use std::path::PathBuf;
use std::time::Duration;

use rdev::adapters::local::sandbox::Limits;
use rdev_tests::harness::sandbox;
use rdev_tests::harness::server::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SENTINEL: &str = "RDEV_SERVE_ESCAPE_SENTINEL";

/// A confined server, its data dir, and two loopback servers: one on the allow-list.
struct Fixture {
    server: TestServer,
    data: PathBuf,
    allowed: u16,
    forbidden: u16,
}

/// Answers every connection with `name` and closes.
async fn fixture(limits: Limits) -> Option<Fixture> {
    let allowed = sandbox::banner_server("allowed-server").await;
    let forbidden = sandbox::banner_server("forbidden-server").await;
    if !sandbox::can_confine() {
        return None;
    }
    let mut data = PathBuf::new();
    let server = TestServer::sqlite_with(|config| {
        data = config.data_dir.clone();
        config.confinement.limits = limits;
        config
            .confinement
            .allow_hosts
            .push(format!("127.0.0.1:{allowed}"));
    })
    .await;
    Some(Fixture {
        server,
        data: data.canonicalize().expect("data dir"),
        allowed,
        forbidden,
    })
}

/// What one shell command did, as its stream told it.
struct Run {
    status: String,
    output: String,
    warnings: Vec<String>,
}

async fn submit(server: &TestServer, project: &str, script: &str) -> Value {
    server.submit(project, "shell", script).await
}

async fn follow(server: &TestServer, submitted: &Value) -> Run {
    let events = server
        .events_within(submitted, Duration::from_secs(120))
        .await;
    let texts = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some(kind))
            .filter_map(|e| e.json()["text"].as_str().map(str::to_owned))
            .collect()
    };
    let warnings = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("warning"))
        .map(|e| e.json()["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    let done = events.last().expect("events");
    assert_eq!(done.event.as_deref(), Some("done"), "{events:?}");
    Run {
        status: done.json()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        output: texts("output").concat(),
        warnings,
    }
}

async fn run(server: &TestServer, project: &str, script: &str) -> Run {
    let submitted = submit(server, project, script).await;
    follow(server, &submitted).await
}

fn python_connect(port: u16) -> String {
    format!(
        "/usr/bin/python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", {port}), 3); print(s.recv(100).decode())'"
    )
}

/// A CONNECT through the project's egress proxy to `127.0.0.1:port`, printing the answer.
fn proxy_connect(port: u16) -> String {
    format!(
        "/usr/bin/python3 -c 'import socket,os; p=os.environ[\"HTTPS_PROXY\"].rsplit(\":\",1)[1]; s=socket.create_connection((\"127.0.0.1\", int(p)), 3); s.sendall(b\"CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\"); print(s.recv(200).decode())'"
    )
}

async fn get(server: &TestServer, path: &str) -> Value {
    let (status, body) = server.admin_call(Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_confines_by_default_and_reads_outside_the_workspace_fail() {
    // SAFETY: set before the server starts and before any other thread reads it.
    unsafe { std::env::set_var(SENTINEL, "HOST-ENVIRON-VISIBLE") };
    let Some(f) = fixture(Limits::default()).await else {
        return;
    };
    let server = &f.server;
    let (_, ready) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready["confinement"]["mode"], "confined", "{ready}");
    let providers = get(server, "/providers").await;
    assert_eq!(providers["confinement"]["mode"], "confined", "{providers}");

    let planted = run(server, "b", "echo B-SECRET > secret.txt && echo planted").await;
    assert_eq!(planted.output, "planted\n", "{}", planted.status);
    let key = std::fs::read_to_string(f.data.join("master.key")).expect("master key");
    let data = f.data.display();
    let me = std::process::id();
    for (what, script) in [
        ("/etc/shadow", "cat /etc/shadow".to_owned()),
        ("the master key", format!("cat {data}/master.key")),
        ("the database", format!("head -c 64 {data}/rdev.db")),
        (
            "another workspace",
            format!("cat {data}/projects/b/secret.txt"),
        ),
        ("pid 1's environ", "cat /proc/1/environ".to_owned()),
        ("rdev's environ", format!("cat /proc/{me}/environ")),
    ] {
        let out = run(server, "a", &format!("{script} 2>&1; true"))
            .await
            .output;
        for secret in [
            "root:",
            key.trim(),
            "SQLite format",
            "B-SECRET",
            "HOST-ENVIRON-VISIBLE",
        ] {
            assert!(
                !out.contains(secret),
                "{what}: {script} read {secret:?}: {out}"
            );
        }
    }
    // The same commands confined to their own workspace work.
    let own = run(server, "a", "echo mine > own.txt && cat own.txt && id -un").await;
    assert_eq!(
        (own.status.as_str(), own.output.as_str()),
        ("completed", "mine\nrdev\n")
    );
    assert_eq!(
        std::fs::read_to_string(f.data.join("projects/a/own.txt")).expect("own file"),
        "mine\n"
    );
    server_and_projects_go_on(&f).await;
}

/// The server answers, and both projects still run commands.
async fn server_and_projects_go_on(f: &Fixture) {
    let (status, _) = f.server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for project in ["a", "b"] {
        let ok = run(&f.server, project, "echo fine").await;
        assert_eq!(
            (ok.status.as_str(), ok.output.as_str()),
            ("completed", "fine\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_signals_outside_the_command_fail() {
    let Some(f) = fixture(Limits::default()).await else {
        return;
    };
    let server = &f.server;
    run(server, "b", "true").await;
    let data = f.data.display();
    for target in [
        format!("{data}/planted"),
        format!("{data}/projects/b/planted"),
        "/usr/planted".to_owned(),
        "/etc/planted".to_owned(),
    ] {
        let attempt = run(server, "a", &format!("echo x > {target}")).await;
        // The data dir may be under /tmp: there the write lands in the command's private
        // /tmp, if anywhere.
        assert!(
            target.starts_with("/tmp/") || attempt.status == "failed",
            "wrote {target}: {}",
            attempt.output
        );
        assert!(!std::path::Path::new(&target).exists(), "{target} exists");
    }
    // b's long-running process, and attempts to kill it, rdev and pid 1 from a.
    let sleeper = submit(server, "b", "exec sleep 301.5").await;
    let b_pid = sandbox::wait_for_host_pid("sleep 301.5").expect("b's sleeper runs");
    let me = std::process::id();
    let attempt = run(
        server,
        "a",
        &format!("ps -e -o pid=,comm=; kill -9 {me}; kill -9 {b_pid}; kill -9 1; true"),
    )
    .await;
    assert!(
        !attempt.output.contains("sleep"),
        "a sees b: {}",
        attempt.output
    );
    assert!(
        std::path::Path::new(&format!("/proc/{b_pid}")).exists(),
        "b's process was killed"
    );
    let id = sleeper["command_id"].as_str().expect("id");
    let (status, body) = server.cancel(id).await;
    assert!(status.is_success(), "{body}");
    let cancelled = follow(server, &sleeper).await;
    assert_eq!(cancelled.status, "cancelled");
    server_and_projects_go_on(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_project_has_its_own_loopback_and_egress_policy() {
    let Some(f) = fixture(Limits::default()).await else {
        return;
    };
    let server = &f.server;
    // b listens on 4096 (OpenCode's port) in its own namespace; a cannot reach it.
    let listener = submit(
        server,
        "b",
        "exec /usr/bin/python3 -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", 4096)); s.listen(); open(\"listening\", \"w\").close()\nwhile True:\n    c,_=s.accept(); c.sendall(b\"b-server\\n\"); c.close()'",
    )
    .await;
    let marker = f.data.join("projects/b/listening");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "b's server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = run(server, "a", &format!("{} 2>&1; true", python_connect(4096))).await;
    assert!(!probe.output.contains("b-server"), "{}", probe.output);

    // b runs one command at a time: stop its server before its next command.
    let id = listener["command_id"].as_str().expect("id");
    server.cancel(id).await;
    assert_eq!(follow(server, &listener).await.status, "cancelled");

    // The default allow-list (the server's, plus the test's loopback server) applies.
    let network = get(server, "/projects/a/network").await;
    assert_eq!(network["source"], "default", "{network}");
    assert_eq!(network["enforced"], true, "{network}");
    let allowed = format!("127.0.0.1:{}", f.allowed);
    assert!(
        network["allow"]
            .as_array()
            .expect("allow")
            .iter()
            .any(|r| r == &json!(allowed)),
        "{network}"
    );
    let reached = run(server, "a", &python_connect(f.allowed)).await;
    assert!(
        reached.output.contains("allowed-server"),
        "{}",
        reached.output
    );
    let direct = run(
        server,
        "a",
        &format!("{} 2>&1; true", python_connect(f.forbidden)),
    )
    .await;
    assert!(
        !direct.output.contains("forbidden-server"),
        "{}",
        direct.output
    );
    let refused = run(server, "a", &proxy_connect(f.forbidden)).await;
    assert!(refused.output.contains("403"), "{}", refused.output);
    let target = format!("127.0.0.1:{}", f.forbidden);
    assert!(
        refused.warnings.iter().any(|w| w.contains(&target)),
        "no warning event for the refusal: {:?}",
        refused.warnings
    );

    // A project policy replaces the default from a's next command; b keeps the default.
    let body = server
        .as_admin()
        .put(
            "/projects/a/network",
            json!({ "allow": [target] }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(body["source"], "project", "{body}");
    let now_allowed = run(server, "a", &python_connect(f.forbidden)).await;
    assert!(
        now_allowed.output.contains("forbidden-server"),
        "{}",
        now_allowed.output
    );
    let no_longer = run(
        server,
        "a",
        &format!("{} 2>&1; true", python_connect(f.allowed)),
    )
    .await;
    assert!(
        !no_longer.output.contains("allowed-server"),
        "{}",
        no_longer.output
    );
    let b_default = run(
        server,
        "b",
        &format!("{} 2>&1; true", python_connect(f.forbidden)),
    )
    .await;
    assert!(
        !b_default.output.contains("forbidden-server"),
        "{}",
        b_default.output
    );

    // Back to the default.
    let (status, body) = server
        .admin_call(Method::DELETE, "/projects/a/network", None)
        .await;
    assert_eq!(
        (status, body["source"].clone()),
        (StatusCode::OK, json!("default"))
    );
    let again = run(
        server,
        "a",
        &format!("{} 2>&1; true", python_connect(f.forbidden)),
    )
    .await;
    assert!(
        !again.output.contains("forbidden-server"),
        "{}",
        again.output
    );

    server_and_projects_go_on(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_are_validated_and_admin_only() {
    let Some(f) = fixture(Limits::default()).await else {
        return;
    };
    let server = &f.server;
    run(server, "a", "true").await;
    let body = server
        .as_admin()
        .put(
            "/projects/a/network",
            json!({ "allow": ["ok.example:443", "not a host"] }),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(body["code"], "invalid_network_rule", "{body}");
    assert_eq!(
        get(server, "/projects/a/network").await["source"],
        "default"
    );
    server
        .as_admin()
        .put(
            "/projects/nobody/network",
            json!({ "allow": [] }),
            StatusCode::NOT_FOUND,
        )
        .await;
    let member = server.member_token(&["a"]).await;
    let member = server.as_token(&member);
    member.get("/projects/a/network", StatusCode::OK).await;
    let widened = json!({ "allow": ["example.com"] });
    member
        .put("/projects/a/network", widened, StatusCode::FORBIDDEN)
        .await;
    let audit = get(server, "/audit").await.to_string();
    assert!(!audit.contains("project.network_updated"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bombs_and_memory_hogs_are_bounded() {
    let limits = Limits {
        pids: Some(64),
        memory_bytes: Some(256 << 20),
        cpu_percent: Some(100),
    };
    let Some(f) = fixture(limits).await else {
        return;
    };
    let server = &f.server;
    let bomb = run(
        server,
        "a",
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived",
    )
    .await;
    assert!(!bomb.status.is_empty(), "{}", bomb.output);
    let hog = run(
        server,
        "a",
        "/usr/bin/python3 -c 'a = bytearray(1 << 30); print(\"allocated\")'",
    )
    .await;
    assert_eq!(hog.status, "failed", "{}", hog.output);
    assert!(!hog.output.contains("allocated"), "{}", hog.output);
    server_and_projects_go_on(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_is_the_operators_explicit_choice_and_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = rdev::server::Server::start({
        let mut config = rdev::server::ServeConfig::new();
        config.data_dir = dir.path().to_owned();
        config.listen = "127.0.0.1:0".into();
        config.plugins_dir = Some(rdev_tests::harness::plugins::plugins_dir());
        config.confinement.helper = Some(PathBuf::from("/nonexistent/rdev-sandbox-exec"));
        config
    })
    .await
    .expect_err("a host without the helper refuses to start");
    let message = format!("{refused:#}");
    assert!(
        message.contains("/nonexistent/rdev-sandbox-exec") && message.contains("--unconfined"),
        "{message}"
    );

    let server = TestServer::sqlite_with(|config| config.confinement.unconfined = true).await;
    let (_, ready) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready["confinement"]["mode"], "unconfined", "{ready}");
    let providers = get(&server, "/providers").await;
    assert_eq!(
        providers["confinement"]["mode"], "unconfined",
        "{providers}"
    );
    let ran = run(&server, "a", "id -u").await;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(ran.output, format!("{euid}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_are_stored_in_postgres_too() {
    if !sandbox::can_confine() {
        return;
    }
    let Some(server) = TestServer::postgres().await else {
        return;
    };
    let ran = run(&server, "a", "echo confined").await;
    assert_eq!(ran.output, "confined\n", "{}", ran.status);
    server
        .as_admin()
        .put(
            "/projects/a/network",
            json!({ "allow": ["Example.COM:443", "*.pkg.example"] }),
            StatusCode::OK,
        )
        .await;
    let network = get(&server, "/projects/a/network").await;
    assert_eq!(network["source"], "project", "{network}");
    assert_eq!(
        network["allow"],
        json!(["example.com:443", "*.pkg.example"]),
        "{network}"
    );
    server
        .as_admin()
        .delete("/projects/a/network", StatusCode::OK)
        .await;
    assert_eq!(
        get(&server, "/projects/a/network").await["source"],
        "default"
    );
    server.stop().await;
}
