//! The seed's flows on a real node: pods the webhook injected are scheduled, their images
//! pulled from the suite's local registry, started by the kubelet with containerd and runc,
//! and used as a person would (an HTTP GET to the pod, `kubectl attach -it`, `kubectl logs`).
//! The cluster is scripts/control-plane.sh's (started by scripts/e2e.sh); the webhook is
//! deploy/ installed as users install it, two replicas of the image on the node (as in
//! tests/in_cluster.rs, whose cluster this suite shares). Pod IPs exist only inside the
//! node's network namespace: the test reaches them with `ip netns exec $NODE_NETNS`.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, INJECT};
use common::deployed;
use common::root;
use serde_json::{json, Value};

const PROFILES: &str = "sidecar-injector.io/profiles";
const NATIVE: &str = "sidecar-injector.io/native-sidecar";
const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// The seed's first example: its hand-written sidecar, as a profile (tests/fixtures/seed).
const HELLO: &str = "Hello from the side container";

struct Node {
    c: Cluster,
    /// The local registry's access log: every pull the node attempted.
    registry_log: PathBuf,
}

/// The cluster with deploy/ installed as users install it (its two replicas are the webhook;
/// nothing runs on the host), their config deploy/'s plus the seed's profile.
fn node() -> MutexGuard<'static, Node> {
    static NODE: OnceLock<Mutex<Node>> = OnceLock::new();
    NODE.get_or_init(|| {
        let c = Cluster::from_env();
        deployed::install(&c);
        let config = deployed::config(&c);
        if !config.contains("\n  hello:\n") {
            let profile =
                std::fs::read_to_string(root().join("tests/fixtures/seed/hello-profile.yaml"))
                    .unwrap();
            deployed::set_config(&c, &format!("{config}{profile}"));
        }
        Mutex::new(Node {
            registry_log: c.dir.join("node/registry.log"),
            c,
        })
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// A fresh namespace with these labels.
    fn namespace(&self, ns: &str, labels: Value) {
        let _ = self.c.kubectl(
            &[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
        self.c.namespace(ns, labels);
    }

    fn apply_file(&self, ns: &str, rel: &str) {
        let path = root().join(rel);
        self.c
            .ok(&["-n", ns, "apply", "-f", path.to_str().unwrap()]);
    }

    fn pod(&self, ns: &str, name: &str) -> Value {
        self.c.get(ns, &format!("pod/{name}"))
    }

    fn logs(&self, ns: &str, pod: &str, container: &str) -> String {
        self.c.ok(&["-n", ns, "logs", pod, "-c", container])
    }
}

fn container<'v>(pod: &'v Value, list: &str, name: &str) -> &'v Value {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name} in {}", pod["spec"]))
}

#[test]
fn seed_example_1_nginx_serves_the_file_its_injected_sidecar_wrote() {
    let n = node();
    let ns = "seed-volume";
    n.namespace(ns, json!({}));
    n.apply_file(ns, "tests/fixtures/seed/example-1-pod.yaml");
    n.c.wait(ns, "pod/my-pod", "Ready");
    let pod = n.pod(ns, "my-pod");
    assert_eq!(
        container(&pod, "containers", "hello-writer")["image"],
        "busybox:1.36"
    );
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let url = format!("http://{ip}:8080/");
    let mut last = None;
    wait_for(
        &format!("{url} to answer {HELLO:?}"),
        Duration::from_secs(20),
        || {
            last = n.c.node_http_get(&url);
            last.as_deref().is_some_and(|b| b.contains(HELLO))
        },
    );
    eprintln!("GET {url}: {last:?}");
}

/// `kubectl attach -it POD -c sidecar` on a pseudo-terminal (util-linux `script`), typed into.
struct Attached {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<String>,
    seen: String,
}

impl Attached {
    fn new(n: &Node, ns: &str, pod: &str) -> Attached {
        let cmd = format!(
            "KUBECONFIG={} {} -n {ns} attach -it {pod} -c sidecar",
            n.c.kubeconfig.display(),
            n.c.kubectl.display()
        );
        let mut child = Command::new("script")
            .args(["-q", "-f", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux script");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Attached {
            child,
            stdin,
            output,
            seen: String::new(),
        }
    }

    /// Types `line` and returns what the terminal shows until `until` appears after it.
    fn type_line(&mut self, line: &str, until: &str) -> String {
        self.seen.clear();
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.seen.contains(until) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(text) => self.seen.push_str(&text),
                Err(_) => panic!(
                    "{line:?}: no {until:?} on the terminal; it shows {:?}",
                    self.seen
                ),
            }
        }
        self.seen.clone()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's master pid and its workers' pids, from `ps ax`.
fn nginx_pids(ps: &str) -> (u32, Vec<u32>) {
    let pid_of = |l: &str| l.split_whitespace().next().and_then(|p| p.parse().ok());
    let master = ps
        .lines()
        .filter(|l| l.contains("nginx: master process"))
        .find_map(pid_of)
        .unwrap_or_else(|| panic!("no nginx master in ps ax: {ps}"));
    let mut workers: Vec<u32> = ps
        .lines()
        .filter(|l| l.contains("nginx: worker process"))
        .filter_map(pid_of)
        .collect();
    workers.sort();
    assert!(!workers.is_empty(), "no nginx worker in ps ax: {ps}");
    (master, workers)
}

/// The seed's second example, as its user does it: attach, `ps ax`, `kill -HUP` the master,
/// `ps ax` again; then a delete that the sidecar does not hold up.
fn attach_ps_and_hup(ns: &str, run_as_user: Option<i64>, psa: &str) {
    let n = node();
    n.namespace(ns, json!({PSA_ENFORCE: psa}));
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/seed/example-2-pod.yaml")).unwrap();
    let mut pod = sidecar_injector::read_documents(&text).unwrap().remove(0);
    pod["metadata"]["namespace"] = json!(ns);
    if let Some(uid) = run_as_user {
        pod["spec"]["securityContext"] = json!({"runAsUser": uid});
    }
    n.c.apply_ok(&pod);
    n.c.wait(ns, "pod/my-pod", "Ready");
    let stored = n.pod(ns, "my-pod");
    let sidecar = container(&stored, "containers", "sidecar");
    assert_eq!(stored["spec"]["shareProcessNamespace"], true);
    assert_eq!(
        (&sidecar["stdin"], &sidecar["tty"]),
        (&json!(true), &json!(true))
    );
    match run_as_user {
        Some(uid) => {
            assert_eq!(sidecar["securityContext"]["runAsUser"], uid);
            assert!(sidecar["securityContext"]["capabilities"]["add"].is_null());
        }
        None => {
            assert_eq!(sidecar["securityContext"]["runAsUser"], 0);
            assert_eq!(
                sidecar["securityContext"]["capabilities"]["add"],
                json!(["SYS_PTRACE", "KILL"])
            );
        }
    }

    let mut term = Attached::new(&n, ns, "my-pod");
    // The shell's prompt, as a person pressing Enter after attaching sees it.
    wait_for(
        "a prompt on the attached terminal",
        Duration::from_secs(15),
        || {
            term.stdin.write_all(b"\n").unwrap();
            std::thread::sleep(Duration::from_millis(300));
            while let Ok(text) = term.output.try_recv() {
                term.seen.push_str(&text);
            }
            term.seen.contains("$ ") || term.seen.contains("# ")
        },
    );
    let before = term.type_line("ps ax; echo ps-done", "\nps-done");
    let (master, workers) = nginx_pids(&before);
    term.type_line(&format!("kill -HUP {master}; echo hup-sent"), "\nhup-sent");
    wait_for("nginx to log the reload", Duration::from_secs(10), || {
        n.logs(ns, "my-pod", "app").contains("reconfiguring")
    });
    let mut after = String::new();
    wait_for("new nginx workers", Duration::from_secs(10), || {
        after = term.type_line("ps ax; echo ps-done", "\nps-done");
        let (m, w) = nginx_pids(&after);
        assert_eq!(m, master, "the master stays: {after}");
        w.iter().all(|p| !workers.contains(p))
    });
    eprintln!("ps ax before HUP:\n{before}\nafter:\n{after}");
    drop(term);

    // SIGTERM ends the sidecar at once, not at the end of the 30 s grace period.
    let start = Instant::now();
    n.c.ok(&[
        "-n",
        ns,
        "delete",
        "pod",
        "my-pod",
        "--wait=true",
        "--timeout=30s",
    ]);
    let took = start.elapsed();
    eprintln!("pod deleted in {took:?}");
    assert!(took < Duration::from_secs(5), "deleted in {took:?}");
}

#[test]
fn seed_example_2_attach_ps_and_hup_as_the_apps_uid() {
    attach_ps_and_hup("seed-debug", Some(1001), "baseline");
}

#[test]
fn seed_example_2_attach_ps_and_hup_as_root_with_ptrace_and_kill() {
    // SYS_PTRACE: only the "privileged" level admits it.
    attach_ps_and_hup("seed-debug-root", None, "privileged");
}

#[test]
fn logging_profile_streams_the_apps_log_files() {
    let n = node();
    let ns = "seed-logging";
    n.namespace(ns, json!({}));
    n.c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "writer", "namespace": ns,
            "annotations": {INJECT: "true", PROFILES: "logging"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
            "command": ["sh", "-c",
                "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo \"app line $i\" >> /pod-data/app.log; sleep 1 & wait $!; done"]}]}}));
    n.c.wait(ns, "pod/writer", "Ready");
    wait_for(
        "the app's lines in kubectl logs -c log-tailer",
        Duration::from_secs(20),
        || {
            let logs = n.logs(ns, "writer", "log-tailer");
            logs.contains("app line 1\n") && logs.contains("app line 2\n")
        },
    );
}

#[test]
fn restricted_namespace_default_sidecar_passes_the_kubelets_non_root_check() {
    let n = node();
    let ns = "seed-restricted";
    n.namespace(ns, json!({PSA_ENFORCE: "restricted"}));
    n.c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": ns, "annotations": {INJECT: "true"}},
        "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "busybox:1.36",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait $!"],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}}}]}}));
    // Ready: both containers started, the sidecar past the kubelet's own runAsNonRoot check.
    n.c.wait(ns, "pod/app", "Ready");
    let pod = n.pod(ns, "app");
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s["started"] == true),
        "{statuses:?}"
    );
}

#[test]
fn native_sidecar_starts_before_the_app_and_its_job_completes() {
    let n = node();
    let ns = "seed-native";
    n.namespace(ns, json!({}));
    n.c.apply_ok(&json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {INJECT: "true", NATIVE: "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox:1.36",
                "command": ["sh", "-c", "echo done > /pod-data/result"]}]}}}}));
    n.c.wait(ns, "job/once", "Complete");
    let pods = n.c.get(ns, "pods");
    let pod = &pods["items"][0];
    let sidecar = container(pod, "initContainers", "sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    let started = |list: &str, name: &str| -> String {
        let status = pod["status"][list]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no status of {name}: {}", pod["status"]));
        let state = &status["state"];
        state["running"]["startedAt"]
            .as_str()
            .or(state["terminated"]["startedAt"].as_str())
            .unwrap_or_else(|| panic!("{name} never started: {state}"))
            .to_string()
    };
    // RFC 3339 in UTC with whole seconds: they compare as strings.
    let (s, a) = (
        started("initContainerStatuses", "sidecar"),
        started("containerStatuses", "app"),
    );
    assert!(s <= a, "sidecar started {s}, app {a}");
}

#[test]
fn an_unknown_image_fails_at_the_local_registry_and_goes_nowhere_else() {
    let n = node();
    let ns = "pull-safety";
    n.namespace(ns, json!({}));
    for (name, image) in [
        ("named", "registry.example.com/team/app:1"),
        ("literal", "192.0.2.10:5000/team/app:1"),
    ] {
        n.c.apply_ok(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": image}]}}));
        let host = image.split('/').next().unwrap();
        // containerd asked the local registry for it (`ns=` names the registry it stands for).
        wait_for(
            &format!("a pull of {image} at the local registry"),
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&n.registry_log)
                    .unwrap_or_default()
                    .contains(&format!(
                        "/v2/team/app/manifests/1?ns={}",
                        host.replace(':', "%3A")
                    ))
            },
        );
        let mut reason = String::new();
        wait_for(
            &format!("{name}'s pull to fail"),
            Duration::from_secs(30),
            || {
                let pod = n.pod(ns, name);
                reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                reason == "ErrImagePull" || reason == "ImagePullBackOff"
            },
        );
        let events = n.c.ok(&[
            "-n",
            ns,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        assert!(events.contains("not found"), "{events}");
    }
}
