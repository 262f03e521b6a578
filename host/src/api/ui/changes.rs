//! `GET /ui/commands/{id}/changes`: the workspace changes of a command (what
//! `GET /commands/{id}/changes` returns) as a page: one card per file with its line counts
//! and its unified diff, added lines green and removed lines red. Rendered on the server:
//! a recorded diff never changes, so the page needs no script.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;

use super::html::{esc, page};
use super::{PageError, Viewer};
use crate::api::changes::CommandChanges;
use crate::api::commands::accessible_command;
use crate::api::state::AppState;
use crate::domain::{ChangeKind, FileChange};

/// The page of a command's changes; a command still running says so and links back.
pub async fn page_of_changes(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let command = accessible_command(&state, &viewer.principal, &id).await?;
    let stored = state.stores.changes.changes(&command.id).await?;
    let id = esc(command.id.as_str());
    let mut body = format!(
        "<p><a href=\"/ui/commands/{id}\" id=\"back\">← command</a></p>\
         <h1>Workspace changes of <code>{id}</code></h1>"
    );
    match stored.map(CommandChanges::from) {
        None if !command.status.is_terminal() => body.push_str(
            "<p class=\"hint\" id=\"no-changes\">The changes are recorded when the command's \
             run is over; reload then.</p>",
        ),
        None => body.push_str(
            "<p class=\"hint\" id=\"no-changes\">No changes were recorded for this command.</p>",
        ),
        Some(changes) if !changes.available => {
            let _ = write!(
                body,
                "<p class=\"problem\" id=\"no-changes\">The changes could not be recorded: {}</p>",
                esc(changes.reason.as_deref().unwrap_or(""))
            );
        }
        Some(changes) => body.push_str(&change_list(&changes)),
    }
    Ok(Html(page(
        &format!("Changes {id}"),
        Some(&viewer.csrf),
        &body,
    )))
}

fn change_list(changes: &CommandChanges) -> String {
    let mut out = String::new();
    let (adds, dels) = changes.files.iter().fold((0, 0), |(a, d), f| {
        (a + f.additions.unwrap_or(0), d + f.deletions.unwrap_or(0))
    });
    let _ = write!(
        out,
        "<p id=\"summary\">{files} file(s) changed, <span class=\"adds\">+{adds}</span> \
         <span class=\"dels\">−{dels}</span></p>",
        files = changes.files.len() as u64 + changes.omitted_files,
    );
    if changes.files.is_empty() {
        out.push_str("<p class=\"hint\" id=\"no-changes\">The command changed no files.</p>");
    }
    if changes.truncated {
        let _ = write!(
            out,
            "<p class=\"warning\" id=\"truncated\">Cut to size: diffs over 256 KiB, diffs \
             past 1 MiB in all{} are left out.</p>",
            if changes.omitted_files > 0 {
                format!(" and {} more file(s)", changes.omitted_files)
            } else {
                String::new()
            }
        );
    }
    for file in &changes.files {
        out.push_str(&file_card(file));
    }
    out
}

fn file_card(file: &FileChange) -> String {
    let kind = match file.change {
        ChangeKind::Added => "added",
        ChangeKind::Modified => "modified",
        ChangeKind::Deleted => "deleted",
    };
    let counts = match (file.additions, file.deletions) {
        (Some(a), Some(d)) => {
            format!("<span class=\"adds\">+{a}</span> <span class=\"dels\">−{d}</span>")
        }
        _ => "<span class=\"tag\">binary</span>".to_owned(),
    };
    let diff = match &file.patch {
        Some(patch) => diff_lines(patch),
        None if file.binary => String::new(),
        None => "<p class=\"hint\">Diff left out (over the size limit).</p>".to_owned(),
    };
    let cut = if file.truncated && file.patch.is_some() {
        "<p class=\"hint\">… diff cut at 256 KiB.</p>"
    } else {
        ""
    };
    format!(
        "<section class=\"file {kind}\" data-path=\"{path}\"><h3><span class=\"tag\">{kind}</span> \
         <code>{path}</code> {counts}</h3>{diff}{cut}</section>",
        path = esc(&file.path),
    )
}

/// The hunks as one `<pre>`, each line in a span classed by its first character.
fn diff_lines(patch: &str) -> String {
    let mut out = String::from("<pre class=\"diff\">");
    for line in patch.lines() {
        let class = match line.as_bytes().first() {
            Some(b'+') => "add",
            Some(b'-') => "del",
            Some(b'@') => "hunk",
            _ => "ctx",
        };
        // Block spans, no newline between them: `pre` would show it as an empty line.
        let _ = write!(out, "<span class=\"{class}\">{}</span>", esc(line));
    }
    out.push_str("</pre>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_are_classed_and_escaped() {
        let html = diff_lines("@@ -1 +1 @@\n-<b>\n+&\n ctx\n");
        assert_eq!(
            html,
            "<pre class=\"diff\"><span class=\"hunk\">@@ -1 +1 @@</span>\
             <span class=\"del\">-&lt;b&gt;</span><span class=\"add\">+&amp;</span>\
             <span class=\"ctx\"> ctx</span></pre>"
        );
    }
}
