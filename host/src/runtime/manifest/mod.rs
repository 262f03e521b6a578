//! Plugin manifests (`<name>.toml` beside `<name>.wasm`): who the plugin is, which ABI it
//! speaks, what it may touch and how much it may use. Everything a host import allows is
//! decided from here, so parsing is strict: unknown keys are errors, not ignored typos.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::service::spec::RawService;
use crate::domain::{AgentRequest, ProviderName};
use request_options::RawRequestOptions;

pub use super::service::spec::{SecretAuth, ServiceSecret, ServiceSpec};
pub use request_options::{RequestOptions, RequestRefused};

mod request_options;

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: ProviderName,
    /// The plugin's own version, shown in listings.
    pub version: String,
    /// The provider ABI the component was built against.
    pub abi: AbiVersion,
    pub description: String,
    pub grants: Grants,
    pub limits: Limits,
    /// The per-project service the host keeps running for this plugin, if it declares one.
    pub service: Option<ServiceSpec>,
    /// File name of the component beside the manifest. Several manifests may name one
    /// component, so a generic provider (the ACP client) serves several agents, each with
    /// its own name, grants and fixed options.
    pub component: String,
    /// Options every request of this provider is run with, set by the operator: a request
    /// may repeat them but not change them (refused at submit).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The options a request may set and the option listing the backend's models, checked
    /// at submit.
    pub request_options: RequestOptions,
}

/// Why a manifest was refused; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read the manifest: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: malformed manifest: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: invalid `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

impl ManifestError {
    /// The manifest file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Syntax { path, .. } | Self::Invalid { path, .. } => {
                path
            }
        }
    }

    /// The reason without the file's path, for readers who must not see server paths.
    pub fn reason(&self) -> String {
        match self {
            Self::Read { source, .. } => format!("cannot read the manifest: {source}"),
            Self::Syntax { message, .. } => format!("malformed manifest: {message}"),
            Self::Invalid { field, reason, .. } => format!("invalid `{field}`: {reason}"),
        }
    }
}

/// A `MAJOR.MINOR.PATCH` version of the provider ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl AbiVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for AbiVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(format!("{s:?} is not MAJOR.MINOR.PATCH"));
        };
        let num = |p: &str| {
            p.parse::<u64>()
                .map_err(|_| format!("{s:?} is not MAJOR.MINOR.PATCH"))
        };
        Ok(Self::new(num(major)?, num(minor)?, num(patch)?))
    }
}

/// What a plugin may do outside its sandbox. Deny by default: an empty set grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    exec: BTreeSet<String>,
    ports: BTreeSet<u16>,
    credentials: BTreeSet<String>,
    /// The project's MCP servers are handed over (as the `mcp_servers` request option) and
    /// the credentials they reference may be named in spawns.
    mcp_servers: bool,
}

/// A refused capability, worded for the guest (it receives this as `denied(..)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Grants {
    /// Grants exactly the listed programs, ports and credential names.
    pub fn new(
        exec: impl IntoIterator<Item = String>,
        ports: impl IntoIterator<Item = u16>,
        credentials: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            exec: exec.into_iter().collect(),
            ports: ports.into_iter().collect(),
            credentials: credentials.into_iter().collect(),
            mcp_servers: false,
        }
    }

    /// Also grants the project's MCP servers (`mcp_servers = true` in `[grants]`).
    pub fn with_mcp_servers(mut self, granted: bool) -> Self {
        self.mcp_servers = granted;
        self
    }

    /// Whether the plugin is given its project's MCP servers.
    pub fn mcp_servers(&self) -> bool {
        self.mcp_servers
    }

    /// argv[0] must match an allow-list entry exactly: `sh` does not grant `/bin/sh`.
    pub fn check_exec(&self, program: &str) -> Result<(), Denied> {
        if self.exec.contains(program) {
            Ok(())
        } else {
            Err(Denied(format!(
                "program {program:?} is not on this plugin's exec allow-list"
            )))
        }
    }

    pub fn check_port(&self, port: u16) -> Result<(), Denied> {
        if self.ports.contains(&port) {
            Ok(())
        } else {
            Err(Denied(format!(
                "port {port} is not granted to this plugin for project-http"
            )))
        }
    }

    pub fn check_credential(&self, name: &str) -> Result<(), Denied> {
        if self.credentials.contains(name) {
            Ok(())
        } else {
            Err(Denied(format!(
                "credential {name:?} is not granted to this plugin"
            )))
        }
    }

    pub fn exec(&self) -> impl Iterator<Item = &str> {
        self.exec.iter().map(String::as_str)
    }

    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().copied()
    }

    pub fn credentials(&self) -> impl Iterator<Item = &str> {
        self.credentials.iter().map(String::as_str)
    }
}

/// Per-execution resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory the guest may grow to; growing beyond traps.
    pub memory_bytes: u64,
    /// Requests asking for longer are refused rather than silently shortened.
    pub max_timeout: Duration,
    /// Longest prompt the provider can take, e.g. the kernel's 128 KiB limit on one
    /// argument for a provider that passes the prompt as one; longer ones are refused at
    /// submit instead of failing when the program cannot start.
    pub max_prompt_bytes: usize,
}

impl Limits {
    /// Memory ceiling a manifest may ask for.
    pub const MAX_MEMORY_MIB: u64 = 4096;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    abi: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    grants: RawGrants,
    limits: RawLimits,
    service: Option<RawService>,
    component: Option<String>,
    #[serde(default)]
    options: toml::Table,
    request_options: Option<RawRequestOptions>,
    models_option: Option<String>,
}

/// Just the component file name of a manifest, for readers that fingerprint a plugin's files
/// before (or without) validating the whole manifest.
#[derive(Deserialize)]
struct RawComponent {
    name: Option<String>,
    component: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    exec: Vec<String>,
    #[serde(default)]
    project_http_ports: Vec<u16>,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    mcp_servers: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: u64,
    max_timeout_secs: u64,
    max_prompt_bytes: Option<usize>,
}

impl Manifest {
    /// Reads and validates `path`; the manifest's `name` must equal the file's stem so that
    /// `<name>.toml` and `<name>.wasm` always describe the same plugin.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let manifest = Self::parse(path, &text)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != manifest.name.as_str() {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                field: "name",
                reason: format!(
                    "{:?} does not match the file name {stem:?}",
                    manifest.name.as_str()
                ),
            });
        }
        Ok(manifest)
    }

    /// Parses manifest text; `path` is only used to name the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let invalid = |field, reason: String| ManifestError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        };
        let name = ProviderName::parse(&raw.name).map_err(|e| invalid("name", e.to_string()))?;
        if raw.version.parse::<AbiVersion>().is_err() && !is_version(&raw.version) {
            return Err(invalid(
                "version",
                format!("{:?} is not a version like 1.2.3", raw.version),
            ));
        }
        let abi = raw
            .abi
            .parse::<AbiVersion>()
            .map_err(|e| invalid("abi", e))?;
        if raw.description.len() > 1024 {
            return Err(invalid("description", "longer than 1024 bytes".to_owned()));
        }
        raw.grants
            .check()
            .and_then(|()| raw.limits.check())
            .map_err(|(field, reason)| invalid(field, reason))?;
        let max_prompt_bytes = raw.limits.max_prompt_bytes();
        let service = raw
            .service
            .map(RawService::check)
            .transpose()
            .map_err(|(field, reason)| invalid(field, reason))?;
        let mut ports = raw.grants.project_http_ports;
        // The port the guest addresses its service on is granted with the service.
        ports.extend(service.as_ref().map(|s| s.port));
        let component = match raw.component {
            Some(file) => check_component(&file).map_err(|reason| invalid("component", reason))?,
            None => format!("{}.wasm", name.as_str()),
        };
        let options = fixed_options(raw.options).map_err(|reason| invalid("options", reason))?;
        let request_options =
            RequestOptions::check(raw.request_options, raw.models_option, &options)
                .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(Self {
            name,
            version: raw.version,
            abi,
            description: raw.description,
            grants: Grants::new(raw.grants.exec, ports, raw.grants.credentials)
                .with_mcp_servers(raw.grants.mcp_servers),
            limits: Limits {
                memory_bytes: raw.limits.memory_mib * 1024 * 1024,
                max_timeout: Duration::from_secs(raw.limits.max_timeout_secs),
                max_prompt_bytes,
            },
            service,
            component,
            options,
            request_options,
        })
    }

    /// The component file this manifest runs: `component`, or `<name>.wasm`, beside the
    /// manifest.
    pub fn component_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path.with_file_name(&self.component)
    }

    /// The component file named by manifest text that may not be valid yet (a plugin being
    /// written): `component` when it is a plain file name, else `<stem>.wasm`.
    pub fn component_path_of(manifest_path: &Path, text: &str) -> PathBuf {
        let named = toml::from_str::<RawComponent>(text)
            .ok()
            .and_then(|raw| raw.component.or(raw.name.map(|n| format!("{n}.wasm"))))
            .filter(|file| check_component(file).is_ok());
        match named {
            Some(file) => manifest_path.with_file_name(file),
            None => manifest_path.with_extension("wasm"),
        }
    }

    /// The request's options with this manifest's fixed options added; a request that sets
    /// any of them to another value is refused, naming every such key.
    pub fn apply_options(
        &self,
        requested: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, FixedOption> {
        let changed: Vec<String> = self
            .options
            .iter()
            .filter(|(key, fixed)| requested.get(*key).is_some_and(|value| value != *fixed))
            .map(|(key, _)| format!("`{key}`"))
            .collect();
        if !changed.is_empty() {
            return Err(FixedOption {
                provider: self.name.as_str().to_owned(),
                keys: changed.join(", "),
            });
        }
        let mut merged = requested.clone();
        merged.extend(self.options.clone());
        Ok(merged)
    }
}

/// Request options that the provider's manifest fixes to other values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("options fixed by the manifest of provider {provider:?} cannot be changed: {keys}")]
pub struct FixedOption {
    pub provider: String,
    /// The changed keys, quoted and comma-separated.
    pub keys: String,
}

/// A component must be a `.wasm` file beside the manifest: no directories, no way out.
fn check_component(file: &str) -> Result<String, String> {
    let plain = !file.is_empty()
        && file.ends_with(".wasm")
        && file.len() > ".wasm".len()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if plain {
        Ok(file.to_owned())
    } else {
        Err(format!(
            "{file:?} is not a file name like `acp.wasm` in the manifest's directory"
        ))
    }
}

/// Manifest options as JSON, the form requests carry them in.
fn fixed_options(table: toml::Table) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a table".to_owned()),
        Err(e) => Err(format!("not representable as JSON: {e}")),
    }
}

/// A field that failed validation and why, turned into [`ManifestError::Invalid`] by the caller.
type FieldProblem = (&'static str, String);

impl RawGrants {
    fn check(&self) -> Result<(), FieldProblem> {
        for program in &self.exec {
            if program.is_empty() || program.contains('\0') {
                return Err(("grants.exec", format!("{program:?} is not a program name")));
            }
        }
        if self.project_http_ports.contains(&0) {
            return Err(("grants.project_http_ports", "port 0".to_owned()));
        }
        for credential in &self.credentials {
            let ok = !credential.is_empty()
                && credential
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err((
                    "grants.credentials",
                    format!("{credential:?} is not a credential name"),
                ));
            }
        }
        Ok(())
    }
}

impl RawLimits {
    fn check(&self) -> Result<(), FieldProblem> {
        if self.memory_mib == 0 || self.memory_mib > Limits::MAX_MEMORY_MIB {
            return Err((
                "limits.memory_mib",
                format!(
                    "{} is not between 1 and {}",
                    self.memory_mib,
                    Limits::MAX_MEMORY_MIB
                ),
            ));
        }
        let max_secs = AgentRequest::MAX_TIMEOUT.as_secs();
        if self.max_timeout_secs == 0 || self.max_timeout_secs > max_secs {
            return Err((
                "limits.max_timeout_secs",
                format!("{} is not between 1 and {max_secs}", self.max_timeout_secs),
            ));
        }
        let max_prompt = AgentRequest::MAX_PROMPT_BYTES;
        let max_prompt_bytes = self.max_prompt_bytes();
        if max_prompt_bytes == 0 || max_prompt_bytes > max_prompt {
            return Err((
                "limits.max_prompt_bytes",
                format!("{max_prompt_bytes} is not between 1 and {max_prompt}"),
            ));
        }
        Ok(())
    }

    /// The manifest's prompt limit, or the API's own when it names none.
    fn max_prompt_bytes(&self) -> usize {
        self.max_prompt_bytes
            .unwrap_or(AgentRequest::MAX_PROMPT_BYTES)
    }
}

/// Accepts semver with pre-release or build suffixes (`1.2.3-beta.1+abc`).
fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    core.parse::<AbiVersion>().is_ok()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
}

#[cfg(test)]
mod tests;
