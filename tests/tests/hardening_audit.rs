//! #21 part 7, through a real `rdev serve` on SQLite and PostgreSQL: deleting the newest
//! audit rows leaves a hash chain that still verifies on its own, but not against a signed
//! checkpoint taken before (`GET /audit/checkpoint`, or the periodic `audit.checkpoint`
//! webhook); a checkpoint altered or signed under another key is refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use rdev::domain::{AuditCheckpoint, MasterKey};
use rdev::server::ServeConfig;
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::webhook_receiver::{WebhookReceiver, verify};

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(60);

async fn server(db: Db, adjust: impl FnOnce(&mut ServeConfig)) -> Option<TestServer> {
    assert!(
        std::env::var_os("RDEV_MASTER_KEY").is_none(),
        "these tests use the data dir's key file"
    );
    match db {
        Db::Sqlite => Some(TestServer::sqlite_with(adjust).await),
        Db::Postgres => TestServer::postgres_with(adjust).await,
    }
}

/// Runs `script` through the shell provider until it ends, so the trail gains entries.
async fn run_shell(server: &TestServer, project: &str, script: &str) {
    let body = server.submit(project, "shell", script).await;
    let id = body["command_id"].as_str().expect("command id");
    let done = server.finished_within(id, WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
}

async fn checkpoint(server: &TestServer) -> Value {
    server
        .as_admin()
        .get("/audit/checkpoint", StatusCode::OK)
        .await
}

/// `rdev audit verify --against <checkpoint>` on the server's data dir and database.
async fn verify_against(server: &TestServer, checkpoint: &str) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(rdev_tests::harness::bin::rdev())
        .args(["audit", "verify", "--against", checkpoint])
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["--database-url", &server.database_url()])
        .env_remove("RDEV_MASTER_KEY")
        .env_remove("RDEV_CONFIG")
        .output()
        .await
        .expect("rdev runs");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Deletes every audit row after `keep`, as a database writer covering their tracks would:
/// one who may drop the append-only trigger first.
async fn delete_after(server: &TestServer, db: Db, keep: i64) -> u64 {
    let delete = "DELETE FROM audit_log WHERE seq > $1";
    let url = server.database_url();
    match db {
        Db::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
            sqlx::query("DROP TRIGGER audit_log_no_delete")
                .execute(&pool)
                .await
                .expect("trigger dropped");
            let done = sqlx::query(delete).bind(keep).execute(&pool).await;
            done.expect("deleted").rows_affected()
        }
        Db::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
            sqlx::query("DROP TRIGGER audit_log_no_update ON audit_log")
                .execute(&pool)
                .await
                .expect("trigger dropped");
            let done = sqlx::query(delete).bind(keep).execute(&pool).await;
            done.expect("deleted").rows_affected()
        }
    }
}

rdev_tests::on_both_databases!(
    deleting_the_newest_entries_is_caught_by_a_checkpoint,
    altered_or_foreign_checkpoints_are_refused,
    the_periodic_checkpoint_reaches_webhook_subscribers,
);

async fn deleting_the_newest_entries_is_caught_by_a_checkpoint(db: Db) {
    let Some(server) = server(db, |_| {}).await else {
        return;
    };
    run_shell(&server, "anchored", "echo one").await;
    run_shell(&server, "anchored", "echo two").await;
    let taken = checkpoint(&server).await;
    let seq = taken["seq"].as_i64().expect("seq");
    assert!(seq >= 4, "commands were audited: {taken}");
    let text = taken.to_string();

    let (code, out) = verify_against(&server, &text).await;
    assert_eq!(code, Some(0), "the untouched trail holds: {out}");
    assert!(out.contains(&format!("checkpoint at seq {seq}")), "{out}");

    // Also from a file, as an operator keeps it.
    let file = server.data_dir().join("checkpoint.json");
    std::fs::write(&file, &text).expect("written");
    let (code, out) = verify_against(&server, &file.display().to_string()).await;
    assert_eq!(code, Some(0), "{out}");

    let kept = seq - 3;
    assert!(delete_after(&server, db, kept).await >= 3);
    let plain = server.as_admin().get("/audit/verify", StatusCode::OK).await;
    assert_eq!(
        plain["intact"], true,
        "without a checkpoint the shortened chain looks intact: {plain}"
    );

    let (code, out) = verify_against(&server, &text).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TRUNCATED"), "{out}");
    assert!(
        out.contains(&format!("checkpoint at seq {seq} from"))
            && out.contains(&format!("chain ends at {kept}")),
        "names where the checkpoint was and where the chain ends: {out}"
    );
}

async fn altered_or_foreign_checkpoints_are_refused(db: Db) {
    let Some(server) = server(db, |_| {}).await else {
        return;
    };
    run_shell(&server, "forged", "echo hi").await;
    let taken = checkpoint(&server).await;
    let parsed: AuditCheckpoint = serde_json::from_value(taken.clone()).expect("a checkpoint");

    // A writer who deleted rows would like an older, shorter checkpoint.
    let mut rewound = taken.clone();
    rewound["seq"] = json!(parsed.seq - 1);
    let (code, out) = verify_against(&server, &rewound.to_string()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("REFUSED") && out.contains("MAC"), "{out}");

    let mut bad_mac = taken.clone();
    bad_mac["mac"] = json!("00".repeat(32));
    let (code, out) = verify_against(&server, &bad_mac.to_string()).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not verify"), "{out}");

    let other = MasterKey::from_bytes([9; 32]);
    let foreign = AuditCheckpoint::sign(&other, parsed.seq, &parsed.head_hash, parsed.at);
    let (code, out) =
        verify_against(&server, &serde_json::to_string(&foreign).expect("json")).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&other.fingerprint()) && out.contains(&parsed.key_fingerprint),
        "names both fingerprints: {out}"
    );
    let ours = std::fs::read_to_string(server.data_dir().join("master.key")).expect("key");
    assert!(!out.contains(ours.trim()), "never the key: {out}");
    assert!(!out.contains(&other.to_base64()), "never the key: {out}");

    // Not a checkpoint at all: a clear parse error, not a panic.
    let (code, out) = verify_against(&server, "{\"seq\": 1}").await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("parsing the checkpoint"), "{out}");

    // Only admins sign checkpoints.
    let member = server.member_token(&["forged"]).await;
    server
        .as_token(&member)
        .get("/audit/checkpoint", StatusCode::FORBIDDEN)
        .await;
}

async fn the_periodic_checkpoint_reaches_webhook_subscribers(db: Db) {
    let Some(server) = server(db, |c| {
        c.webhooks.allow_private = true;
        c.webhooks.poll_interval = Duration::from_millis(50);
        c.audit_checkpoint_interval = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    let receiver = WebhookReceiver::start().expect("receiver");
    run_shell(&server, "exported", "echo first").await;
    let hook = receiver.url("/hook");
    let (_, secret) = server
        .subscribe("exported", &hook, &["audit.checkpoint"])
        .await;
    // The head moves after the subscription exists, so the next checkpoint is exported.
    run_shell(&server, "exported", "echo second").await;

    let received = receiver.wait_for(1, WAIT).await;
    let first = &received[0];
    verify(&secret, first).expect("signed like every webhook");
    let event = first.json();
    assert_eq!(event["type"], "audit.checkpoint", "{event}");
    let exported = &event["data"];
    assert!(exported["seq"].as_i64().unwrap_or(0) > 1, "{event}");
    let (code, out) = verify_against(&server, &exported.to_string()).await;
    assert_eq!(code, Some(0), "the exported checkpoint verifies: {out}");

    // Nothing new is exported while the head stays put.
    let before = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = receiver.received();
    let seqs: Vec<_> = after
        .iter()
        .map(|r| r.json()["data"]["seq"].clone())
        .collect();
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(
        seqs, unique,
        "one export per head: {seqs:?} ({before} before)"
    );
}
