//! The webhook configuration: the caBundles it trusts (the replica's readiness), and the
//! leader's server-side apply of the caBundle fields alone.

use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::*;

/// The webhook configuration as read: every webhook's caBundle (in order), the webhooks'
/// names, and the version a write must match.
pub(super) struct Configuration {
    pub(super) bundles: Vec<String>,
    pub(super) hooks: Vec<String>,
    resource_version: Option<String>,
}

impl Shell {
    /// The webhook configuration's bundles as read (`None`: it does not exist).
    pub(super) async fn read_configuration(&self) -> kube::Result<Option<Configuration>> {
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

    pub(super) fn note_trust(&self, memory: &mut Memory, bundles: Option<&[String]>) {
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

    /// Sets every webhook's caBundle by server-side apply, on the version read: a
    /// configuration changed since (by anyone) fails with 409 and is read again.
    pub(super) async fn apply_bundle(
        &self,
        configuration: &Configuration,
        bundle: &str,
    ) -> kube::Result<()> {
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
}
