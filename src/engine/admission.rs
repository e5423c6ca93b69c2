//! AdmissionReview bytes in, AdmissionReview bytes out: the one function (`review`) that the
//! server and the `review` command share, so both answer with the same bytes.
//!
//! The envelope is decoded into a lean borrowed struct rather than kube-core's
//! `AdmissionReview<T>`: kube-core requires `userInfo`/`resource`, decodes the object as one
//! type (a CONNECT carries PodExecOptions, not a Pod) and serializes `patch` as an array of
//! numbers, while the SPEC (and Go's `[]byte`) want base64. kube-core's constants keep the
//! names in one place.

use std::borrow::Cow;

use base64::Engine as _;
use kube::core::admission::{META_API_VERSION_V1, META_KIND};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::engine::config::Config;
use crate::engine::inject::{decide, Decision, Policy, Reason};
use crate::engine::pod::{borrowed, Obj, PodView};
use crate::text::excerpt::{bounded, Quoted};

/// Largest body accepted; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// An input answered at the HTTP level (400, 408 or 413) rather than with an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// The memory budget for reviews in flight stayed exhausted (clients sending large
    /// bodies, or not reading their answers): try again.
    #[error("the server is at its memory budget for reviews in flight; retry")]
    Busy,
    /// A fault of ours while reviewing (a panic caught): never the input's fault.
    #[error("internal error while reviewing: {0}")]
    Internal(String),
}

impl RequestError {
    pub fn reason(&self) -> Reason {
        match self {
            RequestError::BadRequest(_) | RequestError::Timeout(_) | RequestError::Busy => {
                Reason::BadRequest
            }
            RequestError::TooLarge => Reason::TooLarge,
            RequestError::Internal(_) => Reason::InternalError,
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::TooLarge => 413,
            RequestError::Timeout(_) => 408,
            RequestError::Busy => 503,
            RequestError::Internal(_) => 500,
        }
    }
}

/// Whether the answer injected, left the pod alone or denied it (the metric's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Injected,
    Skipped,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// A reviewed request: the response bytes and what the log and metrics need to know.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Vec<u8>,
    pub outcome: Outcome,
    pub reason: Reason,
    pub uid: String,
    pub namespace: String,
    /// The pod's name, else its generateName, else the request's name.
    pub pod: String,
    pub profiles: Vec<String>,
}

/// The AdmissionReview, with the request's object decoded as `O`: either straight into the
/// pod view (one pass over the body, the common case), or kept as raw JSON to be judged on
/// its own when that fails (an object that is not a pod, or a broken one). Strings borrow
/// from the body (owned only when they carry escapes): most are only compared.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, O> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default = "Option::default")]
    request: Option<Request<'a, O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a, O> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Gvk<'a>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    namespace: Option<Cow<'a, str>>,
    #[serde(default = "Option::default")]
    object: Option<O>,
}

#[derive(Deserialize, Default)]
struct Gvk<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'a str,
    code: u16,
    reason: &'a str,
    message: &'a str,
}

fn bad(msg: impl Into<String>) -> RequestError {
    RequestError::BadRequest(msg.into())
}

/// The Kubernetes StatusReason that goes with a denial code.
fn status_reason(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        409 => "Conflict",
        413 => "RequestEntityTooLarge",
        _ => "BadRequest",
    }
}

/// `policy` from the query string: absent means disabled; anything but exactly `enabled` or
/// `disabled` (an empty or repeated value included) is a bad request. `path` is the policy of
/// the `/mutate/enabled` and `/mutate/disabled` routes, which a query may not contradict.
pub fn policy_from_query(
    query: Option<&str>,
    path: Option<Policy>,
) -> Result<Policy, RequestError> {
    let mut policy = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "policy" {
            continue;
        }
        let Some(parsed) = Policy::from_name(value) else {
            return Err(RequestError::BadRequest(format!(
                "invalid policy {}: it takes \"enabled\" or \"disabled\"",
                Quoted(value)
            )));
        };
        if policy.replace(parsed).is_some() {
            return Err(RequestError::BadRequest(
                "policy is given more than once".into(),
            ));
        }
    }
    match (path, policy) {
        (Some(p), Some(q)) if p != q => Err(RequestError::BadRequest(
            "the policy in the query contradicts the one in the path".into(),
        )),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Ok(Policy::Disabled),
    }
}

/// The policy of a `/mutate/{policy}` route.
pub fn path_policy_segment(segment: &str) -> Result<Policy, RequestError> {
    Policy::from_name(segment).ok_or_else(|| {
        RequestError::BadRequest(format!(
            "invalid policy {} in the path: it takes /mutate/enabled or /mutate/disabled",
            Quoted(segment)
        ))
    })
}

/// Reviews one AdmissionReview request body.
pub fn review(body: &[u8], policy: Policy, config: &Config) -> Result<Answer, RequestError> {
    judge(body, policy, config).map(Judged::answer)
}

/// Judges one AdmissionReview request body: the decision, typed, before its answer is
/// written (`check` reads it; `review` writes it).
pub fn judge<'c>(
    body: &[u8],
    policy: Policy,
    config: &'c Config,
) -> Result<Judged<'c>, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge);
    }
    // UTF-8 checked once for the whole body, so the decoder need not check each string it
    // keeps; a body that is not UTF-8 goes the reference way, which says where it breaks.
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<Envelope<Obj<PodView>>>(text).ok());
    if let Some(env) = fast {
        return judge_request(env, policy, config, |object| match object {
            Some(pod) => pod.0.check_type(),
            None => Err(NO_OBJECT.into()),
        });
    }
    judge_raw(body, policy, config)
}

/// The reference path: the envelope first, the object on its own.
fn judge_raw<'c>(
    body: &[u8],
    policy: Policy,
    config: &'c Config,
) -> Result<Judged<'c>, RequestError> {
    let env: Envelope<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| bad(bounded(format!("the body is not an AdmissionReview: {e}"))))?;
    judge_request(env, policy, config, |object| match object {
        Some(raw) if raw.get() != "null" => PodView::parse(raw.get()),
        _ => Err(NO_OBJECT.into()),
    })
}

const NO_OBJECT: &str = "the request has no pod object";

/// The envelope's checks every endpoint shares: an AdmissionReview v1 with a request and a uid.
fn checked_request<'a, O>(
    env: Envelope<'a, O>,
) -> Result<(Cow<'a, str>, Request<'a, O>), RequestError> {
    if env.kind.as_deref() != Some(META_KIND) {
        return Err(bad(format!(
            "the body is not an AdmissionReview (kind {})",
            Quoted(env.kind.as_deref().unwrap_or(""))
        )));
    }
    if env.api_version.as_deref() != Some(META_API_VERSION_V1) {
        return Err(bad(format!(
            "unsupported AdmissionReview version {}: only {META_API_VERSION_V1} is supported",
            Quoted(env.api_version.as_deref().unwrap_or(""))
        )));
    }
    let mut req = env
        .request
        .ok_or_else(|| bad("the AdmissionReview has no request"))?;
    match req.uid.take() {
        Some(u) if !u.is_empty() => Ok((u, req)),
        _ => Err(bad("the AdmissionReview request has no uid")),
    }
}

/// Reviews one `POST /workloads` body: always allowed, never a patch, a warning for each of
/// our pod-level keys on the workload's own metadata that its pod template lacks.
pub fn review_workload(body: &[u8]) -> Result<Answer, RequestError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge);
    }
    let env: Envelope<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| bad(bounded(format!("the body is not an AdmissionReview: {e}"))))?;
    let (uid, req) = checked_request(env)?;
    let gvk = req.kind.unwrap_or_default();
    let writes_object = matches!(req.operation.as_deref(), Some("CREATE" | "UPDATE"))
        && req.sub_resource.as_deref().unwrap_or("").is_empty();
    let warnings = match req.object {
        Some(object) if writes_object => {
            crate::engine::workload::misplaced_keys(&gvk.group, &gvk.kind, object.get())
                .iter()
                .map(|m| m.warning(&gvk.kind))
                .collect()
        }
        _ => Vec::new(),
    };
    let decision = Decision::Unchanged {
        reason: Reason::WorkloadChecked,
        warnings,
    };
    Ok(Answer {
        body: render(&uid, &decision),
        outcome: Outcome::Skipped,
        reason: Reason::WorkloadChecked,
        uid: uid.into_owned(),
        namespace: req.namespace.map(Cow::into_owned).unwrap_or_default(),
        pod: req.name.map(Cow::into_owned).unwrap_or_default(),
        profiles: Vec::new(),
    })
}

fn judge_request<'b, 'c, O>(
    env: Envelope<'_, O>,
    policy: Policy,
    config: &'c Config,
    decode: impl FnOnce(Option<O>) -> Result<PodView<'b>, String>,
) -> Result<Judged<'c>, RequestError> {
    let (uid, req) = checked_request(env)?;

    let gvk = req.kind.unwrap_or_default();
    let is_pod_create = gvk.group.is_empty()
        && gvk.kind == "Pod"
        && req.operation.as_deref() == Some("CREATE")
        && req.sub_resource.as_deref().unwrap_or("").is_empty();

    let mut pod_name = None;
    let decision = if !is_pod_create {
        Decision::unchanged(Reason::NotAPodCreate)
    } else {
        match decode(req.object) {
            Err(message) => Decision::Deny {
                reason: Reason::BadObject,
                code: 400,
                message,
            },
            Ok(pod) => {
                pod_name = pod.display_name().map(str::to_string);
                decide(&pod, policy, config)
            }
        }
    };
    Ok(Judged {
        uid: uid.into_owned(),
        namespace: req.namespace.map(Cow::into_owned).unwrap_or_default(),
        pod: pod_name.unwrap_or_else(|| req.name.map(Cow::into_owned).unwrap_or_default()),
        decision,
    })
}

/// A pod request judged, its answer not yet written.
#[derive(Debug)]
pub struct Judged<'c> {
    pub uid: String,
    pub namespace: String,
    /// The pod's name, else its generateName, else the request's name.
    pub pod: String,
    pub decision: Decision<'c>,
}

impl Judged<'_> {
    /// Whether it injects, leaves the pod alone or denies it.
    pub fn outcome(&self) -> Outcome {
        match self.decision {
            Decision::Inject { .. } => Outcome::Injected,
            Decision::Unchanged { .. } => Outcome::Skipped,
            Decision::Deny { .. } => Outcome::Denied,
        }
    }

    /// The answer: its bytes, and what the log and metrics need.
    pub fn answer(self) -> Answer {
        let body = render(&self.uid, &self.decision);
        let (outcome, reason) = (self.outcome(), self.decision.reason());
        let profiles = match self.decision {
            Decision::Inject { injection, .. } => injection.profiles,
            _ => Vec::new(),
        };
        Answer {
            body,
            outcome,
            reason,
            uid: self.uid,
            namespace: self.namespace,
            pod: self.pod,
            profiles,
        }
    }
}

/// Writes the AdmissionReview response. Written by hand rather than through a serde struct:
/// the base64 patch, most of the bytes, needs no escaping, and serde would scan it for some.
fn render(uid: &str, decision: &Decision) -> Vec<u8> {
    fn json<T: Serialize + ?Sized>(out: &mut String, value: &T) {
        // Strings, string lists and the status struct always serialize.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
    let mut out = String::with_capacity(match decision {
        Decision::Inject { injection, .. } => 512 + injection.patch_len() * 4 / 3,
        _ => 512,
    });
    out.push_str(r#"{"apiVersion":""#);
    out.push_str(META_API_VERSION_V1);
    out.push_str(r#"","kind":""#);
    out.push_str(META_KIND);
    out.push_str(r#"","response":{"uid":"#);
    json(&mut out, uid);
    match decision {
        Decision::Unchanged { .. } => out.push_str(r#","allowed":true"#),
        Decision::Inject { injection, .. } => {
            // A patch never goes without its type (kube-core's `with_patch` rule).
            out.push_str(r#","allowed":true,"patchType":"JSONPatch","patch":""#);
            base64::engine::general_purpose::STANDARD
                .encode_string(injection.patch_json(), &mut out);
            out.push('"');
        }
        Decision::Deny { code, message, .. } => {
            out.push_str(r#","allowed":false,"status":"#);
            json(
                &mut out,
                &StatusOut {
                    status: "Failure",
                    code: *code,
                    reason: status_reason(*code),
                    message,
                },
            );
        }
    }
    if !decision.warnings().is_empty() {
        out.push_str(r#","warnings":"#);
        json(&mut out, decision.warnings());
    }
    // The reason, in the apiserver's audit log (prefixed there with the webhook's name).
    out.push_str(r#","auditAnnotations":{"reason":""#);
    out.push_str(decision.reason().as_str());
    // Newline-terminated like most JSON APIs, so `review` prints exactly the server's bytes.
    out.push_str("\"}}}\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn policy_query_values() {
        assert_eq!(policy_from_query(None, None).unwrap(), Policy::Disabled);
        assert_eq!(
            policy_from_query(Some("policy=enabled"), None).unwrap(),
            Policy::Enabled
        );
        assert_eq!(
            policy_from_query(Some("timeout=10s&policy=disabled"), None).unwrap(),
            Policy::Disabled
        );
        for q in [
            "policy=",
            "policy",
            "policy=Enabled",
            "policy=on",
            "policy=enabled&policy=enabled",
        ] {
            assert!(policy_from_query(Some(q), None).is_err(), "{q}");
        }
        assert_eq!(
            policy_from_query(None, Some(Policy::Enabled)).unwrap(),
            Policy::Enabled
        );
        assert_eq!(
            policy_from_query(Some("policy=enabled"), Some(Policy::Enabled)).unwrap(),
            Policy::Enabled
        );
        assert!(policy_from_query(Some("policy=disabled"), Some(Policy::Enabled)).is_err());
    }

    fn cfg() -> Config {
        Config::embedded().unwrap()
    }

    fn review_json(body: &Value, policy: Policy) -> (Answer, Value) {
        let a = review(&serde_json::to_vec(body).unwrap(), policy, &cfg()).unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        (a, v)
    }

    fn request(request: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }

    fn pod_create(object: Value) -> Value {
        request(json!({
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "ns", "object": object,
        }))
    }

    fn opted_in_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "web-", "annotations": {"sidecar-injector.io/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
    }

    #[test]
    fn one_pass_and_reference_paths_give_the_same_bytes() {
        let c = cfg();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reviews");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            for policy in [Policy::Enabled, Policy::Disabled] {
                let fast = review(&body, policy, &c).unwrap();
                let reference = judge_raw(&body, policy, &c).unwrap().answer();
                assert_eq!(fast.body, reference.body);
                assert_eq!((fast.reason, fast.pod), (reference.reason, reference.pod));
                n += 1;
            }
        }
        assert!(n >= 20);
    }

    #[test]
    fn a_body_that_is_not_all_utf8_is_judged_as_before() {
        // serde_json does not check the UTF-8 of strings it skips, so such a body was
        // reviewed; it still is, by the reference path, with the same answer.
        let mut body = pod_create(opted_in_pod());
        body["request"]["userInfo"] = json!({"username": "a-b"});
        let good = serde_json::to_vec(&body).unwrap();
        let mut bad = good.clone();
        let at = bad.windows(3).position(|w| w == b"a-b").unwrap();
        bad[at + 1] = 0xff;
        assert!(std::str::from_utf8(&bad).is_err());
        let c = cfg();
        let (a, b) = (
            review(&good, Policy::Disabled, &c).unwrap(),
            review(&bad, Policy::Disabled, &c).unwrap(),
        );
        assert_eq!((a.body, a.reason), (b.body, b.reason));
        assert_eq!(a.outcome, Outcome::Injected);
    }

    #[test]
    fn injects_with_base64_patch_and_type() {
        let (a, v) = review_json(&pod_create(opted_in_pod()), Policy::Disabled);
        assert_eq!(a.outcome, Outcome::Injected);
        assert_eq!(a.pod, "web-");
        let r = &v["response"];
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        assert_eq!(r["auditAnnotations"]["reason"], "opted-in");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert!(patch.as_array().unwrap().len() >= 3);
        assert!(a.body.ends_with(b"}\n"));
    }

    #[test]
    fn unchanged_answer_has_no_patch_fields() {
        let mut pod = opted_in_pod();
        pod["metadata"]["annotations"] = json!({});
        let (a, v) = review_json(&pod_create(pod), Policy::Disabled);
        assert_eq!(a.reason, Reason::NotOptedIn);
        let r = v["response"].as_object().unwrap();
        assert!(
            !r.contains_key("patch") && !r.contains_key("patchType") && !r.contains_key("status")
        );
        assert_eq!(r["allowed"], true);
    }

    #[test]
    fn only_pod_create_without_subresource_is_mutated() {
        let base = pod_create(opted_in_pod());
        let cases = [
            ("/request/operation", json!("UPDATE")),
            ("/request/operation", json!("DELETE")),
            ("/request/subResource", json!("status")),
            (
                "/request/kind",
                json!({"group": "apps", "version": "v1", "kind": "Pod"}),
            ),
            (
                "/request/kind",
                json!({"group": "", "version": "v1", "kind": "Service"}),
            ),
        ];
        for (ptr, value) in cases {
            let mut body = base.clone();
            let key = ptr.trim_start_matches("/request/");
            body["request"][key] = value.clone();
            let (a, v) = review_json(&body, Policy::Enabled);
            assert_eq!(a.reason, Reason::NotAPodCreate, "{ptr} {value}");
            assert!(v["response"].get("patch").is_none());
        }
        // CONNECT carries PodExecOptions, not a Pod: still answered, unchanged.
        let body = request(json!({
            "uid": "c", "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "exec",
            "operation": "CONNECT",
            "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "command": ["sh"]},
        }));
        let (a, v) = review_json(&body, Policy::Enabled);
        assert_eq!(a.reason, Reason::NotAPodCreate);
        assert_eq!(v["response"]["uid"], "c");
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let mut body = pod_create(opted_in_pod());
        let (plain, _) = review_json(&body, Policy::Disabled);
        body["request"]["dryRun"] = json!(true);
        let (dry, _) = review_json(&body, Policy::Disabled);
        assert_eq!(plain.body, dry.body);
    }

    #[test]
    fn bad_objects_are_denied_400() {
        for object in [
            Value::Null,
            json!({"kind": "Service", "apiVersion": "v1"}),
            json!({"spec": {"containers": "nope"}}),
            json!("a string"),
        ] {
            let (a, v) = review_json(&pod_create(object.clone()), Policy::Enabled);
            assert_eq!(a.reason, Reason::BadObject, "{object}");
            assert_eq!(v["response"]["allowed"], false);
            assert_eq!(v["response"]["status"]["code"], 400);
            assert!(v["response"]["status"]["message"].as_str().unwrap().len() > 5);
        }
        let mut body = pod_create(Value::Null);
        body["request"].as_object_mut().unwrap().remove("object");
        let (a, _) = review_json(&body, Policy::Enabled);
        assert_eq!(a.reason, Reason::BadObject);
    }

    #[test]
    fn http_level_errors() {
        let c = cfg();
        let bad = |body: &[u8]| match review(body, Policy::Disabled, &c) {
            Err(RequestError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(bad(b"not json").contains("not an AdmissionReview"));
        assert!(bad(b"[]").contains("not an AdmissionReview"));
        assert!(bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#)
            .contains("not an AdmissionReview"));
        let m = bad(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#);
        assert!(
            m.contains("admission.k8s.io/v1beta1") && m.contains("only admission.k8s.io/v1"),
            "{m}"
        );
        assert!(
            bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .contains("no request")
        );
        assert!(bad(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#
        )
        .contains("no uid"));
        assert!(!bad(b"\xff\xfe").contains('\n'));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            review(&big, Policy::Disabled, &c).unwrap_err(),
            RequestError::TooLarge
        );
    }

    #[test]
    fn denial_carries_code_reason_and_message() {
        let mut pod = opted_in_pod();
        pod["spec"]["containers"][0]["name"] = json!("sidecar");
        let (a, v) = review_json(&pod_create(pod), Policy::Disabled);
        assert_eq!((a.outcome, a.reason), (Outcome::Denied, Reason::NameClash));
        let s = &v["response"]["status"];
        assert_eq!(
            (s["code"].clone(), s["reason"].clone()),
            (json!(409), json!("Conflict"))
        );
        assert_eq!(v["response"]["auditAnnotations"]["reason"], "name-clash");
    }
}
