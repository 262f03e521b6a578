//! `cargo xtask …`: the project's automation entry point.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::plugins::{self, Layout};

#[derive(Parser)]
#[command(about = "rdev project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every plugin into target/plugins (and test-only guests into target/test-plugins).
    Plugins,
    /// Build the plugins and rdev, then run rdev with the built plugins (`serve` when no
    /// arguments are given).
    Run {
        /// Arguments passed to `rdev`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: the guests' native unit tests, then the host workspace with nextest
    /// (plain `cargo test` when nextest is not installed).
    Test {
        /// Extra arguments for the test runner (a filter, `--no-fail-fast`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What `cargo xtask run` starts when given no arguments.
const DEFAULT_RUN_ARGS: &[&str] = &["providers"];

fn main() -> Result<ExitCode> {
    let layout = Layout::new(xtask::workspace_root());
    match Cli::parse().command {
        Task::Plugins => {
            for path in plugins::build(&layout)? {
                println!("installed {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { args } => {
            plugins::build(&layout)?;
            let args = if args.is_empty() {
                DEFAULT_RUN_ARGS.iter().map(|a| a.to_string()).collect()
            } else {
                args
            };
            let mut cmd = cargo();
            cmd.current_dir(&layout.root)
                .args(["run", "--quiet", "--package", "rdev", "--"])
                .args(&args)
                .env("RDEV_PLUGINS_DIR", layout.plugins_dir());
            run(cmd, "rdev")
        }
        Task::Test { args } => {
            plugins::build(&layout)?;
            let mut guests = cargo();
            guests
                .current_dir(layout.root.join("plugins"))
                .env("CARGO_TARGET_DIR", layout.root.join("target/guests-native"))
                .args(["test", "--workspace", "--quiet"]);
            let code = run(guests, "guest unit tests")?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            let mut host = cargo();
            host.current_dir(&layout.root);
            if has_nextest() {
                host.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            } else {
                host.args(["test", "--workspace", "--no-fail-fast"]);
            }
            host.args(&args);
            run(host, "host tests")
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `cmd` to completion and turns its exit status into ours.
fn run(mut cmd: Command, what: &str) -> Result<ExitCode> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
