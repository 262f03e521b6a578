//! Loopback doubles of servers that cannot run here. Each speaks the real wire protocol,
//! binds 127.0.0.1 and stops when dropped.

pub mod woodpecker;
