//! `interaction` (ABI 0.2): a provider's permission requests go to the [`Interaction`] port
//! after their bounds are checked, and follow-up input comes from the channel the port
//! opened for the execution.
//!
//! Cancel follows the port's contract: once the execution's token fires, the port gets
//! [`CANCEL_GRACE`] to answer `Cancelled` (and settle its approval) before the call is
//! dropped; either way the guest sees `cancelled`, and that counts as the one cancel the
//! ABI delivers.
//!
//! [`Interaction`]: crate::ports::Interaction

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::interaction::{
    Allow, Decision, Deny, FollowUp, OptionKind, PermissionOption, PermissionRequest, limits,
};
use crate::ports::interaction::{CANCEL_GRACE, InputReceiver};
use crate::ports::{Interaction, InteractionContext, InteractionError};
use crate::runtime::abi::latest::rdev::provider::interaction as wit;
use crate::runtime::state::HostState;

/// Who decides for one execution, and which execution it is.
#[derive(Clone)]
pub struct Asker {
    pub port: Arc<dyn Interaction>,
    pub ctx: InteractionContext,
}

/// The follow-up input of one execution: the port's receiver and what arrived during a
/// blocking read but was not taken yet.
pub struct Inbox {
    receiver: InputReceiver,
    arrived: VecDeque<FollowUp>,
    closed: bool,
}

impl Inbox {
    pub fn new(receiver: InputReceiver) -> Self {
        Self {
            receiver,
            arrived: VecDeque::new(),
            closed: false,
        }
    }

    /// Resolves when new input arrives (it is kept for `next-input`), never when the input
    /// closed. Input that arrived earlier does not count, so a provider that never takes
    /// input is interrupted once per arrival, not on every read. Cancel-safe.
    pub async fn arrival(&mut self) {
        if self.closed {
            return std::future::pending().await;
        }
        match self.receiver.recv().await {
            Some(input) => self.arrived.push_back(input),
            None => {
                self.closed = true;
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next input, waiting at most `timeout` (`None`: until input or the close).
    async fn next(&mut self, timeout: Option<Duration>) -> wit::InputRead {
        if let Some(input) = self.arrived.pop_front() {
            return read(input);
        }
        if self.closed {
            return wit::InputRead::Closed;
        }
        let received = match timeout {
            Some(t) => match tokio::time::timeout(t, self.receiver.recv()).await {
                Ok(received) => received,
                Err(_elapsed) => return wit::InputRead::Idle,
            },
            None => self.receiver.recv().await,
        };
        match received {
            Some(input) => read(input),
            None => {
                self.closed = true;
                wit::InputRead::Closed
            }
        }
    }
}

fn read(input: FollowUp) -> wit::InputRead {
    wit::InputRead::Input(wit::FollowUp {
        id: input.id,
        text: input.text,
    })
}

/// Waits for `op` or for the input's next arrival, whichever is first; `None` when input
/// arrived. Without an inbox, only `op`.
pub async fn or_input<F: Future>(inbox: Option<&mut Inbox>, op: F) -> Option<F::Output> {
    match inbox {
        None => Some(op.await),
        Some(inbox) => tokio::select! {
            out = op => Some(out),
            () = inbox.arrival() => None,
        },
    }
}

fn kind(kind: wit::OptionKind) -> OptionKind {
    match kind {
        wit::OptionKind::AllowOnce => OptionKind::AllowOnce,
        wit::OptionKind::AllowAlways => OptionKind::AllowAlways,
        wit::OptionKind::RejectOnce => OptionKind::RejectOnce,
        wit::OptionKind::RejectAlways => OptionKind::RejectAlways,
    }
}

/// The guest's request as the domain's, refused when it breaks the bounds (checked on the
/// sizes before the input's JSON is parsed).
fn request_from_guest(r: wit::PermissionRequest) -> Result<PermissionRequest, String> {
    let input_len = r.input_json.len();
    if input_len > limits::INPUT_JSON {
        return Err(format!(
            "the tool input is longer than {} bytes",
            limits::INPUT_JSON
        ));
    }
    if r.options.len() > limits::OPTIONS {
        return Err(format!("more than {} options", limits::OPTIONS));
    }
    let input = serde_json::from_str(&r.input_json)
        .map_err(|e| format!("the tool input is not JSON: {e}"))?;
    let request = PermissionRequest {
        tool_call_id: r.tool_call_id,
        tool: r.tool,
        input,
        summary: r.summary,
        options: r
            .options
            .into_iter()
            .map(|o| PermissionOption {
                id: o.id,
                label: o.label,
                kind: kind(o.kind),
            })
            .collect(),
    };
    request.validate(input_len).map_err(|e| e.0)?;
    Ok(request)
}

fn decision_to_guest(decision: Decision) -> wit::Decision {
    match decision {
        Decision::Allow(Allow {
            updated_input,
            remember,
            option_id,
        }) => wit::Decision::Allow(wit::Allow {
            updated_input_json: updated_input.map(|v| v.to_string()),
            remember,
            option_id,
        }),
        Decision::Deny(Deny {
            message,
            remember,
            option_id,
            interrupt,
        }) => wit::Decision::Deny(wit::Deny {
            message,
            remember,
            option_id,
            interrupt,
        }),
    }
}

/// Asks the port, giving it [`CANCEL_GRACE`] after the execution's cancel to answer.
async fn ask(asker: &Asker, request: PermissionRequest) -> Result<Decision, InteractionError> {
    let cancel = asker.ctx.cancel.clone();
    let call = asker.port.request_permission(&asker.ctx, request);
    tokio::select! {
        decided = call => decided,
        () = async {
            cancel.cancelled().await;
            tokio::time::sleep(CANCEL_GRACE).await;
        } => Err(InteractionError::Cancelled),
    }
}

impl wit::Host for HostState {
    async fn request_permission(
        &mut self,
        request: wit::PermissionRequest,
    ) -> wasmtime::Result<Result<wit::Decision, wit::InteractionError>> {
        let exec = self.exec.clone();
        let Some(asker) = exec.asker.as_ref() else {
            return Ok(Err(wit::InteractionError::Unavailable(
                "this call belongs to no command, so nobody can decide it".into(),
            )));
        };
        let request = match request_from_guest(request) {
            Ok(request) => request,
            Err(reason) => return Ok(Err(wit::InteractionError::InvalidRequest(reason))),
        };
        Ok(match ask(asker, request).await {
            Ok(decision) => Ok(decision_to_guest(decision)),
            Err(InteractionError::Cancelled) => {
                exec.note_cancel_delivered();
                Err(wit::InteractionError::Cancelled)
            }
            Err(InteractionError::Unavailable(reason)) => {
                Err(wit::InteractionError::Unavailable(reason))
            }
        })
    }

    async fn next_input(
        &mut self,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<wit::InputRead, wit::InteractionError>> {
        let exec = self.exec.clone();
        let Some(inbox) = self.input.as_mut() else {
            return Ok(Ok(wit::InputRead::Closed));
        };
        let timeout = timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
        let read = exec
            .cancellable(inbox.next(timeout))
            .await
            .map_err(|_| wit::InteractionError::Cancelled);
        // Recorded before the guest sees it: whatever it was not handed was not delivered.
        if let (Ok(wit::InputRead::Input(input)), Some(asker)) = (&read, exec.asker.as_ref()) {
            asker.port.input_taken(&asker.ctx, &input.id).await;
        }
        Ok(read)
    }
}
