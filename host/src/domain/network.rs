//! Which destinations a project's commands may reach: allow-list rules (`host`,
//! `host:port`, `*.domain[:port]`) and a project's stored policy. Enforced by the executor's
//! egress proxy; validated here so the API refuses a bad rule before anything stores it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ProjectId;

/// Most rules one allow-list may hold.
pub const MAX_ALLOW_RULES: usize = 64;

/// One allowed destination: `host`, `host:port` or `*.domain[:port]`; no port means any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: String,
    port: Option<u16>,
}

/// A rule that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress rule {rule:?}: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: &'static str,
}

impl std::str::FromStr for AllowRule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<Self, RuleError> {
        let err = |reason| RuleError {
            rule: rule.to_owned(),
            reason,
        };
        let trimmed = rule.trim();
        let parse_port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| err("the port is not a number"))
        };
        let (host, port) = if let Some(v6) = trimmed.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("`[` is not closed"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(parse_port(port)?)),
                None if after.is_empty() => (host, None),
                None => return Err(err("text after `]`")),
            }
        } else if trimmed.matches(':').count() == 1 {
            let (host, port) = trimmed.split_once(':').ok_or_else(|| err("no port"))?;
            (host, Some(parse_port(port)?))
        } else {
            (trimmed, None)
        };
        let host = host.to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid {
            return Err(err(
                "a host is letters, digits, dots, dashes (or `*.` first)",
            ));
        }
        Ok(Self { host, port })
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl AllowRule {
    /// Whether the rule admits `host:port` (host compared case-insensitively).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_matches = match self.host.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        host_matches && self.port.is_none_or(|p| p == port)
    }

    /// The port of a rule naming a loopback address, which gets a forward of its own.
    pub fn loopback_port(&self) -> Option<u16> {
        let loopback = self.host == "localhost"
            || self.host == "::1"
            || self
                .host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        self.port.filter(|_| loopback)
    }
}

/// Whether any rule admits `host:port`.
pub fn allowed(rules: &[AllowRule], host: &str, port: u16) -> bool {
    rules.iter().any(|r| r.allows(host, port))
}

/// Parses an allow-list, refusing the first invalid rule and lists over
/// [`MAX_ALLOW_RULES`].
pub fn parse_allow_list(rules: &[String]) -> Result<Vec<AllowRule>, RuleError> {
    if rules.len() > MAX_ALLOW_RULES {
        return Err(RuleError {
            rule: format!("{} rules", rules.len()),
            reason: "an allow-list holds at most 64 rules",
        });
    }
    rules.iter().map(|r| r.parse()).collect()
}

/// A project's own allow-list, replacing the server's default for its commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkPolicy {
    pub project_id: ProjectId,
    /// Rules in their canonical form (lowercase host).
    pub allow: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().expect("valid rule")
    }

    #[test]
    fn rules_match_host_port_and_wildcards() {
        assert!(rule("api.anthropic.com:443").allows("API.anthropic.com", 443));
        assert!(!rule("api.anthropic.com:443").allows("api.anthropic.com", 80));
        assert!(rule("example.com").allows("example.com", 8080));
        assert!(!rule("example.com").allows("evil-example.com", 443));
        assert!(rule("*.example.com:443").allows("a.b.example.com", 443));
        assert!(!rule("*.example.com:443").allows("example.com", 443));
        assert!(rule("[::1]:9").allows("::1", 9));
        assert_eq!(rule("127.0.0.1:8080").loopback_port(), Some(8080));
        assert_eq!(rule("localhost").loopback_port(), None);
        assert_eq!(rule("example.com:1").loopback_port(), None);
        assert_eq!(rule("[::1]:9").to_string(), "[::1]:9");
        for bad in ["", "exa mple.com", "host:99999", "a/b", "*."] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_allow_list_is_refused_at_its_first_bad_rule_or_when_too_long() {
        let error = parse_allow_list(&["ok.example".into(), "no good".into()]).unwrap_err();
        assert_eq!(error.rule, "no good");
        let long: Vec<String> = (0..=MAX_ALLOW_RULES)
            .map(|i| format!("h{i}.example"))
            .collect();
        assert!(parse_allow_list(&long).is_err());
        assert_eq!(parse_allow_list(&long[..3]).expect("valid").len(), 3);
    }
}
