//! Approvals and the policy that decides without asking: a permission request from a
//! running agent becomes an [`Approval`] (a stored row with a lifecycle), unless the
//! project's [`Policy`] decides it first. Pure rules only; the broker in
//! `services::approvals` stores, streams and waits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{CommandId, ProjectId};
use super::interaction::{PermissionOption, PermissionRequest};

/// Where an approval is in its life: `pending` until exactly one of the other four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Allowed,
    Denied,
    /// Nobody decided before the policy's timeout, or the host running the command was
    /// lost: a denial.
    Expired,
    /// The command was cancelled while the approval was pending.
    Cancelled,
}

impl ApprovalStatus {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for ApprovalStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => Self::Pending,
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            other => return Err(format!("unknown approval status {other:?}")),
        })
    }
}

/// One permission request of a command, with its outcome once there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    /// `apr-` and a UUIDv7.
    pub id: String,
    pub command_id: CommandId,
    pub project_id: ProjectId,
    /// The tool's name as the agent knows it.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's input as the agent would run it (guest-controlled: show, never execute).
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    pub summary: String,
    /// The agent's own choices, when it offered any.
    #[serde(default)]
    pub options: Vec<PermissionOption>,
    pub status: ApprovalStatus,
    /// Who decided: a token id, `policy` (a rule or the mode) or `host` (timeout, cancel,
    /// a lost host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The reason given with the decision (told to the agent on a denial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The decision extended the project's rules.
    #[serde(default)]
    pub remember: bool,
    pub created_at: DateTime<Utc>,
    /// When a pending approval expires (a denial).
    pub expires_at: DateTime<Utc>,
}

/// What the broker stores for a new request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    pub id: String,
    pub command_id: CommandId,
    pub project_id: ProjectId,
    pub request: PermissionRequest,
    pub expires_at: DateTime<Utc>,
}

impl NewApproval {
    /// A fresh approval id (`apr-` and a UUIDv7).
    pub fn new_id() -> String {
        format!("apr-{}", uuid::Uuid::now_v7().simple())
    }
}

/// A decision as the store records it: the final status, by whom, with what reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub status: ApprovalStatus,
    /// A token id, `policy` or `host`.
    pub decided_by: String,
    /// How the audit trail names the decider (`name (token id)` for a person).
    pub actor: String,
    pub message: Option<String>,
    pub remember: bool,
}

/// Who decides what no rule covers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Every call is denied without asking. Ordered first: the strictest.
    Deny,
    /// A person is asked; the approval expires (a denial) after the policy's timeout.
    Ask,
    /// Every call is allowed without asking.
    Allow,
}

impl PolicyMode {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Ask => "ask",
            Self::Allow => "allow",
        }
    }

    /// The stricter of this mode and a command's own `permissions`: a command can narrow
    /// its project's mode, never widen it.
    pub fn narrowed_by(self, command: Option<Self>) -> Self {
        command.map_or(self, |c| self.min(c))
    }
}

impl std::str::FromStr for PolicyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(Self::Deny),
            "ask" => Ok(Self::Ask),
            "allow" => Ok(Self::Allow),
            other => Err(format!("unknown policy mode {other:?}")),
        }
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Allow,
    Deny,
}

/// A standing decision: calls of `tool` whose subject matches `pattern` are allowed or
/// denied without asking. The subject is the input's `command` when it has one (a shell
/// tool), else the request's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// The tool's name, exactly, or `*` for every tool.
    pub tool: String,
    /// A glob: `*` any run of characters, `?` one character, `\` takes the next literally.
    #[serde(default = "any_subject")]
    pub pattern: String,
    pub action: RuleAction,
}

fn any_subject() -> String {
    "*".into()
}

/// Bounds on a policy, which is stored and evaluated on every request.
pub mod policy_limits {
    /// Most rules per project.
    pub const RULES: usize = 256;
    /// Longest tool name or pattern, in bytes.
    pub const RULE_TEXT: usize = 1024;
    /// Longest approval timeout: one day.
    pub const MAX_TIMEOUT_SECS: u64 = 86_400;
}

/// A project's approval policy. The shipped default ([`Policy::default`]) asks a person and
/// denies after five minutes: nothing is ever allowed by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_mode")]
    pub mode: PolicyMode,
    /// Checked in order before the mode; the first match decides.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Seconds a pending approval waits before it expires (a denial), 1 to 86400.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_mode() -> PolicyMode {
    PolicyMode::Ask
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// The shipped approval timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: PolicyMode::Ask,
            rules: Vec::new(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct InvalidPolicy(pub String);

/// What the policy says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { reason: String },
    Deny { reason: String },
    Ask,
}

impl Policy {
    /// Checks the bounds in [`policy_limits`].
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        use policy_limits::*;
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(InvalidPolicy(format!(
                "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
            )));
        }
        if self.rules.len() > RULES {
            return Err(InvalidPolicy(format!("more than {RULES} rules")));
        }
        for rule in &self.rules {
            if rule.tool.trim().is_empty() || rule.tool.len() > RULE_TEXT {
                return Err(InvalidPolicy(format!(
                    "a rule's tool is empty or longer than {RULE_TEXT} bytes"
                )));
            }
            if rule.pattern.len() > RULE_TEXT {
                return Err(InvalidPolicy(format!(
                    "a rule's pattern is longer than {RULE_TEXT} bytes"
                )));
            }
        }
        Ok(())
    }

    /// How long a pending approval waits.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Decides `request`: the first matching rule, else the mode narrowed by the command's
    /// own `permissions`.
    pub fn evaluate(&self, request: &PermissionRequest, command: Option<PolicyMode>) -> Verdict {
        let subject = subject(request);
        for (index, rule) in self.rules.iter().enumerate() {
            if (rule.tool == "*" || rule.tool == request.tool)
                && glob_matches(&rule.pattern, subject)
            {
                let reason = format!(
                    "project policy rule {} ({} {})",
                    index + 1,
                    rule.tool,
                    rule.pattern
                );
                return match rule.action {
                    RuleAction::Allow => Verdict::Allow { reason },
                    RuleAction::Deny => Verdict::Deny {
                        reason: format!("denied by {reason}"),
                    },
                };
            }
        }
        match self.mode.narrowed_by(command) {
            PolicyMode::Ask => Verdict::Ask,
            PolicyMode::Allow => Verdict::Allow {
                reason: "policy mode allow".into(),
            },
            PolicyMode::Deny => Verdict::Deny {
                reason: "denied: the policy for this command is deny (nobody is asked)".into(),
            },
        }
    }

    /// The rule a remembered decision adds: this tool, this exact subject. `None` when an
    /// equal rule exists or the rule list is full.
    pub fn remembered_rule(
        &self,
        request_tool: &str,
        subject: &str,
        allow: bool,
    ) -> Option<PolicyRule> {
        let rule = PolicyRule {
            tool: request_tool.to_owned(),
            pattern: glob_escape(subject),
            action: if allow {
                RuleAction::Allow
            } else {
                RuleAction::Deny
            },
        };
        let fits = rule.tool.len() <= policy_limits::RULE_TEXT
            && rule.pattern.len() <= policy_limits::RULE_TEXT
            && self.rules.len() < policy_limits::RULES;
        (fits && !self.rules.contains(&rule)).then_some(rule)
    }
}

/// What rules match against: the input's `command` when it is a string, else the summary.
pub fn subject(request: &PermissionRequest) -> &str {
    request
        .input
        .get("command")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&request.summary)
}

/// `text` as a glob that matches exactly it.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `text` matches the glob `pattern` (`*`, `?`, `\` escapes), in linear time per
/// pattern position (no backtracking blow-up on hostile input).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // reachable[i]: the tokens so far can match text[..i].
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for token in tokens {
        let mut next = vec![false; text.len() + 1];
        match token {
            Token::Any => {
                let mut any = false;
                for (i, slot) in next.iter_mut().enumerate() {
                    any |= reachable[i];
                    *slot = any;
                }
            }
            Token::One | Token::Char(_) => {
                for i in 0..text.len() {
                    let fits = match token {
                        Token::Char(c) => text[i] == c,
                        _ => true,
                    };
                    next[i + 1] = reachable[i] && fits;
                }
            }
        }
        reachable = next;
    }
    reachable[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bash(command: &str) -> PermissionRequest {
        PermissionRequest {
            tool_call_id: None,
            tool: "Bash".into(),
            input: serde_json::json!({ "command": command }),
            summary: format!("run {command}"),
            options: Vec::new(),
        }
    }

    fn rule(tool: &str, pattern: &str, action: RuleAction) -> PolicyRule {
        PolicyRule {
            tool: tool.into(),
            pattern: pattern.into(),
            action,
        }
    }

    #[test]
    fn globs_match_stars_questions_and_escapes() {
        assert!(glob_matches("git status*", "git status --short"));
        assert!(glob_matches("git status*", "git status"));
        assert!(!glob_matches("git status*", "git push"));
        assert!(glob_matches("rm -rf*", "rm -rf /"));
        assert!(glob_matches("a?c", "abc") && !glob_matches("a?c", "ac"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches(r"a\*", "a*") && !glob_matches(r"a\*", "ab"));
        assert!(glob_matches(&glob_escape("ls *.rs?"), "ls *.rs?"));
        assert!(!glob_matches(&glob_escape("ls *.rs"), "ls main.rs"));
        let hostile = "a".repeat(2000);
        assert!(!glob_matches(&"*a".repeat(200), &format!("{hostile}b")));
    }

    #[test]
    fn the_shipped_default_asks_and_never_allows() {
        let policy = Policy::default();
        assert_eq!(policy.mode, PolicyMode::Ask);
        assert_eq!(policy.evaluate(&bash("rm -rf /"), None), Verdict::Ask);
        assert_eq!(
            policy.evaluate(&bash("ls"), Some(PolicyMode::Allow)),
            Verdict::Ask
        );
        assert!(matches!(
            policy.evaluate(&bash("ls"), Some(PolicyMode::Deny)),
            Verdict::Deny { .. }
        ));
        let parsed: Policy = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, policy);
    }

    #[test]
    fn rules_decide_first_and_in_order() {
        let policy = Policy {
            mode: PolicyMode::Deny,
            rules: vec![
                rule("Bash", "rm -rf*", RuleAction::Deny),
                rule("Bash", "git status*", RuleAction::Allow),
                rule("*", "*", RuleAction::Deny),
            ],
            timeout_secs: 5,
        };
        assert!(matches!(
            policy.evaluate(&bash("git status -s"), None),
            Verdict::Allow { .. }
        ));
        assert!(matches!(
            policy.evaluate(&bash("rm -rf /"), None),
            Verdict::Deny { .. }
        ));
        let mut edit = bash("x");
        edit.tool = "Edit".into();
        edit.input = serde_json::json!({"file_path": "a"});
        assert!(matches!(policy.evaluate(&edit, None), Verdict::Deny { .. }));
    }

    #[test]
    fn a_command_narrows_but_never_widens() {
        assert_eq!(
            PolicyMode::Allow.narrowed_by(Some(PolicyMode::Ask)),
            PolicyMode::Ask
        );
        assert_eq!(
            PolicyMode::Ask.narrowed_by(Some(PolicyMode::Allow)),
            PolicyMode::Ask
        );
        assert_eq!(PolicyMode::Deny.narrowed_by(None), PolicyMode::Deny);
    }

    #[test]
    fn remembering_adds_an_exact_rule_once() {
        let mut policy = Policy::default();
        let rule = policy.remembered_rule("Bash", "ls *", true).unwrap();
        assert_eq!(rule.pattern, r"ls \*");
        policy.rules.push(rule);
        assert!(policy.remembered_rule("Bash", "ls *", true).is_none());
        assert!(matches!(
            policy.evaluate(&bash("ls *"), None),
            Verdict::Allow { .. }
        ));
        assert_eq!(policy.evaluate(&bash("ls x"), None), Verdict::Ask);
    }

    #[test]
    fn invalid_policies_are_refused() {
        let mut policy = Policy {
            timeout_secs: 0,
            ..Policy::default()
        };
        assert!(policy.validate().is_err());
        policy.timeout_secs = 10;
        policy.rules.push(rule(" ", "*", RuleAction::Allow));
        assert!(policy.validate().is_err());
        assert!("sometimes".parse::<PolicyMode>().is_err());
        assert_eq!(
            "expired".parse::<ApprovalStatus>(),
            Ok(ApprovalStatus::Expired)
        );
    }
}
