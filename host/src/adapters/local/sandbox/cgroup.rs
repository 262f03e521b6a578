//! A cgroup per command, under one per project: limits (process count, memory, CPU) and a way
//! to kill every process a command left, including ones that escaped its session and group.
//! cgroup v2 when the unified hierarchy has the controllers, else the v1 `pids`, `memory` and
//! `cpu` hierarchies (this machine's layout). A group's name carries its owner (the rdev
//! process and executor that made it), so the groups of a host that died are found again and
//! emptied, and a live peer's are left alone.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Limits;
use crate::adapters::local::tracking::Owner;

/// The hierarchy layout found on this machine.
#[derive(Debug, Clone)]
enum Layout {
    V2 {
        root: PathBuf,
    },
    V1 {
        pids: PathBuf,
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
}

/// This executor's cgroups: `<hierarchy>/<rdev-instance>/<project>/<owner>-<n>`.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    /// Who makes this executor's groups: groups of dead owners are leftovers.
    owner: Owner,
    next: AtomicU64,
}

/// One command's group in every hierarchy in use; joined by the child before it execs.
#[derive(Debug)]
pub struct CommandGroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, opened before the fork.
    procs: Vec<OwnedFd>,
    v2: bool,
}

impl Cgroups {
    /// Finds a writable hierarchy and creates `instance` in it; `Err` says why there is none.
    pub fn detect(instance: &str) -> Result<Self, String> {
        let layout = find_layout(instance)?;
        let base_dirs = match &layout {
            Layout::V2 { root } => vec![root.clone()],
            Layout::V1 { pids, memory, cpu } => std::iter::once(pids.clone())
                .chain(memory.clone())
                .chain(cpu.clone())
                .collect(),
        };
        for dir in &base_dirs {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if let Layout::V2 { root } = &layout {
            enable_v2_controllers(root)?;
        }
        Ok(Self {
            layout,
            owner: Owner::current(),
            next: AtomicU64::new(0),
        })
    }

    /// Which hierarchy is in use, for the status report.
    pub fn describe(&self) -> &'static str {
        match self.layout {
            Layout::V2 { .. } => "cgroup v2",
            Layout::V1 { .. } => "cgroup v1",
        }
    }

    fn project_dirs(&self, project: &str) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => vec![root.join(project)],
            Layout::V1 { pids, memory, cpu } => std::iter::once(pids)
                .chain(memory)
                .chain(cpu)
                .map(|d| d.join(project))
                .collect(),
        }
    }

    /// Kills what dead owners left in the project's groups (a command whose host died, or
    /// an earlier executor of this process) and removes those groups, before the project's
    /// next command runs. Returns how many groups were removed.
    pub fn reap_leftovers(&self, project: &str) -> usize {
        let mut reaped = 0;
        for dir in self.project_dirs(project) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let owner = name.rsplit_once('-').map_or(name.as_ref(), |(o, _)| o);
                if entry.path().is_dir() && self.owner.is_dead(owner) {
                    kill_all(&entry.path(), matches!(self.layout, Layout::V2 { .. }));
                    reaped += usize::from(std::fs::remove_dir(entry.path()).is_ok());
                }
            }
        }
        reaped
    }

    /// Reaps the leftovers of every project (at start, so a dead host's processes stop
    /// before any command of theirs would have run). Returns how many groups were removed.
    pub fn reap_all(&self) -> usize {
        let base = match &self.layout {
            Layout::V2 { root } => root,
            Layout::V1 { pids, .. } => pids,
        };
        let Ok(entries) = std::fs::read_dir(base) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .map(|project| self.reap_leftovers(&project))
            .sum()
    }

    /// Creates the command's group with `limits` applied.
    pub fn create(&self, project: &str, limits: &Limits) -> std::io::Result<CommandGroup> {
        let name = format!(
            "{}-{}",
            self.owner.id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut group = CommandGroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            v2: matches!(self.layout, Layout::V2 { .. }),
        };
        for project_dir in self.project_dirs(project) {
            if let (true, Layout::V2 { .. }) = (!project_dir.exists(), &self.layout) {
                std::fs::create_dir_all(&project_dir).map_err(|e| context(&project_dir, e))?;
                enable_v2_controllers(&project_dir).map_err(std::io::Error::other)?;
            }
            let dir = project_dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| context(&dir, e))?;
            group.dirs.push(dir);
        }
        for dir in &group.dirs {
            apply_limits(dir, limits, group.v2)?;
            let procs = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| context(&procs, e))?;
            group.procs.push(file.into());
        }
        Ok(group)
    }
}

impl CommandGroup {
    /// Descriptors the child writes `0` to (itself) between fork and exec.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Moves the process with host pid `pid` into the group (a command forked by the
    /// project's sandbox server, before it execs).
    pub fn place(&self, pid: i32) -> std::io::Result<()> {
        let line = format!("{pid}\n");
        for (fd, dir) in self.procs.iter().zip(&self.dirs) {
            // SAFETY: writing a local buffer to a descriptor we own.
            let written = unsafe { libc::write(fd.as_raw_fd(), line.as_ptr().cast(), line.len()) };
            if written < 0 {
                return Err(context(dir, std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    /// Kills every process left in the group and removes it.
    pub fn finish(self) {
        if let Some(first) = self.dirs.first() {
            kill_all(first, self.v2);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Moves the calling process into the groups. Runs in the child between fork and exec: only
/// async-signal-safe calls.
pub fn join(fds: &[RawFd]) -> std::io::Result<()> {
    for fd in fds {
        // SAFETY: writing two bytes from a static buffer to a descriptor we own.
        let written = unsafe { libc::write(*fd, b"0\n".as_ptr().cast(), 2) };
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn context(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn write_value(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value).map_err(|e| context(path, e))
}

fn apply_limits(dir: &Path, limits: &Limits, v2: bool) -> std::io::Result<()> {
    let name = |file: &str| dir.join(file);
    if let Some(pids) = limits.pids
        && name("pids.max").exists()
    {
        write_value(&name("pids.max"), &pids.to_string())?;
    }
    if let Some(bytes) = limits.memory_bytes {
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        if name(file).exists() {
            write_value(&name(file), &bytes.to_string())?;
        }
        if v2 && name("memory.swap.max").exists() {
            write_value(&name("memory.swap.max"), "0")?;
        }
    }
    if let Some(percent) = limits.cpu_percent {
        let period = 100_000u64;
        let quota = period * u64::from(percent) / 100;
        if v2 && name("cpu.max").exists() {
            write_value(&name("cpu.max"), &format!("{quota} {period}"))?;
        } else if name("cpu.cfs_quota_us").exists() {
            write_value(&name("cpu.cfs_period_us"), &period.to_string())?;
            write_value(&name("cpu.cfs_quota_us"), &quota.to_string())?;
        }
    }
    Ok(())
}

/// SIGKILLs every process in the group until it is empty (a fork bomb keeps forking while
/// it is being killed; cgroup v2's `cgroup.kill` does it atomically).
fn kill_all(dir: &Path, v2: bool) {
    if v2 && dir.join("cgroup.kill").exists() && write_value(&dir.join("cgroup.kill"), "1").is_ok()
    {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the group; ESRCH is fine.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn enable_v2_controllers(dir: &Path) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["pids", "memory", "cpu"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let control = dir.join("cgroup.subtree_control");
    let mut file = OpenOptions::new()
        .write(true)
        .open(&control)
        .map_err(|e| format!("{}: {e}", control.display()))?;
    file.write_all(wanted.join(" ").as_bytes()).map_err(|e| {
        format!(
            "enabling {} in {}: {e}",
            wanted.join(" "),
            control.display()
        )
    })
}

/// Reads `/proc/self/mountinfo` for cgroup mounts: v2 when its root lists the `pids`
/// controller, else v1 with at least `pids`. v1 groups nest under this process's own group,
/// so the limits of whatever runs rdev still apply.
fn find_layout(instance: &str) -> Result<Layout, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut v1 = (None, None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        if fstype == "cgroup2" {
            let controllers =
                std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                    .unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "pids") {
                return Ok(Layout::V2 {
                    root: Path::new(mount_point).join(instance),
                });
            }
        } else if fstype == "cgroup" {
            for (controller, slot) in [
                ("pids", &mut v1.0),
                ("memory", &mut v1.1),
                ("cpu", &mut v1.2),
            ] {
                if options.split(',').any(|o| o == controller) {
                    let own_path = own_v1_path(&own, controller);
                    *slot = Some(Path::new(mount_point).join(own_path).join(instance));
                }
            }
        }
    }
    match v1 {
        (Some(pids), memory, cpu) => Ok(Layout::V1 { pids, memory, cpu }),
        _ => Err("no cgroup hierarchy with the pids controller is mounted".to_owned()),
    }
}

/// This process's group in the v1 hierarchy holding `controller`, relative to its root.
fn own_v1_path(own: &str, controller: &str) -> PathBuf {
    own.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| PathBuf::from(path.trim_start_matches('/')))
        })
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_paths_are_read_per_controller() {
        let own = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n";
        assert_eq!(own_v1_path(own, "memory"), PathBuf::from("process_api/abc"));
        assert_eq!(own_v1_path(own, "pids"), PathBuf::from(""));
        assert_eq!(own_v1_path(own, "cpu"), PathBuf::from("x"));
        assert_eq!(own_v1_path(own, "blkio"), PathBuf::from(""));
    }
}
