//! The one way the composition root builds the local executor: confined when this host has
//! every mechanism the sandbox needs, refused with the reason when it lacks one, and
//! unconfined only when the operator asked for it, which is logged loudly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sandbox::{HELPER_NAME, Limits, SandboxError, inside, instance_name};
use super::{LocalExecutor, ProcessTracker, Sandbox, SandboxConfig, WorkspaceLayout};
use crate::domain::network::{RuleError, parse_allow_list};
use crate::ports::{Confinement, NetworkPolicyStore, SecretResolver};

/// The hosts the bundled providers' agent CLIs talk to: Anthropic's API (claude) and the
/// model APIs OpenCode is usually configured with.
pub const DEFAULT_ALLOW_HOSTS: &[&str] = &[
    "api.anthropic.com:443",
    "api.openai.com:443",
    "openrouter.ai:443",
];

/// How the operator configured confinement (`--unconfined`, `--allow-host`, the config
/// file's `unconfined` and `allow_hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfinementConfig {
    /// Run commands unconfined, even on a host that could confine them.
    pub unconfined: bool,
    /// Destinations every project may reach unless its own network policy says otherwise
    /// (`host`, `host:port`, `*.domain[:port]`).
    pub allow_hosts: Vec<String>,
    /// Per-command process, memory and CPU limits.
    pub limits: Limits,
    /// The `rdev-sandbox-exec` helper; `None`: beside this binary (or one directory up, as
    /// for test binaries in `deps/`), else on PATH.
    pub helper: Option<PathBuf>,
}

impl Default for ConfinementConfig {
    fn default() -> Self {
        Self {
            unconfined: false,
            allow_hosts: DEFAULT_ALLOW_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            limits: Limits::default(),
            helper: None,
        }
    }
}

/// Why the local executor was not built.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(
        "{0}. Commands would run unconfined, as rdev's own user; start with --unconfined \
         (RDEV_UNCONFINED=true, or `unconfined = true` in the config file) to accept that"
    )]
    Refused(SandboxError),
    #[error("the egress allow-list: {0}")]
    Rule(#[from] RuleError),
    #[error("creating rdev's data directory {}: {source}", .path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A fixed workspace (`rdev exec --dir`) around the data dir would bind it, writable,
    /// into every sandbox.
    #[error(
        "the workspace {} holds rdev's data directory {}: its commands could read and change \
         rdev's database, master key and other workspaces. Choose a directory outside it, or \
         another data directory (--data-dir, RDEV_DATA_DIR)",
        .workspace.display(),
        .private.display()
    )]
    PrivateInWorkspace {
        workspace: PathBuf,
        private: PathBuf,
    },
}

/// The local executor with `layout`, and what confines it. `private` is rdev's data
/// directory: never visible to commands; the sandbox keeps its own files in
/// `<private>/sandbox`. `policies` holds projects' own allow-lists (none: the default for
/// every project).
pub fn build_local_executor(
    layout: WorkspaceLayout,
    private: &Path,
    secrets: Arc<dyn SecretResolver>,
    config: &ConfinementConfig,
    policies: Option<Arc<dyn NetworkPolicyStore>>,
) -> Result<(LocalExecutor, Confinement), ConfineError> {
    if !config.unconfined {
        refuse_private_in_workspace(&layout, private)?;
    }
    let executor = LocalExecutor::new(layout, secrets);
    if config.unconfined {
        tracing::warn!(
            "!!! commands run UNCONFINED (--unconfined): every command runs as rdev's own user \
             and can read rdev's database, master key and every project's workspace !!!"
        );
        // No PID namespace ends a command's processes: track each command's whole tree.
        let tracker = ProcessTracker::detect(&instance_name(private));
        let reaped = tracker.reap_all();
        tracing::info!(
            tracking = tracker.mechanism(),
            reaped,
            "every unconfined command's processes are tracked and killed with it"
        );
        let mut confinement = Confinement::unconfined(Vec::new());
        confinement.enforced = vec![format!(
            "process tree killed with its command ({})",
            tracker.mechanism()
        )];
        return Ok((executor.tracked(Arc::new(tracker)), confinement));
    }
    let mut sandbox_config = SandboxConfig::new(private.join("sandbox"));
    sandbox_config.helper = config.helper.clone().unwrap_or_else(locate_helper);
    sandbox_config.egress_allow = parse_allow_list(&config.allow_hosts)?;
    sandbox_config.limits = config.limits.clone();
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut sandbox =
        Sandbox::probe(sandbox_config, private, &path_dirs).map_err(ConfineError::Refused)?;
    if let Some(store) = policies {
        sandbox = sandbox.with_policy_store(store);
    }
    let status = sandbox.status().clone();
    tracing::info!(
        enforced = %status.enforced.join(", "),
        missing = %status.missing.join(", "),
        allow_hosts = %config.allow_hosts.join(", "),
        "commands run confined"
    );
    Ok((executor.confined(Arc::new(sandbox)), status))
}

/// Refuses a fixed workspace that is, or contains, the data dir `private` (created first, so
/// both sides compare as canonical paths); per-project workspaces live inside it instead.
fn refuse_private_in_workspace(
    layout: &WorkspaceLayout,
    private: &Path,
) -> Result<(), ConfineError> {
    let WorkspaceLayout::Fixed { dir } = layout else {
        return Ok(());
    };
    std::fs::create_dir_all(private).map_err(|source| ConfineError::DataDir {
        path: private.to_owned(),
        source,
    })?;
    if inside(private, dir) {
        return Err(ConfineError::PrivateInWorkspace {
            workspace: dir.clone(),
            private: private.to_owned(),
        });
    }
    Ok(())
}

/// The helper beside the running binary, one directory up (test binaries live in `deps/`
/// under the directory cargo puts binaries in), else the name for a PATH lookup.
fn locate_helper() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let beside = exe.with_file_name(HELPER_NAME);
    let above = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(HELPER_NAME));
    [Some(beside), above]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(HELPER_NAME))
                    .find(|p| p.is_file())
            })
        })
        .unwrap_or_else(|| exe.with_file_name(HELPER_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allow_list_parses() {
        let config = ConfinementConfig::default();
        assert_eq!(parse_allow_list(&config.allow_hosts).unwrap().len(), 3);
        assert!(!config.unconfined);
    }
}
