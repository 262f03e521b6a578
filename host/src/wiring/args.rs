//! The command-line groups the subcommands share, each flag with its `RDEV_*` variable, so
//! one setting has one name everywhere: flag `--x-y`, variable `RDEV_X_Y`, file key `x_y`.

use std::path::PathBuf;

use clap::Args;

use super::executor::ExecutorKind;
use super::kubernetes::KubernetesArgs;
use crate::adapters::local::ConfinementConfig;
use crate::domain::OnOutputLimit;

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
    /// [default: target/plugins if present, else plugins beside the rdev binary or beside its
    /// directory, else <data-dir>/plugins; the same rule for every subcommand].
    #[arg(long, env = "RDEV_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Commands this process runs at once [default: 4].
    #[arg(long, env = "RDEV_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Running commands per project; 0 removes the limit [default: 1].
    #[arg(long, env = "RDEV_MAX_RUNNING_PER_PROJECT")]
    pub max_running_per_project: Option<u32>,
    #[command(flatten)]
    pub confinement: ConfinementArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Bounds on what one command may store (docs/configuration.md), so one command's output
/// cannot fill the database or the server's memory.
#[derive(Debug, Default, Clone, Args)]
pub struct OutputArgs {
    /// Largest stored event, in bytes of its JSON; larger ones are cut [default: 1048576].
    #[arg(long, env = "RDEV_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Largest total of one command's stored events; later output is dropped
    /// [default: 67108864].
    #[arg(long, env = "RDEV_MAX_OUTPUT_BYTES")]
    pub max_output_bytes: Option<u64>,
    /// Largest result (session id, error, final text and details together) [default: 1048576].
    #[arg(long, env = "RDEV_MAX_RESULT_BYTES")]
    pub max_result_bytes: Option<usize>,
    /// Over a limit: `truncate` (cut, warn, go on) or `fail` (cut, warn, stop the command)
    /// [default: truncate].
    #[arg(long, env = "RDEV_ON_OUTPUT_LIMIT")]
    pub on_output_limit: Option<OnOutputLimit>,
}

/// How the local executor confines commands (docs/sandbox.md).
#[derive(Debug, Default, Clone, Args)]
pub struct ConfinementArgs {
    /// Run commands without the local sandbox, as rdev's own user. Only for hosts that lack
    /// a mechanism the sandbox needs (rdev refuses to start otherwise); logged loudly and
    /// shown on /readyz and GET /providers.
    #[arg(long, env = "RDEV_UNCONFINED")]
    pub unconfined: bool,
    /// A destination commands may also reach (`host`, `host:port`, `*.domain[:port]`),
    /// added to the default allow-list; repeatable, comma-separated in the variable.
    #[arg(long = "allow-host", env = "RDEV_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
}

impl ConfinementArgs {
    /// Flags/environment over the file's `unconfined` and `allow_hosts` (which replaces
    /// the built-in allow-list) over the defaults.
    pub fn resolve(
        self,
        unconfined: Option<bool>,
        allow_hosts: Option<Vec<String>>,
    ) -> ConfinementConfig {
        let mut config = ConfinementConfig {
            unconfined: self.unconfined || unconfined.unwrap_or(false),
            ..ConfinementConfig::default()
        };
        if let Some(hosts) = allow_hosts {
            config.allow_hosts = hosts;
        }
        config.allow_hosts.extend(self.allow_hosts);
        config
    }
}
