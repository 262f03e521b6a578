//! `rdev plugins publish|install|list|remove`: shipping plugins through an OCI registry
//! (the wasm-pkg layout plus the plugin's manifest; see docs/plugins.md), and
//! `install --locked`, which reproduces the plugin set a lock file pins.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::plugins::PluginsArgs;
use super::registry_login::{RegistryLogin, credentials_for};
use crate::adapters::oci::OciClient;
use crate::domain::OciReference;
use crate::ports::{ArtifactRegistry, RegistryCredentials};
use crate::services::plugins::lock::{LOCK_FILE, LockFile};
use crate::services::plugins::restore::fetch_locked;
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
        #[command(flatten)]
        login: RegistryLogin,
    },
    /// Install a plugin from an OCI registry into the plugins directory, after showing what
    /// its manifest asks for; a running server's watcher loads it. With --locked, install
    /// every plugin a lock file pins, exactly as pinned.
    Install {
        /// `<registry>/<repository>[:<tag>][@sha256:<digest>]`; a digest pins the manifest.
        #[arg(required_unless_present = "locked", conflicts_with = "locked")]
        reference: Option<String>,
        /// Install what the lock file pins: each reference must still serve the locked
        /// digest, plugins already present as locked are left alone, and the exit status is 1
        /// when any could not be installed.
        #[arg(long)]
        locked: bool,
        /// The lock file to reproduce [default: `rdev-plugins.lock` in the plugins directory].
        #[arg(long, requires = "locked", value_name = "FILE")]
        lock_file: Option<PathBuf>,
        /// Install without asking (scripts).
        #[arg(long)]
        yes: bool,
        /// Plain HTTP to a registry that is not on this machine.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        login: RegistryLogin,
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
            login,
        } => publish(&source, &reference, insecure, &login).await,
        PluginsAction::Install {
            reference,
            locked,
            lock_file,
            yes,
            insecure,
            login,
            plugins,
        } => {
            let explicit = login.explicit()?;
            let installing = Installing {
                registry: OciClient::new(insecure)?,
                explicit,
                yes,
            };
            match reference {
                Some(reference) if !locked => installing.one(&reference, &plugins).await,
                _ => installing.locked(lock_file.as_deref(), &plugins).await,
            }
        }
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

async fn publish(
    source: &Path,
    reference: &str,
    insecure: bool,
    login: &RegistryLogin,
) -> Result<i32> {
    let reference = OciReference::parse(reference)?;
    let credentials = credentials_for(login.explicit()?.as_ref(), &reference.registry)?;
    let (manifest, artifact) = read_local(source)?;
    let digest = OciClient::new(insecure)?
        .push(&reference, &artifact, credentials.as_ref())
        .await?;
    println!(
        "published {} {} as {}",
        manifest.name,
        manifest.version,
        reference.pinned(&digest)
    );
    Ok(0)
}

/// What every install shares: the registry client, the explicit login, whether to ask.
struct Installing {
    registry: OciClient,
    explicit: Option<RegistryCredentials>,
    yes: bool,
}

impl Installing {
    fn credentials(&self, registry: &str) -> Result<Option<RegistryCredentials>> {
        credentials_for(self.explicit.as_ref(), registry)
    }

    /// Shows `fetched` and installs it once confirmed; whether it was installed.
    fn confirm_and_install(&self, fetched: &Fetched, dir: &Path) -> Result<bool> {
        describe(fetched);
        if !self.yes && !confirm()? {
            println!("not installed");
            return Ok(false);
        }
        let entry = PluginsDir::new(dir.to_owned()).install(fetched)?;
        println!(
            "installed {} into {} ({LOCK_FILE}: {}); a running server loads it on its own",
            entry.name,
            dir.display(),
            entry.digest
        );
        Ok(true)
    }

    async fn one(&self, reference: &str, plugins: &PluginsArgs) -> Result<i32> {
        let dir = plugins.resolve_or_create()?;
        let reference = OciReference::parse(reference)?;
        let credentials = self.credentials(&reference.registry)?;
        let fetched = fetch(&self.registry, &reference, credentials.as_ref()).await?;
        Ok(if self.confirm_and_install(&fetched, &dir)? {
            0
        } else {
            1
        })
    }

    /// Every entry of the lock file; the failures are named on stderr and make the exit
    /// status 1, the others are installed all the same.
    async fn locked(&self, lock_file: Option<&Path>, plugins: &PluginsArgs) -> Result<i32> {
        let dir = plugins.resolve_or_create()?;
        let path = lock_file.map_or_else(|| LockFile::path(&dir), Path::to_owned);
        if !path.is_file() {
            bail!("no lock file at {}", path.display());
        }
        let lock = LockFile::read_file(&path)?;
        if lock.plugins.is_empty() {
            bail!("{} pins no plugins", path.display());
        }
        let target = PluginsDir::new(dir.clone());
        let mut failed = Vec::new();
        for entry in &lock.plugins {
            if target.holds(entry) {
                println!("{}: already installed ({})", entry.name, entry.digest);
                continue;
            }
            let outcome = async {
                let registry = OciReference::parse(&entry.reference)?.registry;
                let credentials = self.credentials(&registry)?;
                let fetched = fetch_locked(&self.registry, entry, credentials.as_ref()).await?;
                self.confirm_and_install(&fetched, &dir)
            };
            match outcome.await {
                Ok(true) => {}
                Ok(false) => failed.push(entry.name.clone()),
                Err(error) => {
                    eprintln!("{}: not installed: {error:#}", entry.name);
                    failed.push(entry.name.clone());
                }
            }
        }
        if failed.is_empty() {
            println!(
                "{} plugins as {} pins them",
                lock.plugins.len(),
                path.display()
            );
            return Ok(0);
        }
        eprintln!(
            "{} of {} plugins not installed: {}",
            failed.len(),
            lock.plugins.len(),
            failed.join(", ")
        );
        Ok(1)
    }
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
