//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars.
//!
//! The pure core (`inject`, `podsecurity`, `admission`, `manifest`, `config`, `yaml`,
//! `selection`, `workload`, `check::evaluate`, `rotation`) does no I/O; the server (`server`, `state`,
//! `limits`, `logging`, `tls`, `reload`, `metrics`, `autotls`), the CLI (`cli`), `check::run`
//! and `kubeapi` are thin shells around it.
#![forbid(unsafe_code)]

pub mod admission;
pub mod autotls;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod excerpt;
pub mod inject;
pub mod kubeapi;
pub mod limits;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod pod;
pub mod podsecurity;
pub mod reload;
pub mod rotation;
pub mod selection;
pub mod server;
pub mod state;
pub mod tls;
pub mod workload;
pub mod yaml;
