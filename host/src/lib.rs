//! rdev: runs coding agents, each a sandboxed WebAssembly provider, against per-project
//! workspaces and streams what they do.

pub mod adapters;
pub mod api;
pub mod cli;
pub mod domain;
pub mod ports;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod services;
pub mod wiring;
pub mod worker;
