//! `serve --tls-auto` end to end: deploy/ applied as it ships (`kubectl apply -k deploy`, no
//! certificate anywhere), the release server run with a token of deploy/'s own ServiceAccount
//! (so its RBAC is exactly what is tested), each replica a process on 127.0.0.1 with its own
//! Lease identity. The apiserver reaches the Service as in tests/e2e.rs (egress selector).
//! Every bad state the issue lists, with the outage window measured by creating pods in a
//! loop through the webhook meanwhile.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster};
use common::creates::Creates;
use common::server::{get_plain, Server};
use serde_json::{json, Value};
use sidecar_injector::{Material, Settings, SECRET_TYPE};

const NS: &str = "sidecar-injector";
const SECRET: &str = "sidecar-injector-certs";
const LEASE: &str = "sidecar-injector-certs";
const CONFIGURATION: &str = "sidecar-injector";
const LOOP_NS: &str = "tls-auto";

struct Auto {
    c: Cluster,
    /// A kubeconfig with a token of deploy/'s ServiceAccount.
    token: PathBuf,
}

fn auto() -> &'static Auto {
    static AUTO: OnceLock<Auto> = OnceLock::new();
    AUTO.get_or_init(|| {
        let mut c = Cluster::from_env();
        c.ok(&[
            "apply",
            "-k",
            common::root().join("deploy").to_str().unwrap(),
        ]);
        c.service_ip = c.service_ip("sidecar-injector");
        c.namespace(LOOP_NS, json!({}));
        let token = c.token_kubeconfig(NS, "sidecar-injector");
        Auto { c, token }
    })
}

/// One scenario at a time, from a clean slate: no Secret, no Lease, deploy/'s configuration.
fn scenario() -> (MutexGuard<'static, ()>, &'static Auto) {
    static LOCK: Mutex<()> = Mutex::new(());
    let turn = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let a = auto();
    for what in [format!("secret/{SECRET}"), format!("lease/{LEASE}")] {
        a.c.ok(&["-n", NS, "delete", "--ignore-not-found", &what]);
    }
    a.c.ok(&[
        "apply",
        "-k",
        common::root().join("deploy").to_str().unwrap(),
    ]);
    (turn, a)
}

/// Flags of a replica; `extra` for short lifetimes.
fn replica(a: &Auto, identity: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-auto",
        "--kubeconfig",
        a.token.to_str().unwrap(),
        "--tls-auto-namespace",
        NS,
        "--tls-auto-identity",
        identity,
        "--lease-duration",
        "2s",
        "--rotation-grace",
        "2s",
    ];
    args.extend(extra);
    Server::start_bin(&a.c.release, &args)
}

fn ready(s: &Server) -> bool {
    get_plain(&format!("http://{}/readyz", s.metrics)) == "ok\n"
}

fn route_to(a: &Auto, s: &Server) {
    a.c.route(&a.c.service_ip, &s.addr);
}

/// The Secret's material as the server reads it (`None`: missing or unusable).
fn material(c: &Cluster) -> Option<Material> {
    let out = c.kubectl(&["-n", NS, "get", "secret", SECRET, "-o", "json"], None);
    if !out.status.success() {
        return None;
    }
    let secret: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data: BTreeMap<String, Vec<u8>> = secret["data"]
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), b64decode(v.as_str().unwrap_or_default())))
        .collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Material::from_secret(Some((secret["type"].as_str()?, &data)), now).ok()
}

fn b64decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// Every webhook's caBundle, decoded (`None`: no configuration).
fn bundles(c: &Cluster) -> Option<Vec<String>> {
    let out = c.kubectl(
        &[
            "get",
            "mutatingwebhookconfiguration",
            CONFIGURATION,
            "-o",
            "json",
        ],
        None,
    );
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        v["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                String::from_utf8(b64decode(
                    w["clientConfig"]["caBundle"].as_str().unwrap_or(""),
                ))
                .unwrap()
            })
            .collect(),
    )
}

/// The Lease's holder and the serial each replica reports serving.
fn lease(c: &Cluster) -> (String, BTreeMap<String, String>) {
    let l = c.get(NS, &format!("lease/{LEASE}"));
    let reports = l["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix("serving.sidecar-injector.io/")?;
            Some((id.to_string(), v.as_str()?.split(' ').next()?.to_string()))
        })
        .collect();
    (
        l["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        reports,
    )
}

/// The Secret is usable and settled: one CA, no rotation under way, the bundle exactly it.
fn settled(c: &Cluster) -> Option<Material> {
    let m = material(c)?;
    let b = bundles(c)?;
    (m.cas.len() == 1 && m.next.is_none() && b.iter().all(|x| *x == m.bundle())).then_some(m)
}

/// Creates through the webhook in LOOP_NS until stopped, one every 50 ms.
fn loop_creates(tag: &str) -> Creates {
    Creates::start(&auto().c, LOOP_NS, tag, Duration::from_millis(50))
}

/// A way to break the Secret, by name.
type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>);

fn no_forbidden(servers: &[&Server]) {
    for s in servers {
        let lines = s.log_lines();
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("forbidden") || l.contains("Forbidden")),
            "a permission deploy/'s RBAC lacks: {:#?}",
            lines
                .iter()
                .filter(|l| l.to_lowercase().contains("forbidden"))
                .collect::<Vec<_>>()
        );
    }
}

fn metric(s: &Server, series: &str) -> f64 {
    s.metrics_text()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn report(name: &str, text: String) {
    let dir = common::root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tls-auto.md");
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    all.push_str(&format!("- {name}: {text}\n"));
    std::fs::write(path, all).unwrap();
    eprintln!("{name}: {text}");
}

#[test]
fn a_bare_cluster_two_replicas_starting_together_make_one_ca() {
    let (_t, a) = scenario();
    let c = &a.c;
    assert!(material(c).is_none());
    let started = Instant::now();
    let r1 = replica(a, "replica-1", &[]);
    let r2 = replica(a, "replica-2", &[]);
    route_to(a, &r1);
    wait_for("both replicas ready", Duration::from_secs(20), || {
        ready(&r1) && ready(&r2)
    });
    let ready_after = started.elapsed();
    let m = settled(c).expect("one CA, and the bundle is exactly it");
    let (holder, reports) = lease(c);
    assert!(holder == "replica-1" || holder == "replica-2", "{holder}");
    wait_for("both replicas to report", Duration::from_secs(10), || {
        lease(c).1.len() == 2
    });
    let (_, reports_now) = lease(c);
    assert!(
        reports_now.values().all(|s| *s == m.serial),
        "{reports:?} vs {}",
        m.serial
    );
    // One CA was generated, by one replica.
    let generated = metric(
        &r1,
        "sidecar_injector_tls_auto_writes_total{step=\"generated\"}",
    ) + metric(
        &r2,
        "sidecar_injector_tls_auto_writes_total{step=\"generated\"}",
    );
    assert_eq!(generated, 1.0);
    // And the apiserver trusts it: pods are injected.
    let creates = loop_creates("bare");
    std::thread::sleep(Duration::from_secs(2));
    let (n, failures, _) = creates.stop().summary();
    assert!(n > 5 && failures.is_empty(), "{failures:#?}");
    // With nothing to change, nothing is written: the configuration stays as it is.
    let rv = || {
        c.ok(&[
            "get",
            "mutatingwebhookconfiguration",
            CONFIGURATION,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = rv();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rv(),
        before,
        "the configuration was rewritten with nothing to change"
    );
    // The field manager owns the caBundle fields and nothing else.
    let mwc: Value = serde_json::from_str(&c.ok(&[
        "get",
        "mutatingwebhookconfiguration",
        CONFIGURATION,
        "--show-managed-fields",
        "-o",
        "json",
    ]))
    .unwrap();
    let ours: Vec<&Value> = mwc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["manager"] == "sidecar-injector-tls-auto")
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["operation"], "Apply");
    for (_, hook) in ours[0]["fieldsV1"]["f:webhooks"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("k:"))
    {
        let mut keys: Vec<&str> = hook
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(keys, [".", "f:clientConfig", "f:name"], "{hook}");
        assert_eq!(hook["f:clientConfig"], json!({"f:caBundle": {}}), "{hook}");
    }
    // A replica gone long ago (its report stale) is dropped from the Lease by the holder.
    c.ok(&[
        "-n",
        NS,
        "annotate",
        &format!("lease/{LEASE}"),
        "serving.sidecar-injector.io/gone=ab:cd 1000",
    ]);
    wait_for(
        "the stale report to be dropped",
        Duration::from_secs(10),
        || !lease(c).1.contains_key("gone"),
    );
    no_forbidden(&[&r1, &r2]);
    report(
        "bare cluster, two replicas at once",
        format!(
            "one CA; both ready {:.1} s after start",
            ready_after.as_secs_f64()
        ),
    );
}

/// Material made at `at` for `dns`, a CA and certificate valid for a day.
fn day_long(dns: &str, at: time::OffsetDateTime) -> Material {
    let day = Duration::from_secs(86400);
    let settings = Settings {
        dns: vec![dns.into()],
        ca_validity: day,
        ca_renew_before: day / 24,
        cert_validity: day,
        cert_renew_before: day / 24,
        grace: Duration::from_secs(1),
    };
    Material::generate(&settings, at).unwrap()
}

/// Two ready replicas, the Service on the first, pods created through it.
fn two_ready(a: &Auto, extra: &[&str]) -> (Server, Server) {
    let r1 = replica(a, "replica-1", extra);
    wait_for("replica-1 ready", Duration::from_secs(20), || ready(&r1));
    let r2 = replica(a, "replica-2", extra);
    route_to(a, &r1);
    wait_for("replica-2 ready", Duration::from_secs(20), || ready(&r2));
    (r1, r2)
}

#[test]
fn a_lost_or_broken_secret_is_restored_without_an_outage() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &[]);
    let original = settled(c).unwrap();
    let other = day_long("other", time::OffsetDateTime::now_utc());
    let secret = |kind: &str, data: &BTreeMap<String, Vec<u8>>| {
        let data: BTreeMap<&String, String> =
            data.iter().map(|(k, v)| (k, common::b64(v))).collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
               "type": kind, "data": data})
    };
    let mut mismatched = original.to_secret_data();
    mismatched.insert("tls.key".into(), other.tls_key.clone().into_bytes());
    let mut corrupt = original.to_secret_data();
    corrupt.insert(
        "ca.crt".into(),
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n".to_vec(),
    );
    let cases: Vec<Breakage> = vec![
        (
            "deleted",
            Box::new(|| drop(c.ok(&["-n", NS, "delete", "secret", SECRET]))),
        ),
        (
            "corrupt",
            Box::new(|| {
                drop(c.kubectl(
                    &["replace", "-f", "-"],
                    Some(secret(SECRET_TYPE, &corrupt).to_string().as_bytes()),
                ))
            }),
        ),
        (
            "key not matching its certificate",
            Box::new(|| {
                drop(c.kubectl(
                    &["replace", "-f", "-"],
                    Some(secret(SECRET_TYPE, &mismatched).to_string().as_bytes()),
                ))
            }),
        ),
        (
            "wrong type",
            Box::new(|| {
                // The leader restores a deleted Secret within milliseconds: delete and create
                // back to back through the API (not two kubectl runs), until the wrong type
                // is the one stored.
                let opaque: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret(
                    "Opaque",
                    &BTreeMap::from([("x".to_string(), b"y".to_vec())]),
                ))
                .unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let file = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
                    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                        .await
                        .unwrap();
                    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                        kube::Api::namespaced(kube::Client::try_from(config).unwrap(), NS);
                    for _ in 0..50 {
                        let _ = api.delete(SECRET, &Default::default()).await;
                        if api.create(&Default::default(), &opaque).await.is_ok() {
                            return;
                        }
                    }
                    panic!("the Opaque Secret never won the race against the leader");
                });
            }),
        ),
    ];
    let mut lines = Vec::new();
    for (what, break_it) in cases {
        let creates = loop_creates(&format!("restore-{}", what.split(' ').next().unwrap()));
        std::thread::sleep(Duration::from_millis(500));
        let broken = Instant::now();
        break_it();
        wait_for(
            &format!("the Secret ({what}) to be restored"),
            Duration::from_secs(20),
            || material(c).is_some_and(|m| m == original),
        );
        let restored = broken.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let (n, failures, window) = creates.stop().summary();
        assert!(
            failures.is_empty(),
            "{what}: {} of {n} creates failed: {failures:#?}",
            failures.len()
        );
        lines.push(format!(
            "{what}: restored in {} ms, {n} creates, 0 failed (window {} ms)",
            restored.as_millis(),
            window.as_millis()
        ));
    }
    assert!(ready(&r1) && ready(&r2));
    assert!(r1.log_has("the Secret is not usable") || r2.log_has("the Secret is not usable"));
    no_forbidden(&[&r1, &r2]);
    report(
        "Secret lost or broken (restored from the replicas' memory)",
        lines.join("; "),
    );
}

#[test]
fn a_wiped_ca_bundle_is_restored_within_seconds() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &[]);
    let m = settled(c).unwrap();
    let creates = loop_creates("wiped");
    std::thread::sleep(Duration::from_millis(500));
    let wiped = Instant::now();
    c.ok(&["patch", "mutatingwebhookconfiguration", CONFIGURATION, "--type=json", "-p",
        r#"[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"},{"op":"remove","path":"/webhooks/1/clientConfig/caBundle"}]"#]);
    wait_for(
        "the caBundle to be restored",
        Duration::from_secs(10),
        || bundles(c).is_some_and(|b| b.iter().all(|x| *x == m.bundle())),
    );
    let restored = wiped.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (n, failures, window) = creates.stop().summary();
    no_forbidden(&[&r1, &r2]);
    report(
        "caBundle wiped",
        format!(
            "restored in {} ms; {n} creates, {} failed, longest failure run {} ms",
            restored.as_millis(),
            failures.len(),
            window.as_millis()
        ),
    );
    assert!(restored < Duration::from_secs(5), "{restored:?}");
}

#[test]
fn a_tampered_secret_or_lease_does_not_reach_the_bundle() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &[]);
    let m = settled(c).unwrap();
    // CAs appended to ca.crt by whoever could write the Secret: one not named as ours (left
    // out), one that looks like ours (dropped, as no replica serves a certificate it signed).
    // Neither is ever published.
    let look_alike = day_long("foreign", time::OffsetDateTime::now_utc()).cas[0]
        .cert_pem
        .clone();
    let foreign = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "evil CA");
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    };
    // Past the rotation grace (2 s here) since both replicas serve the current certificate:
    // within it, a look-alike would be published until it ends (docs/security.md).
    std::thread::sleep(Duration::from_secs(3));
    let tampered = format!("{}{foreign}{look_alike}", m.bundle());
    c.ok(&[
        "-n",
        NS,
        "patch",
        "secret",
        SECRET,
        "--type=merge",
        "-p",
        &json!({"data": {"ca.crt": common::b64(tampered.as_bytes())}}).to_string(),
    ]);
    wait_for(
        "the Secret back to the injector's one CA",
        Duration::from_secs(10),
        || {
            let published = bundles(c).unwrap();
            assert!(
                published
                    .iter()
                    .all(|b| !b.contains(&foreign) && !b.contains(&look_alike)),
                "a foreign CA was published: {published:?}"
            );
            material(c).is_some_and(|now| now.cas == m.cas && now.ignored == 0)
        },
    );
    assert!(r1.log_has("left out of the caBundle") || r2.log_has("left out of the caBundle"));
    assert!(bundles(c).unwrap().iter().all(|b| *b == m.bundle()));
    // A report dated far in the future: the holder re-dates it to now, so it ages out like
    // any other instead of holding an old serial live forever.
    let key = "serving.sidecar-injector.io/forged";
    c.ok(&[
        "-n",
        NS,
        "annotate",
        &format!("lease/{LEASE}"),
        &format!("{key}=00:11 99999999999"),
    ]);
    let redated = || {
        let l = c.get(NS, &format!("lease/{LEASE}"));
        let seen = l["metadata"]["annotations"][key]
            .as_str()
            .and_then(|v| v.split_once(' '))
            .and_then(|(_, t)| t.parse::<i64>().ok());
        seen.is_some_and(|t| t <= time::OffsetDateTime::now_utc().unix_timestamp())
    };
    wait_for(
        "the future report re-dated",
        Duration::from_secs(10),
        redated,
    );
    assert!(ready(&r1) && ready(&r2));
    no_forbidden(&[&r1, &r2]);
}

#[test]
fn a_stolen_serving_token_can_change_only_the_ca_bundle_and_its_own_secret() {
    let (_t, a) = scenario();
    let c = &a.c;
    // The replicas filled in the caBundle under deploy/'s policy: what it allows still works.
    let (_r1, _r2) = two_ready(a, &[]);
    settled(c).expect("the caBundle written by the serving identity");
    let me = "system:serviceaccount:sidecar-injector:sidecar-injector";
    let refused = |what: &str, args: &[&str], stdin: Option<&str>| {
        let out = c.kubectl(&[&["--as", me], args].concat(), stdin.map(str::as_bytes));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("ValidatingAdmissionPolicy"),
            "{what}: not refused by the policy: {err}"
        );
        // The same request as the cluster admin passes: the identity is what is refused.
        let admin = c.kubectl(
            &[args, &["--dry-run=server"]].concat(),
            stdin.map(str::as_bytes),
        );
        assert!(
            admin.status.success() || args[0] == "patch",
            "{what}: refused for the admin too: {}",
            String::from_utf8_lossy(&admin.stderr)
        );
    };
    for (what, patch) in [
        (
            "failure policy",
            r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#,
        ),
        (
            "service path",
            r#"[{"op":"replace","path":"/webhooks/0/clientConfig/service/path","value":"/mutate/disabled"}]"#,
        ),
        (
            "rules",
            r#"[{"op":"replace","path":"/webhooks/1/rules/0/resources","value":["*"]}]"#,
        ),
        (
            "namespace selector",
            r#"[{"op":"replace","path":"/webhooks/0/namespaceSelector","value":{}}]"#,
        ),
        (
            "a label",
            r#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#,
        ),
        (
            "a webhook removed",
            r#"[{"op":"remove","path":"/webhooks/1"}]"#,
        ),
    ] {
        refused(
            what,
            &[
                "patch",
                "mutatingwebhookconfiguration",
                CONFIGURATION,
                "--type=json",
                "-p",
                patch,
            ],
            None,
        );
    }
    let object = |v: Value| v.to_string();
    refused(
        "another Secret",
        &["create", "-f", "-"],
        Some(&object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "other", "namespace": NS}, "type": "Opaque",
            "stringData": {"x": "y"}}))),
    );
    refused(
        "a token Secret under its own Secret's name",
        &["create", "-f", "-"],
        Some(&object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "minted-token", "namespace": NS,
                "annotations": {"kubernetes.io/service-account.name": "sidecar-injector"}},
            "type": "kubernetes.io/service-account-token"}))),
    );
    refused(
        "another Lease",
        &["create", "-f", "-"],
        Some(&object(
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "other", "namespace": NS}}),
        )),
    );
}

#[test]
fn expired_material_at_start_is_replaced_before_ready() {
    let (_t, a) = scenario();
    let c = &a.c;
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    let expired = day_long("sidecar-injector.sidecar-injector.svc", past);
    let data: BTreeMap<String, String> = expired
        .to_secret_data()
        .into_iter()
        .map(|(k, v)| (k, common::b64(&v)))
        .collect();
    c.apply_ok(
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
        "type": SECRET_TYPE, "data": data}),
    );
    let ca = common::b64(expired.bundle().as_bytes());
    c.ok(&["patch", "mutatingwebhookconfiguration", CONFIGURATION, "--type=json", "-p",
        &format!(r#"[{{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"{ca}"}},{{"op":"add","path":"/webhooks/1/clientConfig/caBundle","value":"{ca}"}}]"#)]);
    let started = Instant::now();
    let r1 = replica(a, "replica-1", &[]);
    route_to(a, &r1);
    // Never ready while the Secret still holds the expired material.
    let mut polls = 0;
    while !ready(&r1) {
        polls += 1;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready after 20 s: {:?}",
            r1.log_lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready_after = started.elapsed();
    let m = settled(c).expect("replaced and settled");
    assert_ne!(m.cas[0], expired.cas[0]);
    assert!(r1.log_has("has expired"), "{:?}", r1.log_lines());
    let creates = loop_creates("expired");
    std::thread::sleep(Duration::from_secs(1));
    let (n, failures, _) = creates.stop().summary();
    assert!(failures.is_empty(), "{failures:#?} of {n}");
    no_forbidden(&[&r1]);
    report(
        "expired material at start",
        format!(
            "replaced; ready {} ms after start ({polls} not-ready polls before)",
            ready_after.as_millis()
        ),
    );
}

#[test]
fn an_uninstalled_configuration_is_not_recreated() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &[]);
    c.ok(&["delete", "mutatingwebhookconfiguration", CONFIGURATION]);
    wait_for("the replicas to notice", Duration::from_secs(10), || {
        !ready(&r1) && !ready(&r2)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(bundles(c).is_none(), "the configuration was recreated");
    for r in [&r1, &r2] {
        assert_eq!(get_plain(&format!("http://{}/healthz", r.metrics)), "ok\n");
        assert!(
            r.log_has("does not exist (uninstalled?)"),
            "{:?}",
            r.log_lines()
        );
    }
    // Installed again: the bundle is filled in and both are ready.
    c.ok(&[
        "apply",
        "-k",
        common::root().join("deploy").to_str().unwrap(),
    ]);
    wait_for("ready again", Duration::from_secs(10), || {
        ready(&r1) && ready(&r2)
    });
    assert!(settled(c).is_some());
    no_forbidden(&[&r1, &r2]);
}

/// Short lifetimes: a CA rotation starts 10 s after each CA is made and takes two grace
/// periods (2 s each) plus the replicas' reports.
const SHORT: [&str; 8] = [
    "--ca-validity",
    "40s",
    "--ca-renew-before",
    "30s",
    "--cert-validity",
    "40s",
    "--cert-renew-before",
    "5s",
];

#[test]
fn the_leader_killed_mid_rotation_the_next_completes_it() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &SHORT);
    let first = settled(c).unwrap();
    wait_for("a rotation to start", Duration::from_secs(30), || {
        material(c).is_some_and(|m| m.next.is_some())
    });
    let (holder, _) = lease(c);
    let (leader, survivor) = if holder == "replica-1" {
        (r1, r2)
    } else {
        (r2, r1)
    };
    route_to(a, &survivor);
    drop(leader);
    let killed = Instant::now();
    let creates = loop_creates("takeover");
    wait_for(
        "the survivor to finish the rotation",
        Duration::from_secs(30),
        || settled(c).is_some_and(|m| m.cas[0] != first.cas[0]),
    );
    let done = killed.elapsed();
    let (n, failures, _) = creates.stop().summary();
    let (holder_now, _) = lease(c);
    assert_ne!(holder_now, holder, "the Lease did not move");
    assert!(failures.is_empty(), "{failures:#?} of {n}");
    no_forbidden(&[&survivor]);
    report("leader killed mid-rotation", format!("the other replica took the Lease and completed it {} ms after the kill; {n} creates, 0 failed", done.as_millis()));
}

#[test]
fn three_ca_rotations_while_pods_are_created_fail_no_create() {
    let (_t, a) = scenario();
    let c = &a.c;
    let (r1, r2) = two_ready(a, &SHORT);
    let creates = loop_creates("rotations");
    let mut cas = vec![settled(c).unwrap().cas[0].clone()];
    let started = Instant::now();
    while cas.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} rotations in 120 s",
            cas.len() - 1
        );
        if let Some(m) = settled(c) {
            if !cas.contains(&m.cas[0]) {
                cas.push(m.cas[0].clone());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (n, failures, _) = creates.stop().summary();
    assert!(
        failures.is_empty(),
        "{} of {n} creates failed: {failures:#?}",
        failures.len()
    );
    let dropped = metric(
        &r1,
        "sidecar_injector_tls_auto_writes_total{step=\"ca-dropped\"}",
    ) + metric(
        &r2,
        "sidecar_injector_tls_auto_writes_total{step=\"ca-dropped\"}",
    );
    assert!(dropped >= 3.0, "{dropped}");
    no_forbidden(&[&r1, &r2]);
    report(
        "three CA rotations",
        format!(
            "{} s, {n} pod creates meanwhile, 0 failed",
            started.elapsed().as_secs()
        ),
    );
}
