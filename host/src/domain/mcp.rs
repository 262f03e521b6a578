//! A project's MCP servers: the tool servers its agents are given (stdio programs or HTTP
//! endpoints). Values that are secrets are credential references, never values, so the
//! configuration can be stored, shown and handed to a provider without a secret in it; the
//! host resolves them only where it spawns the agent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ProjectId;
use super::credential::CredentialName;

/// The request option under which a provider granted `mcp_servers` receives its project's
/// servers (this module's JSON shape); the host always sets it, so a request cannot.
pub const MCP_SERVERS_OPTION: &str = "mcp_servers";

/// Most servers one project may configure.
pub const MAX_SERVERS: usize = 32;
/// Most arguments, environment variables or headers of one server.
pub const MAX_ITEMS: usize = 64;
/// Longest command, argument, URL or plain value, in bytes.
pub const MAX_TEXT: usize = 4096;

/// One MCP server, in the transport's shape (`type`: `stdio` or `http`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum McpServer {
    /// A program the agent starts and talks to over its stdin/stdout.
    Stdio {
        /// Unique within the project: letters, digits, `-`, `_`; at most 64.
        name: String,
        /// The program (a name on the agent's PATH or an absolute path).
        command: String,
        #[serde(default)]
        args: Vec<String>,
        /// Environment of the server's process; credential references are resolved by the
        /// host when it spawns the agent.
        #[serde(default)]
        env: Vec<McpVar>,
    },
    /// A server the agent reaches over streamable HTTP.
    Http {
        name: String,
        /// `http://` or `https://`.
        url: String,
        /// Request headers; credential references are resolved by the host.
        #[serde(default)]
        headers: Vec<McpVar>,
    },
}

/// A named value: exactly one of `value` (plain text, stored and shown as is) or
/// `credential` (the name of a stored credential, resolved at use, never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A project's stored MCP servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectMcpServers {
    pub project_id: ProjectId,
    pub servers: Vec<McpServer>,
    pub updated_at: DateTime<Utc>,
}

/// Why a server list was refused; `path` names the offending field
/// (`servers[1].env[0].credential`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct McpError {
    pub path: String,
    pub reason: String,
}

fn refuse<T>(path: impl Into<String>, reason: impl Into<String>) -> Result<T, McpError> {
    Err(McpError {
        path: path.into(),
        reason: reason.into(),
    })
}

impl McpServer {
    /// The server's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Stdio { name, .. } | Self::Http { name, .. } => name,
        }
    }

    /// Its environment variables or headers.
    pub fn vars(&self) -> &[McpVar] {
        match self {
            Self::Stdio { env, .. } => env,
            Self::Http { headers, .. } => headers,
        }
    }
}

impl McpVar {
    /// The credential this value references, if it is one.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }
}

/// Every credential the servers reference, each once, in order of appearance.
pub fn referenced_credentials(servers: &[McpServer]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in servers
        .iter()
        .flat_map(|s| s.vars())
        .filter_map(McpVar::credential)
    {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

fn check_text(path: &str, text: &str, what: &str) -> Result<(), McpError> {
    if text.len() > MAX_TEXT {
        return refuse(path, format!("{what} is longer than {MAX_TEXT} bytes"));
    }
    if text.contains('\0') {
        return refuse(path, format!("{what} contains a NUL byte"));
    }
    Ok(())
}

fn check_server_name(path: &str, name: &str) -> Result<(), McpError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        refuse(path, "a server name is 1–64 letters, digits, `-` or `_`")
    }
}

fn check_var(path: &str, var: &McpVar, header: bool) -> Result<(), McpError> {
    let name_ok = if header {
        !var.name.is_empty()
            && var.name.len() <= 128
            && var
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    } else {
        CredentialName::parse(var.name.clone()).is_ok()
    };
    if !name_ok {
        let rule = if header {
            "a header name is an HTTP token (letters, digits, `-`, …)"
        } else {
            "a variable name is `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes"
        };
        return refuse(format!("{path}.name"), rule);
    }
    match (&var.value, &var.credential) {
        (Some(value), None) => {
            check_text(&format!("{path}.value"), value, "the value")?;
            if header && value.bytes().any(|b| b == b'\r' || b == b'\n') {
                return refuse(format!("{path}.value"), "a header value has no line breaks");
            }
            Ok(())
        }
        (None, Some(credential)) => CredentialName::parse(credential.clone())
            .map(|_| ())
            .or_else(|_| refuse(format!("{path}.credential"), "not a credential name")),
        _ => refuse(path, "give exactly one of `value` or `credential`"),
    }
}

fn check_vars(path: &str, vars: &[McpVar], header: bool) -> Result<(), McpError> {
    if vars.len() > MAX_ITEMS {
        return refuse(path, format!("at most {MAX_ITEMS} entries"));
    }
    for (i, var) in vars.iter().enumerate() {
        check_var(&format!("{path}[{i}]"), var, header)?;
        if vars[..i]
            .iter()
            .any(|v| v.name.eq_ignore_ascii_case(&var.name))
        {
            return refuse(format!("{path}[{i}].name"), "named twice");
        }
    }
    Ok(())
}

fn check_server(path: &str, server: &McpServer) -> Result<(), McpError> {
    check_server_name(&format!("{path}.name"), server.name())?;
    match server {
        McpServer::Stdio {
            command, args, env, ..
        } => {
            if command.trim().is_empty() {
                return refuse(format!("{path}.command"), "the command is empty");
            }
            check_text(&format!("{path}.command"), command, "the command")?;
            if args.len() > MAX_ITEMS {
                return refuse(
                    format!("{path}.args"),
                    format!("at most {MAX_ITEMS} arguments"),
                );
            }
            for (i, arg) in args.iter().enumerate() {
                check_text(&format!("{path}.args[{i}]"), arg, "the argument")?;
            }
            check_vars(&format!("{path}.env"), env, false)
        }
        McpServer::Http { url, headers, .. } => {
            check_text(&format!("{path}.url"), url, "the URL")?;
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => return refuse(format!("{path}.url"), "the URL is not http(s)://host…"),
                Err(e) => return refuse(format!("{path}.url"), format!("not a URL: {e}")),
            }
            check_vars(&format!("{path}.headers"), headers, true)
        }
    }
}

/// Checks a whole list: names unique, every field within its rules. Whether referenced
/// credentials exist is the caller's question (it needs the store).
pub fn validate(servers: &[McpServer]) -> Result<(), McpError> {
    if servers.len() > MAX_SERVERS {
        return refuse("servers", format!("at most {MAX_SERVERS} servers"));
    }
    for (i, server) in servers.iter().enumerate() {
        let path = format!("servers[{i}]");
        check_server(&path, server)?;
        if servers[..i].iter().any(|s| s.name() == server.name()) {
            return refuse(format!("{path}.name"), "two servers have this name");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Vec<McpServer> {
        serde_json::from_value(json).expect("valid shape")
    }

    #[test]
    fn stdio_and_http_servers_parse_and_validate() {
        let servers = parse(serde_json::json!([
            {"type": "stdio", "name": "files", "command": "node", "args": ["srv.js"],
             "env": [{"name": "MODE", "value": "ro"}, {"name": "TOKEN", "credential": "GH_TOKEN"}]},
            {"type": "http", "name": "docs", "url": "https://docs.example/mcp",
             "headers": [{"name": "Authorization", "credential": "DOCS_AUTH"}]},
        ]));
        validate(&servers).expect("valid");
        assert_eq!(referenced_credentials(&servers), ["GH_TOKEN", "DOCS_AUTH"]);
        let shown = serde_json::to_value(&servers).expect("serializes");
        assert_eq!(
            shown[0]["env"][1],
            serde_json::json!({"name": "TOKEN", "credential": "GH_TOKEN"})
        );
    }

    #[test]
    fn unknown_fields_and_types_are_refused_by_the_shape() {
        for bad in [
            serde_json::json!([{"type": "stdio", "name": "a", "command": "x", "cwd": "/"}]),
            serde_json::json!([{"type": "sse", "name": "a", "url": "http://h"}]),
            serde_json::json!([{"type": "stdio", "name": "a", "command": "x",
                                "env": [{"name": "A", "secret": "x"}]}]),
        ] {
            assert!(
                serde_json::from_value::<Vec<McpServer>>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let cases = [
            (
                serde_json::json!([{"type": "stdio", "name": "a b", "command": "x"}]),
                "servers[0].name",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": " "}]),
                "servers[0].command",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": "x"},
                                {"type": "stdio", "name": "a", "command": "y"}]),
                "servers[1].name",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": "x",
                                "env": [{"name": "A"}]}]),
                "servers[0].env[0]",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": "x",
                                "env": [{"name": "A", "value": "v", "credential": "C"}]}]),
                "servers[0].env[0]",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": "x",
                                "env": [{"name": "1A", "value": "v"}]}]),
                "servers[0].env[0].name",
            ),
            (
                serde_json::json!([{"type": "stdio", "name": "a", "command": "x",
                                "env": [{"name": "A", "credential": "not-a-name"}]}]),
                "servers[0].env[0].credential",
            ),
            (
                serde_json::json!([{"type": "http", "name": "a", "url": "ftp://h"}]),
                "servers[0].url",
            ),
            (
                serde_json::json!([{"type": "http", "name": "a", "url": "nope"}]),
                "servers[0].url",
            ),
            (
                serde_json::json!([{"type": "http", "name": "a", "url": "http://h",
                                "headers": [{"name": "X", "value": "a\r\nB: c"}]}]),
                "servers[0].headers[0].value",
            ),
        ];
        for (json, path) in cases {
            let error = validate(&parse(json.clone())).expect_err(&json.to_string());
            assert_eq!(error.path, path, "{json}: {error}");
        }
        let many: Vec<McpServer> = (0..=MAX_SERVERS)
            .map(|i| McpServer::Stdio {
                name: format!("s{i}"),
                command: "x".into(),
                args: vec![],
                env: vec![],
            })
            .collect();
        assert_eq!(validate(&many).expect_err("too many").path, "servers");
    }
}
