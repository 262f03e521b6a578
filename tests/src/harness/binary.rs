//! The `rdev` binary, built once per test process through cargo (which serializes
//! concurrent builds itself), for tests that run rdev as a real subprocess.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn build() -> Result<PathBuf, String> {
    let root = xtask::workspace_root();
    let output = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "rdev",
            "--bin",
            "rdev",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building rdev failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "rdev")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo reported no rdev executable".to_owned())
}

/// Path of the freshly built `rdev` binary. Panics when it cannot be built.
pub fn rdev_binary() -> PathBuf {
    match BINARY.get_or_init(build) {
        Ok(path) => path.clone(),
        Err(error) => panic!("{error}"),
    }
}
