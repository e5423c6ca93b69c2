//! The layers `src/lib.rs` describes, checked on the source: each folder of `src/` may use
//! only the layers below it, and the pure ones (`text`, `engine`, `tls`) no async runtime,
//! HTTP stack, kube client, argument parser or socket.

mod common;

use std::path::Path;

/// Each layer, bottom up, with the `crate::` layers it may use (itself included). A file
/// directly in `src/` is a layer of its own (`metrics.rs`, `cli.rs`).
const LAYERS: [(&str, &[&str]); 7] = [
    ("text", &["text"]),
    ("engine", &["text", "engine"]),
    ("tls", &["text", "tls"]),
    ("metrics", &["text", "engine", "tls", "metrics"]),
    ("cluster", &["text", "engine", "tls", "metrics", "cluster"]),
    (
        "server",
        &["text", "engine", "tls", "metrics", "cluster", "server"],
    ),
    (
        "cli",
        &[
            "text", "engine", "tls", "metrics", "cluster", "server", "cli",
        ],
    ),
];

/// The layers that do no I/O of their own, and what that rules out.
const PURE: [&str; 3] = ["text", "engine", "tls"];
const SHELLS: [&str; 8] = [
    "tokio::",
    "hyper::",
    "axum::",
    "clap::",
    "reqwest::",
    "kube::Client",
    "kube::Api",
    "std::net",
];

/// A source file without its unit tests (which may read fixtures).
fn source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The files of a layer: `src/NAME.rs` or every `.rs` under `src/NAME/`.
fn files(layer: &str) -> Vec<std::path::PathBuf> {
    let src = common::root().join("src");
    let file = src.join(format!("{layer}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut found = Vec::new();
    let mut dirs = vec![src.join(layer)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    assert!(!found.is_empty(), "no layer {layer} in src/");
    found
}

/// The `crate::` layers a source file names (`crate::a::b`, `crate::{a, b::c}`).
fn crate_modules(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    found.push(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    for (layer, allowed) in LAYERS {
        for file in files(layer) {
            for used in crate_modules(&source(&file)) {
                assert!(
                    allowed.contains(&used.as_str()),
                    "{} uses crate::{used}, above or beside its layer {layer}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_pure_layers_do_no_io() {
    for layer in PURE {
        for file in files(layer) {
            let text = source(&file);
            for shell in SHELLS {
                assert!(!text.contains(shell), "{} uses {shell}", file.display());
            }
        }
    }
}

#[test]
fn every_module_belongs_to_a_layer() {
    let mut names: Vec<String> = std::fs::read_dir(common::root().join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "lib" && n != "main")
        .collect();
    names.sort();
    let mut layers: Vec<String> = LAYERS.iter().map(|(l, _)| l.to_string()).collect();
    layers.sort();
    assert_eq!(names, layers);
}

#[test]
fn the_checker_reads_grouped_and_nested_paths() {
    assert_eq!(
        crate_modules("use crate::{a, b::c};\nlet x = crate::d::e(crate::f);"),
        ["a", "b", "d", "f"]
    );
}
