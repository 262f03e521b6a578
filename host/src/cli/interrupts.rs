//! Ctrl-C and SIGTERM for the commands that wait on a run: both mean "stop", and a
//! command that cannot listen for them says so once instead of failing.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both stop signals, received together.
pub struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    /// `None`, after a warning, when the process cannot listen: Ctrl-C then ends rdev at once,
    /// without cancelling anything.
    pub fn listen() -> Option<Self> {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Some(Self {
                interrupt,
                terminate,
            }),
            _ => {
                eprintln!("warning: cannot listen for Ctrl-C; it will end rdev without cancelling");
                None
            }
        }
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
