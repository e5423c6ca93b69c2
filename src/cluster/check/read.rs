//! What `check` reads from the cluster (or a manifest): the webhook configuration, the
//! injection config, the namespaces and the objects.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use serde_json::Value;

use super::evaluate::{service_namespace, Namespace};
use super::{CheckArgs, CheckError};
use crate::engine::config::Config;

/// The ConfigMap that `deploy/` mounts as the server's config, in the webhook's namespace.
const CONFIG_MAP: &str = "sidecar-injector-config";
const CONFIG_MAP_KEY: &str = "config.yaml";

/// The kinds `check` takes on the command line, and their API.
fn resource(word: &str) -> Option<(&'static str, kube::api::ApiResource)> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    use kube::api::ApiResource;
    Some(match word.to_ascii_lowercase().as_str() {
        "pod" | "pods" | "po" => ("Pod", ApiResource::erase::<core::Pod>(&())),
        "deployment" | "deployments" | "deploy" => {
            ("Deployment", ApiResource::erase::<apps::Deployment>(&()))
        }
        "statefulset" | "statefulsets" | "sts" => {
            ("StatefulSet", ApiResource::erase::<apps::StatefulSet>(&()))
        }
        "daemonset" | "daemonsets" | "ds" => {
            ("DaemonSet", ApiResource::erase::<apps::DaemonSet>(&()))
        }
        "replicaset" | "replicasets" | "rs" => {
            ("ReplicaSet", ApiResource::erase::<apps::ReplicaSet>(&()))
        }
        "job" | "jobs" => ("Job", ApiResource::erase::<batch::Job>(&())),
        "cronjob" | "cronjobs" | "cj" => ("CronJob", ApiResource::erase::<batch::CronJob>(&())),
        _ => return None,
    })
}

/// The kinds listed when a whole namespace is checked, in output order.
const NAMESPACE_KINDS: [&str; 7] = [
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "replicaset",
    "job",
    "cronjob",
];

/// A kube error as the line a user needs: which permission is missing, what is not there.
pub(super) fn api_error(
    e: kube::Error,
    verb: &'static str,
    resource: &str,
    scope: &str,
) -> CheckError {
    match e {
        kube::Error::Api(status) if status.code == 403 => CheckError::Forbidden {
            verb,
            resource: resource.to_string(),
            scope: scope.to_string(),
        },
        other => CheckError::Api(api_message(other)),
    }
}

/// The apiserver's own message, without kube's debug dump of the Status.
fn api_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    }
}

fn in_namespace(ns: &str) -> String {
    if ns.is_empty() {
        " in all namespaces".into()
    } else {
        format!(" in namespace {ns}")
    }
}

/// The injection config the server uses: `--config` if given, else the deployed ConfigMap,
/// else (with a warning) the embedded default.
pub(super) async fn injection_config(
    client: &kube::Client,
    path: Option<&Path>,
    configuration: &MutatingWebhookConfiguration,
) -> Result<Config, CheckError> {
    if path.is_some() {
        return Config::load(path).map_err(|e| CheckError::Input(e.to_string()));
    }
    let from_cluster = match service_namespace(configuration) {
        Some(ns) => {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client.clone(), ns);
            match api.get_opt(CONFIG_MAP).await {
                Ok(Some(cm)) => cm
                    .data
                    .and_then(|d| d.get(CONFIG_MAP_KEY).cloned())
                    .map(|text| (format!("configmap {ns}/{CONFIG_MAP}"), text))
                    .ok_or_else(|| format!("configmap {ns}/{CONFIG_MAP} has no {CONFIG_MAP_KEY}")),
                Ok(None) => Err(format!("configmap {ns}/{CONFIG_MAP} does not exist")),
                Err(e) => Err(format!(
                    "cannot read configmap {ns}/{CONFIG_MAP}: {}",
                    api_message(e)
                )),
            }
        }
        None => Err("the webhooks name no service".into()),
    };
    match from_cluster {
        Ok((origin, text)) => {
            Config::from_yaml(&text, &origin).map_err(|e| CheckError::Input(e.to_string()))
        }
        Err(why) => {
            eprintln!("sidecar-injector: warning: {why}; using the embedded default config (pass --config to name one)");
            Config::embedded().map_err(|e| CheckError::Input(e.to_string()))
        }
    }
}

/// What to check, gathered: the objects and the namespaces they live in.
pub(super) struct Gathered {
    pub(super) objects: Vec<Found>,
    /// Namespaces declared in a manifest, by name.
    pub(super) declared: BTreeMap<String, Namespace>,
}

/// One object to check, and where it was found.
pub(super) struct Found {
    pub(super) namespace: String,
    pub(super) kind: &'static str,
    pub(super) doc: Value,
    /// Read from the cluster (not a manifest): what it says happened, not what would.
    pub(super) live: bool,
}

async fn live_objects(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: Option<&str>,
) -> Result<Vec<Found>, CheckError> {
    let (kind, ar) = resource(kind).ok_or_else(|| {
        CheckError::Usage(format!(
            "cannot check {kind:?}: it takes pod, deployment, statefulset, daemonset, replicaset, job, cronjob or namespace"
        ))
    })?;
    let resource_name = match ar.group.as_str() {
        "" => ar.plural.clone(),
        group => format!("{}.{group}", ar.plural),
    };
    // An empty namespace: every namespace (`check -A`).
    let api: kube::Api<kube::api::DynamicObject> = if namespace.is_empty() {
        kube::Api::all_with(client.clone(), &ar)
    } else {
        kube::Api::namespaced_with(client.clone(), namespace, &ar)
    };
    let items = match name {
        Some(name) => match api.get_opt(name).await {
            Ok(Some(o)) => vec![o],
            Ok(None) => {
                return Err(CheckError::NotFound(format!(
                    "{}/{name} not found in namespace {namespace}",
                    kind.to_lowercase()
                )))
            }
            Err(e) => {
                return Err(api_error(
                    e,
                    "get",
                    &resource_name,
                    &in_namespace(namespace),
                ))
            }
        },
        None => api
            .list(&Default::default())
            .await
            .map_err(|e| api_error(e, "list", &resource_name, &in_namespace(namespace)))?
            .items
            .into_iter()
            // A workload run by another (a Deployment's ReplicaSets, a CronJob's Jobs) is
            // covered by its owner's line; every pod gets its own.
            .filter(|o| {
                kind == "Pod"
                    || !o
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.controller == Some(true))
            })
            .collect(),
    };
    Ok(items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .map(|doc| {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(namespace)
                .to_string();
            Found {
                namespace: ns,
                kind,
                doc,
                live: true,
            }
        })
        .collect())
}

pub(super) fn from_manifest(text: &str, default_ns: &str) -> Result<Gathered, CheckError> {
    let docs =
        crate::text::yaml::read_documents(text).map_err(|e| CheckError::Input(e.to_string()))?;
    let mut gathered = Gathered {
        objects: Vec::new(),
        declared: BTreeMap::new(),
    };
    let mut stack: Vec<Value> = docs.into_iter().rev().collect();
    while let Some(doc) = stack.pop() {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind == "List" {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            stack.extend(items.into_iter().rev());
            continue;
        }
        if kind == "Namespace" {
            if let Some(name) = doc.pointer("/metadata/name").and_then(Value::as_str) {
                let mut ns = Namespace::named(name);
                if let Some(labels) = doc.pointer("/metadata/labels").and_then(Value::as_object) {
                    for (k, v) in labels {
                        ns.labels
                            .insert(k.clone(), v.as_str().unwrap_or_default().into());
                    }
                }
                gathered.declared.insert(name.into(), ns);
            }
            continue;
        }
        let Some((kind, _)) = resource(kind).filter(|(k, _)| *k == kind) else {
            continue;
        };
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_ns)
            .to_string();
        gathered.objects.push(Found {
            namespace: ns,
            kind,
            doc,
            live: false,
        });
    }
    Ok(gathered)
}

pub(super) async fn gather(
    client: &kube::Client,
    args: &CheckArgs,
    default_ns: &str,
) -> Result<Gathered, CheckError> {
    if let Some(file) = &args.file {
        let text = match file.as_os_str().to_str() {
            Some("-") => std::io::read_to_string(std::io::stdin()),
            _ => std::fs::read_to_string(file),
        }
        .map_err(|e| CheckError::Input(format!("cannot read {}: {e}", file.display())))?;
        return from_manifest(&text, default_ns);
    }
    let mut objects = Vec::new();
    let whole = |ns: String| NAMESPACE_KINDS.map(|k| (ns.clone(), k.to_string(), None));
    let mut wanted: Vec<(String, String, Option<String>)> = Vec::new();
    if args.all_namespaces {
        if !args.targets.is_empty() {
            return Err(CheckError::Usage(
                "-A checks every pod and workload: it takes no KIND/NAME".into(),
            ));
        }
        wanted.extend(whole(String::new()));
    } else if args.targets.is_empty() {
        wanted.extend(whole(default_ns.into()));
    }
    for target in &args.targets {
        let (kind, name) = target
            .split_once('/')
            .filter(|(k, n)| !k.is_empty() && !n.is_empty())
            .ok_or_else(|| {
                CheckError::Usage(format!(
                    "{target:?} is not KIND/NAME (e.g. pod/web, deployment/api, namespace/demo)"
                ))
            })?;
        if matches!(
            kind.to_ascii_lowercase().as_str(),
            "namespace" | "namespaces" | "ns"
        ) {
            wanted.extend(whole(name.into()));
        } else {
            wanted.push((default_ns.into(), kind.into(), Some(name.into())));
        }
    }
    for (ns, kind, name) in wanted {
        objects.extend(live_objects(client, &ns, &kind, name.as_deref()).await?);
    }
    Ok(Gathered {
        objects,
        declared: BTreeMap::new(),
    })
}

pub(super) async fn namespace(
    client: &kube::Client,
    name: &str,
) -> Result<Option<Namespace>, CheckError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(e, "get", "namespaces", " (cluster-wide)"))?;
    Ok(found.map(|ns| Namespace {
        name: name.into(),
        labels: ns.metadata.labels.unwrap_or_default(),
    }))
}
