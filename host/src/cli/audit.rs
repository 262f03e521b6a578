//! `rdev audit verify`: walks the audit trail's hash chain and reports the first broken link,
//! so an operator can check that nobody edited or removed entries; with `--against` it also
//! checks that the chain still reaches a signed checkpoint's head (no newest entries cut).

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::domain::{AnchorFailure, AuditCheckpoint};
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
    Verify {
        /// A checkpoint (`GET /audit/checkpoint`, the `audit.checkpoint` webhook or the
        /// server log): a file path or the JSON itself. Exits 1 when the chain no longer
        /// reaches its head or the checkpoint was not signed by the master key in use.
        #[arg(long)]
        against: Option<String>,
    },
}

/// Reads a checkpoint given as JSON text or as the path of a file holding it.
fn read_checkpoint(against: &str) -> anyhow::Result<AuditCheckpoint> {
    let text = if against.trim_start().starts_with('{') {
        against.to_owned()
    } else {
        std::fs::read_to_string(against)
            .with_context(|| format!("reading the checkpoint file {against}"))?
    };
    serde_json::from_str(&text).context(
        "parsing the checkpoint (expected the JSON of GET /audit/checkpoint: seq, head_hash, \
         at, key_fingerprint, mac)",
    )
}

/// Runs `rdev audit …`.
pub async fn run(args: AuditArgs) -> anyhow::Result<i32> {
    match args.command {
        AuditCommand::Verify { against } => {
            let checkpoint = against.as_deref().map(read_checkpoint).transpose()?;
            let config = Config::resolve_store(&args.common)?;
            let stores = open_stores(&config).await?;
            let Some(checkpoint) = checkpoint else {
                let report = stores.audit.verify().await?;
                return Ok(print_chain(report.verified, report.first_broken.as_ref()));
            };
            let report = stores.audit.verify_against(&checkpoint).await?;
            if let Err(untrusted @ AnchorFailure::Untrusted(_)) = &report.anchor {
                println!("audit checkpoint REFUSED: {untrusted}");
                return Ok(1);
            }
            let chain = print_chain(report.chain.verified, report.chain.first_broken.as_ref());
            match &report.anchor {
                Ok(()) => {
                    println!(
                        "checkpoint at seq {} from {} holds",
                        checkpoint.seq, checkpoint.at
                    );
                    Ok(chain)
                }
                Err(failure) => {
                    println!("{failure}");
                    Ok(1)
                }
            }
        }
    }
}

/// Prints the chain walk's outcome; its exit code.
fn print_chain(verified: u64, broken: Option<&crate::domain::BrokenLink>) -> i32 {
    match broken {
        None => {
            println!("audit chain intact: {verified} entries verified");
            0
        }
        Some(broken) => {
            println!("audit chain BROKEN after {verified} good entries: {broken}");
            1
        }
    }
}
