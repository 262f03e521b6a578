//! Building the guest workspace (`plugins/`) into installable plugins: a component and its
//! manifest side by side, named after the manifest's `name`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The guest compilation target; it emits components directly.
pub const TARGET: &str = "wasm32-wasip2";

/// Where the built plugins of one checkout go.
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Installed plugins: what `rdev` loads by default.
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("target/plugins")
    }

    /// Guests that exist only for tests (hostile, slow, versioned); never loaded by default.
    pub fn test_plugins_dir(&self) -> PathBuf {
        self.root.join("target/test-plugins")
    }

    /// Guest builds get their own target dir inside the checkout: they share no artifacts
    /// with the host build, and checkouts never overwrite each other's components.
    fn guest_target_dir(&self) -> PathBuf {
        self.root.join("target/guests")
    }
}

#[derive(serde::Deserialize)]
struct ManifestName {
    name: String,
}

/// Makes sure rustc can build for [`TARGET`], adding it with rustup when it is missing.
pub fn ensure_target() -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("rustup could not add the {TARGET} target ({status})");
    }
    Ok(())
}

/// Builds every guest crate in release mode and installs each crate that has a
/// `manifest.toml`: `plugins/<crate>` into the plugins dir, `plugins/testing/<crate>` into
/// the test-plugins dir. Returns the installed component paths.
pub fn build(layout: &Layout) -> Result<Vec<PathBuf>> {
    ensure_target()?;
    let guests = layout.root.join("plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&guests)
        .env("CARGO_TARGET_DIR", layout.guest_target_dir())
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .status()
        .context("running cargo build for the plugins workspace")?;
    if !status.success() {
        bail!("building the plugins workspace failed ({status})");
    }
    let artifacts = layout.guest_target_dir().join(TARGET).join("release");
    let mut installed = Vec::new();
    for (source_dir, dest) in [
        (guests.clone(), layout.plugins_dir()),
        (guests.join("testing"), layout.test_plugins_dir()),
    ] {
        let Ok(entries) = fs::read_dir(&source_dir) else {
            continue;
        };
        let mut crates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("manifest.toml").is_file())
            .collect();
        crates.sort();
        for crate_dir in crates {
            installed.push(install(&crate_dir, &artifacts, &dest)?);
        }
    }
    Ok(installed)
}

/// Copies one crate's component and manifest into `dest`, atomically per file so a running
/// host that watches `dest` never sees half a component.
fn install(crate_dir: &Path, artifacts: &Path, dest: &Path) -> Result<PathBuf> {
    let manifest_path = crate_dir.join("manifest.toml");
    let manifest_text = fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest: ManifestName = toml::from_str(&manifest_text)
        .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let cargo_toml = crate_dir.join("Cargo.toml");
    let package: toml::Table = toml::from_str(
        &fs::read_to_string(&cargo_toml)
            .with_context(|| format!("reading {}", cargo_toml.display()))?,
    )
    .with_context(|| format!("parsing {}", cargo_toml.display()))?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no package name", cargo_toml.display()))?;
    let component = artifacts.join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !component.is_file() {
        bail!(
            "{} was not built (is the crate a cdylib member of plugins/Cargo.toml?)",
            component.display()
        );
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let wasm_dest = dest.join(format!("{}.wasm", manifest.name));
    // The component first: a watcher reacts to the manifest and must find its component.
    copy_atomically(&component, &wasm_dest)?;
    copy_atomically(
        &manifest_path,
        &dest.join(format!("{}.toml", manifest.name)),
    )?;
    Ok(wasm_dest)
}

fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    if fs::read(from).ok() == fs::read(to).ok() {
        return Ok(());
    }
    let tmp = to.with_extension("tmp-install");
    fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to)
        .with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
    Ok(())
}
