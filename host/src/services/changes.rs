//! Tracking what a command changes in its project's workspace. When the command starts, the
//! workspace is snapshotted with git into a private repository (`.rdev/changes.git`, with
//! its own index, so a workspace that is a git checkout keeps its index, refs and history
//! untouched, and one that is not a checkout works the same); when the run is over, it is
//! snapshotted again and the two trees are diffed there and then, and the bounded result is
//! stored (see `ports::ChangesStore`), so it survives whatever later happens to the
//! workspace. Everything runs through the [`Executor`] port, in the workspace itself: a
//! local directory and a Kubernetes pod alike, each of which needs `sh` and `git`.
//!
//! The workspace's own `.gitignore` files are honoured (build output stays out) and rdev's
//! state directory `.rdev/` is excluded; the user's and the system's git configuration are
//! not read, so no filter or hook of theirs runs. Commands of one project run one at a
//! time, so one private index serves them all and keeps git's stat cache warm.
//!
//! Each snapshot's tree is kept under `refs/rdev/<command>/before` and `/after`; after a
//! command's changes are stored, the refs of all but the newest commands are dropped and
//! `git gc` prunes what nothing references any more (see [`ChangeRetention`]), so the
//! repository does not grow with every version of every file.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::domain::changes::change_set;
use crate::domain::{ChangeLimits, ChangeSet, CommandId, ProjectId};
use crate::ports::{
    ChangesOutcome, ChangesStore, ExecError, Executor, Signal, SpawnSpec, StoreError,
};

/// The private repository, relative to the workspace root.
const GIT_DIR: &str = ".rdev/changes.git";

/// Initialises the private repository when missing, stages the whole workspace into its
/// index (what cannot be read is skipped), keeps the tree under the ref `$1` and prints its
/// id.
const SNAPSHOT: &str = r#"set -e
d=.rdev/changes.git
if [ ! -f "$d/HEAD" ]; then mkdir -p .rdev && (unset GIT_DIR; git init -q --bare "$d"); fi
mkdir -p "$d/info" && printf '/.rdev/\n/lost+found/\n' > "$d/info/exclude"
export GIT_DIR="$d" GIT_WORK_TREE=. GIT_INDEX_FILE="$d/index"
git add -A --ignore-errors -- . >/dev/null 2>&1 || true
t=$(git write-tree)
git update-ref "$1" "$t"
echo "$t"
"#;

/// Once the refs of `2 × $1` commands or more are there, drops those of all but the newest
/// `$1` (command ids are UUIDv7, so their names sort by age) and lets `git gc` prune what no
/// ref and not the index references, once older than `$2`.
const PRUNE: &str = r#"set -e
[ -f "$GIT_DIR/HEAD" ] || exit 0
refs=$(git for-each-ref --format='%(refname)' refs/rdev/)
commands=$(printf '%s\n' "$refs" | sed -n 's#^refs/rdev/\([^/]*\)/.*#\1#p' | sort -u)
n=$(printf '%s\n' "$commands" | grep -c . || true)
[ "$n" -ge $(( $1 * 2 )) ] || exit 0
old=$(printf '%s\n' "$commands" | head -n $(( n - $1 )))
printf '%s\n' "$refs" | while read -r r; do
  c=${r#refs/rdev/}; c=${c%%/*}
  if printf '%s\n' "$old" | grep -qxF -- "$c"; then echo "delete $r"; fi
done | git update-ref --stdin
git gc --quiet --prune="$2"
"#;

/// How much of the snapshot repository survives a prune: the trees of the newest `keep`
/// commands (a prune runs once twice that many are kept, so between `keep` and `2 × keep`
/// stay). Unreferenced objects are pruned only once older than `prune_expiry` (a git date),
/// so objects a concurrent snapshot of the same workspace has just written are never pruned
/// under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRetention {
    pub keep: usize,
    pub prune_expiry: String,
}

impl Default for ChangeRetention {
    /// The newest 100 commands; objects unreferenced for an hour.
    fn default() -> Self {
        Self {
            keep: 100,
            prune_expiry: "1.hour.ago".to_owned(),
        }
    }
}

/// Files larger than this are not diffed (git treats them as binary).
const BIG_FILE: &str = "core.bigFileThreshold=16m";

/// Bytes of `--raw --numstat` listing read; past it, the list is cut and flagged.
const MAX_LISTING: usize = 4 * 1024 * 1024;

/// Bytes of stderr kept to explain a failure.
const MAX_STDERR: usize = 512;

/// Why a snapshot or a diff failed, in words for the person reading the changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangesError {
    #[error("could not run git in the workspace: {0}")]
    Spawn(#[from] ExecError),
    #[error("git {step} failed (exit {code:?}): {stderr}")]
    Git {
        step: &'static str,
        code: Option<i32>,
        stderr: String,
    },
    #[error("git {step} took longer than {secs} s")]
    TimedOut { step: &'static str, secs: u64 },
    #[error("git printed no tree id: {0:?}")]
    NoTree(String),
    #[error(transparent)]
    Parse(#[from] crate::domain::DiffParseError),
}

/// The workspace's state when a command started: the id of its tree in the private
/// repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(String);

/// What one process printed, and whether its stdout was cut at the read limit.
struct Printed {
    stdout: Vec<u8>,
    complete: bool,
}

/// Snapshots workspaces and records what commands changed in them.
pub struct ChangeTracker {
    executor: Arc<dyn Executor>,
    store: Arc<dyn ChangesStore>,
    limits: ChangeLimits,
    /// Longest any one git step may take; past it the step is killed and the changes are
    /// recorded as unavailable.
    step_timeout: Duration,
    retention: ChangeRetention,
}

impl ChangeTracker {
    /// A tracker with the default limits and a 60-second bound on each git step.
    pub fn new(executor: Arc<dyn Executor>, store: Arc<dyn ChangesStore>) -> Self {
        Self {
            executor,
            store,
            limits: ChangeLimits::default(),
            step_timeout: Duration::from_secs(60),
            retention: ChangeRetention::default(),
        }
    }

    /// The tracker keeping the snapshot repository to `retention`.
    pub fn with_retention(mut self, retention: ChangeRetention) -> Self {
        self.retention = retention;
        self
    }

    /// Snapshots `project`'s workspace before `command` runs.
    pub async fn snapshot(
        &self,
        project: &ProjectId,
        command: &CommandId,
    ) -> Result<Snapshot, ChangesError> {
        self.snapshot_as(project, command, "before").await
    }

    /// Snapshots the workspace, keeping the tree under `refs/rdev/<command>/<stage>`.
    async fn snapshot_as(
        &self,
        project: &ProjectId,
        command: &CommandId,
        stage: &str,
    ) -> Result<Snapshot, ChangesError> {
        let reference = format!("refs/rdev/{}/{stage}", command.as_str());
        let args = ["-c", SNAPSHOT, "sh", reference.as_str()];
        let printed = self.run(project, "snapshot", "sh", &args, 128).await?;
        let tree = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
        let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
        if !matches!(tree.len(), 40 | 64) || !hex(&tree) {
            return Err(ChangesError::NoTree(tree.chars().take(80).collect()));
        }
        Ok(Snapshot(tree))
    }

    /// What changed in `project`'s workspace since `before`, as `command` left it.
    pub async fn diff(
        &self,
        project: &ProjectId,
        command: &CommandId,
        before: &Snapshot,
    ) -> Result<ChangeSet, ChangesError> {
        let after = self.snapshot_as(project, command, "after").await?;
        let (from, to) = (before.0.as_str(), after.0.as_str());
        let common = ["-c", BIG_FILE, "diff-tree", "-r", "--no-renames"];
        let listing = [&common[..], &["-z", "--raw", "--numstat", from, to][..]].concat();
        let listing = self.git(project, "diff-tree --raw", &listing, MAX_LISTING);
        let listing = listing.await?;
        // Read a little past the total so that a cut is seen as one.
        let patch_limit = self.limits.max_total_patch + self.limits.max_file_patch;
        let patch = [
            &common[..],
            &["-p", "--no-color", "--no-ext-diff", from, to][..],
        ]
        .concat();
        let patch = self
            .git(project, "diff-tree -p", &patch, patch_limit)
            .await?;
        Ok(change_set(
            &listing.stdout,
            listing.complete,
            &patch.stdout,
            patch.complete,
            self.limits,
        )?)
    }

    /// Diffs the workspace against `before` (or keeps why there was no snapshot), stores
    /// the outcome under `command`, then prunes the snapshot repository. A failure to diff is
    /// stored as the reason and one to prune is logged; one to store is returned.
    pub async fn record(
        &self,
        command: &CommandId,
        project: &ProjectId,
        before: Result<Snapshot, String>,
    ) -> Result<(), StoreError> {
        let outcome = match before {
            Ok(before) => match self.diff(project, command, &before).await {
                Ok(set) => ChangesOutcome::Recorded(set),
                Err(error) => ChangesOutcome::Unavailable(error.to_string()),
            },
            Err(reason) => ChangesOutcome::Unavailable(reason),
        };
        self.store
            .record_changes(command, project, &outcome)
            .await?;
        if let Err(error) = self.prune(project).await {
            tracing::warn!(%project, %error, "pruning the workspace's snapshot repository failed");
        }
        Ok(())
    }

    /// Drops the refs of all but the newest commands and prunes what they alone kept.
    async fn prune(&self, project: &ProjectId) -> Result<(), ChangesError> {
        let keep = self.retention.keep.max(1).to_string();
        let expiry = self.retention.prune_expiry.as_str();
        let args = ["-c", PRUNE, "sh", keep.as_str(), expiry];
        self.run(project, "gc", "sh", &args, 4096).await?;
        Ok(())
    }

    /// Runs git on the private repository (no work tree needed).
    async fn git(
        &self,
        project: &ProjectId,
        step: &'static str,
        args: &[&str],
        limit: usize,
    ) -> Result<Printed, ChangesError> {
        self.run(project, step, "git", args, limit).await
    }

    /// Runs `program` in the workspace root and reads at most `limit` bytes of its stdout;
    /// a process with more to say is killed, and its output counts as cut, not failed.
    async fn run(
        &self,
        project: &ProjectId,
        step: &'static str,
        program: &str,
        args: &[&str],
        limit: usize,
    ) -> Result<Printed, ChangesError> {
        let spec = SpawnSpec::new(program, args).with_plain_env(&[
            ("GIT_DIR", GIT_DIR),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_OPTIONAL_LOCKS", "0"),
            ("LC_ALL", "C"),
        ]);
        let process = self.executor.spawn(project, spec).await?;
        drop(process.stdin);
        let control = process.control;
        // Read beside stdout, so a process stuck on a full stderr pipe cannot hang it.
        let errors = tokio::spawn(read_at_most(process.stderr, MAX_STDERR * 8));
        let read = read_at_most(process.stdout, limit);
        let Ok(out) = tokio::time::timeout(self.step_timeout, read).await else {
            let _ = control.signal(Signal::Kill).await;
            let secs = self.step_timeout.as_secs();
            return Err(ChangesError::TimedOut { step, secs });
        };
        let (stdout, complete) = out.map_err(|e| ExecError::Io(e.to_string()))?;
        if !complete {
            let _ = control.signal(Signal::Kill).await;
        }
        let waited = tokio::time::timeout(self.step_timeout, control.wait()).await;
        let Ok(status) = waited else {
            let _ = control.signal(Signal::Kill).await;
            let secs = self.step_timeout.as_secs();
            return Err(ChangesError::TimedOut { step, secs });
        };
        let status = status?;
        if complete && !status.success() {
            let (stderr, _) = errors.await.ok().and_then(Result::ok).unwrap_or_default();
            let stderr = String::from_utf8_lossy(&stderr);
            let stderr = stderr.trim().chars().take(MAX_STDERR).collect();
            return Err(ChangesError::Git {
                step,
                code: status.code,
                stderr,
            });
        }
        Ok(Printed { stdout, complete })
    }
}

/// Reads `reader` to its end or to `limit` bytes; the flag is false when there was more.
async fn read_at_most(
    reader: impl AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut bytes).await?;
    let complete = bytes.len() <= limit;
    bytes.truncate(limit);
    Ok((bytes, complete))
}
