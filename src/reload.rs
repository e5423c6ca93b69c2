//! Hot reload of the serving certificate and the config.
//!
//! The files are re-read on a short interval and compared by content. Kubernetes updates a
//! Secret or ConfigMap volume by swapping the `..data` symlink of the directory, which file
//! watches on the old targets never see; reading the paths anew always follows the current
//! link, and works the same for bind mounts and editors that rename files into place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::metrics::ReloadKind;
use crate::state::AppState;
use crate::tls::{client_verifier, load_pair, CertStore, ClientCa, Loaded};

/// A set of files read together, remembered by content.
struct Watch {
    paths: Vec<PathBuf>,
    seen: Option<Vec<Vec<u8>>>,
    last_error: Option<String>,
}

impl Watch {
    fn new(paths: Vec<PathBuf>, seen: Option<Vec<Vec<u8>>>) -> Watch {
        Watch {
            paths,
            seen,
            last_error: None,
        }
    }

    fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        self.paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
            .collect()
    }

    /// The contents when they changed since the last call; a read error once per error.
    fn poll(&mut self) -> Option<Result<Vec<Vec<u8>>, String>> {
        match self.read() {
            Err(e) if self.last_error.as_ref() == Some(&e) => None,
            Err(e) => {
                self.last_error = Some(e.clone());
                Some(Err(e))
            }
            Ok(contents) => {
                self.last_error = None;
                if self.seen.as_ref() == Some(&contents) {
                    None
                } else {
                    self.seen = Some(contents.clone());
                    Some(Ok(contents))
                }
            }
        }
    }
}

/// What to reload: the certificate pair, the client CA and the config file, each with what
/// was loaded at start.
#[derive(Clone)]
pub struct Sources {
    pub cert: Option<(PathBuf, PathBuf, Vec<Vec<u8>>)>,
    pub client_ca: Option<(PathBuf, Vec<u8>, Arc<ClientCa>)>,
    pub config: Option<(PathBuf, Vec<u8>)>,
}

/// Whether a certificate is outside its validity period now: `Some("expired")` or
/// `Some("not-yet-valid")`.
fn out_of_validity(loaded: &Loaded) -> Option<&'static str> {
    let now = unix_now();
    if now > loaded.not_after {
        Some("expired")
    } else if now < loaded.not_before {
        Some("not-yet-valid")
    } else {
        None
    }
}

/// Now, as a Unix time, the unit of certificate validity.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Records the serving certificate in force at start: its expiry for the metric and for
/// `/readyz`, and, loudly, whether it is outside its validity (clients refuse it, so every
/// webhook call fails until it is replaced; there is no other one to serve).
pub fn note_certificate(loaded: &Loaded, state: &AppState) {
    state.metrics.set_cert_expiry(loaded.not_after);
    state.set_cert_not_after(loaded.not_after);
    let Some(problem) = out_of_validity(loaded) else {
        return;
    };
    state.metrics.certificate_out_of_validity(problem);
    tracing::warn!(
        state = problem,
        not_before = loaded.not_before,
        not_after = loaded.not_after,
        now = unix_now(),
        "the serving certificate is outside its validity period: clients will refuse it"
    );
}

/// Logs what a config that loads still wants the operator to see. At start and every reload.
pub fn log_config_warnings(config: &Config, origin: &str) {
    for warning in &config.warnings {
        tracing::warn!(path = origin, %warning, "config");
    }
}

fn load_contents(contents: &[Vec<u8>]) -> Result<Loaded, String> {
    match contents {
        [cert, key] => load_pair(cert, key).map_err(|e| e.to_string()),
        _ => Err("expected a certificate and a key".into()),
    }
}

/// Loads the certificate and key read. They are two files: a Secret update between the two
/// reads gives a pair that does not match, so read them again, briefly, until they agree.
async fn settle_pair(
    watch: &mut Watch,
    mut change: Result<Vec<Vec<u8>>, String>,
) -> Result<Loaded, String> {
    let mut rereads = 5;
    loop {
        let contents = change?;
        let loaded = load_contents(&contents);
        if loaded.is_ok() || rereads == 0 {
            watch.seen = Some(contents);
            return loaded;
        }
        rereads -= 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        change = watch.read();
    }
}

/// Puts a loaded certificate in force, or keeps the current one: counted and logged either
/// way (files here, the Secret for `--tls-auto`). A certificate outside its validity period
/// is refused: clients would refuse it, and the one in force may still be good. Whether the
/// new one is now in force.
pub(crate) fn apply_cert(
    loaded: Result<Loaded, String>,
    state: &AppState,
    store: &CertStore,
) -> bool {
    let loaded = loaded.and_then(|l| match out_of_validity(&l) {
        None => Ok(l),
        Some(problem) => {
            state.metrics.certificate_out_of_validity(problem);
            Err(format!(
                "the new certificate is {problem} (notBefore {}, notAfter {}, now {})",
                l.not_before,
                l.not_after,
                unix_now()
            ))
        }
    });
    match loaded {
        Ok(l) => {
            state.metrics.set_cert_expiry(l.not_after);
            state.set_cert_not_after(l.not_after);
            store.set(l.key);
            state.metrics.reloaded(ReloadKind::Certificate, true);
            tracing::info!(not_after = l.not_after, "certificate reloaded");
            true
        }
        Err(error) => {
            state.metrics.reloaded(ReloadKind::Certificate, false);
            tracing::warn!(%error, "certificate reload failed; the current certificate stays in force");
            false
        }
    }
}

fn apply_client_ca(contents: Result<Vec<Vec<u8>>, String>, state: &AppState, ca: &ClientCa) {
    match contents.and_then(|c| client_verifier(&c.concat()).map_err(|e| e.to_string())) {
        Ok(verifier) => {
            ca.set(verifier);
            state.metrics.reloaded(ReloadKind::ClientCa, true);
            tracing::info!("client CA reloaded");
        }
        Err(error) => {
            state.metrics.reloaded(ReloadKind::ClientCa, false);
            tracing::warn!(%error, "client CA reload failed; the current one stays in force");
        }
    }
}

fn apply_config(contents: Result<Vec<Vec<u8>>, String>, origin: &str, state: &AppState) {
    let loaded =
        contents.and_then(|c| Config::from_bytes(&c.concat(), origin).map_err(|e| e.to_string()));
    match loaded {
        Ok(config) => {
            log_config_warnings(&config, origin);
            state.set_config(config);
            state.metrics.reloaded(ReloadKind::Config, true);
            tracing::info!(path = origin, "config reloaded");
        }
        Err(error) => {
            state.metrics.reloaded(ReloadKind::Config, false);
            tracing::warn!(%error, "config reload failed; the current config stays in force");
        }
    }
}

async fn poll_loop(
    sources: Sources,
    state: Arc<AppState>,
    store: Arc<CertStore>,
    interval: Duration,
    remember: bool,
) {
    let mut cert = sources
        .cert
        .map(|(c, k, seen)| Watch::new(vec![c, k], remember.then_some(seen)));
    let mut client_ca = sources
        .client_ca
        .map(|(p, seen, ca)| (Watch::new(vec![p], remember.then(|| vec![seen])), ca));
    let mut config = sources.config.map(|(p, seen)| {
        let origin = p.display().to_string();
        (Watch::new(vec![p], remember.then(|| vec![seen])), origin)
    });
    loop {
        tokio::time::sleep(interval).await;
        if let Some(watch) = cert.as_mut() {
            if let Some(change) = watch.poll() {
                let loaded = settle_pair(watch, change).await;
                apply_cert(loaded, &state, &store);
            }
        }
        if let Some((watch, ca)) = client_ca.as_mut() {
            if let Some(change) = watch.poll() {
                apply_client_ca(change, &state, ca);
            }
        }
        if let Some((watch, origin)) = config.as_mut() {
            if let Some(change) = watch.poll() {
                apply_config(change, origin, &state);
            }
        }
    }
}

/// Starts the reload loop under a supervisor that restarts it if it ever panics, so the
/// reload can never die silently.
pub fn spawn(sources: Sources, state: Arc<AppState>, store: Arc<CertStore>, interval: Duration) {
    if sources.cert.is_none() && sources.client_ca.is_none() && sources.config.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut remember = true;
        loop {
            let task = tokio::spawn(poll_loop(
                sources.clone(),
                state.clone(),
                store.clone(),
                interval,
                remember,
            ));
            if let Err(error) = task.await {
                tracing::error!(%error, "the reload task stopped; restarting it");
            }
            // After a restart, reload whatever is on disk rather than trust the old contents.
            remember = false;
            tokio::time::sleep(interval).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_reports_changes_once_and_errors_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "a").unwrap();
        let mut w = Watch::new(vec![p.clone()], Some(vec![b"a".to_vec()]));
        assert!(w.poll().is_none());
        std::fs::write(&p, "b").unwrap();
        assert_eq!(w.poll(), Some(Ok(vec![b"b".to_vec()])));
        assert!(w.poll().is_none());
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(w.poll(), Some(Err(_))));
        assert!(w.poll().is_none());
        std::fs::write(&p, "b").unwrap();
        assert!(
            w.poll().is_none(),
            "same content as before the error: no reload"
        );
    }

    #[test]
    fn watch_follows_a_swapped_data_symlink() {
        // The layout kubelet writes for a Secret volume: tls.crt -> ..data/tls.crt,
        // ..data -> ..2026_01_01, and an update swaps ..data atomically.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/tls.crt"), "one").unwrap();
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", d.join("tls.crt")).unwrap();
        let mut w = Watch::new(vec![d.join("tls.crt")], None);
        assert_eq!(w.poll(), Some(Ok(vec![b"one".to_vec()])));
        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/tls.crt"), "two").unwrap();
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..v1")).unwrap();
        assert_eq!(w.poll(), Some(Ok(vec![b"two".to_vec()])));
    }

    /// A self-signed serving pair for localhost, valid from `from` to `until` (from now).
    fn pair(from: time::Duration, until: time::Duration) -> Loaded {
        let now = time::OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            crate::certs::serving_params(&["localhost".into()], now, now + until).unwrap();
        params.not_before = now + from;
        let cert = params.self_signed(&key).unwrap();
        load_pair(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    fn state() -> AppState {
        AppState::new(
            Config::embedded().unwrap(),
            crate::metrics::Metrics::new(),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_certificate_outside_its_validity_is_refused_at_reload() {
        let state = state();
        let good = pair(time::Duration::hours(-1), time::Duration::days(30));
        let store = CertStore::new(good.key.clone());
        let expired = pair(time::Duration::days(-30), time::Duration::days(-1));
        let early = pair(time::Duration::days(1), time::Duration::days(30));
        assert!(!apply_cert(Ok(expired), &state, &store));
        assert!(!apply_cert(Ok(early), &state, &store));
        assert!(Arc::ptr_eq(&store.get(), &good.key), "the good one stays");
        let text = state.metrics.encode();
        for line in [
            "sidecar_injector_reloads_total{kind=\"certificate\",result=\"failure\"} 2",
            "sidecar_injector_certificate_out_of_validity_loads_total{state=\"expired\"} 1",
            "sidecar_injector_certificate_out_of_validity_loads_total{state=\"not-yet-valid\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let next = pair(time::Duration::hours(-1), time::Duration::days(60));
        let next_key = next.key.clone();
        assert!(apply_cert(Ok(next), &state, &store));
        assert!(Arc::ptr_eq(&store.get(), &next_key));
    }

    #[test]
    fn readiness_ends_when_the_serving_certificate_expires() {
        let state = state();
        state.set_ready(true);
        let soon = pair(time::Duration::hours(-1), time::Duration::seconds(60));
        note_certificate(&soon, &state);
        assert!(state.is_ready(unix_now()));
        assert!(!state.is_ready(soon.not_after + 1));
    }
}
