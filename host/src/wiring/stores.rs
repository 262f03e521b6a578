//! Opening the database with the master key, the same way for every subcommand: the data
//! directory is created, the key is read (`RDEV_MASTER_KEY`, else `<data-dir>/master.key`,
//! generated on first use) and the URL picks the database.

use anyhow::Context as _;

use super::config::Config;
use crate::adapters::store::{StoreOptions, connect, load_master_key};
use crate::ports::Stores;

/// Opens the configured database with the master key.
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let master_key = load_master_key(&config.data_dir.join("master.key"))?;
    let url = config.database_url();
    connect(
        &url,
        StoreOptions {
            queue: config.queue.clone(),
            master_key,
        },
    )
    .await
    .with_context(|| format!("opening the database {}", redact_url(&url)))
}

/// Applies the embedded migrations to the configured database; returns which adapter ran
/// them.
pub async fn migrate(config: &Config) -> anyhow::Result<&'static str> {
    let url = config.database_url();
    crate::adapters::store::migrate(&url)
        .await
        .with_context(|| format!("migrating the database {}", redact_url(&url)))
}

/// The URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_stay_out_of_logs() {
        assert_eq!(
            redact_url("postgres://me:s3cret@db:5432/rdev"),
            "postgres://me:***@db:5432/rdev"
        );
        assert_eq!(
            redact_url("sqlite://rdev-data/rdev.db"),
            "sqlite://rdev-data/rdev.db"
        );
    }
}
