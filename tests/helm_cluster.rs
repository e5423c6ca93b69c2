//! The Helm chart installed for real (scripts/e2e.sh runs this file on a fresh cluster of its
//! own, the webhook's image loaded into the node): `helm install` as the README says, an
//! upgrade that changes a profile, and `helm uninstall`, each checked on the cluster.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::cluster::{wait_for, Cluster, INJECT, OFF_NODE, STATUS};
use common::{root, succeed};
use serde_json::{json, Value};

const NS: &str = "sidecar-injector";

fn helm_command(c: &Cluster, args: &[&str]) -> Command {
    let mut command = Command::new(common::go_tool("helm"));
    command.args(args).env("KUBECONFIG", &c.kubeconfig);
    command
}

/// Helm with `args`, which must succeed: its stdout.
fn helm(c: &Cluster, args: &[&str]) -> String {
    let out = succeed(
        &mut helm_command(c, args),
        &format!("helm {}", args.join(" ")),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The profile digests the Ready replicas report (their info metric, read from the node).
fn served_digests(c: &Cluster) -> Vec<(String, String)> {
    c.live_pods(NS, "")
        .iter()
        .map(|p| {
            let text = c.pod_metrics(p).unwrap_or_default();
            let digest = sidecar_injector::served_digests(&text)
                .remove("default")
                .unwrap_or_default();
            (p["metadata"]["name"].as_str().unwrap().to_string(), digest)
        })
        .collect()
}

fn opted_in(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": {INJECT: "true"}},
        "spec": {"schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}})
}

fn sidecar_image(c: &Cluster, ns: &str, name: &str) -> Option<String> {
    let pod = c.get(ns, &format!("pod/{name}"));
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidecar")
        .and_then(|c| c["image"].as_str().map(String::from))
}

#[test]
fn helm_install_upgrade_and_uninstall_on_a_real_cluster() {
    let c = Cluster::from_env();
    let chart = root().join("charts/sidecar-injector");
    let chart = chart.to_str().unwrap();
    let install = |extra: &[&'static str]| {
        [
            &[
                "install",
                "sidecar-injector",
                chart,
                "-n",
                NS,
                "--create-namespace",
            ],
            extra,
        ]
        .concat()
    };
    // Bad values: refused with the schema's message, and nothing installed.
    let bad = helm_command(&c, &install(&["--set", "webhook.failurePolicy=Sometimes"]))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'"),
        "{err}"
    );
    assert_eq!(
        helm(&c, &["list", "-A", "-q"]).trim(),
        "",
        "a release was recorded"
    );
    for what in [
        "mutatingwebhookconfiguration/sidecar-injector",
        "namespace/sidecar-injector",
    ] {
        assert!(
            !c.kubectl(&["get", what], None).status.success(),
            "{what} was created"
        );
    }
    helm(&c, &install(&["--wait", "--timeout", "3m"]));
    c.ok(&[
        "-n",
        NS,
        "rollout",
        "status",
        "deployment/sidecar-injector",
        "--timeout=120s",
    ]);
    let ns = "helm-app";
    c.namespace(ns, json!({}));
    // The seed's second example (the debug sidecar), injected and run on the node.
    c.ok(&[
        "-n",
        ns,
        "apply",
        "-f",
        root()
            .join("tests/fixtures/seed/example-2-pod.yaml")
            .to_str()
            .unwrap(),
    ]);
    let seed = c.get(ns, "pod/my-pod");
    assert!(
        seed["metadata"]["annotations"][STATUS].is_string(),
        "{seed}"
    );
    c.wait(ns, "pod/my-pod", "Ready");

    // An upgrade that changes the default profile's image: the running replicas re-read the
    // config (no restart), then the next pod gets it.
    let replicas: Vec<String> = served_digests(&c).into_iter().map(|(n, _)| n).collect();
    let before: Vec<String> = served_digests(&c).into_iter().map(|(_, d)| d).collect();
    let values = std::fs::read_to_string(root().join("charts/sidecar-injector/values.yaml"))
        .unwrap()
        .replace(
            "image: busybox:1.36",
            "image: docker.io/library/busybox:1.36",
        );
    let file: PathBuf = c.dir.join("helm-upgrade-values.yaml");
    std::fs::write(&file, values).unwrap();
    helm(
        &c,
        &[
            "upgrade",
            "sidecar-injector",
            chart,
            "-n",
            NS,
            "-f",
            file.to_str().unwrap(),
            "--wait",
        ],
    );
    wait_for(
        "the replicas to serve the new profile",
        Duration::from_secs(150),
        || {
            let now = served_digests(&c);
            now.len() == 2
                && now
                    .iter()
                    .all(|(_, d)| !d.is_empty() && !before.contains(d))
        },
    );
    let now: Vec<String> = served_digests(&c).into_iter().map(|(n, _)| n).collect();
    assert_eq!(now, replicas, "the replicas were not restarted");
    c.apply_ok(&opted_in(ns, "after-upgrade"));
    assert_eq!(
        sidecar_image(&c, ns, "after-upgrade").as_deref(),
        Some("docker.io/library/busybox:1.36")
    );

    // Uninstall: nothing of it is left, and pod creates go on (unmodified).
    helm(&c, &["uninstall", "sidecar-injector", "-n", NS, "--wait"]);
    for (what, ns) in [
        ("mutatingwebhookconfiguration/sidecar-injector", NS),
        ("secret/sidecar-injector-certs", NS),
        ("lease/sidecar-injector-certs", NS),
    ] {
        wait_for(&format!("{what} gone"), Duration::from_secs(30), || {
            !c.kubectl(&["-n", ns, "get", what], None).status.success()
        });
    }
    c.apply_ok(&opted_in(ns, "after-uninstall"));
    assert_eq!(sidecar_image(&c, ns, "after-uninstall"), None);
}
