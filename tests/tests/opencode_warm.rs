//! Issue #19 parts 1 and 2 through a real, confined `rdev serve`: the host runs one
//! `opencode serve` per project (the plugin's manifest `[service]`) in the project's sandbox,
//! on its own port, with a password the host minted (no credential is set). Two projects run
//! at the same time, each with its own server; a project's next command reuses its server;
//! deleting a project stops its server and only its; stopping rdev stops the rest.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::runtime::service::ServiceInfo;
use rdev_tests::doubles::openai::{FakeOpenAi, Reply};
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::{self, opencode, sandbox};

/// Generous: a cold start of the real server on a loaded machine takes seconds.
const WAIT: Duration = Duration::from_secs(180);

/// Submits a plain prompt to opencode in `project` and waits until it finished.
async fn run(server: &TestServer, project: &str) -> Value {
    let answer = server
        .as_admin()
        .post(
            &format!("/projects/{project}/opencode"),
            json!({
                "prompt": "hello",
                "model": format!("{}/{}", opencode::PROVIDER, opencode::MODEL),
            }),
            StatusCode::ACCEPTED,
        )
        .await;
    let id = answer["command_id"]
        .as_str()
        .expect("command id")
        .to_owned();
    server.finished_within(&id, WAIT).await
}

fn service(server: &TestServer, project: &str) -> Option<ServiceInfo> {
    server
        .server()
        .state()
        .registry
        .services()
        .running()
        .into_iter()
        .find(|i| i.project.as_str() == project)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone; false if it still runs after 10 s.
async fn gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn per_project_warm_servers_through_a_confined_rdev_serve() {
    if harness::on_path(opencode::install()).is_none() {
        return;
    }
    let fake = FakeOpenAi::start().expect("fake API");
    fake.set_fallback(Reply::slow_text(
        &["each ", "its ", "own"],
        Duration::from_millis(50),
    ));
    let server = TestServer::sqlite_with(sandbox::allowing(&fake.base_url())).await;
    // Nothing in the credential store: rdev mints the servers' passwords itself.
    let credentials = server.as_admin().get("/credentials", StatusCode::OK).await;
    assert!(!credentials.to_string().contains("OPENCODE_SERVER_PASSWORD"));
    for project in ["p", "q"] {
        let (status, body) = server
            .admin_call(Method::POST, "/projects", Some(json!({"id": project})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        opencode::write_config(&server.workspace(project), &fake.base_url())
            .expect("opencode.json");
    }

    let (p, q) = tokio::join!(run(&server, "p"), run(&server, "q"));
    for command in [&p, &q] {
        assert_eq!(command["status"], "completed", "{command}");
        assert_eq!(command["result"]["final_text"], "each its own", "{command}");
    }
    let p_server = service(&server, "p").expect("p's server runs");
    let q_server = service(&server, "q").expect("q's server runs");
    assert_ne!(p_server.port, q_server.port, "two projects share a port");
    assert_ne!(p_server.pid, q_server.pid);

    let again = run(&server, "p").await;
    assert_eq!(again["status"], "completed", "{again}");
    let reused = service(&server, "p").expect("still running");
    assert_eq!((reused.pid, reused.port), (p_server.pid, p_server.port));

    server
        .as_admin()
        .delete("/projects/q", StatusCode::NO_CONTENT)
        .await;
    assert!(
        service(&server, "q").is_none(),
        "q's server outlived its project"
    );
    assert!(
        gone(q_server.pid.unwrap()).await,
        "q's server process still runs"
    );
    assert!(
        alive(p_server.pid.unwrap()),
        "deleting q stopped p's server"
    );

    server.stop().await;
    assert!(
        gone(p_server.pid.unwrap()).await,
        "p's server outlived rdev serve"
    );
}
