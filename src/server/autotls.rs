//! `serve --tls-auto`: the webhook manages its own serving certificate in the cluster, the
//! shell around `rotation`. Every replica watches one Secret through the API and serves what
//! it holds at once (no volume, no kubelet delay), reports what it serves on the Lease, and
//! is ready only when the webhook configuration's caBundle trusts that. The holder of the
//! Lease alone writes: the Secret (guarded by resourceVersion) and the caBundle (server-side
//! apply under a field manager that owns only the caBundle fields, and only when it differs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::Api;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::server::state::AppState;
use crate::text::duration::duration;
use crate::tls::rotation::{plan, Material, Settings, Step, Unusable, View, SECRET_TYPE};
use crate::tls::store::CertStore;

/// The field manager that owns the caBundle fields, and nothing else.
pub const FIELD_MANAGER: &str = "sidecar-injector-tls-auto";
/// Lease annotations with which each replica reports the certificate it serves.
const REPORT_PREFIX: &str = "serving.sidecar-injector.io/";

#[derive(Args, Debug, Clone)]
pub struct AutoTlsArgs {
    /// Manage the serving certificate in the cluster (a Secret, a Lease and the webhook
    /// configuration's caBundle) instead of reading it from files.
    #[arg(long, env = "SIDECAR_INJECTOR_TLS_AUTO", conflicts_with_all = ["tls_cert", "tls_key", "dev"])]
    pub tls_auto: bool,
    /// Namespace of the Secret, the Lease and the Service (default: the pod's own, or the
    /// kubeconfig context's).
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_AUTO_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub tls_auto_namespace: Option<String>,
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_AUTO_SECRET",
        value_name = "NAME",
        default_value = "sidecar-injector-certs"
    )]
    pub tls_auto_secret: String,
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_AUTO_LEASE",
        value_name = "NAME",
        default_value = "sidecar-injector-certs"
    )]
    pub tls_auto_lease: String,
    /// The Service the apiserver calls: the certificate's DNS names.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_AUTO_SERVICE",
        value_name = "NAME",
        default_value = "sidecar-injector"
    )]
    pub tls_auto_service: String,
    /// The MutatingWebhookConfiguration whose webhooks get the caBundle.
    #[arg(
        long,
        env = "SIDECAR_INJECTOR_TLS_AUTO_WEBHOOK_CONFIG",
        value_name = "NAME",
        default_value = "sidecar-injector"
    )]
    pub tls_auto_webhook_config: String,
    /// This replica's name on the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "SIDECAR_INJECTOR_TLS_AUTO_IDENTITY", value_name = "NAME")]
    pub tls_auto_identity: Option<String>,
    /// A kubeconfig to reach the API with (default: the pod's ServiceAccount, else KUBECONFIG).
    #[arg(long, env = "SIDECAR_INJECTOR_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, env = "SIDECAR_INJECTOR_CA_VALIDITY", value_parser = duration, default_value = "730d")]
    pub ca_validity: Duration,
    /// Start a CA rotation when the CA has less than this left.
    #[arg(long, env = "SIDECAR_INJECTOR_CA_RENEW_BEFORE", value_parser = duration, default_value = "180d")]
    pub ca_renew_before: Duration,
    #[arg(long, env = "SIDECAR_INJECTOR_CERT_VALIDITY", value_parser = duration, default_value = "90d")]
    pub cert_validity: Duration,
    /// Reissue the serving certificate when it has less than this left.
    #[arg(long, env = "SIDECAR_INJECTOR_CERT_RENEW_BEFORE", value_parser = duration, default_value = "30d")]
    pub cert_renew_before: Duration,
    /// How long the caBundle holds a new CA before it signs, and how long every replica
    /// serves the new certificate before the old CA is dropped.
    #[arg(long, env = "SIDECAR_INJECTOR_ROTATION_GRACE", value_parser = duration, default_value = "2m")]
    pub rotation_grace: Duration,
    /// How long a Lease holder that stops renewing keeps it.
    #[arg(long, env = "SIDECAR_INJECTOR_LEASE_DURATION", value_parser = duration, default_value = "15s")]
    pub lease_duration: Duration,
}

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

/// The webhook configuration as read: every webhook's caBundle (in order), the webhooks'
/// names, and the version a write must match.
struct Configuration {
    bundles: Vec<String>,
    hooks: Vec<String>,
    resource_version: Option<String>,
}

/// The Secret as read: its material (or why not), and what a write must know.
struct Observed {
    material: Result<Material, Unusable>,
    resource_version: Option<String>,
    type_ok: bool,
    /// Its labels and annotations, kept as they are by an update: another owner's (a Helm
    /// release's) stay its own.
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
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

/// Lease durations after which a replica's report is dropped from the Lease.
const STALE_REPORTS: i64 = 20;

/// When a report (`<serial> <unix seconds>`) was written; 0 if it cannot be read.
fn report_seen(value: &str) -> i64 {
    value
        .split_once(' ')
        .and_then(|(_, seen)| seen.parse().ok())
        .unwrap_or(0)
}

/// The holder's care of the reports on the Lease: those gone stale are dropped (replicas
/// come and go with every rollout, and the Lease must never grow toward the annotation size
/// limit), and one dated in the future is re-dated to now, so that it ages like any other.
/// Unclamped, a report written with a far-future time would stay live forever, and its old
/// serial would keep an old CA in the bundle.
fn tidy_reports(annotations: &mut BTreeMap<String, String>, now: i64, lease: Duration) {
    let stale = now - STALE_REPORTS * lease.as_secs() as i64;
    annotations.retain(|k, v| !k.starts_with(REPORT_PREFIX) || report_seen(v) >= stale);
    for (key, value) in annotations.iter_mut() {
        if key.starts_with(REPORT_PREFIX) && report_seen(value) > now {
            let serial = value.split_once(' ').map_or("", |(serial, _)| serial);
            *value = format!("{serial} {now}");
        }
    }
}

fn report_key(identity: &str) -> String {
    // An annotation name: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends.
    let name: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    format!(
        "{REPORT_PREFIX}{}",
        name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

impl Shell {
    async fn read_secret(&self) -> kube::Result<Observed> {
        let secret = self.secrets.get_opt(&self.args.tls_auto_secret).await?;
        let Some(secret) = secret else {
            return Ok(Observed {
                material: Err(Unusable::Missing),
                resource_version: None,
                type_ok: true,
                labels: None,
                annotations: None,
            });
        };
        let kind = secret.type_.clone().unwrap_or_else(|| "Opaque".into());
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        Ok(Observed {
            material: Material::from_secret(Some((&kind, &data)), now().unix_timestamp()),
            resource_version: secret.metadata.resource_version,
            type_ok: kind == SECRET_TYPE,
            labels: secret.metadata.labels,
            annotations: secret.metadata.annotations,
        })
    }

    /// Serves the Secret's certificate if it is not the one in force.
    fn load(&self, memory: &mut Memory, material: &Material) {
        if memory
            .served
            .as_ref()
            .is_some_and(|m| m.serial == material.serial)
        {
            return;
        }
        let loaded =
            crate::tls::store::load_pair(material.tls_crt.as_bytes(), material.tls_key.as_bytes())
                .map_err(|e| e.to_string());
        if crate::server::certificate::apply_cert(loaded, &self.state, &self.store) {
            tracing::info!(serial = %material.serial, "tls-auto: serving the certificate from the Secret");
            memory.served = Some(material.clone());
        }
    }

    /// The webhook configuration's bundles as read (`None`: it does not exist).
    async fn read_configuration(&self) -> kube::Result<Option<Configuration>> {
        let Some(c) = self
            .configurations
            .get_opt(&self.args.tls_auto_webhook_config)
            .await?
        else {
            return Ok(None);
        };
        let hooks = c.webhooks.unwrap_or_default();
        let bundles = hooks
            .iter()
            .map(|h| {
                h.client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Some(Configuration {
            bundles,
            hooks: hooks.into_iter().map(|h| h.name).collect(),
            resource_version: c.metadata.resource_version,
        }))
    }

    fn note_trust(&self, memory: &mut Memory, bundles: Option<&[String]>) {
        let name = &self.settings.dns[0];
        let trusted = match (&memory.served, bundles) {
            (Some(m), Some(bundles)) => {
                !bundles.is_empty()
                    && bundles.iter().all(|b| {
                        crate::tls::store::trusted_by(m.tls_crt.as_bytes(), b.as_bytes(), name)
                    })
            }
            _ => false,
        };
        self.state.set_trusted(trusted);
        match (memory.was_trusted, trusted) {
            (Some(was), now) if was == now => {}
            (_, true) => {
                tracing::info!("tls-auto: the caBundle trusts the served certificate: ready")
            }
            (None, false) => {
                tracing::info!("tls-auto: waiting for the caBundle to trust the served certificate")
            }
            (Some(_), false) => tracing::warn!(
                "tls-auto: the caBundle no longer trusts the served certificate: not ready"
            ),
        }
        memory.was_trusted = Some(trusted);
    }

    /// Takes or renews the Lease, with this replica's report on it. While this replica holds
    /// it: every live replica's report, as written with the renewal (`None`: a follower).
    async fn lease(
        &self,
        memory: &mut Memory,
        serial: Option<&str>,
    ) -> kube::Result<Option<Vec<String>>> {
        let name = &self.args.tls_auto_lease;
        let duration = self.args.lease_duration;
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let report = serial.map(|s| format!("{s} {}", now().unix_timestamp()));
        let Some(lease) = self.leases.get_opt(name).await? else {
            return self.create_lease(memory, report, stamp).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder} {:?}", spec.renew_time.as_ref().map(|t| t.0));
        let changed_at = match &memory.lease_seen {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        memory.lease_seen = Some((record, changed_at));
        let mine = holder == self.identity;
        let expired = holder.is_empty() || changed_at.elapsed() > duration;
        if mine || expired {
            return self.hold_lease(memory, lease, report, stamp, mine).await;
        }
        if let Some(r) = report {
            let patch = json!({"metadata": {"annotations": {report_key(&self.identity): r}}});
            self.leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(None)
    }

    /// The first replica makes the Lease, holding it.
    async fn create_lease(
        &self,
        memory: &mut Memory,
        report: Option<String>,
        stamp: MicroTime,
    ) -> kube::Result<Option<Vec<String>>> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(self.args.tls_auto_lease.clone());
        lease.metadata.annotations =
            report.map(|r| BTreeMap::from([(report_key(&self.identity), r)]));
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.args.lease_duration.as_secs() as i32),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            lease_transitions: Some(0),
            ..Default::default()
        });
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                memory.renewed = Some(Instant::now());
                Ok(Some(self.live_reports(&lease)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease this replica holds (`mine`), or takes over an expired one.
    async fn hold_lease(
        &self,
        memory: &mut Memory,
        mut lease: Lease,
        report: Option<String>,
        stamp: MicroTime,
        mine: bool,
    ) -> kube::Result<Option<Vec<String>>> {
        let duration = self.args.lease_duration;
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        // Replicas come and go with every rollout: the holder drops reports gone stale, so
        // the Lease never grows toward the annotation size limit.
        tidy_reports(annotations, now().unix_timestamp(), duration);
        if let Some(r) = report {
            annotations.insert(report_key(&self.identity), r);
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        if !mine {
            let previous = spec.holder_identity.clone().unwrap_or_default();
            tracing::info!(%previous, "tls-auto: taking over the Lease");
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(stamp.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(stamp);
        spec.lease_duration_seconds = Some(duration.as_secs() as i32);
        // resourceVersion from the read: a concurrent writer makes this fail (409).
        let name = &self.args.tls_auto_lease;
        match self
            .leases
            .replace(name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                memory.renewed = Some(Instant::now());
                Ok(Some(self.live_reports(&lease)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let held = mine && memory.renewed.is_some_and(|r| r.elapsed() < duration);
                Ok(held.then(|| self.live_reports(&lease)))
            }
            Err(e) => Err(e),
        }
    }

    /// Every live replica's report on `lease` (the serial of the certificate it serves).
    fn live_reports(&self, lease: &Lease) -> Vec<String> {
        let fresh = now().unix_timestamp() - 3 * self.args.lease_duration.as_secs() as i64;
        lease
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, v)| k.starts_with(REPORT_PREFIX) && report_seen(v) >= fresh)
            .filter_map(|(_, v)| v.split_once(' ').map(|(serial, _)| serial.to_string()))
            .collect()
    }

    async fn write_secret(&self, observed: &Observed, material: &Material) -> kube::Result<()> {
        let name = &self.args.tls_auto_secret;
        let mut secret = Secret {
            type_: Some(SECRET_TYPE.into()),
            data: Some(
                material
                    .to_secret_data()
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v)))
                    .collect(),
            ),
            ..Default::default()
        };
        secret.metadata.name = Some(name.clone());
        let mut labels = observed.labels.clone().unwrap_or_default();
        labels
            .entry("app.kubernetes.io/managed-by".to_string())
            .or_insert_with(|| "sidecar-injector".to_string());
        secret.metadata.labels = Some(labels);
        secret.metadata.annotations = observed.annotations.clone();
        match &observed.resource_version {
            None => {
                self.secrets.create(&PostParams::default(), &secret).await?;
            }
            // A Secret's type cannot change: delete exactly the version we read, then create.
            Some(rv) if !observed.type_ok => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: Some(rv.clone()),
                        uid: None,
                    }),
                    ..Default::default()
                };
                self.secrets.delete(name, &dp).await?;
                self.secrets.create(&PostParams::default(), &secret).await?;
            }
            Some(rv) => {
                secret.metadata.resource_version = Some(rv.clone());
                self.secrets
                    .replace(name, &PostParams::default(), &secret)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sets every webhook's caBundle by server-side apply, on the version read: a
    /// configuration changed since (by anyone) fails with 409 and is read again.
    async fn apply_bundle(&self, configuration: &Configuration, bundle: &str) -> kube::Result<()> {
        let webhooks: Vec<_> = configuration
            .hooks
            .iter()
            .map(|name| json!({"name": name, "clientConfig": {"caBundle": ByteString(bundle.as_bytes().to_vec())}}))
            .collect();
        let patch = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": self.args.tls_auto_webhook_config,
                "resourceVersion": configuration.resource_version,
            },
            "webhooks": webhooks,
        });
        self.configurations
            .patch(
                &self.args.tls_auto_webhook_config,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }

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
/// `state` is not ready until the caBundle trusts what it serves.
/// Starts managing the certificate; the handle stops it (at shutdown: a replica on its way
/// out writes nothing, so an uninstall leaves no Secret or Lease re-created behind it).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_times_are_read_or_zero() {
        assert_eq!(report_seen("ab:cd 1700000000"), 1_700_000_000);
        assert_eq!(report_seen("ab:cd"), 0);
        assert_eq!(report_seen("ab:cd soon"), 0);
    }

    #[test]
    fn report_keys_are_annotation_names() {
        assert_eq!(
            report_key("injector-7d9f-abc12"),
            "serving.sidecar-injector.io/injector-7d9f-abc12"
        );
        assert_eq!(report_key("a b/c"), "serving.sidecar-injector.io/a-b-c");
        assert_eq!(report_key(&"x".repeat(100)).len(), REPORT_PREFIX.len() + 63);
    }

    #[test]
    fn stale_reports_are_dropped_and_future_ones_re_dated_to_now() {
        let now = 2_000_000_000;
        let lease = Duration::from_secs(15);
        let mut annotations = BTreeMap::from([
            (report_key("live"), format!("aa {}", now - 5)),
            (report_key("gone"), format!("bb {}", now - 20 * 15 - 1)),
            (report_key("forged"), "cc 99999999999".to_string()),
            ("other".to_string(), "kept as is 99999999999".to_string()),
        ]);
        tidy_reports(&mut annotations, now, lease);
        assert_eq!(
            annotations,
            BTreeMap::from([
                (report_key("live"), format!("aa {}", now - 5)),
                (report_key("forged"), format!("cc {now}")),
                ("other".to_string(), "kept as is 99999999999".to_string()),
            ])
        );
        // Re-dated, it ages: twenty lease durations on, it is dropped.
        tidy_reports(&mut annotations, now + 20 * 15 + 1, lease);
        assert!(!annotations.contains_key(&report_key("forged")));
    }
}
