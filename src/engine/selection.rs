//! Which webhooks of a MutatingWebhookConfiguration kube-apiserver would call for a pod CREATE,
//! evaluated the way it does: namespaceSelector, objectSelector, rules, then matchConditions
//! (CEL). Pure: the caller supplies the namespace's labels and the pod. Used by `check`.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, RuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// Why the apiserver would not call a webhook, in the order it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NamespaceSelector(String),
    ObjectSelector(String),
    Rules,
    /// A condition evaluated to false (its name).
    MatchCondition(String),
    /// A condition failed to evaluate and the failurePolicy is Ignore.
    ConditionError(String),
}

impl Skip {
    /// How far the apiserver got before skipping: the furthest skip explains best.
    pub fn stage(&self) -> u8 {
        match self {
            Skip::NamespaceSelector(_) => 0,
            Skip::ObjectSelector(_) => 1,
            Skip::Rules => 2,
            Skip::MatchCondition(_) | Skip::ConditionError(_) => 3,
        }
    }
}

/// What the apiserver would do with one webhook for this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Call,
    Skip(Skip),
    /// A condition failed to evaluate under failurePolicy Fail: the create is rejected.
    Reject(String),
}

/// Whether `selector` selects `labels`; a missing selector selects everything (the webhook
/// API's default). An invalid selector is an error, as the apiserver would refuse it.
pub fn selects(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expression = true;
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        by_expression &= match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("label selector operator {other:?} is not valid")),
        };
    }
    Ok(by_label && by_expression)
}

/// `*` or the exact value.
fn covers(list: Option<&Vec<String>>, value: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|x| x == "*" || x == value))
}

/// Whether a rule covers CREATE of core/v1 `pods` (not a subresource) in a namespace.
fn rule_covers_pod_create(rule: &RuleWithOperations) -> bool {
    let resource = rule
        .resources
        .iter()
        .flatten()
        .any(|r| r == "pods" || r == "*" || r == "*/*");
    let scope = matches!(rule.scope.as_deref(), None | Some("*") | Some("Namespaced"));
    covers(rule.operations.as_ref(), "CREATE")
        && covers(rule.api_groups.as_ref(), "")
        && covers(rule.api_versions.as_ref(), "v1")
        && resource
        && scope
}

fn describe(selector: Option<&LabelSelector>) -> String {
    serde_json::to_string(&selector).unwrap_or_default()
}

/// Evaluates one condition with the variables the apiserver binds for a CREATE.
fn condition(expression: &str, pod: &Value, request: &Value) -> Result<bool, String> {
    use cel_interpreter::{Context, Program, Value as Cel};
    let program = Program::compile(expression).map_err(|e| format!("does not compile: {e}"))?;
    let mut ctx = Context::default();
    for (name, value) in [
        ("object", pod),
        ("oldObject", &Value::Null),
        ("request", request),
    ] {
        ctx.add_variable(name, value).map_err(|e| e.to_string())?;
    }
    match program.execute(&ctx) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("evaluates to {other:?}, not a bool")),
        Err(e) => Err(e.to_string()),
    }
}

/// What the apiserver would do with `hook` for a CREATE of `pod` in a namespace with
/// `namespace_labels`.
pub fn select(
    hook: &MutatingWebhook,
    namespace_labels: &BTreeMap<String, String>,
    pod: &Value,
) -> Selection {
    let ns_selector = hook.namespace_selector.as_ref();
    match selects(ns_selector, namespace_labels) {
        Ok(true) => {}
        Ok(false) => return Selection::Skip(Skip::NamespaceSelector(describe(ns_selector))),
        Err(e) => return Selection::Reject(format!("namespaceSelector: {e}")),
    }
    let pod_labels: BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let obj_selector = hook.object_selector.as_ref();
    match selects(obj_selector, &pod_labels) {
        Ok(true) => {}
        Ok(false) => return Selection::Skip(Skip::ObjectSelector(describe(obj_selector))),
        Err(e) => return Selection::Reject(format!("objectSelector: {e}")),
    }
    if !hook.rules.iter().flatten().any(rule_covers_pod_create) {
        return Selection::Skip(Skip::Rules);
    }
    let request = serde_json::json!({
        "operation": "CREATE",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": pod.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "name": pod.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "dryRun": false,
    });
    // As the apiserver: any false skips the webhook; otherwise an error applies the
    // failurePolicy (Fail unless Ignore).
    let mut error = None;
    for c in hook.match_conditions.iter().flatten() {
        match condition(&c.expression, pod, &request) {
            Ok(true) => {}
            Ok(false) => return Selection::Skip(Skip::MatchCondition(c.name.clone())),
            Err(e) => error = error.or(Some(format!("matchCondition {}: {e}", c.name))),
        }
    }
    match error {
        None => Selection::Call,
        Some(e) if hook.failure_policy.as_deref() == Some("Ignore") => {
            Selection::Skip(Skip::ConditionError(e))
        }
        Some(e) => Selection::Reject(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook(v: Value) -> MutatingWebhook {
        let mut base = json!({
            "name": "pod.sidecar-injector.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"url": "https://127.0.0.1/mutate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        });
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(meta: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}})
    }

    #[test]
    fn label_selector_operators() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "In", "values": ["x", "y"]},
                {"key": "c", "operator": "NotIn", "values": ["z"]},
                {"key": "d", "operator": "Exists"},
                {"key": "e", "operator": "DoesNotExist"},
            ]
        }))
        .unwrap();
        let yes = labels(&[("a", "1"), ("b", "y"), ("d", "")]);
        assert_eq!(selects(Some(&sel), &yes), Ok(true));
        let mut with_c = yes.clone();
        with_c.insert("c".into(), "z".into());
        assert_eq!(selects(Some(&sel), &with_c), Ok(false));
        with_c.insert("c".into(), "other".into());
        assert_eq!(selects(Some(&sel), &with_c), Ok(true));
        for (k, v) in [("a", "2"), ("b", "q"), ("e", "")] {
            let mut l = yes.clone();
            l.insert(k.into(), v.into());
            assert_eq!(selects(Some(&sel), &l), Ok(false), "{k}={v}");
        }
        let mut no_d = yes.clone();
        no_d.remove("d");
        assert_eq!(selects(Some(&sel), &no_d), Ok(false));
        assert_eq!(selects(None, &BTreeMap::new()), Ok(true));
        assert_eq!(
            selects(Some(&LabelSelector::default()), &BTreeMap::new()),
            Ok(true)
        );
        let bad: LabelSelector = serde_json::from_value(
            json!({"matchExpressions": [{"key": "a", "operator": "Maybe"}]}),
        )
        .unwrap();
        assert!(selects(Some(&bad), &BTreeMap::new()).is_err());
    }

    #[test]
    fn stages_in_the_apiservers_order() {
        let h = hook(json!({
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "objectSelector": {"matchLabels": {"app": "web"}},
            "matchConditions": [{"name": "named-web", "expression": "object.metadata.name == 'web'"}],
        }));
        let ns = labels(&[("team", "a")]);
        let p = pod(json!({"name": "web", "labels": {"app": "web"}}));
        assert_eq!(select(&h, &ns, &p), Selection::Call);
        assert!(matches!(
            select(&h, &BTreeMap::new(), &p),
            Selection::Skip(Skip::NamespaceSelector(_))
        ));
        assert!(matches!(
            select(&h, &ns, &pod(json!({"name": "web"}))),
            Selection::Skip(Skip::ObjectSelector(_))
        ));
        assert_eq!(
            select(
                &h,
                &ns,
                &pod(json!({"name": "api", "labels": {"app": "web"}}))
            ),
            Selection::Skip(Skip::MatchCondition("named-web".into()))
        );
    }

    #[test]
    fn rules_must_cover_pod_create() {
        let p = pod(json!({"name": "p"}));
        let rule = |r: Value| hook(json!({"rules": [r]}));
        for (r, expected) in [
            (
                json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}),
                true,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*/*"], "scope": "Namespaced"}),
                true,
            ),
            (
                json!({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}),
                false,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["pods"]}),
                false,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/*"]}),
                false,
            ),
            (
                json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Cluster"}),
                false,
            ),
        ] {
            assert_eq!(
                select(&rule(r.clone()), &BTreeMap::new(), &p) == Selection::Call,
                expected,
                "{r}"
            );
        }
    }

    #[test]
    fn a_failing_condition_applies_the_failure_policy() {
        let cond = json!([{"name": "broken", "expression": "object.metadata.nope == 'x'"}]);
        let p = pod(json!({"name": "p"}));
        let fail = hook(json!({"matchConditions": cond}));
        assert!(
            matches!(select(&fail, &BTreeMap::new(), &p), Selection::Reject(e) if e.contains("broken"))
        );
        let ignore = hook(json!({"matchConditions": cond, "failurePolicy": "Ignore"}));
        assert!(matches!(
            select(&ignore, &BTreeMap::new(), &p),
            Selection::Skip(Skip::ConditionError(_))
        ));
        // A false condition wins over an error, as in the apiserver.
        let both = hook(json!({"matchConditions": [
            {"name": "broken", "expression": "object.metadata.nope == 'x'"},
            {"name": "no", "expression": "false"},
        ]}));
        assert_eq!(
            select(&both, &BTreeMap::new(), &p),
            Selection::Skip(Skip::MatchCondition("no".into()))
        );
    }

    #[test]
    fn the_request_variable_is_bound() {
        let h = hook(json!({"matchConditions": [
            {"name": "create", "expression": "request.operation == 'CREATE' && request.namespace == 'ns1'"},
        ]}));
        assert_eq!(
            select(
                &h,
                &BTreeMap::new(),
                &pod(json!({"name": "p", "namespace": "ns1"}))
            ),
            Selection::Call
        );
    }
}
