//! Building the `rdev` executable and finding where cargo put it, wherever the target dir is
//! configured.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming an already built `rdev`; `cargo xtask test` sets it so that
/// test processes do not each invoke cargo.
pub const RDEV_BIN_ENV: &str = "RDEV_BIN";

/// Builds `rdev` (a no-op when it is up to date) and returns a copy of it inside this
/// checkout (`target/bin/rdev`).
///
/// The copy matters when several checkouts (worktrees) share one `CARGO_TARGET_DIR`: cargo
/// puts every checkout's `rdev` at the same path, so a test run pointed at cargo's file would
/// run whichever checkout built last.
pub fn build_rdev(root: &Path) -> Result<PathBuf> {
    let built = cargo_build_rdev(root)?;
    let dir = root.join("target/bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The sandbox helper lives beside rdev, where the local executor looks for it.
    let helper = built.with_file_name(SANDBOX_HELPER);
    copy_fresh(&helper, &dir.join(SANDBOX_HELPER))?;
    let copy = dir.join("rdev");
    copy_fresh(&built, &copy)?;
    Ok(copy)
}

/// The small binary that confines itself inside a sandbox and execs the command.
pub const SANDBOX_HELPER: &str = "rdev-sandbox-exec";

/// Copies `built` to `copy` (atomically) unless the copy is already fresh.
fn copy_fresh(built: &Path, copy: &Path) -> Result<()> {
    if is_fresh_copy(built, copy) {
        return Ok(());
    }
    let partial = copy.with_file_name(format!(".copy.{}", std::process::id()));
    std::fs::copy(built, &partial)
        .with_context(|| format!("copying {} to {}", built.display(), partial.display()))?;
    std::fs::rename(&partial, copy)
        .with_context(|| format!("renaming {} to {}", partial.display(), copy.display()))
}

/// Whether `copy` was made from `built` as it is now (same size, not older).
fn is_fresh_copy(built: &Path, copy: &Path) -> bool {
    let (Ok(built), Ok(copy)) = (std::fs::metadata(built), std::fs::metadata(copy)) else {
        return false;
    };
    match (built.modified(), copy.modified()) {
        (Ok(b), Ok(c)) => built.len() == copy.len() && c >= b,
        _ => false,
    }
}

/// Runs `cargo build` for the `rdev` binary and returns the executable's path as cargo
/// reports it.
fn cargo_build_rdev(root: &Path) -> Result<PathBuf> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--package",
            "rdev",
            "--package",
            "rdev-sandbox-exec",
            "--bins",
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
    executable_of(&output.stdout, "rdev")
}

/// The executable of binary target `name` in the JSON messages (`--message-format=json`)
/// `cargo build` printed.
pub fn executable_of(messages: &[u8], name: &str) -> Result<PathBuf> {
    String::from_utf8_lossy(messages)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo build reported no {name} executable"))
}
