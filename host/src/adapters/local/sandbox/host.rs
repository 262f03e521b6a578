//! Facts about this host the sandbox needs: programs, kernel features, paths, ownership.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::bwrap::View;

/// Whether `program` names an executable file: a path (relative to `cwd`) or a name found
/// on `path`.
pub fn program_exists(program: &str, cwd: &Path, path: Option<&std::ffi::OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(&cwd.join(program));
    }
    path.is_some_and(|path| std::env::split_paths(path).any(|dir| executable(&dir.join(program))))
}

pub fn split_views(views: Vec<View>) -> (Vec<(PathBuf, PathBuf)>, Vec<PathBuf>) {
    let mut symlinks = Vec::new();
    let mut dirs = Vec::new();
    for view in views {
        match view {
            View::Dir(dir) => dirs.push(dir),
            View::Symlink { path, target } => symlinks.push((path, target)),
        }
    }
    (symlinks, dirs)
}

/// npm's `node_modules/.bin` holds symlinks into `node_modules`: bind the whole
/// `node_modules` so they resolve.
pub fn install_root(dir: &Path) -> PathBuf {
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(parent)) if name == ".bin" && parent.ends_with("node_modules") => {
            parent.to_owned()
        }
        _ => dir.to_owned(),
    }
}

/// Whether `path` is `dir` or lies below it, as canonical paths where they exist.
pub fn inside(path: &Path, dir: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    canon(path).starts_with(canon(dir))
}

/// A short stable name for this data dir, so two rdev instances on one host never touch
/// each other's cgroups.
pub fn instance_name(private: &Path) -> String {
    use sha2::Digest;
    let canonical = private
        .canonicalize()
        .unwrap_or_else(|_| private.to_owned());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_bytes());
    format!("rdev-{}", hex::encode(&digest[..6]))
}

pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

pub fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP only reads this thread's mode.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
}

/// The kernel's Landlock ABI version, `None` when it has none.
pub fn landlock_abi() -> Option<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no ruleset and writes nothing.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (version > 0).then_some(version)
}

/// Writes the sandbox's `passwd` and `group`. Each file is replaced by a rename, so a
/// sandbox starting while another rdev on the same data dir (`rdev exec` beside `rdev serve`)
/// rewrites them never binds a half-written file.
pub fn write_identity(passwd: &Path, group: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    replace_file(
        passwd,
        &format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\nrdev:x:{uid}:{gid}:rdev sandbox:/nonexistent:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    replace_file(
        group,
        &format!("root:x:0:\nrdev:x:{gid}:\nnogroup:x:65534:\n"),
    )
}

/// Writes `text` beside `path` under a name of this process's own, then renames it over `path`.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.tmp", std::process::id()));
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, path)
}

/// Whether a user that neither owns nor shares a group with the directories above `path` can
/// look it up: every ancestor searchable by others. Such a path (`/usr`, `/etc`) is handed to
/// bubblewrap as it is; only the others are staged, which saves a bind mount each per spawn.
pub fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.is_absolute()
        && path
            .ancestors()
            .skip(1)
            .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// `chown -hR uid:gid dir`, never following symlinks.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_bin_dirs_bind_their_node_modules() {
        assert_eq!(
            install_root(Path::new("/c/x/node_modules/.bin")),
            PathBuf::from("/c/x/node_modules")
        );
        assert_eq!(
            install_root(Path::new("/usr/local/bin")),
            PathBuf::from("/usr/local/bin")
        );
    }

    #[test]
    fn only_paths_others_can_traverse_count_as_reachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::create_dir(private.join("inner")).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        mode(dir.path(), 0o755);
        mode(&private, 0o700);
        assert!(!reachable_by_others(&private.join("inner")));
        mode(&private, 0o711);
        assert_eq!(
            reachable_by_others(&private.join("inner")),
            reachable_by_others(dir.path()),
            "only the ancestors above the tempdir decide now"
        );
        assert!(reachable_by_others(Path::new("/usr")));
        assert!(!reachable_by_others(Path::new("relative")));
    }

    #[test]
    fn instance_names_differ_per_data_dir() {
        assert_ne!(
            instance_name(Path::new("/a")),
            instance_name(Path::new("/b"))
        );
        assert!(instance_name(Path::new("/a")).starts_with("rdev-"));
    }
}
