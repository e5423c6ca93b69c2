//! Hostile clients against the release server on 127.0.0.1: each attack bounded in time and
//! memory (a watchdog kills the server past 512 MiB), asserting from /proc/PID/status that
//! peak RSS stays within the documented budget, that neighbors are served meanwhile, and that
//! the attacker's connections are closed. Run by `make e2e` (scripts/e2e.sh), which builds the
//! release binary.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's documented memory budget (docs/reliability.md), below the deploy's 128Mi.
const BUDGET_MIB: u64 = 124;
/// Past this the watchdog kills the server: the test has failed, the machine is safe.
const SAFETY_MIB: u64 = 512;

fn release() -> PathBuf {
    std::env::var_os("SIDECAR_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::root().join("target/release/sidecar-injector"))
}

struct Target {
    server: Server,
    ca: PathBuf,
    _dir: tempfile::TempDir,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Target {
    fn start() -> Target {
        let dir = tempfile::tempdir().unwrap();
        common::write_certs(&release(), dir.path(), &["localhost"]);
        let file = |f: &str| dir.path().join(f).display().to_string();
        // One worker, as deployed (one CPU): no second thread serves a neighbor while an
        // attack keeps the first busy.
        let server = Server::start_bin(
            &release(),
            &[
                "--tls-cert",
                &file("tls.crt"),
                "--tls-key",
                &file("tls.key"),
                "--workers",
                "1",
            ],
        );
        let pid = server.child.id();
        let (peak_kib, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let Some(rss) = status_kib(pid, "VmRSS:") else {
                    return;
                };
                peak.fetch_max(rss, Ordering::Relaxed);
                if rss > SAFETY_MIB * 1024 {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Target {
            ca: dir.path().join("ca.crt"),
            server,
            _dir: dir,
            peak_kib,
            stop,
        }
    }

    /// By name: the serving certificate is for `localhost`.
    fn url(&self) -> String {
        self.server.url("/mutate").replace("127.0.0.1", "localhost")
    }

    fn peak_mib(&self) -> u64 {
        let hwm = status_kib(self.server.child.id(), "VmHWM:").unwrap_or(0);
        hwm.max(self.peak_kib.load(Ordering::Relaxed)) / 1024
    }

    fn assert_within_budget(&self, attack: &str) {
        let peak = self.peak_mib();
        eprintln!("{attack}: peak RSS {peak} MiB (budget {BUDGET_MIB} MiB)");
        assert!(
            peak <= BUDGET_MIB,
            "{attack}: peak RSS {peak} MiB over the {BUDGET_MIB} MiB budget"
        );
    }

    fn client(&self, h2: bool) -> reqwest::Client {
        common::server::tls_client(&self.ca, h2)
    }

    /// A well-behaved neighbor: the realistic pod, answered 200 with a patch.
    async fn neighbor(&self) -> Duration {
        let body = std::fs::read(common::root().join("benches/fixtures/pod-create-realistic.json"))
            .unwrap();
        let start = Instant::now();
        let res = self
            .client(false)
            .post(self.url())
            .body(body)
            .send()
            .await
            .expect("neighbor request");
        assert_eq!(res.status(), 200, "neighbor");
        let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert!(
            answer["response"]["patch"].is_string(),
            "neighbor injected: {answer}"
        );
        start.elapsed()
    }

    /// The slowest of five neighbor reviews, `pause` apart: one slow answer under attack is
    /// what a starved neighbor looks like, so the worst counts, not the mean.
    async fn slowest_neighbor(&self, pause: Duration) -> Duration {
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            worst = worst.max(self.neighbor().await);
            tokio::time::sleep(pause).await;
        }
        worst
    }

    /// A TLS connection with this ALPN protocol, for clients that misbehave below HTTP.
    async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca).unwrap();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(&self.server.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }
}

use rustls::pki_types::pem::PemObject;

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An opted-in pod CREATE with `n` tiny app containers: every one gets a mount in the patch.
fn review_with_containers(n: usize) -> Vec<u8> {
    let containers: Vec<Value> = (0..n).map(|i| json!({"name": format!("c{i}")})).collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "hostile", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "big", "annotations": {"sidecar-injector.io/inject": "true"}},
                "spec": {"containers": containers}}}}))
    .unwrap()
}

/// How many app containers make a request of about `bytes`.
fn containers_for(bytes: usize) -> usize {
    bytes / r#"{"name":"c123456"},"#.len()
}

#[test]
fn amplification_a_4_mib_pod_of_tiny_containers_is_denied_not_rendered() {
    let target = Target::start();
    let body = review_with_containers(containers_for(4 * 1024 * 1024 - 4096));
    assert!(body.len() <= 4 << 20, "{}", body.len());
    common::rt().block_on(async {
        let mut attacks = Vec::new();
        for h2 in [true, true, true, true, false, false] {
            let (client, url, body) = (target.client(h2), target.url(), body.clone());
            attacks.push(tokio::spawn(async move {
                let res = client.post(url).body(body).send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.bytes().await.unwrap())
            }));
        }
        let neighbor = target.neighbor().await;
        eprintln!("neighbor answered in {neighbor:?} during the attack");
        let mut denied = 0;
        for a in attacks {
            let (status, bytes) = a.await.unwrap();
            assert!(
                bytes.len() < 64 * 1024,
                "the answer is bounded: {} bytes",
                bytes.len()
            );
            if status == 200 {
                let answer: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(answer["response"]["allowed"], false);
                assert_eq!(answer["response"]["status"]["code"], 413);
                let msg = answer["response"]["status"]["message"].as_str().unwrap();
                assert!(msg.contains("too large to inject into"), "{msg}");
                denied += 1;
            } else {
                // Over budget for longer than the request timeout: come back later.
                assert!(status == 503 || status == 408, "{status}");
            }
        }
        assert!(
            denied >= 1,
            "at least one review was answered with the denial"
        );
    });
    target.assert_within_budget("amplification");
}

/// An opted-in pod CREATE with these extra annotations.
fn review_with_annotations(annotations: Value) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&review_with_containers(1)).unwrap();
    let meta = &mut review["request"]["object"]["metadata"]["annotations"];
    for (k, v) in annotations.as_object().unwrap() {
        meta[k] = v.clone();
    }
    serde_json::to_vec(&review).unwrap()
}

#[test]
fn cpu_heavy_annotations_are_refused_in_one_scan_with_a_short_message() {
    let target = Target::start();
    // Under the apiserver's 256 KiB annotation limit: 28k distinct profile names took 2 s
    // each when de-duplicated quadratically; a 200 KB inject value came back whole.
    let names: Vec<String> = (0..28_000).map(|i| format!("p{i}")).collect();
    let attacks = [
        review_with_annotations(json!({"sidecar-injector.io/profiles": names.join(",")})),
        review_with_annotations(json!({"sidecar-injector.io/inject": "x".repeat(200_000)})),
    ];
    common::rt().block_on(async {
        let mut running = Vec::new();
        for body in attacks.iter().cycle().take(8) {
            let (client, url, body) = (target.client(true), target.url(), body.clone());
            running.push(tokio::spawn(async move {
                let start = Instant::now();
                let res = client.post(url).body(body).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
                (start.elapsed(), answer)
            }));
        }
        let neighbor = target.neighbor().await;
        eprintln!("neighbor answered in {neighbor:?} during the attack");
        assert!(neighbor < Duration::from_secs(1), "{neighbor:?}");
        for r in running {
            let (took, answer) = r.await.unwrap();
            let response = &answer["response"];
            assert_eq!(response["allowed"], false, "{response}");
            assert_eq!(response["status"]["code"], 400, "{response}");
            let msg = response["status"]["message"].as_str().unwrap();
            assert!(msg.len() < 300, "{} bytes: {msg}", msg.len());
            assert!(took < Duration::from_secs(1), "answered in {took:?}");
        }
    });
    target.assert_within_budget("cpu-heavy annotations");
}

#[test]
fn unread_answers_over_http2_lose_their_connection_and_memory() {
    let target = Target::start();
    // An answer of about 800 KB, which a client with a zero receive window never takes.
    let body = bytes::Bytes::from(review_with_containers(5000));
    common::rt().block_on(async {
        let tls = target.tls(b"h2").await;
        let (client, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        let start = Instant::now();
        let mut sent = 0;
        // Every stream is kept open: a dropped one is reset, and its answer freed.
        let mut open = Vec::new();
        while !connection.is_finished() && start.elapsed() < Duration::from_secs(30) {
            let Ok(mut ready) = client.clone().ready().await else {
                break;
            };
            let req = axum::http::Request::post(target.url()).body(()).unwrap();
            let Ok((response, mut stream)) = ready.send_request(req, false) else {
                break;
            };
            if stream.send_data(body.clone(), true).is_err() {
                break;
            }
            open.push((response, stream));
            sent += 1;
            if sent % 4 == 0 {
                let took = target.neighbor().await;
                assert!(took < Duration::from_secs(5), "neighbor took {took:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let closed_after = start.elapsed();
        eprintln!(
            "zero-window client: {sent} reviews sent, connection closed after {closed_after:?}"
        );
        assert!(
            connection.is_finished(),
            "the server never closed the connection that took no answers"
        );
        assert!(closed_after < Duration::from_secs(25), "{closed_after:?}");
        target.neighbor().await;
    });
    target.assert_within_budget("unread answers (HTTP/2 zero window)");
}

#[test]
fn unread_answers_over_http11_lose_their_connection() {
    let target = Target::start();
    let body = review_with_containers(5000);
    let request = [
        format!("POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        body,
    ]
    .concat();
    common::rt().block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut tls = target.tls(b"http/1.1").await;
            // Thirty pipelined reviews, about 24 MB of answers, and not one byte read.
            for _ in 0..30 {
                if tls.write_all(&request).await.is_err() {
                    break;
                }
            }
            conns.push(tls);
        }
        target.neighbor().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        target.neighbor().await;
        for (i, mut tls) in conns.into_iter().enumerate() {
            // Whatever the server wrote before it gave up, then the end.
            let mut total = 0usize;
            let mut buf = vec![0u8; 1 << 20];
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => total += n,
                    }
                }
            })
            .await;
            assert!(
                ended.is_ok(),
                "connection {i} still open after the write deadline"
            );
            assert!(
                total < 30 * 800_000,
                "connection {i} was answered in full ({total} bytes)"
            );
        }
    });
    target.assert_within_budget("unread answers (HTTP/1.1)");
}

#[test]
fn never_ending_bodies_do_not_starve_a_neighbor_or_the_memory() {
    let target = Target::start();
    common::rt().block_on(async {
        let mut attackers = Vec::new();
        // Three HTTP/2 connections of 40 streams, and 20 HTTP/1.1 connections (one body each,
        // no shared flow-control window to slow them down).
        let clients = (0..3)
            .map(|_| (target.client(true), 40))
            .chain((0..20).map(|_| (target.client(false), 1)));
        for (client, streams) in clients {
            for _ in 0..streams {
                let (client, url) = (client.clone(), target.url());
                // 3.9 MiB of a body that never ends.
                let chunks = futures_util::stream::iter(
                    (0..62).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])),
                )
                .chain(futures_util::stream::pending());
                attackers.push(tokio::spawn(async move {
                    let body = reqwest::Body::wrap_stream(chunks);
                    client
                        .post(url)
                        .header("content-length", (4 << 20).to_string())
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let worst = target.slowest_neighbor(Duration::from_millis(300)).await;
        eprintln!("never-ending bodies: slowest neighbor {worst:?}");
        assert!(
            worst < Duration::from_secs(5),
            "a neighbor waited {worst:?}"
        );
        for a in attackers {
            a.abort();
        }
    });
    target.assert_within_budget("never-ending bodies");
}

#[test]
fn slow_small_bodies_do_not_starve_the_apiservers_reviews() {
    let target = Target::start();
    common::rt().block_on(async {
        // 32 connections, each declaring a 256 KiB body (the most a small review may declare)
        // and trickling 1 KiB every 500 ms, inside the 2 s allowed between parts.
        let mut attackers = Vec::new();
        for _ in 0..32 {
            let (client, url) = (target.client(false), target.url());
            let chunks = futures_util::stream::unfold(0u32, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some((Ok::<_, std::io::Error>(vec![b' '; 1024]), n + 1))
            });
            attackers.push(tokio::spawn(async move {
                client
                    .post(url)
                    .header("content-length", (256 * 1024).to_string())
                    .body(reqwest::Body::wrap_stream(chunks))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let worst = target.slowest_neighbor(Duration::from_millis(200)).await;
        eprintln!("slow small bodies: slowest neighbor {worst:?}");
        let still_sending = attackers.iter().filter(|a| !a.is_finished()).count();
        for a in attackers {
            a.abort();
        }
        assert!(
            worst < Duration::from_secs(1),
            "a normal review waited {worst:?} behind 32 slow bodies"
        );
        assert_eq!(
            still_sending, 32,
            "the slow bodies were still being received"
        );
    });
    target.assert_within_budget("slow small bodies");
}

#[test]
fn a_metrics_port_flood_does_not_starve_the_probes() {
    let target = Target::start();
    common::rt().block_on(async {
        // Every connection the metrics port takes, and more waiting in its backlog, each
        // sending a request head one byte a second (inside the 2 s header timeout).
        let mut flood = Vec::new();
        for _ in 0..200 {
            let addr = target.server.metrics.clone();
            flood.push(tokio::spawn(async move {
                let Ok(mut tcp) = TcpStream::connect(&addr).await else {
                    return;
                };
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                    .iter()
                    .cycle()
                    .take(60)
                {
                    if tcp.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(900)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let get = |addr: String| async move {
            let start = Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(1), async {
                reqwest::get(format!("http://{addr}/readyz"))
                    .await?
                    .text()
                    .await
            })
            .await;
            (got.ok().and_then(Result::ok), start.elapsed())
        };
        // The flood works: the metrics port's own /readyz waits behind it.
        let (behind, _) = get(target.server.metrics.clone()).await;
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            let (probe, took) = get(target.server.probes.clone()).await;
            assert_eq!(probe.as_deref(), Some("ok\n"), "probe after {took:?}");
            worst = worst.max(took);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("metrics-port flood: metrics /readyz {behind:?}, slowest probe {worst:?}");
        assert!(behind.is_none(), "the flood did not fill the metrics port");
        for f in flood {
            f.abort();
        }
    });
    target.assert_within_budget("metrics-port flood");
}

#[test]
fn silent_connections_are_closed_on_both_ports() {
    let target = Target::start();
    common::rt().block_on(async {
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(target.tls(b"h2").await);
        }
        let mut idle_metrics = Vec::new();
        for _ in 0..100 {
            idle_metrics.push(TcpStream::connect(&target.server.metrics).await.unwrap());
        }
        let took = target.neighbor().await;
        assert!(
            took < Duration::from_secs(5),
            "webhook neighbor took {took:?}"
        );
        let start = Instant::now();
        for (i, mut tls) in silent.into_iter().enumerate() {
            let mut buf = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "silent connection {i} still open after {:?}",
                start.elapsed()
            );
        }
        eprintln!(
            "100 silent TLS connections closed within {:?}",
            start.elapsed()
        );
        // The probes still get through the idle metrics connections.
        let healthz = tokio::time::timeout(Duration::from_secs(15), async {
            reqwest::get(format!("http://{}/healthz", target.server.metrics))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
        assert_eq!(
            healthz.as_deref().ok(),
            Some("ok\n"),
            "/healthz behind 100 idle connections"
        );
        for (i, mut tcp) in idle_metrics.into_iter().enumerate() {
            let mut buf = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf)).await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "idle metrics connection {i} still open"
            );
        }
    });
    target.assert_within_budget("silent connections");
}

use futures_util::StreamExt;
