//! #21 part 5: bounded output. A real `rdev serve` (SQLite and PostgreSQL) with small output
//! limits runs the real `shell` provider (`yes` floods) and the `hostile` test guest (one huge
//! event, one huge result): what is stored stays within the limits, a `warning` event says
//! what was cut, the command goes on or fails per `on_output_limit`, and a list of commands
//! carries previews, not whole prompts and results.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use rdev::domain::{OnOutputLimit, OutputLimits};
use rdev::server::ServeConfig;
use rdev_tests::harness::Database as Db;
use rdev_tests::harness::plugins::with_test_guest;
use rdev_tests::harness::server::{SseEvent, TestServer};
use rdev_tests::on_both_databases;

/// Generous: a command runs a real plugin and the machine may be loaded.
const WAIT: Duration = Duration::from_secs(90);

const KIB: usize = 1024;

fn limits(on_limit: OnOutputLimit) -> OutputLimits {
    OutputLimits {
        max_event_bytes: 16 * KIB,
        max_output_bytes: 256 * KIB as u64,
        max_result_bytes: 8 * KIB,
        on_limit,
    }
}

/// A server with `hostile` and `shell`, and these output limits.
async fn host(db: Db, output: OutputLimits) -> Option<TestServer> {
    let adjust = move |config: &mut ServeConfig| {
        config.worker.output = output;
    };
    TestServer::with_plugins(db, with_test_guest("hostile"), adjust).await
}

/// The raw body of a list of `project`'s commands.
async fn list_body(host: &TestServer, project: &str) -> String {
    let response = host
        .request(
            Method::GET,
            &format!("/projects/{project}/commands?limit=500"),
            Some(&host.admin),
        )
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("list body")
}

/// The messages of the stream's `warning` events.
fn warnings(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some("warning"))
        .map(|e| e.json()["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts that one of the stream's warnings says `part`; all of them.
fn assert_warned(events: &[SseEvent], part: &str) -> Vec<String> {
    let warnings = warnings(events);
    let said = warnings.iter().any(|w| w.contains(part));
    assert!(said, "no warning says {part:?}: {warnings:?}");
    warnings
}

/// Bytes stored as events of `kind` (each event's JSON, as the stream replays it).
fn stored(events: &[SseEvent], kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some(kind))
        .map(|e| e.data.len())
        .sum()
}

async fn a_flood_is_cut_at_the_command_limit_and_the_command_goes_on(db: Db) {
    let Some(host) = host(db, limits(OnOutputLimit::Truncate)).await else {
        return;
    };
    // 8 MB: 32 times the limit.
    let (events, command) = host
        .run_within("flood", "shell", "yes | head -c 8000000", WAIT)
        .await;
    assert_eq!(command["status"], "completed", "{command}");
    let output = stored(&events, "output");
    assert!(
        output <= 256 * KIB && output > 128 * KIB,
        "stored {output} bytes of output"
    );
    let warnings = assert_warned(
        &events,
        "max_output_bytes (262144); further output is dropped",
    );
    let summary = warnings
        .iter()
        .find(|w| w.starts_with("output limits:"))
        .unwrap_or_else(|| panic!("a summary with counts: {warnings:?}"));
    assert!(summary.contains("event(s) dropped"), "{summary}");
    assert!(
        warnings.len() <= 3,
        "a few warnings, not one per event: {warnings:?}"
    );
}

async fn a_flood_under_fail_stops_the_command(db: Db) {
    let Some(host) = host(db, limits(OnOutputLimit::Fail)).await else {
        return;
    };
    // Endless: only the limit ends it (before, it ran until its 30-minute timeout).
    let (events, command) = host.run_within("flood", "shell", "yes", WAIT).await;
    assert_eq!(command["status"], "failed", "{command}");
    let error = command["error"].as_str().unwrap_or_default();
    assert!(error.contains("output limit"), "{command}");
    assert!(stored(&events, "output") <= 256 * KIB);
    assert_warned(&events, "the command is stopped");
}

async fn a_huge_event_is_cut_to_the_event_limit(db: Db) {
    let Some(host) = host(db, limits(OnOutputLimit::Truncate)).await else {
        return;
    };
    let (events, command) = host
        .run_within("big", "hostile", "big-event 4000000", WAIT)
        .await;
    assert_eq!(command["status"], "completed", "{command}");
    let message = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message"))
        .expect("the message is kept, cut");
    assert!(
        message.data.len() <= 16 * KIB && message.data.len() > 15 * KIB,
        "{} bytes",
        message.data.len()
    );
    assert_warned(&events, "1 event(s) cut to max_event_bytes (16384)");
}

async fn a_huge_result_is_cut_and_lists_show_previews(db: Db) {
    let Some(host) = host(db, limits(OnOutputLimit::Truncate)).await else {
        return;
    };
    let (events, command) = host
        .run_within("big", "hostile", "big-result 3000000", WAIT)
        .await;
    assert_eq!(command["status"], "completed", "{command}");
    let result = &command["result"];
    let whole = result.to_string().len();
    assert!(whole <= 9 * KIB, "the stored result is {whole} bytes");
    assert!(
        result["final_text"]
            .as_str()
            .is_some_and(|t| t.len() > 7 * KIB),
        "the final text comes first: {}",
        result["final_text"].as_str().map_or(0, str::len)
    );
    let warnings = warnings(&events);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("max_result_bytes (8192)")
                && w.contains("final_text cut from 3000000 to")),
        "{warnings:?}"
    );
    let done = events.last().expect("done").json();
    assert!(
        done.to_string().len() <= 10 * KIB,
        "the done event is bounded"
    );

    // A long prompt (just under the 1 MiB submission limit) and the cut result: the list
    // carries previews, the single-command view has everything.
    let long = format!("echo {}", "p".repeat(1000 * KIB));
    let (_, long_command) = host.run_within("big", "hostile", &long, WAIT).await;
    assert_eq!(
        long_command["prompt"].as_str().map(str::len),
        Some(long.len())
    );
    let body = list_body(&host, "big").await;
    assert!(
        body.len() < 16 * KIB,
        "the list answer is {} bytes",
        body.len()
    );
    let list: Value = serde_json::from_str(&body).expect("JSON");
    let commands = list["commands"].as_array().expect("commands");
    assert_eq!(commands.len(), 2, "{list}");
    for listed in commands {
        assert_eq!(listed["truncated"], true, "{listed}");
    }
    assert!(
        commands[0]["prompt"]
            .as_str()
            .is_some_and(|p| long.starts_with(p) && p.len() == 1024),
        "{}",
        commands[0]["prompt"]
    );
    let listed_text = commands[1]["result"]["final_text"].as_str().map(str::len);
    assert_eq!(listed_text, Some(1024), "{}", commands[1]);
    let single = host.command(commands[1]["id"].as_str().expect("id")).await;
    assert_eq!(single["truncated"], false);
    assert_eq!(
        single["result"], command["result"],
        "GET /commands/{{id}} has it whole"
    );
}

on_both_databases!(
    a_flood_is_cut_at_the_command_limit_and_the_command_goes_on,
    a_flood_under_fail_stops_the_command,
    a_huge_event_is_cut_to_the_event_limit,
    a_huge_result_is_cut_and_lists_show_previews,
);
