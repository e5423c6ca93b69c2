//! The `review` path, bytes in to bytes out, on pods of several shapes; and the engine alone.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use sidecar_injector::review;
use sidecar_injector::Config;
use sidecar_injector::PodView;
use sidecar_injector::{decide, Policy};

fn wrap(pod: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "namespace": "bench", "object": pod}
    }))
    .unwrap()
}

fn container(i: usize) -> Value {
    json!({"name": format!("c{i}"), "image": "registry.example.com/app:1.2.3",
           "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
           "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
           "volumeMounts": [{"name": "data", "mountPath": "/data"}]})
}

fn pod(containers: Vec<Value>, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "bench", "namespace": "bench", "annotations": annotations},
           "spec": {"containers": containers, "volumes": [{"name": "data", "emptyDir": {}}]}})
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let opt_in = json!({"sidecar-injector.io/inject": "true"});
    let realistic = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/fixtures/pod-create-realistic.json"
    ))
    .expect("benches/fixtures/pod-create-realistic.json");
    let minimal = wrap(json!({"metadata": {"name": "m", "annotations": opt_in},
                              "spec": {"containers": [{"name": "a", "image": "x"}]}}));
    let fifty = wrap(pod((0..50).map(container).collect(), opt_in.clone()));
    // 64 KB: a pod carrying a large last-applied-configuration annotation, as kubectl apply leaves.
    let mut big = pod((0..4).map(container).collect(), opt_in);
    big["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        Value::String("x".repeat(60 * 1024));
    let big = wrap(big);
    vec![
        ("realistic", realistic),
        ("minimal", minimal),
        ("50-containers", fifty),
        ("64KB", big),
    ]
}

fn bench_review(c: &mut Criterion) {
    let config = Config::embedded().unwrap();
    let mut group = c.benchmark_group("review");
    for (name, body) in inputs() {
        let answer = review(&body, Policy::Disabled, &config).unwrap();
        assert!(answer.body.len() > 100, "{name}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| review(body, Policy::Disabled, &config).unwrap())
        });
    }
    group.finish();
}

fn bench_engine(c: &mut Criterion) {
    let config = Config::embedded().unwrap();
    let body: Value = serde_json::from_slice(&inputs()[0].1).unwrap();
    let object = serde_json::to_string(&body["request"]["object"]).unwrap();
    let pod = PodView::parse(&object).unwrap();
    c.bench_function("engine/decide realistic", |b| {
        b.iter(|| decide(&pod, Policy::Disabled, &config))
    });
}

criterion_group!(benches, bench_review, bench_engine);
criterion_main!(benches);
