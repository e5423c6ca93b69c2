//! The webhook as users run it: `kubectl apply -k deploy` with deploy/ unchanged, its image
//! built from the Dockerfile (scripts/images.sh) and loaded into the node, two replicas with
//! `--tls-auto`. scripts/e2e.sh runs this file on a cluster of its own, where no webhook
//! process runs on the host: kube-apiserver calls the replicas through the Service (the
//! control plane's network resolves its ClusterIP to a ready pod, as kube-proxy would), and
//! the replicas reach the apiserver through the `kubernetes` Service, both by paths that keep
//! the pod network off the host (scripts/control-plane/network).
//!
//! What it measures (rollout, kill -9, latency) goes to target/e2e/in-cluster.md.

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::api::Api;
use common::cluster::{wait_for, Cluster, NS_LABEL, STATUS, WEBHOOK_IMAGE};
use common::creates::Creates;
use common::deployed::{edit_config, install, name, ready, replicas, settled, DEPLOYMENT, NS};
use common::measure::{quantile, timed_creates, unix_nanos, webhook_histogram, webhook_spans};
use common::root;
use serde_json::{json, Value};

const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// Where the loops create their pods (opted in by annotation).
const LOOP_NS: &str = "in-cluster-loop";

/// The cluster with deploy/ applied as the README says, both replicas Ready. One test at a
/// time: each leaves the Deployment as it found it (two Ready replicas, deploy/'s config).
fn installed() -> (MutexGuard<'static, ()>, &'static Cluster) {
    static LOCK: Mutex<()> = Mutex::new(());
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    let turn = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let c = CLUSTER.get_or_init(|| {
        let c = Cluster::from_env();
        install(&c);
        c.namespace(LOOP_NS, json!({}));
        c
    });
    settled(c);
    (turn, c)
}

/// The sum of a counter's series in a replica's /metrics, read from inside the node.
fn replica_counter(c: &Cluster, pod: &Value, series: &str) -> f64 {
    let text = c
        .pod_metrics(pod)
        .unwrap_or_else(|| panic!("{}'s metrics", name(pod)));
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The same over both replicas.
fn replicas_counter(c: &Cluster, series: &str) -> f64 {
    replicas(c)
        .iter()
        .map(|p| replica_counter(c, p, series))
        .sum()
}

fn report(line: String) {
    let dir = root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("in-cluster.md");
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    all.push_str(&line);
    all.push('\n');
    std::fs::write(path, all).unwrap();
    eprintln!("{line}");
}

#[test]
fn kubectl_apply_k_deploy_runs_two_ready_replicas_that_inject_through_the_service() {
    let (_t, c) = installed();
    // Nothing on the host: the Service's calls are not routed to a local process.
    let service_ip = c.service_ip("sidecar-injector");
    let routes = std::fs::read_to_string(&c.routes).unwrap_or_default();
    assert!(
        !routes.contains(&service_ip),
        "a host route for the Service: {routes}"
    );
    for p in replicas(c) {
        assert_eq!(
            p["spec"]["containers"][0]["image"],
            WEBHOOK_IMAGE,
            "{}",
            name(&p)
        );
    }
    // The replicas made their certificate and filled in every webhook's caBundle.
    let hooks = c.get(NS, "mutatingwebhookconfiguration/sidecar-injector");
    for h in hooks["webhooks"].as_array().unwrap() {
        assert!(
            h["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|b| !b.is_empty()),
            "{} has no caBundle",
            h["name"]
        );
    }
    // A pod in a labelled namespace is injected by them, then runs on the node.
    let ns = "in-cluster-app";
    c.namespace(ns, json!({NS_LABEL: "enabled"}));
    let before = replicas_counter(c, "sidecar_injector_admission_requests_total");
    c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "command": ["sleep", "3600"]}]}}));
    let pod = c.get(ns, "pod/app");
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    assert_eq!(
        replicas_counter(c, "sidecar_injector_admission_requests_total") - before,
        1.0,
        "the replicas answered the pod's review (one call: the token mount is in the patch)"
    );
    c.wait(ns, "pod/app", "Ready");
}

#[test]
fn the_webhooks_image_runs_as_a_restricted_pod() {
    let (_t, c) = installed();
    let ns = "webhook-image";
    c.namespace(ns, json!({PSA_ENFORCE: "restricted"}));
    c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dev", "namespace": ns},
        "spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "server", "image": WEBHOOK_IMAGE, "imagePullPolicy": "IfNotPresent",
                "args": ["serve", "--dev"],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8081}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}}}]}}));
    // Ready: the kubelet's probe reached the probe listener.
    c.wait(ns, "pod/dev", "Ready");
    let ip = c.get(ns, "pod/dev")["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics = c
        .node_http_get(&format!("http://{ip}:9090/metrics"))
        .unwrap_or_default();
    assert!(metrics.contains("sidecar_injector_admission_requests_total"));
}

#[test]
fn a_rollout_restart_under_pod_creates_fails_none() {
    let (_t, c) = installed();
    let old: Vec<String> = replicas(c).iter().map(name).collect();
    let creates = Creates::start(c, LOOP_NS, "rollout", Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    c.ok(&["-n", NS, "rollout", "restart", DEPLOYMENT]);
    settled(c);
    let rolled = started.elapsed();
    // Past the old replicas' exit, so their drain is inside the loop.
    std::thread::sleep(Duration::from_secs(2));
    let outcome = creates.stop();
    let new: Vec<String> = replicas(c).iter().map(name).collect();
    assert!(
        new.iter().all(|n| !old.contains(n)),
        "not rolled: {old:?} -> {new:?}"
    );
    let failures = outcome.failures();
    report(format!(
        "- `kubectl rollout restart` under a create loop: rolled in {:.1} s; {} creates, {} failed, the slowest {} ms",
        rolled.as_secs_f64(),
        outcome.attempts.len(),
        failures.len(),
        outcome.slowest.as_millis()
    ));
    assert!(outcome.attempts.len() > 100, "too few creates to tell");
    assert!(failures.is_empty(), "failed creates: {failures:#?}");
}

#[test]
fn kill_9_of_a_replica_fails_creates_only_until_its_endpoint_is_removed() {
    let (_t, c) = installed();
    let creates = Creates::start(c, LOOP_NS, "kill", Duration::from_millis(20));
    // The replica the apiserver is calling (its connection, HTTP/2, goes to one of them).
    let counts = |c: &Cluster| -> Vec<f64> {
        replicas(c)
            .iter()
            .map(|p| replica_counter(c, p, "sidecar_injector_admission_requests_total"))
            .collect()
    };
    let before_counts = counts(c);
    std::thread::sleep(Duration::from_secs(2));
    let serving = counts(c)
        .iter()
        .zip(&before_counts)
        .position(|(after, before)| after > before)
        .expect("a replica answering the loop's reviews");
    let victim = replicas(c).remove(serving);
    let container = victim["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let restarts = |c: &Cluster| {
        c.get(NS, &format!("pod/{}", name(&victim)))["status"]["containerStatuses"][0]
            ["restartCount"]
            .as_u64()
            .unwrap()
    };
    let before = restarts(c);
    let killed = Instant::now();
    let out = Command::new("ctr")
        .args(["--address", &c.env["CONTAINERD_ADDRESS"], "-n", "k8s.io"])
        .args(["tasks", "kill", "--signal", "SIGKILL", &container])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not Ready (the kubelet saw the exit), then restarted and Ready again.
    let mut unready = None;
    wait_for("the endpoint removed", Duration::from_secs(20), || {
        let gone = !ready(&c.get(NS, &format!("pod/{}", name(&victim))));
        gone && unready.replace(killed.elapsed()).is_none()
    });
    wait_for("the replica restarted", Duration::from_secs(60), || {
        restarts(c) > before
    });
    settled(c);
    std::thread::sleep(Duration::from_secs(2));
    let outcome = creates.stop();
    let failures = outcome.failures();
    let window = outcome.failing_until(killed);
    report(format!(
        "- `kill -9` of the replica serving the apiserver, under a create loop (one create every 20 ms): \
         {} creates, {} failed, the last {} ms after the kill, the slowest took {} ms; \
         the pod was marked not Ready {} ms after the kill",
        outcome.attempts.len(),
        failures.len(),
        window.as_millis(),
        outcome.slowest.as_millis(),
        unready.unwrap_or_default().as_millis()
    ));
    // Whatever failed, failed at the call (never a pod stored without its sidecar), and only
    // until the dead endpoint was gone.
    assert!(
        failures.iter().all(|f| !f.contains("without the sidecar")),
        "{failures:#?}"
    );
    assert!(
        window < Duration::from_secs(5),
        "creates failed for {window:?} after the kill: {failures:#?}"
    );
}

/// Sets deploy/'s `mountServiceAccountToken`.
fn mount_token(c: &Cluster, on: bool) {
    edit_config(
        c,
        &format!("mountServiceAccountToken: {}", !on),
        &format!("mountServiceAccountToken: {on}"),
    );
}

#[test]
fn latency_with_the_webhook_as_a_pod() {
    let (_t, c) = installed();
    const N: usize = 500;
    let api = Api::new(c);
    let calls = || webhook_histogram(c).last().map_or(0.0, |b| b.1) as usize;
    // Each namespace's creates, and the apiserver's calls and trace spans for them.
    let measure = |ns: &str, labels: Value| {
        c.namespace(ns, labels);
        let (before, from) = (calls(), unix_nanos());
        let times = timed_creates(&api, ns, N, true);
        let (count, to) = (calls() - before, unix_nanos());
        let mut spans = Vec::new();
        if count > 0 {
            // The apiserver's batch exporter sends them every 5 s.
            wait_for(&format!("{count} spans"), Duration::from_secs(60), || {
                spans = webhook_spans(c, from, to);
                spans.len() >= count
            });
        }
        (times, count, spans)
    };
    let (plain, plain_calls, _) = measure("latency-plain", json!({}));
    let (shipped, shipped_calls, spans) = measure("latency-shipped", json!({NS_LABEL: "enabled"}));
    mount_token(c, false);
    let flipped = measure("latency-token-off", json!({NS_LABEL: "enabled"}));
    mount_token(c, true);
    assert_eq!(plain_calls, 0);
    assert_eq!(
        shipped_calls, N,
        "mountServiceAccountToken: true: one call per pod"
    );
    assert_eq!(
        flipped.1,
        2 * N,
        "mountServiceAccountToken: false: two calls per pod"
    );
    let steps: Vec<f64> = spans.iter().map(|s| s.step_us).collect();
    let flipped_steps: Vec<f64> = flipped.2.iter().map(|s| s.step_us).collect();
    report(format!(
        "\n| webhook as two pods behind its Service (N = {N} sequential creates, realistic pod) | p50 | p99 |\n|---|---|---|\n\
         | pod create, no webhook | {:.2} ms | {:.2} ms |\n\
         | pod create through the webhook as shipped, mountServiceAccountToken: true ({shipped_calls} calls) | {:.2} ms | {:.2} ms |\n\
         | the same, mountServiceAccountToken: false ({} calls) | {:.2} ms | {:.2} ms |\n\
         | one call as kube-apiserver traces it (\"Call mutating webhook\"), as shipped | {:.0} µs | {:.0} µs |\n\
         | the same, mountServiceAccountToken: false | {:.0} µs | {:.0} µs |\n",
        quantile(&plain, 0.5), quantile(&plain, 0.99),
        quantile(&shipped, 0.5), quantile(&shipped, 0.99),
        flipped.1, quantile(&flipped.0, 0.5), quantile(&flipped.0, 0.99),
        quantile(&steps, 0.5), quantile(&steps, 0.99),
        quantile(&flipped_steps, 0.5), quantile(&flipped_steps, 0.99),
    ));
}

/// The release binary with `args` against this cluster: (exit code, stdout, stderr).
fn run_bin(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(&c.release)
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The profile digests the status annotations of `ns`'s pods of `app` record.
fn recorded_digests(c: &Cluster, ns: &str, app: &str) -> Vec<String> {
    c.live_pods(ns, &format!("app={app}"))
        .iter()
        .map(|p| {
            let status: Value =
                serde_json::from_str(p["metadata"]["annotations"][STATUS].as_str().unwrap())
                    .unwrap();
            status["digests"]["default"].as_str().unwrap().to_string()
        })
        .collect()
}

fn deployment(ns: &str, name: &str, replicas: u32, container: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "progressDeadlineSeconds": 10,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]}}}})
}

#[test]
fn a_profile_change_is_found_as_stale_and_rolled_out_workload_by_workload() {
    let (_t, c) = installed();
    let ns = "stale";
    c.namespace(ns, json!({NS_LABEL: "enabled"}));
    let sleeper = json!({"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]});
    c.apply_ok(&deployment(ns, "web", 2, sleeper.clone()));
    // Ready until restarted: its restarted pods never are, so its rollout cannot finish.
    let mut fails = sleeper.clone();
    fails["env"] = json!([{"name": "RESTARTED", "valueFrom": {"fieldRef":
        {"fieldPath": "metadata.annotations['kubectl.kubernetes.io/restartedAt']"}}}]);
    fails["readinessProbe"] = json!({"exec": {"command": ["sh", "-c", "[ -z \"$RESTARTED\" ]"]},
        "periodSeconds": 1});
    c.apply_ok(&deployment(ns, "a-fails-after-restart", 1, fails));
    c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": ns, "labels": {"app": "bare"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [sleeper]}}));
    for what in ["deployment/web", "deployment/a-fails-after-restart"] {
        c.ok(&["-n", ns, "rollout", "status", what, "--timeout=90s"]);
    }
    let old = recorded_digests(c, ns, "web");
    assert_eq!(old.len(), 2);
    // Nothing is stale yet.
    let (code, out, err) = run_bin(c, &["check", "-n", ns]);
    assert_eq!(code, 0, "{out}{err}");

    // The operator changes the profile's image; the replicas serve it.
    let (from, to) = (
        "image: busybox:1.36",
        "image: docker.io/library/busybox:1.36",
    );
    edit_config(c, from, to);
    let (code, out, err) = run_bin(c, &["check", "-A"]);
    assert_eq!(code, 1, "{out}{err}");
    let stale: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("stale ") && l.contains(" stale "))
        .collect();
    assert_eq!(stale.len(), 4, "{out}");
    assert!(
        stale.iter().all(|l| l.contains("profile-changed")
            && l.contains(
                r#"default/sidecar: image "busybox:1.36" -> "docker.io/library/busybox:1.36""#
            )),
        "{out}"
    );

    let (code, out, err) = run_bin(c, &["rollout", "--stale", "-n", ns, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("would restart deployment/stale/web (2 stale pods)"),
        "{out}"
    );
    assert!(out.contains("left pod/stale/bare"), "{out}");
    assert_eq!(
        recorded_digests(c, ns, "web"),
        old,
        "a dry run changes nothing"
    );

    // The first workload cannot become available: the rollout stops there.
    let (code, out, err) = run_bin(c, &["rollout", "--stale", "-n", ns]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("stopped: deployment/stale/a-fails-after-restart did not become available"),
        "{out}"
    );
    assert!(out.contains("not restarted: deployment/stale/web"), "{out}");
    assert_eq!(recorded_digests(c, ns, "web"), old);

    c.ok(&["-n", ns, "delete", "deployment", "a-fails-after-restart"]);
    let (code, out, err) = run_bin(c, &["rollout", "--stale", "-n", ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("restarted deployment/stale/web (2 stale pods)"),
        "{out}"
    );
    assert!(out.contains("left pod/stale/bare"), "{out}");
    let new = recorded_digests(c, ns, "web");
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|d| !old.contains(d)), "{old:?} -> {new:?}");
    // Once the replaced pods have terminated, only the bare pod is stale.
    let mut out = String::new();
    wait_for("only the bare pod stale", Duration::from_secs(30), || {
        out = run_bin(c, &["check", "-n", ns]).1;
        let stale: Vec<&str> = out.lines().filter(|l| l.contains(" stale ")).collect();
        stale.len() == 1 && stale[0].contains("pod/bare")
    });
    report(format!(
        "- stale sidecars: after an image change in the profile, `check -A` found 4 stale pods; \
         `rollout --stale` stopped at a Deployment that could not become available, then \
         restarted the other (2 pods: digests {} -> {}), left the bare pod",
        old[0], new[0]
    ));
    c.ok(&["delete", "namespace", ns, "--wait=false"]);
    edit_config(c, to, from);
}
