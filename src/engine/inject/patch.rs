//! Stage 5: the minimal JSON patch: appends that replace or reorder nothing the pod has.

use super::*;

pub(super) fn json_array<'c>(items: impl IntoIterator<Item = Cow<'c, str>>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// Appends `items` to the array at `base`: one add of the whole array when the pod has none,
/// else one `/-` add per item, so nothing the pod has is replaced or reordered.
pub(super) fn append_all<'c>(
    ops: &mut Vec<AddOp<'c>>,
    base: &str,
    exists: bool,
    items: Vec<Cow<'c, str>>,
) {
    if items.is_empty() {
        return;
    }
    if exists {
        for value in items {
            ops.push(AddOp {
                path: format!("{base}/-"),
                value,
            });
        }
    } else {
        ops.push(AddOp {
            path: base.to_string(),
            value: Cow::Owned(json_array(items)),
        });
    }
}

/// Where kube-apiserver's ServiceAccount admission plugin mounts the API token, and the name
/// prefix of the projected volume it adds for it.
pub(super) const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub(super) const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

/// The API token volume the ServiceAccount plugin mounted into the app, if it did: the pod's
/// first `kube-api-access-*` volume (the one the plugin picks), mounted at the token path by
/// an app container, in a pod that does not turn automounting off. The plugin runs again
/// after the webhooks and mounts it into every container that has no mount at that path.
pub(super) fn token_volume<'s>(spec: &'s Spec<'_>) -> Option<&'s str> {
    if spec.automount_service_account_token == Some(false) {
        return None;
    }
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_ref())
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))?;
    let mounted = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.name == volume && m.mount_path == TOKEN_MOUNT_PATH);
    mounted.then_some(volume)
}

/// `container` (JSON text from the config) with the token mount the ServiceAccount plugin
/// would append, unless it already mounts something at the token path (the plugin then
/// leaves it alone too).
pub(super) fn with_token_mount<'c>(container: Cow<'c, str>, volume: &str) -> Cow<'c, str> {
    let Ok(mut json) = serde_json::from_str::<Value>(&container) else {
        return container;
    };
    let Some(mounts) = object_array(&mut json, "volumeMounts") else {
        return container;
    };
    if mounts.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH) {
        return container;
    }
    mounts
        .push(serde_json::json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
    Cow::Owned(json.to_string())
}

/// The array at `key` of a JSON object, created empty if missing.
pub(super) fn object_array<'v>(value: &'v mut Value, key: &str) -> Option<&'v mut Vec<Value>> {
    value
        .as_object_mut()?
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
}

/// Stage 6: the minimal patch (SPEC "What the patch must be") and the status marker; `token`,
/// the API token volume to mount into what we add (`mountServiceAccountToken`).
pub(super) fn build_patch<'c>(
    pod: &PodView<'_>,
    spec: &Spec<'_>,
    options: &Options<'_>,
    add: &Additions<'c, '_>,
    sharing: Share,
    token: Option<&str>,
) -> Injection<'c> {
    let native = options.native;
    let mount_token = |c: Cow<'c, str>| match token {
        Some(volume) => with_token_mount(c, volume),
        None => c,
    };
    let borrowed = |n: &&'c Named| Cow::Borrowed(n.text.as_str());
    let mut ops = Vec::new();
    append_all(
        &mut ops,
        "/spec/volumes",
        spec.volumes.is_some(),
        add.volumes.iter().map(borrowed).collect(),
    );
    let mut new_init: Vec<Cow<'c, str>> = add
        .init_containers
        .iter()
        .map(|c| mount_token(borrowed(c)))
        .collect();
    if native {
        new_init.extend(
            add.sidecars
                .iter()
                .map(|c| mount_token(c.text(true, sharing))),
        );
    }
    append_all(
        &mut ops,
        "/spec/initContainers",
        spec.init_containers.is_some(),
        new_init,
    );
    if !native {
        let items = add
            .sidecars
            .iter()
            .map(|c| mount_token(c.text(false, sharing)))
            .collect();
        append_all(&mut ops, "/spec/containers", true, items);
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let items = add.mounts.iter().map(|(_, text)| text.clone()).collect();
        let base = format!("/spec/containers/{i}/volumeMounts");
        append_all(&mut ops, &base, c.volume_mounts.is_some(), items);
    }
    if options.share && spec.share_process_namespace != Some(true) {
        ops.push(AddOp {
            path: "/spec/shareProcessNamespace".into(),
            value: Cow::Borrowed("true"),
        });
    }
    let warnings = pod_security_warning(&add.sidecars, sharing)
        .into_iter()
        .collect();

    ops.push(status_op(pod, options, add));
    Injection {
        ops,
        warnings,
        profiles: options.profiles.iter().map(|s| s.to_string()).collect(),
    }
}
