//! Accepting connections: TLS handshakes and HTTP/1.1 and HTTP/2 with what each connection
//! may hold bounded, the plain-HTTP listeners, and the drain at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::server::limits::{DeadlineIo, Tracked, Unsent};
use crate::server::state::AppState;
use crate::tls::store::{HandshakeFailure, RateLimit};

/// A client that has not finished its TLS handshake or sent its request headers by then is
/// dropped, so slow or silent clients cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on the webhook port; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// Connections served at once on the metrics port (probes and scrapes).
pub(super) const MAX_METRICS_CONNECTIONS: usize = 128;
/// The probe listener's cap: the kubelet probes one connection at a time.
pub(super) const MAX_PROBE_CONNECTIONS: usize = 16;
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
pub(super) const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A plain-HTTP listener (metrics, probes) serving `app` until `stop` fires: HTTP/1.1, one
/// request per connection, the webhook port's deadlines, at most `max_connections` at once
/// (so idle clients here cannot take the file descriptors the webhook needs).
pub(super) fn spawn_plain(
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
pub(super) fn http_builder() -> auto::Builder<TokioExecutor> {
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
pub(super) struct Connections {
    pub(super) acceptor: TlsAcceptor,
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) app: Router,
    pub(super) state: Arc<AppState>,
    pub(super) handshake_log: Arc<RateLimit>,
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
pub(super) async fn accept_until_shutdown(
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
pub(super) async fn drain(graceful: GracefulShutdown, grace: Duration) {
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

/// SIGTERM or SIGINT: stop accepting and drain.
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
