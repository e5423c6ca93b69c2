//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars.
//!
//! The pure core (`inject`, `podsecurity`, `admission`, `manifest`, `config`, `yaml`,
//! `selection`, `workload`, `excerpt`, `pod`) does no network I/O and uses only itself; the
//! TLS material (`tls`, `certs`, `certificate`, the rotation plan `rotation`), the cluster
//! shells (`check`, `autotls`, `kubeapi`), and the server (`server`, `state`, `limits`,
//! `logging`, `reload`, `metrics`) and CLI (`cli`) sit above it. `tests/layers.rs` fails when
//! the core uses a shell or a cluster shell reaches into the server.
#![forbid(unsafe_code)]

pub mod admission;
pub mod autotls;
pub mod certificate;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod duration;
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
pub mod rollout;
pub mod rotation;
pub mod selection;
pub mod server;
pub mod state;
pub mod tls;
pub mod workload;
pub mod yaml;
