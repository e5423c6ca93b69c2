//! What the end-to-end suites measure: the apiserver's own view of its calls to the webhook
//! (its histogram and its trace spans) and quantiles of them.

use std::time::Instant;

use serde_json::{json, Value};

use super::api::Api;
use super::cluster::{Cluster, INJECT, NS_WEBHOOK, OFF_NODE};
use super::root;

/// Creates `n` realistic pods (the benchmark's) in `ns`, one after another, named p0, p1...:
/// each create's time as the client saw it, ms. Opted in only if `ns` is.
pub fn timed_creates(api: &Api, ns: &str, n: usize, automount_token: bool) -> Vec<f64> {
    let review: Value = serde_json::from_slice(
        &std::fs::read(root().join("benches/fixtures/pod-create-realistic.json")).unwrap(),
    )
    .unwrap();
    let realistic = review["request"]["object"].clone();
    let mut annotations = realistic["metadata"]["annotations"].clone();
    annotations.as_object_mut().unwrap().remove(INJECT);
    (0..n)
        .map(|i| {
            let mut p = realistic.clone();
            p.as_object_mut().unwrap().remove("status");
            // Its ServiceAccount does not exist here.
            for k in ["serviceAccountName", "serviceAccount"] {
                p["spec"].as_object_mut().unwrap().remove(k);
            }
            p["metadata"] = json!({"name": format!("p{i}"), "namespace": ns,
                "labels": realistic["metadata"]["labels"], "annotations": annotations});
            if !automount_token {
                p["spec"]["automountServiceAccountToken"] = json!(false);
            }
            p["spec"]["schedulerName"] = json!(OFF_NODE);
            let start = Instant::now();
            if let Err(e) = api.create_pod(&p) {
                panic!("create {ns}/p{i}: {e}");
            }
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// The apiserver's histogram of its calls to our namespace-selected webhook (all its series,
/// summed), as cumulative `(le, count)` buckets in ascending order.
pub fn webhook_histogram(c: &Cluster) -> Vec<(f64, f64)> {
    let series = "apiserver_admission_webhook_admission_duration_seconds_bucket{";
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (le, n) in c
        .ok(&["get", "--raw", "/metrics"])
        .lines()
        .filter(|l| {
            l.starts_with(series)
                && l.contains(&format!("name=\"{NS_WEBHOOK}\""))
                && l.contains("type=\"admit\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse::<f64>().ok()?))
        })
    {
        match buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += n,
            None => buckets.push((le, n)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of some measurements (the nearest one at or above it).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// The bucket bound at or below which `q` of a histogram's observations fall.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |b| b.0)
}

/// One call to the webhook as the apiserver traced it.
pub struct WebhookSpan {
    /// The AdmissionReview's `request.uid`.
    pub uid: String,
    /// The apiserver's whole webhook step, µs.
    pub step_us: f64,
    /// The call alone, to the REST client's "Request completed" event, µs.
    pub call_us: f64,
}

/// The apiserver's trace spans of its calls to our namespace-selected webhook that started
/// between `from` and `to` (Unix nanoseconds), as the control plane's span sink wrote them.
pub fn webhook_spans(c: &Cluster, from: u128, to: u128) -> Vec<WebhookSpan> {
    let text = std::fs::read_to_string(&c.webhook_spans).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a span line"))
        .filter(|s| s["attributes"]["webhook"] == NS_WEBHOOK)
        .filter(|s| (from..=to).contains(&(s["start_ns"].as_u64().unwrap() as u128)))
        .map(|s| {
            let start = s["start_ns"].as_u64().unwrap();
            let us = |t: u64| t.saturating_sub(start) as f64 / 1e3;
            let completed = s["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "Request completed")
                .unwrap_or_else(|| panic!("a webhook span without its call's end: {s}"));
            WebhookSpan {
                uid: s["attributes"]["UID"].as_str().unwrap().to_string(),
                step_us: us(s["end_ns"].as_u64().unwrap()),
                call_us: us(completed["time_ns"].as_u64().unwrap()),
            }
        })
        .collect()
}

pub fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
