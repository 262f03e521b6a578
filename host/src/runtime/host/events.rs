//! `events`: guest events into the execution's bounded sink. A full sink blocks the guest
//! (back-pressure), so a flooding provider runs at the pace of its consumer.

use crate::runtime::abi::latest::rdev::provider::events::{EmitError, Host};
use crate::runtime::abi::latest::{event_from_guest, wit};
use crate::runtime::state::HostState;

impl Host for HostState {
    async fn emit(
        &mut self,
        events: Vec<wit::AgentEvent>,
    ) -> wasmtime::Result<Result<(), EmitError>> {
        let Some(sink) = self.exec.events.clone() else {
            return Ok(Ok(()));
        };
        for event in events {
            let event = event_from_guest(event);
            match self.exec.cancellable(sink.send(event)).await {
                Ok(Ok(())) => {}
                // The consumer is gone (the worker stopped listening): nothing to deliver to.
                Ok(Err(_closed)) => return Ok(Ok(())),
                Err(_cancelled) => return Ok(Err(EmitError::Cancelled)),
            }
        }
        Ok(Ok(()))
    }
}
