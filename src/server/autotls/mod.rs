//! `serve --tls-auto`: the webhook manages its own serving certificate in the cluster, the
//! shell around `rotation`. Every replica watches one Secret through the API and serves what
//! it holds at once (no volume, no kubelet delay), reports what it serves on the Lease, and
//! is ready only when the webhook configuration's caBundle trusts that. The holder of the
//! Lease alone writes: the Secret (guarded by resourceVersion) and the caBundle (server-side
//! apply under a field manager that owns only the caBundle fields, and only when it differs).

mod args;
mod lease;
mod secret;
mod webhook;

pub use args::AutoTlsArgs;
use secret::Observed;
use webhook::Configuration;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use kube::Api;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::server::state::AppState;
use crate::tls::rotation::{plan, Material, Settings, Step, View};
use crate::tls::store::CertStore;

/// The field manager that owns the caBundle fields, and nothing else.
pub const FIELD_MANAGER: &str = "sidecar-injector-tls-auto";

#[derive(Debug, thiserror::Error)]
pub enum AutoTlsError {
    #[error("--tls-auto cannot reach the Kubernetes API: {0}")]
    NoCluster(String),
    #[error("--tls-auto: {0}")]
    Settings(String),
}

/// What this replica remembers between reconciles (at start: nothing).
#[derive(Default)]
struct Memory {
    /// The material it serves, once loaded from a usable Secret.
    served: Option<Material>,
    /// The Lease record last seen and when it changed (expiry by our own clock, so skewed
    /// clocks between nodes do not matter).
    lease_seen: Option<(String, Instant)>,
    /// When this replica last renewed the Lease as holder.
    renewed: Option<Instant>,
    /// Since when the caBundle has been the one wanted (by its text).
    bundle_since: Option<(String, Instant)>,
    /// Since when every live replica has reported the Secret's certificate (by its serial).
    serving_since: Option<(String, Instant)>,
    /// Last logged: leadership, trust, a missing configuration (to log changes only).
    was_leader: bool,
    was_trusted: Option<bool>,
    warned_missing: bool,
    /// The Secret version whose foreign `ca.crt` entries were last logged.
    warned_ignored: Option<String>,
}

struct Shell {
    secrets: Api<Secret>,
    leases: Api<Lease>,
    configurations: Api<MutatingWebhookConfiguration>,
    args: AutoTlsArgs,
    settings: Settings,
    identity: String,
    store: Arc<CertStore>,
    state: Arc<AppState>,
    wake: Arc<Notify>,
}

/// How long `key` has stayed what `since` last saw (zero when it changed, or is `None`).
fn settled(since: &mut Option<(String, Instant)>, key: Option<String>) -> Duration {
    match key {
        Some(key) => match since {
            Some((k, at)) if *k == key => at.elapsed(),
            _ => {
                *since = Some((key, Instant::now()));
                Duration::ZERO
            }
        },
        None => {
            *since = None;
            Duration::ZERO
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Shell {
    /// Reconciles on every wake-up (a watch event) or tick, until aborted at shutdown.
    async fn run(self, tick: Duration) {
        let mut memory = Memory::default();
        loop {
            let again = match self.reconcile(&mut memory).await {
                Ok(again) => again,
                Err((target, error)) => {
                    tracing::warn!(target, %error, "tls-auto: API call failed; retrying");
                    self.state.metrics.tls_auto_api_failed(target);
                    false
                }
            };
            if !again {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        }
    }

    /// One look at the cluster and at most one write. Whether to look again at once.
    async fn reconcile(&self, memory: &mut Memory) -> Result<bool, (&'static str, kube::Error)> {
        let observed = self.read_secret().await.map_err(|e| ("secret", e))?;
        if let Ok(m) = &observed.material {
            self.load(memory, m);
            if m.ignored > 0 && memory.warned_ignored != observed.resource_version {
                tracing::warn!(secret = %self.args.tls_auto_secret, ignored = m.ignored, "tls-auto: certificates in ca.crt that are not a CA this injector made (or more than a rotation leaves) are left out of the caBundle");
                memory.warned_ignored = observed.resource_version.clone();
            }
        }
        let configuration = self
            .read_configuration()
            .await
            .map_err(|e| ("configuration", e))?;
        let bundles = configuration.as_ref().map(|c| c.bundles.as_slice());
        self.note_trust(memory, bundles);
        if configuration.is_none() && !memory.warned_missing {
            tracing::warn!(name = %self.args.tls_auto_webhook_config, "tls-auto: the MutatingWebhookConfiguration does not exist (uninstalled?): it is not recreated, the Secret and Lease are not written, and this replica is not ready");
        }
        memory.warned_missing = configuration.is_none();
        // Uninstalled: write nothing (no Lease, no Secret put back), or an uninstall would
        // leave behind what it just deleted.
        if configuration.is_none() {
            self.state.metrics.set_tls_auto_leader(false);
            return Ok(false);
        }

        let serial = memory.served.as_ref().map(|m| m.serial.clone());
        let holding = self
            .lease(memory, serial.as_deref())
            .await
            .map_err(|e| ("lease", e))?;
        let leader = holding.is_some();
        self.state.metrics.set_tls_auto_leader(leader);
        if leader != memory.was_leader {
            tracing::info!(identity = %self.identity, leader, "tls-auto: leadership changed");
            memory.was_leader = leader;
        }
        let Some(reports) = holding else {
            return Ok(false);
        };

        let wanted = observed.material.as_ref().ok().map(Material::bundle);
        let bundle_ok = wanted
            .clone()
            .filter(|w| bundles.is_some_and(|b| !b.is_empty() && b.iter().all(|x| x == w)));
        let bundle_settled = settled(&mut memory.bundle_since, bundle_ok);
        let serving_ok = observed
            .material
            .as_ref()
            .ok()
            .map(|m| m.serial.clone())
            .filter(|s| !reports.is_empty() && reports.iter().all(|r| r == s));
        let serving_settled = settled(&mut memory.serving_since, serving_ok);

        let view = View {
            now: now(),
            secret: &observed.material,
            fallback: memory.served.as_ref(),
            bundles,
            bundle_settled,
            serving_settled,
        };
        match plan(&view, &self.settings) {
            Ok(step) => self.take(step, &observed, configuration).await,
            Err(error) => {
                tracing::error!(%error, "tls-auto: cannot generate a certificate");
                Ok(false)
            }
        }
    }

    /// Takes the leader's next step; whether it wrote anything.
    async fn take(
        &self,
        step: Step,
        observed: &Observed,
        configuration: Option<Configuration>,
    ) -> Result<bool, (&'static str, kube::Error)> {
        match step {
            Step::Write(material, change) => {
                if let Err(unusable) = &observed.material {
                    tracing::warn!(secret = %self.args.tls_auto_secret, problem = %unusable, action = change.describe(), "tls-auto: the Secret is not usable");
                }
                self.write_secret(observed, &material)
                    .await
                    .map_err(|e| ("secret", e))?;
                tracing::info!(secret = %self.args.tls_auto_secret, step = change.describe(), serial = %material.serial, cas = material.cas.len(), "tls-auto: wrote the Secret");
                self.state.metrics.tls_auto_wrote(change.as_str());
                Ok(true)
            }
            Step::Bundle(bundle) => {
                // `plan` asks for a bundle only when it has read a configuration.
                let Some(configuration) = configuration else {
                    return Ok(false);
                };
                self.apply_bundle(&configuration, &bundle)
                    .await
                    .map_err(|e| ("cabundle", e))?;
                tracing::info!(configuration = %self.args.tls_auto_webhook_config, webhooks = configuration.hooks.len(), "tls-auto: set the caBundle");
                self.state.metrics.tls_auto_wrote("bundle");
                Ok(true)
            }
            Step::Wait(what) => {
                tracing::debug!(waiting_for = what, "tls-auto");
                Ok(false)
            }
            Step::Idle => Ok(false),
        }
    }
}

/// Wakes the reconcile loop on every change of one named object.
fn watch<K>(api: Api<K>, name: &str, wake: Arc<Notify>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::debug!(%error, "tls-auto: watch interrupted; retrying");
            }
            wake.notify_one();
        }
    });
}

/// Starts managing the certificate in the background: the webhook serves `store`, and
/// `state` is not ready until the caBundle trusts what it serves. The handle stops it (at
/// shutdown: a replica on its way out writes nothing, so an uninstall leaves no Secret or
/// Lease re-created behind it).
pub async fn spawn(
    args: AutoTlsArgs,
    store: Arc<CertStore>,
    state: Arc<AppState>,
) -> Result<tokio::task::AbortHandle, AutoTlsError> {
    let client = crate::cluster::client::connect(args.kubeconfig.as_deref(), None)
        .await
        .map_err(AutoTlsError::NoCluster)?;
    let namespace = args
        .tls_auto_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = identity(&args);
    let settings = settings(&args, &namespace);
    settings.check().map_err(AutoTlsError::Settings)?;
    state.set_trusted(false);
    let wake = Arc::new(Notify::new());
    let shell = Shell {
        secrets: Api::namespaced(client.clone(), &namespace),
        leases: Api::namespaced(client.clone(), &namespace),
        configurations: Api::all(client),
        settings,
        identity,
        store,
        state,
        wake: wake.clone(),
        args,
    };
    watch(
        shell.secrets.clone(),
        &shell.args.tls_auto_secret,
        wake.clone(),
    );
    watch(
        shell.configurations.clone(),
        &shell.args.tls_auto_webhook_config,
        wake.clone(),
    );
    tracing::info!(%namespace, identity = %shell.identity, secret = %shell.args.tls_auto_secret, configuration = %shell.args.tls_auto_webhook_config, "tls-auto: managing the serving certificate");
    // Often enough to renew the Lease and to notice a grace period's end.
    let tick = (shell.args.lease_duration / 3)
        .min(shell.args.rotation_grace / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(5));
    let task = tokio::spawn(shell.run(tick));
    Ok(task.abort_handle())
}

/// This replica's name on the Lease: the flag, else the pod's name, else the host's.
fn identity(args: &AutoTlsArgs) -> String {
    args.tls_auto_identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// What the rotation plan issues: the Service's DNS names and the flags' periods.
fn settings(args: &AutoTlsArgs, namespace: &str) -> Settings {
    let service = &args.tls_auto_service;
    Settings {
        dns: vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc.cluster.local"),
            service.clone(),
        ],
        ca_validity: args.ca_validity,
        ca_renew_before: args.ca_renew_before,
        cert_validity: args.cert_validity,
        cert_renew_before: args.cert_renew_before,
        grace: args.rotation_grace,
    }
}
