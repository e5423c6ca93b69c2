//! Prometheus metrics: one registry, encoded as text on `--metrics-addr`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::admission::Outcome;
use crate::engine::inject::Reason;
use crate::tls::store::HandshakeFailure;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidityLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: &'static str,
}

/// The info metric of the profiles served, by name and digest (`rollout --stale` reads it).
pub const PROFILE_INFO: &str = "sidecar_injector_config_profile_info";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
    digest: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    kind: &'static str,
    result: &'static str,
}

/// What a reload re-read.
#[derive(Clone, Copy, Debug)]
pub enum ReloadKind {
    Certificate,
    ClientCa,
    Config,
}

impl ReloadKind {
    fn as_str(self) -> &'static str {
        match self {
            ReloadKind::Certificate => "certificate",
            ReloadKind::ClientCa => "client-ca",
            ReloadKind::Config => "config",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    cert_expiry: Gauge,
    handshake_failures: Family<HandshakeLabels, Counter>,
    invalid_certificates: Family<ValidityLabels, Counter>,
    rotations: Family<StepLabels, Counter>,
    api_failures: Family<TargetLabels, Counter>,
    leader: Gauge,
    profiles: Family<ProfileLabels, Gauge>,
}

/// The outcomes each reason can come with, so every series exists from the start:
/// `too-large` is an HTTP 413 for a body, and a denial for a pod whose patch would not fit.
fn outcomes_of(reason: Reason) -> &'static [Outcome] {
    match reason {
        Reason::BadRequest | Reason::InternalError => &[Outcome::Error],
        Reason::TooLarge => &[Outcome::Error, Outcome::Denied],
        Reason::NotAPodCreate
        | Reason::AlreadyInjected
        | Reason::OptedOut
        | Reason::NotOptedIn
        | Reason::WorkloadChecked => &[Outcome::Skipped],
        Reason::BadObject
        | Reason::BadAnnotation
        | Reason::UnknownProfile
        | Reason::NotAllowed
        | Reason::Conflict
        | Reason::NameClash => &[Outcome::Denied],
        Reason::OptedIn | Reason::NamespaceEnabled => &[Outcome::Injected],
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            // 25 us .. ~0.8 s: the review itself is tens of microseconds.
            duration: Histogram::new(exponential_buckets(0.000025, 2.0, 16)),
            reloads: Family::default(),
            cert_expiry: Gauge::default(),
            handshake_failures: Family::default(),
            invalid_certificates: Family::default(),
            rotations: Family::default(),
            api_failures: Family::default(),
            leader: Gauge::default(),
            profiles: Family::default(),
        };
        metrics.register();
        metrics.precreate();
        metrics
    }

    /// Every series' name and help, in one table.
    fn register(&mut self) {
        self.registry.register(
            PROFILE_INFO,
            "1 for each profile of the config this replica serves, with its digest (the one a pod \
             injected now records in its status annotation)",
            self.profiles.clone(),
        );
        self.registry.register(
            "sidecar_injector_tls_auto_writes",
            format!(
                "--tls-auto: Secret writes by the leader, by step ({}) and caBundle patches (bundle)",
                crate::tls::rotation::Change::ALL.map(|c| c.as_str()).join(", ")
            ),
            self.rotations.clone(),
        );
        self.registry.register(
            "sidecar_injector_tls_auto_api_failures",
            "--tls-auto: failed API calls (reads and writes), by target (secret, configuration, cabundle, lease)",
            self.api_failures.clone(),
        );
        self.registry.register(
            "sidecar_injector_tls_auto_leader",
            "--tls-auto: 1 while this replica holds the Lease and manages the certificate",
            self.leader.clone(),
        );
        self.registry.register(
            "sidecar_injector_certificate_out_of_validity_loads",
            "Serving certificates loaded (at start or reload) outside their validity period",
            self.invalid_certificates.clone(),
        );
        self.registry.register(
            "sidecar_injector_tls_handshake_failures",
            "TLS handshakes on the webhook port that failed, by reason",
            self.handshake_failures.clone(),
        );
        self.registry.register(
            "sidecar_injector_admission_requests",
            "Admission requests answered, by outcome and reason",
            self.requests.clone(),
        );
        self.registry.register(
            "sidecar_injector_admission_duration_seconds",
            "Time from request start to answer, body read included",
            self.duration.clone(),
        );
        self.registry.register(
            "sidecar_injector_reloads",
            "Certificate and config reloads, by kind and result",
            self.reloads.clone(),
        );
        self.registry.register(
            "sidecar_injector_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as a Unix time",
            self.cert_expiry.clone(),
        );
    }

    /// Each labelled series that can ever count starts at 0, so a rate over it exists from
    /// the start.
    fn precreate(&self) {
        for state in ["expired", "not-yet-valid"] {
            self.invalid_certificates
                .get_or_create(&ValidityLabels { state })
                .inc_by(0);
        }
        for reason in HandshakeFailure::ALL {
            self.handshake_failures
                .get_or_create(&HandshakeLabels {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
        for reason in Reason::ALL {
            for outcome in outcomes_of(reason) {
                self.requests
                    .get_or_create(&RequestLabels {
                        outcome: outcome.as_str(),
                        reason: reason.as_str(),
                    })
                    .inc_by(0);
            }
        }
        for kind in [
            ReloadKind::Certificate,
            ReloadKind::ClientCa,
            ReloadKind::Config,
        ] {
            for result in ["success", "failure"] {
                self.reloads
                    .get_or_create(&ReloadLabels {
                        kind: kind.as_str(),
                        result,
                    })
                    .inc_by(0);
            }
        }
    }

    /// The profiles of the config now served: exactly these series, each 1.
    pub fn serving_profiles(&self, config: &crate::engine::config::Config) {
        self.profiles.clear();
        for (profile, p) in &config.profiles {
            self.profiles
                .get_or_create(&ProfileLabels {
                    profile: profile.clone(),
                    digest: p.digest.clone(),
                })
                .set(1);
        }
    }

    pub fn tls_auto_wrote(&self, step: &'static str) {
        self.rotations.get_or_create(&StepLabels { step }).inc();
    }

    pub fn tls_auto_api_failed(&self, target: &'static str) {
        self.api_failures
            .get_or_create(&TargetLabels { target })
            .inc();
    }

    pub fn set_tls_auto_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// A serving certificate loaded outside its validity: `state` is `expired` or
    /// `not-yet-valid`.
    pub fn certificate_out_of_validity(&self, state: &'static str) {
        self.invalid_certificates
            .get_or_create(&ValidityLabels { state })
            .inc();
    }

    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn observe(&self, outcome: Outcome, reason: Reason, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                outcome: outcome.as_str(),
                reason: reason.as_str(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    pub fn reloaded(&self, kind: ReloadKind, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                kind: kind.as_str(),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    pub fn set_cert_expiry(&self, unix_seconds: i64) {
        self.cert_expiry.set(unix_seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_auto_help_names_every_step() {
        let metrics = Metrics::new();
        metrics.tls_auto_wrote("bundle");
        let text = metrics.encode();
        let help = text
            .lines()
            .find(|l| l.starts_with("# HELP sidecar_injector_tls_auto_writes"))
            .unwrap_or_else(|| panic!("{text}"));
        for step in crate::tls::rotation::Change::ALL {
            assert!(help.contains(step.as_str()), "{help}");
        }
    }

    #[test]
    fn every_reason_and_outcome_series_exists_from_the_start() {
        let text = Metrics::new().encode();
        for (outcome, reason) in [
            ("denied", "too-large"),
            ("error", "too-large"),
            ("denied", "not-allowed"),
            ("error", "internal-error"),
        ] {
            let series = format!(
                r#"sidecar_injector_admission_requests_total{{outcome="{outcome}",reason="{reason}"}} 0"#
            );
            assert!(text.contains(&series), "{series}");
        }
    }

    #[test]
    fn exposes_the_spec_series() {
        let m = Metrics::new();
        m.observe(Outcome::Injected, Reason::OptedIn, 0.0001);
        m.reloaded(ReloadKind::Config, false);
        m.set_cert_expiry(1_900_000_000);
        let text = m.encode();
        assert!(text.contains(
            "sidecar_injector_admission_requests_total{outcome=\"injected\",reason=\"opted-in\"} 1"
        ), "{text}");
        assert!(text.contains(
            "sidecar_injector_admission_requests_total{outcome=\"error\",reason=\"too-large\"} 0"
        ));
        assert!(text.contains("sidecar_injector_admission_duration_seconds_count 1"));
        assert!(
            text.contains("sidecar_injector_reloads_total{kind=\"config\",result=\"failure\"} 1")
        );
        assert!(text.contains("sidecar_injector_certificate_expiry_timestamp_seconds 1900000000"));
        m.handshake_failed(HandshakeFailure::UnknownCa);
        let text = m.encode();
        assert!(
            text.contains("sidecar_injector_tls_handshake_failures_total{reason=\"unknown-ca\"} 1")
        );
        assert!(
            text.contains("sidecar_injector_tls_handshake_failures_total{reason=\"timeout\"} 0")
        );
    }
}
