//! Stages 2 to 4: the profiles the pod asks for and what they add, checked against the pod
//! (conflicts, name clashes) and against the apiserver's size limits.

use super::*;

/// The app mount whose path `app-mount-path` moves.
pub(super) const SHARED_VOLUME: &str = "shared-data";

/// Paths compare equal whatever their trailing slashes (`/app/` mounts where `/app` does).
pub(super) fn same_path(a: &str, b: &str) -> bool {
    fn trim(p: &str) -> &str {
        match p.trim_end_matches('/') {
            "" => "/",
            t => t,
        }
    }
    trim(a) == trim(b)
}

pub(super) fn clash_message(what: &str) -> String {
    format!("{what}; rename it, or opt this pod out with annotation {INJECT_KEY}: \"false\"")
}

/// What the selected profiles add, in list order, each name (and app mount path) once: the
/// objects borrow from the config (`'c`), a mount path may come from the pod (`'a`).
pub(super) struct Additions<'c, 'a> {
    /// Each selected profile's name and digest, for the status annotation.
    pub(super) digests: BTreeMap<&'a str, &'c str>,
    pub(super) volumes: Vec<&'c Named>,
    pub(super) init_containers: Vec<&'c Named>,
    pub(super) sidecars: Vec<&'c Sidecar>,
    pub(super) mounts: Vec<(&'a str, Cow<'c, str>)>,
}

/// Stage 2: the profiles the pod asks for (`unknown-profile`), and what they add; the config
/// guarantees one definition per name.
pub(super) fn select_profiles<'c: 'a, 'a>(
    options: &Options<'a>,
    config: &'c Config,
) -> Result<Additions<'c, 'a>, Denial> {
    let mut selected = Vec::with_capacity(options.profiles.len());
    let mut digests = BTreeMap::new();
    for name in &options.profiles {
        match config.profiles.get(*name) {
            Some(p) => {
                digests.insert(*name, p.digest.as_str());
                selected.push(p);
            }
            None => {
                return Err(Denial::new(
                    Reason::UnknownProfile,
                    400,
                    format!(
                        "annotation {PROFILES_KEY}: unknown profile {}; known profiles: {}",
                        Quoted(name),
                        config.profile_names()
                    ),
                ))
            }
        }
    }
    let mut add = Additions {
        digests,
        volumes: Vec::new(),
        init_containers: Vec::new(),
        sidecars: Vec::new(),
        mounts: Vec::new(),
    };
    for p in &selected {
        for v in &p.volumes {
            if !add.volumes.iter().any(|x| x.name == v.name) {
                add.volumes.push(v);
            }
        }
        for c in &p.init_containers {
            if !add.init_containers.iter().any(|x| x.name == c.name) {
                add.init_containers.push(c);
            }
        }
        for c in &p.containers {
            if !add.sidecars.iter().any(|x| x.name == c.name) {
                add.sidecars.push(c);
            }
        }
        for m in &p.app_volume_mounts {
            let mount = match options.mount_path {
                Some(path) if m.name == SHARED_VOLUME => {
                    let mut json = m.json.clone();
                    if let Some(map) = json.as_object_mut() {
                        map.insert("mountPath".into(), Value::String(path.to_string()));
                    }
                    (path, Cow::Owned(json.to_string()))
                }
                _ => (m.mount_path.as_str(), Cow::Borrowed(m.text.as_str())),
            };
            if !add.mounts.iter().any(|(p, _)| same_path(p, mount.0)) {
                add.mounts.push(mount);
            }
        }
    }
    Ok(add)
}

/// Stage 3: process sharing against the pod's settings (`conflict`), and how the sidecars
/// share: as the app's uid when every app container's uid is known, else as root.
pub(super) fn check_conflicts(
    spec: &Spec<'_>,
    options: &Options<'_>,
    add: &Additions<'_, '_>,
    config: &Config,
) -> Result<Share, Denial> {
    if !options.share {
        return Ok(Share::No);
    }
    if !config.allow_process_sharing {
        return Err(Denial::new(
            Reason::NotAllowed,
            403,
            format!(
                "annotation {SHARE_PROCESS_KEY}: \"true\" is not allowed here: the injector's \
                 config sets allowProcessSharing: false (a process-sharing sidecar can see and \
                 signal the app's processes); remove the annotation or ask the cluster operator"
            ),
        ));
    }
    if spec.share_process_namespace == Some(false) {
        return Err(Denial::new(
            Reason::Conflict,
            409,
            format!(
                "annotation {SHARE_PROCESS_KEY}: \"true\" conflicts with the pod's \
                 spec.shareProcessNamespace: false"
            ),
        ));
    }
    if let Some(uid) = spec.app_uid() {
        return Ok(Share::SameUid(uid));
    }
    if spec.run_as_non_root() && !add.sidecars.is_empty() {
        return Err(Denial::new(
            Reason::Conflict,
            409,
            format!(
                "annotation {SHARE_PROCESS_KEY}: \"true\" needs the sidecar to run as root \
                 (runAsUser: 0) with SYS_PTRACE and KILL, because the app's uid is not set, \
                 but the pod's spec.securityContext.runAsNonRoot is true, so the kubelet would \
                 never start it; set spec.securityContext.runAsUser to the app's uid (or the \
                 same runAsUser on every app container) and the sidecar runs as that uid \
                 with no added capability"
            ),
        ));
    }
    Ok(Share::Root)
}

/// Stage 4: a name or mount path we would add that the pod already has (`name-clash`).
pub(super) fn check_clashes(spec: &Spec<'_>, add: &Additions<'_, '_>) -> Result<(), Denial> {
    let existing = all_container_names(spec);
    let new_names = add.init_containers.iter().map(|c| &c.name);
    for name in new_names.chain(add.sidecars.iter().map(|c| &c.name)) {
        if existing.contains(&name.as_str()) {
            return Err(Denial::new(
                Reason::NameClash,
                409,
                clash_message(&format!(
                    "the pod already has a container named {} that sidecar-injector did not inject",
                    Quoted(name)
                )),
            ));
        }
    }
    for v in &add.volumes {
        if spec
            .volumes
            .iter()
            .flatten()
            .any(|pv| pv.name == v.name.as_str())
        {
            return Err(Denial::new(
                Reason::NameClash,
                409,
                clash_message(&format!(
                    "the pod already has a volume named {:?} that sidecar-injector did not inject",
                    v.name
                )),
            ));
        }
    }
    for c in &spec.containers {
        for m in c.volume_mounts.iter().flatten() {
            if let Some((path, _)) = add.mounts.iter().find(|(p, _)| same_path(p, &m.mount_path)) {
                return Err(Denial::new(
                    Reason::NameClash,
                    409,
                    format!(
                        "container {} already mounts {} at {}, where sidecar-injector \
                         mounts the shared volume; set annotation {APP_MOUNT_PATH_KEY} to another \
                         path, or opt this pod out with annotation {INJECT_KEY}: \"false\"",
                        Quoted(&c.name),
                        Quoted(&m.name),
                        Quoted(path)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The largest object etcd stores with its default limits (`--max-request-bytes` 1.5 MiB):
/// a patch larger than this alone makes a pod that can never be stored.
pub const MAX_PATCH_BYTES: usize = 1536 * 1024;

/// Stage 5: the answer must fit where the pod goes. The patch grows with the pod (one mount
/// per app container), so a pod of many tiny containers would turn a 4 MiB request into a
/// 50 MB answer: estimate it from the pod's shape before building it (`too-large`).
pub(super) fn check_size(
    spec: &Spec<'_>,
    add: &Additions<'_, '_>,
    token: Option<&str>,
) -> Result<(), Denial> {
    // Each op: its JSON keys and path (< 64 bytes) and its value.
    let per_container: usize = add.mounts.iter().map(|(_, text)| text.len() + 64).sum();
    // An added container's token mount: its volume name and fixed text (< 96 bytes).
    let token_mount = token.map_or(0, |volume| volume.len() + 96);
    let fixed: usize = add
        .sidecars
        .iter()
        .map(|c| c.text(true, Share::Root).len() + 64 + token_mount)
        .chain(
            add.init_containers
                .iter()
                .map(|n| n.text.len() + 64 + token_mount),
        )
        .chain(add.volumes.iter().map(|n| n.text.len() + 64))
        .sum();
    let estimate = spec.containers.len().saturating_mul(per_container) + fixed + 1024;
    if estimate > MAX_PATCH_BYTES {
        return Err(Denial::new(
            Reason::TooLarge,
            413,
            format!(
                "the pod is too large to inject into: its patch would be about {estimate} bytes \
                 ({} app containers), more than any object etcd stores ({MAX_PATCH_BYTES} bytes); \
                 opt this pod out with annotation {INJECT_KEY}: \"false\"",
                spec.containers.len()
            ),
        ));
    }
    Ok(())
}
