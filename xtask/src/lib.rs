//! Project automation shared by `cargo xtask` and the test harness, so that tests build
//! plugins exactly the way users do.

pub mod binary;
pub mod image;
pub mod plugins;

use std::path::{Path, PathBuf};

/// The checkout's root: the directory holding the workspace `Cargo.toml`.
///
/// Cargo sets `CARGO_MANIFEST_DIR` for `cargo run` and `cargo test` too, and that value is
/// preferred: with a target dir shared between checkouts (worktrees), a binary compiled in
/// another checkout is reused unchanged, and its compile-time path points there.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
