//! Bounded quotes of hostile text. A denial's message travels into the create's error, the
//! apiserver's audit log and our own log: an offending value is quoted by its first
//! [`QUOTE_CHARS`] characters only, and a message we did not write (a decoder's) is cut at
//! [`MESSAGE_CHARS`].

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
    fn foreign_messages_are_bounded() {
        assert_eq!(bounded("short".into()), "short");
        let long = format!("invalid type: string {:?}", "x".repeat(300_000));
        let b = bounded(long);
        assert_eq!(b.chars().count(), MESSAGE_CHARS + 3);
        assert!(b.ends_with("..."));
    }
}
