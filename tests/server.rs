//! End-to-end: the real server on 127.0.0.1 with real TLS, spoken to over HTTP/2 and
//! HTTP/1.1 the way kube-apiserver does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{get_plain, log_field, tls_client as client, Server};
use common::*;
use serde_json::Value;

struct Certs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    write_certs(Path::new(bin()), dir.path(), &["localhost", "127.0.0.1"]);
    Certs {
        path: dir.path().to_path_buf(),
        _dir: dir,
    }
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>, reqwest::Version), reqwest::Error> {
    let res = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let (status, version) = (res.status().as_u16(), res.version());
    Ok((status, res.bytes().await?.to_vec(), version))
}

fn tls_args(certs: &Certs) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        certs.path.join("tls.crt").display().to_string(),
        "--tls-key".into(),
        certs.path.join("tls.key").display().to_string(),
    ]
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(fixture("reviews"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn h2_and_h1_answers_are_the_bytes_of_review() {
    let certs = make_certs();
    let expected: Vec<_> = fixtures()
        .into_iter()
        .flat_map(|(name, body)| {
            ["disabled", "enabled"].map(|policy| {
                let answer = run(&["review", "--policy", policy], &body).stdout;
                (name.clone(), body.clone(), policy, answer)
            })
        })
        .collect();
    // Both schedulers: the single-threaded one (one worker, as deployed) and a pool.
    for workers in ["1", "3"] {
        let mut args = tls_args(&certs);
        args.extend(["--workers".into(), workers.into()]);
        let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(server.log_has(&format!("workers={workers}")));
        rt().block_on(async {
            for h2 in [true, false] {
                let c = client(&certs.path.join("ca.crt"), h2);
                for (name, body, policy, answer) in &expected {
                    let (status, got, version) = post(
                        &c,
                        &server.url(&format!("/mutate?policy={policy}")),
                        body.clone(),
                    )
                    .await
                    .unwrap();
                    assert_eq!(status, 200, "{name}");
                    assert_eq!(
                        version,
                        if h2 {
                            reqwest::Version::HTTP_2
                        } else {
                            reqwest::Version::HTTP_11
                        }
                    );
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        std::str::from_utf8(answer).unwrap(),
                        "{name} {policy} workers={workers}"
                    );
                }
                let (status, ..) = post(&c, &server.url("/mutate"), fixtures()[0].1.clone())
                    .await
                    .unwrap();
                assert_eq!(status, 200);
                let res = c.get(server.url("/readyz")).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let res = c.get(server.url("/healthz")).send().await.unwrap();
                assert_eq!(res.status(), 200);
            }
        });
        assert!(server.log_has("admission review") && server.log_has("reason=opted-in"));
        let m = server.metrics_text();
        assert!(
            m.contains(
                "sidecar_injector_admission_requests_total{outcome=\"injected\",reason=\"opted-in\"}"
            ),
            "{m}"
        );
        assert!(m.contains("sidecar_injector_admission_duration_seconds_bucket"));
        assert!(m.contains("sidecar_injector_certificate_expiry_timestamp_seconds"));
    }
    for bad in ["0", "x", "1025"] {
        let out = run(&["serve", "--dev", "--workers", bad], b"");
        assert_eq!(out.status.code(), Some(2), "--workers {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--workers"));
    }
}

#[test]
fn bad_input_gets_clear_answers_and_the_server_keeps_serving() {
    let server = Server::start(&["--dev"]);
    // The dev certificate is in memory only: trust it by skipping verification here.
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let good = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    rt().block_on(async {
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("/mutate", b"not json".to_vec(), 400),
            ("/mutate", b"{}".to_vec(), 400),
            ("/mutate", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a"}}"#.to_vec(), 400),
            ("/mutate", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#.to_vec(), 400),
            ("/mutate?policy=", good.clone(), 400),
            ("/mutate?policy=yes", good.clone(), 400),
            ("/mutate", vec![b' '; 4 * 1024 * 1024 + 1], 413),
        ];
        for (path, body, code) in cases {
            let (status, text, _) = post(&c, &server.url(path), body).await.unwrap();
            assert_eq!(status, code, "{path}");
            let text = String::from_utf8(text).unwrap();
            assert_eq!(text.trim_end().lines().count(), 1, "one-line reason: {text}");
        }
        let (status, text, _) = post(&c, &server.url("/mutate"), good).await.unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["response"]["auditAnnotations"]["reason"], "opted-in");
    });
    let m = server.metrics_text();
    assert!(
        m.contains("outcome=\"error\",reason=\"bad-request\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("outcome=\"error\",reason=\"too-large\"} 1"),
        "{m}"
    );
}

#[test]
fn certificate_rotation_by_secret_symlink_swap_drops_nothing() {
    let (a, b) = (make_certs(), make_certs());
    let secret = tempfile::tempdir().unwrap();
    let read = |c: &Certs, f: &str| std::fs::read(c.path.join(f)).unwrap();
    write_secret_version(
        secret.path(),
        "v1",
        &read(&a, "tls.crt"),
        &read(&a, "tls.key"),
    );
    let cert = secret.path().join("tls.crt").display().to_string();
    let key = secret.path().join("tls.key").display().to_string();
    let server = Server::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--reload-interval",
        "100ms",
    ]);
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();

    rt().block_on(async {
        // A client that trusts both CAs keeps posting, on kept-alive and on new connections.
        let both = {
            let mut builder = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false);
            for c in [&a, &b] {
                builder = builder.add_root_certificate(
                    reqwest::Certificate::from_pem(&read(c, "ca.crt")).unwrap(),
                );
            }
            builder.http2_prior_knowledge().build().unwrap()
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for fresh in [false, true] {
            let (both, stop, ok, failed, body, url) = (
                both.clone(),
                stop.clone(),
                ok.clone(),
                failed.clone(),
                body.clone(),
                server.url("/mutate"),
            );
            let ca_a = read(&a, "ca.crt");
            let ca_b = read(&b, "ca.crt");
            tasks.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let c = if fresh {
                        reqwest::Client::builder()
                            .use_rustls_tls()
                            .tls_built_in_root_certs(false)
                            .add_root_certificate(reqwest::Certificate::from_pem(&ca_a).unwrap())
                            .add_root_certificate(reqwest::Certificate::from_pem(&ca_b).unwrap())
                            .http2_prior_knowledge()
                            .build()
                            .unwrap()
                    } else {
                        both.clone()
                    };
                    match post(&c, &url, body.clone()).await {
                        Ok((200, ..)) => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            }));
        }
        let only_b = client(&b.path.join("ca.crt"), true);
        assert!(
            post(&only_b, &server.url("/mutate"), body.clone())
                .await
                .is_err(),
            "B not served yet"
        );

        tokio::time::sleep(Duration::from_millis(300)).await;
        write_secret_version(
            secret.path(),
            "v2",
            &read(&b, "tls.crt"),
            &read(&b, "tls.key"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh_b = client(&b.path.join("ca.crt"), true);
            if post(&fresh_b, &server.url("/mutate"), body.clone())
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "new certificate never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A broken pair (B's certificate with A's key) is refused; B stays in force.
        write_secret_version(
            secret.path(),
            "v3",
            &read(&b, "tls.crt"),
            &read(&a, "tls.key"),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fresh_b = client(&b.path.join("ca.crt"), true);
        assert_eq!(
            post(&fresh_b, &server.url("/mutate"), body.clone())
                .await
                .unwrap()
                .0,
            200
        );

        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "failed requests during rotation"
        );
        assert!(
            ok.load(Ordering::SeqCst) > 20,
            "too few requests: {}",
            ok.load(Ordering::SeqCst)
        );
    });
    assert!(server.log_has("certificate reloaded"));
    assert!(server.log_has("certificate reload failed"));
    let m = server.metrics_text();
    assert!(
        m.contains("sidecar_injector_reloads_total{kind=\"certificate\",result=\"success\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sidecar_injector_reloads_total{kind=\"certificate\",result=\"failure\"} 1"),
        "{m}"
    );
}

#[test]
fn config_reload_takes_good_files_and_keeps_the_old_one_on_bad() {
    let certs = make_certs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let profile = |name: &str| {
        format!("defaultProfiles: [p]\nprofiles:\n  p:\n    containers:\n      - name: {name}\n        image: busybox:1.36\n")
    };
    std::fs::write(&cfg, profile("first")).unwrap();
    let mut args = tls_args(&certs);
    args.extend([
        "--config".into(),
        cfg.display().to_string(),
        "--reload-interval".into(),
        "100ms".into(),
    ]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = client(&certs.path.join("ca.crt"), true);
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    let sidecar = |c: reqwest::Client, url: String, body: Vec<u8>| async move {
        let (_, bytes, _) = post(&c, &url, body).await.unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        String::from_utf8(patch_of(&v).unwrap()).unwrap()
    };
    rt().block_on(async {
        assert!(sidecar(c.clone(), server.url("/mutate"), body.clone())
            .await
            .contains("\"first\""));
        std::fs::write(&cfg, profile("second")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sidecar(c.clone(), server.url("/mutate"), body.clone())
            .await
            .contains("\"second\"")
        {
            assert!(Instant::now() < deadline, "config never reloaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::write(
            &cfg,
            "defaultProfiles: [p]\nprofiles: {p: {containers: [{name: x}]}}\n",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(sidecar(c.clone(), server.url("/mutate"), body.clone())
            .await
            .contains("\"second\""));
    });
    assert!(server.log_has("config reload failed"));
    let m = server.metrics_text();
    assert!(
        m.contains("sidecar_injector_reloads_total{kind=\"config\",result=\"failure\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sidecar_injector_reloads_total{kind=\"config\",result=\"success\"} 1"),
        "{m}"
    );
}

/// The apiserver's side of mTLS: a client CA and a clientAuth certificate it signed, as PEM
/// (CA, client identity = certificate + key).
/// A client CA and one identity (certificate and key PEM) it signed for each name.
fn client_identities(names: &[&str]) -> (String, Vec<String>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ids = names
        .iter()
        .map(|name| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca).unwrap();
            format!("{}{}", cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca.pem(), ids)
}

/// A client CA and an identity named `kube-apiserver` signed by it.
fn client_identity() -> (String, String) {
    let (ca, mut ids) = client_identities(&["kube-apiserver"]);
    (ca, ids.remove(0))
}

fn mtls_client(server_ca: &Path, identity: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server_ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

#[test]
fn mtls_refuses_clients_without_a_certificate_from_the_ca() {
    let certs = make_certs();
    let (ca_a, id_a) = client_identity();
    let (ca_b, id_b) = client_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca_a).unwrap();

    let mut args = tls_args(&certs);
    args.extend([
        "--client-ca".into(),
        ca_file.display().to_string(),
        "--reload-interval".into(),
        "100ms".into(),
    ]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    let server_ca = certs.path.join("ca.crt");
    rt().block_on(async {
        let anonymous = client(&server_ca, true);
        assert!(post(&anonymous, &server.url("/mutate"), body.clone())
            .await
            .is_err());
        let authed = mtls_client(&server_ca, &id_a);
        assert_eq!(
            post(&authed, &server.url("/mutate"), body.clone())
                .await
                .unwrap()
                .0,
            200
        );
        assert!(post(
            &mtls_client(&server_ca, &id_b),
            &server.url("/mutate"),
            body.clone()
        )
        .await
        .is_err());

        // The apiserver's CA rotates: B is trusted from the next handshake on, A no longer.
        std::fs::write(&ca_file, &ca_b).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while post(
            &mtls_client(&server_ca, &id_b),
            &server.url("/mutate"),
            body.clone(),
        )
        .await
        .is_err()
        {
            assert!(Instant::now() < deadline, "new client CA never used");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(post(
            &mtls_client(&server_ca, &id_a),
            &server.url("/mutate"),
            body.clone()
        )
        .await
        .is_err());
    });
    assert!(server.log_has("client CA reloaded"));
    // Probes go to the metrics port, which needs no client certificate.
    assert_eq!(
        get_plain(&format!("http://{}/readyz", server.metrics)),
        "ok\n"
    );
}

#[test]
fn mtls_with_a_name_allow_list_refuses_other_names_the_ca_signed() {
    let certs = make_certs();
    let (ca, ids) = client_identities(&["kube-apiserver", "some-pod"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let mut args = tls_args(&certs);
    args.extend([
        "--client-ca".into(),
        ca_file.display().to_string(),
        "--client-cert-names".into(),
        "other,kube-apiserver".into(),
    ]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    let server_ca = certs.path.join("ca.crt");
    rt().block_on(async {
        let allowed = mtls_client(&server_ca, &ids[0]);
        let (status, ..) = post(&allowed, &server.url("/mutate"), body.clone())
            .await
            .unwrap();
        assert_eq!(status, 200);
        let other = mtls_client(&server_ca, &ids[1]);
        assert!(post(&other, &server.url("/mutate"), body.clone())
            .await
            .is_err());
    });
    let m = server.metrics_text();
    assert!(
        m.contains("sidecar_injector_tls_handshake_failures_total{reason=\"name-not-allowed\"} 1"),
        "{m}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_0() {
    let certs = make_certs();
    let args = tls_args(&certs);
    let mut server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    let c = client(&certs.path.join("ca.crt"), true);
    let h1 = client(&certs.path.join("ca.crt"), false);
    rt().block_on(async {
        // Bodies that trickle in over ~1.5 s: in flight when SIGTERM arrives.
        let mut inflight = Vec::new();
        for i in 0..12 {
            let c = if i % 2 == 0 { c.clone() } else { h1.clone() };
            let url = server.url("/mutate");
            let chunks: Vec<Vec<u8>> = body
                .chunks(body.len() / 5 + 1)
                .map(<[u8]>::to_vec)
                .collect();
            inflight.push(tokio::spawn(async move {
                let stream =
                    futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
                        let next = it.next()?;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Some((Ok::<_, std::io::Error>(next), it))
                    });
                let res = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(reqwest::Body::wrap_stream(stream))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.bytes().await.unwrap())
            }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.sigterm();
        for t in inflight {
            let (status, bytes) = t.await.unwrap();
            assert_eq!(status, 200);
            assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(server.log_has("drained"));
}

#[test]
fn silent_and_slow_clients_are_cut_off_without_hurting_others() {
    use std::io::{Read, Write};
    let certs = make_certs();
    let args = tls_args(&certs);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // 50 clients that connect and never start TLS, and one that completes TLS (HTTP/1.1)
    // and then sends half a request head.
    let mut silent: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    let mut half = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-alpn",
            "http/1.1",
            "-connect",
            &server.addr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    half.stdin
        .as_mut()
        .unwrap()
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    // Meanwhile everyone else is served.
    let c = client(&certs.path.join("ca.crt"), true);
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    rt().block_on(async {
        for _ in 0..20 {
            assert_eq!(
                post(&c, &server.url("/mutate"), body.clone())
                    .await
                    .unwrap()
                    .0,
                200
            );
        }
    });

    // The handshake and header timeouts (10 s) close both kinds of connection.
    let start = Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "silent connection closed");
    }
    let mut rest = Vec::new();
    let _ = half.stdout.as_mut().unwrap().read_to_end(&mut rest);
    let _ = half.wait();
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
}

/// A client CA and an X.509 v1 client certificate it signed (openssl writes v1 when the
/// request carries no extensions): valid signature, refused as not v3. rustls clients refuse
/// to present one, so `openssl s_client` does.
fn v1_client_identity(dir: &Path) -> PathBuf {
    let sh = |script: &str| {
        succeed(
            Command::new("sh").arg("-c").arg(script).current_dir(dir),
            script,
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -subj /CN=v1-ca -keyout ca.key -out ca.crt -days 1"
    ));
    sh(&format!(
        "openssl req -new {ec} -subj /CN=v1-client -keyout c.key -out c.csr"
    ));
    sh("openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out c.crt");
    sh("openssl x509 -in c.crt -noout -text | grep -q 'Version: 1 '");
    dir.join("ca.crt")
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
}

#[test]
fn failed_handshakes_are_counted_by_reason_and_logged_at_most_once_per_interval() {
    let certs = make_certs();
    let dir = tempfile::tempdir().unwrap();
    let client_ca = v1_client_identity(dir.path());
    let (_, stranger) = client_identity();
    let mut args = tls_args(&certs);
    args.extend(["--client-ca".into(), client_ca.display().to_string()]);
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let body = std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap();
    let server_ca = certs.path.join("ca.crt");
    rt().block_on(async {
        for _ in 0..4 {
            assert!(post(
                &client(&server_ca, true),
                &server.url("/mutate"),
                body.clone()
            )
            .await
            .is_err());
        }
        for _ in 0..3 {
            let c = mtls_client(&server_ca, &stranger);
            assert!(post(&c, &server.url("/mutate"), body.clone())
                .await
                .is_err());
        }
    });
    for _ in 0..2 {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &server.addr,
                "-cert",
                "c.crt",
                "-key",
                "c.key",
            ])
            .arg("-CAfile")
            .arg(&server_ca)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("HTTP/"),
            "served with a v1 certificate"
        );
    }
    // Plain HTTP on the TLS port, and a connection that closes without a word.
    let mut plain = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = std::io::Read::read(&mut plain, &mut [0u8; 64]);
    drop(std::net::TcpStream::connect(&server.addr).unwrap());

    let series = |reason: &str| {
        format!("sidecar_injector_tls_handshake_failures_total{{reason=\"{reason}\"}}")
    };
    let wanted = [
        ("no-client-certificate", 4),
        ("unknown-ca", 3),
        ("bad-certificate", 2),
        ("protocol", 1),
        ("closed", 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = server.metrics_text();
        if wanted.iter().all(|(r, n)| counter(&m, &series(r)) == *n) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "handshake failures not counted as {wanted:?}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 10 refusals: the first is logged (at warn, with its reason), the rest held back.
    let lines: Vec<String> = server
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("TLS handshake refused"))
        .collect();
    assert!(!lines.is_empty() && lines.len() < 10, "{lines:#?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("reason=no-client-certificate"),
        "{}",
        lines[0]
    );
    // The server is unharmed.
    assert_eq!(
        get_plain(&format!("http://{}/readyz", server.metrics)),
        "ok\n"
    );
}

#[test]
fn request_fields_cannot_forge_log_lines_in_either_format() {
    let certs = make_certs();
    let mut review: Value =
        serde_json::from_slice(&std::fs::read(fixture("reviews/replicaset-pod.json")).unwrap())
            .unwrap();
    let uid = "u1\n2026-01-01T00:00:00Z  INFO FORGED outcome=injected\u{1b}[31m\"}\\";
    review["request"]["uid"] = serde_json::json!(uid);
    let body = serde_json::to_vec(&review).unwrap();
    // The uid as both formats log it: control characters spelled out.
    let logged = r#"u1\n2026-01-01T00:00:00Z  INFO FORGED outcome=injected\u{1b}[31m"}\"#;
    for format in ["text", "json"] {
        let mut args = tls_args(&certs);
        args.extend(["--log-format".into(), format.into()]);
        let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
        rt().block_on(async {
            let c = client(&certs.path.join("ca.crt"), true);
            let bad = br#"{"request": "a\"b\u001b"}"#.to_vec();
            for (body, status) in [(body.clone(), 200), (bad, 400)] {
                assert_eq!(
                    post(&c, &server.url("/mutate"), body).await.unwrap().0,
                    status
                );
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.log_has("admission review rejected") {
            assert!(Instant::now() < deadline, "no review logged");
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = server.log_lines();
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("2026-01-01") || l.contains('\u{1b}')),
            "{lines:#?}"
        );
        let reviewed: Vec<_> = lines
            .iter()
            .filter(|l| l.contains("admission review") && !l.contains("rejected"))
            .collect();
        assert_eq!(reviewed.len(), 1, "{lines:#?}");
        if format == "text" {
            assert!(
                reviewed[0].contains(&format!(" uid={logged} ")),
                "{lines:#?}"
            );
        } else {
            assert_eq!(log_field(reviewed[0], "uid").as_deref(), Some(logged));
            // Every line is one JSON object, the review's with its fields typed.
            for line in &lines {
                let fields: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(
                    fields["timestamp"].is_string() && fields["level"].is_string(),
                    "{line}"
                );
                assert!(
                    fields["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("sidecar_injector::")),
                    "{line}"
                );
            }
            let fields: Value = serde_json::from_str(reviewed[0]).unwrap();
            assert_eq!(fields["message"], "admission review");
            assert_eq!(fields["level"], "INFO");
            assert_eq!(fields["outcome"], "injected");
            assert!(fields["duration_us"].is_u64(), "{fields}");
        }
    }
}
