//! Pure: our pod-level keys put on a workload's own metadata, where no pod ever sees them
//! (`kubectl annotate deployment web sidecar-injector.io/inject=true`, the most common first
//! mistake with every injector), and the hint that says where they must go. Shared by
//! `POST /workloads`, `inject` and `check`.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::engine::inject::{
    APP_MOUNT_PATH_KEY, INJECT_KEY, NATIVE_SIDECAR_KEY, PROFILES_KEY, SHARE_PROCESS_KEY,
};

/// The keys a pod reads (the status annotation is ours to write, not the user's).
pub const POD_KEYS: [&str; 5] = [
    INJECT_KEY,
    PROFILES_KEY,
    SHARE_PROCESS_KEY,
    NATIVE_SIDECAR_KEY,
    APP_MOUNT_PATH_KEY,
];

/// The kinds checked, as (API group, kind): the SPEC's five, for the tests that go over each
/// (`template` below is what decides).
#[cfg(test)]
pub const WORKLOAD_KINDS: [(&str, &str); 5] = [
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// Where a workload kind keeps its pod template (`None`: not a workload we check).
/// ReplicaSets are left out: the Deployment controller copies a Deployment's annotations onto
/// its ReplicaSets, so a warning there would only ever reach a controller.
pub fn template_path(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
            Some("spec.template")
        }
        ("batch", "CronJob") => Some("spec.jobTemplate.spec.template"),
        _ => None,
    }
}

/// A key found on the workload's own metadata but not on its pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misplaced {
    pub key: &'static str,
    /// `annotations` or `labels`: where on the workload's own metadata it sits.
    pub place: &'static str,
    /// Where it must go instead, e.g. `spec.template.metadata.annotations`.
    pub target: String,
}

impl Misplaced {
    /// The warning kubectl prints to whoever applied the workload.
    pub fn warning(&self, kind: &str) -> String {
        format!(
            "{} is on the {kind}'s own metadata.{}, which no pod carries: move it to {}",
            self.key, self.place, self.target
        )
    }

    /// The short form, for `check`'s DETAIL column and `inject`'s stderr.
    pub fn hint(&self, kind: &str) -> String {
        let what = if self.place == "labels" {
            "label"
        } else {
            "annotation"
        };
        format!(
            "{what} {} on the {kind}'s own metadata: move it to {}",
            self.key, self.target
        )
    }
}

/// Only the keys of a metadata block are read; their values are skipped unread.
#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    annotations: Option<BTreeMap<String, IgnoredAny>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, IgnoredAny>>,
}

impl Meta {
    /// Where `key` sits: `annotations` (looked at first) or `labels`.
    fn place_of(&self, key: &str) -> Option<&'static str> {
        let has = |m: &Option<BTreeMap<String, IgnoredAny>>| {
            m.as_ref().is_some_and(|m| m.contains_key(key))
        };
        if has(&self.annotations) {
            Some("annotations")
        } else if has(&self.labels) {
            Some("labels")
        } else {
            None
        }
    }
}

#[derive(Deserialize, Default)]
struct Template {
    #[serde(default)]
    metadata: Option<Meta>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    template: Option<Template>,
    #[serde(default)]
    job_template: Option<Box<Workload>>,
}

#[derive(Deserialize, Default)]
struct Workload {
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    spec: Option<Spec>,
}

impl Workload {
    /// The pod template's metadata (through a CronJob's job template).
    fn template_meta(&self) -> Option<&Meta> {
        let spec = self.spec.as_ref()?;
        match &spec.job_template {
            Some(job) => job.template_meta(),
            None => spec.template.as_ref()?.metadata.as_ref(),
        }
    }
}

/// Our keys on a workload's own metadata that its pod template lacks, in [`POD_KEYS`]'
/// order, one per key. `object` is the workload's JSON; anything that does not decode as a
/// workload, or a kind we do not check, has none.
pub fn misplaced_keys(group: &str, kind: &str, object: &str) -> Vec<Misplaced> {
    let Some(path) = template_path(group, kind) else {
        return Vec::new();
    };
    let Ok(workload) = serde_json::from_str::<Workload>(object) else {
        return Vec::new();
    };
    from_workload(&workload, path)
}

/// The same for a manifest already decoded as JSON (`inject` reads YAML, `check` the API's
/// objects), its group read from its own `apiVersion`.
pub fn misplaced_in_manifest(kind: &str, object: &serde_json::Value) -> Vec<Misplaced> {
    let group = object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    let Some(path) = template_path(group, kind) else {
        return Vec::new();
    };
    let Ok(workload) = Workload::deserialize(object) else {
        return Vec::new();
    };
    from_workload(&workload, path)
}

fn from_workload(workload: &Workload, path: &str) -> Vec<Misplaced> {
    let Some(own) = &workload.metadata else {
        return Vec::new();
    };
    let template = workload.template_meta();
    POD_KEYS
        .into_iter()
        .filter(|key| template.is_none_or(|t| t.place_of(key).is_none()))
        .filter_map(|key| {
            let place = own.place_of(key)?;
            Some(Misplaced {
                key,
                place,
                target: format!("{path}.metadata.annotations"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(group: &str, kind: &str, object: serde_json::Value) -> Vec<String> {
        misplaced_keys(group, kind, &object.to_string())
            .iter()
            .map(|m| m.warning(kind))
            .collect()
    }

    #[test]
    fn keys_on_the_workload_but_not_its_template_are_named_with_where_they_go() {
        let deployment = json!({
            "metadata": {"annotations": {INJECT_KEY: "true", PROFILES_KEY: "debug", "other": "x"},
                         "labels": {SHARE_PROCESS_KEY: "true"}},
            "spec": {"template": {"metadata": {"annotations": {PROFILES_KEY: "debug"}}}}});
        assert_eq!(
            keys("apps", "Deployment", deployment),
            [
                "sidecar-injector.io/inject is on the Deployment's own metadata.annotations, which no pod carries: move it to spec.template.metadata.annotations",
                "sidecar-injector.io/share-process-namespace is on the Deployment's own metadata.labels, which no pod carries: move it to spec.template.metadata.annotations",
            ]
        );
    }

    #[test]
    fn a_cronjob_is_read_through_its_job_template() {
        let misplaced = json!({"metadata": {"annotations": {INJECT_KEY: "true"}},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {}}}}}});
        assert_eq!(
            misplaced_keys("batch", "CronJob", &misplaced.to_string())[0].target,
            "spec.jobTemplate.spec.template.metadata.annotations"
        );
        let placed = json!({"metadata": {"annotations": {INJECT_KEY: "true"}},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {INJECT_KEY: "true"}}}}}}});
        assert!(keys("batch", "CronJob", placed).is_empty());
    }

    #[test]
    fn every_workload_kind_and_nothing_else() {
        let object = json!({"metadata": {"annotations": {INJECT_KEY: "true"}}, "spec": {}});
        for (group, kind) in WORKLOAD_KINDS {
            assert_eq!(keys(group, kind, object.clone()).len(), 1, "{kind}");
        }
        for (group, kind) in [("apps", "ReplicaSet"), ("", "Pod"), ("", "Deployment")] {
            assert!(
                keys(group, kind, object.clone()).is_empty(),
                "{group}/{kind}"
            );
        }
    }

    #[test]
    fn bad_input_has_no_warnings_and_no_error() {
        for object in [
            "null",
            "[]",
            "\"x\"",
            r#"{"metadata": {"annotations": ["not", "a", "map"]}}"#,
            r#"{"metadata": 7}"#,
            "{}",
        ] {
            assert!(
                misplaced_keys("apps", "Deployment", object).is_empty(),
                "{object}"
            );
        }
        // Values of any type are skipped unread; only the keys count.
        let odd = json!({"metadata": {"annotations": {INJECT_KEY: {"deep": [1, 2]}}}});
        assert_eq!(keys("apps", "Deployment", odd).len(), 1);
    }

    #[test]
    fn hints_are_short() {
        let m = &misplaced_keys(
            "batch",
            "CronJob",
            &json!({"metadata": {"labels": {APP_MOUNT_PATH_KEY: "/x"}}}).to_string(),
        )[0];
        assert_eq!(
            m.hint("CronJob"),
            "label sidecar-injector.io/app-mount-path on the CronJob's own metadata: move it to spec.jobTemplate.spec.template.metadata.annotations"
        );
        assert!(m.warning("CronJob").len() < 256);
    }
}
