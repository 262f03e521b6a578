//! What a command changed in its project's workspace: the files it added, modified and
//! deleted, with a unified diff per text file, bounded so that one huge file or a thousand
//! generated ones cannot make the record unbounded. Built from the output of
//! `git diff-tree` between two snapshots of the workspace (see `services::changes`); the
//! parsing lives here so it is tested without a process.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How much of a diff is kept. What is cut is flagged, never silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimits {
    /// Files listed; the rest are counted in `omitted_files`.
    pub max_files: usize,
    /// Bytes of one file's diff; a longer one is cut at a line end and flagged.
    pub max_file_patch: usize,
    /// Bytes of all diffs together; files past it keep their counts but not their diff.
    pub max_total_patch: usize,
}

impl Default for ChangeLimits {
    /// 1000 files, 256 KiB per file, 1 MiB in all.
    fn default() -> Self {
        Self {
            max_files: 1000,
            max_file_patch: 256 * 1024,
            max_total_patch: 1024 * 1024,
        }
    }
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileChange {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    pub change: ChangeKind,
    /// Binary content (or a text file over 16 MiB): no line counts and no diff.
    pub binary: bool,
    /// Lines added; absent for a binary file.
    pub additions: Option<u64>,
    /// Lines removed; absent for a binary file.
    pub deletions: Option<u64>,
    /// The unified diff's hunks (`@@ … @@` and the lines after), empty for an empty file
    /// or a mode change; absent for a binary file and for files past the total limit.
    pub patch: Option<String>,
    /// The diff was cut (over the per-file limit) or left out (over the total limit).
    pub truncated: bool,
}

/// Every change of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeSet {
    /// By path.
    pub files: Vec<FileChange>,
    /// Changed files not listed (over the file limit).
    pub omitted_files: u64,
    /// Something was cut: a file's diff, the total or the list.
    pub truncated: bool,
}

/// Why git's output could not be read; a bug or a foreign git, never the user's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected git diff-tree output: {0}")]
pub struct DiffParseError(String);

/// One entry of the `--raw` listing: its path and status letter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    path: String,
    change: ChangeKind,
    /// `(added, deleted)` lines from `--numstat`; `None` for a binary file.
    lines: Option<(u64, u64)>,
    /// Whether its `--numstat` record was read (not when the output was cut before it).
    counted: bool,
}

/// Parses `git diff-tree -r -z --no-renames --raw --numstat A B`: every `--raw` record
/// (`:modes shas STATUS\0path\0`) and then every `--numstat` record
/// (`added\tdeleted\tpath\0`, `-` for binary), both in git's path order. A `complete` of
/// false means the output was cut: the last, partial record is dropped.
fn parse_listing(out: &[u8], complete: bool) -> Result<Vec<Listed>, DiffParseError> {
    let text = String::from_utf8_lossy(out);
    let mut fields: Vec<&str> = text.split('\0').collect();
    // Records end in NUL, leaving an empty last field; a cut output ends in a partial one.
    if fields.last() == Some(&"") || !complete {
        fields.pop();
    }
    let mut listed = Vec::new();
    let mut rest = fields.as_slice();
    while let [meta, path, tail @ ..] = rest {
        let Some(meta) = meta.strip_prefix(':') else {
            break;
        };
        let status = meta.split(' ').nth(4).and_then(|s| s.chars().next());
        let change = match status {
            Some('A') => ChangeKind::Added,
            Some('D') => ChangeKind::Deleted,
            Some('M' | 'T') => ChangeKind::Modified,
            other => return Err(DiffParseError(format!("status {other:?} of {path:?}"))),
        };
        let path = (*path).to_owned();
        listed.push(Listed {
            path,
            change,
            lines: None,
            counted: false,
        });
        rest = tail;
    }
    for (entry, numstat) in listed.iter_mut().zip(rest) {
        let mut parts = numstat.splitn(3, '\t');
        let (added, deleted, path) = (parts.next(), parts.next(), parts.next());
        if path != Some(entry.path.as_str()) {
            return Err(DiffParseError(format!(
                "numstat {numstat:?} does not follow {:?}",
                entry.path
            )));
        }
        entry.counted = true;
        entry.lines = added
            .and_then(|a| a.parse().ok())
            .zip(deleted.and_then(|d| d.parse().ok()));
    }
    Ok(listed)
}

/// Splits `git diff-tree -p` output into one section per file (each starts with a
/// `diff --git ` line; a line of a hunk always starts with ` `, `+`, `-` or `\`, so this
/// cannot split inside one) and keeps each section's hunks from its first `@@`.
fn hunks_per_file(patch: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    if patch.starts_with("diff --git ") {
        starts.push(0);
    }
    starts.extend(patch.match_indices("\ndiff --git ").map(|(i, _)| i + 1));
    let ends = starts.iter().skip(1).copied().chain([patch.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| {
            let section = &patch[start..end];
            let hunks = if section.starts_with("@@") {
                Some(0)
            } else {
                section.find("\n@@").map(|i| i + 1)
            };
            hunks.map_or("", |i| &section[i..])
        })
        .collect()
}

/// `text` cut to at most `max` bytes at a line end (or a character boundary when one line
/// is longer), and whether it was cut.
fn cut_at_line(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(end, |i| i + 1);
    (text[..end].to_owned(), true)
}

/// The change set from a listing and the patch git printed for it. `listing_complete` and
/// `patch_complete` are false when that output was cut at its read limit: then the files
/// or the diffs past the cut are flagged.
pub fn change_set(
    listing: &[u8],
    listing_complete: bool,
    patch: &[u8],
    patch_complete: bool,
    limits: ChangeLimits,
) -> Result<ChangeSet, DiffParseError> {
    let listed = parse_listing(listing, listing_complete)?;
    let patch = String::from_utf8_lossy(patch);
    let mut sections = hunks_per_file(&patch);
    if !patch_complete {
        // The last section read may be partial: treat it as missing.
        sections.pop();
    }
    let mut set = ChangeSet {
        truncated: !listing_complete || listed.len() > limits.max_files,
        omitted_files: listed.len().saturating_sub(limits.max_files) as u64,
        files: Vec::new(),
    };
    let mut budget = limits.max_total_patch;
    for (i, entry) in listed.into_iter().take(limits.max_files).enumerate() {
        let binary = entry.counted && entry.lines.is_none();
        let (patch, truncated) = match sections.get(i) {
            _ if binary => (None, false),
            _ if !entry.counted => (None, true),
            Some(hunks) if budget > 0 => {
                let (kept, cut) = cut_at_line(hunks, limits.max_file_patch.min(budget));
                budget -= kept.len();
                (Some(kept), cut)
            }
            _ => (None, true),
        };
        set.truncated |= truncated;
        set.files.push(FileChange {
            path: entry.path,
            change: entry.change,
            binary,
            additions: entry.lines.map(|l| l.0),
            deletions: entry.lines.map(|l| l.1),
            patch,
            truncated,
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What git prints for a modified binary, an added empty file, a deleted one-line file
    /// and a modified text file.
    fn listing() -> Vec<u8> {
        [
            ":100644 100644 aaa bbb M",
            "b.bin",
            ":000000 100644 000 e69 A",
            "empty",
            ":100644 000000 587 000 D",
            "gone.txt",
            ":100644 100644 422 0f7 M",
            "keep.txt",
            "-\t-\tb.bin",
            "0\t0\tempty",
            "0\t1\tgone.txt",
            "1\t1\tkeep.txt",
            "",
        ]
        .join("\0")
        .into_bytes()
    }

    const PATCH: &str = "diff --git a/b.bin b/b.bin\nindex 8..3 100644\nBinary files a/b.bin and b/b.bin differ\n\
        diff --git a/empty b/empty\nnew file mode 100644\nindex 0000000..e69de29\n\
        diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n\
        diff --git a/keep.txt b/keep.txt\n--- a/keep.txt\n+++ b/keep.txt\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n";

    #[test]
    fn git_output_becomes_one_entry_per_file_with_its_hunks() {
        let set = change_set(
            &listing(),
            true,
            PATCH.as_bytes(),
            true,
            ChangeLimits::default(),
        )
        .expect("parses");
        let summary: Vec<_> = set
            .files
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.change,
                    f.binary,
                    f.additions,
                    f.deletions,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("b.bin", ChangeKind::Modified, true, None, None),
                ("empty", ChangeKind::Added, false, Some(0), Some(0)),
                ("gone.txt", ChangeKind::Deleted, false, Some(0), Some(1)),
                ("keep.txt", ChangeKind::Modified, false, Some(1), Some(1)),
            ]
        );
        assert_eq!(set.files[0].patch, None);
        assert_eq!(set.files[1].patch.as_deref(), Some(""));
        assert_eq!(set.files[2].patch.as_deref(), Some("@@ -1 +0,0 @@\n-x\n"));
        assert_eq!(
            set.files[3].patch.as_deref(),
            Some("@@ -1,2 +1,2 @@\n a\n-b\n+c\n")
        );
        assert!(!set.truncated && set.files.iter().all(|f| !f.truncated));
    }

    #[test]
    fn limits_cut_a_long_diff_at_a_line_and_flag_what_is_left_out() {
        let limits = ChangeLimits {
            max_files: 3,
            max_file_patch: 16,
            max_total_patch: 20,
        };
        let set = change_set(&listing(), true, PATCH.as_bytes(), true, limits).expect("parses");
        assert_eq!(set.files.len(), 3);
        assert_eq!(set.omitted_files, 1);
        assert!(set.truncated);
        // gone.txt's 18-byte hunk is cut to its first line, within 16 bytes.
        assert_eq!(set.files[2].patch.as_deref(), Some("@@ -1 +0,0 @@\n"));
        assert!(set.files[2].truncated);
    }

    #[test]
    fn a_cut_output_drops_its_partial_last_record() {
        let listing = listing();
        let cut = &listing[..listing.len() - 3];
        let set = change_set(cut, false, PATCH.as_bytes(), false, ChangeLimits::default())
            .expect("parses");
        assert!(set.truncated);
        // keep.txt's numstat was cut: it is listed, not as binary, without counts or diff.
        assert_eq!(set.files.len(), 4);
        let keep = &set.files[3];
        assert_eq!(
            (keep.binary, keep.additions, keep.patch.as_deref()),
            (false, None, None)
        );
        assert!(keep.truncated);
        // gone.txt's diff was read whole.
        assert_eq!(set.files[2].patch.as_deref(), Some("@@ -1 +0,0 @@\n-x\n"));
    }

    #[test]
    fn unknown_status_is_an_error_not_a_guess() {
        let error = change_set(b":1 2 a b X\0p\0", true, b"", true, ChangeLimits::default());
        assert!(error.is_err());
    }
}
