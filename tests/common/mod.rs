//! Helpers shared by the integration tests: the binary, the apiserver's patch tool and the
//! strict schema validator (both installed by `make test-deps`, which `make test` runs).
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod creates;
pub mod deployed;
pub mod measure;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sidecar-injector")
}

/// The project's folder.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// Runs `cmd`, which must succeed; the failure names `what` and shows its stderr.
pub fn succeed(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `scripts/selfsigned-overlay.sh DIR` with `exe` as the binary, as `make certs` runs it;
/// it must succeed.
pub fn selfsigned_overlay(exe: &Path, dir: &Path) {
    succeed(
        Command::new("bash")
            .arg(root().join("scripts/selfsigned-overlay.sh"))
            .arg(dir)
            .env("BIN", exe),
        "selfsigned-overlay.sh",
    );
}

/// `exe certs --out DIR --dns NAMES...`, which must succeed.
pub fn write_certs(exe: &Path, dir: &Path, dns: &[&str]) {
    succeed(
        Command::new(exe)
            .args(["certs", "--out"])
            .arg(dir)
            .arg("--dns")
            .args(dns),
        "certs",
    );
}

/// A two-worker runtime for the tests' async clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Standard base64, as Kubernetes writes bytes in JSON.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs the binary with `args` and `stdin`.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sidecar-injector");
    // A command that exits before reading (a usage error) closes the pipe early.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn tool(env: &str, default: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        path.exists(),
        "{} not found: {hint} (or set {env})",
        path.display()
    );
    path
}

/// A Go tool built from its module by scripts/tool.sh (cached): helm, promtool.
pub fn go_tool(name: &str) -> PathBuf {
    let out = succeed(
        Command::new("bash")
            .arg(root().join("scripts/tool.sh"))
            .arg(name),
        &format!("scripts/tool.sh {name}"),
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// kube-apiserver's JSON-patch library (evanphx/json-patch v4), as a command.
pub fn apply_jsonpatch(object: &Value, patch: &[u8]) -> Result<Value, String> {
    let exe = tool(
        "APPLY_JSONPATCH",
        "target/tools/apply-jsonpatch",
        "run `make test-deps`",
    );
    let dir = tempfile::tempdir().unwrap();
    let (o, p) = (
        dir.path().join("object.json"),
        dir.path().join("patch.json"),
    );
    std::fs::write(&o, serde_json::to_vec(object).unwrap()).unwrap();
    std::fs::write(&p, patch).unwrap();
    let out = Command::new(exe).arg(&o).arg(&p).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Strict OpenAPI validation of every file, at the newest Kubernetes kubernetes-validate ships
/// (its default). Returns the tool's output on failure.
pub fn validate_strict(files: &[PathBuf]) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let exe = std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let out = Command::new(&exe)
        .arg("--strict")
        .arg("--quiet")
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{exe}: {e}: run `make test-deps`"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The decoded JSON patch of an AdmissionReview response, if any.
pub fn patch_of(response: &Value) -> Option<Vec<u8>> {
    let p = response["response"].get("patch")?.as_str()?;
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    Some(base64::engine::general_purpose::STANDARD.decode(p).unwrap())
}

/// kubernetes-validate needs `metadata.name`, which pods created from `generateName` do not
/// have yet when admission runs; give them one for validation only.
pub fn named_for_validation(mut pod: Value) -> Value {
    if pod["metadata"].get("name").is_none() {
        let base = pod["metadata"]["generateName"]
            .as_str()
            .unwrap_or("pod-")
            .to_string();
        pod["metadata"]["name"] = Value::String(format!("{base}x"));
    }
    pod
}

/// Wraps a patched object for a second review.
pub fn rereview(request: &Value, patched: &Value) -> Value {
    let mut again = request.clone();
    again["request"]["object"] = patched.clone();
    again
}

/// Writes a Secret-volume layout: tls.crt -> ..data/tls.crt, ..data -> ..<version>.
pub fn write_secret_version(dir: &Path, version: &str, cert: &[u8], key: &[u8]) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir(&v).unwrap();
    std::fs::write(v.join("tls.crt"), cert).unwrap();
    std::fs::write(v.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), link).unwrap();
        }
    }
}
