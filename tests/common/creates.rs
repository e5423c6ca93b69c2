//! Opted-in pod creates in a loop through the webhook, until stopped: how the suites measure
//! what a change to the webhook (a rotation, a rollout, a killed replica) costs its users.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::api::Api;
use super::cluster::{Cluster, INJECT, OFF_NODE, STATUS};

/// When a create finished, and its error if it failed.
pub type Attempt = (Instant, Result<(), String>);

/// What a loop saw.
pub struct Outcome {
    pub attempts: Vec<Attempt>,
    /// The slowest create.
    pub slowest: Duration,
}

pub struct Creates {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Outcome>>,
}

impl Creates {
    /// Creates in namespace `ns` (which must exist), one every `pause` after the last ends;
    /// each opted-in pod must be created with the sidecar.
    pub fn start(c: &Cluster, ns: &str, tag: &str, pause: Duration) -> Creates {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let api = Api::new(c);
        let (ns, tag) = (ns.to_string(), tag.to_string());
        let thread = std::thread::spawn(move || {
            let mut attempts = Vec::new();
            let mut slowest = Duration::ZERO;
            while !flag.load(Ordering::SeqCst) {
                // A fresh name every time, whatever earlier runs left in the namespace.
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": format!("{tag}-"), "namespace": ns, "annotations": {INJECT: "true"}},
                    "spec": {"schedulerName": OFF_NODE, "containers": [{"name": "app", "image": "nginx:1.27"}]}});
                let start = Instant::now();
                let result = api.create_pod(&pod).and_then(|stored| {
                    if stored["metadata"]["annotations"][STATUS].is_string() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} was created without the sidecar",
                            stored["metadata"]["name"]
                        ))
                    }
                });
                slowest = slowest.max(start.elapsed());
                attempts.push((Instant::now(), result));
                std::thread::sleep(pause);
            }
            Outcome { attempts, slowest }
        });
        Creates {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Creates {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Outcome {
    pub fn failures(&self) -> Vec<String> {
        self.attempts
            .iter()
            .filter_map(|(_, r)| r.clone().err())
            .collect()
    }

    /// (creates, failures, the longest run of failures).
    pub fn summary(&self) -> (usize, Vec<String>, Duration) {
        (self.attempts.len(), self.failures(), self.longest_outage())
    }

    /// The longest run of failures, from its first to its last.
    pub fn longest_outage(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut run_start: Option<Instant> = None;
        for (at, r) in &self.attempts {
            match r {
                Ok(()) => run_start = None,
                Err(_) => {
                    let start = *run_start.get_or_insert(*at);
                    longest = longest.max(*at - start);
                }
            }
        }
        longest
    }

    /// From `since` to the last failure (zero without any).
    pub fn failing_until(&self, since: Instant) -> Duration {
        self.attempts
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(at, _)| at.saturating_duration_since(since))
            .max()
            .unwrap_or_default()
    }
}
