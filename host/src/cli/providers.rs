//! `rdev providers`: what the plugins directory offers and why a plugin does not load.

use std::sync::Arc;

use anyhow::Result;

use super::plugins::{PluginsArgs, start_registry};
use crate::adapters::local::{EnvSecrets, LocalExecutor};
use crate::domain::Capabilities;
use crate::registry::{ProviderState, ProviderStatus};

/// Lists every provider in the plugins directory.
#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    pub plugins: PluginsArgs,
    /// One JSON object per provider and line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the listing; exits 1 when any plugin failed to load, so scripts notice.
pub async fn run(args: ProvidersArgs) -> Result<i32> {
    let dir = args.plugins.resolve()?;
    let secrets = Arc::new(EnvSecrets::default());
    // Listing runs nothing; the executor is only there because the runtime needs one.
    let executor = Arc::new(LocalExecutor::per_project(
        std::env::temp_dir().join("rdev-providers"),
        secrets.clone(),
    ));
    let registry = start_registry(dir, executor, secrets, None, None).await?;
    let statuses = registry.statuses();
    if args.json {
        for status in &statuses {
            println!("{}", serde_json::to_string(status)?);
        }
    } else {
        print!("{}", table(&statuses));
    }
    let broken = statuses.iter().any(|s| s.state != ProviderState::Serving);
    Ok(i32::from(broken))
}

/// Names of the capabilities a provider has.
pub fn capability_names(caps: &Capabilities) -> Vec<&'static str> {
    [
        (caps.streaming, "streaming"),
        (caps.session_resume, "session-resume"),
        (caps.cancel, "cancel"),
        (caps.tools, "tools"),
        (caps.cost_reporting, "cost"),
        (caps.idempotent, "idempotent"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

fn state_name(state: ProviderState) -> &'static str {
    match state {
        ProviderState::Serving => "serving",
        ProviderState::Stale => "stale",
        ProviderState::Failed => "failed",
        ProviderState::Loading => "loading",
    }
}

/// The human listing: one row per provider, the default marked with `*`, errors below.
fn table(statuses: &[ProviderStatus]) -> String {
    if statuses.is_empty() {
        return "no providers installed\n".to_owned();
    }
    let rows: Vec<[String; 5]> = statuses
        .iter()
        .map(|s| {
            let name = if s.default {
                format!("{}*", s.name)
            } else {
                s.name.clone()
            };
            [
                name,
                s.version.clone().unwrap_or_else(|| "-".into()),
                s.abi.clone().unwrap_or_else(|| "-".into()),
                state_name(s.state).to_owned(),
                s.capabilities
                    .as_ref()
                    .map(|c| capability_names(c).join(","))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "ABI", "STATE", "CAPABILITIES"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    for s in statuses {
        if let Some(since) = s.loading_since {
            out.push_str(&format!(
                "{}: loading since {}\n",
                s.name,
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if let Some(error) = &s.last_error {
            out.push_str(&format!("{}: {error}\n", s.name));
        }
    }
    out
}
