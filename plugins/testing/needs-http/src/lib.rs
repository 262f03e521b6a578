//! A provider that imports `wasi:http/outgoing-handler` through the `wasi` crate, as a guest
//! with an HTTP client would. The host provides no `wasi:http`, so loading must fail before
//! compilation with advice; `execute` sends a request so the import stays in the component.

use rdev_sdk::{
    AgentRequest, AgentResult, Capability, CleanupRequest, Provider, ProviderCapabilities,
    ProviderError, result,
};

struct NeedsHttp;

impl Provider for NeedsHttp {
    fn capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            description: "imports wasi:http".into(),
            capabilities: Capability::empty(),
        }
    }

    fn execute(request: AgentRequest) -> Result<AgentResult, ProviderError> {
        use wasi::http::{outgoing_handler, types};
        let outgoing = types::OutgoingRequest::new(types::Fields::new());
        let status = match outgoing_handler::handle(outgoing, None) {
            Ok(_) => format!("sent {}", request.prompt),
            Err(e) => format!("{e:?}"),
        };
        Ok(result::completed(status))
    }

    fn cancel(_request: CleanupRequest) -> Result<(), ProviderError> {
        Ok(())
    }
}

rdev_sdk::export_provider!(NeedsHttp);
