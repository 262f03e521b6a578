//! `rdev migrate`: applies the embedded schema migrations to the configured database, so an
//! operator can upgrade the schema before rolling out new replicas.

use clap::Args;

use crate::wiring::{CommonArgs, Config};

/// Arguments of `rdev migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Applies pending migrations and reports which adapter ran them.
pub async fn run(args: MigrateArgs) -> anyhow::Result<i32> {
    let config = Config::resolve_store(&args.common)?;
    let adapter = crate::wiring::migrate(&config).await?;
    println!("migrations applied ({adapter})");
    Ok(0)
}
