//! Stage 1: the pod's own choices beside the opt-in key (SPEC "Opting in and out"),
//! read from its annotations and checked (`bad-annotation`).

use super::*;

pub(super) fn parse_bool(source: &str, key: &str, value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!(
            "{source} {key}: invalid value {}: it takes \"true\" or \"false\"",
            Quoted(value)
        ))
    }
}

/// The most names a profile list may hold, and the longest it may be: a pod asks for a few
/// profiles, and the caps keep the list's check (and its repeats) bounded work.
pub const MAX_PROFILE_NAMES: usize = 32;
pub const MAX_PROFILES_BYTES: usize = 1024;

/// Profile names in order, each once; `Err` for an empty list, an empty name, or a list over
/// the caps (checked before any name is compared, so a huge list costs one scan).
pub(super) fn parse_profiles(value: &str) -> Result<Vec<&str>, String> {
    let count = value.bytes().filter(|&b| b == b',').count() + 1;
    if value.len() > MAX_PROFILES_BYTES || count > MAX_PROFILE_NAMES {
        return Err(format!(
            "annotation {PROFILES_KEY}: {count} names in {} bytes: it takes at most \
             {MAX_PROFILE_NAMES} profile names in at most {MAX_PROFILES_BYTES} bytes",
            value.len()
        ));
    }
    let mut names: Vec<&str> = Vec::with_capacity(count);
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!(
                "annotation {PROFILES_KEY}: invalid value {}: it takes a comma-separated \
                 list of profile names, none of them empty",
                Quoted(value)
            ));
        }
        // At most MAX_PROFILE_NAMES, so the linear look-up stays small.
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

pub(super) fn check_mount_path(value: &str) -> Result<&str, String> {
    if value.starts_with('/') && !value.split('/').any(|seg| seg == "..") {
        Ok(value)
    } else {
        Err(format!(
            "annotation {APP_MOUNT_PATH_KEY}: invalid value {}: it takes an absolute path \
             with no \"..\" segment",
            Quoted(value)
        ))
    }
}

pub(super) fn bad_annotation(message: String) -> Denial {
    Denial::new(Reason::BadAnnotation, 400, message)
}

/// The pod's own choices beside the opt-in key (SPEC "Opting in and out").
pub(super) struct Options<'a> {
    pub(super) profiles: Vec<&'a str>,
    pub(super) share: bool,
    pub(super) native: bool,
    pub(super) mount_path: Option<&'a str>,
}

/// Stage 1: reads and checks the other keys (`bad-annotation`).
pub(super) fn read_options<'a>(
    annotations: &'a StrMap<'_>,
    config: &'a Config,
) -> Result<Options<'a>, Denial> {
    let profiles: Vec<&str> = match annotations.get(PROFILES_KEY) {
        Some(v) => parse_profiles(v).map_err(bad_annotation)?,
        None => config.default_profiles.iter().map(String::as_str).collect(),
    };
    let share = match annotations.get(SHARE_PROCESS_KEY) {
        Some(v) => parse_bool("annotation", SHARE_PROCESS_KEY, v).map_err(bad_annotation)?,
        None => false,
    };
    let native = match annotations.get(NATIVE_SIDECAR_KEY) {
        Some(v) => parse_bool("annotation", NATIVE_SIDECAR_KEY, v).map_err(bad_annotation)?,
        None => config.native_sidecars,
    };
    let mount_path = match annotations.get(APP_MOUNT_PATH_KEY) {
        Some(v) => Some(check_mount_path(v).map_err(bad_annotation)?),
        None => None,
    };
    Ok(Options {
        profiles,
        share,
        native,
        mount_path,
    })
}
