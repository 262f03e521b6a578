//! A process on a pseudo-terminal, as a person at a terminal runs it: stdin, stdout and
//! stderr are the terminal's (so `isatty` is true, and what is typed is echoed and read a
//! line at a time by the terminal's line discipline). The test reads what the terminal
//! shows and types lines into it. Built on the C library's `openpty`; no crate needed.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child on a terminal, and everything the terminal showed so far.
pub struct Pty {
    child: tokio::process::Child,
    master: File,
    shown: Arc<Mutex<String>>,
}

impl Pty {
    /// Spawns `command` with the terminal as its stdin, stdout and stderr.
    pub fn spawn(mut command: tokio::process::Command) -> Self {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the integers it is given; the name,
        // termios and window size pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        let child = command
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave))
            .kill_on_drop(true)
            .spawn()
            .expect("the process starts on the terminal");
        // Only the child holds the terminal now: its exit ends the reads below.
        drop(slave);
        let shown = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().expect("dup the terminal's master");
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // EIO once the child side is closed: the terminal is gone.
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                if let Ok(mut shown) = sink.lock() {
                    shown.push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }
        });
        Self {
            child,
            master,
            shown,
        }
    }

    /// Everything the terminal showed so far.
    pub fn shown(&self) -> String {
        self.shown.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the terminal has shown `text` after byte `from`; the offset just past
    /// it. Panics with what was shown when `wait` passes first.
    pub async fn expect(&self, text: &str, from: usize, wait: Duration) -> usize {
        let until = Instant::now() + wait;
        loop {
            let shown = self.shown();
            if let Some(at) = shown.get(from..).and_then(|rest| rest.find(text)) {
                return from + at + text.len();
            }
            assert!(
                Instant::now() < until,
                "the terminal did not show {text:?} within {wait:?}; it showed:\n{shown}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.master.flush())
            .expect("typing into the terminal");
    }

    /// Waits for the process to exit; its exit code. Panics after `wait`.
    pub async fn exit_code(&mut self, wait: Duration) -> Option<i32> {
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the process did not exit within {wait:?}; the terminal showed:\n{}",
                    self.shown()
                )
            })
            .expect("waiting for the process");
        status.code()
    }
}
