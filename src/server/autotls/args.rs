//! `serve --tls-auto`'s options.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::text::duration::duration;

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
