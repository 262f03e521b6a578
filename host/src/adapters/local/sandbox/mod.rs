//! Confinement of the local executor's processes. Each spawn runs under bubblewrap in new
//! user, PID, mount, IPC and UTS namespaces as an unprivileged user, sees only the system
//! directories, its PATH's install directories (read-only) and its workspace (writable),
//! then confines itself with Landlock and seccomp (`inner`). Each project has one network
//! namespace holding only loopback, with egress through the host's allow-list (`egress`);
//! each command has a cgroup with limits that also kills whatever it leaves (`cgroup`).
//! The PID namespace ends every process of a command when the command's leader exits.

mod bwrap;
pub(in crate::adapters::local) mod cgroup;
mod child;
mod egress;
mod host;
mod invoke;
mod netns;
mod server;
mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;

pub use egress::{AllowRule, RuleError};

use crate::domain::ProjectId;
use crate::domain::network::parse_allow_list;
use crate::ports::{ExecError, NetworkPolicyStore};
use cgroup::{Cgroups, CommandGroup};
use egress::Egress;
pub(in crate::adapters::local) use host::inside;
use host::{
    chown_tree, find_program, install_root, landlock_abi, seccomp_available, split_views,
    write_identity,
};
pub use host::{instance_name, program_exists};
use netns::Netns;

/// The unprivileged user (and group) commands run as when rdev runs as root: an id no
/// account on the host should own, so host file permissions apply to the sandbox.
pub const DEFAULT_UID: u32 = 64_000;
/// The helper binary's name; it is installed beside `rdev`.
pub const HELPER_NAME: &str = "rdev-sandbox-exec";
/// Where the egress proxy listens inside every project's namespace.
pub const DEFAULT_PROXY_PORT: u16 = 3128;
/// Where bind sources are staged in the spawning child's private mount namespace.
const STAGE_DIR: &str = "/run/rdev-sandbox";

/// Per-command limits, applied through cgroups when the host has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Processes and threads at once (a fork bomb stops here).
    pub pids: Option<u64>,
    /// Memory including page cache and tmpfs writes; the OOM killer acts inside the group.
    pub memory_bytes: Option<u64>,
    /// CPU time as a percentage of one core (200 = two cores).
    pub cpu_percent: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pids: Some(1024),
            memory_bytes: Some(4 << 30),
            cpu_percent: Some(200),
        }
    }
}

/// How to confine: tools, identity, limits, egress.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The bubblewrap binary (a bare name is looked up on PATH).
    pub bwrap: PathBuf,
    /// The `rdev-sandbox-exec` binary, which confines itself inside the sandbox.
    pub helper: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    /// Destinations every project may reach unless its own policy says otherwise.
    pub egress_allow: Vec<AllowRule>,
    pub proxy_port: u16,
    /// A directory outside every workspace for generated files (`passwd`, `group`).
    pub state_dir: PathBuf,
    /// Runs every command in a bubblewrap of its own instead of the project's long-lived
    /// sandbox: ~20 ms more per spawn (namespaces made each time); the only mode where no
    /// cgroup per command can be made, since the per-command PID namespace then ends leftovers.
    pub per_spawn: bool,
}

impl SandboxConfig {
    /// Defaults: `bwrap` from PATH, this binary as the helper, [`DEFAULT_UID`], default
    /// limits, no egress, the proxy on [`DEFAULT_PROXY_PORT`].
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bwrap: PathBuf::from("bwrap"),
            helper: std::env::current_exe()
                .unwrap_or_default()
                .with_file_name(HELPER_NAME),
            uid: DEFAULT_UID,
            gid: DEFAULT_UID,
            limits: Limits::default(),
            egress_allow: Vec::new(),
            proxy_port: DEFAULT_PROXY_PORT,
            state_dir: state_dir.into(),
            per_spawn: false,
        }
    }
}

/// What the sandbox enforces on this host, for `/readyz`, `GET /providers` and the log.
pub use crate::ports::Confinement as SandboxStatus;

/// Why confinement cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("this host cannot confine commands: {}", .0.join("; "))]
    Missing(Vec<String>),
    #[error("{0}")]
    Setup(String),
}

/// The mechanisms in force besides the required ones, noting optional ones that are missing.
fn mechanisms(instance: &str, missing: &mut Vec<String>) -> (Vec<String>, Option<Cgroups>) {
    let cgroups = Cgroups::detect(instance);
    let mut enforced: Vec<String> = [
        "user namespace (unprivileged uid)",
        "pid namespace per command",
        "mount namespace (workspace the only writable place)",
        "network namespace per project",
        "seccomp",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    match landlock_abi() {
        Some(abi) => enforced.push(format!("landlock (ABI {abi})")),
        None => missing.push("landlock (kernel without Landlock)".to_owned()),
    }
    let cgroups = match cgroups {
        Ok(c) => {
            enforced.push(format!("limits ({})", c.describe()));
            let reaped = c.reap_all();
            if reaped > 0 {
                tracing::warn!(reaped, "killed the leftovers of a dead host's commands");
            }
            Some(c)
        }
        Err(reason) => {
            missing.push(format!("limits (no writable cgroup hierarchy: {reason})"));
            None
        }
    };
    (enforced, cgroups)
}

/// The thread that starts projects' long-lived sandboxes, when commands share them (`shared`:
/// a cgroup per command is possible and not disabled); says so in `enforced`.
fn servers(shared: bool, enforced: &mut [String]) -> std::io::Result<Option<shared::Spawner>> {
    if !shared {
        return Ok(None);
    }
    if let Some(pid) = enforced.iter_mut().find(|e| e.starts_with("pid namespace")) {
        *pid = "pid namespace per project (one long-lived sandbox per project; each command in \
                its own cgroup, session and Landlock domain)"
            .to_owned();
    }
    shared::Spawner::new().map(Some)
}

/// One project's network namespace and its way out.
struct ProjectNet {
    netns: Netns,
    egress: Egress,
}

/// What one spawn runs, and where.
pub(super) struct Target<'a> {
    pub project: &'a str,
    pub workspace: &'a Path,
    pub cwd: &'a Path,
    pub program: &'a str,
    pub args: &'a [String],
}

/// A spawn's sandbox, ready to run: the command and what must outlive it.
pub(super) struct Prepared {
    pub command: tokio::process::Command,
    pub group: Option<CommandGroup>,
    pub notices: broadcast::Receiver<String>,
}

/// Confinement shared by every spawn of one executor.
pub struct Sandbox {
    config: SandboxConfig,
    bwrap: PathBuf,
    switch_user: bool,
    uid: u32,
    gid: u32,
    symlinks: Vec<(PathBuf, PathBuf)>,
    read_only: Vec<PathBuf>,
    passwd: PathBuf,
    group: PathBuf,
    cgroups: Option<Cgroups>,
    nets: tokio::sync::Mutex<HashMap<String, Arc<ProjectNet>>>,
    policies: std::sync::Mutex<HashMap<String, Vec<AllowRule>>>,
    /// Where projects' own allow-lists are kept; read before each spawn.
    policy_store: Option<Arc<dyn NetworkPolicyStore>>,
    status: SandboxStatus,
    /// Each project's long-lived sandbox, when commands share one (`shared`).
    servers: tokio::sync::Mutex<HashMap<String, Arc<server::Server>>>,
    /// Starts the servers; `None` when every command gets a bubblewrap of its own.
    spawner: Option<shared::Spawner>,
}

/// What, besides bubblewrap, this host lacks for confinement, each in words with the fix.
fn missing_kernel_mechanisms(config: &SandboxConfig) -> Vec<String> {
    let mut missing = Vec::new();
    if !config.helper.is_file() {
        missing.push(format!(
            "the sandbox helper {} does not exist",
            config.helper.display()
        ));
    }
    if let Err(e) = Netns::create() {
        missing.push(format!(
            "per-project network namespaces need CAP_SYS_ADMIN (run rdev as root): {e}"
        ));
    }
    if !seccomp_available() {
        missing.push("the kernel has no seccomp filter support".to_owned());
    }
    missing
}

impl Sandbox {
    /// Checks every mechanism on this host (a trial spawn included) and prepares shared
    /// state. `path_dirs` are the host PATH's directories the agent CLIs live in; any inside
    /// `private` (rdev's data dir) are left out.
    pub fn probe(
        config: SandboxConfig,
        private: &Path,
        path_dirs: &[PathBuf],
    ) -> Result<Self, SandboxError> {
        let mut missing = Vec::new();
        let bwrap = find_program(&config.bwrap);
        if bwrap.is_none() {
            missing.push(format!(
                "bubblewrap ({}) is not installed (Debian: apt-get install bubblewrap)",
                config.bwrap.display()
            ));
        }
        missing.extend(missing_kernel_mechanisms(&config));
        // SAFETY: geteuid/getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let switch_user = euid == 0;
        let (uid, gid) = if switch_user {
            (config.uid, config.gid)
        } else {
            (euid, egid)
        };
        let Some(bwrap) = bwrap.filter(|_| missing.is_empty()) else {
            return Err(SandboxError::Missing(missing));
        };
        let setup = |what: &str, e: std::io::Error| SandboxError::Setup(format!("{what}: {e}"));
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| setup(&config.state_dir.display().to_string(), e))?;
        if switch_user {
            std::fs::create_dir_all(STAGE_DIR).map_err(|e| setup(STAGE_DIR, e))?;
        }
        let passwd = config.state_dir.join("passwd");
        let group = config.state_dir.join("group");
        write_identity(&passwd, &group, uid, gid).map_err(|e| setup("writing passwd", e))?;

        let extra: Vec<PathBuf> = path_dirs
            .iter()
            .filter(|d| d.is_absolute())
            .map(|d| install_root(d))
            .filter(|d| !inside(d, private) && !inside(private, d))
            .collect();
        let (symlinks, read_only) = split_views(bwrap::read_only_views(&extra));

        let (mut enforced, cgroups) = mechanisms(&instance_name(private), &mut missing);
        let spawner = servers(cgroups.is_some() && !config.per_spawn, &mut enforced)
            .map_err(|e| setup("the server thread", e))?;
        let default_allow = config
            .egress_allow
            .iter()
            .map(ToString::to_string)
            .collect();
        let sandbox = Self {
            config,
            bwrap,
            switch_user,
            uid,
            gid,
            symlinks,
            read_only,
            passwd,
            group,
            cgroups,
            nets: tokio::sync::Mutex::new(HashMap::new()),
            policies: std::sync::Mutex::new(HashMap::new()),
            policy_store: None,
            status: SandboxStatus {
                mode: "confined".to_owned(),
                enforced,
                missing,
                default_allow,
            },
            servers: tokio::sync::Mutex::new(HashMap::new()),
            spawner,
        };
        sandbox.trial()?;
        Ok(sandbox)
    }

    /// Reads each project's allow-list from `store` before each of its spawns, so a policy
    /// changed through the API (on any replica) applies from the project's next command.
    pub fn with_policy_store(mut self, store: Arc<dyn NetworkPolicyStore>) -> Self {
        self.policy_store = Some(store);
        self
    }

    /// Applies the project's stored allow-list if it differs from the one in force.
    async fn refresh_policy(&self, project: &str) -> Result<(), String> {
        let Some(store) = &self.policy_store else {
            return Ok(());
        };
        let id = ProjectId::parse(project).map_err(|e| e.to_string())?;
        let stored = store
            .network_policy(&id)
            .await
            .map_err(|e| format!("reading its network policy: {e}"))?;
        let rules = stored
            .map(|policy| parse_allow_list(&policy.allow))
            .transpose()
            .map_err(|e| format!("its stored network policy: {e}"))?;
        let current = self
            .policies
            .lock()
            .ok()
            .and_then(|p| p.get(project).cloned());
        if current != rules {
            self.set_egress(project, rules)
                .await
                .map_err(|e| format!("applying its network policy: {e}"))?;
        }
        Ok(())
    }

    /// What is enforced here.
    pub fn status(&self) -> &SandboxStatus {
        &self.status
    }

    /// Whether commands run in their project's long-lived sandbox (else one each).
    pub fn shared(&self) -> bool {
        self.spawner.is_some()
    }

    /// Makes the workspace the sandbox user's own (the first time it is used confined).
    pub(super) fn adopt(&self, workspace: &Path) -> std::io::Result<()> {
        if !self.switch_user {
            return Ok(());
        }
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(workspace)?);
        if owner == self.uid {
            return Ok(());
        }
        chown_tree(workspace, self.uid, self.gid)
    }

    /// The confined command for one spawn: in the project's network namespace, in a fresh
    /// cgroup (leftovers of earlier starts of rdev killed first), as the sandbox user.
    pub(super) async fn prepare(&self, target: &Target<'_>) -> Result<Prepared, ExecError> {
        let Target {
            project,
            workspace,
            program,
            ..
        } = *target;
        let failed = |reason: String| ExecError::SpawnFailed {
            program: program.to_owned(),
            reason,
        };
        self.adopt(workspace)
            .map_err(|e| failed(format!("giving the workspace to the sandbox user: {e}")))?;
        self.refresh_policy(project).await.map_err(failed)?;
        let net = self
            .network(project)
            .await
            .map_err(|e| failed(format!("the project's network: {e}")))?;
        let group = match &self.cgroups {
            Some(cgroups) => {
                cgroups.reap_leftovers(project);
                Some(
                    cgroups
                        .create(project, &self.config.limits)
                        .map_err(|e| failed(format!("the command's cgroup: {e}")))?,
                )
            }
            None => None,
        };
        let (arguments, setup) =
            self.invocation(target, Some(&net.netns), group.as_ref(), false)?;
        let mut command = tokio::process::Command::new(&self.bwrap);
        command.args(arguments);
        // The namespace descriptor must stay open until the child has joined it.
        let keep = net.clone();
        // SAFETY: the setup only makes async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                let _ = &keep;
                setup.run()
            });
        }
        Ok(Prepared {
            command,
            group,
            notices: net.egress.subscribe(),
        })
    }

    /// Proxy variables pointing the command's HTTP clients at the egress proxy; loopback
    /// stays direct (the project's own servers and the forwards).
    pub fn proxy_env(&self) -> Vec<(&'static str, String)> {
        let proxy = format!("http://127.0.0.1:{}", self.config.proxy_port);
        let mut env: Vec<(&'static str, String)> =
            ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"]
                .into_iter()
                .map(|key| (key, proxy.clone()))
                .collect();
        for key in ["NO_PROXY", "no_proxy"] {
            env.push((key, "localhost,127.0.0.1,::1".to_owned()));
        }
        env
    }

    /// The project's namespace, created with its egress on first use.
    async fn network(&self, project: &str) -> std::io::Result<Arc<ProjectNet>> {
        let mut nets = self.nets.lock().await;
        if let Some(net) = nets.get(project) {
            return Ok(net.clone());
        }
        let netns = Netns::create()?;
        let rules = self.policy(project);
        let egress =
            Egress::start(&netns, project.to_owned(), self.config.proxy_port, rules).await?;
        let net = Arc::new(ProjectNet { netns, egress });
        nets.insert(project.to_owned(), net.clone());
        Ok(net)
    }

    fn policy(&self, project: &str) -> Vec<AllowRule> {
        self.policies
            .lock()
            .ok()
            .and_then(|p| p.get(project).cloned())
            .unwrap_or_else(|| self.config.egress_allow.clone())
    }

    /// The project's egress allow-list (its own, else the default).
    pub fn egress(&self, project: &str) -> Vec<AllowRule> {
        self.policy(project)
    }

    /// Replaces the project's allow-list (`None`: back to the default); takes effect for new
    /// connections at once.
    pub async fn set_egress(
        &self,
        project: &str,
        rules: Option<Vec<AllowRule>>,
    ) -> std::io::Result<()> {
        if let Ok(mut policies) = self.policies.lock() {
            match &rules {
                Some(rules) => policies.insert(project.to_owned(), rules.clone()),
                None => policies.remove(project),
            };
        }
        let net = self.nets.lock().await.get(project).cloned();
        if let Some(net) = net {
            net.egress
                .set_rules(&net.netns, self.policy(project))
                .await?;
        }
        Ok(())
    }

    /// A connection to `port` on the project's own loopback.
    pub async fn connect(
        &self,
        project: &str,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let net = self.network(project).await?;
        net.netns.connect(port).await
    }
}
