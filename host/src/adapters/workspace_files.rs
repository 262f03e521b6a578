//! Writing rendered template files into a workspace directory on this machine, safely: the
//! local seeder writes into the project's directory, the Kubernetes seeder into a staging
//! directory it then copies into the pod.

use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::domain::{RenderReport, RenderedFile, check_relative_path};

/// Writes rendered files into `workspace` (which must exist). Existing files are kept and
/// reported as skipped, so a template can fill in what a cloned repository lacks. Every write
/// goes through a cap-std directory handle: no path, and no symlink already in the workspace,
/// can make a write land outside it. Errors are `(file, reason)`.
pub fn write_files(
    workspace: &Path,
    files: Vec<RenderedFile>,
) -> Result<RenderReport, (String, String)> {
    let dir = Dir::open_ambient_dir(workspace, ambient_authority()).map_err(|e| {
        (
            ".".to_owned(),
            format!("opening {}: {e}", workspace.display()),
        )
    })?;
    let mut report = RenderReport::default();
    for file in files {
        check_relative_path(&file.path).map_err(|r| (file.path.clone(), r.to_owned()))?;
        match dir.symlink_metadata(&file.path) {
            Ok(_) => {
                report.skipped.push(file.path);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((file.path, e.to_string())),
        }
        if let Some((parent, _)) = file.path.rsplit_once('/') {
            dir.create_dir_all(parent)
                .map_err(|e| (file.path.clone(), format!("creating {parent}: {e}")))?;
        }
        dir.write(&file.path, &file.contents)
            .map_err(|e| (file.path.clone(), e.to_string()))?;
        report.written.push(file.path);
    }
    Ok(report)
}
