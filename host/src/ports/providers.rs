//! How the worker and the API find a provider by name without depending on the runtime.

use std::sync::Arc;

use crate::domain::{AgentProvider, ProviderName};

use super::code_agent::CodeAgent;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no provider named {0:?} is registered")]
    Unknown(String),
    #[error("no provider is registered")]
    NoProviders,
    /// Registered, but its current version failed to load and no earlier version serves.
    #[error("provider {name:?} is not serving: {reason}")]
    NotServing { name: String, reason: String },
}

pub trait ProviderLookup: Send + Sync {
    /// The provider serving `name` right now, or the default provider for `None`. The
    /// returned handle keeps that version alive for as long as the caller holds it, so an
    /// execution finishes on the version it started with.
    fn lookup(&self, name: Option<&ProviderName>) -> Result<Arc<dyn CodeAgent>, LookupError>;

    /// Every serving provider, the default first.
    fn providers(&self) -> Vec<AgentProvider>;
}
