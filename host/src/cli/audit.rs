//! `rdev audit verify`: walks the audit trail's hash chain and reports the first broken link,
//! so an operator can check that nobody edited or removed entries.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::adapters::store::{StoreOptions, connect, load_master_key};
use crate::domain::QueueConfig;

use super::migrate::DEFAULT_DATABASE_URL;

/// Arguments of `rdev audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "RDEV_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Data directory (holds the embedded master key file).
    #[arg(
        long,
        env = "RDEV_DATA_DIR",
        default_value = "rdev-data",
        global = true
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// What to do with the audit trail.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain; exits 1 at the first broken link.
    Verify,
}

/// Runs `rdev audit …`.
pub async fn run(args: AuditArgs) -> anyhow::Result<i32> {
    match args.command {
        AuditCommand::Verify => {
            let master_key = load_master_key(&args.data_dir.join("master.key"))?;
            let stores = connect(
                &args.database_url,
                StoreOptions {
                    queue: QueueConfig::default(),
                    master_key,
                },
            )
            .await?;
            let report = stores.audit.verify().await?;
            match report.first_broken {
                None => {
                    println!("audit chain intact: {} entries verified", report.verified);
                    Ok(0)
                }
                Some(broken) => {
                    println!(
                        "audit chain BROKEN after {} good entries: {broken}",
                        report.verified
                    );
                    Ok(1)
                }
            }
        }
    }
}
