//! deploy/ installed as the README tells users (`kubectl apply -k deploy`, the image built
//! from the Dockerfile): the suites that run the webhook as pods (tests/in_cluster.rs,
//! tests/node.rs) share how they install it, wait for it and change its config.

use std::time::Duration;

use serde_json::{json, Value};

use super::cluster::{wait_for, Cluster};
use super::root;

/// deploy/'s namespace and Deployment.
pub const NS: &str = "sidecar-injector";
pub const DEPLOYMENT: &str = "deployment/sidecar-injector";
const CONFIG_MAP: &str = "configmap/sidecar-injector-config";

/// Applies deploy/ unchanged (a no-op when it already is) and waits for its replicas.
pub fn install(c: &Cluster) {
    c.ok(&["apply", "-k", root().join("deploy").to_str().unwrap()]);
    settled(c);
}

/// Waits for the rollout to finish and for exactly two Ready replicas (none terminating).
pub fn settled(c: &Cluster) {
    c.ok(&["-n", NS, "rollout", "status", DEPLOYMENT, "--timeout=120s"]);
    wait_for(
        "two Ready replicas and no other",
        Duration::from_secs(90),
        || {
            let pods = replicas(c);
            pods.len() == 2 && pods.iter().all(ready)
        },
    );
}

/// The webhook's pods, terminating ones included.
pub fn replicas(c: &Cluster) -> Vec<Value> {
    let pods = c.get(NS, "pods");
    pods["items"].as_array().unwrap().clone()
}

pub fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

pub fn name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap().to_string()
}

/// deploy/'s config as the ConfigMap holds it now.
pub fn config(c: &Cluster) -> String {
    let cm = c.get(NS, CONFIG_MAP);
    cm["data"]["config.yaml"].as_str().unwrap().to_string()
}

/// Replaces the ConfigMap's config with `config` and restarts the replicas on it (a
/// restart, not the file watch: the kubelet refreshes a mounted ConfigMap only within its
/// sync period, up to a minute).
pub fn set_config(c: &Cluster, config: &str) {
    let mut cm = c.get(NS, CONFIG_MAP);
    cm["data"]["config.yaml"] = json!(config);
    let out = c.kubectl(&["replace", "-f", "-"], Some(cm.to_string().as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["-n", NS, "rollout", "restart", DEPLOYMENT]);
    settled(c);
}

/// Replaces `from` with `to` in the config and restarts the replicas on it.
pub fn edit_config(c: &Cluster, from: &str, to: &str) {
    let config = config(c);
    assert!(config.contains(from), "{from:?} is not in the config");
    set_config(c, &config.replace(from, to));
}
