//! The `[service]` table of a plugin manifest: a long-lived program the host runs per
//! project on the plugin's behalf (OpenCode's `opencode serve`), so that it outlives one
//! execution, listens on a port the host picks, and authenticates with a secret the host
//! mints. The guest keeps addressing the declared port; the host maps it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Placeholder in `args` replaced with the port the host picked for the project.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// A validated `[service]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// argv[0], found on the workspace's PATH.
    pub program: String,
    /// Arguments; every [`PORT_PLACEHOLDER`] becomes the project's port.
    pub args: Vec<String>,
    /// Extra environment of the service (plain values only: secrets are the host's).
    pub env: Vec<(String, String)>,
    /// The port the guest addresses with project-http; implicitly granted.
    pub port: u16,
    /// Path answered with a 2xx once the service is ready (asked with its auth).
    pub ready_path: String,
    /// How long a start may take before it is given up and the process killed.
    pub start_timeout: Duration,
    /// Unused this long (no request, no open event stream), the service is stopped.
    pub idle_timeout: Duration,
    /// The secret the host mints per project start, if the service takes one.
    pub secret: Option<ServiceSecret>,
}

/// Where the minted secret goes: into the service's environment, and into every
/// project-http request to the service as the given authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSecret {
    /// The environment variable the service reads it from.
    pub env: String,
    /// How the host authenticates its requests with it.
    pub auth: SecretAuth,
}

/// The authorization header the host adds to requests to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAuth {
    /// HTTP Basic with this user name and the secret as password.
    Basic { user: String },
    /// `Authorization: Bearer <secret>`.
    Bearer,
}

/// The manifest's `[service]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    port: u16,
    ready_path: String,
    #[serde(default = "default_start_timeout")]
    start_timeout_secs: u64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_secs: u64,
    secret: Option<RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: String,
    auth: String,
    user: Option<String>,
}

fn default_start_timeout() -> u64 {
    60
}

fn default_idle_timeout() -> u64 {
    900
}

/// Longest start-up or idle period a manifest may ask for: one day.
const MAX_SECS: u64 = 86_400;

impl RawService {
    /// Validates the table; the error names the field.
    pub(crate) fn check(self) -> Result<ServiceSpec, (&'static str, String)> {
        if self.program.is_empty() || self.program.contains('\0') {
            let reason = format!("{:?} is not a program name", self.program);
            return Err(("service.program", reason));
        }
        if !self.args.iter().any(|a| a.contains(PORT_PLACEHOLDER)) {
            let reason = format!(
                "no argument carries {PORT_PLACEHOLDER}, so the host cannot give the service its port"
            );
            return Err(("service.args", reason));
        }
        if self.port == 0 {
            return Err(("service.port", "port 0".to_owned()));
        }
        if !self.ready_path.starts_with('/') {
            return Err(("service.ready_path", "must start with '/'".to_owned()));
        }
        for (field, secs) in [
            ("service.start_timeout_secs", self.start_timeout_secs),
            ("service.idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if secs == 0 || secs > MAX_SECS {
                return Err((field, format!("{secs} is not between 1 and {MAX_SECS}")));
            }
        }
        for key in self.env.keys() {
            if !is_env_name(key) {
                return Err(("service.env", format!("{key:?} is not a variable name")));
            }
        }
        let secret = self.secret.map(RawSecret::check).transpose()?;
        Ok(ServiceSpec {
            program: self.program,
            args: self.args,
            env: self.env.into_iter().collect(),
            port: self.port,
            ready_path: self.ready_path,
            start_timeout: Duration::from_secs(self.start_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            secret,
        })
    }
}

impl RawSecret {
    fn check(self) -> Result<ServiceSecret, (&'static str, String)> {
        if !is_env_name(&self.env) {
            let reason = format!("{:?} is not a variable name", self.env);
            return Err(("service.secret.env", reason));
        }
        let auth = match (self.auth.as_str(), self.user) {
            ("basic", Some(user)) if !user.is_empty() && !user.contains(':') => {
                SecretAuth::Basic { user }
            }
            ("basic", _) => {
                let reason = "basic needs a user without ':'".to_owned();
                return Err(("service.secret.user", reason));
            }
            ("bearer", None) => SecretAuth::Bearer,
            ("bearer", Some(_)) => {
                return Err(("service.secret.user", "bearer takes no user".to_owned()));
            }
            (other, _) => {
                let reason = format!("{other:?} is neither \"basic\" nor \"bearer\"");
                return Err(("service.secret.auth", reason));
            }
        };
        Ok(ServiceSecret {
            env: self.env,
            auth,
        })
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables a guest may not set in its service's environment: the loader and the search
/// path decide what runs, so they stay the executor's.
const RESERVED_ENV: &[&str] = &["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "HOME"];

impl ServiceSpec {
    /// Checks the environment a guest asks its service to run with: variable names valid,
    /// none of the manifest's own (`[service.env]`, the secret's variable) or the executor's
    /// overridden, each named once.
    pub fn check_guest_env<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for name in names {
            if !is_env_name(name) {
                return Err(format!("{name:?} is not a variable name"));
            }
            let taken = self.env.iter().any(|(k, _)| k == name)
                || self.secret.as_ref().is_some_and(|s| s.env == name)
                || RESERVED_ENV.contains(&name);
            if taken {
                return Err(format!(
                    "{name} is set by the manifest or the host, not by the provider"
                ));
            }
            if !seen.insert(name) {
                return Err(format!("{name} is given twice"));
            }
        }
        Ok(())
    }

    /// The arguments with the project's port put in.
    pub fn args_for(&self, port: u16) -> Vec<String> {
        let port = port.to_string();
        self.args
            .iter()
            .map(|a| a.replace(PORT_PLACEHOLDER, &port))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServiceSpec, (&'static str, String)> {
        toml::from_str::<RawService>(text)
            .map_err(|e| ("syntax", e.to_string()))?
            .check()
    }

    const GOOD: &str = r#"
program = "opencode"
args = ["serve", "--port", "{port}"]
port = 4096
ready_path = "/global/health"
idle_timeout_secs = 30
env = { OPENCODE_DISABLE_AUTOUPDATE = "1" }
secret = { env = "OPENCODE_SERVER_PASSWORD", auth = "basic", user = "opencode" }
"#;

    #[test]
    fn a_complete_service_parses_with_defaults() {
        let spec = parse(GOOD).expect("valid");
        assert_eq!(spec.args_for(40123), ["serve", "--port", "40123"]);
        assert_eq!(spec.start_timeout, Duration::from_secs(60));
        assert_eq!(spec.idle_timeout, Duration::from_secs(30));
        assert_eq!(
            spec.secret.expect("secret").auth,
            SecretAuth::Basic {
                user: "opencode".into()
            }
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (GOOD.replace("\"{port}\"", "\"4096\""), "service.args"),
            (GOOD.replace("port = 4096", "port = 0"), "service.port"),
            (GOOD.replace("\"/global", "\"global"), "service.ready_path"),
            (GOOD.replace("= 30", "= 0"), "service.idle_timeout_secs"),
            (
                GOOD.replace("auth = \"basic\"", "auth = \"digest\""),
                "service.secret.auth",
            ),
            (
                GOOD.replace(", user = \"opencode\"", ""),
                "service.secret.user",
            ),
            (GOOD.replace("OPENCODE_DISABLE", "1X"), "service.env"),
        ];
        for (text, field) in cases {
            assert_eq!(parse(&text).expect_err(field).0, field);
        }
        assert!(parse(&GOOD.replace("port = 4096", "port = 4096\nportz = 1")).is_err());
    }

    #[test]
    fn a_guest_env_may_not_override_the_manifest_or_the_host() {
        let spec = parse(GOOD).expect("valid");
        assert!(
            spec.check_guest_env(["OPENCODE_CONFIG_CONTENT", "KEY"])
                .is_ok()
        );
        for bad in [
            "OPENCODE_DISABLE_AUTOUPDATE",
            "OPENCODE_SERVER_PASSWORD",
            "PATH",
            "1X",
            "",
        ] {
            assert!(spec.check_guest_env([bad]).is_err(), "{bad}");
        }
        assert!(spec.check_guest_env(["A", "A"]).is_err());
    }
}
