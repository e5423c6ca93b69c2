//! What the webhook's handlers and the reload task share: the config in force, the metrics,
//! readiness. Its own module so that `server` and `reload` both depend on it, not on each other.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::engine::config::Config;
use crate::metrics::Metrics;
use crate::server::limits::Pools;

/// What the handlers share.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    pub metrics: Metrics,
    ready: AtomicBool,
    /// False while `--tls-auto` serves a certificate the webhook configuration's caBundle
    /// does not trust yet (always true otherwise).
    trusted: AtomicBool,
    /// The serving certificate's notAfter (Unix time): once past, clients refuse it, and the
    /// replica is not ready.
    cert_not_after: AtomicI64,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Bytes of reviews in flight (bodies, working memory, unsent answers): small reviews
    /// and the rest, each from its own pools.
    pub small: Pools,
    pub large: Pools,
}

impl AppState {
    pub fn new(config: Config, metrics: Metrics, body_timeout: Duration) -> AppState {
        metrics.serving_profiles(&config);
        AppState {
            config: RwLock::new(Arc::new(config)),
            metrics,
            ready: AtomicBool::new(false),
            trusted: AtomicBool::new(true),
            cert_not_after: AtomicI64::new(i64::MAX),
            body_timeout,
            small: Pools::small(),
            large: Pools::large(),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Config) {
        self.metrics.serving_profiles(&config);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::SeqCst);
    }

    pub fn set_cert_not_after(&self, not_after: i64) {
        self.cert_not_after.store(not_after, Ordering::SeqCst);
    }

    /// Ready: started, trusted by the webhook configuration, and serving a certificate that
    /// has not expired (`now`, Unix time).
    pub fn is_ready(&self, now: i64) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.trusted.load(Ordering::SeqCst)
            && now <= self.cert_not_after.load(Ordering::SeqCst)
    }
}
