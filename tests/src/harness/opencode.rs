//! The real `opencode` server, installed from npm and configured to use a fake
//! OpenAI-compatible chat-completions API.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `opencode-ai` version the tests pin (and the fixtures were captured with).
pub const VERSION: &str = "1.18.33";
/// The provider id the throwaway configuration declares.
pub const PROVIDER: &str = "fake";
/// The model id inside that provider.
pub const MODEL: &str = crate::doubles::openai::MODEL;

/// Installs the pinned `opencode-ai` (cached) and returns its executable. Its Linux binary
/// comes as the optional dependency `opencode-linux-x64`; when npm skipped it, it is installed
/// explicitly into the same prefix.
pub fn install() -> Result<PathBuf, String> {
    let bin = super::npm::install("opencode-ai", VERSION, "opencode")?;
    if runs(&bin) {
        return Ok(bin);
    }
    let prefix = bin
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected install layout: {}", bin.display()))?;
    let output = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(prefix)
        .arg(format!("opencode-linux-x64@{VERSION}"))
        .output()
        .map_err(|e| format!("running npm: {e}"))?;
    if !output.status.success() || !runs(&bin) {
        return Err(format!(
            "opencode {VERSION} does not run and installing opencode-linux-x64 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(bin)
}

fn runs(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `opencode serve` on 127.0.0.1:`port` in `workspace`, with only PATH and the throwaway
/// environment of [`env`] (`home`), `password` as its server password, and no terminal
/// output: the server the tests that drive `opencode serve` themselves start.
pub fn serve_command(
    bin: &Path,
    port: u16,
    workspace: &Path,
    home: &Path,
    password: &str,
) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--hostname", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .current_dir(workspace)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env(home))
        .env("OPENCODE_SERVER_PASSWORD", password)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// The `opencode.json` that routes every request of the project to `base_url` (the fake):
/// one provider built on `@ai-sdk/openai-compatible`, one model, every tool allowed without a
/// permission prompt, no sharing, no auto-update.
pub fn config(base_url: &str) -> serde_json::Value {
    serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "model": format!("{PROVIDER}/{MODEL}"),
        "small_model": format!("{PROVIDER}/{MODEL}"),
        "autoupdate": false,
        "share": "disabled",
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "allow"},
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": base_url, "apiKey": "fake-key"},
                "models": {MODEL: {"name": "Fake model"}}
            }
        }
    })
}

/// Writes [`config`] as `dir/opencode.json`.
pub fn write_config(dir: &Path, base_url: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("opencode.json"), config(base_url).to_string())
}

/// The environment that keeps a natively started server inside `home` (HOME and every XDG
/// directory) and quiet: no auto-update, no models.dev fetch.
pub fn env(home: &Path) -> Vec<(String, String)> {
    let sub = |s: &str| home.join(s).to_string_lossy().into_owned();
    vec![
        ("HOME".into(), home.to_string_lossy().into_owned()),
        ("XDG_CONFIG_HOME".into(), sub(".config")),
        ("XDG_DATA_HOME".into(), sub(".local/share")),
        ("XDG_CACHE_HOME".into(), sub(".cache")),
        ("XDG_STATE_HOME".into(), sub(".local/state")),
        ("OPENCODE_DISABLE_AUTOUPDATE".into(), "1".into()),
        ("OPENCODE_DISABLE_MODELS_FETCH".into(), "1".into()),
    ]
}

/// A free port on 127.0.0.1 (bound, then released) for a server the test starts.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
