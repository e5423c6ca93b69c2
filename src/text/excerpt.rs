//! Hostile text made safe to show. A denial's message travels into the create's error, the
//! apiserver's audit log and our own log: an offending value is quoted by its first
//! [`QUOTE_CHARS`] characters only, and a message we did not write (a decoder's) is cut at
//! [`MESSAGE_CHARS`]. Text from a request or the cluster that reaches a log line or a
//! terminal has its control and bidirectional-override characters escaped ([`Escaped`]).

use std::fmt;

/// The most characters of an offending value a message quotes.
pub const QUOTE_CHARS: usize = 64;

/// The most characters of a foreign error message (a decoder's, which may quote its input).
pub const MESSAGE_CHARS: usize = 256;

/// `{:?}`-style quote of at most [`QUOTE_CHARS`] characters of a value, `...` after the quote
/// when it was cut: `"aaaa…"...`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, cut) = prefix(self.0, QUOTE_CHARS);
        write!(f, "{head:?}")?;
        if cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Text with its control characters (`\n`, `\u{1b}`) and bidirectional controls (which
/// reorder what a terminal shows, e.g. U+202E) escaped: the text log format and `check`'s
/// table write fields as they are, and a newline in a uid would forge a line.
pub struct Escaped<'a>(pub &'a str);

/// Unicode's bidirectional formatting characters (UAX #9): embeddings, overrides, isolates
/// and marks.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Runs between escaped characters go out whole: one call each, not one per char.
        let mut rest = self.0;
        while let Some((at, c)) = rest
            .char_indices()
            .find(|&(_, c)| c.is_control() || is_bidi_control(c))
        {
            f.write_str(&rest[..at])?;
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// A message we did not write, cut at [`MESSAGE_CHARS`] characters (`...` marks the cut).
pub fn bounded(message: String) -> String {
    match prefix(&message, MESSAGE_CHARS) {
        (_, false) => message,
        (head, true) => format!("{head}..."),
    }
}

/// The first `n` characters of `s`, and whether anything was left out.
fn prefix(s: &str, n: usize) -> (&str, bool) {
    match s.char_indices().nth(n) {
        Some((i, _)) => (&s[..i], true),
        None => (s, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(Quoted("a\"b").to_string(), r#""a\"b""#);
        assert_eq!(Quoted("").to_string(), r#""""#);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let v = "é".repeat(200_000);
        let q = Quoted(&v).to_string();
        assert_eq!(q, format!("{:?}...", "é".repeat(QUOTE_CHARS)));
        assert_eq!(
            Quoted(&"x".repeat(QUOTE_CHARS)).to_string().len(),
            QUOTE_CHARS + 2
        );
    }

    #[test]
    fn log_fields_escape_control_characters() {
        assert_eq!(
            Escaped("uid\nFORGED line\u{1b}[31m\t").to_string(),
            "uid\\nFORGED line\\u{1b}[31m\\t"
        );
        assert_eq!(Escaped("pod-é").to_string(), "pod-é");
        // Two-byte controls (NEL), controls in a row, at either end.
        assert_eq!(
            Escaped("\u{85}a\n\nb\u{7f}").to_string(),
            "\\u{85}a\\n\\nb\\u{7f}"
        );
        assert_eq!(Escaped("").to_string(), "");
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(
            Escaped("a\nb\u{1b}[31m\u{202e}gpj.exe\u{2066}").to_string(),
            "a\\nb\\u{1b}[31m\\u{202e}gpj.exe\\u{2066}"
        );
        assert_eq!(Escaped("pod-é ok").to_string(), "pod-é ok");
    }

    #[test]
    fn foreign_messages_are_bounded() {
        assert_eq!(bounded("short".into()), "short");
        let long = format!("invalid type: string {:?}", "x".repeat(300_000));
        let b = bounded(long);
        assert_eq!(b.chars().count(), MESSAGE_CHARS + 3);
        assert!(b.ends_with("..."));
    }
}
