//! The control plane that scripts/e2e.sh starts, driven with its kubectl: shared by the
//! end-to-end suites (tests/e2e.rs, tests/tls_auto.rs).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::root;

pub const NS_LABEL: &str = "sidecar-injector.io/injection";
pub const INJECT: &str = "sidecar-injector.io/inject";
pub const STATUS: &str = "sidecar-injector.io/status";
/// The name of the webhook in deploy/ that selects labelled namespaces.
pub const NS_WEBHOOK: &str = "namespace.sidecar-injector.io";
/// The scheduler of pods that only exercise admission: none serves it, so they are stored and
/// stay Pending, off the node (their spec never gains a nodeName while a test reads it).
pub const OFF_NODE: &str = "sidecar-injector-e2e-admission-only";

/// The webhook's image as scripts/images.sh tags it and deploy/ installs it.
pub const WEBHOOK_IMAGE: &str = concat!("sidecar-injector:", env!("CARGO_PKG_VERSION"));

pub struct Cluster {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub routes: PathBuf,
    /// The control plane's state directory: scratch files go here.
    pub dir: PathBuf,
    pub webhook_client_ca: PathBuf,
    /// The apiserver's "Call mutating webhook" trace spans, one JSON object a line.
    pub webhook_spans: PathBuf,
    pub overlay: PathBuf,
    /// The release binary, as deployed.
    pub release: PathBuf,
    /// The ClusterIP of the webhook's Service, once the suite has applied it.
    pub service_ip: String,
    pub apiserver: String,
    /// Every line of the control plane's env file (scripts/control-plane.sh lists them).
    pub env: HashMap<String, String>,
}

impl Cluster {
    /// The control plane that scripts/e2e.sh started (its env file in SIDECAR_E2E_ENV).
    pub fn from_env() -> Cluster {
        let env_file = std::env::var("SIDECAR_E2E_ENV").unwrap_or_else(|_| {
            panic!(
                "SIDECAR_E2E_ENV is not set: the end-to-end suite needs the control plane that \
                 `make e2e` (scripts/e2e.sh) builds and starts"
            )
        });
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{env_file}: {e}: was the control plane started?"));
        let env: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get =
            |k: &str| PathBuf::from(env.get(k).unwrap_or_else(|| panic!("{env_file}: no {k}")));
        let release = std::env::var_os("SIDECAR_E2E_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target/release/sidecar-injector"));
        assert!(
            release.exists(),
            "{}: the release binary is missing (cargo build --release)",
            release.display()
        );
        let dir = get("EGRESS_ROUTES").parent().unwrap().to_path_buf();
        Cluster {
            kubectl: get("BIN_DIR").join("kubectl"),
            kubeconfig: get("KUBECONFIG"),
            routes: get("EGRESS_ROUTES"),
            webhook_client_ca: get("WEBHOOK_CLIENT_CA"),
            webhook_spans: get("WEBHOOK_SPANS"),
            apiserver: env["APISERVER_URL"].to_string(),
            overlay: dir.join("overlay"),
            dir,
            release,
            service_ip: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A kubeconfig for this cluster that authenticates as ServiceAccount `ns/sa` with a token.
    pub fn token_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
        let token = self.ok(&["-n", ns, "create", "token", sa, "--duration=2h"]);
        let mut config: Value =
            serde_json::from_str(&self.ok(&["config", "view", "--raw", "--minify", "-o", "json"]))
                .unwrap();
        config["users"][0]["user"] = json!({"token": token});
        let path = self.dir.join(format!("kubeconfig-{ns}-{sa}"));
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    /// The ClusterIP of Service `name` in the injector's namespace.
    pub fn service_ip(&self, name: &str) -> String {
        self.ok(&[
            "-n",
            "sidecar-injector",
            "get",
            "service",
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
    }

    /// `kubectl wait --for=condition=CONDITION`, which must succeed within 90 s; the failure
    /// shows what `kubectl describe` says.
    pub fn wait(&self, ns: &str, what: &str, condition: &str) {
        let out = self.kubectl(
            &[
                "-n",
                ns,
                "wait",
                what,
                &format!("--for=condition={condition}"),
                "--timeout=90s",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{ns}/{what} never {condition}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.kubectl(&["-n", ns, "describe", what], None)
                .stdout
                .escape_ascii()
        );
    }

    /// An HTTP GET from inside the node's network namespace, where pod IPs are.
    pub fn node_http_get(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.env["NODE_NETNS"]])
            .args(["curl", "-sf", "-m", "2", url])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A pod's /metrics on the webhook's metrics port (9090), read from inside the node.
    pub fn pod_metrics(&self, pod: &Value) -> Option<String> {
        let ip = pod["status"]["podIP"].as_str()?;
        self.node_http_get(&format!("http://{ip}:9090/metrics"))
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.kubectl.display()));
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or_default());
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn apply(&self, object: &Value) -> Output {
        self.kubectl(&["apply", "-f", "-"], Some(object.to_string().as_bytes()))
    }

    pub fn apply_ok(&self, object: &Value) -> Output {
        let out = self.apply(object);
        assert!(
            out.status.success(),
            "kubectl apply {}/{}: {}",
            object["kind"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The pods of `ns` matching `selector` (`-l`; "" for all) that are not terminating.
    pub fn live_pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        let mut args = vec!["-n", ns, "get", "pods", "-o", "json"];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let list: Value = serde_json::from_str(&self.ok(&args)).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
    }

    pub fn get(&self, ns: &str, what: &str) -> Value {
        serde_json::from_str(&self.ok(&["-n", ns, "get", what, "-o", "json"])).unwrap()
    }

    /// A namespace with these labels, once its "default" ServiceAccount exists.
    pub fn namespace(&self, name: &str, labels: Value) {
        self.apply_ok(&json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}));
        self.wait_for_default_service_account(name);
    }

    /// The ServiceAccount admission plugin refuses pods until the serviceaccount controller
    /// has made the namespace's "default" ServiceAccount.
    pub fn wait_for_default_service_account(&self, ns: &str) {
        wait_for(
            &format!("serviceaccount {ns}/default"),
            Duration::from_secs(30),
            || {
                self.kubectl(&["-n", ns, "get", "serviceaccount", "default"], None)
                    .status
                    .success()
            },
        );
    }

    /// The webhook as deployed: the release binary's `serve` arguments with the self-signed
    /// overlay's serving pair, logging JSON.
    pub fn webhook_args(&self) -> Vec<String> {
        vec![
            "--log-format".into(),
            "json".into(),
            "--tls-cert".into(),
            self.overlay.join("tls.crt").display().to_string(),
            "--tls-key".into(),
            self.overlay.join("tls.key").display().to_string(),
        ]
    }

    /// Sends the webhook Service `service`'s calls to `addr`.
    pub fn route(&self, service_ip: &str, addr: &str) {
        let mut routes: Vec<String> = std::fs::read_to_string(&self.routes)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with(&format!("{service_ip}:443 ")))
            .map(String::from)
            .collect();
        routes.push(format!("{service_ip}:443 {addr}"));
        let tmp = self.routes.with_extension("tmp");
        std::fs::write(&tmp, routes.join("\n") + "\n").unwrap();
        std::fs::rename(tmp, &self.routes).unwrap();
    }
}

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
