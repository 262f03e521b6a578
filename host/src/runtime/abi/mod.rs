//! One module per provider ABI version, each holding its own `bindgen!` output, and a thin
//! enum that dispatches on the version a plugin's manifest declares. Only the newest version
//! ([`latest`]) carries host logic (`runtime::host` implements its imports); each older one
//! converts into it, so a 0.1 plugin keeps loading and running beside 0.2 ones. Zed's
//! extension host is the model: `latest` is an alias that moves when a version is added.

pub mod since_v0_1_0;
pub mod since_v0_2_0;

/// The newest ABI, the one host imports are written against.
pub use since_v0_2_0 as latest;

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use crate::domain::{AgentRequest, Capabilities};

use super::manifest::AbiVersion;
use super::state::HostState;

/// ABI versions this host can load, newest first (for error messages).
pub const SUPPORTED: &[AbiVersion] = &[since_v0_2_0::MIN_VERSION, since_v0_1_0::MIN_VERSION];

/// The interface through which a provider asks for decisions and takes input (ABI 0.2 on).
const INTERACTION: &str = "rdev:provider/interaction@";

/// The interface every provider world exports, without its version: a component of ABI
/// `X` must export `rdev:provider/agent@X` (checked before compiling, see `runtime::check`).
pub const PROVIDER_EXPORT: &str = "rdev:provider/agent";

/// A component linked against the ABI its manifest names, ready to instantiate cheaply.
#[derive(Clone)]
pub(crate) enum ProviderPre {
    V0_1(since_v0_1_0::ProviderPre<HostState>),
    V0_2 {
        pre: since_v0_2_0::ProviderPre<HostState>,
        /// The component imports `interaction.next-input`: it takes follow-up input.
        takes_input: bool,
    },
}

/// Linkers for every supported ABI version, built once per runtime.
pub(crate) struct Linkers {
    v0_1: Linker<HostState>,
    v0_2: Linker<HostState>,
}

/// The provider's view of its own capabilities, as returned by `capabilities()`.
pub(crate) struct GuestCapabilities {
    pub description: String,
    pub capabilities: Capabilities,
}

/// How a guest's `execute` ended, in host terms.
pub(crate) type GuestOutcome = Result<crate::domain::AgentResult, GuestError>;

/// A provider-reported error (not a trap).
#[derive(Debug, Clone)]
pub(crate) enum GuestError {
    InvalidRequest(String),
    Unavailable(String),
    Cancelled,
    Failed(String),
}

/// The request as the guest receives it.
pub(crate) struct GuestRequest<'a> {
    pub command_id: &'a str,
    pub project_id: &'a str,
    pub request: &'a AgentRequest,
}

impl Linkers {
    pub fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        Ok(Self {
            v0_1: since_v0_1_0::linker(engine)?,
            v0_2: since_v0_2_0::linker(engine)?,
        })
    }

    /// Whether the linker for `abi` defines the interface `name` with `member` in it
    /// (semver-compatible names match, as at instantiation). Asked with a tiny component
    /// that imports only that, so the answer is the linker's own and no guest code compiles.
    pub fn provides(
        &self,
        engine: &wasmtime::Engine,
        abi: AbiVersion,
        name: &str,
        member: &super::check::Member,
    ) -> Result<bool, String> {
        let Some(linker) = self.for_abi(abi) else {
            return Ok(false);
        };
        let probe = Component::new(engine, super::check::probe_component(name, member))
            .map_err(|e| format!("checking the import `{name}`: {e:#}"))?;
        Ok(match linker.instantiate_pre(&probe) {
            Ok(_) => true,
            // wasmtime's matcher says "… implementation is missing" when the linker has no
            // such name; any other complaint is about the probe's deliberately wrong type.
            Err(e) => !format!("{e:#}").contains("implementation is missing"),
        })
    }

    /// Whether an ABI module of this host serves `abi`.
    pub fn supports(&self, abi: AbiVersion) -> bool {
        self.for_abi(abi).is_some()
    }

    /// The linker of the ABI module serving `abi`, if any.
    fn for_abi(&self, abi: AbiVersion) -> Option<&Linker<HostState>> {
        match (abi.major, abi.minor) {
            (0, 1) => Some(&self.v0_1),
            (0, 2) => Some(&self.v0_2),
            _ => None,
        }
    }

    /// Picks the ABI module for `abi`. A plugin built against an unknown major, or a minor
    /// newer than the host knows, is refused: it may call imports this host lacks.
    pub fn link(&self, abi: AbiVersion, component: &Component) -> Result<ProviderPre, String> {
        let Some(linker) = self.for_abi(abi) else {
            let supported: Vec<String> = SUPPORTED.iter().map(ToString::to_string).collect();
            return Err(format!(
                "ABI version {abi} is not supported by this host (supported: {})",
                supported.join(", ")
            ));
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("the component does not match the provider world {abi}: {e:#}"))?;
        let missing_export = |e: wasmtime::Error| {
            format!("the component does not export the provider world {abi}: {e:#}")
        };
        if abi.minor == 1 {
            let pre = since_v0_1_0::ProviderPre::new(pre).map_err(missing_export)?;
            return Ok(ProviderPre::V0_1(pre));
        }
        Ok(ProviderPre::V0_2 {
            pre: since_v0_2_0::ProviderPre::new(pre).map_err(missing_export)?,
            takes_input: imports_next_input(linker.engine(), component),
        })
    }
}

/// Whether the component imports `next-input` of the `interaction` interface.
fn imports_next_input(engine: &wasmtime::Engine, component: &Component) -> bool {
    use wasmtime::component::types::ComponentItem;
    component
        .component_type()
        .imports(engine)
        .any(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) if name.starts_with(INTERACTION) => instance
                .exports(engine)
                .any(|(export, _)| export == "next-input"),
            _ => false,
        })
}

/// Calls `$method` on the agent export of a fresh instance of `$pre`, whichever ABI the
/// provider was built against: each ABI's bindings are types of their own, so one function
/// cannot take both.
macro_rules! call_agent {
    ($pre:expr, $store:expr, $method:ident($($arg:expr),*)) => {
        match $pre {
            ProviderPre::V0_1(pre) => {
                let instance = pre.instantiate_async(&mut *$store).await?;
                let agent = instance.rdev_provider_agent();
                agent.$method(&mut *$store $(, $arg)*).await?
            }
            ProviderPre::V0_2 { pre, .. } => {
                let instance = pre.instantiate_async(&mut *$store).await?;
                let agent = instance.rdev_provider_agent();
                agent.$method(&mut *$store $(, $arg)*).await?
            }
        }
    };
}

impl ProviderPre {
    /// Whether an execution of this provider can take follow-up input (ABI 0.2 on, when the
    /// component imports `interaction.next-input`).
    pub fn takes_input(&self) -> bool {
        match self {
            Self::V0_1(_) => false,
            Self::V0_2 { takes_input, .. } => *takes_input,
        }
    }

    pub async fn capabilities(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<GuestCapabilities> {
        let caps = call_agent!(self, store, call_capabilities());
        Ok(latest::capabilities_from_guest(caps))
    }

    pub async fn execute(
        &self,
        store: &mut Store<HostState>,
        request: GuestRequest<'_>,
    ) -> wasmtime::Result<GuestOutcome> {
        let request = latest::request_to_guest(&request);
        let outcome = call_agent!(self, store, call_execute(&request));
        Ok(latest::outcome_from_guest(outcome))
    }

    pub async fn cleanup(
        &self,
        store: &mut Store<HostState>,
        command_id: &str,
        project_id: &str,
        session_id: Option<&str>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let request = latest::cleanup_to_guest(command_id, project_id, session_id);
        let outcome = call_agent!(self, store, call_cancel(&request));
        Ok(outcome.map_err(latest::error_from_guest))
    }
}
