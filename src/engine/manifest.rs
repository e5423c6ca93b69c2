//! `inject`: runs the engine over manifests (multi-document YAML or JSON) and returns them
//! with the sidecars injected into every pod or pod template the rules select. Pure: text in,
//! text out.

use serde_json::Value;

use crate::engine::config::Config;
use crate::engine::inject::{decide, Decision, Policy, StatusNames, STATUS_KEY};
use crate::engine::pod::PodView;
use crate::text::yaml::{read_documents, write_document, YamlError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Yaml(#[from] YamlError),
}

/// The result of `inject` over a stream of documents.
#[derive(Debug, Default)]
pub struct Report {
    /// The documents as YAML, injected where selected.
    pub output: String,
    /// `Kind/name: reason` for every pod template left unchanged, each followed by a
    /// `Kind/name: hint: ...` line for every key of ours on the workload's own metadata.
    pub unchanged: Vec<String>,
    /// `Kind/name: message` for every pod template that would be denied.
    pub denials: Vec<String>,
    /// `Kind/name: warning: ...`: the answer's warnings, and one line for each sidecar
    /// written to run as root; hints (as above) for workloads that were injected.
    pub warnings: Vec<String>,
}

/// The containers of an injected pod (template) that the status names and that run as uid 0.
fn root_sidecars(template: &Value) -> Vec<String> {
    let text = template
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS_KEY))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = StatusNames::parse(text);
    let named: Vec<&str> = status.all_containers().collect();
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(|list| template["spec"][list].as_array().into_iter().flatten())
        .filter(|c| c["securityContext"]["runAsUser"] == 0)
        .filter_map(|c| c["name"].as_str())
        .filter(|name| named.contains(name))
        .map(String::from)
        .collect()
}

/// Where a kind keeps its pod template, as a JSON pointer.
pub(crate) fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// A manifest's name for messages: its name, else its generateName.
pub(crate) fn display_name(doc: &Value) -> &str {
    let meta = doc.get("metadata");
    meta.and_then(|m| m.get("name"))
        .or_else(|| meta.and_then(|m| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
}

fn label(doc: &Value, kind: &str) -> String {
    format!("{kind}/{}", display_name(doc))
}

fn process(doc: &mut Value, policy: Policy, config: &Config, report: &mut Report) {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                process(item, policy, config, report);
            }
        }
        return;
    }
    let Some(pointer) = template_pointer(&kind) else {
        return;
    };
    let who = label(doc, &kind);
    // Our keys on the workload's own metadata, where no pod sees them: said beside the result.
    let hints: Vec<String> = crate::engine::workload::misplaced_in_manifest(&kind, doc)
        .iter()
        .map(|m| format!("{who}: hint: {}", m.hint(&kind)))
        .collect();
    let Some(template) = doc.pointer_mut(pointer) else {
        report.denials.push(format!(
            "{who}: bad-object: it has no pod template at {pointer}"
        ));
        return;
    };
    let decision = match PodView::from_value(template) {
        Ok(pod) => decide(&pod, policy, config),
        Err(e) => {
            report.denials.push(format!("{who}: {e}"));
            return;
        }
    };
    match decision {
        Decision::Unchanged { reason, .. } => {
            report.unchanged.push(format!("{who}: {}", reason.as_str()));
            report.unchanged.extend(hints);
        }
        Decision::Deny { message, .. } => report.denials.push(format!("{who}: {message}")),
        Decision::Inject { injection, .. } => {
            let applied = serde_json::from_str::<json_patch::Patch>(&injection.patch_json())
                .map_err(|e| e.to_string())
                .and_then(|patch| json_patch::patch(template, &patch).map_err(|e| e.to_string()));
            if let Err(e) = applied {
                report
                    .denials
                    .push(format!("{who}: the patch does not apply: {e}"));
                return;
            }
            for warning in &injection.warnings {
                report.warnings.push(format!("{who}: warning: {warning}"));
            }
            report.warnings.extend(hints);
            for name in root_sidecars(template) {
                report.warnings.push(format!(
                    "{who}: warning: sidecar {name:?} runs as root (uid 0) to see and signal \
                     the app's processes"
                ));
            }
        }
    }
}

/// Injects into every selected pod template of `text`.
pub fn inject(text: &str, policy: Policy, config: &Config) -> Result<Report, ManifestError> {
    let mut report = Report::default();
    let mut docs = read_documents(text)?;
    for doc in &mut docs {
        process(doc, policy, config, &mut report);
    }
    let mut out = String::new();
    for doc in &docs {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&write_document(doc)?);
    }
    report.output = out;
    Ok(report)
}
