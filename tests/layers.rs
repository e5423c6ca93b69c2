//! The layers `src/lib.rs` describes, checked on the source: the pure core uses only itself
//! (no async runtime, HTTP stack, kube client or argument parser), and the cluster shells
//! (`check`, `autotls` and its plan) never reach into the server.

mod common;

/// The pure core: text or values in, answers out, no I/O.
const CORE: [&str; 10] = [
    "admission",
    "config",
    "excerpt",
    "inject",
    "manifest",
    "pod",
    "podsecurity",
    "selection",
    "workload",
    "yaml",
];

/// What the server alone owns: the listeners, the request budget, the log, the file reloads
/// and the CLI above them.
const SERVER: [&str; 5] = ["server", "limits", "logging", "reload", "cli"];

/// A module's source without its unit tests (which may read fixtures).
fn source(module: &str) -> String {
    let text =
        std::fs::read_to_string(common::root().join("src").join(format!("{module}.rs"))).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The `crate::` modules a source file names (`crate::a::b`, `crate::{a, b::c}`).
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
fn the_pure_core_uses_only_itself() {
    for module in CORE {
        let text = source(module);
        for used in crate_modules(&text) {
            assert!(
                CORE.contains(&used.as_str()),
                "{module} uses crate::{used}, outside the pure core"
            );
        }
        for shell in [
            "tokio::",
            "hyper::",
            "axum::",
            "clap::",
            "reqwest::",
            "kube::Client",
            "kube::Api",
            "std::net",
        ] {
            assert!(!text.contains(shell), "{module} uses {shell}");
        }
    }
}

#[test]
fn the_cluster_shells_do_not_reach_into_the_server() {
    for module in [
        "check",
        "rollout",
        "autotls",
        "rotation",
        "kubeapi",
        "certificate",
    ] {
        for used in crate_modules(&source(module)) {
            assert!(
                !SERVER.contains(&used.as_str()),
                "{module} uses crate::{used}, the server's"
            );
        }
    }
}

#[test]
fn the_checker_reads_grouped_and_nested_paths() {
    assert_eq!(
        crate_modules("use crate::{a, b::c};\nlet x = crate::d::e(crate::f);"),
        ["a", "b", "d", "f"]
    );
}
