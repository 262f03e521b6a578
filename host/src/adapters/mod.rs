//! Implementations of the ports against real systems.

pub mod postgres;
pub mod sqlite;
pub mod store;
