//! #15 part 5: MCP servers per project, through a real `rdev serve`. The API: `PUT`/`GET
//! /projects/{id}/mcp-servers` round trip on SQLite and PostgreSQL, 422s naming the broken
//! rule, credential references checked and shown as references (never values), member
//! tokens kept to their projects, the change audited. Handing them over: a stdio server set
//! on the project reaches the real `acp.wasm`'s agent (the scripted ACP double, which starts
//! each stdio server it is given and lists its tools) in `session/new`'s `mcpServers`, with
//! its credential resolved by the host into the server's environment, and only for a
//! provider whose manifest grants `mcp_servers`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::{self, plugins};
use rdev_tests::on_both_databases;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret-mcp-value-7f1";

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("<none>")
}

fn servers() -> Value {
    json!([
        {"type": "stdio", "name": "files", "command": "mcp-server-double", "args": ["MODE", "TOKEN"],
         "env": [{"name": "MODE", "value": "ro"}, {"name": "TOKEN", "credential": "MCP_TOKEN"}]},
        {"type": "http", "name": "docs", "url": "https://docs.example/mcp",
         "headers": [{"name": "Authorization", "credential": "MCP_TOKEN"}]},
    ])
}

on_both_databases!(mcp_servers_round_trip_validated_audited_and_scoped);

async fn mcp_servers_round_trip_validated_audited_and_scoped(db: Db) {
    let Some(server) = TestServer::on(db, |_| {}).await else {
        return;
    };
    for id in ["p", "other"] {
        server
            .as_admin()
            .post("/projects", json!({"id": id}), StatusCode::CREATED)
            .await;
    }
    let (status, body) = server
        .admin_call(Method::GET, "/projects/p/mcp-servers", None)
        .await;
    assert_eq!(
        (status, &body["servers"]),
        (StatusCode::OK, &json!([])),
        "{body}"
    );
    assert!(body["updated_at"].is_null(), "{body}");

    // A reference to a credential that does not exist is refused, naming it.
    let put = |body: Value| server.admin_call(Method::PUT, "/projects/p/mcp-servers", Some(body));
    let (status, body) = put(json!({"servers": servers()})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_mcp_servers")
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("MCP_TOKEN"),
        "{body}"
    );

    server.put_credential("MCP_TOKEN", SECRET).await;
    let (status, body) = put(json!({"servers": servers()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["servers"], servers());
    let (status, got) = server
        .admin_call(Method::GET, "/projects/p/mcp-servers", None)
        .await;
    assert_eq!(
        (status, &got["servers"]),
        (StatusCode::OK, &servers()),
        "{got}"
    );
    assert!(got["updated_at"].is_string(), "{got}");
    assert!(!got.to_string().contains(SECRET));

    // Validation: each broken rule is a 422 naming the field; nothing changes.
    let bad = [
        (
            json!({"servers": [{"type": "stdio", "name": "a b", "command": "x"}]}),
            "servers[0].name",
        ),
        (
            json!({"servers": [{"type": "http", "name": "h", "url": "file:///etc"}]}),
            "servers[0].url",
        ),
        (
            json!({"servers": [{"type": "stdio", "name": "a", "command": "x",
                             "env": [{"name": "A", "value": "1", "credential": "MCP_TOKEN"}]}]}),
            "servers[0].env[0]",
        ),
        (
            json!({"servers": [{"type": "stdio", "name": "a", "command": "x"},
                            {"type": "http", "name": "a", "url": "http://h"}]}),
            "servers[1].name",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = put(body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_mcp_servers"),
            "{body}"
        );
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{answer}"
        );
    }
    for body in [
        json!({"servers": [{"type": "sse", "name": "a", "url": "http://h"}]}),
        json!({"servers": [{"type": "stdio", "name": "a", "command": "x", "cwd": "/"}]}),
        json!({"servers": [], "extra": 1}),
    ] {
        let (status, answer) = put(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
    let (_, still) = server
        .admin_call(Method::GET, "/projects/p/mcp-servers", None)
        .await;
    assert_eq!(still["servers"], servers());
    let (status, body) = server
        .admin_call(
            Method::PUT,
            "/projects/nope/mcp-servers",
            Some(json!({"servers": []})),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "project_not_found")
    );

    // A member sees its own project's servers only and sets none.
    let member = server.member_token(&["p"]).await;
    let (status, body) = server
        .call(Method::GET, "/projects/p/mcp-servers", Some(&member), None)
        .await;
    assert_eq!((status, &body["servers"]), (StatusCode::OK, &servers()));
    let as_member = server.as_token(&member);
    let forbidden = StatusCode::FORBIDDEN;
    as_member
        .get("/projects/other/mcp-servers", forbidden)
        .await;
    let none = json!({"servers": []});
    as_member
        .put("/projects/p/mcp-servers", none, forbidden)
        .await;

    // Audited with the servers' and credentials' names, never a value.
    let audit = server
        .as_admin()
        .get("/audit?action=project.mcp_servers_updated", StatusCode::OK)
        .await;
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        entries[0]["details"],
        json!({"servers": ["files", "docs"], "credentials": ["MCP_TOKEN"]})
    );
    assert!(!audit.to_string().contains(SECRET));

    // An empty list removes them all.
    let (status, body) = put(json!({"servers": []})).await;
    assert_eq!((status, &body["servers"]), (StatusCode::OK, &json!([])));
    let (_, document) = server.call(Method::GET, "/openapi.json", None, None).await;
    let path = &document["paths"]["/projects/{id}/mcp-servers"];
    assert!(path["get"].is_object() && path["put"].is_object(), "{path}");
    server.stop().await;
}

/// An ACP manifest on the shared component running the scripted double; `grant` says
/// whether it is given the project's MCP servers.
fn manifest(name: &str, grant: bool) -> String {
    format!(
        r#"
name = "{name}"
version = "0.1.0"
abi = "0.2.0"
component = "acp.wasm"

[options]
command = "acp-agent-double"
args = []

[grants]
exec = ["acp-agent-double", "pwd", "realpath", "cat", "dd"]
mcp_servers = {grant}

[limits]
memory_mib = 128
max_timeout_secs = 600
"#
    )
}

fn double() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("acp-double/acp-agent-double")
}

/// Runs "mcp" on `provider`: the command, its events, and what the double reported.
async fn report(server: &TestServer, provider: &str) -> (Value, Vec<(String, Value)>, Value) {
    let run = server.run("p", provider, json!({"prompt": "mcp"})).await;
    let (events, command) = server.finish(run, WAIT).await;
    let text: String = events
        .iter()
        .filter(|(kind, _)| kind == "message")
        .filter_map(|(_, data)| data["text"].as_str())
        .collect();
    let reported = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (command, events, reported)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_reaches_the_acp_agent_with_its_credential_resolved_by_the_host() {
    harness::put_on_path(&double());
    let dir = plugins::with_acp(&[
        ("acp-mcp.toml", &manifest("acp-mcp", true)),
        ("acp-plain.toml", &manifest("acp-plain", false)),
    ]);
    let server = TestServer::with_plugins(Db::Sqlite, dir, |_| {})
        .await
        .expect("SQLite needs no server");
    server
        .as_admin()
        .post("/projects", json!({"id": "p"}), StatusCode::CREATED)
        .await;
    std::fs::create_dir_all(server.workspace("p")).expect("workspace");
    server.put_credential("MCP_TOKEN", SECRET).await;
    let (status, body) = server
        .admin_call(
            Method::PUT,
            "/projects/p/mcp-servers",
            Some(json!({"servers": servers()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (command, events, reported) = report(&server, "acp-mcp").await;
    assert_eq!(command["status"], "completed", "{command}");
    // ACP's shape; the credential-valued variable is not in it (the server inherits it from
    // the agent, whose environment the host filled at spawn).
    assert_eq!(
        reported["servers"],
        json!([{"name": "files", "command": "mcp-server-double", "args": ["MODE", "TOKEN"],
                "env": [{"name": "MODE", "value": "ro"}]}])
    );
    assert_eq!(
        reported["tools"],
        json!({"files": ["echo"]}),
        "the server started and listed its tools"
    );
    let seen: Value = serde_json::from_str(
        &std::fs::read_to_string(server.workspace("p").join("mcp-server-env.json"))
            .expect("the server ran"),
    )
    .expect("json");
    assert_eq!(seen, json!({"MODE": "ro", "TOKEN": SECRET}));
    // The HTTP server's header is a credential, which ACP could only take as text: left out,
    // said in a warning.
    let warnings: Vec<&str> = events
        .iter()
        .filter(|(kind, _)| kind == "warning")
        .filter_map(|(_, data)| data["message"].as_str().or(data["text"].as_str()))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("MCP server docs left out")),
        "{events:?}"
    );
    assert!(
        !format!("{events:?}").contains(SECRET),
        "no secret in the events"
    );

    // A provider whose manifest does not grant `mcp_servers` gets none.
    std::fs::remove_file(server.workspace("p").join("mcp-server-env.json")).expect("remove");
    let (command, _, reported) = report(&server, "acp-plain").await;
    assert_eq!(command["status"], "completed", "{command}");
    assert_eq!(reported, json!({"servers": [], "tools": {}}));
    server.stop().await;
}
