//! The real `rdev` binary for tests that drive the CLI: the one `cargo xtask test` built
//! (named by `RDEV_BIN`), else built once per test process.

use std::fs::File;
use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::binary::{RDEV_BIN_ENV, build_rdev};

/// The executable's path. Building is a no-op when it is up to date; a file lock keeps
/// parallel test processes from building at once.
pub fn rdev() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(locate) {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// A finished process's status, stdout and stderr as text, for assertion messages.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A finished process's exit code, stdout and stderr (as text).
pub fn code_and_text(output: &std::process::Output) -> (Option<i32>, String, String) {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// Asserts that a finished process failed and said `expected` (on either stream); its
/// [`output_text`].
pub fn assert_failed_saying(output: &std::process::Output, expected: &str) -> String {
    let said = output_text(output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(expected), "expected {expected:?}: {said}");
    said
}

/// Asserts that a finished process exited with `code` and said `expected` on stderr.
pub fn assert_exit(output: &std::process::Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{expected:?} is not in:\n{stderr}"
    );
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(RDEV_BIN_ENV).map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{RDEV_BIN_ENV}={} is not a file", path.display()))
        };
    }
    let root = xtask::workspace_root();
    let target = root.join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let lock_path = target.join(".rdev-bin-build.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    build_rdev(&root).map_err(|e| format!("{e:#}"))
}
