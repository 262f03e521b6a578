//! #16 part 3: `GET /commands/{id}/changes` through a real `rdev serve` (SQLite and
//! PostgreSQL) with the real `shell` provider and the local executor: a command that adds,
//! edits and deletes files shows exactly those changes with their diffs, whether the
//! workspace is a plain directory or a git checkout (whose own index stays untouched); later
//! edits leave a recorded diff alone; no changes, a binary file and a file whose diff is
//! over the per-file limit; a broken snapshot repository gives a reason instead of changes;
//! the snapshot repository pruned to the newest commands; member scoping, 404s and the
//! OpenAPI document.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rdev_tests::harness::Database as Db;
use rdev_tests::harness::server::TestServer;
use rdev_tests::on_both_databases;

/// Generous: each command runs a real plugin and git twice, and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(90);

async fn server(db: Db) -> Option<TestServer> {
    match db {
        Db::Sqlite => Some(TestServer::sqlite().await),
        Db::Postgres => TestServer::postgres().await,
    }
}

/// Runs `script` with the shell provider to its end, expecting it to complete; its id.
async fn run(server: &TestServer, project: &str, script: &str) -> String {
    let submitted = server.submit(project, "shell", script).await;
    let id = submitted["command_id"]
        .as_str()
        .expect("command_id")
        .to_owned();
    let command = server.finished_within(&id, WAIT).await;
    assert_eq!(command["status"], "completed", "{script}: {command}");
    id
}

async fn changes(server: &TestServer, id: &str) -> Value {
    let path = format!("/commands/{id}/changes");
    let body = server.as_admin().get(&path, StatusCode::OK).await;
    assert_eq!(body["command_id"], id, "{body}");
    body
}

/// `(path, change, additions, deletions, patch)` of every file, for exact comparisons.
fn summary(changes: &Value) -> Vec<(String, String, Value, Value, Value)> {
    let files = changes["files"].as_array().expect("files");
    files
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            let (adds, dels) = (f["additions"].clone(), f["deletions"].clone());
            (text("path"), text("change"), adds, dels, f["patch"].clone())
        })
        .collect()
}

fn entry(
    path: &str,
    change: &str,
    adds: u64,
    dels: u64,
    patch: &str,
) -> (String, String, Value, Value, Value) {
    (
        path.into(),
        change.into(),
        json!(adds),
        json!(dels),
        json!(patch),
    )
}

on_both_databases!(
    a_command_shows_exactly_the_files_it_added_edited_and_deleted,
    a_git_checkout_shows_the_changes_and_keeps_its_own_index,
    no_changes_a_binary_file_and_a_huge_diff,
);

async fn a_command_shows_exactly_the_files_it_added_edited_and_deleted(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    // The workspace is a plain directory, not a git checkout.
    let setup = "printf 'one\\ntwo\\nthree\\n' > keep.txt; echo bye > gone.txt; \
                 mkdir -p sub; echo same > sub/same.txt";
    let first = run(&server, "plain", setup).await;
    let created = changes(&server, &first).await;
    assert_eq!(created["available"], true, "{created}");
    assert_eq!(
        summary(&created),
        [
            entry("gone.txt", "added", 1, 0, "@@ -0,0 +1 @@\n+bye\n"),
            entry(
                "keep.txt",
                "added",
                3,
                0,
                "@@ -0,0 +1,3 @@\n+one\n+two\n+three\n"
            ),
            entry("sub/same.txt", "added", 1, 0, "@@ -0,0 +1 @@\n+same\n"),
        ],
        "{created}"
    );
    let edit = "sed -i 's/two/TWO/' keep.txt && rm gone.txt && echo fresh > 'sub/new file.txt'";
    let second = run(&server, "plain", edit).await;
    let edited = changes(&server, &second).await;
    let expected = [
        entry("gone.txt", "deleted", 0, 1, "@@ -1 +0,0 @@\n-bye\n"),
        entry(
            "keep.txt",
            "modified",
            1,
            1,
            "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n",
        ),
        entry("sub/new file.txt", "added", 1, 0, "@@ -0,0 +1 @@\n+fresh\n"),
    ];
    assert_eq!(summary(&edited), expected, "{edited}");
    assert_eq!(edited["truncated"], false, "{edited}");
    assert_eq!(edited["project_id"], "plain", "{edited}");
    // The diff was stored: later edits of the workspace leave it as it was.
    run(&server, "plain", "rm -f keep.txt sub/*").await;
    assert_eq!(summary(&changes(&server, &second).await), expected);

    // Member scoping, unknown ids, and the document.
    let member = server.member_token(&["elsewhere"]).await;
    let path = format!("/commands/{second}/changes");
    server
        .as_token(&member)
        .get(&path, StatusCode::FORBIDDEN)
        .await;
    server
        .anonymous()
        .get(&path, StatusCode::UNAUTHORIZED)
        .await;
    let unknown = "/commands/cmd-0190c3a8-0000-7000-8000-000000000000/changes";
    server.as_admin().get(unknown, StatusCode::NOT_FOUND).await;
    let (_, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    let route = &doc["paths"]["/commands/{id}/changes"]["get"];
    assert!(route["responses"]["200"].is_object(), "{route}");
    assert!(doc["components"]["schemas"]["CommandChanges"].is_object());
}

async fn a_git_checkout_shows_the_changes_and_keeps_its_own_index(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    let init = "git init -q . && echo a > a.txt && git add a.txt && \
                git -c user.name=t -c user.email=t@example.com commit -qm init";
    let first = run(&server, "repo", init).await;
    // The checkout's `.git` is never part of the changes.
    assert_eq!(
        summary(&changes(&server, &first).await),
        [entry("a.txt", "added", 1, 0, "@@ -0,0 +1 @@\n+a\n")]
    );
    let second = run(&server, "repo", "echo b >> a.txt; echo new > n.txt").await;
    assert_eq!(
        summary(&changes(&server, &second).await),
        [
            entry("a.txt", "modified", 1, 0, "@@ -1 +1,2 @@\n a\n+b\n"),
            entry("n.txt", "added", 1, 0, "@@ -0,0 +1 @@\n+new\n"),
        ]
    );
    // The checkout's index and history are its own: nothing was staged or committed.
    // (Asked inside the workspace, as the commands' own user.)
    let same = "[ \"$(git status --porcelain | tr '\\n' ,)\" = ' M a.txt,?? n.txt,' ]";
    let checked = run(&server, "repo", same).await;
    assert_eq!(changes(&server, &checked).await["files"], json!([]));
    // A snapshot repository broken under rdev's feet: the command still completes, and its
    // changes say why they are missing.
    let broken = run(
        &server,
        "repo",
        "rm -rf .rdev/changes.git && echo x > .rdev/changes.git",
    )
    .await;
    let missing = changes(&server, &broken).await;
    assert_eq!(missing["available"], false, "{missing}");
    assert_eq!(missing["files"], json!([]), "{missing}");
    let reason = missing["reason"].as_str().expect("a reason");
    assert!(reason.contains("git"), "{reason}");
}

async fn no_changes_a_binary_file_and_a_huge_diff(db: Db) {
    let Some(server) = server(db).await else {
        return;
    };
    let quiet = run(&server, "edge", "echo nothing changes").await;
    let none = changes(&server, &quiet).await;
    assert_eq!(
        (&none["available"], &none["files"]),
        (&json!(true), &json!([])),
        "{none}"
    );
    assert_eq!(none["truncated"], false, "{none}");

    let binary = run(&server, "edge", "printf 'a\\000b\\001' > blob.bin").await;
    let blob = changes(&server, &binary).await;
    let file = &blob["files"][0];
    assert_eq!(blob["files"].as_array().map(Vec::len), Some(1), "{blob}");
    assert_eq!(
        (&file["path"], &file["change"]),
        (&json!("blob.bin"), &json!("added"))
    );
    assert_eq!(file["binary"], true, "{blob}");
    assert_eq!(
        (&file["patch"], &file["additions"]),
        (&Value::Null, &Value::Null),
        "{blob}"
    );

    // 100,000 lines (589 KB) make a diff over the 256 KiB a file may have.
    let huge = run(&server, "edge", "seq 1 100000 > big.txt").await;
    let big = changes(&server, &huge).await;
    assert_eq!(big["truncated"], true, "{big}");
    let file = &big["files"][0];
    assert_eq!(
        (&file["path"], &file["additions"]),
        (&json!("big.txt"), &json!(100_000))
    );
    assert_eq!(file["truncated"], true);
    let patch = file["patch"].as_str().expect("a patch");
    assert!(
        patch.len() <= 256 * 1024 && patch.len() > 200 * 1024,
        "{}",
        patch.len()
    );
    assert!(patch.starts_with("@@ -0,0 +1,100000 @@\n+1\n+2\n"));
    assert!(patch.ends_with('\n'), "cut at a line end");
}

/// `git` run on the host against the workspace's snapshot repository `repo`; its stdout, or
/// `None` when git failed.
fn git_in(repo: &std::path::Path, args: &[&str], input: Option<&str>) -> Option<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("git")
        .args(["-c", "safe.directory=*", "--git-dir"])
        .arg(repo)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.unwrap_or_default().as_bytes())
        .expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("git ends");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// With the newest 2 commands kept, the fourth command's prune drops the refs of the first
/// two and `git gc` removes what only they kept (the first version of the file), while a
/// later command still snapshots and diffs exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_repository_keeps_only_the_newest_commands() {
    let server = TestServer::sqlite_with(|config| {
        config.worker.change_retention = rdev::services::changes::ChangeRetention {
            keep: 2,
            prune_expiry: "now".to_owned(),
        };
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let script = format!("printf 'version-{i}-only\\n' > notes.txt");
        ids.push(run(&server, "kept", &script).await);
    }
    let repo = server.workspace("kept").join(".rdev/changes.git");
    let refs = git_in(
        &repo,
        &["for-each-ref", "--format=%(refname)", "refs/rdev/"],
        None,
    )
    .expect("refs listed");
    let kept: Vec<String> = ids[2..]
        .iter()
        .flat_map(|id| {
            [
                format!("refs/rdev/{id}/after"),
                format!("refs/rdev/{id}/before"),
            ]
        })
        .collect();
    assert_eq!(refs.lines().collect::<Vec<_>>(), kept, "{refs}");
    let blob = |i: usize| {
        git_in(
            &repo,
            &["hash-object", "--stdin"],
            Some(&format!("version-{i}-only\n")),
        )
        .expect("hashed")
    };
    let exists = |i: usize| git_in(&repo, &["cat-file", "-e", &blob(i)], None).is_some();
    assert!(!exists(0), "the first version was pruned");
    assert!(exists(1) && exists(3), "the kept commands' trees are whole");

    let later = run(&server, "kept", "printf 'version-4-only\\n' > notes.txt").await;
    let after = changes(&server, &later).await;
    assert_eq!(
        summary(&after),
        [entry(
            "notes.txt",
            "modified",
            1,
            1,
            "@@ -1 +1 @@\n-version-3-only\n+version-4-only\n"
        )],
        "{after}"
    );
}
