//! Building the `rdev` executable and finding where cargo put it, wherever the target dir is
//! configured.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming an already built `rdev`; `cargo xtask test` sets it so that
/// test processes do not each invoke cargo.
pub const RDEV_BIN_ENV: &str = "RDEV_BIN";

/// Builds `rdev` (a no-op when it is up to date) and returns the executable's path as
/// cargo reports it.
pub fn build_rdev(root: &Path) -> Result<PathBuf> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--package",
            "rdev",
            "--bin",
            "rdev",
            "--message-format=json",
        ])
        .output()
        .context("running cargo build for rdev")?;
    if !output.status.success() {
        bail!(
            "building rdev failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "rdev")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo build reported no rdev executable")
}
