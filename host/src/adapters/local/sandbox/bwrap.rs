//! The bubblewrap command line of one confined spawn: which host paths the sandbox sees,
//! read-only or writable, and which namespaces it gets. Pure, so it is tested without running.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Where the rdev binary is bound inside the sandbox, to confine itself and exec the command.
pub const HELPER_PATH: &str = "/run/rdev/sandbox-exec";

/// Host system directories every program needs (loader, libraries, certificates, `/etc`).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Files under `/etc` replaced by an empty file even though the sandbox user cannot read
/// them anyway: a third wall for the host's password hashes.
const HIDDEN_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// One read-only view of a host path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// A directory bound at the same path.
    Dir(PathBuf),
    /// A symlink recreated with the same target (`/bin -> usr/bin` on merged-/usr systems).
    Symlink { path: PathBuf, target: PathBuf },
}

/// The host paths a sandbox sees read-only: the system directories that exist here, plus
/// `extra` directories (the PATH entries the agent CLIs live in), without duplicates or paths
/// already inside another view.
pub fn read_only_views(extra: &[PathBuf]) -> Vec<View> {
    let mut views = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in SYSTEM_DIRS.iter().map(PathBuf::from) {
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&dir) {
                    views.push(View::Symlink { path: dir, target });
                }
            }
            Ok(meta) if meta.is_dir() => dirs.push(dir),
            _ => {}
        }
    }
    for dir in extra {
        let Ok(canonical) = dir.canonicalize() else {
            continue;
        };
        if canonical.is_dir() && !dirs.iter().any(|d| canonical.starts_with(d)) {
            dirs.push(canonical);
        }
    }
    dirs.sort();
    dirs.dedup_by(|later, earlier| later.starts_with(earlier.as_path()));
    views.extend(dirs.into_iter().map(View::Dir));
    views
}

/// A host path (as bubblewrap can reach it) shown at `dest` inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub writable: bool,
}

/// Everything the command line needs for one spawn.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// Symlinks recreated in the new root (`/bin -> usr/bin`).
    pub symlinks: &'a [(PathBuf, PathBuf)],
    /// Read-only binds first (system dirs, then files over them), then writable ones.
    pub binds: &'a [Bind],
    pub cwd: &'a Path,
    pub uid: u32,
    pub gid: u32,
    pub project: &'a str,
    /// The helper serves the project's commands (`--serve`) instead of running `program`.
    pub serve: bool,
    pub program: &'a str,
    pub args: &'a [String],
}

/// The arguments after `bwrap`: new user, PID, mount, IPC, UTS and cgroup namespaces; the
/// root a fresh tmpfs holding only the binds, a private `/proc`, a minimal `/dev` and a
/// private `/tmp`; then the helper, which adds Landlock and seccomp (told the same paths) and
/// runs the program.
pub fn arguments(inv: &Invocation<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::with_capacity(64 + 4 * inv.binds.len());
    let mut push = |items: &[&OsStr]| args.extend(items.iter().map(OsString::from));
    for flag in [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
    ] {
        push(&[flag.as_ref()]);
    }
    let uid = inv.uid.to_string();
    let gid = inv.gid.to_string();
    push(&[
        "--uid".as_ref(),
        uid.as_ref(),
        "--gid".as_ref(),
        gid.as_ref(),
    ]);
    let hostname = format!("rdev-{}", inv.project);
    push(&["--hostname".as_ref(), hostname.as_ref()]);
    for (path, target) in inv.symlinks {
        push(&["--symlink".as_ref(), target.as_os_str(), path.as_os_str()]);
    }
    for bind in inv.binds.iter().filter(|b| !b.writable) {
        push(&[
            "--ro-bind".as_ref(),
            bind.source.as_os_str(),
            bind.dest.as_os_str(),
        ]);
    }
    for hidden in HIDDEN_FILES {
        push(&[
            "--ro-bind-try".as_ref(),
            "/dev/null".as_ref(),
            hidden.as_ref(),
        ]);
    }
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
    ]);
    push(&[
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--tmpfs".as_ref(),
        "/var/tmp".as_ref(),
    ]);
    for bind in inv.binds.iter().filter(|b| b.writable) {
        push(&[
            "--bind".as_ref(),
            bind.source.as_os_str(),
            bind.dest.as_os_str(),
        ]);
    }
    push(&["--chdir".as_ref(), inv.cwd.as_os_str()]);
    args.extend(helper_arguments(inv));
    args
}

/// The helper's command line: `--serve` or the program, and the paths Landlock allows.
fn helper_arguments(inv: &Invocation<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--".into(),
        HELPER_PATH.into(),
        rdev_sandbox_exec::COMMAND.into(),
    ];
    if inv.serve {
        args.push(rdev_sandbox_exec::protocol::SERVE.into());
    }
    for bind in inv.binds {
        let flag = if bind.writable { "--rw" } else { "--ro" };
        args.extend([flag.into(), bind.dest.clone().into_os_string()]);
    }
    for dir in ["/proc", "/dev", "/tmp", "/var/tmp"] {
        args.extend(["--rw".into(), dir.into()]);
    }
    if !inv.serve {
        args.extend(["--".into(), inv.program.into()]);
        args.extend(inv.args.iter().map(OsString::from));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_workspace_is_the_only_writable_bind_and_the_command_comes_last() {
        let bind = |source: &str, dest: &str, writable| Bind {
            source: source.into(),
            dest: dest.into(),
            writable,
        };
        let binds = vec![
            bind("/usr", "/usr", false),
            bind("/stage/1", "/etc/passwd", false),
            bind("/stage/0", "/data/projects/demo", true),
        ];
        let symlinks = vec![(PathBuf::from("/bin"), PathBuf::from("usr/bin"))];
        let args = ["-c".to_owned(), "echo hi".to_owned()];
        let inv = Invocation {
            symlinks: &symlinks,
            binds: &binds,
            cwd: Path::new("/data/projects/demo/src"),
            uid: 64000,
            gid: 64000,
            project: "demo",
            serve: false,
            program: "sh",
            args: &args,
        };
        let line = render(&arguments(&inv));
        assert_eq!(line.matches("--bind ").count(), 1, "{line}");
        assert!(line.contains("--bind /stage/0 /data/projects/demo"));
        assert!(line.contains("--ro-bind /usr /usr"));
        assert!(line.contains("--symlink usr/bin /bin"));
        assert!(line.contains("--ro-bind-try /dev/null /etc/shadow"));
        assert!(line.contains("--uid 64000 --gid 64000"));
        assert!(line.contains("--chdir /data/projects/demo/src"));
        assert!(line.contains("--rw /data/projects/demo"));
        assert!(line.contains("--ro /etc/passwd"));
        assert!(line.ends_with("-- sh -c echo hi"), "{line}");
        let server = render(&arguments(&Invocation { serve: true, ..inv }));
        assert!(server.contains("__sandbox-exec --serve --ro"), "{server}");
        assert!(server.ends_with("--rw /var/tmp"), "{server}");
    }

    #[test]
    fn nested_and_missing_extra_dirs_are_dropped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let inner = tmp.path().join("a/b");
        std::fs::create_dir_all(&inner).expect("mkdir");
        let views = read_only_views(&[
            inner.clone(),
            tmp.path().join("a"),
            tmp.path().join("missing"),
            PathBuf::from("/usr/bin"),
        ]);
        let dirs: Vec<_> = views
            .iter()
            .filter_map(|v| match v {
                View::Dir(d) => Some(d.clone()),
                View::Symlink { .. } => None,
            })
            .collect();
        let a = tmp.path().canonicalize().expect("canon").join("a");
        assert!(dirs.contains(&a), "{dirs:?}");
        assert!(
            !dirs
                .iter()
                .any(|d| d.ends_with("a/b") || d.ends_with("missing"))
        );
        assert!(!dirs.contains(&PathBuf::from("/usr/bin")), "inside /usr");
    }
}
