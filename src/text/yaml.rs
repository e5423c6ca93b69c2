//! YAML in and out the way kubectl reads it.
//!
//! kubectl (sigs.k8s.io/yaml over go-yaml v2) resolves plain scalars by YAML 1.1 rules, and so
//! do PyYAML, Ansible and many other tools: unquoted `yes`, `0755`, `1_000` or `2026-11-20`
//! are not strings to them. serde-saphyr (maintained; what kube-rs uses) quotes every string
//! that a YAML 1.1 reader would resolve to anything else (tests/yaml_readback.rs holds it to
//! that, spelling by spelling), but it reads either YAML 1.2 booleans or case-insensitive
//! YAML 1.1 ones; reading here resolves them exactly as go-yaml v2 does.

use serde_json::Value;

/// Largest YAML input read at all (a manifest bundle of CRDs is a few MiB).
pub const MAX_INPUT_BYTES: usize = 32 << 20;
/// Events replayed from aliases, over a whole input: a manifest that names a pod template
/// 100 times is far below it; an alias bomb (one anchor aliased thousands of times, each alias
/// expanding to thousands of events) is refused before it expands.
pub const MAX_ALIAS_EVENTS: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("input is {size} bytes; the limit is {MAX_INPUT_BYTES} bytes")]
    TooLarge { size: usize },
    #[error("{line}:{column}: {reason}")]
    Parse {
        line: u64,
        column: u64,
        reason: String,
    },
    #[error("cannot write YAML: {0}")]
    Write(String),
}

impl YamlError {
    fn parse(e: serde_saphyr::Error) -> Self {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        YamlError::Parse {
            line,
            column,
            reason: e.to_string(),
        }
    }
}

/// go-yaml v2's booleans: exactly these spellings (`yEs` is a string).
const GO_YAML_BOOLS: [&str; 22] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

/// Options for reading: bounded, Go-style legacy octal (`0755` is 493 to kubectl).
fn options(strict_booleans: bool) -> serde_saphyr::Options {
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    serde_saphyr::options! {
        strict_booleans: strict_booleans,
        legacy_octal_numbers: true,
        alias_limits: alias_limits,
    }
}

/// Checks the size before parsing anything.
pub fn check_size(text: &str) -> Result<(), YamlError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(YamlError::TooLarge { size: text.len() });
    }
    Ok(())
}

/// Deserializes one document into a type, bounded like [`read_documents`] (for the config).
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_size(text)?;
    serde_saphyr::from_str_with_options(text, options(false)).map_err(YamlError::parse)
}

/// Every document of a (multi-document) YAML or JSON text, as kubectl would read it. Empty
/// documents are left out.
pub fn read_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    check_size(text)?;
    // Where the case-insensitive YAML 1.1 reading says bool and the strict one keeps the
    // spelling, the spelling decides.
    let lenient: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options(false)).map_err(YamlError::parse)?;
    let strict: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options(true)).map_err(YamlError::parse)?;
    Ok(lenient
        .into_iter()
        .zip(strict)
        .map(|(l, s)| go_yaml_bools(l, s))
        .filter(|d| !d.is_null())
        .collect())
}

fn go_yaml_bools(lenient: Value, strict: Value) -> Value {
    match (lenient, strict) {
        (Value::Bool(b), Value::String(s)) => {
            if GO_YAML_BOOLS.contains(&s.as_str()) {
                Value::Bool(b)
            } else {
                Value::String(s)
            }
        }
        (Value::Array(l), Value::Array(s)) => Value::Array(
            l.into_iter()
                .zip(s)
                .map(|(l, s)| go_yaml_bools(l, s))
                .collect(),
        ),
        (Value::Object(l), Value::Object(s)) => Value::Object(
            l.into_iter()
                .zip(s)
                .map(|((k, l), (_, s))| (k, go_yaml_bools(l, s)))
                .collect(),
        ),
        (l, _) => l,
    }
}

/// One document as YAML (no `---`), multi-line strings as block scalars.
pub fn write_document(value: &Value) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_line_strings_stay_block_scalars_and_read_back() {
        let doc = json!({"multi": "first\nsecond: line\n", "yes": "no"});
        let out = write_document(&doc).unwrap();
        assert!(out.contains("multi: |"), "{out}");
        assert_eq!(read_documents(&out).unwrap(), vec![doc]);
    }

    #[test]
    fn reads_plain_scalars_as_go_yaml_v2_does() {
        let docs = read_documents(
            "a: yes\nb: yEs\nc: 0755\nd: 1_000\ne: ~\nf: On\ng: 0x1F\nh: 2026-11-20\ni: TRUE\nj: oN\n---\n---\nk: 1\n",
        )
        .unwrap();
        assert_eq!(
            docs,
            vec![
                json!({"a": true, "b": "yEs", "c": 493, "d": 1000, "e": null, "f": true,
                    "g": 31, "h": "2026-11-20", "i": true, "j": "oN"}),
                json!({"k": 1})
            ]
        );
    }

    #[test]
    fn alias_bombs_and_huge_inputs_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            let items = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("l{i}: &l{i} [{items}]\n"));
        }
        let err = read_documents(&bomb).unwrap_err().to_string();
        assert!(err.contains("alias") || err.contains("limit"), "{err}");
        let huge = "x".repeat(MAX_INPUT_BYTES + 1);
        assert!(matches!(
            read_documents(&huge),
            Err(YamlError::TooLarge { .. })
        ));
    }
}
