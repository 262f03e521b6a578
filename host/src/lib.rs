//! rdev: runs coding agents, each a sandboxed WebAssembly provider, against per-project
//! workspaces and streams what they do.

pub mod domain;
pub mod ports;
