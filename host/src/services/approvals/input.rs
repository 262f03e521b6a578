//! Follow-up input, across replicas: `POST /commands/{id}/input` appends an `input` event
//! to the command's stream ([`accept`]); the replica running the command follows that
//! stream (the event log's subscription, fed by `NOTIFY` on PostgreSQL) and hands each
//! input to the execution's channel ([`open`]). The stream is the inbox: the input is
//! stored, shows on SSE, and reaches the worker wherever the request landed. An execution
//! that starts again (after its host was lost) is handed the command's earlier inputs too.
//!
//! Delivery is accounted for: input is stored only while the command is `running`
//! (atomically with its status), each input the provider takes is marked on the stream
//! ([`delivered`]), and once the final status is written the worker names every input that
//! was stored but never taken ([`undelivered`]) in a `warning` before `done`.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::domain::interaction::{FollowUp, limits};
use crate::domain::{AgentEvent, CommandId, CommandRecord, CommandStatus, HostEvent, StreamEvent};
use crate::ports::interaction::InputReceiver;
use crate::ports::{EventLog, InteractionContext, StoreError};

/// Inputs queued for an execution that has not taken them yet.
const INBOX_CAPACITY: usize = 64;

/// Append-key prefix of a stored input, and of the mark that the provider took one.
const INPUT_KEY: &str = "input:";
const DELIVERED_KEY: &str = "delivered:";

/// Characters of an undelivered input's text repeated in its warning.
const QUOTED: usize = 40;

/// Why follow-up text was refused before it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("command {0} is {1}, not running: input reaches only a running command")]
    NotRunning(CommandId, &'static str),
    #[error("command {0} ended before the input was stored: input reaches only a running command")]
    Ended(CommandId),
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
    let key = format!("{INPUT_KEY}{}", input.id);
    match events.append_while_running(&command.id, &event, &key).await {
        Ok(_) => Ok(input),
        Err(StoreError::Conflict(_)) => Err(InputError::Ended(command.id.clone())),
        Err(error) => Err(error.into()),
    }
}

/// Marks input `input_id` of `command` as taken by the provider. A mark that cannot be
/// stored is logged: the input was delivered, only the report at the end may then be wrong.
pub async fn delivered(events: &dyn EventLog, command: &CommandId, input_id: &str) {
    let event = StreamEvent::Host(HostEvent::InputDelivered {
        input_id: input_id.to_owned(),
    });
    let key = format!("{DELIVERED_KEY}{input_id}");
    if let Err(error) = events.append_once(command, &event, &key).await {
        tracing::warn!(%error, %command, input_id, "marking follow-up input delivered");
    }
}

/// The inputs stored for `command` that its provider never took, in the order they came.
/// Final only once the command's status is, since input is stored only while it runs.
pub async fn undelivered(
    events: &dyn EventLog,
    command: &CommandId,
) -> Result<Vec<FollowUp>, StoreError> {
    let inputs: Vec<FollowUp> = events
        .read_keyed(command, INPUT_KEY)
        .await?
        .into_iter()
        .filter_map(|stored| match stored.event {
            StreamEvent::Host(HostEvent::Input { input }) => Some(input),
            _ => None,
        })
        .collect();
    if inputs.is_empty() {
        return Ok(inputs);
    }
    let taken: std::collections::HashSet<String> = events
        .read_keyed(command, DELIVERED_KEY)
        .await?
        .into_iter()
        .filter_map(|stored| match stored.event {
            StreamEvent::Host(HostEvent::InputDelivered { input_id }) => Some(input_id),
            _ => None,
        })
        .collect();
    Ok(inputs
        .into_iter()
        .filter(|input| !taken.contains(&input.id))
        .collect())
}

/// The warning that says `input` never reached the agent.
pub fn undelivered_warning(input: &FollowUp) -> AgentEvent {
    let mut quoted: String = input.text.chars().take(QUOTED).collect();
    if input.text.chars().nth(QUOTED).is_some() {
        quoted.push('…');
    }
    AgentEvent::Warning {
        message: format!(
            "follow-up input {} ({quoted:?}) was not delivered: the agent stopped taking \
             input before the command ended",
            input.id
        ),
    }
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
