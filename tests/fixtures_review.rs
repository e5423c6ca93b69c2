//! Realistic AdmissionReviews through `review` (the binary), checked against the SPEC and
//! against kube-apiserver's own patch library and the strict Pod schema.

mod common;

use common::*;
use serde_json::Value;

/// (fixture, `--policy`, expected reason, expected `allowed`)
const CASES: &[(&str, &str, &str, bool)] = &[
    ("replicaset-pod.json", "disabled", "opted-in", true),
    (
        "replicaset-pod-native-logging.json",
        "disabled",
        "opted-in",
        true,
    ),
    ("classic-shared-volume.json", "disabled", "opted-in", true),
    ("classic-share-process.json", "disabled", "opted-in", true),
    (
        "classic-original-clash.json",
        "disabled",
        "name-clash",
        false,
    ),
    (
        "bare-pod-namespace-enabled.json",
        "enabled",
        "namespace-enabled",
        true,
    ),
    (
        "bare-pod-not-opted-in.json",
        "disabled",
        "not-opted-in",
        true,
    ),
    ("connect-exec.json", "enabled", "not-a-pod-create", true),
    ("pod-update.json", "enabled", "not-a-pod-create", true),
    ("dry-run-create.json", "disabled", "opted-in", true),
];

fn review_file(name: &str, policy: &str) -> (Value, Value) {
    let path = fixture(&format!("reviews/{name}"));
    let request: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let out = run(
        &["review", "-f", path.to_str().unwrap(), "--policy", policy],
        b"",
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (request, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn every_fixture_gets_the_expected_answer_and_a_patch_the_apiserver_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut to_validate = Vec::new();
    for (name, policy, reason, allowed) in CASES {
        let (request, response) = review_file(name, policy);
        let r = &response["response"];
        assert_eq!(r["uid"], request["request"]["uid"], "{name}");
        assert_eq!(r["auditAnnotations"]["reason"], *reason, "{name}");
        assert_eq!(r["allowed"], *allowed, "{name}");
        assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(response["kind"], "AdmissionReview");
        let Some(patch) = patch_of(&response) else {
            assert!(
                r.get("patchType").is_none(),
                "{name}: patchType without patch"
            );
            continue;
        };
        let object = &request["request"]["object"];
        let by_apiserver = apply_jsonpatch(object, &patch)
            .unwrap_or_else(|e| panic!("{name}: apiserver's json-patch rejects the patch: {e}"));
        let ops: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut by_crate = object.clone();
        json_patch::patch(&mut by_crate, &ops).unwrap();
        assert_eq!(by_apiserver, by_crate, "{name}: both patch libraries agree");
        for op in ops.0 {
            assert!(
                matches!(op, json_patch::PatchOperation::Add(_)),
                "{name}: only adds"
            );
        }

        // Idempotent: the patched pod, reviewed again, gets no patch.
        let again = rereview(&request, &by_apiserver);
        let out = run(
            &["review", "--policy", policy],
            &serde_json::to_vec(&again).unwrap(),
        );
        let again: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            patch_of(&again).is_none(),
            "{name}: second review patched again"
        );
        assert_eq!(
            again["response"]["auditAnnotations"]["reason"],
            "already-injected"
        );

        let file = dir.path().join(name);
        std::fs::write(
            &file,
            serde_json::to_vec(&named_for_validation(by_apiserver)).unwrap(),
        )
        .unwrap();
        to_validate.push(file);
    }
    assert_eq!(to_validate.len(), 6);
    if let Err(e) = validate_strict(&to_validate) {
        panic!("patched pods fail strict validation:\n{e}");
    }
}

#[test]
fn classic_examples_have_the_documented_shape() {
    let (_, response) = review_file("classic-shared-volume.json", "disabled");
    let (request, _) = review_file("classic-shared-volume.json", "disabled");
    let patched =
        apply_jsonpatch(&request["request"]["object"], &patch_of(&response).unwrap()).unwrap();
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/usr/share/nginx/html"
    );
    assert_eq!(
        patched["spec"]["containers"][1]["volumeMounts"][0]["mountPath"],
        "/pod-data"
    );

    let (request, response) = review_file("classic-share-process.json", "disabled");
    let patched =
        apply_jsonpatch(&request["request"]["object"], &patch_of(&response).unwrap()).unwrap();
    assert_eq!(patched["spec"]["shareProcessNamespace"], true);
    let sc = &patched["spec"]["containers"][1]["securityContext"];
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["SYS_PTRACE", "KILL"])
    );
    assert_eq!(sc["runAsUser"], 0);
    assert_ne!(sc["privileged"], true);
    assert_eq!(
        response["response"]["warnings"].as_array().unwrap().len(),
        1
    );

    let (request, response) = review_file("replicaset-pod-native-logging.json", "disabled");
    let patched =
        apply_jsonpatch(&request["request"]["object"], &patch_of(&response).unwrap()).unwrap();
    let init: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["migrate", "sidecar", "log-tailer"]);
    assert_eq!(
        patched["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
}
