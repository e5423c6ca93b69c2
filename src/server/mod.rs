//! `serve`: the HTTPS webhook (axum on hyper, rustls), the plain-HTTP metrics listener,
//! hot reloads and graceful shutdown.

pub mod args;
pub mod autotls;
pub mod certificate;
mod connections;
mod http;
pub mod limits;
pub mod logging;
pub mod reload;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::engine::config::Config;
use crate::metrics::Metrics;
use crate::server::state::AppState;
use crate::tls::store::{self as tls, CertStore, RateLimit};
use args::ServeArgs;
use connections::{
    accept_until_shutdown, drain, http_builder, spawn_plain, Connections, HANDSHAKE_LOG_INTERVAL,
    MAX_METRICS_CONNECTIONS, MAX_PROBE_CONNECTIONS,
};
use http::{metrics_router, probe_router, router};
use reload::{Files, Sources};

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Runs the server until SIGTERM or SIGINT, then drains.
pub fn serve(args: &ServeArgs, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        usize::from,
    );
    let mut runtime = if workers == 1 {
        // One CPU: tasks woken and run on the one thread, without the work-stealing pool's
        // cross-thread wake-ups (HTTP/2 at 64 streams: 23 -> 18 us of CPU per review).
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut pool = tokio::runtime::Builder::new_multi_thread();
        pool.worker_threads(workers);
        pool
    };
    tracing::info!(workers, "starting the async runtime");
    let ended = runtime
        .enable_all()
        .on_thread_park(logging::worker_idle)
        .on_thread_stop(logging::flush)
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(args.clone(), config_path));
    logging::flush();
    ended
}

/// What start-up loads before anything listens: the config, the serving pair, the client CA.
struct Startup {
    state: Arc<AppState>,
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    sources: Sources,
    mtls: bool,
}

fn load(args: &ServeArgs, config_path: Option<PathBuf>) -> anyhow::Result<Startup> {
    let config_bytes = config_path
        .as_ref()
        .map(|p| read(p, "config"))
        .transpose()?;
    let origin = config_path.as_ref().map(|p| p.display().to_string());
    let config = match (&origin, &config_bytes) {
        (Some(origin), Some(bytes)) => Config::from_bytes(bytes, origin)?,
        _ => Config::embedded()?,
    };
    reload::log_config(
        &config,
        origin.as_deref().unwrap_or("<embedded default config>"),
    );

    // --tls-auto serves the same throwaway pair until it has read its Secret: no caBundle
    // trusts it, so the replica is not ready meanwhile.
    let (cert_pem, key_pem, cert_source) = if args.dev || args.auto.tls_auto {
        let (c, k) = crate::tls::generate::dev_pair()?;
        if args.dev {
            tracing::info!(
                "dev mode: in-memory self-signed certificate for localhost and 127.0.0.1"
            );
        }
        (c.into_bytes(), k.into_bytes(), None)
    } else {
        let (Some(cert), Some(key)) = (&args.tls.tls_cert, &args.tls.tls_key) else {
            anyhow::bail!("serve needs --tls-cert and --tls-key (or --tls-auto, or --dev)");
        };
        let (c, k) = (read(cert, "certificate")?, read(key, "key")?);
        let files = Files {
            paths: vec![cert.clone(), key.clone()],
            loaded: vec![c.clone(), k.clone()],
        };
        (c, k, Some(files))
    };
    let loaded = tls::load_pair(&cert_pem, &key_pem).context("serving certificate")?;
    let state = Arc::new(AppState::new(
        config,
        Metrics::new(),
        args.timing.request_timeout,
    ));
    crate::server::certificate::note_certificate(&loaded, &state);
    let store = Arc::new(CertStore::new(loaded.key));
    let client_ca = match &args.tls.client_ca {
        None => None,
        Some(path) => {
            let pem = read(path, "client CA")?;
            let verifier = tls::client_verifier(&pem).context("client CA")?;
            let ca = tls::ClientCa::new(verifier, args.tls.client_cert_names.clone());
            Some((Files::one(path.clone(), pem), Arc::new(ca)))
        }
    };
    let tls_config =
        tls::server_config(store.clone(), client_ca.as_ref().map(|(_, ca)| ca.clone()))?;
    Ok(Startup {
        state,
        store,
        acceptor: TlsAcceptor::from(Arc::new(tls_config)),
        mtls: client_ca.is_some(),
        sources: Sources {
            cert: cert_source,
            client_ca,
            config: config_path.zip(config_bytes).map(|(p, b)| Files::one(p, b)),
        },
    })
}

async fn listen(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn run(args: ServeArgs, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let startup = load(&args, config_path)?;
    let state = startup.state;
    let listener = listen(args.addr).await?;
    let metrics_listener = listen(args.metrics_addr).await?;
    let probe_listener = listen(args.probe_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, mtls = startup.mtls, "webhook listening");
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    tracing::info!(addr = %probe_listener.local_addr()?, "probes listening");

    let tls_auto = if args.auto.tls_auto {
        Some(
            crate::server::autotls::spawn(args.auto.clone(), startup.store.clone(), state.clone())
                .await?,
        )
    } else {
        None
    };
    reload::spawn(
        startup.sources,
        state.clone(),
        startup.store,
        args.timing.reload_interval,
    );
    let (stop_plain, plain_stopped) = tokio::sync::watch::channel(false);
    let plain_tasks = [
        spawn_plain(
            metrics_listener,
            metrics_router(state.clone()),
            MAX_METRICS_CONNECTIONS,
            "metrics",
            plain_stopped.clone(),
        ),
        spawn_plain(
            probe_listener,
            probe_router(state.clone()),
            MAX_PROBE_CONNECTIONS,
            "probes",
            plain_stopped,
        ),
    ];

    let connections = Connections {
        acceptor: startup.acceptor,
        builder: http_builder(),
        app: router(state.clone()),
        state: state.clone(),
        handshake_log: Arc::new(RateLimit::new(HANDSHAKE_LOG_INTERVAL)),
    };
    let graceful = GracefulShutdown::new();
    state.set_ready(true);
    tracing::info!("ready");
    accept_until_shutdown(&listener, connections, &graceful).await;

    state.set_ready(false);
    if let Some(tls_auto) = tls_auto {
        tls_auto.abort();
    }
    drop(listener);
    drain(graceful, args.timing.shutdown_grace).await;
    let _ = stop_plain.send(true);
    for task in plain_tasks {
        let _ = task.await;
    }
    Ok(())
}
