//! The resolved configuration and the one function that layers its sources:
//! flags > `RDEV_*` variables > the TOML file > the embedded defaults. clap gives a flag
//! precedence over its variable; [`Config::resolve`] puts both over the file and the file over
//! [`Config::new`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::args::{CommonArgs, ExecutorArgs, OutputArgs, RunnerArgs};
use super::executor::ExecutorKind;
use super::file::{FileConfig, WebhookFileConfig};
use super::kubernetes::KubernetesServeConfig;
use crate::adapters::local::ConfinementConfig;
use crate::adapters::woodpecker::WoodpeckerConfig;
use crate::api::SseConfig;
use crate::api::listener::ConnectionLimits;
use crate::domain::{OutputLimits, QueueConfig};
use crate::services::project_setup::poller::PollerConfig;
use crate::services::webhooks::WebhookConfig;
use crate::worker::WorkerConfig;

/// Everything a subcommand may need; [`Config::new`] gives the embedded defaults. Each
/// subcommand reads the parts it uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Database (SQLite default), master key, compile cache and project workspaces.
    pub data_dir: PathBuf,
    /// `None`: `target/plugins` when it exists (a source checkout), else `<data_dir>/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// `None`: SQLite at `<data_dir>/rdev.db`.
    pub database_url: Option<String>,
    /// Where commands run.
    pub executor: ExecutorKind,
    /// `rdev exec --dir`: the local executor runs every project in this one directory instead
    /// of `<data_dir>/projects/<id>`.
    pub local_workspace: Option<PathBuf>,
    /// How the local executor confines commands (see docs/sandbox.md).
    pub confinement: ConfinementConfig,
    /// Used when `executor` is `Kubernetes`.
    pub kubernetes: KubernetesServeConfig,
    /// An admin token to accept (stored hashed). `None`: one is generated on first start.
    pub admin_token: Option<String>,
    /// Leases, heartbeats and the per-project limit.
    pub queue: QueueConfig,
    /// Event streams to API clients.
    pub sse: SseConfig,
    /// Dashboard sessions (`RDEV_UI_*`).
    pub ui: crate::api::session::UiConfig,
    /// The HTTP listener's timeouts and connection caps (`[connections]`).
    pub connections: ConnectionLimits,
    /// The worker; an empty id is replaced by `<pid>-<port>` in `rdev serve`.
    pub worker: WorkerConfig,
    /// Webhook delivery: SSRF policy, timeout, retries.
    pub webhooks: WebhookConfig,
    /// Woodpecker CI for projects created from templates; `None`: no CI.
    pub woodpecker: Option<WoodpeckerConfig>,
    /// How the background task watches triggered pipelines (only with CI configured).
    pub ci_poll: PollerConfig,
    /// How often `rdev serve` exports a signed audit checkpoint (when the head moved).
    pub audit_checkpoint_interval: Duration,
}

/// The data directory when none is named: `./rdev-data`.
pub const DEFAULT_DATA_DIR: &str = "rdev-data";

/// Where plugins are looked for when no directory is named, in order: a source checkout's
/// `target/plugins`, `plugins` beside the rdev binary or beside its directory (an unpacked
/// release), then `<data_dir>/plugins`. Every subcommand asks here, so what `rdev plugins
/// install` writes is what `rdev serve` and `rdev exec` load.
pub fn plugins_dir_candidates(data_dir: &Path) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("target/plugins")];
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push(bin_dir.join("plugins"));
        if let Some(parent) = bin_dir.parent() {
            candidates.push(parent.join("plugins"));
        }
    }
    candidates.push(data_dir.join("plugins"));
    candidates
}

/// The first of [`plugins_dir_candidates`] that exists, else `<data_dir>/plugins`.
pub fn default_plugins_dir(data_dir: &Path) -> PathBuf {
    plugins_dir_candidates(data_dir)
        .into_iter()
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| data_dir.join("plugins"))
}

impl Config {
    /// The embedded defaults: `127.0.0.1:8080`, `./rdev-data`, SQLite, local executor.
    pub fn new() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            plugins_dir: None,
            database_url: None,
            executor: ExecutorKind::Local,
            local_workspace: None,
            confinement: ConfinementConfig::default(),
            kubernetes: KubernetesServeConfig::default(),
            admin_token: None,
            queue: QueueConfig::default(),
            sse: SseConfig::default(),
            ui: crate::api::session::UiConfig::default(),
            connections: ConnectionLimits::default(),
            worker: WorkerConfig::new(""),
            webhooks: WebhookConfig::default(),
            woodpecker: None,
            ci_poll: PollerConfig::default(),
            audit_checkpoint_interval: crate::services::audit_checkpoints::DEFAULT_INTERVAL,
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("rdev.db").display()))
    }

    /// The plugins directory in effect.
    pub fn plugins_dir(&self) -> PathBuf {
        match &self.plugins_dir {
            Some(dir) => dir.clone(),
            None => default_plugins_dir(&self.data_dir),
        }
    }

    /// Layers flags/`RDEV_*` (already merged by clap) over the file named by `--config` over
    /// the defaults, for everything the subcommands share. Returns the file too, for the
    /// settings only one subcommand has (`rdev serve`'s listen address, say).
    pub fn resolve(
        common: &CommonArgs,
        executor: ExecutorArgs,
        runner: &RunnerArgs,
    ) -> anyhow::Result<(Self, FileConfig)> {
        let mut file = FileConfig::load(common.config.as_deref())?;
        let mut config = Self::new();
        if let Some(dir) = common.data_dir.clone().or(file.data_dir.take()) {
            config.data_dir = dir;
        }
        config.database_url = common.database_url.clone().or(file.database_url.take());
        config.plugins_dir = runner.plugins_dir.clone().or(file.plugins_dir.take());
        config.executor = executor.executor.or(file.executor).unwrap_or_default();
        config.confinement = runner
            .confinement
            .clone()
            .resolve(file.unconfined, file.allow_hosts.take());
        config.kubernetes = executor
            .kubernetes
            .resolve(std::mem::take(&mut file.kubernetes));
        if let Some(concurrency) = runner.concurrency.or(file.concurrency) {
            anyhow::ensure!(concurrency > 0, "the concurrency must be at least 1");
            config.worker.concurrency = concurrency;
        }
        if let Some(limit) = runner
            .max_running_per_project
            .or(file.max_running_per_project)
        {
            config.queue.max_running_per_project = (limit > 0).then_some(limit);
        }
        config.worker.output = output_limits(&runner.output, &file)?;
        config.webhooks = webhooks(config.webhooks, &file.webhooks).with_env();
        config.ui = config.ui.with_env()?;
        Ok((config, file))
    }

    /// [`Self::resolve`] for a subcommand that only opens the database (`audit`, `migrate`).
    pub fn resolve_store(common: &CommonArgs) -> anyhow::Result<Self> {
        Self::resolve(common, ExecutorArgs::default(), &RunnerArgs::default()).map(|(c, _)| c)
    }

    /// Reads Woodpecker CI from `RDEV_WOODPECKER_*`, for the subcommands that create
    /// projects (only the environment configures it).
    pub fn with_woodpecker_from_env(mut self) -> anyhow::Result<Self> {
        self.woodpecker =
            WoodpeckerConfig::from_env().context("reading the Woodpecker configuration")?;
        Ok(self)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// The output limits: flags/`RDEV_*` over the file over the defaults, checked.
fn output_limits(args: &OutputArgs, file: &FileConfig) -> anyhow::Result<OutputLimits> {
    let defaults = OutputLimits::default();
    let limits = OutputLimits {
        max_event_bytes: args
            .max_event_bytes
            .or(file.max_event_bytes)
            .unwrap_or(defaults.max_event_bytes),
        max_output_bytes: args
            .max_output_bytes
            .or(file.max_output_bytes)
            .unwrap_or(defaults.max_output_bytes),
        max_result_bytes: args
            .max_result_bytes
            .or(file.max_result_bytes)
            .unwrap_or(defaults.max_result_bytes),
        on_limit: args
            .on_output_limit
            .or(file.on_output_limit)
            .unwrap_or(defaults.on_limit),
    };
    limits.check()?;
    Ok(limits)
}

/// The file's `[webhooks]` table over `config`.
fn webhooks(mut config: WebhookConfig, file: &WebhookFileConfig) -> WebhookConfig {
    if let Some(allow) = file.allow_private {
        config.allow_private = allow;
    }
    if let Some(secs) = file.timeout_secs {
        config.timeout = Duration::from_secs(secs.max(1));
        config.lease = config.lease.max(config.timeout * 2);
    }
    if let Some(attempts) = file.max_attempts {
        config.retry.max_attempts = attempts.max(1);
    }
    if let Some(secs) = file.backoff_base_secs {
        config.retry.base = Duration::from_secs(secs);
    }
    if let Some(secs) = file.backoff_max_secs {
        config.retry.max_delay = Duration::from_secs(secs);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OnOutputLimit;

    fn file(text: &str) -> (tempfile::TempDir, CommonArgs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rdev.toml");
        std::fs::write(&path, text).expect("write");
        let common = CommonArgs {
            config: Some(path),
            ..CommonArgs::default()
        };
        (dir, common)
    }

    #[test]
    fn the_data_dir_plugins_are_the_last_default_and_the_fallback() {
        let data = tempfile::tempdir().expect("tempdir");
        let own = data.path().join("plugins");
        let candidates = plugins_dir_candidates(data.path());
        assert_eq!(candidates.first(), Some(&PathBuf::from("target/plugins")));
        assert_eq!(candidates.last(), Some(&own));
        // Neither a checkout's nor a release's directory exists beside a unit test's binary.
        assert_eq!(default_plugins_dir(data.path()), own);
        std::fs::create_dir(&own).expect("create");
        let config = Config {
            data_dir: data.path().to_path_buf(),
            ..Config::new()
        };
        assert_eq!(
            config.plugins_dir(),
            own,
            "serve and worker follow the same rule"
        );
    }

    #[test]
    fn defaults_put_everything_under_the_data_dir() {
        let config = Config::new();
        assert_eq!(config.database_url(), "sqlite://rdev-data/rdev.db");
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.worker.concurrency, 4);
    }

    #[test]
    fn the_file_sets_concurrency_and_a_flag_wins_over_it() {
        let (_dir, common) = file("concurrency = 9\nexecutor = \"kubernetes\"\n");
        let (config, _) = Config::resolve(&common, ExecutorArgs::default(), &RunnerArgs::default())
            .expect("valid");
        assert_eq!(config.worker.concurrency, 9);
        assert_eq!(config.executor, ExecutorKind::Kubernetes);
        let runner = RunnerArgs {
            concurrency: Some(2),
            ..RunnerArgs::default()
        };
        let executor = ExecutorArgs {
            executor: Some(ExecutorKind::Local),
            ..ExecutorArgs::default()
        };
        let (config, _) = Config::resolve(&common, executor, &runner).expect("valid");
        assert_eq!(config.worker.concurrency, 2);
        assert_eq!(config.executor, ExecutorKind::Local);
    }

    #[test]
    fn a_concurrency_of_zero_is_refused() {
        let (_dir, common) = file("concurrency = 0\n");
        let error = Config::resolve(&common, ExecutorArgs::default(), &RunnerArgs::default())
            .expect_err("zero slots run nothing");
        assert!(format!("{error:#}").contains("concurrency"), "{error:#}");
    }

    #[test]
    fn output_limits_come_from_the_file_and_flags_win() {
        let (_dir, common) = file("max_output_bytes = 4096\non_output_limit = \"fail\"\n");
        let runner = RunnerArgs {
            output: OutputArgs {
                max_event_bytes: Some(2048),
                ..OutputArgs::default()
            },
            ..RunnerArgs::default()
        };
        let (config, _) =
            Config::resolve(&common, ExecutorArgs::default(), &runner).expect("valid");
        let output = config.worker.output;
        assert_eq!(output.max_event_bytes, 2048);
        assert_eq!(output.max_output_bytes, 4096);
        assert_eq!(
            output.max_result_bytes,
            OutputLimits::default().max_result_bytes
        );
        assert_eq!(output.on_limit, OnOutputLimit::Fail);
        let (_dir, common) = file("max_result_bytes = 3\n");
        let error = Config::resolve(&common, ExecutorArgs::default(), &RunnerArgs::default())
            .expect_err("too small");
        assert!(
            format!("{error:#}").contains("max_result_bytes"),
            "{error:#}"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let (_dir, common) = file("listn = \"x\"\n");
        assert!(Config::resolve(&common, ExecutorArgs::default(), &RunnerArgs::default()).is_err());
    }
}
