//! The lease heartbeat of a running command, in a task of its own.
//!
//! It must not be awaited by the loop that polls the execution. An execution waits on the
//! database too (an approval it asked for, an input it took, each a write), and it makes
//! progress only while that loop polls it. A heartbeat awaited in the loop while the
//! execution held, or was next in line for, what the heartbeat needed (SQLite's write lock;
//! on PostgreSQL the command's row, locked by the execution's open transaction) waited for
//! the execution, which waited for the loop: the command hung forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::domain::{Heartbeat, Lease};
use crate::ports::{CommandQueue, StoreError};

/// The beats of one lease, each the store's answer; stops beating when dropped.
///
/// It beats whether or not anyone reads the answers: the worker holds it from the claim
/// until the final status is written, through the workspace snapshot before the run, the
/// diff after it and a finish that retries, and reads it only while the execution runs. An
/// answer nobody reads yet is kept; newer ones are dropped until it is read (a lost lease
/// and a cancel flag stay true, so the next answer read says so again).
pub(super) struct Heartbeats {
    beats: mpsc::Receiver<Result<Heartbeat, StoreError>>,
    task: JoinHandle<()>,
}

impl Heartbeats {
    /// Extends `lease` every `period`, the first time one period from now; a beat that is
    /// late delays the next rather than bunching them.
    pub fn start(queue: Arc<dyn CommandQueue>, lease: Lease, period: Duration) -> Self {
        let (sender, beats) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let beat = queue.heartbeat(&lease).await;
                match sender.try_send(beat) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Self { beats, task }
    }

    /// The next beat's answer. Cancel-safe.
    pub async fn next(&mut self) -> Result<Heartbeat, StoreError> {
        match self.beats.recv().await {
            Some(beat) => beat,
            // The task never ends while this value lives, except by a panic in the store.
            None => std::future::pending().await,
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}
