//! Pure: the webhook configuration, the namespace's labels, the object and the injection
//! config in, a `Finding` out.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::admission::Outcome;
use crate::engine::config::Config;
use crate::engine::inject::{Policy, INJECT_KEY};
use crate::engine::selection::{select, Selection, Skip};

use super::injected::{already_injected, marker};
use super::review::{review, Reviewed};

/// The namespace label that deploy/'s configuration selects on (SPEC "Opting in and out").
const NAMESPACE_LABEL: &str = "sidecar-injector.io/injection";
/// Namespaces the deployed configuration never sends, whatever their labels.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It carries the status marker.
    Injected,
    /// A pod created from it now would get the sidecars.
    WouldInject,
    /// A live pod without the sidecars that a CREATE now would inject: recreate it.
    MustRecreate,
    /// A live pod whose sidecars came from another version of a profile than the config's.
    Stale,
    /// A CREATE now would leave it unchanged.
    NotInjected,
    /// A CREATE now would be denied.
    Denied,
}

impl Verdict {
    pub fn ok(self) -> bool {
        matches!(self, Verdict::Injected | Verdict::WouldInject)
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::WouldInject => "would-inject",
            Verdict::MustRecreate => "must-recreate",
            Verdict::Stale => "stale",
            Verdict::NotInjected => "not-injected",
            Verdict::Denied => "denied",
        }
    }
}

/// One object's answer: the table row and the `-o json` item.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub namespace: String,
    pub object: String,
    pub result: Verdict,
    pub reason: String,
    /// `configuration/webhook` that decided, if one was called.
    pub webhook: Option<String>,
    pub profiles: Vec<String>,
    pub containers: Vec<String>,
    pub message: String,
}

/// A namespace as the apiserver's namespaceSelector sees it.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Namespace {
    /// A namespace known only by name: the label the apiserver always sets.
    pub fn named(name: &str) -> Namespace {
        let labels = BTreeMap::from([("kubernetes.io/metadata.name".into(), name.into())]);
        Namespace {
            name: name.into(),
            labels,
        }
    }
}

/// One object to check: its kind as Kubernetes spells it, its manifest, and whether it is a
/// live object (a pod that exists is asked whether it *was* injected).
pub struct Object<'a> {
    pub kind: &'a str,
    pub doc: &'a Value,
    pub live: bool,
}

impl Object<'_> {
    fn name(&self) -> &str {
        crate::engine::manifest::display_name(self.doc)
    }

    fn label(&self) -> String {
        format!("{}/{}", self.kind.to_lowercase(), self.name())
    }
}

/// The pod a CREATE would carry: a Pod as it is, a workload's pod template as its controller
/// would send it (namespace set, named after the workload).
fn pod_of(object: &Object, namespace: &str) -> Result<Value, String> {
    let pointer = crate::engine::manifest::template_pointer(object.kind)
        .ok_or_else(|| format!("{} is not a kind that has pods", object.kind))?;
    let mut pod = object
        .doc
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| format!("it has no pod template at {pointer}"))?;
    let fields = pod
        .as_object_mut()
        .ok_or("the pod template is not an object")?;
    fields.insert("apiVersion".into(), "v1".into());
    fields.insert("kind".into(), "Pod".into());
    let meta = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or("the pod's metadata is not an object")?;
    meta.insert("namespace".into(), namespace.into());
    if !meta.contains_key("name") && !meta.contains_key("generateName") {
        meta.insert("generateName".into(), format!("{}-", object.name()).into());
    }
    Ok(pod)
}

/// The policy a webhook's path asks for, as the server's router reads it.
fn hook_policy(hook: &MutatingWebhook) -> Result<Policy, String> {
    let config = &hook.client_config;
    let target = match (&config.service, &config.url) {
        (Some(service), _) => service.path.clone().unwrap_or_default(),
        (None, Some(url)) => url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default(),
        (None, None) => String::new(),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    let segment = match path.strip_prefix("/mutate") {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(segment) => Some(
                crate::engine::admission::path_policy_segment(segment)
                    .map_err(|e| e.to_string())?,
            ),
            None => return Err(format!("its path {path:?} is not one of the server's")),
        },
        None => return Err(format!("its path {path:?} is not one of the server's")),
    };
    crate::engine::admission::policy_from_query(query, segment).map_err(|e| e.to_string())
}

/// The injector's namespace: that of the first webhook that calls a Service.
pub(super) fn service_namespace(configuration: &MutatingWebhookConfiguration) -> Option<&str> {
    configuration.webhooks.iter().flatten().find_map(|h| {
        h.client_config
            .service
            .as_ref()
            .map(|s| s.namespace.as_str())
    })
}

fn explain(
    skip: &Skip,
    hook: &str,
    namespace: &Namespace,
    service_ns: Option<&str>,
    pod: &Value,
) -> (&'static str, String) {
    match skip {
        Skip::NamespaceSelector(selector) => {
            let system = SYSTEM_NAMESPACES.contains(&namespace.name.as_str())
                || service_ns == Some(namespace.name.as_str());
            let labels = serde_json::to_string(&namespace.labels).unwrap_or_default();
            if system {
                ("system-namespace", format!("{hook}: namespace {} is never sent (namespaceSelector {selector}); run the pod in another namespace", namespace.name))
            } else {
                ("namespace-selector", format!("{hook}: namespace {} (labels {labels}) does not match namespaceSelector {selector}", namespace.name))
            }
        }
        Skip::ObjectSelector(selector) => (
            "object-selector",
            format!("{hook}: the pod's labels do not match objectSelector {selector}"),
        ),
        Skip::Rules => (
            "no-matching-rule",
            format!("{hook}: its rules do not cover CREATE of core/v1 pods"),
        ),
        Skip::MatchCondition(name) => {
            let has_key = ["annotations", "labels"]
                .iter()
                .any(|m| pod["metadata"][m].get(INJECT_KEY).is_some());
            let hint = if has_key {
                String::new()
            } else {
                format!(" (the pod has no {INJECT_KEY} annotation or label: add one, or label the namespace {NAMESPACE_LABEL}=enabled)")
            };
            (
                "match-conditions",
                format!("{hook}: matchCondition {name} is false{hint}"),
            )
        }
        Skip::ConditionError(e) => (
            "match-condition-error",
            format!("{hook}: {e}; failurePolicy Ignore skips the webhook"),
        ),
    }
}

/// Whether `object` in `namespace` is, or would be, injected through `configuration`.
pub fn evaluate(
    configuration: &MutatingWebhookConfiguration,
    namespace: &Namespace,
    object: &Object,
    config: &Config,
) -> Finding {
    let finding = Finding {
        namespace: namespace.name.clone(),
        object: object.label(),
        result: Verdict::NotInjected,
        reason: String::new(),
        webhook: None,
        profiles: Vec::new(),
        containers: Vec::new(),
        message: String::new(),
    };
    let pod = match pod_of(object, &namespace.name) {
        Ok(pod) => pod,
        Err(e) => return denied(finding, "bad-object".into(), e, None),
    };
    if let Some(injected) = marker(&pod) {
        return already_injected(finding, injected, object, &pod, config);
    }
    let config_name = configuration.metadata.name.as_deref().unwrap_or_default();
    let hooks = configuration.webhooks.as_deref().unwrap_or_default();
    let service_ns = service_namespace(configuration);
    let mut skips: Vec<Skipped> = Vec::new();
    let mut unchanged: Option<(String, Reviewed)> = None;
    for hook in hooks {
        let id = format!("{config_name}/{}", hook.name);
        match select(hook, &namespace.labels, &pod) {
            Selection::Skip(skip) => {
                let (reason, message) = explain(&skip, &id, namespace, service_ns, &pod);
                skips.push(Skipped {
                    stage: skip.stage(),
                    reason,
                    message,
                });
            }
            Selection::Reject(e) => {
                let message = format!("{e}; failurePolicy Fail rejects the create");
                return denied(finding, "match-condition-error".into(), message, Some(id));
            }
            Selection::Call => {
                let policy = match hook_policy(hook) {
                    Ok(p) => p,
                    Err(e) => return denied(finding, "bad-request".into(), e, Some(id)),
                };
                let reviewed = review(&pod, &namespace.name, policy, config);
                match reviewed.outcome {
                    Outcome::Injected => {
                        return injectable(finding, object, &pod, configuration, id, reviewed)
                    }
                    Outcome::Denied | Outcome::Error => {
                        return denied(finding, reviewed.reason, reviewed.message, Some(id))
                    }
                    // The apiserver goes on to the next webhook.
                    Outcome::Skipped => {
                        unchanged.get_or_insert((id, reviewed));
                    }
                }
            }
        }
    }
    let mut finding = not_injected(finding, config_name, unchanged, skips);
    // Our keys on a workload's own metadata, where no pod sees them: the likely cause.
    for misplaced in crate::engine::workload::misplaced_in_manifest(object.kind, object.doc) {
        finding.message = format!("{}; {}", misplaced.hint(object.kind), finding.message);
    }
    finding
}

/// A webhook the apiserver would not call, and why.
struct Skipped {
    /// How far the apiserver got with it (`Skip::stage`).
    stage: u8,
    reason: &'static str,
    message: String,
}

fn denied(
    mut finding: Finding,
    reason: String,
    message: String,
    webhook: Option<String>,
) -> Finding {
    finding.result = Verdict::Denied;
    finding.reason = reason;
    finding.message = message;
    finding.webhook = webhook;
    finding
}

/// No webhook injects: the first that left it unchanged says why, else the webhooks the
/// apiserver would skip.
fn not_injected(
    mut finding: Finding,
    config_name: &str,
    unchanged: Option<(String, Reviewed)>,
    mut skips: Vec<Skipped>,
) -> Finding {
    if let Some((id, reviewed)) = unchanged {
        finding.reason = reviewed.reason;
        finding.message = format!("{id} leaves it unchanged");
        finding.webhook = Some(id);
    } else if skips.is_empty() {
        finding.reason = "no-webhooks".into();
        finding.message = format!("{config_name} has no webhooks");
    } else {
        // A webhook whose rules do not cover pods (the workload-warning one) says nothing
        // about a pod when another webhook does.
        if skips.iter().any(|s| s.stage != RULES_STAGE) {
            skips.retain(|s| s.stage != RULES_STAGE);
        }
        // The webhook the apiserver got furthest with explains best; the others follow.
        skips.sort_by_key(|s| std::cmp::Reverse(s.stage));
        finding.reason = skips[0].reason.into();
        finding.message = skips
            .iter()
            .map(|s| s.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
    }
    finding
}

/// `Skip::stage` of a webhook whose rules do not cover pod creates.
const RULES_STAGE: u8 = 2;

/// A CREATE would inject: a template or manifest would be, a live pod must be recreated.
fn injectable(
    mut finding: Finding,
    object: &Object,
    pod: &Value,
    configuration: &MutatingWebhookConfiguration,
    id: String,
    reviewed: Reviewed,
) -> Finding {
    finding.webhook = Some(id);
    finding.profiles = reviewed.profiles;
    finding.containers = reviewed.added;
    if !object.live || object.kind != "Pod" {
        finding.result = Verdict::WouldInject;
        finding.reason = reviewed.reason;
        finding.message = reviewed.message;
        return finding;
    }
    finding.result = Verdict::MustRecreate;
    let created = timestamp(pod.pointer("/metadata/creationTimestamp"));
    let installed = configuration
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok());
    let installed = timestamp(installed.as_ref());
    let recreate =
        "delete it (its controller makes a new one) or `kubectl rollout restart` its workload";
    (finding.reason, finding.message) = match (created, installed) {
        (Some(c), Some(i)) if c < i => (
            "created-before-install".into(),
            format!("created at {c} before the webhook configuration ({i}): {recreate}"),
        ),
        _ => (
            "not-injected-at-create".into(),
            format!(
                "a CREATE now would be injected ({}), but it was not when created: the webhook \
                 was unreachable under failurePolicy Ignore, or the pod or the configuration \
                 changed since; {recreate}",
                reviewed.reason
            ),
        ),
    };
    finding
}

fn timestamp(value: Option<&Value>) -> Option<time::OffsetDateTime> {
    let text = value?.as_str()?;
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::check::read::from_manifest;
    use crate::cluster::check::render::table;
    use crate::engine::inject::{self, STATUS_KEY};
    use crate::engine::pod::PodView;
    use serde_json::json;

    /// The configuration `deploy/` installs, as the apiserver stores it.
    fn deployed() -> MutatingWebhookConfiguration {
        let text = include_str!("../../../deploy/base/mutatingwebhookconfiguration.yaml");
        let doc = crate::text::yaml::read_documents(text).unwrap().remove(0);
        let mut c: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
        c.metadata.creation_timestamp =
            serde_json::from_value(json!("2026-11-25T12:00:00Z")).unwrap();
        c
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        let mut n = Namespace::named(name);
        n.labels
            .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        n
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
    }

    fn check(namespace: &Namespace, kind: &str, doc: &Value, live: bool) -> Finding {
        let config = Config::embedded().unwrap();
        evaluate(&deployed(), namespace, &Object { kind, doc, live }, &config)
    }

    fn verdict(f: &Finding) -> (Verdict, &str, Option<&str>) {
        (f.result, f.reason.as_str(), f.webhook.as_deref())
    }

    const POD_HOOK: Option<&str> = Some("sidecar-injector/pod.sidecar-injector.io");
    const NS_HOOK: Option<&str> = Some("sidecar-injector/namespace.sidecar-injector.io");

    #[test]
    fn a_live_pod_injected_with_another_version_of_a_profile_is_stale() {
        // Injected now, by the engine, with the embedded config.
        let config = Config::embedded().unwrap();
        let mut live = pod(json!({INJECT_KEY: "true"}));
        let view = PodView::from_value(&live).unwrap();
        let crate::engine::inject::Decision::Inject { injection, .. } =
            inject::decide(&view, Policy::Disabled, &config)
        else {
            panic!("not injected")
        };
        let patch: json_patch::Patch = serde_json::from_str(&injection.patch_json()).unwrap();
        json_patch::patch(&mut live, &patch).unwrap();
        let plain = ns("demo", &[]);
        let pod_finding = |doc: &Value, live: bool, config: &Config| {
            let object = Object {
                kind: "Pod",
                doc,
                live,
            };
            evaluate(&deployed(), &plain, &object, config)
        };
        let f = check(&plain, "Pod", &live, true);
        assert_eq!(verdict(&f), (Verdict::Injected, "already-injected", None));
        assert_eq!(f.message, "");

        // The profile's image changed since.
        let yaml =
            crate::engine::config::DEFAULT_CONFIG_YAML.replace("busybox:1.36", "busybox:1.37");
        let newer = Config::from_yaml(&yaml, "newer").unwrap();
        let f = pod_finding(&live, true, &newer);
        assert_eq!(verdict(&f), (Verdict::Stale, "profile-changed", None));
        assert!(!f.result.ok());
        assert!(
            f.message
                .starts_with(r#"default/sidecar: image "busybox:1.36" -> "busybox:1.37"; "#),
            "{}",
            f.message
        );
        // A manifest is not running anything: only live pods are stale.
        let f = pod_finding(&live, false, &newer);
        assert_eq!(f.result, Verdict::Injected);

        // A pod injected before digests were recorded: version unknown, never an error.
        let mut old = live.clone();
        let mut status: Value =
            serde_json::from_str(old["metadata"]["annotations"][STATUS_KEY].as_str().unwrap())
                .unwrap();
        status.as_object_mut().unwrap().remove("digests");
        old["metadata"]["annotations"][STATUS_KEY] = json!(status.to_string());
        let f = pod_finding(&old, true, &newer);
        assert_eq!(verdict(&f), (Verdict::Injected, "already-injected", None));
        assert!(f.message.contains("unknown"), "{}", f.message);
    }

    #[test]
    fn every_reason_the_deployed_configuration_gives() {
        let plain = ns("demo", &[]);
        let enabled = ns("on", &[("sidecar-injector.io/injection", "enabled")]);
        let opt_in = pod(json!({INJECT_KEY: "true"}));
        let f = check(&plain, "Pod", &opt_in, false);
        assert_eq!(verdict(&f), (Verdict::WouldInject, "opted-in", POD_HOOK));
        assert_eq!(f.containers, ["sidecar"]);
        assert_eq!(f.profiles, ["default"]);

        let f = check(&plain, "Pod", &pod(json!({})), false);
        assert_eq!(
            verdict(&f),
            (Verdict::NotInjected, "match-conditions", None)
        );
        assert!(f.message.contains("has-opt-in-key"), "{}", f.message);
        assert!(f.message.contains("namespaceSelector"), "{}", f.message);

        let f = check(&enabled, "Pod", &pod(json!({})), false);
        assert_eq!(
            verdict(&f),
            (Verdict::WouldInject, "namespace-enabled", NS_HOOK)
        );
        let f = check(&enabled, "Pod", &pod(json!({INJECT_KEY: "false"})), false);
        assert_eq!(verdict(&f), (Verdict::NotInjected, "opted-out", NS_HOOK));
        let f = check(&plain, "Pod", &pod(json!({INJECT_KEY: "yes"})), false);
        assert_eq!(verdict(&f), (Verdict::Denied, "bad-annotation", POD_HOOK));
        assert!(f.message.contains(INJECT_KEY), "{}", f.message);

        for system in ["kube-system", "sidecar-injector"] {
            let f = check(&ns(system, &[]), "Pod", &opt_in, false);
            assert_eq!(
                verdict(&f),
                (Verdict::NotInjected, "system-namespace", None)
            );
        }
        let off = ns("off", &[("sidecar-injector.io/injection", "disabled")]);
        let f = check(&off, "Pod", &opt_in, false);
        assert_eq!(
            verdict(&f),
            (Verdict::NotInjected, "namespace-selector", None)
        );

        let mut injected = opt_in.clone();
        injected["metadata"]["annotations"][STATUS_KEY] = json!(
            r#"{"profiles":["default","logging"],"containers":["sidecar","log-tailer"],"initContainers":[],"volumes":["shared-data"]}"#
        );
        // A status naming containers the pod does not have is a forgery: not injected.
        let f = check(&plain, "Pod", &injected, true);
        assert_eq!(
            verdict(&f),
            (
                Verdict::MustRecreate,
                "not-injected-at-create",
                Some("sidecar-injector/pod.sidecar-injector.io")
            )
        );
        for name in ["sidecar", "log-tailer"] {
            injected["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": name, "image": "busybox:1.36"}));
        }
        let f = check(&plain, "Pod", &injected, true);
        assert_eq!(verdict(&f), (Verdict::Injected, "already-injected", None));
        assert_eq!(f.profiles, ["default", "logging"]);
        assert_eq!(f.containers, ["sidecar", "log-tailer"]);
    }

    #[test]
    fn a_live_pod_that_would_be_injected_must_be_recreated() {
        let mut old = pod(json!({INJECT_KEY: "true"}));
        old["metadata"]["creationTimestamp"] = json!("2026-11-25T11:00:00Z");
        let f = check(&ns("demo", &[]), "Pod", &old, true);
        assert_eq!(
            verdict(&f),
            (Verdict::MustRecreate, "created-before-install", POD_HOOK)
        );
        old["metadata"]["creationTimestamp"] = json!("2026-11-25T13:00:00Z");
        let f = check(&ns("demo", &[]), "Pod", &old, true);
        assert_eq!(
            verdict(&f),
            (Verdict::MustRecreate, "not-injected-at-create", POD_HOOK)
        );
    }

    #[test]
    fn a_workload_is_judged_by_its_pod_template() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "annotations": {INJECT_KEY: "true"}},
            "spec": {"template": {"metadata": {"labels": {"app": "api"}},
                                  "spec": {"containers": [{"name": "app", "image": "x"}]}}}});
        // Only the template's metadata counts, as for `inject`.
        let f = check(&ns("demo", &[]), "Deployment", &deployment, true);
        assert_eq!(
            verdict(&f),
            (Verdict::NotInjected, "match-conditions", None)
        );
        assert_eq!(f.object, "deployment/api");
        // The key sits on the Deployment itself: DETAIL says where it must go.
        assert!(
            f.message.starts_with("annotation sidecar-injector.io/inject on the Deployment's own metadata: move it to spec.template.metadata.annotations; "),
            "{}",
            f.message
        );
        let mut opted = deployment.clone();
        opted["spec"]["template"]["metadata"]["annotations"] = json!({INJECT_KEY: "true"});
        let f = check(&ns("demo", &[]), "Deployment", &opted, true);
        assert_eq!(verdict(&f), (Verdict::WouldInject, "opted-in", POD_HOOK));
        let cron = json!({"kind": "CronJob", "metadata": {"name": "c"}, "spec": {}});
        let f = check(&ns("demo", &[]), "CronJob", &cron, false);
        assert_eq!(verdict(&f), (Verdict::Denied, "bad-object", None));
        let broken = json!({"kind": "Pod", "metadata": "x"});
        let f = check(&ns("demo", &[]), "Pod", &broken, false);
        assert_eq!(f.result, Verdict::Denied);
    }

    #[test]
    fn the_policy_comes_from_the_webhook_path() {
        let hook = |path: &str| -> MutatingWebhook {
            serde_json::from_value(json!({"name": "h", "admissionReviewVersions": ["v1"],
                "sideEffects": "None", "clientConfig": {"url": format!("https://x:8443{path}")}}))
            .unwrap()
        };
        assert_eq!(hook_policy(&hook("/mutate")), Ok(Policy::Disabled));
        assert_eq!(
            hook_policy(&hook("/mutate?policy=enabled")),
            Ok(Policy::Enabled)
        );
        assert_eq!(hook_policy(&hook("/mutate/enabled")), Ok(Policy::Enabled));
        assert!(hook_policy(&hook("/mutate/enabled?policy=disabled")).is_err());
        assert!(hook_policy(&hook("/validate")).is_err());
        assert!(hook_policy(&hook("/mutatex")).is_err());
    }

    #[test]
    fn the_table_aligns_and_ends_with_the_detail() {
        let f = check(
            &ns("demo", &[]),
            "Pod",
            &pod(json!({INJECT_KEY: "true"})),
            false,
        );
        let t = table(&[f]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  OBJECT   RESULT"), "{t}");
        assert_eq!(
            lines[0].find("RESULT"),
            lines[1].find("would-inject"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("profiles default; containers sidecar"),
            "{t}"
        );
    }

    #[test]
    fn a_manifest_brings_its_own_namespaces() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fresh\n  labels:\n    sidecar-injector.io/injection: enabled\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: fresh\nspec:\n  containers: [{name: a, image: x}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let g = from_manifest(text, "default").unwrap();
        assert_eq!(g.objects.len(), 1);
        assert_eq!(g.objects[0].namespace, "fresh");
        let declared = &g.declared["fresh"];
        let f = check(declared, "Pod", &g.objects[0].doc, false);
        assert_eq!(
            verdict(&f),
            (Verdict::WouldInject, "namespace-enabled", NS_HOOK)
        );
    }
}
