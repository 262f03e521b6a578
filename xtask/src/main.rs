//! `cargo xtask …`: the project's automation entry point.

use anyhow::Result;
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
}

fn main() -> Result<()> {
    let layout = Layout::new(xtask::workspace_root());
    match Cli::parse().command {
        Task::Plugins => {
            for path in plugins::build(&layout)? {
                println!("installed {}", path.display());
            }
        }
    }
    Ok(())
}
