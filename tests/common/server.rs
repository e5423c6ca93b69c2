//! A `sidecar-injector serve` process on 127.0.0.1 with ephemeral ports, its log kept.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics: String,
    pub probes: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// The binary under test (the test profile's build).
    pub fn start(args: &[&str]) -> Server {
        Server::start_bin(Path::new(super::bin()), args)
    }

    pub fn start_bin(exe: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(exe)
            .arg("serve")
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .args(["--probe-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let addr = log_field(&line, "addr").unwrap_or_default();
                    let listener = ["webhook", "metrics", "probes"]
                        .into_iter()
                        .find(|l| line.contains(&format!("{l} listening")));
                    let _ = tx.send((listener.unwrap_or_default(), addr));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut metrics, mut probes) = (String::new(), String::new(), String::new());
        for _ in 0..3 {
            let (listener, a) = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
            match listener {
                "webhook" => addr = a,
                "metrics" => metrics = a,
                _ => probes = a,
            }
        }
        Server {
            child,
            addr,
            metrics,
            probes,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn metrics_text(&self) -> String {
        get_plain(&format!("http://{}/metrics", self.metrics))
    }

    pub fn sigterm(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client that trusts only `ca`, speaking HTTP/2 (prior knowledge) or HTTP/1.1.
pub fn tls_client(ca: &Path, h2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30));
    if h2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    }
    .build()
    .unwrap()
}

/// The value of field `name` in one of the server's log lines, text (`name=value`) or JSON.
pub fn log_field(line: &str, name: &str) -> Option<String> {
    if line.starts_with('{') {
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).ok()?;
        let value = fields.get(name)?;
        return Some(
            value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string),
        );
    }
    let value = line.split(&format!(" {name}=")).nth(1)?.split(' ').next()?;
    Some(value.to_string())
}

pub fn get_plain(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}
