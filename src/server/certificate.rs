//! The serving certificate put in force: the one path for a reloaded file (`reload`) and a
//! certificate from the Secret (`autotls`), so both refuse a certificate outside its validity,
//! count and log the same way, and keep `/readyz` and the expiry metric in step.

use crate::metrics::ReloadKind;
use crate::server::state::AppState;
use crate::tls::store::{CertStore, Loaded};

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

/// Puts a loaded certificate in force, or keeps the current one: counted and logged either
/// way (files here, the Secret for `--tls-auto`). A certificate outside its validity period
/// is refused: clients would refuse it, and the one in force may still be good. Whether the
/// new one is now in force.
pub fn apply_cert(loaded: Result<Loaded, String>, state: &AppState, store: &CertStore) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::engine::config::Config;
    use crate::tls::store::load_pair;

    /// A self-signed serving pair for localhost, valid from `from` to `until` (from now).
    fn pair(from: time::Duration, until: time::Duration) -> Loaded {
        let now = time::OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            crate::tls::generate::serving_params(&["localhost".into()], now, now + until).unwrap();
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
