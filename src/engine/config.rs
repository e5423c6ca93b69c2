//! The injection config (`--config`, YAML): which profiles exist and what each injects.
//!
//! Loading validates everything a request could otherwise trip over, and turns the typed
//! Kubernetes objects into JSON once, so that building a patch only clones prepared values.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::podsecurity::{container_level, Level};
use crate::text::yaml::YamlError;

/// The configuration that applies when `--config` is not given.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../deploy/base/config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        path: String,
        line: u64,
        column: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    default_profiles: Vec<String>,
    #[serde(default)]
    native_sidecars: bool,
    #[serde(default = "on")]
    mount_service_account_token: bool,
    #[serde(default = "allowed")]
    allow_process_sharing: bool,
    profiles: BTreeMap<String, RawProfile>,
}

/// `allowProcessSharing` when the file does not say.
fn allowed() -> bool {
    true
}

/// `mountServiceAccountToken` when the file does not say (the SPEC's default).
fn on() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    volumes: Vec<Volume>,
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    app_volume_mounts: Vec<VolumeMount>,
}

/// A named object of a profile, with the JSON text that goes into the patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub text: String,
}

/// How a sidecar shares the app's process namespace (SPEC, share-process-namespace row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    No,
    /// The app's uid is known: run as that uid, no added capability.
    SameUid(i64),
    /// It is not: run as root with SYS_PTRACE (read `/proc`) and KILL (signal any uid).
    Root,
}

/// A sidecar container, serialized once here in the forms that do not depend on the pod
/// (see [`Sidecar::text`]), so that a review mostly copies bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub name: String,
    /// plain, native, root-share, native root-share.
    forms: [String; 4],
    /// The same-uid share forms (plain, native), `runAsUser` filled in per pod.
    same_uid: [Value; 2],
    /// The Pod Security level the plain and root-share forms need.
    pub level: Level,
    pub root_level: Level,
}

impl Sidecar {
    /// The container's JSON: `native` adds `restartPolicy: Always` (a native sidecar in
    /// initContainers); `share` adds what the share-process-namespace row asks for.
    pub fn text(&self, native: bool, share: Share) -> Cow<'_, str> {
        match share {
            Share::No => Cow::Borrowed(&self.forms[usize::from(native)]),
            Share::Root => Cow::Borrowed(&self.forms[2 | usize::from(native)]),
            Share::SameUid(uid) => Cow::Owned(self.same_uid_json(native, uid).to_string()),
        }
    }

    /// The same-uid form as JSON, for its Pod Security level.
    pub fn same_uid_json(&self, native: bool, uid: i64) -> Value {
        let mut form = self.same_uid[usize::from(native)].clone();
        if let Some(sc) = object_entry(&mut form, "securityContext").and_then(Value::as_object_mut)
        {
            sc.insert("runAsUser".into(), Value::from(uid));
            if uid == 0 {
                // Explicitly false, not left out: under a pod-level runAsNonRoot: true (which
                // a root app overrides on its own container) it would refuse uid 0.
                sc.insert("runAsNonRoot".into(), Value::Bool(false));
            }
        }
        form
    }
}

/// An app volume mount: the volume it mounts and where (before `app-mount-path` moves it).
#[derive(Debug, Clone, PartialEq)]
pub struct AppMount {
    pub name: String,
    pub mount_path: String,
    pub json: Value,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub volumes: Vec<Named>,
    pub containers: Vec<Sidecar>,
    pub init_containers: Vec<Named>,
    pub app_volume_mounts: Vec<AppMount>,
    /// A short digest of the profile as configured (SPEC, status row): the same for every
    /// pod it goes into, so a pod whose status records another one runs an older version.
    pub digest: String,
    /// Its containers and init containers as configured, for saying what changed.
    pub configured: Vec<Value>,
}

/// Hex characters of SHA-256 kept in a digest: 48 bits tell versions of one profile apart.
const DIGEST_LEN: usize = 12;

/// The digest of a profile's definition (its objects in their canonical JSON, in order).
fn digest(definition: &Value) -> String {
    let bytes = ring::digest::digest(&ring::digest::SHA256, definition.to_string().as_bytes());
    bytes
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..DIGEST_LEN]
        .to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub default_profiles: Vec<String>,
    pub native_sidecars: bool,
    /// Give the injected containers the API token mount that kube-apiserver's ServiceAccount
    /// plugin would add after our patch (`inject::token_volume`): the plugin then changes
    /// nothing, and the apiserver does not call the webhook a second time for the pod.
    pub mount_service_account_token: bool,
    /// false: `share-process-namespace: "true"` is denied (`not-allowed`, 403).
    pub allow_process_sharing: bool,
    pub profiles: BTreeMap<String, Profile>,
    /// What loads but deserves the operator's attention (e.g. a sidecar that "restricted"
    /// namespaces refuse), logged wherever the config is loaded.
    pub warnings: Vec<String>,
}

impl Config {
    /// The embedded default config.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_yaml(DEFAULT_CONFIG_YAML, "<embedded default config>")
    }

    /// Reads `path`, or the embedded default when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::embedded(),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_bytes(&bytes, &path.display().to_string())
            }
        }
    }

    /// Parses and validates a config file's contents; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            path: origin.to_string(),
            reason: format!("not UTF-8: {e}"),
        })?;
        Config::from_yaml(text, origin)
    }

    /// Parses and validates a config; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = crate::text::yaml::from_str(text).map_err(|e| match e {
            YamlError::Parse {
                line,
                column,
                reason,
            } => ConfigError::Parse {
                path: origin.to_string(),
                line,
                column,
                reason,
            },
            other => ConfigError::Invalid {
                path: origin.to_string(),
                reason: other.to_string(),
            },
        })?;
        compile(raw).map_err(|reason| ConfigError::Invalid {
            path: origin.to_string(),
            reason,
        })
    }

    /// Known profile names, for messages.
    pub fn profile_names(&self) -> String {
        self.profiles
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The object as JSON, `name` (and `image`) first so injected manifests read naturally.
fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Value, String> {
    let value = serde_json::to_value(value).map_err(|e| format!("{what}: cannot encode: {e}"))?;
    let Value::Object(mut map) = value else {
        return Ok(value);
    };
    let mut ordered = serde_json::Map::new();
    for key in ["name", "image"] {
        if let Some(v) = map.shift_remove(key) {
            ordered.insert(key.to_string(), v);
        }
    }
    ordered.extend(map);
    Ok(Value::Object(ordered))
}

fn object_entry<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = value.as_object_mut()?;
    Some(
        map.entry(key)
            .or_insert_with(|| Value::Object(Default::default())),
    )
}

/// What every process-sharing sidecar gets: an interactive shell to attach to (`stdin`, `tty`).
fn share_common(container: &mut Value) {
    if let Some(map) = container.as_object_mut() {
        map.insert("stdin".into(), Value::Bool(true));
        map.insert("tty".into(), Value::Bool(true));
    }
}

/// Same-uid sharing: the sidecar takes the pod's group (its own `runAsGroup` goes) so that
/// `/proc` entries the app's uid and gid guard read as its own; the uid is set per pod.
fn share_same_uid(container: &mut Value) {
    share_common(container);
    if let Some(sc) = object_entry(container, "securityContext").and_then(Value::as_object_mut) {
        sc.remove("runAsGroup");
    }
}

/// Root sharing: uid 0 with SYS_PTRACE (read any process's `/proc`) and KILL (signal any
/// uid), added to what the profile adds; `runAsNonRoot` goes, as it would refuse uid 0.
fn share_root(container: &mut Value) {
    share_common(container);
    let Some(sc) = object_entry(container, "securityContext").and_then(Value::as_object_mut) else {
        return;
    };
    sc.insert("runAsUser".into(), Value::from(0));
    sc.remove("runAsNonRoot");
    let caps = sc
        .entry("capabilities")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(add) = caps
        .as_object_mut()
        .map(|c| c.entry("add").or_insert_with(|| Value::Array(Vec::new())))
    else {
        return;
    };
    if let Some(list) = add.as_array_mut() {
        for cap in SHARE_CAPABILITIES {
            if !list.iter().any(|c| c == cap) {
                list.push(Value::String(cap.into()));
            }
        }
    }
}

/// The capabilities root sharing adds: nothing broader than seeing and signalling.
const SHARE_CAPABILITIES: [&str; 2] = ["SYS_PTRACE", "KILL"];

fn native_form(container: &mut Value) {
    if let Some(map) = container.as_object_mut() {
        map.insert("restartPolicy".into(), Value::String("Always".into()));
    }
}

fn sidecar(name: String, json: &Value) -> Sidecar {
    let form = |native: bool, share: Option<fn(&mut Value)>| {
        let mut form = json.clone();
        if let Some(share) = share {
            share(&mut form);
        }
        if native {
            native_form(&mut form);
        }
        form
    };
    let root = form(false, Some(share_root));
    Sidecar {
        name,
        forms: [
            form(false, None).to_string(),
            form(true, None).to_string(),
            root.to_string(),
            form(true, Some(share_root)).to_string(),
        ],
        same_uid: [
            form(false, Some(share_same_uid)),
            form(true, Some(share_same_uid)),
        ],
        level: container_level(json).0,
        root_level: container_level(&root).0,
    }
}

fn compile(raw: RawConfig) -> Result<Config, String> {
    if raw.profiles.is_empty() {
        return Err("profiles: at least one profile is required".into());
    }
    if raw.default_profiles.is_empty() {
        return Err("defaultProfiles: at least one profile is required".into());
    }
    for name in &raw.default_profiles {
        if !raw.profiles.contains_key(name) {
            return Err(format!("defaultProfiles: unknown profile {name:?}"));
        }
    }
    let mut definitions = Definitions::default();
    let mut profiles = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, raw) in raw.profiles {
        if name.is_empty() || name.contains(',') || name.trim() != name {
            return Err(format!(
                "profiles: invalid profile name {name:?} (no commas, no surrounding spaces)"
            ));
        }
        let profile = ProfileCompiler {
            name: &name,
            definitions: &mut definitions,
            names: BTreeSet::new(),
            warnings: &mut warnings,
        }
        .compile(&raw)?;
        profiles.insert(name, profile);
    }
    Ok(Config {
        default_profiles: raw.default_profiles,
        native_sidecars: raw.native_sidecars,
        mount_service_account_token: raw.mount_service_account_token,
        allow_process_sharing: raw.allow_process_sharing,
        profiles,
        warnings,
    })
}

/// Every definition seen so far across all profiles, by kind and name: one definition per
/// name, so that profiles combine unambiguously (identical definitions are shared, different
/// ones would be a silent surprise).
#[derive(Default)]
struct Definitions {
    seen: BTreeMap<(&'static str, String), Definition>,
}

/// Where a name was first defined, and as what.
struct Definition {
    profile: String,
    json: Value,
}

impl Definitions {
    fn add(
        &mut self,
        kind: &'static str,
        name: &str,
        profile: &str,
        json: &Value,
    ) -> Result<(), String> {
        match self.seen.get(&(kind, name.to_string())) {
            Some(first) if first.json != *json => Err(format!(
                "{kind} {name:?} is defined differently in profiles {:?} and {profile:?}",
                first.profile
            )),
            Some(_) => Ok(()),
            None => {
                let first = Definition {
                    profile: profile.to_string(),
                    json: json.clone(),
                };
                self.seen.insert((kind, name.to_string()), first);
                Ok(())
            }
        }
    }
}

/// One profile's checks and compilation.
struct ProfileCompiler<'a> {
    name: &'a str,
    definitions: &'a mut Definitions,
    /// The profile's own volume and container names: each once.
    names: BTreeSet<(&'static str, String)>,
    warnings: &'a mut Vec<String>,
}

impl ProfileCompiler<'_> {
    fn at(&self, what: &str) -> String {
        format!("profiles.{}.{what}", self.name)
    }

    fn compile(mut self, raw: &RawProfile) -> Result<Profile, String> {
        let volumes = self.volumes(&raw.volumes)?;
        let mut containers = Vec::new();
        let mut init_containers = Vec::new();
        let mut configured = Vec::new();
        // Each container under the list it is in: moving one to initContainers is a change.
        let mut listed = Vec::new();
        for (field, list) in [
            ("containers", &raw.containers),
            ("initContainers", &raw.init_containers),
        ] {
            for c in list {
                let json = self.container(field, c)?;
                configured.push(json.clone());
                listed.push(serde_json::json!({ field: &json }));
                let name = c.name.clone();
                if field == "containers" {
                    containers.push(sidecar(name, &json));
                } else {
                    init_containers.push(Named {
                        name,
                        text: json.to_string(),
                    });
                }
            }
        }
        let app_volume_mounts = self.app_mounts(&raw.app_volume_mounts)?;
        let definition = serde_json::json!({
            "volumes": volumes.iter().map(|v| &v.text).collect::<Vec<_>>(),
            "containers": listed,
            "appVolumeMounts": app_volume_mounts.iter().map(|m| &m.json).collect::<Vec<_>>(),
        });
        Ok(Profile {
            volumes,
            containers,
            init_containers,
            app_volume_mounts,
            digest: digest(&definition),
            configured,
        })
    }

    fn volumes(&mut self, raw: &[Volume]) -> Result<Vec<Named>, String> {
        let at = self.at("volumes");
        let mut volumes = Vec::new();
        for v in raw {
            if v.name.is_empty() {
                return Err(format!("{at}: a volume has no name"));
            }
            if !self.names.insert(("volume", v.name.clone())) {
                return Err(format!("{at}: volume {:?} is repeated", v.name));
            }
            let json = to_json(&at, v)?;
            self.definitions.add("volume", &v.name, self.name, &json)?;
            volumes.push(Named {
                name: v.name.clone(),
                text: json.to_string(),
            });
        }
        Ok(volumes)
    }

    /// A container of `field` (`containers` or `initContainers`), checked, as JSON; a
    /// warning when Pod Security "restricted" would refuse it.
    fn container(&mut self, field: &str, c: &Container) -> Result<Value, String> {
        let at = self.at(field);
        if c.name.is_empty() {
            return Err(format!("{at}: a container has no name"));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            return Err(format!("{at}: container {:?} has no image", c.name));
        }
        if !self.names.insert(("container", c.name.clone())) {
            return Err(format!(
                "{at}: container {:?} is repeated in the profile",
                c.name
            ));
        }
        let json = to_json(&at, c)?;
        self.definitions
            .add("container", &c.name, self.name, &json)?;
        let (level, why) = container_level(&json);
        if level > Level::Restricted {
            self.warnings.push(format!(
                "{at}: container {:?} is not admissible under Pod Security \"restricted\" \
                 on its own (needs \"{}\": {}): pods it is injected into are refused in \
                 restricted namespaces",
                c.name,
                level.as_str(),
                why.join(", ")
            ));
        }
        Ok(json)
    }

    fn app_mounts(&mut self, raw: &[VolumeMount]) -> Result<Vec<AppMount>, String> {
        let at = self.at("appVolumeMounts");
        let mut mounts = Vec::new();
        for m in raw {
            if m.name.is_empty() || !m.mount_path.starts_with('/') {
                return Err(format!(
                    "{at}: each mount needs a name and an absolute mountPath"
                ));
            }
            let json = to_json(&at, m)?;
            self.definitions
                .add("app mount path", &m.mount_path, self.name, &json)?;
            mounts.push(AppMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                text: json.to_string(),
                json,
            });
        }
        Ok(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_loads_with_both_profiles() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.default_profiles, vec!["default"]);
        assert!(!c.native_sidecars);
        assert!(c.mount_service_account_token, "the SPEC's default");
        assert_eq!(c.profile_names(), "default, logging");
        let d = &c.profiles["default"];
        assert_eq!(d.containers[0].name, "sidecar");
        let plain: Value = serde_json::from_str(&d.containers[0].text(false, Share::No)).unwrap();
        assert_eq!(plain["image"], "busybox:1.36");
        assert_eq!(d.volumes[0].text, r#"{"name":"shared-data","emptyDir":{}}"#);
        assert_eq!(d.app_volume_mounts[0].mount_path, "/pod-data");
        let sc = &plain["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(c.profiles["logging"].containers[0].name, "log-tailer");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        for p in c.profiles.values() {
            for s in &p.containers {
                let plain: Value = serde_json::from_str(&s.text(false, Share::No)).unwrap();
                assert_eq!(
                    container_level(&plain),
                    (Level::Restricted, vec![]),
                    "{}",
                    s.name
                );
                assert_eq!(plain["securityContext"]["runAsUser"], 65534);
            }
        }
    }

    #[test]
    fn sidecar_forms_add_only_what_each_form_asks_for() {
        let c = Config::embedded().unwrap();
        let s = &c.profiles["default"].containers[0];
        let form = |n, share| serde_json::from_str::<Value>(&s.text(n, share)).unwrap();
        assert!(form(false, Share::No).get("restartPolicy").is_none());
        assert_eq!(form(true, Share::No)["restartPolicy"], "Always");
        let root = form(false, Share::Root);
        let sc = &root["securityContext"];
        assert_eq!(
            sc["capabilities"]["add"],
            serde_json::json!(["SYS_PTRACE", "KILL"])
        );
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["runAsUser"], 0);
        assert!(sc.get("runAsNonRoot").is_none());
        assert_eq!(
            (root["stdin"].clone(), root["tty"].clone()),
            (Value::Bool(true), Value::Bool(true))
        );
        assert_eq!(s.root_level, Level::Privileged);
        let same = form(true, Share::SameUid(1001));
        let sc = &same["securityContext"];
        assert_eq!(same["restartPolicy"], "Always");
        assert_eq!(sc["runAsUser"], 1001);
        assert_eq!(sc["runAsNonRoot"], true);
        assert!(sc["capabilities"].get("add").is_none());
        assert!(sc.get("runAsGroup").is_none(), "takes the pod's group");
        assert_eq!(same["tty"], true);
        let as_root = form(false, Share::SameUid(0));
        assert_eq!(as_root["securityContext"]["runAsNonRoot"], false);
        assert_eq!(as_root["securityContext"]["runAsUser"], 0);
    }

    #[test]
    fn a_profile_above_restricted_loads_with_a_warning() {
        let yaml = "defaultProfiles: [a]\nprofiles:\n  a:\n    containers:\n      - name: x\n        image: busybox\n        securityContext: {privileged: true}\n";
        let c = Config::from_yaml(yaml, "c.yaml").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("profiles.a.containers"),
            "{}",
            c.warnings[0]
        );
        assert!(
            c.warnings[0].contains("\"privileged\""),
            "{}",
            c.warnings[0]
        );
        assert!(
            c.warnings[0].contains("privileged: true"),
            "{}",
            c.warnings[0]
        );
    }

    #[test]
    fn parse_error_names_path_and_line() {
        let err = Config::from_yaml(
            "defaultProfiles: [default]\nprofiles:\n  default:\n    bogus: 1\n",
            "x.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("x.yaml:4:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn rejects_unknown_default_profile() {
        let err = Config::from_yaml("defaultProfiles: [nope]\nprofiles:\n  a: {}\n", "c.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "c.yaml: defaultProfiles: unknown profile \"nope\"");
    }

    #[test]
    fn rejects_conflicting_definitions_across_profiles() {
        let yaml = "defaultProfiles: [a]\nprofiles:\n  a:\n    volumes: [{name: v, emptyDir: {}}]\n  b:\n    volumes: [{name: v, hostPath: {path: /x}}]\n";
        let err = Config::from_yaml(yaml, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("volume \"v\" is defined differently"), "{err}");
    }

    #[test]
    fn rejects_container_without_image_and_bad_profile_name() {
        let yaml = "defaultProfiles: [a]\nprofiles:\n  a:\n    containers: [{name: x}]\n";
        let err = Config::from_yaml(yaml, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("has no image"), "{err}");
        let yaml = "defaultProfiles: [a]\nprofiles:\n  a: {}\n  'b,c': {}\n";
        let err = Config::from_yaml(yaml, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("invalid profile name"), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = Config::load(Some(Path::new("/nonexistent/cfg.yaml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/nonexistent/cfg.yaml: cannot read"),
            "{err}"
        );
    }
}
