//! The dashboard with history (issue #16's benchmark): a project with 10,000 commands and a
//! command with 50,000 events, on a real in-process `rdev serve` (SQLite, the embedded
//! default) signed in through `/ui/login` like a browser.
//!
//! - **Project page** (`/ui/projects/{id}`): wall time of the GET on loopback (the server's
//!   time plus a local round trip) and its transfer size, first page and the page after
//!   9,000 commands, reached by following the pager's `Older` links (keyset cursors).
//! - **Command page** (`/ui/commands/{id}`): the same for its HTML, then its event stream as
//!   the page's script reads it (the SSE replay of 50,000 events): time and bytes.
//! - **In Chromium** (Debian's, through chromedriver): from navigation until the page shows
//!   the command's final `done` block after all 50,000 events, and the page's memory then
//!   (`Performance.getMetrics`: JS heap used, DOM nodes).
//!
//! The history is written straight into the stores: 10,000 commands queued for a provider
//! that does not exist, which the server's worker fails one by one (realistic finished rows
//! with their events and audit entries), and 50,000 `output` events appended to a running
//! `sleep` of the shell provider, which is then cancelled.
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev-tests --bench dashboard` (commands and
//! events from `RDEV_BENCH_COMMANDS`, default 10000, and `RDEV_BENCH_EVENTS`, default 50000).

use std::time::{Duration, Instant};

use rdev::domain::{
    AgentEvent, AgentRequest, CommandId, NewCommand, OutputStream, ProjectId, ProviderName,
    StreamEvent,
};
use rdev_tests::harness::bench::{env_count, ms};
use rdev_tests::harness::server::TestServer;
use rdev_tests::harness::webdriver::Browser;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const SAMPLES: usize = 20;

fn client() -> reqwest::Client {
    rdev_tests::harness::page_client(Duration::from_secs(300))
}

/// Signs in with the admin token; the session cookie to send.
async fn sign_in(server: &TestServer) -> String {
    let body = format!("token={}", server.admin);
    let response = client()
        .post(server.url("/ui/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.headers()[LOCATION], "/ui/projects");
    let cookie = response.headers()[SET_COOKIE].to_str().expect("ascii");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// The p50 wall time of `SAMPLES` GETs of `path` and the body's size.
async fn page(server: &TestServer, cookie: &str, path: &str) -> (Duration, usize) {
    let http = client();
    let mut times = Vec::with_capacity(SAMPLES);
    let mut size = 0;
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let response = http
            .get(server.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("page");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        size = response.bytes().await.expect("body").len();
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], size)
}

/// Follows the project page's `Older →` links from the newest page to the oldest. Returns
/// the path of the page after the first 9,000 commands (or of the last page), how many
/// commands precede it, and how many commands the pages listed in all.
async fn walk_pages(server: &TestServer, cookie: &str, commands: usize) -> (String, usize, usize) {
    let http = client();
    let target = 9_000.min(commands.saturating_sub(1) / 50 * 50);
    let mut path = "/ui/projects/history".to_owned();
    let (mut listed, mut deep) = (0, None);
    loop {
        if listed == target {
            deep = Some(path.clone());
        }
        let response = http.get(server.url(&path)).header(COOKIE, cookie).send();
        let html = response.await.expect("page").text().await.expect("body");
        listed += html.matches("<tr><td><a href=\"/ui/commands/").count();
        let Some(start) = html.find("<a href=\"?before=") else {
            break;
        };
        let cursor = &html[start + 17..];
        let cursor = &cursor[..cursor.find('"').expect("a quoted link")];
        path = format!("/ui/projects/history?before={cursor}");
    }
    (deep.unwrap_or(path), target, listed)
}

/// Queues `n` commands in `project` for a provider that does not exist and waits until the
/// worker has failed the last one.
async fn fill_history(server: &TestServer, project: &ProjectId, n: usize) {
    let queue = &server.server().state().stores.queue;
    let mut last = None;
    for i in 0..n {
        let command = NewCommand {
            project_id: project.clone(),
            provider: ProviderName::parse("absent").expect("valid name"),
            request: AgentRequest::new(format!("command {i}")),
            idempotency_key: None,
            submitted_by: "bench".into(),
        };
        last = Some(queue.enqueue(command).await.expect("enqueue").command.id);
    }
    let last = last.expect("at least one command");
    server
        .finished_within(last.as_str(), Duration::from_secs(1800))
        .await;
}

/// A running `sleep` of the shell provider with `n` output events appended, then cancelled;
/// its id and stream URL.
async fn big_stream(server: &TestServer, n: usize) -> (CommandId, String) {
    let submitted = server.submit("big", "shell", "sleep 600").await;
    let id = submitted["command_id"].as_str().expect("id").to_owned();
    let stream_url = submitted["stream_url"].as_str().expect("url").to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.command(&id).await["status"] != "running" {
        assert!(Instant::now() < deadline, "the sleep never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let command = CommandId::parse(&id).expect("command id");
    let events = &server.server().state().stores.events;
    for i in 0..n {
        let line = StreamEvent::Agent(AgentEvent::Output {
            stream: OutputStream::Stdout,
            text: format!("line {i}: \u{1b}[32mok\u{1b}[0m the quick brown fox\n"),
        });
        events.append(&command, &line).await.expect("append");
    }
    let (status, body) = server.cancel(&id).await;
    assert!(status.is_success(), "{body}");
    server.finished_within(&id, Duration::from_secs(120)).await;
    (command, stream_url)
}

/// Reads the command's whole event stream as the page's script does; time and bytes.
async fn replay(server: &TestServer, cookie: &str, stream_url: &str) -> (Duration, usize) {
    let started = Instant::now();
    let response = client()
        .get(server.url(stream_url))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("stream");
    assert!(response.status().is_success(), "{}", response.status());
    let size = response.bytes().await.expect("stream body").len();
    (started.elapsed(), size)
}

/// Opens the command page in Chromium, waits for its `done` block; the time it took and
/// the page's JS heap and DOM node count then.
async fn in_browser(server: &TestServer, id: &CommandId) -> Option<(Duration, Value)> {
    let browser = Browser::start().await?;
    browser.goto(&server.url("/ui/login")).await;
    browser.type_into("#token", &server.admin).await;
    browser.click("#sign-in").await;
    browser.wait_for("#projects").await;
    browser.cdp("Performance.enable", json!({})).await;
    let started = Instant::now();
    browser
        .goto(&server.url(&format!("/ui/commands/{id}")))
        .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while browser.find(".ev.done").await.is_none() {
        assert!(Instant::now() < deadline, "the page never showed the end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = started.elapsed();
    let metrics = browser.cdp("Performance.getMetrics", json!({})).await;
    Some((shown, metrics))
}

fn metric(metrics: &Value, name: &str) -> f64 {
    metrics["metrics"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == name))
        .and_then(|m| m["value"].as_f64())
        .unwrap_or(f64::NAN)
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let commands = env_count("RDEV_BENCH_COMMANDS", 10_000);
    let events = env_count("RDEV_BENCH_EVENTS", 50_000);
    let server = TestServer::sqlite().await;
    let project = ProjectId::parse("history").expect("valid id");
    let (status, body) = server
        .admin_call(Method::POST, "/projects", Some(json!({"id": "history"})))
        .await;
    assert!(status.is_success(), "{body}");

    let seeding = Instant::now();
    fill_history(&server, &project, commands).await;
    let (big, stream_url) = big_stream(&server, events).await;
    println!(
        "seeded {commands} commands and {events} events in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let cookie = sign_in(&server).await;
    let (first, first_size) = page(&server, &cookie, "/ui/projects/history").await;
    // The pager's `Older` links (keyset cursors) walked to the end: every command is
    // reached; the page after the first 9,000 (or the last, for a smaller history) is timed.
    let (deep_path, skipped, walked) = walk_pages(&server, &cookie, commands).await;
    assert_eq!(walked, commands, "the pager reaches every command");
    let (last, last_size) = page(&server, &cookie, &deep_path).await;
    let (command, command_size) = page(&server, &cookie, &format!("/ui/commands/{big}")).await;
    let (stream, stream_size) = replay(&server, &cookie, &stream_url).await;

    println!("dashboard with history, SQLite, p50 of {SAMPLES} GETs on loopback");
    println!("| page | time | transfer |");
    println!("|---|---|---|");
    println!(
        "| project, {commands} commands, first page | {:.2} ms | {:.1} KiB |",
        ms(first),
        kib(first_size)
    );
    println!(
        "| project, the page after {skipped} commands (cursor) | {:.2} ms | {:.1} KiB |",
        ms(last),
        kib(last_size)
    );
    println!(
        "| command of {events} events: HTML | {:.2} ms | {:.1} KiB |",
        ms(command),
        kib(command_size)
    );
    println!(
        "| command of {events} events: its event stream (one read) | {:.0} ms | {:.1} KiB |",
        ms(stream),
        kib(stream_size)
    );
    match in_browser(&server, &big).await {
        Some((shown, metrics)) => println!(
            "Chromium: navigation to the end shown {:.0} ms; JS heap used {:.1} MiB of {:.1} MiB; \
             {} DOM nodes",
            ms(shown),
            metric(&metrics, "JSHeapUsedSize") / 1048576.0,
            metric(&metrics, "JSHeapTotalSize") / 1048576.0,
            metric(&metrics, "Nodes"),
        ),
        None => println!("Chromium: not installed, browser row skipped"),
    }
    server.stop().await;
}
