//! The admission engine, pure: request bytes or manifests and the config in, a decision and a
//! JSON patch out. No I/O, no async runtime, no HTTP, kube client or argument parser
//! (`tests/layers.rs`); the server, the CLI, `check` and the tests all call it.

pub mod admission;
pub mod config;
pub mod inject;
pub mod manifest;
pub mod pod;
pub mod podsecurity;
pub mod selection;
pub mod workload;
