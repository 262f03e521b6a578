//! The `rdev` command line: one file per subcommand, dispatched from here.

use clap::{Parser, Subcommand};

pub mod approvals;
pub mod audit;
pub mod client;
pub mod credentials;
pub mod exec;
pub mod follow;
pub mod interrupts;
pub mod migrate;
pub mod output;
pub mod plugin_commands;
pub mod plugins;
pub mod projects;
pub mod providers;
pub mod registry_login;
pub mod serve;
pub mod spinner;
pub mod terminal;
pub mod webhooks;
pub mod worker;

/// rdev runs coding agents as sandboxed WebAssembly providers against project workspaces.
#[derive(Debug, Parser)]
#[command(name = "rdev", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version.
    Version,
    /// Apply database migrations.
    Migrate(migrate::MigrateArgs),
    /// List the providers in the plugins directory with their version, ABI, capabilities
    /// and load state.
    Providers(providers::ProvidersArgs),
    /// Run one request through a provider against a directory and print its events.
    Exec(exec::ExecArgs),
    /// Publish plugins to an OCI registry, install them from one, list and remove them.
    Plugins(plugin_commands::PluginsCommandArgs),
    /// Inspect the audit trail.
    Audit(audit::AuditArgs),
    /// Run a queue worker (no HTTP API); SIGTERM drains it.
    Worker(worker::WorkerArgs),
    /// Create projects from templates and list templates.
    Projects(projects::ProjectsArgs),
    /// Serve the HTTP API and run queued commands.
    Serve(serve::ServeArgs),
    /// Submit a command to a server and follow it; exits with its status.
    Run(client::RunArgs),
    /// Print a command's events from a server.
    Logs(client::LogsArgs),
    /// Cancel a command on a server.
    Cancel(client::CancelArgs),
    /// Issue, list and revoke API tokens on a server (admin).
    Tokens(client::TokensArgs),
    /// List credentials and rotate the master key on a server (admin).
    Credentials(credentials::CredentialsArgs),
    /// Create, list and delete a project's webhooks on a server; show their deliveries.
    Webhooks(webhooks::WebhooksArgs),
    /// List approvals waiting for a decision (every state with `--all`).
    Approvals(approvals::ApprovalsArgs),
    /// Allow a pending approval: the waiting agent's tool call runs.
    Approve(approvals::ApproveArgs),
    /// Deny a pending approval, with a reason the agent is told.
    Deny(approvals::DenyArgs),
    /// Send a follow-up message into a running command.
    Input(approvals::InputArgs),
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Migrate(args) => migrate::run(args).await,
        Command::Providers(args) => providers::run(args).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Plugins(args) => plugin_commands::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Projects(args) => projects::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Run(args) => client::run(args).await,
        Command::Logs(args) => client::logs(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Tokens(args) => client::tokens(args).await,
        Command::Credentials(args) => credentials::run(args).await,
        Command::Webhooks(args) => webhooks::run(args).await,
        Command::Approvals(args) => approvals::list(args).await,
        Command::Approve(args) => approvals::approve(args).await,
        Command::Deny(args) => approvals::deny(args).await,
        Command::Input(args) => approvals::input(args).await,
        Command::Version => {
            println!("rdev {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}
