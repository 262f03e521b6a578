//! Finding a command's processes by a tag in their environment: every process a command
//! starts inherits it, across `setsid`, double forks and daemonizing, unless a program
//! deliberately starts a child with a scrubbed environment.

use std::time::{Duration, Instant};

/// The variable holding a command's tag.
pub const TAG_VAR: &str = "RDEV_PROCESS_TAG";

/// How long a sweep keeps killing (a fork bomb forks while it is being killed).
const SWEEP_DEADLINE: Duration = Duration::from_secs(5);

/// The tag in process `pid`'s environment (as it was when the process started), if any.
fn tag_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TAG_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|tag| String::from_utf8_lossy(tag).into_owned())
}

fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// SIGKILLs `pid` if its tag still satisfies `doomed`, through a pidfd so a pid reused after
/// the environment was read is never signalled. Returns whether it was signalled.
fn kill_if(pid: i32, doomed: &dyn Fn(&str) -> bool) -> bool {
    // SAFETY: pidfd_open(2) with a plain pid and no flags; the result is a descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // The descriptor pins this process: read its tag now, then signal exactly it.
    let signalled = tag_of(pid).is_some_and(|tag| doomed(&tag)) && {
        // SAFETY: pidfd_send_signal(2) on a descriptor we own, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        }
    };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    signalled
}

/// Kills every process whose tag satisfies `doomed`, scanning again until none is left (or
/// the deadline passes). Returns how many were signalled. This process is never one.
pub fn sweep(doomed: &dyn Fn(&str) -> bool) -> usize {
    let me = i32::try_from(std::process::id()).unwrap_or_default();
    let deadline = Instant::now() + SWEEP_DEADLINE;
    let mut killed = 0;
    loop {
        let round = pids()
            .into_iter()
            .filter(|pid| *pid != me)
            .filter(|pid| tag_of(*pid).is_some_and(|tag| doomed(&tag)))
            .filter(|pid| kill_if(*pid, doomed))
            .count();
        killed += round;
        if round == 0 || Instant::now() > deadline {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
