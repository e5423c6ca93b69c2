//! `check`: is each pod or workload injected (or would it be), and why, asked of the live
//! cluster, read-only. `evaluate` is pure: the webhook configuration, the namespace's labels,
//! the object and the injection config in, a `Finding` out. It selects webhooks as the
//! apiserver does (`selection`) and asks the engine through the same `review` as the server.
//! `run` is the shell: it reads those with the kube client.

mod evaluate;
mod injected;
mod read;
mod render;
mod review;

use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

pub use evaluate::{evaluate, Finding};
use evaluate::{Namespace, Object};
use read::{api_error, gather, injection_config, namespace};
pub use render::table;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// What to check: pod/NAME, deployment/NAME (statefulset, daemonset, replicaset, job,
    /// cronjob), namespace/NAME. None (and no -f): every pod and workload of the namespace.
    #[arg(value_name = "KIND/NAME")]
    pub targets: Vec<String>,
    /// Check the pods and workloads of a manifest (YAML or JSON, multi-document) instead.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every pod and workload of every namespace (e.g. to find `stale` pods for an upgrade).
    #[arg(short = 'A', long, conflicts_with_all = ["namespace", "file"])]
    pub all_namespaces: bool,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// A kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the pod's service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The MutatingWebhookConfiguration that calls the injector.
    #[arg(long, value_name = "NAME", default_value = "sidecar-injector")]
    pub webhook_config: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// Why `check` could not answer (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "no cluster to ask: {0}; set KUBECONFIG, pass --kubeconfig or --context, or run in a pod"
    )]
    NoCluster(String),
    #[error("no MutatingWebhookConfiguration {0:?} is installed: the injector is not installed (kubectl apply -k deploy), or pass --webhook-config NAME")]
    NotInstalled(String),
    #[error("forbidden: this user may not {verb} {resource}{scope}; check reads only what deploy/rbac/check-reader.yaml grants")]
    Forbidden {
        verb: &'static str,
        resource: String,
        scope: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("the cluster answered an error: {0}")]
    Api(String),
    #[error("{0}")]
    Input(String),
}

/// Checks what `args` names against the cluster; the findings, in order.
pub async fn run(args: &CheckArgs, config_path: Option<&Path>) -> Result<Vec<Finding>, CheckError> {
    let client =
        crate::cluster::client::connect(args.kubeconfig.as_deref(), args.context.as_deref())
            .await
            .map_err(CheckError::NoCluster)?;
    let configurations: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client.clone());
    let configuration = configurations
        .get_opt(&args.webhook_config)
        .await
        .map_err(|e| {
            api_error(
                e,
                "get",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io",
                " (cluster-wide)",
            )
        })?
        .ok_or_else(|| CheckError::NotInstalled(args.webhook_config.clone()))?;
    let config = injection_config(&client, config_path, &configuration).await?;
    let default_ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let gathered = gather(&client, args, &default_ns).await?;
    let mut namespaces = gathered.declared;
    let mut findings = Vec::new();
    for found in &gathered.objects {
        let ns = &found.namespace;
        if !namespaces.contains_key(ns) {
            let found = namespace(&client, ns).await?;
            if found.is_none() {
                eprintln!("sidecar-injector: warning: namespace {ns} does not exist; checked as if created without labels");
            }
            namespaces.insert(ns.clone(), found.unwrap_or_else(|| Namespace::named(ns)));
        }
        let object = Object {
            kind: found.kind,
            doc: &found.doc,
            live: found.live,
        };
        findings.push(evaluate(&configuration, &namespaces[ns], &object, &config));
    }
    Ok(findings)
}
