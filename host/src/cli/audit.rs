//! `rdev audit verify`: walks the audit trail's hash chain and reports the first broken link,
//! so an operator can check that nobody edited or removed entries.

use clap::{Args, Subcommand};

use crate::wiring::{CommonArgs, Config, open_stores};

/// Arguments of `rdev audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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
            let config = Config::resolve_store(&args.common)?;
            let stores = open_stores(&config).await?;
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
