//! A one-line spinner on stderr while `rdev run` waits for the next event, so a quiet
//! command does not look hung. Only on a terminal: piped stderr stays free of control
//! characters. The output a command prints never mixes with it: [`Spinner::clear`] erases
//! the line first, and the ticker draws nothing until [`Spinner::resume`].

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Time between two frames.
pub const TICK: Duration = Duration::from_millis(100);

/// The erase sequence: back to column 0, clear to the end of the line.
const ERASE: &str = "\r\x1b[K";

struct State {
    out: Box<dyn Write + Send>,
    /// Drawing allowed (between `resume` and `clear`).
    active: bool,
    /// Something is on the line that `clear` must erase.
    drawn: bool,
    frame: usize,
}

/// See the module documentation. Dropping it erases the line and stops the ticker.
pub struct Spinner {
    state: Option<Arc<Mutex<State>>>,
    ticker: Option<JoinHandle<()>>,
}

impl Spinner {
    /// A spinner on stderr when stderr is a terminal, else one that does nothing.
    pub fn stderr(label: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            Self::on(Box::new(std::io::stderr()), label)
        } else {
            Self::disabled()
        }
    }

    /// A spinner that draws nothing.
    pub fn disabled() -> Self {
        Self {
            state: None,
            ticker: None,
        }
    }

    /// A spinner drawing to `out`, paused until [`Spinner::resume`].
    pub fn on(out: Box<dyn Write + Send>, label: &'static str) -> Self {
        let state = Arc::new(Mutex::new(State {
            out,
            active: false,
            drawn: false,
            frame: 0,
        }));
        let shared = state.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                let Ok(mut state) = shared.lock() else { return };
                if !state.active {
                    continue;
                }
                let frame = FRAMES[state.frame % FRAMES.len()];
                state.frame += 1;
                // A failed write to stderr is not worth failing the command for.
                let _ = write!(state.out, "{ERASE}{frame} {label}");
                let _ = state.out.flush();
                state.drawn = true;
            }
        });
        Self {
            state: Some(state),
            ticker: Some(ticker),
        }
    }

    /// Starts (or continues) spinning from the next tick.
    pub fn resume(&self) {
        if let Some(state) = &self.state
            && let Ok(mut state) = state.lock()
        {
            state.active = true;
        }
    }

    /// Stops spinning and erases the line, so the caller can print.
    pub fn clear(&self) {
        if let Some(state) = &self.state
            && let Ok(mut state) = state.lock()
        {
            state.active = false;
            if state.drawn {
                let _ = write!(state.out, "{ERASE}");
                let _ = state.out.flush();
                state.drawn = false;
            }
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.clear();
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().expect("lock"))).expect("utf-8")
        }
    }

    async fn ticks(n: u32) {
        for _ in 0..n {
            tokio::time::sleep(TICK).await;
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn draws_only_while_resumed_and_erases_before_output() {
        let out = Shared::default();
        let spinner = Spinner::on(Box::new(out.clone()), "waiting");
        ticks(3).await;
        assert_eq!(out.take(), "", "paused until resumed");

        spinner.resume();
        ticks(3).await;
        let drawn = out.take();
        assert!(drawn.contains("⠋ waiting"), "{drawn:?}");
        assert!(drawn.contains("⠙ waiting"), "frames advance: {drawn:?}");

        spinner.clear();
        assert_eq!(out.take(), ERASE, "clear erases what was drawn");
        ticks(3).await;
        assert_eq!(out.take(), "", "nothing is drawn after clear");
        spinner.clear();
        assert_eq!(out.take(), "", "clearing an empty line writes nothing");

        spinner.resume();
        ticks(2).await;
        drop(spinner);
        let last = out.take();
        assert!(last.ends_with(ERASE), "dropping erases the line: {last:?}");
        ticks(3).await;
        assert_eq!(out.take(), "", "the ticker stopped");
    }
}
