//! The Secret: its material read and put in force, and the leader's writes (guarded by
//! resourceVersion).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::*;
use crate::tls::rotation::{Material, Unusable, SECRET_TYPE};

/// The Secret as read: its material (or why not), and what a write must know.
pub(super) struct Observed {
    pub(super) material: Result<Material, Unusable>,
    pub(super) resource_version: Option<String>,
    type_ok: bool,
    /// Its labels and annotations, kept as they are by an update: another owner's (a Helm
    /// release's) stay its own.
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Shell {
    pub(super) async fn read_secret(&self) -> kube::Result<Observed> {
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
    pub(super) fn load(&self, memory: &mut Memory, material: &Material) {
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

    pub(super) async fn write_secret(
        &self,
        observed: &Observed,
        material: &Material,
    ) -> kube::Result<()> {
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
}
