//! Client commands that talk to a running `rdev serve`: `rdev run`, `rdev logs`,
//! `rdev cancel`, `rdev tokens` and `rdev projects list|get|delete`. Server URL and token
//! come from flags, then `RDEV_URL` / `RDEV_TOKEN`, then the client config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::spinner::Spinner;

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
    fn resolved(&self) -> anyhow::Result<Connection> {
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

    fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_SERVER)
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")
    }

    fn request(
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

/// Exit code for a command's final status: 0 completed, 1 failed, 130 cancelled.
fn exit_code(status: &str) -> i32 {
    match status {
        "completed" => 0,
        "cancelled" => 130,
        _ => 1,
    }
}

/// Prints one stream event readably; returns the final status at `done`.
fn render(event: &str, data: &Value) -> Option<String> {
    match event {
        "output" => {
            let text = data["text"].as_str().unwrap_or_default();
            if data["stream"] == "stderr" {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
        }
        "message" | "thinking" => println!("{}", data["text"].as_str().unwrap_or_default()),
        "tool_use" => println!(
            "→ {} {}",
            data["name"].as_str().unwrap_or("tool"),
            data["input"]
        ),
        "error" | "warning" => {
            eprintln!("{event}: {}", data["message"].as_str().unwrap_or_default())
        }
        "status" => eprintln!("[{}]", data["status"].as_str().unwrap_or_default()),
        "done" => {
            let status = data["status"].as_str().unwrap_or("failed").to_owned();
            match data["error"].as_str() {
                Some(error) => eprintln!("[{status}: {error}]"),
                None => eprintln!("[{status}]"),
            }
            return Some(status);
        }
        _ => {}
    }
    None
}

/// Follows a stream to its `done` event, reconnecting with `Last-Event-ID` when the
/// connection drops. Returns the final status. `spinner` spins while nothing arrives.
async fn follow(
    connection: &Connection,
    stream_url: &str,
    spinner: &Spinner,
) -> anyhow::Result<String> {
    let connection = &connection.resolved()?;
    let http = connection.client()?;
    let mut last_id: Option<String> = None;
    let mut failures = 0u32;
    loop {
        spinner.resume();
        let mut request = connection.request(&http, reqwest::Method::GET, stream_url)?;
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => bail!("stream refused: {}", response.status()),
            Err(error) => {
                failures += 1;
                if failures > 10 {
                    return Err(error).context("the stream kept failing");
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(chunk) = body.next().await {
            spinner.clear();
            let Ok(chunk) = chunk else { break };
            failures = 0;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if id.is_some() {
                    last_id = id;
                }
                if let Some(event) = event {
                    let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if let Some(status) = render(&event, &value) {
                        return Ok(status);
                    }
                }
            }
            spinner.resume();
        }
        // The connection dropped before `done`: resume where it stopped.
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits a command, follows its stream and exits with its status.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut body = json!({"prompt": args.prompt});
    if let Some(timeout) = args.timeout {
        body["timeout_secs"] = json!(timeout);
    }
    let path = match &args.provider {
        Some(provider) => format!("/projects/{}/{provider}", args.project),
        None => format!("/projects/{}/commands", args.project),
    };
    let submitted = args
        .connection
        .call(reqwest::Method::POST, &path, Some(body))
        .await?;
    let id = submitted["command_id"].as_str().unwrap_or_default();
    eprintln!("command {id} queued");
    let stream_url = submitted["stream_url"]
        .as_str()
        .context("the server returned no stream_url")?;
    let spinner = Spinner::stderr("waiting for events");
    let status = follow(&args.connection, stream_url, &spinner).await?;
    Ok(exit_code(&status))
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
    let status = follow(&args.connection, stream_url, &Spinner::disabled()).await?;
    Ok(exit_code(&status))
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

    #[test]
    fn exit_codes_mirror_the_final_status() {
        assert_eq!(exit_code("completed"), 0);
        assert_eq!(exit_code("failed"), 1);
        assert_eq!(exit_code("cancelled"), 130);
        assert_eq!(
            render("done", &json!({"status": "failed"})).as_deref(),
            Some("failed")
        );
        assert_eq!(
            render("output", &json!({"stream": "stdout", "text": ""})),
            None
        );
    }
}
