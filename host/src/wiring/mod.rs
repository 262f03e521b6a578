//! The composition root. Every subcommand that opens the database or runs commands builds
//! its parts here from one resolved [`Config`], so `serve`, `worker`, `projects`, `audit`,
//! `exec` and `migrate` read the same sources in the same order, open the database and the
//! master key the same way, and construct the executor in one function
//! ([`build_executor`]).
//!
//! Precedence, highest first (docs/configuration.md):
//! 1. command-line flags,
//! 2. `RDEV_*` environment variables (flag `--x-y` has variable `RDEV_X_Y`),
//! 3. the TOML file named by `--config` / `RDEV_CONFIG` (key `x_y`),
//! 4. the embedded defaults ([`Config::new`]).

pub mod args;
pub mod config;
pub mod executor;
pub mod file;
pub mod kubernetes;
pub mod runner;
pub mod stores;

pub use args::{CommonArgs, ConfinementArgs, ExecutorArgs, RunnerArgs};
pub use config::{Config, DEFAULT_DATA_DIR, default_plugins_dir, plugins_dir_candidates};
pub use executor::{ExecutorKind, LocalUse, Workspaces, build_executor};
pub use file::FileConfig;
pub use kubernetes::{DEFAULT_WORKSPACE_IMAGE, KubernetesArgs, KubernetesServeConfig};
pub use runner::{Runner, spawn_worker, start_registry};
pub use stores::{key_keeper, migrate, open_stores, redact_url};
