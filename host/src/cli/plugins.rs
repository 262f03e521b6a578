//! What every plugin-loading command shares: where the plugins are, and starting a registry
//! over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::domain::ProviderName;
use crate::ports::{Executor, SecretResolver};
use crate::registry::{Registry, RegistryOptions};
use crate::runtime::{Runtime, RuntimeConfig};

/// Where the installed plugins (`<name>.wasm` + `<name>.toml`) are.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginsArgs {
    /// Plugins directory. Default: `target/plugins` under the current directory when it
    /// exists, else `plugins` beside the rdev binary or its parent directory.
    #[arg(long, env = "RDEV_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
}

impl PluginsArgs {
    /// The directory to load, which must exist.
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.plugins_dir {
            if !dir.is_dir() {
                bail!("plugins directory {} does not exist", dir.display());
            }
            return Ok(dir.clone());
        }
        let mut candidates = vec![PathBuf::from("target/plugins")];
        if let Some(bin_dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            candidates.push(bin_dir.join("plugins"));
            if let Some(parent) = bin_dir.parent() {
                candidates.push(parent.join("plugins"));
            }
        }
        candidates
            .iter()
            .find(|dir| dir.is_dir())
            .cloned()
            .with_context(|| {
                format!(
                    "no plugins directory found (tried {}); build the plugins with `cargo xtask plugins` or pass --plugins-dir",
                    candidates
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Compiled components are cached per user, so repeated CLI runs skip compilation:
/// `RDEV_CACHE_DIR`, else `$XDG_CACHE_HOME/rdev`, else `$HOME/.cache/rdev`.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RDEV_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("rdev"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/rdev"))
}

/// A runtime over `executor` and a registry of the plugins in `plugins_dir`; with `only`,
/// of that one plugin alone (the others are neither compiled nor listed).
pub async fn start_registry(
    plugins_dir: PathBuf,
    executor: Arc<dyn Executor>,
    secrets: Arc<dyn SecretResolver>,
    cancel_grace: Option<Duration>,
    only: Option<ProviderName>,
) -> Result<Registry> {
    let mut config = RuntimeConfig::new(executor, secrets);
    config.cache_dir = cache_dir();
    if let Some(grace) = cancel_grace {
        config.cancel_grace = grace;
    }
    let runtime = Runtime::new(config).context("starting the plugin runtime")?;
    let options = RegistryOptions {
        only: only.map(|name| vec![name]),
        ..RegistryOptions::default()
    };
    Registry::start_with(runtime, plugins_dir.clone(), options)
        .await
        .with_context(|| format!("loading plugins from {}", plugins_dir.display()))
}
