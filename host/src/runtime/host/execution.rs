//! `execution`: the guest's view of its own cancel state.

use std::time::Duration;

use crate::runtime::abi::latest::rdev::provider::execution::Host;
use crate::runtime::state::HostState;

impl Host for HostState {
    async fn is_cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.exec.is_cancelled())
    }

    async fn sleep(&mut self, duration_ms: u32) -> wasmtime::Result<bool> {
        let cancel = self.exec.cancel.clone();
        if cancel.is_cancelled() {
            return Ok(false);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(u64::from(duration_ms))) => Ok(true),
            () = cancel.cancelled() => Ok(false),
        }
    }
}
