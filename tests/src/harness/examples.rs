//! Out-of-tree plugins from `examples/`, built exactly as their READMEs tell a third party
//! to build them.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

use xtask::plugins::TARGET;

/// A built example: its component and its manifest, ready to copy into a plugins dir.
pub struct BuiltExample {
    pub component: PathBuf,
    pub manifest: PathBuf,
}

/// Runs `cargo build --release --target wasm32-wasip2` in `examples/<dir>` (cached in
/// `target/examples`, file-locked against parallel test processes) and returns the
/// component `<crate_name>.wasm` and the crate's `manifest.toml`.
pub fn build(dir: &str, crate_name: &str) -> BuiltExample {
    match try_build(dir, crate_name) {
        Ok(built) => built,
        Err(e) => panic!("{e}"),
    }
}

fn try_build(dir: &str, crate_name: &str) -> Result<BuiltExample, String> {
    xtask::plugins::ensure_target().map_err(|e| format!("{e:#}"))?;
    let root = xtask::workspace_root();
    let crate_dir = root.join("examples").join(dir);
    // Its own target dir: the example is its own workspace, and this keeps its artifacts
    // out of any shared target dir the user's cargo configuration names.
    let target_dir = root.join("target/examples");
    std::fs::create_dir_all(&target_dir).map_err(|e| format!("{}: {e}", target_dir.display()))?;
    let lock_path = target_dir.join(format!(".{dir}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--quiet", "--release", "--target", TARGET])
        .status()
        .map_err(|e| format!("running cargo build in {}: {e}", crate_dir.display()))?;
    if !status.success() {
        return Err(format!(
            "building {} failed ({status})",
            crate_dir.display()
        ));
    }
    let component = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !component.is_file() {
        return Err(format!("{} was not built", component.display()));
    }
    Ok(BuiltExample {
        component,
        manifest: crate_dir.join("manifest.toml"),
    })
}

/// Builds `examples/<dir>` with its documented command, `npm ci && npm run build` (file-locked
/// against parallel test processes; `npm ci` only when `node_modules` is missing or older
/// than `package-lock.json`), and returns `<dir>/<component>` with the example's
/// `manifest.toml`. `Err` carries why npm failed, for [`super::skip_or_fail`].
pub fn build_js(dir: &str, component: &str) -> Result<BuiltExample, String> {
    let example = xtask::workspace_root().join("examples").join(dir);
    let lock_path = example.join(".build.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let npm = |args: &[&str]| -> Result<(), String> {
        let output = Command::new("npm")
            .args(args)
            .current_dir(&example)
            .output()
            .map_err(|e| format!("running npm {args:?}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        Err(format!(
            "npm {args:?} failed ({}): {}",
            output.status,
            tail.join("\n")
        ))
    };
    if !installed_from_lock(&example) {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    npm(&["run", "build"])?;
    Ok(BuiltExample {
        component: example.join(component),
        manifest: example.join("manifest.toml"),
    })
}

/// Whether `npm ci` already installed `dir`'s current lock file: npm records what it installed
/// in `node_modules/.package-lock.json`, written after `package-lock.json` was.
fn installed_from_lock(dir: &std::path::Path) -> bool {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    }
}
