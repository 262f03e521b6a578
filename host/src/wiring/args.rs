//! The command-line groups the subcommands share, each flag with its `RDEV_*` variable, so
//! one setting has one name everywhere: flag `--x-y`, variable `RDEV_X_Y`, file key `x_y`.

use std::path::PathBuf;

use clap::Args;

use super::executor::ExecutorKind;
use super::kubernetes::KubernetesArgs;

/// Where rdev keeps its state; every subcommand that opens the database takes these.
#[derive(Debug, Default, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file; flags and RDEV_* variables win over it, it wins over the
    /// defaults (see docs/configuration.md).
    #[arg(long, env = "RDEV_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Database (SQLite by default), master key, caches and project workspaces
    /// [default: ./rdev-data].
    #[arg(long, env = "RDEV_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…` [default: SQLite at <data-dir>/rdev.db].
    #[arg(long, env = "RDEV_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

/// Where commands run; every subcommand that runs or provisions workspaces takes these.
#[derive(Debug, Default, Clone, Args)]
pub struct ExecutorArgs {
    /// Where commands run [default: local].
    #[arg(long, env = "RDEV_EXECUTOR", value_enum)]
    pub executor: Option<ExecutorKind>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
}

/// What a process that claims queued commands needs: `rdev serve` and `rdev worker`.
#[derive(Debug, Default, Clone, Args)]
pub struct RunnerArgs {
    /// Directory of `<name>.toml` + `<name>.wasm` plugins
    /// [default: target/plugins if present, else <data-dir>/plugins].
    #[arg(long, env = "RDEV_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Commands this process runs at once [default: 4].
    #[arg(long, env = "RDEV_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Running commands per project; 0 removes the limit [default: 1].
    #[arg(long, env = "RDEV_MAX_RUNNING_PER_PROJECT")]
    pub max_running_per_project: Option<u32>,
}
