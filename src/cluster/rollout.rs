//! `rollout --stale`: restarts the workloads whose pods run sidecars from another version of
//! a profile than the serving replicas inject now, one at a time, each until available.
//! The current version is what the replicas report (their profile info metric), not the
//! ConfigMap, which reaches them a minute or so after it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use crate::engine::inject::{StatusNames, STATUS_KEY};
use crate::metrics::PROFILE_INFO;

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// Restart the workloads of pods whose sidecars are stale (the only mode so far).
    #[arg(long, required = true)]
    pub stale: bool,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Say what would be restarted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long each workload may take to become available (default: a Deployment's
    /// progressDeadlineSeconds, else 10m).
    #[arg(long, value_parser = crate::text::duration::duration)]
    pub timeout: Option<Duration>,
    /// The namespace the injector's replicas run in.
    #[arg(long, default_value = "sidecar-injector")]
    pub injector_namespace: String,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// A kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the pod's service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Why `rollout` could not finish (exit 2; a workload that did not become available is 1).
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no cluster to ask: {0}")]
    NoCluster(String),
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("no Ready replica of the injector in namespace {0} reports its profiles ({PROFILE_INFO}): is it installed and this version?")]
    NoReplica(String),
    #[error("the replicas serve different configs ({0}): a config change is still reaching them, try again in a minute")]
    Disagree(String),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RolloutError {
    let what = what.into();
    |source| RolloutError::Api { what, source }
}

/// The `profile -> digest` pairs of a replica's /metrics text.
pub fn served_digests(metrics: &str) -> BTreeMap<String, String> {
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_string())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{PROFILE_INFO}{{")) && l.ends_with(" 1"))
        .filter_map(|l| Some((label(l, "profile")?, label(l, "digest")?)))
        .collect()
}

/// A workload that restarts its pods, by API path pieces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    fn resource(&self) -> kube::api::ApiResource {
        let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", self.kind);
        kube::api::ApiResource::from_gvk(&gvk)
    }

    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.to_lowercase(),
            self.namespace,
            self.name
        )
    }
}

/// Where a workload is in its rollout, from its status.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Available,
    Waiting,
    Failed(String),
}

/// Whether the rollout `kubectl rollout status` would wait for is done: every replica
/// updated, the old ones gone, all available.
pub fn progress(kind: &str, w: &Value) -> Progress {
    let n = |path: &str| w.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    if n("/status/observedGeneration") < n("/metadata/generation") {
        return Progress::Waiting;
    }
    let done = match kind {
        "Deployment" => {
            let stuck = w["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
            if stuck {
                return Progress::Failed("its progress deadline was exceeded".into());
            }
            let want = w
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            n("/status/updatedReplicas") == want
                && n("/status/replicas") == want
                && n("/status/availableReplicas") == want
        }
        "StatefulSet" => {
            let want = n("/spec/replicas");
            n("/status/updatedReplicas") == want
                && n("/status/readyReplicas") == want
                && w["status"]["currentRevision"] == w["status"]["updateRevision"]
        }
        _ => {
            let want = n("/status/desiredNumberScheduled");
            n("/status/updatedNumberScheduled") == want && n("/status/numberAvailable") == want
        }
    };
    if done {
        Progress::Available
    } else {
        Progress::Waiting
    }
}

/// What to do about one stale pod.
#[derive(Clone)]
enum Owner {
    Restart(Workload),
    /// Not restarted, with why.
    Leave(String),
}

pub async fn run(args: &RolloutArgs) -> Result<bool, RolloutError> {
    let client =
        crate::cluster::client::connect(args.kubeconfig.as_deref(), args.context.as_deref())
            .await
            .map_err(RolloutError::NoCluster)?;
    let current = replicas_digests(&client, &args.injector_namespace).await?;
    let restart = stale_workloads(&client, args, &current).await?;
    if restart.is_empty() {
        println!("no workload runs stale sidecars");
    }
    for (w, pods) in &restart {
        if args.dry_run {
            println!("would restart {} ({pods} stale pods)", w.label());
            continue;
        }
        let started = Instant::now();
        match restart_and_wait(&client, w, args.timeout).await? {
            Ok(()) => println!(
                "restarted {} ({pods} stale pods): available in {:.1} s",
                w.label(),
                started.elapsed().as_secs_f64()
            ),
            Err(why) => {
                println!("stopped: {} did not become available: {why}", w.label());
                let rest: Vec<String> = restart
                    .keys()
                    .filter(|o| *o > w)
                    .map(Workload::label)
                    .collect();
                if !rest.is_empty() {
                    println!("not restarted: {}", rest.join(", "));
                }
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The workloads whose pods run outdated profiles, with how many such pods each; the pods
/// no workload can restart are listed and left alone.
async fn stale_workloads(
    client: &kube::Client,
    args: &RolloutArgs,
    current: &BTreeMap<String, String>,
) -> Result<BTreeMap<Workload, usize>, RolloutError> {
    let pods: kube::Api<Pod> = if args.all_namespaces {
        kube::Api::all(client.clone())
    } else {
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        kube::Api::namespaced(client.clone(), &namespace)
    };
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(api("list pods"))?;
    let mut restart: BTreeMap<Workload, usize> = BTreeMap::new();
    let mut owners: BTreeMap<String, Owner> = BTreeMap::new();
    // Terminating pods are on their way out, whatever they run.
    for pod in pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let outdated = outdated_profiles(pod, current);
        if outdated.is_empty() {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        // A Deployment's pods share a ReplicaSet: read it once, by the controller's uid.
        let found = match controller {
            Some(r) => match owners.get(&r.uid) {
                Some(known) => known.clone(),
                None => {
                    let found = owner(client, &ns, controller).await?;
                    owners.insert(r.uid.clone(), found.clone());
                    found
                }
            },
            None => owner(client, &ns, None).await?,
        };
        match found {
            Owner::Restart(w) => *restart.entry(w).or_default() += 1,
            Owner::Leave(why) => println!(
                "left pod/{ns}/{name} (stale: {}): {why}",
                outdated.join(",")
            ),
        }
    }
    Ok(restart)
}

/// The profiles of a pod's status whose digest is not the one served now.
fn outdated_profiles(pod: &Pod, current: &BTreeMap<String, String>) -> Vec<String> {
    let Some(status) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_KEY))
    else {
        return Vec::new();
    };
    let status = StatusNames::parse(status);
    crate::engine::inject::outdated(&status.digests, |p| current.get(p).map(String::as_str))
        .into_iter()
        .map(|(profile, _)| profile.to_string())
        .collect()
}

/// The digests every Ready replica serves, which must agree.
async fn replicas_digests(
    client: &kube::Client,
    ns: &str,
) -> Result<BTreeMap<String, String>, RolloutError> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=sidecar-injector"))
        .await
        .map_err(api(format!("list the injector's pods in {ns}")))?;
    let mut seen: Vec<BTreeMap<String, String>> = Vec::new();
    for pod in &listed.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let Some(name) = pod.metadata.name.as_deref().filter(|_| ready) else {
            continue;
        };
        // Through the apiserver's proxy to the replica's metrics port.
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:9090/proxy/metrics");
        let request = http::Request::get(&path).body(Vec::new());
        let Ok(request) = request else { continue };
        let text = client
            .request_text(request)
            .await
            .map_err(api(format!("read pod/{name}'s metrics")))?;
        let digests = served_digests(&text);
        if !digests.is_empty() && !seen.contains(&digests) {
            seen.push(digests);
        }
    }
    match seen.len() {
        0 => Err(RolloutError::NoReplica(ns.into())),
        1 => Ok(seen.remove(0)),
        _ => Err(RolloutError::Disagree(
            seen.iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(" vs "),
        )),
    }
}

/// The workload that restarts `pod`: its controller, or a ReplicaSet's Deployment.
async fn owner(
    client: &kube::Client,
    ns: &str,
    controller: Option<&OwnerReference>,
) -> Result<Owner, RolloutError> {
    let Some(r) = controller else {
        return Ok(Owner::Leave(
            "no workload owns it: delete and recreate it yourself".into(),
        ));
    };
    let workload = |kind: &'static str, name: &str| {
        Owner::Restart(Workload {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    };
    Ok(match r.kind.as_str() {
        "StatefulSet" => workload("StatefulSet", &r.name),
        "DaemonSet" => workload("DaemonSet", &r.name),
        "ReplicaSet" => {
            let sets: kube::Api<k8s_openapi::api::apps::v1::ReplicaSet> =
                kube::Api::namespaced(client.clone(), ns);
            let set = sets
                .get_opt(&r.name)
                .await
                .map_err(api(format!("get replicaset/{ns}/{}", r.name)))?;
            let Some(set) = set else {
                return Ok(Owner::Leave(format!(
                    "its replicaset/{ns}/{} is gone: the pod is going too",
                    r.name
                )));
            };
            match set
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            {
                Some(d) => workload("Deployment", &d.name),
                None => Owner::Leave(format!(
                    "owned by replicaset/{ns}/{}, which no Deployment runs: delete the pod",
                    r.name
                )),
            }
        }
        "Job" => Owner::Leave(format!(
            "owned by job/{ns}/{}: a Job's pods are not restarted; its next run gets the current sidecars",
            r.name
        )),
        other => Owner::Leave(format!(
            "owned by {}/{ns}/{}, which this command does not restart",
            other.to_lowercase(),
            r.name
        )),
    })
}

/// The patch `kubectl rollout restart` makes, then waits for the workload to be available:
/// `Err` with why it was not within its deadline.
async fn restart_and_wait(
    client: &kube::Client,
    w: &Workload,
    timeout: Option<Duration>,
) -> Result<Result<(), String>, RolloutError> {
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(client.clone(), &w.namespace, &w.resource());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": now}}}}});
    let patched = api
        .patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(w, "patch"))?;
    let doc = serde_json::to_value(&patched).unwrap_or_default();
    let deadline = timeout.unwrap_or_else(|| {
        Duration::from_secs(
            doc.pointer("/spec/progressDeadlineSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(600),
        )
    });
    let started = Instant::now();
    loop {
        let now = api.get(&w.name).await.map_err(api_err(w, "get"))?;
        match progress(w.kind, &serde_json::to_value(&now).unwrap_or_default()) {
            Progress::Available => return Ok(Ok(())),
            Progress::Failed(why) => return Ok(Err(why)),
            Progress::Waiting if started.elapsed() >= deadline => {
                return Ok(Err(format!("not available after {} s", deadline.as_secs())))
            }
            Progress::Waiting => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn api_err(w: &Workload, verb: &str) -> impl FnOnce(kube::Error) -> RolloutError {
    api(format!("{verb} {}", w.label()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_digests_are_read_from_the_info_metric() {
        let text = format!(
            "# HELP x\n{PROFILE_INFO}{{profile=\"default\",digest=\"0123456789ab\"}} 1\n\
             {PROFILE_INFO}{{profile=\"logging\",digest=\"ba9876543210\"}} 1\nother 1\n"
        );
        let d = served_digests(&text);
        assert_eq!(d["default"], "0123456789ab");
        assert_eq!(d["logging"], "ba9876543210");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn the_metric_the_server_exports_is_the_one_read() {
        let metrics = crate::metrics::Metrics::new();
        let config = crate::engine::config::Config::embedded().unwrap();
        metrics.serving_profiles(&config);
        let d = served_digests(&metrics.encode());
        assert_eq!(d.len(), config.profiles.len());
        assert_eq!(d["default"], config.profiles["default"].digest);
    }

    #[test]
    fn a_deployment_is_available_once_every_replica_is_new_and_available() {
        let d = |updated: i64, replicas: i64, available: i64| {
            json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
                "status": {"observedGeneration": 2, "updatedReplicas": updated,
                    "replicas": replicas, "availableReplicas": available}})
        };
        assert_eq!(progress("Deployment", &d(2, 2, 2)), Progress::Available);
        assert_eq!(progress("Deployment", &d(1, 3, 2)), Progress::Waiting);
        assert_eq!(progress("Deployment", &d(2, 3, 2)), Progress::Waiting);
        let mut stale = d(2, 2, 2);
        stale["status"]["observedGeneration"] = json!(1);
        assert_eq!(progress("Deployment", &stale), Progress::Waiting);
        let mut stuck = d(1, 3, 2);
        stuck["status"]["conditions"] =
            json!([{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(
            progress("Deployment", &stuck),
            Progress::Failed(_)
        ));
    }
}
