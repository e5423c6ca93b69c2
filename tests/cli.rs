//! The offline commands as a user runs them: exit codes, stdout, stderr.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn yaml_docs(text: &str) -> Vec<Value> {
    sidecar_injector::read_documents(text).unwrap()
}

#[test]
fn review_reads_stdin_and_prints_one_json_line() {
    let body = std::fs::read(fixture("reviews/classic-shared-volume.json")).unwrap();
    let out = run(&["review"], &body);
    assert!(out.status.success());
    assert!(out.stdout.ends_with(b"}\n"));
    assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 1);
    let from_dash = run(&["review", "-f", "-"], &body);
    assert_eq!(out.stdout, from_dash.stdout);
}

#[test]
fn review_denial_exits_0_and_bad_request_exits_1_with_one_line() {
    let body = std::fs::read(fixture("reviews/classic-original-clash.json")).unwrap();
    let out = run(&["review"], &body);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["status"]["code"], 409);

    for bad in [
        &b"not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}}"#,
    ] {
        let out = run(&["review"], bad);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let out = run(&["review", "-f", "/nonexistent.json"], b"");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn review_policy_flag_matches_the_query() {
    let body = std::fs::read(fixture("reviews/bare-pod-not-opted-in.json")).unwrap();
    let out = run(&["review", "--policy", "enabled"], &body);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["response"]["auditAnnotations"]["reason"],
        "namespace-enabled"
    );
    let out = run(&["review", "--policy", "bogus"], &body);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn inject_uses_only_the_pod_template_metadata() {
    let out = run(
        &[
            "inject",
            "-f",
            fixture("manifests/deployment.yaml").to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs.len(), 1);
    let names: Vec<&str> = docs[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "sidecar", "log-tailer"]);
    assert_eq!(
        docs[0]["metadata"]["annotations"]["sidecar-injector.io/inject"],
        "false"
    );
}

#[test]
fn inject_warns_on_stderr_for_each_root_sidecar_it_writes() {
    let pod = |name: &str, security: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    \
             sidecar-injector.io/inject: \"true\"\n    \
             sidecar-injector.io/share-process-namespace: \"true\"\n    \
             sidecar-injector.io/profiles: default,logging\nspec:\n{security}  containers:\n  \
             - {{name: app, image: bitnami/nginx}}\n"
        )
    };
    let text = format!(
        "{}---\n{}",
        pod("debug", ""),
        pod("same-uid", "  securityContext: {runAsUser: 1001}\n")
    );
    let out = run(&["inject"], text.as_bytes());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let root_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("runs as root"))
        .collect();
    assert_eq!(
        root_lines,
        [
            "Pod/debug: warning: sidecar \"sidecar\" runs as root (uid 0) to see and signal the app's processes",
            "Pod/debug: warning: sidecar \"log-tailer\" runs as root (uid 0) to see and signal the app's processes",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("Pod/debug: warning: ") && stderr.contains("SYS_PTRACE"),
        "{stderr}"
    );
    assert!(!stderr.contains("Pod/same-uid"), "{stderr}");
}

#[test]
fn inject_says_where_a_key_on_the_workloads_own_metadata_must_go() {
    let manifest = br#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    sidecar-injector.io/inject: "true"
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: nginx:1.27}]
"#;
    let out = run(&["inject", "-f", "-"], manifest);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "Deployment/web: not-opted-in",
            "Deployment/web: hint: annotation sidecar-injector.io/inject on the Deployment's own metadata: move it to spec.template.metadata.annotations",
        ],
        "{stderr}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "needs the test tools: make test-deps, then --features tools"
)]
fn inject_handles_every_workload_kind_and_says_why_not() {
    let out = run(
        &[
            "inject",
            "-f",
            fixture("manifests/mixed.yaml").to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..2],
        ["StatefulSet/db: not-opted-in", "Job/once: opted-out"],
        "{stderr}"
    );
    // The DaemonSet shares its process namespace with an app of unknown uid: root sidecar.
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(lines[2].starts_with("DaemonSet/agent: warning: ") && lines[2].contains("SYS_PTRACE"));
    assert_eq!(
        lines[3],
        "DaemonSet/agent: warning: sidecar \"sidecar\" runs as root (uid 0) to see and signal the app's processes"
    );
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Service", "CronJob", "StatefulSet", "Job", "DaemonSet"]
    );
    let original = yaml_docs(&std::fs::read_to_string(fixture("manifests/mixed.yaml")).unwrap());
    assert_eq!(docs[0], original[0], "other kinds pass through unchanged");
    assert_eq!(docs[2], original[2], "not opted in: unchanged");
    let cron = &docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(cron["initContainers"][0]["restartPolicy"], "Always");
    let ds = &docs[4]["spec"]["template"]["spec"];
    assert_eq!(ds["shareProcessNamespace"], true);

    // With --policy enabled the StatefulSet is injected too; the opted-out Job still is not.
    let out = run(
        &[
            "inject",
            "--policy",
            "enabled",
            "-f",
            fixture("manifests/mixed.yaml").to_str().unwrap(),
        ],
        b"",
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr
            .lines()
            .filter(|l| !l.contains(": warning: "))
            .collect::<Vec<_>>(),
        ["Job/once: opted-out"],
        "{stderr}"
    );

    // The output validates strictly, and injecting it again changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let f = dir.path().join(format!("{i}.json"));
        std::fs::write(&f, serde_json::to_vec(doc).unwrap()).unwrap();
        files.push(f);
    }
    validate_strict(&files).unwrap();
    let first = run(
        &[
            "inject",
            "-f",
            fixture("manifests/mixed.yaml").to_str().unwrap(),
        ],
        b"",
    );
    let second = run(&["inject"], &first.stdout);
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn inject_denial_prints_nothing_and_names_each_denied_document() {
    let out = run(
        &[
            "inject",
            "-f",
            fixture("manifests/denied.yaml").to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("ReplicaSet/typo: annotation sidecar-injector.io/inject"));
    assert!(lines[1].starts_with(
        "Pod/clash: annotation sidecar-injector.io/profiles: unknown profile \"tracing\""
    ));
}

#[test]
fn inject_reads_json_and_rejects_broken_yaml() {
    let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"sidecar-injector.io/inject":"true"}},"spec":{"containers":[{"name":"a","image":"x"}]}}"#;
    let out = run(&["inject"], pod);
    assert!(out.status.success());
    let docs = yaml_docs(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs[0]["spec"]["containers"][1]["name"], "sidecar");
    let out = run(&["inject"], b"kind: Pod\n  bad: [indent\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn config_flag_applies_to_offline_commands_and_bad_config_fails_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "defaultProfiles: [debug]\nprofiles:\n  debug:\n    containers:\n      - name: debugger\n        image: busybox:1.36\n",
    )
    .unwrap();
    let body = std::fs::read(fixture("reviews/classic-shared-volume.json")).unwrap();
    let out = run(&["review", "--config", cfg.to_str().unwrap()], &body);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let patch = String::from_utf8(patch_of(&v).unwrap()).unwrap();
    assert!(
        patch.contains("\"debugger\"") && !patch.contains("shared-data"),
        "{patch}"
    );

    std::fs::write(
        &cfg,
        "defaultProfiles: [a]\nprofiles:\n  a:\n    containers: oops\n",
    )
    .unwrap();
    let out = run(&["review", "--config", cfg.to_str().unwrap()], &body);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("{}:4:", cfg.display())), "{err}");
}

#[test]
fn certs_writes_ca_cert_and_private_key() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(Path::new(bin()), dir.path(), &["svc.ns.svc", "127.0.0.1"]);
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key is private");
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "needs the test tools: make test-deps, then --features tools"
)]
fn strict_validation_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x","bogus":1}]}}"#).unwrap();
    assert!(validate_strict(&[f]).is_err());
}

#[test]
fn certs_leaves_an_older_world_readable_key_at_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tls.key");
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_certs(Path::new(bin()), dir.path(), &["x.svc"]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
}

/// One anchor aliased 10 times a level, 6 levels deep: a few hundred bytes that would expand
/// to a million nodes.
fn alias_bomb() -> String {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..7 {
        let items = vec![format!("*a{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    yaml
}

#[test]
fn yaml_alias_bombs_are_refused_by_inject_and_config() {
    let bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n  {}",
        alias_bomb().replace('\n', "\n  ")
    );
    let out = run(&["inject"], bomb.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alias") || err.contains("limit"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}defaultProfiles: [a]\nprofiles:\n  a: {{}}\n",
            alias_bomb()
        ),
    )
    .unwrap();
    let out = run(&["--config", config.to_str().unwrap(), "review"], b"{}");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused like any invalid config (here before any expansion: the keys are unknown).
    assert!(err.contains("config.yaml:"), "{err}");
}
