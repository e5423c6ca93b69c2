//! `serve`: the HTTPS webhook (axum on hyper, rustls), the plain-HTTP metrics listener,
//! hot reloads and graceful shutdown.

pub mod autotls;
pub mod certificate;
pub mod limits;
pub mod logging;
pub mod reload;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::engine::admission::{
    path_policy_segment, policy_from_query, review, review_workload, Answer, Outcome, RequestError,
    MAX_BODY_BYTES,
};
use crate::engine::config::Config;
use crate::engine::inject::Policy;
use crate::metrics::Metrics;
use crate::server::limits::{
    BudgetedBody, DeadlineIo, Reservation, Tracked, Unsent, SMALL_REVIEW_BYTES, WORK_FACTOR,
};
use crate::server::state::AppState;
use crate::text::duration::duration;
use crate::text::excerpt::Escaped;
use crate::tls::store::{self as tls, CertStore, HandshakeFailure, RateLimit};
use logging::LogFormat;
use reload::Sources;

/// A client that has not finished its TLS handshake or sent its request headers by then is
/// dropped, so slow or silent clients cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between two parts of a request body.
const BODY_STALL: Duration = Duration::from_secs(2);
/// Reviews of bodies larger than this run on the blocking pool (a 4 MiB body is tens of
/// milliseconds of CPU); smaller ones, the apiserver's everyday pods, on the async worker.
const BLOCKING_REVIEW_BYTES: usize = 256 * 1024;
/// Connections served at once on the webhook port; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// Connections served at once on the metrics port (probes and scrapes).
const MAX_METRICS_CONNECTIONS: usize = 128;
/// The probe listener's cap: the kubelet probes one connection at a time.
const MAX_PROBE_CONNECTIONS: usize = 16;
/// Probes and scrapes send their request at once: idle connections there go after this.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent HTTP/2 streams per connection (hyper's default is 200).
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// HTTP/2 receive windows: body bytes a client can have in flight before it must wait. The
/// connection window trades memory (x MAX_CONNECTIONS) for latency: at 64 KiB, 16 streams of
/// 6 KB bodies waited on window updates (p99 3.4x the ceiling's); at 128 KiB, 1.1x.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 128 * 1024;
/// Request head (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long a write may stay blocked, and an answer unsent, before the connection is closed:
/// a client that does not read its answers gives their memory back.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// The HTTP/2 preface is 24 bytes: until that many arrive, the header-read timeout applies.
const OPENING_BYTES: usize = 24;
/// At most one warning line per interval for refused TLS handshakes.
const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(10);

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

/// The one place where a bad request becomes an HTTP answer.
impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// The review, with a panic (a bug of ours, whatever the input) answered 500 `internal-error`
/// instead of ending the connection: the panic's message is logged by the panic hook.
/// What a request asks for: a pod review (`/mutate`, with its policy) or a workload check.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Mutate(Policy),
    Workloads,
}

impl Endpoint {
    /// The pod review's policy from the path segment and the query.
    fn mutate(path: Option<&str>, query: Option<&str>) -> Result<Endpoint, RequestError> {
        let path = path.map(path_policy_segment).transpose()?;
        policy_from_query(query, path).map(Endpoint::Mutate)
    }
}

fn guarded_review(
    bytes: &[u8],
    endpoint: Endpoint,
    config: &Config,
) -> Result<Answer, RequestError> {
    guarded(|| match endpoint {
        Endpoint::Mutate(policy) => review(bytes, policy, config),
        Endpoint::Workloads => review_workload(bytes),
    })
}

fn guarded<T>(work: impl FnOnce() -> Result<T, RequestError>) -> Result<T, RequestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(RequestError::Internal(what))
    })
}

async fn read_and_review(
    state: &AppState,
    endpoint: Result<Endpoint, RequestError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Answer, Reservation), RequestError> {
    let endpoint = endpoint?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(RequestError::TooLarge);
    }
    // The body, within the budget as it arrives: a flood of bodies that never end holds at
    // most the budget, and a body that trickles in too slowly is answered 408.
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    // hyper refuses a body longer than its Content-Length, so a small declared size is a
    // promise the client cannot break.
    let pools = match declared {
        Some(n) if n <= SMALL_REVIEW_BYTES as u64 => &state.small,
        _ => &state.large,
    };
    // The body pool pays for the buffer's capacity before it is allocated: a declared length
    // at once (the apiserver always declares it), so that no body ever waits for more of the
    // pool while holding part of it (bodies growing side by side could otherwise fill it and
    // all wait until they time out); without one, each growth. The body's 12x working memory
    // is reserved only once it is complete, from the other pool, so a slow client holds its
    // body's size, not 13 times it. A body that arrives in one part (the everyday review) is
    // used as it came, without a copy; otherwise one buffer grows by doubling, up to the
    // declared length.
    let limit = declared.map_or(MAX_BODY_BYTES, |n| n as usize);
    let (mut paid, mut body_reservation) = match declared {
        Some(n) => {
            let held = pools.body.reserve(n as usize, deadline).await;
            (n as usize, held.ok_or(RequestError::Busy)?)
        }
        None => (0, Reservation::default()),
    };
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut body = body;
    loop {
        // Each part within BODY_STALL of the last: a body that stops holds its share of the
        // budget for seconds, not for the whole request timeout.
        let next = deadline.min(tokio::time::Instant::now() + BODY_STALL);
        let frame = match tokio::time::timeout_at(next, body.frame()).await {
            Err(_) if next < deadline => return Err(RequestError::Timeout(BODY_STALL)),
            Err(_) => return Err(RequestError::Timeout(state.body_timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(RequestError::BadRequest(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let had = first.as_ref().map_or(joined.len(), Bytes::len);
        let needed = had + data.len();
        if needed > MAX_BODY_BYTES {
            return Err(RequestError::TooLarge);
        }
        let allocated = if first.is_some() {
            0
        } else {
            joined.capacity()
        };
        let target = if had == 0 && first.is_none() {
            needed
        } else if needed > allocated {
            needed.max(allocated * 2).min(limit.max(needed))
        } else {
            paid
        };
        if target > paid {
            let more = pools.body.reserve(target - paid, deadline).await;
            body_reservation.merge(more.ok_or(RequestError::Busy)?);
            paid = target;
        }
        if had == 0 && first.is_none() {
            // The first part: kept as it came.
            first = Some(data);
            continue;
        }
        if needed > allocated {
            joined.reserve_exact(target - joined.len());
        }
        if let Some(lone) = first.take() {
            joined.extend_from_slice(&lone);
        }
        joined.extend_from_slice(&data);
    }
    let bytes = first.unwrap_or_else(|| Bytes::from(joined));
    // The review's working memory, from the other pool: whoever holds it is running and
    // gives it back, so a complete body never waits on a body still arriving.
    let mut reservation = pools
        .work
        .reserve(bytes.len() * WORK_FACTOR, deadline)
        .await
        .ok_or(RequestError::Busy)?;
    let config = state.config();
    let answer = if bytes.len() > BLOCKING_REVIEW_BYTES {
        // Tens of milliseconds of CPU: off the async workers, so other connections are served.
        tokio::task::spawn_blocking(move || guarded_review(&bytes, endpoint, &config))
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))??
    } else {
        guarded_review(&bytes, endpoint, &config)?
    };
    // The body is no longer needed; the answer's bytes stay reserved until sent.
    drop(body_reservation);
    let held = reservation.kib() * 1024;
    if answer.body.len() > held {
        let more = pools.work.reserve(answer.body.len() - held, deadline).await;
        reservation.merge(more.ok_or(RequestError::Busy)?);
    }
    reservation.shrink_to(answer.body.len());
    Ok((answer, reservation))
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        &state,
        Endpoint::mutate(None, query.as_deref()),
        &headers,
        body,
    )
    .await
}

async fn mutate_with_policy(
    State(state): State<Arc<AppState>>,
    Path(policy): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let endpoint = Endpoint::mutate(Some(&policy), query.as_deref());
    answer(&state, endpoint, &headers, body).await
}

async fn workloads(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    answer(&state, Ok(Endpoint::Workloads), &headers, body).await
}

/// Reviews, counts and logs one request: every webhook answer goes through here.
async fn answer(
    state: &AppState,
    endpoint: Result<Endpoint, RequestError>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let result = read_and_review(state, endpoint, headers, body).await;
    let elapsed = start.elapsed();
    let duration_us = elapsed.as_micros() as u64;
    match result {
        Ok((a, reservation)) => {
            state
                .metrics
                .observe(a.outcome, a.reason, elapsed.as_secs_f64());
            tracing::info!(
                uid = %Escaped(&a.uid),
                namespace = %Escaped(&a.namespace),
                pod = %Escaped(&a.pod),
                outcome = %a.outcome.as_str(),
                reason = %a.reason.as_str(),
                profiles = %Escaped(&a.profiles.join(",")),
                duration_us,
                "admission review"
            );
            let body = Body::new(BudgetedBody::new(a.body, reservation));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => {
            state
                .metrics
                .observe(Outcome::Error, e.reason(), elapsed.as_secs_f64());
            tracing::warn!(
                outcome = %Outcome::Error.as_str(),
                reason = %e.reason().as_str(),
                error = %Escaped(&e.to_string()),
                duration_us,
                "admission review rejected"
            );
            e.into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready(crate::server::certificate::unix_now()) {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The webhook's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        // The apiserver refuses a query in a webhook's service path (each segment must be a
        // DNS subdomain), so the policy can also be given as a path segment.
        .route("/mutate/{policy}", post(mutate_with_policy))
        .route("/workloads", post(workloads))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The metrics listener's routes (probes too, for people: they need no client certificate).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    probe_router(state.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(state),
    )
}

/// The probe listener's routes.
pub fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

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
        (
            c.clone(),
            k.clone(),
            Some((cert.clone(), key.clone(), vec![c, k])),
        )
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
            Some((path.clone(), pem, Arc::new(ca)))
        }
    };
    let tls_config = tls::server_config(
        store.clone(),
        client_ca.as_ref().map(|(_, _, ca)| ca.clone()),
    )?;
    Ok(Startup {
        state,
        store,
        acceptor: TlsAcceptor::from(Arc::new(tls_config)),
        mtls: client_ca.is_some(),
        sources: Sources {
            cert: cert_source,
            client_ca,
            config: config_path.zip(config_bytes),
        },
    })
}

/// A plain-HTTP listener (metrics, probes) serving `app` until `stop` fires: HTTP/1.1, one
/// request per connection, the webhook port's deadlines, at most `max_connections` at once
/// (so idle clients here cannot take the file descriptors the webhook needs).
fn spawn_plain(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    name: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(METRICS_HEADER_TIMEOUT)
            .keep_alive(false)
            .max_buf_size(MAX_HEADER_BYTES);
        let slots = Arc::new(Semaphore::new(max_connections));
        let graceful = GracefulShutdown::new();
        let mut stop = stop;
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await.is_ok();
        };
        tokio::pin!(stopped);
        while let Some((slot, stream, _)) =
            next_connection(&listener, &slots, &mut stopped, name).await
        {
            let io = DeadlineIo::new(
                stream,
                OPENING_BYTES,
                METRICS_HEADER_TIMEOUT,
                WRITE_DEADLINE,
            );
            let conn = builder
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()))
                .into_owned();
            let served = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = served.await;
                drop(slot);
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    })
}

/// HTTP/1.1 and HTTP/2 with what one connection may hold bounded: header size, streams,
/// and the HTTP/2 receive windows (what a client may send that nobody has read yet).
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // One buffer per answer, as before the connection's I/O passed vectored writes
        // through (for HTTP/2): head and body then go out as one TLS record.
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    builder
}

/// Everything one webhook connection needs, cloned per connection.
#[derive(Clone)]
struct Connections {
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    state: Arc<AppState>,
    handshake_log: Arc<RateLimit>,
}

impl Connections {
    /// The TLS handshake (bounded; a failure is counted, and logged if it is a refusal),
    /// then HTTP/1.1 or HTTP/2 until the connection ends, the drain closes it, or it stops
    /// taking its answers.
    async fn serve(self, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                self.handshake_failed(HandshakeFailure::of(&error), peer, &error.to_string());
                return;
            }
            Err(_) => {
                self.handshake_failed(HandshakeFailure::Timeout, peer, "timed out");
                return;
            }
        };
        let io = DeadlineIo::new(tls, OPENING_BYTES, HEADER_READ_TIMEOUT, WRITE_DEADLINE);
        let unsent = Arc::new(Unsent::default());
        let app = self.app.clone();
        let tracker = unsent.clone();
        let service =
            tower::service_fn(move |req: axum::extract::Request<hyper::body::Incoming>| {
                let (app, tracker) = (app.clone(), tracker.clone());
                async move {
                    let response: Response = app.oneshot(req).await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Body::new(Tracked::new(body, &tracker))),
                    )
                }
            });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        tokio::select! {
            ended = watcher.watch(conn) => {
                if let Err(error) = ended {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            }
            () = answers_not_taken(&unsent) => {
                tracing::warn!(%peer, "closing a connection that has not taken its answers for {}s", WRITE_DEADLINE.as_secs());
            }
        }
    }

    fn handshake_failed(&self, reason: HandshakeFailure, peer: SocketAddr, error: &str) {
        self.state.metrics.handshake_failed(reason);
        let failure_is_refusal = reason.is_refusal();
        let reason = reason.as_str();
        if !failure_is_refusal {
            tracing::debug!(%peer, %reason, %error, "TLS handshake failed");
        } else if let Some(held_back) = self.handshake_log.admit(Instant::now()) {
            tracing::warn!(
                %peer,
                %reason,
                %error,
                failures_not_logged = held_back,
                "TLS handshake refused (at most one line per {}s; all are counted in \
                 sidecar_injector_tls_handshake_failures_total)",
                HANDSHAKE_LOG_INTERVAL.as_secs()
            );
        }
    }
}

/// Returns once an answer of this connection has waited longer than the write deadline.
async fn answers_not_taken(unsent: &Unsent) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if unsent
            .oldest()
            .is_some_and(|t| t.elapsed() > WRITE_DEADLINE)
        {
            return;
        }
    }
}

/// The next connection of `listener` once one of `slots` is free, or `None` when `stop`
/// comes first. A failed accept (out of file descriptors and the like) backs off instead of
/// spinning.
async fn next_connection<F: Future>(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut Pin<&mut F>,
    port: &str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let slot = tokio::select! {
        slot = slots.clone().acquire_owned() => slot.ok()?,
        _ = stop.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((slot, stream, peer)),
                Err(error) => {
                    tracing::warn!(%error, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.as_mut() => return None,
        }
    }
}

/// Accepts webhook connections until SIGTERM/SIGINT, at most [`MAX_CONNECTIONS`] at once.
async fn accept_until_shutdown(
    listener: &TcpListener,
    connections: Connections,
    graceful: &GracefulShutdown,
) {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((slot, stream, peer)) =
        next_connection(listener, &slots, &mut shutdown, "webhook").await
    {
        // Without TCP_NODELAY, HTTP/2 answers stall ~40 ms on Nagle vs. delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        let served = connections.clone().serve(stream, peer, graceful.watcher());
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
}

/// Lets in-flight requests finish, for at most `grace`.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let drain_start = Instant::now();
    tokio::select! {
        _ = graceful.shutdown() => {
            tracing::info!(drain_ms = drain_start.elapsed().as_millis() as u64, "drained");
        }
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
}

async fn run(args: ServeArgs, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let startup = load(&args, config_path)?;
    let state = startup.state;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let probe_listener = TcpListener::bind(args.probe_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.probe_addr))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn a_panic_while_reviewing_is_a_500_internal_error() {
        let err = guarded::<()>(|| panic!("a bug")).unwrap_err();
        assert_eq!(err, RequestError::Internal("a bug".into()));
        assert_eq!(err.http_status(), 500);
        assert_eq!(err.reason(), crate::engine::inject::Reason::InternalError);
        assert!(guarded(|| Ok(1)).is_ok());
        let series = r#"sidecar_injector_admission_requests_total{outcome="error",reason="internal-error"} 0"#;
        assert!(Metrics::new().encode().contains(series), "{series}");
    }

    fn app() -> (Arc<AppState>, Router) {
        let state = Arc::new(AppState::new(
            Config::embedded().unwrap(),
            Metrics::new(),
            Duration::from_millis(200),
        ));
        (state.clone(), router(state))
    }

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    fn workload_review(
        group: &str,
        kind: &str,
        operation: &str,
        object: serde_json::Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "w1", "kind": {"group": group, "version": "v1", "kind": kind},
                "operation": operation, "name": "web", "namespace": "apps", "object": object}}))
        .unwrap()
    }

    #[tokio::test]
    async fn workloads_are_always_allowed_with_a_warning_per_misplaced_key() {
        let (state, app) = app();
        let misplaced = serde_json::json!({
            "metadata": {"annotations": {"sidecar-injector.io/inject": "true"},
                         "labels": {"sidecar-injector.io/profiles": "debug"}},
            "spec": {"template": {"metadata": {}}, "jobTemplate": {"spec": {"template": {}}}}});
        for (group, kind) in crate::engine::workload::WORKLOAD_KINDS {
            for operation in ["CREATE", "UPDATE"] {
                let body = workload_review(group, kind, operation, misplaced.clone());
                let req = Request::post("/workloads").body(Body::from(body)).unwrap();
                let (status, got) = call(app.clone(), req).await;
                assert_eq!(status, StatusCode::OK);
                let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
                let r = &v["response"];
                assert_eq!(
                    (r["uid"].as_str(), r["allowed"].as_bool()),
                    (Some("w1"), Some(true))
                );
                assert!(r["patch"].is_null() && r["patchType"].is_null(), "{r}");
                let warnings: Vec<&str> = r["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap())
                    .collect();
                let target = if kind == "CronJob" {
                    "spec.jobTemplate.spec.template.metadata.annotations"
                } else {
                    "spec.template.metadata.annotations"
                };
                assert_eq!(warnings.len(), 2, "{kind}: {warnings:?}");
                assert!(
                    warnings[0].contains("sidecar-injector.io/inject")
                        && warnings[0].contains("metadata.annotations")
                );
                assert!(
                    warnings[1].contains("sidecar-injector.io/profiles")
                        && warnings[1].contains("metadata.labels")
                );
                assert!(
                    warnings
                        .iter()
                        .all(|w| w.ends_with(target) && w.contains(kind)),
                    "{warnings:?}"
                );
                assert_eq!(r["auditAnnotations"]["reason"], "workload-checked");
            }
        }
        // Placed right, an unrelated kind, a DELETE: allowed, no warning.
        let placed = serde_json::json!({"metadata": {},
            "spec": {"template": {"metadata": {"annotations": {"sidecar-injector.io/inject": "true"}}}}});
        for body in [
            workload_review("apps", "Deployment", "UPDATE", placed),
            workload_review("apps", "ReplicaSet", "CREATE", misplaced.clone()),
            workload_review("apps", "Deployment", "DELETE", misplaced.clone()),
            workload_review(
                "apps",
                "Deployment",
                "CREATE",
                serde_json::json!("not an object"),
            ),
        ] {
            let req = Request::post("/workloads").body(Body::from(body)).unwrap();
            let (status, got) = call(app.clone(), req).await;
            let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(v["response"]["allowed"], true);
            assert!(v["response"]["warnings"].is_null(), "{v}");
        }
        // HTTP-level bad input: the same answers as /mutate.
        let req = Request::post("/workloads").body(Body::from("{}")).unwrap();
        assert_eq!(call(app.clone(), req).await.0, StatusCode::BAD_REQUEST);
        let req = Request::post("/workloads")
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        assert_eq!(
            call(app.clone(), req).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let text = state.metrics.encode();
        let series = r#"sidecar_injector_admission_requests_total{outcome="skipped",reason="workload-checked"} 14"#;
        assert!(text.contains(series), "{text}");
    }

    #[tokio::test]
    async fn router_answers_review_bytes_and_errors() {
        let (state, app) = app();
        let body = std::fs::read("tests/fixtures/reviews/classic-shared-volume.json").unwrap();
        let expected = review(&body, Policy::Disabled, &state.config())
            .unwrap()
            .body;
        let req = Request::post("/mutate").body(Body::from(body)).unwrap();
        let (status, got) = call(app.clone(), req).await;
        assert_eq!((status, got), (StatusCode::OK, expected));

        let req = Request::post("/mutate?policy=bogus")
            .body(Body::from("{}"))
            .unwrap();
        let (status, got) = call(app.clone(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(got.iter().filter(|b| **b == b'\n').count(), 1, "one line");

        let req = Request::post("/mutate")
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        assert_eq!(
            call(app.clone(), req).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let body = std::fs::read("tests/fixtures/reviews/bare-pod-not-opted-in.json").unwrap();
        let enabled = review(&body, Policy::Enabled, &state.config())
            .unwrap()
            .body;
        let req = Request::post("/mutate/enabled")
            .body(Body::from(body.clone()))
            .unwrap();
        assert_eq!(call(app.clone(), req).await, (StatusCode::OK, enabled));
        let req = Request::post("/mutate/bogus")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(call(app.clone(), req).await.0, StatusCode::BAD_REQUEST);

        let text = state.metrics.encode();
        assert!(
            text.contains("outcome=\"error\",reason=\"too-large\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outcome=\"error\",reason=\"bad-request\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_never_ends_gets_408_and_is_counted() {
        let (state, app) = app();
        let stalled = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let req = Request::post("/mutate")
            .body(Body::from_stream(stalled))
            .unwrap();
        let (status, body) = call(app, req).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("did not arrive within"));
        let text = state.metrics.encode();
        assert!(
            text.contains("outcome=\"error\",reason=\"bad-request\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_follows_state_and_healthz_is_always_ok() {
        let (state, app) = app();
        let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
        assert_eq!(
            call(app.clone(), get("/readyz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(call(app.clone(), get("/readyz")).await.0, StatusCode::OK);
        assert_eq!(call(app.clone(), get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(call(app, get("/nope")).await.0, StatusCode::NOT_FOUND);
    }
}
