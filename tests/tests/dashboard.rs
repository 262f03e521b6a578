//! The web dashboard (`/ui/`) through a real `rdev serve` (in-process, confined, the real
//! shell provider): sessions, CSRF and project scoping over plain HTTP on both databases,
//! then in a real headless Chromium through chromedriver (harness/webdriver.rs): sign in,
//! create a project, watch a shell command's output arrive live, cancel a slow one, read a
//! broken plugin's load error, sign out; a member's browser cannot open another project's
//! pages or streams, and a state-changing request without the CSRF token is refused.
//!
//! `RDEV_UPDATE_SCREENSHOTS=1` writes the main pages' screenshots to docs/screenshots/.

use std::path::PathBuf;
use std::time::Duration;

use rdev_tests::harness::server::{SseReader, TestServer, json_of};
use rdev_tests::harness::webdriver::Browser;
use rdev_tests::harness::webhook_receiver::{Reply, WebhookReceiver, verify};
use rdev_tests::harness::{Database, plugins, runtime};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A SQLite server with the real shell whose webhooks may target loopback receivers,
/// adjusted by `more`.
async fn webhook_server(more: impl FnOnce(&mut rdev::server::ServeConfig)) -> Option<TestServer> {
    let dir = tempfile::tempdir().expect("plugins dir");
    runtime::install(&plugins::plugins_dir(), "shell", dir.path(), "shell", None);
    TestServer::with_plugins(Database::Sqlite, dir, |config| {
        config.webhooks.allow_private = true;
        more(config);
    })
    .await
}

/// A server on `db` whose plugins are the real shell and, with `broken`, a plugin whose
/// component is not one (its load error shows on the providers page).
async fn server(db: Database, broken: bool) -> Option<(TestServer, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("plugins dir");
    runtime::install(&plugins::plugins_dir(), "shell", dir.path(), "shell", None);
    if broken {
        runtime::install(&plugins::plugins_dir(), "shell", dir.path(), "broken", None);
        std::fs::write(dir.path().join("broken.wasm"), b"not a component").expect("write");
    }
    let plugins_dir = dir.path().to_owned();
    let adjust = move |config: &mut rdev::server::ServeConfig| {
        config.plugins_dir = Some(plugins_dir);
    };
    let server = match db {
        Database::Sqlite => TestServer::sqlite_with(adjust).await,
        Database::Postgres => TestServer::postgres_with(adjust).await?,
    };
    Some((server, dir))
}

const FORM: &str = "application/x-www-form-urlencoded";

/// `name=value` as a form body, the value percent-encoded.
fn form_field(name: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{name}={encoded}")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    rdev_tests::harness::page_client(Duration::from_secs(60))
}

/// Signs in with `token`; the cookie header to send afterwards.
async fn sign_in(server: &TestServer, token: &str) -> String {
    let response = client()
        .post(server.url("/ui/login"))
        .header(CONTENT_TYPE, FORM)
        .body(form_field("token", token))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/projects");
    let cookie = response.headers()[SET_COOKIE].to_str().expect("ascii");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains(token), "the token is not the cookie");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// A page fetched with `cookie`: its status and HTML.
async fn page(server: &TestServer, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = client()
        .get(server.url(path))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("page");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// The session's CSRF token, as a page's forms carry it.
fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"_csrf\" value=\"").expect("a CSRF field") + 20;
    html[start..start + 64].to_owned()
}

/// A JSON API request made with the session cookie (and `csrf` as `X-CSRF-Token`).
async fn with_cookie(
    server: &TestServer,
    cookie: &str,
    csrf: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client()
        .request(method, server.url(path))
        .header(COOKIE, cookie);
    if let Some(csrf) = csrf {
        request = request.header("X-CSRF-Token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.expect("request")).await
}

async fn sessions_guard_every_change_and_scope_members(db: Database) {
    let Some((server, _plugins)) = server(db, false).await else {
        return;
    };
    let http = client();
    let root = http.get(server.url("/")).send().await.expect("root");
    assert_eq!(root.headers()[LOCATION], "/ui/");
    let anonymous = http
        .get(server.url("/ui/projects"))
        .send()
        .await
        .expect("page");
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/ui/login");
    let wrong = http
        .post(server.url("/ui/login"))
        .header(CONTENT_TYPE, FORM)
        .body(form_field("token", "rdev_not-a-token"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let admin = sign_in(&server, &server.admin).await;
    let (status, html) = page(&server, &admin, "/ui/projects").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csrf = csrf_of(&html);
    let create = json!({"id": "alpha"});
    let (status, body) = with_cookie(
        &server,
        &admin,
        None,
        Method::POST,
        "/projects",
        Some(create.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], "urn:rdev:error:csrf_rejected");
    let (status, _) = with_cookie(
        &server,
        &admin,
        Some("0".repeat(64).as_str()),
        Method::POST,
        "/projects",
        Some(create.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a wrong CSRF token is refused"
    );
    let foreign = client()
        .post(server.url("/projects"))
        .header(COOKIE, &admin)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", "http://evil.example")
        .json(&create)
        .send()
        .await
        .expect("request");
    assert_eq!(
        foreign.status(),
        StatusCode::FORBIDDEN,
        "another origin is refused"
    );
    for id in ["alpha", "beta"] {
        let (status, body) = with_cookie(
            &server,
            &admin,
            Some(&csrf),
            Method::POST,
            "/projects",
            Some(json!({"id": id})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // A command through the cookie; its stream authenticates with the cookie alone.
    let submit = json!({"provider": "shell", "prompt": "echo dashboard-$((40+2))"});
    let (status, submitted) = with_cookie(
        &server,
        &admin,
        Some(&csrf),
        Method::POST,
        "/projects/beta/commands",
        Some(submit),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let command = submitted["command_id"].as_str().expect("id").to_owned();
    let stream = client()
        .get(server.url(&format!("/projects/beta/events/{command}")))
        .header(COOKIE, &admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);
    let events = SseReader::new(stream).collect().await;
    assert!(
        events.iter().any(|e| e.data.contains("dashboard-42")),
        "{events:?}"
    );
    let (status, html) = page(&server, &admin, "/ui/projects/beta").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&command) && html.contains("completed"),
        "{html}"
    );
    let (status, html) = page(&server, &admin, &format!("/ui/commands/{command}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!("/projects/beta/events/{command}")),
        "{html}"
    );

    // A member of alpha sees alpha only: not beta's page, command, stream or API.
    let member = server
        .as_admin()
        .post(
            "/tokens",
            json!({"name": "alice", "role": "member", "projects": ["alpha"]}),
            StatusCode::CREATED,
        )
        .await;
    let member_cookie = sign_in(&server, member["token"].as_str().expect("secret")).await;
    let (_, html) = page(&server, &member_cookie, "/ui/projects").await;
    assert!(
        html.contains("/ui/projects/alpha") && !html.contains("/ui/projects/beta"),
        "{html}"
    );
    for path in [
        "/ui/projects/beta".to_owned(),
        format!("/ui/commands/{command}"),
    ] {
        let (status, html) = page(&server, &member_cookie, &path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
    }
    let (status, _) = with_cookie(
        &server,
        &member_cookie,
        None,
        Method::GET,
        &format!("/projects/beta/events/{command}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let member_csrf = csrf_of(&page(&server, &member_cookie, "/ui/projects").await.1);
    let (status, _) = with_cookie(
        &server,
        &member_cookie,
        Some(&member_csrf),
        Method::DELETE,
        "/projects/alpha",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "members do not delete projects"
    );

    // Revoking the token ends its sessions.
    let member_id = member["id"].as_str().expect("id");
    let (status, _) = server
        .admin_call(Method::DELETE, &format!("/tokens/{member_id}"), None)
        .await;
    assert!(status.is_success());
    let (status, _) = page(&server, &member_cookie, "/ui/projects").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Sign-out needs the CSRF token, then the session is gone on the server.
    let refused = client()
        .post(server.url("/ui/logout"))
        .header(COOKIE, &admin)
        .send()
        .await
        .expect("sign out");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = client()
        .post(server.url("/ui/logout"))
        .header(COOKIE, &admin)
        .header(CONTENT_TYPE, FORM)
        .body(form_field("_csrf", &csrf))
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let (status, _) = page(&server, &admin, "/ui/projects").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = with_cookie(&server, &admin, None, Method::GET, "/projects", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Bearer auth is unchanged.
    server
        .anonymous()
        .get("/projects", StatusCode::UNAUTHORIZED)
        .await;
    server.as_admin().get("/projects", StatusCode::OK).await;
}

/// The project page's `Older →` link (a keyset cursor) reaches every command, past the
/// API's 1,000-command offset window, each once; a forged cursor is a 400 page.
async fn the_project_pager_reaches_every_command(db: Database) {
    let Some((server, _plugins)) = server(db, false).await else {
        return;
    };
    server.create_project("long").await;
    let project = rdev::domain::ProjectId::parse("long").expect("id");
    let queue = &server.server().state().stores.queue;
    let total = 1_060;
    for i in 0..total {
        let mut command = rdev_tests::harness::queue::new_command(&project, &format!("c{i}"));
        // A provider that does not exist: the worker fails each at once, nothing runs.
        command.provider = rdev::domain::ProviderName::parse("absent").expect("name");
        queue.enqueue(command).await.expect("enqueue");
    }
    let cookie = sign_in(&server, &server.admin).await;
    let mut seen = std::collections::HashSet::new();
    let mut path = "/ui/projects/long".to_owned();
    let mut pages = 0;
    loop {
        let (status, html) = page(&server, &cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        pages += 1;
        for row in html.split("<tr><td><a href=\"/ui/commands/").skip(1) {
            let id = &row[..row.find('"').expect("quoted id")];
            assert!(seen.insert(id.to_owned()), "{id} listed twice");
        }
        let Some(start) = html.find("<a href=\"?before=") else {
            break;
        };
        let cursor = &html[start + 17..];
        path = format!(
            "/ui/projects/long?before={}",
            &cursor[..cursor.find('"').expect("link")]
        );
        assert!(html.contains("id=\"newest\"") || pages == 1, "{path}");
    }
    assert_eq!(seen.len(), total, "every command, each once");
    assert_eq!(pages, total.div_ceil(50));
    let (status, html) = page(&server, &cookie, "/ui/projects/long?before=c1.forged").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("not a cursor"), "{html}");
}

rdev_tests::on_both_databases!(
    sessions_guard_every_change_and_scope_members,
    the_project_pager_reaches_every_command
);

/// Writes the browser's viewport to docs/screenshots/`name`.png when
/// `RDEV_UPDATE_SCREENSHOTS=1`; otherwise checks only that a PNG came back.
async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if std::env::var("RDEV_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

/// Runs `fetch(path, init)` in the page (with its cookie) and returns the status.
async fn fetch_status(browser: &Browser, path: &str, init: Value) -> u64 {
    let status = browser
        .script_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], arguments[1]).then(r => done(r.status), e => done(String(e)));",
            json!([path, init]),
        )
        .await;
    status
        .as_u64()
        .unwrap_or_else(|| panic!("fetch failed: {status}"))
}

async fn sign_in_browser(browser: &Browser, server: &TestServer, token: &str) {
    browser.goto(&server.url("/")).await;
    browser.wait_for("#token").await;
    assert!(browser.url().await.ends_with("/ui/login"));
    browser.type_into("#token", token).await;
    browser.click("#sign-in").await;
    browser.wait_for("#projects").await;
}

/// Submits `prompt` from the project's page and waits for the command's page.
async fn run_from_page(browser: &Browser, server: &TestServer, project: &str, prompt: &str) {
    browser
        .goto(&server.url(&format!("/ui/projects/{project}")))
        .await;
    browser
        .type_into("#prompt textarea[name=prompt]", prompt)
        .await;
    browser.click("#prompt button[type=submit]").await;
    browser.wait_for("#events").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_runs_cancels_and_signs_out() {
    let Some((server, _plugins)) = server(Database::Sqlite, true).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    sign_in_browser(&browser, &server, &server.admin).await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "rdev_session")
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    let visible = browser
        .script(
            "return document.cookie + JSON.stringify(localStorage) + location.href;",
            json!([]),
        )
        .await;
    let visible = visible.as_str().unwrap_or_default();
    assert!(
        !visible.contains("rdev_session") && !visible.contains(&server.admin),
        "{visible}"
    );

    browser
        .type_into("#create-project input[name=id]", "web")
        .await;
    browser.click("#create-project button[type=submit]").await;
    browser.wait_for("#prompt").await;
    assert!(browser.url().await.ends_with("/ui/projects/web"));

    // The output arrives while the command still runs: it waits for a file the test writes.
    let release = server.workspace("web").join("release");
    let prompt = "echo first-line; printf '\\033[32mgreen\\033[0m\\n'; \
                  while [ ! -f release ]; do sleep 0.1; done; echo second-line";
    run_from_page(&browser, &server, "web", prompt).await;
    browser.wait_for_text("#events .output", "first-line").await;
    assert_eq!(browser.text("#events .output span.fg-32").await, "green");
    assert_eq!(browser.text("#status").await, "running");
    // A dropped stream resumes after the last event shown, without repeating a line.
    browser
        .script(
            "rdevStream.source.close(); rdevStream.connect(true);",
            json!([]),
        )
        .await;
    std::fs::write(&release, b"").expect("release the command");
    browser.wait_for_text("#status", "completed").await;
    let events = browser.text("#events").await;
    assert_eq!(events.matches("first-line").count(), 1, "{events}");
    assert_eq!(events.matches("second-line").count(), 1, "{events}");
    assert!(events.contains("Finished: completed"), "{events}");
    screenshot(&browser, "command").await;

    run_from_page(&browser, &server, "web", "sleep 300").await;
    browser.wait_for_text("#status", "running").await;
    browser.click("#controls button").await;
    browser.wait_for_text("#status", "cancelled").await;

    browser.goto(&server.url("/ui/projects/web")).await;
    let list = browser.wait_for_text("#commands", "cancelled").await;
    assert!(
        list.contains("completed") && list.contains("shell"),
        "{list}"
    );
    screenshot(&browser, "project").await;
    browser.goto(&server.url("/ui/projects")).await;
    browser.wait_for_text("#projects", "web").await;
    screenshot(&browser, "projects").await;

    browser.goto(&server.url("/ui/providers")).await;
    let broken = browser
        .wait_for_text("tr[data-provider=broken] .load-error", "broken.wasm")
        .await;
    assert!(!broken.is_empty());
    assert!(
        browser
            .text("tr[data-provider=shell]")
            .await
            .contains("serving")
    );
    let exec = browser
        .text("tr[data-provider=shell] [data-grant=exec]")
        .await;
    assert_eq!(exec, "exec: sh", "the manifest's grants");
    screenshot(&browser, "providers").await;

    // The page's own script sends the CSRF token; a request without it is refused.
    let create = json!({"method": "POST", "headers": {"Content-Type": "application/json"},
                        "body": "{\"id\": \"sneaky\"}"});
    assert_eq!(fetch_status(&browser, "/projects", create).await, 403);

    browser.click("#sign-out").await;
    browser.wait_for("#token").await;
    browser.goto(&server.url("/ui/projects")).await;
    browser.wait_for("#token").await;
    assert!(browser.url().await.ends_with("/ui/login"));
    assert_eq!(fetch_status(&browser, "/projects", json!({})).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_browser_cannot_open_another_projects_pages_or_streams() {
    let Some((server, _plugins)) = server(Database::Sqlite, false).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    for id in ["mine", "theirs"] {
        server.create_project(id).await;
    }
    let theirs = server.submit("theirs", "shell", "echo secret-output").await;
    let theirs = theirs["command_id"].as_str().expect("id").to_owned();
    let member = server.member_token(&["mine"]).await;
    sign_in_browser(&browser, &server, &member).await;
    let projects = browser.text("#projects").await;
    assert!(
        projects.contains("mine") && !projects.contains("theirs"),
        "{projects}"
    );
    for path in [
        "/ui/projects/theirs".to_owned(),
        format!("/ui/commands/{theirs}"),
    ] {
        browser.goto(&server.url(&path)).await;
        let body = browser.wait_for_text("main", "403").await;
        assert!(!body.contains("secret-output"), "{body}");
    }
    let stream = format!("/projects/theirs/events/{theirs}");
    assert_eq!(fetch_status(&browser, &stream, json!({})).await, 403);
    assert_eq!(
        fetch_status(&browser, "/projects/mine/commands", json!({})).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_commands_changes_and_sets_the_projects_budget() {
    let Some((server, _plugins)) = server(Database::Sqlite, false).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    server.create_project("diffs").await;
    let setup = server
        .submit(
            "diffs",
            "shell",
            "printf 'one\\ntwo\\n' > notes.txt; echo x > old.txt",
        )
        .await;
    let setup = setup["command_id"].as_str().expect("id").to_owned();
    server
        .finished_within(&setup, Duration::from_secs(90))
        .await;

    sign_in_browser(&browser, &server, &server.admin).await;
    let edit = "sed -i 's/two/TWO/' notes.txt; rm old.txt; printf 'fresh\\n' > added.txt";
    run_from_page(&browser, &server, "diffs", edit).await;
    browser.wait_for_text("#status", "completed").await;
    browser.click("#changes-link").await;
    let summary = browser.wait_for_text("#summary", "3 file(s) changed").await;
    assert!(
        summary.contains("+2") && summary.contains("−2"),
        "{summary}"
    );
    let notes = "section.file[data-path='notes.txt']";
    assert!(browser.text(notes).await.contains("modified"));
    assert_eq!(
        browser.text(&format!("{notes} pre.diff .del")).await,
        "-two"
    );
    assert_eq!(
        browser.text(&format!("{notes} pre.diff .add")).await,
        "+TWO"
    );
    let added = "section.file.added[data-path='added.txt'] pre.diff .add";
    assert_eq!(browser.text(added).await, "+fresh");
    let removed = "section.file.deleted[data-path='old.txt'] pre.diff .del";
    assert_eq!(browser.text(removed).await, "-x");
    // Added lines are green and removed ones red, as rendered.
    let colours = browser
        .script(
            "const bg = s => getComputedStyle(document.querySelector(s)).backgroundColor;\
             return [bg('pre.diff .add'), bg('pre.diff .del')];",
            json!([]),
        )
        .await;
    assert_eq!(colours, json!(["rgb(230, 255, 236)", "rgb(255, 235, 233)"]));
    screenshot(&browser, "changes").await;
    browser.click("#back").await;
    browser.wait_for("#events").await;

    // The project's usage page: both commands counted; the budget set and removed.
    browser.goto(&server.url("/ui/projects/diffs")).await;
    browser.click("#usage-link").await;
    browser.wait_for_text("#usage-total", "Total").await;
    let cells = "return [...document.querySelectorAll('#usage-total th')].map(c => c.textContent);";
    let total = browser.script(cells, json!([])).await;
    assert_eq!(total, json!(["Total", "", "2", "0", "0", "$0.0000"]));
    assert!(browser.text("#usage").await.contains("shell"));
    assert_eq!(browser.text("#budget-limit").await, "none");
    browser
        .type_into("#set-budget input[name=monthly_limit_usd]", "7.5")
        .await;
    browser.click("#set-budget button[type=submit]").await;
    browser
        .wait_for_text("#budget-limit", "$7.50 a month")
        .await;
    assert!(
        browser
            .text("#budget-state")
            .await
            .contains("within budget")
    );
    let (_, budget) = server
        .admin_call(Method::GET, "/projects/diffs/budget", None)
        .await;
    assert_eq!(budget["monthly_limit_usd"], 7.5, "{budget}");
    screenshot(&browser, "usage").await;
    // Without the page's CSRF token the same change is refused.
    let put = json!({"method": "PUT", "headers": {"Content-Type": "application/json"},
                     "body": "{\"monthly_limit_usd\": 0}"});
    assert_eq!(
        fetch_status(&browser, "/projects/diffs/budget", put).await,
        403
    );
    browser.click("#clear-budget button[type=submit]").await;
    browser.wait_for_text("#budget-limit", "none").await;
    let (_, budget) = server
        .admin_call(Method::GET, "/projects/diffs/budget", None)
        .await;
    assert_eq!(budget["monthly_limit_usd"], Value::Null, "{budget}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_reads_the_audit_trail_credentials_and_webhooks() {
    let Some(server) = webhook_server(|_| {}).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let admin = Some(server.admin.as_str());
    server.create_project("ops").await;
    server.put_credential("DEPLOY_KEY", "s3cret-value").await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["command.completed"],
                      "description": "ci relay"});
    let (status, created) = server
        .call(Method::POST, "/projects/ops/webhooks", admin, Some(hook))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_owned();

    sign_in_browser(&browser, &server, &server.admin).await;
    browser.click("#audit-link").await;
    browser.wait_for_text("#chain", "Chain intact").await;
    let trail = browser.text("#audit").await;
    assert!(
        trail.contains("project.created") && trail.contains("ui.signed_in"),
        "{trail}"
    );
    screenshot(&browser, "audit").await;

    browser.goto(&server.url("/ui/projects")).await;
    browser.click("#credentials-link").await;
    let row = browser
        .wait_for_text("tr[data-credential=DEPLOY_KEY]", "DEPLOY_KEY")
        .await;
    assert!(!row.is_empty());
    let source = browser
        .script("return document.documentElement.outerHTML;", json!([]))
        .await;
    assert!(!source.as_str().unwrap_or_default().contains("s3cret-value"));
    browser.click("tr[data-credential=DEPLOY_KEY] button").await;
    browser
        .wait_for_text("#credentials", "No credentials.")
        .await;
    let (_, listed) = server.call(Method::GET, "/credentials", admin, None).await;
    assert_eq!(listed["credentials"], json!([]), "{listed}");

    // Set from the page: the value goes out once in the PUT body and is never shown again.
    let value = "p4ss-from-the-page";
    browser
        .type_into("#set-credential input[name=name]", "WEB_TOKEN")
        .await;
    browser
        .type_into("#set-credential input[name=value]", value)
        .await;
    browser.click("#set-credential button[type=submit]").await;
    browser
        .wait_for_text("tr[data-credential=WEB_TOKEN]", "WEB_TOKEN")
        .await;
    let source = browser
        .script("return document.documentElement.outerHTML;", json!([]))
        .await;
    assert!(!source.as_str().unwrap_or_default().contains(value));
    let field = browser
        .script(
            "return document.querySelector('#set-credential input[name=value]').value;",
            json!([]),
        )
        .await;
    assert_eq!(field, "", "the reloaded page does not keep the value");
    let (_, listed) = server.call(Method::GET, "/credentials", admin, None).await;
    assert_eq!(listed["credentials"][0]["name"], "WEB_TOKEN", "{listed}");
    let (_, audit) = server
        .call(Method::GET, "/audit?action=credential.put", admin, None)
        .await;
    assert!(audit.to_string().contains("WEB_TOKEN"), "{audit}");
    assert!(!audit.to_string().contains(value), "{audit}");

    browser.goto(&server.url("/ui/projects/ops")).await;
    browser.click("#webhooks-link").await;
    let hooks = browser.wait_for_text("#webhooks", "127.0.0.1:9/hook").await;
    assert!(
        hooks.contains("command.completed") && hooks.contains("enabled"),
        "{hooks}"
    );
    assert!(hooks.contains("ci relay"), "{hooks}");
    let source = browser
        .script("return document.documentElement.outerHTML;", json!([]))
        .await;
    assert!(!source.as_str().unwrap_or_default().contains(&secret));
}

/// Reloads `path` until the text of `css` contains `expected` (a server-rendered page shows
/// what happened since only when loaded again); returns that text.
async fn reload_until(browser: &Browser, url: &str, css: &str, expected: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        browser.goto(url).await;
        let text = browser.text(css).await;
        if text.contains(expected) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} never showed {expected:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_creates_a_webhook_sees_its_deliveries_and_deletes_it() {
    let Some(server) = webhook_server(|config| {
        config.webhooks.poll_interval = Duration::from_millis(50);
        config.webhooks.retry.base = Duration::from_millis(50);
        config.webhooks.retry.max_delay = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let admin = Some(server.admin.as_str());
    server.create_project("hooks").await;
    // A real receiver on 127.0.0.1 that fails the first attempt and accepts the retry.
    let receiver = WebhookReceiver::start().expect("receiver");
    receiver.script([Reply::status(500)]);
    let hook_url = receiver.url("/hook");

    sign_in_browser(&browser, &server, &server.admin).await;
    browser.goto(&server.url("/ui/projects/hooks")).await;
    browser.click("#webhooks-link").await;
    browser.wait_for_text("#webhooks", "No webhooks.").await;
    browser
        .type_into("#create-webhook input[name=url]", &hook_url)
        .await;
    browser
        .type_into(
            "#create-webhook input[name=event_types]",
            "command.completed, command.failed",
        )
        .await;
    browser
        .type_into("#create-webhook input[name=description]", "from the page")
        .await;
    // A malformed secret is refused with the API's words; the receiver's own one is taken.
    browser
        .type_into("#create-webhook input[name=secret]", "whsec_c2hvcnQ=")
        .await;
    browser.click("#create-webhook button[type=submit]").await;
    browser
        .wait_for_text("#create-webhook [data-error]", "400")
        .await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    browser
        .script(
            "document.querySelector('#create-webhook input[name=secret]').value = arguments[0];",
            json!([secret]),
        )
        .await;
    browser.click("#create-webhook button[type=submit]").await;
    let shown = browser.wait_for_text("#new-secret", "shown once").await;
    assert!(shown.contains(secret), "{shown}");
    browser.click("#secret-done").await;
    let hooks = browser.wait_for_text("#webhooks", &hook_url).await;
    assert!(
        hooks.contains("command.completed, command.failed") && hooks.contains("from the page"),
        "{hooks}"
    );
    let source = browser
        .script("return document.documentElement.outerHTML;", json!([]))
        .await;
    assert!(!source.as_str().unwrap_or_default().contains(secret));
    let deliveries = browser.text("table.deliveries").await;
    assert!(deliveries.contains("No deliveries yet."), "{deliveries}");

    let command = server.submit("hooks", "shell", "echo hooked").await;
    let command = command["command_id"].as_str().expect("id").to_owned();
    server
        .finished_within(&command, Duration::from_secs(90))
        .await;
    let received = receiver.wait_for(2, Duration::from_secs(60)).await;
    verify(secret, &received[1]).expect("signed with the secret set on the page");
    assert_eq!(received[1].json()["type"], "command.completed");

    let page_url = server.url("/ui/projects/hooks/webhooks");
    let row = reload_until(
        &browser,
        &page_url,
        "table.deliveries tbody tr",
        "delivered",
    )
    .await;
    assert!(row.contains("command.completed"), "{row}");
    assert_eq!(
        browser.text("table.deliveries tbody tr .answer").await,
        "204"
    );
    assert_eq!(
        browser.text("table.deliveries tbody tr .attempts").await,
        "2",
        "the failed attempt and the retry"
    );
    screenshot(&browser, "webhooks").await;

    browser.click("tr[data-webhook] button").await;
    browser.wait_for_text("#webhooks", "No webhooks.").await;
    let (_, listed) = server
        .call(Method::GET, "/projects/hooks/webhooks", admin, None)
        .await;
    assert_eq!(listed["webhooks"], json!([]), "{listed}");
}

/// Opens the page of a command submitted to `interact` with `prompt`; its id.
async fn open_interact(browser: &Browser, server: &TestServer, prompt: &str) -> String {
    let submitted = server.submit("p", "interact", prompt).await;
    let id = submitted["command_id"].as_str().expect("id").to_owned();
    browser
        .goto(&server.url(&format!("/ui/commands/{id}")))
        .await;
    browser.wait_for("#events").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_allows_denies_and_sends_follow_up_input() {
    // The `interact` test guest: `run <cmd>` asks whether Bash may run <cmd>; `input` takes
    // follow-up input until `done`.
    let Some(server) =
        TestServer::with_plugins(Database::Sqlite, plugins::with_interact(), |_| {}).await
    else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    server.create_project("p").await;
    sign_in_browser(&browser, &server, &server.admin).await;

    // Allow, clicked: the tool runs and the command completes.
    let allowed = open_interact(&browser, &server, "run echo ran-$((40+2))").await;
    let asked = browser
        .wait_for_text(".ev.approval", "Approval needed: Bash")
        .await;
    assert!(asked.contains("echo ran-$((40+2))"), "{asked}");
    screenshot(&browser, "approval").await;
    browser.click(".ev.approval button.allow").await;
    browser.wait_for_text("#status", "completed").await;
    let events = browser.text("#events").await;
    assert!(events.contains("ran-42"), "the tool ran: {events}");
    let state = browser.text(".ev.approval .approval-state").await;
    assert!(state.starts_with("allowed by"), "{state}");
    let command = server
        .finished_within(&allowed, Duration::from_secs(60))
        .await;
    assert_eq!(command["status"], "completed", "{command}");

    // Deny with a reason, clicked: the agent is told, the tool never runs.
    let denied = open_interact(&browser, &server, "run echo never-$((1+1))").await;
    browser.wait_for(".ev.approval button.deny").await;
    browser
        .type_into(".ev.approval .decide input", "not on main")
        .await;
    browser.click(".ev.approval button.deny").await;
    browser.wait_for_text("#events .ev.done", "Finished").await;
    let events = browser.text("#events").await;
    assert!(events.contains("denied: not on main"), "{events}");
    assert!(
        !events.contains("never-2"),
        "the tool did not run: {events}"
    );
    let state = browser.text(".ev.approval .approval-state").await;
    assert!(
        state.starts_with("denied by") && state.ends_with(": not on main"),
        "{state}"
    );
    let command = server
        .finished_within(&denied, Duration::from_secs(60))
        .await;
    assert_eq!(
        command["result"]["final_text"], "denied: not on main",
        "{command}"
    );

    // Follow-up input from the box reaches the running agent, in order.
    let talked = open_interact(&browser, &server, "input").await;
    browser.wait_for_text("#status", "running").await;
    for text in ["hello there", "done"] {
        browser.type_into("#follow-up input[name=text]", text).await;
        browser.click("#follow-up button[type=submit]").await;
        browser
            .wait_for_text("#events", &format!("you: {text}"))
            .await;
        // The box is cleared once the API accepted the text; the next goes in after that.
        let cleared = "return document.querySelector('#follow-up input[name=text]').value;";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while browser.script(cleared, json!([])).await != "" {
            assert!(
                std::time::Instant::now() < deadline,
                "the box kept {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    browser.wait_for_text("#status", "completed").await;
    let done = browser.text("#events .ev.done").await;
    assert!(done.contains("hello there,done"), "{done}");
    let delivered = browser
        .script(
            "return document.querySelectorAll('.ev.input.delivered').length;",
            json!([]),
        )
        .await;
    assert_eq!(delivered, 2);
    let command = server
        .finished_within(&talked, Duration::from_secs(60))
        .await;
    assert_eq!(
        command["result"]["final_text"], "hello there,done",
        "{command}"
    );
}
