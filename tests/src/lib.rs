//! Support for rdev's end-to-end tests: harness helpers that prepare real parts (plugins,
//! npm-installed agent CLIs, databases) and protocol doubles for what cannot run here.

pub mod doubles;
pub mod harness;
