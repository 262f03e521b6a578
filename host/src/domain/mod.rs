//! Pure types and rules of rdev. Nothing in here performs I/O or depends on a runtime, so
//! every rule can be unit-tested and shared by the API, the worker and the storage adapters.

pub mod command;
pub mod event;
pub mod ids;
pub mod provider;
pub mod request;
pub mod result;

pub use command::{CommandStatus, TransitionError};
pub use event::{AgentEvent, HostEvent, OutputStream, StreamEvent, Usage};
pub use ids::{CommandId, IdError, ProjectId, ProviderName};
pub use provider::{AgentProvider, Capabilities};
pub use request::{AgentRequest, RequestError};
pub use result::{AgentResult, ResultStatus};
