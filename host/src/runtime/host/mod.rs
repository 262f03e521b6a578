//! Host implementations of the provider ABI's imports. Each import checks the plugin's
//! grants itself and answers a missing grant with `denied`, never a trap.

pub mod events;
pub mod exec;
pub mod execution;
pub mod http;
pub mod interaction;
pub mod log;
pub mod sse;

use crate::runtime::abi::latest::rdev::provider::types;
use crate::runtime::state::HostState;

/// `types` only defines data; it has no functions to implement.
impl types::Host for HostState {}
