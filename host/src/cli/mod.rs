//! The `rdev` command line: one file per subcommand, dispatched from here.

use clap::{Parser, Subcommand};

pub mod migrate;
pub mod serve;

/// rdev runs coding agents as sandboxed WebAssembly providers against project workspaces.
#[derive(Debug, Parser)]
#[command(name = "rdev", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Apply database migrations.
    Migrate(migrate::MigrateArgs),
    /// Serve the HTTP API and run queued commands.
    Serve(serve::ServeArgs),
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Version => {
            println!("rdev {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}
