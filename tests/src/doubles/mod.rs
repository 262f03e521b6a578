//! Doubles for what cannot run here, each speaking the real wire protocol.

pub mod anthropic;
pub mod kube_api;
pub mod openai;
pub mod scripted;
pub mod thread_server;
pub mod woodpecker;
