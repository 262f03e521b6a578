//! The real `claude` CLI, installed from npm and pointed at a fake Messages API.

use std::path::{Path, PathBuf};

/// The `@anthropic-ai/claude-code` version the tests pin (and the fixtures were captured with).
pub const CLI_VERSION: &str = "2.1.331";

/// Installs the pinned CLI (cached) and returns its executable.
pub fn install() -> Result<PathBuf, String> {
    super::npm::install("@anthropic-ai/claude-code", CLI_VERSION, "claude")
}

/// Stores the credentials that point the CLI at `fake` in `server`'s credential store:
/// `ANTHROPIC_API_KEY` (`api_key`) and `ANTHROPIC_BASE_URL`.
pub async fn store_credentials(
    server: &super::server::TestServer,
    fake: &crate::doubles::anthropic::FakeAnthropic,
    api_key: &str,
) {
    server.put_credential("ANTHROPIC_API_KEY", api_key).await;
    server
        .put_credential("ANTHROPIC_BASE_URL", &fake.base_url())
        .await;
}

/// The environment that keeps the CLI talking only to `base_url` (the fake API) with a
/// throwaway `home`: no telemetry, no auto-update, no error reporting, bounded retries.
pub fn env(base_url: &str, home: &Path) -> Vec<(String, String)> {
    [
        ("ANTHROPIC_BASE_URL", base_url),
        ("ANTHROPIC_API_KEY", "dummy"),
        ("HOME", &home.to_string_lossy()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("CLAUDE_CODE_MAX_RETRIES", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
