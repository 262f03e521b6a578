//! `rdev projects`: create a project from a template and list templates, straight against the
//! database and the data dir (the same layout `rdev serve` uses), for operators and scripts;
//! and list, read and delete projects on a running server, as the other client commands do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::adapters::woodpecker::WoodpeckerClient;
use crate::cli::client::Connection;
use crate::domain::ProjectId;
use crate::ports::{Ci, SecretResolver};
use crate::services::project_setup::{CreateProject, ProjectSetupService};
use crate::wiring::{
    CommonArgs, Config, ExecutorArgs, LocalUse, RunnerArgs, build_executor, open_stores,
};

/// Arguments of `rdev projects`.
#[derive(Debug, Args)]
pub struct ProjectsArgs {
    /// Database, master key, workspaces (`<data-dir>/projects`) and operator templates
    /// (`<data-dir>/templates`).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Operator templates [default: <data-dir>/templates].
    #[arg(long, env = "RDEV_TEMPLATES_DIR", global = true)]
    pub templates_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ProjectsCommand,
}

/// `rdev projects …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project from a template: render, commit, record, register with Woodpecker
    /// (when RDEV_WOODPECKER_URL is set).
    Create {
        /// The project id.
        id: String,
        #[arg(long)]
        template: String,
        /// `name=value`, repeatable.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Clone this repository first.
        #[arg(long)]
        repo: Option<String>,
        /// `owner/name` of the forge repository CI builds.
        #[arg(long)]
        ci_repo: Option<String>,
        /// Where the workspace is made: a directory, or a pod with `--executor kubernetes`.
        #[command(flatten)]
        executor: ExecutorArgs,
    },
    /// List the templates with their variables, as JSON.
    Templates,
    /// List the projects on a server the token may access.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one project from a server, as JSON.
    Get {
        #[command(flatten)]
        connection: Connection,
        id: String,
    },
    /// Delete a project on a server (admin; refused while one of its commands runs).
    Delete {
        #[command(flatten)]
        connection: Connection,
        id: String,
    },
}

/// `/projects/{id}` for a syntactically valid id, so an id cannot reach another route.
pub(crate) fn project_path(id: &str) -> anyhow::Result<String> {
    let id = ProjectId::parse(id)?;
    Ok(format!("/projects/{id}"))
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not name=value"))
}

/// Runs `rdev projects …`.
pub async fn run(args: ProjectsArgs) -> anyhow::Result<i32> {
    match args.command {
        ProjectsCommand::List { connection, json } => list(connection, json).await,
        ProjectsCommand::Get { connection, id } => {
            let project = connection
                .call(reqwest::Method::GET, &project_path(&id)?, None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&project)?);
            Ok(0)
        }
        ProjectsCommand::Delete { connection, id } => {
            connection
                .call(reqwest::Method::DELETE, &project_path(&id)?, None)
                .await?;
            println!("{id} deleted");
            Ok(0)
        }
        ProjectsCommand::Templates => {
            let (config, _) = Config::resolve(
                &args.common,
                ExecutorArgs::default(),
                &RunnerArgs::default(),
            )?;
            let templates_dir = templates_dir(args.templates_dir, &config);
            let catalog = crate::services::templates::TemplateCatalog::load(Some(&templates_dir));
            for problem in catalog.problems() {
                eprintln!("warning: {problem}");
            }
            let infos: Vec<_> = catalog.list().map(|t| t.info()).collect();
            println!("{}", serde_json::to_string_pretty(&infos)?);
            Ok(0)
        }
        ProjectsCommand::Create {
            id,
            template,
            vars,
            repo,
            ci_repo,
            executor,
        } => {
            let (config, _) = Config::resolve(&args.common, executor, &RunnerArgs::default())?;
            let config = config.with_woodpecker_from_env()?;
            let service = setup_service(&config, args.templates_dir).await?;
            let vars: BTreeMap<String, serde_json::Value> = vars
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let created = service
                .create(
                    "cli",
                    CreateProject {
                        id,
                        template,
                        vars,
                        repo,
                        ci_repo,
                        display_name: None,
                    },
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(0)
        }
    }
}

/// Prints the server's projects as a table, or its JSON.
async fn list(connection: Connection, json: bool) -> anyhow::Result<i32> {
    let listed = connection
        .call(reqwest::Method::GET, "/projects", None)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(0);
    }
    println!("{:<40} {:<30} CREATED", "ID", "NAME");
    for project in listed["projects"].as_array().into_iter().flatten() {
        println!(
            "{:<40} {:<30} {}",
            project["id"].as_str().unwrap_or_default(),
            project["display_name"].as_str().unwrap_or("-"),
            project["created_at"].as_str().unwrap_or_default(),
        );
    }
    Ok(0)
}

/// The operator templates: the flag's directory, else `<data-dir>/templates`.
fn templates_dir(flag: Option<PathBuf>, config: &Config) -> PathBuf {
    flag.unwrap_or_else(|| config.data_dir.join("templates"))
}

/// Project setup over the configured database, executor and CI, as `rdev serve` has it.
async fn setup_service(
    config: &Config,
    templates: Option<PathBuf>,
) -> anyhow::Result<ProjectSetupService> {
    let stores = open_stores(config).await?;
    let secrets: Arc<dyn SecretResolver> = stores.credentials.clone();
    let workspaces = build_executor(config, secrets.clone(), LocalUse::Provision).await?;
    let ci = match config.woodpecker.clone() {
        Some(woodpecker) => {
            Some(Arc::new(WoodpeckerClient::new(woodpecker, secrets)?) as Arc<dyn Ci>)
        }
        None => None,
    };
    Ok(ProjectSetupService::new(
        &stores,
        workspaces.seeder,
        workspaces.provisioner,
        ci,
        Some(templates_dir(templates, config)),
    ))
}
