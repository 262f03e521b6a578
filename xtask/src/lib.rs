//! Project automation shared by `cargo xtask` and the test harness, so that tests build
//! plugins exactly the way users do.

pub mod plugins;

use std::path::{Path, PathBuf};

/// The checkout's root: the directory holding the workspace `Cargo.toml`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
