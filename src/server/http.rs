//! The routes and their handlers: request bytes to a review, the review to an HTTP answer,
//! counted and logged; the probes and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;

use crate::engine::admission::{
    path_policy_segment, policy_from_query, review, review_workload, Answer, Outcome, RequestError,
    MAX_BODY_BYTES,
};
use crate::engine::config::Config;
use crate::engine::inject::Policy;
use crate::server::limits::{BudgetedBody, Pools, Reservation, SMALL_REVIEW_BYTES, WORK_FACTOR};
use crate::server::state::AppState;
use crate::text::excerpt::Escaped;

/// Longest pause between two parts of a request body.
const BODY_STALL: Duration = Duration::from_secs(2);
/// Reviews of bodies larger than this run on the blocking pool (a 4 MiB body is tens of
/// milliseconds of CPU); smaller ones, the apiserver's everyday pods, on the async worker.
const BLOCKING_REVIEW_BYTES: usize = 256 * 1024;

/// The one place where a bad request becomes an HTTP answer.
impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// What a request asks for: a pod review (`/mutate`, with its policy) or a workload check.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Mutate(Policy),
    Workloads,
}

impl Endpoint {
    /// The pod review's policy from the path segment and the query.
    fn mutate(path: Option<&str>, query: Option<&str>) -> Result<Endpoint, RequestError> {
        let path = path.map(path_policy_segment).transpose()?;
        policy_from_query(query, path).map(Endpoint::Mutate)
    }
}

/// The review, with a panic (a bug of ours, whatever the input) answered 500 `internal-error`
/// instead of ending the connection: the panic's message is logged by the panic hook.
fn guarded_review(
    bytes: &[u8],
    endpoint: Endpoint,
    config: &Config,
) -> Result<Answer, RequestError> {
    guarded(|| match endpoint {
        Endpoint::Mutate(policy) => review(bytes, policy, config),
        Endpoint::Workloads => review_workload(bytes),
    })
}

fn guarded<T>(work: impl FnOnce() -> Result<T, RequestError>) -> Result<T, RequestError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(RequestError::Internal(what))
    })
}

async fn read_and_review(
    state: &AppState,
    endpoint: Result<Endpoint, RequestError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Answer, Reservation), RequestError> {
    let endpoint = endpoint?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(RequestError::TooLarge);
    }
    // The body, within the budget as it arrives: a flood of bodies that never end holds at
    // most the budget, and a body that trickles in too slowly is answered 408.
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    // hyper refuses a body longer than its Content-Length, so a small declared size is a
    // promise the client cannot break.
    let pools = match declared {
        Some(n) if n <= SMALL_REVIEW_BYTES as u64 => &state.small,
        _ => &state.large,
    };
    let (bytes, body_reservation) =
        read_body(body, pools, declared, deadline, state.body_timeout).await?;
    // The review's working memory, from the other pool: whoever holds it is running and
    // gives it back, so a complete body never waits on a body still arriving.
    let mut reservation = pools
        .work
        .reserve(bytes.len() * WORK_FACTOR, deadline)
        .await
        .ok_or(RequestError::Busy)?;
    let config = state.config();
    let answer = if bytes.len() > BLOCKING_REVIEW_BYTES {
        // Tens of milliseconds of CPU: off the async workers, so other connections are served.
        tokio::task::spawn_blocking(move || guarded_review(&bytes, endpoint, &config))
            .await
            .map_err(|e| RequestError::Internal(e.to_string()))??
    } else {
        guarded_review(&bytes, endpoint, &config)?
    };
    // The body is no longer needed; the answer's bytes stay reserved until sent.
    drop(body_reservation);
    let held = reservation.kib() * 1024;
    if answer.body.len() > held {
        let more = pools.work.reserve(answer.body.len() - held, deadline).await;
        reservation.merge(more.ok_or(RequestError::Busy)?);
    }
    reservation.shrink_to(answer.body.len());
    Ok((answer, reservation))
}

/// The whole body, and what it holds of the body pool.
///
/// The body pool pays for the buffer's capacity before it is allocated: a declared length
/// at once (the apiserver always declares it), so that no body ever waits for more of the
/// pool while holding part of it (bodies growing side by side could otherwise fill it and
/// all wait until they time out); without one, each growth. The body's 12x working memory
/// is reserved only once it is complete, from the other pool, so a slow client holds its
/// body's size, not 13 times it. A body that arrives in one part (the everyday review) is
/// used as it came, without a copy; otherwise one buffer grows by doubling, up to the
/// declared length.
async fn read_body(
    mut body: Body,
    pools: &Pools,
    declared: Option<u64>,
    deadline: tokio::time::Instant,
    body_timeout: Duration,
) -> Result<(Bytes, Reservation), RequestError> {
    let limit = declared.map_or(MAX_BODY_BYTES, |n| n as usize);
    let (mut paid, mut body_reservation) = match declared {
        Some(n) => {
            let held = pools.body.reserve(n as usize, deadline).await;
            (n as usize, held.ok_or(RequestError::Busy)?)
        }
        None => (0, Reservation::default()),
    };
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(data) = next_part(&mut body, deadline, body_timeout).await? {
        let had = first.as_ref().map_or(joined.len(), Bytes::len);
        let needed = had + data.len();
        if needed > MAX_BODY_BYTES {
            return Err(RequestError::TooLarge);
        }
        let allocated = if first.is_some() {
            0
        } else {
            joined.capacity()
        };
        let target = if had == 0 && first.is_none() {
            needed
        } else if needed > allocated {
            needed.max(allocated * 2).min(limit.max(needed))
        } else {
            paid
        };
        if target > paid {
            let more = pools.body.reserve(target - paid, deadline).await;
            body_reservation.merge(more.ok_or(RequestError::Busy)?);
            paid = target;
        }
        if had == 0 && first.is_none() {
            // The first part: kept as it came.
            first = Some(data);
            continue;
        }
        if needed > allocated {
            joined.reserve_exact(target - joined.len());
        }
        if let Some(lone) = first.take() {
            joined.extend_from_slice(&lone);
        }
        joined.extend_from_slice(&data);
    }
    Ok((
        first.unwrap_or_else(|| Bytes::from(joined)),
        body_reservation,
    ))
}

/// The body's next data part (`None` at its end). Each part within BODY_STALL of the last: a
/// body that stops holds its share of the budget for seconds, not for the whole request
/// timeout.
async fn next_part(
    body: &mut Body,
    deadline: tokio::time::Instant,
    body_timeout: Duration,
) -> Result<Option<Bytes>, RequestError> {
    loop {
        let next = deadline.min(tokio::time::Instant::now() + BODY_STALL);
        let frame = match tokio::time::timeout_at(next, body.frame()).await {
            Err(_) if next < deadline => return Err(RequestError::Timeout(BODY_STALL)),
            Err(_) => return Err(RequestError::Timeout(body_timeout)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                return Err(RequestError::BadRequest(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry no body bytes.
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        &state,
        Endpoint::mutate(None, query.as_deref()),
        &headers,
        body,
    )
    .await
}

async fn mutate_with_policy(
    State(state): State<Arc<AppState>>,
    Path(policy): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let endpoint = Endpoint::mutate(Some(&policy), query.as_deref());
    answer(&state, endpoint, &headers, body).await
}

async fn workloads(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    answer(&state, Ok(Endpoint::Workloads), &headers, body).await
}

/// Reviews, counts and logs one request: every webhook answer goes through here.
async fn answer(
    state: &AppState,
    endpoint: Result<Endpoint, RequestError>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let result = read_and_review(state, endpoint, headers, body).await;
    let elapsed = start.elapsed();
    let duration_us = elapsed.as_micros() as u64;
    match result {
        Ok((a, reservation)) => {
            state
                .metrics
                .observe(a.outcome, a.reason, elapsed.as_secs_f64());
            tracing::info!(
                uid = %Escaped(&a.uid),
                namespace = %Escaped(&a.namespace),
                pod = %Escaped(&a.pod),
                outcome = %a.outcome.as_str(),
                reason = %a.reason.as_str(),
                profiles = %Escaped(&a.profiles.join(",")),
                duration_us,
                "admission review"
            );
            let body = Body::new(BudgetedBody::new(a.body, reservation));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => {
            state
                .metrics
                .observe(Outcome::Error, e.reason(), elapsed.as_secs_f64());
            tracing::warn!(
                outcome = %Outcome::Error.as_str(),
                reason = %e.reason().as_str(),
                error = %Escaped(&e.to_string()),
                duration_us,
                "admission review rejected"
            );
            e.into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready(crate::server::certificate::unix_now()) {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// The webhook's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        // The apiserver refuses a query in a webhook's service path (each segment must be a
        // DNS subdomain), so the policy can also be given as a path segment.
        .route("/mutate/{policy}", post(mutate_with_policy))
        .route("/workloads", post(workloads))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The metrics listener's routes (probes too, for people: they need no client certificate).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    probe_router(state.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(state),
    )
}

/// The probe listener's routes.
pub fn probe_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn a_panic_while_reviewing_is_a_500_internal_error() {
        let err = guarded::<()>(|| panic!("a bug")).unwrap_err();
        assert_eq!(err, RequestError::Internal("a bug".into()));
        assert_eq!(err.http_status(), 500);
        assert_eq!(err.reason(), crate::engine::inject::Reason::InternalError);
        assert!(guarded(|| Ok(1)).is_ok());
        let series = r#"sidecar_injector_admission_requests_total{outcome="error",reason="internal-error"} 0"#;
        assert!(Metrics::new().encode().contains(series), "{series}");
    }

    fn app() -> (Arc<AppState>, Router) {
        let state = Arc::new(AppState::new(
            Config::embedded().unwrap(),
            Metrics::new(),
            Duration::from_millis(200),
        ));
        (state.clone(), router(state))
    }

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }

    fn workload_review(
        group: &str,
        kind: &str,
        operation: &str,
        object: serde_json::Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "w1", "kind": {"group": group, "version": "v1", "kind": kind},
                "operation": operation, "name": "web", "namespace": "apps", "object": object}}))
        .unwrap()
    }

    #[tokio::test]
    async fn workloads_are_always_allowed_with_a_warning_per_misplaced_key() {
        let (state, app) = app();
        let misplaced = serde_json::json!({
            "metadata": {"annotations": {"sidecar-injector.io/inject": "true"},
                         "labels": {"sidecar-injector.io/profiles": "debug"}},
            "spec": {"template": {"metadata": {}}, "jobTemplate": {"spec": {"template": {}}}}});
        for (group, kind) in crate::engine::workload::WORKLOAD_KINDS {
            for operation in ["CREATE", "UPDATE"] {
                let body = workload_review(group, kind, operation, misplaced.clone());
                let req = Request::post("/workloads").body(Body::from(body)).unwrap();
                let (status, got) = call(app.clone(), req).await;
                assert_eq!(status, StatusCode::OK);
                let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
                let r = &v["response"];
                assert_eq!(
                    (r["uid"].as_str(), r["allowed"].as_bool()),
                    (Some("w1"), Some(true))
                );
                assert!(r["patch"].is_null() && r["patchType"].is_null(), "{r}");
                let warnings: Vec<&str> = r["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap())
                    .collect();
                let target = if kind == "CronJob" {
                    "spec.jobTemplate.spec.template.metadata.annotations"
                } else {
                    "spec.template.metadata.annotations"
                };
                assert_eq!(warnings.len(), 2, "{kind}: {warnings:?}");
                assert!(
                    warnings[0].contains("sidecar-injector.io/inject")
                        && warnings[0].contains("metadata.annotations")
                );
                assert!(
                    warnings[1].contains("sidecar-injector.io/profiles")
                        && warnings[1].contains("metadata.labels")
                );
                assert!(
                    warnings
                        .iter()
                        .all(|w| w.ends_with(target) && w.contains(kind)),
                    "{warnings:?}"
                );
                assert_eq!(r["auditAnnotations"]["reason"], "workload-checked");
            }
        }
        // Placed right, an unrelated kind, a DELETE: allowed, no warning.
        let placed = serde_json::json!({"metadata": {},
            "spec": {"template": {"metadata": {"annotations": {"sidecar-injector.io/inject": "true"}}}}});
        for body in [
            workload_review("apps", "Deployment", "UPDATE", placed),
            workload_review("apps", "ReplicaSet", "CREATE", misplaced.clone()),
            workload_review("apps", "Deployment", "DELETE", misplaced.clone()),
            workload_review(
                "apps",
                "Deployment",
                "CREATE",
                serde_json::json!("not an object"),
            ),
        ] {
            let req = Request::post("/workloads").body(Body::from(body)).unwrap();
            let (status, got) = call(app.clone(), req).await;
            let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(v["response"]["allowed"], true);
            assert!(v["response"]["warnings"].is_null(), "{v}");
        }
        // HTTP-level bad input: the same answers as /mutate.
        let req = Request::post("/workloads").body(Body::from("{}")).unwrap();
        assert_eq!(call(app.clone(), req).await.0, StatusCode::BAD_REQUEST);
        let req = Request::post("/workloads")
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        assert_eq!(
            call(app.clone(), req).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let text = state.metrics.encode();
        let series = r#"sidecar_injector_admission_requests_total{outcome="skipped",reason="workload-checked"} 14"#;
        assert!(text.contains(series), "{text}");
    }

    #[tokio::test]
    async fn router_answers_review_bytes_and_errors() {
        let (state, app) = app();
        let body = std::fs::read("tests/fixtures/reviews/classic-shared-volume.json").unwrap();
        let expected = review(&body, Policy::Disabled, &state.config())
            .unwrap()
            .body;
        let req = Request::post("/mutate").body(Body::from(body)).unwrap();
        let (status, got) = call(app.clone(), req).await;
        assert_eq!((status, got), (StatusCode::OK, expected));

        let req = Request::post("/mutate?policy=bogus")
            .body(Body::from("{}"))
            .unwrap();
        let (status, got) = call(app.clone(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(got.iter().filter(|b| **b == b'\n').count(), 1, "one line");

        let req = Request::post("/mutate")
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        assert_eq!(
            call(app.clone(), req).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let body = std::fs::read("tests/fixtures/reviews/bare-pod-not-opted-in.json").unwrap();
        let enabled = review(&body, Policy::Enabled, &state.config())
            .unwrap()
            .body;
        let req = Request::post("/mutate/enabled")
            .body(Body::from(body.clone()))
            .unwrap();
        assert_eq!(call(app.clone(), req).await, (StatusCode::OK, enabled));
        let req = Request::post("/mutate/bogus")
            .body(Body::from(body))
            .unwrap();
        assert_eq!(call(app.clone(), req).await.0, StatusCode::BAD_REQUEST);

        let text = state.metrics.encode();
        assert!(
            text.contains("outcome=\"error\",reason=\"too-large\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outcome=\"error\",reason=\"bad-request\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_that_never_ends_gets_408_and_is_counted() {
        let (state, app) = app();
        let stalled = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let req = Request::post("/mutate")
            .body(Body::from_stream(stalled))
            .unwrap();
        let (status, body) = call(app, req).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("did not arrive within"));
        let text = state.metrics.encode();
        assert!(
            text.contains("outcome=\"error\",reason=\"bad-request\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_follows_state_and_healthz_is_always_ok() {
        let (state, app) = app();
        let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
        assert_eq!(
            call(app.clone(), get("/readyz")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.set_ready(true);
        assert_eq!(call(app.clone(), get("/readyz")).await.0, StatusCode::OK);
        assert_eq!(call(app.clone(), get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(call(app, get("/nope")).await.0, StatusCode::NOT_FOUND);
    }
}
