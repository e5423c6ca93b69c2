//! End to end through a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager built from their Go modules by scripts/control-plane.sh and started
//! by scripts/e2e.sh, which runs this file): every user flow with kubectl, the objects read
//! back from the API.
//!
//! The webhook configuration is deploy/'s, applied through the self-signed overlay exactly as
//! `make certs` writes it, `clientConfig.service` untouched. The apiserver reaches the Service
//! through its "cluster" egress selector: scripts/control-plane/egress-proxy forwards the
//! Service's ClusterIP:443 to the release server on 127.0.0.1 (a route line per Service), so
//! nothing leaves loopback. The cluster has a node (tests/node.rs uses it), but these
//! scenarios only test admission: their pods name a scheduler nobody serves (`OFF_NODE`), so
//! they are admitted, stored and stay Pending.

mod common;
#[path = "common/invariants.rs"]
#[allow(dead_code)]
mod invariants;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::api::Api;
use common::cluster::{wait_for, Cluster, INJECT, NS_LABEL, OFF_NODE, STATUS};
use common::measure::{
    bucket_quantile, quantile, timed_creates, unix_nanos, webhook_histogram, webhook_spans,
};
use common::root;
use common::server::{log_field, Server};
use serde_json::{json, Value};

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut c = Cluster::from_env();
        // The self-signed overlay as `make certs` writes it, applied for real.
        common::selfsigned_overlay(&c.release, &c.overlay);
        c.ok(&["apply", "-k", c.overlay.to_str().unwrap()]);
        c.service_ip = c.service_ip("sidecar-injector");
        c
    })
}

/// The start of a scenario: its turn, the cluster, the webhook running, its namespace.
fn scenario(ns: &str, labels: Value) -> (MutexGuard<'static, ()>, &'static Cluster) {
    let turn = serial();
    let c = cluster();
    drop(webhook());
    c.namespace(ns, labels);
    (turn, c)
}

/// Scenarios share one control plane and one webhook: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

static WEBHOOK: Mutex<Option<Server>> = Mutex::new(None);

/// Starts the webhook (if it is not running) with `args` and routes the Service to it.
fn webhook_with(args: &[String]) -> MutexGuard<'static, Option<Server>> {
    let c = cluster();
    let mut w = WEBHOOK.lock().unwrap_or_else(|e| e.into_inner());
    if w.is_none() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Server::start_bin(&c.release, &args);
        c.route(&c.service_ip, &server.addr);
        *w = Some(server);
    }
    w
}

fn webhook() -> MutexGuard<'static, Option<Server>> {
    webhook_with(&cluster().webhook_args())
}

fn restart_webhook(args: &[String]) {
    WEBHOOK.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(webhook_with(args));
}

/// The server's log lines for the reviews it answered, one each (JSON or text).
fn review_lines(server: &Server) -> Vec<String> {
    server
        .log_lines()
        .into_iter()
        .filter(|l| {
            l.contains(r#""message":"admission review""#) || l.contains("admission review ")
        })
        .collect()
}

/// Reviews the webhook has answered for pods in `ns`, whatever the outcome. Counted by
/// namespace (from the log, which the server writes out as soon as it goes idle after an
/// answer, while the apiserver is still reading it): earlier tests' controllers may still be
/// retrying pods elsewhere, such as a Deployment the webhook keeps denying.
fn reviews_in(server: &Server, ns: &str) -> usize {
    review_lines(server)
        .iter()
        .filter(|l| log_field(l, "namespace").as_deref() == Some(ns))
        .count()
}

fn reviews_in_now(ns: &str) -> usize {
    reviews_in(webhook().as_ref().unwrap(), ns)
}

fn pod(ns: &str, name: &str, annotations: Value, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations, "labels": labels},
        "spec": {"schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}})
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The stored pod has exactly these sidecars once, the shared volume once, the mount in every
/// app container, and the status marker naming `profiles`.
fn assert_injected(pod: &Value, sidecars: &[&str], profiles: &[&str]) {
    let at = format!(
        "pod {}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    );
    let spec = &pod["spec"];
    let containers = names(&spec["containers"]);
    for s in sidecars {
        assert_eq!(
            containers.iter().filter(|c| *c == s).count(),
            1,
            "{at}: spec.containers should hold {s:?} once: {containers:?}"
        );
    }
    let volumes = names(&spec["volumes"]);
    assert_eq!(
        volumes.iter().filter(|v| **v == "shared-data").count(),
        1,
        "{at}: spec.volumes should hold shared-data once: {volumes:?}"
    );
    for c in spec["containers"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        if sidecars.contains(&name) {
            continue;
        }
        let mounts = names(&c["volumeMounts"]);
        assert!(
            mounts.contains(&"shared-data"),
            "{at}: spec.containers[{name}].volumeMounts lacks shared-data: {mounts:?}"
        );
    }
    let status = pod["metadata"]["annotations"][STATUS]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: metadata.annotations[{STATUS}] is missing"));
    invariants::assert_kubelet_starts_injected(pod);
    let status: Value = serde_json::from_str(status).unwrap();
    assert_eq!(status["profiles"], json!(profiles), "{at}: {STATUS}");
}

fn assert_not_injected(pod: &Value) {
    let at = format!("pod {}", pod["metadata"]["name"].as_str().unwrap_or(""));
    assert_eq!(
        names(&pod["spec"]["containers"]),
        ["app"],
        "{at}: spec.containers"
    );
    assert!(
        pod["metadata"]["annotations"][STATUS].is_null(),
        "{at}: {STATUS} is set"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn seed_examples_are_stored_with_sidecar_volume_and_mounts() {
    let _s = serial();
    let c = cluster();
    drop(webhook());
    let examples = root().join("deploy/examples");
    c.ok(&[
        "apply",
        "-f",
        examples.join("namespace.yaml").to_str().unwrap(),
    ]);
    c.wait_for_default_service_account("demo");
    for f in [
        "shared-volume-pod.yaml",
        "share-process-pod.yaml",
        "deployment.yaml",
    ] {
        c.ok(&[
            "-n",
            "demo",
            "apply",
            "-f",
            examples.join(f).to_str().unwrap(),
        ]);
    }

    let two = c.get("demo", "pod/two-containers");
    assert_injected(&two, &["sidecar"], &["default"]);
    let shared = |list: &Value| -> Value {
        list.as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "shared-data")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (app, sidecar) = (&two["spec"]["containers"][0], &two["spec"]["containers"][1]);
    assert_eq!(
        shared(&app["volumeMounts"])["mountPath"],
        "/usr/share/nginx/html",
        "two-containers: app mount path"
    );
    assert_eq!(sidecar["image"], "busybox:1.36");
    assert_eq!(
        shared(&sidecar["volumeMounts"])["mountPath"],
        "/pod-data",
        "two-containers: sidecar mount path"
    );
    assert_eq!(
        shared(&two["spec"]["volumes"])["emptyDir"],
        json!({}),
        "two-containers: shared-data is an emptyDir"
    );

    let nginx = c.get("demo", "pod/nginx");
    assert_injected(&nginx, &["sidecar"], &["default"]);
    assert_eq!(
        nginx["spec"]["shareProcessNamespace"], true,
        "nginx: spec.shareProcessNamespace"
    );
    let sidecar = &nginx["spec"]["containers"][1];
    assert_eq!(
        (&sidecar["stdin"], &sidecar["tty"]),
        (&json!(true), &json!(true)),
        "nginx: sidecar stdin/tty"
    );
    let sc = &sidecar["securityContext"];
    assert_eq!(
        sc["capabilities"]["add"],
        json!(["SYS_PTRACE", "KILL"]),
        "nginx: sidecar capabilities.add"
    );
    assert_eq!(
        sc["runAsUser"], 0,
        "nginx: the app's uid is unknown, so the sidecar runs as root"
    );

    wait_for("the Deployment's pods", Duration::from_secs(60), || {
        c.get("demo", "pods")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "web")
            .count()
            == 2
    });
    for p in c.get("demo", "pods")["items"].as_array().unwrap() {
        if p["metadata"]["labels"]["app"] == "web" {
            assert_injected(p, &["sidecar", "log-tailer"], &["default", "logging"]);
        }
    }
}

#[test]
fn opt_in_and_opt_out_by_namespace_label_annotation_and_label() {
    let _s = serial();
    let c = cluster();
    drop(webhook());
    c.namespace("optin-labelled", json!({NS_LABEL: "enabled"}));
    c.namespace("optin-plain", json!({}));

    // (namespace, pod, opt-in annotation, opt-in label, injected)
    let cases = [
        ("optin-labelled", "by-namespace", None, None, true),
        ("optin-labelled", "opted-out", Some("false"), None, false),
        (
            "optin-labelled",
            "opted-out-by-label",
            None,
            Some("false"),
            false,
        ),
        ("optin-plain", "by-annotation", Some("true"), None, true),
        ("optin-plain", "by-label", None, Some("true"), true),
        (
            "optin-plain",
            "annotation-wins",
            Some("false"),
            Some("true"),
            false,
        ),
        ("optin-plain", "plain", None, None, false),
    ];
    for (ns, name, annotation, label, injected) in cases {
        let key = |v: Option<&str>| v.map_or(json!({}), |v| json!({INJECT: v}));
        let (annotations, labels) = (key(annotation), key(label));
        let p = pod(ns, name, annotations, labels);
        c.apply_ok(&p);
        let stored = c.get(ns, &format!("pod/{name}"));
        if injected {
            assert_injected(&stored, &["sidecar"], &["default"]);
        } else {
            assert_not_injected(&stored);
        }
    }
}

#[test]
fn controllers_create_injected_pods_from_annotated_templates() {
    let ns = "controllers";
    let (_s, c) = scenario(ns, json!({}));
    let template = |app: &str, restart: &str| {
        json!({"metadata": {"labels": {"app": app}, "annotations": {INJECT: "true"}},
            "spec": {"restartPolicy": restart, "schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}})
    };
    let selector = |app: &str| json!({"matchLabels": {"app": app}});
    c.apply_ok(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 2, "selector": selector("web"), "template": template("web", "Always")}}));
    c.apply_ok(&json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "db", "selector": selector("db"), "template": template("db", "Always")}}));
    c.apply_ok(&json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch", "namespace": ns},
        "spec": {"template": template("batch", "Never")}}));
    // The Deployment's own annotations do not count: only its template's.
    c.apply_ok(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "plain", "namespace": ns, "annotations": {INJECT: "true"}},
        "spec": {"replicas": 1, "selector": selector("plain"),
            "template": {"metadata": {"labels": {"app": "plain"}},
                "spec": {"schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}}}}));

    let pods_of = |app: &str| -> Vec<Value> {
        c.get(ns, "pods")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .cloned()
            .collect()
    };
    for (app, count) in [("web", 2), ("db", 1), ("batch", 1), ("plain", 1)] {
        wait_for(
            &format!("{count} pod(s) of {ns}/{app}"),
            Duration::from_secs(60),
            || pods_of(app).len() >= count,
        );
        for p in pods_of(app) {
            if app == "plain" {
                assert_not_injected(&p);
            } else {
                assert_injected(&p, &["sidecar"], &["default"]);
            }
        }
    }
}

#[test]
fn unselected_pods_never_reach_the_webhook() {
    let _s = serial();
    let c = cluster();
    drop(webhook());
    c.namespace("unselected", json!({}));
    let before = reviews_in_now("unselected");
    for i in 0..5 {
        let p = pod("unselected", &format!("plain-{i}"), json!({}), json!({}));
        c.apply_ok(&p);
    }
    assert_eq!(
        reviews_in_now("unselected"),
        before,
        "plain pods in an unlabelled namespace reached the webhook"
    );

    // System namespaces and the injector's own: never sent, whatever their labels and the
    // pod's annotation.
    for ns in ["kube-system", "sidecar-injector"] {
        c.ok(&[
            "label",
            "--overwrite",
            "namespace",
            ns,
            &format!("{NS_LABEL}=enabled"),
        ]);
        c.wait_for_default_service_account(ns);
        let before = reviews_in_now(ns);
        for (name, annotations) in [
            ("labelled-ns", json!({})),
            ("opted-in", json!({INJECT: "true"})),
        ] {
            let mut p = pod(ns, name, annotations, json!({}));
            // The injector's namespace enforces "restricted": a compliant pod.
            p["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}});
            p["spec"]["containers"][0]["securityContext"] =
                json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
            c.apply_ok(&p);
            assert_not_injected(&c.get(ns, &format!("pod/{name}")));
        }
        assert_eq!(
            reviews_in_now(ns),
            before,
            "a pod in {ns} reached the webhook"
        );
        c.ok(&["label", "namespace", ns, &format!("{NS_LABEL}-")]);
    }
}

#[test]
fn denials_and_warnings_reach_the_user_through_kubectl() {
    let ns = "denials";
    let (_s, c) = scenario(ns, json!({}));

    let bad = pod(ns, "bad-value", json!({INJECT: "yes"}), json!({}));
    let out = c.apply(&bad);
    assert!(!out.status.success(), "a bad annotation value was admitted");
    let err = stderr(&out);
    assert!(
        err.contains("denied the request") && err.contains(INJECT) && err.contains("\"yes\""),
        "kubectl does not show the webhook's message: {err}"
    );

    let mut clash = pod(ns, "clash", json!({INJECT: "true"}), json!({}));
    clash["spec"]["containers"][0]["name"] = json!("sidecar");
    let out = c.apply(&clash);
    assert!(!out.status.success(), "a name clash was admitted");
    let err = stderr(&out);
    assert!(
        err.contains("\"sidecar\"") && err.contains("opt this pod out"),
        "{err}"
    );

    let share = pod(
        ns,
        "share",
        json!({INJECT: "true", "sidecar-injector.io/share-process-namespace": "true"}),
        json!({}),
    );
    let out = c.apply_ok(&share);
    let err = stderr(&out);
    assert!(
        err.contains("Warning:") && err.contains("SYS_PTRACE") && err.contains("\"baseline\""),
        "kubectl does not print the SYS_PTRACE warning: {err}"
    );
}

#[test]
fn reinvocation_with_a_second_injector_injects_once() {
    let ns = "reinvocation";
    let (_s, c) = scenario(ns, json!({NS_LABEL: "enabled"}));
    // A second instance with another profile, behind a Service and webhook of its own that
    // also selects this namespace; the apiserver calls both, and each again (IfNeeded) when
    // the other changed the pod.
    let config = c.dir.join("second-config.yaml");
    let default = std::fs::read_to_string(root().join("deploy/base/config.yaml")).unwrap();
    std::fs::write(
        &config,
        default.replace("defaultProfiles: [default]", "defaultProfiles: [logging]"),
    )
    .unwrap();
    let certs = c.dir.join("second-certs");
    common::write_certs(&c.release, &certs, &["second.sidecar-injector.svc"]);
    let file = |f: &str| certs.join(f).display().to_string();
    let second = Server::start_bin(
        &c.release,
        &[
            "--tls-cert",
            &file("tls.crt"),
            "--tls-key",
            &file("tls.key"),
            "--config",
            &config.display().to_string(),
        ],
    );
    c.apply_ok(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "second", "namespace": "sidecar-injector"},
        "spec": {"ports": [{"port": 443, "targetPort": 8443}]}}));
    let ip = c.service_ip("second");
    c.route(&ip, &second.addr);
    let ca = common::b64(&std::fs::read(certs.join("ca.crt")).unwrap());
    c.apply_ok(&json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-second"},
        "webhooks": [{"name": "second.sidecar-injector.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "reinvocationPolicy": "IfNeeded", "failurePolicy": "Fail",
            "clientConfig": {"caBundle": ca, "service": {"name": "second", "namespace": "sidecar-injector",
                "path": "/mutate/enabled", "port": 443}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]}));
    // The apiserver picks up a new configuration asynchronously: wait until the second is called.
    let mut i = 0;
    wait_for(
        "the second webhook to be called",
        Duration::from_secs(20),
        || {
            i += 1;
            let p = pod(ns, &format!("warmup-{i}"), json!({}), json!({}));
            c.apply_ok(&p);
            reviews_in(&second, ns) > 0
        },
    );

    let mut p = pod(ns, "two-apps", json!({}), json!({}));
    p["spec"]["containers"] = json!([{"name": "app", "image": "nginx:1.27"}, {"name": "worker", "image": "busybox:1.36"}]);
    let (first_before, second_before) = (reviews_in_now(ns), reviews_in(&second, ns));
    c.apply_ok(&p);
    let stored = c.get(ns, "pod/two-apps");
    // The first configuration (by name) injects; the second sees the marker and leaves the
    // pod as it is, on its first call and on reinvocation: one injection, never two.
    assert_injected(&stored, &["sidecar"], &["default"]);
    let containers = names(&stored["spec"]["containers"]);
    assert_eq!(
        containers,
        ["app", "worker", "sidecar"],
        "pod {ns}/two-apps: spec.containers"
    );
    assert!(
        reviews_in_now(ns) > first_before && reviews_in(&second, ns) > second_before,
        "both webhooks were called"
    );
    assert!(
        second.log_has("reason=already-injected"),
        "the second injector saw the marker"
    );

    c.ok(&["delete", "mutatingwebhookconfiguration", "zz-second"]);
    c.ok(&["-n", "sidecar-injector", "delete", "service", "second"]);
}

/// A pod create that the webhook configuration sends to us, in a fresh namespace.
fn create_opted_in(c: &Cluster, ns: &str, name: &str) -> Output {
    let p = pod(ns, name, json!({INJECT: "true"}), json!({}));
    c.apply(&p)
}

#[test]
fn failure_policy_refuses_opted_in_pods_while_the_webhook_is_down() {
    let _s = serial();
    let c = cluster();
    let ns = "failure-policy";
    c.namespace(ns, json!({}));
    WEBHOOK.lock().unwrap_or_else(|e| e.into_inner()).take();

    let out = create_opted_in(c, ns, "while-down");
    assert!(
        !out.status.success(),
        "an opted-in pod was admitted without the webhook"
    );
    let err = stderr(&out);
    assert!(
        err.contains("failed calling webhook") && err.contains("pod.sidecar-injector.io"),
        "the refusal does not name the webhook: {err}"
    );
    let plain = pod(ns, "plain-while-down", json!({}), json!({}));
    c.apply_ok(&plain);

    drop(webhook());
    let out = create_opted_in(c, ns, "after-restart");
    assert!(out.status.success(), "after the restart: {}", stderr(&out));
    assert_injected(&c.get(ns, "pod/after-restart"), &["sidecar"], &["default"]);
}

#[test]
fn mtls_accepts_the_apiservers_client_certificate_and_refuses_other_cas() {
    let _s = serial();
    let c = cluster();
    let ns = "mtls";
    c.namespace(ns, json!({}));
    let mut args = c.webhook_args();
    args.extend([
        "--client-ca".into(),
        c.webhook_client_ca.display().to_string(),
    ]);
    restart_webhook(&args);
    let out = create_opted_in(c, ns, "with-client-cert");
    assert!(
        out.status.success(),
        "with --client-ca of the apiserver's client CA: {}",
        stderr(&out)
    );
    assert_injected(
        &c.get(ns, "pod/with-client-cert"),
        &["sidecar"],
        &["default"],
    );

    // Another CA (the serving CA) does not vouch for the apiserver's client certificate.
    let mut args = c.webhook_args();
    args.extend([
        "--client-ca".into(),
        c.overlay.join("ca.crt").display().to_string(),
    ]);
    restart_webhook(&args);
    let out = create_opted_in(c, ns, "other-ca");
    assert!(
        !out.status.success(),
        "the apiserver's call was accepted under another client CA"
    );
    assert!(
        stderr(&out).contains("failed calling webhook"),
        "{}",
        stderr(&out)
    );

    restart_webhook(&c.webhook_args());
}

#[test]
fn certificate_rotation_with_an_overlapping_ca_bundle_fails_no_create() {
    let _s = serial();
    let c = cluster();
    let ns = "rotation";
    c.namespace(ns, json!({}));
    let secret = c.dir.join("rotation-secret");
    let _ = std::fs::remove_dir_all(&secret);
    std::fs::create_dir_all(&secret).unwrap();
    let read = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    common::write_secret_version(
        &secret,
        "v1",
        &read(&c.overlay, "tls.crt"),
        &read(&c.overlay, "tls.key"),
    );
    let next = c.dir.join("rotation-next");
    common::write_certs(
        &c.release,
        &next,
        &[
            "sidecar-injector.sidecar-injector.svc",
            "sidecar-injector.sidecar-injector.svc.cluster.local",
        ],
    );
    restart_webhook(&[
        "--tls-cert".into(),
        secret.join("tls.crt").display().to_string(),
        "--tls-key".into(),
        secret.join("tls.key").display().to_string(),
        "--reload-interval".into(),
        "200ms".into(),
    ]);
    let set_bundle = |pem: &[u8]| {
        let ca = common::b64(pem);
        let patch = json!([
            {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": ca},
            {"op": "replace", "path": "/webhooks/1/clientConfig/caBundle", "value": ca},
            {"op": "replace", "path": "/webhooks/2/clientConfig/caBundle", "value": ca}]);
        c.ok(&[
            "patch",
            "mutatingwebhookconfiguration",
            "sidecar-injector",
            "--type=json",
            "-p",
            &patch.to_string(),
        ]);
    };
    let (old_ca, new_ca) = (read(&c.overlay, "ca.crt"), read(&next, "ca.crt"));
    // Overlap first: the bundle trusts both CAs before the certificate changes.
    set_bundle(&[old_ca.as_slice(), new_ca.as_slice()].concat());

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (created, failures) = std::thread::scope(|s| {
        let creator = s.spawn(|| {
            let (mut created, mut failures) = (0, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let out = create_opted_in(c, ns, &format!("p{i}"));
                if out.status.success() {
                    created += 1;
                } else {
                    failures.push(stderr(&out));
                }
            }
            (created, failures)
        });
        std::thread::sleep(Duration::from_secs(3));
        common::write_secret_version(
            &secret,
            "v2",
            &read(&next, "tls.crt"),
            &read(&next, "tls.key"),
        );
        wait_for(
            "the server to load the new certificate",
            Duration::from_secs(10),
            || webhook().as_ref().unwrap().log_has("certificate reloaded"),
        );
        std::thread::sleep(Duration::from_secs(3));
        // Only the new CA: the apiserver's next connections must get the new certificate.
        set_bundle(&new_ca);
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        creator.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} of {} creates failed during rotation: {:?}",
        failures.len(),
        created + failures.len(),
        failures
    );
    assert!(created >= 10, "only {created} creates during the rotation");
    for p in c.get(ns, "pods")["items"].as_array().unwrap() {
        assert_injected(p, &["sidecar"], &["default"]);
    }

    // Back to the overlay's pair and bundle; wait until the apiserver uses them.
    c.ok(&["apply", "-k", c.overlay.to_str().unwrap()]);
    restart_webhook(&c.webhook_args());
    let mut i = 0;
    wait_for(
        "the restored configuration",
        Duration::from_secs(20),
        || {
            i += 1;
            create_opted_in(c, ns, &format!("restored-{i}"))
                .status
                .success()
        },
    );
}

/// What kubectl reads from a manifest: every document as JSON objects.
fn kubectl_reads(c: &Cluster, yaml: &[u8]) -> Vec<Value> {
    let out = c.kubectl(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    assert!(
        out.status.success(),
        "kubectl cannot read: {}",
        stderr(&out)
    );
    // One JSON object per document, one after another.
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn inject_output_is_read_back_unchanged_by_kubectl_and_the_apiserver() {
    let ns = "inject-dry-run";
    let (_s, c) = scenario(ns, json!({}));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "namespace.yaml")
        .collect();
    files.push(root().join("tests/fixtures/manifests/yaml11-strings.yaml"));
    for file in files {
        let at = file.display();
        let out = Command::new(&c.release)
            .args(["inject", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "inject -f {at}: {}", stderr(&out));
        let injected = out.stdout;
        let applied = c.kubectl(
            &[
                "-n",
                ns,
                "apply",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            Some(&injected),
        );
        assert!(
            applied.status.success(),
            "inject -f {at} | kubectl apply --dry-run=server: {}",
            stderr(&applied)
        );
        // Every string the user wrote reads back as the same string.
        let original = kubectl_reads(c, &std::fs::read(&file).unwrap());
        let read_back = kubectl_reads(c, &injected);
        assert_eq!(original.len(), read_back.len(), "{at}: document count");
        for (before, after) in original.iter().zip(&read_back) {
            let name = format!("{at}: {}/{}", before["kind"], before["metadata"]["name"]);
            assert_eq!(before["data"], after["data"], "{name}: data");
            // Every key the user wrote keeps its value (ours are added beside them).
            let kept = |before: &Value, after: &Value, what: &str| {
                for (k, v) in before.as_object().into_iter().flatten() {
                    assert_eq!(&after[k], v, "{name}: {what} {k}");
                }
            };
            kept(
                &before["metadata"]["annotations"],
                &after["metadata"]["annotations"],
                "annotation",
            );
            let (t0, t1) = (&before["spec"]["template"], &after["spec"]["template"]);
            assert_eq!(
                t0["metadata"]["labels"], t1["metadata"]["labels"],
                "{name}: template labels"
            );
            kept(
                &t0["metadata"]["annotations"],
                &t1["metadata"]["annotations"],
                "template annotation",
            );
            let (c0, c1) = (&t0["spec"]["containers"][0], &t1["spec"]["containers"][0]);
            assert_eq!(c0["args"], c1["args"], "{name}: args");
            assert_eq!(c0["env"], c1["env"], "{name}: env");
        }
    }
}

#[test]
fn every_kustomization_in_deploy_is_accepted_by_the_apiserver() {
    let _s = serial();
    let c = cluster();
    // The base alone (no serving certificate) and the self-signed overlay (applied for real
    // when the suite starts).
    c.ok(&[
        "apply",
        "--dry-run=server",
        "-k",
        root().join("deploy").to_str().unwrap(),
    ]);
    c.ok(&[
        "apply",
        "--dry-run=server",
        "-k",
        c.overlay.to_str().unwrap(),
    ]);
    let mwc: Value = serde_json::from_str(&c.ok(&[
        "get",
        "mutatingwebhookconfiguration",
        "sidecar-injector",
        "-o",
        "json",
    ]))
    .unwrap();
    let ca = common::b64(&std::fs::read(c.overlay.join("ca.crt")).unwrap());
    for h in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(
            h["clientConfig"]["caBundle"],
            json!(ca),
            "{}: caBundle",
            h["name"]
        );
    }
    let secret = c.get("sidecar-injector", "secret/sidecar-injector-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");

    // The cert-manager overlay, with cert-manager's own CRDs installed first.
    let crds = cert_manager_crds();
    for kind in ["certificates", "issuers"] {
        let file = crds.join(format!("cert-manager.io_{kind}.yaml"));
        // Server-side: the CRDs are larger than client-side apply's annotation allows.
        c.ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        // Polled rather than `kubectl wait --for=condition=Established`, which fails at once
        // instead of waiting while a new CRD's `status.conditions` is still null.
        let crd = format!("crd/{kind}.cert-manager.io");
        wait_for(
            &format!("{crd} to be Established"),
            Duration::from_secs(30),
            || {
                c.get("default", &crd)["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|k| k["type"] == "Established" && k["status"] == "True")
                    })
            },
        );
    }
    let overlay = root().join("deploy/cert-manager");
    c.ok(&["apply", "--dry-run=server", "-k", overlay.to_str().unwrap()]);
}

/// cert-manager's CRD manifests, as its Go module ships them, at a pinned version.
fn cert_manager_crds() -> PathBuf {
    const MODULE: &str = "github.com/cert-manager/cert-manager@v1.21.2";
    let out = Command::new("go")
        .args(["mod", "download", "-json", MODULE])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go (>= 1.26) for cert-manager's CRDs");
    assert!(
        out.status.success(),
        "go mod download {MODULE}: {}",
        stderr(&out)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(info["Dir"].as_str().expect("the module's directory")).join("deploy/crds")
}

/// `duration_us` of each review in the server's log, by uid.
fn logged_durations(server: &Server) -> HashMap<String, f64> {
    review_lines(server)
        .iter()
        .filter_map(|l| {
            let uid = log_field(l, "uid")?;
            Some((uid, log_field(l, "duration_us")?.parse().ok()?))
        })
        .collect()
}

#[test]
fn latency_as_the_apiserver_sees_it() {
    let _s = serial();
    let c = cluster();
    // First without the token option (two calls per pod), then as shipped.
    restart_webhook(&token_mount_off_args(c));
    const N: usize = 1000;
    c.namespace("latency-webhook", json!({NS_LABEL: "enabled"}));
    c.namespace("latency-no-token", json!({NS_LABEL: "enabled"}));
    c.namespace("latency-plain", json!({}));
    c.namespace("latency-token-option", json!({NS_LABEL: "enabled"}));
    let api = Api::new(c);
    let create_all = |ns: &str, automount_token: bool| timed_creates(&api, ns, N, automount_token);
    let plain = create_all("latency-plain", true);
    let before = webhook_histogram(c);
    let from = unix_nanos();
    let hooked = create_all("latency-webhook", true);
    let to = unix_nanos();
    // Only this test's calls: the histogram is the apiserver's since it started.
    let histogram: Vec<(f64, f64)> = webhook_histogram(c)
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&(0.0, 0.0))))
        .map(|(after, before)| (after.0, after.1 - before.1))
        .collect();
    let total = |buckets: &[(f64, f64)]| buckets.last().map_or(0, |b| b.1 as usize);
    let count = total(&histogram);
    // The ServiceAccount admission plugin runs again after our patch and mounts the API token
    // into the sidecar too; that change makes the apiserver ask again (reinvocationPolicy
    // IfNeeded), and the status annotation makes the second answer a no-op.
    assert_eq!(
        count,
        2 * N,
        "calls to the webhook for {N} pods that mount the API token"
    );
    // Each call the histogram counted has its span, once the apiserver's batch exporter
    // (every 5 s) has sent it.
    let mut spans = Vec::new();
    wait_for(
        &format!("{count} webhook spans from the apiserver"),
        Duration::from_secs(60),
        || {
            spans = webhook_spans(c, from, to);
            spans.len() >= count
        },
    );
    assert_eq!(
        spans.len(),
        count,
        "one span per call the apiserver counted"
    );
    // And each reached this server, which logged how long it took over it.
    let logged = logged_durations(webhook().as_ref().unwrap());
    let ours: Vec<f64> = spans
        .iter()
        .map(|s| {
            *logged
                .get(&s.uid)
                .unwrap_or_else(|| panic!("the apiserver's call {} is not in our log", s.uid))
        })
        .collect();
    // Creates in `ns` that must cost the webhook exactly one call per pod.
    let one_call_each = |ns: &str, automount_token: bool, why: &str| -> Vec<f64> {
        let before = total(&webhook_histogram(c));
        let times = create_all(ns, automount_token);
        assert_eq!(
            total(&webhook_histogram(c)) - before,
            N,
            "calls to the webhook for {N} pods with {why}"
        );
        times
    };
    // Without a token to mount, nothing changes the pod after our patch.
    let no_token = one_call_each(
        "latency-no-token",
        false,
        "automountServiceAccountToken: false",
    );
    // As shipped (mountServiceAccountToken: true), our patch already has the mount.
    restart_webhook(&c.webhook_args());
    let token_option = one_call_each(
        "latency-token-option",
        true,
        "mountServiceAccountToken: true",
    );
    restart_webhook(&c.webhook_args());
    for (ns, token_mounts) in [
        ("latency-webhook", N),
        ("latency-no-token", 0),
        ("latency-token-option", N),
    ] {
        let pods = c.get(ns, "pods");
        let pods = pods["items"].as_array().unwrap();
        let injected = pods
            .iter()
            .filter(|p| !p["metadata"]["annotations"][STATUS].is_null())
            .count();
        assert_eq!(injected, N, "every pod in {ns} is injected");
        // The apiserver's second round (or, with the option, our patch) gave the sidecar the token.
        let sidecars_with_token = pods
            .iter()
            .flat_map(|p| p["spec"]["containers"].as_array().unwrap())
            .filter(|c| c["name"] == "sidecar")
            .filter(|c| {
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
            })
            .count();
        assert_eq!(
            sidecars_with_token, token_mounts,
            "sidecars in {ns} that mount the API token"
        );
    }

    let steps: Vec<f64> = spans.iter().map(|s| s.step_us).collect();
    let calls_us: Vec<f64> = spans.iter().map(|s| s.call_us).collect();
    let report = format!(
        "| measure (N = {N} sequential creates, realistic pod) | p50 | p99 |\n|---|---|---|\n\
         | pod create, no webhook (client side) | {:.2} ms | {:.2} ms |\n\
         | pod create through the webhook, mountServiceAccountToken: false (client side; two calls per pod) | {:.2} ms | {:.2} ms |\n\
         | the same, the pod with automountServiceAccountToken: false (one call per pod) | {:.2} ms | {:.2} ms |\n\
         | pod create through the webhook as shipped, mountServiceAccountToken: true (one call per pod) | {:.2} ms | {:.2} ms |\n\
         | webhook step as kube-apiserver traces it (span \"Call mutating webhook\", {count} calls) | {:.0} µs | {:.0} µs |\n\
         | of which the call, to the REST client's \"Request completed\" | {:.0} µs | {:.0} µs |\n\
         | of which our server's handling (its log's duration_us for the same calls, by uid) | {:.0} µs | {:.0} µs |\n\
         | the same {count} calls in apiserver_admission_webhook_admission_duration_seconds (bucket bound) | <= {} ms | <= {} ms |\n",
        quantile(&plain, 0.5), quantile(&plain, 0.99),
        quantile(&hooked, 0.5), quantile(&hooked, 0.99),
        quantile(&no_token, 0.5), quantile(&no_token, 0.99),
        quantile(&token_option, 0.5), quantile(&token_option, 0.99),
        quantile(&steps, 0.5), quantile(&steps, 0.99),
        quantile(&calls_us, 0.5), quantile(&calls_us, 0.99),
        quantile(&ours, 0.5), quantile(&ours, 0.99),
        bucket_quantile(&histogram, 0.5) * 1e3, bucket_quantile(&histogram, 0.99) * 1e3
    );
    let out = root().join("target/e2e");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("latency.md"), &report).unwrap();
    eprintln!("{report}");
}

/// The webhook as deployed, with the embedded config but `mountServiceAccountToken: false`.
fn token_mount_off_args(c: &Cluster) -> Vec<String> {
    let out = root().join("target/e2e");
    std::fs::create_dir_all(&out).unwrap();
    let config = out.join("token-mount-off-config.yaml");
    let yaml = std::fs::read_to_string(root().join("deploy/base/config.yaml")).unwrap();
    let off = yaml.replace(
        "mountServiceAccountToken: true",
        "mountServiceAccountToken: false",
    );
    assert_ne!(off, yaml, "the embedded config names the option");
    std::fs::write(&config, off).unwrap();
    let mut args = c.webhook_args();
    args.extend(["--config".into(), config.display().to_string()]);
    args
}

/// A stored pod's spec with its API token volume's generated name replaced by a fixed one.
fn spec_without_token_name(pod: &Value) -> String {
    let spec = pod["spec"].to_string();
    let token = names(&pod["spec"]["volumes"])
        .into_iter()
        .find(|n| n.starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no API token volume in {spec}"));
    spec.replace(token, "kube-api-access-*")
}

#[test]
fn token_mount_option_saves_the_second_call_and_stores_the_same_pods() {
    let _s = serial();
    let c = cluster();
    const N: usize = 10;
    let mut stored = Vec::new();
    for (ns, option, calls) in [
        ("token-option-off", false, 2 * N),
        ("token-as-shipped", true, N),
    ] {
        restart_webhook(&if option {
            c.webhook_args()
        } else {
            token_mount_off_args(c)
        });
        c.namespace(ns, json!({NS_LABEL: "enabled"}));
        for i in 0..N {
            let native = if i % 2 == 0 { "true" } else { "false" };
            let profiles = if i % 3 == 0 {
                "default,logging"
            } else {
                "default"
            };
            c.apply_ok(&pod(
                ns,
                &format!("p{i}"),
                json!({"sidecar-injector.io/native-sidecar": native,
                       "sidecar-injector.io/profiles": profiles}),
                json!({}),
            ));
        }
        let pods = c.get(ns, "pods");
        // A pod's calls are all made before its create returns; the log reader may lag a little.
        wait_for(
            &format!("{calls} reviews logged for {ns}"),
            Duration::from_secs(10),
            || reviews_in_now(ns) >= calls,
        );
        assert_eq!(
            reviews_in_now(ns),
            calls,
            "webhook calls for {N} pods in {ns} (mountServiceAccountToken: {option})"
        );
        let mut specs: Vec<(String, String)> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert!(!p["metadata"]["annotations"][STATUS].is_null(), "{p}");
                let name = p["metadata"]["name"].as_str().unwrap().to_string();
                (name, spec_without_token_name(p))
            })
            .collect();
        specs.sort();
        assert_eq!(specs.len(), N);
        stored.push(specs);
    }
    // The option only does the ServiceAccount plugin's second round in advance.
    assert_eq!(
        stored[0], stored[1],
        "stored pods differ with mountServiceAccountToken"
    );
    restart_webhook(&c.webhook_args());
}

/// A pod in `ns` that Pod Security "restricted" admits on its own, with these pod-level and
/// app-container securityContext settings added.
fn restricted_pod(
    ns: &str,
    name: &str,
    annotations: Value,
    pod_security: Value,
    app_security: Value,
) -> Value {
    let mut p = pod(ns, name, annotations, json!({}));
    let mut sc = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    for (k, v) in pod_security.as_object().unwrap() {
        sc[k] = v.clone();
    }
    p["spec"]["securityContext"] = sc;
    let mut app = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    for (k, v) in app_security.as_object().unwrap() {
        app[k] = v.clone();
    }
    p["spec"]["containers"][0]["securityContext"] = app;
    p
}

#[test]
fn pod_security_levels_admit_injected_pods_as_documented() {
    let _s = serial();
    let c = cluster();
    drop(webhook());
    const SHARE: &str = "sidecar-injector.io/share-process-namespace";
    for level in ["privileged", "baseline", "restricted"] {
        c.namespace(
            &format!("pss-{level}"),
            json!({"pod-security.kubernetes.io/enforce": level}),
        );
    }
    enum Expect {
        Admitted,
        /// Denied by us with 409, naming this.
        Conflict(&'static str),
        /// Denied by the PodSecurity admission plugin at this level.
        PodSecurity(&'static str),
    }
    use Expect::*;
    // Who runs the app: set on the pod, on the app container only, or as a known uid.
    #[derive(Clone, Copy)]
    enum User {
        PodNonRoot,
        AppNonRoot,
        Pod1001,
    }
    use User::*;
    // (level, pod name, share process namespace, user, expected)
    let cases = [
        // The default sidecar needs nothing: a compliant app stays admitted at every level.
        ("privileged", "plain", false, PodNonRoot, Admitted),
        ("baseline", "plain", false, PodNonRoot, Admitted),
        ("restricted", "plain", false, PodNonRoot, Admitted),
        // Sharing with a known app uid: the sidecar takes it, no capability: still restricted.
        ("restricted", "share-uid", true, Pod1001, Admitted),
        ("baseline", "share-uid", true, Pod1001, Admitted),
        // Unknown uid under pod runAsNonRoot: the kubelet would never start a root sidecar,
        // so we refuse it and say how to fix it.
        (
            "restricted",
            "share-nonroot",
            true,
            PodNonRoot,
            Conflict("runAsUser"),
        ),
        // Unknown uid, runAsNonRoot only on the app container: root + SYS_PTRACE + KILL,
        // which only "privileged" admits.
        (
            "restricted",
            "share-root",
            true,
            AppNonRoot,
            PodSecurity("restricted"),
        ),
        (
            "baseline",
            "share-root",
            true,
            AppNonRoot,
            PodSecurity("baseline"),
        ),
        ("privileged", "share-root", true, AppNonRoot, Admitted),
    ];
    for (level, name, share, user, expect) in cases {
        let mut annotations = json!({INJECT: "true"});
        if share {
            annotations[SHARE] = json!("true");
        }
        let non_root = json!({"runAsNonRoot": true});
        let (pod_security, app_security) = match user {
            PodNonRoot => (non_root, json!({})),
            AppNonRoot => (json!({}), non_root),
            Pod1001 => (json!({"runAsNonRoot": true, "runAsUser": 1001}), json!({})),
        };
        let ns = format!("pss-{level}");
        let p = restricted_pod(&ns, name, annotations, pod_security, app_security);
        let out = c.apply(&p);
        let err = stderr(&out);
        let at = format!("pod {ns}/{name}");
        match expect {
            Admitted => {
                assert!(out.status.success(), "{at}: refused: {err}");
                let stored = c.get(&ns, &format!("pod/{name}"));
                assert_injected(&stored, &["sidecar"], &["default"]);
                let sc = &stored["spec"]["containers"][1]["securityContext"];
                if name == "share-uid" {
                    assert_eq!(sc["runAsUser"], 1001, "{at}: sidecar runAsUser");
                    assert!(
                        sc["capabilities"].get("add").is_none(),
                        "{at}: sidecar capabilities.add"
                    );
                    assert!(!err.contains("Warning"), "{at}: no warning expected: {err}");
                }
                if name == "share-root" {
                    assert!(
                        err.contains("\"privileged\" level"),
                        "{at}: the warning names the level: {err}"
                    );
                }
            }
            Conflict(word) => {
                assert!(!out.status.success(), "{at}: admitted");
                assert!(
                    err.contains("denied the request")
                        && err.contains(word)
                        && err.contains("runAsNonRoot"),
                    "{at}: {err}"
                );
            }
            PodSecurity(level) => {
                assert!(!out.status.success(), "{at}: admitted");
                assert!(
                    err.contains(&format!("violates PodSecurity \"{level}")),
                    "{at}: {err}"
                );
            }
        }
    }
}

/// `sidecar-injector check ARGS` as a user runs it, with `kubeconfig`: (exit code, stdout,
/// stderr).
fn run_check(c: &Cluster, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&c.release)
        .arg("check")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SIDECAR_INJECTOR_CONFIG")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `check ARGS -o json` as the admin: the exit code and the findings.
fn check_json(c: &Cluster, args: &[&str]) -> (i32, Vec<Value>) {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let (code, out, err) = run_check(c, &c.kubeconfig, &args);
    let items: Vec<Value> = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("check {}: {e}: {out}{err}", args.join(" ")));
    (code, items)
}

/// The one finding of `check ARGS`, asserted to have `result` and `reason`, and the exit code
/// that goes with them.
fn check_one(c: &Cluster, args: &[&str], result: &str, reason: &str) -> Value {
    let (code, items) = check_json(c, args);
    assert_eq!(items.len(), 1, "check {}: {items:#?}", args.join(" "));
    let f = items[0].clone();
    assert_eq!(
        (f["result"].as_str(), f["reason"].as_str()),
        (Some(result), Some(reason)),
        "check {}: {f:#}",
        args.join(" ")
    );
    let ok = matches!(result, "injected" | "would-inject");
    assert_eq!(
        code,
        if ok { 0 } else { 1 },
        "check {}: exit code",
        args.join(" ")
    );
    f
}

fn deployment(ns: &str, name: &str, template_annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": template_annotations},
                "spec": {"schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}}}})
}

/// The webhook's `/workloads` answers for workloads in `ns`.
fn workload_checks_in(ns: &str) -> usize {
    review_lines(webhook().as_ref().unwrap())
        .iter()
        .filter(|l| {
            log_field(l, "namespace").as_deref() == Some(ns)
                && log_field(l, "reason").as_deref() == Some("workload-checked")
        })
        .count()
}

#[test]
fn a_key_on_a_deployments_own_metadata_is_named_to_whoever_put_it_there() {
    let ns = "workload-hints";
    let (_s, c) = scenario(ns, json!({}));
    // Without our key on its own metadata, a Deployment's writes never reach the webhook
    // (the CEL condition): its create, an unrelated annotation, the controller's updates.
    c.apply_ok(&deployment(ns, "web", json!({})));
    c.ok(&["-n", ns, "annotate", "deployment", "web", "team=payments"]);
    c.ok(&["-n", ns, "scale", "deployment", "web", "--replicas=2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        workload_checks_in(ns),
        0,
        "calls for a Deployment without our key"
    );
    // The first mistake: kubectl annotate puts the key on the Deployment itself.
    let key = format!("{INJECT}=true");
    let out = c.kubectl(&["-n", ns, "annotate", "deployment", "web", &key], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Warning:")
            && err.contains(&format!(
                "{INJECT} is on the Deployment's own metadata.annotations"
            ))
            && err.contains("move it to spec.template.metadata.annotations"),
        "kubectl does not print where the key must go: {err}"
    );
    assert!(workload_checks_in(ns) >= 1);
    // check says the same in its table's DETAIL.
    let (_, table, _) = run_check(c, &c.kubeconfig, &["-n", ns, "deployment/web"]);
    assert!(
        table.contains(&format!(
            "annotation {INJECT} on the Deployment's own metadata: move it to spec.template.metadata.annotations"
        )),
        "{table}"
    );
    // Nothing was changed or injected: the pods still lack the sidecar.
    let pods = c.get(ns, "pods");
    for p in pods["items"].as_array().unwrap() {
        let names: Vec<&str> = p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["app"], "{}", p["metadata"]["name"]);
    }
    // Where the hint says: the next pods are injected.
    let template = json!({"spec": {"template": {"metadata": {"annotations": {INJECT: "true"}}}}});
    c.ok(&[
        "-n",
        ns,
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        &template.to_string(),
    ]);
    wait_for(
        "the new ReplicaSet's pods injected",
        Duration::from_secs(30),
        || {
            let pods = c.get(ns, "pods");
            pods["items"].as_array().unwrap().iter().any(|p| {
                p["metadata"]["annotations"][INJECT] == "true"
                    && p["spec"]["containers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["name"] == "sidecar")
            })
        },
    );
}

#[test]
fn check_explains_why_each_object_is_or_is_not_injected() {
    let ns = "check";
    let (_s, c) = scenario(ns, json!({}));
    c.namespace("check-on", json!({NS_LABEL: "enabled"}));
    c.namespace("check-off", json!({NS_LABEL: "disabled"}));
    c.apply_ok(&pod(ns, "injected", json!({INJECT: "true"}), json!({})));
    c.apply_ok(&pod(ns, "plain", json!({}), json!({})));
    c.apply_ok(&pod(
        "check-on",
        "opted-out",
        json!({INJECT: "false"}),
        json!({}),
    ));
    c.apply_ok(&pod(
        "check-off",
        "excluded",
        json!({INJECT: "true"}),
        json!({}),
    ));
    c.apply_ok(&deployment(ns, "web", json!({INJECT: "true"})));
    // Admitted (the webhook sees pods only); its ReplicaSet's pod creates are denied.
    c.apply_ok(&deployment(ns, "typo", json!({INJECT: "yes"})));

    let f = check_one(
        c,
        &["pod/injected", "-n", ns],
        "injected",
        "already-injected",
    );
    assert_eq!(
        (f["profiles"].clone(), f["containers"].clone()),
        (json!(["default"]), json!(["sidecar"]))
    );
    let f = check_one(
        c,
        &["pod/plain", "-n", ns],
        "not-injected",
        "match-conditions",
    );
    assert!(
        f["message"].as_str().unwrap().contains("has-opt-in-key"),
        "{f:#}"
    );
    check_one(
        c,
        &["pod/opted-out", "-n", "check-on"],
        "not-injected",
        "opted-out",
    );
    check_one(
        c,
        &["pod/excluded", "-n", "check-off"],
        "not-injected",
        "namespace-selector",
    );
    let f = check_one(c, &["deployment/web", "-n", ns], "would-inject", "opted-in");
    assert_eq!(
        f["webhook"],
        json!("sidecar-injector/pod.sidecar-injector.io")
    );
    assert_eq!(f["containers"], json!(["sidecar"]));
    let f = check_one(c, &["deploy/typo", "-n", ns], "denied", "bad-annotation");
    assert!(f["message"].as_str().unwrap().contains("\"yes\""), "{f:#}");

    // A manifest: a pod for kube-system, and one for a namespace the manifest creates.
    let manifest = c.dir.join("check-manifest.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sys\n  namespace: kube-system\n  annotations:\n    {INJECT}: \"true\"\nspec:\n  containers: [{{name: app, image: nginx}}]\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: check-new\n  labels:\n    {NS_LABEL}: enabled\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: fresh\n  namespace: check-new\nspec:\n  containers: [{{name: app, image: nginx}}]\n"
        ),
    )
    .unwrap();
    let (code, items) = check_json(c, &["-f", manifest.to_str().unwrap()]);
    let got: Vec<_> = items
        .iter()
        .map(|f| {
            (
                f["object"].as_str().unwrap(),
                f["result"].as_str().unwrap(),
                f["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("pod/sys", "not-injected", "system-namespace"),
            ("pod/fresh", "would-inject", "namespace-enabled")
        ]
    );
    assert_eq!(code, 1);

    // The whole namespace: every pod, and workloads not run by another (no ReplicaSets).
    wait_for("deployment web's pod", Duration::from_secs(30), || {
        c.ok(&["-n", ns, "get", "pods", "-l", "app=web", "-o", "name"])
            .contains("pod/web-")
    });
    let (code, items) = check_json(c, &["-n", ns]);
    assert_eq!(code, 1, "pod/plain is not injected");
    let mut got: Vec<(String, &str)> = items
        .iter()
        .map(|f| {
            let object = f["object"].as_str().unwrap();
            let object = if object.starts_with("pod/web-") {
                "pod/web-*"
            } else {
                object
            };
            (object.to_string(), f["result"].as_str().unwrap())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("deployment/typo".to_string(), "denied"),
            ("deployment/web".to_string(), "would-inject"),
            ("pod/injected".to_string(), "injected"),
            ("pod/plain".to_string(), "not-injected"),
            ("pod/web-*".to_string(), "injected"),
        ]
    );
    // The table says the same, one line per object after the header.
    let (code, table, _) = run_check(c, &c.kubeconfig, &["namespace/check"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("REASON"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + items.len(), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pod/plain") && l.contains("match-conditions")),
        "{table}"
    );
    // Only what is injected: exit 0.
    let (code, items) = check_json(c, &["pod/injected", "deployment/web", "-n", ns]);
    assert_eq!((code, items.len()), (0, 2));
}

#[test]
fn check_finds_pods_created_before_install_and_pods_not_opted_in() {
    let ns = "check-variant";
    // Excluded from deploy/'s configuration; selected by the variant below.
    let (_s, c) = scenario(ns, json!({NS_LABEL: "disabled", "check-variant": "yes"}));
    c.apply_ok(&pod(ns, "early", json!({INJECT: "true"}), json!({})));
    // creationTimestamp has whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    // A user's variant without matchConditions: pods without the key reach the server.
    let ca = c.ok(&[
        "get",
        "mutatingwebhookconfiguration",
        "sidecar-injector",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ]);
    c.apply_ok(&json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "check-variant"},
        "webhooks": [{"name": "variant.sidecar-injector.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "failurePolicy": "Ignore",
            "clientConfig": {"caBundle": ca, "service": {"name": "sidecar-injector",
                "namespace": "sidecar-injector", "path": "/mutate", "port": 443}},
            "namespaceSelector": {"matchLabels": {"check-variant": "yes"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]}));
    let variant = ["-n", ns, "--webhook-config", "check-variant"];

    let mut args = vec!["pod/early"];
    args.extend(variant);
    let f = check_one(c, &args, "must-recreate", "created-before-install");
    assert_eq!(
        f["webhook"],
        json!("check-variant/variant.sidecar-injector.io")
    );
    assert!(
        f["message"].as_str().unwrap().contains("rollout restart"),
        "{f:#}"
    );

    let manifest = c.dir.join("check-plain.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers: [{name: app, image: nginx}]\n",
    )
    .unwrap();
    let mut args = vec!["-f", manifest.to_str().unwrap()];
    args.extend(variant);
    let f = check_one(c, &args, "not-injected", "not-opted-in");
    assert_eq!(
        f["webhook"],
        json!("check-variant/variant.sidecar-injector.io")
    );

    c.ok(&["delete", "mutatingwebhookconfiguration", "check-variant"]);
}

#[test]
fn check_errors_name_what_is_missing() {
    let ns = "check-rbac";
    let (_s, c) = scenario(ns, json!({}));
    c.apply_ok(&pod(ns, "injected", json!({INJECT: "true"}), json!({})));

    let nowhere = c.dir.join("no-such-kubeconfig");
    let (code, _, err) = Command::new(&c.release)
        .args(["check", "-n", ns])
        .env("KUBECONFIG", &nowhere)
        .env("HOME", &c.dir)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .map(|o| {
            (
                o.status.code(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no cluster to ask"), "{err}");

    let (code, _, err) = run_check(c, &c.kubeconfig, &["-n", ns, "--webhook-config", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no MutatingWebhookConfiguration \"nope\""),
        "{err}"
    );

    // A ServiceAccount with no permission at all, then with deploy/rbac's reader role.
    c.apply_ok(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "checker", "namespace": ns}}));
    for what in [
        "clusterrolebinding/check-partial",
        "clusterrole/check-partial",
        "clusterrolebinding/check-reader-test",
    ] {
        c.ok(&["delete", "--ignore-not-found", what]);
    }
    let kubeconfig = c.token_kubeconfig(ns, "checker");
    let (code, _, err) = run_check(c, &kubeconfig, &["-n", ns]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("may not get mutatingwebhookconfigurations.admissionregistration.k8s.io"),
        "{err}"
    );
    // Only the configuration: the next read it needs is named.
    c.ok(&[
        "create",
        "clusterrole",
        "check-partial",
        "--verb=get",
        "--resource=mutatingwebhookconfigurations.admissionregistration.k8s.io",
    ]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "check-partial",
        "--clusterrole=check-partial",
        &format!("--serviceaccount={ns}:checker"),
    ]);
    let mut last = String::new();
    wait_for("the partial role to apply", Duration::from_secs(20), || {
        let (code, _, err) = run_check(c, &kubeconfig, &["pod/injected", "-n", ns]);
        last = err;
        code == 2 && last.contains("may not get pods in namespace check-rbac")
    });
    c.ok(&["delete", "clusterrolebinding", "check-partial"]);
    c.ok(&["delete", "clusterrole", "check-partial"]);

    c.ok(&[
        "apply",
        "-f",
        root()
            .join("deploy/rbac/check-reader.yaml")
            .to_str()
            .unwrap(),
    ]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "check-reader-test",
        "--clusterrole=sidecar-injector-check",
        &format!("--serviceaccount={ns}:checker"),
    ]);
    let mut got = (0, String::new(), String::new());
    wait_for("the reader role to apply", Duration::from_secs(20), || {
        got = run_check(c, &kubeconfig, &["-n", ns]);
        got.0 != 2
    });
    let (code, table, err) = got;
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        table.contains("pod/injected") && table.contains("already-injected"),
        "{table}"
    );
    // The reader role covers the deployed ConfigMap: no fallback to the embedded config.
    assert!(!err.contains("embedded default"), "{err}");
    c.ok(&["delete", "clusterrolebinding", "check-reader-test"]);
}
