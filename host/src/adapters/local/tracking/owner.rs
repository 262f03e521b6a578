//! Who started a tracked process, written where a later start of rdev finds it again (a
//! cgroup's name, a process's environment), so leftovers of a host that died can be told
//! apart from the live commands of another rdev process sharing the same data directory.

/// This rdev process (its pid and start time, so a reused pid is not mistaken for it) and the
/// executor within it (an in-process restart builds a new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pid: u32,
    start: u64,
    boot: u32,
}

impl Owner {
    /// The calling process, with a fresh executor id.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: start_time(pid).unwrap_or_default(),
            boot: rand::random(),
        }
    }

    /// The owner as text: `<pid>.<start>.<boot>`, no `-` or `:` (separators around it).
    pub fn id(&self) -> String {
        format!("{}.{}.{:08x}", self.pid, self.start, self.boot)
    }

    /// Whether the owner named `id` is gone: its process no longer runs, or it is this
    /// process but an earlier executor. Text that is no owner id (an older naming) is gone.
    pub fn is_dead(&self, id: &str) -> bool {
        let mut parts = id.splitn(3, '.');
        let (Some(pid), Some(start), Some(boot)) = (parts.next(), parts.next(), parts.next())
        else {
            return true;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            return true;
        };
        if pid == self.pid && start == self.start {
            return boot != format!("{:08x}", self.boot);
        }
        start_time(pid) != Some(start)
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`); `None`
/// when it does not run.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count after it.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_alive_while_their_process_and_executor_are() {
        let me = Owner::current();
        assert!(!me.is_dead(&me.id()));
        let earlier = Owner::current();
        assert!(
            me.is_dead(&earlier.id()),
            "another executor of this process"
        );
        assert!(me.is_dead("4294967295.1.00000000"), "no such pid");
        let pid1 = format!("1.{}.00000000", start_time(1).unwrap_or_default() + 1);
        assert!(me.is_dead(&pid1), "pid 1 started at another time");
        assert!(me.is_dead("1a2b3c4d"), "an older random name");
    }
}
