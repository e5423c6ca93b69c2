//! The Pod Security Standards level an injected container needs on its own, judged from its
//! JSON the way the PodSecurity admission plugin judges a container (Kubernetes v1.37 rules,
//! container-level fields only: an injected sidecar must not rely on the pod's settings).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Restricted,
    Baseline,
    Privileged,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Restricted => "restricted",
            Level::Baseline => "baseline",
            Level::Privileged => "privileged",
        }
    }
}

/// Capabilities "baseline" allows to be added; "restricted" allows only NET_BIND_SERVICE.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The lowest level that admits `container`, and why it is not `restricted`.
pub fn container_level(container: &Value) -> (Level, Vec<String>) {
    let mut level = Level::Restricted;
    let mut why = Vec::new();
    let mut fail = |at: Level, reason: String| {
        level = level.max(at);
        why.push(reason);
    };
    let sc = &container["securityContext"];
    if sc["privileged"] == Value::Bool(true) {
        fail(Level::Privileged, "privileged: true".into());
    }
    let added = sc["capabilities"]["add"].as_array().into_iter().flatten();
    for cap in added.filter_map(Value::as_str) {
        if !BASELINE_CAPS.contains(&cap) {
            fail(Level::Privileged, format!("capabilities.add {cap}"));
        } else if cap != "NET_BIND_SERVICE" {
            fail(Level::Baseline, format!("capabilities.add {cap}"));
        }
    }
    let ports = container["ports"].as_array().into_iter().flatten();
    if ports
        .into_iter()
        .any(|p| p["hostPort"].as_i64().unwrap_or(0) != 0)
    {
        fail(Level::Privileged, "hostPort".into());
    }
    match sc["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault" | "Localhost") => {}
        Some("Unconfined") => fail(Level::Privileged, "seccompProfile Unconfined".into()),
        _ => fail(
            Level::Baseline,
            "seccompProfile.type is not RuntimeDefault or Localhost".into(),
        ),
    }
    if sc["allowPrivilegeEscalation"] != Value::Bool(false) {
        fail(
            Level::Baseline,
            "allowPrivilegeEscalation is not false".into(),
        );
    }
    let drops = sc["capabilities"]["drop"].as_array().into_iter().flatten();
    if !drops.filter_map(Value::as_str).any(|c| c == "ALL") {
        fail(
            Level::Baseline,
            "capabilities.drop does not include ALL".into(),
        );
    }
    if sc["runAsNonRoot"] != Value::Bool(true) {
        fail(Level::Baseline, "runAsNonRoot is not true".into());
    }
    if sc["runAsUser"] == 0 {
        fail(Level::Baseline, "runAsUser is 0".into());
    }
    (level, why)
}

/// What the kubelet checks before it starts a container: with `runAsNonRoot` in force (the
/// container's own, else the pod's), the user must be known to be non-zero. An injected
/// sidecar cannot rely on its image's user, so the user must be set: the container's own
/// `runAsUser`, else the pod's.
pub fn kubelet_would_start(container: &Value, pod_security: &Value) -> bool {
    let sc = &container["securityContext"];
    let non_root = sc["runAsNonRoot"]
        .as_bool()
        .or_else(|| pod_security["runAsNonRoot"].as_bool())
        .unwrap_or(false);
    let user = sc["runAsUser"]
        .as_i64()
        .or_else(|| pod_security["runAsUser"].as_i64());
    !non_root || user.is_some_and(|u| u != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restricted() -> Value {
        json!({"name": "s", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true, "runAsUser": 65534,
            "seccompProfile": {"type": "RuntimeDefault"}}})
    }

    #[test]
    fn restricted_container_is_restricted() {
        assert_eq!(container_level(&restricted()), (Level::Restricted, vec![]));
    }

    #[test]
    fn each_rule_raises_the_level() {
        let with = |path: &[&str], v: Value| {
            let mut c = restricted();
            let mut at = &mut c["securityContext"];
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = v;
            container_level(&c).0
        };
        assert_eq!(with(&["privileged"], json!(true)), Level::Privileged);
        assert_eq!(
            with(&["capabilities", "add"], json!(["SYS_PTRACE", "KILL"])),
            Level::Privileged
        );
        assert_eq!(
            with(&["capabilities", "add"], json!(["KILL"])),
            Level::Baseline
        );
        assert_eq!(
            with(&["capabilities", "add"], json!(["NET_BIND_SERVICE"])),
            Level::Restricted
        );
        assert_eq!(with(&["capabilities", "drop"], json!([])), Level::Baseline);
        assert_eq!(with(&["runAsNonRoot"], Value::Null), Level::Baseline);
        assert_eq!(with(&["runAsUser"], json!(0)), Level::Baseline);
        assert_eq!(
            with(&["allowPrivilegeEscalation"], json!(true)),
            Level::Baseline
        );
        assert_eq!(with(&["seccompProfile"], Value::Null), Level::Baseline);
        assert_eq!(
            with(&["seccompProfile"], json!({"type": "Unconfined"})),
            Level::Privileged
        );
        let mut c = restricted();
        c["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
        assert_eq!(container_level(&c).0, Level::Privileged);
    }

    #[test]
    fn kubelet_rule_needs_a_known_non_zero_user_under_run_as_non_root() {
        let pod = |v: Value| v;
        assert!(kubelet_would_start(&restricted(), &pod(json!({}))));
        let no_user = json!({"securityContext": {"runAsNonRoot": true}});
        assert!(!kubelet_would_start(&no_user, &json!({})));
        assert!(kubelet_would_start(&no_user, &json!({"runAsUser": 5})));
        let root = json!({"securityContext": {"runAsUser": 0}});
        assert!(kubelet_would_start(&root, &json!({})));
        assert!(!kubelet_would_start(&root, &json!({"runAsNonRoot": true})));
        assert!(!kubelet_would_start(
            &json!({}),
            &json!({"runAsNonRoot": true})
        ));
    }
}
