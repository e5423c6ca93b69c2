//! The engine's answer for a pod, as the apiserver would get it from this configuration's
//! webhook: through the same `judge` as the server, read typed.

use serde_json::{json, Value};

use crate::engine::admission::Outcome;
use crate::engine::config::Config;
use crate::engine::inject::{Decision, Policy};

/// The names in a pod's container lists.
fn container_names(pod: &Value) -> Vec<String> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

/// What `review` says about a CREATE of `pod`, and the containers its patch adds.
pub(super) struct Reviewed {
    pub(super) outcome: Outcome,
    pub(super) reason: String,
    pub(super) profiles: Vec<String>,
    pub(super) added: Vec<String>,
    pub(super) message: String,
}

pub(super) fn review(pod: &Value, namespace: &str, policy: Policy, config: &Config) -> Reviewed {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "sidecar-injector-check",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": pod,
        }
    });
    let body = body.to_string();
    let judged = match crate::engine::admission::judge(body.as_bytes(), policy, config) {
        Ok(judged) => judged,
        Err(e) => {
            return Reviewed {
                outcome: Outcome::Error,
                reason: e.reason().as_str().into(),
                profiles: Vec::new(),
                added: Vec::new(),
                message: e.to_string(),
            }
        }
    };
    let outcome = judged.outcome();
    let decision = judged.decision;
    let mut message = match &decision {
        Decision::Deny { message, .. } => message.clone(),
        _ => String::new(),
    };
    for warning in decision.warnings() {
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!("warning: {warning}"));
    }
    let reason = decision.reason().as_str().into();
    let (profiles, added) = match decision {
        Decision::Inject { injection, .. } => {
            let added = added_containers(pod, &injection.patch_json());
            (injection.profiles, added)
        }
        _ => (Vec::new(), Vec::new()),
    };
    Reviewed {
        outcome,
        reason,
        profiles,
        added,
        message,
    }
}

/// The containers a patch adds to the pod (any list), by name.
fn added_containers(pod: &Value, patch: &str) -> Vec<String> {
    let Ok(patch) = serde_json::from_str::<json_patch::Patch>(patch) else {
        return Vec::new();
    };
    let mut patched = pod.clone();
    if json_patch::patch(&mut patched, &patch).is_err() {
        return Vec::new();
    }
    let before = container_names(pod);
    container_names(&patched)
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect()
}
