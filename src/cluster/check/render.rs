//! Findings as the human table.

use super::Finding;
use crate::text::excerpt::Escaped;

/// Findings as the human table: one line each, the message last and unpadded.
pub fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 6]> = std::iter::once(
        [
            "NAMESPACE",
            "OBJECT",
            "RESULT",
            "REASON",
            "WEBHOOK",
            "DETAIL",
        ]
        .map(String::from),
    )
    .chain(findings.iter().map(|f| {
        let mut detail = Vec::new();
        if !f.profiles.is_empty() {
            detail.push(format!("profiles {}", f.profiles.join(",")));
        }
        if !f.containers.is_empty() {
            detail.push(format!("containers {}", f.containers.join(",")));
        }
        if !f.message.is_empty() {
            detail.push(f.message.clone());
        }
        // Every cell but the verdict comes from the cluster: escaped for the terminal.
        let shown = |text: &str| Escaped(text).to_string();
        [
            shown(&f.namespace),
            shown(&f.object),
            f.result.as_str().into(),
            shown(&f.reason),
            shown(f.webhook.as_deref().unwrap_or("-")),
            shown(&detail.join("; ")),
        ]
    }))
    .collect();
    let mut widths = [0; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (w, cell) in widths.iter().zip(row) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::check::evaluate::Verdict;

    #[test]
    fn the_table_escapes_what_it_prints_from_the_cluster() {
        let finding = Finding {
            namespace: "ns\u{1b}[2J".into(),
            object: "Pod/web\u{202e}txt".into(),
            result: Verdict::Injected,
            reason: "already-injected".into(),
            webhook: None,
            profiles: vec!["a\nforged row".into()],
            containers: Vec::new(),
            message: String::new(),
        };
        let out = table(&[finding]);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            out.contains("ns\\u{1b}[2J") && out.contains("web\\u{202e}txt"),
            "{out}"
        );
    }
}
