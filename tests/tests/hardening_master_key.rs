//! #21 part 6, through a real `rdev serve` on SQLite and PostgreSQL: `/readyz` says, without
//! a secret, when the master key cannot open the stored credentials; `rdev credentials
//! rotate-key` and `POST /credentials/rotate-key` re-encrypt everything so that the values
//! still resolve under the new key and the old key no longer opens them; a rotation a crash
//! interrupted is finished (or dropped) by the next start.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev::domain::MasterKey;
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::TestServer;

const VALUE: &str = "sk-live-4f9c2e7a1b";

async fn server(db: Db) -> Option<TestServer> {
    assert!(
        std::env::var_os("RDEV_MASTER_KEY").is_none(),
        "these tests use the data dir's key file"
    );
    let allow_loopback_hooks = |c: &mut rdev::server::ServeConfig| c.webhooks.allow_private = true;
    match db {
        Db::Sqlite => Some(TestServer::sqlite_with(allow_loopback_hooks).await),
        Db::Postgres => TestServer::postgres_with(allow_loopback_hooks).await,
    }
}

fn key_file(server: &TestServer) -> std::path::PathBuf {
    server.data_dir().join("master.key")
}

fn read_key(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn fingerprint(base64: &str) -> String {
    MasterKey::from_base64(base64).expect("a key").fingerprint()
}

/// Stores a credential and a webhook (whose signing secret is sealed too).
async fn store_secrets(server: &TestServer) {
    server.put_credential("API_TOKEN", VALUE).await;
    server
        .subscribe("keys", "http://127.0.0.1:9/hook", &["*"])
        .await;
}

async fn readyz(server: &TestServer) -> (StatusCode, Value) {
    server.call(Method::GET, "/readyz", None, None).await
}

async fn resolved(server: &TestServer) -> Option<String> {
    server
        .server()
        .state()
        .stores
        .credentials
        .resolve("API_TOKEN")
        .await
        .ok()
        .flatten()
        .map(|v| v.expose().to_owned())
}

/// Restarts `server` with `key` written as its key file.
async fn restart_with_key(server: TestServer, key: &str) -> TestServer {
    std::fs::write(key_file(&server), key).expect("key file written");
    server.restart_with(|_| {}).await
}

async fn another_key_makes_the_server_not_ready_with_a_reason(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    store_secrets(&server).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(
        (status, body["master_key"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{body}"
    );
    let original = read_key(&key_file(&server));

    let other = MasterKey::from_bytes([7; 32]).to_base64();
    let server = restart_with_key(server, &other).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    let reason = body["master_key"].as_str().expect("a reason");
    assert!(reason.contains("cannot decrypt"), "{reason}");
    assert!(
        reason.contains(&fingerprint(&original)),
        "names the key that sealed: {reason}"
    );
    assert!(
        reason.contains(&fingerprint(&other)),
        "names the key in use: {reason}"
    );
    let text = body.to_string();
    for secret in [VALUE, original.as_str(), other.as_str()] {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(resolved(&server).await, None, "the wrong key opens nothing");

    // The right key back: ready again.
    let server = restart_with_key(server, &original).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));
}

/// `rdev credentials <args>` against `server` as its admin.
async fn cli(server: &TestServer, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = server.client(&server.admin);
    command.arg("credentials").args(args);
    let output = command.env_remove("RDEV_MASTER_KEY").output().await;
    rdev_tests::harness::bin::code_and_text(&output.expect("rdev runs"))
}

async fn rotate_key_reencrypts_and_retires_the_old_key(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    store_secrets(&server).await;
    let old = read_key(&key_file(&server));

    let (code, stdout, stderr) = cli(&server, &["rotate-key"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let new = read_key(&key_file(&server));
    assert_ne!(new, old, "the key file holds a new key");
    assert!(
        stdout.contains("re-encrypted 2 secrets") && stdout.contains(&fingerprint(&new)),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&new),
        "the key itself is never printed: {stdout}"
    );
    assert!(
        !server.data_dir().join("master.key.next").exists(),
        "nothing staged is left"
    );
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));
    let (_, audit) = server.admin_call(Method::GET, "/audit", None).await;
    let rotated = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "credential.key_rotated")
        .unwrap_or_else(|| panic!("audited: {audit}"));
    assert_eq!(rotated["details"]["fingerprint"], fingerprint(&new));

    // A restart reads the new key file: everything still opens.
    let server = server.restart_with(|_| {}).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));

    // The old key opens nothing any more.
    let server = restart_with_key(server, &old).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(resolved(&server).await, None);
}

async fn a_rotation_interrupted_by_a_crash_is_finished_or_dropped_at_start(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    store_secrets(&server).await;
    let path = key_file(&server);
    let staged = server.data_dir().join("master.key.next");
    let old = read_key(&path);
    let body = server
        .as_admin()
        .post("/credentials/rotate-key", json!({}), StatusCode::OK)
        .await;
    assert_eq!(body["key_file_updated"], true, "{body}");
    let new = read_key(&path);

    // The crash came after the commit, before the rename: old key file, new key staged.
    std::fs::write(&path, &old).expect("old key back");
    std::fs::write(&staged, &new).expect("new key staged");
    let server = server.restart_with(|_| {}).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the staged key was installed: {body}"
    );
    assert_eq!(read_key(&path), new);
    assert!(!staged.exists());
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));

    // The crash came before the commit: the staged key is dropped, the current one kept.
    let never_committed = MasterKey::from_bytes([3; 32]).to_base64();
    std::fs::write(&staged, &never_committed).expect("staged");
    let server = server.restart_with(|_| {}).await;
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_key(&path), new);
    assert!(!staged.exists());
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));
}

rdev_tests::on_both_databases!(
    another_key_makes_the_server_not_ready_with_a_reason,
    rotate_key_reencrypts_and_retires_the_old_key,
    a_rotation_interrupted_by_a_crash_is_finished_or_dropped_at_start,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rotation_requests_are_refused_and_change_nothing() {
    let server = server(Db::Sqlite).await.expect("sqlite");
    store_secrets(&server).await;
    let before = read_key(&key_file(&server));
    let body = server
        .as_admin()
        .post(
            "/credentials/rotate-key",
            json!({ "new_key": "c2hvcnQ=" }),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(body["error"]["code"], "invalid_master_key", "{body}");
    let member = server.member_token(&["keys"]).await;
    server
        .as_token(&member)
        .post("/credentials/rotate-key", json!({}), StatusCode::FORBIDDEN)
        .await;
    assert_eq!(read_key(&key_file(&server)), before);
    let (status, body) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));

    // A key the caller chose is used as given.
    let chosen = MasterKey::from_bytes([42; 32]).to_base64();
    let body = server
        .as_admin()
        .post(
            "/credentials/rotate-key",
            json!({ "new_key": chosen }),
            StatusCode::OK,
        )
        .await;
    assert_eq!(body["fingerprint"], fingerprint(&chosen));
    assert_eq!(read_key(&key_file(&server)), chosen);
    assert_eq!(resolved(&server).await.as_deref(), Some(VALUE));
}
