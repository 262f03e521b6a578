//! Agent CLIs installed from npm, cached between runs under `~/.cache/rdev-npm`.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// Installs `package@version` (once; later calls reuse the cache) and returns the path of
/// its executable `bin` (as found in `node_modules/.bin`). `Err` carries the reason npm
/// failed, for [`super::skip_or_fail`].
pub fn install(package: &str, version: &str, bin: &str) -> Result<PathBuf, String> {
    let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_owned())?;
    let prefix = PathBuf::from(home)
        .join(".cache/rdev-npm")
        .join(format!("{}@{version}", package.replace('/', "+")));
    let binary = prefix.join("node_modules/.bin").join(bin);
    std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    let lock = File::create(prefix.join(".install.lock")).map_err(|e| e.to_string())?;
    lock.lock()
        .map_err(|e| format!("locking the npm cache: {e}"))?;
    if binary.exists() {
        return Ok(binary);
    }
    let output = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("{package}@{version}"))
        .output()
        .map_err(|e| format!("running npm: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "npm install {package}@{version} failed ({}): {tail}",
            output.status
        ));
    }
    if !binary.exists() {
        return Err(format!(
            "npm installed {package}@{version} but {} is missing",
            binary.display()
        ));
    }
    Ok(binary)
}
