//! The command state machine. This file alone decides which status changes are legal; the
//! queue adapters ask it rather than encoding the rules again in SQL.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `pending → running → completed | failed`, and `cancelled` from either of the first two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a command cannot move from {from} to {to}")]
pub struct TransitionError {
    pub from: CommandStatus,
    pub to: CommandStatus,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 5] = [
        Self::Pending,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether `self → to` is legal. `running → pending` is legal only as a lease rescue of
    /// a command whose process never started; callers that are not the rescuer must not
    /// use it, which is why it is a separate method.
    pub fn check_transition(self, to: CommandStatus) -> Result<(), TransitionError> {
        use CommandStatus::*;
        let legal = matches!(
            (self, to),
            (Pending, Running)
                | (Pending, Cancelled)
                | (Pending, Failed)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
        );
        if legal {
            Ok(())
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// The one backwards move: a rescued lease whose process had not started yet.
    pub fn check_requeue(self) -> Result<(), TransitionError> {
        if self == Self::Running {
            Ok(())
        } else {
            Err(TransitionError {
                from: self,
                to: Self::Pending,
            })
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for CommandStatus {
    type Err = UnknownStatus;
    fn from_str(value: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| UnknownStatus(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::CommandStatus::*;
    use super::*;

    #[test]
    fn forward_moves_are_legal() {
        for (from, to) in [
            (Pending, Running),
            (Pending, Cancelled),
            (Pending, Failed),
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
        ] {
            assert_eq!(from.check_transition(to), Ok(()), "{from} -> {to}");
        }
    }

    #[test]
    fn terminal_statuses_never_change() {
        for from in [Completed, Failed, Cancelled] {
            assert!(from.is_terminal());
            for to in CommandStatus::ALL {
                assert_eq!(
                    from.check_transition(to),
                    Err(TransitionError { from, to }),
                    "{from} -> {to}"
                );
            }
            assert!(from.check_requeue().is_err());
        }
    }

    #[test]
    fn skipping_running_or_going_back_is_refused() {
        assert!(Pending.check_transition(Completed).is_err());
        assert!(Running.check_transition(Pending).is_err());
        assert!(Running.check_transition(Running).is_err());
        assert_eq!(Running.check_requeue(), Ok(()));
        assert!(Pending.check_requeue().is_err());
    }

    #[test]
    fn statuses_parse_from_their_names() {
        for status in CommandStatus::ALL {
            assert_eq!(status.as_str().parse::<CommandStatus>(), Ok(status));
        }
        assert!("done".parse::<CommandStatus>().is_err());
    }
}
