//! The injection engine: given a Pod, the policy and the config, decide whether to inject,
//! leave the pod unchanged or deny it, and build the minimal JSON patch. Pure: no I/O.

mod additions;
mod options;
mod patch;
mod status;

use additions::{check_clashes, check_conflicts, check_size, select_profiles, Additions};
use options::{parse_bool, read_options, Options};
use patch::{build_patch, token_volume};
use status::status_op;
pub use status::{marker, outdated, Marker, StatusNames, FORGED_STATUS_WARNING};

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::engine::config::{Config, Named, Share, Sidecar};
use crate::engine::pod::{PodView, Spec, StrMap};
use crate::engine::podsecurity::Level;
use crate::text::excerpt::Quoted;

pub const INJECT_KEY: &str = "sidecar-injector.io/inject";
pub const PROFILES_KEY: &str = "sidecar-injector.io/profiles";
pub const SHARE_PROCESS_KEY: &str = "sidecar-injector.io/share-process-namespace";
pub const NATIVE_SIDECAR_KEY: &str = "sidecar-injector.io/native-sidecar";
pub const APP_MOUNT_PATH_KEY: &str = "sidecar-injector.io/app-mount-path";
pub const STATUS_KEY: &str = "sidecar-injector.io/status";

fn root_share_warning(level: Level) -> String {
    format!(
        "sidecar-injector: for {SHARE_PROCESS_KEY} the injected sidecar(s) run as root with \
         SYS_PTRACE (to see the app's processes) and KILL (to signal them), because the app's \
         uid is not set; the Pod Security \"baseline\" and \"restricted\" levels reject \
         SYS_PTRACE, so this pod needs the \"{}\" level. Set runAsUser for the app (pod or \
         every app container) and the sidecar runs as that uid with no added capability",
        level.as_str()
    )
}

fn level_warning(level: Level) -> String {
    format!(
        "sidecar-injector: the injected sidecar(s) need the Pod Security \"{}\" level; \
         \"restricted\" namespaces refuse this pod",
        level.as_str()
    )
}

/// `policy` of `/mutate`: who is injected when a pod says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Inject every pod unless it opts out (namespace opted in).
    Enabled,
    /// Inject only pods that opt in.
    #[default]
    Disabled,
}

impl Policy {
    /// The names, as the query, the path and the CLI spell them.
    pub const NAMES: [&'static str; 2] = ["enabled", "disabled"];

    /// `enabled` or `disabled`, exactly.
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "enabled" => Some(Policy::Enabled),
            "disabled" => Some(Policy::Disabled),
            _ => None,
        }
    }
}

/// Why a request got the answer it got: exactly one per answer (SPEC "Why (not) injected").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    BadRequest,
    TooLarge,
    NotAPodCreate,
    BadObject,
    AlreadyInjected,
    BadAnnotation,
    OptedOut,
    NotOptedIn,
    UnknownProfile,
    NotAllowed,
    Conflict,
    NameClash,
    OptedIn,
    NamespaceEnabled,
    InternalError,
    WorkloadChecked,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::BadRequest,
        Reason::TooLarge,
        Reason::NotAPodCreate,
        Reason::BadObject,
        Reason::AlreadyInjected,
        Reason::BadAnnotation,
        Reason::OptedOut,
        Reason::NotOptedIn,
        Reason::UnknownProfile,
        Reason::NotAllowed,
        Reason::Conflict,
        Reason::NameClash,
        Reason::OptedIn,
        Reason::NamespaceEnabled,
        Reason::InternalError,
        Reason::WorkloadChecked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad-request",
            Reason::TooLarge => "too-large",
            Reason::NotAPodCreate => "not-a-pod-create",
            Reason::BadObject => "bad-object",
            Reason::AlreadyInjected => "already-injected",
            Reason::BadAnnotation => "bad-annotation",
            Reason::OptedOut => "opted-out",
            Reason::NotOptedIn => "not-opted-in",
            Reason::UnknownProfile => "unknown-profile",
            Reason::NotAllowed => "not-allowed",
            Reason::InternalError => "internal-error",
            Reason::Conflict => "conflict",
            Reason::NameClash => "name-clash",
            Reason::OptedIn => "opted-in",
            Reason::NamespaceEnabled => "namespace-enabled",
            Reason::WorkloadChecked => "workload-checked",
        }
    }
}

/// One JSON-patch `add`: a JSON pointer and the JSON text of the value, most often
/// borrowed from the config, where it was serialized once.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOp<'c> {
    pub path: String,
    pub value: Cow<'c, str>,
}

/// What an injection adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection<'c> {
    pub ops: Vec<AddOp<'c>>,
    pub warnings: Vec<String>,
    pub profiles: Vec<String>,
}

impl Injection<'_> {
    /// The length of [`Injection::patch_json`], give or take a few bytes.
    pub fn patch_len(&self) -> usize {
        2 + self
            .ops
            .iter()
            .map(|o| o.path.len() + o.value.len() + 32)
            .sum::<usize>()
    }

    /// The RFC 6902 patch, as JSON text.
    pub fn patch_json(&self) -> String {
        let mut out = String::with_capacity(self.patch_len());
        out.push('[');
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Paths are built from our own tokens and indexes: nothing in them needs escaping.
            out.push_str(r#"{"op":"add","path":""#);
            out.push_str(&op.path);
            out.push_str(r#"","value":"#);
            out.push_str(&op.value);
            out.push('}');
        }
        out.push(']');
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'c> {
    Inject {
        reason: Reason,
        injection: Injection<'c>,
    },
    /// Allowed with no patch; warnings only for an ignored status annotation.
    Unchanged {
        reason: Reason,
        warnings: Vec<String>,
    },
    Deny {
        reason: Reason,
        code: u16,
        message: String,
    },
}

impl Decision<'_> {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Inject { reason, .. }
            | Decision::Unchanged { reason, .. }
            | Decision::Deny { reason, .. } => *reason,
        }
    }

    pub fn unchanged(reason: Reason) -> Self {
        Decision::Unchanged {
            reason,
            warnings: Vec::new(),
        }
    }

    /// The warnings the answer carries.
    pub fn warnings(&self) -> &[String] {
        match self {
            Decision::Inject { injection, .. } => &injection.warnings,
            Decision::Unchanged { warnings, .. } => warnings,
            Decision::Deny { .. } => &[],
        }
    }

    fn deny(reason: Reason, code: u16, message: String) -> Self {
        Decision::Deny {
            reason,
            code,
            message,
        }
    }
}

/// Every container name of the pod: names are unique across all three lists.
fn all_container_names<'s>(spec: &'s Spec<'_>) -> Vec<&'s str> {
    let others = [&spec.init_containers, &spec.ephemeral_containers]
        .into_iter()
        .flatten()
        .flatten()
        .map(|c| c.name.as_ref());
    spec.containers
        .iter()
        .map(|c| c.name.as_ref())
        .chain(others)
        .collect()
}

/// Decides what to do with a pod CREATE. `pod` is the request object, already decoded.
pub fn decide<'c>(pod: &PodView<'_>, policy: Policy, config: &'c Config) -> Decision<'c> {
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::deny(Reason::BadObject, 400, "the pod has no spec".into());
    };
    let empty = StrMap::default();
    let annotations = pod.annotations().unwrap_or(&empty);
    match marker(pod) {
        Marker::Forged => {
            let mut decision = decide_fresh(pod, spec, annotations, policy, config);
            let warnings = match &mut decision {
                Decision::Inject { injection, .. } => Some(&mut injection.warnings),
                Decision::Unchanged { warnings, .. } => Some(warnings),
                Decision::Deny { .. } => None,
            };
            if let Some(warnings) = warnings {
                warnings.push(FORGED_STATUS_WARNING.into());
            }
            decision
        }
        Marker::Injected(_) => Decision::unchanged(Reason::AlreadyInjected),
        Marker::Absent => decide_fresh(pod, spec, annotations, policy, config),
    }
}

/// The decision for a pod not injected yet.
fn decide_fresh<'c>(
    pod: &PodView<'_>,
    spec: &Spec<'_>,
    annotations: &StrMap<'_>,
    policy: Policy,
    config: &'c Config,
) -> Decision<'c> {
    let empty = StrMap::default();
    let labels = pod.labels().unwrap_or(&empty);

    // The opt-in key: the annotation wins over the label, and only its value is checked.
    let opt_in = match annotations.get(INJECT_KEY) {
        Some(v) => Some(("annotation", v)),
        None => labels.get(INJECT_KEY).map(|v| ("label", v)),
    };
    let reason = match opt_in {
        Some((source, value)) => match parse_bool(source, INJECT_KEY, value) {
            Err(message) => return Decision::deny(Reason::BadAnnotation, 400, message),
            Ok(false) => return Decision::unchanged(Reason::OptedOut),
            Ok(true) => Reason::OptedIn,
        },
        None if policy == Policy::Enabled => Reason::NamespaceEnabled,
        None => return Decision::unchanged(Reason::NotOptedIn),
    };

    match plan(pod, spec, annotations, config) {
        Ok(injection) => Decision::Inject { reason, injection },
        Err(d) => Decision::deny(d.reason, d.code, d.message),
    }
}

/// Why a pod is refused: the reason counted, the answer's code and its message.
struct Denial {
    reason: Reason,
    code: u16,
    message: String,
}

impl Denial {
    fn new(reason: Reason, code: u16, message: String) -> Denial {
        Denial {
            reason,
            code,
            message,
        }
    }
}

/// One warning when the injected sidecars lift the pod above Pod Security "restricted".
fn pod_security_warning(sidecars: &[&Sidecar], sharing: Share) -> Option<String> {
    let level = sidecars
        .iter()
        .map(|c| match sharing {
            Share::Root => c.root_level,
            // SPEC: no warning for sharing the app's uid, even uid 0: the app already
            // runs as that user, so the pod needs no level the app does not.
            Share::SameUid(_) | Share::No => c.level,
        })
        .max()?;
    match (level, sharing) {
        (Level::Restricted, _) => None,
        (_, Share::Root) => Some(root_share_warning(level)),
        _ => Some(level_warning(level)),
    }
}

/// Checks the other keys and builds the patch for a pod that will be injected: the SPEC's
/// precedence is the order of the stages.
fn plan<'c>(
    pod: &PodView<'_>,
    spec: &Spec<'_>,
    annotations: &StrMap<'_>,
    config: &'c Config,
) -> Result<Injection<'c>, Denial> {
    let options = read_options(annotations, config)?;
    let add = select_profiles(&options, config)?;
    let sharing = check_conflicts(spec, &options, &add, config)?;
    check_clashes(spec, &add)?;
    let token = config
        .mount_service_account_token
        .then(|| token_volume(spec))
        .flatten();
    check_size(spec, &add, token)?;
    Ok(build_patch(pod, spec, &options, &add, sharing, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::podsecurity::container_level;
    use additions::MAX_PATCH_BYTES;
    use options::{MAX_PROFILES_BYTES, MAX_PROFILE_NAMES};
    use patch::{object_array, with_token_mount, TOKEN_MOUNT_PATH};
    use serde_json::json;
    use status::STATUS_PATH;

    fn config() -> &'static Config {
        static CONFIG: std::sync::LazyLock<Config> =
            std::sync::LazyLock::new(|| Config::embedded().unwrap());
        &CONFIG
    }

    fn pod_with(annotations: Value, labels: Value, spec: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "ns", "annotations": annotations, "labels": labels},
            "spec": spec,
        })
    }

    fn app_spec() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    fn opted_in(extra: Value) -> Value {
        let mut a = json!({INJECT_KEY: "true"});
        if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        pod_with(a, json!({}), app_spec())
    }

    fn decide_json(pod: &Value, policy: Policy) -> Decision<'static> {
        decide(&PodView::from_value(pod).unwrap(), policy, config())
    }

    /// Applies the decision's patch; returns the patched pod.
    fn injected(pod: &Value, policy: Policy) -> Value {
        injected_with(pod, policy, config())
    }

    fn injected_with(pod: &Value, policy: Policy, config: &Config) -> Value {
        match decide(&PodView::from_value(pod).unwrap(), policy, config) {
            Decision::Inject { injection, .. } => {
                let mut out = pod.clone();
                let patch: json_patch::Patch =
                    serde_json::from_str(&injection.patch_json()).unwrap();
                json_patch::patch(&mut out, &patch).unwrap();
                out
            }
            other => panic!("expected an injection, got {other:?}"),
        }
    }

    fn denial(pod: &Value, policy: Policy) -> (Reason, u16, String) {
        match decide_json(pod, policy) {
            Decision::Deny {
                reason,
                code,
                message,
            } => (reason, code, message),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn opt_in_by_annotation_injects_default_profile() {
        let out = injected(&opted_in(json!({})), Policy::Disabled);
        let c = &out["spec"]["containers"];
        assert_eq!(c[1]["name"], "sidecar");
        assert_eq!(c[1]["image"], "busybox:1.36");
        assert_eq!(
            c[0]["volumeMounts"],
            json!([{"mountPath": "/pod-data", "name": "shared-data"}])
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"emptyDir": {}, "name": "shared-data"}])
        );
        let status: Value =
            serde_json::from_str(out["metadata"]["annotations"][STATUS_KEY].as_str().unwrap())
                .unwrap();
        assert_eq!(status["containers"], json!(["sidecar"]));
        assert_eq!(
            decide_json(&opted_in(json!({})), Policy::Disabled).reason(),
            Reason::OptedIn
        );
    }

    fn status_of(pod: &Value) -> Value {
        serde_json::from_str(pod["metadata"]["annotations"][STATUS_KEY].as_str().unwrap()).unwrap()
    }

    #[test]
    fn the_status_records_each_profiles_digest_the_same_for_every_pod() {
        let digest = &config().profiles["default"].digest;
        let plain = status_of(&injected(&opted_in(json!({})), Policy::Disabled));
        assert_eq!(plain["digests"], json!({"default": digest}));
        // Per-pod rendering (mount path, process sharing as the app's uid) is not a version.
        let mut rendered = opted_in(json!({APP_MOUNT_PATH_KEY: "/app", SHARE_PROCESS_KEY: "true"}));
        rendered["spec"]["securityContext"] = json!({"runAsUser": 1001});
        assert_eq!(
            status_of(&injected(&rendered, Policy::Disabled))["digests"],
            plain["digests"]
        );
        // A profile with another image is another version.
        let yaml =
            crate::engine::config::DEFAULT_CONFIG_YAML.replace("busybox:1.36", "busybox:1.37");
        let newer = Config::from_yaml(&yaml, "newer").unwrap();
        let other = &newer.profiles["default"].digest;
        assert_ne!(other, digest);
        assert_eq!(
            status_of(&injected_with(
                &opted_in(json!({})),
                Policy::Disabled,
                &newer
            ))["digests"],
            json!({"default": other})
        );
        // And a status without digests reads as none recorded.
        assert!(StatusNames::parse(r#"{"profiles":["default"]}"#)
            .digests
            .is_empty());
    }

    #[test]
    fn opt_in_values_are_case_insensitive_and_label_works() {
        for v in ["TRUE", "True", "true"] {
            let pod = pod_with(json!({INJECT_KEY: v}), json!({}), app_spec());
            assert_eq!(
                decide_json(&pod, Policy::Disabled).reason(),
                Reason::OptedIn
            );
        }
        let pod = pod_with(json!({}), json!({INJECT_KEY: "true"}), app_spec());
        assert_eq!(
            decide_json(&pod, Policy::Disabled).reason(),
            Reason::OptedIn
        );
        let pod = pod_with(json!({}), json!({INJECT_KEY: "FALSE"}), app_spec());
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::unchanged(Reason::OptedOut)
        );
    }

    #[test]
    fn annotation_wins_over_label_and_only_its_value_is_checked() {
        let pod = pod_with(
            json!({INJECT_KEY: "false"}),
            json!({INJECT_KEY: "bogus"}),
            app_spec(),
        );
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::unchanged(Reason::OptedOut)
        );
        let pod = pod_with(
            json!({INJECT_KEY: "true"}),
            json!({INJECT_KEY: "false"}),
            app_spec(),
        );
        assert_eq!(
            decide_json(&pod, Policy::Disabled).reason(),
            Reason::OptedIn
        );
    }

    #[test]
    fn policy_decides_pods_without_opt_in_key() {
        let pod = pod_with(json!({}), json!({}), app_spec());
        assert_eq!(
            decide_json(&pod, Policy::Disabled),
            Decision::unchanged(Reason::NotOptedIn)
        );
        assert_eq!(
            decide_json(&pod, Policy::Enabled).reason(),
            Reason::NamespaceEnabled
        );
        let pod = pod_with(json!({INJECT_KEY: "false"}), json!({}), app_spec());
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::unchanged(Reason::OptedOut)
        );
    }

    #[test]
    fn bad_opt_in_value_is_denied_even_when_not_injecting() {
        for v in ["", "yes", "1", " true"] {
            let pod = pod_with(json!({INJECT_KEY: v}), json!({}), app_spec());
            let (reason, code, msg) = denial(&pod, Policy::Disabled);
            assert_eq!((reason, code), (Reason::BadAnnotation, 400));
            assert!(
                msg.contains(INJECT_KEY) && msg.contains("\"true\" or \"false\""),
                "{msg}"
            );
        }
        let pod = pod_with(json!({}), json!({INJECT_KEY: "nope"}), app_spec());
        let (_, _, msg) = denial(&pod, Policy::Disabled);
        assert!(msg.starts_with("label "), "{msg}");
    }

    #[test]
    fn other_keys_are_checked_only_on_pods_that_will_be_injected() {
        let pod = pod_with(
            json!({PROFILES_KEY: "", SHARE_PROCESS_KEY: "maybe"}),
            json!({}),
            app_spec(),
        );
        assert_eq!(
            decide_json(&pod, Policy::Disabled),
            Decision::unchanged(Reason::NotOptedIn)
        );
        for (key, value) in [
            (PROFILES_KEY, ""),
            (PROFILES_KEY, "default,,logging"),
            (SHARE_PROCESS_KEY, "yes"),
            (NATIVE_SIDECAR_KEY, ""),
            (APP_MOUNT_PATH_KEY, "relative/path"),
            (APP_MOUNT_PATH_KEY, "/a/../etc"),
            (APP_MOUNT_PATH_KEY, ""),
        ] {
            let (reason, code, msg) = denial(&opted_in(json!({key: value})), Policy::Disabled);
            assert_eq!(
                (reason, code),
                (Reason::BadAnnotation, 400),
                "{key}={value:?}"
            );
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn profile_lists_over_the_caps_are_bad_annotations_however_long() {
        let at_cap = vec!["default"; MAX_PROFILE_NAMES].join(",");
        assert!(matches!(
            decide_json(&opted_in(json!({PROFILES_KEY: at_cap})), Policy::Disabled),
            Decision::Inject { .. }
        ));
        // 40k distinct names once took seconds (a quadratic de-duplication); now one scan.
        let many: Vec<String> = (0..40_000).map(|i| format!("p{i}")).collect();
        for value in [
            vec!["default"; MAX_PROFILE_NAMES + 1].join(","),
            format!("default,{}", "x".repeat(MAX_PROFILES_BYTES)),
            many.join(","),
        ] {
            let (reason, code, msg) =
                denial(&opted_in(json!({PROFILES_KEY: value})), Policy::Disabled);
            assert_eq!((reason, code), (Reason::BadAnnotation, 400));
            assert!(
                msg.contains(&format!("at most {MAX_PROFILE_NAMES}")),
                "{msg}"
            );
            assert!(msg.len() < 300, "{msg}");
        }
    }

    #[test]
    fn denials_quote_a_short_prefix_of_a_long_value() {
        let long = "y".repeat(200_000);
        for key in [
            INJECT_KEY,
            SHARE_PROCESS_KEY,
            NATIVE_SIDECAR_KEY,
            APP_MOUNT_PATH_KEY,
        ] {
            let mut pod = opted_in(json!({}));
            pod["metadata"]["annotations"][key] = json!(long);
            let (reason, _, msg) = denial(&pod, Policy::Enabled);
            assert_eq!(reason, Reason::BadAnnotation, "{key}");
            assert!(msg.contains(&format!("\"{}\"...", "y".repeat(64))), "{msg}");
            assert!(msg.len() < 300, "{key}: {} bytes", msg.len());
        }
        let name = "n".repeat(1000);
        let (reason, _, msg) = denial(&opted_in(json!({PROFILES_KEY: name})), Policy::Disabled);
        assert_eq!(reason, Reason::UnknownProfile);
        assert!(msg.len() < 300, "{msg}");
    }

    #[test]
    fn already_injected_pod_is_left_alone_before_anything_else() {
        let pod = pod_with(
            json!({STATUS_KEY: "{}", INJECT_KEY: "bogus"}),
            json!({}),
            app_spec(),
        );
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::unchanged(Reason::AlreadyInjected)
        );
    }

    #[test]
    fn a_status_naming_a_missing_container_is_ignored_with_one_warning() {
        let forged = r#"{"containers":["sidecar"],"initContainers":[]}"#;
        // Opted in: injected as if it had no status, which the patch overwrites.
        let pod = opted_in(json!({STATUS_KEY: forged}));
        match decide_json(&pod, Policy::Disabled) {
            Decision::Inject { injection, .. } => {
                assert_eq!(injection.warnings, vec![FORGED_STATUS_WARNING.to_string()]);
                assert!(injection.ops.iter().any(|o| o.path == STATUS_PATH));
            }
            other => panic!("expected an injection, got {other:?}"),
        }
        let out = injected(&pod, Policy::Disabled);
        assert_ne!(out["metadata"]["annotations"][STATUS_KEY], forged);
        assert_eq!(
            decide_json(&out, Policy::Enabled),
            Decision::unchanged(Reason::AlreadyInjected)
        );
        // Not opted in: left unchanged, with the warning; in an enabled namespace, injected.
        let plain = pod_with(json!({STATUS_KEY: forged}), json!({}), app_spec());
        assert_eq!(
            decide_json(&plain, Policy::Disabled),
            Decision::Unchanged {
                reason: Reason::NotOptedIn,
                warnings: vec![FORGED_STATUS_WARNING.into()]
            }
        );
        assert!(matches!(
            decide_json(&plain, Policy::Enabled),
            Decision::Inject { .. }
        ));
        // What the pod does have still clashes.
        let mut clash = opted_in(json!({STATUS_KEY: r#"{"containers":["ghost"]}"#}));
        clash["spec"]["containers"] =
            json!([{"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "x"}]);
        assert_eq!(denial(&clash, Policy::Disabled).0, Reason::NameClash);
    }

    #[test]
    fn a_status_naming_only_what_the_pod_has_or_nothing_means_injected() {
        for status in [
            r#"{"containers":["app"]}"#,
            r#"{"initContainers":[],"profiles":["x"]}"#,
            "not json",
            "[\"ghost\"]",
            "",
        ] {
            let pod = opted_in(json!({STATUS_KEY: status}));
            assert_eq!(
                decide_json(&pod, Policy::Enabled),
                Decision::unchanged(Reason::AlreadyInjected),
                "{status:?}"
            );
        }
        // Many names against many containers: a set, not a scan per name.
        let names: Vec<String> = (0..40_000).map(|i| format!("c{i}")).collect();
        let containers: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        let status = json!({"containers": names}).to_string();
        let pod = pod_with(
            json!({STATUS_KEY: status}),
            json!({}),
            json!({"containers": containers}),
        );
        let start = std::time::Instant::now();
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::unchanged(Reason::AlreadyInjected)
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn injection_is_idempotent() {
        let out = injected(&opted_in(json!({})), Policy::Disabled);
        assert_eq!(
            decide_json(&out, Policy::Enabled),
            Decision::unchanged(Reason::AlreadyInjected)
        );
    }

    #[test]
    fn profiles_combine_share_volume_and_keep_order() {
        let out = injected(
            &opted_in(json!({PROFILES_KEY: " logging , default,logging"})),
            Policy::Disabled,
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app", "log-tailer", "sidecar"]);
        assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unknown_profile_lists_known_ones() {
        let (reason, code, msg) = denial(
            &opted_in(json!({PROFILES_KEY: "default,Logging"})),
            Policy::Disabled,
        );
        assert_eq!((reason, code), (Reason::UnknownProfile, 400));
        assert!(
            msg.contains("\"Logging\"") && msg.contains("default, logging"),
            "{msg}"
        );
    }

    fn share_pod(security: Value, container_security: Option<Value>) -> Value {
        let mut pod = opted_in(json!({SHARE_PROCESS_KEY: "True"}));
        pod["spec"]["securityContext"] = security;
        if let Some(sc) = container_security {
            pod["spec"]["containers"][0]["securityContext"] = sc;
        }
        pod
    }

    fn warnings(pod: &Value) -> Vec<String> {
        match decide_json(pod, Policy::Disabled) {
            Decision::Inject { injection, .. } => injection.warnings,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn share_process_namespace_with_unknown_uid_runs_root_with_ptrace_and_kill() {
        let pod = opted_in(json!({SHARE_PROCESS_KEY: "True"}));
        let out = injected(&pod, Policy::Disabled);
        assert_eq!(out["spec"]["shareProcessNamespace"], true);
        let sidecar = &out["spec"]["containers"][1];
        let sc = &sidecar["securityContext"];
        assert_eq!(sc["capabilities"]["add"], json!(["SYS_PTRACE", "KILL"]));
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["runAsUser"], 0);
        assert!(sc.get("runAsNonRoot").is_none());
        assert_eq!(
            (sidecar["stdin"].clone(), sidecar["tty"].clone()),
            (json!(true), json!(true))
        );
        let w = warnings(&pod);
        assert_eq!(w.len(), 1);
        for word in [
            "SYS_PTRACE",
            "KILL",
            "\"baseline\"",
            "\"restricted\"",
            "\"privileged\" level",
            "runAsUser",
        ] {
            assert!(w[0].contains(word), "{word}: {}", w[0]);
        }
        // Unknown when only some app containers set a uid.
        let mut two = share_pod(json!({}), Some(json!({"runAsUser": 1001})));
        two["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "other", "image": "x"}));
        assert_eq!(
            injected(&two, Policy::Disabled)["spec"]["containers"][2]["securityContext"]
                ["runAsUser"],
            0
        );
    }

    #[test]
    fn share_process_namespace_with_known_uid_shares_it_with_no_capability() {
        for pod in [
            share_pod(json!({"runAsUser": 1001, "runAsNonRoot": true}), None),
            share_pod(
                json!({"runAsNonRoot": true}),
                Some(json!({"runAsUser": 1001})),
            ),
            share_pod(json!({"runAsUser": 5}), Some(json!({"runAsUser": 1001}))),
        ] {
            let out = injected(&pod, Policy::Disabled);
            let sc = &out["spec"]["containers"][1]["securityContext"];
            assert_eq!(sc["runAsUser"], 1001, "{pod}");
            assert_eq!(sc["runAsNonRoot"], true);
            assert!(sc["capabilities"].get("add").is_none());
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(out["spec"]["containers"][1]["tty"], true);
            assert!(
                warnings(&pod).is_empty(),
                "no warning when the uid is shared"
            );
        }
        // An app that runs as root: the sidecar too, with no capability; as the SPEC says, no
        // warning (the app itself already needs what the shared uid needs).
        let pod = share_pod(json!({"runAsUser": 0}), None);
        let sc = &injected(&pod, Policy::Disabled)["spec"]["containers"][1]["securityContext"];
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["runAsNonRoot"], false);
        assert!(sc["capabilities"].get("add").is_none());
        assert!(warnings(&pod).is_empty(), "{:?}", warnings(&pod));
    }

    #[test]
    fn share_process_namespace_as_root_under_run_as_non_root_is_a_conflict() {
        let (reason, code, msg) = denial(
            &share_pod(json!({"runAsNonRoot": true}), None),
            Policy::Disabled,
        );
        assert_eq!((reason, code), (Reason::Conflict, 409));
        for word in ["runAsNonRoot", "runAsUser", SHARE_PROCESS_KEY] {
            assert!(msg.contains(word), "{word}: {msg}");
        }
        // Not a conflict when no sharing is asked for.
        let mut plain = share_pod(json!({"runAsNonRoot": true}), None);
        plain["metadata"]["annotations"][SHARE_PROCESS_KEY] = json!("false");
        assert!(warnings(&plain).is_empty());
    }

    #[test]
    fn default_injection_stays_restricted_and_startable() {
        let mut pod = opted_in(json!({}));
        pod["spec"]["securityContext"] = json!({"runAsNonRoot": true});
        let out = injected(&pod, Policy::Disabled);
        let sidecar = &out["spec"]["containers"][1];
        assert_eq!(container_level(sidecar).0, Level::Restricted);
        assert!(crate::engine::podsecurity::kubelet_would_start(
            sidecar,
            &out["spec"]["securityContext"]
        ));
        assert!(warnings(&pod).is_empty());
    }

    #[test]
    fn share_process_namespace_false_adds_nothing() {
        let plain = injected(
            &opted_in(json!({SHARE_PROCESS_KEY: "false"})),
            Policy::Disabled,
        );
        assert!(plain["spec"].get("shareProcessNamespace").is_none());
        assert!(plain["spec"]["containers"][1].get("stdin").is_none());
    }

    #[test]
    fn share_process_against_explicit_false_is_a_conflict() {
        let mut pod = opted_in(json!({SHARE_PROCESS_KEY: "true"}));
        pod["spec"]["shareProcessNamespace"] = json!(false);
        let (reason, code, msg) = denial(&pod, Policy::Disabled);
        assert_eq!((reason, code), (Reason::Conflict, 409));
        assert!(msg.contains(SHARE_PROCESS_KEY) && msg.contains("shareProcessNamespace: false"));
        // Already true: nothing to add for the pod-level field.
        pod["spec"]["shareProcessNamespace"] = json!(true);
        let d = decide_json(&pod, Policy::Disabled);
        let Decision::Inject { injection, .. } = d else {
            panic!()
        };
        assert!(!injection
            .patch_json()
            .contains("/spec/shareProcessNamespace"));
    }

    #[test]
    fn native_sidecars_go_to_init_containers_with_restart_always() {
        let mut pod = opted_in(json!({NATIVE_SIDECAR_KEY: "true"}));
        pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        let out = injected(&pod, Policy::Disabled);
        assert_eq!(out["spec"]["initContainers"][0]["name"], "setup");
        assert_eq!(out["spec"]["initContainers"][1]["name"], "sidecar");
        assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        // init containers do not get the app mount
        assert!(out["spec"]["initContainers"][0]
            .get("volumeMounts")
            .is_none());
    }

    /// What kube-apiserver's ServiceAccount plugin does to a pod that has its token volume:
    /// the token mount appended to every container without a mount at its path. Whether it
    /// changed anything (which would make the apiserver call the webhook again).
    fn service_account_plugin(pod: &mut Value, volume: &str) -> bool {
        let mut changed = false;
        for list in ["initContainers", "containers"] {
            for c in pod["spec"]
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let mounts = object_array(c, "volumeMounts").unwrap();
                if !mounts.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH) {
                    mounts.push(
                        json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}),
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// A pod as the apiserver sends it when the ServiceAccount plugin has mounted the token.
    fn pod_with_token(extra: Value) -> Value {
        let mut pod = opted_in(extra);
        pod["spec"]["volumes"] =
            json!([{"name": "kube-api-access-x7k2p", "projected": {"sources": []}}]);
        pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        assert!(service_account_plugin(&mut pod, "kube-api-access-x7k2p"));
        pod
    }

    /// A config from YAML text with `mountServiceAccountToken` set to `on`.
    fn with_token_option(yaml: &str, on: bool) -> Config {
        let yaml = yaml.replace(
            "mountServiceAccountToken: true",
            &format!("mountServiceAccountToken: {on}"),
        );
        let config = Config::from_yaml(&yaml, "test").unwrap();
        assert_eq!(config.mount_service_account_token, on);
        config
    }

    #[test]
    fn process_sharing_can_be_refused_by_the_config() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/base/config.yaml"
        ))
        .unwrap()
        .replace(
            "defaultProfiles: [default]",
            "defaultProfiles: [default]\nallowProcessSharing: false",
        );
        let config = Config::from_yaml(&yaml, "test").unwrap();
        assert!(!config.allow_process_sharing && super::tests::config().allow_process_sharing);
        let share = opted_in(json!({SHARE_PROCESS_KEY: "true"}));
        let decision = decide(
            &PodView::from_value(&share).unwrap(),
            Policy::Disabled,
            &config,
        );
        match decision {
            Decision::Deny {
                reason,
                code,
                message,
            } => {
                assert_eq!((reason, code), (Reason::NotAllowed, 403));
                assert!(message.contains("allowProcessSharing: false"), "{message}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        // Precedence: an unknown profile is named before sharing is refused.
        let mut both = share.clone();
        both["metadata"]["annotations"][PROFILES_KEY] = json!("nope");
        let decision = decide(
            &PodView::from_value(&both).unwrap(),
            Policy::Disabled,
            &config,
        );
        assert_eq!(decision.reason(), Reason::UnknownProfile);
        // Without the annotation, nothing changes.
        let plain = opted_in(json!({}));
        let decision = decide(
            &PodView::from_value(&plain).unwrap(),
            Policy::Disabled,
            &config,
        );
        assert!(matches!(decision, Decision::Inject { .. }));
    }

    #[test]
    fn token_mount_leaves_the_service_account_plugin_nothing_to_do() {
        // The embedded profiles, and one that adds an init container of its own.
        let with_init = "defaultProfiles: [prep]\nmountServiceAccountToken: true\nprofiles:\n  \
                         prep:\n    initContainers: [{name: prepare, image: busybox}]\n    \
                         containers: [{name: sidecar, image: busybox}]\n";
        for yaml in [crate::engine::config::DEFAULT_CONFIG_YAML, with_init] {
            let (on, off) = (
                with_token_option(yaml, true),
                with_token_option(yaml, false),
            );
            for native in ["false", "true"] {
                let mut pod = pod_with_token(json!({NATIVE_SIDECAR_KEY: native}));
                if yaml != with_init {
                    pod["metadata"]["annotations"][PROFILES_KEY] = json!("default,logging");
                }
                let mut ours = injected_with(&pod, Policy::Disabled, &on);
                assert!(
                    !service_account_plugin(&mut ours, "kube-api-access-x7k2p"),
                    "native {native}: the plugin still had a container to mount the token into"
                );
                // The stored pod is the one the plugin's second round gives without the option.
                let mut theirs = injected_with(&pod, Policy::Disabled, &off);
                assert!(service_account_plugin(&mut theirs, "kube-api-access-x7k2p"));
                assert_eq!(ours, theirs, "native {native}");
            }
        }
        // Nothing to mount: automounting off, no token volume, or one no app container mounts.
        let on = with_token_option(crate::engine::config::DEFAULT_CONFIG_YAML, true);
        let mut off = pod_with_token(json!({}));
        off["spec"]["automountServiceAccountToken"] = json!(false);
        let mut no_volume = opted_in(json!({}));
        no_volume["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        let mut unmounted = opted_in(json!({}));
        unmounted["spec"]["volumes"] = json!([{"name": "kube-api-access-x", "emptyDir": {}}]);
        for pod in [off, no_volume, unmounted] {
            assert_eq!(
                injected_with(&pod, Policy::Disabled, &on),
                injected(&pod, Policy::Disabled),
                "{pod}"
            );
        }
    }

    #[test]
    fn token_mount_skips_a_container_that_mounts_the_token_path() {
        let own = json!({"name": "sidecar", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]});
        let text = own.to_string();
        assert_eq!(
            with_token_mount(Cow::Borrowed(&text), "kube-api-access-a"),
            text
        );
        let bare = with_token_mount(Cow::Borrowed(r#"{"name":"s"}"#), "kube-api-access-a");
        assert_eq!(
            bare,
            r#"{"name":"s","volumeMounts":[{"name":"kube-api-access-a","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}]}"#
        );
    }

    #[test]
    fn app_mount_path_moves_only_the_app_mount() {
        let out = injected(
            &opted_in(json!({APP_MOUNT_PATH_KEY: "/app"})),
            Policy::Disabled,
        );
        assert_eq!(
            out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            "/app"
        );
        assert_eq!(
            out["spec"]["containers"][1]["volumeMounts"][0]["mountPath"],
            "/pod-data"
        );
    }

    #[test]
    fn name_clashes_are_409_with_the_opt_out_hint() {
        let mut pod = opted_in(json!({}));
        pod["spec"]["containers"] = json!([{"name": "sidecar", "image": "x"}]);
        let (reason, code, msg) = denial(&pod, Policy::Disabled);
        assert_eq!((reason, code), (Reason::NameClash, 409));
        assert!(
            msg.contains("\"sidecar\"") && msg.contains(INJECT_KEY),
            "{msg}"
        );

        let mut pod = opted_in(json!({}));
        pod["spec"]["initContainers"] = json!([{"name": "sidecar", "image": "x"}]);
        assert_eq!(denial(&pod, Policy::Disabled).0, Reason::NameClash);

        let mut pod = opted_in(json!({}));
        pod["spec"]["volumes"] = json!([{"name": "shared-data", "emptyDir": {}}]);
        let (reason, _, msg) = denial(&pod, Policy::Disabled);
        assert_eq!(reason, Reason::NameClash);
        assert!(msg.contains("volume named \"shared-data\""), "{msg}");

        let mut pod = opted_in(json!({APP_MOUNT_PATH_KEY: "/app"}));
        pod["spec"]["volumes"] = json!([{"name": "html", "emptyDir": {}}]);
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "html", "mountPath": "/app/"}]);
        let (reason, code, msg) = denial(&pod, Policy::Disabled);
        assert_eq!((reason, code), (Reason::NameClash, 409));
        assert!(msg.contains(APP_MOUNT_PATH_KEY), "{msg}");
    }

    #[test]
    fn precedence_unknown_profile_before_conflict_before_clash() {
        let mut pod = opted_in(json!({PROFILES_KEY: "nope", SHARE_PROCESS_KEY: "true"}));
        pod["spec"]["shareProcessNamespace"] = json!(false);
        pod["spec"]["containers"] = json!([{"name": "sidecar", "image": "x"}]);
        assert_eq!(denial(&pod, Policy::Disabled).0, Reason::UnknownProfile);
        pod["metadata"]["annotations"][PROFILES_KEY] = json!("default");
        assert_eq!(denial(&pod, Policy::Disabled).0, Reason::Conflict);
        pod["spec"]["shareProcessNamespace"] = json!(true);
        assert_eq!(denial(&pod, Policy::Disabled).0, Reason::NameClash);
    }

    #[test]
    fn patch_adds_missing_containers_whole_and_appends_to_existing() {
        let pod = json!({"metadata": {"name": "p", "labels": {INJECT_KEY: "true"}},
                         "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let Decision::Inject { injection, .. } = decide_json(&pod, Policy::Disabled) else {
            panic!()
        };
        let paths: Vec<&str> = injection.ops.iter().map(|op| op.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/spec/volumes",
                "/spec/containers/-",
                "/spec/containers/0/volumeMounts",
                "/metadata/annotations"
            ]
        );
        let pod = opted_in(json!({}));
        let Decision::Inject { injection, .. } = decide_json(&pod, Policy::Disabled) else {
            panic!()
        };
        let last = injection.ops.last().unwrap();
        assert_eq!(
            last.path,
            "/metadata/annotations/sidecar-injector.io~1status"
        );
        let escaped =
            json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "annotations", STATUS_KEY]);
        assert_eq!(STATUS_PATH, escaped.as_str());
        // The text is a valid RFC 6902 patch of adds only.
        let patch: json_patch::Patch = serde_json::from_str(&injection.patch_json()).unwrap();
        assert!(patch
            .0
            .iter()
            .all(|op| matches!(op, json_patch::PatchOperation::Add(_))));
    }

    #[test]
    fn a_pod_whose_patch_could_never_be_stored_is_denied_before_it_is_built() {
        let mut pod = opted_in(json!({}));
        let many: Vec<Value> = (0..20_000)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect();
        pod["spec"]["containers"] = Value::Array(many);
        let (reason, code, msg) = denial(&pod, Policy::Disabled);
        assert_eq!((reason, code), (Reason::TooLarge, 413));
        assert!(
            msg.contains("too large to inject into") && msg.contains("20000 app containers"),
            "{msg}"
        );
        // The estimate errs high, never low: a pod just under the bound gets a patch under it.
        let mut pod = opted_in(json!({}));
        let some: Vec<Value> = (0..5_000)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect();
        pod["spec"]["containers"] = Value::Array(some);
        match decide_json(&pod, Policy::Disabled) {
            Decision::Inject { injection, .. } => {
                assert!(injection.patch_json().len() < MAX_PATCH_BYTES)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_without_spec_is_a_bad_object() {
        let pod = json!({"metadata": {"name": "p"}});
        assert_eq!(denial(&pod, Policy::Enabled).0, Reason::BadObject);
    }

    #[test]
    fn pod_without_metadata_gets_metadata_added() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let out = injected(&pod, Policy::Enabled);
        assert!(out["metadata"]["annotations"][STATUS_KEY].is_string());
    }
}
