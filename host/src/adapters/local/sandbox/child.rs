//! What the forked child does before it execs bubblewrap, while it still has rdev's
//! privileges: join the project's network namespace and the command's cgroups, stage the
//! bind sources where the sandbox user can reach them, ignore interrupts (so bubblewrap's own
//! processes survive a SIGINT meant for the command) and drop to the sandbox user.
//! Everything here is prepared before the fork: the child only makes system calls.

use std::ffi::CString;
use std::io::Error;
use std::os::fd::RawFd;

use super::cgroup;

/// Precomputed setup of one child.
#[derive(Debug, Default)]
pub struct ChildSetup {
    pub netns: Option<RawFd>,
    pub cgroups: Vec<RawFd>,
    /// A tmpfs mounted here in a private mount namespace, holding `(source, target)` binds:
    /// the sandbox user cannot traverse rdev's data dir or `/root`, so bubblewrap gets these.
    pub stage: Option<(CString, Vec<(CString, CString)>)>,
    /// `Some((uid, gid))` when rdev runs as root and drops to the sandbox user.
    pub switch_to: Option<(u32, u32)>,
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Runs in the child between fork and exec: async-signal-safe calls only.
    pub fn run(&self) -> std::io::Result<()> {
        if let Some(fd) = self.netns {
            super::netns::enter(fd)?;
        }
        cgroup::join(&self.cgroups)?;
        if let Some((root, binds)) = &self.stage {
            stage(root, binds)?;
        }
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: setting an ignore disposition is async-signal-safe.
            unsafe {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
        if let Some((uid, gid)) = self.switch_to {
            // SAFETY: plain credential system calls on this single-threaded child.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(gid, gid, gid))?;
                check(libc::setresuid(uid, uid, uid))?;
            }
        }
        Ok(())
    }
}

/// A private mount namespace (nothing propagates back to the host) with a tmpfs at `root`
/// and each source bound at its target inside it.
fn stage(root: &CString, binds: &[(CString, CString)]) -> std::io::Result<()> {
    let none = std::ptr::null();
    // SAFETY: mount-namespace system calls with NUL-terminated strings prepared before the
    // fork; this child owns its new namespace.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            none.cast(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=1m".as_ptr().cast(),
        ))?;
        for (source, target) in binds {
            let mut meta: libc::stat = std::mem::zeroed();
            check(libc::stat(source.as_ptr(), &mut meta))?;
            if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
                check(libc::mkdir(target.as_ptr(), 0o755))?;
            } else {
                let fd = libc::open(
                    target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check(fd)?;
                libc::close(fd);
            }
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                none.cast(),
            ))?;
        }
    }
    Ok(())
}
