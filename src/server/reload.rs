//! Hot reload of the serving certificate and the config.
//!
//! The files are re-read on a short interval and compared by content. Kubernetes updates a
//! Secret or ConfigMap volume by swapping the `..data` symlink of the directory, which file
//! watches on the old targets never see; reading the paths anew always follows the current
//! link, and works the same for bind mounts and editors that rename files into place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::config::Config;
use crate::metrics::ReloadKind;
use crate::server::certificate::apply_cert;
use crate::server::state::AppState;
use crate::tls::store::{client_verifier, load_pair, CertStore, ClientCa, Loaded};

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

/// What to reload: the certificate pair, the client CA (and the verifier it updates) and
/// the config file.
#[derive(Clone)]
pub struct Sources {
    pub cert: Option<Files>,
    pub client_ca: Option<(Files, Arc<ClientCa>)>,
    pub config: Option<Files>,
}

/// Files to watch, with their contents as start-up loaded them.
#[derive(Clone)]
pub struct Files {
    pub paths: Vec<PathBuf>,
    pub loaded: Vec<Vec<u8>>,
}

impl Files {
    pub fn one(path: PathBuf, loaded: Vec<u8>) -> Files {
        Files {
            paths: vec![path],
            loaded: vec![loaded],
        }
    }

    /// A watch that reports the first change from what start-up loaded, or (`remember`
    /// off, after a restart of the loop) whatever is on disk now.
    fn watch(self, remember: bool) -> Watch {
        Watch::new(self.paths, remember.then_some(self.loaded))
    }
}

/// Logs the digest of each profile served (what `rollout --stale` compares pods against)
/// and what a config that loads still wants the operator to see. At start and every reload.
pub fn log_config(config: &Config, origin: &str) {
    let digests: Vec<String> = config
        .profiles
        .iter()
        .map(|(name, p)| format!("{name}={}", p.digest))
        .collect();
    tracing::info!(path = origin, profiles = %digests.join(","), "config: serving profiles");
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
            log_config(&config, origin);
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
    let mut cert = sources.cert.map(|files| files.watch(remember));
    let mut client_ca = sources
        .client_ca
        .map(|(files, ca)| (files.watch(remember), ca));
    let mut config = sources.config.map(|files| {
        let origin = files.paths[0].display().to_string();
        (files.watch(remember), origin)
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
}
