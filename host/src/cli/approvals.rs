//! `rdev approvals`, `rdev approve`, `rdev deny` and `rdev input`: a person in the loop from
//! a terminal, over a running server's API, as the other client commands do.

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use crate::cli::client::Connection;
use crate::cli::projects::project_path;

/// `rdev approvals`.
#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only this project's approvals [default: every project the token may access].
    #[arg(long)]
    pub project: Option<String>,
    /// Show approvals in every state, not only the pending ones.
    #[arg(long)]
    pub all: bool,
}

/// `rdev approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub connection: Connection,
    pub approval_id: String,
    /// Also allow this tool with this exact input from now on, in every command of the
    /// project (adds a rule to its policy).
    #[arg(long)]
    pub remember: bool,
    /// Told to the agent with the decision.
    #[arg(long)]
    pub message: Option<String>,
}

/// `rdev deny`.
#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub connection: Connection,
    pub approval_id: String,
    /// The reason, told to the agent (and through it the model).
    #[arg(long)]
    pub message: Option<String>,
    /// Also deny this tool with this exact input from now on.
    #[arg(long)]
    pub remember: bool,
}

/// `rdev input`.
#[derive(Debug, Args)]
pub struct InputArgs {
    #[command(flatten)]
    pub connection: Connection,
    pub command_id: String,
    /// The follow-up message for the running agent.
    pub text: String,
}

/// `/approvals/{id}` or `/commands/{id}`, refusing ids that could address another route.
fn id_path(kind: &str, id: &str) -> anyhow::Result<String> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        bail!("{id:?} is not a valid id");
    }
    Ok(format!("/{kind}/{id}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// One approval per line: id, status, command, tool, summary.
fn print_approval(approval: &Value) {
    println!(
        "{}  {:<9} {}  {:<12} {}",
        text(&approval["id"]),
        text(&approval["status"]),
        text(&approval["command_id"]),
        text(&approval["tool"]),
        text(&approval["summary"]).replace(['\n', '\r'], " "),
    );
}

/// Lists approvals, pending only unless `--all`.
pub async fn list(args: ApprovalsArgs) -> anyhow::Result<i32> {
    let connection = &args.connection;
    let projects = match args.project {
        Some(project) => vec![project],
        None => {
            let listed = connection
                .call(reqwest::Method::GET, "/projects", None)
                .await?;
            listed["projects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        }
    };
    let query = if args.all { "" } else { "?status=pending" };
    for project in projects {
        let path = format!("{}/approvals{query}", project_path(&project)?);
        let page = connection.call(reqwest::Method::GET, &path, None).await?;
        for approval in page["approvals"].as_array().into_iter().flatten() {
            print_approval(approval);
        }
    }
    Ok(0)
}

async fn decide(
    connection: &Connection,
    id: &str,
    decision: &str,
    message: Option<String>,
    remember: bool,
) -> anyhow::Result<i32> {
    let body = json!({"decision": decision, "message": message, "remember": remember});
    let approval = connection
        .call(
            reqwest::Method::POST,
            &id_path("approvals", id)?,
            Some(body),
        )
        .await?;
    print_approval(&approval);
    Ok(0)
}

/// Allows a pending approval.
pub async fn approve(args: ApproveArgs) -> anyhow::Result<i32> {
    decide(
        &args.connection,
        &args.approval_id,
        "allow",
        args.message,
        args.remember,
    )
    .await
}

/// Denies a pending approval.
pub async fn deny(args: DenyArgs) -> anyhow::Result<i32> {
    decide(
        &args.connection,
        &args.approval_id,
        "deny",
        args.message,
        args.remember,
    )
    .await
}

/// Sends follow-up text into a running command.
pub async fn input(args: InputArgs) -> anyhow::Result<i32> {
    let path = format!("{}/input", id_path("commands", &args.command_id)?);
    let accepted = args
        .connection
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"text": args.text})),
        )
        .await?;
    println!("{}", text(&accepted["id"]));
    Ok(0)
}
