//! The commands that ask a live cluster (`check`, `rollout --stale`) and the kube client they
//! and `serve --tls-auto` share. They use the engine, never the server.

pub mod check;
pub mod client;
pub mod rollout;
