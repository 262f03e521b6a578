//! Client commands that talk to a running `rdev serve`: `rdev run`, `rdev logs`,
//! `rdev cancel`, `rdev tokens` and `rdev projects list|get|delete`. Server URL and token
//! come from flags, then `RDEV_URL` / `RDEV_TOKEN`, then the client config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use super::follow::follow;
use super::output::{EXIT_CANCELLED, PromptArgs};
use super::spinner::Spinner;
use super::terminal::Prompter;

/// Used when neither a flag, the environment nor the config file names a server.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the server [default: the config file's `server`, else http://127.0.0.1:8080].
    #[arg(long, env = "RDEV_URL", global = true)]
    pub server: Option<String>,
    /// Bearer token (`rdev serve` prints the admin token on first start) [default: the
    /// config file's `token`].
    #[arg(long, env = "RDEV_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// TOML file with `server` and `token`, so a token need not sit in the shell's history
    /// or environment [default: $XDG_CONFIG_HOME/rdev/client.toml, else
    /// ~/.config/rdev/client.toml, used when it exists].
    #[arg(long, env = "RDEV_CLIENT_CONFIG", global = true)]
    pub client_config: Option<PathBuf>,
}

/// The client config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
}

/// The default location of the client config file, when a home is known.
fn default_client_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("rdev").join("client.toml"))
}

/// Reads `path`; a file named explicitly must exist, the default one may be absent.
fn read_client_file(path: &Path, explicit: bool) -> anyhow::Result<ClientFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ClientFile::default());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading client config {}", path.display()));
        }
    };
    warn_if_readable_by_others(path);
    // toml's message quotes the offending line, which may hold the token: keep only where.
    toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].lines().count().max(1);
                format!(" at line {line}")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "parsing client config {}{at}: expected `server = \"…\"` and `token = \"…\"`",
            path.display()
        )
    })
}

/// A token in a file others can read is a leaked token; say so, but keep working.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users; `chmod 600` it, it may hold a token",
            path.display()
        );
    }
}

impl Connection {
    /// Fills what flags and environment left open from the config file, once per command.
    pub(super) fn resolved(&self) -> anyhow::Result<Connection> {
        if self.server.is_some() && self.token.is_some() {
            return Ok(self.clone());
        }
        let file = match (&self.client_config, default_client_config()) {
            (Some(path), _) => read_client_file(path, true)?,
            (None, Some(path)) => read_client_file(&path, false)?,
            (None, None) => ClientFile::default(),
        };
        Ok(Connection {
            server: self
                .server
                .clone()
                .or(file.server)
                .or_else(|| Some(DEFAULT_SERVER.to_owned())),
            token: self.token.clone().or(file.token),
            client_config: self.client_config.clone(),
        })
    }

    pub(super) fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_SERVER)
    }

    pub(super) fn client(&self) -> anyhow::Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")
    }

    pub(super) fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let token = self.token.as_deref().context(
            "a token is required: pass --token, set RDEV_TOKEN or put `token` in the client config",
        )?;
        let url = format!("{}{path}", self.server().trim_end_matches('/'));
        Ok(http.request(method, url).bearer_auth(token))
    }

    /// Sends and decodes JSON; a problem+json answer becomes an error with its code.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let this = self.resolved()?;
        let http = this.client()?;
        let mut request = this.request(&http, method, path)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("contacting {}", this.server()))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or(&text);
            bail!("{status}: {code}: {message}");
        }
        Ok(value)
    }
}

/// `rdev run`: submit and follow.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub project: String,
    /// The default provider when omitted.
    #[arg(long)]
    pub provider: Option<String>,
    /// Seconds the provider may run.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub asked: PromptArgs,
    pub prompt: String,
}

/// `rdev logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connection: Connection,
    pub command_id: String,
    /// Keep following until the command ends (otherwise print what is stored and stop
    /// at the end of the stream as well; a finished command's stream is complete).
    #[arg(long)]
    pub follow: bool,
}

/// `rdev cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connection: Connection,
    pub command_id: String,
}

/// `rdev tokens`.
#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub action: TokensAction,
}

#[derive(Debug, Subcommand)]
pub enum TokensAction {
    /// Issue a token; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// `admin` or `member`.
        #[arg(long, default_value = "member")]
        role: String,
        /// Project a member token may use (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

/// The submit body `rdev run`'s flags describe.
fn submit_body(args: &RunArgs) -> anyhow::Result<Value> {
    let mut body = json!({"prompt": args.prompt});
    if let Some(timeout) = args.timeout {
        body["timeout_secs"] = json!(timeout);
    }
    if let Some(session) = &args.asked.session {
        body["session_id"] = json!(session);
    }
    if let Some(model) = &args.asked.model {
        body["model"] = json!(model);
    }
    if !args.asked.options.is_empty() {
        body["options"] = Value::Object(args.asked.option_map()?);
    }
    Ok(body)
}

/// Submits a command, follows its stream and exits with its status; Ctrl-C cancels it on
/// the server (a second Ctrl-C stops waiting). On a terminal it asks the command's
/// approvals inline and sends typed lines as follow-up input (`cli::terminal`).
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let body = submit_body(&args)?;
    let path = match &args.provider {
        Some(provider) => format!("/projects/{}/{provider}", args.project),
        None => format!("/projects/{}/commands", args.project),
    };
    let submitted = args
        .connection
        .call(reqwest::Method::POST, &path, Some(body))
        .await?;
    let id = submitted["command_id"]
        .as_str()
        .context("the server returned no command_id")?
        .to_owned();
    eprintln!("command {id} queued");
    let stream_url = submitted["stream_url"]
        .as_str()
        .context("the server returned no stream_url")?;
    let signals = tokio::spawn(cancel_on_interrupt(args.connection.clone(), id.clone()));
    // On a terminal the person may be typing: a spinner would erase what they type.
    let prompter = Prompter::on_terminal(args.connection.clone(), id);
    let spinner = match prompter {
        Some(_) => Spinner::disabled(),
        None => Spinner::stderr("waiting for events"),
    };
    let ended = follow(&args.connection, stream_url, &spinner, prompter.as_ref()).await;
    signals.abort();
    Ok(ended?.exit_code())
}

/// The first Ctrl-C (or SIGTERM) asks the server to cancel the command, whose stream then
/// ends `cancelled`; the next one exits at once with 130.
async fn cancel_on_interrupt(connection: Connection, id: String) {
    let Some(mut interrupts) = super::interrupts::Interrupts::listen() else {
        return;
    };
    let mut asked = false;
    loop {
        interrupts.next().await;
        if asked {
            eprintln!("rdev: stopped waiting; command {id} may still be cancelling");
            std::process::exit(EXIT_CANCELLED);
        }
        asked = true;
        eprintln!("rdev: cancelling {id}… (Ctrl-C again to stop waiting)");
        let path = format!("/commands/{id}/cancel");
        if let Err(error) = connection.call(reqwest::Method::POST, &path, None).await {
            eprintln!("rdev: cancelling {id} failed: {error:#}");
        }
    }
}

/// `provider <name> <version> (abi <abi>, sha256 <hash>)`: which build ran the command, when
/// the server recorded it (not before the command started).
fn provenance_line(provenance: &Value) -> Option<String> {
    let field = |name: &str| provenance[name].as_str();
    Some(format!(
        "[provider {} {} (abi {}, sha256 {})]",
        field("provider")?,
        field("version")?,
        field("abi")?,
        field("component_sha256")?
    ))
}

/// Prints a command's events (all of them; the stream ends at its terminal event), after
/// the provider build that ran it.
pub async fn logs(args: LogsArgs) -> anyhow::Result<i32> {
    let command = args
        .connection
        .call(
            reqwest::Method::GET,
            &format!("/commands/{}", args.command_id),
            None,
        )
        .await?;
    let status = command["status"].as_str().unwrap_or_default();
    if let Some(line) = provenance_line(&command["provenance"]) {
        eprintln!("{line}");
    }
    let finished = matches!(status, "completed" | "failed" | "cancelled");
    if !finished && !args.follow {
        eprintln!("[{status}; pass --follow to wait for the end]");
        return Ok(0);
    }
    let stream_url = command["stream_url"].as_str().context("no stream_url")?;
    let ended = follow(&args.connection, stream_url, &Spinner::disabled(), None).await?;
    Ok(ended.exit_code())
}

/// Cancels a command.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<i32> {
    let command = args
        .connection
        .call(
            reqwest::Method::POST,
            &format!("/commands/{}/cancel", args.command_id),
            None,
        )
        .await?;
    println!(
        "{} {}",
        args.command_id,
        command["status"].as_str().unwrap_or_default()
    );
    Ok(0)
}

/// Manages tokens.
pub async fn tokens(args: TokensArgs) -> anyhow::Result<i32> {
    let connection = &args.connection;
    match args.action {
        TokensAction::Create {
            name,
            role,
            projects,
        } => {
            let created = connection
                .call(
                    reqwest::Method::POST,
                    "/tokens",
                    Some(json!({"name": name, "role": role, "projects": projects})),
                )
                .await?;
            println!("id:    {}", created["id"].as_str().unwrap_or_default());
            println!("token: {}", created["token"].as_str().unwrap_or_default());
            eprintln!("(the token is shown only now)");
        }
        TokensAction::List => {
            let listed = connection
                .call(reqwest::Method::GET, "/tokens", None)
                .await?;
            for token in listed["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<7} {:<24} {}{}",
                    token["id"].as_str().unwrap_or_default(),
                    token["role"].as_str().unwrap_or_default(),
                    token["name"].as_str().unwrap_or_default(),
                    token["projects"],
                    if token["revoked_at"].is_string() {
                        "  (revoked)"
                    } else {
                        ""
                    }
                );
            }
        }
        TokensAction::Revoke { id } => {
            connection
                .call(reqwest::Method::DELETE, &format!("/tokens/{id}"), None)
                .await?;
            println!("{id} revoked");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_prints_only_when_recorded() {
        let recorded = json!({
            "provider": "echo", "version": "1.0.0", "abi": "0.2.0", "component_sha256": "ab12"
        });
        assert_eq!(
            provenance_line(&recorded).as_deref(),
            Some("[provider echo 1.0.0 (abi 0.2.0, sha256 ab12)]")
        );
        assert_eq!(provenance_line(&Value::Null), None);
    }
}
