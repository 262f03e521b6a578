//! `rdev webhooks`: manage a project's webhook subscriptions on a running server and read
//! their delivery history, as the other client commands do.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::client::Connection;
use crate::cli::projects::project_path;

/// Arguments of `rdev webhooks`.
#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The project whose webhooks these are.
    #[arg(long, global = true)]
    pub project: Option<String>,
    #[command(subcommand)]
    pub action: WebhooksAction,
}

/// What `rdev webhooks` does.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Subscribe a URL; the signing secret is printed once.
    Create {
        /// `http(s)://…`; internal addresses are refused unless the server allows them.
        #[arg(long)]
        url: String,
        /// Event type to receive (repeatable); none means every event.
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the project's webhooks (never their secrets).
    List,
    /// Delete a webhook; queued deliveries to it are dropped.
    Delete { id: String },
    /// Show a webhook's deliveries, newest first, with every attempt.
    Deliveries {
        id: String,
        /// How many [1-100].
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

/// `/projects/{project}/webhooks[/{id}]`, refusing ids that could address another route.
fn webhooks_path(project: Option<&str>, id: Option<&str>) -> anyhow::Result<String> {
    let Some(project) = project else {
        bail!("--project is required");
    };
    let base = format!("{}/webhooks", project_path(project)?);
    match id {
        None => Ok(base),
        Some(id)
            if !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) =>
        {
            Ok(format!("{base}/{id}"))
        }
        Some(id) => bail!("{id:?} is not a webhook id"),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Runs `rdev webhooks …`.
pub async fn run(args: WebhooksArgs) -> anyhow::Result<i32> {
    let connection = &args.connection;
    let project = args.project.as_deref();
    match args.action {
        WebhooksAction::Create {
            url,
            events,
            description,
        } => {
            let body = json!({"url": url, "event_types": events, "description": description});
            let created = connection
                .call(
                    reqwest::Method::POST,
                    &webhooks_path(project, None)?,
                    Some(body),
                )
                .await?;
            println!("id:     {}", text(&created["id"]));
            println!("secret: {}", text(&created["secret"]));
            eprintln!("(the secret is shown only now; verify deliveries with it)");
        }
        WebhooksAction::List => {
            let listed = connection
                .call(reqwest::Method::GET, &webhooks_path(project, None)?, None)
                .await?;
            for hook in listed["webhooks"].as_array().into_iter().flatten() {
                print_webhook(hook);
            }
        }
        WebhooksAction::Delete { id } => {
            connection
                .call(
                    reqwest::Method::DELETE,
                    &webhooks_path(project, Some(&id))?,
                    None,
                )
                .await?;
            println!("{id} deleted");
        }
        WebhooksAction::Deliveries { id, limit } => {
            let path = format!(
                "{}/deliveries?limit={limit}",
                webhooks_path(project, Some(&id))?
            );
            let page = connection.call(reqwest::Method::GET, &path, None).await?;
            for delivery in page["deliveries"].as_array().into_iter().flatten() {
                print_delivery(delivery);
            }
        }
    }
    Ok(0)
}

/// One subscription per line: id, state, event filter (`*` for all) and URL.
fn print_webhook(hook: &Value) {
    let events: Vec<&str> = hook["event_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{}  {:<8} {:<40} {}",
        text(&hook["id"]),
        if hook["enabled"].as_bool() == Some(true) {
            "enabled"
        } else {
            "disabled"
        },
        if events.is_empty() {
            "*".to_owned()
        } else {
            events.join(",")
        },
        text(&hook["url"]),
    );
}

/// A delivery's summary line, then one indented line per attempt.
fn print_delivery(delivery: &Value) {
    println!(
        "{}  {:<10} {:<24} {}",
        text(&delivery["event_id"]),
        text(&delivery["status"]),
        text(&delivery["event_type"]),
        text(&delivery["created_at"]),
    );
    for attempt in delivery["attempts"].as_array().into_iter().flatten() {
        println!(
            "    attempt {}: {} {}ms {}",
            attempt["attempt"],
            attempt["status_code"],
            attempt["duration_ms"],
            text(&attempt["error"]),
        );
    }
}
