//! The Lease: who holds it (the one replica that writes), and each replica's report of the
//! certificate it serves.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;

/// Lease annotations with which each replica reports the certificate it serves.
const REPORT_PREFIX: &str = "serving.sidecar-injector.io/";
/// Lease durations after which a replica's report is dropped from the Lease.
const STALE_REPORTS: i64 = 20;

/// When a report (`<serial> <unix seconds>`) was written; 0 if it cannot be read.
fn report_seen(value: &str) -> i64 {
    value
        .split_once(' ')
        .and_then(|(_, seen)| seen.parse().ok())
        .unwrap_or(0)
}

/// The holder's care of the reports on the Lease: those gone stale are dropped (replicas
/// come and go with every rollout, and the Lease must never grow toward the annotation size
/// limit), and one dated in the future is re-dated to now, so that it ages like any other.
/// Unclamped, a report written with a far-future time would stay live forever, and its old
/// serial would keep an old CA in the bundle.
fn tidy_reports(annotations: &mut BTreeMap<String, String>, now: i64, lease: Duration) {
    let stale = now - STALE_REPORTS * lease.as_secs() as i64;
    annotations.retain(|k, v| !k.starts_with(REPORT_PREFIX) || report_seen(v) >= stale);
    for (key, value) in annotations.iter_mut() {
        if key.starts_with(REPORT_PREFIX) && report_seen(value) > now {
            let serial = value.split_once(' ').map_or("", |(serial, _)| serial);
            *value = format!("{serial} {now}");
        }
    }
}

fn report_key(identity: &str) -> String {
    // An annotation name: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends.
    let name: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    format!(
        "{REPORT_PREFIX}{}",
        name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

impl Shell {
    /// Takes or renews the Lease, with this replica's report on it. While this replica holds
    /// it: every live replica's report, as written with the renewal (`None`: a follower).
    pub(super) async fn lease(
        &self,
        memory: &mut Memory,
        serial: Option<&str>,
    ) -> kube::Result<Option<Vec<String>>> {
        let name = &self.args.tls_auto_lease;
        let duration = self.args.lease_duration;
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let report = serial.map(|s| format!("{s} {}", now().unix_timestamp()));
        let Some(lease) = self.leases.get_opt(name).await? else {
            return self.create_lease(memory, report, stamp).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder} {:?}", spec.renew_time.as_ref().map(|t| t.0));
        let changed_at = match &memory.lease_seen {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        memory.lease_seen = Some((record, changed_at));
        let mine = holder == self.identity;
        let expired = holder.is_empty() || changed_at.elapsed() > duration;
        if mine || expired {
            return self.hold_lease(memory, lease, report, stamp, mine).await;
        }
        if let Some(r) = report {
            let patch = json!({"metadata": {"annotations": {report_key(&self.identity): r}}});
            self.leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(None)
    }

    /// The first replica makes the Lease, holding it.
    async fn create_lease(
        &self,
        memory: &mut Memory,
        report: Option<String>,
        stamp: MicroTime,
    ) -> kube::Result<Option<Vec<String>>> {
        let mut lease = Lease::default();
        lease.metadata.name = Some(self.args.tls_auto_lease.clone());
        lease.metadata.annotations =
            report.map(|r| BTreeMap::from([(report_key(&self.identity), r)]));
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.args.lease_duration.as_secs() as i32),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            lease_transitions: Some(0),
            ..Default::default()
        });
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                memory.renewed = Some(Instant::now());
                Ok(Some(self.live_reports(&lease)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renews the Lease this replica holds (`mine`), or takes over an expired one.
    async fn hold_lease(
        &self,
        memory: &mut Memory,
        mut lease: Lease,
        report: Option<String>,
        stamp: MicroTime,
        mine: bool,
    ) -> kube::Result<Option<Vec<String>>> {
        let duration = self.args.lease_duration;
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        // Replicas come and go with every rollout: the holder drops reports gone stale, so
        // the Lease never grows toward the annotation size limit.
        tidy_reports(annotations, now().unix_timestamp(), duration);
        if let Some(r) = report {
            annotations.insert(report_key(&self.identity), r);
        }
        let spec = lease.spec.get_or_insert_with(Default::default);
        if !mine {
            let previous = spec.holder_identity.clone().unwrap_or_default();
            tracing::info!(%previous, "tls-auto: taking over the Lease");
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(stamp.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(stamp);
        spec.lease_duration_seconds = Some(duration.as_secs() as i32);
        // resourceVersion from the read: a concurrent writer makes this fail (409).
        let name = &self.args.tls_auto_lease;
        match self
            .leases
            .replace(name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                memory.renewed = Some(Instant::now());
                Ok(Some(self.live_reports(&lease)))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let held = mine && memory.renewed.is_some_and(|r| r.elapsed() < duration);
                Ok(held.then(|| self.live_reports(&lease)))
            }
            Err(e) => Err(e),
        }
    }

    /// Every live replica's report on `lease` (the serial of the certificate it serves).
    fn live_reports(&self, lease: &Lease) -> Vec<String> {
        let fresh = now().unix_timestamp() - 3 * self.args.lease_duration.as_secs() as i64;
        lease
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, v)| k.starts_with(REPORT_PREFIX) && report_seen(v) >= fresh)
            .filter_map(|(_, v)| v.split_once(' ').map(|(serial, _)| serial.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_times_are_read_or_zero() {
        assert_eq!(report_seen("ab:cd 1700000000"), 1_700_000_000);
        assert_eq!(report_seen("ab:cd"), 0);
        assert_eq!(report_seen("ab:cd soon"), 0);
    }

    #[test]
    fn report_keys_are_annotation_names() {
        assert_eq!(
            report_key("injector-7d9f-abc12"),
            "serving.sidecar-injector.io/injector-7d9f-abc12"
        );
        assert_eq!(report_key("a b/c"), "serving.sidecar-injector.io/a-b-c");
        assert_eq!(report_key(&"x".repeat(100)).len(), REPORT_PREFIX.len() + 63);
    }

    #[test]
    fn stale_reports_are_dropped_and_future_ones_re_dated_to_now() {
        let now = 2_000_000_000;
        let lease = Duration::from_secs(15);
        let mut annotations = BTreeMap::from([
            (report_key("live"), format!("aa {}", now - 5)),
            (report_key("gone"), format!("bb {}", now - 20 * 15 - 1)),
            (report_key("forged"), "cc 99999999999".to_string()),
            ("other".to_string(), "kept as is 99999999999".to_string()),
        ]);
        tidy_reports(&mut annotations, now, lease);
        assert_eq!(
            annotations,
            BTreeMap::from([
                (report_key("live"), format!("aa {}", now - 5)),
                (report_key("forged"), format!("cc {now}")),
                ("other".to_string(), "kept as is 99999999999".to_string()),
            ])
        );
        // Re-dated, it ages: twenty lease durations on, it is dropped.
        tidy_reports(&mut annotations, now + 20 * 15 + 1, lease);
        assert!(!annotations.contains_key(&report_key("forged")));
    }
}
