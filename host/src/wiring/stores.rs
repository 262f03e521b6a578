//! Opening the database with the master key, the same way for every subcommand: the data
//! directory is created, the key is read (`RDEV_MASTER_KEY`, else `<data-dir>/master.key`,
//! generated on first use) and the URL picks the database.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::config::Config;
use crate::adapters::store::{KeyFile, StoreOptions, connect, load_master_key, staged_key};
use crate::domain::MasterKey;
use crate::ports::{KeyCheck, KeyKeeper, Stores};

/// `<data-dir>/master.key`, the key file when `RDEV_MASTER_KEY` is not set.
fn key_file(config: &Config) -> PathBuf {
    config.data_dir.join("master.key")
}

/// Where a rotated master key is kept for the next start (the key file, or nothing with
/// `RDEV_MASTER_KEY`).
pub fn key_keeper(config: &Config) -> Arc<dyn KeyKeeper> {
    Arc::new(KeyFile::new(&key_file(config)))
}

/// Opens the configured database with the master key. A rotation a crash interrupted
/// (a staged `master.key.next` left behind) is finished here: the staged key is installed
/// when the stored secrets carry its fingerprint (the rotation committed), else dropped.
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let key_file = key_file(config);
    let master_key = load_master_key(&key_file)?;
    let stores = connect_with(config, master_key).await?;
    let Some(staged) = staged_key(&key_file)? else {
        return Ok(stores);
    };
    let keeper = KeyFile::new(&key_file);
    let check = stores
        .credentials
        .check_key()
        .await
        .context("checking an interrupted master key rotation")?;
    match check {
        KeyCheck::SealedWithOther { fingerprint, .. } if fingerprint == staged.fingerprint() => {
            tracing::warn!(
                %fingerprint,
                "finishing an interrupted master key rotation: installing the staged key"
            );
            keeper.install()?;
            drop(stores);
            connect_with(config, staged).await
        }
        _ => {
            tracing::warn!("dropping the key staged by a master key rotation that never committed");
            keeper.abandon();
            Ok(stores)
        }
    }
}

async fn connect_with(config: &Config, master_key: MasterKey) -> anyhow::Result<Stores> {
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
