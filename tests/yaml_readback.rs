//! `inject` output read back by YAML 1.1 readers: kubectl's go-yaml v2 and PyYAML (as Ansible
//! and many tools read YAML) resolve unquoted `yes`, `0755` or `2026-11-20` to non-strings.
//! Golden cases for every such spelling, an exhaustive check of short strings against both
//! readers' rules, and `inject` output read back by PyYAML (kubectl: the end-to-end suite).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::LazyLock;

use common::*;
use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Map, Value};
use sidecar_injector::{read_documents, write_document};

/// go-yaml v2's booleans.
const GO_YAML_BOOLS: [&str; 22] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

/// go-yaml v2's float syntax and Go's `strconv.ParseInt(s, 0, 64)` (after it removed `_`).
static GO_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^[-+]?(?:(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?",
        r"|0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|\.(?:inf|Inf|INF|nan|NaN|NAN))$"
    ))
    .unwrap()
});
/// PyYAML's implicit resolvers for int, float and timestamp (YAML 1.1).
static PYYAML: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:",
        r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
        r"|[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        r"|[0-9]{4}-[0-9]{2}-[0-9]{2}",
        r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?",
        r"(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?",
        r")$"
    ))
    .unwrap()
});

/// The oracle: go-yaml v2 or PyYAML would read `s`, written plain, as something else.
fn yaml11_ambiguous(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL" | "<<" | "=")
        || GO_YAML_BOOLS.contains(&s)
        // go-yaml v2 tries numbers only on scalars that start like one.
        || (s.starts_with(['-', '+', '.', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
            && GO_NUMBER.is_match(&s.replace('_', "")))
        || PYYAML.is_match(s)
}

/// Every spelling issue 11 lists, and more of each form.
const AMBIGUOUS: &[&str] = &[
    "y",
    "Y",
    "yes",
    "Yes",
    "YES",
    "n",
    "N",
    "no",
    "No",
    "NO",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "OFF",
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "0",
    "12",
    "-3",
    "+1",
    "0x1F",
    "0o17",
    "0b1",
    "0755",
    "08",
    "1_000",
    "1e3",
    "1E-3",
    ".5",
    "5.",
    "1.0",
    "+.5",
    ".inf",
    "-.Inf",
    ".nan",
    ".NaN",
    "2026-11-20",
    "2026-1-2 10:00:00",
    "2026-11-20T10:00:00Z",
    "2026-11-20t10:00:00.5+01:00",
    "1:20",
    "190:20:30.15",
    "-1:20",
    "<<",
    "=",
    "0b1_0",
    "0x_1F",
    "1__0",
];

/// Strings both readers keep as they are.
const PLAIN: &[&str] = &[
    "yEs",
    "tRUE",
    "nginx",
    "1.2.3",
    "v1",
    "0o",
    "0x",
    "1:2:3a",
    "2026-11-20x",
    "_1",
    "e3",
    "inf",
    "NaN",
    "nullable",
];

/// Whether `s` came out as a plain scalar.
fn written_plain(s: &str) -> bool {
    let out = write_document(&json!({ "k": s })).unwrap();
    out.trim_end() == format!("k: {s}")
}

#[test]
fn oracle_knows_the_yaml11_forms() {
    for s in AMBIGUOUS {
        assert!(yaml11_ambiguous(s), "{s:?}");
    }
    for s in PLAIN {
        assert!(!yaml11_ambiguous(s), "{s:?}");
    }
}

#[test]
fn golden_every_yaml11_spelling_is_quoted_in_keys_and_values_and_reads_back() {
    for s in AMBIGUOUS {
        let doc = json!({ *s: *s });
        let out = write_document(&doc).unwrap();
        let q = |t: &str| t.starts_with('"') || t.starts_with('\'');
        let (k, v) = out.trim_end().split_once(": ").unwrap_or(("", ""));
        assert!(q(k) && q(v), "{s:?} written as {out:?}");
        assert_eq!(read_documents(&out).unwrap(), vec![doc], "{s:?}");
    }
}

#[test]
fn no_short_numeric_or_date_like_string_is_written_plain_when_a_yaml11_reader_resolves_it() {
    let alphabet: Vec<char> = "0123456789._:-+eExobT Z".chars().collect();
    let mut stack = vec![String::new()];
    let mut checked = 0;
    while let Some(s) = stack.pop() {
        if s.chars().count() < 4 {
            stack.extend(alphabet.iter().map(|c| format!("{s}{c}")));
        }
        if yaml11_ambiguous(&s) {
            checked += 1;
            assert!(!written_plain(&s), "{s:?} is written plain");
        }
    }
    assert!(checked > 1000, "{checked}");
}

/// Strings biased to what YAML 1.1 resolvers turn into something else, and arbitrary text.
fn tricky() -> BoxedStrategy<String> {
    let words = [
        "y", "yes", "no", "on", "off", "true", "null", "~", "<<", "=", ".inf", ".nan", "nan",
    ];
    prop_oneof![
        prop::sample::select(words.to_vec()).prop_flat_map(|w| {
            // Any mix of cases: some are booleans to go-yaml, some only to PyYAML, some neither.
            prop::collection::vec(any::<bool>(), w.len()).prop_map(move |upper| {
                w.chars()
                    .zip(upper)
                    .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                    .collect()
            })
        }),
        "[-+]?[0-9_]{1,6}(\\.[0-9_]{0,3})?([eE][-+]?[0-9]{1,2})?",
        "[-+]?0[xXoObB][0-9a-fA-F_]{0,5}",
        "[-+]?\\.[0-9]{1,3}",
        "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,3})?(Z|[-+][0-9]{2}(:[0-9]{2})?)?)?",
        "[-+]?[0-9]{1,3}(:[0-9]{1,2}){1,3}(\\.[0-9]{0,3})?",
        "\\PC{0,16}",
        "[ -~]{0,12}",
        // Long enough to be folded: runs of spaces and trailing spaces must survive.
        "[a-z &$!]{60,160}",
        "[a-z ]{70,90}  ",
    ]
    .boxed()
}

fn pyyaml_read(yaml: &[u8]) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             docs = list(yaml.safe_load_all(sys.stdin.buffer))\n\
             json.dump(docs, sys.stdout, default=repr)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML: run `make test-deps`");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    #[cfg_attr(not(feature = "tools"), ignore = "needs PyYAML: make test-deps, then --features tools")]
    fn inject_output_reads_back_as_the_same_strings_in_yaml11(
        pairs in prop::collection::vec((tricky(), tricky()), 1..48),
    ) {
        let strings: Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let mut annotations = strings.clone();
        annotations.insert("sidecar-injector.io/inject".into(), json!("true"));
        let docs = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": strings}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"template": {
                    "metadata": {"labels": strings, "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "nginx", "args": strings.values().collect::<Vec<_>>()}]}}}}),
        ];
        // JSON in (a YAML subset: nothing is ambiguous there), YAML out.
        let input: String = docs.iter().map(|d| format!("{d}\n---\n")).collect();
        let out = run(&["inject"], input.as_bytes());
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let back = pyyaml_read(&out.stdout);
        prop_assert_eq!(back.len(), 2);
        prop_assert_eq!(&back[0]["data"], &docs[0]["data"], "ConfigMap data:\n{}", String::from_utf8_lossy(&out.stdout));
        let template = &back[1]["spec"]["template"];
        prop_assert_eq!(&template["metadata"]["labels"], &docs[1]["spec"]["template"]["metadata"]["labels"]);
        for (k, v) in &annotations {
            prop_assert_eq!(&template["metadata"]["annotations"][k], v, "annotation {:?}", k);
        }
        prop_assert_eq!(&template["spec"]["containers"][0]["args"], &docs[1]["spec"]["template"]["spec"]["containers"][0]["args"]);
    }
}
