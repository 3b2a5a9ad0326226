//! Showing untrusted text safely: dataset titles, tokens and file contents end up in error
//! messages and on the terminal, where a control character (an escape sequence) would act on the
//! terminal and a megabyte-long value would bury the message.

use std::borrow::Cow;

/// `s` with every control character (ESC, BEL, carriage return...) replaced by `�`, so it prints
/// as text and never drives the terminal. Borrowed when nothing needs replacing.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` quoted and escaped like Rust's `{:?}`, cut to at most `max` characters with a note of how
/// much was left out: for naming a bad value in an error message.
pub fn quoted(s: &str, max: usize) -> String {
    let total = s.chars().count();
    if total <= max {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(max).collect();
    format!("{head:?}... ({} more characters)", total - max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("Soap 12 oz"), "Soap 12 oz");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}[2Jb\r"), "a\u{FFFD}[2Jb\u{FFFD}");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(5_000_000);
        let q = quoted(&long, 10);
        assert!(q.len() < 60, "{q}");
        assert!(q.contains("4999990 more"), "{q}");
        assert_eq!(quoted("<a_1>", 10), "\"<a_1>\"");
        assert_eq!(quoted("a\u{1b}b", 10), "\"a\\u{1b}b\"");
    }
}
