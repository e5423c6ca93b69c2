//! The status annotation: what an injection recorded, written into the patch and read back
//! (a reinvocation, `check`, `rollout --stale`).

use super::*;

/// `sidecar-injector.io/status` as a JSON-pointer token (`/` escaped as `~1`, RFC 6901).
pub(super) const STATUS_PATH: &str = "/metadata/annotations/sidecar-injector.io~1status";

/// The value of the status annotation: what was injected.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Status<'a> {
    pub(super) profiles: &'a [&'a str],
    pub(super) containers: Vec<&'a str>,
    pub(super) init_containers: Vec<&'a str>,
    pub(super) volumes: Vec<&'a str>,
    pub(super) digests: &'a BTreeMap<&'a str, &'a str>,
}

pub(super) fn to_json_text<T: Serialize>(value: &T) -> String {
    // Strings and string lists always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// The warning for a status annotation that names a container the pod does not have.
pub const FORGED_STATUS_WARNING: &str = "sidecar-injector: the pod's sidecar-injector.io/status \
    annotation names containers the pod does not have (forged, or left from a copied pod): \
    it was ignored and the pod reviewed as not injected";

/// What a status annotation names (SPEC: a JSON object; one that is not names nothing).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusNames<'a> {
    #[serde(default, borrow)]
    pub profiles: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub containers: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub init_containers: Vec<Cow<'a, str>>,
    /// Profile name to the digest it had when injected; empty for pods injected before
    /// digests were recorded ("unknown version").
    #[serde(default, borrow)]
    pub digests: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

impl<'a> StatusNames<'a> {
    pub fn parse(status: &'a str) -> StatusNames<'a> {
        serde_json::from_str(status).unwrap_or_default()
    }

    /// The containers and init containers it names.
    pub fn all_containers(&self) -> impl Iterator<Item = &str> {
        self.containers
            .iter()
            .chain(&self.init_containers)
            .map(Cow::as_ref)
    }
}

/// The profiles whose recorded digest (a status annotation's `digests`) is not the one
/// `current` gives (none there: no longer configured), each with the digest recorded; none
/// when nothing is recorded (injected before digests were: an unknown version is not a stale
/// one).
pub fn outdated<'s, 'c, K: AsRef<str>, V: AsRef<str>>(
    recorded: &'s BTreeMap<K, V>,
    current: impl Fn(&str) -> Option<&'c str>,
) -> Vec<(&'s str, &'s str)> {
    recorded
        .iter()
        .map(|(profile, digest)| (profile.as_ref(), digest.as_ref()))
        .filter(|(profile, digest)| current(profile) != Some(*digest))
        .collect()
}

/// What a pod's status annotation means (SPEC "Opting in and out").
pub enum Marker<'p> {
    /// No status annotation.
    Absent,
    /// "Already injected": the pod has every container the status names.
    Injected(StatusNames<'p>),
    /// It names a container the pod does not have: forged or left over, so ignored.
    Forged,
}

/// Reads the pod's status annotation once and holds it against the pod's containers.
pub fn marker<'p>(pod: &'p PodView<'_>) -> Marker<'p> {
    let Some(status) = pod.annotations().and_then(|a| a.get(STATUS_KEY)) else {
        return Marker::Absent;
    };
    let names = StatusNames::parse(status);
    // A set: a status may name many containers, a pod have many (both are hostile input).
    let have: std::collections::HashSet<&str> = pod
        .spec
        .as_ref()
        .map(|spec| all_container_names(spec))
        .unwrap_or_default()
        .into_iter()
        .collect();
    if names.all_containers().all(|name| have.contains(name)) {
        Marker::Injected(names)
    } else {
        Marker::Forged
    }
}

/// The status annotation's op: what was injected, so that a reinvocation, `check` and
/// `rollout --stale` can tell.
pub(super) fn status_op<'c>(
    pod: &PodView<'_>,
    options: &Options<'_>,
    add: &Additions<'c, '_>,
) -> AddOp<'c> {
    let native = options.native;
    let names = |list: &[&'c Named]| list.iter().map(|n| n.name.as_str()).collect::<Vec<_>>();
    let sidecar_names = || add.sidecars.iter().map(|c| c.name.as_str());
    let status = to_json_text(&Status {
        profiles: &options.profiles,
        containers: if native {
            Vec::new()
        } else {
            sidecar_names().collect()
        },
        init_containers: names(&add.init_containers)
            .into_iter()
            .chain(sidecar_names().filter(|_| native))
            .collect(),
        volumes: names(&add.volumes),
        digests: &add.digests,
    });
    let status = to_json_text(&status);
    let key = to_json_text(&STATUS_KEY);
    let (path, value) = match &pod.metadata {
        // No metadata at all: `/metadata/annotations` would have no parent to go into.
        None => (
            "/metadata",
            format!(r#"{{"annotations":{{{key}:{status}}}}}"#),
        ),
        Some(m) if m.annotations.is_none() => {
            ("/metadata/annotations", format!("{{{key}:{status}}}"))
        }
        Some(_) => (STATUS_PATH, status),
    };
    AddOp {
        path: path.into(),
        value: Cow::Owned(value),
    }
}
