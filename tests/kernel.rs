//! Process sharing on the kernel itself: the seed attaches to the sidecar, runs `ps ax` and
//! `kill -HUP` on the app. For the securityContext `inject` gives the sidecar, a process with
//! exactly that uid, gid and capability set (as a container runtime would start it, with
//! no_new_privs for allowPrivilegeEscalation: false) must read the app's /proc entries and
//! signal it; the app runs as uid 1001, as the seed's bitnami/nginx does. Needs root and
//! util-linux `setpriv`, so it builds only with `--features root` (`make test` turns it on;
//! CI runs as root); with the feature it fails without them, it never skips.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const APP_UID: u32 = 1001;

fn require_root_and_setpriv() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the kernel test must run as root (it starts processes as other users); CI runs as root"
    );
    assert!(
        Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "util-linux setpriv is required (apt-get install util-linux)"
    );
}

/// The injected sidecar of a one-container pod with these annotations and pod securityContext.
fn injected_sidecar(pod_security: Value) -> (Value, Value) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx", "annotations": {
            "sidecar-injector.io/inject": "true",
            "sidecar-injector.io/share-process-namespace": "true"}},
        "spec": {"securityContext": pod_security,
            "containers": [{"name": "nginx", "image": "bitnami/nginx"}]}});
    let out = run(&["inject"], pod.to_string().as_bytes());
    assert!(
        out.status.success(),
        "inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = sidecar_injector::read_documents(&String::from_utf8_lossy(&out.stdout))
        .unwrap()
        .remove(0);
    let sidecar = doc["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidecar")
        .expect("the sidecar")
        .clone();
    (sidecar, doc["spec"]["securityContext"].clone())
}

/// The app: a shell as uid 1001 that records each SIGHUP in `mark`.
fn start_app(mark: &Path) -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={APP_UID}"),
            &format!("--regid={APP_UID}"),
            "--clear-groups",
        ])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        // A shell cannot trap a signal ignored when it started, and a suite run under `nohup`
        // hands SIGHUP down ignored: the app starts with it at its default, as in a container.
        .args(["env", "--default-signal=HUP"])
        .args([
            "sh",
            "-c",
            "trap 'echo hup >> \"$MARK\"' HUP; while :; do sleep 0.05; done",
        ])
        .env("MARK", mark)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `script` as the sidecar would run: its uid and gid (else the pod's, else the image's
/// root group), exactly its capabilities, no_new_privs.
fn as_sidecar(sidecar: &Value, pod_security: &Value, script: &str) -> std::process::Output {
    let sc = &sidecar["securityContext"];
    let uid = sc["runAsUser"]
        .as_i64()
        .or(pod_security["runAsUser"].as_i64())
        .unwrap_or(0);
    let gid = sc["runAsGroup"]
        .as_i64()
        .or(pod_security["runAsGroup"].as_i64())
        .unwrap_or(0);
    let caps: String = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!(",+{}", c.as_str().unwrap().to_lowercase()))
        .collect();
    assert!(
        sc["capabilities"]["drop"] == json!(["ALL"]),
        "the sidecar drops ALL: {sc}"
    );
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .args([
            &format!("--bounding-set=-all{caps}"),
            &format!("--inh-caps=-all{caps}"),
        ])
        .args(["--no-new-privs", "--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn hup_count(mark: &Path) -> usize {
    std::fs::read_to_string(mark)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// What the seed does from the sidecar: list the app's command line (`ps ax`), optionally look
/// into the process (`/proc/PID/exe` and `/proc/PID/root` are guarded by ptrace access, not by
/// file modes), and send it SIGHUP; then wait for the app to see it.
fn seed_session(sidecar: &Value, pod_security: &Value, inspect: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("hups");
    std::fs::write(&mark, "").unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(&mark, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mut app = start_app(&mark);
    let pid = app.id();
    std::thread::sleep(Duration::from_millis(200));
    let inspect = if inspect {
        format!("readlink /proc/{pid}/exe && ls /proc/{pid}/root/ >/dev/null && ")
    } else {
        String::new()
    };
    let script = format!("tr '\\0' ' ' < /proc/{pid}/cmdline && {inspect}kill -HUP {pid}");
    let out = as_sidecar(sidecar, pod_security, &script);
    let result = if !out.status.success() {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    } else {
        let start = Instant::now();
        while hup_count(&mark) == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if hup_count(&mark) != 1 {
            Err(format!("the app did not get SIGHUP (stdout {stdout:?})"))
        } else if !stdout.contains("while :") {
            Err(format!("the app's command line was not read: {stdout:?}"))
        } else {
            Ok(())
        }
    };
    let _ = app.kill();
    let _ = app.wait();
    result
}

#[test]
fn root_sidecar_with_ptrace_and_kill_reads_and_signals_an_app_of_another_uid() {
    require_root_and_setpriv();
    // The seed's pod: no runAsUser, so the app's uid is unknown to the injector.
    let (sidecar, pod_security) = injected_sidecar(json!({}));
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["capabilities"]["add"], json!(["SYS_PTRACE", "KILL"]));
    seed_session(&sidecar, &pod_security, true).expect("ps and kill -HUP from the sidecar");

    // The controls: with SYS_PTRACE alone (before KILL was added) the app can be inspected but
    // not signalled; with KILL alone, signalled but not inspected.
    let mut ptrace_only = sidecar.clone();
    ptrace_only["securityContext"]["capabilities"]["add"] = json!(["SYS_PTRACE"]);
    let err = seed_session(&ptrace_only, &pod_security, true).expect_err("kill without KILL");
    assert!(err.contains("kill") && err.contains("ermitted"), "{err}");
    let mut kill_only = sidecar.clone();
    kill_only["securityContext"]["capabilities"]["add"] = json!(["KILL"]);
    // (readlink fails without a word; the script stops there, before its kill.)
    assert!(
        seed_session(&kill_only, &pod_security, true).is_err(),
        "inspected without SYS_PTRACE"
    );
    seed_session(&kill_only, &pod_security, false).expect("kill -HUP with KILL");
}

#[test]
fn same_uid_sidecar_reads_and_signals_the_app_with_no_capability() {
    require_root_and_setpriv();
    let pod_security = json!({"runAsUser": APP_UID, "runAsGroup": APP_UID, "runAsNonRoot": true});
    let (sidecar, stored) = injected_sidecar(pod_security.clone());
    assert_eq!(stored, pod_security, "the pod's own settings are untouched");
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsUser"], APP_UID);
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no added capability: {sc}"
    );
    seed_session(&sidecar, &pod_security, true).expect("ps and kill -HUP as the app's uid");

    // The control: another uid with no capability can do neither.
    let mut other = sidecar.clone();
    other["securityContext"]["runAsUser"] = json!(65534);
    assert!(
        seed_session(&other, &pod_security, false).is_err(),
        "a stranger signalled the app"
    );
}
