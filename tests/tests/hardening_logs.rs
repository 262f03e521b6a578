//! #21 part 8, guest log hygiene: the real `rdev serve` binary with the hostile test plugin,
//! whose `log` lines must neither flood nor forge the server's log.

use std::time::{Duration, Instant};

use rdev_tests::harness::plugins::with_test_guest;
use rdev_tests::harness::server::ServeProcess;

/// `text` without the terminal colour sequences (`ESC [ … m`) the server's log may carry.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_plugin_can_neither_flood_nor_forge_the_server_log() {
    let plugins = with_test_guest("hostile");
    let serve = ServeProcess::start(plugins.path(), &[]).await;

    let flooded = serve.run_to_end("logs", "hostile", "log-flood 5000").await;
    assert_eq!(flooded["status"], "completed", "{flooded}");
    let forged = "2026-12-06T12:00:00.000000Z  INFO rdev::server: forged-marker";
    let forging = serve
        .run_to_end("logs", "hostile", &format!("log-forge ok\\n{forged}"))
        .await;
    assert_eq!(forging["status"], "completed", "{forging}");

    // The warning is written when the execution's store is dropped, just before the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve.logs().contains("forged-marker") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = without_colours(&serve.logs());
    let written = logs.matches("hostile flood line").count();
    assert!(
        (100..=1000).contains(&written),
        "{written} of 5000 flood lines were logged"
    );
    let warning = logs
        .lines()
        .find(|l| l.contains("guest log lines dropped"))
        .unwrap_or_else(|| panic!("no counted warning:\n{logs}"));
    assert!(
        warning.contains(&format!("dropped={}", 5000 - written)),
        "{warning} after {written} lines written:\n{logs}"
    );
    assert_eq!(logs.matches("guest log lines dropped").count(), 1, "{logs}");
    // The forged text stays inside the plugin's own line, its line break escaped.
    let forged_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("forged-marker"))
        .collect();
    assert_eq!(forged_lines.len(), 1, "{forged_lines:?}");
    assert!(
        !forged_lines[0].starts_with("2026-12-06T12:00:00"),
        "{forged_lines:?}"
    );
    assert!(
        forged_lines[0].contains("ok\\n2026-12-06"),
        "{forged_lines:?}"
    );
}
