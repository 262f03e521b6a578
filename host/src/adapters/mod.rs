//! Implementations of the ports against real infrastructure. Only the composition root
//! (the CLI and the server set-up) picks one; the core sees the ports.

pub mod event_fanout;
pub mod kubernetes;
pub mod local;
pub mod master_key;
pub mod oci;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod store;
pub mod woodpecker;
pub mod workspace_files;
