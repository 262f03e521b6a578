//! The project's MCP servers as a provider receives them (the `mcp_servers` request option,
//! set by the host for plugins whose manifest grants `mcp_servers`), and their shape for
//! each agent family: ACP's `session/new` `mcpServers`, Claude Code's `--mcp-config`,
//! OpenCode's `mcp` configuration.
//!
//! A value that is a secret arrives as a credential *name*. It never becomes a value in the
//! guest: it is exported to the agent's process as an environment variable the host fills at
//! spawn ([`Shaped::secret_env`]), and the configuration refers to that variable in the
//! agent's own syntax, or (for a stdio server's environment, which agents pass down from
//! their own) leaves it to be inherited. Pure, so it is unit tested natively.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The request option that carries the servers.
pub const OPTION: &str = "mcp_servers";

/// One server of the project.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum McpServer {
    /// A program the agent starts.
    Stdio {
        name: String,
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: Vec<Var>,
    },
    /// A server the agent reaches over HTTP.
    Http {
        name: String,
        url: String,
        #[serde(default)]
        headers: Vec<Var>,
    },
}

/// An environment variable or header: a plain `value` or a `credential` name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Var {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

/// Servers in one agent's shape, plus what the agent's process needs for them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shaped {
    /// The configuration, in the agent's shape.
    pub config: Value,
    /// `(variable, credential)`: export the credential to the agent as this variable
    /// (the host resolves it at spawn; the manifest grant comes with `mcp_servers`).
    pub secret_env: Vec<(String, String)>,
    /// What could not be handed over, in words (a `warning` event each).
    pub warnings: Vec<String>,
}

/// The servers in the request's options (none when the option is absent).
pub fn servers(options: &Map<String, Value>) -> Result<Vec<McpServer>, String> {
    match options.get(OPTION) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| format!("invalid {OPTION} option: {e}")),
    }
}

impl Shaped {
    /// A stdio server's credential-valued variable, inherited from the agent's environment
    /// (agents start stdio servers with their own environment plus the server's). Two
    /// servers needing one variable from different credentials cannot share the agent's.
    fn inherit(&mut self, server: &str, var: &str, credential: &str) -> Result<(), String> {
        match self.secret_env.iter().find(|(v, _)| v == var) {
            Some((_, c)) if c != credential => Err(format!(
                "MCP server {server}: variable {var} would need credential {credential} while \
                 another server takes it from {c}; the agent's environment holds one of them"
            )),
            Some(_) => Ok(()),
            None => {
                self.secret_env
                    .push((var.to_owned(), credential.to_owned()));
                Ok(())
            }
        }
    }

    /// A credential the configuration refers to by a variable of its own; the reference in
    /// the agent's syntax comes from `syntax`.
    fn referenced(&mut self, credential: &str, syntax: impl Fn(&str) -> String) -> String {
        let var = format!("RDEV_MCP_SECRET_{}", self.secret_env.len());
        self.secret_env.push((var.clone(), credential.to_owned()));
        syntax(&var)
    }
}

/// Plain values only; credential-valued stdio variables are inherited.
fn stdio_env(shaped: &mut Shaped, server: &str, env: &[Var]) -> Result<Map<String, Value>, String> {
    let mut plain = Map::new();
    for var in env {
        match (&var.value, &var.credential) {
            (_, Some(credential)) => shaped.inherit(server, &var.name, credential)?,
            (Some(value), None) => {
                plain.insert(var.name.clone(), json!(value));
            }
            (None, None) => {}
        }
    }
    Ok(plain)
}

/// ACP's `mcpServers` of `session/new`: stdio `{name, command, args, env: [{name, value}]}`,
/// HTTP `{type: "http", name, url, headers: [{name, value}]}`. ACP has no variable
/// syntax, so an HTTP server with a credential header is left out with a warning.
pub fn acp(servers: &[McpServer]) -> Result<Shaped, String> {
    let mut shaped = Shaped::default();
    let mut list = Vec::new();
    let pairs = |map: Map<String, Value>| -> Vec<Value> {
        map.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect()
    };
    for server in servers {
        match server {
            McpServer::Stdio {
                name,
                command,
                args,
                env,
            } => {
                let env = stdio_env(&mut shaped, name, env)?;
                list.push(
                    json!({"name": name, "command": command, "args": args, "env": pairs(env)}),
                );
            }
            McpServer::Http { name, url, headers } => {
                if let Some(h) = headers.iter().find(|h| h.credential.is_some()) {
                    shaped.warnings.push(format!(
                        "MCP server {name} left out: its header {} is a credential, and ACP \
                         takes header values only as text, which would put the secret in the \
                         provider",
                        h.name
                    ));
                    continue;
                }
                let headers: Map<String, Value> = headers
                    .iter()
                    .map(|h| (h.name.clone(), json!(h.value.clone().unwrap_or_default())))
                    .collect();
                list.push(
                    json!({"type": "http", "name": name, "url": url, "headers": pairs(headers)}),
                );
            }
        }
    }
    shaped.config = Value::Array(list);
    Ok(shaped)
}

/// Headers as an object, credential values as a variable reference in `syntax`.
fn headers_object(
    shaped: &mut Shaped,
    headers: &[Var],
    syntax: &impl Fn(&str) -> String,
) -> Map<String, Value> {
    let mut map = Map::new();
    for header in headers {
        let value = match (&header.value, &header.credential) {
            (_, Some(credential)) => shaped.referenced(credential, syntax),
            (Some(value), None) => value.clone(),
            (None, None) => continue,
        };
        map.insert(header.name.clone(), json!(value));
    }
    map
}

/// Claude Code's `--mcp-config` object `{"mcpServers": {name: …}}`; credential headers as
/// `${VAR}`, which Claude Code expands from its environment.
pub fn claude(servers: &[McpServer]) -> Result<Shaped, String> {
    let mut shaped = Shaped::default();
    let mut map = Map::new();
    let syntax = |var: &str| format!("${{{var}}}");
    for server in servers {
        let entry = match server {
            McpServer::Stdio {
                name,
                command,
                args,
                env,
            } => {
                let env = stdio_env(&mut shaped, name, env)?;
                json!({"type": "stdio", "command": command, "args": args, "env": env})
            }
            McpServer::Http { url, headers, .. } => {
                let headers = headers_object(&mut shaped, headers, &syntax);
                json!({"type": "http", "url": url, "headers": headers})
            }
        };
        map.insert(name_of(server).to_owned(), entry);
    }
    shaped.config = json!({ "mcpServers": map });
    Ok(shaped)
}

/// OpenCode's `mcp` configuration section: `{"type": "local", "command": [...],
/// "environment": {...}}` / `{"type": "remote", "url", "headers"}`; every credential as
/// `{env:VAR}`, which OpenCode substitutes when it reads its configuration.
pub fn opencode(servers: &[McpServer]) -> Shaped {
    let mut shaped = Shaped::default();
    let mut map = Map::new();
    let syntax = |var: &str| format!("{{env:{var}}}");
    for server in servers {
        let entry = match server {
            McpServer::Stdio {
                command, args, env, ..
            } => {
                let mut argv = vec![command.clone()];
                argv.extend(args.iter().cloned());
                let environment = headers_object(&mut shaped, env, &syntax);
                json!({"type": "local", "command": argv, "environment": environment, "enabled": true})
            }
            McpServer::Http { url, headers, .. } => {
                let headers = headers_object(&mut shaped, headers, &syntax);
                json!({"type": "remote", "url": url, "headers": headers, "enabled": true})
            }
        };
        map.insert(name_of(server).to_owned(), entry);
    }
    shaped.config = Value::Object(map);
    shaped
}

fn name_of(server: &McpServer) -> &str {
    match server {
        McpServer::Stdio { name, .. } | McpServer::Http { name, .. } => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<McpServer> {
        let options = json!({"mcp_servers": [
            {"type": "stdio", "name": "files", "command": "node", "args": ["srv.js"],
             "env": [{"name": "MODE", "value": "ro"}, {"name": "TOKEN", "credential": "GH"}]},
            {"type": "http", "name": "docs", "url": "https://d.example/mcp",
             "headers": [{"name": "Authorization", "credential": "DOCS"},
                         {"name": "X-Plain", "value": "1"}]},
        ]});
        servers(options.as_object().unwrap()).expect("valid")
    }

    #[test]
    fn acp_inherits_stdio_secrets_and_leaves_out_http_servers_with_secret_headers() {
        let shaped = acp(&sample()).expect("shaped");
        assert_eq!(
            shaped.config,
            json!([{"name": "files", "command": "node", "args": ["srv.js"],
                    "env": [{"name": "MODE", "value": "ro"}]}])
        );
        assert_eq!(shaped.secret_env, [("TOKEN".to_owned(), "GH".to_owned())]);
        assert_eq!(shaped.warnings.len(), 1);
        assert!(shaped.warnings[0].contains("docs"), "{:?}", shaped.warnings);
        let plain_http = vec![McpServer::Http {
            name: "d".into(),
            url: "http://h/".into(),
            headers: vec![Var {
                name: "A".into(),
                value: Some("b".into()),
                credential: None,
            }],
        }];
        assert_eq!(
            acp(&plain_http).expect("shaped").config,
            json!([{"type": "http", "name": "d", "url": "http://h/",
                    "headers": [{"name": "A", "value": "b"}]}])
        );
    }

    #[test]
    fn claude_and_opencode_refer_to_secrets_by_variables() {
        let claude = claude(&sample()).expect("shaped");
        let servers = &claude.config["mcpServers"];
        assert_eq!(servers["files"]["env"], json!({"MODE": "ro"}));
        assert_eq!(
            servers["docs"]["headers"]["Authorization"],
            "${RDEV_MCP_SECRET_1}"
        );
        assert_eq!(servers["docs"]["headers"]["X-Plain"], "1");
        assert_eq!(
            claude.secret_env,
            [
                ("TOKEN".to_owned(), "GH".to_owned()),
                ("RDEV_MCP_SECRET_1".to_owned(), "DOCS".to_owned())
            ]
        );
        let opencode = opencode(&sample());
        assert_eq!(
            opencode.config["files"],
            json!({"type": "local", "command": ["node", "srv.js"], "enabled": true,
                   "environment": {"MODE": "ro", "TOKEN": "{env:RDEV_MCP_SECRET_0}"}})
        );
        assert_eq!(opencode.config["docs"]["type"], "remote");
        assert_eq!(
            opencode.config["docs"]["headers"]["Authorization"],
            "{env:RDEV_MCP_SECRET_1}"
        );
        assert_eq!(opencode.secret_env.len(), 2);
    }

    #[test]
    fn one_inherited_variable_from_two_credentials_is_refused() {
        let clash = vec![
            McpServer::Stdio {
                name: "a".into(),
                command: "x".into(),
                args: vec![],
                env: vec![Var {
                    name: "T".into(),
                    value: None,
                    credential: Some("A".into()),
                }],
            },
            McpServer::Stdio {
                name: "b".into(),
                command: "y".into(),
                args: vec![],
                env: vec![Var {
                    name: "T".into(),
                    value: None,
                    credential: Some("B".into()),
                }],
            },
        ];
        assert!(acp(&clash).expect_err("clash").contains("variable T"));
        assert!(servers(json!({"mcp_servers": 3}).as_object().unwrap()).is_err());
        assert!(servers(&Map::new()).expect("none").is_empty());
    }
}
