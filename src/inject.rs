//! The injection engine: given a Pod, the policy and the config, decide whether to inject,
//! leave the pod unchanged or deny it, and build the minimal JSON patch. Pure: no I/O.

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{json, Value};

use crate::config::{Config, Named};
use crate::pod::{PodView, Spec, StrMap};

pub const INJECT_KEY: &str = "sidecar-injector.io/inject";
pub const PROFILES_KEY: &str = "sidecar-injector.io/profiles";
pub const SHARE_PROCESS_KEY: &str = "sidecar-injector.io/share-process-namespace";
pub const NATIVE_SIDECAR_KEY: &str = "sidecar-injector.io/native-sidecar";
pub const APP_MOUNT_PATH_KEY: &str = "sidecar-injector.io/app-mount-path";
pub const STATUS_KEY: &str = "sidecar-injector.io/status";

/// The app mount whose path `app-mount-path` moves.
const SHARED_VOLUME: &str = "shared-data";

const PTRACE_WARNING: &str = "sidecar-injector: SYS_PTRACE was added to the injected sidecar(s) \
for sidecar-injector.io/share-process-namespace; the Pod Security \"baseline\" and \"restricted\" \
levels reject this pod";

/// `policy` of `/mutate`: who is injected when a pod says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Inject every pod unless it opts out (namespace opted in).
    Enabled,
    /// Inject only pods that opt in.
    #[default]
    Disabled,
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
    Conflict,
    NameClash,
    OptedIn,
    NamespaceEnabled,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::BadRequest,
        Reason::TooLarge,
        Reason::NotAPodCreate,
        Reason::BadObject,
        Reason::AlreadyInjected,
        Reason::BadAnnotation,
        Reason::OptedOut,
        Reason::NotOptedIn,
        Reason::UnknownProfile,
        Reason::Conflict,
        Reason::NameClash,
        Reason::OptedIn,
        Reason::NamespaceEnabled,
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
            Reason::Conflict => "conflict",
            Reason::NameClash => "name-clash",
            Reason::OptedIn => "opted-in",
            Reason::NamespaceEnabled => "namespace-enabled",
        }
    }
}

/// What an injection adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Patch,
    pub warnings: Vec<String>,
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Inject {
        reason: Reason,
        injection: Injection,
    },
    Unchanged(Reason),
    Deny {
        reason: Reason,
        code: u16,
        message: String,
    },
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Inject { reason, .. }
            | Decision::Unchanged(reason)
            | Decision::Deny { reason, .. } => *reason,
        }
    }

    fn deny(reason: Reason, code: u16, message: String) -> Decision {
        Decision::Deny {
            reason,
            code,
            message,
        }
    }
}

fn parse_bool(source: &str, key: &str, value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!(
            "{source} {key}: invalid value {value:?}: it takes \"true\" or \"false\""
        ))
    }
}

/// Profile names in order, each once; `Err` for an empty list or an empty name.
fn parse_profiles(value: &str) -> Result<Vec<&str>, String> {
    let mut names: Vec<&str> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!(
                "annotation {PROFILES_KEY}: invalid value {value:?}: it takes a comma-separated \
                 list of profile names, none of them empty"
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

fn check_mount_path(value: &str) -> Result<&str, String> {
    if value.starts_with('/') && !value.split('/').any(|seg| seg == "..") {
        Ok(value)
    } else {
        Err(format!(
            "annotation {APP_MOUNT_PATH_KEY}: invalid value {value:?}: it takes an absolute path \
             with no \"..\" segment"
        ))
    }
}

/// Paths compare equal whatever their trailing slashes (`/app/` mounts where `/app` does).
fn same_path(a: &str, b: &str) -> bool {
    let trim = |p: &str| {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    trim(a) == trim(b)
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn ptr<'t>(tokens: impl IntoIterator<Item: Into<Token<'t>>>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

/// Appends `items` to the array at `base`: one add of the whole array when the pod has none,
/// else one `/-` add per item, so nothing the pod has is replaced or reordered.
fn append_all(ops: &mut Vec<PatchOperation>, base: &[&str], exists: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if exists {
        for item in items {
            ops.push(add(ptr(base.iter().copied().chain(["-"])), item));
        }
    } else {
        ops.push(add(ptr(base.iter().copied()), Value::Array(items)));
    }
}

fn object_entry<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = value.as_object_mut()?;
    Some(map.entry(key).or_insert_with(|| json!({})))
}

/// Lets a sidecar see and signal the app's processes (the SPEC's share-process row).
fn grant_ptrace(container: &mut Value) {
    if let Some(map) = container.as_object_mut() {
        map.insert("stdin".into(), Value::Bool(true));
        map.insert("tty".into(), Value::Bool(true));
    }
    let Some(caps) =
        object_entry(container, "securityContext").and_then(|sc| object_entry(sc, "capabilities"))
    else {
        return;
    };
    let Some(caps) = caps.as_object_mut() else {
        return;
    };
    let add = caps
        .entry("add")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = add.as_array_mut() {
        if !list.iter().any(|c| c == "SYS_PTRACE") {
            list.push(Value::String("SYS_PTRACE".into()));
        }
    }
}

fn clash_message(what: &str) -> String {
    format!("{what}; rename it, or opt this pod out with annotation {INJECT_KEY}: \"false\"")
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
pub fn decide(pod: &PodView<'_>, policy: Policy, config: &Config) -> Decision {
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::deny(Reason::BadObject, 400, "the pod has no spec".into());
    };
    let empty = StrMap::default();
    let annotations = pod.annotations().unwrap_or(&empty);
    let labels = pod.labels().unwrap_or(&empty);
    if annotations.contains_key(STATUS_KEY) {
        return Decision::Unchanged(Reason::AlreadyInjected);
    }

    // The opt-in key: the annotation wins over the label, and only its value is checked.
    let opt_in = match annotations.get(INJECT_KEY) {
        Some(v) => Some(("annotation", v)),
        None => labels.get(INJECT_KEY).map(|v| ("label", v)),
    };
    let reason = match opt_in {
        Some((source, value)) => match parse_bool(source, INJECT_KEY, value) {
            Err(message) => return Decision::deny(Reason::BadAnnotation, 400, message),
            Ok(false) => return Decision::Unchanged(Reason::OptedOut),
            Ok(true) => Reason::OptedIn,
        },
        None if policy == Policy::Enabled => Reason::NamespaceEnabled,
        None => return Decision::Unchanged(Reason::NotOptedIn),
    };

    match plan(pod, spec, annotations, config) {
        Ok(injection) => Decision::Inject { reason, injection },
        Err((reason, code, message)) => Decision::deny(reason, code, message),
    }
}

type Denial = (Reason, u16, String);

fn bad_annotation(message: String) -> Denial {
    (Reason::BadAnnotation, 400, message)
}

/// Checks the other keys and builds the patch for a pod that will be injected.
fn plan(
    pod: &PodView<'_>,
    spec: &Spec<'_>,
    annotations: &StrMap<'_>,
    config: &Config,
) -> Result<Injection, Denial> {
    let profiles: Vec<&str> = match annotations.get(PROFILES_KEY) {
        Some(v) => parse_profiles(v).map_err(bad_annotation)?,
        None => config.default_profiles.iter().map(String::as_str).collect(),
    };
    let share = match annotations.get(SHARE_PROCESS_KEY) {
        Some(v) => parse_bool("annotation", SHARE_PROCESS_KEY, v).map_err(bad_annotation)?,
        None => false,
    };
    let native = match annotations.get(NATIVE_SIDECAR_KEY) {
        Some(v) => parse_bool("annotation", NATIVE_SIDECAR_KEY, v).map_err(bad_annotation)?,
        None => config.native_sidecars,
    };
    let mount_path = match annotations.get(APP_MOUNT_PATH_KEY) {
        Some(v) => Some(check_mount_path(v).map_err(bad_annotation)?),
        None => None,
    };

    let mut selected = Vec::with_capacity(profiles.len());
    for name in &profiles {
        match config.profiles.get(*name) {
            Some(p) => selected.push(p),
            None => {
                return Err((
                    Reason::UnknownProfile,
                    400,
                    format!(
                        "annotation {PROFILES_KEY}: unknown profile {name:?}; known profiles: {}",
                        config.profile_names()
                    ),
                ))
            }
        }
    }

    if share && spec.share_process_namespace == Some(false) {
        return Err((
            Reason::Conflict,
            409,
            format!(
                "annotation {SHARE_PROCESS_KEY}: \"true\" conflicts with the pod's \
                 spec.shareProcessNamespace: false"
            ),
        ));
    }

    // What the profiles add, in list order; the config guarantees one definition per name.
    let mut volumes: Vec<&Named> = Vec::new();
    let mut init_containers: Vec<&Named> = Vec::new();
    let mut sidecars: Vec<&Named> = Vec::new();
    let mut mounts: Vec<(String, Value)> = Vec::new();
    for p in &selected {
        for v in &p.volumes {
            if !volumes.iter().any(|x| x.name == v.name) {
                volumes.push(v);
            }
        }
        for c in &p.init_containers {
            if !init_containers.iter().any(|x| x.name == c.name) {
                init_containers.push(c);
            }
        }
        for c in &p.containers {
            if !sidecars.iter().any(|x| x.name == c.name) {
                sidecars.push(c);
            }
        }
        for m in &p.app_volume_mounts {
            let (path, json) = match mount_path {
                Some(path) if m.name == SHARED_VOLUME => {
                    let mut json = m.json.clone();
                    if let Some(map) = json.as_object_mut() {
                        map.insert("mountPath".into(), Value::String(path.to_string()));
                    }
                    (path.to_string(), json)
                }
                _ => (m.mount_path.clone(), m.json.clone()),
            };
            if !mounts.iter().any(|(p, _)| same_path(p, &path)) {
                mounts.push((path, json));
            }
        }
    }

    // Name clashes: a name we would add that the pod already has.
    let existing = all_container_names(spec);
    for c in init_containers.iter().chain(&sidecars) {
        if existing.contains(&c.name.as_str()) {
            return Err((
                Reason::NameClash,
                409,
                clash_message(&format!(
                    "the pod already has a container named {:?} that sidecar-injector did not inject",
                    c.name
                )),
            ));
        }
    }
    for v in &volumes {
        if spec
            .volumes
            .iter()
            .flatten()
            .any(|pv| pv.name == v.name.as_str())
        {
            return Err((
                Reason::NameClash,
                409,
                clash_message(&format!(
                    "the pod already has a volume named {:?} that sidecar-injector did not inject",
                    v.name
                )),
            ));
        }
    }
    for c in &spec.containers {
        for m in c.volume_mounts.iter().flatten() {
            if let Some((path, _)) = mounts.iter().find(|(p, _)| same_path(p, &m.mount_path)) {
                return Err((
                    Reason::NameClash,
                    409,
                    format!(
                        "container {:?} already mounts {:?} at {path:?}, where sidecar-injector \
                         mounts the shared volume; set annotation {APP_MOUNT_PATH_KEY} to another \
                         path, or opt this pod out with annotation {INJECT_KEY}: \"false\"",
                        c.name, m.name
                    ),
                ));
            }
        }
    }

    let sidecar_json = |c: &Named, restart_always: bool| {
        let mut json = c.json.clone();
        if share {
            grant_ptrace(&mut json);
        }
        if let (true, Some(map)) = (restart_always, json.as_object_mut()) {
            map.insert("restartPolicy".into(), Value::String("Always".into()));
        }
        json
    };

    let mut ops = Vec::new();
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes.iter().map(|v| v.json.clone()).collect(),
    );
    let mut new_init: Vec<Value> = init_containers.iter().map(|c| c.json.clone()).collect();
    if native {
        new_init.extend(sidecars.iter().map(|c| sidecar_json(c, true)));
    }
    append_all(
        &mut ops,
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        new_init,
    );
    if !native {
        append_all(
            &mut ops,
            &["spec", "containers"],
            true,
            sidecars.iter().map(|c| sidecar_json(c, false)).collect(),
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let base = ptr(["spec", "containers"]);
        let mut base = base;
        base.push_back(i);
        base.push_back("volumeMounts");
        let items: Vec<Value> = mounts.iter().map(|(_, json)| json.clone()).collect();
        if items.is_empty() {
            continue;
        }
        if c.volume_mounts.is_some() {
            for item in items {
                let mut p = base.clone();
                p.push_back("-");
                ops.push(add(p, item));
            }
        } else {
            ops.push(add(base, Value::Array(items)));
        }
    }
    let mut warnings = Vec::new();
    if share {
        if spec.share_process_namespace != Some(true) {
            ops.push(add(
                ptr(["spec", "shareProcessNamespace"]),
                Value::Bool(true),
            ));
        }
        if !sidecars.is_empty() {
            warnings.push(PTRACE_WARNING.to_string());
        }
    }

    let status = json!({
        "profiles": profiles,
        "containers": if native { Vec::new() } else { sidecars.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() },
        "initContainers": init_containers.iter().map(|c| c.name.as_str())
            .chain(sidecars.iter().filter(|_| native).map(|c| c.name.as_str()))
            .collect::<Vec<_>>(),
        "volumes": volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
    })
    .to_string();
    match &pod.metadata {
        // No metadata at all: `/metadata/annotations` would have no parent to go into.
        None => ops.push(add(
            ptr(["metadata"]),
            json!({ "annotations": { STATUS_KEY: status } }),
        )),
        Some(m) if m.annotations.is_none() => ops.push(add(
            ptr(["metadata", "annotations"]),
            json!({ STATUS_KEY: status }),
        )),
        Some(_) => ops.push(add(
            ptr(["metadata", "annotations", STATUS_KEY]),
            Value::String(status),
        )),
    }

    Ok(Injection {
        patch: Patch(ops),
        warnings,
        profiles: profiles.iter().map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::embedded().unwrap()
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

    fn decide_json(pod: &Value, policy: Policy) -> Decision {
        decide(&PodView::from_value(pod).unwrap(), policy, &config())
    }

    /// Applies the decision's patch; returns the patched pod.
    fn injected(pod: &Value, policy: Policy) -> Value {
        match decide_json(pod, policy) {
            Decision::Inject { injection, .. } => {
                let mut out = pod.clone();
                json_patch::patch(&mut out, &injection.patch).unwrap();
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
            Decision::Unchanged(Reason::OptedOut)
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
            Decision::Unchanged(Reason::OptedOut)
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
            Decision::Unchanged(Reason::NotOptedIn)
        );
        assert_eq!(
            decide_json(&pod, Policy::Enabled).reason(),
            Reason::NamespaceEnabled
        );
        let pod = pod_with(json!({INJECT_KEY: "false"}), json!({}), app_spec());
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::Unchanged(Reason::OptedOut)
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
            Decision::Unchanged(Reason::NotOptedIn)
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
    fn already_injected_pod_is_left_alone_before_anything_else() {
        let pod = pod_with(
            json!({STATUS_KEY: "{}", INJECT_KEY: "bogus"}),
            json!({}),
            app_spec(),
        );
        assert_eq!(
            decide_json(&pod, Policy::Enabled),
            Decision::Unchanged(Reason::AlreadyInjected)
        );
    }

    #[test]
    fn injection_is_idempotent() {
        let out = injected(&opted_in(json!({})), Policy::Disabled);
        assert_eq!(
            decide_json(&out, Policy::Enabled),
            Decision::Unchanged(Reason::AlreadyInjected)
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

    #[test]
    fn share_process_namespace_grants_ptrace_and_warns() {
        let pod = opted_in(json!({SHARE_PROCESS_KEY: "True"}));
        let out = injected(&pod, Policy::Disabled);
        assert_eq!(out["spec"]["shareProcessNamespace"], true);
        let sidecar = &out["spec"]["containers"][1];
        assert_eq!(
            sidecar["securityContext"]["capabilities"]["add"],
            json!(["SYS_PTRACE"])
        );
        assert_eq!(
            sidecar["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(sidecar["securityContext"]["privileged"], false);
        assert_eq!(
            (sidecar["stdin"].clone(), sidecar["tty"].clone()),
            (json!(true), json!(true))
        );
        match decide_json(&pod, Policy::Disabled) {
            Decision::Inject { injection, .. } => {
                assert_eq!(injection.warnings.len(), 1);
                assert!(injection.warnings[0].contains("baseline"));
            }
            other => panic!("{other:?}"),
        }
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
        assert!(!serde_json::to_string(&injection.patch)
            .unwrap()
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
        let paths: Vec<String> = injection
            .patch
            .0
            .iter()
            .map(|op| match op {
                PatchOperation::Add(a) => a.path.to_string(),
                other => panic!("only adds expected: {other:?}"),
            })
            .collect();
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
        let last = serde_json::to_value(injection.patch.0.last().unwrap()).unwrap();
        assert_eq!(
            last["path"],
            "/metadata/annotations/sidecar-injector.io~1status"
        );
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
