//! Property tests: for generated pods, any patch applies, keeps every original field, adds the
//! sidecar exactly once, yields a valid typed Pod, and a second review adds nothing.

#[path = "common/invariants.rs"]
#[allow(dead_code)]
mod invariants;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sidecar_injector::Config;
use sidecar_injector::Policy;
use sidecar_injector::{review, Outcome};

/// `orig` survives inside `new`: same scalars, objects keep their keys, arrays keep their
/// elements in order (and may only grow at the end).
fn preserved(orig: &Value, new: &Value) -> bool {
    match (orig, new) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| preserved(v, w))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() <= b.len() && a.iter().zip(b).all(|(v, w)| preserved(v, w))
        }
        (Value::Null, _) => true, // a null field may be filled in (add replaces it)
        _ => orig == new,
    }
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn container(name: String, mount: Option<Vec<(String, String)>>) -> Value {
    let mut c = json!({"name": name, "image": "registry.example/app:1"});
    if let Some(m) = mount {
        c["volumeMounts"] = Value::Array(
            m.into_iter()
                .map(|(n, p)| json!({"name": n, "mountPath": p}))
                .collect(),
        );
    }
    c
}

prop_compose! {
    fn arb_pod()(
        names in prop::collection::btree_set(prop_oneof![
            Just("app".to_string()), Just("web".to_string()), Just("sidecar".to_string()),
            "[a-z]{1,8}".prop_map(|s| format!("c-{s}")),
        ], 1..4),
        mounts in prop::collection::vec(maybe(prop::collection::vec(
            ("[a-z]{1,6}", prop_oneof![Just("/pod-data".to_string()), Just("/app".to_string()), "/[a-z]{1,6}"]), 0..3)), 4),
        init in maybe(prop::collection::vec("[a-z]{1,6}".prop_map(|s| format!("init-{s}")), 0..3)),
        volumes in maybe(prop::collection::vec(prop_oneof![Just("shared-data".to_string()), "[a-z]{1,6}"], 0..3)),
        opt in prop_oneof![Just(None), Just(Some(("annotation", "true"))), Just(Some(("label", "TRUE"))),
                           Just(Some(("annotation", "false"))), Just(Some(("label", "bogus")))],
        profiles in maybe(prop_oneof![Just("default"), Just("logging"), Just("logging, default"), Just("default,,x"), Just("nope")]),
        share in maybe(prop_oneof![Just("true"), Just("false"), Just("x")]),
        native in maybe(prop_oneof![Just("true"), Just("False")]),
        mount_path in maybe(prop_oneof![Just("/app"), Just("/pod-data"), Just("rel"), Just("/a/../b")]),
        spn in maybe(any::<bool>()),
        has_annotations in any::<bool>(),
        generate_name in any::<bool>(),
        pod_user in maybe(prop_oneof![Just(0i64), Just(1001i64), Just(65534i64)]),
        non_root in maybe(any::<bool>()),
        container_users in prop::collection::vec(maybe(prop_oneof![Just(0i64), Just(1001i64)]), 4),
        token in any::<bool>(),
        automount in maybe(any::<bool>()),
    ) -> Value {
        let mut containers: Vec<Value> = names.into_iter().zip(mounts).map(|(n, m)| container(n, m)).collect();
        // Who the app runs as: pod-level and per-container settings, known or not.
        for (c, user) in containers.iter_mut().zip(container_users) {
            if let Some(u) = user { c["securityContext"] = json!({"runAsUser": u}); }
        }
        let mut annotations = Map::new();
        let mut labels = Map::new();
        if let Some((where_, v)) = opt {
            let target = if where_ == "annotation" { &mut annotations } else { &mut labels };
            target.insert("sidecar-injector.io/inject".into(), json!(v));
        }
        for (k, v) in [("profiles", profiles), ("share-process-namespace", share),
                       ("native-sidecar", native), ("app-mount-path", mount_path)] {
            if let Some(v) = v { annotations.insert(format!("sidecar-injector.io/{k}"), json!(v)); }
        }
        let mut meta = json!({"namespace": "ns"});
        meta[if generate_name { "generateName" } else { "name" }] = json!("p-");
        if has_annotations || !annotations.is_empty() { meta["annotations"] = Value::Object(annotations); }
        if !labels.is_empty() { meta["labels"] = Value::Object(labels); }
        let mut spec = json!({"containers": containers});
        if let Some(i) = init {
            spec["initContainers"] = Value::Array(i.into_iter().map(|n| container(n, None)).collect());
        }
        if let Some(v) = volumes {
            let mut seen = std::collections::BTreeSet::new();
            spec["volumes"] = Value::Array(v.into_iter().filter(|n| seen.insert(n.clone()))
                .map(|n| json!({"name": n, "emptyDir": {}})).collect());
        }
        if let Some(b) = spn { spec["shareProcessNamespace"] = json!(b); }
        // As kube-apiserver's ServiceAccount plugin leaves a pod that mounts the API token.
        if token && automount != Some(false) {
            let volume = json!({"name": TOKEN_VOLUME, "projected": {"sources": []}});
            match spec["volumes"].as_array_mut() {
                Some(v) => v.push(volume),
                None => spec["volumes"] = json!([volume]),
            }
            service_account_plugin(&mut spec);
        }
        if let Some(a) = automount { spec["automountServiceAccountToken"] = json!(a); }
        let mut security = Map::new();
        if let Some(u) = pod_user { security.insert("runAsUser".into(), json!(u)); }
        if let Some(n) = non_root { security.insert("runAsNonRoot".into(), json!(n)); }
        if !security.is_empty() { spec["securityContext"] = Value::Object(security); }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    }
}

const TOKEN_VOLUME: &str = "kube-api-access-k2x7p";
const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the ServiceAccount plugin does to a pod spec that has its token volume: the token
/// mount into every container without a mount at its path. Whether it changed anything.
fn service_account_plugin(spec: &mut Value) -> bool {
    let mut changed = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounts = c["volumeMounts"].as_array().into_iter().flatten();
            if !mounts.clone().any(|m| m["mountPath"] == TOKEN_PATH) {
                let mut mounts: Vec<Value> = mounts.cloned().collect();
                mounts
                    .push(json!({"name": TOKEN_VOLUME, "readOnly": true, "mountPath": TOKEN_PATH}));
                c["volumeMounts"] = Value::Array(mounts);
                changed = true;
            }
        }
    }
    changed
}

fn wrap(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "prop", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "object": pod}
    }))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn patches_apply_preserve_and_are_idempotent(
        pod in arb_pod(),
        enabled in any::<bool>(),
        token_option in any::<bool>(),
    ) {
        let config = if token_option {
            Config::embedded().unwrap()
        } else {
            let yaml = sidecar_injector::DEFAULT_CONFIG_YAML
                .replace("mountServiceAccountToken: true", "mountServiceAccountToken: false");
            Config::from_yaml(&yaml, "mountServiceAccountToken: false").unwrap()
        };
        prop_assert_eq!(config.mount_service_account_token, token_option);
        let policy = if enabled { Policy::Enabled } else { Policy::Disabled };
        let answer = review(&wrap(&pod), policy, &config).unwrap();
        let response: Value = serde_json::from_slice(&answer.body).unwrap();
        prop_assert_eq!(&response["response"]["uid"], "prop");
        let Some(patch) = response["response"].get("patch").and_then(Value::as_str) else {
            prop_assert!(answer.outcome != Outcome::Injected);
            prop_assert!(response["response"].get("patchType").is_none());
            return Ok(());
        };
        prop_assert_eq!(answer.outcome, Outcome::Injected);
        let patch = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &ops).unwrap();
        prop_assert!(serde_json::from_value::<Pod>(patched.clone()).is_ok());
        prop_assert!(preserved(&pod, &patched), "original fields changed:\n{}\n{}", pod, patched);
        invariants::assert_kubelet_starts_injected(&patched);
        // With the option, the plugin's second round (which would call the webhook again)
        // finds nothing to do in a pod where it mounted the token.
        let plugin_mounted = pod["spec"]["volumes"].as_array().into_iter().flatten()
            .any(|v| v["name"] == TOKEN_VOLUME);
        if token_option && plugin_mounted {
            prop_assert!(!service_account_plugin(&mut patched["spec"].clone()), "{}", patched);
        }

        let spec = &patched["spec"];
        let all = spec["containers"].as_array().unwrap().iter()
            .chain(spec["initContainers"].as_array().into_iter().flatten());
        let mut names: Vec<&str> = all.map(|c| c["name"].as_str().unwrap()).collect();
        let count = names.iter().filter(|n| **n == "sidecar" || **n == "log-tailer").count();
        prop_assert!(count >= 1);
        names.sort();
        let before = names.len();
        names.dedup();
        prop_assert_eq!(before, names.len(), "container names stay unique");

        let again = review(&wrap(&patched), policy, &config).unwrap();
        let again: Value = serde_json::from_slice(&again.body).unwrap();
        prop_assert!(again["response"].get("patch").is_none());
        prop_assert_eq!(&again["response"]["auditAnnotations"]["reason"], "already-injected");
    }

    /// The lean view (the hot path) against the full `k8s_openapi` Pod (the reference): it
    /// accepts every pod the reference accepts and reads the same names.
    #[test]
    fn lean_view_agrees_with_the_typed_pod(pod in arb_pod()) {
        let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
        let text = serde_json::to_string(&pod).unwrap();
        let lean = sidecar_injector::PodView::parse(&text).unwrap();
        let spec = lean.spec.as_ref().unwrap();
        let typed_spec = typed.spec.as_ref().unwrap();
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_ref()).collect();
        let typed_names: Vec<&str> = typed_spec.containers.iter().map(|c| c.name.as_str()).collect();
        prop_assert_eq!(names, typed_names);
        prop_assert_eq!(spec.volumes.as_ref().map(Vec::len), typed_spec.volumes.as_ref().map(Vec::len));
        prop_assert_eq!(spec.share_process_namespace, typed_spec.share_process_namespace);
        prop_assert_eq!(lean.display_name(), typed.metadata.name.as_deref().or(typed.metadata.generate_name.as_deref()));
        let ann = typed.metadata.annotations.unwrap_or_default();
        for (k, v) in &ann {
            prop_assert_eq!(lean.annotations().and_then(|a| a.get(k)), Some(v.as_str()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let config = Config::embedded().unwrap();
        let _ = review(&body, Policy::Enabled, &config);
    }
}
