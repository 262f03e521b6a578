//! Follow-up input, across replicas: `POST /commands/{id}/input` appends an `input` event
//! to the command's stream ([`accept`]); the replica running the command follows that
//! stream (the event log's subscription, fed by `NOTIFY` on PostgreSQL) and hands each
//! input to the execution's channel ([`open`]). The stream is the inbox: the input is
//! stored, shows on SSE, and reaches the worker wherever the request landed. An execution
//! that starts again (after its host was lost) is handed the command's earlier inputs too.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::domain::interaction::{FollowUp, limits};
use crate::domain::{CommandId, CommandRecord, CommandStatus, HostEvent, StreamEvent};
use crate::ports::interaction::InputReceiver;
use crate::ports::{EventLog, InteractionContext, StoreError};

/// Inputs queued for an execution that has not taken them yet.
const INBOX_CAPACITY: usize = 64;

/// Why follow-up text was refused before it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("command {0} is {1}, not running: input reaches only a running command")]
    NotRunning(CommandId, &'static str),
    #[error("provider {0} takes no follow-up input (it does not import interaction.next-input)")]
    NotAccepted(String),
    #[error("the follow-up text is empty")]
    Empty,
    #[error("the follow-up text is longer than {} bytes", limits::FOLLOW_UP)]
    TooLong,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores `text` as the next follow-up input of `command`, which must be running on a
/// provider that `takes_input`. Returns the stored input.
pub async fn accept(
    events: &dyn EventLog,
    command: &CommandRecord,
    takes_input: bool,
    text: String,
) -> Result<FollowUp, InputError> {
    if command.status != CommandStatus::Running {
        return Err(InputError::NotRunning(
            command.id.clone(),
            command.status.as_str(),
        ));
    }
    if !takes_input {
        return Err(InputError::NotAccepted(command.provider.to_string()));
    }
    if text.trim().is_empty() {
        return Err(InputError::Empty);
    }
    if text.len() > limits::FOLLOW_UP {
        return Err(InputError::TooLong);
    }
    let input = FollowUp {
        id: format!("in-{}", uuid::Uuid::now_v7().simple()),
        text,
    };
    let event = StreamEvent::Host(HostEvent::Input {
        input: input.clone(),
    });
    events.append(&command.id, &event).await?;
    Ok(input)
}

/// The execution's input channel, fed from the command's stream until the runtime drops the
/// receiver (the execution ended) or the stream ends.
pub fn open(events: Arc<dyn EventLog>, ctx: &InteractionContext) -> InputReceiver {
    let (sender, receiver) = mpsc::channel(INBOX_CAPACITY);
    let mut stream = events.subscribe(&ctx.command_id, 0);
    let command = ctx.command_id.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                () = sender.closed() => return,
                next = stream.next() => next,
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    tracing::warn!(%error, %command, "following a command's input");
                    return;
                }
                None => return,
            };
            if let StreamEvent::Host(HostEvent::Input { input }) = &event.event
                && sender.send(input.clone()).await.is_err()
            {
                return;
            }
        }
    });
    receiver
}
