//! How the worker reports finished commands to whoever keeps metrics, without knowing them.

use std::time::Duration;

use crate::domain::{CommandStatus, ProviderName};

/// Told about every command this worker ran to a final status, so the server can keep
/// metrics without the worker knowing about them.
pub trait FinishObserver: Send + Sync {
    /// `duration` is the wall time from claim to the stored result.
    fn finished(&self, provider: &ProviderName, status: CommandStatus, duration: Duration);
}
