//! The invariants every input must keep, shared by the fuzz targets (`fuzz/`) and the test
//! that replays their corpus (`tests/fuzz_corpus.rs`). Each function panics on a violation.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sidecar_injector::review;
use sidecar_injector::Config;
use sidecar_injector::Policy;

/// The embedded config, loaded once.
pub static CONFIG: std::sync::LazyLock<Config> =
    std::sync::LazyLock::new(|| Config::embedded().expect("embedded config"));

#[derive(Deserialize)]
struct Uid {
    request: UidOnly,
}

#[derive(Deserialize)]
struct UidOnly {
    uid: String,
}

/// `review`: no panic; an answer carries the request's uid and a patch that applies to the
/// request object and is idempotent.
pub fn check_review(data: &[u8], config: &Config) {
    for policy in [Policy::Enabled, Policy::Disabled] {
        let answer = match review(data, policy, config) {
            Ok(answer) => answer,
            Err(e) => {
                assert!(e.to_string().len() <= 1024, "a bounded error: {e}");
                continue;
            }
        };
        let response: Value = serde_json::from_slice(&answer.body).expect("response is JSON");
        let message = response["response"]["status"]["message"].as_str();
        assert!(
            message.unwrap_or("").len() <= 1024,
            "a bounded message: {message:?}"
        );
        let uid: Uid = serde_json::from_slice(data).expect("an answered body has a uid");
        assert_eq!(
            response["response"]["uid"],
            uid.request.uid.as_str(),
            "uid copied"
        );
        // serde (like Go) skips what a lone-surrogate escape (\ud800) in a field nobody
        // reads would mean; serde_json::Value refuses it: then only the uid can be compared.
        let Ok(request) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        let Some(patch) = response["response"].get("patch") else {
            assert!(response["response"].get("patchType").is_none());
            continue;
        };
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("patch is a string"))
            .expect("patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("patch is JSON");
        let mut object = request["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).expect("the patch applies to the request object");
        assert_kubelet_starts_injected(&object);
        let mut again = request.clone();
        again["request"]["object"] = object;
        let again = review(&serde_json::to_vec(&again).unwrap(), policy, config)
            .expect("the patched request is still answered");
        let again: Value = serde_json::from_slice(&again.body).unwrap();
        assert!(
            again["response"].get("patch").is_none(),
            "second review adds nothing"
        );
    }
}

/// The kubelet's rule for every container we injected: under `runAsNonRoot` (its own, else the
/// pod's) its user must be known to be non-zero, or the kubelet never starts it.
pub fn assert_kubelet_starts_injected(pod: &Value) {
    let Some(status) = pod["metadata"]["annotations"]["sidecar-injector.io/status"].as_str() else {
        return;
    };
    let status: Value = serde_json::from_str(status).expect("the status annotation is JSON");
    let spec = &pod["spec"];
    for (list, names) in [
        ("containers", "containers"),
        ("initContainers", "initContainers"),
    ] {
        for name in status[names].as_array().into_iter().flatten() {
            let container = spec[list]
                .as_array()
                .and_then(|l| l.iter().find(|c| &c["name"] == name))
                .expect("an injected container is in the pod");
            assert!(
                sidecar_injector::kubelet_would_start(container, &spec["securityContext"]),
                "the kubelet would refuse to start injected container {name}: runAsNonRoot without a \
                 non-zero runAsUser"
            );
        }
    }
}

/// `inject`: no panic; an output that is not denied injects to itself (idempotent).
pub fn check_inject(data: &[u8], config: &Config) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for policy in [Policy::Enabled, Policy::Disabled] {
        let Ok(report) = sidecar_injector::inject(text, policy, config) else {
            continue;
        };
        if !report.denials.is_empty() {
            continue;
        }
        let again = sidecar_injector::inject(&report.output, policy, config)
            .expect("our own output parses");
        assert!(again.denials.is_empty(), "{:?}", again.denials);
        assert_eq!(again.output, report.output, "inject is idempotent");
    }
}

/// The config: no panic; a config that loads answers a realistic pod with a patch that
/// applies.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_yaml(text, "fuzz") else {
        return;
    };
    let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
        "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{
        "metadata":{"name":"p","annotations":{"sidecar-injector.io/inject":"true"}},
        "spec":{"containers":[{"name":"app","image":"x","volumeMounts":[{"name":"v","mountPath":"/v"}]}],
        "volumes":[{"name":"v","emptyDir":{}}]}}}}"#;
    check_review(body, &config);
}
