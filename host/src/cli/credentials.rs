//! `rdev credentials`: list credential names and rotate the master key on a running server,
//! as the other client commands do. Values never pass through here; a new master key is
//! read from a file, so it sits in neither the shell's history nor the process list.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::client::Connection;

/// Arguments of `rdev credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub action: CredentialsAction,
}

/// What `rdev credentials` does.
#[derive(Debug, Subcommand)]
pub enum CredentialsAction {
    /// List credential names and times (never values).
    List,
    /// Re-encrypt every credential and webhook signing secret under a new master key (admin).
    RotateKey {
        /// File holding the new key, 32 bytes in base64 (`head -c 32 /dev/urandom | base64`).
        /// Required when the server's key comes from RDEV_MASTER_KEY; without it a server
        /// with a key file generates the new key itself.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Runs `rdev credentials …`.
pub async fn run(args: CredentialsArgs) -> anyhow::Result<i32> {
    let connection = &args.connection;
    match args.action {
        CredentialsAction::List => {
            let listed = connection
                .call(reqwest::Method::GET, "/credentials", None)
                .await?;
            for credential in listed["credentials"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} updated {}",
                    text(&credential["name"]),
                    text(&credential["updated_at"])
                );
            }
        }
        CredentialsAction::RotateKey { new_key_file } => {
            let new_key = new_key_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map(|key| key.trim().to_owned())
                        .with_context(|| format!("reading the new key from {}", path.display()))
                })
                .transpose()?;
            let rotated = connection
                .call(
                    reqwest::Method::POST,
                    "/credentials/rotate-key",
                    Some(json!({ "new_key": new_key })),
                )
                .await?;
            println!(
                "re-encrypted {} secrets under the key with fingerprint {}",
                rotated["reencrypted"],
                text(&rotated["fingerprint"])
            );
            if rotated["key_file_updated"] == Value::Bool(true) {
                println!("the server's key file holds the new key; back it up now");
            } else {
                println!("set RDEV_MASTER_KEY to the new key before the server's next start");
            }
        }
    }
    Ok(0)
}
