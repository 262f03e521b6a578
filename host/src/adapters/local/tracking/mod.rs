//! Process-tree tracking for the unconfined local executor, which has no PID namespace to end
//! a command's processes with it: every spawn gets its own cgroup when the host lets rdev
//! create one (the sandbox's `cgroup` module) and always a tag in its environment
//! (`environ`). When the spawned program exits (or is killed) everything in its group and
//! everything carrying its tag is killed, including `setsid` and double-fork escapes; before
//! a project's next spawn, whatever a dead host's commands left in the project is killed.

mod environ;
mod owner;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

pub use environ::TAG_VAR;
pub use owner::Owner;

use super::sandbox::Limits;
use super::sandbox::cgroup::{Cgroups, CommandGroup};

/// Tracks the processes of every unconfined spawn of one executor.
#[derive(Debug)]
pub struct ProcessTracker {
    /// Scopes tags to one data directory, as cgroups are.
    instance: String,
    owner: Owner,
    next: AtomicU64,
    /// `None`: the environment tag is the only mechanism.
    cgroups: Option<Cgroups>,
    mechanism: String,
}

/// One spawn's tracking: its tag and, when cgroups are in use, its group.
pub struct Tracked {
    tag: String,
    group: Option<CommandGroup>,
    instance: String,
}

impl ProcessTracker {
    /// A cgroup per spawn when the host has a writable hierarchy, else the environment tag
    /// alone; says which in the log. `instance` names rdev's data directory.
    pub fn detect(instance: &str) -> Self {
        match Cgroups::detect(instance) {
            Ok(cgroups) => {
                let mechanism =
                    format!("{} per command and an environment tag", cgroups.describe());
                Self::with(instance, Some(cgroups), mechanism)
            }
            Err(reason) => Self::with(
                instance,
                None,
                format!("an environment tag only (no cgroup: {reason})"),
            ),
        }
    }

    /// The environment tag alone, as on a host without a writable cgroup hierarchy.
    pub fn environ_only(instance: &str) -> Self {
        Self::with(instance, None, "an environment tag only".to_owned())
    }

    fn with(instance: &str, cgroups: Option<Cgroups>, mechanism: String) -> Self {
        Self {
            instance: instance.to_owned(),
            owner: Owner::current(),
            next: AtomicU64::new(0),
            cgroups,
            mechanism,
        }
    }

    /// What tracks the processes, in words, for the log and status reports.
    pub fn mechanism(&self) -> &str {
        &self.mechanism
    }

    /// Kills what dead hosts' commands left in every project; returns how many processes
    /// and groups. Call at start.
    pub fn reap_all(&self) -> usize {
        let groups = self.cgroups.as_ref().map_or(0, Cgroups::reap_all);
        groups + environ::sweep(&|tag| self.leftover(tag, None))
    }

    /// Whether `tag` is this instance's (and `project`'s, if given) from a dead owner.
    fn leftover(&self, tag: &str, project: Option<&str>) -> bool {
        let mut parts = tag.splitn(4, ':');
        let (Some(instance), Some(of), Some(owner)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        instance == self.instance && project.is_none_or(|p| p == of) && self.owner.is_dead(owner)
    }

    /// Kills the project's leftovers of dead hosts, then sets up tracking for one spawn.
    pub(super) fn track(&self, project: &str) -> std::io::Result<Tracked> {
        let groups = self
            .cgroups
            .as_ref()
            .map_or(0, |c| c.reap_leftovers(project));
        let processes = environ::sweep(&|tag| self.leftover(tag, Some(project)));
        if groups + processes > 0 {
            tracing::warn!(
                project,
                groups,
                processes,
                "killed the leftovers of a dead host's commands"
            );
        }
        let no_limits = Limits {
            pids: None,
            memory_bytes: None,
            cpu_percent: None,
        };
        let group = self
            .cgroups
            .as_ref()
            .map(|c| c.create(project, &no_limits))
            .transpose()?;
        let tag = format!(
            "{}:{project}:{}:{}",
            self.instance,
            self.owner.id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Tracked {
            tag,
            group,
            instance: self.instance.clone(),
        })
    }
}

impl Tracked {
    /// The environment variable every process of the spawn inherits.
    pub fn env(&self) -> (&'static str, &str) {
        (TAG_VAR, &self.tag)
    }

    /// `cgroup.procs` descriptors the child joins between fork and exec.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.group
            .as_ref()
            .map(CommandGroup::join_fds)
            .unwrap_or_default()
    }

    /// Kills every process of the spawn: its group's, then any carrying its tag (one that
    /// left the group). Blocking: run off the async threads.
    pub fn finish(self) {
        if let Some(group) = self.group {
            group.finish();
        }
        let killed = environ::sweep(&|tag| tag == self.tag);
        if killed > 0 {
            tracing::debug!(
                instance = %self.instance,
                killed,
                "killed processes that escaped their command's process group"
            );
        }
    }
}

/// Moves the calling process into the groups; runs between fork and exec.
pub fn join(fds: &[RawFd]) -> std::io::Result<()> {
    super::sandbox::cgroup::join(fds)
}
