//! Provider ABI 0.1.x (`wit/since_v0.1.0`), frozen: its generated bindings and an adapter
//! that serves each of its imports by converting into the newest ABI's host import
//! ([`latest`](super::latest)), so host logic exists once.
//!
//! The data interface `types` did not change in 0.2, so it is not generated again: the
//! bindings use the newest module's types (the component model checks types by structure,
//! not by the interface that names them), and the `agent` export converts to the domain
//! through the same functions as the newest ABI. Interfaces with functions keep their own
//! generated types, because the linker registers them under their versioned names.

mod into_latest;

use wasmtime::component::{HasSelf, Linker};

use crate::runtime::manifest::AbiVersion;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    world: "provider",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "rdev:provider/types": crate::runtime::abi::latest::rdev::provider::types,
        "rdev:provider/exec.process": crate::runtime::host::exec::ProcessHandle,
        "rdev:provider/project-http.event-stream": crate::runtime::host::http::EventStreamHandle,
    },
});

/// The oldest ABI this module serves; any 0.1.x plugin loads here.
pub const MIN_VERSION: AbiVersion = AbiVersion::new(0, 1, 0);

/// The name a 0.1 component imports its data types by; it has no functions, so it is an
/// empty instance in the linker.
const TYPES: &str = "rdev:provider/types@0.1.0";

/// A linker with WASI (sandboxed by the store's empty context) and every rdev import of
/// ABI 0.1, each served by the newest ABI's host import.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Provider::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    linker.instance(TYPES)?;
    Ok(linker)
}
