//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars.
//!
//! The pure core (`inject`, `podsecurity`, `admission`, `manifest`, `config`, `yaml`) does no I/O; the server
//! (`server`, `state`, `limits`, `tls`, `reload`, `metrics`) and the CLI (`cli`) are thin shells around it.
#![forbid(unsafe_code)]

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod inject;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod pod;
pub mod podsecurity;
pub mod reload;
pub mod server;
pub mod state;
pub mod tls;
pub mod yaml;
