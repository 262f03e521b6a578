//! Built plugins for tests, produced by the same code as `cargo xtask plugins`.

use std::fs::File;
use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::plugins::Layout;

fn layout() -> Layout {
    Layout::new(xtask::workspace_root())
}

/// Builds the guest workspace once per test process. Test processes run in parallel, so a
/// file lock makes them wait for one build instead of racing to install.
fn ensure_built() -> &'static Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let layout = layout();
        let lock_path = layout.root.join("target/.plugins-build.lock");
        std::fs::create_dir_all(layout.root.join("target")).map_err(|e| e.to_string())?;
        let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        let result = xtask::plugins::build(&layout)
            .map(|_| ())
            .map_err(|e| format!("building plugins failed: {e:#}"));
        drop(lock);
        result
    })
}

/// The directory of installed plugins (`target/plugins`), built if needed.
pub fn plugins_dir() -> PathBuf {
    if let Err(e) = ensure_built() {
        panic!("{e}");
    }
    layout().plugins_dir()
}

/// The directory of test-only guests (`target/test-plugins`), built if needed.
pub fn test_plugins_dir() -> PathBuf {
    if let Err(e) = ensure_built() {
        panic!("{e}");
    }
    layout().test_plugins_dir()
}

/// A temporary plugins directory with the `interact` test guest (ABI 0.2.0: asks for
/// permission, takes follow-up input) beside the real `shell`.
pub fn with_interact() -> tempfile::TempDir {
    with_test_guest("interact")
}

/// A temporary plugins directory with the test-only guest `name` (from `plugins/testing/`)
/// beside the real `shell`, for a server that runs both.
pub fn with_test_guest(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    super::runtime::install(&test_plugins_dir(), name, dir.path(), name, None);
    super::runtime::install(&plugins_dir(), "shell", dir.path(), "shell", None);
    dir
}

/// `ver` at `version` (the `versioned-v1` test guest) in a temporary directory of its own,
/// as a plugin author has it before publishing it.
pub fn ver_plugin(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugin dir");
    let from = test_plugins_dir();
    super::runtime::install(&from, "versioned-v1", dir.path(), "ver", Some(version));
    dir
}

/// A temporary plugins directory holding the shared ACP component and `manifests` (file
/// name, TOML text): all an operator installs to add ACP agents.
pub fn with_acp(manifests: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("plugins dir");
    let component = dir.path().join("acp.wasm");
    std::fs::copy(plugins_dir().join("acp.wasm"), component).expect("the shared component");
    for (name, text) in manifests {
        std::fs::write(dir.path().join(name), text).expect("manifest");
    }
    dir
}
