//! The last step inside rdev's sandbox, run by bubblewrap as `rdev-sandbox-exec`: the process
//! confines itself with Landlock and seccomp, restores default signal handling, and execs
//! the command; or, with [`protocol::SERVE`], stays as the project's server and forks every
//! command the host asks for (`serve`). Runs before any async runtime or thread exists.

pub mod protocol;
mod serve;
pub mod unix;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The hidden first argument that selects this mode of the rdev binary.
pub const COMMAND: &str = "__sandbox-exec";

/// Exit code when the sandbox cannot be completed or the program cannot be started (the
/// shell's "command not found/not executable" range).
pub(crate) const FAILED: i32 = 127;

/// The helper's `main`: expects [`COMMAND`] first, confines this process and execs the
/// command; exits 127 with the reason when it cannot.
pub fn exec_helper() -> ! {
    let mut args = std::env::args_os();
    let _binary = args.next();
    if args.next().as_deref() != Some(COMMAND.as_ref()) {
        eprintln!("rdev sandbox: this helper runs only inside rdev's sandbox");
        std::process::exit(FAILED);
    }
    let mut args = args.peekable();
    let serving = args.peek().is_some_and(|a| a == protocol::SERVE);
    if serving {
        args.next();
    }
    let error = match Plan::parse(args, serving) {
        Ok(plan) if serving => plan.serve(),
        Ok(plan) => plan.run(),
        Err(reason) => reason,
    };
    if error.is_empty() {
        std::process::exit(0);
    }
    eprintln!("rdev sandbox: {error}");
    std::process::exit(FAILED);
}

/// What the helper was told: paths Landlock lets it read or write, and the command.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    program: OsString,
    args: Vec<OsString>,
}

impl Plan {
    /// `--ro`/`--rw` paths, then (unless `serving`) `--` and the command.
    fn parse(mut args: impl Iterator<Item = OsString>, serving: bool) -> Result<Self, String> {
        let mut plan = Plan::default();
        loop {
            let Some(flag) = args.next() else {
                return match serving {
                    true => Ok(plan),
                    false => Err("no command given".to_owned()),
                };
            };
            let list = match flag.to_str() {
                Some("--") if !serving => break,
                Some("--ro") => &mut plan.read,
                Some("--rw") => &mut plan.write,
                _ => return Err(format!("unknown argument {flag:?}")),
            };
            list.push(args.next().ok_or("a path is missing")?.into());
        }
        plan.program = args.next().ok_or("no program given")?;
        plan.args = args.collect();
        Ok(plan)
    }

    /// Landlock, then seccomp, on this process and all it forks.
    fn confine(&self) -> Result<(), String> {
        landlock(&self.read, &self.write).map_err(|e| format!("landlock: {e}"))?;
        seccomp().map_err(|e| format!("seccomp: {e}"))
    }

    /// Confines this process and serves the project's commands; returns the reason it
    /// stopped (empty when the host closed the control socket).
    fn serve(self) -> String {
        match self.confine() {
            Ok(()) => serve::serve(),
            Err(e) => e,
        }
    }

    /// Returns only on failure, with the reason.
    fn run(self) -> String {
        if let Err(e) = self.confine() {
            return e;
        }
        restore_signals();
        // Nothing of the spawner's descriptors (bind sources, namespaces) reaches the command.
        // SAFETY: close_range on descriptors this process no longer needs.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
        let error = std::process::Command::new(&self.program)
            .args(&self.args)
            .exec();
        format!("cannot run {:?}: {error}", self.program)
    }
}

/// Filesystem access limited to the views bubblewrap bound (reads) and the workspace, `/tmp`
/// and devices (writes); signals and abstract Unix sockets limited to this sandbox. Best
/// effort: a kernel without Landlock (or an older ABI) enforces what it can, and the mount
/// namespace remains the first wall.
fn landlock(read: &[PathBuf], write: &[PathBuf]) -> Result<(), landlock::RulesetError> {
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .add_rules(path_beneath_rules(read, AccessFs::from_read(abi)))?
        .add_rules(path_beneath_rules(write, AccessFs::from_all(abi)))?
        .restrict_self()?;
    // `restrict_self` also set no_new_privs, which seccomp needs without privileges.
    let _ = status;
    Ok(())
}

/// A Landlock domain of the calling process's own, nested in the server's: from then on it
/// (and what it starts) can signal, trace or read the `/proc` secrets of only its own
/// descendants, and reach only abstract sockets they made.
pub(crate) fn own_domain() -> Result<(), landlock::RulesetError> {
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?
        .restrict_self()?;
    Ok(())
}

/// System calls a coding agent never needs, refused with EPERM: changing mounts or the
/// kernel, tracing or reading other processes, new namespaces, BPF, keyrings, io_uring.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_quotactl,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_vhangup,
    libc::SYS_personality,
];

/// `clone` flags that would create a namespace.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The two filters: EPERM for [`DENIED`] and namespace-creating `clone`; ENOSYS for `clone3`,
/// whose flags sit in memory a filter cannot read, so libc falls back to `clone`.
pub fn filters() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let mut denied: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = u64::from(flag.unsigned_abs());
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        ARCH,
    )?;
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        ARCH,
    )?;
    Ok(vec![eperm.try_into()?, enosys.try_into()?])
}

fn seccomp() -> Result<(), seccompiler::Error> {
    for program in filters()? {
        seccompiler::apply_filter(&program)?;
    }
    Ok(())
}

/// The spawner ignored interrupts so that bubblewrap's own processes outlive a SIGINT sent
/// to the group; the command gets default handling back (the Rust runtime also ignores
/// SIGPIPE, which `exec` keeps).
pub(crate) fn restore_signals() {
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        // SAFETY: resetting a disposition to its default in a single-threaded process
        // about to exec installs no handler.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_plan_lists_paths_then_the_command() {
        let plan = Plan::parse(
            os(&["--ro", "/usr", "--rw", "/ws", "--", "sh", "-c", "--ro"]).into_iter(),
            false,
        )
        .expect("valid");
        assert_eq!(plan.read, [PathBuf::from("/usr")]);
        assert_eq!(plan.write, [PathBuf::from("/ws")]);
        assert_eq!(plan.program, "sh");
        assert_eq!(plan.args, os(&["-c", "--ro"]));
        for bad in [&["--ro"][..], &["--bogus", "x", "--", "sh"], &["--"], &[]] {
            assert!(Plan::parse(os(bad).into_iter(), false).is_err(), "{bad:?}");
        }
        let server = Plan::parse(os(&["--ro", "/usr", "--rw", "/ws"]).into_iter(), true)
            .expect("a server has no command");
        assert_eq!(server.write, [PathBuf::from("/ws")]);
        assert!(Plan::parse(os(&["--ro", "/usr", "--", "sh"]).into_iter(), true).is_err());
    }

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let programs = filters().expect("filters compile");
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }
}
