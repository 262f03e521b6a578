//! `rdev plugins publish|install|list|remove`: shipping plugins through an OCI registry
//! (the wasm-pkg layout plus the plugin's manifest; see docs/plugins.md).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::plugins::PluginsArgs;
use crate::adapters::oci::OciClient;
use crate::domain::OciReference;
use crate::ports::ArtifactRegistry;
use crate::services::plugins::lock::LOCK_FILE;
use crate::services::plugins::{Fetched, PluginsDir, fetch, read_local};

/// `rdev plugins`.
#[derive(Debug, Args)]
pub struct PluginsCommandArgs {
    #[command(subcommand)]
    pub action: PluginsAction,
}

#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// Publish a local plugin (`<name>.wasm` with its `<name>.toml` beside it, or a directory
    /// holding one plugin) to an OCI registry; prints the pinned reference.
    Publish {
        /// The `.wasm` file or the directory.
        source: PathBuf,
        /// `<registry>/<repository>:<tag>`.
        reference: String,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
    },
    /// Install a plugin from an OCI registry into the plugins directory, after showing what
    /// its manifest asks for; a running server's watcher loads it.
    Install {
        /// `<registry>/<repository>[:<tag>][@sha256:<digest>]`; a digest pins the manifest.
        reference: String,
        /// Install without asking (scripts).
        #[arg(long)]
        yes: bool,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        plugins: PluginsArgs,
    },
    /// List the plugins of the plugins directory and where each was installed from.
    List {
        #[command(flatten)]
        plugins: PluginsArgs,
    },
    /// Remove an installed plugin and its lock entry.
    Remove {
        name: String,
        #[command(flatten)]
        plugins: PluginsArgs,
    },
}

pub async fn run(args: PluginsCommandArgs) -> Result<i32> {
    match args.action {
        PluginsAction::Publish {
            source,
            reference,
            insecure,
        } => publish(&source, &reference, insecure).await,
        PluginsAction::Install {
            reference,
            yes,
            insecure,
            plugins,
        } => install(&reference, yes, insecure, &plugins).await,
        PluginsAction::List { plugins } => list(&plugins),
        PluginsAction::Remove { name, plugins } => {
            let dir = plugins.resolve()?;
            PluginsDir::new(dir.clone()).remove(&name)?;
            println!(
                "removed {name} from {} ({LOCK_FILE} updated)",
                dir.display()
            );
            Ok(0)
        }
    }
}

async fn publish(source: &std::path::Path, reference: &str, insecure: bool) -> Result<i32> {
    let reference = OciReference::parse(reference)?;
    let (manifest, artifact) = read_local(source)?;
    let digest = OciClient::new(insecure)?
        .push(&reference, &artifact)
        .await?;
    println!(
        "published {} {} as {}",
        manifest.name,
        manifest.version,
        reference.pinned(&digest)
    );
    Ok(0)
}

async fn install(reference: &str, yes: bool, insecure: bool, plugins: &PluginsArgs) -> Result<i32> {
    let dir = plugins.resolve_or_create()?;
    let reference = OciReference::parse(reference)?;
    let registry = OciClient::new(insecure)?;
    let fetched = fetch(&registry, &reference).await?;
    describe(&fetched);
    if !yes && !confirm()? {
        println!("not installed");
        return Ok(1);
    }
    let entry = PluginsDir::new(dir.clone()).install(&fetched)?;
    println!(
        "installed {} into {} ({LOCK_FILE}: {}); a running server loads it on its own",
        entry.name,
        dir.display(),
        entry.digest
    );
    Ok(0)
}

/// What is about to be installed and what it asks for.
fn describe(fetched: &Fetched) {
    let manifest = &fetched.manifest;
    println!(
        "{} {} (abi {}) from {}",
        manifest.name, manifest.version, manifest.abi, fetched.reference
    );
    println!("manifest digest {}", fetched.pulled.digest);
    println!("component sha256 {}", fetched.component_sha256());
    println!("it asks to:");
    for line in fetched.grants() {
        println!("  {line}");
    }
}

/// Asks on the terminal; without one, refuses and says how to confirm.
fn confirm() -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not installed: confirm with --yes (no terminal to ask on)");
    }
    print!("install it? [y/N] ");
    std::io::stdout().flush().context("writing the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn list(plugins: &PluginsArgs) -> Result<i32> {
    let dir = plugins.resolve()?;
    for plugin in PluginsDir::new(dir).list()? {
        let version = plugin.version.as_deref().unwrap_or("(invalid manifest)");
        let source = match &plugin.locked {
            Some(entry) if plugin.modified => {
                format!("{} {} (modified since)", entry.reference, entry.digest)
            }
            Some(entry) => format!("{} {}", entry.reference, entry.digest),
            None => "(local)".to_owned(),
        };
        println!("{:<16} {:<10} {source}", plugin.name, version);
    }
    Ok(0)
}
