//! The deploy artifacts, checked with the real offline tools: kustomize renders every
//! variant, every built-in object validates strictly, the webhook configuration has the
//! fields the admission-webhook good practices ask for, its CEL selects the right pods, the
//! examples inject cleanly, and the Dockerfile passes hadolint.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn read_yaml(bytes: &[u8]) -> Vec<Value> {
    sidecar_injector::read_documents(std::str::from_utf8(bytes).unwrap()).unwrap()
}

fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["kustomize"])
        .arg(dir)
        .output()
        .expect("kubectl: run `make test-deps`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_yaml(&out.stdout)
}

/// Validates every object whose schema Kubernetes ships (not cert-manager's CRDs).
fn validate_builtin(objects: &[Value]) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = objects
        .iter()
        .filter(|o| {
            let api = o["apiVersion"].as_str().unwrap();
            !api.contains("cert-manager.io") && !api.contains("monitoring.coreos.com")
        })
        .enumerate()
        .map(|(i, o)| {
            let f = dir.path().join(format!("{i}.json"));
            std::fs::write(&f, serde_json::to_vec(o).unwrap()).unwrap();
            f
        })
        .collect();
    validate_strict(&files).unwrap_or_else(|e| panic!("strict validation failed:\n{e}"));
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn selfsigned_overlay() -> (tempfile::TempDir, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    common::selfsigned_overlay(Path::new(bin()), dir.path());
    let objects = kustomize(dir.path());
    (dir, objects)
}

#[test]
fn base_renders_and_validates_with_the_good_practices() {
    let objects = kustomize(&root().join("deploy"));
    validate_builtin(&objects);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    // --tls-auto: the token is needed, the certificate comes through the API.
    let sa = find(&objects, "ServiceAccount")[0];
    assert_eq!(sa["automountServiceAccountToken"], true);
    let d = find(&objects, "Deployment")[0];
    assert_eq!(d["metadata"]["namespace"], "sidecar-injector");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert!(pod["topologySpreadConstraints"].is_array());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--tls-auto"), "{args:?}");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(!volumes.iter().any(|v| v["secret"].is_object()));
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"] == "sidecar-injector-config"));
    let svc = find(&objects, "Service")[0];
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["port"] == 443 && p["targetPort"] == "https"));
    assert!(ports.iter().any(|p| p["port"] == 9090));
    let cm = find(&objects, "ConfigMap")[0];
    assert_eq!(
        cm["data"]["config.yaml"],
        sidecar_injector::DEFAULT_CONFIG_YAML,
        "the ConfigMap is not the embedded default"
    );
}

/// One image name: deploy/ installs what `make image` and the suite's images.sh build.
#[test]
fn deploy_installs_the_image_make_image_builds() {
    let image = format!("sidecar-injector:{}", env!("CARGO_PKG_VERSION"));
    let objects = kustomize(&root().join("deploy"));
    let deployment = find(&objects, "Deployment")[0];
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    assert!(
        makefile
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["IMAGE", "?=", image.as_str()]),
        "Makefile's IMAGE is not {image}"
    );
}

#[test]
fn webhook_configuration_selects_and_calls_as_documented() {
    let objects = kustomize(&root().join("deploy"));
    let mwc = find(&objects, "MutatingWebhookConfiguration")[0];
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 3);
    for h in &hooks[..2] {
        assert_eq!(h["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(h["sideEffects"], "None");
        assert_eq!(h["reinvocationPolicy"], "IfNeeded");
        assert!(h["timeoutSeconds"].as_i64().unwrap() <= 10);
        assert!(h["failurePolicy"].is_string());
        let rule = &h["rules"][0];
        assert_eq!(rule["operations"], serde_json::json!(["CREATE"]));
        assert_eq!(rule["resources"], serde_json::json!(["pods"]));
        assert_eq!(rule["apiGroups"], serde_json::json!([""]));
        assert_eq!(h["clientConfig"]["service"]["name"], "sidecar-injector");
        assert_eq!(
            h["clientConfig"]["service"]["namespace"],
            "sidecar-injector"
        );
        // The apiserver's rule for service paths: DNS-subdomain segments, so no query.
        let path = h["clientConfig"]["service"]["path"].as_str().unwrap();
        assert!(path[1..].split('/').all(|s| !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')));
    }
    let ns = &hooks[0];
    assert_eq!(ns["clientConfig"]["service"]["path"], "/mutate/enabled");
    assert_eq!(
        ns["namespaceSelector"]["matchLabels"]["sidecar-injector.io/injection"],
        "enabled"
    );
    let pod = &hooks[1];
    assert_eq!(pod["clientConfig"]["service"]["path"], "/mutate");
    let excluded = |hook: &Value, key: &str| -> Vec<String> {
        hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["key"] == key && e["operator"] == "NotIn")
            .map(|e| {
                e["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(excluded(pod, "sidecar-injector.io/injection").contains(&"enabled".to_string()));
    // Every webhook: never the system namespaces or the injector's own, whatever their labels.
    for hook in hooks {
        let names = excluded(hook, "kubernetes.io/metadata.name");
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "sidecar-injector",
        ] {
            assert!(
                names.contains(&ns.to_string()),
                "{ns} not excluded by {}",
                hook["name"]
            );
        }
    }
    assert!(!pod["matchConditions"].as_array().unwrap().is_empty());
    // The workload-warning webhook: allowed either way, and only for the workload kinds.
    let w = &hooks[2];
    assert_eq!(w["clientConfig"]["service"]["path"], "/workloads");
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["reinvocationPolicy"], "Never");
    let mut resources: Vec<String> = w["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            assert_eq!(r["operations"], serde_json::json!(["CREATE", "UPDATE"]));
            let group = r["apiGroups"][0].as_str().unwrap().to_string();
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |x| format!("{group}/{}", x.as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        [
            "apps/daemonsets",
            "apps/deployments",
            "apps/statefulsets",
            "batch/cronjobs",
            "batch/jobs"
        ]
    );
}

#[test]
fn the_workload_webhook_is_called_only_for_workloads_with_our_key_on_their_own_metadata() {
    let objects = kustomize(&root().join("deploy"));
    let mwc = find(&objects, "MutatingWebhookConfiguration")[0];
    let conditions = mwc["webhooks"][2]["matchConditions"].as_array().unwrap();
    let deployment = |meta: Value| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"template": {"metadata": {"annotations": {"sidecar-injector.io/inject": "true"}}}}})
    };
    for key in sidecar_injector::POD_KEYS {
        for place in ["annotations", "labels"] {
            let meta = serde_json::json!({"name": "web", place: {key: "x"}});
            assert!(
                cel_selects(conditions, &deployment(meta)),
                "{key} in {place}"
            );
        }
    }
    // The template's keys, other keys, our status: no call.
    for meta in [
        serde_json::json!({"name": "web"}),
        serde_json::json!({"name": "web", "annotations": {"other": "true"}, "labels": {"app": "web"}}),
        serde_json::json!({"name": "web", "annotations": {"sidecar-injector.io/status": "{}"}}),
    ] {
        assert!(
            !cel_selects(conditions, &deployment(meta.clone())),
            "{meta}"
        );
    }
}

/// Evaluates every matchCondition of the pod webhook the way the apiserver does (all must
/// be true), with `object` bound to the pod.
fn cel_selects(conditions: &[Value], pod: &Value) -> bool {
    use cel_interpreter::{Context, Program, Value as Cel};
    conditions.iter().all(|c| {
        let expr = c["expression"].as_str().unwrap();
        let program = Program::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        let mut ctx = Context::default();
        ctx.add_variable("object", pod.clone()).unwrap();
        match program.execute(&ctx) {
            Ok(Cel::Bool(b)) => b,
            other => panic!("{expr} on {pod}: {other:?}"),
        }
    })
}

#[test]
fn match_conditions_send_only_pods_with_the_opt_in_key() {
    let objects = kustomize(&root().join("deploy"));
    let mwc = find(&objects, "MutatingWebhookConfiguration")[0];
    let conditions = mwc["webhooks"][1]["matchConditions"].as_array().unwrap();
    let pod = |meta: Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "a", "image": "x"}]}})
    };
    let key = "sidecar-injector.io/inject";
    assert!(cel_selects(
        conditions,
        &pod(serde_json::json!({"name": "p", "annotations": {key: "true"}}))
    ));
    assert!(cel_selects(
        conditions,
        &pod(serde_json::json!({"name": "p", "labels": {key: "true"}}))
    ));
    assert!(cel_selects(
        conditions,
        &pod(serde_json::json!({"name": "p", "annotations": {key: "yes"}}))
    ));
    assert!(!cel_selects(
        conditions,
        &pod(serde_json::json!({"name": "p"}))
    ));
    assert!(!cel_selects(
        conditions,
        &pod(
            serde_json::json!({"name": "p", "labels": {"app": "x"}, "annotations": {"other": "true"}})
        )
    ));
    for example in ["shared-volume-pod.yaml", "share-process-pod.yaml"] {
        let text = std::fs::read_to_string(root().join("deploy/examples").join(example)).unwrap();
        let pod = read_yaml(text.as_bytes()).remove(0);
        assert!(cel_selects(conditions, &pod), "{example}");
    }
}

/// Every rule of the tls-auto RBAC names its objects, except `create`, which the API cannot
/// limit by name; and nothing beyond the Secret, the Lease and the webhook configuration.
#[test]
fn probes_have_their_own_port_and_the_network_policy_admits_each_port_from_its_caller() {
    let objects = kustomize(&root().join("deploy"));
    let c = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0];
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["containerPort"].clone())
    };
    // The server's default --probe-addr port, not exposed by the Service.
    assert_eq!(port("probes"), Some(serde_json::json!(8081)));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "probes", "{probe}");
    }
    let svc = find(&objects, "Service")[0];
    assert!(!svc["spec"]["ports"].to_string().contains("probes"));
    let policies = find(&objects, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let spec = &policies[0]["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        find(&objects, "Deployment")[0]["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = spec["ingress"].as_array().unwrap();
    let rule_for = |port: &str| {
        rules.iter().find(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == port)
        })
    };
    assert!(
        rule_for("https").unwrap()["from"].is_null(),
        "the apiserver, from anywhere"
    );
    let metrics = rule_for("metrics").unwrap();
    assert_eq!(
        metrics["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"sidecar-injector.io/metrics-scraper": "allowed"}}}])
    );
    assert!(
        rule_for("probes").is_none(),
        "the node's kubelet needs no rule"
    );
}

#[test]
fn tls_auto_rbac_is_as_narrow_as_the_api_allows() {
    let objects = kustomize(&root().join("deploy"));
    let mut granted = Vec::new();
    for role in find(&objects, "Role")
        .into_iter()
        .chain(find(&objects, "ClusterRole"))
    {
        for rule in role["rules"].as_array().unwrap() {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let names = rule["resourceNames"].as_array();
            assert!(!verbs.contains(&"*"), "{rule}");
            if verbs == ["create"] {
                assert!(names.is_none(), "{rule}");
            } else {
                assert!(
                    names.is_some_and(|n| !n.is_empty()),
                    "a rule without resourceNames: {rule}"
                );
            }
            for resource in rule["resources"].as_array().unwrap() {
                for verb in &verbs {
                    granted.push(format!("{} {verb}", resource.as_str().unwrap()));
                }
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "leases create",
            "leases get",
            "leases patch",
            "leases update",
            "mutatingwebhookconfigurations get",
            "mutatingwebhookconfigurations list",
            "mutatingwebhookconfigurations patch",
            "mutatingwebhookconfigurations watch",
            "secrets create",
            "secrets delete",
            "secrets get",
            "secrets list",
            "secrets update",
            "secrets watch",
        ]
    );
    for binding in find(&objects, "RoleBinding")
        .into_iter()
        .chain(find(&objects, "ClusterRoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "sidecar-injector", "namespace": "sidecar-injector"}])
        );
    }
}

/// The overlays that serve a certificate from files: no token, no tls-auto RBAC, the Secret
/// mounted, the files named on the command line.
fn assert_serves_from_files(objects: &[Value]) {
    for kind in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        assert!(
            find(objects, kind).is_empty(),
            "{kind} left in a file-based overlay"
        );
    }
    assert_eq!(
        find(objects, "ServiceAccount")[0]["automountServiceAccountToken"],
        false
    );
    let pod = &find(objects, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    let args = c["args"].to_string();
    assert!(
        args.contains("--tls-cert=/etc/sidecar-injector/tls/tls.crt")
            && !args.contains("--tls-auto"),
        "{args}"
    );
    assert!(c["env"].is_null());
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "sidecar-injector-tls"));
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/etc/sidecar-injector/tls"));
}

#[test]
fn cert_manager_overlay_wires_the_ca_injection() {
    let objects = kustomize(&root().join("deploy/cert-manager"));
    validate_builtin(&objects);
    assert_serves_from_files(&objects);
    let mwc = find(&objects, "MutatingWebhookConfiguration")[0];
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "sidecar-injector/sidecar-injector-tls"
    );
    let certs = find(&objects, "Certificate");
    let serving = certs
        .iter()
        .find(|c| c["metadata"]["name"] == "sidecar-injector-tls")
        .unwrap();
    assert_eq!(serving["spec"]["secretName"], "sidecar-injector-tls");
    let dns: Vec<&str> = serving["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"sidecar-injector.sidecar-injector.svc"));
    assert_eq!(find(&objects, "Issuer").len(), 2);
}

#[test]
fn selfsigned_overlay_fills_secret_and_ca_bundle() {
    use base64::Engine as _;
    let (dir, objects) = selfsigned_overlay();
    validate_builtin(&objects);
    assert_serves_from_files(&objects);
    let secret = find(&objects, "Secret")[0];
    assert_eq!(secret["metadata"]["name"], "sidecar-injector-tls");
    assert_eq!(secret["metadata"]["namespace"], "sidecar-injector");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let mwc = find(&objects, "MutatingWebhookConfiguration")[0];
    for h in mwc["webhooks"].as_array().unwrap() {
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(h["clientConfig"]["caBundle"].as_str().unwrap())
            .unwrap();
        assert_eq!(bundle, ca);
    }
    // The pair in the Secret is one the server accepts.
    let b64 = |k: &str| {
        // kustomize wraps long base64 values over several lines
        let text: String = secret["data"][k]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    };
    sidecar_injector::load_pair(&b64("tls.crt"), &b64("tls.key")).unwrap();
}

#[test]
fn examples_inject_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for example in [
        "shared-volume-pod.yaml",
        "share-process-pod.yaml",
        "deployment.yaml",
        "namespace.yaml",
    ] {
        let path = root().join("deploy/examples").join(example);
        let out = run(&["inject", "-f", path.to_str().unwrap()], b"");
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc = read_yaml(&out.stdout).remove(0);
        if doc["kind"] != "Namespace" {
            let text = serde_json::to_string(&doc).unwrap();
            assert!(
                text.contains("sidecar-injector.io/status"),
                "{example} was not injected"
            );
        }
        let f = dir.path().join(format!("{example}.json"));
        std::fs::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
        files.push(f);
    }
    validate_strict(&files).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = Command::new(std::env::var("HADOLINT").unwrap_or_else(|_| "hadolint".into()))
        .arg(root().join("Dockerfile"))
        .output()
        .expect("hadolint: run `make test-deps`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn helm() -> PathBuf {
    go_tool("helm")
}

#[test]
fn promtool_checks_the_alerts_and_runs_their_tests() {
    let promtool = go_tool("promtool");
    for args in [
        vec![
            "check",
            "rules",
            "../../charts/sidecar-injector/files/alerts.yaml",
        ],
        vec!["test", "rules", "alerts-test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(root().join("deploy/monitoring"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const CHART: &str = "charts/sidecar-injector";

/// `helm template` of the chart into namespace sidecar-injector with `args`: the objects, or
/// Helm's error.
fn helm_template(args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm())
        .args(["template", "sidecar-injector"])
        .arg(root().join(CHART))
        .args(["-n", "sidecar-injector"])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(read_yaml(&out.stdout))
}

/// An object as both sources must agree on it: without labels (Helm adds its own) and
/// namespace (Helm's is the release's), the config parsed rather than its text.
fn comparable(o: &Value) -> ((String, String), Value) {
    let mut o = o.clone();
    let meta = o["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("namespace");
    if o["kind"] == "ConfigMap" {
        let text = o["data"]["config.yaml"].as_str().unwrap().to_string();
        o["data"]["config.yaml"] = read_yaml(text.as_bytes()).remove(0);
    }
    let key = (
        o["kind"].as_str().unwrap().to_string(),
        o["metadata"]["name"].as_str().unwrap().to_string(),
    );
    (key, o)
}

#[test]
fn the_charts_defaults_render_what_deploy_installs() {
    let lint = Command::new(helm())
        .args(["lint", "--strict"])
        .arg(root().join(CHART))
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // The chart also declares the Secret and Lease the replicas write, so that `helm
    // uninstall` removes them (kustomize has no such lifecycle).
    let chart: std::collections::BTreeMap<_, _> = helm_template(&[])
        .unwrap()
        .iter()
        .filter(|o| o["kind"] != "Secret" && o["kind"] != "Lease")
        .map(comparable)
        .collect();
    // Helm's convention: the release's namespace is made by `--create-namespace`, not the chart.
    let deploy: std::collections::BTreeMap<_, _> = kustomize(&root().join("deploy"))
        .iter()
        .filter(|o| o["kind"] != "Namespace")
        .map(comparable)
        .collect();
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        deploy.keys().collect::<Vec<_>>()
    );
    for (key, object) in &deploy {
        assert_eq!(&chart[key], object, "{key:?} differs");
    }
}

#[test]
fn the_chart_with_other_values_renders_valid_objects() {
    let ca = b64(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
    let secret_ca = format!("tls.caBundle={ca}");
    for args in [
        vec![
            "--set",
            "tls.mode=certManager",
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "replicas=3",
        ],
        vec!["--set", "tls.mode=secret", "--set", &secret_ca],
        vec![
            "--set",
            "podDisruptionBudget.enabled=false",
            "--set",
            "networkPolicy.enabled=false",
            "--set",
            "mountServiceAccountToken=false",
            "--set",
            "webhook.namespaceSelector.matchExpressions[0].key=team",
            "--set",
            "webhook.namespaceSelector.matchExpressions[0].operator=Exists",
            "--set",
            "webhook.objectSelector.matchExpressions[0].key=sidecar",
            "--set",
            "webhook.objectSelector.matchExpressions[0].operator=DoesNotExist",
            "--set",
            "image.repository=registry.example.com/sidecar-injector",
            "--set",
            "image.tag=9.9.9",
        ],
    ] {
        let objects = helm_template(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        validate_builtin(&objects);
        let deployment = find(&objects, "Deployment")[0];
        let hooks = find(&objects, "MutatingWebhookConfiguration")[0];
        let pod_hook = &hooks["webhooks"][1];
        // Whatever the values, the system namespaces and the release's own stay excluded.
        assert!(
            pod_hook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["key"] == "kubernetes.io/metadata.name"
                    && e["values"]
                        .as_array()
                        .unwrap()
                        .contains(&"sidecar-injector".into())),
            "{args:?}"
        );
        match args[1] {
            "tls.mode=certManager" => {
                assert_eq!(pod_hook["failurePolicy"], "Ignore");
                assert_eq!(deployment["spec"]["replicas"], 3);
                assert!(
                    hooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_string()
                );
                assert_eq!(find(&objects, "Certificate").len(), 2);
                assert!(find(&objects, "Role").is_empty(), "no tls-auto RBAC");
            }
            "tls.mode=secret" => {
                assert_eq!(pod_hook["clientConfig"]["caBundle"], ca.as_str());
                assert!(find(&objects, "ValidatingAdmissionPolicy").is_empty());
            }
            _ => {
                assert!(find(&objects, "PodDisruptionBudget").is_empty());
                assert!(find(&objects, "NetworkPolicy").is_empty());
                assert_eq!(
                    pod_hook["namespaceSelector"]["matchExpressions"][2]["key"],
                    "team"
                );
                assert_eq!(
                    pod_hook["objectSelector"]["matchExpressions"][0]["key"],
                    "sidecar"
                );
                assert_eq!(
                    deployment["spec"]["template"]["spec"]["containers"][0]["image"],
                    "registry.example.com/sidecar-injector:9.9.9"
                );
                let cm = find(&objects, "ConfigMap")[0];
                let config = read_yaml(cm["data"]["config.yaml"].as_str().unwrap().as_bytes());
                assert_eq!(config[0]["mountServiceAccountToken"], false);
            }
        }
    }
}

#[test]
fn bad_values_fail_with_the_schemas_message() {
    for (set, message) in [
        (
            "webhook.failurePolicy=Sometimes",
            "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
        ),
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("replicas=two", "at '/replicas': got string, want integer"),
        ("tls.mode=secret", "caBundle"),
    ] {
        let err = helm_template(&["--set", set]).expect_err(set);
        assert!(err.contains(message), "{set}: {err}");
    }
}

/// Metric names in PromQL text: the server's, and kube-state-metrics' (the usual source of
/// a Deployment's replica counts).
fn metric_names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(sidecar_injector_[a-z_]+|kube_[a-z_]+)").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_server_exports() {
    // The chart's alerts and deploy/monitoring's are the same groups.
    let chart_alerts =
        read_yaml(&std::fs::read(root().join(CHART).join("files/alerts.yaml")).unwrap());
    let rule =
        read_yaml(&std::fs::read(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap());
    assert_eq!(rule[0]["spec"]["groups"], chart_alerts[0]["groups"]);
    let rendered = helm_template(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
    ])
    .unwrap();
    validate_builtin(&rendered);
    assert_eq!(
        find(&rendered, "PrometheusRule")[0]["spec"]["groups"],
        chart_alerts[0]["groups"]
    );
    assert_eq!(find(&rendered, "ServiceMonitor").len(), 1);

    // Every series the server exports, as a scrape shows them (profiles served included).
    let metrics = sidecar_injector::Metrics::new();
    metrics.serving_profiles(&sidecar_injector::Config::embedded().unwrap());
    let exported: std::collections::BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
        .collect();
    let known_elsewhere = ["kube_deployment_status_replicas_available"];
    let mut exprs: Vec<String> = chart_alerts[0]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(
                r["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("docs/monitoring.md#")),
                "{r}"
            );
            r["expr"].as_str().unwrap().to_string()
        })
        .collect();
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(root().join("deploy/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    let runbook = std::fs::read_to_string(root().join("docs/monitoring.md")).unwrap();
    for rule in chart_alerts[0]["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap();
        assert!(
            runbook.contains(&format!("### {alert}")),
            "docs/monitoring.md has no runbook for {alert}"
        );
    }
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                exported.contains(&name) || known_elsewhere.contains(&name.as_str()),
                "{name} (in {expr}) is not a series the server exports: {exported:?}"
            );
        }
    }
}
