//! `serve`'s options: TLS sources, timings, listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::logging::LogFormat;
use crate::text::duration::duration;

#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Serving certificate chain (PEM, leaf first); re-read when it changes.
    #[arg(long, env = "SIDECAR_INJECTOR_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "SIDECAR_INJECTOR_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), e.g. the apiserver's; re-read on change.
    #[arg(long, env = "SIDECAR_INJECTOR_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca, accept only client certificates whose common name or a DNS name is
    /// one of these (comma-separated); others are refused in the handshake.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_CLIENT_CERT_NAMES",
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "client_ca"
    )]
    pub client_cert_names: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// How often the certificate and config files are checked for changes.
    #[arg(long, env = "SIDECAR_INJECTOR_RELOAD_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub reload_interval: Duration,
    /// Longest time a request body may take to arrive (answered 408 after it).
    #[arg(long, env = "SIDECAR_INJECTOR_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub request_timeout: Duration,
    /// After SIGTERM, how long in-flight requests may take before connections are closed.
    #[arg(long, env = "SIDECAR_INJECTOR_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook.
    #[arg(long, env = "SIDECAR_INJECTOR_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Address of the plain-HTTP /metrics, /healthz and /readyz listener.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_METRICS_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_addr: SocketAddr,
    /// Address of the plain-HTTP /healthz and /readyz listener for the kubelet's probes: its
    /// own connections, so that clients of the metrics port cannot starve the probes.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_PROBE_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub probe_addr: SocketAddr,
    /// In-memory self-signed certificate for localhost/127.0.0.1: no files needed.
    #[arg(long, env = "SIDECAR_INJECTOR_DEV")]
    pub dev: bool,
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Threads that serve requests; default: the CPUs the process may use (its cgroup's CPU
    /// limit, rounded down; `deploy/` gives one). With 1, the single-threaded scheduler.
    #[arg(long, env = "SIDECAR_INJECTOR_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub auto: crate::server::autotls::AutoTlsArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
}
