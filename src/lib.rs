//! sidecar-injector: a Kubernetes mutating admission webhook that injects sidecars.
//!
//! The layers, bottom up (docs/architecture.md; `tests/layers.rs` fails when one is crossed):
//! - `text`: hostile text made safe, the duration syntax, YAML as kubectl reads it;
//! - `engine`: pure admission: decide, patch, pod security, manifests, config;
//! - `tls`: PEM, the serving certificate store, generation, the rotation plan;
//! - `metrics`: the series the server exports, named once;
//! - `cluster`: the kube client, `check` and `rollout --stale`;
//! - `server`: `serve`: listeners, limits, logging, reloads, `--tls-auto`;
//! - `cli`: arguments, the offline commands, the binary's edge.
//!
//! The modules are private; what the binary, the tests and the benches use is re-exported
//! below.
#![forbid(unsafe_code)]

mod cli;
mod cluster;
mod engine;
mod metrics;
mod server;
mod text;
mod tls;

pub use cli::main;
pub use cluster::rollout::served_digests;
pub use engine::admission::{review, Outcome};
pub use engine::config::{Config, DEFAULT_CONFIG_YAML};
pub use engine::inject::{decide, Policy};
pub use engine::manifest::inject;
pub use engine::pod::PodView;
pub use engine::podsecurity::kubelet_would_start;
pub use engine::workload::POD_KEYS;
pub use metrics::Metrics;
pub use text::yaml::{read_documents, write_document};
pub use tls::rotation::{Material, Settings, SECRET_TYPE};
pub use tls::store::load_pair;
