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
use crate::wiring::{DEFAULT_DATA_DIR, default_plugins_dir, plugins_dir_candidates};

/// Where the installed plugins (`<name>.wasm` + `<name>.toml`) are.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginsArgs {
    /// Plugins directory [default: `target/plugins` when it exists (a source checkout), else
    /// `plugins` beside the rdev binary or beside its directory, else `<data-dir>/plugins`; the
    /// same rule as `rdev serve`].
    #[arg(long, env = "RDEV_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// rdev's data directory, whose `plugins` directory is the last default; `rdev exec`
    /// keeps its sandbox's state there too, as `rdev serve` does [default: ./rdev-data].
    #[arg(long, env = "RDEV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
        let candidates = plugins_dir_candidates(self.data_dir());
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

    /// The directory `rdev plugins install` writes into: the one in effect, or
    /// `<data-dir>/plugins` when there is none yet (created), where `rdev serve` looks last.
    pub fn resolve_or_create(&self) -> Result<PathBuf> {
        let dir = match &self.plugins_dir {
            Some(dir) => dir.clone(),
            None => default_plugins_dir(self.data_dir()),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the plugins directory {}", dir.display()))?;
        Ok(dir)
    }

    fn data_dir(&self) -> &Path {
        self.data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
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
