//! `rdev migrate`: applies the embedded schema migrations to the configured database, so an
//! operator can upgrade the schema before rolling out new replicas.

use clap::Args;

/// The database URL the rest of rdev also reads; SQLite under `./rdev-data` by default.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://rdev-data/rdev.db";

/// Arguments of `rdev migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "RDEV_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// Applies pending migrations and reports which adapter ran them.
pub async fn run(args: MigrateArgs) -> anyhow::Result<i32> {
    let adapter = crate::adapters::store::migrate(&args.database_url).await?;
    println!("migrations applied ({adapter})");
    Ok(0)
}
