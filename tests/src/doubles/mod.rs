//! Doubles for what cannot run here, each speaking the real wire protocol.

pub mod anthropic;
