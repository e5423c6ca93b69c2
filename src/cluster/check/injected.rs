//! A pod that already carries our status: what it records, and whether its sidecars are
//! still what the config's profiles inject (`stale`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::evaluate::*;
use crate::engine::config::Config;
use crate::engine::inject::{self, Marker, StatusNames, STATUS_KEY};
use crate::engine::pod::PodView;
use crate::text::excerpt::Quoted;

/// What the status marker of an injected pod names.
pub(super) struct Injected {
    pub(super) profiles: Vec<String>,
    pub(super) containers: Vec<String>,
    /// Profile name to the digest it was injected with (empty: injected before digests).
    pub(super) digests: BTreeMap<String, String>,
}

/// What the status marker of an injected pod names; none when it names a container the pod
/// does not have (forged or left over: the webhook reviews such a pod as not injected).
pub(super) fn marker(pod: &Value) -> Option<Injected> {
    let text = pod["metadata"]["annotations"].get(STATUS_KEY)?.as_str()?;
    let owned = |status: StatusNames| Injected {
        profiles: status.profiles.iter().map(|p| p.to_string()).collect(),
        containers: status.all_containers().map(String::from).collect(),
        digests: status
            .digests
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    match PodView::from_value(pod) {
        Ok(view) => match inject::marker(&view) {
            Marker::Injected(status) => Some(owned(status)),
            Marker::Forged | Marker::Absent => None,
        },
        // What the engine cannot read as a pod, it never reviews: the marker counts as written.
        Err(_) => Some(owned(StatusNames::parse(text))),
    }
}

/// A pod that carries our status: injected, and for a live pod, whether its sidecars are
/// still the config's.
pub(super) fn already_injected(
    mut finding: Finding,
    injected: Injected,
    object: &Object,
    pod: &Value,
    config: &Config,
) -> Finding {
    finding.result = Verdict::Injected;
    finding.reason = "already-injected".into();
    if object.live && object.kind == "Pod" {
        if injected.digests.is_empty() {
            finding.message =
                "injected before profile digests were recorded: its version is unknown".into();
        } else if let Some(changes) = stale(pod, &injected.digests, config) {
            finding.result = Verdict::Stale;
            finding.reason = "profile-changed".into();
            finding.message = format!(
                "{changes}; `sidecar-injector rollout --stale` (or `kubectl rollout restart` \
                 its workload) gives it the current sidecars"
            );
        }
    }
    finding.profiles = injected.profiles;
    finding.containers = injected.containers;
    finding
}

/// What differs between the profiles a pod was injected with (the digests its status
/// records) and the config's same profiles, one clause per change; none when every digest
/// is current.
pub(super) fn stale(
    pod: &Value,
    recorded: &BTreeMap<String, String>,
    config: &Config,
) -> Option<String> {
    let mut changes = Vec::new();
    let current = |p: &str| config.profiles.get(p).map(|p| p.digest.as_str());
    for (name, digest) in inject::outdated(recorded, current) {
        let Some(profile) = config.profiles.get(name) else {
            changes.push(format!("profile {name}: no longer configured"));
            continue;
        };
        let before = changes.len();
        for wanted in &profile.configured {
            let cname = wanted["name"].as_str().unwrap_or_default();
            match pod_container(pod, cname) {
                None => changes.push(format!("{name}/{cname}: added to the profile")),
                Some(have) => changes.extend(
                    container_changes(have, wanted)
                        .into_iter()
                        .map(|c| format!("{name}/{cname}: {c}")),
                ),
            }
        }
        if changes.len() == before {
            changes.push(format!(
                "profile {name}: digest {digest} -> {} (its volumes, app mounts or container order changed)",
                profile.digest
            ));
        }
    }
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// A container of the pod by name, in containers or initContainers (a native sidecar).
pub(super) fn pod_container<'p>(pod: &'p Value, name: &str) -> Option<&'p Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

/// How a running sidecar differs from the configured one, in the fields an operator changes
/// (image, command, args, resources, env, mounts); what the injector adds per pod (the token
/// mount, process-sharing settings) is not a difference.
pub(super) fn container_changes(have: &Value, wanted: &Value) -> Vec<String> {
    let mut changes = Vec::new();
    let show = |v: &Value| match v {
        Value::Null => "none".to_string(),
        Value::String(s) => Quoted(s).to_string(),
        other => Quoted(&other.to_string()).to_string(),
    };
    for field in ["image", "command", "args", "resources", "env"] {
        if have[field] != wanted[field] {
            changes.push(match field {
                "image" => format!("image {} -> {}", show(&have[field]), show(&wanted[field])),
                _ => format!("{field} changed"),
            });
        }
    }
    let paths = |c: &Value| -> BTreeSet<String> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["mountPath"].as_str().map(String::from))
            .collect()
    };
    let (had, want) = (paths(have), paths(wanted));
    let missing: Vec<&String> = want.difference(&had).collect();
    if !missing.is_empty() {
        changes.push(format!(
            "mounts {} added",
            missing
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    changes
}
