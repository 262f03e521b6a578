//! The bubblewrap invocation of a sandbox: the arguments and the forked child's setup for one
//! spawn or one project's server, and the trial run at start.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::bwrap::{self, Bind};
use super::cgroup::CommandGroup;
use super::child::ChildSetup;
use super::host::reachable_by_others;
use super::netns::Netns;
use super::{STAGE_DIR, Sandbox, SandboxError, Target};
use crate::ports::ExecError;

impl Sandbox {
    /// Runs `true` through the whole chain once, so a host that cannot run it fails at
    /// start with bubblewrap's own words instead of at the first command.
    pub(super) fn trial(&self) -> Result<(), SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("trial-")
            .tempdir_in(&self.config.state_dir)
            .map_err(|e| SandboxError::Setup(format!("trial workspace: {e}")))?;
        self.adopt(dir.path())
            .map_err(|e| SandboxError::Setup(format!("trial workspace: {e}")))?;
        let (args, setup) = self
            .invocation(
                &Target {
                    project: "trial",
                    workspace: dir.path(),
                    cwd: dir.path(),
                    program: "true",
                    args: &[],
                },
                None,
                None,
                false,
            )
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        let mut command = std::process::Command::new(&self.bwrap);
        command.args(args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        // SAFETY: the setup only makes async-signal-safe system calls.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || setup.run());
        }
        let output = command
            .output()
            .map_err(|e| SandboxError::Setup(format!("running {}: {e}", self.bwrap.display())))?;
        if !output.status.success() {
            return Err(SandboxError::Missing(vec![format!(
                "a trial sandbox failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )]));
        }
        Ok(())
    }

    /// The bubblewrap arguments and the child's setup for one spawn, or (`serve`) for the
    /// project's server, whose target names no program.
    pub(super) fn invocation(
        &self,
        target: &Target<'_>,
        netns: Option<&Netns>,
        group: Option<&CommandGroup>,
        serve: bool,
    ) -> Result<(Vec<std::ffi::OsString>, ChildSetup), ExecError> {
        let Target {
            project,
            workspace,
            cwd,
            program,
            args,
        } = *target;
        let mut sources: Vec<(PathBuf, PathBuf, bool)> = self
            .read_only
            .iter()
            .map(|d| (d.clone(), d.clone(), false))
            .collect();
        sources.push((self.passwd.clone(), "/etc/passwd".into(), false));
        sources.push((self.group.clone(), "/etc/group".into(), false));
        sources.push((self.config.helper.clone(), bwrap::HELPER_PATH.into(), false));
        sources.push((workspace.to_owned(), workspace.to_owned(), true));
        let mut setup = ChildSetup {
            netns: netns.map(Netns::raw),
            cgroups: group.map(CommandGroup::join_fds).unwrap_or_default(),
            switch_to: self.switch_user.then_some((self.uid, self.gid)),
            stage: None,
        };
        let binds: Vec<Bind> = if self.switch_user {
            let cstring = |p: &Path| {
                CString::new(p.as_os_str().as_bytes()).map_err(|_| ExecError::SpawnFailed {
                    program: program.to_owned(),
                    reason: format!("{} contains a NUL byte", p.display()),
                })
            };
            let mut staged = Vec::new();
            let mut binds = Vec::new();
            for (i, (source, dest, writable)) in sources.into_iter().enumerate() {
                if !writable && reachable_by_others(&source) {
                    binds.push(Bind {
                        source,
                        dest,
                        writable,
                    });
                    continue;
                }
                let target = Path::new(STAGE_DIR).join(i.to_string());
                staged.push((cstring(&source)?, cstring(&target)?));
                binds.push(Bind {
                    source: target,
                    dest,
                    writable,
                });
            }
            setup.stage = Some((cstring(Path::new(STAGE_DIR))?, staged));
            binds
        } else {
            sources
                .into_iter()
                .map(|(source, dest, writable)| Bind {
                    source,
                    dest,
                    writable,
                })
                .collect()
        };
        let arguments = bwrap::arguments(&bwrap::Invocation {
            symlinks: &self.symlinks,
            binds: &binds,
            cwd,
            uid: self.uid,
            gid: self.gid,
            project,
            serve,
            program,
            args,
        });
        Ok((arguments, setup))
    }
}
